//! The sim and executor nodes on the in-process bus: an oracle "planner" sends the hidden
//! good action as pixels; the executor turns them into a checked trajectory; the sim runs
//! it and scores the episode. Refusals come back as `failed` events with a reason.

use std::time::Duration;

use dreamplan::bus::{ActionOutcome, Bus, GripperGoal, LocalBus, Qos};
use dreamplan::msg::prelude::*;
use dreamplan::msg::std_msgs::Bool;
use dreamplan::nodes::executor::{ExecutorConfig, ExecutorNode};
use dreamplan::nodes::params::LiveParams;
use dreamplan::nodes::sim::{SimConfig, SimNode, TaskName};
use dreamplan::nodes::{Node, NodeContext};
use dreamplan::render::scene;
use dreamplan::sim::episode::surface_point;
use dreamplan::sim::tasks::{hidden_action, reset, Task};
use tokio_util::sync::CancellationToken;

const SIZE: u32 = 128;

fn start<N: Node>(
    node: N,
    bus: &LocalBus,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let ctx = NodeContext {
        name: N::KIND.into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params: dreamplan::nodes::params::LiveParams::fixed(),
    };
    tokio::spawn(node.run(ctx))
}

async fn next_event(
    events: &mut dreamplan::bus::Subscriber<EpisodeEvent>,
    name: &str,
) -> EpisodeEvent {
    // A liveness guard, not a timing assertion: in the unoptimised test build with the
    // other tests of this file running beside it on two cores, one episode has taken
    // over 60 s (CI, 2026-11-25).
    loop {
        let e = tokio::time::timeout(Duration::from_secs(300), events.recv())
            .await
            .expect("event in time")
            .expect("bus open");
        if e.event == name {
            return (*e).clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oracle_action_in_pixels_is_executed_and_scored() {
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let mut events = bus
        .subscribe::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let mut trajectories = bus
        .subscribe::<JointTrajectory>("/arm/joint_trajectory", Qos::keep_last(10))
        .unwrap();
    let mut depth = bus
        .subscribe::<Image>("/camera/depth/image_raw", Qos::keep_last(1))
        .unwrap();
    let actions = bus
        .publisher::<KeypointAction>("/planner/action", Qos::keep_last(1))
        .unwrap();
    let seed = 11;
    let sim = SimNode::new(SimConfig {
        task: TaskName::Rope,
        seed,
        width: SIZE,
        height: SIZE,
        realtime: false,
        ..Default::default()
    })
    .unwrap();
    let exec = ExecutorNode::new(ExecutorConfig {
        width: SIZE,
        height: SIZE,
        ..Default::default()
    })
    .unwrap();
    let tasks = [start(sim, &bus, &stop), start(exec, &bus, &stop)];

    assert_eq!(
        next_event(&mut events, EpisodeEvent::EVENT_RESET)
            .await
            .task,
        "rope"
    );
    let d = depth.recv().await.unwrap();
    assert_eq!((d.encoding.as_str(), d.width), ("32FC1", SIZE));
    // The oracle: the hidden action, seen through the same camera.
    let world = reset(Task::Rope, seed);
    let act = hidden_action(Task::Rope, seed);
    let cam = scene::default_camera(SIZE, SIZE);
    let pick = surface_point(&world, &act.pick, 0.012);
    let (su, sv, _) = cam.project(&pick).unwrap();
    let (tu, tv, _) = cam.project(&act.place).unwrap();
    let action = KeypointAction {
        source_u: su as f32,
        source_v: sv as f32,
        target_u: tu as f32,
        target_v: tv as f32,
        raw_text: "oracle".into(),
        ..Default::default()
    };
    actions.publish(action.clone()).unwrap();
    assert_eq!(
        next_event(&mut events, EpisodeEvent::EVENT_ACTION_STARTED)
            .await
            .detail,
        "oracle"
    );
    let traj = trajectories.recv().await.unwrap();
    assert_eq!(
        traj.joint_names.last().map(String::as_str),
        Some("panda_finger_joint1")
    );
    assert!(
        traj.points
            .iter()
            .any(|p| *p.positions.last().unwrap() == 0.0),
        "the gripper closes during the trajectory"
    );
    // The gripper closes where the oracle picks and opens where it places: pixels and depth
    // quantise the points (a few mm at 128 px), so compare with a 6 mm tolerance.
    let arm = dreamplan::sim::episode::default_arm();
    let tcp_where = |closed: bool| {
        let p = traj
            .points
            .iter()
            .find(|p| {
                (*p.positions.last().unwrap() == 0.0) == closed
                    && p.time_from_start.as_secs_f64() > 0.5
            })
            .unwrap();
        arm.fk(&p.positions[..7]).translation.vector
    };
    let grasp_at = tcp_where(true);
    assert!(
        (grasp_at.xy() - pick.coords.xy()).norm() < 0.006,
        "grasp at {grasp_at:?}, oracle pick {pick:?}"
    );
    let scored = next_event(&mut events, EpisodeEvent::EVENT_SCORED).await;
    // Pixels, depth and the fingers' reach make the oracle's execution differ from the
    // goal's by millimetres, well inside the score-1 threshold.
    assert_eq!(scored.score, 1.0, "{scored:?}");
    assert!(scored.detail.starts_with("distance"), "{}", scored.detail);
    eprintln!(
        "oracle through pixels scored {} ({})",
        scored.score, scored.detail
    );

    // An action pointing off the image and an action under e-stop are refused with reasons.
    actions
        .publish(KeypointAction {
            source_u: -5.0,
            ..action.clone()
        })
        .unwrap();
    let failed = next_event(&mut events, EpisodeEvent::EVENT_FAILED).await;
    assert!(
        failed.detail.contains("outside") || failed.detail.contains("busy"),
        "{}",
        failed.detail
    );
    stop.cancel();
    bus.shutdown();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estop_refuses_actions() {
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let mut events = bus
        .subscribe::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let estop = bus.publisher::<Bool>("/estop", Qos::latched()).unwrap();
    let actions = bus
        .publisher::<KeypointAction>("/planner/action", Qos::keep_last(1))
        .unwrap();
    estop.publish(Bool { data: true }).unwrap();
    let exec = ExecutorNode::new(ExecutorConfig::default()).unwrap();
    let task = start(exec, &bus, &stop);
    tokio::time::sleep(Duration::from_millis(100)).await;
    actions
        .publish(KeypointAction {
            source_u: 10.0,
            source_v: 10.0,
            target_u: 20.0,
            target_v: 20.0,
            ..Default::default()
        })
        .unwrap();
    let failed = next_event(&mut events, EpisodeEvent::EVENT_FAILED).await;
    assert_eq!(failed.detail, "e-stop engaged");
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// A bare executor (no simulator) configured by `yaml` (the image size added), started on
/// `bus` with a plane of depth in view; the topics its tests use.
struct ExecRig {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    events: dreamplan::bus::Subscriber<EpisodeEvent>,
    topic: dreamplan::bus::Subscriber<JointTrajectory>,
    joints: dreamplan::bus::Publisher<JointState>,
    actions: dreamplan::bus::Publisher<KeypointAction>,
    estop: dreamplan::bus::Publisher<Bool>,
    _depth: dreamplan::bus::Publisher<Image>,
    /// The executor's parameters (settable with `live`).
    params: std::sync::Arc<LiveParams>,
}

impl ExecRig {
    async fn start(bus: &LocalBus, yaml: &str) -> Self {
        Self::start_with(bus, yaml, false).await
    }

    /// [`ExecRig::start`] with the executor's parameters served (`live`), so that a test
    /// can set them while it runs through `params`.
    async fn start_with(bus: &LocalBus, yaml: &str, live: bool) -> Self {
        let stop = CancellationToken::new();
        let events = bus
            .subscribe::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
            .unwrap();
        let topic = bus
            .subscribe::<JointTrajectory>("/arm/joint_trajectory", Qos::keep_last(10))
            .unwrap();
        let joints = bus
            .publisher::<JointState>("/joint_states", Qos::keep_last(10))
            .unwrap();
        let depth = bus
            .publisher::<Image>("/camera/depth/image_raw", Qos::keep_last(1))
            .unwrap();
        let actions = bus
            .publisher::<KeypointAction>("/planner/action", Qos::keep_last(1))
            .unwrap();
        let estop = bus.publisher::<Bool>("/estop", Qos::latched()).unwrap();
        let config: ExecutorConfig =
            serde_yaml::from_str(&format!("width: {SIZE}\nheight: {SIZE}\n{yaml}")).unwrap();
        let params = if live {
            LiveParams::for_node::<ExecutorNode>("executor", &config, &serde_yaml::Value::Null)
        } else {
            LiveParams::fixed()
        };
        let ctx = NodeContext {
            name: ExecutorNode::KIND.into(),
            bus: bus.clone(),
            shutdown: stop.clone(),
            params: params.clone(),
        };
        let task = tokio::spawn(ExecutorNode::new(config).unwrap().run(ctx));
        tokio::time::sleep(Duration::from_millis(100)).await;
        depth.publish(plane_depth()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        Self {
            stop,
            task,
            events,
            topic,
            joints,
            actions,
            estop,
            _depth: depth,
            params,
        }
    }

    /// Publishes the arm at the ready pose (with the finger at `finger`, if given).
    async fn arm_at_ready(&self, finger: Option<f64>) -> Vec<f64> {
        let name: Vec<String> = (1..=7).map(|j| format!("panda_joint{j}")).collect();
        self.arm_named_at_ready(name, finger.map(|f| ("panda_finger_joint1", f)))
            .await
    }

    /// The same with the arm's joints named `name` and the finger joint given by name.
    async fn arm_named_at_ready(
        &self,
        mut name: Vec<String>,
        finger: Option<(&str, f64)>,
    ) -> Vec<f64> {
        use dreamplan::robot::franka::READY;
        let mut position = READY.to_vec();
        if let Some((joint, f)) = finger {
            name.push(joint.into());
            position.push(f);
        }
        self.joints
            .publish(JointState {
                name,
                position: position.clone(),
                ..Default::default()
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        position
    }

    /// Engages the e-stop: the running action fails with `e-stop`, and the hold
    /// trajectory that replaces it is returned.
    async fn estop_hold(&mut self) -> std::sync::Arc<JointTrajectory> {
        self.estop.publish(Bool { data: true }).unwrap();
        let e = next_event_any(&mut self.events).await;
        assert_eq!((e.event.as_str(), e.detail.as_str()), ("failed", "e-stop"));
        tokio::time::timeout(Duration::from_secs(10), self.topic.recv())
            .await
            .expect("a hold trajectory")
            .unwrap()
    }

    async fn finish(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// On e-stop the executor sends a trajectory that a ROS trajectory controller takes: the
/// joints of its own trajectories (the finger too; `allow_partial_joints_goal: false`
/// drops other sets) and one point, at the arm's last reported state (an empty trajectory
/// is dropped too). It sent an empty one of the seven arm joints before: a real arm went
/// on moving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estop_holds_the_arm_with_a_trajectory_a_controller_takes() {
    let bus = LocalBus::default();
    let mut r = ExecRig::start(&bus, "episode_end_frees_arm: false\n").await;
    let position = r.arm_at_ready(Some(0.03)).await;
    started(&mut r, "carry").await;
    let planned = r.topic.recv().await.unwrap();
    assert!(planned.points.len() > 4);
    let hold = r.estop_hold().await;
    assert_eq!(hold.joint_names, planned.joint_names);
    assert_eq!(hold.points.len(), 1);
    assert_eq!(hold.points[0].positions, position);
    assert!(hold.points[0].velocities.iter().all(|v| *v == 0.0));
    assert!(hold.points[0].time_from_start.as_secs_f64() > 0.0);
    r.finish().await;
}

/// An arm whose driver names its joints otherwise (`joint_names`) and whose gripper is not
/// a joint of the arm's trajectory controller (`finger_joint: ""`): its joint states are
/// read, and the trajectory and the e-stop's hold carry its seven joints alone, which an
/// arm-only `joint_trajectory_controller` takes (it refuses a joint it does not control;
/// before session 48 every trajectory carried `panda_finger_joint1`). The trajectory is
/// stamped 0, "start now" on the controller's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arm_of_other_joint_names_and_no_finger_column_gets_arm_only_trajectories() {
    let bus = LocalBus::default();
    let names: Vec<String> = (1..=7).map(|j| format!("fr3_joint{j}")).collect();
    let mut r = ExecRig::start(
        &bus,
        &format!("episode_end_frees_arm: false\njoint_names: {names:?}\nfinger_joint: \"\"\n"),
    )
    .await;
    // The gripper's own joint state beside the arm's does not disturb it.
    let position = r
        .arm_named_at_ready(names.clone(), Some(("fr3_finger_joint1", 0.03)))
        .await;
    started(&mut r, "renamed arm").await;
    let planned = r.topic.recv().await.unwrap();
    assert_eq!(planned.joint_names, names);
    assert!(planned.points.iter().all(|p| p.positions.len() == 7));
    assert_eq!(
        planned.header.stamp,
        Time::default(),
        "stamped 0: start now"
    );
    let hold = r.estop_hold().await;
    assert_eq!(hold.joint_names, names);
    assert_eq!(hold.points[0].positions, position[..7]);
    r.finish().await;
    // Names that cannot be the arm's are refused at start.
    for (yaml, want) in [
        ("joint_names: [a, b]", "2 joint names given, the arm has 7"),
        (
            "joint_names: [a, a, b, c, d, e, f]",
            "distinct and non-empty",
        ),
        (
            "finger_joint: panda_joint7",
            "finger_joint `panda_joint7` is also one of the arm's joints",
        ),
    ] {
        let config: ExecutorConfig = serde_yaml::from_str(yaml).unwrap();
        let e = ExecutorNode::new(config).err().expect(yaml).to_string();
        assert!(e.contains(want), "{yaml}: {e}");
    }
}

/// An action is planned only from a recent joint state (bus time): none yet, or one older
/// than `joint_state_max_age_s` (a stalled driver), refuses it; before, the trajectory
/// started at the ready pose or at a state of any age, and a controller would jump there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_waits_for_a_recent_joint_state() {
    use dreamplan::clock::Clock;
    let clock = Clock::sim(Time {
        sec: 100,
        nanosec: 0,
    });
    let bus = LocalBus::new(clock.clone());
    let mut r = ExecRig::start(&bus, "joint_state_max_age_s: 1.0\n").await;
    refused(&mut r, "no state", "no joint state").await;
    r.arm_at_ready(None).await;
    clock.set(Time {
        sec: 105,
        nanosec: 0,
    });
    refused(&mut r, "stale", "5.00 s old").await;
    // The clock went back (a bag played again from its start): a state that arrived
    // "later" than now is no evidence of where the arm is now.
    r.arm_at_ready(None).await;
    clock.set(Time {
        sec: 90,
        nanosec: 0,
    });
    refused(&mut r, "clock back", "the clock went back").await;
    r.arm_at_ready(None).await;
    started(&mut r, "fresh").await;
    r.finish().await;
}

/// Nothing subscribes to the trajectory topic (`topics.trajectory` not the controller's,
/// or no controller running): the action is refused and nothing is reported started.
/// Before session 52 it was reported started, then finished after its duration, and a bag
/// recorded a motion the arm never made. Once a controller listens, the next action goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_is_refused_while_no_controller_listens_on_the_trajectory_topic() {
    let bus = LocalBus::default();
    let mut r = ExecRig::start(&bus, "topics:\n  trajectory: /nowhere\n").await;
    r.arm_at_ready(None).await;
    refused(
        &mut r,
        "no controller",
        "no controller subscribes to /nowhere: nothing was sent",
    )
    .await;
    let mut controller = bus
        .subscribe::<JointTrajectory>("/nowhere", Qos::keep_last(10))
        .unwrap();
    r.arm_at_ready(None).await;
    started(&mut r, "a controller listens").await;
    let traj = tokio::time::timeout(Duration::from_secs(5), controller.recv())
        .await
        .expect("the controller got no trajectory")
        .unwrap();
    assert!(!traj.points.is_empty());
    r.finish().await;
}

/// A goal depth is used with the goal image of its own stamp only: a raised goal scene
/// lifts the place point; a later goal image without depth places on the table again.
/// Before session 52 the earlier goal's depth was used with the later goal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goal_depth_is_used_only_with_the_goal_image_of_its_stamp() {
    use dreamplan::msg::visualization_msgs::MarkerArray;
    use dreamplan::nodes::markers::id;
    let bus = LocalBus::default();
    let mut markers = bus
        .subscribe::<MarkerArray>("/dreamplan/markers", Qos::latched())
        .unwrap();
    let goal = bus
        .publisher::<Image>("/goal/image", Qos::latched())
        .unwrap();
    let goal_depth = bus
        .publisher::<Image>("/goal/depth", Qos::latched())
        .unwrap();
    let mut r = ExecRig::start(&bus, "dry_run: true\n").await;
    r.arm_at_ready(Some(0.04)).await;
    let stamped = |mut m: Image, sec: i32| {
        m.header.stamp = Time { sec, nanosec: 0 };
        m
    };
    // The goal scene 10% nearer the camera than the table: the place lies above it.
    let mut raised = table_depth();
    for c in raised.data.chunks_exact_mut(4) {
        let d = f32::from_le_bytes(c.try_into().unwrap()) * 0.9;
        c.copy_from_slice(&d.to_le_bytes());
    }
    let image = || Image {
        width: SIZE,
        height: SIZE,
        encoding: "rgb8".into(),
        step: SIZE * 3,
        data: vec![255; (SIZE * SIZE * 3) as usize],
        ..Default::default()
    };
    let place_z = async |r: &mut ExecRig, markers: &mut dreamplan::bus::Subscriber<MarkerArray>| {
        r.actions.publish(centre_action("pick 1 place 2")).unwrap();
        next_failed(&mut r.events, dreamplan::nodes::executor::DRY_RUN).await;
        let shown = recv_markers(markers).await;
        added_marker(&shown, id::PLACE).pose.position.z
    };
    goal_depth.publish(stamped(raised, 1)).unwrap();
    goal.publish(stamped(image(), 1)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let with_depth = place_z(&mut r, &mut markers).await;
    assert!(
        with_depth > 0.03,
        "the goal depth did not lift the place: z {with_depth}"
    );
    goal.publish(stamped(image(), 2)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let without = place_z(&mut r, &mut markers).await;
    assert!(
        without < 0.01,
        "the earlier goal's depth was used: z {without}"
    );
    r.finish().await;
}

/// The first joint state a moment after the first action (nodes started together): the
/// action waits for it instead of being refused (the built-in world lost its first episode
/// so under load before session 44).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_action_waits_a_moment_for_the_first_joint_state() {
    let bus = LocalBus::default();
    let mut r = ExecRig::start(&bus, "joint_state_max_age_s: 1.0\n").await;
    r.actions.publish(centre_action("early")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    r.arm_at_ready(None).await;
    let e = next_event_any(&mut r.events).await;
    assert_eq!(e.event, EpisodeEvent::EVENT_ACTION_STARTED, "{e:?}");
    r.finish().await;
}

/// An executor on a simulated clock standing at 100 s, its arm moving after an action
/// (`what`): the rig, the clock and the trajectory's duration.
async fn moving_on_a_sim_clock(what: &str) -> (ExecRig, dreamplan::clock::Clock, f64) {
    let clock = dreamplan::clock::Clock::sim(Time {
        sec: 100,
        nanosec: 0,
    });
    let bus = LocalBus::new(clock.clone());
    let mut r = ExecRig::start(&bus, "episode_end_frees_arm: false\n").await;
    r.arm_at_ready(None).await;
    started(&mut r, what).await;
    let traj = r.topic.recv().await.unwrap();
    let duration = traj.points.last().unwrap().time_from_start.as_secs_f64();
    (r, clock, duration)
}

/// Sends the centre action `what` and asserts that it is refused for `reason`.
async fn refused(r: &mut ExecRig, what: &str, reason: &str) {
    r.actions.publish(centre_action(what)).unwrap();
    let e = next_event_any(&mut r.events).await;
    assert_eq!(e.event, EpisodeEvent::EVENT_FAILED, "{what}: {e:?}");
    assert!(e.detail.contains(reason), "{what}: {}", e.detail);
}

/// Before each action the executor compares the table in the depth image with where the
/// hand-eye pose and `table_z` put it. With `table_check: refuse`: depth of a plane that
/// faces the camera (what a camera tilted by tens of degrees from its pose would see of
/// the table) refuses the action, saying how far off the table is, shows its points in
/// red, and nothing moves; depth with no table where the pose puts it is refused as
/// unseen; the true table with `table_z` set 5 cm above it (live) is refused for the
/// height; with `table_z` back, the action goes; a tolerance of 0 is refused as a
/// parameter. With the default `warn`, the tilted plane only warns: the action goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_refuses_an_action_when_the_table_is_not_where_the_pose_puts_it() {
    use dreamplan::msg::visualization_msgs::MarkerArray;
    use dreamplan::nodes::executor::{TABLE_OFF, TABLE_UNSEEN};
    let bus = LocalBus::default();
    let mut markers = bus
        .subscribe::<MarkerArray>("/dreamplan/markers", Qos::latched())
        .unwrap();
    let mut r = ExecRig::start_with(&bus, "table_check: refuse", true).await;
    let params = r.params.clone();
    r.arm_at_ready(Some(0.04)).await;
    let refused_for = async |r: &mut ExecRig, what: &str| -> String {
        r.actions.publish(centre_action("pick 1 place 2")).unwrap();
        let e = next_failed(&mut r.events, "no motion: ").await;
        let (_, said) = e
            .detail
            .split_once(what)
            .unwrap_or_else(|| panic!("not {what}: {}", e.detail));
        said.to_string()
    };
    // "no motion: the table in the depth image lies 32.0° tilted and …"
    let said = refused_for(&mut r, TABLE_OFF).await;
    assert!(said.contains("check-calibration"), "{said}");
    let tilt: f64 = said
        .trim_start()
        .split('°')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(tilt > 20.0, "{said}");
    // Planned anyway, and shown refused: the label says why, the pick is red.
    let shown = recv_markers(&mut markers).await;
    let of = |id: i32| added_marker(&shown, id);
    use dreamplan::nodes::markers::id;
    assert!(
        of(id::LABEL).text.contains(TABLE_OFF),
        "{:?}",
        of(id::LABEL)
    );
    assert!(of(id::PICK).color.r > 0.9 && of(id::PICK).color.g < 0.2);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), r.topic.recv())
            .await
            .is_err(),
        "a refused action moved the arm"
    );
    // No measured depth where the pose puts the table: unseen, refused.
    let mut blank = table_depth();
    blank.data = f32::NAN.to_le_bytes().repeat((SIZE * SIZE) as usize);
    r._depth.publish(blank).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    refused_for(&mut r, TABLE_UNSEEN).await;
    // The true table, but table_z 5 cm above it.
    r._depth.publish(table_depth()).unwrap();
    let set = |k: &str, v: &str| params.set(k, serde_yaml::from_str(v).unwrap());
    set("table_z", "0.05").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let said = refused_for(&mut r, TABLE_OFF).await;
    assert!(said.contains("-5.0 cm off table_z"), "{said}");
    set("table_z", "0.0").unwrap();
    assert!(set("table_check_deg", "0.0").is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.actions.publish(centre_action("pick 1 place 2")).unwrap();
    tokio::time::timeout(Duration::from_secs(20), r.topic.recv())
        .await
        .expect("the true table lets the action go")
        .unwrap();
    r.finish().await;

    let bus = LocalBus::default();
    let mut r = ExecRig::start_with(&bus, "", false).await;
    r.arm_at_ready(Some(0.04)).await;
    r.actions.publish(centre_action("pick 1 place 2")).unwrap();
    tokio::time::timeout(Duration::from_secs(20), r.topic.recv())
        .await
        .expect("warn lets the action go")
        .unwrap();
    r.finish().await;
}

/// With `dry_run` an action is planned, checked and shown to RViz, and nothing reaches
/// the arm: it ends `failed` ("dry run: …", the arm idle) and no trajectory goes out. The
/// markers (in `base_frame`) put the pick where the action's pixel and the depth say,
/// with the tool's path through it; a refused action shows its points in red and no
/// path; `dry_run` set false while running lets the next action move, shown as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_shows_the_action_to_rviz_and_moves_nothing() {
    use dreamplan::msg::visualization_msgs::{Marker, MarkerArray};
    use dreamplan::nodes::markers::id;
    let bus = LocalBus::default();
    let mut markers = bus
        .subscribe::<MarkerArray>("/dreamplan/markers", Qos::latched())
        .unwrap();
    let mut r = ExecRig::start_with(&bus, "dry_run: true\nbase_frame: fr3_link0", true).await;
    let params = r.params.clone();
    // An e-stop in a dry run, before any joint state: nothing goes to the arm (the hold
    // at the executor's assumed ready pose would have moved an arm it never heard from).
    r.estop.publish(Bool { data: true }).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), r.topic.recv())
            .await
            .is_err(),
        "the e-stop of a dry run sent a trajectory"
    );
    r.estop.publish(Bool { data: false }).unwrap();
    r.arm_at_ready(Some(0.04)).await;
    let cam = scene::default_camera(SIZE, SIZE);
    let mut next_markers = async || recv_markers(&mut markers).await;
    let of = added_marker;
    let at =
        |m: &Marker| nalgebra::Point3::new(m.pose.position.x, m.pose.position.y, m.pose.position.z);

    r.actions.publish(centre_action("pick 1 place 2")).unwrap();
    let e = next_failed(&mut r.events, dreamplan::nodes::executor::DRY_RUN).await;
    assert!(e.detail.contains("pick 1 place 2"), "{}", e.detail);
    let shown = next_markers().await;
    assert!(shown
        .markers
        .iter()
        .all(|m| m.header.frame_id == "fr3_link0"));
    assert_eq!(shown.markers[0].action, Marker::DELETEALL);
    // The pick lies on the depth plane under the action's pixel: it projects back to it.
    let pick = at(&of(&shown, id::PICK));
    let (u, v, _) = cam.project(&pick).unwrap();
    assert!(
        (u - SIZE as f64 / 2.0).abs() < 1.0 && (v - SIZE as f64 / 2.0).abs() < 1.0,
        "pick {pick:?} projects to ({u:.2}, {v:.2})"
    );
    let path = of(&shown, id::PATH).points;
    let closest = path
        .iter()
        .map(|p| (nalgebra::Point3::new(p.x, p.y, p.z) - pick).norm())
        .fold(f64::INFINITY, f64::min);
    assert!(closest < 0.005, "the tool passes {closest} m from the pick");
    assert!(of(&shown, id::LABEL)
        .text
        .starts_with("dry run: pick 1 place 2"));
    assert_eq!(
        at(&of(&shown, id::CAMERA)),
        nalgebra::Point3::from(cam.world_from_camera.translation.vector)
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), r.topic.recv())
            .await
            .is_err(),
        "a dry run sent a trajectory"
    );

    // Refused by a workspace that ends before the pick: red points where the pixels said.
    params
        .set(
            "envelope.workspace_max",
            serde_yaml::from_str("[0.3, 0.45, 0.6]").unwrap(),
        )
        .unwrap();
    refused(&mut r, "too far", "outside").await;
    let shown = next_markers().await;
    let red = of(&shown, id::PICK);
    assert!(red.color.r > 0.9 && red.color.g < 0.2, "{:?}", red.color);
    assert!(
        (at(&red) - pick).norm() < 0.005,
        "{:?} against {pick:?}",
        at(&red)
    );
    assert!(shown.markers.iter().all(|m| m.id != id::PATH));
    assert!(of(&shown, id::LABEL).text.starts_with("refused: "));

    // Dry run off while running: the next action moves the arm and is shown as sent.
    params
        .set_all(vec![
            ("dry_run".into(), serde_yaml::Value::Bool(false)),
            (
                "envelope.workspace_max".into(),
                serde_yaml::from_str("[0.75, 0.45, 0.6]").unwrap(),
            ),
        ])
        .unwrap();
    started(&mut r, "for real").await;
    assert!(r.topic.recv().await.is_some());
    let shown = next_markers().await;
    assert_eq!(of(&shown, id::LABEL).text, "for real");
    assert!(!of(&shown, id::PATH).points.is_empty());
    r.finish().await;
}

/// Sends the centre action `what` and asserts that the arm starts on it.
async fn started(r: &mut ExecRig, what: &str) {
    r.actions.publish(centre_action(what)).unwrap();
    let e = next_event_any(&mut r.events).await;
    assert_eq!(e.event, EpisodeEvent::EVENT_ACTION_STARTED, "{what}: {e:?}");
}

/// Asserts that `action_finished` comes within 5 s (`what` says when it should).
async fn finishes(r: &mut ExecRig, what: &str) {
    let e = tokio::time::timeout(Duration::from_secs(5), next_event_any(&mut r.events))
        .await
        .unwrap_or_else(|_| panic!("no action_finished {what}"));
    assert_eq!(e.event, EpisodeEvent::EVENT_ACTION_FINISHED);
}

fn at_s(s: f64) -> Time {
    Time::from_nanos((s * 1e9) as i64)
}

/// The arm is busy for the trajectory's duration in bus time: under `use_sim_time` with a
/// simulator slower than real time (here a clock that stands still), `action_finished`
/// waits for the simulated time to pass, not for the wall clock (it came mid-motion, and
/// the planner's next trajectory replaced the running one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arm_is_busy_for_the_trajectory_s_duration_in_bus_time() {
    let (mut r, clock, duration) = moving_on_a_sim_clock("slow sim").await;
    // The wall clock passes the duration; the simulated clock stands still.
    tokio::time::sleep(Duration::from_secs_f64(duration + 0.5)).await;
    assert!(
        r.events.try_recv().is_none(),
        "action_finished before the simulated time passed"
    );
    clock.set(at_s(100.0 + duration + 0.01));
    finishes(&mut r, "once the simulated time passed").await;
    r.finish().await;
}

/// A clock that goes back mid-motion (`ros2 bag play --loop` starting over, a simulator
/// reset) keeps the motion's remaining time: before session 43 the executor waited for the
/// old end time to come round again and refused every action as busy meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_that_goes_back_mid_motion_keeps_the_motion_s_remaining_time() {
    let (mut r, clock, duration) = moving_on_a_sim_clock("looped bag").await;
    // A second into the motion the clock jumps back 60 s.
    clock.set(at_s(101.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    clock.set(at_s(41.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(r.events.try_recv().is_none(), "finished at the jump");
    // The rest of the motion passes on the new time line.
    clock.set(at_s(41.0 + duration - 1.0 + 0.05));
    finishes(
        &mut r,
        "once the motion's remaining time passed after the jump",
    )
    .await;
    r.finish().await;
}

/// The sim stops on an empty trajectory and on the executor's one-point hold, and refuses
/// a trajectory whose times run backwards (a negative time ended the simulator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_trajectory_stops_the_sim_arm_and_the_episode_is_still_scored() {
    use dreamplan::robot::franka::{default_arm, READY};
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let mut events = bus
        .subscribe::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let trajectories = bus
        .publisher::<JointTrajectory>("/arm/joint_trajectory", Qos::keep_last(1))
        .unwrap();
    let sim = SimNode::new(SimConfig {
        task: TaskName::Toy,
        width: 32,
        height: 32,
        realtime: true,
        ..Default::default()
    })
    .unwrap();
    let task = start(sim, &bus, &stop);
    next_event(&mut events, EpisodeEvent::EVENT_RESET).await;
    let names = default_arm().joint_names();
    // Nothing is running: a stop is harmless.
    trajectories
        .publish(JointTrajectory {
            joint_names: names.clone(),
            ..Default::default()
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A 60 s hold at the ready pose, stopped after 0.3 s: the episode is scored long before 60 s.
    let point = |t: i32| JointTrajectoryPoint {
        positions: READY.to_vec(),
        time_from_start: dreamplan::msg::builtin_interfaces::Duration { sec: t, nanosec: 0 },
        ..Default::default()
    };
    // Times that run backwards are refused (the sim panicked on a negative one).
    trajectories
        .publish(JointTrajectory {
            joint_names: names.clone(),
            points: vec![point(-1)],
            ..Default::default()
        })
        .unwrap();
    trajectories
        .publish(JointTrajectory {
            joint_names: names.clone(),
            points: vec![point(5), point(2)],
            ..Default::default()
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    trajectories
        .publish(JointTrajectory {
            joint_names: names.clone(),
            points: vec![point(0), point(60)],
            ..Default::default()
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The executor's e-stop: one point, at the arm's state.
    trajectories
        .publish(JointTrajectory {
            joint_names: names,
            points: vec![JointTrajectoryPoint {
                time_from_start: dreamplan::msg::builtin_interfaces::Duration::from_secs_f64(0.1),
                ..point(0)
            }],
            ..Default::default()
        })
        .unwrap();
    let scored = tokio::time::timeout(
        Duration::from_secs(10),
        next_event(&mut events, EpisodeEvent::EVENT_SCORED),
    )
    .await
    .expect("scored soon after the stop");
    assert_eq!(scored.score, 0.0, "the arm never touched the toy");
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// The loop closes with a planner node: reset → the planner segments both images, samples
/// keypoints and publishes them with its chosen action → the executor plans → the sim
/// plays it and scores the episode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_node_closes_the_loop() {
    use dreamplan::msg::dreamplan::{ActionCandidates, KeypointSets};
    use dreamplan::nodes::planner::{Backend, PlannerConfig, PlannerNode};
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let mut events = bus
        .subscribe::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let mut sets = bus
        .subscribe::<KeypointSets>("/planner/keypoints", Qos::keep_last(10))
        .unwrap();
    let mut cands = bus
        .subscribe::<ActionCandidates>("/planner/candidates", Qos::keep_last(10))
        .unwrap();
    let mut actions = bus
        .subscribe::<KeypointAction>("/planner/action", Qos::keep_last(10))
        .unwrap();
    let planner = PlannerNode::new(PlannerConfig {
        backend: Backend::Correspondence,
        keypoints: 6,
        ..Default::default()
    })
    .unwrap();
    let exec = ExecutorNode::new(ExecutorConfig {
        width: SIZE,
        height: SIZE,
        ..Default::default()
    })
    .unwrap();
    let sim = SimNode::new(SimConfig {
        task: TaskName::Toy,
        seed: 3,
        episodes: 2,
        start_delay_s: 2.0,
        width: SIZE,
        height: SIZE,
        realtime: false,
        ..Default::default()
    })
    .unwrap();
    // The sim starts first, as a launch file may order it: its start delay lets the
    // planner and executor, started 1.5 s later, subscribe before the first reset.
    let sim_task = start(sim, &bus, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tasks = [start(planner, &bus, &stop), start(exec, &bus, &stop)];
    let wait = Duration::from_secs(120);
    let s = tokio::time::timeout(wait, sets.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s.current.keypoints.len(), s.goal.keypoints.len()), (6, 6));
    assert_eq!(s.current.width, SIZE);
    let c = tokio::time::timeout(wait, cands.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        c.chosen, 0,
        "the baseline's one candidate is the chosen one"
    );
    let a = tokio::time::timeout(wait, actions.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a.raw_text,
        format!("pick {} place {}", a.source_id, a.target_id)
    );
    let k = s
        .current
        .keypoints
        .iter()
        .find(|k| k.id == a.source_id)
        .unwrap();
    assert_eq!((a.source_u, a.source_v), (k.u, k.v));
    let started = next_event(&mut events, EpisodeEvent::EVENT_ACTION_STARTED).await;
    assert_eq!(started.detail, a.raw_text);
    let scored = next_event(&mut events, EpisodeEvent::EVENT_SCORED).await;
    // The graph decides and scores as `dreamplan eval` does for the same planner, task
    // and seed (one pipeline, not two that could drift apart).
    let offline = dreamplan::planner::eval::run_episode(
        Task::Toy,
        3,
        &mut dreamplan::planner::eval::RulePlanner(dreamplan::planner::baselines::Rule::Assignment),
        &dreamplan::planner::eval::EvalConfig {
            size: SIZE,
            keypoints: 6,
        },
    );
    let chosen = offline.action.expect("the rule chooses on toy seed 3");
    assert_eq!(
        [a.source_id, a.target_id],
        chosen,
        "the node chose otherwise than eval"
    );
    assert_eq!(
        scored.score, offline.score,
        "node graph {scored:?}, eval {offline:?}"
    );
    // The sim runs faster than real time: the next episode's action must not be refused
    // as "busy" (the episode's end frees the executor), and it is scored too.
    let second = next_event(&mut events, EpisodeEvent::EVENT_SCORED).await;
    assert_eq!(second.episode, 1, "{second:?}");
    sim_task.await.unwrap().unwrap();
    stop.cancel();
    bus.shutdown();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// A depth image of a plane facing the camera through the work area's centre.
fn plane_depth() -> Image {
    let cam = scene::default_camera(SIZE, SIZE);
    let centre = nalgebra::Point3::new(0.5, 0.0, 0.0);
    let (_, _, d) = cam.project(&centre).unwrap();
    let mut data = Vec::new();
    for _ in 0..SIZE * SIZE {
        data.extend_from_slice(&(d as f32).to_le_bytes());
    }
    Image {
        width: SIZE,
        height: SIZE,
        encoding: "32FC1".into(),
        step: SIZE * 4,
        data,
        ..Default::default()
    }
}

/// The next marker array the executor shows (within 10 s).
async fn recv_markers(
    markers: &mut dreamplan::bus::Subscriber<dreamplan::msg::visualization_msgs::MarkerArray>,
) -> std::sync::Arc<dreamplan::msg::visualization_msgs::MarkerArray> {
    tokio::time::timeout(Duration::from_secs(10), markers.recv())
        .await
        .expect("markers in time")
        .unwrap()
}

/// The marker `id` that `shown` adds.
fn added_marker(
    shown: &dreamplan::msg::visualization_msgs::MarkerArray,
    id: i32,
) -> dreamplan::msg::visualization_msgs::Marker {
    use dreamplan::msg::visualization_msgs::Marker;
    shown
        .markers
        .iter()
        .find(|m| m.id == id && m.action == Marker::ADD)
        .unwrap_or_else(|| panic!("no marker {id} in {shown:?}"))
        .clone()
}

/// The depth the built-in camera sees of the table (z = 0) alone; NaN above the horizon.
fn table_depth() -> Image {
    let cam = scene::default_camera(SIZE, SIZE);
    let mut data = Vec::new();
    for v in 0..SIZE {
        for u in 0..SIZE {
            let (o, r) = cam.ray(u as f64 + 0.5, v as f64 + 0.5);
            let d = if r.z < -1e-6 {
                cam.project(&(o + r * (-o.z / r.z)))
                    .map_or(f64::NAN, |p| p.2)
            } else {
                f64::NAN
            };
            data.extend_from_slice(&(d as f32).to_le_bytes());
        }
    }
    Image {
        width: SIZE,
        height: SIZE,
        encoding: "32FC1".into(),
        step: SIZE * 4,
        data,
        ..Default::default()
    }
}

/// A short drag across the centre of the image, tagged `text`.
fn centre_action(text: &str) -> KeypointAction {
    KeypointAction {
        source_u: SIZE as f32 / 2.0,
        source_v: SIZE as f32 / 2.0,
        target_u: SIZE as f32 / 2.0 + 10.0,
        target_v: SIZE as f32 / 2.0,
        raw_text: text.into(),
        ..Default::default()
    }
}

/// What happens to an action sent 200 ms after the episode's `scored` event while the
/// previous trajectory still has seconds to run: its `action_started` or `failed` event.
async fn second_action_after_the_episode_ends(episode_end_frees_arm: bool) -> EpisodeEvent {
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let mut events = bus
        .subscribe::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let episode = bus
        .publisher::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let depth = bus
        .publisher::<Image>("/camera/depth/image_raw", Qos::keep_last(1))
        .unwrap();
    let actions = bus
        .publisher::<KeypointAction>("/planner/action", Qos::keep_last(1))
        .unwrap();
    // The controller the trajectories go to (an action nobody would receive is refused).
    let _controller = bus
        .subscribe::<JointTrajectory>("/arm/joint_trajectory", Qos::keep_last(10))
        .unwrap();
    let task = start(
        ExecutorNode::new(ExecutorConfig {
            width: SIZE,
            height: SIZE,
            episode_end_frees_arm,
            // No arm here publishes joint states: plan from the ready pose.
            joint_state_max_age_s: 0.0,
            ..Default::default()
        })
        .unwrap(),
        &bus,
        &stop,
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    depth.publish(plane_depth()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let action = centre_action("first");
    actions.publish(action.clone()).unwrap();
    let started = next_event(&mut events, EpisodeEvent::EVENT_ACTION_STARTED).await;
    assert_eq!(started.detail, "first");
    // The sim reports the episode scored long before the trajectory's wall-clock duration.
    episode
        .publish(EpisodeEvent {
            event: EpisodeEvent::EVENT_SCORED.into(),
            ..Default::default()
        })
        .unwrap();
    // Well inside the trajectory's several seconds.
    tokio::time::sleep(Duration::from_millis(200)).await;
    actions
        .publish(KeypointAction {
            raw_text: "second".into(),
            ..action
        })
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let answer = loop {
        let e = tokio::time::timeout_at(deadline, next_event_any(&mut events))
            .await
            .expect("the second action is answered within 2 s");
        if e.event == EpisodeEvent::EVENT_FAILED || e.event == EpisodeEvent::EVENT_ACTION_STARTED {
            break e;
        }
    };
    stop.cancel();
    task.await.unwrap().unwrap();
    answer
}

/// The end of an episode frees the executor at once: an action right after the sim's
/// `scored` event is executed, not refused as "busy" with the previous trajectory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_an_episode_frees_the_executor() {
    let e = second_action_after_the_episode_ends(true).await;
    assert_eq!(e.event, EpisodeEvent::EVENT_ACTION_STARTED, "{e:?}");
    assert_eq!(e.detail, "second");
}

/// On a real arm nothing stops the arm at an episode's end: with `episode_end_frees_arm:
/// false` the arm stays busy until its trajectory has run, and an action meanwhile is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_real_arm_the_episode_s_end_does_not_free_a_moving_arm() {
    let e = second_action_after_the_episode_ends(false).await;
    assert_eq!(e.event, EpisodeEvent::EVENT_FAILED, "{e:?}");
    assert!(e.detail.contains("busy"), "{}", e.detail);
}

/// The next event, which must be a `failed` whose detail begins with `begins`.
async fn next_failed(
    events: &mut dreamplan::bus::Subscriber<EpisodeEvent>,
    begins: &str,
) -> EpisodeEvent {
    let e = next_event_any(events).await;
    assert_eq!(e.event, EpisodeEvent::EVENT_FAILED, "{e:?}");
    assert!(e.detail.starts_with(begins), "{}", e.detail);
    e
}

async fn next_event_any(events: &mut dreamplan::bus::Subscriber<EpisodeEvent>) -> EpisodeEvent {
    let e = tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .expect("event in time")
        .expect("bus open");
    (*e).clone()
}

/// A planner that finds no valid answer (here: the tiny random model) reports it, and the
/// sim ends the episode without motion and scores it: nothing waits for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_action_ends_the_episode() {
    use dreamplan::nodes::planner::{Backend, PlannerConfig, PlannerNode};
    use dreamplan::planner::vlm_planner::VlmPlannerConfig;
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let mut events = bus
        .subscribe::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let planner = PlannerNode::new(PlannerConfig {
        backend: Backend::Vlm,
        model: Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm/tiny"),
        ),
        keypoints: 4,
        sampling: VlmPlannerConfig {
            k: 2,
            attempts: 1,
            max_new_tokens: 4,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let sim = SimNode::new(SimConfig {
        task: TaskName::Rope,
        seed: 1,
        width: 64,
        height: 64,
        realtime: false,
        ..Default::default()
    })
    .unwrap();
    let planner_task = start(planner, &bus, &stop);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sim_task = start(sim, &bus, &stop);
    let failed = next_event(&mut events, EpisodeEvent::EVENT_FAILED).await;
    assert!(failed.detail.starts_with("planner: "), "{failed:?}");
    let scored = next_event(&mut events, EpisodeEvent::EVENT_SCORED).await;
    assert_eq!(scored.score, 0.0, "doing nothing scores 0: {scored:?}");
    sim_task.await.unwrap().unwrap();
    stop.cancel();
    planner_task.await.unwrap().unwrap();
}

/// With `trajectory_action`, trajectories go to a FollowJointTrajectory server (here the
/// in-process one a test serves) instead of the topic: the arm is busy until the server
/// answers; success is `action_finished`, a controller's failure a `failed` event with its
/// reason; the e-stop cancels the running goal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trajectories_as_follow_joint_trajectory_goals_end_when_the_controller_says() {
    let bus = LocalBus::default();
    let mut goals = bus.serve_trajectories(ACTION).unwrap();
    let mut r = ExecRig::start(
        &bus,
        &format!("trajectory_action: {ACTION}\njoint_state_max_age_s: 0\n"),
    )
    .await;
    // 1. A goal that succeeds: the arm stays busy until the server answers.
    r.actions.publish(centre_action("first")).unwrap();
    let g = next_goal(&mut goals).await;
    assert_eq!(g.trajectory.joint_names.len(), 8);
    assert_eq!(g.trajectory.joint_names[7], "panda_finger_joint1");
    assert!(g.trajectory.points.len() > 4);
    assert_eq!(
        next_event_any(&mut r.events).await.event,
        EpisodeEvent::EVENT_ACTION_STARTED
    );
    refused(&mut r, "while busy", "busy").await;
    g.answer.send(ActionOutcome::Succeeded).unwrap();
    assert_eq!(
        next_event_any(&mut r.events).await.event,
        EpisodeEvent::EVENT_ACTION_FINISHED
    );
    // 2. The controller aborts the next one: a failed event with its reason.
    r.actions.publish(centre_action("second")).unwrap();
    let g = next_goal(&mut goals).await;
    assert_eq!(
        next_event_any(&mut r.events).await.event,
        EpisodeEvent::EVENT_ACTION_STARTED
    );
    g.answer
        .send(ActionOutcome::Failed(
            "PATH_TOLERANCE_VIOLATED panda_joint4".into(),
        ))
        .unwrap();
    let e = next_event_any(&mut r.events).await;
    assert_eq!(e.event, EpisodeEvent::EVENT_FAILED);
    assert_eq!(e.detail, "controller: PATH_TOLERANCE_VIOLATED panda_joint4");
    // 3. The e-stop cancels a running goal; its late answer changes nothing.
    r.actions.publish(centre_action("third")).unwrap();
    let g = next_goal(&mut goals).await;
    assert_eq!(
        next_event_any(&mut r.events).await.event,
        EpisodeEvent::EVENT_ACTION_STARTED
    );
    r.estop.publish(Bool { data: true }).unwrap();
    let e = next_event_any(&mut r.events).await;
    assert_eq!((e.event.as_str(), e.detail.as_str()), ("failed", "e-stop"));
    let _ = g.answer.send(ActionOutcome::Succeeded);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(r.events.try_recv().is_none(), "an outcome after the e-stop");
    // Nothing went out on the topic: the goal's cancel holds the arm.
    let mut on_topic = Vec::new();
    while let Some(t) = r.topic.try_recv() {
        on_topic.push(t.points.len());
    }
    assert_eq!(on_topic, Vec::<usize>::new());
    r.finish().await;
}

/// With `gripper_action` (and no finger column), each action's gripper commands go to a
/// GripperCommand server at the plan's times in *bus* time: open at the motion's start,
/// closed at the grasp, open at the release, with the configured positions and effort.
/// The action's end waits for the gripper's last answer (at most `result_timeout_s` of
/// bus time); a command the gripper does not complete ends the action `failed` with its
/// reason, instead of `action_finished`. The e-stop sends nothing more, leaves a close
/// under way to finish (cancelling it would loosen the grasp) and cancels an open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gripper_action_opens_closes_and_opens_at_the_plan_s_times_in_bus_time() {
    use dreamplan::clock::Clock;
    let t0 = 1_000_000_000_000i64;
    let clock = Clock::sim(Time::from_nanos(t0));
    let at = |s: f64| Time::from_nanos(t0 + (s * 1e9) as i64);
    let bus = LocalBus::new(clock.clone());
    let mut grips = bus.serve_grippers(GRIPPER).unwrap();
    let yaml = format!(
        "finger_joint: \"\"\ngripper_action: {GRIPPER}\njoint_state_max_age_s: 0\n\
         result_timeout_s: 2.0\n\
         gripper: {{open_position: 0.8, closed_position: 0.1, max_effort: 25.0}}\n"
    );
    let mut r = ExecRig::start(&bus, &yaml).await;
    // The plan the executor makes of this action from the ready pose: when it grasps and
    // releases, and when it ends.
    let plan = centre_plan(&yaml);
    let (grasp, release) = (plan.grasp_time_s, plan.release_time_s);
    let end = plan
        .trajectory
        .points
        .last()
        .unwrap()
        .time_from_start
        .as_secs_f64();
    assert!(
        0.5 < grasp && grasp + 0.5 < release && release < end,
        "{grasp} {release} {end}"
    );
    let next_grip =
        |grips: &mut tokio::sync::mpsc::UnboundedReceiver<GripperGoal>| grips.try_recv().ok();
    let settle = || tokio::time::sleep(Duration::from_millis(300));
    // Starts an action at bus time `t` (s): its trajectory, and the open at its start.
    async fn start_at(
        r: &mut ExecRig,
        grips: &mut tokio::sync::mpsc::UnboundedReceiver<GripperGoal>,
        clock: &dreamplan::clock::Clock,
        t: Time,
    ) -> GripperGoal {
        clock.set(t);
        started(r, "go").await;
        let traj = r.topic.recv().await.unwrap();
        assert_eq!(traj.joint_names.len(), 7, "{:?}", traj.joint_names);
        next_grip_goal(grips, "an open command at the start").await
    }
    // 1. Open at the start, nothing more until the grasp (bus time), the close just
    // after it, nothing until the release, the open just after it.
    let open = start_at(&mut r, &mut grips, &clock, at(0.0)).await;
    assert_eq!(
        (open.command.position, open.command.max_effort),
        (0.8, 25.0)
    );
    open.answer.send(ActionOutcome::Succeeded).unwrap();
    clock.set(at(grasp - 0.05));
    settle().await;
    assert!(next_grip(&mut grips).is_none(), "closed before the grasp");
    clock.set(at(grasp + 0.01));
    let close = next_grip_goal(&mut grips, "a close at the grasp").await;
    assert_eq!(close.command.position, 0.1);
    close.answer.send(ActionOutcome::Succeeded).unwrap();
    clock.set(at(release - 0.05));
    settle().await;
    assert!(next_grip(&mut grips).is_none(), "opened before the release");
    clock.set(at(release + 0.01));
    let reopen = next_grip_goal(&mut grips, "an open at the release").await;
    assert_eq!(reopen.command.position, 0.8);
    // 2. The arm ends before the gripper answers: the action waits for it (an action
    // sent meanwhile is busy), and the gripper's failure ends it `failed`.
    clock.set(at(end + 0.01));
    settle().await;
    assert!(
        r.events.try_recv().is_none(),
        "ended before the gripper answered"
    );
    refused(&mut r, "while the gripper opens", "busy").await;
    reopen
        .answer
        .send(ActionOutcome::Failed("Aborted: the gripper stalled".into()))
        .unwrap();
    let e = next_event_any(&mut r.events).await;
    assert_eq!(
        (e.event.as_str(), e.detail.as_str()),
        ("failed", "gripper (open): Aborted: the gripper stalled")
    );
    // 3. A gripper that does everything: `action_finished`.
    let t1 = end + 1.0;
    let open = start_at(&mut r, &mut grips, &clock, at(t1)).await;
    open.answer.send(ActionOutcome::Succeeded).unwrap();
    for t in [grasp + 0.01, release + 0.01] {
        clock.set(at(t1 + t));
        let g = next_grip_goal(&mut grips, "a command").await;
        g.answer.send(ActionOutcome::Succeeded).unwrap();
    }
    settle().await;
    clock.set(at(t1 + end + 0.01));
    assert_eq!(
        next_event_any(&mut r.events).await.event,
        EpisodeEvent::EVENT_ACTION_FINISHED
    );
    // 4. A gripper that never answers its last command: given up `result_timeout_s`
    // after the motion's end, its goal cancelled.
    let t2 = t1 + end + 1.0;
    let open = start_at(&mut r, &mut grips, &clock, at(t2)).await;
    open.answer.send(ActionOutcome::Succeeded).unwrap();
    clock.set(at(t2 + grasp + 0.01));
    let close = next_grip_goal(&mut grips, "a close").await;
    close.answer.send(ActionOutcome::Succeeded).unwrap();
    clock.set(at(t2 + release + 0.01));
    let silent = next_grip_goal(&mut grips, "an open at the release").await;
    clock.set(at(t2 + end + 1.5));
    settle().await;
    assert!(r.events.try_recv().is_none(), "given up before the timeout");
    clock.set(at(t2 + end + 2.1));
    next_failed(&mut r.events, "gripper (open): no result 2.0 s").await;
    settle().await;
    assert!(
        silent.answer.is_closed(),
        "the silent open was not cancelled"
    );
    // 5. The e-stop while the gripper closes: the close is left to finish, and the open
    // at the release never comes.
    let t3 = t2 + end + 5.0;
    let open = start_at(&mut r, &mut grips, &clock, at(t3)).await;
    open.answer.send(ActionOutcome::Succeeded).unwrap();
    clock.set(at(t3 + grasp + 0.01));
    let close = next_grip_goal(&mut grips, "a close at the grasp").await;
    r.estop.publish(Bool { data: true }).unwrap();
    let e = next_event_any(&mut r.events).await;
    assert_eq!((e.event.as_str(), e.detail.as_str()), ("failed", "e-stop"));
    settle().await;
    assert!(!close.answer.is_closed(), "the e-stop cancelled a close");
    clock.set(at(t3 + release + 1.0));
    settle().await;
    assert!(
        next_grip(&mut grips).is_none(),
        "a command after the e-stop"
    );
    close.answer.send(ActionOutcome::Succeeded).unwrap();
    // 6. The e-stop while the gripper opens: the open is cancelled.
    r.estop.publish(Bool { data: false }).unwrap();
    settle().await;
    let t4 = t3 + end + 5.0;
    let open = start_at(&mut r, &mut grips, &clock, at(t4)).await;
    r.estop.publish(Bool { data: true }).unwrap();
    let e = next_event_any(&mut r.events).await;
    assert_eq!((e.event.as_str(), e.detail.as_str()), ("failed", "e-stop"));
    settle().await;
    assert!(
        open.answer.is_closed(),
        "the e-stop did not cancel the open"
    );
    // 7. The clock goes back by 10 s during the approach (a simulator reset, a bag played
    // again): the close and the release keep their times from the motion's start, both.
    // Before session 49's review only the next command's deadline moved, and the release
    // came `grasp` seconds late.
    r.estop.publish(Bool { data: false }).unwrap();
    settle().await;
    let t5 = t4 + end + 30.0;
    let open = start_at(&mut r, &mut grips, &clock, at(t5)).await;
    open.answer.send(ActionOutcome::Succeeded).unwrap();
    // Each clock value is held for a second, so that the executor reads it (it reads the
    // clock at least every 0.1 s of wall time while a command is due).
    let hold = || tokio::time::sleep(Duration::from_millis(1000));
    clock.set(at(t5 + 0.2));
    hold().await;
    let back = t5 - 10.0;
    clock.set(at(back + 0.2));
    hold().await;
    clock.set(at(back + grasp + 0.01));
    let close = next_grip_goal(&mut grips, "the close, on the new time").await;
    close.answer.send(ActionOutcome::Succeeded).unwrap();
    clock.set(at(back + release + 0.01));
    let reopen = next_grip_goal(&mut grips, "the release, on the new time").await;
    assert_eq!(reopen.command.position, 0.8);
    reopen.answer.send(ActionOutcome::Succeeded).unwrap();
    r.finish().await;
}

/// With `wait_for_gripper` (and a FollowJointTrajectory server), the motion is three goals
/// and each gripper command is waited for before the arm moves on: open, then the piece
/// to the grasp, close, the piece to the release, open, the retreat; nothing is sent
/// while the step before is unanswered. The pieces are the plan cut at its grasp and
/// release. A close the gripper fails ends the action `failed` where the arm stands, and
/// no further goal is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_for_gripper_the_arm_moves_on_only_once_the_gripper_has_answered() {
    let bus = LocalBus::default();
    let mut goals = bus.serve_trajectories(ACTION).unwrap();
    let mut grips = bus.serve_grippers(GRIPPER).unwrap();
    let yaml = format!(
        "finger_joint: \"\"\ngripper_action: {GRIPPER}\ntrajectory_action: {ACTION}\n\
         wait_for_gripper: true\njoint_state_max_age_s: 0\n\
         gripper: {{open_position: 0.04, closed_position: 0.0}}\n"
    );
    let mut r = ExecRig::start(&bus, &yaml).await;
    let plan = centre_plan(&yaml);
    let end = plan
        .trajectory
        .points
        .last()
        .unwrap()
        .time_from_start
        .as_secs_f64();
    let (grasp, release) = (plan.grasp_time_s, plan.release_time_s);
    let settle = || tokio::time::sleep(Duration::from_millis(300));
    let last_t = |g: &dreamplan::bus::TrajectoryGoal| {
        g.trajectory
            .points
            .last()
            .unwrap()
            .time_from_start
            .as_secs_f64()
    };
    started(&mut r, "first").await;
    let mut points = Vec::new();
    for (k, (position, span)) in [(0.04, grasp), (0.0, release - grasp), (0.04, end - release)]
        .into_iter()
        .enumerate()
    {
        let grip = tokio::time::timeout(Duration::from_secs(60), grips.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(grip.command.position, position, "step {k}");
        settle().await;
        assert!(
            goals.try_recv().is_err(),
            "step {k}: the arm moved before the gripper answered"
        );
        grip.answer.send(ActionOutcome::Succeeded).unwrap();
        let g = next_goal(&mut goals).await;
        assert_eq!(g.trajectory.joint_names.len(), 7);
        assert_eq!(g.trajectory.points[0].time_from_start.as_secs_f64(), 0.0);
        assert!(
            (last_t(&g) - span).abs() < 1e-6,
            "piece {k}: {} s, not {span} s",
            last_t(&g)
        );
        // A piece after the first starts where the one before ended: that point once.
        let skip = usize::from(k > 0);
        if k > 0 {
            assert_eq!(
                points.last(),
                Some(&g.trajectory.points[0].positions),
                "piece {k} starts elsewhere"
            );
        }
        points.extend(
            g.trajectory
                .points
                .iter()
                .skip(skip)
                .map(|p| p.positions.clone()),
        );
        settle().await;
        assert!(
            grips.try_recv().is_err(),
            "step {k}: the gripper moved before the arm arrived"
        );
        g.answer.send(ActionOutcome::Succeeded).unwrap();
    }
    assert_eq!(
        next_event_any(&mut r.events).await.event,
        EpisodeEvent::EVENT_ACTION_FINISHED
    );
    // The pieces, each cut point once, are the plan's points.
    let planned: Vec<Vec<f64>> = plan
        .trajectory
        .points
        .iter()
        .map(|p| p.positions.clone())
        .collect();
    assert_eq!(points, planned);
    // The next action's close fails: `failed`, the arm left at the grasp.
    started(&mut r, "second").await;
    next_grip_goal(&mut grips, "a command")
        .await
        .answer
        .send(ActionOutcome::Succeeded)
        .unwrap();
    next_goal(&mut goals)
        .await
        .answer
        .send(ActionOutcome::Succeeded)
        .unwrap();
    let close = next_grip_goal(&mut grips, "a close").await;
    close
        .answer
        .send(ActionOutcome::Failed(
            "Aborted: the gripper neither reached the position nor stopped on an object".into(),
        ))
        .unwrap();
    next_failed(&mut r.events, "gripper (close): Aborted").await;
    settle().await;
    assert!(
        goals.try_recv().is_err(),
        "the arm moved on after a failed close"
    );
    // The e-stop on the way to the grasp: the goal is cancelled and the sequence stops (no
    // close comes once the cancelled goal has answered).
    started(&mut r, "third").await;
    next_grip_goal(&mut grips, "a command")
        .await
        .answer
        .send(ActionOutcome::Succeeded)
        .unwrap();
    let g = next_goal(&mut goals).await;
    r.estop.publish(Bool { data: true }).unwrap();
    let e = next_event_any(&mut r.events).await;
    assert_eq!((e.event.as_str(), e.detail.as_str()), ("failed", "e-stop"));
    settle().await;
    // (In process, a goal given up and a goal cancelled look alike here; that the cancel
    // reaches the controller is checked over DDS, tests/dds_interop.rs.)
    assert!(g.answer.is_closed(), "the goal was not given up");
    assert!(
        grips.try_recv().is_err(),
        "a gripper command after the e-stop"
    );
    r.finish().await;
}

/// The plan an [`ExecRig`] executor with the settings `yaml` makes of the centre action
/// from the ready pose, over the rig's flat depth.
fn centre_plan(yaml: &str) -> dreamplan::robot::motion::PickPlacePlan {
    let config: ExecutorConfig =
        serde_yaml::from_str(&format!("width: {SIZE}\nheight: {SIZE}\n{yaml}")).unwrap();
    let depth = plane_depth();
    let depth = dreamplan::robot::safety::DepthImage {
        width: SIZE,
        height: SIZE,
        data: depth
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    };
    dreamplan::nodes::executor::plan_action(
        &config,
        &dreamplan::sim::episode::default_arm(),
        &config.camera(None),
        &centre_action("first"),
        Some(&depth),
        None,
        &dreamplan::robot::franka::READY,
    )
    .unwrap()
}

/// The next command the executor sends to the in-process gripper server (`what` it should
/// be, for the failure message).
async fn next_grip_goal(
    grips: &mut tokio::sync::mpsc::UnboundedReceiver<GripperGoal>,
    what: &str,
) -> GripperGoal {
    tokio::time::timeout(Duration::from_secs(10), grips.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what}"))
        .expect("the executor is running")
}

/// The GripperCommand server the gripper test serves in process.
const GRIPPER: &str = "/gripper_controller/gripper_cmd";

/// The FollowJointTrajectory server the action tests serve in process.
const ACTION: &str = "/arm_controller/follow_joint_trajectory";

/// The next goal the executor sends to the in-process action server.
async fn next_goal(
    goals: &mut tokio::sync::mpsc::UnboundedReceiver<dreamplan::bus::TrajectoryGoal>,
) -> dreamplan::bus::TrajectoryGoal {
    tokio::time::timeout(Duration::from_secs(60), goals.recv())
        .await
        .expect("a goal in time")
        .expect("the executor is running")
}

/// A controller that never answers (a restarted controller manager, a lost result) does
/// not leave the arm busy for ever: once the trajectory's duration plus `result_timeout_s`
/// has passed in *bus* time, the goal is cancelled and a `failed` event names the timeout;
/// the next action is taken. A bus clock that stands still (a paused or slow simulator)
/// is waited for however long the wall clock runs. Before session 47 the executor waited
/// for the result for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_never_answers_is_given_up_after_the_result_timeout_in_bus_time() {
    use dreamplan::clock::Clock;
    let t0 = 1_000_000_000_000i64;
    let clock = Clock::sim(Time::from_nanos(t0));
    let bus = LocalBus::new(clock.clone());
    let mut goals = bus.serve_trajectories(ACTION).unwrap();
    let mut r = ExecRig::start(
        &bus,
        &format!("trajectory_action: {ACTION}\njoint_state_max_age_s: 0\nresult_timeout_s: 2.0\n"),
    )
    .await;
    r.actions.publish(centre_action("first")).unwrap();
    let g = next_goal(&mut goals).await;
    assert_eq!(
        next_event_any(&mut r.events).await.event,
        EpisodeEvent::EVENT_ACTION_STARTED
    );
    let duration = g
        .trajectory
        .points
        .last()
        .unwrap()
        .time_from_start
        .as_secs_f64();
    assert!(duration > 1.0, "a pick and place takes seconds: {duration}");
    let at = |s: f64| Time::from_nanos(t0 + (s * 1e9) as i64);
    // The bus clock stands still: a second of wall time gives nothing up.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        r.events.try_recv().is_none(),
        "gave up while bus time stood still"
    );
    assert!(
        !g.answer.is_closed(),
        "cancelled while bus time stood still"
    );
    // Bus time just short of the trajectory's end plus the timeout: still waiting.
    clock.set(at(duration + 1.6));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(r.events.try_recv().is_none(), "gave up before the timeout");
    // Past it: the goal is cancelled and the failure says why.
    clock.set(at(duration + 2.1));
    let e = next_failed(&mut r.events, "controller: no result 2.0 s").await;
    assert!(e.detail.contains("result_timeout_s"), "{}", e.detail);
    let cancelled = async {
        while !g.answer.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), cancelled)
        .await
        .expect("the goal cancelled at the server");
    // The arm is free: the next action is a goal, not refused as busy.
    r.actions.publish(centre_action("second")).unwrap();
    let g2 = next_goal(&mut goals).await;
    assert_eq!(
        next_event_any(&mut r.events).await.event,
        EpisodeEvent::EVENT_ACTION_STARTED
    );
    // The first goal's late "success" counts for nothing; the second's does.
    let _ = g.answer.send(ActionOutcome::Succeeded);
    g2.answer.send(ActionOutcome::Succeeded).unwrap();
    assert_eq!(
        next_event_any(&mut r.events).await.event,
        EpisodeEvent::EVENT_ACTION_FINISHED
    );
    r.finish().await;
}

/// An executor told to use an action its bus cannot reach stops at once with a message
/// that names the action and the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trajectory_action_without_a_server_is_a_clear_error() {
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let config: ExecutorConfig =
        serde_yaml::from_str(&format!("trajectory_action: {ACTION}\n")).unwrap();
    let err = start(ExecutorNode::new(config).unwrap(), &bus, &stop)
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/arm_controller/follow_joint_trajectory") && err.contains("topic"),
        "{err}"
    );
}

/// The sim's live parameters (`SimNode::LIVE`), set as the parameter services set them:
/// task, seed and episode count change from the next episode; a parameter read at start
/// and a value the sim's checks refuse are refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_seed_and_episodes_set_while_running_apply_from_the_next_episode() {
    use dreamplan::nodes::params::LiveParams;
    use serde_yaml::Value;
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let mut events = bus
        .subscribe::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let failed = bus
        .publisher::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let config = SimConfig {
        task: TaskName::Rope,
        seed: 1,
        episodes: 0,
        width: 64,
        height: 64,
        realtime: false,
        ..Default::default()
    };
    let params = LiveParams::for_node::<SimNode>("sim", &config, &serde_yaml::Value::Null);
    assert_eq!(params.get("camera_rate_hz"), Some(Value::from(10.0)));
    let ctx = NodeContext {
        name: "sim".into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params: params.clone(),
    };
    let sim_task = tokio::spawn(SimNode::new(config).unwrap().run(ctx));
    let reset = next_event(&mut events, EpisodeEvent::EVENT_RESET).await;
    assert_eq!((reset.episode, reset.task.as_str()), (0, "rope"));
    assert_eq!(reset.detail, "seed 1");

    let e = params.set("width", Value::from(128)).unwrap_err();
    assert!(e.contains("read when node `sim` starts"), "{e}");
    let e = params.set("settle_s", Value::from(-1.0)).unwrap_err();
    assert!(e.contains("settle_s ≥ 0"), "{e}");
    // Infinite values (`.inf` in YAML) would never score an episode or grasp from anywhere.
    for (key, bad) in [
        ("settle_s", f64::INFINITY),
        ("settle_s", f64::NAN),
        ("grasp_radius", f64::INFINITY),
        ("grasp_radius", 0.0),
    ] {
        let e = params.set(key, Value::from(bad)).unwrap_err();
        assert!(e.contains(key), "{key} = {bad}: {e}");
    }
    params.set("task", Value::from("cloth")).unwrap();
    params.set("seed", Value::from(50)).unwrap();
    params.set("episodes", Value::from(2)).unwrap();

    let scored = end_episode(&failed, &mut events).await;
    assert_eq!((scored.episode, scored.task.as_str()), (0, "rope"));
    let reset = next_event(&mut events, EpisodeEvent::EVENT_RESET).await;
    assert_eq!((reset.episode, reset.task.as_str()), (1, "cloth"));
    assert_eq!(reset.detail, "seed 51", "episode k uses seed + k");
    let scored = end_episode(&failed, &mut events).await;
    assert_eq!((scored.episode, scored.task.as_str()), (1, "cloth"));
    // Two episodes in all: the sim ends by itself.
    tokio::time::timeout(Duration::from_secs(60), sim_task)
        .await
        .expect("the sim ends after episode 1")
        .unwrap()
        .unwrap();
    stop.cancel();
}

/// Ends the episode now running as a planner's failure would (the sim scores it as is) and
/// returns its `scored` event.
async fn end_episode(
    failed: &dreamplan::bus::Publisher<EpisodeEvent>,
    events: &mut dreamplan::bus::Subscriber<EpisodeEvent>,
) -> EpisodeEvent {
    loop {
        failed
            .publish(EpisodeEvent {
                event: EpisodeEvent::EVENT_FAILED.into(),
                detail: "planner: test".into(),
                ..Default::default()
            })
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
            Ok(Some(e)) if e.event == EpisodeEvent::EVENT_SCORED => return (*e).clone(),
            Ok(None) => panic!("bus closed"),
            _ => {}
        }
    }
}

/// With `wait_for_subscribers`, the sim holds its first reset until that many subscribers
/// listen on the goal topic (here the test, 1.5 s in), not for its whole `start_delay_s`
/// (600 s: the test would time out): a launch file need not guess how long its other
/// nodes take to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_starts_when_its_goal_has_a_subscriber_not_after_a_fixed_delay() {
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let mut events = bus
        .subscribe::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let sim = SimNode::new(SimConfig {
        task: TaskName::Rope,
        seed: 1,
        episodes: 1,
        start_delay_s: 600.0,
        wait_for_subscribers: 1,
        width: 64,
        height: 64,
        realtime: false,
        ..Default::default()
    })
    .unwrap();
    let sim_task = start(sim, &bus, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        events.try_recv().is_none(),
        "the sim reset before anyone listened on its goal topic"
    );
    let mut goal = bus
        .subscribe::<Image>("/goal/image", Qos::latched())
        .unwrap();
    let reset = tokio::time::timeout(Duration::from_secs(120), async {
        next_event(&mut events, EpisodeEvent::EVENT_RESET).await
    })
    .await
    .expect("no reset within 120 s of a subscriber arriving");
    assert_eq!(reset.episode, 0);
    let g = goal.recv().await.unwrap();
    assert_eq!((g.width, g.height), (64, 64));
    stop.cancel();
    sim_task.await.unwrap().unwrap();
}
