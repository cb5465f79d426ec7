//! rosbag2 interop with PyPI `rosbags`, both ways: bags rosbags wrote (MCAP and sqlite3,
//! Humble and Jazzy, zstd) are read here with identical values, in log-time order; bags
//! written here are read by rosbags with identical values (`scripts/check_bag_with_rosbags.py`),
//! and by Foxglove's own `mcap` + `mcap-ros2-support`, decoding from the schemas in the file
//! (`scripts/check_bag_with_mcap.py`).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use dreamplan::bag::{BagReader, BagWriter, Compression, Decodable, Filter, WriterOptions};
use dreamplan::bus::{Durability, Reliability};
use dreamplan::msg::visit_type;
use serde_json::Value;

fn bag_fixtures() -> PathBuf {
    // CI regenerates the bags with rosbags into a temp dir and points here.
    std::env::var_os("DREAMPLAN_BAG_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/fixtures/bags"))
}

#[test]
fn bags_written_by_rosbags_read_back_with_identical_values() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(bag_fixtures().join("expected.json")).unwrap(),
    )
    .unwrap();
    let cases: std::collections::HashMap<String, Value> =
        cases().into_iter().map(|(n, _, v)| (n, v)).collect();
    let bags = expected["bags"].as_object().unwrap();
    assert!(
        bags.len() >= 5,
        "expected MCAP and sqlite3 bags for Humble and Jazzy, got {:?}",
        bags.keys()
    );
    for (name, spec) in bags {
        let reader =
            BagReader::open(bag_fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = spec["messages"].as_array().unwrap();
        let got: Vec<_> = reader
            .messages(&Filter::default())
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.len(), want.len(), "{name}: message count");
        let mut skipped = 0;
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                g.topic,
                w["topic"].as_str().unwrap(),
                "{name}: order (log time) differs"
            );
            assert_eq!(
                g.log_time,
                w["log_time_ns"].as_u64().unwrap(),
                "{name}: {}",
                g.topic
            );
            assert_eq!(g.type_name, w["type"].as_str().unwrap());
            match w["case"].as_str() {
                Some(case) => visit_type(g.type_name, DecodesTo(cases[case].clone(), &g.data))
                    .expect("known type")
                    .unwrap_or_else(|e| panic!("{name} {case}: {e}")),
                None => {
                    assert_eq!(
                        reader.topics()[g.topic_index].decodable,
                        Decodable::UnknownType
                    );
                    skipped += 1;
                }
            }
        }
        assert_eq!(
            skipped, 3,
            "{name}: the std_msgs/String topic is counted, not decoded"
        );
        let latched = reader.topic("/cases/image_rgb8_2x2").unwrap();
        assert_eq!(
            latched.qos.first().map(|q| (q.depth, q.durability)),
            Some((1, Durability::TransientLocal)),
            "{name}"
        );
        assert_eq!(latched.message_count, Some(1), "{name}");
    }
}

/// The bag in the layout Humble's `ros2 bag record` writes (metadata version 5 with its
/// `files` list, sqlite3 schema 3 without message definitions or type hashes, QoS as a YAML
/// string with integer enums and rmw's infinite duration, topics listed in another order in
/// metadata.yaml than in the database) reads with every count, QoS and file the metadata
/// names. `scripts/gen_bag_fixtures.py` writes it from rosbag2 0.15.9's source.
#[test]
fn a_bag_in_humble_ros2_bag_record_layout_reads_completely() {
    let reader = BagReader::open(bag_fixtures().join("humble_record")).unwrap();
    let meta = reader.metadata().expect("metadata.yaml read");
    assert_eq!(meta.version, 5);
    assert_eq!(meta.storage_identifier, "sqlite3");
    assert_eq!(meta.files.len(), 1);
    assert_eq!(meta.message_count, 52);
    let files = reader.files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].0.ends_with("humble_record_0.db3"), "{files:?}");
    // metadata.yaml lists the topics in reverse; counts still land on the right topic.
    assert_eq!(
        meta.topics_with_message_count[0].topic_metadata.name,
        "/unknown/string"
    );
    assert_eq!(reader.topics().len(), 50);
    let unknown = reader.topic("/unknown/string").unwrap();
    assert_eq!(unknown.message_count, Some(3));
    assert_eq!(unknown.decodable, Decodable::UnknownType);
    // Two offered profiles; the first (history unknown, depth 0, infinite times as
    // 9223372036 s 854775807 ns) is read as reliable and volatile.
    assert_eq!(unknown.qos.len(), 2, "{:?}", unknown.qos);
    assert_eq!(
        (unknown.qos[0].reliability, unknown.qos[0].durability),
        (Reliability::Reliable, Durability::Volatile)
    );
    assert_eq!(
        (unknown.qos[1].depth, unknown.qos[1].reliability),
        (10, Reliability::BestEffort)
    );
    for t in reader.topics() {
        assert!(
            t.definition.is_none(),
            "{}: Humble stores no definitions",
            t.name
        );
        assert!(t.message_count.is_some(), "{}", t.name);
    }
    let n = reader
        .messages(&Filter::default())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .len();
    assert_eq!(n, 52);
}

/// Writes every case (the 1280×720 image included) on `/cases/<name>`.
fn write_case_bag(dir: &std::path::Path, options: WriterOptions) {
    let mut w = BagWriter::create(dir, options).unwrap();
    for (i, (name, ty, value)) in cases().into_iter().enumerate() {
        let def = visit_type(&ty, Def).unwrap();
        let topic = w
            .add_topic(
                &format!("/cases/{name}"),
                &ty,
                def,
                &[dreamplan::bus::Qos::default()],
            )
            .unwrap();
        w.write_raw(topic, case_time(i), &visit_type(&ty, ToCdr(value)).unwrap())
            .unwrap();
    }
    w.finish().unwrap();
}

struct Def;
impl dreamplan::msg::TypeVisitor for Def {
    type Output = &'static str;
    fn visit<M: dreamplan::msg::Message>(self) -> &'static str {
        M::DEFINITION
    }
}

#[test]
fn bags_written_here_read_back_identically() {
    let tmp = tempfile::tempdir().unwrap();
    for (label, options) in [
        ("plain", WriterOptions::default()),
        (
            "zstd_small_chunks",
            WriterOptions {
                compression: Compression::Zstd,
                chunk_size: 4096,
                ..Default::default()
            },
        ),
        (
            "split",
            WriterOptions {
                max_file_bytes: Some(64 * 1024),
                ..Default::default()
            },
        ),
    ] {
        let dir = tmp.path().join(label);
        write_case_bag(&dir, options);
        let reader = BagReader::open(&dir).unwrap();
        let files = reader.files();
        if label == "split" {
            assert!(files.len() >= 2, "split bag has {} files", files.len());
        }
        let cases = cases();
        let got: Vec<_> = reader
            .messages(&Filter::default())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got.len(), cases.len(), "{label}");
        for (i, (g, (name, ty, value))) in got.iter().zip(cases).enumerate() {
            assert_eq!(
                (g.topic, g.log_time),
                (format!("/cases/{name}").as_str(), case_time(i)),
                "{label}"
            );
            visit_type(&ty, DecodesTo(value, &g.data))
                .unwrap()
                .unwrap_or_else(|e| panic!("{label} {name}: {e}"));
        }
        let meta = reader.metadata().expect("metadata.yaml");
        assert_eq!(meta.version, 5);
        assert_eq!(meta.message_count as usize, got.len());
        assert_eq!(meta.relative_file_paths.len(), files.len());
    }
}

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DREAMPLAN_PYTHON") {
        return Some(p.into());
    }
    let venv = root().join(".venv/bin/python");
    venv.exists().then_some(venv)
}

#[test]
fn rosbags_reads_bags_written_here() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("DREAMPLAN_REQUIRE_INTEROP").is_none(),
            "DREAMPLAN_REQUIRE_INTEROP is set but no Python with rosbags was found"
        );
        eprintln!("skipping: set DREAMPLAN_PYTHON to a Python with rosbags (scripts/requirements.txt) to run this check");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for (label, options) in [
        ("plain", WriterOptions::default()),
        (
            "zstd",
            WriterOptions {
                compression: Compression::Zstd,
                ..Default::default()
            },
        ),
    ] {
        let dir = tmp.path().join(label);
        write_case_bag(&dir, options);
        for (target, store) in [
            (dir.clone(), "humble"),
            (dir.clone(), "jazzy"),
            (dir.join(format!("{label}_0.mcap")), "humble"),
        ] {
            let out = Command::new(&python)
                .arg(root().join("scripts/check_bag_with_rosbags.py"))
                .arg(&target)
                .arg("--cases")
                .arg(cdr_fixtures().join("cases.json"))
                .args(["--store", store])
                .output()
                .expect("run the rosbags checker");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "rosbags rejected {}:\n{text}",
                target.display()
            );
        }
    }
}

#[test]
fn topic_and_time_range_filters_work_on_mcap_and_sqlite() {
    for name in ["mcap_humble", "sqlite3_jazzy", "mcap_zstd_humble"] {
        let reader = BagReader::open(bag_fixtures().join(name)).unwrap();
        let filter = Filter {
            start: Some(case_time(5)),
            end: Some(case_time(10)),
            ..Default::default()
        };
        let got: Vec<u64> = reader
            .messages(&filter)
            .map(|r| r.unwrap().log_time)
            .collect();
        // Cases 5..9, plus the /unknown/string message logged at case 5 + 0.5 ms.
        let mut want: Vec<u64> = (5..10).map(case_time).collect();
        want.push(case_time(5) + 500_000);
        want.sort();
        assert_eq!(got, want, "{name}");
        let only = Filter::topics(["/cases/joint_state_umlauts", "/unknown/string"]);
        let topics: Vec<String> = reader
            .messages(&only)
            .map(|r| r.unwrap().topic.to_string())
            .collect();
        assert_eq!(topics.len(), 4, "{name}: {topics:?}");
    }
}

/// A second reader, independent of rosbags: Foxglove's PyPI `mcap` reads the container and
/// `mcap-ros2-support` decodes every message from the schema text the file carries, as
/// Foxglove Studio does. Plain, zstd-chunked and split bags; each file alone too.
#[test]
fn foxglove_mcap_reads_and_decodes_bags_written_here() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("DREAMPLAN_REQUIRE_INTEROP").is_none(),
            "DREAMPLAN_REQUIRE_INTEROP is set but no Python with mcap-ros2-support was found"
        );
        eprintln!("skipping: set DREAMPLAN_PYTHON to a Python with mcap-ros2-support (scripts/requirements.txt) to run this check");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = |target: &std::path::Path| {
        Command::new(&python)
            .arg(root().join("scripts/check_bag_with_mcap.py"))
            .arg(target)
            .arg("--cases")
            .arg(cdr_fixtures().join("cases.json"))
            .output()
            .expect("run the mcap checker")
    };
    for (label, options) in [
        ("plain", WriterOptions::default()),
        (
            "zstd",
            WriterOptions {
                compression: Compression::Zstd,
                chunk_size: 4096,
                ..Default::default()
            },
        ),
        (
            "split",
            WriterOptions {
                max_file_bytes: Some(64 * 1024),
                ..Default::default()
            },
        ),
    ] {
        let dir = tmp.path().join(label);
        write_case_bag(&dir, options);
        let out = run(&dir);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "mcap-ros2-support rejected {label}:\n{text}"
        );
    }
    // The checker is not a rubber stamp: one float off by one ulp in the expected values,
    // or one byte of the 1280×720 image, fails it, and so does a bag missing a message.
    let cases_json = std::fs::read_to_string(cdr_fixtures().join("cases.json")).unwrap();
    for (from, to, why) in [
        (
            r#""x": 1.5, "y": -0.5"#,
            r#""x": 1.5000000000000002, "y": -0.5"#,
            "bit for bit",
        ),
        (
            r#""mul": 31, "add": 7"#,
            r#""mul": 31, "add": 8"#,
            "byte array differs",
        ),
    ] {
        assert!(cases_json.contains(from), "cases.json changed: {from}");
        let tampered = tmp.path().join("tampered.json");
        std::fs::write(&tampered, cases_json.replacen(from, to, 1)).unwrap();
        let out = Command::new(&python)
            .arg(root().join("scripts/check_bag_with_mcap.py"))
            .arg(tmp.path().join("plain"))
            .arg("--cases")
            .arg(&tampered)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains(why),
            "a tampered expectation ({to}) passed: {text}"
        );
    }
    let dir = tmp.path().join("short");
    let mut w = BagWriter::create(&dir, WriterOptions::default()).unwrap();
    for (i, (name, ty, value)) in cases().into_iter().enumerate().skip(1) {
        let def = visit_type(&ty, Def).unwrap();
        let topic = w
            .add_topic(
                &format!("/cases/{name}"),
                &ty,
                def,
                &[dreamplan::bus::Qos::default()],
            )
            .unwrap();
        w.write_raw(topic, case_time(i), &visit_type(&ty, ToCdr(value)).unwrap())
            .unwrap();
    }
    w.finish().unwrap();
    let out = run(&dir);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("missing topics"),
        "a bag without its first case passed: {text}"
    );
}
