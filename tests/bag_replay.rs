//! Replaying bags onto a bus, and recording from one: pacing, the clock, nothing lost
//! when playing as fast as consumers take messages, and record → play round trips.

use std::time::{Duration, Instant};

use dreamplan::bag::replay::{play, Pace, PlayOptions};
use dreamplan::bag::{BagReader, BagWriter, Filter, WriterOptions};
use dreamplan::bus::{Bus, LocalBus, Qos};
use dreamplan::clock::Clock;
use dreamplan::msg::prelude::*;
use dreamplan::msg::rosgraph_msgs::Clock as ClockMsg;
use tokio_util::sync::CancellationToken;

const T0: u64 = 1_700_000_000_000_000_000;

fn bag_of_times(dir: &std::path::Path, n: u32, step_ms: u64) {
    let mut w = BagWriter::create(dir, WriterOptions::default()).unwrap();
    for i in 0..n {
        w.write(
            "/ticks",
            T0 + i as u64 * step_ms * 1_000_000,
            &Time {
                sec: i as i32,
                nanosec: 0,
            },
        )
        .unwrap();
    }
    w.finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_timing_is_kept_and_scaled() {
    let tmp = tempfile::tempdir().unwrap();
    bag_of_times(&tmp.path().join("b"), 11, 50); // 0.5 s of recorded time
    let reader = BagReader::open(tmp.path().join("b")).unwrap();
    for (rate, expect_s) in [(1.0, 0.5), (5.0, 0.1)] {
        let bus = LocalBus::new(Clock::sim(Time::default()));
        let mut sub = bus
            .subscribe::<Time>("/ticks", Qos::keep_last(100))
            .unwrap();
        let t = Instant::now();
        let report = play(
            &reader,
            &bus,
            &PlayOptions {
                pace: Pace::Rate(rate),
                ..Default::default()
            },
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        let took = t.elapsed().as_secs_f64();
        assert_eq!(report.published["/ticks"], 11);
        assert!(
            (took - expect_s).abs() < 0.08,
            "rate {rate}: took {took:.3} s, expected {expect_s}"
        );
        assert_eq!(sub.queued(), 11);
        // The sim clock followed the bag.
        assert_eq!(bus.clock().now().as_nanos() as u64, T0 + 500_000_000);
        assert_eq!(sub.recv().await.unwrap().sec, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_fast_as_consumed_loses_nothing_to_a_slow_subscriber() {
    let tmp = tempfile::tempdir().unwrap();
    bag_of_times(&tmp.path().join("b"), 300, 1000); // 300 s of recorded time
    let reader = BagReader::open(tmp.path().join("b")).unwrap();
    let bus = LocalBus::default();
    let mut sub = bus.subscribe::<Time>("/ticks", Qos::keep_last(2)).unwrap();
    let consumer = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(t) = sub.recv().await {
            seen.push(t.sec);
            if seen.len() % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if seen.len() == 300 {
                break;
            }
        }
        (seen, sub.dropped())
    });
    let t = Instant::now();
    let options = PlayOptions {
        pace: Pace::AsFastAsConsumed,
        clock_topic: Some("/clock".into()),
        ..Default::default()
    };
    let report = play(&reader, &bus, &options, &CancellationToken::new())
        .await
        .unwrap();
    let (seen, dropped) = consumer.await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "300 s of bag must not be played in real time"
    );
    assert_eq!(report.published["/ticks"], 300);
    assert_eq!(dropped, 0);
    assert_eq!(seen, (0..300).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_topic_carries_log_times_and_playback_stops_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    bag_of_times(&tmp.path().join("b"), 50, 100); // 5 s
    let reader = BagReader::open(tmp.path().join("b")).unwrap();
    let bus = LocalBus::default();
    let mut clock = bus
        .subscribe::<ClockMsg>("/clock", Qos::keep_last(1000))
        .unwrap();
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(350)).await;
        trigger.cancel();
    });
    let options = PlayOptions {
        clock_topic: Some("/clock".into()),
        ..Default::default()
    };
    let t = Instant::now();
    let report = play(&reader, &bus, &options, &stop).await.unwrap();
    assert!(report.interrupted);
    assert!(t.elapsed() < Duration::from_secs(1));
    let n = report.published["/ticks"];
    assert!((3..=6).contains(&n), "{n} messages in 350 ms at 10 Hz");
    let first = clock.recv().await.unwrap();
    assert_eq!(first.clock.as_nanos() as u64, T0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_a_graph_then_play_it_back() {
    use dreamplan::config::GraphConfig;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rec");
    let yaml = format!(
        "duration_s: 1.2\nnodes:\n  - {{name: cam, kind: camera, params: {{rate_hz: 20.0, width: 32, height: 24}}}}\n  - {{name: rec, kind: recorder, params: {{out_dir: {}}}}}\n",
        out.display()
    );
    let graph = GraphConfig::from_yaml(&yaml, "test").unwrap();
    let report =
        dreamplan::runner::run_graph(LocalBus::default(), &graph, CancellationToken::new())
            .await
            .unwrap();
    assert!(report.is_clean(), "{report:?}");
    let reader = BagReader::open(&out).unwrap();
    let info = reader
        .topic("/camera/camera_info")
        .expect("latched camera info recorded");
    assert_eq!(info.message_count, Some(1));
    let images: Vec<(u64, Image)> = reader
        .read_topic::<Image>("/camera/image_raw")
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        (10..=26).contains(&images.len()),
        "{} images in 1.2 s at 20 Hz",
        images.len()
    );
    assert!(
        images.windows(2).all(|w| w[0].0 <= w[1].0),
        "log times are ordered"
    );
    assert!(images
        .iter()
        .all(|(_, img)| img.width == 32 && img.data.len() == 32 * 24 * 3));

    // Play it onto a fresh bus: a late latched subscriber still gets the camera info.
    let bus = LocalBus::default();
    let mut imgs = bus
        .subscribe::<Image>("/camera/image_raw", Qos::keep_last(100))
        .unwrap();
    let play_report = play(
        &reader,
        &bus,
        &PlayOptions {
            pace: Pace::AsFastAsConsumed,
            filter: Filter::default(),
            ..Default::default()
        },
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        play_report.published["/camera/image_raw"] as usize,
        images.len()
    );
    assert_eq!(imgs.queued(), images.len());
    let mut late = bus
        .subscribe::<CameraInfo>("/camera/camera_info", Qos::latched())
        .unwrap();
    assert_eq!(late.try_recv().map(|i| i.width), Some(32));
    assert_eq!(imgs.recv().await.unwrap().data, images[0].1.data);
}

/// A camera recording: camera_info once (latched), 30 small images and 100 joint states
/// over one second.
fn camera_bag(dir: &std::path::Path) {
    let mut w = BagWriter::create(dir, WriterOptions::default()).unwrap();
    w.add_typed_topic::<CameraInfo>(
        "/camera/camera_info",
        &[Qos::keep_last(1).transient_local()],
    )
    .unwrap();
    w.write(
        "/camera/camera_info",
        T0,
        &CameraInfo {
            width: 8,
            height: 4,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..30u64 {
        let img = Image {
            width: 8,
            height: 4,
            encoding: "rgb8".into(),
            step: 24,
            data: vec![i as u8; 96],
            ..Default::default()
        };
        w.write("/camera/image_raw", T0 + 1_000_000 + i * 33_000_000, &img)
            .unwrap();
    }
    for i in 0..100u64 {
        let js = JointState {
            position: vec![i as f64; 7],
            ..Default::default()
        };
        w.write("/joint_states", T0 + 2_000_000 + i * 10_000_000, &js)
            .unwrap();
    }
    w.finish().unwrap();
}

/// `total TOPIC: N msgs` lines of the default monitor, from `bag play`'s log.
fn monitor_totals(stderr: &str) -> std::collections::BTreeMap<String, u64> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("total /")? + "total ".len()..];
            let (topic, rest) = rest.split_once(": ")?;
            let n = rest.split_once(" msgs")?.0.parse().ok()?;
            Some((topic.to_string(), n))
        })
        .collect()
}

#[test]
fn bag_play_delivers_every_message_to_the_graph_fast_and_at_rate_1() {
    let tmp = tempfile::tempdir().unwrap();
    let bag = tmp.path().join("cam");
    camera_bag(&bag);
    let want: std::collections::BTreeMap<String, u64> = [
        ("/camera/camera_info".to_string(), 1),
        ("/camera/image_raw".to_string(), 30),
        ("/joint_states".to_string(), 100),
    ]
    .into();
    for pace in [&["--fast"][..], &["--rate", "1"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dreamplan"))
            .args(["bag", "play"])
            .arg(&bag)
            .args(pace)
            .env("DREAMPLAN_LOG", "info")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{pace:?}: {stderr}");
        assert_eq!(monitor_totals(&stderr), want, "{pace:?}: {stderr}");
    }
    // With --clock the monitor shows the clock too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["bag", "play"])
        .arg(&bag)
        .args(["--rate", "4", "--clock"])
        .env("DREAMPLAN_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let totals = monitor_totals(&stderr);
    assert!(totals.get("/clock").is_some_and(|n| *n > 0), "{stderr}");
    assert_eq!(totals.get("/camera/image_raw"), Some(&30), "{stderr}");
    // A topic the bag does not have is named, with the bag's topics.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["bag", "play"])
        .arg(&bag)
        .args(["--fast", "--topics", "/nope"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--topics /nope: not in") && stderr.contains("/camera/image_raw"),
        "{stderr}"
    );
}

/// A recorder node writing `topics` (YAML list items) to `out`, with its live parameters.
fn recorder(
    out: &std::path::Path,
    topics: &str,
) -> (
    dreamplan::nodes::recorder::RecorderNode,
    std::sync::Arc<dreamplan::nodes::params::LiveParams>,
) {
    use dreamplan::nodes::recorder::{RecorderConfig, RecorderNode};
    use dreamplan::nodes::Node;
    let given = serde_yaml::from_str::<serde_yaml::Value>(&format!(
        "{{out_dir: {}, topics: [{topics}]}}",
        out.display()
    ))
    .unwrap();
    let config: RecorderConfig = serde_yaml::from_value(given.clone()).unwrap();
    let params =
        dreamplan::nodes::params::LiveParams::for_node::<RecorderNode>("rec", &config, &given);
    (RecorderNode::new(config).unwrap(), params)
}

/// A recorder whose disk fills ends with the writer's error at once, not at the next
/// Ctrl-C: before, the forwarding task of a quiet topic (here `/quiet`, which has a
/// publisher but never publishes) kept the node waiting, recording nothing. The bag
/// folder is a tmpfs too small for two camera images; mounting one needs root (CI has it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_whose_disk_fills_stops_with_the_error() {
    use dreamplan::nodes::{Node, NodeContext};
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("not root: no tmpfs can be mounted, skipped");
        return;
    }
    struct Mounted(std::path::PathBuf);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&full)
        .status()
        .unwrap();
    assert!(st.success(), "mount failed");
    let _mounted = Mounted(full.clone());
    let (node, params) = recorder(&full.join("rec"), "/big, /quiet");
    let bus = LocalBus::default();
    let big = bus.publisher::<Image>("/big", Qos::keep_last(10)).unwrap();
    let _quiet = bus.publisher::<Time>("/quiet", Qos::keep_last(10)).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(node.run(NodeContext {
        name: "rec".into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params,
    }));
    let image = Image {
        height: 480,
        width: 640,
        encoding: "rgb8".into(),
        step: 640 * 3,
        data: vec![7; 640 * 480 * 3],
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the recorder still runs 30 s after its disk filled"
        );
        big.publish(image.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = run.await.unwrap().unwrap_err();
    assert!(
        format!("{err:#}").contains("No space left on device"),
        "{err:#}"
    );
    assert!(!stop.is_cancelled());
}

/// `paused` is a live parameter of the recorder: what arrives while it is set is not
/// written, what arrives after it is cleared is; a parameter read at start is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_pauses_and_resumes_through_its_parameters() {
    use dreamplan::nodes::{Node, NodeContext};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rec");
    let (node, params) = recorder(&out, "/ticks");
    let (counts, skipped) = (node.counts(), node.skipped());
    let bus = LocalBus::default();
    let ticks = bus
        .publisher::<Time>("/ticks", Qos::keep_last(100))
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(node.run(NodeContext {
        name: "rec".into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params: params.clone(),
    }));
    let recorded = || {
        counts
            .lock()
            .unwrap()
            .get("/ticks")
            .copied()
            .unwrap_or_default()
    };
    let wait_for = |n: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while recorded() < n {
            assert!(Instant::now() < deadline, "{} of {n} recorded", recorded());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let tick = |sec: i32| ticks.publish(Time { sec, nanosec: 0 }).unwrap();
    // Until the recorder has found the topic.
    while recorded() == 0 {
        tick(0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = recorded();
    (100..105).for_each(tick);
    wait_for(before + 5).await;
    params.set("paused", serde_yaml::Value::Bool(true)).unwrap();
    (200..205).for_each(tick);
    let deadline = Instant::now() + Duration::from_secs(30);
    while skipped.load(std::sync::atomic::Ordering::Relaxed) < 5 {
        assert!(
            Instant::now() < deadline,
            "the paused messages were not handled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    params
        .set("paused", serde_yaml::Value::Bool(false))
        .unwrap();
    (300..305).for_each(tick);
    wait_for(before + 10).await;
    let refused = params.set("depth", serde_yaml::Value::from(5)).unwrap_err();
    assert!(refused.contains("depth"), "{refused}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let secs: Vec<i32> = BagReader::open(&out)
        .unwrap()
        .read_topic::<Time>("/ticks")
        .map(|m| m.unwrap().1.sec)
        .filter(|s| *s != 0)
        .collect();
    let expected: Vec<i32> = (100..105).chain(300..305).collect();
    assert_eq!(
        secs, expected,
        "written while paused, or lost after resuming"
    );
}

/// The recorder logs each message at the bus-clock time it reached its subscription, not
/// when its task got round to writing it: here the simulated clock jumps from 1 s to 10 s
/// between the two publishes, before the recorder's single-threaded tasks run at all, and
/// the first message still carries 1 s (it carried 10 s when the task read the clock; on a
/// loaded machine that put a planner's action after the episode event that followed it).
#[tokio::test(flavor = "current_thread")]
async fn the_recorder_logs_the_arrival_time_even_when_it_runs_late() {
    use dreamplan::nodes::{Node, NodeContext};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rec");
    let (node, params) = recorder(&out, "/a, /b");
    let counts = node.counts();
    let clock = Clock::sim(Time { sec: 0, nanosec: 0 });
    let bus = LocalBus::new(clock.clone());
    let a = bus.publisher::<Time>("/a", Qos::keep_last(10)).unwrap();
    let b = bus.publisher::<Time>("/b", Qos::keep_last(10)).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(node.run(NodeContext {
        name: "rec".into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params,
    }));
    // Until the recorder listens on both topics (it finds them by polling the bus).
    let deadline = Instant::now() + Duration::from_secs(30);
    while bus
        .topic_graph()
        .values()
        .filter(|u| u.subscriptions > 0)
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the recorder never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No await between these: the recorder's tasks cannot run in between.
    clock.set(Time { sec: 1, nanosec: 0 });
    a.publish(Time { sec: 1, nanosec: 0 }).unwrap();
    clock.set(Time {
        sec: 10,
        nanosec: 0,
    });
    b.publish(Time {
        sec: 10,
        nanosec: 0,
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counts.lock().unwrap().values().sum::<u64>() < 2 {
        assert!(Instant::now() < deadline, "not recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    let reader = BagReader::open(&out).unwrap();
    for (topic, sec) in [("/a", 1), ("/b", 10)] {
        let logged: Vec<(u64, i32)> = reader
            .read_topic::<Time>(topic)
            .map(|m| {
                let (t, msg) = m.unwrap();
                (t, msg.sec)
            })
            .collect();
        assert_eq!(logged, vec![(sec as u64 * 1_000_000_000, sec)], "{topic}");
    }
}

/// At a stop the recorder writes what is queued for `stop_timeout_s`, then drops the rest,
/// counted, and closes the bag whole (before session 52 a disk that fell behind kept the
/// node past the runner's grace: it was aborted, and the bag had no summary and no
/// metadata.yaml). With no time at all after a burst: the node returns, the bag opens with
/// its metadata, and every message published is in it or counted as not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_out_of_time_at_the_stop_closes_a_whole_bag_and_counts_the_rest() {
    use dreamplan::nodes::recorder::{RecorderConfig, RecorderNode};
    use dreamplan::nodes::{Node, NodeContext};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rec");
    let config = |stop_timeout_s: f64| RecorderConfig {
        out_dir: Some(out.clone()),
        topics: vec!["/ticks".into()],
        depth: 10_000,
        stop_timeout_s,
        ..Default::default()
    };
    let e = RecorderNode::new(config(5.0)).err().unwrap().to_string();
    assert!(e.contains("stop_timeout_s must be 0–4.5 s"), "{e}");
    let node = RecorderNode::new(config(0.0)).unwrap();
    let (counts, unwritten) = (node.counts(), node.unwritten());
    let bus = LocalBus::default();
    let ticks = bus
        .publisher::<Time>("/ticks", Qos::keep_last(10_000))
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(node.run(NodeContext {
        name: "rec".into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params: dreamplan::nodes::params::LiveParams::fixed(),
    }));
    let recorded = || {
        counts
            .lock()
            .unwrap()
            .get("/ticks")
            .copied()
            .unwrap_or_default()
    };
    // Until the recorder has found the topic (ticks before it are not delivered).
    let mut sec = 0;
    while recorded() == 0 {
        ticks.publish(Time { sec, nanosec: 0 }).unwrap();
        sec += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5_000 {
        ticks.publish(Time { sec, nanosec: 0 }).unwrap();
        sec += 1;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the recorder stops within the runner's grace")
        .unwrap()
        .unwrap();
    assert!(out.join("metadata.yaml").exists());
    let secs: Vec<i32> = BagReader::open(&out)
        .unwrap()
        .messages(&Filter::default())
        .map(|m| m.unwrap().decode::<Time>().unwrap().sec)
        .collect();
    let in_bag = secs.len() as u64;
    assert_eq!(in_bag, recorded());
    // What was written is the first part of what was delivered, in order; the rest is
    // counted as not written.
    let first = secs[0];
    assert_eq!(secs, (first..first + secs.len() as i32).collect::<Vec<_>>());
    let dropped = unwritten.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        in_bag + dropped,
        (sec - first) as u64,
        "written {in_bag}, not written {dropped}"
    );
}
