//! `dreamplan bag bench`: dreamplan's bag writer and reader against PyPI `rosbags` on the
//! same files, in one run, plus `cat > /dev/null` as the plain-read ceiling.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use dreamplan::bag::{BagReader, BagWriter, Filter, WriterOptions};
use dreamplan::msg::prelude::*;

fn joint_state(i: u64) -> JointState {
    JointState {
        header: Header {
            stamp: Time::from_nanos((1_700_000_000_000_000_000 + i * 1_000_000) as i64),
            frame_id: "base_link".into(),
        },
        name: (1..=7).map(|j| format!("joint_{j}")).collect(),
        position: (0..7).map(|j| (i as f64) * 1e-3 + j as f64).collect(),
        velocity: (0..7).map(|j| j as f64 * 0.1).collect(),
        effort: (0..7).map(|j| -(j as f64)).collect(),
    }
}

fn image(i: u64) -> Image {
    Image {
        header: Header {
            stamp: Time::from_nanos((1_700_000_000_000_000_000 + i * 33_000_000) as i64),
            frame_id: "camera".into(),
        },
        height: 480,
        width: 640,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: 1920,
        data: (0..640 * 480 * 3)
            .map(|k| ((k as u64 + i * 7) % 251) as u8)
            .collect(),
    }
}

struct Row {
    what: String,
    msgs: u64,
    bytes: u64,
    seconds: f64,
}

impl Row {
    fn print(&self) {
        println!(
            "| {:<58} | {:>8} | {:>8.3} | {:>12.0} | {:>9.1} |",
            self.what,
            self.msgs,
            self.seconds,
            self.msgs as f64 / self.seconds,
            self.bytes as f64 / self.seconds / 1e6
        );
    }
}

fn write_bag<M: Message>(
    dir: &Path,
    n: u64,
    make: impl Fn(u64) -> M,
    step_ns: u64,
    topic: &str,
) -> anyhow::Result<Row> {
    let msgs: Vec<M> = (0..n).map(&make).collect();
    let t = Instant::now();
    let mut w = BagWriter::create(dir, WriterOptions::default())?;
    let id = w.add_typed_topic::<M>(topic, &[Default::default()])?;
    let mut bytes = 0u64;
    let mut buf = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        buf.clear();
        dreamplan::msg::encode_into(m, &mut buf)?;
        bytes += buf.len() as u64;
        w.write_raw(id, 1_700_000_000_000_000_000 + i as u64 * step_ns, &buf)?;
    }
    w.finish()?;
    Ok(Row {
        what: format!("dreamplan write {}", M::TYPE_NAME),
        msgs: n,
        bytes,
        seconds: t.elapsed().as_secs_f64(),
    })
}

fn read_bag<M: Message>(path: &Path, label: &str) -> anyhow::Result<Row> {
    let reader = BagReader::open(path)?;
    let t = Instant::now();
    let (mut msgs, mut bytes) = (0u64, 0u64);
    for rec in reader.messages(&Filter::default()) {
        let rec = rec?;
        bytes += rec.data.len() as u64;
        let m = rec.decode::<M>()?;
        std::hint::black_box(&m);
        msgs += 1;
    }
    Ok(Row {
        what: format!("dreamplan read+decode {label}"),
        msgs,
        bytes,
        seconds: t.elapsed().as_secs_f64(),
    })
}

fn rosbags(python: &Path, args: &[&str], label: &str) -> anyhow::Result<Row> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_rosbags.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .context("running scripts/bench_rosbags.py")?;
    anyhow::ensure!(
        out.status.success(),
        "bench_rosbags.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("bench_rosbags.py output")?;
    Ok(Row {
        what: label.to_string(),
        msgs: v["msgs"].as_u64().unwrap_or(0),
        bytes: v["bytes"].as_u64().unwrap_or(0),
        seconds: v["seconds"].as_f64().unwrap_or(f64::NAN),
    })
}

fn cat(path: &Path) -> anyhow::Result<Row> {
    let files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "mcap"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg("cat \"$@\" > /dev/null")
        .arg("sh")
        .args(&files)
        .status()?;
    anyhow::ensure!(status.success(), "cat failed");
    Ok(Row {
        what: "cat > /dev/null (plain read of the same file)".into(),
        msgs: 0,
        bytes,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Runs the benchmark in `dir` (created; must not exist).
pub fn run(dir: &Path, python: Option<&Path>, n_joint: u64, n_images: u64) -> anyhow::Result<()> {
    anyhow::ensure!(!dir.exists(), "{} exists already", dir.display());
    std::fs::create_dir_all(dir)?;
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run `cargo run --release -- bag bench` for real figures");
    }
    println!(
        "| {:<58} | {:>8} | {:>8} | {:>12} | {:>9} |",
        "what", "msgs", "s", "msgs/s", "MB/s"
    );
    println!(
        "|{}|{}|{}|{}|{}|",
        "-".repeat(60),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(14),
        "-".repeat(11)
    );
    let ours_js = dir.join("js_dreamplan");
    write_bag(&ours_js, n_joint, joint_state, 1_000_000, "/joint_states")?.print();
    if let Some(py) = python {
        let theirs = dir.join("js_rosbags");
        rosbags(
            py,
            &[
                "write-jointstate",
                &theirs.to_string_lossy(),
                &n_joint.to_string(),
            ],
            "rosbags write sensor_msgs/msg/JointState",
        )?
        .print();
        read_bag::<JointState>(&ours_js, "JointState, bag written by dreamplan")?.print();
        read_bag::<JointState>(&theirs, "JointState, bag written by rosbags")?.print();
        rosbags(
            py,
            &["read", &ours_js.to_string_lossy()],
            "rosbags read+deserialize JointState, dreamplan's bag",
        )?
        .print();
        rosbags(
            py,
            &["read", &theirs.to_string_lossy()],
            "rosbags read+deserialize JointState, rosbags' bag",
        )?
        .print();
    } else {
        read_bag::<JointState>(&ours_js, "JointState")?.print();
    }
    let ours_img = dir.join("img_dreamplan");
    write_bag(&ours_img, n_images, image, 33_000_000, "/camera/image_raw")?.print();
    read_bag::<Image>(&ours_img, "640x480 rgb8 Image, dreamplan's bag")?.print();
    if let Some(py) = python {
        let theirs = dir.join("img_rosbags");
        rosbags(
            py,
            &[
                "write-images",
                &theirs.to_string_lossy(),
                &n_images.to_string(),
            ],
            "rosbags write sensor_msgs/msg/Image",
        )?
        .print();
        read_bag::<Image>(&theirs, "640x480 rgb8 Image, rosbags' bag")?.print();
        rosbags(
            py,
            &["read", &ours_img.to_string_lossy()],
            "rosbags read+deserialize Image, dreamplan's bag",
        )?
        .print();
        rosbags(
            py,
            &["read", &theirs.to_string_lossy()],
            "rosbags read+deserialize Image, rosbags' bag",
        )?
        .print();
    }
    cat(&ours_img)?.print();
    Ok(())
}
