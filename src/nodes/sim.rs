//! Sim node: the built-in world on the bus, standing in for a camera, an arm and a scorer.
//!
//! Publishes camera images, depth and object-only frames, latched camera info, goal image
//! and goal depth, joint states and episode events (`reset`, `scored`); executes
//! `trajectory_msgs/JointTrajectory` messages on its arm. The gripper follows the
//! trajectory's `panda_finger_joint1` column when there is one (below 0.02 m = closed), the
//! convention of a Franka hand driven through the same trajectory.

use std::time::Duration;

use nalgebra::Point3;
use serde::{Deserialize, Serialize};

use super::{Node, NodeContext};
use crate::bus::{Bus, BusError, Qos};
use crate::msg::prelude::*;
use crate::render::{render, render_modes, scene, Frame, RenderMode, RenderOptions};
use crate::robot::motion::{sample_positions, trajectory_segment};
use crate::robot::ArmModel;
use crate::sim::episode::{arm_goal, between_fingers, default_arm, READY};
use crate::sim::tasks::{reset, score, Task};
use crate::sim::World;

/// Name of the finger joint carried in trajectories and joint states.
pub const FINGER_JOINT: &str = "panda_finger_joint1";
/// Finger opening (m) below which the gripper counts as closed.
pub const FINGER_CLOSED_BELOW: f64 = 0.02;

/// How many of the bus's delivery times ([`Bus::settle`]) the simulator waits for its last
/// `scored` to come back to its own subscription before it returns.
const LOOPBACK_SETTLES: u32 = 10;

/// Returns once `events` yields the `scored` event of `episode` of `task`.
async fn scored_arrives(
    events: &mut crate::bus::Subscriber<EpisodeEvent>,
    episode: u32,
    task: &str,
) {
    while let Some(e) = events.recv().await {
        if e.event == EpisodeEvent::EVENT_SCORED && e.episode == episode && e.task == task {
            return;
        }
    }
}

/// Task names as they appear in configs.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskName {
    /// Rope straightening.
    Rope,
    /// Cloth folding.
    Cloth,
    /// Plush toy limb repositioning.
    Toy,
}

impl From<TaskName> for Task {
    fn from(t: TaskName) -> Task {
        match t {
            TaskName::Rope => Task::Rope,
            TaskName::Cloth => Task::Cloth,
            TaskName::Toy => Task::Toy,
        }
    }
}

/// Topic names of the sim node.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimTopics {
    /// Camera images (rgb8).
    pub image: String,
    /// Depth images (32FC1, metres).
    pub depth: String,
    /// Camera info (latched).
    pub camera_info: String,
    /// Object-only frames (arm not drawn).
    pub object_only: String,
    /// Goal image (latched).
    pub goal: String,
    /// Goal depth (latched).
    pub goal_depth: String,
    /// Joint states.
    pub joint_states: String,
    /// Joint trajectories to execute.
    pub trajectory: String,
    /// Episode events.
    pub episode: String,
}

impl Default for SimTopics {
    fn default() -> Self {
        Self {
            image: "/camera/image_raw".into(),
            depth: "/camera/depth/image_raw".into(),
            camera_info: "/camera/camera_info".into(),
            object_only: "/camera/object_only".into(),
            goal: "/goal/image".into(),
            goal_depth: "/goal/depth".into(),
            joint_states: "/joint_states".into(),
            trajectory: "/arm/joint_trajectory".into(),
            episode: "/dreamplan/episode".into(),
        }
    }
}

/// Sim parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Which task.
    pub task: TaskName,
    /// Seed of the first episode (episode k uses seed + k).
    pub seed: u64,
    /// Episodes to run (0 = until stopped).
    pub episodes: u32,
    /// Image size.
    pub width: u32,
    /// Image size.
    pub height: u32,
    /// Camera frames per second (simulated time).
    pub camera_rate_hz: f64,
    /// Joint-state messages per second (simulated time).
    pub joint_state_rate_hz: f64,
    /// Physics step (s).
    pub dt: f64,
    /// Pace simulated time to the wall clock (false: as fast as the machine goes).
    pub realtime: bool,
    /// Seconds simulated after a trajectory ends before the episode is scored.
    pub settle_s: f64,
    /// Particles this close to the TCP horizontally (down to
    /// [`crate::sim::episode::FINGER_REACH`] below it) are held when the gripper closes (m).
    pub grasp_radius: f64,
    /// Wall-clock seconds to wait before the first episode, so that planners, executors
    /// and recorders started alongside have subscribed when its `reset` goes out (episode
    /// events are not latched).
    pub start_delay_s: f64,
    /// With N > 0: before the first episode, wait until N subscribers listen on the goal
    /// image topic (the planner's, a recorder's) instead of the whole `start_delay_s`, which
    /// then bounds the wait; after it the sim starts anyway, with a warning. A bus that
    /// cannot count subscribers waits `start_delay_s`. Exact in process (one per node);
    /// over DDS readers are counted, and a dreamplan planner or verifier reads the goal
    /// through three (`Bus::subscribe_any_durability`), so it counts three times; there the
    /// readers of other processes count once discovery has announced them, which does not
    /// yet mean that their process's other endpoints are matched (docs/ros2.md): across
    /// processes keep a delay that covers discovery.
    pub wait_for_subscribers: u32,
    /// The camera to render through instead of the built-in one (`render::CameraSpec`:
    /// a calibration and its pose in the arm's base frame, scaled to `width`×`height`),
    /// e.g. to make bags as a real arm's camera would see the scene. The executor then
    /// needs the same pose (`base_from_camera_xyz` / `_xyzw`); it reads the intrinsics from
    /// the camera info the sim publishes. Unset: the built-in camera.
    pub camera: Option<crate::render::CameraSpec>,
    /// Topic names.
    pub topics: SimTopics,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            task: TaskName::Rope,
            seed: 0,
            episodes: 1,
            width: 256,
            height: 256,
            camera_rate_hz: 10.0,
            joint_state_rate_hz: 50.0,
            dt: 1.0 / 60.0,
            realtime: true,
            settle_s: 1.0,
            grasp_radius: 0.012,
            start_delay_s: 0.5,
            wait_for_subscribers: 0,
            camera: None,
            topics: SimTopics::default(),
        }
    }
}

/// Resolves when `publisher`'s topic has `wanted` subscribers (then after a 1-s grace,
/// in which their node's other subscriptions are matched too), or when `max_s` seconds
/// have passed: at once with `wanted` 0, or where the bus cannot count them.
async fn wait_for_subscribers<M: crate::msg::Message>(
    publisher: &crate::bus::Publisher<M>,
    wanted: u32,
    max_s: f64,
    node: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(max_s);
    if wanted == 0 || publisher.subscriber_count().is_none() {
        tokio::time::sleep_until(deadline).await;
        return;
    }
    let t0 = std::time::Instant::now();
    loop {
        let n = publisher.subscriber_count().unwrap_or(0);
        if n >= wanted as usize {
            tracing::info!(
                node,
                "{n} subscriber(s) on {} after {:.1} s: starting",
                publisher.topic(),
                t0.elapsed().as_secs_f64()
            );
            let grace = tokio::time::Instant::now() + Duration::from_secs(1);
            tokio::time::sleep_until(grace.min(deadline)).await;
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                node,
                "{n} of {wanted} subscriber(s) on {} after {max_s} s: starting anyway",
                publisher.topic()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sim node.
pub struct SimNode {
    config: SimConfig,
    arm: ArmModel,
}

/// An `rgb8` image of a frame.
pub(crate) fn rgb_image(frame: &Frame, stamp: &Time, frame_id: &str) -> Image {
    Image {
        header: Header {
            stamp: stamp.clone(),
            frame_id: frame_id.into(),
        },
        height: frame.height,
        width: frame.width,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: frame.width * 3,
        data: frame.rgb.clone(),
    }
}

/// A `32FC1` depth image (metres, little-endian; NaN where nothing was hit).
pub fn depth_image(frame: &Frame, stamp: &Time, frame_id: &str) -> Image {
    let mut data = Vec::with_capacity(frame.depth.len() * 4);
    for d in &frame.depth {
        let d = if d.is_finite() { *d } else { f32::NAN };
        data.extend_from_slice(&d.to_le_bytes());
    }
    Image {
        header: Header {
            stamp: stamp.clone(),
            frame_id: frame_id.into(),
        },
        height: frame.height,
        width: frame.width,
        encoding: "32FC1".into(),
        is_bigendian: 0,
        step: frame.width * 4,
        data,
    }
}

/// A trajectory being executed: where its columns are and when it started.
struct Running {
    traj: JointTrajectory,
    arm_columns: Vec<usize>,
    finger_column: Option<usize>,
    started: f64,
    end: f64,
}

impl Running {
    fn new(traj: JointTrajectory, arm: &ArmModel, now: f64) -> Result<Self, String> {
        let names = arm.joint_names();
        let arm_columns = names
            .iter()
            .map(|n| {
                traj.joint_names
                    .iter()
                    .position(|t| t == n)
                    .ok_or_else(|| format!("trajectory lacks joint {n}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let finger_column = traj.joint_names.iter().position(|t| t == FINGER_JOINT);
        let width = traj.joint_names.len();
        if traj
            .points
            .iter()
            .any(|p| p.positions.len() != width || p.positions.iter().any(|v| !v.is_finite()))
        {
            return Err(
                "a trajectory point has the wrong number of positions or a non-finite value".into(),
            );
        }
        // Times must run forward from 0: a negative one made `sample` clamp to a range
        // whose end lay below its start, a panic that ended the simulator.
        let times: Vec<f64> = traj
            .points
            .iter()
            .map(|p| p.time_from_start.as_secs_f64())
            .collect();
        if times.iter().any(|t| !t.is_finite() || *t < 0.0) || times.windows(2).any(|w| w[1] < w[0])
        {
            return Err(format!(
                "the trajectory's times must be ≥ 0 and non-decreasing, not {times:?}"
            ));
        }
        let end = times.last().copied().unwrap_or(0.0);
        Ok(Self {
            traj,
            arm_columns,
            finger_column,
            started: now,
            end,
        })
    }

    /// Arm joint positions and whether the gripper is closed at simulated time `now`.
    fn sample(&self, now: f64) -> (Vec<f64>, bool) {
        let t = (now - self.started).clamp(0.0, self.end);
        let all = sample_positions(&self.traj, t);
        let q = self.arm_columns.iter().map(|&c| all[c]).collect();
        // The finger column is a step signal: use the value of the segment's start point.
        let closed = match (self.finger_column, trajectory_segment(&self.traj, t)) {
            (Some(c), Some((k0, _, _))) => self.traj.points[k0].positions[c] < FINGER_CLOSED_BELOW,
            _ => false,
        };
        (q, closed)
    }
}

impl Node for SimNode {
    const KIND: &'static str = "sim";
    type Config = SimConfig;
    /// Applied from the next episode on (`episodes` also ends the run after the current
    /// one when it is already reached); image size, rates, physics step, delay and topics
    /// are read at start.
    const LIVE: &'static [&'static str] = &[
        "task",
        "seed",
        "episodes",
        "realtime",
        "settle_s",
        "grasp_radius",
    ];

    fn declared(config: &SimConfig) -> Option<serde_yaml::Value> {
        serde_yaml::to_value(config).ok()
    }

    fn validate(config: &SimConfig) -> anyhow::Result<()> {
        if let Some(c) = &config.camera {
            c.validate().map_err(anyhow::Error::msg)?;
            // Scaled to another shape, the view would be squashed (fx and fy scale apart).
            let (a, b) = (
                c.width as f64 / c.height as f64,
                config.width as f64 / config.height as f64,
            );
            anyhow::ensure!(
                (a / b - 1.0).abs() < 0.01,
                "camera: its calibration is {}×{} but the sim renders {}×{}: give width and height of the same shape",
                c.width,
                c.height,
                config.width,
                config.height
            );
        }
        anyhow::ensure!(
            config.width >= 16
                && config.height >= 16
                && config.width <= 4096
                && config.height <= 4096,
            "width and height must be in 16..=4096"
        );
        anyhow::ensure!(
            config.dt > 0.0 && config.dt <= 0.1,
            "dt must be in (0, 0.1]"
        );
        anyhow::ensure!(
            [config.camera_rate_hz, config.joint_state_rate_hz]
                .iter()
                .all(|r| *r > 0.0 && *r <= 1000.0),
            "rates must be in (0, 1000] Hz"
        );
        // An infinite settle time never scores an episode, an infinite grasp radius picks
        // the whole object from anywhere: both were accepted before session 43.
        anyhow::ensure!(
            config.grasp_radius > 0.0 && config.grasp_radius <= 0.5,
            "grasp_radius must be in (0, 0.5] m"
        );
        anyhow::ensure!(
            config.settle_s >= 0.0 && config.settle_s <= 600.0,
            "settle_s must be in [0, 600] s (settle_s ≥ 0)"
        );
        anyhow::ensure!(
            config.start_delay_s.is_finite() && (0.0..=600.0).contains(&config.start_delay_s),
            "start_delay_s must be in [0, 600]"
        );
        Ok(())
    }

    fn new(config: SimConfig) -> anyhow::Result<Self> {
        Self::validate(&config)?;
        Ok(Self {
            config,
            arm: default_arm(),
        })
    }

    async fn run<B: Bus>(self, ctx: NodeContext<B>) -> anyhow::Result<()> {
        let mut c = self.config.clone();
        let t = &self.config.topics;
        let mut param_changes = ctx.params.watch();
        let cam = match &c.camera {
            Some(spec) => spec.model_at(c.width, c.height),
            None => scene::default_camera(c.width, c.height),
        };
        let opts = RenderOptions::default();
        let frame_id = "camera_color_optical_frame";
        let image_pub = ctx.bus.publisher::<Image>(&t.image, Qos::keep_last(5))?;
        let depth_pub = ctx.bus.publisher::<Image>(&t.depth, Qos::keep_last(5))?;
        let object_pub = ctx
            .bus
            .publisher::<Image>(&t.object_only, Qos::keep_last(5))?;
        let info_pub = ctx
            .bus
            .publisher::<CameraInfo>(&t.camera_info, Qos::latched())?;
        let goal_pub = ctx.bus.publisher::<Image>(&t.goal, Qos::latched())?;
        let goal_depth_pub = ctx.bus.publisher::<Image>(&t.goal_depth, Qos::latched())?;
        let joints_pub = ctx
            .bus
            .publisher::<JointState>(&t.joint_states, Qos::keep_last(10))?;
        let episode_pub = ctx
            .bus
            .publisher::<EpisodeEvent>(&t.episode, Qos::keep_last(100))?;
        let mut trajectories = ctx
            .bus
            .subscribe::<JointTrajectory>(&t.trajectory, Qos::keep_last(1))?;
        // `failed` events (the planner found no action, the executor refused one) end an
        // episode that is waiting for motion: the robot did nothing, and that is scored.
        let mut events_in = ctx
            .bus
            .subscribe::<EpisodeEvent>(&t.episode, Qos::keep_last(100))?;
        info_pub.publish(cam.camera_info(Header {
            stamp: ctx.bus.clock().now(),
            frame_id: frame_id.into(),
        }))?;

        let names: Vec<String> = self
            .arm
            .joint_names()
            .into_iter()
            .chain([FINGER_JOINT.to_string()])
            .collect();
        let mut episode: u32 = 0;
        let closed_or_stop = |r: Result<(), BusError>| -> anyhow::Result<bool> {
            match r {
                Ok(()) => Ok(false),
                Err(BusError::Closed(_)) => Ok(true),
                Err(e) => Err(e.into()),
            }
        };
        if c.start_delay_s > 0.0 {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                _ = wait_for_subscribers(&goal_pub, c.wait_for_subscribers, c.start_delay_s, &ctx.name) => {}
            }
        }
        'episodes: loop {
            if let Some(n) = ctx.params.changed::<SimConfig>(&mut param_changes) {
                tracing::info!(node = %ctx.name, "parameters changed: task {:?}, seed {}, episodes {}, realtime {}, settle_s {}, grasp_radius {} from episode {episode}", n.task, n.seed, n.episodes, n.realtime, n.settle_s, n.grasp_radius);
                c = n;
            }
            if c.episodes != 0 && episode >= c.episodes {
                break;
            }
            let task: Task = c.task.into();
            let seed = c.seed + episode as u64;
            let mut world: World = reset(task, seed);
            let goal = arm_goal(task, seed, &self.arm)
                .map_err(|e| anyhow::anyhow!("goal of {task:?} seed {seed}: {e}"))?;
            let stamp = ctx.bus.clock().now();
            let goal_frame = render(
                &scene::world_primitives(&goal),
                &cam,
                RenderMode::ObjectOnly,
                &opts,
            );
            // A bus shut down while the sim works (the graph's duration ended) is a stop,
            // not a failure.
            if closed_or_stop(goal_pub.publish(rgb_image(&goal_frame, &stamp, frame_id)))?
                || closed_or_stop(goal_depth_pub.publish(depth_image(
                    &goal_frame,
                    &stamp,
                    frame_id,
                )))?
            {
                break 'episodes;
            }
            let task_name = format!("{task:?}").to_lowercase();
            let event = |name: &str, score: f64, detail: String| EpisodeEvent {
                header: Header {
                    stamp: ctx.bus.clock().now(),
                    frame_id: String::new(),
                },
                episode,
                step: 0,
                task: task_name.clone(),
                event: name.into(),
                score,
                detail,
            };
            if closed_or_stop(episode_pub.publish(event(
                EpisodeEvent::EVENT_RESET,
                f64::NAN,
                format!("seed {seed}"),
            )))? {
                break 'episodes;
            }

            let mut q: Vec<f64> = READY.to_vec();
            let mut closed = false;
            let mut running: Option<Running> = None;
            let mut sim_t = 0.0;
            let (mut next_frame, mut next_joints) = (0.0, 0.0);
            let mut done_at: Option<f64> = None;
            let mut tick = tokio::time::interval(Duration::from_secs_f64(c.dt));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let tcp = |q: &[f64]| Point3::from(self.arm.fk(q).translation.vector);
            world.teleport_gripper(tcp(&q));
            // Events of earlier episodes are not this one's.
            while events_in.try_recv().is_some() {}
            loop {
                let idle = running.is_none() && done_at.is_none();
                // Waiting for an action runs at real time even when `realtime` is off: the
                // planner thinks on the wall clock, and frames would else pile up.
                if c.realtime || idle {
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => break 'episodes,
                        _ = tick.tick() => {}
                    }
                } else if ctx.shutdown.is_cancelled() {
                    break 'episodes;
                } else {
                    tokio::task::yield_now().await;
                }
                while let Some(e) = events_in.try_recv() {
                    if e.event == EpisodeEvent::EVENT_FAILED
                        && running.is_none()
                        && done_at.is_none()
                    {
                        tracing::info!(node = %ctx.name, "episode {episode}: no motion ({}); scoring as is", e.detail);
                        done_at = Some(sim_t);
                    }
                }
                if let Some(traj) = trajectories.try_recv() {
                    if traj.points.len() <= 1 {
                        // An empty trajectory, or one that holds a single point (what the
                        // executor sends on e-stop: a ROS trajectory controller replaces the
                        // running trajectory with it), stops the arm where it is. Idle, it
                        // moves nothing: no pick-and-place has one point.
                        if running.take().is_some() {
                            done_at = Some(sim_t);
                            tracing::warn!(node = %ctx.name, "stop: motion halted");
                        }
                    } else if running.is_some() || done_at.is_some() {
                        tracing::warn!(node = %ctx.name, "rejected trajectory: still executing the previous one");
                    } else {
                        match Running::new((*traj).clone(), &self.arm, sim_t) {
                            Ok(r) => running = Some(r),
                            Err(e) => tracing::warn!(node = %ctx.name, "rejected trajectory: {e}"),
                        }
                    }
                }
                if let Some(r) = &running {
                    let (q_next, closed_next) = r.sample(sim_t + c.dt);
                    if closed_next && !closed {
                        let at = tcp(&q);
                        let held =
                            world.grasp_particles(&between_fingers(&world, &at, c.grasp_radius));
                        tracing::debug!(node = %ctx.name, "grasp at {at:?} (t {sim_t:.2} s): {held} particles");
                    } else if !closed_next && closed {
                        world.release();
                    }
                    closed = closed_next;
                    world.move_gripper(tcp(&q_next));
                    q = q_next;
                    if sim_t + c.dt >= r.started + r.end {
                        running = None;
                        done_at = Some(sim_t + c.dt);
                    }
                }
                world.step(c.dt);
                sim_t += c.dt;
                let stamp = ctx.bus.clock().now();
                if sim_t >= next_joints {
                    next_joints += 1.0 / c.joint_state_rate_hz;
                    let mut position = q.clone();
                    position.push(if closed { 0.0 } else { 0.04 });
                    let js = JointState {
                        header: Header {
                            stamp: stamp.clone(),
                            frame_id: String::new(),
                        },
                        name: names.clone(),
                        position,
                        ..Default::default()
                    };
                    if closed_or_stop(joints_pub.publish(js))? {
                        break 'episodes;
                    }
                }
                if sim_t >= next_frame {
                    next_frame += 1.0 / c.camera_rate_hz;
                    let prims = scene::full_scene(&world, &self.arm, &q, !closed);
                    let [full, object]: [Frame; 2] = render_modes(
                        &prims,
                        &cam,
                        &[RenderMode::Full, RenderMode::ObjectOnly],
                        &opts,
                    )
                    .try_into()
                    .expect("two modes, two frames");
                    for r in [
                        image_pub.publish(rgb_image(&full, &stamp, frame_id)),
                        depth_pub.publish(depth_image(&full, &stamp, frame_id)),
                        object_pub.publish(rgb_image(&object, &stamp, frame_id)),
                    ] {
                        if closed_or_stop(r)? {
                            break 'episodes;
                        }
                    }
                }
                if done_at.is_some_and(|d| sim_t >= d + c.settle_s) {
                    let (distance, s) = score(task, &world, &goal);
                    if closed_or_stop(episode_pub.publish(event(
                        EpisodeEvent::EVENT_SCORED,
                        s,
                        format!("distance {distance:.4} m"),
                    )))? {
                        break 'episodes;
                    }
                    tracing::info!(node = %ctx.name, "episode {episode} ({task_name}, seed {seed}): score {s} (distance {distance:.4} m)");
                    if c.episodes != 0 && episode + 1 == c.episodes {
                        // The last one: returning ends the graph and closes the bus, which
                        // would drop a `scored` still on its way to this process's own
                        // subscribers (the run report) over DDS. Wait until it has come
                        // back to ours.
                        let confirmed = tokio::time::timeout(
                            ctx.bus.settle() * LOOPBACK_SETTLES,
                            scored_arrives(&mut events_in, episode, &task_name),
                        );
                        tokio::select! {
                            _ = ctx.shutdown.cancelled() => {}
                            r = confirmed => if r.is_err() {
                                tracing::warn!(node = %ctx.name, "episode {episode}'s `scored` did not come back over the bus within {LOOPBACK_SETTLES} delivery times");
                            }
                        }
                    }
                    break;
                }
            }
            episode += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A camera of another shape than the sim's images is refused (scaled apart, fx and fy
    /// would squash the view); one of the same shape at another size, or none, is taken.
    #[test]
    fn a_camera_of_another_shape_than_the_images_is_refused() {
        let cam = |w, h| crate::render::CameraSpec::of(&scene::default_camera(w, h));
        let with = |c| SimConfig {
            camera: c,
            ..Default::default()
        };
        SimNode::new(with(None)).unwrap();
        SimNode::new(with(Some(cam(512, 512)))).unwrap();
        let e = SimNode::new(with(Some(cam(640, 480))))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("calibration is 640×480 but the sim renders 256×256"),
            "{e}"
        );
        let mut bad = cam(256, 256);
        bad.fy = -1.0;
        let e = SimNode::new(with(Some(bad))).err().unwrap().to_string();
        assert!(e.contains("fy must be a focal length"), "{e}");
    }
}
