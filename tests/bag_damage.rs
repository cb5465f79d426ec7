//! Bad input never panics: truncated files, corrupt chunks, garbage, a different schema
//! under a known type name, unknown types. Every complete message before the damage is
//! returned, then one clear error.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dreamplan::bag::{BagError, BagReader, BagWriter, Decodable, Filter, WriterOptions};
use dreamplan::msg::prelude::*;

fn joint_state(i: u32) -> JointState {
    JointState {
        header: Header {
            stamp: Time {
                sec: i as i32,
                nanosec: 0,
            },
            frame_id: "base".into(),
        },
        name: (1..=7).map(|j| format!("joint{j}")).collect(),
        position: (0..7).map(|j| (i * 7 + j) as f64 * 0.01).collect(),
        ..Default::default()
    }
}

/// A bag of `n` JointStates in chunks of about `chunk` bytes; returns its .mcap path.
fn small_bag(dir: &Path, n: u32, chunk: u64) -> std::path::PathBuf {
    let mut w = BagWriter::create(
        dir,
        WriterOptions {
            chunk_size: chunk,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..n {
        w.write(
            "/joint_states",
            1_000 + i as u64 * 1_000_000,
            &joint_state(i),
        )
        .unwrap();
    }
    w.finish().unwrap();
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    dir.join(format!("{name}_0.mcap"))
}

/// Reads everything; returns the decoded positions' first entries and the final error.
fn read_all(path: &Path) -> (Vec<u32>, Option<BagError>) {
    let reader = match BagReader::open(path) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut got = Vec::new();
    for item in reader.messages(&Filter::default()) {
        match item.and_then(|r| r.decode::<JointState>()) {
            Ok(js) => got.push(js.header.stamp.sec as u32),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

#[test]
fn a_truncated_file_yields_every_complete_chunk_then_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_bag(&tmp.path().join("full"), 200, 2048);
    let bytes = std::fs::read(&file).unwrap();
    let mut saw_partial = false;
    for cut in (8..bytes.len()).step_by(97) {
        let dir = tmp.path().join(format!("cut{cut}"));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("cut.mcap");
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let (got, err) = read_all(&path);
        // Whatever is returned is an in-order prefix of what was written.
        assert_eq!(
            got,
            (0..got.len() as u32).collect::<Vec<_>>(),
            "cut at {cut}"
        );
        if cut < bytes.len() * 9 / 10 {
            assert!(
                got.len() < 200,
                "cut at {cut} of {} returned all messages",
                bytes.len()
            );
        }
        if !got.is_empty() && got.len() < 200 {
            saw_partial = true;
            assert!(
                matches!(err, Some(BagError::Damaged { .. })) || err.is_none(),
                "cut {cut}: {err:?}"
            );
        }
    }
    assert!(saw_partial, "some cuts must recover a partial prefix");
}

#[test]
fn a_corrupt_chunk_is_reported_after_the_messages_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_bag(&tmp.path().join("crc"), 200, 2048);
    let mut bytes = std::fs::read(&file).unwrap();
    // Flip a byte in the middle of the file (inside some chunk's message data).
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&file, &bytes).unwrap();
    let (got, err) = read_all(&file);
    assert!(!got.is_empty() && got.len() < 200, "{} messages", got.len());
    assert_eq!(got, (0..got.len() as u32).collect::<Vec<_>>());
    let err = err.expect("damage reported").to_string();
    assert!(err.contains("CRC") && err.contains("damaged"), "{err}");
}

/// The bag_reader fuzz target found a summary whose chunk index names an offset that
/// overflows when its length is added (a panic). A summary that names a chunk which is not
/// there is not trusted: the data section is scanned, and every message is read.
#[test]
fn a_summary_naming_chunks_that_are_not_there_is_not_trusted_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_bag(&tmp.path().join("index"), 120, 2048);
    let intact = std::fs::read(&file).unwrap();
    let (got, err) = read_all(&file);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, (0..120).collect::<Vec<_>>());
    // The footer: opcode 0x02, length, summary start, summary offset start, CRC; then the magic.
    let footer = intact.len() - 8 - 29;
    assert_eq!(intact[footer], 0x02);
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let summary = u64_at(&intact, footer + 9) as usize;
    let mut chunk_indexes = Vec::new();
    let mut at = summary;
    while at < footer {
        let len = u64_at(&intact, at + 1) as usize;
        if intact[at] == 0x08 {
            chunk_indexes.push(at + 9);
        }
        at += 9 + len;
    }
    assert!(chunk_indexes.len() >= 3, "{} chunks", chunk_indexes.len());
    // The first chunk's index: its offset so large that offset + length overflows; an
    // offset inside the file that is not a chunk; an offset past the end.
    for (which, offset) in [(0, u64::MAX - 4), (1, 8), (2, intact.len() as u64 + 100)] {
        let mut bytes = intact.clone();
        let field = chunk_indexes[which] + 16;
        bytes[field..field + 8].copy_from_slice(&offset.to_le_bytes());
        std::fs::write(&file, &bytes).unwrap();
        let (got, err) = read_all(&file);
        assert!(err.is_none(), "offset {offset}: {err:?}");
        assert_eq!(got, (0..120).collect::<Vec<_>>(), "offset {offset}");
    }
}

#[test]
fn garbage_and_foreign_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("garbage.mcap");
    std::fs::write(&garbage, b"this is not a bag at all, just text").unwrap();
    assert!(matches!(
        BagReader::open(&garbage),
        Err(BagError::NotABag(_))
    ));
    let empty_dir = tmp.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    assert!(matches!(
        BagReader::open(&empty_dir),
        Err(BagError::NoStorage(_))
    ));
    let db = tmp.path().join("other.db3");
    std::fs::write(&db, b"SQLite format 3\0 but not really").unwrap();
    assert!(BagReader::open(&db).is_err());
    let missing = BagReader::open(tmp.path().join("nope"))
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("nope"), "{missing}");
    // Random bytes after a valid magic never panic.
    let mut rng = 0x2545F4914F6CDD1Du64;
    for len in [9usize, 30, 100, 1000, 10_000] {
        let mut b = b"\x89MCAP0\r\n".to_vec();
        for _ in 0..len {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            b.push(rng as u8);
        }
        let p = tmp.path().join(format!("rand{len}.mcap"));
        std::fs::write(&p, &b).unwrap();
        let _ = read_all(&p);
    }
}

#[test]
fn a_known_type_name_with_a_different_schema_is_skipped_not_misread() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wrong_schema");
    let mut w = BagWriter::create(&dir, WriterOptions::default()).unwrap();
    // Claims to be JointState, but its definition (and bytes) are something else.
    let t = w
        .add_topic(
            "/joint_states",
            "sensor_msgs/msg/JointState",
            "float64 x\nfloat64 y\n",
            &[],
        )
        .unwrap();
    w.write_raw(
        t,
        5,
        &[
            0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 240, 63, 0, 0, 0, 0, 0, 0, 0, 64,
        ],
    )
    .unwrap();
    let u = w
        .add_topic(
            "/odom",
            "nav_msgs/msg/Odometry",
            "std_msgs/Header header\n",
            &[],
        )
        .unwrap();
    w.write_raw(u, 6, &[0, 1, 0, 0]).unwrap();
    w.finish().unwrap();
    let reader = BagReader::open(&dir).unwrap();
    assert_eq!(
        reader.topic("/joint_states").unwrap().decodable,
        Decodable::SchemaMismatch
    );
    assert_eq!(
        reader.topic("/odom").unwrap().decodable,
        Decodable::UnknownType
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let bus = dreamplan::bus::LocalBus::default();
        let options = dreamplan::bag::replay::PlayOptions {
            pace: dreamplan::bag::replay::Pace::AsFastAsConsumed,
            ..Default::default()
        };
        dreamplan::bag::replay::play(&reader, &bus, &options, &Default::default())
            .await
            .unwrap()
    });
    assert!(report.published.is_empty());
    assert_eq!(report.skipped.get("/joint_states"), Some(&1));
    assert_eq!(report.skipped.get("/odom"), Some(&1));
}

/// `dreamplan bag record` of a camera publishing 640x480 test images at 10 Hz into
/// `tmp/name`, returned once its files hold more than 18 images' bytes.
fn recording(tmp: &Path, name: &str) -> (std::process::Child, std::path::PathBuf) {
    let out = tmp.join(name);
    let graph = tmp.join("graph.yaml");
    std::fs::write(
        &graph,
        "nodes:\n  - name: camera\n    kind: camera\n    params:\n      source: pattern\n      rate_hz: 10.0\n      width: 640\n      height: 480\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["bag", "record", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&graph)
        .args(["--duration", "60", "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The recorder closes a chunk every second. Wait until the file holds more than
    // 18 images' bytes (not a fixed time: a loaded debug build once wrote only 4
    // images in 3.5 s), so that whole chunks of at least 15 images are on disk.
    let image_bytes = 640 * 480 * 3;
    let size = || {
        std::fs::read_dir(&out)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "mcap"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum::<u64>()
    };
    let t0 = std::time::Instant::now();
    while size() < 18 * image_bytes {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the recorder wrote only {} bytes in 60 s",
            size()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, out)
}

/// The camera images of a bag, and the error that ended the reading, if any.
fn images_in(reader: &BagReader) -> (usize, Option<BagError>) {
    let mut images = 0;
    let mut damage = None;
    for item in reader.messages(&Filter::topics(["/camera/image_raw"])) {
        match item.and_then(|r| r.decode::<Image>()) {
            Ok(img) => {
                assert_eq!((img.width, img.height), (640, 480));
                images += 1;
            }
            Err(e) => damage = Some(e),
        }
    }
    (images, damage)
}

#[test]
fn a_recording_killed_with_sigkill_stays_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, out) = recording(tmp.path(), "killed");
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(
        !out.join("metadata.yaml").exists(),
        "a killed recorder cannot have written metadata.yaml"
    );
    let reader = BagReader::open(&out).expect("the bag directory opens without metadata.yaml");
    let (images, damage) = images_in(&reader);
    // ≥ 2 flushed seconds of 10 Hz images survive.
    assert!(
        images >= 15,
        "only {images} images recovered (damage: {damage:?})"
    );
}

/// SIGTERM (`kill`, `timeout`, `docker stop`, systemd) stops a recording as Ctrl-C does:
/// the bag is closed whole, with its summary and metadata.yaml. Before, only Ctrl-C was
/// heard and SIGTERM ended the process on the spot.
#[cfg(unix)]
#[test]
fn a_recording_stopped_with_sigterm_is_closed_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, out) = recording(tmp.path(), "terminated");
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the recorder did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(out.join("metadata.yaml").exists());
    let reader = BagReader::open(&out).unwrap();
    assert!(dreamplan::bag::written_whole(&reader));
    let (images, damage) = images_in(&reader);
    assert!(damage.is_none(), "{damage:?}");
    assert!(images >= 18, "{images} images");
    let counted = reader
        .topics()
        .iter()
        .find(|t| t.name == "/camera/image_raw")
        .and_then(|t| t.message_count);
    assert_eq!(counted, Some(images as u64), "metadata.yaml's count");
}

/// A split bag whose recorder wrote a late message into the next file, older than the
/// last ones of the file before, reads back in log-time order; a split file created but
/// never written (a recorder killed within a second of starting it) does not make the
/// bag unreadable.
#[test]
fn split_files_are_merged_by_log_time_and_an_empty_one_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("split");
    let mut w = BagWriter::create(
        &dir,
        WriterOptions {
            max_file_duration: Some(Duration::from_secs(1)),
            ..Default::default()
        },
    )
    .unwrap();
    let ms = 1_000_000u64;
    // Tagged by their stamps' seconds: 0 s, 0.9 s, 1.1 s (a new file), then 0.8 s late.
    for (tag, at) in [(0, 0), (9, 900 * ms), (11, 1_100 * ms), (8, 800 * ms)] {
        w.write("/joint_states", 1_000 + at, &joint_state(tag))
            .unwrap();
    }
    // The new file's header is on disk before its first flush.
    let second = std::fs::metadata(dir.join("split_1.mcap")).unwrap().len();
    assert!(second > 0, "the split file is empty until its first flush");
    w.finish().unwrap();
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "mcap"))
        .count();
    assert_eq!(files, 2, "the writer did not split");
    let (got, err) = read_all(&dir);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [0, 8, 9, 11]);
    // A file the metadata lists but the folder lacks (a split bag copied in part) is
    // refused by name, not read as the whole bag.
    std::fs::rename(dir.join("split_1.mcap"), tmp.path().join("away.mcap")).unwrap();
    let e = BagReader::open(&dir)
        .err()
        .expect("a bag missing a file")
        .to_string();
    assert!(e.contains("missing") && e.contains("split_1.mcap"), "{e}");
    std::fs::rename(tmp.path().join("away.mcap"), dir.join("split_1.mcap")).unwrap();
    // A crashed recording: no metadata.yaml, and a third file that is empty.
    std::fs::remove_file(dir.join("metadata.yaml")).unwrap();
    std::fs::write(dir.join("split_2.mcap"), b"").unwrap();
    let (got, err) = read_all(&dir);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [0, 8, 9, 11]);
}

#[test]
fn bag_info_on_a_cut_off_bag_reports_what_is_readable_in_the_header_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cut");
    // 200 joint states, then a second topic whose messages all lie in the half cut off.
    let mut w = BagWriter::create(
        &dir,
        WriterOptions {
            chunk_size: 2048,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..200u32 {
        let t = 1_000 + i as u64 * 1_000_000;
        w.write("/joint_states", t, &joint_state(i)).unwrap();
    }
    for i in 0..10u32 {
        let t = 1_000 + (200 + i) as u64 * 1_000_000;
        w.write("/late", t, &Time { sec: 0, nanosec: i }).unwrap();
    }
    w.finish().unwrap();
    let file = dir.join("cut_0.mcap");
    let bytes = std::fs::read(&file).unwrap();
    // Keep metadata.yaml (it promises 210) and cut the file at half.
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let (got, _) = read_all(&dir);
    assert!(!got.is_empty() && got.len() < 200, "{} readable", got.len());
    let out = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["bag", "info"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let n = got.len();
    assert!(
        stdout.contains(&format!(
            "Messages:   {n} readable (metadata.yaml says 210)"
        )),
        "{stdout}"
    );
    // Messages are 1 ms apart: the readable span is (n − 1) ms.
    let span = format!("Duration:   {:.3} s readable", (n - 1) as f64 * 1e-3);
    assert!(stdout.contains(&span), "{span}\n{stdout}");
    assert!(
        stdout.contains("Warning:    a storage file has no summary"),
        "{stdout}"
    );
    let topic_line = stdout
        .lines()
        .find(|l| l.contains("/joint_states"))
        .unwrap();
    assert!(topic_line.contains(&format!(" {n} msgs")), "{topic_line}");
    // A topic none of whose messages can be read has 0, not what metadata.yaml promised.
    let late_line = stdout.lines().find(|l| l.contains("/late")).unwrap();
    assert!(late_line.contains(" 0 msgs"), "{late_line}");
    // The whole bag: the header as metadata.yaml has it, no warning.
    let whole = tmp.path().join("whole");
    small_bag(&whole, 20, 2048);
    let out = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["bag", "info"])
        .arg(&whole)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Messages:   20\n"), "{stdout}");
    assert!(!stdout.contains("Warning"), "{stdout}");
}

/// `ros2 bag record --compression-mode message --compression-format zstd`: every payload is
/// a zstd frame, which the reader undoes; a bag compressed file by file is refused with
/// what to do, not misread as a foreign file.
#[test]
fn message_compressed_bags_are_read_and_file_compressed_ones_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("zstd");
    let mut w = BagWriter::create(&dir, WriterOptions::default()).unwrap();
    let topic = w
        .add_typed_topic::<JointState>("/joint_states", &[Default::default()])
        .unwrap();
    for i in 0..5u32 {
        let frame = zstd::encode_all(&joint_state(i).to_cdr()[..], 3).unwrap();
        w.write_raw(topic, 1_000 + i as u64 * 1_000_000, &frame)
            .unwrap();
    }
    w.finish().unwrap();
    let yaml = dir.join("metadata.yaml");
    let plain = std::fs::read_to_string(&yaml).unwrap();
    let with = |mode: &str, format: &str| {
        let mut m: serde_yaml::Value = serde_yaml::from_str(&plain).unwrap();
        let info = &mut m["rosbag2_bagfile_information"];
        info["compression_mode"] = mode.into();
        info["compression_format"] = format.into();
        std::fs::write(&yaml, serde_yaml::to_string(&m).unwrap()).unwrap();
    };
    // Without the metadata's word the payloads are not CDR.
    let (got, err) = read_all(&dir);
    assert!(got.is_empty() && err.is_some(), "{got:?}");
    with("MESSAGE", "zstd");
    let (got, err) = read_all(&dir);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [0, 1, 2, 3, 4]);
    with("FILE", "zstd");
    let e = BagReader::open(&dir).err().expect("refused").to_string();
    assert!(
        e.contains("compressed whole") && e.contains("ros2 bag convert"),
        "{e}"
    );
    with("MESSAGE", "lz4");
    let e = BagReader::open(&dir).err().expect("refused").to_string();
    assert!(e.contains("lz4"), "{e}");
}

/// A recording killed mid-write: the transitions the damage closes come out first, then
/// the damage once, and nothing after it. Before session 52 the damage came first, and
/// every reader (`bag info --transitions`, the world model's cut) lost the whole bag.
#[test]
fn the_transitions_before_the_damage_come_out_then_the_damage_once() {
    use dreamplan::bag::transitions::TransitionTopics;
    use dreamplan::msg::dreamplan::EpisodeEvent;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tr");
    let mut w = BagWriter::create(
        &dir,
        WriterOptions {
            chunk_size: 2048,
            ..Default::default()
        },
    )
    .unwrap();
    let mut t = 1_000u64;
    let put_event = |w: &mut BagWriter, t: &mut u64, step: u32, event: &str| {
        let e = EpisodeEvent {
            episode: 0,
            step,
            event: event.into(),
            ..Default::default()
        };
        w.write("/dreamplan/episode", *t, &e).unwrap();
        *t += 1_000_000;
        for i in 0..20 {
            w.write("/joint_states", *t, &joint_state(i)).unwrap();
            *t += 1_000_000;
        }
    };
    for step in 0..6 {
        put_event(&mut w, &mut t, step, EpisodeEvent::EVENT_ACTION_STARTED);
        put_event(&mut w, &mut t, step, EpisodeEvent::EVENT_ACTION_FINISHED);
    }
    w.finish().unwrap();
    let items = |d: &Path| -> Vec<Result<u32, BagError>> {
        BagReader::open(d)
            .unwrap()
            .transitions(TransitionTopics::default())
            .map(|r| r.map(|t| t.step))
            .collect()
    };
    let intact = items(&dir);
    assert_eq!(
        intact
            .iter()
            .map(|r| *r.as_ref().unwrap())
            .collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    // The file cut at 60%, as a kill leaves it (no metadata.yaml).
    let bytes = std::fs::read(dir.join("tr_0.mcap")).unwrap();
    let cut = tmp.path().join("cut");
    std::fs::create_dir(&cut).unwrap();
    std::fs::write(cut.join("cut_0.mcap"), &bytes[..bytes.len() * 6 / 10]).unwrap();
    let got = items(&cut);
    let ok: Vec<u32> = got.iter().map_while(|r| r.as_ref().ok().copied()).collect();
    assert!(ok.len() >= 2 && ok.len() < 6, "{got:?}");
    assert_eq!(ok, (0..ok.len() as u32).collect::<Vec<_>>());
    assert_eq!(got.len(), ok.len() + 1, "{got:?}");
    assert!(
        matches!(got.last(), Some(Err(BagError::Damaged { .. }))),
        "{got:?}"
    );
}

/// A metadata.yaml cut short (a kill or a full disk while it was written) leaves intact
/// storage files: they are read as a bag without metadata, every message. Before session
/// 52 the bag did not open. The writer leaves no temporary file behind.
#[test]
fn a_torn_metadata_file_does_not_hide_the_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("meta");
    small_bag(&dir, 50, 2048);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let yaml = dir.join("metadata.yaml");
    let text = std::fs::read(&yaml).unwrap();
    for torn in [&text[..text.len() / 2], &b""[..]] {
        std::fs::write(&yaml, torn).unwrap();
        let (got, err) = read_all(&dir);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }
}
