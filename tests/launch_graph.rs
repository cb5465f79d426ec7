//! The launch files, read as ROS 2 would start them and run in process: every executable
//! is a node kind the package installs, every parameter is one its node declares, and
//! every topic has both a publisher and a subscriber, except the documented external ones
//! (what a camera driver, a controller or a person provides or reads).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use dreamplan::bus::LocalBus;
use dreamplan::launch::LaunchFile;
use tokio_util::sync::CancellationToken;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a launch file's dreamplan nodes in process for `secs` and returns the topic graph.
async fn graph_of(
    file: &str,
    args: &[(&str, &str)],
    secs: f64,
) -> (BTreeMap<String, dreamplan::bus::TopicUse>, Vec<String>) {
    let (bus, externals) = run_launch(file, args, secs).await;
    (bus.topic_graph(), externals)
}

/// Runs a launch file's dreamplan nodes in process for `secs`; their bus, and the external
/// processes the launch would start.
async fn run_launch(file: &str, args: &[(&str, &str)], secs: f64) -> (LocalBus, Vec<String>) {
    let launch = LaunchFile::load(&root().join("launch").join(file)).unwrap();
    let overrides = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut resolved = launch.resolve(&overrides, &root()).unwrap();
    resolved.graph.duration_s = secs;
    let bus = LocalBus::default();
    let report =
        dreamplan::runner::run_graph(bus.clone(), &resolved.graph, CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{file} {args:?}: {e:#}"));
    assert!(report.is_clean(), "{file} {args:?}: {report:?}");
    (bus, resolved.externals)
}

/// Topics with a publisher and no subscriber, and the reverse.
fn dangling(graph: &BTreeMap<String, dreamplan::bus::TopicUse>) -> (Vec<String>, Vec<String>) {
    let unread = graph
        .iter()
        .filter(|(_, u)| u.publishers > 0 && u.subscriptions == 0)
        .map(|(t, _)| t.clone())
        .collect();
    let unfed = graph
        .iter()
        .filter(|(_, u)| u.subscriptions > 0 && u.publishers == 0)
        .map(|(t, _)| t.clone())
        .collect();
    (unread, unfed)
}

/// Topics a launch graph reads that something outside it provides (docs/ros2.md, "Launch
/// files and their graph").
const PROVIDED_OUTSIDE: &[&str] = &[
    "/camera/color/image_raw", // the camera driver's colour images (real arm)
    "/camera/depth/image_raw", // its aligned depth (real arm)
    "/joint_states",           // joint_state_broadcaster (real arm)
    "/goal/image",             // the goal, latched (real arm: the operator; replay: the bag)
    "/goal/depth",             // its depth, latched (real arm)
    "/camera/image_raw",       // replay: the bag
    "/estop",                  // an e-stop button or the operator
    "/trainer/status",         // a trainer node, when one runs (adapters loaded live)
    "/verifier/scores",        // the verifier, started with world_model:=DIR
    "/camera/camera_info",     // Gazebo: ros_gz_bridge (config/gazebo/bridge.yaml)
];

/// Topics a launch graph publishes for readers outside it.
const READ_OUTSIDE: &[&str] = &[
    "/arm/joint_trajectory",            // the arm's controller (real arm)
    "/planner/candidates",              // the verifier (world_model:=DIR) and the recorder
    "/planner/keypoints",               // the recorder, rqt
    "/camera/object_only",              // the recorder: world-model training data
    "/planner/action", // replay: the recorder, to compare planners on the same scenes
    "/arm_controller/joint_trajectory", // Gazebo: the arm's joint_trajectory_controller
    "/dreamplan/markers", // RViz: what the executor decided, where
];

/// The ROS topics `config/gazebo/bridge.yaml` brings from Gazebo, but the clock.
fn bridged_topics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("config/gazebo/bridge.yaml")).unwrap();
    let entries: Vec<BTreeMap<String, String>> = serde_yaml::from_str(&text).unwrap();
    entries
        .into_iter()
        .map(|e| e["ros_topic_name"].clone())
        .filter(|t| t != "/clock")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_launch_file_runs_with_declared_parameters_and_a_connected_graph() {
    let dir = tempfile::tempdir().unwrap();
    let bag = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (b1, b2, b3, b4) = (bag("a"), bag("b"), bag("c"), bag("d"));
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("dreamplan.launch.xml", vec![]),
        (
            "dreamplan.launch.xml",
            vec![("record", "true"), ("bag_dir", &b1)],
        ),
        ("sim.launch.xml", vec![("backend", "coverage")]),
        ("sim.launch.xml", vec![("record", "true"), ("bag_dir", &b2)]),
        ("real_arm.launch.xml", vec![]),
        (
            "real_arm.launch.xml",
            vec![("record", "true"), ("bag_dir", &b3)],
        ),
        ("bag_replay.launch.xml", vec![("bag", "recorded")]),
        ("gazebo.launch.xml", vec![]),
        (
            "gazebo.launch.xml",
            vec![("record", "true"), ("bag_dir", &b4)],
        ),
    ];
    // Every launch file is among the cases.
    let mut files: Vec<String> = std::fs::read_dir(root().join("launch"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".launch.xml"))
        .collect();
    files.sort();
    for f in &files {
        assert!(cases.iter().any(|(c, _)| c == f), "{f} is not tested");
    }
    for (file, args) in &cases {
        let (graph, externals) = graph_of(file, args, 1.5).await;
        assert!(!graph.is_empty(), "{file}: no topics");
        let (unread, unfed) = dangling(&graph);
        let odd_out: Vec<_> = unread
            .iter()
            .filter(|t| !READ_OUTSIDE.contains(&t.as_str()))
            .collect();
        let odd_in: Vec<_> = unfed
            .iter()
            .filter(|t| !PROVIDED_OUTSIDE.contains(&t.as_str()))
            .collect();
        assert!(
            odd_out.is_empty() && odd_in.is_empty(),
            "{file} {args:?}: published and never read {odd_out:?}; read and never published {odd_in:?}"
        );
        if *file == "bag_replay.launch.xml" {
            assert_eq!(
                externals,
                ["executable ros2 bag play recorded --clock --rate 1.0 --topics /camera/image_raw \
                  /camera/camera_info /camera/depth/image_raw /camera/object_only /goal/image \
                  /goal/depth /dreamplan/episode /joint_states"]
            );
        } else if *file == "gazebo.launch.xml" {
            assert_eq!(
                externals,
                [
                    "include <share of ros_gz_sim>/launch/gz_sim.launch.py",
                    "node robot_state_publisher/robot_state_publisher",
                    "node ros_gz_sim/create -topic robot_description -name franka_like",
                    "node controller_manager/spawner joint_state_broadcaster --controller-manager-timeout 60",
                    "node controller_manager/spawner arm_controller --controller-manager-timeout 60",
                    "node ros_gz_bridge/parameter_bridge",
                ]
            );
            // The camera topics the planner and the executor read are exactly what the
            // bridge brings (the recorder, with record:=true, also asks for more).
            if !args.is_empty() {
                continue;
            }
            let camera_in: BTreeSet<String> = unfed
                .iter()
                .filter(|t| t.starts_with("/camera/"))
                .cloned()
                .collect();
            assert_eq!(camera_in, bridged_topics(), "{file} {args:?}");
        } else {
            assert!(externals.is_empty(), "{file}: {externals:?}");
        }
    }
}

/// The RViz display config that `rviz:=true` starts (real arm, Gazebo, the built-in world)
/// shows what the launched nodes publish: each display's topic has the type its display
/// class reads, and the display asks for a QoS that every publisher of it offers (a
/// transient-local or reliable reader matches no volatile or best-effort writer, and RViz
/// would show nothing); a topic no launched node publishes is one the arm's driver or the
/// operator (or Gazebo's bridge) provides. Its fixed frame is the executor's `base_frame`, in which the markers
/// are published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rviz_shows_what_the_graph_publishes_with_a_qos_its_publishers_offer() {
    use dreamplan::bus::{Bus as _, Durability, Reliability};
    // What the arm's driver (robot_state_publisher) or the operator (the goal) provides.
    const OUTSIDE: &[&str] = &["/robot_description", "/goal/image"];
    let config = root().join("config/rviz/dreamplan.rviz");
    let rviz: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let manager = &rviz["Visualization Manager"];
    let base_frame = dreamplan::nodes::executor::ExecutorConfig::default().base_frame;
    assert_eq!(
        manager["Global Options"]["Fixed Frame"].as_str(),
        Some(base_frame.as_str())
    );
    // (class, topic, transient local, reliable) of every enabled display that reads one.
    let mut displays = Vec::new();
    for d in manager["Displays"].as_sequence().unwrap() {
        assert_ne!(
            d["Class"].as_str(),
            Some("rviz_common/Group"),
            "groups: read them too"
        );
        if d["Enabled"].as_bool() != Some(true) {
            continue;
        }
        let class = d["Class"].as_str().unwrap().to_string();
        let Some(topic) = ["Topic", "Description Topic"]
            .iter()
            .map(|k| &d[*k])
            .find(|t| t.is_mapping())
        else {
            continue;
        };
        displays.push((
            class,
            topic["Value"].as_str().unwrap().to_string(),
            topic["Durability Policy"].as_str() == Some("Transient Local"),
            topic["Reliability Policy"].as_str() == Some("Reliable"),
        ));
    }
    assert!(displays.len() >= 5, "{displays:?}");
    let type_of = |class: &str| match class {
        "rviz_default_plugins/MarkerArray" => "visualization_msgs/msg/MarkerArray",
        "rviz_default_plugins/Image" => "sensor_msgs/msg/Image",
        "rviz_default_plugins/RobotModel" => "std_msgs/msg/String",
        other => panic!("{other}: which type does it read?"),
    };
    // The verifier (and its predictions) starts with a world model: an untrained tiny one.
    let wm = tempfile::tempdir().unwrap();
    let cfg = dreamplan::world_model::Config {
        width: 32,
        height: 16,
        patch_size: 4,
        frames: 2,
        hidden: 16,
        heads: 2,
        depth: 1,
        control_blocks: 1,
        ..dreamplan::world_model::Config::cpu()
    };
    let (_, vars) = dreamplan::world_model::train::init_vars(&cfg, 0).unwrap();
    dreamplan::world_model::train::save_model(wm.path(), &cfg, &vars).unwrap();
    let wm = wm.path().to_str().unwrap();
    let mut published = BTreeSet::new();
    for (file, args) in [
        (
            "real_arm.launch.xml",
            vec![("rviz", "true"), ("world_model", wm)],
        ),
        (
            "gazebo.launch.xml",
            vec![("rviz", "true"), ("world_model", wm)],
        ),
        (
            "sim.launch.xml",
            vec![("rviz", "true"), ("world_model", wm)],
        ),
    ] {
        let (bus, externals) = run_launch(file, &args, 1.0).await;
        let rviz2 = format!("node rviz2/rviz2 -d {} -f {base_frame}", config.display());
        assert!(externals.contains(&rviz2), "{file}: {externals:?}");
        let graph = bus.topic_graph();
        for (class, topic, latched, reliable) in &displays {
            let offered = bus.publisher_qos(topic);
            if offered.is_empty() {
                // (Gazebo's camera comes through ros_gz_bridge.)
                let bridged = file == "gazebo.launch.xml" && bridged_topics().contains(topic);
                assert!(
                    bridged || OUTSIDE.contains(&topic.as_str()),
                    "{file}: nothing publishes {topic}"
                );
                continue;
            }
            assert_eq!(graph[topic].type_name, type_of(class), "{file}: {topic}");
            for q in &offered {
                assert!(
                    !latched || q.durability == Durability::TransientLocal,
                    "{file}: RViz reads {topic} transient-local, a publisher offers {q:?}"
                );
                assert!(
                    !reliable || q.reliability == Reliability::Reliable,
                    "{file}: RViz reads {topic} reliably, a publisher offers {q:?}"
                );
            }
            published.insert(topic.clone());
        }
    }
    // Each display but the arm model was checked against a publisher somewhere.
    for (_, topic, _, _) in &displays {
        assert!(
            topic == "/robot_description" || published.contains(topic),
            "{topic} was never published: {published:?}"
        );
    }
}

/// The real-arm launch takes the executor's params file as an argument, so that a cell's
/// hand-eye calibration (and joint names, envelope) reaches the executor without editing
/// the package; the launch file's own arguments (finger joint, gripper action) still apply after
/// it.
#[test]
fn the_real_arm_executor_reads_the_cell_s_params_file_and_the_launch_arguments_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("executor.yaml");
    let shipped = std::fs::read_to_string(root().join("config/ros/executor.yaml")).unwrap();
    // The first `table_z` is the node's own (the envelope's comes later).
    let cell = shipped
        .replacen(
            "    table_z: 0.0 ",
            "    base_from_camera_xyz: [0.9, 0.1, 0.7]\n    base_from_camera_xyzw: [0.0, 0.0, 0.0, 1.0]\n    table_z: 0.02 ",
            1,
        )
        .replace(
            "    finger_joint: \"panda_finger_joint1\"",
            "    finger_joint: \"from_the_file\"",
        )
        .replace("      #   open_position: 0.04", "      open_position: 0.0")
        .replace("      #   closed_position: 0.0", "      closed_position: 0.8");
    assert!(
        cell.contains("table_z: 0.02")
            && cell.contains("from_the_file")
            && cell.contains("closed_position: 0.8"),
        "the shipped file's table_z, finger_joint or gripper lines moved"
    );
    std::fs::write(&mine, cell).unwrap();
    let launch = LaunchFile::load(&root().join("launch/real_arm.launch.xml")).unwrap();
    let executor = |args: &[(&str, &str)]| {
        let args: BTreeMap<String, String> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let graph = launch.resolve(&args, &root()).unwrap().graph;
        let spec = graph
            .nodes
            .into_iter()
            .find(|n| n.kind == "executor")
            .unwrap();
        spec.params
    };
    let p = executor(&[("executor_params", mine.to_str().unwrap())]);
    assert_eq!(p["base_from_camera_xyz"][0].as_f64(), Some(0.9));
    assert_eq!(p["table_z"].as_f64(), Some(0.02));
    assert_eq!(p["finger_joint"].as_str(), Some("panda_finger_joint1"));
    assert_eq!(p["dry_run"].as_bool(), Some(false));
    let p = executor(&[
        ("executor_params", mine.to_str().unwrap()),
        ("finger_joint", ""),
        ("gripper_action", "/gripper_controller/gripper_cmd"),
        ("dry_run", "true"),
    ]);
    assert_eq!(p["dry_run"].as_bool(), Some(true));
    assert_eq!(p["finger_joint"].as_str(), Some(""));
    assert_eq!(
        p["gripper_action"].as_str(),
        Some("/gripper_controller/gripper_cmd")
    );
    assert_eq!(p["gripper"]["closed_position"].as_f64(), Some(0.8));
    assert_eq!(p["gripper"]["open_position"].as_f64(), Some(0.0));
    // What the executor makes of them: valid, a Robotiq-like gripper.
    let config: dreamplan::nodes::executor::ExecutorConfig =
        serde_yaml::from_value(p.clone()).unwrap();
    <dreamplan::nodes::executor::ExecutorNode as dreamplan::nodes::Node>::validate(&config)
        .unwrap();
    // Without the argument, the shipped file: no hand-eye pose.
    let p = executor(&[]);
    assert!(p.get("base_from_camera_xyz").is_none(), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_parameters_unknown_executables_and_arguments_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("<launch>\n{body}\n</launch>\n")).unwrap();
        LaunchFile::load(&p).unwrap()
    };
    let none = BTreeMap::new();
    let run = |launch: LaunchFile| async move {
        let mut g = launch.resolve(&BTreeMap::new(), &root()).unwrap().graph;
        g.duration_s = 0.5;
        dreamplan::runner::run_graph(LocalBus::default(), &g, CancellationToken::new()).await
    };
    // A parameter the planner does not declare.
    let l = write(
        "a.launch.xml",
        r#"<node pkg="dreamplan" exec="planner" name="planner">
             <param from="$(find-pkg-share dreamplan)/config/ros/planner.yaml"/>
             <param name="backendd" value="vlm"/>
           </node>"#,
    );
    let e = format!("{:#}", run(l).await.unwrap_err());
    assert!(e.contains("backendd"), "{e}");
    // An executable the package does not install.
    let l = write(
        "b.launch.xml",
        r#"<node pkg="dreamplan" exec="planer" name="p"/>"#,
    );
    let e = format!("{:#}", run(l).await.unwrap_err());
    assert!(e.contains("planer"), "{e}");
    // An attribute of a dreamplan node this reader would drop (a namespace, ros_args).
    for attr in [r#"namespace="arm1""#, r#"ros_args="-p table_z:=0.1""#] {
        let p = dir.path().join("c.launch.xml");
        std::fs::write(
            &p,
            format!(
                r#"<launch><node pkg="dreamplan" exec="executor" name="executor" {attr}/></launch>"#
            ),
        )
        .unwrap();
        let e = LaunchFile::load(&p).unwrap_err().to_string();
        let key = attr.split('=').next().unwrap();
        assert!(
            e.contains(&format!("attribute `{key}` is not supported here")),
            "{e}"
        );
    }
    // Launch arguments: unknown, and required but not given.
    let l = LaunchFile::load(&root().join("launch/bag_replay.launch.xml")).unwrap();
    let e = l.resolve(&none, &root()).unwrap_err().to_string();
    assert!(
        e.ends_with("launch argument `bag` has no default: give bag:=VALUE"),
        "{e}"
    );
    let over = BTreeMap::from([
        ("bag".to_string(), "b".to_string()),
        ("rat".to_string(), "2".to_string()),
    ]);
    let e = l.resolve(&over, &root()).unwrap_err().to_string();
    assert!(
        e.contains("no launch argument `rat` (it has: bag, rate,"),
        "{e}"
    );
    // What the reader does not evaluate is named, not guessed.
    let p = dir.path().join("c.launch.xml");
    std::fs::write(
        &p,
        r#"<launch><node pkg="dreamplan" exec="planner"><remap from="a" to="b"/></node></launch>"#,
    )
    .unwrap();
    let e = LaunchFile::load(&p).unwrap_err().to_string();
    assert!(e.contains("<remap> is not supported"), "{e}");
    std::fs::write(
        &p,
        r#"<launch><group><node pkg="dreamplan" exec="planner"/></group></launch>"#,
    )
    .unwrap();
    let e = LaunchFile::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("<group> inside <launch> is not supported"),
        "{e}"
    );
    std::fs::write(&p, "<launch><node pkg=\"dreamplan\"").unwrap();
    assert!(LaunchFile::load(&p).is_err());
}

/// A launch file that gives its nodes `use_sim_time: true` asks for the graph's clock to
/// follow `/clock` (Gazebo, a replayed bag); the others do not. Before session 52 the
/// parameter was dropped and `dreamplan run --launch … --bus dds` ran on wall time.
#[test]
fn launch_files_that_set_use_sim_time_say_so() {
    let sim_time = |file: &str, args: &[(&str, &str)]| {
        let args: BTreeMap<String, String> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LaunchFile::load(&root().join("launch").join(file))
            .unwrap()
            .resolve(&args, &root())
            .unwrap()
            .use_sim_time
    };
    assert!(sim_time("gazebo.launch.xml", &[]));
    assert!(sim_time("bag_replay.launch.xml", &[("bag", "recorded")]));
    assert!(!sim_time("real_arm.launch.xml", &[]));
    assert!(!sim_time("dreamplan.launch.xml", &[]));
    assert!(sim_time(
        "dreamplan.launch.xml",
        &[("use_sim_time", "true")]
    ));
}
