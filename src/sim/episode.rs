//! An arm in the loop: executes a planned pick-and-place on the simulated world by moving
//! the gripper point with the arm's TCP, closing and opening at the plan's event times,
//! and calls back at a frame rate so callers can render or publish what happens.

use nalgebra::Point3;

use super::World;
use crate::robot::motion::{PickPlaceParams, PickPlacePlan};
use crate::robot::ArmModel;

pub use crate::robot::franka::{default_arm, FRANKA_URDF, READY};

/// How the arm's plan is played on the world.
#[derive(Debug, Clone)]
pub struct ArmExecParams {
    /// Physics step (s).
    pub dt: f64,
    /// Particles within this horizontal distance of the TCP, from [`FINGER_REACH`] below it
    /// to `grasp_radius` above it, are held when the gripper closes (m).
    pub grasp_radius: f64,
    /// Simulated time after the trajectory ends (s).
    pub settle_s: f64,
    /// Callback rate (frames per second of simulated time); 0 = never.
    pub fps: f64,
    /// How [`arm_pick_place`] plans the motion (heights, speeds).
    pub motion: PickPlaceParams,
}

impl Default for ArmExecParams {
    fn default() -> Self {
        Self {
            dt: 1.0 / 60.0,
            grasp_radius: 0.012,
            settle_s: 1.0,
            fps: 10.0,
            motion: PickPlaceParams::default(),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmExecution {
    /// Particles held at the grasp (0: the gripper closed on nothing).
    pub held: usize,
    /// Simulated seconds, trajectory plus settling.
    pub duration_s: f64,
}

/// Joint positions of `plan` at time `t` (linear interpolation between its points).
pub fn sample_trajectory(plan: &PickPlacePlan, t: f64) -> Vec<f64> {
    crate::robot::motion::sample_positions(&plan.trajectory, t)
}

/// How far below the TCP the closing fingers reach (m). Depth sees an object's surface
/// from the camera's side, so a grasp aimed at a pixel lands up to a radius above and in
/// front of the particle's centre; the fingers still close around it, as a real gripper's do.
pub const FINGER_REACH: f64 = 0.02;

/// The particles a gripper closing at `at` holds: within `radius` horizontally, from
/// [`FINGER_REACH`] below `at` to `radius` above it.
pub fn between_fingers(world: &World, at: &Point3<f64>, radius: f64) -> Vec<usize> {
    (0..world.positions().len())
        .filter(|&i| {
            let p = world.positions()[i];
            let dz = p.z - at.z;
            (p.x - at.x).hypot(p.y - at.y) <= radius && (-FINGER_REACH..=radius).contains(&dz)
        })
        .collect()
}

/// Plays `plan` on `world`. `on_frame(t, world, q, gripper_closed)` is called at `fps`.
pub fn execute_plan(
    world: &mut World,
    model: &ArmModel,
    plan: &PickPlacePlan,
    params: &ArmExecParams,
    mut on_frame: impl FnMut(f64, &World, &[f64], bool),
) -> ArmExecution {
    let mut run = Playback::new(plan, params);
    run.begin(world, model, plan);
    run.advance(world, model, plan, params, usize::MAX, &mut on_frame);
    run.execution()
}

/// Where a playback stands between its steps: all that [`execute_plan`]'s loop carries
/// besides the world, so a playback stopped after step `k` and resumed on a copy of the
/// world ends exactly where an uninterrupted one does.
#[derive(Debug, Clone, Copy)]
struct Playback {
    /// The next step to play.
    k: usize,
    /// The last step (the trajectory plus settling, in `dt`).
    steps: usize,
    closed: bool,
    held: usize,
    next_frame: f64,
    duration_s: f64,
}

impl Playback {
    /// A playback of `plan` before its first step.
    fn new(plan: &PickPlacePlan, params: &ArmExecParams) -> Self {
        let end = plan
            .trajectory
            .points
            .last()
            .map_or(0.0, |p| p.time_from_start.as_secs_f64());
        let total = end + params.settle_s;
        Self {
            k: 0,
            steps: (total / params.dt).ceil() as usize,
            closed: false,
            held: 0,
            next_frame: 0.0,
            duration_s: total,
        }
    }

    /// Opens the gripper at the plan's first pose (the world's state before step 0).
    fn begin(&self, world: &mut World, model: &ArmModel, plan: &PickPlacePlan) {
        world.release();
        world.teleport_gripper(tcp(model, &sample_trajectory(plan, 0.0)));
    }

    /// Plays steps `self.k ..= min(until, steps)` (the last one only observes).
    fn advance(
        &mut self,
        world: &mut World,
        model: &ArmModel,
        plan: &PickPlacePlan,
        params: &ArmExecParams,
        until: usize,
        on_frame: &mut impl FnMut(f64, &World, &[f64], bool),
    ) {
        let frame_every = if params.fps > 0.0 {
            1.0 / params.fps
        } else {
            f64::INFINITY
        };
        while self.k <= self.steps.min(until) {
            let k = self.k;
            let t = k as f64 * params.dt;
            let q = sample_trajectory(plan, t);
            if !self.closed && t >= plan.grasp_time_s && t < plan.release_time_s {
                let at = tcp(model, &q);
                world.teleport_gripper(at);
                self.held =
                    world.grasp_particles(&between_fingers(world, &at, params.grasp_radius));
                self.closed = true;
            }
            if self.closed && t >= plan.release_time_s {
                world.release();
                self.closed = false;
            }
            if t + 1e-9 >= self.next_frame {
                on_frame(t, world, &q, self.closed);
                self.next_frame += frame_every;
            }
            if k < self.steps {
                let q_next = sample_trajectory(plan, t + params.dt);
                world.move_gripper(tcp(model, &q_next));
                world.step(params.dt);
            }
            self.k += 1;
        }
    }

    fn execution(&self) -> ArmExecution {
        ArmExecution {
            held: self.held,
            duration_s: self.duration_s,
        }
    }
}

fn tcp(model: &ArmModel, q: &[f64]) -> Point3<f64> {
    Point3::from(model.fk(q).translation.vector)
}

/// What step `k` of a playback does to the world, in a form two plans can be compared by:
/// the joint positions at its start and end and whether the gripper is to close or open.
fn step_inputs(
    plan: &PickPlacePlan,
    params: &ArmExecParams,
    k: usize,
) -> (Vec<f64>, Vec<f64>, bool, bool) {
    let t = k as f64 * params.dt;
    (
        sample_trajectory(plan, t),
        sample_trajectory(plan, t + params.dt),
        t >= plan.grasp_time_s && t < plan.release_time_s,
        t >= plan.release_time_s,
    )
}

/// Plays every plan on its own copy of `world`, as [`execute_plan`] without frames would,
/// and returns the final worlds in order. The steps at the start that every plan plays
/// identically (bitwise the same joint positions and gripper events: the approach, grasp
/// and lift of plans that pick at one point and place at different ones) are simulated
/// once and the copies continue from there, so the results equal separate playbacks
/// exactly and the shared part costs one playback instead of one per plan.
pub fn execute_plans_shared(
    world: &World,
    model: &ArmModel,
    plans: &[&PickPlacePlan],
    params: &ArmExecParams,
) -> Vec<(World, ArmExecution)> {
    let params = ArmExecParams {
        fps: 0.0,
        ..params.clone()
    };
    let Some(first) = plans.first() else {
        return Vec::new();
    };
    // The start pose too must agree (it is where the gripper is teleported).
    let q0 = sample_trajectory(first, 0.0);
    let same_start = plans.iter().all(|p| sample_trajectory(p, 0.0) == q0);
    let mut common = 0;
    if same_start {
        // Every plan's last step ends its playback: only steps before the first plan's
        // last one can be shared.
        let last = plans
            .iter()
            .map(|p| Playback::new(p, &params).steps)
            .min()
            .unwrap_or(0);
        while common < last {
            let inputs = step_inputs(first, &params, common);
            if plans[1..]
                .iter()
                .any(|p| step_inputs(p, &params, common) != inputs)
            {
                break;
            }
            common += 1;
        }
    }
    // The world and playback after the shared steps (none shared: each plan starts afresh).
    let shared = (common > 0).then(|| {
        let mut w = world.clone();
        let mut run = Playback::new(first, &params);
        run.begin(&mut w, model, first);
        run.advance(
            &mut w,
            model,
            first,
            &params,
            common - 1,
            &mut |_, _, _, _| {},
        );
        (w, run)
    });
    plans
        .iter()
        .map(|plan| {
            let own = Playback::new(plan, &params);
            let (mut w, mut r) = match &shared {
                // Where the shared steps left it, with this plan's own length.
                Some((w, run)) => (
                    w.clone(),
                    Playback {
                        steps: own.steps,
                        duration_s: own.duration_s,
                        ..*run
                    },
                ),
                None => {
                    let mut w = world.clone();
                    own.begin(&mut w, model, plan);
                    (w, own)
                }
            };
            r.advance(
                &mut w,
                model,
                plan,
                &params,
                usize::MAX,
                &mut |_, _, _, _| {},
            );
            let e = r.execution();
            (w, e)
        })
        .collect()
}

/// The point to grasp at `p`: the highest particle within `radius` in x–y (the top of the
/// object there), or `p` itself where there is none.
pub fn surface_point(world: &World, p: &Point3<f64>, radius: f64) -> Point3<f64> {
    let top = world
        .positions()
        .iter()
        .filter(|q| (q.x - p.x).powi(2) + (q.y - p.y).powi(2) <= radius * radius)
        .map(|q| q.z)
        .fold(f64::NAN, f64::max);
    if top.is_nan() {
        *p
    } else {
        Point3::new(p.x, p.y, top)
    }
}

/// Plans and plays a pick-and-place of `action` with the arm from [`READY`]; the grasp
/// height comes from the object's surface, the place height is the grasp height.
pub fn arm_pick_place(
    world: &mut World,
    model: &ArmModel,
    action: &super::tasks::Action,
    params: &ArmExecParams,
    on_frame: impl FnMut(f64, &World, &[f64], bool),
) -> Result<ArmExecution, crate::robot::motion::MotionError> {
    let pick = surface_point(world, &action.pick, params.grasp_radius);
    let place = Point3::new(action.place.x, action.place.y, pick.z.max(action.place.z));
    let plan = crate::robot::motion::plan_pick_place(model, &READY, &pick, &place, &params.motion)?;
    Ok(execute_plan(world, model, &plan, params, on_frame))
}

/// The goal of `task` from `seed` as the arm makes it: the state after the hidden good
/// action executed by the arm (the same executor episodes use).
pub fn arm_goal(
    task: super::tasks::Task,
    seed: u64,
    model: &ArmModel,
) -> Result<World, crate::robot::motion::MotionError> {
    let mut world = super::tasks::reset(task, seed);
    let action = super::tasks::hidden_action(task, seed);
    arm_pick_place(
        &mut world,
        model,
        &action,
        &ArmExecParams {
            fps: 0.0,
            ..Default::default()
        },
        |_, _, _, _| {},
    )?;
    Ok(world)
}
