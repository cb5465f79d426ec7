//! The executor's safety envelope: from a keypoint action (pixels) to 3D pick and place
//! points, and the checks every trajectory passes before it reaches an arm.
//!
//! Order of defence: inputs must be finite and inside their images; the depth there must
//! be valid; the points must lie in the workspace box (reject, or clamp with a logged
//! reason) and not below the table; the planned trajectory must keep every joint within
//! its position and velocity limits and the TCP inside the box and above the table at
//! every point and between points. Nothing that fails one of these is published.

use nalgebra::{Isometry3, Point3};
use serde::Deserialize;

use super::model::ArmModel;
use crate::msg::dreamplan::KeypointAction;
use crate::msg::trajectory_msgs::JointTrajectory;
use crate::render::PinholeCamera;

/// What the executor does with a point outside the workspace box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutOfBounds {
    /// Refuse the action.
    #[default]
    Reject,
    /// Move the point to the nearest point of the box and say so.
    Clamp,
}

/// Limits every published motion respects (base frame of the arm, metres).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyEnvelope {
    /// Lower corner of the box the TCP must stay in.
    pub workspace_min: [f64; 3],
    /// Upper corner of that box.
    pub workspace_max: [f64; 3],
    /// Height of the table top.
    pub table_z: f64,
    /// The TCP never goes lower than `table_z + table_clearance`.
    pub table_clearance: f64,
    /// Points outside the box: reject or clamp.
    pub out_of_bounds: OutOfBounds,
    /// Joints stay this far (rad) inside their position limits.
    pub joint_margin: f64,
    /// Joint speeds stay below this fraction of their limits.
    pub max_speed_fraction: f64,
    /// Pick and place points must lie this far inside the box (m), leaving the motion
    /// around them room to stay inside it.
    pub point_margin: f64,
}

impl Default for SafetyEnvelope {
    fn default() -> Self {
        Self {
            workspace_min: [0.25, -0.45, 0.0],
            workspace_max: [0.75, 0.45, 0.6],
            table_z: 0.0,
            table_clearance: 0.003,
            out_of_bounds: OutOfBounds::Reject,
            joint_margin: 0.0,
            max_speed_fraction: 1.0,
            point_margin: 0.01,
        }
    }
}

/// Why an action was not executed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// A pixel or value of the action is NaN or infinite.
    #[error("{0} is not finite")]
    NotFinite(&'static str),
    /// A pixel lies outside its image.
    #[error("{which} pixel ({u}, {v}) is outside the {width}x{height} image")]
    OutOfImage {
        /// `source` or `target`.
        which: &'static str,
        /// Column.
        u: f32,
        /// Row.
        v: f32,
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
    },
    /// No valid depth at the pixel.
    #[error("no valid depth at the {0} pixel")]
    NoDepth(&'static str),
    /// No depth image has arrived yet (a camera that has not started, or a DDS reader
    /// still matching its writer).
    #[error("no depth image has arrived yet")]
    NoDepthImage,
    /// The point is outside the workspace box (policy: reject).
    #[error("{which} point {point:?} is outside the workspace box")]
    OutsideWorkspace {
        /// `pick` or `place`.
        which: &'static str,
        /// The point, base frame.
        point: [f64; 3],
    },
    /// No motion could be planned.
    #[error("no motion: {0}")]
    Planning(String),
    /// The planned trajectory broke the envelope (a planner bug; never published).
    #[error("trajectory breaks the envelope: {0}")]
    Envelope(String),
    /// The e-stop is engaged.
    #[error("e-stop engaged")]
    EStopped,
}

/// A depth image in metres (row-major, `f32`, NaN/inf/≤0 = no reading).
#[derive(Debug, Clone)]
pub struct DepthImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Depths, metres along the optical axis.
    pub data: Vec<f32>,
}

impl DepthImage {
    /// Depth at a pixel, or the nearest valid reading within `radius` pixels (edges of
    /// thin objects often have holes).
    pub fn at(&self, u: f32, v: f32, radius: i64) -> Option<f64> {
        let (cu, cv) = (u.floor() as i64, v.floor() as i64);
        let mut best: Option<(i64, f32)> = None;
        for dv in -radius..=radius {
            for du in -radius..=radius {
                let (x, y) = (cu + du, cv + dv);
                if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
                    continue;
                }
                let d = self.data[(y * self.width as i64 + x) as usize];
                if d.is_finite() && d > 0.0 {
                    let r2 = du * du + dv * dv;
                    if best.is_none_or(|(b, _)| r2 < b) {
                        best = Some((r2, d));
                    }
                }
            }
        }
        best.map(|(_, d)| d as f64)
    }
}

fn check_pixel(
    which: &'static str,
    u: f32,
    v: f32,
    width: u32,
    height: u32,
) -> Result<(), Rejection> {
    if !u.is_finite() || !v.is_finite() {
        return Err(Rejection::NotFinite(which));
    }
    if u < 0.0 || v < 0.0 || u >= width as f32 || v >= height as f32 {
        return Err(Rejection::OutOfImage {
            which,
            u,
            v,
            width,
            height,
        });
    }
    Ok(())
}

impl SafetyEnvelope {
    /// Applies the workspace policy to a point (base frame); returns it, possibly clamped,
    /// and whether it was clamped.
    pub fn admit(
        &self,
        which: &'static str,
        p: Point3<f64>,
    ) -> Result<(Point3<f64>, bool), Rejection> {
        if !(p.x.is_finite() && p.y.is_finite() && p.z.is_finite()) {
            return Err(Rejection::NotFinite(which));
        }
        let floor = self.table_z + self.table_clearance;
        // Inner box: `point_margin` inside every face but the bottom (the table).
        let m = self.point_margin;
        let lo = [
            self.workspace_min[0] + m,
            self.workspace_min[1] + m,
            self.workspace_min[2].max(floor),
        ];
        let hi = [
            self.workspace_max[0] - m,
            self.workspace_max[1] - m,
            self.workspace_max[2] - m,
        ];
        let inside = (0..3).all(|i| p[i] >= lo[i] && p[i] <= hi[i]);
        if inside {
            return Ok((p, false));
        }
        // Points on or just under the table (an object lying on it) are lifted to the
        // clearance height; that is not a workspace violation.
        let xy_inside = (0..2).all(|i| p[i] >= lo[i] && p[i] <= hi[i]);
        if xy_inside && p.z < floor && p.z > self.table_z - 0.02 {
            return Ok((Point3::new(p.x, p.y, floor), false));
        }
        match self.out_of_bounds {
            OutOfBounds::Reject => Err(Rejection::OutsideWorkspace {
                which,
                point: [p.x, p.y, p.z],
            }),
            OutOfBounds::Clamp => Ok((
                Point3::new(
                    p.x.clamp(lo[0], hi[0]),
                    p.y.clamp(lo[1], hi[1]),
                    p.z.clamp(lo[2], hi[2]),
                ),
                true,
            )),
        }
    }

    /// Checks a trajectory: joint positions within limits (minus the margin), joint speeds
    /// within `max_speed_fraction` of their limits (from the velocities given and from
    /// finite differences between points), and the TCP inside the box and above the table
    /// at every point and halfway between consecutive points.
    pub fn verify(&self, traj: &JointTrajectory, model: &ArmModel) -> Result<(), Rejection> {
        let bad = |m: String| Err(Rejection::Envelope(m));
        let names = model.joint_names();
        if traj.joint_names != names {
            return bad(format!(
                "joint names {:?} differ from the arm's {:?}",
                traj.joint_names, names
            ));
        }
        let joints: Vec<_> = model.movable_joints().collect();
        let floor = self.table_z + self.table_clearance - 1e-4;
        let tol = 1e-4;
        let tcp_ok = |q: &[f64]| -> Result<(), String> {
            let p = model.fk(q).translation.vector;
            for i in 0..3 {
                if p[i] < self.workspace_min[i] - tol || p[i] > self.workspace_max[i] + tol {
                    return Err(format!(
                        "TCP {:?} leaves the workspace box",
                        [p.x, p.y, p.z]
                    ));
                }
            }
            if p.z < floor {
                return Err(format!("TCP z {:.4} is below the table clearance", p.z));
            }
            Ok(())
        };
        let mut prev: Option<(&[f64], f64)> = None;
        for (k, pt) in traj.points.iter().enumerate() {
            let q = &pt.positions;
            if q.len() != joints.len()
                || !(pt.velocities.is_empty() || pt.velocities.len() == joints.len())
            {
                return bad(format!("point {k} has the wrong number of values"));
            }
            if q.iter().chain(&pt.velocities).any(|v| !v.is_finite()) {
                return bad(format!("point {k} is not finite"));
            }
            for (j, (&qj, joint)) in q.iter().zip(&joints).enumerate() {
                let (lo, hi) = (joint.lower, joint.upper);
                let (lo, hi) = (lo + self.joint_margin, hi - self.joint_margin);
                if qj < lo - 1e-9 || qj > hi + 1e-9 {
                    return bad(format!(
                        "point {k}: joint {j} at {qj:.4} outside [{lo:.4}, {hi:.4}]{}",
                        if self.joint_margin > 0.0 {
                            format!(" (its limits less joint_margin {})", self.joint_margin)
                        } else {
                            String::new()
                        }
                    ));
                }
                let vmax = joint.velocity * self.max_speed_fraction;
                if let Some(&vj) = pt.velocities.get(j) {
                    if vj.abs() > vmax + 1e-9 {
                        return bad(format!("point {k}: joint {j} speed {vj:.4} over {vmax:.4}"));
                    }
                }
            }
            if let Err(m) = tcp_ok(q) {
                return bad(format!("point {k}: {m}"));
            }
            let t = pt.time_from_start.as_secs_f64();
            if let Some((qp, tp)) = prev {
                let dt = t - tp;
                if dt <= 0.0 {
                    return bad(format!("point {k}: time does not increase"));
                }
                for (j, joint) in joints.iter().enumerate() {
                    let v = (q[j] - qp[j]).abs() / dt;
                    let vmax = joint.velocity * self.max_speed_fraction;
                    if v > vmax * 1.001 + 1e-9 {
                        return bad(format!(
                            "points {}-{k}: joint {j} moves at {v:.4} rad/s, over {vmax:.4}",
                            k - 1
                        ));
                    }
                }
                let mid: Vec<f64> = qp.iter().zip(q).map(|(a, b)| 0.5 * (a + b)).collect();
                if let Err(m) = tcp_ok(&mid) {
                    return bad(format!("between points {} and {k}: {m}", k - 1));
                }
            }
            prev = Some((q, t));
        }
        Ok(())
    }
}

/// Pick and place points (base frame) for an action: the source pixel through the
/// current depth, the target pixel through the goal depth when there is one, else onto
/// the table plane (the goal shows the object lying on the table).
pub fn action_points(
    action: &KeypointAction,
    camera: &PinholeCamera,
    depth: &DepthImage,
    goal_depth: Option<&DepthImage>,
    base_from_world: &Isometry3<f64>,
    table_z_world: f64,
) -> Result<(Point3<f64>, Point3<f64>), Rejection> {
    check_pixel(
        "source",
        action.source_u,
        action.source_v,
        camera.width,
        camera.height,
    )?;
    check_pixel(
        "target",
        action.target_u,
        action.target_v,
        camera.width,
        camera.height,
    )?;
    let (su, sv) = (action.source_u as f64, action.source_v as f64);
    let d = depth
        .at(action.source_u, action.source_v, 2)
        .ok_or(Rejection::NoDepth("source"))?;
    let pick_world = camera.unproject(su, sv, d);
    let (tu, tv) = (action.target_u as f64, action.target_v as f64);
    let place_world = match goal_depth.and_then(|g| g.at(action.target_u, action.target_v, 2)) {
        Some(d) => camera.unproject(tu, tv, d),
        None => {
            let (o, dir) = camera.ray(tu, tv);
            if dir.z.abs() < 1e-9 {
                return Err(Rejection::NoDepth("target"));
            }
            let t = (table_z_world - o.z) / dir.z;
            if t <= 0.0 {
                return Err(Rejection::NoDepth("target"));
            }
            o + dir * t
        }
    };
    Ok((base_from_world * pick_world, base_from_world * place_world))
}
