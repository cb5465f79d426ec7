//! The command line on bad input: one clear line naming the problem, each cause said once,
//! a failing exit status and no panic. And what `dreamplan run` leaves behind.

use std::path::Path;
use std::process::{Command, Output};

fn dreamplan(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(args)
        .current_dir(dir)
        .env("DREAMPLAN_LOG", "warn")
        .output()
        .expect("the dreamplan binary runs")
}

/// The `error: …` line of a failed run (and that it failed without a panic).
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    lines[0].to_string()
}

/// A bag (rosbags' fixture of every message type) without /camera/camera_info.
const NO_CAMERA_INFO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/bags/mcap_jazzy"
);

#[test]
fn bad_inputs_get_one_line_that_names_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("adir")).unwrap();
    std::fs::write(d.join("latin1.yaml"), b"duration_s: 1\n# caf\xe9\n").unwrap();
    std::fs::write(d.join("afile"), b"").unwrap();
    let cases: [(&[&str], &str); 28] = [
        // Checked before --out is made: no empty folder is left behind.
        (
            &["fit-prior", "--bags", "nobags", "--out", "fp1"],
            "error: --bags: nobags: no such bag or folder",
        ),
        (
            &["train-world-model", "--bags", "adir", "--out", "wm2"],
            "error: --bags: adir: neither a bag nor a folder of bags (no metadata.yaml, .mcap or .db3 in it or in a folder below; `dreamplan collect --out DIR` records some)",
        ),
        (
            &["collect", "--task", "rope", "--episodes", "1", "--size", "1", "--out", "bags"],
            "error: --size must be ≥ 64",
        ),
        (
            &["predict", "--world-model", "wm", "--task", "rope", "--seed", "1", "--action", "pick 1 to 2"],
            "error: --action \"pick 1 to 2\": answer \"pick 1 to 2\" is not `pick <N> place <M>`",
        ),
        // A run's --out that cannot be a folder is refused before the graph runs (it was
        // found after the whole run, and the run's summary lost).
        (
            &["run", "--duration", "60", "--out", "afile"],
            "error: --out afile: cannot make the folder for the episodes' GIFs: File exists (os error 17)",
        ),
        (
            &["run", "--config", "nonexistent.yaml"],
            "error: --config nonexistent.yaml: no such graph file (`dreamplan default-config > graph.yaml` writes the built-in one to start from)",
        ),
        (
            &["run", "--config", "adir"],
            "error: adir: Is a directory (os error 21)",
        ),
        (
            &["run", "--config", "latin1.yaml"],
            "error: latin1.yaml: stream did not contain valid UTF-8",
        ),
        (
            &["run", "--duration", "-1"],
            "error: --duration must be a finite number of seconds ≥ 0 (0: until Ctrl-C)",
        ),
        (
            &["run", "--duration", "inf"],
            "error: --duration must be a finite number of seconds ≥ 0 (0: until Ctrl-C)",
        ),
        // Launch arguments without --launch were dropped silently once --config was given.
        (
            &["run", "--config", "nonexistent.yaml", "task:=cloth"],
            "error: task:=cloth are launch arguments, for --launch FILE; a --config graph takes its settings in the YAML or with --ros-args -p",
        ),
        // Training settings are checked before any clip is cut (minutes on real bags).
        (
            &["train-world-model", "--bags", "nowhere", "--out", "wm", "--steps", "0"],
            "error: --steps must be > 0",
        ),
        (
            &["train-world-model", "--bags", "nowhere", "--out", "wm", "--lr", "-1"],
            "error: --lr must be a finite number > 0",
        ),
        (
            &["train-world-model", "--bags", "nowhere", "--out", "wm", "--checkpoint-every", "0"],
            "error: --checkpoint-every must be ≥ 1 (steps between checkpoints)",
        ),
        // A world model named beside the simulator verifier was ignored.
        (
            &["eval", "--planner", "coverage", "--episodes", "1", "--verifier", "sim", "--world-model", "nowhere"],
            "error: --world-model is read only with --verifier world-model (--verifier sim plays each candidate in the built-in world)",
        ),
        // A model named beside a rule planner was ignored, and the rule's table printed
        // as if it were the model's (a review finding, session 53).
        (
            &["eval", "--planner", "coverage", "--episodes", "1", "--model", "zs", "--adapter", "orpo"],
            "error: --model, --adapter apply to --planner vlm only; the coverage planner runs no model (drop them)",
        ),
        (
            &["eval", "--planner", "keypoint-oracle", "--episodes", "1", "--temperature", "2"],
            "error: --temperature applies to --planner vlm only; the keypoint-oracle planner runs no model (drop it)",
        ),
        (
            &["collect", "--task", "rope", "--episodes", "1", "--k", "4", "--device", "cuda", "--out", "bags"],
            "error: --k, --device apply to --planner vlm only; the correspondence planner runs no model (drop them)",
        ),
        // A preset beside a config file was ignored (session 53: refused).
        (
            &["train-world-model", "--bags", "adir", "--out", "wm", "--config", "c.json", "--preset", "gpu"],
            "error: the argument '--config <CONFIG>' cannot be used with '--preset <PRESET>'",
        ),
        // Collection seeds that run past the last seed (it wrapped around to the
        // evaluation's seeds in a release build).
        (
            &["collect", "--task", "rope", "--episodes", "2", "--seed", "18446744073709551615", "--out", "bags"],
            "error: --seed 18446744073709551615 + --episodes 2 runs past the largest seed (18446744073709551615)",
        ),

        // A camera pose that is not seven numbers, or bags without camera info to take
        // the intrinsics from, before any clip is cut.
        (
            &["train-world-model", "--bags", "adir", "--out", "wm", "--camera-pose", "1,0,0.8"],
            "error: --camera-pose \"1,0,0.8\": want seven numbers X,Y,Z,QX,QY,QZ,QW",
        ),
        (
            &["train-world-model", "--bags", NO_CAMERA_INFO, "--out", "wm", "--camera-pose", "1,0,0.8,0,0,0,1"],
            "error: --camera-pose: no bag has /camera/camera_info to take the camera's intrinsics from: give the whole camera with --camera FILE",
        ),
        // The report's folder is checked before the episodes run.
        (
            &["eval", "--planner", "coverage", "--episodes", "1", "--json", "nodir/x.json"],
            "error: --json: the folder nodir does not exist",
        ),
        // A negative number reaches the option's own check (clap said "unexpected argument
        // '-1' found", naming no option).
        (
            &["eval", "--planner", "coverage", "--episodes", "-1"],
            "error: invalid value '-1' for '--episodes <EPISODES>': invalid digit found in string",
        ),
        (
            &["run", "--ros-args", "-p", "keypionts:=6"],
            "error: --ros-args: no node of the graph has a parameter `keypionts` (nodes: sim (sim), planner (planner), executor (executor), monitor (monitor))",
        ),
        // A node that has the key but not that value says why (it said "no node has it").
        (
            &["run", "--ros-args", "-p", "keypoints:=eight"],
            "error: --ros-args: parameter `keypoints` is not accepted (planner: `keypoints`: invalid type: string \"eight\", expected usize)",
        ),
        (
            &["run", "--ros-args", "-p", "use_sim_time:=true"],
            "error: use_sim_time needs a bus with a /clock publisher: --bus dds",
        ),
        (
            &["run", "--ros-args", "--params-file", "missing.yaml"],
            "error: --params-file missing.yaml: No such file or directory (os error 2)",
        ),
    ];
    for (args, want) in cases {
        assert_eq!(error_line(&dreamplan(args, d)), want, "dreamplan {args:?}");
    }
    // A bag named twice, by its folder and by itself, was weighted double.
    std::fs::create_dir_all(d.join("bagsdup/rope")).unwrap();
    std::fs::write(d.join("bagsdup/rope/rope_0.mcap"), b"").unwrap();
    assert_eq!(
        error_line(&dreamplan(
            &[
                "train-world-model",
                "--bags",
                "bagsdup",
                "bagsdup/rope",
                "--out",
                "wm3"
            ],
            d
        )),
        "error: --bags: bagsdup/rope is given twice: name each bag once"
    );
    for left_out in ["fp1", "wm2", "bags", "wm3"] {
        assert!(
            !d.join(left_out).exists(),
            "{left_out} was made by a refused run"
        );
    }
    // A model folder without a config: the path once, the OS reason once.
    let line = error_line(&dreamplan(
        &[
            "eval",
            "--planner",
            "vlm",
            "--model",
            "adir",
            "--episodes",
            "1",
        ],
        d,
    ));
    assert!(
        line.contains("adir/config.json: No such file or directory (os error 2)"),
        "{line}"
    );
    assert_eq!(line.matches("No such file").count(), 1, "{line}");
    // A world model's folder given as the planner's model, and the other way round: the
    // error says which kind of folder it is.
    let wm = d.join("wm");
    std::fs::create_dir(&wm).unwrap();
    std::fs::write(
        wm.join("config.json"),
        serde_json::to_string(&dreamplan::world_model::Config::cpu()).unwrap(),
    )
    .unwrap();
    let line = error_line(&dreamplan(
        &[
            "eval",
            "--planner",
            "vlm",
            "--model",
            "wm",
            "--episodes",
            "1",
        ],
        d,
    ));
    assert!(line.contains("this is a world model's config"), "{line}");
    let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vlm/tiny");
    let line = error_line(&dreamplan(
        &["wm-eval", "--world-model", tiny, "--episodes", "1"],
        d,
    ));
    assert!(
        line.contains("this is a Hugging Face model's config"),
        "{line}"
    );
    // Sampling settings a decision cannot be made with are refused before any episode,
    // as the planner node refuses them (`eval --k 0` printed a table of "no action").
    for (flag, value, want) in [
        ("--k", "0", "sampling setting k must be >= 1"),
        (
            "--temperature",
            "nan",
            "sampling setting temperature must be >= 0",
        ),
        ("--top-p", "5", "sampling setting top_p must be in (0, 1]"),
        ("--attempts", "0", "sampling setting attempts must be >= 1"),
    ] {
        let line = error_line(&dreamplan(
            &[
                "eval",
                "--planner",
                "vlm",
                "--model",
                tiny,
                "--episodes",
                "1",
                flag,
                value,
            ],
            d,
        ));
        assert!(line.contains(want), "{flag} {value}: {line}");
    }
    // Seeds past the largest u64 wrapped (no episode, a NaN table, exit 0).
    let max = u64::MAX.to_string();
    for args in [
        vec![
            "eval",
            "--planner",
            "random",
            "--first-seed",
            &max,
            "--episodes",
            "2",
        ],
        vec![
            "wm-eval",
            "--world-model",
            "nowhere",
            "--first-seed",
            &max,
            "--episodes",
            "2",
        ],
    ] {
        let line = error_line(&dreamplan(&args, d));
        assert!(
            line.contains("runs past the largest seed"),
            "{args:?}: {line}"
        );
    }
}

#[test]
fn a_video_whose_name_is_not_gif_is_refused_before_the_episode_runs() {
    let dir = tempfile::tempdir().unwrap();
    let line = error_line(&dreamplan(
        &["sim", "episode", "--task", "rope", "--video", "ep.png"],
        dir.path(),
    ));
    assert_eq!(
        line,
        "error: ep.png: videos are written as GIF; give the file a .gif name"
    );
    assert!(!dir.path().join("ep.png").exists());
}

#[test]
fn run_writes_each_scored_episode_as_a_gif_and_explains_the_score() {
    let dir = tempfile::tempdir().unwrap();
    // The built-in graph at full speed, one episode: the run ends when the sim has played
    // it (the duration is only a cap).
    let cfg = dir.path().join("fast.yaml");
    let yaml = dreamplan::config::DEFAULT_GRAPH_YAML
        .replace("episodes: 0 ", "episodes: 1 ")
        .replace("realtime: true ", "realtime: false ");
    assert_ne!(yaml, dreamplan::config::DEFAULT_GRAPH_YAML);
    std::fs::write(&cfg, yaml).unwrap();
    let out = dreamplan(
        &[
            "run",
            "--config",
            "fast.yaml",
            "--duration",
            "600",
            "--out",
            "shots",
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 episode(s) scored"), "{stdout}");
    assert!(
        stdout.contains("episode 0 (rope, seed 0): score "),
        "{stdout}"
    );
    assert!(
        stdout.contains("score (rope): 1 when the object ends within 20 mm"),
        "{stdout}"
    );
    assert!(stdout.contains("next: `dreamplan eval"), "{stdout}");
    let gif = dir.path().join("shots/episode_000_rope_seed0.gif");
    let decoder = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
        std::fs::File::open(&gif).unwrap_or_else(|e| panic!("{}: {e}\n{stdout}", gif.display())),
    ))
    .unwrap();
    let frames = image::AnimationDecoder::into_frames(decoder)
        .collect_frames()
        .unwrap();
    assert!(frames.len() >= 5, "{} frames", frames.len());
    // Camera (256) beside the goal (256).
    assert_eq!(frames[0].buffer().dimensions(), (512, 256));
}

#[test]
fn run_takes_a_launch_file_and_its_arguments_as_ros2_launch_does() {
    let dir = tempfile::tempdir().unwrap();
    let launch = concat!(env!("CARGO_MANIFEST_DIR"), "/launch/sim.launch.xml");
    let line = error_line(&dreamplan(&["run", "--launch", launch, "task"], dir.path()));
    assert_eq!(line, "error: launch argument `task`: expected NAME:=VALUE");
    let line = error_line(&dreamplan(
        &["run", "--launch", launch, "tsk:=cloth"],
        dir.path(),
    ));
    assert!(
        line.starts_with(&format!(
            "error: {launch}: no launch argument `tsk` (it has: task, seed,"
        )),
        "{line}"
    );
    let line = error_line(&dreamplan(
        &["run", "--launch", launch, "planner:=maybe"],
        dir.path(),
    ));
    assert!(
        line.ends_with("condition `maybe` is neither true nor false"),
        "{line}"
    );
    // The real-arm file's empty `model:=` default is no model: said so, not read as a
    // folder named "" ("loading model : config.json: No such file" before session 52).
    let real = concat!(env!("CARGO_MANIFEST_DIR"), "/launch/real_arm.launch.xml");
    let line = error_line(&dreamplan(
        &["run", "--launch", real, "backend:=vlm", "--duration", "5"],
        dir.path(),
    ));
    assert!(
        line.ends_with("node `planner` (kind planner): backend vlm needs `model` (a model folder)"),
        "{line}"
    );
}

/// `dreamplan robot envelope` reads a ROS params file (the package's executor.yaml),
/// reports the outcomes and no violation; a file that is not executor parameters is one
/// error line naming it.
#[test]
fn robot_envelope_audits_a_ros_params_file_and_names_a_bad_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dreamplan(
        &[
            "robot",
            "envelope",
            "--actions",
            "60",
            "--scenes",
            "1",
            "--config",
            "config/ros/executor.yaml",
        ],
        root,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("60 actions in"), "{stdout}");
    assert!(stdout.contains("violations: 0"), "{stdout}");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("bad.yaml"), "width: [1]\n").unwrap();
    let line = error_line(&dreamplan(
        &[
            "robot",
            "envelope",
            "--actions",
            "5",
            "--config",
            "bad.yaml",
        ],
        tmp.path(),
    ));
    assert!(line.contains("bad.yaml: not executor parameters"), "{line}");
}

#[test]
fn soak_accounts_for_every_frame_and_its_memory_check_can_fail() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("soak.json");
    let png = dir.path().join("rss.png");
    let args = |leak: bool| {
        let mut a = vec![
            "soak",
            "--duration",
            "5",
            "--rate",
            "30",
            "--width",
            "640",
            "--height",
            "480",
            "--work-ms",
            "100",
            "--json",
            "soak.json",
            "--plot",
            "rss.png",
        ];
        if leak {
            a.extend(["--leak", "--max-growth-mib", "8"]);
        }
        a
    };
    let out = dreamplan(&args(false), dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", error_line(&out));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let n = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
    // The camera kept at least half its rate on a loaded 2-core machine.
    assert!(n("published") >= 75.0, "{r}");
    // Every frame is taken, dropped and counted, or still queued; the slow subscriber did
    // fall behind (it takes ≤ 10 a second) and saw its frames in order.
    assert_eq!(n("unaccounted"), 0.0, "{r}");
    assert!(n("slow_taken") <= 5.0 * 10.0 + 5.0, "{r}");
    assert!(n("slow_dropped") >= 20.0, "{r}");
    assert_eq!(
        n("slow_taken") + n("slow_dropped") + n("slow_queued"),
        n("published"),
        "{r}"
    );
    assert_eq!(n("out_of_order"), 0.0, "{r}");
    assert_eq!(r["clean"], true, "{r}");
    assert!(n("rss_growth_mib") <= 32.0, "{r}");
    assert!(stdout.contains("soak passed"), "{stdout}");
    assert!(image::open(&png).is_ok());

    // Keeping every taken frame (0.9 MB each at 640×480, ~10 a second after the warm-up)
    // grows memory well past an 8 MiB limit: the check fails, with the reason and exit 1.
    let out = dreamplan(&args(true), dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("FAILED: resident memory grew"), "{stdout}");
}

/// A topic named for recording that no node publishes is said at the end (a typo left
/// only a smaller bag before session 43); what exists is recorded.
#[test]
fn bag_record_names_a_requested_topic_that_never_appeared() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("camera.yaml");
    std::fs::write(
        &graph,
        "nodes:\n  - name: camera\n    kind: camera\n    params: {source: pattern, rate_hz: 10.0, width: 32, height: 24}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["bag", "record", "--out"])
        .arg(dir.path().join("bag"))
        .arg("--config")
        .arg(&graph)
        .args([
            "--duration",
            "2",
            "--topics",
            "/camera/image_raw,/camera/imag_raw",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("nothing recorded of /camera/imag_raw: no node published it"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("nothing recorded of /camera/image_raw"),
        "{stderr}"
    );
}

/// A log filter that does not parse is said (it was replaced by `info` silently).
#[test]
fn a_bad_log_filter_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let out = dreamplan(&["--log", "dreamplan=bogus", "default-config"], dir.path());
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: --log \"dreamplan=bogus\" is not a log filter"),
        "{stderr}"
    );
}

/// A graph set up for a real arm on made-up geometry says so at start: an executor that
/// nothing frees at an episode's end without a hand-eye pose, one that commands no
/// gripper, and a camera node publishing its ideal pinhole for a driver's frames. The same
/// nodes with a pose, a finger joint and intrinsics say none of it.
#[test]
fn a_real_arm_graph_on_made_up_geometry_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |graph: &str| {
        std::fs::write(d.join("g.yaml"), graph).unwrap();
        let out = dreamplan(
            &["run", "--config", "g.yaml", "--duration", "1", "--out", "r"],
            d,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let warned = run(
        "nodes:\n  - {name: executor, kind: executor, params: {episode_end_frees_arm: false, finger_joint: \"\"}}\n  - {name: camera, kind: camera, params: {source: topic, input_topic: /driver/image}}\n",
    );
    for want in [
        "no hand-eye pose (base_from_camera_xyz / _xyzw)",
        "finger_joint is empty and no gripper_action is set: trajectories carry the arm's joints alone",
        "no calibration and no intrinsics",
    ] {
        assert!(warned.contains(want), "`{want}` not said:\n{warned}");
    }
    let quiet = run(
        "nodes:\n  - {name: executor, kind: executor, params: {episode_end_frees_arm: false, base_from_camera_xyz: [1.0, 0.0, 0.8], base_from_camera_xyzw: [-0.6797, -0.6797, 0.1949, 0.1949]}}\n  - {name: camera, kind: camera, params: {source: topic, input_topic: /driver/image, intrinsics: [500.0, 500.0, 319.5, 239.5]}}\n",
    );
    for not in ["hand-eye", "finger_joint", "calibration"] {
        assert!(!quiet.contains(not), "`{not}` said:\n{quiet}");
    }
}

/// A run that scores nothing leaves no trace of its `--out`: a folder it made is removed
/// (an existing one, even empty, is the user's and stays), and a graph without a `sim`
/// node is told why nothing was scored.
#[test]
fn a_run_that_scores_nothing_removes_the_out_folder_it_made() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("monitor.yaml"),
        "nodes:\n  - name: monitor\n    kind: monitor\n    params: {topics: [/camera/image_raw]}\n",
    )
    .unwrap();
    let run = |out: &str| {
        let o = dreamplan(
            &[
                "run",
                "--config",
                "monitor.yaml",
                "--duration",
                "0.5",
                "--out",
                out,
            ],
            dir.path(),
        );
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        stdout
    };
    let stdout = run("made");
    assert!(stdout.contains("no `sim` node"), "{stdout}");
    assert!(!dir.path().join("made").exists(), "{stdout}");
    std::fs::create_dir(dir.path().join("mine")).unwrap();
    run("mine");
    assert!(dir.path().join("mine").is_dir());
}
