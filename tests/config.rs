//! Configs: the built-in graph and the shipped ROS params files load; mistakes are
//! reported with the file, the node and the key.

use std::path::Path;

use dreamplan::bus::LocalBus;
use dreamplan::config::{node_config, ros_params, GraphConfig};
use dreamplan::nodes::camera::{CameraConfig, Source};
use dreamplan::nodes::monitor::MonitorConfig;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_builtin_graph_builds_every_node() {
    let graph = GraphConfig::builtin();
    assert!(graph.nodes.len() >= 2);
    for spec in &graph.nodes {
        if let Err(e) = dreamplan::nodes::build::<LocalBus>(spec, &graph.origin) {
            panic!("{e:#}");
        }
    }
}

#[test]
fn a_misspelled_key_names_the_file_the_node_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("graph.yaml");
    std::fs::write(
        &path,
        "nodes:\n  - name: cam\n    kind: camera\n    params: { rate_hzz: 5.0 }\n",
    )
    .unwrap();
    let graph = GraphConfig::load(&path).unwrap();
    let err = dreamplan::nodes::build::<LocalBus>(&graph.nodes[0], &graph.origin)
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("graph.yaml"), "{msg}");
    assert!(msg.contains("`cam`"), "{msg}");
    assert!(msg.contains("rate_hzz"), "{msg}");
}

/// A value of the wrong type names its key, nested ones by their dotted path (serde_yaml
/// alone names none for a node's params, which it reads from a value, not from text).
#[test]
fn a_value_of_the_wrong_type_names_its_key() {
    let graph = GraphConfig::from_yaml(
        "nodes:\n  - {name: s, kind: sim, params: {task: cloth, realtime: \"yes\"}}\n  - {name: ex, kind: executor, params: {motion: {lift_height_m: high}}}\n",
        "graph.yaml",
    )
    .unwrap();
    let msg = |i: usize| {
        let err = dreamplan::nodes::build::<LocalBus>(&graph.nodes[i], &graph.origin)
            .err()
            .unwrap();
        format!("{err:#}")
    };
    let sim = msg(0);
    assert!(
        sim.contains("`realtime`: invalid type: string \"yes\", expected a boolean"),
        "{sim}"
    );
    let ex = msg(1);
    assert!(
        ex.contains("`ex`") && ex.contains("`motion.lift_height_m`: invalid type"),
        "{ex}"
    );
}

#[test]
fn graph_level_mistakes_are_reported() {
    let err = GraphConfig::from_yaml("nodes: []\nduraton_s: 3\n", "g.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("g.yaml") && err.contains("duraton_s"),
        "{err}"
    );
    let err = GraphConfig::from_yaml(
        "nodes:\n - {name: a, kind: camera}\n - {name: a, kind: monitor}\n",
        "g.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`a` is used twice"), "{err}");
    let graph = GraphConfig::from_yaml("nodes:\n - {name: a, kind: lidar}\n", "g.yaml").unwrap();
    let err = format!(
        "{:#}",
        dreamplan::nodes::build::<LocalBus>(&graph.nodes[0], "g.yaml")
            .err()
            .unwrap()
    );
    assert!(
        err.contains("unknown kind `lidar`") && err.contains("camera"),
        "{err}"
    );
    let err = GraphConfig::load(Path::new("/nonexistent/graph.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/graph.yaml"), "{err}");
}

#[test]
fn invalid_values_are_rejected_by_the_node() {
    let graph = GraphConfig::from_yaml(
        "nodes:\n - {name: c, kind: camera, params: {rate_hz: -1.0}}\n",
        "g.yaml",
    )
    .unwrap();
    let err = format!(
        "{:#}",
        dreamplan::nodes::build::<LocalBus>(&graph.nodes[0], "g.yaml")
            .err()
            .unwrap()
    );
    assert!(err.contains("rate_hz"), "{err}");
    let graph = GraphConfig::from_yaml(
        "nodes:\n - {name: c, kind: camera, params: {source: files}}\n",
        "g.yaml",
    )
    .unwrap();
    let err = format!(
        "{:#}",
        dreamplan::nodes::build::<LocalBus>(&graph.nodes[0], "g.yaml")
            .err()
            .unwrap()
    );
    assert!(err.contains("files"), "{err}");
}

#[test]
fn shipped_ros_params_files_load_into_the_node_configs() {
    let cam_text = std::fs::read_to_string(root().join("config/ros/camera.yaml")).unwrap();
    let cam: CameraConfig = node_config(
        &ros_params(&cam_text, "camera", "camera.yaml").unwrap(),
        "camera.yaml",
    )
    .unwrap();
    assert_eq!(cam.source, Source::Pattern);
    let mon_text = std::fs::read_to_string(root().join("config/ros/monitor.yaml")).unwrap();
    let mon: MonitorConfig = node_config(
        &ros_params(&mon_text, "monitor", "monitor.yaml").unwrap(),
        "monitor.yaml",
    )
    .unwrap();
    assert!(!mon.topics.is_empty());
    let rec_text = std::fs::read_to_string(root().join("config/ros/recorder.yaml")).unwrap();
    let rec: dreamplan::nodes::recorder::RecorderConfig = node_config(
        &ros_params(&rec_text, "recorder", "recorder.yaml").unwrap(),
        "recorder.yaml",
    )
    .unwrap();
    assert!(rec.exclude.contains(&"/rosout".to_string()));

    // The sim and executor files spell out every default: they must stay equal to them.
    let sim_text = std::fs::read_to_string(root().join("config/ros/sim.yaml")).unwrap();
    let sim: dreamplan::nodes::sim::SimConfig = node_config(
        &ros_params(&sim_text, "sim", "sim.yaml").unwrap(),
        "sim.yaml",
    )
    .unwrap();
    assert_eq!(
        format!("{sim:?}"),
        format!("{:?}", dreamplan::nodes::sim::SimConfig::default())
    );
    let pl_text = std::fs::read_to_string(root().join("config/ros/planner.yaml")).unwrap();
    let pl: dreamplan::nodes::planner::PlannerConfig = node_config(
        &ros_params(&pl_text, "planner", "planner.yaml").unwrap(),
        "planner.yaml",
    )
    .unwrap();
    assert_eq!(
        format!("{pl:?}"),
        format!("{:?}", dreamplan::nodes::planner::PlannerConfig::default())
    );
    let tr_text = std::fs::read_to_string(root().join("config/ros/trainer.yaml")).unwrap();
    let tr: dreamplan::nodes::trainer::TrainerConfig = node_config(
        &ros_params(&tr_text, "trainer", "trainer.yaml").unwrap(),
        "trainer.yaml",
    )
    .unwrap();
    // What it leaves out takes the defaults; what it spells out equals them.
    assert_eq!(tr.job, dreamplan::nodes::trainer::Job::Orpo);
    assert_eq!(tr.orpo, dreamplan::train::orpo::OrpoConfig::default());
    assert_eq!(tr.topics.status, "/trainer/status");
    assert_eq!((tr.world_model.steps, tr.world_model.batch), (1000, 8));
    let exe_text = std::fs::read_to_string(root().join("config/ros/executor.yaml")).unwrap();
    let exe: dreamplan::nodes::executor::ExecutorConfig = node_config(
        &ros_params(&exe_text, "executor", "executor.yaml").unwrap(),
        "executor.yaml",
    )
    .unwrap();
    assert_eq!(
        format!("{exe:?}"),
        format!(
            "{:?}",
            dreamplan::nodes::executor::ExecutorConfig::default()
        )
    );
}

#[test]
fn ros_params_merge_wildcard_and_node_sections_and_nest_dotted_keys() {
    let text = "/**:\n  ros__parameters:\n    use_sim_time: true\n    rate_hz: 5.0\n/camera:\n  ros__parameters:\n    width: 320\n    intrinsics: [1.0, 2.0, 3.0, 4.0]\nother:\n  ros__parameters:\n    width: 1\n";
    let v = ros_params(text, "camera", "p.yaml").unwrap();
    let cam: CameraConfig = node_config(&v, "p.yaml").unwrap();
    assert_eq!(
        (cam.width, cam.rate_hz, cam.intrinsics),
        (320, 5.0, Some([1.0, 2.0, 3.0, 4.0]))
    );
    assert!(dreamplan::config::ros_use_sim_time(text, "camera"));

    let flat: serde_yaml::Mapping = serde_yaml::from_str("a.b.c: 1\na.d: 2\ne: 3").unwrap();
    let nested = dreamplan::config::nest_dotted(flat);
    assert_eq!(
        nested,
        serde_yaml::from_str::<serde_yaml::Value>("{a: {b: {c: 1}, d: 2}, e: 3}").unwrap()
    );

    let err = ros_params("camera:\n  width: 3\n", "camera", "p.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ros__parameters"), "{err}");
}

/// The trainer's nested ORPO settings: a misspelled key is refused (it was dropped), the
/// device is read, and a task for a per-task run is refused (it was ignored).
#[test]
fn the_trainers_orpo_settings_refuse_unknown_keys_and_read_the_device() {
    use dreamplan::nodes::trainer::TrainerConfig;
    let dir = tempfile::tempdir().unwrap();
    let (planner, pairs) = (dir.path().join("planner"), dir.path().join("pairs.jsonl"));
    std::fs::create_dir_all(&planner).unwrap();
    std::fs::write(&pairs, b"").unwrap();
    let graph = |orpo: &str, shared: bool| {
        GraphConfig::from_yaml(
            &format!(
                "nodes:\n - {{name: t, kind: trainer, params: {{out: o, planner: {}, pairs: {}, shared: {shared}, orpo: {orpo}}}}}\n",
                planner.display(),
                pairs.display()
            ),
            "g.yaml",
        )
        .unwrap()
    };
    let build = |g: GraphConfig| {
        dreamplan::nodes::build::<LocalBus>(&g.nodes[0], "g.yaml")
            .err()
            .map(|e| format!("{e:#}"))
    };
    let e = build(graph("{stpes: 5}", false)).expect("a misspelled key is refused");
    assert!(e.contains("stpes"), "{e}");
    assert_eq!(
        build(graph("{steps: 5, device: cpu, dtype: f32}", false)),
        None
    );
    let c: TrainerConfig = node_config(
        &serde_yaml::from_str("{out: o, orpo: {device: 'cuda:1', dtype: bf16}}").unwrap(),
        "t",
    )
    .unwrap();
    assert_eq!(
        c.orpo.device,
        "cuda:1".parse::<dreamplan::device::DeviceSpec>().unwrap()
    );
    // The world-model job's device too (before session 50 `world_model.device` was
    // refused as an unknown key, and a `preset: gpu` job trained on the CPU).
    let c: TrainerConfig = node_config(
        &serde_yaml::from_str(
            "{out: o, job: world_model, bags: [b], world_model: {device: 'cuda:1', steps: 5}}",
        )
        .unwrap(),
        "t",
    )
    .unwrap();
    assert_eq!(
        c.world_model.device,
        "cuda:1".parse::<dreamplan::device::DeviceSpec>().unwrap()
    );
    let e = build(graph("{task: rope}", false)).expect("a task without shared is refused");
    assert!(e.contains("shared: true"), "{e}");
    assert_eq!(build(graph("{task: rope}", true)), None);
}

/// `ros2 launch … device:=0` passes the camera's index as a number: it reads as `"0"`
/// (before session 48 the camera node refused it as "expected a string").
#[test]
fn a_camera_device_index_given_as_a_number_reads_as_its_text() {
    use dreamplan::nodes::camera::CameraConfig;
    let cfg: CameraConfig =
        dreamplan::config::node_config(&serde_yaml::from_str("{device: 0}").unwrap(), "camera")
            .unwrap();
    assert_eq!(cfg.device, "0");
    let cfg: CameraConfig = dreamplan::config::node_config(
        &serde_yaml::from_str("{device: /dev/video2}").unwrap(),
        "camera",
    )
    .unwrap();
    assert_eq!(cfg.device, "/dev/video2");
    let e = dreamplan::config::node_config::<CameraConfig>(
        &serde_yaml::from_str("{device: [1]}").unwrap(),
        "camera",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`device`"), "{e}");
}

/// One node's config from a file (`check-calibration --executor-params`, `robot envelope
/// --config`): a params file's own section merged over `/**`, dotted keys nested; the
/// node's plain YAML; and a params file without the node's section refused, naming the
/// sections it has (read as the defaults, it would have passed silently).
#[test]
fn a_node_config_file_is_a_params_file_section_or_plain_yaml() {
    use dreamplan::config::node_config_file;
    use dreamplan::nodes::executor::ExecutorConfig;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let params = file(
        "p.yaml",
        "/**:\n  ros__parameters:\n    table_z: 0.02\nexecutor:\n  ros__parameters:\n    motion.lift_height_m: 0.07\n    base_frame: fr3_link0\n",
    );
    let c: ExecutorConfig = node_config_file(&params, "executor").unwrap();
    assert_eq!((c.table_z, c.motion.lift_height_m), (0.02, 0.07));
    assert_eq!(c.base_frame, "fr3_link0");
    let plain = file("plain.yaml", "table_z: 0.03\n");
    let c: ExecutorConfig = node_config_file(&plain, "executor").unwrap();
    assert_eq!(c.table_z, 0.03);
    let other = file(
        "other.yaml",
        "arm_executor:\n  ros__parameters:\n    table_z: 0.04\n",
    );
    let e = node_config_file::<ExecutorConfig>(&other, "executor")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no section for the node `executor`") && e.contains("arm_executor"),
        "{e}"
    );
}
