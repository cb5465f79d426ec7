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
    let end = plan
        .trajectory
        .points
        .last()
        .map_or(0.0, |p| p.time_from_start.as_secs_f64());
    let total = end + params.settle_s;
    let steps = (total / params.dt).ceil() as usize;
    let frame_every = if params.fps > 0.0 {
        1.0 / params.fps
    } else {
        f64::INFINITY
    };
    let mut next_frame = 0.0;
    let tcp = |q: &[f64]| -> Point3<f64> { Point3::from(model.fk(q).translation.vector) };
    let q0 = sample_trajectory(plan, 0.0);
    world.release();
    world.teleport_gripper(tcp(&q0));
    let (mut closed, mut held) = (false, 0);
    for k in 0..=steps {
        let t = k as f64 * params.dt;
        let q = sample_trajectory(plan, t);
        if !closed && t >= plan.grasp_time_s && t < plan.release_time_s {
            let at = tcp(&q);
            world.teleport_gripper(at);
            held = world.grasp_particles(&between_fingers(world, &at, params.grasp_radius));
            closed = true;
        }
        if closed && t >= plan.release_time_s {
            world.release();
            closed = false;
        }
        if t + 1e-9 >= next_frame {
            on_frame(t, world, &q, closed);
            next_frame += frame_every;
        }
        if k < steps {
            let q_next = sample_trajectory(plan, t + params.dt);
            world.move_gripper(tcp(&q_next));
            world.step(params.dt);
        }
    }
    ArmExecution {
        held,
        duration_s: total,
    }
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
