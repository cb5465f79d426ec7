//! Executor node: a keypoint action becomes a checked pick-and-place trajectory.
//!
//! Same code for the built-in sim, Gazebo and a real arm: subscribes to the chosen action,
//! joint states, the depth image (and the goal's, when there is one) and an e-stop; turns
//! the action's pixels into 3D points through depth and the camera model, plans the
//! pick-and-place from the current joint state, passes it through the safety envelope
//! ([`crate::robot::safety`]) and only then publishes it, with the finger joint as a
//! column (open, closed from the grasp to the release). Every refusal is logged and
//! published as a `failed` episode event with its reason.

use nalgebra::{Isometry3, Point3, Quaternion, Translation3, UnitQuaternion};
use serde::Deserialize;

use super::markers::{action_markers, ActionView, Shown};
use super::sim::{FINGER_CLOSED_BELOW, FINGER_JOINT};
use super::{Node, NodeContext};
use crate::bus::{ActionOutcome, Bus, GripperClient, GripperCommand, GripperMove, Qos};
use crate::msg::prelude::*;
use crate::msg::std_msgs::Bool;
use crate::msg::visualization_msgs::MarkerArray;
use crate::render::{scene, PinholeCamera};
use crate::robot::motion::{plan_pick_place, PickPlaceParams, PickPlacePlan};
use crate::robot::safety::{action_points, DepthImage, Rejection, SafetyEnvelope};
use crate::robot::ArmModel;
use crate::sim::episode::{default_arm, READY};

/// Topic names of the executor.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorTopics {
    /// Chosen actions.
    pub action: String,
    /// Joint states of the arm.
    pub joint_states: String,
    /// Depth of the current view (32FC1).
    pub depth: String,
    /// Depth of the goal view (32FC1), optional.
    pub goal_depth: String,
    /// The goal image (latched): only its stamp is read, so that a goal depth is used
    /// with the goal image of its own stamp only, not with a later goal that came without
    /// one. Empty: the last goal depth is used whatever goal it came with.
    pub goal: String,
    /// Intrinsics of the depth camera (latched `sensor_msgs/CameraInfo`); until one
    /// arrives the built-in camera's are used.
    pub camera_info: String,
    /// E-stop (std_msgs/Bool, true = stop).
    pub estop: String,
    /// Where trajectories go.
    pub trajectory: String,
    /// Episode events (action_started, action_finished, failed).
    pub episode: String,
    /// What each action is shown as in RViz (`visualization_msgs/MarkerArray`, latched):
    /// the pick and place points, the tool's path, what was decided and the camera's
    /// axis, in `base_frame` ([`crate::nodes::markers`]). Empty: none.
    pub markers: String,
}

impl Default for ExecutorTopics {
    fn default() -> Self {
        Self {
            action: "/planner/action".into(),
            joint_states: "/joint_states".into(),
            depth: "/camera/depth/image_raw".into(),
            goal_depth: "/goal/depth".into(),
            goal: "/goal/image".into(),
            camera_info: "/camera/camera_info".into(),
            estop: "/estop".into(),
            trajectory: "/arm/joint_trajectory".into(),
            episode: "/dreamplan/episode".into(),
            markers: "/dreamplan/markers".into(),
        }
    }
}

/// Executor parameters. `table_z`, `envelope.*`, `motion.*`, `dry_run` and `table_check*`
/// can be changed while the node runs (the ROS parameter services, on a bus that serves them); they apply from the
/// next action on.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// Image width of the built-in camera model, used until a `CameraInfo` arrives.
    pub width: u32,
    /// Image height of that model.
    pub height: u32,
    /// Pose of the camera's optical frame in the arm's base frame: `[x, y, z]` (m). The
    /// default is the built-in world's camera (`render::scene::default_camera`); on a real
    /// arm put the hand-eye calibration here.
    pub base_from_camera_xyz: Option<[f64; 3]>,
    /// Orientation of that pose as a quaternion `[x, y, z, w]` (optical frame: x right,
    /// y down, z forward). Set both or neither.
    pub base_from_camera_xyzw: Option<[f64; 4]>,
    /// Height of the table top in the world frame (for place points without goal depth).
    pub table_z: f64,
    /// Safety envelope.
    pub envelope: SafetyEnvelope,
    /// Pick-and-place motion parameters.
    pub motion: PickPlaceParams,
    /// Whether an episode's end (`scored`, or the next `reset`) frees the arm at once, as
    /// in the built-in world, which stops the arm when it resets. On a real arm nothing
    /// stops it: set `false`, and the arm stays busy until the trajectory's duration has
    /// passed (a `reset` published mid-motion then waits in the planner).
    pub episode_end_frees_arm: bool,
    /// A `control_msgs/action/FollowJointTrajectory` server (e.g.
    /// `/arm_controller/follow_joint_trajectory`) to send trajectories to instead of
    /// publishing them on `topics.trajectory`: the arm is busy until the controller reports
    /// the result, and its failure (rejected, aborted, tolerance violated) is a `failed`
    /// event. Needs a bus with ROS actions (ROS 2 through r2r, or over DDS); unset or
    /// empty: the topic.
    pub trajectory_action: Option<String>,
    /// With `trajectory_action`: how long past the trajectory's end (s, bus time: sim time
    /// under `use_sim_time`) the executor waits for the controller's result before it
    /// cancels the goal and reports `failed`, so that a controller that never answers (a
    /// crashed or restarted controller manager, a lost result) does not leave the arm busy
    /// for ever. Bus time, not wall time: a simulation slower than real time is not cut
    /// short, and a paused one waits. 0: wait for ever (before session 47, always). The
    /// same bound applies to the gripper's last answer with `gripper_action`, and four
    /// times it to the whole sequence with `wait_for_gripper`.
    pub result_timeout_s: f64,
    /// An action is planned only from a joint state received at most this long ago (s, bus
    /// time): the trajectory starts at that state, and a controller told to start elsewhere
    /// jumps there. No joint state yet, or an older one (the driver stalled), refuses the
    /// action with `failed`. 0: no check (an arm that publishes its state only on change;
    /// until a first state comes, actions start at the ready pose, said once as a warning).
    /// Before session 42 an action was planned from the ready pose until a state came, and
    /// from the last state however old.
    pub joint_state_max_age_s: f64,
    /// The arm's seven joints as its driver names them (in `/joint_states` and the
    /// trajectory controller), in the shipped URDF's order (`panda_joint1` … `7`); empty:
    /// the URDF's names. A driver that names them otherwise (a prefix, another arm's
    /// names for the same kinematics) has every joint state ignored without this.
    pub joint_names: Vec<String>,
    /// The gripper's finger joint, appended as the trajectory's last column (open 0.04 m,
    /// closed 0 from the grasp to the release) and read from `/joint_states`; the built-in
    /// world's and the Gazebo controller's `panda_finger_joint1`. Empty: trajectories and
    /// the e-stop's hold carry the arm's joints alone, which an arm-only
    /// `joint_trajectory_controller` needs (it refuses a trajectory with a joint it does
    /// not control); the gripper is then commanded through `gripper_action`, or not at all.
    pub finger_joint: String,
    /// A `control_msgs/action/GripperCommand` server (e.g.
    /// `/gripper_controller/gripper_cmd` of ros2_controllers' `GripperActionController`,
    /// a Robotiq or Franka gripper driver) for an arm whose gripper is not a joint of its
    /// trajectory controller; `finger_joint` must then be empty. Each action opens the
    /// gripper at the motion's start, closes it at the grasp and opens it at the release,
    /// at the plan's times from the motion's start (from the controller's acceptance of
    /// the goal with `trajectory_action`). The arm does not wait for the gripper: the
    /// plan's `motion.grasp_settle_s` and `release_settle_s` must cover its closing and
    /// opening times. The action's end waits for the gripper's answer to its last command
    /// (at most `result_timeout_s` of bus time past the motion's end); a command the
    /// gripper does not complete makes the action end `failed`
    /// ([`ActionOutcome::from_gripper_result`]: a close that stops on the object is a
    /// grasp). The e-stop sends nothing more, cancels an open under way and lets a close
    /// under way finish. Needs `gripper.open_position` and `closed_position`, and a bus
    /// with ROS actions; unset or empty: none.
    pub gripper_action: Option<String>,
    /// The action `gripper_action` speaks: `gripper_command` (`GripperCommand`:
    /// ros2_controllers' `GripperActionController`, Robotiq, franka_gripper) or
    /// `parallel_gripper_command` (`ParallelGripperCommand`, Jazzy's
    /// `parallel_gripper_action_controller`; the command names `gripper.joint`).
    pub gripper_action_type: GripperActionType,
    /// With `trajectory_action` and `gripper_action`: the motion goes as three goals (to
    /// the grasp, on to the release, the retreat), and before each the gripper's command
    /// (open, close, open) is sent and its answer waited for, so the arm never lifts
    /// before the gripper has closed, whatever it takes. A goal or gripper command that
    /// fails ends the action `failed` where the arm stands. The whole sequence is given at
    /// most the motion's duration plus four times `result_timeout_s` of bus time.
    /// `false`: the gripper's commands are timed by the plan (see `gripper_action`).
    pub wait_for_gripper: bool,
    /// The goals of `gripper_action`.
    pub gripper: GripperParams,
    /// Plan, check and show each action (`topics.markers`) without sending anything to
    /// the arm or the gripper: the action ends at once with a `failed` event that says
    /// so, the arm stays where it is. For a first run on a new arm, to see in RViz where
    /// it would go; `ros2 param set <executor> dry_run false` lets the next action move.
    pub dry_run: bool,
    /// Before each action, the table in the depth image against where
    /// `base_from_camera_*` and `table_z` put it: a camera that was bumped, or a hand-eye
    /// pose that is off, sees the table tilted or lifted. `warn` (log it and go on),
    /// `refuse` (the action fails, saying so) or `off`.
    pub table_check: TableCheck,
    /// The table check's tolerance: tilt (degrees) …
    pub table_check_deg: f64,
    /// … and height off `table_z` (cm, where the optical axis meets the table).
    pub table_check_cm: f64,
    /// The arm's base frame as TF names it, the frame `base_from_camera_*` and every
    /// point the executor computes are in: the markers' `frame_id`. The shipped URDF's
    /// root, `world`; on a real arm its base link (e.g. `fr3_link0`, `base_link`).
    pub base_frame: String,
    /// Topic names.
    pub topics: ExecutorTopics,
}

/// What the executor does when the table in the depth image is not where the hand-eye
/// pose puts it (`table_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case", try_from = "TableCheckValue")]
pub enum TableCheck {
    /// Log a warning with the figures, and go on.
    #[default]
    Warn,
    /// Refuse the action (a `failed` event saying why).
    Refuse,
    /// No check.
    Off,
}

/// `table_check` as written: a mode's name, or `false` for `off`. `ros2 param set /executor
/// table_check off`, an rcl params file and launch_ros read an unquoted `off` as the
/// boolean false (YAML 1.1), which was refused as "not that type" before session 52.
#[derive(Deserialize)]
#[serde(untagged)]
enum TableCheckValue {
    Name(String),
    Flag(bool),
}

impl TryFrom<TableCheckValue> for TableCheck {
    type Error = String;
    fn try_from(v: TableCheckValue) -> Result<Self, String> {
        match v {
            TableCheckValue::Name(n) => match n.as_str() {
                "warn" => Ok(Self::Warn),
                "refuse" => Ok(Self::Refuse),
                "off" => Ok(Self::Off),
                other => Err(format!("table_check `{other}`: want warn, refuse or off")),
            },
            TableCheckValue::Flag(false) => Ok(Self::Off),
            TableCheckValue::Flag(true) => {
                Err("table_check `true`: want warn, refuse or off".into())
            }
        }
    }
}

/// How a table check's message begins (`table_check`).
pub const TABLE_OFF: &str = "the table in the depth image lies";
/// How it begins when the depth shows no table where the pose puts it.
pub const TABLE_UNSEEN: &str = "no table in the depth image";

/// The action a gripper server speaks (`gripper_action_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GripperActionType {
    /// `control_msgs/action/GripperCommand`.
    #[default]
    GripperCommand,
    /// `control_msgs/action/ParallelGripperCommand`.
    ParallelGripperCommand,
}

/// The executor's gripper goals: positions in the gripper controller's unit.
/// Both positions must be given with `gripper_action`: grippers differ even in which way
/// is closed (the Panda's finger: open 0.04, closed 0.0; a Robotiq 2F-85's knuckle: open
/// 0.0, closed 0.8), and a default right for one would open the other when told to close.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GripperParams {
    /// Where the gripper opens to.
    pub open_position: Option<f64>,
    /// Where it closes to: fully closed, so that it stops on the object.
    pub closed_position: Option<f64>,
    /// The goals' `max_effort` (N; `ParallelGripperCommand`: the command's effort, none
    /// when 0); how the controller uses it is its own.
    pub max_effort: f64,
    /// `ParallelGripperCommand` only: the gripper joint's name in the command (the
    /// controller's `joint`); empty: no name.
    pub joint: String,
}

impl Default for GripperParams {
    fn default() -> Self {
        Self {
            open_position: None,
            closed_position: None,
            max_effort: 10.0,
            joint: String::new(),
        }
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            width: 256,
            height: 256,
            base_from_camera_xyz: None,
            base_from_camera_xyzw: None,
            table_z: 0.0,
            envelope: SafetyEnvelope::default(),
            motion: PickPlaceParams::default(),
            episode_end_frees_arm: true,
            trajectory_action: None,
            result_timeout_s: 30.0,
            joint_state_max_age_s: 1.0,
            joint_names: Vec::new(),
            finger_joint: FINGER_JOINT.into(),
            gripper_action: None,
            gripper_action_type: GripperActionType::default(),
            wait_for_gripper: false,
            gripper: GripperParams::default(),
            dry_run: false,
            table_check: TableCheck::default(),
            table_check_deg: 2.0,
            table_check_cm: 2.0,
            base_frame: "world".into(),
            topics: ExecutorTopics::default(),
        }
    }
}

/// A planned action as the node sends it.
struct Planned {
    /// The trajectory, with the finger's column where there is one.
    trajectory: JointTrajectory,
    /// When it grasps and releases.
    times: GripTimes,
    /// The tool point at each of its points (base frame).
    path: Vec<Point3<f64>>,
}

/// When a planned motion grasps and releases (s from its start).
#[derive(Debug, Clone, Copy)]
struct GripTimes {
    grasp_s: f64,
    release_s: f64,
}

/// The executor node.
pub struct ExecutorNode {
    config: ExecutorConfig,
    arm: ArmModel,
}

/// A depth image in metres from either of REP 118's encodings: `32FC1` (metres; NaN or
/// ±inf where nothing was measured) or `16UC1` (millimetres, 0 where nothing was measured,
/// as most RGB-D drivers publish their aligned depth), in either byte order.
pub fn decode_depth(img: &Image) -> Result<DepthImage, String> {
    let bytes = match img.encoding.as_str() {
        "32FC1" => 4,
        "16UC1" => 2,
        e => {
            return Err(format!(
                "depth encoding {e} is neither 32FC1 (metres) nor 16UC1 (millimetres)"
            ))
        }
    };
    let (w, h) = (img.width as usize, img.height as usize);
    // Rows may be padded (`step` > width × bytes, as some drivers align them); before
    // session 53 such an image was refused and every action then failed for want of depth.
    let (row, step) = (w * bytes, img.step as usize);
    let need = if h == 0 { 0 } else { step * (h - 1) + row };
    if step < row || img.data.len() < need || img.data.len() > step * h {
        return Err(format!(
            "depth image {}×{} {}: step {} and {} bytes do not match (want step ≥ {}, and at least step × (height − 1) + {} bytes)",
            w,
            h,
            img.encoding,
            img.step,
            img.data.len(),
            row,
            need
        ));
    }
    let big = img.is_bigendian != 0;
    let rows = (0..h).map(|y| &img.data[y * step..y * step + row]);
    let data = if bytes == 4 {
        rows.flat_map(|r| r.chunks_exact(4))
            .map(|b| {
                let b = [b[0], b[1], b[2], b[3]];
                if big {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                }
            })
            .collect()
    } else {
        rows.flat_map(|r| r.chunks_exact(2))
            .map(|b| {
                let mm = if big {
                    u16::from_be_bytes([b[0], b[1]])
                } else {
                    u16::from_le_bytes([b[0], b[1]])
                };
                if mm == 0 {
                    f32::NAN
                } else {
                    mm as f32 / 1000.0
                }
            })
            .collect()
    };
    Ok(DepthImage {
        width: img.width,
        height: img.height,
        data,
    })
}

/// The plan's trajectory with the built-in arm's finger joint appended
/// ([`with_gripper_column`] with [`FINGER_JOINT`]).
pub fn with_finger_column(plan: &PickPlacePlan) -> JointTrajectory {
    with_gripper_column(plan, FINGER_JOINT)
}

/// The plan's trajectory with the finger joint `finger` appended: open until the grasp,
/// closed until the release, open again. Each switch lies over its dwell when the plan has
/// one (`grasp_settle_s`, `release_settle_s`): open at the grasp point and closed at the
/// dwell's end, so a controller that interpolates the finger closes it while the arm
/// stands at the pick point; closed at the release point and open at its dwell's end. An
/// empty `finger`: the arm's joints alone (an arm whose gripper is not a joint of its
/// trajectory controller).
///
/// Before session 53 each point's time, rounded to nanoseconds on its way into
/// `time_from_start`, was compared with the plan's exact grasp and release times: in about
/// half the plans the grasp point came out later than the grasp time, was closed, and the
/// fingers closed over the last descent segment, some 5 mm above the pick point (the same
/// coin flip at the release).
pub fn with_gripper_column(plan: &PickPlacePlan, finger: &str) -> JointTrajectory {
    let mut traj = plan.trajectory.clone();
    if finger.is_empty() {
        return traj;
    }
    let times: Vec<f64> = traj
        .points
        .iter()
        .map(|p| p.time_from_start.as_secs_f64())
        .collect();
    // The first point at `at` (within the nanosecond rounding), or the one after its dwell.
    let switch = |at: f64| -> usize {
        let k = times
            .iter()
            .position(|&t| t >= at - 1e-6)
            .unwrap_or(times.len());
        let dwell = k + 1 < times.len()
            && (times[k] - at).abs() < 1e-6
            && traj.points[k + 1].positions == traj.points[k].positions;
        k + usize::from(dwell)
    };
    let (close_at, open_at) = (switch(plan.grasp_time_s), switch(plan.release_time_s));
    traj.joint_names.push(finger.into());
    for (k, p) in traj.points.iter_mut().enumerate() {
        let closed = k >= close_at && k < open_at;
        p.positions.push(if closed { 0.0 } else { 0.04 });
        if !p.velocities.is_empty() {
            p.velocities.push(0.0);
        }
    }
    const { assert!(0.0 < FINGER_CLOSED_BELOW && FINGER_CLOSED_BELOW < 0.04) };
    traj
}

/// The detail of the `failed` event that refuses an action because the arm still runs the
/// previous one: the arm is not idle then (the planner node tells it from the others).
pub const BUSY: &str = "busy with the previous action";

/// How the `failed` event of an action planned under `dry_run` begins: the arm is idle
/// (nothing was sent).
pub const DRY_RUN: &str = "dry run";

/// Whether a joint state without the arm's joints is worth a warning: not when one was
/// already given for this run of such states, nor while the arm's own states keep coming
/// (the last usable one at most a second old, bus time): the others are then another
/// device's on the same topic (a gripper's).
fn warn_ignored_joint_state(already_said: bool, last_usable_ns: Option<i64>, now_ns: i64) -> bool {
    !already_said && last_usable_ns.is_none_or(|t| now_ns - t > 1_000_000_000)
}

/// How the refusal of an action begins when nothing subscribes to `topics.trajectory`.
pub const NO_CONTROLLER: &str = "no controller subscribes to";

/// How long (wall-clock seconds) an action that comes before any joint state waits for the
/// first one before it is refused (with `joint_state_max_age_s` on).
pub const FIRST_JOINT_STATE_WAIT_S: f64 = 1.0;

/// The longest `result_timeout_s` (s): a day. Longer adds nothing a restart would not,
/// and a deadline in nanoseconds must stay far from `i64`'s end.
pub const MAX_RESULT_TIMEOUT_S: f64 = 86_400.0;

/// A moment in bus time (ns) that the node's wall-clock loop watches for: the end of a
/// motion, or the last moment a controller's result is waited for. The bus clock is read
/// at least every 0.1 s of wall time, so that a clock running faster than the wall (a
/// simulator ahead of real time) is followed, and one running slower (or paused) is waited
/// for. A clock that goes back (a bag played again with `--loop`, a simulator reset)
/// keeps the remaining time instead of waiting for the old time to come round again.
#[derive(Clone, Copy, Debug)]
struct BusDeadline {
    end: i64,
    /// The bus time last read: a later reading before it means the clock went back.
    seen: i64,
    /// When (wall clock) to read the bus clock next.
    look: tokio::time::Instant,
}

impl BusDeadline {
    /// `after_s` seconds of bus time from `now` (ns).
    fn after(now: i64, after_s: f64) -> Self {
        Self {
            end: now.saturating_add((after_s * 1e9) as i64),
            seen: now,
            look: tokio::time::Instant::now()
                + std::time::Duration::from_secs_f64(after_s.clamp(0.0, 0.1)),
        }
    }

    /// Reads the bus clock (`now`, ns): whether the deadline is reached (if not, when to
    /// look again is set), and by how many seconds the clock went back since the last
    /// reading, if it did (the deadline then moved by as much).
    fn look_at(&mut self, now: i64) -> (bool, Option<f64>) {
        let back = (now < self.seen).then(|| (self.seen - now) as f64 * 1e-9);
        if now < self.seen {
            self.end -= self.seen - now;
        }
        self.seen = now;
        let left_s = (self.end - now) as f64 * 1e-9;
        if left_s > 0.0 {
            self.look =
                tokio::time::Instant::now() + std::time::Duration::from_secs_f64(left_s.min(0.1));
        }
        (left_s <= 0.0, back)
    }
}

/// Sleeps until `at`, or for ever without one (a `select!` arm that is then never taken).
async fn wake_at(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A `FollowJointTrajectory` goal the executor waits on: its number (an outcome of a goal
/// given up earlier carries another) and, with `result_timeout_s`, when to give up on it.
struct PendingGoal {
    id: u64,
    deadline: Option<BusDeadline>,
    /// A sequence of goals and gripper commands (`wait_for_gripper`): stops it; its
    /// failures name their source already.
    sequence: Option<tokio_util::sync::CancellationToken>,
}

/// Gives up the pending goal, if any (a sequence is stopped): whether there was one.
fn give_up(goal: &mut Option<PendingGoal>) -> bool {
    match goal.take() {
        Some(g) => {
            if let Some(s) = g.sequence {
                s.cancel();
            }
            true
        }
        None => false,
    }
}

/// A step of a motion that waits for the gripper.
enum Step {
    Grip(GripperCommand, GripperMove),
    Move(JointTrajectory),
}

/// `traj` cut at `times` (s from its start, ascending) into `times.len() + 1` pieces that
/// each start at 0: the end point of one is the start of the next.
pub fn split_trajectory(traj: &JointTrajectory, times: &[f64]) -> Vec<JointTrajectory> {
    let mut pieces = Vec::new();
    let mut from = 0usize;
    let at = |i: usize| traj.points[i].time_from_start.as_secs_f64();
    let last = traj.points.len().saturating_sub(1);
    for &t in times {
        // The first point at or after `t` (the plan's grasp and release are points; were
        // one not, a cut skipped would shift every later gripper step by a piece).
        let cut = (from..=last).find(|&i| at(i) >= t - 1e-6).unwrap_or(last);
        pieces.push(piece(traj, from, cut));
        from = cut;
    }
    pieces.push(piece(traj, from, traj.points.len() - 1));
    pieces
}

/// Points `from..=to` of `traj`, timed from the first.
fn piece(traj: &JointTrajectory, from: usize, to: usize) -> JointTrajectory {
    let t0 = traj.points[from].time_from_start.as_secs_f64();
    JointTrajectory {
        header: traj.header.clone(),
        joint_names: traj.joint_names.clone(),
        points: traj.points[from..=to]
            .iter()
            .map(|p| JointTrajectoryPoint {
                time_from_start: crate::msg::builtin_interfaces::Duration::from_secs_f64(
                    p.time_from_start.as_secs_f64() - t0,
                ),
                ..p.clone()
            })
            .collect(),
    }
}

/// Runs `steps` one after the other: each gripper command waited for, each piece of the
/// motion a goal waited for. Stopped by `stop` (the e-stop, the episode's end, the result
/// timeout): the piece under way is cancelled, an open under way is cancelled, a close
/// under way is left to finish (see [`GripperRun::estop`]). A step is never started once
/// `stop` is cancelled; one whose goal went out in the moment `stop` was cancelled is
/// cancelled at once (a goal goes out when the client is called, so a step could follow
/// an e-stop by a hair: found by session 49's review). The failure names its source.
async fn run_steps(
    steps: Vec<Step>,
    arm: std::sync::Arc<dyn crate::bus::TrajectoryClient>,
    gripper: std::sync::Arc<dyn GripperClient>,
    stop: tokio_util::sync::CancellationToken,
) -> ActionOutcome {
    let stopped = || ActionOutcome::Failed("stopped".into());
    for step in steps {
        if stop.is_cancelled() {
            return stopped();
        }
        match step {
            Step::Grip(command, what) => {
                let answer = gripper.command(command, what);
                if stop.is_cancelled() {
                    // Sent just after the stop: not a command that was under way.
                    gripper.cancel_all();
                    return stopped();
                }
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => {
                        if what == GripperMove::Open {
                            gripper.cancel_all();
                        }
                        return stopped();
                    }
                    o = answer => {
                        if let ActionOutcome::Failed(why) = o {
                            return ActionOutcome::Failed(format!("gripper ({}): {why}", grip_word(what)));
                        }
                    }
                }
            }
            Step::Move(piece) => {
                let (accepted, _) = tokio::sync::oneshot::channel();
                let done = arm.follow(piece, accepted);
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => {
                        arm.cancel_all();
                        return stopped();
                    }
                    o = done => {
                        if let ActionOutcome::Failed(why) = o {
                            return ActionOutcome::Failed(format!("controller: {why}"));
                        }
                    }
                }
            }
        }
    }
    ActionOutcome::Succeeded
}

/// One gripper command of an action: when (s from the motion's start) and what.
type GripStep = (f64, GripperCommand, GripperMove);

/// What comes back of a gripper command: the action's number, the command's number, what
/// it was for, and its outcome.
type GripOutcome = (u64, u64, GripperMove, ActionOutcome);

/// The `gripper_action` side of the executor: the running action's gripper commands, when
/// they fall due in bus time, the command whose outcome is awaited, the first failure, and
/// the wait for that outcome once the arm has ended.
struct GripperRun {
    client: std::sync::Arc<dyn GripperClient>,
    outcomes: tokio::sync::mpsc::UnboundedSender<GripOutcome>,
    /// The running action's number.
    action: u64,
    /// Its commands, until the motion starts.
    plan: Vec<GripStep>,
    /// Then at their bus deadlines, in order.
    due: std::collections::VecDeque<(BusDeadline, GripperCommand, GripperMove)>,
    /// Commands sent so far (every action's).
    sent: u64,
    /// The last command sent, while its outcome is out: a later command supersedes it (one
    /// gripper, one command at a time: the DDS client gives up the earlier goal), so only
    /// the last one's outcome counts.
    awaited: Option<(u64, GripperMove)>,
    /// The running action's first failed command.
    failed: Option<String>,
    /// The arm has ended: the action's end waits for the awaited outcome, until this bus
    /// deadline (`None` inside: for ever, `result_timeout_s` 0).
    ending: Option<Option<BusDeadline>>,
}

/// What a gripper command was for, in a failure's text.
fn grip_word(what: GripperMove) -> &'static str {
    match what {
        GripperMove::Open => "open",
        GripperMove::Close { .. } => "close",
    }
}

impl GripperRun {
    /// A new action `action` with these commands, timed once its motion starts.
    fn begin(&mut self, action: u64, plan: Vec<GripStep>) {
        self.action = action;
        self.plan = plan;
        self.due.clear();
        self.failed = None;
        self.ending = None;
        // An earlier action's command is not this one's to wait for.
        self.awaited = None;
    }

    /// The motion started at `now` (bus time, ns): the commands fall due from then.
    fn started(&mut self, now: i64) {
        self.due = self
            .plan
            .drain(..)
            .map(|(t, c, what)| (BusDeadline::after(now, t), c, what))
            .collect();
    }

    /// When (wall clock) to read the bus clock next.
    fn look(&self) -> Option<tokio::time::Instant> {
        let due = self.due.front().map(|d| d.0.look);
        let ending = self.ending.flatten().map(|d| d.look);
        due.into_iter().chain(ending).min()
    }

    /// Sends the commands whose time has come at `now`. Every deadline reads the clock, so
    /// that a clock gone back moves them all alike (before session 49's review only the
    /// first one did, and the release could be dropped at the motion's end). Returns the
    /// awaited command, if the wait for it at the arm's end has timed out.
    fn poll(&mut self, now: i64) -> Option<GripperMove> {
        for d in self.due.iter_mut() {
            d.0.look_at(now);
        }
        while self.due.front().is_some_and(|d| d.0.end <= now) {
            let (_, command, what) = self.due.pop_front().expect("front");
            self.send(command, what);
        }
        let d = self.ending.as_mut()?.as_mut()?;
        if !d.look_at(now).0 {
            return None;
        }
        self.ending = None;
        self.awaited.take().map(|(_, what)| what)
    }

    fn send(&mut self, command: GripperCommand, what: GripperMove) {
        self.sent += 1;
        self.awaited = Some((self.sent, what));
        let (action, number, done, tx) = (
            self.action,
            self.sent,
            self.client.command(command, what),
            self.outcomes.clone(),
        );
        tokio::spawn(async move {
            let _ = tx.send((action, number, what, done.await));
        });
    }

    /// The arm has ended its motion normally at `end` (bus time, ns; read at `now`): what
    /// is still due is sent now (the release must not be lost to a clock read a moment
    /// late). `Some(result)`: the action ends now, failed with the gripper's reason or not;
    /// `None`: it waits for the awaited outcome, until `timeout_s` of bus time after `end`
    /// (0: for ever).
    fn arm_ended(&mut self, end: i64, now: i64, timeout_s: f64) -> Option<Result<(), String>> {
        // A result handled before its goal's acceptance: the commands were never timed.
        if !self.plan.is_empty() {
            self.started(end);
        }
        while let Some((_, command, what)) = self.due.pop_front() {
            self.send(command, what);
        }
        if self.awaited.is_some() {
            let left_s = timeout_s - (now - end).max(0) as f64 * 1e-9;
            self.ending = Some((timeout_s > 0.0).then(|| BusDeadline::after(now, left_s)));
            return None;
        }
        Some(self.failed.take().map_or(Ok(()), Err))
    }

    /// An outcome came. A failure of the running action's last command is kept as its
    /// failure. `Some(result)`: the action was waiting for this outcome and ends now.
    fn outcome(
        &mut self,
        (action, number, what, outcome): GripOutcome,
        running: bool,
    ) -> Option<Result<(), String>> {
        let last = self.awaited.is_some_and(|(n, _)| n == number);
        if last {
            self.awaited = None;
        }
        if let ActionOutcome::Failed(why) = outcome {
            if last && action == self.action && (running || self.ending.is_some()) {
                tracing::warn!("the gripper did not {}: {why}", grip_word(what));
                self.failed
                    .get_or_insert(format!("gripper ({}): {why}", grip_word(what)));
            } else {
                tracing::debug!("gripper {} given up: {why}", grip_word(what));
            }
        }
        if last && self.ending.take().is_some() {
            return Some(self.failed.take().map_or(Ok(()), Err));
        }
        None
    }

    /// The action ended otherwise (a controller's failure, the episode's end): nothing more
    /// is sent for it. Whether it was waiting for the gripper.
    fn abandon(&mut self) -> bool {
        self.plan.clear();
        self.due.clear();
        self.failed = None;
        self.ending.take().is_some()
    }

    /// The e-stop: nothing more is sent; an open under way is cancelled (the gripper holds
    /// what it has), a close under way is left to finish (cancelling it makes a
    /// `GripperActionController` hold its current position, which can loosen a grasp not
    /// yet squeezed). Whether the action was waiting for the gripper.
    fn estop(&mut self) -> bool {
        if matches!(self.awaited, Some((_, GripperMove::Open))) {
            self.client.cancel_all();
        }
        self.abandon()
    }
}

/// How long the e-stop's hold trajectory takes to reach its one point (s): ros2_controllers'
/// trajectory controller interpolates from where the arm is to the point in this time.
pub const HOLD_S: f64 = 0.1;

/// The e-stop's trajectory: the executor's joints (the arm's `names` and the finger), one
/// point at the arm's last reported positions `q` and the finger's (open when none was
/// reported), at rest, [`HOLD_S`] from now. It replaces the running trajectory in a ROS
/// trajectory controller, which then holds there; the built-in simulator stops on it.
/// `finger_joint` empty: the arm's joints alone.
pub fn hold_trajectory(
    names: &[String],
    q: &[f64],
    finger_joint: &str,
    finger: Option<f64>,
) -> JointTrajectory {
    let mut joint_names = names.to_vec();
    let mut positions = q.to_vec();
    if !finger_joint.is_empty() {
        joint_names.push(finger_joint.into());
        positions.push(finger.unwrap_or(0.04));
    }
    JointTrajectory {
        joint_names,
        points: vec![JointTrajectoryPoint {
            velocities: vec![0.0; positions.len()],
            positions,
            time_from_start: crate::msg::builtin_interfaces::Duration::from_secs_f64(HOLD_S),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The shipped arm with its joints under `config.joint_names` (its URDF's names when
/// empty); refused names are an error naming the setting.
pub fn arm_of(config: &ExecutorConfig) -> anyhow::Result<ArmModel> {
    let mut arm = default_arm();
    if !config.joint_names.is_empty() {
        arm.rename_joints(&config.joint_names)
            .map_err(|e| anyhow::anyhow!("joint_names: {e}"))?;
    }
    Ok(arm)
}

/// The positions of the arm's joints `names` in `m`, in that order: `None` when one is
/// missing or not finite (such a message tells nothing of where the arm is).
pub fn arm_positions(names: &[String], m: &JointState) -> Option<Vec<f64>> {
    names
        .iter()
        .map(|n| {
            let i = m.name.iter().position(|x| x == n)?;
            m.position.get(i).copied().filter(|v| v.is_finite())
        })
        .collect()
}

/// The finger joint's position in a joint state, if it has one and it is finite.
pub fn finger_of(m: &JointState, joint: &str) -> Option<f64> {
    if joint.is_empty() {
        return None;
    }
    let i = m.name.iter().position(|n| n == joint)?;
    m.position.get(i).copied().filter(|v| v.is_finite())
}

/// The executor's whole decision for one action, without the bus: pixels → points through
/// depth and the camera → the workspace policy → a pick-and-place plan from `q` → the
/// envelope check. The node publishes the result; benchmarks and tests call this directly
/// to run exactly what the node runs.
pub fn plan_action(
    config: &ExecutorConfig,
    arm: &ArmModel,
    camera: &PinholeCamera,
    action: &KeypointAction,
    depth: Option<&DepthImage>,
    goal_depth: Option<&DepthImage>,
    q: &[f64],
) -> Result<PickPlacePlan, Rejection> {
    decide_action(config, arm, camera, action, depth, goal_depth, q).plan
}

/// A pick point and a place point (m, base frame).
pub type PickPlace = (Point3<f64>, Point3<f64>);

/// [`plan_action`]'s decision with the points it reached, for showing it.
pub struct Decision {
    /// The pick and place points in the base frame, once the pixels reached 3D (after
    /// the workspace policy's clamp, where it admitted them; as the pixels gave them
    /// where it refused them); `None` when they did not (no depth, a pixel off the image).
    pub points: Option<PickPlace>,
    /// The plan, or why there is none.
    pub plan: Result<PickPlacePlan, Rejection>,
}

/// [`plan_action`], keeping the points for the markers ([`crate::nodes::markers`]).
pub fn decide_action(
    config: &ExecutorConfig,
    arm: &ArmModel,
    camera: &PinholeCamera,
    action: &KeypointAction,
    depth: Option<&DepthImage>,
    goal_depth: Option<&DepthImage>,
    q: &[f64],
) -> Decision {
    let mut points = None;
    // The decision, noting the points as it reaches them.
    let plan = (|| -> Result<PickPlacePlan, Rejection> {
        let c = config;
        let depth = depth.ok_or(Rejection::NoDepthImage)?;
        if (depth.width, depth.height) != (camera.width, camera.height) {
            return Err(Rejection::Planning(format!(
                "depth image is {}x{} but the camera model is {}x{}",
                depth.width, depth.height, camera.width, camera.height
            )));
        }
        // The goal depth is read at the place pixel with the same intrinsics: another size
        // would give a wrong place height (it was not checked before session 42).
        if let Some(g) = goal_depth {
            if (g.width, g.height) != (camera.width, camera.height) {
                return Err(Rejection::Planning(format!(
                    "goal depth image is {}x{} but the camera model is {}x{}",
                    g.width, g.height, camera.width, camera.height
                )));
            }
        }
        let (pick, place) = action_points(
            action,
            camera,
            depth,
            goal_depth,
            &Isometry3::identity(),
            c.table_z,
        )?;
        points = Some((pick, place));
        let envelope = c.safety_envelope();
        let (pick, clamped_pick) = envelope.admit("pick", pick)?;
        let (place, clamped_place) = envelope.admit("place", place)?;
        points = Some((pick, place));
        if clamped_pick || clamped_place {
            tracing::warn!("action clamped into the workspace: pick {pick:?}, place {place:?}");
        }
        // The motion is timed within the envelope's speed cap, with the motion's own headroom
        // below it: a tighter `envelope.max_speed_fraction` slows the arm. Before session 45 the
        // plan ignored it and the envelope then refused every action faster than it (at 0.4,
        // nearly all), although docs/ros2.md gives it as the way to slow the arm.
        let motion = PickPlaceParams {
            velocity_margin: c.motion.velocity_margin * envelope.max_speed_fraction,
            ..c.motion.clone()
        };
        let plan = plan_pick_place(arm, q, &pick, &place, &motion)
            .map_err(|e| Rejection::Planning(e.to_string()))?;
        envelope.verify(&plan.trajectory, arm)?;
        Ok(plan)
    })();
    Decision { points, plan }
}

impl ExecutorConfig {
    /// The safety envelope the executor checks against: `envelope` with its floor on the
    /// higher of `table_z` and `envelope.table_z`. Two keys name the table top; before
    /// session 52 the floor read only `envelope.table_z`, so a cell that set `table_z`
    /// alone for a table above the arm's base kept the floor at the base (a review
    /// finding). A higher `envelope.table_z` still raises the floor on purpose.
    pub fn safety_envelope(&self) -> SafetyEnvelope {
        SafetyEnvelope {
            table_z: self.envelope.table_z.max(self.table_z),
            ..self.envelope.clone()
        }
    }

    /// The camera model: `info`'s intrinsics when given (else the built-in camera's at
    /// `width`×`height`), placed at the configured `base_from_camera` pose (else the
    /// built-in camera's pose). The executor's world frame is the arm's base frame.
    pub fn camera(&self, info: Option<&CameraInfo>) -> PinholeCamera {
        let builtin = scene::default_camera(self.width, self.height);
        let mut cam = match info {
            Some(i) => PinholeCamera::from_camera_info(i, builtin.world_from_camera),
            None => builtin,
        };
        if let (Some(t), Some(q)) = (self.base_from_camera_xyz, self.base_from_camera_xyzw) {
            cam.world_from_camera = Isometry3::from_parts(
                Translation3::new(t[0], t[1], t[2]),
                UnitQuaternion::from_quaternion(Quaternion::new(q[3], q[0], q[1], q[2])),
            );
        }
        cam
    }
}

/// Whether a `CameraInfo` describes a usable pinhole camera.
fn check_camera_info(info: &CameraInfo) -> Result<(), String> {
    let k = &info.k;
    if info.width == 0 || info.height == 0 {
        return Err(format!("size {}x{}", info.width, info.height));
    }
    if !(k.iter().all(|v| v.is_finite()) && k[0] > 0.0 && k[4] > 0.0) {
        return Err(format!("intrinsics K = {k:?} are not a pinhole camera"));
    }
    Ok(())
}

impl ExecutorNode {
    /// The table check (`table_check`) before an action: the plane most of the depth
    /// image's points lie on, where the hand-eye pose says the table is (rays meeting
    /// `table_z` inside the workspace box), against the level table at `table_z` there.
    /// Beyond a tolerance, `warn` logs it and `refuse` returns why the action is refused.
    /// Depth with no such plane (under a fifth of those points) cannot tell: `refuse`
    /// refuses, `warn` says so once until a plane is found again (`unseen_said`). Nothing
    /// without depth of the camera's size (the plan refuses that itself).
    fn table_refusal(
        &self,
        node: &str,
        camera: &crate::render::PinholeCamera,
        depth: Option<&DepthImage>,
        unseen_said: &mut bool,
    ) -> Option<String> {
        use crate::vision::handeye::{fit_plane, table_offset, table_points};
        let c = &self.config;
        if c.table_check == TableCheck::Off {
            return None;
        }
        let depth = depth.filter(|d| (d.width, d.height) == (camera.width, camera.height))?;
        let box_min = [c.envelope.workspace_min[0], c.envelope.workspace_min[1]];
        let box_max = [c.envelope.workspace_max[0], c.envelope.workspace_max[1]];
        let points = table_points(camera, &depth.data, 80, c.table_z, box_min, box_max);
        let Some(plane) = fit_plane(&points, 0.01) else {
            let why = format!(
                "{TABLE_UNSEEN}: no plane holds a fifth of the {} depth points where base_from_camera_xyz/_xyzw puts the table (table_check could not tell whether the camera moved)",
                points.len()
            );
            if c.table_check == TableCheck::Refuse {
                return Some(why);
            }
            if !*unseen_said {
                tracing::warn!(node = %node, "{why}; said once until a table is seen again");
                *unseen_said = true;
            }
            return None;
        };
        *unseen_said = false;
        let (tilt, height) = table_offset(&camera.world_from_camera, &plane, c.table_z);
        if tilt <= c.table_check_deg && 100.0 * height.abs() <= c.table_check_cm {
            return None;
        }
        let why = format!(
            "{TABLE_OFF} {tilt:.1}° tilted and {:+.1} cm off table_z from where base_from_camera_xyz/_xyzw puts it (table_check_deg {}, table_check_cm {}): has the camera moved? `dreamplan check-calibration` on a bag of the cell measures and refines the pose",
            100.0 * height,
            c.table_check_deg,
            c.table_check_cm
        );
        if c.table_check == TableCheck::Refuse {
            return Some(why);
        }
        tracing::warn!(node = %node, "{why}");
        None
    }

    fn plan(
        &self,
        camera: &PinholeCamera,
        action: &KeypointAction,
        depth: Option<&DepthImage>,
        goal_depth: Option<&DepthImage>,
        q: &[f64],
    ) -> (Option<PickPlace>, Result<Planned, Rejection>) {
        let d = decide_action(
            &self.config,
            &self.arm,
            camera,
            action,
            depth,
            goal_depth,
            q,
        );
        let planned = d.plan.map(|plan| Planned {
            trajectory: with_gripper_column(&plan, &self.config.finger_joint),
            times: GripTimes {
                grasp_s: plan.grasp_time_s,
                release_s: plan.release_time_s,
            },
            // The tool point along the motion, for the markers.
            path: plan
                .trajectory
                .points
                .iter()
                .filter(|p| p.positions.len() == self.arm.dof())
                .map(|p| Point3::from(self.arm.fk(&p.positions).translation.vector))
                .collect(),
        });
        (d.points, planned)
    }

    /// Shows an action on `topics.markers` (nothing when the points are not finite).
    // Each argument is one of the view's parts; a struct for them would be `ActionView`
    // again, less the executor's frame.
    #[allow(clippy::too_many_arguments)]
    fn show(
        &self,
        markers: Option<&crate::bus::Publisher<MarkerArray>>,
        stamp: Time,
        (pick, place): PickPlace,
        path: &[Point3<f64>],
        shown: Shown,
        label: &str,
        camera: &PinholeCamera,
    ) {
        let finite = |p: &Point3<f64>| p.iter().all(|v| v.is_finite());
        let Some(markers) = markers.filter(|_| finite(&pick) && finite(&place)) else {
            return;
        };
        let _ = markers.publish(action_markers(&ActionView {
            frame: &self.config.base_frame,
            stamp,
            pick,
            place,
            path,
            shown,
            label,
            base_from_camera: &camera.world_from_camera,
        }));
    }

    /// The gripper's commands for a motion whose grasp and release come at `times`: open
    /// at the start, closed at the grasp, open at the release (`(seconds from the motion's
    /// start, command, whether it closes)`).
    fn grip_commands(&self, times: GripTimes) -> Vec<GripStep> {
        let g = &self.config.gripper;
        // Both are set whenever a gripper action is (validated).
        let (open, closed) = (
            g.open_position.unwrap_or_default(),
            g.closed_position.unwrap_or_default(),
        );
        let at = |position| GripperCommand {
            position,
            max_effort: g.max_effort,
        };
        let closing = GripperMove::Close {
            open_position: open,
        };
        vec![
            (0.0, at(open), GripperMove::Open),
            (times.grasp_s, at(closed), closing),
            (times.release_s, at(open), GripperMove::Open),
        ]
    }
}

impl Node for ExecutorNode {
    const KIND: &'static str = "executor";
    type Config = ExecutorConfig;
    const LIVE: &'static [&'static str] = &[
        "table_z",
        "envelope.",
        "motion.",
        "dry_run",
        "table_check",
        "table_check_deg",
        "table_check_cm",
    ];

    fn validate(config: &ExecutorConfig) -> anyhow::Result<()> {
        anyhow::ensure!(
            config.width >= 16 && config.height >= 16,
            "width and height must be ≥ 16"
        );
        anyhow::ensure!(
            config.table_check_deg > 0.0 && config.table_check_cm > 0.0,
            "table_check_deg and table_check_cm must be > 0 (table_check: off turns the check off)"
        );
        anyhow::ensure!(
            !arm_of(config)?.joint_names().contains(&config.finger_joint),
            "finger_joint `{}` is also one of the arm's joints",
            config.finger_joint
        );
        let named = |a: &Option<String>| a.as_deref().is_some_and(|a| !a.is_empty());
        anyhow::ensure!(
            !config.wait_for_gripper
                || (named(&config.trajectory_action) && named(&config.gripper_action)),
            "wait_for_gripper needs trajectory_action and gripper_action: only a trajectory controller's action says when the arm has reached the grasp"
        );
        if named(&config.gripper_action) {
            anyhow::ensure!(
                config.finger_joint.is_empty(),
                "gripper_action and finger_joint `{}` both command the gripper: set finger_joint: \"\" when a GripperCommand server runs it",
                config.finger_joint
            );
            let g = &config.gripper;
            let (Some(open), Some(closed)) = (g.open_position, g.closed_position) else {
                anyhow::bail!(
                    "gripper_action needs gripper.open_position and gripper.closed_position, in its controller's unit (the Panda's finger: 0.04 and 0.0; a Robotiq 2F-85's knuckle: 0.0 and 0.8)"
                );
            };
            for (name, v) in [
                ("gripper.open_position", open),
                ("gripper.closed_position", closed),
            ] {
                anyhow::ensure!(v.is_finite(), "{name} must be a number (is {v})");
            }
            anyhow::ensure!(
                open != closed,
                "gripper.open_position and closed_position are both {open}: the gripper would never close"
            );
            anyhow::ensure!(
                g.max_effort.is_finite() && g.max_effort >= 0.0,
                "gripper.max_effort must be ≥ 0 N (is {})",
                g.max_effort
            );
        }
        anyhow::ensure!(
            !config.base_frame.is_empty() || config.topics.markers.is_empty(),
            "base_frame is empty: RViz drops markers without a frame (the arm's base link as TF names it, e.g. world or fr3_link0)"
        );
        anyhow::ensure!(
            config.base_from_camera_xyz.is_some() == config.base_from_camera_xyzw.is_some(),
            "set both base_from_camera_xyz and base_from_camera_xyzw, or neither"
        );
        if let Some(q) = config.base_from_camera_xyzw {
            let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
            anyhow::ensure!(
                n.is_finite() && (n - 1.0).abs() < 1e-3,
                "base_from_camera_xyzw {q:?} is not a unit quaternion (norm {n})"
            );
        }
        let e = &config.envelope;
        anyhow::ensure!(
            (0..3).all(|i| e.workspace_min[i] < e.workspace_max[i]),
            "envelope.workspace_min must be below workspace_max"
        );
        anyhow::ensure!(
            e.max_speed_fraction > 0.0 && e.max_speed_fraction <= 1.0,
            "envelope.max_speed_fraction must be in (0, 1]"
        );
        // Each of these could be set while running and was not checked before session 42:
        // a NaN joint margin passed every joint-limit check, and a point margin wider than
        // half the box made the clamp's bounds cross (a panic that ended the executor).
        anyhow::ensure!(
            config.joint_state_max_age_s.is_finite() && config.joint_state_max_age_s >= 0.0,
            "joint_state_max_age_s must be ≥ 0 s (0: no check; is {})",
            config.joint_state_max_age_s
        );
        anyhow::ensure!(
            config.result_timeout_s.is_finite()
                && (0.0..=MAX_RESULT_TIMEOUT_S).contains(&config.result_timeout_s),
            "result_timeout_s must be 0–{MAX_RESULT_TIMEOUT_S} s (0: wait for ever; is {})",
            config.result_timeout_s
        );
        for (name, v) in [("table_z", config.table_z), ("envelope.table_z", e.table_z)] {
            anyhow::ensure!(v.is_finite(), "{name} must be a height in m (is {v})");
        }
        for (name, v) in [
            ("envelope.joint_margin", e.joint_margin),
            ("envelope.point_margin", e.point_margin),
        ] {
            anyhow::ensure!(v.is_finite() && v >= 0.0, "{name} must be ≥ 0 (is {v})");
        }
        let floor = config.safety_envelope().table_z + e.table_clearance;
        let inner = [
            (
                e.workspace_min[0] + e.point_margin,
                e.workspace_max[0] - e.point_margin,
            ),
            (
                e.workspace_min[1] + e.point_margin,
                e.workspace_max[1] - e.point_margin,
            ),
            (
                e.workspace_min[2].max(floor),
                e.workspace_max[2] - e.point_margin,
            ),
        ];
        anyhow::ensure!(
            inner.iter().all(|(lo, hi)| lo < hi),
            "envelope: no room for pick and place points: the box {:?}–{:?} less point_margin \
             {} (and above table_z + table_clearance = {floor}) is empty",
            e.workspace_min,
            e.workspace_max,
            e.point_margin
        );
        let m = &config.motion;
        for (name, v) in [
            ("cartesian_speed_m_s", m.cartesian_speed_m_s),
            ("cartesian_accel_m_s2", m.cartesian_accel_m_s2),
            ("joint_speed_fraction", m.joint_speed_fraction),
            ("joint_accel_rad_s2", m.joint_accel_rad_s2),
            ("path_step_m", m.path_step_m),
            ("velocity_margin", m.velocity_margin),
            // The planner refuses 0 on every action (before session 45 a set to 0 passed
            // here and every later action failed).
            ("approach_height_m", m.approach_height_m),
            ("lift_height_m", m.lift_height_m),
        ] {
            anyhow::ensure!(
                v.is_finite() && v > 0.0,
                "motion.{name} must be > 0 (is {v})"
            );
        }
        anyhow::ensure!(
            m.joint_speed_fraction <= 1.0 && m.velocity_margin <= 1.0,
            "motion.joint_speed_fraction and motion.velocity_margin must be ≤ 1"
        );
        // Each sample is an IK solve, made inside the node's loop (the e-stop waits on it):
        // 1e-9 m, a live set, was 1e8 solves for a 10 cm line (a review finding, session 53).
        anyhow::ensure!(
            m.path_step_m >= crate::robot::motion::MIN_PATH_STEP_M,
            "motion.path_step_m must be ≥ {} m (is {}): each step is an IK solve",
            crate::robot::motion::MIN_PATH_STEP_M,
            m.path_step_m
        );
        for (name, v) in [
            ("grasp_settle_s", m.grasp_settle_s),
            ("release_settle_s", m.release_settle_s),
            ("table_clearance", config.envelope.table_clearance),
        ] {
            anyhow::ensure!(v.is_finite() && v >= 0.0, "{name} must be ≥ 0 (is {v})");
        }
        Ok(())
    }

    fn declared(config: &ExecutorConfig) -> Option<serde_yaml::Value> {
        serde_yaml::to_value(config).ok()
    }

    fn new(config: ExecutorConfig) -> anyhow::Result<Self> {
        Self::validate(&config)?;
        let arm = arm_of(&config)?;
        Ok(Self { config, arm })
    }

    async fn run<B: Bus>(mut self, ctx: NodeContext<B>) -> anyhow::Result<()> {
        let mut param_changes = ctx.params.watch();
        let topics = self.config.topics.clone();
        let t = &topics;
        let mut actions = ctx
            .bus
            .subscribe::<KeypointAction>(&t.action, Qos::keep_last(1))?;
        let mut joints = ctx
            .bus
            .subscribe::<JointState>(&t.joint_states, Qos::keep_last(1))?;
        let mut depths = ctx.bus.subscribe::<Image>(&t.depth, Qos::stream(1))?;
        // The goal depth, the camera info and the e-stop are read whatever their
        // publisher's durability (`Bus::subscribe_any_durability`): latched (the camera
        // node, the sim, a latched e-stop) or volatile (a driver or ros_gz_bridge
        // publishing the camera info with each frame, an rclcpp
        // `create_publisher<Bool>("/estop", 10)`), which a transient-local reader alone
        // does not match. Before session 42 a volatile e-stop was not heard, before
        // session 46 a volatile camera info was not (the built-in intrinsics were kept
        // without a word), before session 47 a volatile goal depth was not.
        let mut goal_depths = ctx
            .bus
            .subscribe_any_durability::<Image>(&t.goal_depth, 1)?;
        let mut goal_images = (!t.goal.is_empty())
            .then(|| ctx.bus.subscribe_any_durability::<Image>(&t.goal, 1))
            .transpose()?;
        // The newest goal image's stamp and when it came, and the goal stamp whose missing
        // depth was last said.
        let mut goal_image_at: Option<(i64, std::time::Instant)> = None;
        let mut goal_without_depth_said: Option<i64> = None;
        let mut infos = ctx
            .bus
            .subscribe_any_durability::<CameraInfo>(&t.camera_info, 1)?;
        let mut camera = self.config.camera(None);
        let mut estop = ctx.bus.subscribe_any_durability::<Bool>(&t.estop, 5)?;
        // The end of an episode (the sim's `scored` or next `reset`) frees the arm at once;
        // otherwise the trajectory's duration on the wall clock does (a sim running faster
        // than real time would else see its next action refused as "busy").
        let mut episode_events = ctx
            .bus
            .subscribe::<EpisodeEvent>(&t.episode, Qos::keep_last(100))?;
        let traj_pub = ctx
            .bus
            .publisher::<JointTrajectory>(&t.trajectory, Qos::keep_last(1))?;
        let episode_pub = ctx
            .bus
            .publisher::<EpisodeEvent>(&t.episode, Qos::keep_last(100))?;
        // Latched, so that an RViz started later still shows the last action.
        let markers = if t.markers.is_empty() {
            None
        } else {
            Some(
                ctx.bus
                    .publisher::<MarkerArray>(&t.markers, Qos::latched())?,
            )
        };
        let names = self.arm.joint_names();
        // Trajectories as FollowJointTrajectory goals: each goal's outcome comes back on
        // `outcomes` with its number, so that the outcome of a goal given up (e-stop, the
        // episode's end) is not taken for the current one's.
        let client = match self.config.trajectory_action.as_deref() {
            Some(a) if !a.is_empty() => Some(ctx.bus.trajectory_client(a)?),
            _ => None,
        };
        let (outcome_tx, mut outcomes) =
            tokio::sync::mpsc::unbounded_channel::<(u64, crate::bus::ActionOutcome)>();
        // Which goal the controller accepted (its number): the gripper's times count from
        // then.
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel::<u64>();
        // The gripper (`gripper_action`, [`GripperRun`]): a failure of the running action's
        // gripper ends it `failed` instead of `action_finished`.
        let (grip_tx, mut grip_outcomes) = tokio::sync::mpsc::unbounded_channel::<GripOutcome>();
        let mut gripper = match self.config.gripper_action.as_deref() {
            Some(a) if !a.is_empty() => Some(GripperRun {
                client: ctx.bus.gripper_client(
                    a,
                    &match self.config.gripper_action_type {
                        GripperActionType::GripperCommand => crate::bus::GripperKind::Command,
                        GripperActionType::ParallelGripperCommand => {
                            crate::bus::GripperKind::Parallel {
                                joint: self.config.gripper.joint.clone(),
                            }
                        }
                    },
                )?,
                outcomes: grip_tx,
                action: 0,
                plan: Vec::new(),
                due: Default::default(),
                sent: 0,
                awaited: None,
                failed: None,
                ending: None,
            }),
            _ => None,
        };
        let mut actions_started = 0u64;
        let (mut goals_sent, mut goal): (u64, Option<PendingGoal>) = (0, None);
        let mut q: Vec<f64> = READY.to_vec();
        let mut ignoring_joints = false;
        // Whether `table_check: warn` has said that the depth shows no table.
        let mut table_unseen_said = false;
        // The optical frame of the camera info in use, and the (depth, camera) frames whose
        // mismatch was said.
        let mut camera_frame = String::new();
        let mut frames_warned: Option<(String, String)> = None;
        if self.config.base_from_camera_xyz.is_none() && !self.config.episode_end_frees_arm {
            // Set up for a real arm (nothing frees it at an episode's end) with the
            // built-in world's camera pose: right only for that world.
            tracing::warn!(node = %ctx.name, "no hand-eye pose (base_from_camera_xyz / _xyzw): the built-in world's camera pose is used, which is wrong for a real camera");
        }
        if self.config.finger_joint.is_empty() && gripper.is_none() {
            tracing::warn!(node = %ctx.name, "finger_joint is empty and no gripper_action is set: trajectories carry the arm's joints alone and nothing closes a gripper");
        }
        // The finger joint's last reported position (the e-stop's hold keeps it).
        let mut finger: Option<f64> = None;
        // When (bus time, ns) the last usable arm joint state came.
        let mut q_at: Option<i64> = None;
        // The ready pose assumed for want of a joint state (check off) was said.
        let mut ready_assumed_said = false;
        let (mut depth, mut goal_depth): (Option<DepthImage>, Option<DepthImage>) = (None, None);
        // The goal depth's stamp and when it came: a late copy of an earlier one (read
        // through the other reader of `subscribe_any_durability`) does not replace it.
        let mut goal_depth_at: Option<(i64, std::time::Instant)> = None;
        let take_goal_depth =
            |m: &Image,
             held: &mut Option<DepthImage>,
             at: &mut Option<(i64, std::time::Instant)>| {
                let stamp = m.header.stamp.as_nanos();
                if crate::bus::late_copy(stamp, *at) {
                    return;
                }
                match decode_depth(m) {
                    Ok(d) => {
                        *held = Some(d);
                        *at = Some((stamp, std::time::Instant::now()));
                    }
                    Err(e) => tracing::warn!(node = %ctx.name, "goal depth ignored: {e}"),
                }
            };
        let mut stopped = false;
        // The e-stop's last value through each of its readers: engaged while any says
        // so. A latched publisher's `true` and `false` come through all of them, in either
        // order relative to each other, and `Bool` has no stamp to order them by: taking
        // the last message of either could release the arm for the moment between a stale
        // `false` and the fresh `true`. With two publishers (one latched, one volatile),
        // either engages it.
        let mut estop_says = [false; crate::bus::AnyDurability::<Bool>::READERS];
        // The running trajectory's end in bus time (sim time under `use_sim_time`). Before
        // session 42 the end was a wall-clock instant: a simulator slower than real time got
        // `action_finished` mid-motion.
        let mut busy_until: Option<BusDeadline> = None;
        // The episode the events belong to (from the last `reset`), so that a recording
        // pairs each action with its episode's score.
        let current = std::sync::atomic::AtomicU32::new(0);
        let current_task = std::sync::Mutex::new(String::new());
        let event = |name: &str, detail: String| EpisodeEvent {
            header: Header {
                stamp: ctx.bus.clock().now(),
                frame_id: String::new(),
            },
            episode: current.load(std::sync::atomic::Ordering::Relaxed),
            task: current_task.lock().expect("task lock").clone(),
            event: name.into(),
            score: f64::NAN,
            detail,
            ..Default::default()
        };
        // The action's end: `action_finished`, or `failed` with the reason.
        let action_end = |r: Result<(), String>| match r {
            Ok(()) => event(EpisodeEvent::EVENT_ACTION_FINISHED, String::new()),
            Err(why) => event(EpisodeEvent::EVENT_FAILED, why),
        };
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                _ = wake_at(busy_until.map(|d| d.look)) => {
                    let Some(d) = busy_until.as_mut() else { continue };
                    let (reached, back) = d.look_at(ctx.bus.clock().now().as_nanos());
                    if let Some(back) = back {
                        tracing::warn!(node = %ctx.name, "the clock went back by {back:.3} s; the motion keeps its remaining time");
                    }
                    if reached {
                        let end_ns = d.end;
                        busy_until = None;
                        let now = ctx.bus.clock().now().as_nanos();
                        let end = match gripper.as_mut() {
                            Some(g) => g.arm_ended(end_ns, now, self.config.result_timeout_s),
                            None => Some(Ok(())),
                        };
                        if let Some(r) = end {
                            let _ = episode_pub.publish(action_end(r));
                        }
                    }
                }
                _ = wake_at(goal.as_ref().and_then(|g| g.deadline).map(|d| d.look)) => {
                    let Some(d) = goal.as_mut().and_then(|g| g.deadline.as_mut()) else { continue };
                    let (reached, back) = d.look_at(ctx.bus.clock().now().as_nanos());
                    if let Some(back) = back {
                        tracing::warn!(node = %ctx.name, "the clock went back by {back:.3} s; the wait for the controller's result keeps its remaining time");
                    }
                    if reached {
                        // The controller never answered: cancel the goal (the arm holds
                        // if the controller still runs it) and free the executor.
                        let sequence = goal.as_ref().is_some_and(|g| g.sequence.is_some());
                        give_up(&mut goal);
                        if let Some(g) = gripper.as_mut() {
                            g.abandon();
                        }
                        if let Some(c) = &client {
                            c.cancel_all();
                        }
                        let t = self.config.result_timeout_s;
                        let why = if sequence {
                            format!(
                                "the motion and its gripper commands had not ended {:.1} s (bus time) after the motion's planned end (4 × result_timeout_s); the step under way was cancelled",
                                4.0 * t
                            )
                        } else {
                            format!(
                                "controller: no result {t:.1} s (bus time) after the trajectory's end; the goal was cancelled (result_timeout_s)"
                            )
                        };
                        tracing::warn!(node = %ctx.name, "{why}");
                        let _ = episode_pub.publish(event(EpisodeEvent::EVENT_FAILED, why));
                    }
                }
                Some((id, outcome)) = outcomes.recv() => {
                    if goal.as_ref().map(|g| g.id) != Some(id) {
                        continue; // a goal given up earlier
                    }
                    let sequence = goal.take().is_some_and(|g| g.sequence.is_some());
                    match outcome {
                        ActionOutcome::Succeeded => {
                            let now = ctx.bus.clock().now().as_nanos();
                            let end = match gripper.as_mut() {
                                Some(g) => g.arm_ended(now, now, self.config.result_timeout_s),
                                None => Some(Ok(())),
                            };
                            if let Some(r) = end {
                                let _ = episode_pub.publish(action_end(r));
                            }
                        }
                        ActionOutcome::Failed(why) if sequence => {
                            tracing::warn!(node = %ctx.name, "the action did not complete: {why}");
                            let _ = episode_pub.publish(event(EpisodeEvent::EVENT_FAILED, why));
                        }
                        ActionOutcome::Failed(why) => {
                            if let Some(g) = gripper.as_mut() {
                                g.abandon();
                            }
                            tracing::warn!(node = %ctx.name, "the controller did not complete the trajectory: {why}");
                            let _ = episode_pub.publish(event(EpisodeEvent::EVENT_FAILED, format!("controller: {why}")));
                        }
                    }
                }
                Some(id) = accepted.recv() => {
                    // The motion started: the gripper's commands fall due from now.
                    if let (Some(g), true) = (gripper.as_mut(), goal.as_ref().map(|g| g.id) == Some(id)) {
                        g.started(ctx.bus.clock().now().as_nanos());
                    }
                }
                _ = wake_at(gripper.as_ref().and_then(|g| g.look())) => {
                    let Some(g) = gripper.as_mut() else { continue };
                    if let Some(what) = g.poll(ctx.bus.clock().now().as_nanos()) {
                        // The arm has ended, and the gripper never answered its last
                        // command: cancel it and end the action.
                        g.client.cancel_all();
                        let why = format!(
                            "gripper ({}): no result {:.1} s (bus time) after the motion's end; the goal was cancelled (result_timeout_s)",
                            grip_word(what),
                            self.config.result_timeout_s
                        );
                        tracing::warn!(node = %ctx.name, "{why}");
                        let _ = episode_pub.publish(event(EpisodeEvent::EVENT_FAILED, why));
                    }
                }
                Some(o) = grip_outcomes.recv() => {
                    let running = busy_until.is_some() || goal.is_some();
                    if let Some(r) = gripper.as_mut().and_then(|g| g.outcome(o, running)) {
                        let _ = episode_pub.publish(action_end(r));
                    }
                }
                m = estop.recv_from() => {
                    let Some((from, m)) = m else { return Ok(()) };
                    estop_says[from] = m.data;
                    let engaged = estop_says.iter().any(|&e| e);
                    if engaged && !stopped {
                        // A sequence stops first, so that it starts no further step.
                        if let Some(s) = goal.as_ref().and_then(|g| g.sequence.as_ref()) {
                            s.cancel();
                        }
                        // The gripper keeps what it holds; nothing more is sent to it.
                        let gripping = gripper.as_mut().is_some_and(|g| g.estop());
                        match &client {
                            // Cancelling the goal makes the controller hold where it is.
                            Some(c) => c.cancel_all(),
                            // A trajectory that holds the arm where it is replaces the running
                            // one. It names the same joints as the executor's trajectories (the
                            // finger too) and has one point: ros2_controllers' trajectory
                            // controller drops a message with other joints or with no point,
                            // which is what this sent before session 42 (an empty trajectory
                            // of the seven arm joints: the arm went on moving).
                            // While a motion runs it is replaced by the hold, at the last
                            // state known (the motion's start when no state ever came,
                            // with joint_state_max_age_s 0). An idle arm gets the hold only
                            // once a joint state has come (a hold at the ready pose the
                            // executor assumes until then would move an arm it never heard
                            // from), and not in a dry run, which has sent nothing: the
                            // e-stop must not be the first command it sends.
                            None => {
                                let moving = busy_until.is_some() || goal.is_some();
                                if moving || (q_at.is_some() && !self.config.dry_run) {
                                    let _ = traj_pub.publish(hold_trajectory(&names, &q, &self.config.finger_joint, finger));
                                }
                            }
                        }
                        if busy_until.take().is_some() | give_up(&mut goal) | gripping {
                            let _ = episode_pub.publish(event(EpisodeEvent::EVENT_FAILED, "e-stop".into()));
                        }
                        tracing::warn!(node = %ctx.name, "e-stop engaged");
                    }
                    stopped = engaged;
                }
                m = episode_events.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    let ended = m.event == EpisodeEvent::EVENT_SCORED || m.event == EpisodeEvent::EVENT_RESET;
                    let gripping = ended && self.config.episode_end_frees_arm && gripper.as_mut().is_some_and(|g| g.abandon());
                    if ended && self.config.episode_end_frees_arm && (busy_until.take().is_some() | give_up(&mut goal) | gripping) {
                        let _ = episode_pub.publish(event(EpisodeEvent::EVENT_ACTION_FINISHED, String::new()));
                    }
                    if m.event == EpisodeEvent::EVENT_RESET {
                        current.store(m.episode, std::sync::atomic::Ordering::Relaxed);
                        *current_task.lock().expect("task lock") = m.task.clone();
                    }
                }
                m = joints.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    if let Some(f) = finger_of(&m, &self.config.finger_joint) {
                        finger = Some(f);
                    }
                    match arm_positions(&names, &m) {
                        Some(p) => {
                            q = p;
                            q_at = Some(ctx.bus.clock().now().as_nanos());
                            ignoring_joints = false;
                        }
                        // Said once per run of ignored states, not per message (a 1 kHz
                        // broadcaster), and not while the arm's own states keep coming (a
                        // gripper's joint states beside the arm's on one topic: each arm
                        // state ended the run, so the warning came at the gripper's rate).
                        None if warn_ignored_joint_state(ignoring_joints, q_at, ctx.bus.clock().now().as_nanos()) => {
                            ignoring_joints = true;
                            tracing::warn!(node = %ctx.name, "joint state without all of the arm's joints {names:?} (it has {:?}) or with non-finite values; ignored, and states like it until a usable one comes (set joint_names if the driver names them otherwise)", m.name);
                        }
                        None => {}
                    }
                }
                m = depths.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    match decode_depth(&m) {
                        Ok(d) => {
                            // Depth in another optical frame than the colour camera's is
                            // not aligned to the pixels the planner picks (a driver's raw
                            // depth topic): said once per pair of frames.
                            let (df, cf) = (m.header.frame_id.as_str(), camera_frame.as_str());
                            if !df.is_empty() && !cf.is_empty() && df != cf && frames_warned.as_ref().is_none_or(|(d, c)| (d.as_str(), c.as_str()) != (df, cf)) {
                                tracing::warn!(node = %ctx.name, "depth in frame `{df}`, the camera info in `{cf}`: depth must be aligned to the colour image (a driver's aligned topic, e.g. /camera/camera/aligned_depth_to_color/image_raw), or the camera node's frame_id (real_arm.launch.xml camera_frame:=) is not the driver's optical frame");
                                frames_warned = Some((df.to_string(), cf.to_string()));
                            }
                            depth = Some(d)
                        }
                        Err(e) => tracing::warn!(node = %ctx.name, "depth ignored: {e}"),
                    }
                }
                m = infos.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    match check_camera_info(&m) {
                        Ok(()) => {
                            camera = self.config.camera(Some(&m));
                            camera_frame = m.header.frame_id.clone();
                        }
                        Err(e) => tracing::warn!(node = %ctx.name, "camera info ignored: {e}"),
                    }
                }
                m = goal_depths.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    take_goal_depth(&m, &mut goal_depth, &mut goal_depth_at);
                }
                m = actions.recv() => {
                    let Some(action) = m else { return Ok(()) };
                    // Plan from the newest arm state and depth: messages that arrived with
                    // the action may still wait in their queues (a new episode's first
                    // depth frame and ready pose, most of all).
                    while let Some(m) = joints.try_recv() {
                        if let Some(f) = finger_of(&m, &self.config.finger_joint) {
                            finger = Some(f);
                        }
                        if let Some(p) = arm_positions(&names, &m) {
                            q = p;
                            q_at = Some(ctx.bus.clock().now().as_nanos());
                            ignoring_joints = false;
                        }
                    }
                    // No joint state yet: the driver's first one may come just after the
                    // first action (nodes started together, this one subscribed after the
                    // driver's first message). It is waited for a moment instead of the
                    // action being refused at once: under load the built-in world lost its
                    // first episode so (session 44). An e-stop meanwhile still counts first.
                    if self.config.joint_state_max_age_s > 0.0 && q_at.is_none() {
                        let wait = tokio::time::sleep(std::time::Duration::from_secs_f64(FIRST_JOINT_STATE_WAIT_S));
                        tokio::pin!(wait);
                        while q_at.is_none() {
                            tokio::select! {
                                _ = &mut wait => break,
                                _ = ctx.shutdown.cancelled() => return Ok(()),
                                m = joints.recv() => {
                                    let Some(m) = m else { return Ok(()) };
                                    if let Some(f) = finger_of(&m, &self.config.finger_joint) {
                                        finger = Some(f);
                                    }
                                    if let Some(p) = arm_positions(&names, &m) {
                                        q = p;
                                        q_at = Some(ctx.bus.clock().now().as_nanos());
                                        ignoring_joints = false;
                                    }
                                }
                            }
                        }
                        while let Some((from, m)) = estop.try_recv_from() {
                            estop_says[from] = m.data;
                            let engaged = estop_says.iter().any(|&e| e);
                            if engaged && !stopped {
                                tracing::warn!(node = %ctx.name, "e-stop engaged");
                            }
                            stopped = engaged;
                        }
                    }
                    while let Some(m) = depths.try_recv() {
                        if let Ok(d) = decode_depth(&m) {
                            depth = Some(d);
                        }
                    }
                    while let Some(m) = goal_depths.try_recv() {
                        take_goal_depth(&m, &mut goal_depth, &mut goal_depth_at);
                    }
                    while let Some(m) = goal_images.as_mut().and_then(|g| g.try_recv()) {
                        let stamp = m.header.stamp.as_nanos();
                        if !crate::bus::late_copy(stamp, goal_image_at) {
                            goal_image_at = Some((stamp, std::time::Instant::now()));
                        }
                    }
                    // The goal depth of another goal than the one in force (a new goal image
                    // that came without depth) is not used: its heights are another scene's,
                    // and a place pixel read there could release the object in mid-air.
                    // Before session 52 the last goal depth was used with every later goal.
                    let goal_depth_now = match (goal_depth_at, goal_image_at) {
                        (Some((d, _)), Some((g, _))) if d != g => {
                            if goal_without_depth_said != Some(g) {
                                goal_without_depth_said = Some(g);
                                tracing::warn!(node = %ctx.name, "the goal depth (stamp {:.3} s) is not the goal image's (stamp {:.3} s): place points from table_z until a goal depth of the goal's stamp comes", d as f64 * 1e-9, g as f64 * 1e-9);
                            }
                            None
                        }
                        _ => goal_depth.as_ref(),
                    };
                    if let Some(c) = ctx.params.changed::<ExecutorConfig>(&mut param_changes) {
                        tracing::info!(node = %ctx.name, "parameters changed: table_z, envelope, motion, dry_run and table_check from the parameter services apply from now on");
                        if c.dry_run != self.config.dry_run {
                            tracing::warn!(node = %ctx.name, "dry_run is now {}: {}", c.dry_run, if c.dry_run { "actions are planned and shown, not sent" } else { "the next action moves the arm" });
                        }
                        self.config.table_z = c.table_z;
                        self.config.envelope = c.envelope;
                        self.config.motion = c.motion;
                        self.config.dry_run = c.dry_run;
                        self.config.table_check = c.table_check;
                        self.config.table_check_deg = c.table_check_deg;
                        self.config.table_check_cm = c.table_check_cm;
                    }
                    let max_age = self.config.joint_state_max_age_s;
                    let age_s = q_at.map(|t| (ctx.bus.clock().now().as_nanos() - t) as f64 * 1e-9);
                    // Where the pixels reached 3D, for the markers (a refusal before the
                    // plan, busy or stopped, shows nothing).
                    let mut points = None;
                    // Busy first: a refusal for any other reason then means the arm is idle
                    // (the planner node counts on it).
                    let result = if stopped {
                        Err(Rejection::EStopped)
                    } else if busy_until.is_some() || goal.is_some() || gripper.as_ref().is_some_and(|g| g.ending.is_some()) {
                        Err(Rejection::Planning(BUSY.into()))
                    } else if max_age > 0.0 && age_s.is_none() {
                        Err(Rejection::Planning(format!(
                            "no joint state with the arm's joints on {} yet: where the arm starts is unknown",
                            self.config.topics.joint_states
                        )))
                    } else if let Some(age) = age_s.filter(|a| max_age > 0.0 && *a < 0.0) {
                        // The bus clock went back past the state's arrival (a bag played
                        // again from its start, a simulator reset): its age says nothing.
                        // Before session 46 a negative age passed as fresh.
                        Err(Rejection::Planning(format!(
                            "the last joint state arrived {:.2} s after now: the clock went back; send the action again once a joint state of the new time has come",
                            -age
                        )))
                    } else if let Some(age) = age_s.filter(|a| max_age > 0.0 && *a > max_age) {
                        Err(Rejection::Planning(format!(
                            "the last joint state is {age:.2} s old (joint_state_max_age_s {max_age}): where the arm starts is not known"
                        )))
                    } else {
                        if q_at.is_none() && !ready_assumed_said {
                            // With the check off nothing refuses this; a misnamed topic or
                            // joint_names would otherwise start every plan from a pose the
                            // arm may not be in, unsaid (a review finding, session 53).
                            ready_assumed_said = true;
                            tracing::warn!(node = %ctx.name, "no joint state with the arm's joints has come on {}: planning from the ready pose (joint_state_max_age_s 0 turns the check off); a controller told to start there jumps the arm to it", self.config.topics.joint_states);
                        }
                        // Planned even when the table check refuses: its points are
                        // shown (in red) where the action would have gone.
                        let table = self.table_refusal(&ctx.name, &camera, depth.as_ref(), &mut table_unseen_said);
                        let (p, planned) = self.plan(&camera, &action, depth.as_ref(), goal_depth_now, &q);
                        points = p;
                        match table {
                            Some(why) => Err(Rejection::Planning(why)),
                            None => planned,
                        }
                    };
                    // A trajectory published where nothing listens (`topics.trajectory` not
                    // the controller's topic, or the controller not running) went nowhere,
                    // and the action was reported started, then finished after its duration:
                    // a bag recorded a motion the arm never made (a review finding, session
                    // 52). Refused where the bus can tell; a dry run sends nothing.
                    let result = match result {
                        Ok(_) if !self.config.dry_run && client.is_none() && traj_pub.subscriber_count() == Some(0) => Err(Rejection::Planning(format!(
                            "{NO_CONTROLLER} {}: nothing was sent (is the arm's trajectory controller running, and topics.trajectory its joint_trajectory topic?)",
                            traj_pub.topic()
                        ))),
                        other => other,
                    };
                    let stamp = ctx.bus.clock().now();
                    match result {
                        Ok(planned) if self.config.dry_run => {
                            let duration = planned.trajectory.points.last().map_or(0.0, |p| p.time_from_start.as_secs_f64());
                            let label = format!("dry run: {} ({duration:.1} s), not sent", action.raw_text);
                            if let Some(p) = points {
                                self.show(markers.as_ref(), stamp, p, &planned.path, Shown::DryRun, &label, &camera);
                            }
                            tracing::info!(node = %ctx.name, "{label}");
                            episode_pub.publish(event(EpisodeEvent::EVENT_FAILED, format!("{DRY_RUN}: {} planned and checked ({duration:.1} s), nothing sent to the arm or the gripper", action.raw_text)))?;
                        }
                        Ok(Planned { trajectory: traj, times, path }) => {
                            if let Some(p) = points {
                                self.show(markers.as_ref(), stamp, p, &path, Shown::Sent, &action.raw_text, &camera);
                            }
                            tracing::debug!(node = %ctx.name, "planned {:?} from q {:?}", (action.source_u, action.source_v, action.target_u, action.target_v), q);
                            let duration = traj.points.last().map_or(0.0, |p| p.time_from_start.as_secs_f64());
                            // Stamp 0, "start now": a trajectory controller takes a
                            // stamp as the start time on its own clock, so a stamp from a
                            // host whose clock is off would start it mid-way or late
                            // (before session 48 the executor's clock stamped it).
                            let mut traj = traj;
                            traj.header.stamp = Default::default();
                            actions_started += 1;
                            if let Some(g) = gripper.as_mut() {
                                // Timed by the plan, unless the sequence below waits for each.
                                let timed = if self.config.wait_for_gripper { Vec::new() } else { self.grip_commands(times) };
                                g.begin(actions_started, timed);
                            }
                            match &client {
                                Some(c) if self.config.wait_for_gripper => {
                                    // Open (waited for), to the grasp, close (waited for),
                                    // on to the release, open (waited for), the retreat.
                                    let g = gripper.as_ref().expect("validated: a gripper action");
                                    let mut pieces = split_trajectory(&traj, &[times.grasp_s, times.release_s]).into_iter();
                                    let mut steps = Vec::new();
                                    for (_, command, what) in self.grip_commands(times) {
                                        steps.push(Step::Grip(command, what));
                                        steps.extend(pieces.next().map(Step::Move));
                                    }
                                    goals_sent += 1;
                                    let stop = tokio_util::sync::CancellationToken::new();
                                    let (id, tx) = (goals_sent, outcome_tx.clone());
                                    let run = run_steps(steps, c.clone(), g.client.clone(), stop.clone());
                                    tokio::spawn(async move {
                                        let _ = tx.send((id, run.await));
                                    });
                                    let timeout = self.config.result_timeout_s;
                                    let deadline = (timeout > 0.0).then(|| BusDeadline::after(ctx.bus.clock().now().as_nanos(), duration + 4.0 * timeout));
                                    goal = Some(PendingGoal { id, deadline, sequence: Some(stop) });
                                }
                                Some(c) => {
                                    goals_sent += 1;
                                    let (start_tx, started) = tokio::sync::oneshot::channel();
                                    let (id, done, tx) = (goals_sent, c.follow(traj, start_tx), outcome_tx.clone());
                                    tokio::spawn(async move {
                                        let _ = tx.send((id, done.await));
                                    });
                                    let accepted_tx = accepted_tx.clone();
                                    tokio::spawn(async move {
                                        if started.await.is_ok() {
                                            let _ = accepted_tx.send(id);
                                        }
                                    });
                                    let timeout = self.config.result_timeout_s;
                                    let deadline = (timeout > 0.0).then(|| BusDeadline::after(ctx.bus.clock().now().as_nanos(), duration + timeout));
                                    goal = Some(PendingGoal { id, deadline, sequence: None });
                                }
                                None => {
                                    traj_pub.publish(traj)?;
                                    let now = ctx.bus.clock().now().as_nanos();
                                    busy_until = Some(BusDeadline::after(now, duration));
                                    if let Some(g) = gripper.as_mut() {
                                        g.started(now);
                                    }
                                }
                            }
                            episode_pub.publish(event(EpisodeEvent::EVENT_ACTION_STARTED, action.raw_text.clone()))?;
                        }
                        Err(reason) => {
                            if let Some(p) = points {
                                self.show(markers.as_ref(), stamp, p, &[], Shown::Refused, &format!("refused: {reason}"), &camera);
                            }
                            tracing::warn!(node = %ctx.name, "action refused: {reason}");
                            episode_pub.publish(event(EpisodeEvent::EVENT_FAILED, reason.to_string()))?;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `off` as an rcl params file or launch_ros reads it (YAML 1.1: the boolean false) is
    /// `off`; `true` and unknown names are refused naming the choices.
    #[test]
    fn table_check_off_may_come_as_false() {
        let read = |v: &str| serde_yaml::from_str::<ExecutorConfig>(&format!("table_check: {v}\n"));
        assert_eq!(read("false").unwrap().table_check, TableCheck::Off);
        assert_eq!(read("off").unwrap().table_check, TableCheck::Off);
        assert_eq!(read("refuse").unwrap().table_check, TableCheck::Refuse);
        for bad in ["true", "never"] {
            let e = read(bad).unwrap_err().to_string();
            assert!(e.contains("want warn, refuse or off"), "{bad}: {e}");
        }
    }

    /// A gripper's joint states between the arm's are not warned about; states that never
    /// carry the arm's joints (another naming: set joint_names), or that come once the
    /// arm's have stopped, are, once per run.
    #[test]
    fn joint_states_without_the_arm_are_warned_about_only_when_the_arm_s_stopped_coming() {
        let s = 1_000_000_000i64;
        assert!(!warn_ignored_joint_state(
            false,
            Some(10 * s),
            10 * s + s / 2
        ));
        assert!(warn_ignored_joint_state(false, None, 10 * s));
        assert!(warn_ignored_joint_state(false, Some(10 * s), 12 * s));
        assert!(!warn_ignored_joint_state(true, None, 10 * s));
        // A clock that went back is no sign that the arm's states stopped.
        assert!(!warn_ignored_joint_state(false, Some(10 * s), 5 * s));
    }

    /// The finger closes over the grasp dwell and opens over the release dwell, in every
    /// plan: never over the last descent or lowering segment, whichever way a point's time
    /// rounded to nanoseconds (before session 53, about half the plans closed early).
    #[test]
    fn the_finger_switches_over_the_dwells_in_every_plan() {
        let arm = crate::robot::franka::default_arm();
        let motion = PickPlaceParams::default();
        let mut checked = 0;
        for i in 0..24 {
            let a = f64::from(i) * 0.37;
            let pick = nalgebra::Point3::new(0.45 + 0.1 * a.sin(), 0.12 * a.cos(), 0.01);
            let place = nalgebra::Point3::new(0.5 - 0.08 * a.cos(), -0.1 * (2.0 * a).sin(), 0.01);
            let Ok(plan) =
                plan_pick_place(&arm, &crate::robot::franka::READY, &pick, &place, &motion)
            else {
                continue;
            };
            let traj = with_finger_column(&plan);
            let finger = |k: usize| *traj.points[k].positions.last().unwrap();
            let at = |time: f64| {
                traj.points
                    .iter()
                    .position(|p| (p.time_from_start.as_secs_f64() - time).abs() < 1e-6)
                    .unwrap()
            };
            let (g, r) = (at(plan.grasp_time_s), at(plan.release_time_s));
            assert_eq!(
                (finger(g - 1), finger(g), finger(g + 1)),
                (0.04, 0.04, 0.0),
                "plan {i}: grasp"
            );
            assert_eq!(
                (finger(r - 1), finger(r), finger(r + 1)),
                (0.0, 0.0, 0.04),
                "plan {i}: release"
            );
            // The dwells: the arm stands still while the finger moves.
            assert_eq!(
                traj.points[g].positions[..7],
                traj.points[g + 1].positions[..7]
            );
            assert_eq!(
                traj.points[r].positions[..7],
                traj.points[r + 1].positions[..7]
            );
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} plans");
    }

    /// A driver's 16UC1 depth (millimetres, 0 for no measurement) reads as the same metres
    /// as 32FC1, in either byte order; other encodings and sizes are refused by name.
    #[test]
    fn depth_reads_in_metres_from_millimetres_or_metres() {
        let image = |encoding: &str, big: bool, data: Vec<u8>, step: u32| Image {
            width: 2,
            height: 1,
            encoding: encoding.into(),
            is_bigendian: big as u8,
            step,
            data,
            ..Default::default()
        };
        let mm = [1250u16, 0];
        let le: Vec<u8> = mm.iter().flat_map(|v| v.to_le_bytes()).collect();
        let be: Vec<u8> = mm.iter().flat_map(|v| v.to_be_bytes()).collect();
        for img in [image("16UC1", false, le, 4), image("16UC1", true, be, 4)] {
            let d = decode_depth(&img).unwrap().data;
            assert_eq!(d[0], 1.25);
            assert!(d[1].is_nan(), "0 mm is no measurement");
        }
        let m: Vec<u8> = [1.25f32, 0.5]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        assert_eq!(
            decode_depth(&image("32FC1", true, m, 8)).unwrap().data,
            [1.25, 0.5]
        );
        let e = decode_depth(&image("mono8", false, vec![0; 2], 2)).unwrap_err();
        assert!(e.contains("depth encoding mono8 is neither"), "{e}");
        let e = decode_depth(&image("16UC1", false, vec![0; 2], 2)).unwrap_err();
        assert!(e.contains("want step ≥ 4"), "{e}");
        // Padded rows (step 6 for 4 bytes of pixels), the last row padded or not: read
        // row by row (refused before session 53).
        for tail in [2, 0] {
            let mut data = vec![0xE2, 0x04, 0x00, 0x00, 0xAA, 0xBB]; // 1250 mm, none, padding
            data.extend([0xF4, 0x01, 0xE8, 0x03]); // 500 mm, 1000 mm
            data.extend(std::iter::repeat_n(0xCC, tail));
            let img = Image {
                width: 2,
                height: 2,
                encoding: "16UC1".into(),
                step: 6,
                data,
                ..Default::default()
            };
            let d = decode_depth(&img).unwrap().data;
            assert_eq!((d[0], d[2], d[3]), (1.25, 0.5, 1.0), "tail {tail}");
            assert!(d[1].is_nan());
        }
        // Too short for its step and height.
        let short = Image {
            width: 2,
            height: 2,
            encoding: "16UC1".into(),
            step: 6,
            data: vec![0; 9],
            ..Default::default()
        };
        assert!(decode_depth(&short)
            .unwrap_err()
            .contains("step 6 and 9 bytes"));
    }

    #[test]
    fn envelope_settings_that_would_disable_a_check_or_panic_are_refused() {
        let ok = ExecutorConfig::default();
        ExecutorNode::validate(&ok).unwrap();
        let with = |f: &dyn Fn(&mut ExecutorConfig)| {
            let mut c = ExecutorConfig::default();
            f(&mut c);
            ExecutorNode::validate(&c).unwrap_err().to_string()
        };
        let e = with(&|c| c.envelope.joint_margin = f64::NAN);
        assert!(e.contains("envelope.joint_margin must be ≥ 0"), "{e}");
        let e = with(&|c| c.envelope.point_margin = -0.1);
        assert!(e.contains("envelope.point_margin must be ≥ 0"), "{e}");
        let e = with(&|c| c.motion.path_step_m = 1e-9);
        assert!(
            e.contains("motion.path_step_m must be ≥ 0.0001 m (is 0.000000001)"),
            "{e}"
        );
        let e = with(&|c| c.envelope.table_z = f64::INFINITY);
        assert!(e.contains("envelope.table_z must be a height"), "{e}");
        let e = with(&|c| c.table_z = f64::NAN);
        assert!(e.starts_with("table_z must be a height"), "{e}");
        // A NaN timeout would never be reached and a negative one would give up at once.
        let e = with(&|c| c.result_timeout_s = f64::NAN);
        assert!(e.starts_with("result_timeout_s must be 0–86400 s"), "{e}");
        let e = with(&|c| c.result_timeout_s = -1.0);
        assert!(e.starts_with("result_timeout_s must be 0–86400 s"), "{e}");
        let e = with(&|c| c.result_timeout_s = 1e12);
        assert!(e.starts_with("result_timeout_s must be 0–86400 s"), "{e}");
        // Wider than half the box: the clamp's bounds crossed, and the executor panicked.
        let e = with(&|c| {
            c.envelope.point_margin = 0.3;
            c.envelope.out_of_bounds = crate::robot::safety::OutOfBounds::Clamp;
        });
        assert!(e.contains("no room for pick and place points"), "{e}");
        // What the validation lets through, the motion planner plans: a lift or approach
        // of 0 passed here and was refused on every action.
        for f in [
            (|c: &mut ExecutorConfig| c.motion.lift_height_m = 0.0) as fn(&mut ExecutorConfig),
            |c| c.motion.approach_height_m = 0.0,
        ] {
            let e = with(&f);
            assert!(e.contains("_height_m must be > 0"), "{e}");
        }
    }

    /// A gripper run by a GripperCommand server and by the trajectory's finger column at
    /// once would get two commands; positions that cannot close it, or a NaN, are refused.
    #[test]
    fn gripper_settings_that_would_command_it_twice_or_never_are_refused() {
        let with = |yaml: &str| {
            let c: ExecutorConfig = serde_yaml::from_str(yaml).unwrap();
            ExecutorNode::validate(&c).map_err(|e| e.to_string())
        };
        let action = "gripper_action: /gripper_controller/gripper_cmd\n";
        let e = with(action).unwrap_err();
        assert!(
            e.contains("gripper_action and finger_joint `panda_finger_joint1` both"),
            "{e}"
        );
        // No default positions: the Panda's would open a Robotiq when told to close.
        let e = with(&format!("{action}finger_joint: ''\n")).unwrap_err();
        assert!(
            e.contains("gripper_action needs gripper.open_position and gripper.closed_position"),
            "{e}"
        );
        let both = "gripper: {open_position: 0.0, closed_position: 0.8}\n";
        with(&format!("{action}finger_joint: ''\n{both}")).unwrap();
        // Without a gripper action the gripper settings are not used, and not checked.
        with("gripper: {open_position: 0.0, closed_position: 0.0}\n").unwrap();
        let e = with(&format!(
            "{action}finger_joint: ''\ngripper: {{open_position: 0.5, closed_position: 0.5}}\n"
        ))
        .unwrap_err();
        assert!(e.contains("would never close"), "{e}");
        let e = with(&format!(
            "{action}finger_joint: ''\ngripper: {{open_position: 0.0, closed_position: .nan}}\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("gripper.closed_position must be a number"),
            "{e}"
        );
        let e = with(&format!(
            "{action}finger_joint: ''\ngripper: {{open_position: 0.0, closed_position: 0.8, max_effort: -1.0}}\n"
        ))
        .unwrap_err();
        assert!(e.contains("gripper.max_effort must be ≥ 0"), "{e}");
        // Waiting for the gripper needs a controller that says when the arm has arrived.
        let e = with(&format!(
            "{action}finger_joint: ''\n{both}wait_for_gripper: true\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("wait_for_gripper needs trajectory_action"),
            "{e}"
        );
        with(&format!(
            "{action}finger_joint: ''\n{both}wait_for_gripper: true\ntrajectory_action: /arm/fjt\n"
        ))
        .unwrap();
    }

    #[test]
    fn a_goal_depth_of_another_size_than_the_camera_is_refused() {
        let config = ExecutorConfig::default();
        let camera = config.camera(None);
        let plane = |w: u32, h: u32| DepthImage {
            width: w,
            height: h,
            data: vec![1.0; (w * h) as usize],
        };
        let depth = plane(camera.width, camera.height);
        let action = KeypointAction {
            source_u: 128.0,
            source_v: 128.0,
            target_u: 100.0,
            target_v: 100.0,
            ..Default::default()
        };
        let arm = default_arm();
        let small = plane(camera.width / 2, camera.height / 2);
        let e = plan_action(
            &config,
            &arm,
            &camera,
            &action,
            Some(&depth),
            Some(&small),
            &READY,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("goal depth image is 128x128"), "{e}");
    }
}
