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
    let status = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args([
            "collect",
            "--task",
            "rope",
            "--episodes",
            "1",
            "--size",
            "128",
            "--log",
            "warn",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
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
    // A second run into the same directory is refused: nothing is overwritten.
    let again = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["collect", "--task", "rope", "--episodes", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
}
