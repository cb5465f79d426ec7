//! `dreamplan experiment --quick`: every stage of the end-to-end run on tiny settings, the
//! tables it writes, a re-run that skips what is finished, and a run on earlier bags.

use std::process::Command;

/// About 41 s in the test profile (the crate at opt-level 1; session 23), so `cargo test`
/// and CI run it.
#[test]
fn the_quick_experiment_runs_every_stage_writes_the_tables_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_dreamplan"))
            .args(["experiment", "--quick", "--out"])
            .arg(&out)
            .output()
            .unwrap()
    };
    let first = run();
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    for stage in [
        "zero-shot",
        "collect",
        "world-model",
        "world-model-quality",
        "preferences-wm",
        "orpo-wm",
        "preferences-sim",
        "orpo-sim",
        "eval-random",
        "eval-zero-shot",
        "eval-wm-best-of-4",
        "eval-wm-best-of-8",
        "eval-dreamplan",
        "eval-orpo-sim",
        "eval-keypoint-oracle",
    ] {
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join("stages").join(format!("{stage}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(record["done"], true, "{stage}: {record}");
    }
    // Every row of the table is there, run or said why not.
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    for row in [
        "| random |",
        "| zero-shot |",
        "best of 4 |",
        "best of 8 |",
        "| DreamPlan (ORPO, world-model verifier) |",
        "| ORPO, simulator verifier |",
        "| keypoint oracle |",
        "| rope | 1 |",
    ] {
        assert!(md.contains(row), "{row} missing from\n{md}");
    }
    let table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("table.json")).unwrap()).unwrap();
    assert_eq!(table["rows"].as_array().unwrap().len(), 7);
    // Every evaluated row but zero-shot's has its gain over zero-shot, paired by seed (a
    // row skipped for want of pairs has none).
    let evaluated = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("average").is_some())
        .count();
    let gains = table["gains"].as_array().unwrap();
    assert_eq!(gains.len(), evaluated - 1, "{table}");
    assert!(gains.iter().all(|g| g["pairs"] == 3), "{table}");
    assert!(
        md.contains("| gain over zero-shot, paired by seed |"),
        "{md}"
    );
    // The keypoint oracle scores its episodes (the simulator is not random).
    let oracle = &table["rows"][6];
    assert_eq!(oracle["row"], "keypoint oracle");
    assert!(oracle["average"].as_f64().unwrap() > 0.0, "{oracle}");
    let png = image::open(out.join("table.png")).unwrap();
    assert!(png.width() > 400 && png.height() > 300);
    // A re-run skips every finished stage and rewrites the same table.
    let second = run();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert_eq!(err.matches("done before, skipped").count(), 15, "{err}");
    assert_eq!(std::fs::read_to_string(out.join("table.md")).unwrap(), md);
    // The same folder spelled otherwise is the same run (before session 46 every stage
    // was moved aside and made again).
    let spelled = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["experiment", "--quick", "--out"])
        .arg(format!("{}/./", out.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&spelled.stderr);
    assert!(spelled.status.success(), "{err}");
    assert_eq!(err.matches("done before, skipped").count(), 15, "{err}");
    // Another build of dreamplan (here a copy of this one: another modification time)
    // keeps every finished stage and says that another build made it.
    let copy = dir.path().join("dreamplan-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_dreamplan"), &copy).unwrap();
    let other = Command::new(&copy)
        .args(["experiment", "--quick", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(other.status.success(), "{err}");
    assert_eq!(err.matches("made by another build").count(), 15, "{err}");
    std::fs::remove_file(&copy).unwrap();
    // The collection says which seeds it used.
    let collected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bags/collect.json")).unwrap()).unwrap();
    assert_eq!(
        (&collected["seed"], &collected["episodes"]),
        (&serde_json::json!(2000000), &serde_json::json!(2))
    );
    // A folder made before the mask measure changed: its world-model stages named no
    // measure (or another one). Those stages and what reads them run again; nothing else.
    let record_path = |stage: &str| out.join("stages").join(format!("{stage}.json"));
    for (stage, old) in [
        ("preferences-wm", serde_json::Value::Null),
        (
            "eval-wm-best-of-4",
            serde_json::json!("half_iou_half_chamfer"),
        ),
    ] {
        let mut record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(record_path(stage)).unwrap()).unwrap();
        assert_eq!(
            record["measure"], "mask_coverage_reach",
            "{stage}: {record}"
        );
        record["measure"] = old;
        std::fs::write(record_path(stage), record.to_string()).unwrap();
    }
    let measure = run();
    let err = String::from_utf8_lossy(&measure.stderr);
    assert!(measure.status.success(), "{err}");
    assert_eq!(err.matches("another mask measure").count(), 2, "{err}");
    // preferences-wm, orpo-wm, eval-dreamplan and eval-wm-best-of-4 ran again.
    assert_eq!(err.matches("done before, skipped").count(), 11, "{err}");
    for stage in [
        "preferences-wm",
        "orpo-wm",
        "eval-dreamplan",
        "eval-wm-best-of-4",
    ] {
        assert!(
            !err.contains(&format!("{stage}: done before")),
            "{stage} was skipped: {err}"
        );
    }
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record_path("preferences-wm")).unwrap()).unwrap();
    assert_eq!(record["measure"], "mask_coverage_reach", "{record}");
    assert_eq!(record["done"], true, "{record}");

    // Killed after the zero-shot build finished and before its record said so: the build
    // is recorded, not moved aside and made again.
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record_path("zero-shot")).unwrap()).unwrap();
    record["done"] = false.into();
    std::fs::write(record_path("zero-shot"), record.to_string()).unwrap();
    let unrecorded = run();
    let err = String::from_utf8_lossy(&unrecorded.stderr);
    assert!(unrecorded.status.success(), "{err}");
    assert!(
        err.contains("zero-shot: finished before the last run stopped; recorded, not made again"),
        "{err}"
    );
    assert!(!out.join("zero-shot.old").exists(), "{err}");
    assert_eq!(err.matches("done before, skipped").count(), 14, "{err}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record_path("zero-shot")).unwrap()).unwrap();
    assert_eq!(record["done"], true, "{record}");

    // Bags recorded before (here: this run's), with their planner: nothing is pretrained
    // or collected, the rest runs on them.
    let again = dir.path().join("again");
    let with = |bags: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_dreamplan"))
            .args(["experiment", "--quick", "--out"])
            .arg(&again)
            .arg("--zero-shot")
            .arg(out.join("zero-shot"))
            .arg("--bags")
            .arg(bags)
            .output()
            .unwrap()
    };
    let bad = with(&dir.path().join("no-such-bags"));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("--bags") && err.contains("not a folder"),
        "{err}"
    );
    // Bags collected on the evaluation's seeds are refused before anything runs.
    let on_test = dir.path().join("on-test-seeds");
    std::fs::create_dir_all(&on_test).unwrap();
    std::fs::write(
        on_test.join("collect.json"),
        r#"{"seed": 50, "episodes": 10}"#,
    )
    .unwrap();
    let bad = with(&on_test);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("collected on seeds 50–59") && err.contains("which the evaluation uses"),
        "{err}"
    );
    assert!(!again.join("stages").exists(), "a stage ran: {err}");
    // Where root can mount one (CI), `again` is a tmpfs too small for what this run
    // writes: it fills while the simulator-verified ORPO stage writes its adapters, as a
    // disk fills under a checkpoint. The run stops with the kernel's ENOSPC and keeps every
    // finished stage; with room again the same command resumes and ends with the first
    // run's table.
    let root = Command::new("id").arg("-u").output().unwrap();
    let root = String::from_utf8_lossy(&root.stdout).trim() == "0";
    struct Mounted(std::path::PathBuf);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let mut _mounted = None;
    if root {
        let du = |p: &std::path::Path| -> u64 {
            let o = Command::new("du")
                .args(["-s", "-B1"])
                .arg(p)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let writes = du(&out) - du(&out.join("zero-shot")) - du(&out.join("bags"));
        let tight = writes - du(&out.join("orpo-sim")) / 2;
        std::fs::create_dir_all(&again).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={tight}"), "tmpfs"])
            .arg(&again)
            .status()
            .unwrap();
        assert!(st.success(), "mount failed");
        _mounted = Some(Mounted(again.clone()));
        let full = with(&out.join("bags"));
        let err = String::from_utf8_lossy(&full.stderr);
        assert!(!full.status.success(), "a run on a full disk succeeded");
        assert!(err.contains("No space left on device"), "{err}");
        for stage in ["world-model", "preferences-wm", "preferences-sim"] {
            let record: serde_json::Value = serde_json::from_slice(
                &std::fs::read(again.join("stages").join(format!("{stage}.json"))).unwrap(),
            )
            .unwrap();
            assert_eq!(record["done"], true, "{stage} was not kept: {record}");
        }
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("remount,size={}", 256 << 20),
                "tmpfs",
            ])
            .arg(&again)
            .status()
            .unwrap();
        assert!(st.success(), "remount failed");
    } else {
        eprintln!("not root: no tmpfs can be mounted, the full-disk part is skipped");
    }
    let third = with(&out.join("bags"));
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(third.status.success(), "{err}");
    if root {
        assert!(err.matches("done before, skipped").count() >= 3, "{err}");
    }
    for stage in ["zero-shot", "collect"] {
        assert!(
            !again.join("stages").join(format!("{stage}.json")).exists(),
            "{stage} ran"
        );
    }
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(again.join("stages").join("world-model.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["done"], true, "{record}");
    assert!(record["argv"].to_string().contains("exp/bags"), "{record}");
    // The same table as the first run's: every row's scores (times and paths aside).
    let scores = |dir: &std::path::Path| -> Vec<serde_json::Value> {
        let t: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("table.json")).unwrap()).unwrap();
        t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::json!([r["row"], r["average"], r["tasks"]]))
            .collect()
    };
    assert_eq!(scores(&again), scores(&out));
    // The zero-shot planner written again in place (same bytes, a new modification time):
    // every stage that reads it is made again, and ends with the same table.
    let config = out.join("zero-shot/config.json");
    std::fs::write(&config, std::fs::read(&config).unwrap()).unwrap();
    let fourth = with(&out.join("bags"));
    let err = String::from_utf8_lossy(&fourth.stderr);
    assert!(fourth.status.success(), "{err}");
    assert!(
        err.contains("changed since it was made: run again"),
        "{err}"
    );
    assert!(!err.contains("eval-zero-shot: done before"), "{err}");
    assert!(err.contains("world-model: done before"), "{err}");
    assert_eq!(scores(&again), scores(&out));
}

/// `kill -9` of the experiment while a stage runs takes the stage's process with it (it
/// would else run on, and the re-run that resumes would start a second one writing the same
/// output), and the same command then resumes and finishes.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_experiment_takes_its_running_stage_along_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let cmd = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dreamplan"));
        c.args(["experiment", "--quick", "--out"]).arg(&out);
        c
    };
    let children_of = |pid: u32| -> Vec<u32> {
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: the comm may hold spaces, so split after ')'.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let ppid: u32 = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
            if ppid == pid {
                v.push(p);
            }
        }
        v
    };
    let mut parent = cmd()
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let stage = loop {
        if let Some(&c) = children_of(parent.id()).first() {
            break c;
        }
        assert!(t0.elapsed().as_secs() < 60, "no stage started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    parent.kill().unwrap(); // SIGKILL
    parent.wait().unwrap();
    let t0 = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{stage}")).exists() {
        let state = std::fs::read_to_string(format!("/proc/{stage}/stat")).unwrap_or_default();
        if state[state.rfind(')').map_or(0, |i| i + 2)..].starts_with('Z') {
            break; // dead, waiting to be reaped
        }
        // SIGKILL reaches it at once; the quick zero-shot stage (the first one) alone
        // takes seconds.
        assert!(
            t0.elapsed().as_millis() < 1000,
            "stage process {stage} outlived the killed experiment"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let again = cmd().output().unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert!(out.join("table.md").is_file());
}

/// A second experiment on a folder another one is running in is refused with the reason,
/// before it moves, resumes or records anything.
#[test]
fn a_second_experiment_on_the_same_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let _held = dreamplan::train::checkpoint::lock_output(&out.join("stages")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["experiment", "--quick", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("another run is writing into"), "{err}");
    assert_eq!(
        std::fs::read_dir(out.join("stages")).unwrap().count(),
        1,
        "{err}"
    );
}
