//! ROS 2 over DDS against a genuine peer: Cyclone DDS (the DDS behind
//! `rmw_cyclonedds_cpp`) from PyPI, driven by `scripts/dds_peer.py`, in other OS processes,
//! with its own ROS-named types. Each test takes a random domain id; the peer stays on the
//! loopback interface (`scripts/cyclone_loopback.xml`), the nodes use RustDDS's default
//! interfaces (with `ROS_LOCALHOST_ONLY=1` RustDDS does not send to a peer that advertises
//! only loopback addresses; see `src/bus/dds.rs`).
//!
//! The tests take turns (`one_at_a_time`): three DDS graphs discovering at once on a 2-core
//! machine once made the split sim / planner graph miss its episode report (1 failure in 4
//! parallel runs, 0 in 5 serial).
//!
//! Needs the `ros2-dds` feature (a default one) and Python with `cyclonedds` (`scripts/requirements.txt`;
//! `DREAMPLAN_PYTHON` names the interpreter). Without cyclonedds the tests say so and pass,
//! unless `DREAMPLAN_REQUIRE_INTEROP=1` (CI) makes that a failure.
#![cfg(feature = "dds-bus")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dreamplan::bag::{BagReader, Filter};
use dreamplan::msg::prelude::*;

/// Held for the whole of each test, so that they run one after another.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn python() -> String {
    std::env::var("DREAMPLAN_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether the peer can run; panics when CI requires it and it cannot.
fn peer_available() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import cyclonedds"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("DREAMPLAN_REQUIRE_INTEROP").is_err(),
            "DREAMPLAN_REQUIRE_INTEROP is set but `{} -c 'import cyclonedds'` fails (pip install -r scripts/requirements.txt)",
            python()
        );
        eprintln!("skipping: Python cyclonedds is not installed");
    }
    ok
}

/// A domain id no other test of this run uses (tests of one binary run in parallel).
fn domain(offset: u32) -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    20 + (std::process::id().wrapping_mul(7) + t / 1000 + offset * 61) % 200
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python peer, with its loopback-only Cyclone configuration.
fn peer(domain: u32, args: &[&str]) -> Command {
    let mut c = Command::new(python());
    c.arg(root().join("scripts/dds_peer.py"))
        .args(args)
        .args(["--domain", &domain.to_string()])
        .env(
            "CYCLONEDDS_URI",
            format!(
                "file://{}",
                root().join("scripts/cyclone_loopback.xml").display()
            ),
        );
    c
}

/// `dreamplan run --bus dds` on `graph` (YAML text) for at most `duration` seconds.
fn dreamplan_dds(domain: u32, dir: &Path, name: &str, graph: &str, duration: u32) -> Child {
    dreamplan_dds_ros_args(domain, dir, name, graph, duration, &[])
}

/// [`dreamplan_dds`] with `--ros-args` after the rest.
fn dreamplan_dds_ros_args(
    domain: u32,
    dir: &Path,
    name: &str,
    graph: &str,
    duration: u32,
    ros_args: &[&str],
) -> Child {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, graph).unwrap();
    Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["--log", "warn", "run", "--bus", "dds", "--config"])
        .arg(&config)
        .args(["--duration", &duration.to_string(), "--out"])
        .arg(dir.join(format!("{name}_out")))
        .arg("--ros-args")
        .args(ros_args)
        .env("ROS_DOMAIN_ID", domain.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The JSON lines a peer printed.
fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The episode events (event, detail) a peer printed, of `episode` when given, and where
/// the first `action_started` is among them.
fn events_from_action_start(
    lines: &[serde_json::Value],
    episode: Option<u64>,
) -> (Vec<(&str, &str)>, usize) {
    let events: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|l| l.get("episode_event"))
        .filter(|e| episode.is_none() || e["episode"].as_u64() == episode)
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["detail"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let at = events
        .iter()
        .position(|(e, _)| *e == "action_started")
        .unwrap_or_else(|| panic!("no action_started: {events:?}"));
    (events, at)
}

/// A peer's JSON lines, one per line, for a failure message.
fn show(lines: &[serde_json::Value]) -> String {
    let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    lines.join("\n")
}

fn stop(mut child: Child) -> Output {
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const SIM_ONLY: &str = "
duration_s: 0
nodes:
  - name: sim
    kind: sim
    params: {task: rope, seed: 3, episodes: 0, width: 64, height: 64, realtime: true}
";

#[test]
fn a_cyclone_peer_reads_the_sim_s_images_with_its_own_ros_types_and_a_late_joiner_gets_the_goal() {
    let _turn = one_at_a_time();
    if !peer_available() {
        return;
    }
    let d = domain(0);
    let dir = tempfile::tempdir().unwrap();
    let sim = dreamplan_dds(d, dir.path(), "sim", SIM_ONLY, 40);
    // Join late: the goal image and camera info were published (latched) before any reader
    // of this domain existed, so only transient-local durability can deliver them.
    std::thread::sleep(Duration::from_secs(4));
    let goal = peer(
        d,
        &[
            "take",
            "--topic",
            "/goal/image",
            "--durability",
            "transient_local",
            "--timeout",
            "20",
        ],
    )
    .output()
    .unwrap();
    let info = peer(
        d,
        &[
            "take",
            "--topic",
            "/camera/camera_info",
            "--type",
            "camera_info",
            "--durability",
            "transient_local",
            "--timeout",
            "20",
        ],
    )
    .output()
    .unwrap();
    let live = peer(
        d,
        &[
            "take",
            "--topic",
            "/camera/image_raw",
            "--count",
            "3",
            "--timeout",
            "20",
        ],
    )
    .output()
    .unwrap();
    let sim = stop(sim);
    for (what, o) in [("goal", &goal), ("camera_info", &info), ("image", &live)] {
        assert!(
            o.status.success(),
            "{what}: peer failed\n{}\nsim:\n{}",
            text(o),
            text(&sim)
        );
    }
    let goal = &json_lines(&goal)[0];
    assert_eq!(goal["width"], 64);
    assert_eq!(goal["height"], 64);
    assert_eq!(goal["encoding"], "rgb8");
    assert_eq!(goal["step"], 64 * 3);
    assert_eq!(goal["bytes"], 64 * 64 * 3);
    assert_eq!(
        goal["writer_types"],
        serde_json::json!(["sensor_msgs::msg::dds_::Image_"])
    );
    let info = &json_lines(&info)[0];
    assert_eq!(info["width"], 64);
    assert_eq!(info["distortion_model"], "plumb_bob");
    let fx = info["k"][0].as_f64().unwrap();
    assert!(fx > 10.0 && fx < 1000.0, "fx {fx}");
    let frames = json_lines(&live);
    assert_eq!(frames.len(), 3);
    for f in &frames {
        assert_eq!(f["bytes"], 64 * 64 * 3);
        assert!(!f["frame_id"].as_str().unwrap().is_empty());
    }
}

/// A recorder (`dreamplan run --bus dds`) of `/peer/image` while the peer publishes five
/// 6×4 images with `extra` arguments; stopped like Ctrl-C once the peer is done. Returns
/// the peer's output, the recorder's, the CRC-32 of each image the peer wrote and of each
/// image in the bag (checked 6×4 from `peer_camera`).
fn record_peer_images(offset: u32, extra: &[&str]) -> (Output, Output, Vec<u64>, Vec<u64>) {
    let d = domain(offset);
    let dir = tempfile::tempdir().unwrap();
    let bag = dir.path().join("bag");
    let graph = format!(
        "
duration_s: 0
nodes:
  - name: recorder
    kind: recorder
    params: {{out_dir: {}, topics: [/peer/image]}}
",
        bag.display()
    );
    let rec = dreamplan_dds(d, dir.path(), "rec", &graph, 25);
    let mut args = vec![
        "publish-image",
        "--topic",
        "/peer/image",
        "--width",
        "6",
        "--height",
        "4",
        "--count",
        "5",
        "--wait-reader",
        "--timeout",
        "20",
    ];
    args.extend_from_slice(extra);
    let sent = peer(d, &args).output().unwrap();
    // Let the recorder take and write the last sample, then stop it like Ctrl-C would.
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-INT", &rec.id().to_string()])
        .status();
    let t0 = Instant::now();
    let mut rec = rec;
    while rec.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let rec = stop(rec);
    assert!(
        sent.status.success(),
        "peer failed\n{}\nrecorder:\n{}",
        text(&sent),
        text(&rec)
    );
    let wrote: Vec<u64> = json_lines(&sent)
        .iter()
        .filter_map(|l| l["crc32"].as_u64())
        .collect();
    let reader = BagReader::open(&bag).unwrap_or_else(|e| panic!("{e}\n{}", text(&rec)));
    let mut got = Vec::new();
    for m in reader.messages(&Filter::default()) {
        let m = m.unwrap();
        assert_eq!(m.topic, "/peer/image");
        let img: Image = m.decode().unwrap();
        assert_eq!((img.width, img.height, img.step), (6, 4, 18));
        assert_eq!(img.header.frame_id, "peer_camera");
        got.push(u64::from(crc32fast::hash(&img.data)));
    }
    (sent, rec, wrote, got)
}

#[test]
fn a_cyclone_peer_s_images_are_recorded_byte_for_byte_after_a_malformed_one_is_dropped() {
    let _turn = one_at_a_time();
    if !peer_available() {
        return;
    }
    let (sent, rec, wrote, got) = record_peer_images(1, &["--malformed-first"]);
    assert_eq!(wrote.len(), 5);
    assert_eq!(got, wrote, "recorded images differ from the peer's");
    // The sample that claimed to be an Image but was not was logged and dropped; the node
    // kept running and recorded everything after it.
    assert!(
        json_lines(&sent)
            .iter()
            .any(|l| l["wrote_malformed"] == true),
        "{}",
        text(&sent)
    );
    let log = String::from_utf8_lossy(&rec.stderr);
    assert!(log.contains("does not decode"), "{}", text(&rec));
}

/// A camera driver publishes with the sensor-data profile (best effort); its images are
/// recorded. The recorder subscribes best effort when a writer offers it, as `ros2 bag
/// record` does, since by the DDS rules a reliable reader does not match a best-effort
/// writer (the rule's unit test is in `src/nodes/recorder.rs`; this Cyclone peer matched
/// the recorder's reliable reader too, so here it guards the interop, not the rule).
#[test]
fn a_best_effort_peer_s_images_are_recorded() {
    let _turn = one_at_a_time();
    if !peer_available() {
        return;
    }
    let (_, rec, wrote, got) = record_peer_images(6, &["--best-effort", "--period", "0.3"]);
    // Best effort may lose a sample at the match; what arrived is the peer's, in order.
    assert!(
        got.len() >= 3,
        "{} of 5 recorded\n{}",
        got.len(),
        text(&rec)
    );
    let mut rest = wrote.iter();
    assert!(
        got.iter().all(|g| rest.any(|w| w == g)),
        "recorded images differ from the peer's"
    );
}

#[test]
fn sim_in_one_process_planner_and_executor_in_another_score_an_episode_over_dds() {
    let _turn = one_at_a_time();
    if !peer_available() {
        return;
    }
    let d = domain(2);
    let dir = tempfile::tempdir().unwrap();
    let agents = dreamplan_dds(
        d,
        dir.path(),
        "agents",
        "
duration_s: 0
nodes:
  - name: planner
    kind: planner
    params: {backend: correspondence, keypoints: 8}
  - name: executor
    kind: executor
    params: {width: 96, height: 96}
",
        120,
    );
    let sim = dreamplan_dds(
        d,
        dir.path(),
        "sim",
        "
duration_s: 0
nodes:
  - name: sim
    kind: sim
    params: {task: rope, seed: 5, episodes: 1, width: 96, height: 96, realtime: false, start_delay_s: 6.0}
",
        110,
    );
    let sim = sim.wait_with_output().unwrap();
    let agents = stop(agents);
    assert!(
        sim.status.success(),
        "sim process\n{}\nagents:\n{}",
        text(&sim),
        text(&agents)
    );
    let out = String::from_utf8_lossy(&sim.stdout);
    assert!(
        out.contains("1 episode(s) scored"),
        "no scored episode reported:\n{}\nagents:\n{}",
        text(&sim),
        text(&agents)
    );
}

/// Writes what a robot's sensors would publish for `task` at `seed` (camera image with the
/// arm at `q`, its depth, the object-only goal image, the intrinsics) as plain files for
/// the peer's `drive`: the peer publishes them with its own ROS-named types.
fn write_scene(dir: &Path, task: dreamplan::sim::tasks::Task, seed: u64, side: u32, q: &[f64]) {
    use dreamplan::render::{render, scene, RenderMode, RenderOptions};
    use dreamplan::sim::episode::{arm_goal, default_arm};
    let arm = default_arm();
    let cam = scene::default_camera(side, side);
    let opts = RenderOptions::default();
    let mut world = dreamplan::sim::tasks::reset(task, seed);
    world.teleport_gripper(nalgebra::Point3::from(arm.fk(q).translation.vector));
    let full = render(
        &scene::full_scene(&world, &arm, q, true),
        &cam,
        RenderMode::Full,
        &opts,
    );
    let goal = render(
        &scene::world_primitives(&arm_goal(task, seed, &arm).unwrap()),
        &cam,
        RenderMode::ObjectOnly,
        &opts,
    );
    std::fs::write(dir.join("current.rgb"), &full.rgb).unwrap();
    let depth: Vec<u8> = full
        .depth
        .iter()
        .flat_map(|d| (if d.is_finite() { *d } else { f32::NAN }).to_le_bytes())
        .collect();
    std::fs::write(dir.join("current_depth.f32"), depth).unwrap();
    std::fs::write(dir.join("goal.rgb"), &goal.rgb).unwrap();
    let mut names = arm.joint_names();
    names.push("panda_finger_joint1".into());
    let mut q = q.to_vec();
    q.push(0.04);
    let scene = serde_json::json!({
        "task": format!("{task:?}").to_lowercase(),
        "width": side,
        "height": side,
        "k": cam.camera_info(Default::default()).k,
        "joint_names": names,
        "q": q,
    });
    std::fs::write(dir.join("scene.json"), scene.to_string()).unwrap();
}

/// The graph of the robot-side tests: a planner (coverage) and an executor at 96 px.
/// A graph of a planner (coverage) and an executor at 96 px with more `executor` params
/// (", key: value" items, or "").
fn planner_and_executor_96(executor: &str) -> String {
    format!(
        "
duration_s: 0
nodes:
  - name: planner
    kind: planner
    params: {{backend: coverage, keypoints: 8}}
  - name: executor
    kind: executor
    params: {{width: 96, height: 96{executor}}}
"
    )
}

/// [`planner_and_executor_96`] over DDS, beside the Cyclone peer playing the robot's side
/// (`drive` with `extra` arguments) on the scene in `dir`: the peer's JSON lines, once it
/// has succeeded (else the test fails with both outputs).
fn drive_planner_and_executor(d: u32, dir: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    drive_planner_and_executor_with(d, dir, "", extra)
}

/// [`drive_planner_and_executor`] with more `executor` params.
fn drive_planner_and_executor_with(
    d: u32,
    dir: &Path,
    executor: &str,
    extra: &[&str],
) -> Vec<serde_json::Value> {
    let graph = planner_and_executor_96(executor);
    let nodes = dreamplan_dds(d, dir, "nodes", &graph, 150);
    let mut args = vec!["drive", "--scene", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let drove = peer(d, &args).output().unwrap();
    let nodes = stop(nodes);
    assert!(
        drove.status.success(),
        "peer failed\n{}\nnodes:\n{}",
        text(&drove),
        text(&nodes)
    );
    json_lines(&drove)
}

/// The peer plays a real arm's side (camera, depth, intrinsics, latched goal, joint
/// states, the `reset` trigger) with its own ROS-named types. It first asks for two
/// decisions on bad camera images (an encoding the planner does not read; a size its
/// bytes do not fill):
/// each ends with a `failed` event naming the problem and the node keeps going. The third
/// gets a `KeypointAction` and, from the executor, a `JointTrajectory` that starts at the
/// peer's joint state.
#[test]
fn a_cyclone_peer_playing_the_robot_gets_the_planner_s_action_and_the_executor_s_trajectory() {
    let _turn = one_at_a_time();
    if !peer_available() {
        return;
    }
    let d = domain(3);
    let dir = tempfile::tempdir().unwrap();
    // The arm is not at the built-in ready pose: the trajectory must start where the
    // peer's joint states say it is.
    let mut q = dreamplan::sim::episode::READY.to_vec();
    q[0] += 0.05;
    q[3] -= 0.04;
    let side = 96;
    write_scene(dir.path(), dreamplan::sim::tasks::Task::Cloth, 3, side, &q);
    // The peer's intrinsics are not the built-in camera's (a longer focal length, the
    // centre a pixel off), so that the trajectory shows which the executor used.
    let scene_file = dir.path().join("scene.json");
    let mut scene: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&scene_file).unwrap()).unwrap();
    let mut k: Vec<f64> = serde_json::from_value(scene["k"].clone()).unwrap();
    k[0] *= 1.04;
    k[4] *= 1.04;
    k[2] += 1.0;
    scene["k"] = serde_json::json!(k);
    std::fs::write(&scene_file, scene.to_string()).unwrap();
    let lines = drive_planner_and_executor(d, dir.path(), &["--bad-first", "--timeout", "70"]);
    let failed: Vec<(u64, String)> = lines
        .iter()
        .filter_map(|l| l.get("episode_event"))
        .filter(|e| e["event"] == "failed")
        .map(|e| {
            (
                e["episode"].as_u64().unwrap(),
                e["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0].0, 5);
    assert!(
        failed[0]
            .1
            .contains("\"yuv422\" is not rgb8, bgr8, rgba8 or bgra8"),
        "{failed:?}"
    );
    assert_eq!(failed[1].0, 6);
    assert!(
        failed[1]
            .1
            .contains("image of 4096×4096 holds 27648 bytes, fewer than its size needs"),
        "{failed:?}"
    );
    let action = lines.iter().find_map(|l| l.get("action")).unwrap();
    assert_eq!(action["episode"], 7, "decided on a bad image: {action}");
    assert_eq!(
        action["writer_types"],
        serde_json::json!(["dreamplan::msg::dds_::KeypointAction_"])
    );
    let (pick, place) = (
        action["source_id"].as_u64().unwrap(),
        action["target_id"].as_u64().unwrap(),
    );
    assert!(
        (1..=8).contains(&pick) && (1..=8).contains(&place),
        "{action}"
    );
    assert_eq!(
        action["raw_text"].as_str().unwrap(),
        format!("pick {pick} place {place}")
    );
    for uv in [&action["source_uv"], &action["target_uv"]] {
        for c in [uv[0].as_f64().unwrap(), uv[1].as_f64().unwrap()] {
            assert!((0.0..side as f64).contains(&c), "pixel {uv} off the image");
        }
    }
    let traj = lines.iter().find_map(|l| l.get("trajectory")).unwrap();
    assert_eq!(
        traj["writer_types"],
        serde_json::json!(["trajectory_msgs::msg::dds_::JointTrajectory_"])
    );
    let names: Vec<&str> = traj["joint_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 8);
    assert_eq!(names[7], "panda_finger_joint1");
    let points = traj["points"].as_array().unwrap();
    assert!(points.len() > 4, "{traj}");
    let first: Vec<f64> = points[0]["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (j, (a, b)) in first.iter().zip(&q).enumerate() {
        assert!(
            (a - b).abs() < 1e-6,
            "joint {j}: starts at {a}, the peer's arm is at {b}"
        );
    }
    // The gripper opens, closes on the pick and opens at the place; time runs forward.
    let finger: Vec<f64> = points
        .iter()
        .map(|p| p["positions"][7].as_f64().unwrap())
        .collect();
    assert_eq!(finger[0], 0.04);
    assert!(
        finger.contains(&0.0),
        "the gripper never closes: {finger:?}"
    );
    assert_eq!(*finger.last().unwrap(), 0.04);
    let times: Vec<f64> = points.iter().map(|p| p["t"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[1] > w[0]), "{times:?}");
    // RViz's view of it, read with the peer's own visualization_msgs types: in the base
    // frame, the last action's markers cleared first, the path one point per trajectory
    // point, the label the action's text, and the pick sphere where the trajectory's tool
    // point is when the gripper closes.
    let shown = lines.iter().find(|l| l.get("markers").is_some()).unwrap();
    assert_eq!(
        shown["writer_types"],
        serde_json::json!(["visualization_msgs::msg::dds_::MarkerArray_"])
    );
    let markers = shown["markers"].as_array().unwrap();
    assert!(
        markers
            .iter()
            .all(|m| m["frame_id"] == "world" && m["ns"] == "dreamplan"),
        "{shown}"
    );
    assert_eq!(markers[0]["action"], 3, "DELETEALL first: {shown}");
    let marker = |id: i32| {
        markers
            .iter()
            .find(|m| m["id"] == id && m["action"] == 0)
            .unwrap()
    };
    assert_eq!(marker(3)["points"].as_u64(), Some(points.len() as u64));
    assert_eq!(marker(4)["text"], action["raw_text"]);
    {
        let closed = points
            .iter()
            .find(|p| p["positions"][7].as_f64() == Some(0.0))
            .unwrap();
        let q: Vec<f64> = (0..7)
            .map(|j| closed["positions"][j].as_f64().unwrap())
            .collect();
        let tcp = dreamplan::sim::episode::default_arm()
            .fk(&q)
            .translation
            .vector;
        let pick: Vec<f64> = (0..3)
            .map(|i| marker(1)["position"][i].as_f64().unwrap())
            .collect();
        let gap = (tcp - nalgebra::Vector3::new(pick[0], pick[1], pick[2])).norm();
        assert!(
            gap < 0.005,
            "pick marker {pick:?}, the tool at the grasp {tcp:?}"
        );
    }
    // Planned with the peer's camera info, which it publishes best effort and volatile as
    // a driver or ros_gz_bridge does: a latched reader alone does not match that writer,
    // and the executor kept the built-in intrinsics before session 46.
    {
        use dreamplan::nodes::executor::{plan_action, with_finger_column, ExecutorConfig};
        use dreamplan::sim::episode::default_arm;
        let cfg = ExecutorConfig {
            width: side,
            height: side,
            ..Default::default()
        };
        let uv = |key: &str| {
            let v = &action[key];
            (v[0].as_f64().unwrap() as f32, v[1].as_f64().unwrap() as f32)
        };
        let ((su, sv), (tu, tv)) = (uv("source_uv"), uv("target_uv"));
        let act = KeypointAction {
            source_u: su,
            source_v: sv,
            target_u: tu,
            target_v: tv,
            ..Default::default()
        };
        let depth = dreamplan::robot::safety::DepthImage {
            width: side,
            height: side,
            data: std::fs::read(dir.path().join("current_depth.f32"))
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        };
        let info = CameraInfo {
            width: side,
            height: side,
            k: k.clone().try_into().unwrap(),
            ..Default::default()
        };
        let plan = |cam: dreamplan::render::camera::PinholeCamera| {
            let p = plan_action(&cfg, &default_arm(), &cam, &act, Some(&depth), None, &q)
                .expect("the test plans what the executor planned");
            with_finger_column(&p)
        };
        let positions: Vec<Vec<f64>> = points
            .iter()
            .map(|p| {
                p["positions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect()
            })
            .collect();
        let off = |t: &JointTrajectory| {
            assert_eq!(t.points.len(), positions.len(), "another number of points");
            t.points
                .iter()
                .zip(&positions)
                .flat_map(|(a, b)| a.positions.iter().zip(b).map(|(x, y)| (x - y).abs()))
                .fold(0.0, f64::max)
        };
        let peer = plan(cfg.camera(Some(&info)));
        assert!(
            off(&peer) < 1e-9,
            "not the peer's intrinsics: {}",
            off(&peer)
        );
        let builtin = plan(cfg.camera(None));
        assert!(
            builtin.points.len() != positions.len() || off(&builtin) > 1e-4,
            "the peer's intrinsics do not change the plan: the check would not tell"
        );
    }
    let started = lines
        .iter()
        .filter_map(|l| l.get("episode_event"))
        .find(|e| e["event"] == "action_started")
        .unwrap();
    assert_eq!(
        started["episode"], 7,
        "the event belongs to the peer's episode"
    );
    assert_eq!(started["task"], "cloth");
    assert_eq!(started["detail"], format!("pick {pick} place {place}"));
    assert_eq!(
        started["writer_types"],
        serde_json::json!(["dreamplan::msg::dds_::EpisodeEvent_"])
    );
}

/// A goal image from a volatile publisher (what an rclpy `create_publisher(Image,
/// "/goal/image", 10)` makes) reaches the planner: it reads the goal through a volatile
/// reader beside the latched one. Before session 47 only a latched goal matched, and a
/// volatile one was never heard (the peer here would never see a matched goal reader).
#[test]
fn a_goal_image_from_a_volatile_publisher_reaches_the_planner() {
    let _turn = one_at_a_time();
    if !peer_available() {
        return;
    }
    let d = domain(6);
    let dir = tempfile::tempdir().unwrap();
    let q = dreamplan::sim::episode::READY.to_vec();
    write_scene(dir.path(), dreamplan::sim::tasks::Task::Rope, 5, 96, &q);
    let lines = drive_planner_and_executor(d, dir.path(), &["--goal-volatile", "--timeout", "60"]);
    assert!(
        lines
            .iter()
            .any(|l| l.get("wrote") == Some(&serde_json::json!("goal"))),
        "the volatile goal was never written (no matched reader)"
    );
    let action = lines
        .iter()
        .find_map(|l| l.get("action"))
        .expect("an action");
    assert_eq!(action["episode"], 7);
    assert!(lines.iter().any(|l| l.get("trajectory").is_some()));
}

/// The peer, as a ROS parameter client (rcl_interfaces services in rmw_cyclonedds_cpp's
/// mapping), lists, reads and describes the executor's parameters, sets one that applies
/// while it runs, and sees the next trajectory slow down; sets that must be refused (a
/// parameter read at start, an unknown one, a wrong type, a value the node's checks
/// reject) are refused with their reasons and change nothing.
#[test]
fn a_cyclone_peer_sets_the_executor_s_parameters_and_the_next_trajectory_follows_them() {
    let _turn = one_at_a_time();
    if !peer_available() {
        return;
    }
    let d = domain(4);
    let dir = tempfile::tempdir().unwrap();
    let q = dreamplan::sim::episode::READY.to_vec();
    let side = 96;
    write_scene(dir.path(), dreamplan::sim::tasks::Task::Cloth, 3, side, &q);
    // Started as `ros2 run` would be: a params file (its wildcard section reaches only
    // the node that has the key), `-p`, a namespace and a topic remap.
    let params_file = dir.path().join("params.yaml");
    std::fs::write(
        &params_file,
        "/**:\n  ros__parameters:\n    table_z: 0.0\nexecutor:\n  ros__parameters:\n    motion.cartesian_speed_m_s: 0.2\n",
    )
    .unwrap();
    let nodes = dreamplan_dds_ros_args(
        d,
        dir.path(),
        "nodes",
        &planner_and_executor_96(""),
        150,
        &[
            "--params-file",
            params_file.to_str().unwrap(),
            "-p",
            "envelope.max_speed_fraction:=0.9",
            "-r",
            "__ns:=/lab",
            "-r",
            "/arm/joint_trajectory:=/lab_arm/joint_trajectory",
        ],
    );
    let scene = dir.path().to_str().unwrap().to_string();
    let run_peer = |args: &[&str]| peer(d, args).output().unwrap();
    let drive = |episode: &str| {
        let o = run_peer(&[
            "drive",
            "--scene",
            &scene,
            "--episode",
            episode,
            "--trajectory-topic",
            "/lab_arm/joint_trajectory",
            "--timeout",
            "60",
        ]);
        let traj = json_lines(&o)
            .into_iter()
            .find_map(|l| l.get("trajectory").cloned());
        (o, traj)
    };
    let duration = |traj: &serde_json::Value| {
        traj["points"].as_array().unwrap().last().unwrap()["t"]
            .as_f64()
            .unwrap()
    };
    let param_line = |o: &Output| json_lines(o).into_iter().next().unwrap_or_default();

    let listed = run_peer(&[
        "param",
        "--node",
        "/lab/executor",
        "--list",
        "--get",
        "motion.cartesian_speed_m_s",
        "--get",
        "envelope.max_speed_fraction",
        "--get",
        "topics.action",
        "--get",
        "no.such",
        "--get",
        "use_sim_time",
        "--describe",
        "motion.cartesian_speed_m_s",
        "--describe",
        "width",
    ]);
    let l = param_line(&listed);
    let finish = |nodes| text(&stop(nodes));
    if !listed.status.success() {
        panic!(
            "param list failed\n{}\nnodes:\n{}",
            text(&listed),
            finish(nodes)
        );
    }
    // The ROS graph as `ros2 node list` and `ros2 param` read it (ros_discovery_info): the
    // process's node and each graph node under the namespace, each with the GUIDs of its own
    // endpoints, which the peer's DDS discovery confirms.
    // Humble's rmw_dds_common has 24-byte GIDs (the GUID, then zeros); Iron and later 16.
    let gid_bytes: usize = if cfg!(feature = "ros2-dds-humble") {
        24
    } else {
        16
    };
    let g = run_peer(&[
        "graph",
        "--gid-bytes",
        &gid_bytes.to_string(),
        "--expect",
        "/lab/executor",
        "--expect",
        "/lab/planner",
        "--expect",
        "/lab/dreamplan",
    ]);
    if !g.status.success() {
        panic!("graph: {}\nnodes:\n{}", text(&g), finish(nodes));
    }
    let g = param_line(&g);
    let graph_nodes = g["nodes"].as_array().unwrap();
    let node = |name: &str| {
        graph_nodes
            .iter()
            .find(|n| n["namespace"] == "/lab" && n["name"] == name)
            .unwrap_or_else(|| panic!("/lab/{name} not in the graph: {g}"))
    };
    let topics = |n: &serde_json::Value, side: &str, kind: &str| -> Vec<String> {
        n[side]
            .as_array()
            .unwrap()
            .iter()
            .inspect(|e| {
                let gid = e["gid"].as_str().unwrap();
                assert_eq!(gid.len(), 2 * gid_bytes, "a {gid_bytes}-byte GID: {e}");
                assert!(gid[32..].bytes().all(|c| c == b'0'), "padding: {e}");
            })
            .filter(|e| e["kind"] == kind)
            .map(|e| e["topic"].as_str().unwrap().to_string())
            .collect()
    };
    let executor = node("executor");
    for service in [
        "list_parameters",
        "get_parameters",
        "get_parameter_types",
        "describe_parameters",
        "set_parameters",
        "set_parameters_atomically",
    ] {
        let request = format!("rq/lab/executor/{service}Request");
        let reply = format!("rr/lab/executor/{service}Reply");
        assert!(
            topics(executor, "readers", "reader").contains(&request),
            "the executor's node does not list its {request} reader: {executor}"
        );
        assert!(
            topics(executor, "writers", "writer").contains(&reply),
            "the executor's node does not list its {reply} writer: {executor}"
        );
    }
    node("planner");
    // The process's node holds the topics: the executor's trajectory, remapped.
    let main_writers = topics(node("dreamplan"), "writers", "writer");
    assert!(
        main_writers.contains(&"rt/lab_arm/joint_trajectory".to_string()),
        "{main_writers:?}"
    );

    let names: Vec<&str> = l["list"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for n in [
        // As on every rclcpp node (session 53).
        "use_sim_time",
        "width",
        "table_z",
        "envelope.out_of_bounds",
        "envelope.workspace_min",
        "motion.cartesian_speed_m_s",
        "topics.trajectory",
    ] {
        assert!(names.contains(&n), "`{n}` not listed: {names:?}");
    }
    assert!(l["list"]["prefixes"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("motion")));
    // [type, value]: 1 = bool, 3 = double, 4 = string, 0 = not set.
    assert_eq!(l["get"]["use_sim_time"], serde_json::json!([1, false]));
    // From the params file's executor section and from `-p`.
    assert_eq!(
        l["get"]["motion.cartesian_speed_m_s"],
        serde_json::json!([3, 0.2])
    );
    assert_eq!(
        l["get"]["envelope.max_speed_fraction"],
        serde_json::json!([3, 0.9])
    );
    assert_eq!(
        l["get"]["topics.action"],
        serde_json::json!([4, "/planner/action"])
    );
    assert_eq!(l["get"]["no.such"][0], 0);
    assert_eq!(
        l["describe"]["motion.cartesian_speed_m_s"]["read_only"],
        false
    );
    assert_eq!(l["describe"]["width"]["read_only"], true);

    let (first, t1) = drive("7");
    let Some(t1) = t1 else {
        panic!("no trajectory\n{}\nnodes:\n{}", text(&first), finish(nodes));
    };

    // set_parameters_atomically: all or none. A set with one value the executor's checks
    // refuse changes nothing, not even its valid member; a valid set changes both.
    let atomic = run_peer(&[
        "param",
        "--node",
        "/lab/executor",
        "--events",
        "--set-atomically",
        "motion.cartesian_speed_m_s=0.07",
        "--set-atomically",
        "motion.cartesian_accel_m_s2=-1.0",
        "--get",
        "motion.cartesian_speed_m_s",
        "--get",
        "motion.cartesian_accel_m_s2",
    ]);
    let a = param_line(&atomic);
    if !atomic.status.success() {
        panic!(
            "atomic param set failed\n{}\nnodes:\n{}",
            text(&atomic),
            finish(nodes)
        );
    }
    assert_eq!(a["set_atomically"]["successful"], false, "{a}");
    let reason = a["set_atomically"]["reason"].as_str().unwrap();
    assert!(reason.contains("cartesian_accel_m_s2 must be > 0"), "{a}");
    assert_eq!(
        a["get"]["motion.cartesian_speed_m_s"],
        serde_json::json!([3, 0.2])
    );
    // A refused set is no change: nothing on /parameter_events.
    assert_eq!(a["events"], serde_json::json!([]), "{a}");
    let atomic = run_peer(&[
        "param",
        "--node",
        "/lab/executor",
        "--events",
        "--set-atomically",
        "envelope.max_speed_fraction=0.95",
        "--set-atomically",
        "motion.cartesian_speed_m_s=0.1",
        "--get",
        "envelope.max_speed_fraction",
        "--get",
        "motion.cartesian_speed_m_s",
    ]);
    let a = param_line(&atomic);
    assert_eq!(a["set_atomically"]["successful"], true, "{a}");
    assert_eq!(
        a["get"]["envelope.max_speed_fraction"],
        serde_json::json!([3, 0.95])
    );
    assert_eq!(
        a["get"]["motion.cartesian_speed_m_s"],
        serde_json::json!([3, 0.1])
    );
    // One event for the atomic set, naming the node by its full name, both values in it.
    let events = a["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{a}");
    assert_eq!(
        events[0]["changed"],
        serde_json::json!({
            "envelope.max_speed_fraction": [3, 0.95],
            "motion.cartesian_speed_m_s": [3, 0.1],
        }),
        "{a}"
    );
    assert_eq!(events[0]["new"], serde_json::json!([]), "{a}");
    // Stamped by the bus clock (the wall clock here): within the last minute.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let stamp = events[0]["stamp"].as_f64().unwrap();
    assert!(
        (now - 60.0..=now + 1.0).contains(&stamp),
        "{stamp} vs {now}"
    );

    let set = run_peer(&[
        "param",
        "--node",
        "/lab/executor",
        "--events",
        "--set",
        "motion.cartesian_speed_m_s=0.05",
        "--set",
        "width=64",
        "--set",
        "no.such=1",
        "--set",
        "motion.lift_height_m=\"high\"",
        "--set",
        "motion.cartesian_accel_m_s2=-1.0",
        "--get",
        "motion.cartesian_speed_m_s",
        "--get",
        "motion.cartesian_accel_m_s2",
        "--get",
        "width",
    ]);
    let s = param_line(&set);
    if !set.status.success() {
        panic!(
            "param set failed\n{}\nnodes:\n{}",
            text(&set),
            finish(nodes)
        );
    }
    let results = s["set"].as_array().unwrap();
    let ok: Vec<bool> = results
        .iter()
        .map(|r| r["successful"].as_bool().unwrap())
        .collect();
    assert_eq!(ok, [true, false, false, false, false], "{s}");
    let reason = |i: usize| results[i]["reason"].as_str().unwrap();
    assert!(
        reason(1).contains("read when node `executor` starts"),
        "{s}"
    );
    assert!(reason(2).contains("no parameter `no.such`"), "{s}");
    assert!(reason(3).contains("is a double"), "{s}");
    assert!(
        reason(4).contains("cartesian_accel_m_s2 must be > 0"),
        "{s}"
    );
    assert_eq!(
        s["get"]["motion.cartesian_speed_m_s"],
        serde_json::json!([3, 0.05])
    );
    assert_eq!(
        s["get"]["motion.cartesian_accel_m_s2"],
        serde_json::json!([3, 0.8])
    );
    assert_eq!(s["get"]["width"], serde_json::json!([2, 96]));
    // Of five parameters in one request, the one accepted is the one event.
    let changed: Vec<&serde_json::Value> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["changed"])
        .collect();
    assert_eq!(
        changed,
        [&serde_json::json!({"motion.cartesian_speed_m_s": [3, 0.05]})],
        "{s}"
    );

    let (second, t2) = drive("8");
    let nodes = stop(nodes);
    let t2 = t2.unwrap_or_else(|| {
        panic!(
            "no second trajectory\n{}\nnodes:\n{}",
            text(&second),
            text(&nodes)
        )
    });
    // Same scene, same decision, same start: only the Cartesian speed changed (the speed
    // limit's fraction, also raised, only checks), so the same path takes longer (the
    // joint-space approach and the dwells do not change).
    assert_eq!(
        t1["points"][0]["positions"], t2["points"][0]["positions"],
        "not the same start"
    );
    let (d1, d2) = (duration(&t1), duration(&t2));
    eprintln!("trajectory: {d1:.2} s at 0.2 m/s, {d2:.2} s at 0.05 m/s");
    assert!(
        d2 > d1 * 1.3,
        "the trajectory did not slow down: {d1:.2} s at 0.2 m/s, {d2:.2} s at 0.05 m/s"
    );
    assert!(
        String::from_utf8_lossy(&nodes.stderr).contains("parameter set refused"),
        "refusals are logged"
    );
}

/// The executor drives the arm through `control_msgs/action/FollowJointTrajectory` over
/// DDS: the peer serves the action (its own IDL types, rmw_cyclonedds_cpp's request/reply
/// mapping) as a ros2_control controller would. A goal that succeeds frees the arm
/// (`action_finished`); one the controller aborts, or rejects, is a `failed` event with
/// the controller's reason; no trajectory goes out on the topic meanwhile. An e-stop
/// cancels a running goal, one not yet accepted, and one accepted only after the executor
/// gave it up.
#[test]
fn a_cyclone_peer_serving_follow_joint_trajectory_gets_the_goal_and_its_outcome_is_reported() {
    let _turn = one_at_a_time();
    if !peer_available() {
        return;
    }
    let d = domain(5);
    let dir = tempfile::tempdir().unwrap();
    let mut q = dreamplan::sim::episode::READY.to_vec();
    q[1] += 0.03;
    write_scene(dir.path(), dreamplan::sim::tasks::Task::Rope, 4, 96, &q);
    let nodes = dreamplan_dds(
        d,
        dir.path(),
        "nodes",
        "
duration_s: 0
nodes:
  - name: planner
    kind: planner
    params: {backend: coverage, keypoints: 8}
  - name: executor
    kind: executor
    params: {width: 96, height: 96, trajectory_action: /arm_controller/follow_joint_trajectory}
",
        150,
    );
    let scene = dir.path().to_str().unwrap().to_string();
    let drive = |episode: &str, outcome: &str| {
        let mut args = vec![
            "drive",
            "--scene",
            &scene,
            "--episode",
            episode,
            "--serve-action",
            "/arm_controller/follow_joint_trajectory",
            "--timeout",
            "60",
        ];
        // The e-stop comes 0.5 s into a goal that would run for 30 s: the executor must
        // cancel it on the controller. It is published volatile, as an rclcpp node's plain
        // publisher does (the executor's latched reader alone did not match it before
        // session 42). Early, it comes 0.2 s after the goal request, 0.8 s before a slow
        // controller accepts it, latched: the cancel must still reach the goal (it was lost
        // before session 42, and the arm ran the whole trajectory).
        args.extend(match outcome {
            "estop" => vec![
                "--action-hold",
                "30",
                "--estop-after",
                "0.5",
                "--estop-volatile",
            ],
            "estop-early" => vec![
                "--action-hold",
                "30",
                "--accept-after",
                "1.0",
                "--estop-after",
                "0.2",
            ],
            // Accepted after the executor gave the goal up (5 s): the executor reported
            // it failed, yet the arm runs it; the e-stop after that must still cancel it
            // (its id was lost before session 52, and nothing could).
            "estop-late" => vec![
                "--action-hold",
                "30",
                "--accept-after",
                "6.0",
                "--estop-after",
                "7.0",
            ],
            o => vec!["--action-hold", "0.5", "--action-outcome", o],
        });
        peer(d, &args).output().unwrap()
    };
    let mut runs = Vec::new();
    // Each e-stop run releases its e-stop at the end (it is latched, and the executor
    // refuses actions while it holds).
    for (episode, outcome) in [
        ("7", "succeed"),
        ("8", "abort"),
        ("9", "reject"),
        ("10", "estop"),
        ("11", "estop-early"),
        ("12", "estop-late"),
    ] {
        let o = drive(episode, outcome);
        let ok = o.status.success();
        runs.push((episode, outcome, o));
        if !ok {
            break;
        }
    }
    let nodes = stop(nodes);
    for (episode, outcome, o) in &runs {
        assert!(
            o.status.success(),
            "peer ({outcome}) failed\n{}\nnodes:\n{}",
            text(o),
            text(&nodes)
        );
        let lines = json_lines(o);
        let goal = lines.iter().find_map(|l| l.get("trajectory")).unwrap();
        assert_eq!(goal["via"], "action");
        assert_eq!(
            goal["writer_types"],
            serde_json::json!([
                "control_msgs::action::dds_::FollowJointTrajectory_SendGoal_Request_"
            ])
        );
        assert_eq!(goal["tolerances"], serde_json::json!([0, 0, 0, 0]));
        assert_eq!(goal["multi_dof_points"], 0);
        let points = goal["points"].as_array().unwrap();
        assert!(points.len() > 4, "{goal}");
        for (j, b) in q.iter().enumerate() {
            let a = points[0]["positions"][j].as_f64().unwrap();
            assert!((a - b).abs() < 1e-6, "joint {j}: starts at {a}, arm at {b}");
        }
        assert_eq!(goal["joint_names"][7], "panda_finger_joint1");
        // (With the action, the e-stop cancels the goal and sends nothing on the topic.)
        assert!(
            !lines.iter().any(|l| l.get("topic_trajectory").is_some()),
            "a trajectory went out on the topic too:\n{}",
            text(o)
        );
        let (events, at) = events_from_action_start(&lines, Some(episode.parse().unwrap()));
        let (end, detail) = events[at + 1];
        match *outcome {
            "succeed" => assert_eq!(end, "action_finished", "{events:?}"),
            "abort" => {
                assert_eq!(end, "failed", "{events:?}");
                assert!(
                    detail.contains("Aborted")
                        && detail.contains("PATH_TOLERANCE_VIOLATED")
                        && detail.contains("left its path tolerance"),
                    "{detail}"
                );
            }
            "reject" => {
                assert_eq!(end, "failed", "{events:?}");
                assert!(detail.contains("rejected"), "{detail}");
            }
            "estop-late" => {
                assert_eq!(end, "failed", "{events:?}");
                assert!(
                    detail.contains("did not answer the goal within 5 s"),
                    "{detail}"
                );
                assert!(
                    lines.iter().any(|l| l.get("canceled").is_some()),
                    "the goal accepted late got no cancel request:\n{}",
                    text(o)
                );
            }
            _ => {
                assert_eq!((end, detail), ("failed", "e-stop"), "{events:?}");
                assert!(
                    lines.iter().any(|l| l.get("canceled").is_some()),
                    "the controller got no cancel request:\n{}",
                    text(o)
                );
            }
        }
        // A reliable volatile e-stop (rclcpp's plain publisher, `ros2 topic pub`) is read
        // by a reliable reader, so a lost sample is sent again: before session 48 its
        // only match was a best-effort reader.
        if *outcome == "estop" {
            let readers = lines
                .iter()
                .find(|l| l["wrote"] == "estop")
                .map(|l| l["readers"].clone())
                .unwrap_or_else(|| panic!("no e-stop written:\n{}", text(o)));
            assert!(
                readers
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["reliable"] == true && r["durability"] == "Durability.Volatile"),
                "no reliable volatile reader of the e-stop: {readers}"
            );
        }
    }
    assert_eq!(runs.len(), 6);
}

/// The executor opens and closes the gripper through `control_msgs/action/GripperCommand`
/// over DDS, served by the peer as ros2_controllers' `GripperActionController` (its own
/// IDL types, rmw_cyclonedds_cpp's request/reply mapping), for an arm whose trajectory
/// controller has no finger joint. Each action: open at the motion's start, closed at the
/// grasp, open at the release, with the configured positions and effort.
/// - Trajectories on the topic, the close stalling on the object (ABORTED, stalled): a
///   grasp, so the action ends `action_finished`.
/// - Trajectories as FollowJointTrajectory goals that the controller accepts 1.5 s after
///   the request: the gripper's times count from the acceptance, so its first command
///   comes after it; an open the gripper aborts ends the action `failed` with the reason.
/// - `gripper_action_type: parallel_gripper_command`: the peer serves
///   `control_msgs/action/ParallelGripperCommand` as Jazzy's
///   `parallel_gripper_action_controller`; each command is a joint state of one position
///   and the effort under the configured joint's name.
#[test]
fn a_cyclone_peer_serving_gripper_command_is_opened_closed_and_opened_in_the_motion_s_time() {
    let _turn = one_at_a_time();
    if !peer_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let q = dreamplan::sim::episode::READY.to_vec();
    write_scene(dir.path(), dreamplan::sim::tasks::Task::Rope, 4, 96, &q);
    const GRIPPER: &str = "/gripper_controller/gripper_cmd";
    const ARM: &str = "/arm_controller/follow_joint_trajectory";
    // (domain offset, trajectories as goals, the gripper speaks ParallelGripperCommand)
    for (offset, via_action, parallel) in [(7, false, false), (8, true, false), (9, false, true)] {
        let d = domain(offset);
        let mut extra = if via_action {
            format!(", trajectory_action: {ARM}")
        } else {
            String::new()
        };
        let joint = if parallel {
            ", joint: panda_finger_joint1"
        } else {
            ""
        };
        if parallel {
            extra.push_str(", gripper_action_type: parallel_gripper_command");
        }
        let executor = format!(
            ", finger_joint: '', gripper_action: {GRIPPER}, gripper: {{open_position: 0.04, closed_position: 0.0, max_effort: 12.5{joint}}}{extra}"
        );
        let mut args = vec!["--serve-gripper", GRIPPER, "--timeout", "90"];
        if via_action {
            args.extend([
                "--serve-action",
                ARM,
                "--action-hold",
                "-1",
                "--accept-after",
                "1.5",
                "--gripper-outcome",
                "abort",
            ]);
        } else if parallel {
            args.extend(["--parallel-gripper", "--gripper-outcome", "succeed"]);
        } else {
            args.extend(["--gripper-outcome", "stall"]);
        }
        let lines = drive_planner_and_executor_with(d, dir.path(), &executor, &args);
        let trajectory = lines
            .iter()
            .find_map(|l| l.get("trajectory"))
            .unwrap_or_else(|| panic!("no trajectory:\n{}", show(&lines)));
        assert_eq!(
            trajectory["joint_names"].as_array().unwrap().len(),
            7,
            "the arm's joints alone: {}",
            trajectory["joint_names"]
        );
        let duration = trajectory["points"].as_array().unwrap().last().unwrap()["t"]
            .as_f64()
            .unwrap();
        let grips: Vec<&serde_json::Value> =
            lines.iter().filter_map(|l| l.get("gripper_goal")).collect();
        assert_eq!(grips.len(), 3, "{}", show(&lines));
        let positions: Vec<f64> = grips
            .iter()
            .map(|g| g["position"].as_f64().unwrap())
            .collect();
        assert_eq!(positions, [0.04, 0.0, 0.04]);
        if parallel {
            // One position, the effort, under the joint's name.
            for g in &grips {
                assert_eq!(g["name"], serde_json::json!(["panda_finger_joint1"]), "{g}");
                assert_eq!(g["positions"].as_array().unwrap().len(), 1, "{g}");
                assert_eq!(g["effort"], serde_json::json!([12.5]), "{g}");
            }
        } else {
            assert!(grips.iter().all(|g| g["max_effort"] == 12.5));
        }
        let goal_type = if parallel {
            "control_msgs::action::dds_::ParallelGripperCommand_SendGoal_Request_"
        } else {
            "control_msgs::action::dds_::GripperCommand_SendGoal_Request_"
        };
        assert_eq!(grips[0]["writer_types"], serde_json::json!([goal_type]));
        // When the motion started: the trajectory's arrival on the topic, or the
        // controller's acceptance of the goal.
        let start = if via_action {
            let accepted = lines
                .iter()
                .find(|l| l["accepted"] == "TrajectoryActionServer")
                .unwrap_or_else(|| panic!("no accepted goal:\n{}", show(&lines)))["at"]
                .as_f64()
                .unwrap();
            let requested = trajectory["at"].as_f64().unwrap();
            assert!(accepted - requested > 1.4, "{requested} {accepted}");
            accepted
        } else {
            trajectory["at"].as_f64().unwrap()
        };
        let t: Vec<f64> = grips
            .iter()
            .map(|g| g["at"].as_f64().unwrap() - start)
            .collect();
        // Open at the start (not before it: with the action, not when the goal was sent),
        // the close after the approach, the open before the motion's end.
        assert!((-0.05..0.5).contains(&t[0]), "{t:?}");
        assert!(t[1] > 0.5 && t[1] + 0.3 < t[2], "{t:?}");
        assert!(t[2] < duration, "{t:?} (motion {duration} s)");
        let (events, at) = events_from_action_start(&lines, None);
        let end = events[at + 1];
        if via_action {
            assert_eq!(end.0, "failed", "{events:?}");
            assert!(
                end.1
                    .starts_with("gripper (open): Aborted: the gripper stalled"),
                "{end:?}"
            );
        } else {
            assert_eq!(end, ("action_finished", ""), "{events:?}");
        }
    }
}

/// `wait_for_gripper` over DDS: the executor sends the motion as three
/// FollowJointTrajectory goals and each gripper command between them, each waited for,
/// to a Cyclone peer serving both actions (each goal held for its own duration, each
/// gripper command 0.2 s): open, the piece to the grasp, close, the piece to the
/// release, open, the retreat, in that order and none before the one before has ended.
/// An e-stop 0.5 s into the first piece: the controller gets the cancel request, and no
/// gripper command or goal follows.
#[test]
fn a_cyclone_peer_gets_the_motion_in_three_goals_with_the_gripper_waited_for_between() {
    let _turn = one_at_a_time();
    if !peer_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let q = dreamplan::sim::episode::READY.to_vec();
    write_scene(dir.path(), dreamplan::sim::tasks::Task::Rope, 4, 96, &q);
    const GRIPPER: &str = "/gripper_controller/gripper_cmd";
    const ARM: &str = "/arm_controller/follow_joint_trajectory";
    for (offset, estop) in [(10, false), (11, true)] {
        let d = domain(offset);
        let executor = format!(
            ", finger_joint: '', gripper_action: {GRIPPER}, trajectory_action: {ARM}, wait_for_gripper: true, gripper: {{open_position: 0.04, closed_position: 0.0}}"
        );
        let mut args = vec![
            "--serve-gripper",
            GRIPPER,
            "--serve-action",
            ARM,
            "--action-hold",
            "-1",
            "--timeout",
            "90",
        ];
        if estop {
            args.extend(["--estop-after", "0.5"]);
        }
        let lines = drive_planner_and_executor_with(d, dir.path(), &executor, &args);
        // (arrival, what, how long it was held)
        let mut steps: Vec<(f64, String, f64)> = Vec::new();
        for l in &lines {
            if let Some(g) = l.get("gripper_goal") {
                let what = format!("gripper {}", g["position"]);
                steps.push((g["at"].as_f64().unwrap(), what, 0.2));
            }
            if let Some(t) = l.get("trajectory") {
                let points = t["points"].as_array().unwrap();
                assert_eq!(points[0]["t"].as_f64(), Some(0.0), "{t}");
                let span = points.last().unwrap()["t"].as_f64().unwrap();
                steps.push((t["at"].as_f64().unwrap(), "arm".into(), span));
            }
        }
        let order: Vec<&str> = steps.iter().map(|s| s.1.as_str()).collect();
        let (events, at) = events_from_action_start(&lines, None);
        if estop {
            assert_eq!(events[at + 1], ("failed", "e-stop"), "{events:?}");
            assert!(
                lines.iter().any(|l| l.get("canceled").is_some()),
                "the controller got no cancel request:\n{}",
                show(&lines)
            );
            // Nothing after the piece the e-stop stopped.
            assert_eq!(order, ["gripper 0.04", "arm"], "{}", show(&lines));
            continue;
        }
        assert_eq!(
            order,
            [
                "gripper 0.04",
                "arm",
                "gripper 0.0",
                "arm",
                "gripper 0.04",
                "arm"
            ],
            "{}",
            show(&lines)
        );
        // Each step comes only once the one before has ended (it was held for its
        // duration).
        for w in steps.windows(2) {
            let ((a, what, held), (b, next, _)) = (&w[0], &w[1]);
            assert!(
                b - a > held - 0.05,
                "{next} {:.2} s after {what}, which took {held:.2} s",
                b - a
            );
        }
        assert_eq!(events[at + 1], ("action_finished", ""), "{events:?}");
    }
}
