//! The executor's safety envelope under load: many adversarial actions through the real
//! [`plan_action`] (the node's whole decision: pixels → depth → workspace policy → motion
//! plan → `SafetyEnvelope::verify`), over all three tasks, several seeds and start poses,
//! every admitted action planned, and every trajectory it would publish checked again by
//! [`audit_trajectory`], written separately from `verify` (denser samples, the start
//! included). `dreamplan robot envelope` runs it on a user's executor config; the tests run
//! it at 10⁵ actions.
//!
//! Hand-written because the property is this project's own (no crate audits a ROS
//! trajectory against a URDF chain and a workspace policy).
//!
//! The actions: two in five are plausible (the pixels of random points in the workspace
//! box, as a planner sends), the rest adversarial (random pixels in and around the image,
//! exact edges, NaN/inf, ±1e30); half use the scene's clean depth, half a damaged one
//! (NaN holes, zero/negative/infinite patches, all depths scaled ×3, ×0.2 or ×1.05); a
//! goal depth is absent in a third; both out-of-bounds policies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::msg::dreamplan::KeypointAction;
use crate::msg::trajectory_msgs::JointTrajectory;
use crate::render::{render, scene, PinholeCamera, RenderMode, RenderOptions};
use crate::robot::safety::{DepthImage, OutOfBounds, Rejection, SafetyEnvelope};
use crate::robot::ArmModel;
use crate::sim::episode::{default_arm, READY};
use crate::sim::rng::Rng;
use crate::sim::tasks::{reset, Task};

use super::executor::{plan_action, ExecutorConfig};

/// What to try.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Actions in all.
    pub actions: u64,
    /// Scene seeds per task (each task's scenes are `seed..seed + scenes`).
    pub scenes: u64,
    /// Start poses: the ready pose and `starts − 1` random ones around it (±0.25 rad per
    /// joint).
    pub starts: usize,
    /// Seed of the actions, start poses and depth damage.
    pub seed: u64,
    /// Worker threads.
    pub threads: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            actions: 100_000,
            scenes: 4,
            starts: 4,
            seed: 0,
            threads: 1,
        }
    }
}

/// What happened to the actions.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AuditReport {
    /// Actions tried.
    pub actions: u64,
    /// Outcome → count (`planned` for the ones the executor would publish).
    pub outcomes: std::collections::BTreeMap<String, u64>,
    /// Trajectories the executor would publish that the audit found outside the envelope.
    pub violations: u64,
    /// The first few violations, with the action that caused them.
    pub examples: Vec<String>,
}

/// Why a trajectory is outside the envelope, checked independently of
/// `SafetyEnvelope::verify`: every point within the joint limits (less the envelope's
/// margin; the limits are a box, so the segments between points are too); from the start
/// pose `q0` to the first point and between every two points, the TCP inside the box and
/// above the table clearance (1 mm tolerance) at 17 samples of the joint-space segment,
/// each segment within the velocity limits, time increasing, every value finite.
pub fn audit_trajectory(
    traj: &JointTrajectory,
    q0: &[f64],
    arm: &ArmModel,
    env: &SafetyEnvelope,
) -> Result<(), String> {
    let joints: Vec<_> = arm.movable_joints().cloned().collect();
    if traj.points.is_empty() {
        return Err("no points".into());
    }
    let mut prev: (Vec<f64>, f64) = (q0.to_vec(), 0.0);
    for (k, pt) in traj.points.iter().enumerate() {
        let q = &pt.positions;
        if q.len() != joints.len() || q.iter().any(|v| !v.is_finite()) {
            return Err(format!("point {k}: {} values, or not finite", q.len()));
        }
        let t = pt.time_from_start.as_secs_f64();
        let dt = t - prev.1;
        let moved = q
            .iter()
            .zip(&prev.0)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        if dt <= 0.0 && !(k == 0 && dt == 0.0 && moved < 1e-9) {
            return Err(format!("point {k}: time {t} s does not increase"));
        }
        // Joint limits are a box: a segment inside it has its ends inside it.
        for (j, joint) in joints.iter().enumerate() {
            let (lo, hi) = (
                joint.lower + env.joint_margin,
                joint.upper - env.joint_margin,
            );
            if q[j] < lo - 1e-6 || q[j] > hi + 1e-6 {
                return Err(format!(
                    "point {k}: joint {j} at {:.4} outside its limits",
                    q[j]
                ));
            }
        }
        for s in 0..=16 {
            let f = s as f64 / 16.0;
            let qs: Vec<f64> = prev.0.iter().zip(q).map(|(a, b)| a + (b - a) * f).collect();
            let p = arm.fk(&qs).translation.vector;
            for i in 0..3 {
                if p[i] < env.workspace_min[i] - 1e-3 || p[i] > env.workspace_max[i] + 1e-3 {
                    return Err(format!("point {k}: TCP {p:?} outside the box"));
                }
            }
            if p.z < env.table_z + env.table_clearance - 1e-3 {
                return Err(format!("point {k}: TCP z {:.4} under the clearance", p.z));
            }
        }
        for (j, joint) in joints.iter().enumerate() {
            if dt > 0.0 {
                let v = (q[j] - prev.0[j]).abs() / dt;
                if v > joint.velocity * env.max_speed_fraction * 1.001 + 1e-9 {
                    return Err(format!("point {k}: joint {j} at {v:.3} rad/s"));
                }
            }
        }
        prev = (q.clone(), t);
    }
    Ok(())
}

/// One rendered scene and its damaged depth images.
struct Scene {
    depths: Vec<DepthImage>,
}

/// Runs `opts.actions` adversarial actions through [`plan_action`] with `config` (both
/// out-of-bounds policies) and audits every trajectory it would publish. `progress` gets
/// the number of actions done.
pub fn run_audit(
    config: &ExecutorConfig,
    opts: &AuditOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> AuditReport {
    let arm = default_arm();
    let camera = config.camera(None);
    let mut rng = Rng::new(opts.seed, 0x5afe);
    let mut scenes = Vec::new();
    for task in Task::ALL {
        for seed in opts.seed..opts.seed + opts.scenes.max(1) {
            scenes.push(damaged_depths(task, seed, &arm, &camera, &mut rng));
        }
    }
    let joints: Vec<_> = arm.movable_joints().cloned().collect();
    let mut starts = vec![READY.to_vec()];
    while starts.len() < opts.starts.max(1) {
        starts.push(
            READY
                .iter()
                .zip(&joints)
                .map(|(&r, j)| (r + rng.uniform(-0.25, 0.25)).clamp(j.lower + 0.05, j.upper - 0.05))
                .collect(),
        );
    }
    let next = AtomicU64::new(0);
    let report = Mutex::new(AuditReport {
        actions: opts.actions,
        ..Default::default()
    });
    let chunk = 256u64;
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| loop {
                let first = next.fetch_add(chunk, Ordering::Relaxed);
                if first >= opts.actions {
                    break;
                }
                let mut local: std::collections::BTreeMap<String, u64> = Default::default();
                let mut bad = Vec::new();
                for i in first..(first + chunk).min(opts.actions) {
                    // Each action from its own generator: the report does not depend on the
                    // thread count.
                    let mut r = Rng::new(opts.seed, 1 + i);
                    let scene = &scenes[r.below(scenes.len())];
                    let q0 = &starts[r.below(starts.len())];
                    // Half the actions on the clean depth, half on a damaged one.
                    let depth = &scene.depths[if r.below(2) == 0 {
                        0
                    } else {
                        r.below(scene.depths.len())
                    }];
                    let goal = match r.below(3) {
                        0 => None,
                        _ => Some(&scene.depths[r.below(scene.depths.len())]),
                    };
                    let mut cfg = config.clone();
                    cfg.envelope.out_of_bounds = if r.below(2) == 0 {
                        OutOfBounds::Reject
                    } else {
                        OutOfBounds::Clamp
                    };
                    let action = if r.below(5) < 2 {
                        plausible_action(&mut r, &camera, &cfg.safety_envelope())
                    } else {
                        adversarial_action(&mut r, camera.width, camera.height)
                    };
                    let key = match plan_action(&cfg, &arm, &camera, &action, Some(depth), goal, q0)
                    {
                        Ok(plan) => {
                            if let Err(m) =
                                audit_trajectory(&plan.trajectory, q0, &arm, &cfg.safety_envelope())
                            {
                                bad.push(format!("{action:?} from {q0:?}: {m}"));
                            }
                            "planned"
                        }
                        Err(e) => rejection_name(&e),
                    };
                    *local.entry(key.to_string()).or_default() += 1;
                }
                let mut rep = report.lock().expect("report");
                for (k, v) in local {
                    *rep.outcomes.entry(k).or_default() += v;
                }
                rep.violations += bad.len() as u64;
                let room = 5usize.saturating_sub(rep.examples.len());
                rep.examples.extend(bad.into_iter().take(room));
                drop(rep);
                progress((first + chunk).min(opts.actions));
            });
        }
    });
    report.into_inner().expect("report")
}

fn rejection_name(e: &Rejection) -> &'static str {
    match e {
        Rejection::NotFinite(_) => "not finite",
        Rejection::OutOfImage { .. } => "out of image",
        Rejection::NoDepth(_) => "no depth",
        Rejection::NoDepthImage => "no depth image",
        Rejection::OutsideWorkspace { .. } => "outside workspace",
        Rejection::Planning(_) => "no motion",
        Rejection::Envelope(_) => "refused by verify",
        Rejection::EStopped => "e-stop",
    }
}

/// The scene's depth as rendered, then with holes (NaN rectangles), with zeros and
/// negative values, and scaled (points far below the table, or in mid air near the camera:
/// unreachable or outside the box).
fn damaged_depths(
    task: Task,
    seed: u64,
    arm: &ArmModel,
    camera: &PinholeCamera,
    rng: &mut Rng,
) -> Scene {
    let world = reset(task, seed);
    let frame = render(
        &scene::full_scene(&world, arm, &READY, true),
        camera,
        RenderMode::Full,
        &RenderOptions {
            supersample: 1,
            ..Default::default()
        },
    );
    let (w, h) = (camera.width, camera.height);
    let clean = DepthImage {
        width: w,
        height: h,
        data: frame.depth,
    };
    let mut holes = clean.clone();
    let mut junk = clean.clone();
    for _ in 0..12 {
        let (x0, y0) = (rng.below(w as usize), rng.below(h as usize));
        let (dw, dh) = (1 + rng.below(w as usize / 4), 1 + rng.below(h as usize / 4));
        let fill = [f32::NAN, 0.0, -1.0, f32::INFINITY][rng.below(4)];
        for y in y0..(y0 + dh).min(h as usize) {
            for x in x0..(x0 + dw).min(w as usize) {
                holes.data[y * w as usize + x] = f32::NAN;
                junk.data[y * w as usize + x] = fill;
            }
        }
    }
    let scaled = |k: f32| DepthImage {
        width: w,
        height: h,
        data: clean.data.iter().map(|d| d * k).collect(),
    };
    Scene {
        depths: vec![
            clean.clone(),
            holes,
            junk,
            scaled(3.0),
            scaled(0.2),
            scaled(1.05),
        ],
    }
}

/// What a planner would send: the pixels of two random points of the workspace box a
/// little above the table (so most are admitted and planned; some still fall on depth
/// damage or outside what the arm reaches from its start).
fn plausible_action(r: &mut Rng, camera: &PinholeCamera, env: &SafetyEnvelope) -> KeypointAction {
    let pixel = |r: &mut Rng| -> (f32, f32) {
        let p = nalgebra::Point3::new(
            r.uniform(env.workspace_min[0], env.workspace_max[0]),
            r.uniform(env.workspace_min[1], env.workspace_max[1]),
            env.table_z + r.uniform(0.0, 0.05),
        );
        camera
            .project(&p)
            .map_or((f32::NAN, f32::NAN), |(u, v, _)| (u as f32, v as f32))
    };
    let (su, sv) = pixel(r);
    let (tu, tv) = pixel(r);
    KeypointAction {
        source_u: su,
        source_v: sv,
        target_u: tu,
        target_v: tv,
        ..Default::default()
    }
}

/// A pixel pair: mostly inside the image, some on and just past its edges, some not
/// finite or absurd.
fn adversarial_action(r: &mut Rng, width: u32, height: u32) -> KeypointAction {
    let px = |r: &mut Rng, side: u32| -> f32 {
        let s = side as f32;
        match r.below(20) {
            0 => [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0][r.below(4)],
            1 => [0.0, s - 1.0, s - 0.001, s, -0.5, 1e30, -1e30][r.below(7)],
            2 => r.uniform(-0.2 * s as f64, 1.2 * s as f64) as f32,
            _ => r.uniform(0.0, s as f64) as f32,
        }
    };
    KeypointAction {
        source_u: px(r, width),
        source_v: px(r, height),
        target_u: px(r, width),
        target_v: px(r, height),
        ..Default::default()
    }
}
