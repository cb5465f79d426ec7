//! `dreamplan collect` writes a bag per run with what the world model trains on: images,
//! depth, object-only frames, goal, joint states, trajectories, the planner's keypoints and
//! actions, and episode events ending in `scored`.

use std::process::Command;

use dreamplan::bag::{BagReader, Filter};
use dreamplan::msg::prelude::*;

#[test]
fn collect_writes_a_bag_with_everything_the_world_model_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rope");
    let output = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args([
            "collect",
            "--task",
            "rope",
            "--episodes",
            "2",
            "--size",
            "128",
            "--log",
            "warn",
            // The scenes this test was written on (collect's default seed until session 52).
            "--seed",
            "0",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success());
    // Stderr is a pipe here, as in a log: progress comes as whole lines, not `\r` updates.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("rope: 2/2 episodes, mean score")),
        "{stderr:?}"
    );
    let reader = BagReader::open(&out).unwrap();
    let count = |topic: &str| {
        reader
            .messages(&Filter::topics([topic]))
            .filter(|m| m.is_ok())
            .count()
    };
    for topic in [
        "/camera/image_raw",
        "/camera/depth/image_raw",
        "/camera/object_only",
        "/goal/image",
        "/joint_states",
        "/arm/joint_trajectory",
        "/planner/keypoints",
        "/planner/action",
    ] {
        assert!(count(topic) >= 1, "{topic} missing in {}", out.display());
    }
    let events: Vec<EpisodeEvent> = reader
        .messages(&Filter::topics(["/dreamplan/episode"]))
        .map(|m| m.unwrap().decode::<EpisodeEvent>().unwrap())
        .collect();
    assert_eq!(events.first().map(|e| e.event.as_str()), Some("reset"));
    assert!(events.iter().any(|e| e.event == "scored"), "{events:?}");
    // Each action is its own episode's: the executor's events carry the episode number, so
    // every transition finds its score, and the second episode's action was planned from the
    // second episode's start (not from the first episode's final joint state, left in the
    // executor's queue): every trajectory starts at the ready pose. The trajectory's first
    // point is the executor's start state; the first joint state recorded during the action
    // is not (on a loaded machine the arm may already be moving when it is published).
    let transitions: Vec<_> = reader
        .transitions(Default::default())
        .map(|t| t.unwrap())
        .collect();
    assert_eq!(
        transitions.iter().map(|t| t.episode).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(
        transitions.iter().all(|t| t.score.is_some()),
        "scores missing"
    );
    // The simulator publishes each episode's goal just before its reset: every transition
    // has its episode's goal (the view dropped it at the reset before session 42).
    assert!(
        transitions.iter().all(|t| t.goal.is_some()),
        "goals missing"
    );
    let ready = dreamplan::robot::franka::READY;
    let trajectories: Vec<JointTrajectory> = reader
        .messages(&Filter::topics(["/arm/joint_trajectory"]))
        .map(|m| m.unwrap().decode::<JointTrajectory>().unwrap())
        .collect();
    assert_eq!(trajectories.len(), 2, "one trajectory per episode");
    for (k, traj) in trajectories.iter().enumerate() {
        let first = &traj.points.first().expect("an empty trajectory").positions;
        let moved = first
            .iter()
            .zip(ready)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            moved < 0.05,
            "trajectory {k}: starts {moved} rad from the ready pose"
        );
    }
    // Foxglove's own reader (PyPI `mcap` + `mcap-ros2-support`) decodes every message of the
    // recorded bag from the schemas it carries, topic for topic as many as ours reads.
    match std::env::var_os("DREAMPLAN_PYTHON") {
        Some(python) => {
            let checked = Command::new(python)
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/scripts/check_bag_with_mcap.py"
                ))
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                checked.status.success(),
                "mcap-ros2-support: {}",
                String::from_utf8_lossy(&checked.stderr)
            );
            let theirs: std::collections::BTreeMap<String, usize> =
                serde_json::from_slice(&checked.stdout).unwrap();
            let ours: std::collections::BTreeMap<String, usize> = reader
                .topics()
                .iter()
                .map(|t| (t.name.clone(), count(&t.name)))
                .filter(|(_, n)| *n > 0)
                .collect();
            assert_eq!(
                theirs, ours,
                "messages per topic, mcap-ros2-support vs ours"
            );
        }
        None => assert!(
            std::env::var_os("DREAMPLAN_REQUIRE_INTEROP").is_none(),
            "DREAMPLAN_REQUIRE_INTEROP is set but DREAMPLAN_PYTHON is not"
        ),
    }
    // A second run into the same directory is refused: nothing is overwritten.
    let again = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["collect", "--task", "rope", "--episodes", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
}

#[test]
fn eval_prints_the_table_writes_json_and_logs_progress_as_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("eval.json");
    let out = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args([
            "eval",
            "--planner",
            "random",
            "--task",
            "rope",
            "--episodes",
            "5",
            "--size",
            "128",
            "--log",
            "warn",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| rope |"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains('\r'), "{stderr:?}");
    // One line per episode (5 < 10), in any order (workers race to print).
    let mut progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("random: "))
        .collect();
    progress.sort();
    assert_eq!(
        progress,
        (1..=5)
            .map(|n| format!("random: {n}/5 episodes"))
            .collect::<Vec<_>>(),
        "{stderr:?}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["tasks"][0]["episodes"], 5);
}

/// A node that refuses its settings ends `collect` at once with the reason: before
/// session 43 it waited silently for episodes that never came, for ever.
#[test]
fn collect_with_a_planner_that_cannot_start_fails_at_once_naming_why() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args([
            "collect",
            "--task",
            "rope",
            "--episodes",
            "1",
            "--size",
            "64",
        ])
        .args(["--planner", "vlm", "--model"])
        .arg(tmp.path().join("no-such-model"))
        .arg("--out")
        .arg(tmp.path().join("bag"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > std::time::Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("collect still waits 120 s after its planner failed to start");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-model"), "{stderr}");
}

/// A camera tilted by 3° and moved a few centimetres, which the drawn arm alone hardly
/// shows at 128 px (a few pixels), puts the executor's points on the table centimetres
/// off: the table in the depth images shows the tilt, the check fails, and the refined pose
/// (levelled on the table, then fitted to the arm along it) puts them back within a
/// centimetre and passes. Without depth the table is not checked, and the refinement says
/// why it cannot run.
#[test]
fn check_calibration_levels_a_tilted_camera_on_the_table_and_refines_it() {
    use nalgebra::{Point3, UnitQuaternion, Vector3};
    let tmp = tempfile::tempdir().unwrap();
    let bag = rope_bag_128(tmp.path(), 3);
    let check = |name: &str, pose: &str, extra: &[&str]| {
        let mut args = vec!["--frames", "16", "--camera-pose", pose];
        args.extend_from_slice(extra);
        let (o, report, _) = check_calibration(&bag, &tmp.path().join(name), &args);
        (o, report.expect("a report"))
    };
    let truth = dreamplan::render::scene::default_camera(128, 128).world_from_camera;
    let pose_arg = |p: &nalgebra::Isometry3<f64>| {
        let (t, q) = (p.translation.vector, p.rotation.coords);
        format!("{},{},{},{},{},{},{}", t.x, t.y, t.z, q.x, q.y, q.z, q.w)
    };
    let mut off = truth;
    off.translation.vector += Vector3::new(0.03, -0.02, 0.02);
    off.rotation *= UnitQuaternion::from_axis_angle(
        &nalgebra::Unit::new_normalize(Vector3::new(1.0, 2.0, 0.5)),
        3f64.to_radians(),
    );
    // Where a point on the table the true camera sees lands through a pose (the
    // executor's pixel + depth → base frame), the median over the workspace.
    let table_error = |p: &nalgebra::Isometry3<f64>| {
        let mut e: Vec<f64> = (0..49)
            .map(|i| {
                let w = Point3::new(
                    0.35 + 0.05 * (i % 7) as f64,
                    -0.15 + 0.05 * (i / 7) as f64,
                    0.0,
                );
                (p * truth.inverse_transform_point(&w) - w).norm()
            })
            .collect();
        e.sort_by(f64::total_cmp);
        e[e.len() / 2]
    };
    assert!(table_error(&off) > 0.03, "{}", table_error(&off));
    let (o, report) = check("off", &pose_arg(&off), &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    // The arm alone is within the pixel tolerance; the table tells.
    let px = report["median_offset_px"].as_f64().unwrap();
    assert!(px <= 4.0, "{px} px: {stdout}");
    let tilt = report["table"]["tilt_deg"].as_f64().unwrap();
    assert!(tilt > 1.5 && tilt < 3.5, "{tilt}° {report}");
    assert_eq!(report["table"]["within_tolerance"], false, "{report}");
    assert!(stdout.contains("the hand-eye pose is off"), "{stdout}");
    let refined = &report["refined"]["base_from_camera"];
    let xyz: Vec<f64> = serde_json::from_value(refined["xyz"].clone()).unwrap();
    let xyzw: Vec<f64> = serde_json::from_value(refined["xyzw"].clone()).unwrap();
    let fixed = nalgebra::Isometry3::from_parts(
        Vector3::new(xyz[0], xyz[1], xyz[2]).into(),
        UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(
            xyzw[3], xyzw[0], xyzw[1], xyzw[2],
        )),
    );
    // Measured: 6.4 mm and 0.23° from the truth, its table points 5.3 mm off.
    let moved = (fixed.translation.vector - truth.translation.vector).norm();
    let turned = fixed.rotation.angle_to(&truth.rotation).to_degrees();
    assert!(
        table_error(&fixed) < 0.01 && moved < 0.015 && turned < 1.0,
        "table {} m, position {moved} m, rotation {turned}°: {stdout}",
        table_error(&fixed)
    );
    assert!(tmp.path().join("off/frame_00_refined.png").exists());
    let (o, report) = check("fixed", &pose_arg(&fixed), &[]);
    assert!(
        o.status.success() && report["refined"].is_null(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // No depth: the table is not checked (and the arm alone passes this pose, as said),
    // and a refinement asked for says why not.
    let (o, report) = check(
        "no_depth",
        &pose_arg(&off),
        &["--depth-topic", "/none", "--refine", "always"],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && stdout.contains("the arm only: the table was not checked"),
        "{stdout}"
    );
    let why = report["refined"]["not_refined"].as_str().unwrap();
    assert!(why.contains("no /none"), "{report}");
    assert!(report["table"]["not_checked"].is_string(), "{report}");
}

/// `dreamplan check-calibration` on a collected bag: with the camera pose the bag was
/// recorded through (the built-in one, given as the shipped executor params file or not at
/// all) the arm drawn from the joint states fits the images' edges within two pixels and
/// it exits 0, writing a PNG per frame and a report; with the pose moved 6 cm the fit is
/// found that many pixels away and it exits 1; a topic the bag lacks is named.
#[test]
fn check_calibration_tells_a_hand_eye_pose_that_is_off() {
    let tmp = tempfile::tempdir().unwrap();
    let bag = rope_bag_128(tmp.path(), 1);
    let check = |name: &str, extra: &[&str]| check_calibration(&bag, &tmp.path().join(name), extra);
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ros/executor.yaml");
    for (name, extra) in [
        ("built_in", vec![]),
        (
            "params_file",
            vec!["--executor-params", shipped.to_str().unwrap()],
        ),
    ] {
        let (o, report, out) = check(name, &extra);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let report = report.unwrap();
        assert!(report["frames_fitted"].as_u64().unwrap() >= 4, "{report}");
        let offset = report["median_offset_px"].as_f64().unwrap();
        assert!(
            offset <= 2.0,
            "{name}: {offset} px off with the right pose: {stdout}"
        );
        assert!(out.join("frame_00.png").exists());
        assert!(stdout.contains("agrees with the camera"), "{stdout}");
    }
    // The built-in camera 6 cm to the side.
    let pose = dreamplan::render::scene::default_camera(128, 128).world_from_camera;
    let (t, q) = (pose.translation.vector, pose.rotation.coords);
    let moved = format!(
        "{},{},{},{},{},{},{}",
        t.x,
        t.y + 0.06,
        t.z,
        q.x,
        q.y,
        q.z,
        q.w
    );
    let (o, report, _) = check("moved", &["--camera-pose", &moved]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let report = report.unwrap();
    let offset = report["median_offset_px"].as_f64().unwrap();
    assert!(offset >= 5.0, "a pose 6 cm off fits {offset} px away");
    assert!(String::from_utf8_lossy(&o.stdout).contains("check base_from_camera"));
    // The suggested position puts the camera back within 1.5 cm of where it was, and
    // checks out.
    let s: Vec<f64> =
        serde_json::from_value(report["suggested_base_from_camera_xyz"].clone()).unwrap();
    let back = (nalgebra::Vector3::new(s[0], s[1], s[2]) - t).norm();
    assert!(
        back < 0.015,
        "suggested {s:?}, recorded through {t:?}: {back} m apart"
    );
    let fixed = format!("{},{},{},{},{},{},{}", s[0], s[1], s[2], q.x, q.y, q.z, q.w);
    let (o, _, _) = check("fixed", &["--camera-pose", &fixed]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    // A params file whose section names another node is refused, not read as defaults.
    let other = tmp.path().join("cell.yaml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&shipped)
            .unwrap()
            .replacen("executor:", "arm_executor:", 1),
    )
    .unwrap();
    let (o, report, _) = check(
        "other_node",
        &["--executor-params", other.to_str().unwrap()],
    );
    assert!(o.status.code() == Some(2) && report.is_none(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no section for the node `executor`") && err.contains("arm_executor"),
        "{err}"
    );
    assert!(
        !tmp.path().join("other_node").exists() && !tmp.path().join("other_node.partial").exists()
    );
    let (o, _, _) = check("no_topic", &["--joint-states-topic", "/arm/states"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an error is not a calibration that is off"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("has no /arm/states"), "{err}");
}

/// A bag of `episodes` random rope episodes of the built-in world at 128 px, in `dir`.
fn rope_bag_128(dir: &std::path::Path, episodes: usize) -> std::path::PathBuf {
    let bag = dir.join("bag");
    let o = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args([
            "collect",
            "--task",
            "rope",
            "--size",
            "128",
            "--planner",
            "random",
            // The scenes the calibration tolerances were measured on (collect's default
            // seed until session 52).
            "--seed",
            "0",
        ])
        .args([
            "--episodes",
            &episodes.to_string(),
            "--log",
            "warn",
            "--out",
        ])
        .arg(&bag)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    bag
}

/// `dreamplan check-calibration --bag bag --out out ARGS`: its output, its report (where
/// it wrote one) and `out`.
fn check_calibration(
    bag: &std::path::Path,
    out: &std::path::Path,
    args: &[&str],
) -> (
    std::process::Output,
    Option<serde_json::Value>,
    std::path::PathBuf,
) {
    let o = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .arg("check-calibration")
        .arg("--bag")
        .arg(bag)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    let report = std::fs::read(out.join("report.json"))
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap());
    (o, report, out.to_path_buf())
}
