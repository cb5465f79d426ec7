//! Pick-and-place as a timed joint trajectory: the one action DreamPlan's planner emits.
//!
//! Phases: approach (joint space, to above the pick point), descend, grasp (event), lift,
//! carry, lower, release (event), retreat. Cartesian phases are straight TCP lines
//! sampled every `path_step_m` and solved by IK seeded from the previous sample, so
//! consecutive joint positions stay close. Each phase is timed by a trapezoidal profile
//! on its path parameter whose peak speed and acceleration are the largest that keep
//! every joint within `velocity_margin` of its URDF velocity limit (and the TCP within
//! the Cartesian speed/acceleration), so no joint can exceed its limit, even between
//! samples. The gripper points straight down; its yaw follows the azimuth of the point
//! with the offset it has at q0, which keeps the wrist (joint 7) nearly still.

use nalgebra::{Isometry3, Point3, Translation3, UnitQuaternion, Vector3};

use super::ik::{IkError, IkOptions};
use super::model::ArmModel;
use crate::msg::builtin_interfaces::Duration;
use crate::msg::trajectory_msgs::{JointTrajectory, JointTrajectoryPoint};

/// Tunables of [`plan_pick_place`]; lengths in m, times in s.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PickPlaceParams {
    /// Height above the pick point where the descent starts and above the place point
    /// where the retreat ends.
    pub approach_height_m: f64,
    /// Height above the pick/place points during the carry. Low on purpose: what hangs
    /// below the gripper piles up unpredictably when it is lowered, so a 15 cm carry made
    /// a rope's outcome change by ~10 cm for a 3 mm change of the pick point; at 5 cm,
    /// ±5 mm keeps the hidden action's score (see `examples/threshold_check.rs`).
    pub lift_height_m: f64,
    /// TCP speed cap on Cartesian phases (m/s).
    pub cartesian_speed_m_s: f64,
    /// TCP acceleration cap on Cartesian phases (m/s²).
    pub cartesian_accel_m_s2: f64,
    /// Peak joint speed of the joint-space approach, as a fraction of each joint's limit.
    pub joint_speed_fraction: f64,
    /// Joint acceleration cap (rad/s²) on every phase.
    pub joint_accel_rad_s2: f64,
    /// Dwell at the pick point after the grasp event while the gripper closes.
    pub grasp_settle_s: f64,
    /// Dwell at the place point after the release event while the gripper opens.
    pub release_settle_s: f64,
    /// Spacing of Cartesian samples (m), at least [`MIN_PATH_STEP_M`].
    pub path_step_m: f64,
    /// Largest fraction of a joint's velocity limit any phase may use.
    pub velocity_margin: f64,
}

/// The finest Cartesian sample spacing a plan takes (0.1 mm): each sample is an IK solve,
/// so a much finer one would plan for minutes and hold millions of joint vectors.
pub const MIN_PATH_STEP_M: f64 = 1e-4;

impl Default for PickPlaceParams {
    fn default() -> Self {
        Self {
            approach_height_m: 0.10,
            lift_height_m: 0.05,
            cartesian_speed_m_s: 0.25,
            cartesian_accel_m_s2: 0.8,
            joint_speed_fraction: 0.5,
            joint_accel_rad_s2: 3.0,
            grasp_settle_s: 0.5,
            release_settle_s: 0.5,
            path_step_m: 0.005,
            velocity_margin: 0.95,
        }
    }
}

/// A phase of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Joint-space move from q0 to above the pick point.
    Approach,
    /// Straight down to the pick point.
    Descend,
    /// Straight up from the pick point.
    Lift,
    /// Straight line to above the place point.
    Carry,
    /// Straight down to the place point.
    Lower,
    /// Straight up from the place point.
    Retreat,
}

/// A timed pick-and-place: the trajectory and when the gripper acts.
#[derive(Debug, Clone)]
pub struct PickPlacePlan {
    /// Joint positions and velocities for the movable joints, time from start.
    pub trajectory: JointTrajectory,
    /// Time from start when the TCP is at the pick point and the gripper closes (s).
    pub grasp_time_s: f64,
    /// Time from start when the TCP is at the place point and the gripper opens (s).
    pub release_time_s: f64,
    /// (phase, start s, end s) of each motion phase.
    pub phases: Vec<(Phase, f64, f64)>,
}

/// Why no plan was made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MotionError {
    /// q0 does not have one value per joint, or holds a non-finite value.
    #[error("q0 has {got} values (chain has {expected} movable joints) or is not finite")]
    BadStart {
        /// dof.
        expected: usize,
        /// given.
        got: usize,
    },
    /// A parameter is out of range.
    #[error("parameter {0} must be finite and positive")]
    BadParam(&'static str),
    /// `path_step_m` below [`MIN_PATH_STEP_M`].
    #[error("path_step_m {0} m is finer than {MIN_PATH_STEP_M} m: each sample is an IK solve")]
    PathStepTooFine(f64),
    /// IK failed at some point of a phase.
    #[error("{phase:?}: no IK solution at TCP {at:?}: {source}")]
    Ik {
        /// Phase being planned.
        phase: Phase,
        /// TCP position (base frame) that failed.
        at: [f64; 3],
        /// The IK failure.
        source: IkError,
    },
}

/// A trajectory point that breaks a limit, or a malformed trajectory.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitViolation {
    /// Joint names differ from the model's movable joints.
    #[error("joint names {got:?} differ from the model's {expected:?}")]
    JointNames {
        /// Model's names.
        expected: Vec<String>,
        /// Trajectory's names.
        got: Vec<String>,
    },
    /// A point has the wrong number of positions or velocities.
    #[error("point {point} has the wrong number of positions or velocities")]
    Shape {
        /// Point index.
        point: usize,
    },
    /// time_from_start does not increase.
    #[error("point {point}: time_from_start does not increase")]
    Time {
        /// Point index.
        point: usize,
    },
    /// A position outside [lower, upper].
    #[error("point {point}: {joint} at {value} outside [{lower}, {upper}]")]
    Position {
        /// Point index.
        point: usize,
        /// Joint name.
        joint: String,
        /// Commanded position.
        value: f64,
        /// Lower limit.
        lower: f64,
        /// Upper limit.
        upper: f64,
    },
    /// A velocity (commanded, or the mean between two points) above the limit.
    #[error("point {point}: {joint} moves at {value} > limit {limit}")]
    Velocity {
        /// Point index.
        point: usize,
        /// Joint name.
        joint: String,
        /// |velocity|.
        value: f64,
        /// Velocity limit.
        limit: f64,
    },
}

/// base_from_tcp pointing straight down (TCP z = −base z) with TCP x at `yaw` from base x.
pub fn tcp_down(position: &Point3<f64>, yaw: f64) -> Isometry3<f64> {
    let rotation = UnitQuaternion::from_axis_angle(&Vector3::z_axis(), yaw)
        * UnitQuaternion::from_axis_angle(&Vector3::x_axis(), std::f64::consts::PI);
    Isometry3::from_parts(Translation3::from(position.coords), rotation)
}

/// The yaw a TCP orientation has in the sense of [`tcp_down`]: the azimuth of its x axis,
/// or, where that axis points nearly straight up or down (a gripper pointing sideways),
/// the azimuth of its y axis plus a quarter turn (`tcp_down(p, yaw)`'s y axis points at
/// `yaw − π/2`; before session 45 the quarter turn was subtracted, half a turn off).
fn yaw_of(rotation: &UnitQuaternion<f64>) -> f64 {
    let x_axis = rotation * Vector3::x();
    let y_axis = rotation * Vector3::y();
    if x_axis.xy().norm() > 0.3 {
        x_axis.y.atan2(x_axis.x)
    } else {
        wrap_pi(y_axis.y.atan2(y_axis.x) + std::f64::consts::FRAC_PI_2)
    }
}

fn wrap_pi(a: f64) -> f64 {
    let two_pi = std::f64::consts::TAU;
    let a = a.rem_euclid(two_pi);
    if a > std::f64::consts::PI {
        a - two_pi
    } else {
        a
    }
}

/// A path of joint positions at increasing path parameter u ∈ [0, 1].
struct Path {
    u: Vec<f64>,
    q: Vec<Vec<f64>>,
    /// Cartesian length (m) the u ∈ [0, 1] spans, for the TCP speed cap; 0 for joint moves.
    length_m: f64,
    /// Extra cap on u̇ (1/s).
    u_dot_cap: f64,
}

/// Times and velocities of a path's samples under a trapezoidal profile on u.
fn time_path(model: &ArmModel, path: &Path, params: &PickPlaceParams) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = path.u.len();
    let dof = model.dof();
    let limits: Vec<f64> = model.movable_joints().map(|j| j.velocity).collect();
    // Largest |Δq/Δu| per joint over the intervals.
    let mut slope = vec![0.0_f64; dof];
    for k in 1..n {
        let du = path.u[k] - path.u[k - 1];
        for (s, (a, b)) in slope.iter_mut().zip(path.q[k - 1].iter().zip(&path.q[k])) {
            *s = s.max((b - a).abs() / du);
        }
    }
    let mut v_max = path.u_dot_cap;
    let mut a_max = f64::INFINITY;
    if path.length_m > 0.0 {
        v_max = v_max.min(params.cartesian_speed_m_s / path.length_m);
        a_max = a_max.min(params.cartesian_accel_m_s2 / path.length_m);
    }
    for (&s, limit) in slope.iter().zip(limits) {
        if s > 1e-12 {
            v_max = v_max.min(params.velocity_margin * limit / s);
            a_max = a_max.min(params.joint_accel_rad_s2 / s);
        }
    }
    // No finite acceleration cap: nothing moves, a zero-length phase. (A joint without a
    // velocity limit leaves only the speed uncapped, which the trapezoid handles; before
    // session 45 that too was timed as nothing, and the approach became a jump.)
    if !a_max.is_finite() {
        return (vec![0.0; n], vec![vec![0.0; dof]; n]);
    }
    let profile = Trapezoid::new(v_max, a_max);
    let times: Vec<f64> = path.u.iter().map(|&u| profile.time_at(u)).collect();
    let velocities = (0..n)
        .map(|k| {
            let u_dot = profile.speed_at(path.u[k]);
            // dq/du: mean of the neighbouring interval slopes (bounded by `slope`).
            let (a, b) = (k.saturating_sub(1), (k + 1).min(n - 1));
            (0..dof)
                .map(|j| {
                    let dq_du = (path.q[b][j] - path.q[a][j]) / (path.u[b] - path.u[a]);
                    dq_du * u_dot
                })
                .collect()
        })
        .collect();
    (times, velocities)
}

/// Rest-to-rest trapezoidal profile covering u ∈ [0, 1].
struct Trapezoid {
    v: f64,
    a: f64,
    /// u covered while accelerating.
    u_acc: f64,
    t_acc: f64,
    total: f64,
}

impl Trapezoid {
    fn new(v_max: f64, a: f64) -> Self {
        // Triangular when the peak speed is never reached.
        let v = v_max.min(a.sqrt());
        let t_acc = v / a;
        let u_acc = 0.5 * v * t_acc;
        let total = 2.0 * t_acc + (1.0 - 2.0 * u_acc).max(0.0) / v;
        Self {
            v,
            a,
            u_acc,
            t_acc,
            total,
        }
    }

    fn time_at(&self, u: f64) -> f64 {
        if u <= self.u_acc {
            (2.0 * u / self.a).sqrt()
        } else if u < 1.0 - self.u_acc {
            self.t_acc + (u - self.u_acc) / self.v
        } else {
            self.total - (2.0 * (1.0 - u).max(0.0) / self.a).sqrt()
        }
    }

    fn speed_at(&self, u: f64) -> f64 {
        (2.0 * self.a * u.max(0.0))
            .sqrt()
            .min(self.v)
            .min((2.0 * self.a * (1.0 - u).max(0.0)).sqrt())
    }
}

/// Builds the pick-and-place plan from joint state `q0` (rad) for TCP points `pick`
/// and `place` (m, in the model's base frame).
pub fn plan_pick_place(
    model: &ArmModel,
    q0: &[f64],
    pick: &Point3<f64>,
    place: &Point3<f64>,
    params: &PickPlaceParams,
) -> Result<PickPlacePlan, MotionError> {
    if q0.len() != model.dof() || q0.iter().any(|v| !v.is_finite()) {
        return Err(MotionError::BadStart {
            expected: model.dof(),
            got: q0.len(),
        });
    }
    for (name, v) in [
        ("approach_height_m", params.approach_height_m),
        ("lift_height_m", params.lift_height_m),
        ("cartesian_speed_m_s", params.cartesian_speed_m_s),
        ("cartesian_accel_m_s2", params.cartesian_accel_m_s2),
        ("joint_speed_fraction", params.joint_speed_fraction),
        ("joint_accel_rad_s2", params.joint_accel_rad_s2),
        ("path_step_m", params.path_step_m),
        ("velocity_margin", params.velocity_margin),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(MotionError::BadParam(name));
        }
    }
    if params.path_step_m < MIN_PATH_STEP_M {
        return Err(MotionError::PathStepTooFine(params.path_step_m));
    }
    for (name, v) in [
        ("grasp_settle_s", params.grasp_settle_s),
        ("release_settle_s", params.release_settle_s),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(MotionError::BadParam(name));
        }
    }

    // Yaw: keep the TCP's offset from the point's azimuth that it has at q0.
    let base_from_tcp0 = model.fk(q0);
    let yaw0 = yaw_of(&base_from_tcp0.rotation);
    let p0 = base_from_tcp0.translation.vector;
    let azimuth = |p: &Point3<f64>| {
        if p.coords.xy().norm() > 1e-6 {
            p.y.atan2(p.x)
        } else {
            0.0
        }
    };
    let offset = wrap_pi(yaw0 - azimuth(&Point3::from(p0)));
    let yaw_pick = azimuth(pick) + offset;
    let yaw_place = azimuth(place) + offset;
    let up = |p: &Point3<f64>, h: f64| Point3::new(p.x, p.y, p.z + h);

    let seeded = IkOptions {
        restarts: 0,
        ..IkOptions::default()
    };
    let ik = |phase: Phase, target: &Isometry3<f64>, seed: &[f64], opts: &IkOptions| {
        model
            .ik(target, seed, opts)
            .map_err(|source| MotionError::Ik {
                phase,
                at: target.translation.vector.into(),
                source,
            })
    };

    // Approach: a joint-space move to the pre-grasp pose (IK may restart here: this is
    // the one place the arm may change configuration).
    let pre_pick = tcp_down(&up(pick, params.approach_height_m), yaw_pick);
    let q_pre = match ik(Phase::Approach, &pre_pick, q0, &seeded) {
        Ok(q) => q,
        Err(_) => ik(Phase::Approach, &pre_pick, q0, &IkOptions::default())?,
    };
    let mut q_start = q0.to_vec();
    model.clamp(&mut q_start);
    let max_dq = q_start
        .iter()
        .zip(&q_pre)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let steps = ((max_dq / 0.01).ceil() as usize).max(1);
    let approach = Path {
        u: (0..=steps).map(|k| k as f64 / steps as f64).collect(),
        q: (0..=steps)
            .map(|k| {
                let s = k as f64 / steps as f64;
                q_start
                    .iter()
                    .zip(&q_pre)
                    .map(|(a, b)| a + (b - a) * s)
                    .collect()
            })
            .collect(),
        length_m: 0.0,
        u_dot_cap: f64::INFINITY,
    };
    // Joint-space speed: the joint_speed_fraction of each limit (velocity_margin caps it).
    let approach_params = PickPlaceParams {
        velocity_margin: params.velocity_margin.min(params.joint_speed_fraction),
        ..params.clone()
    };

    let mut builder = Builder::new(model.joint_names());
    builder.push_path(model, &approach, &approach_params, Phase::Approach);

    let line = |phase: Phase,
                from: Isometry3<f64>,
                to: Isometry3<f64>,
                seed: &[f64]|
     -> Result<Path, MotionError> {
        let length = (to.translation.vector - from.translation.vector).norm();
        let angle = from.rotation.angle_to(&to.rotation);
        let steps = ((length / params.path_step_m).ceil() as usize)
            .max((angle / 0.02).ceil() as usize)
            .max(1);
        let mut q = Vec::with_capacity(steps + 1);
        let mut prev = seed.to_vec();
        q.push(prev.clone());
        for k in 1..=steps {
            let s = k as f64 / steps as f64;
            let pose = Isometry3::from_parts(
                Translation3::from(
                    from.translation.vector + (to.translation.vector - from.translation.vector) * s,
                ),
                from.rotation.slerp(&to.rotation, s),
            );
            prev = ik(phase, &pose, &prev, &seeded)?;
            q.push(prev.clone());
        }
        Ok(Path {
            u: (0..=steps).map(|k| k as f64 / steps as f64).collect(),
            q,
            // Rotation counts as arc length at 0.2 m radius, so pure turns are timed too.
            length_m: length.max(angle * 0.2),
            u_dot_cap: f64::INFINITY,
        })
    };

    let pick_pose = tcp_down(pick, yaw_pick);
    let lifted_pick = tcp_down(&up(pick, params.lift_height_m), yaw_pick);
    let lifted_place = tcp_down(&up(place, params.lift_height_m), yaw_place);
    let place_pose = tcp_down(place, yaw_place);
    let post_place = tcp_down(&up(place, params.approach_height_m), yaw_place);

    let descend = line(Phase::Descend, pre_pick, pick_pose, &q_pre)?;
    let q_pick = builder.push_path(model, &descend, params, Phase::Descend);
    let grasp_time_s = builder.t;
    builder.dwell(params.grasp_settle_s);
    let lift = line(Phase::Lift, pick_pose, lifted_pick, &q_pick)?;
    let q_lifted = builder.push_path(model, &lift, params, Phase::Lift);
    let carry = line(Phase::Carry, lifted_pick, lifted_place, &q_lifted)?;
    let q_carried = builder.push_path(model, &carry, params, Phase::Carry);
    let lower = line(Phase::Lower, lifted_place, place_pose, &q_carried)?;
    let q_place = builder.push_path(model, &lower, params, Phase::Lower);
    let release_time_s = builder.t;
    builder.dwell(params.release_settle_s);
    let retreat = line(Phase::Retreat, place_pose, post_place, &q_place)?;
    builder.push_path(model, &retreat, params, Phase::Retreat);

    Ok(PickPlacePlan {
        trajectory: builder.trajectory,
        grasp_time_s,
        release_time_s,
        phases: builder.phases,
    })
}

/// Appends timed phases into one JointTrajectory.
struct Builder {
    trajectory: JointTrajectory,
    phases: Vec<(Phase, f64, f64)>,
    t: f64,
}

impl Builder {
    fn new(joint_names: Vec<String>) -> Self {
        Self {
            trajectory: JointTrajectory {
                joint_names,
                ..Default::default()
            },
            phases: Vec::new(),
            t: 0.0,
        }
    }

    fn push_point(&mut self, t: f64, positions: Vec<f64>, velocities: Vec<f64>) {
        self.trajectory.points.push(JointTrajectoryPoint {
            positions,
            velocities,
            time_from_start: Duration::from_secs_f64(t),
            ..Default::default()
        });
    }

    /// Appends a path (its first sample joins the previous end); returns its last q.
    fn push_path(
        &mut self,
        model: &ArmModel,
        path: &Path,
        params: &PickPlaceParams,
        phase: Phase,
    ) -> Vec<f64> {
        let (times, velocities) = time_path(model, path, params);
        let start = self.t;
        let first = if self.trajectory.points.is_empty() {
            0
        } else {
            1
        };
        for k in first..path.q.len() {
            // Skip samples that do not advance time (a phase that does not move).
            if k > 0 && times[k] <= times[k - 1] {
                continue;
            }
            self.push_point(start + times[k], path.q[k].clone(), velocities[k].clone());
        }
        self.t = start + times.last().copied().unwrap_or(0.0);
        self.phases.push((phase, start, self.t));
        path.q.last().cloned().unwrap_or_default()
    }

    /// Holds the last position for `secs`.
    fn dwell(&mut self, secs: f64) {
        if secs <= 0.0 {
            return;
        }
        let Some(last) = self.trajectory.points.last() else {
            return;
        };
        let q = last.positions.clone();
        let zero = vec![0.0; q.len()];
        self.t += secs;
        self.push_point(self.t, q, zero);
    }
}

/// Checks a trajectory against the model's position and velocity limits: joint names,
/// point shapes, increasing time, positions within limits, commanded velocities and the
/// mean velocity between consecutive points within the velocity limits.
pub fn check_limits(traj: &JointTrajectory, model: &ArmModel) -> Result<(), LimitViolation> {
    let names = model.joint_names();
    if traj.joint_names != names {
        return Err(LimitViolation::JointNames {
            expected: names,
            got: traj.joint_names.clone(),
        });
    }
    let joints: Vec<_> = model.movable_joints().collect();
    const EPS: f64 = 1e-9;
    let mut prev: Option<(f64, &[f64])> = None;
    for (point, p) in traj.points.iter().enumerate() {
        let has_velocities = !p.velocities.is_empty();
        if p.positions.len() != joints.len()
            || (has_velocities && p.velocities.len() != joints.len())
        {
            return Err(LimitViolation::Shape { point });
        }
        let t = p.time_from_start.as_secs_f64();
        if let Some((t_prev, _)) = prev {
            if t.partial_cmp(&t_prev) != Some(std::cmp::Ordering::Greater) {
                return Err(LimitViolation::Time { point });
            }
        }
        for (j, joint) in joints.iter().enumerate() {
            let value = p.positions[j];
            if !(value >= joint.lower - EPS && value <= joint.upper + EPS) {
                return Err(LimitViolation::Position {
                    point,
                    joint: joint.name.clone(),
                    value,
                    lower: joint.lower,
                    upper: joint.upper,
                });
            }
            let check_speed = |value: f64| {
                if value.is_nan() || value > joint.velocity * (1.0 + 1e-6) {
                    Err(LimitViolation::Velocity {
                        point,
                        joint: joint.name.clone(),
                        value,
                        limit: joint.velocity,
                    })
                } else {
                    Ok(())
                }
            };
            if has_velocities {
                check_speed(p.velocities[j].abs())?;
            }
            if let Some((t_prev, q_prev)) = prev {
                check_speed((value - q_prev[j]).abs() / (t - t_prev))?;
            }
        }
        prev = Some((t, &p.positions));
    }
    Ok(())
}

/// Where time `t` (s from the trajectory's start) falls: the points `(k0, k1)` around it
/// and the fraction `a` of the way from `k0` to `k1`; clamped to the first and last
/// points. `None` for a trajectory without points.
pub fn trajectory_segment(traj: &JointTrajectory, t: f64) -> Option<(usize, usize, f64)> {
    let pts = &traj.points;
    let last = pts.len().checked_sub(1)?;
    let k1 = pts
        .partition_point(|p| p.time_from_start.as_secs_f64() <= t)
        .min(last);
    let k0 = k1.saturating_sub(1);
    let (t0, t1) = (
        pts[k0].time_from_start.as_secs_f64(),
        pts[k1].time_from_start.as_secs_f64(),
    );
    let a = if t1 > t0 {
        ((t - t0) / (t1 - t0)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    Some((k0, k1, a))
}

/// Joint positions at time `t` by linear interpolation (empty for an empty trajectory).
pub fn sample_positions(traj: &JointTrajectory, t: f64) -> Vec<f64> {
    let Some((k0, k1, a)) = trajectory_segment(traj, t) else {
        return Vec::new();
    };
    let (p0, p1) = (&traj.points[k0].positions, &traj.points[k1].positions);
    p0.iter().zip(p1).map(|(x, y)| x + (y - x) * a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_yaw_of_a_tcp_pose_is_the_one_it_was_made_with_even_pointing_sideways() {
        let p = Point3::new(0.5, 0.0, 0.3);
        for yaw in [-2.5, -0.7, 0.0, 0.7, 2.5] {
            let down = tcp_down(&p, yaw).rotation;
            assert!((wrap_pi(yaw_of(&down) - yaw)).abs() < 1e-9, "{yaw}");
            // Tilted a quarter turn about its own y axis: the x axis points straight down
            // and only the y axis tells the yaw.
            let sideways = down
                * UnitQuaternion::from_axis_angle(&Vector3::y_axis(), std::f64::consts::FRAC_PI_2);
            assert!((sideways * Vector3::x()).xy().norm() < 1e-9);
            assert!(
                (wrap_pi(yaw_of(&sideways) - yaw)).abs() < 1e-9,
                "{yaw}: {}",
                yaw_of(&sideways)
            );
        }
    }

    #[test]
    fn joints_without_a_velocity_limit_still_accelerate_within_theirs() {
        // Every limit's velocity 0 (read as none): only the accelerations cap the motion.
        let xml = crate::robot::franka::FRANKA_URDF
            .split("velocity=\"")
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part.to_string()
                } else {
                    format!("0\"{}", part.split_once('"').expect("a closed value").1)
                }
            })
            .collect::<Vec<_>>()
            .join("velocity=\"");
        let arm = crate::robot::model::ArmModel::from_urdf_str(&xml, "world", "panda_tcp").unwrap();
        assert!(arm.movable_joints().all(|j| j.velocity.is_infinite()));
        let plan = plan_pick_place(
            &arm,
            &crate::robot::franka::READY,
            &Point3::new(0.5, 0.1, 0.02),
            &Point3::new(0.55, -0.1, 0.02),
            &PickPlaceParams::default(),
        )
        .unwrap();
        let (_, start, end) = plan
            .phases
            .iter()
            .find(|(p, _, _)| *p == Phase::Approach)
            .unwrap();
        assert!(end - start > 0.2, "the approach took {start}..{end} s");
    }
}
