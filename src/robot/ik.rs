//! Inverse kinematics: damped least squares with Levenberg–Marquardt damping, joint
//! limits enforced by clamping every step, and seeded random restarts.

use nalgebra::{DMatrix, DVector, Isometry3, Vector6};

use super::model::ArmModel;

/// Knobs of [`ArmModel::ik`].
#[derive(Debug, Clone)]
pub struct IkOptions {
    /// Converged when the tip position error is below this (m)…
    pub position_tolerance_m: f64,
    /// …and the orientation error angle is below this (rad).
    pub orientation_tolerance_rad: f64,
    /// LM iterations per attempt.
    pub max_iterations: usize,
    /// Extra attempts from random joint positions after the seed fails (0: seed only,
    /// which keeps solutions continuous along a path).
    pub restarts: usize,
    /// Seed of the restart generator (results are reproducible).
    pub rng_seed: u64,
}

impl Default for IkOptions {
    fn default() -> Self {
        Self {
            position_tolerance_m: 1e-6,
            orientation_tolerance_rad: 1e-6,
            max_iterations: 100,
            restarts: 20,
            rng_seed: 0x5eed,
        }
    }
}

/// Why IK found no joint positions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IkError {
    /// The seed does not have one value per movable joint.
    #[error("seed has {got} values, the chain has {expected} movable joints")]
    WrongSeedLength {
        /// dof of the chain.
        expected: usize,
        /// length of the seed.
        got: usize,
    },
    /// The target (or seed) holds NaN or infinity.
    #[error("target or seed is not finite")]
    NotFinite,
    /// The target is farther from the first joint than the chain can reach.
    #[error("target is {distance_m:.3} m from the first joint, the chain reaches {reach_m:.3} m")]
    Unreachable {
        /// Distance from the first movable joint to the target position.
        distance_m: f64,
        /// Upper bound on the chain's reach.
        reach_m: f64,
    },
    /// No attempt met the tolerances; the best residual found.
    #[error("IK did not converge: best residual {position_error_m:.2e} m, {orientation_error_rad:.2e} rad after {attempts} attempts")]
    DidNotConverge {
        /// Position error of the best attempt (m).
        position_error_m: f64,
        /// Orientation error of the best attempt (rad).
        orientation_error_rad: f64,
        /// Attempts made (seed + restarts).
        attempts: usize,
        /// The best joint positions found (within limits).
        best: Vec<f64>,
    },
}

/// Pose error (target − current) in the base frame: linear (m) then rotation vector (rad).
fn pose_error(base_from_target: &Isometry3<f64>, base_from_tip: &Isometry3<f64>) -> Vector6<f64> {
    let dp = base_from_target.translation.vector - base_from_tip.translation.vector;
    let dr = (base_from_target.rotation * base_from_tip.rotation.inverse()).scaled_axis();
    Vector6::new(dp.x, dp.y, dp.z, dr.x, dr.y, dr.z)
}

fn split_norms(e: &Vector6<f64>) -> (f64, f64) {
    (e.fixed_rows::<3>(0).norm(), e.fixed_rows::<3>(3).norm())
}

/// splitmix64: a tiny deterministic generator for restart seeds.
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl ArmModel {
    /// Joint positions that put the tip at `base_from_target` (position and orientation),
    /// starting from `seed`, within the joint limits.
    pub fn ik(
        &self,
        base_from_target: &Isometry3<f64>,
        seed: &[f64],
        opts: &IkOptions,
    ) -> Result<Vec<f64>, IkError> {
        if seed.len() != self.dof() {
            return Err(IkError::WrongSeedLength {
                expected: self.dof(),
                got: seed.len(),
            });
        }
        let finite_target = base_from_target
            .translation
            .vector
            .iter()
            .all(|v| v.is_finite())
            && base_from_target
                .rotation
                .coords
                .iter()
                .all(|v| v.is_finite());
        if !finite_target || seed.iter().any(|v| !v.is_finite()) {
            return Err(IkError::NotFinite);
        }
        let (origin, reach) = self.reach();
        let distance = (base_from_target.translation.vector - origin.coords).norm();
        if distance > reach + opts.position_tolerance_m {
            return Err(IkError::Unreachable {
                distance_m: distance,
                reach_m: reach,
            });
        }
        let mut rng = SplitMix(opts.rng_seed);
        let mut best: Option<(f64, f64, Vec<f64>)> = None;
        let attempts = 1 + opts.restarts;
        for attempt in 0..attempts {
            let start: Vec<f64> = if attempt == 0 {
                seed.to_vec()
            } else {
                self.movable_joints()
                    .map(|j| {
                        let (lo, hi) = if j.lower.is_finite() && j.upper.is_finite() {
                            (j.lower, j.upper)
                        } else {
                            (-std::f64::consts::PI, std::f64::consts::PI)
                        };
                        lo + (hi - lo) * rng.next_f64()
                    })
                    .collect()
            };
            let (q, ep, er) = self.solve_lm(base_from_target, start, opts);
            if ep <= opts.position_tolerance_m && er <= opts.orientation_tolerance_rad {
                return Ok(q);
            }
            let better = best.as_ref().is_none_or(|(bp, br, _)| ep + er < bp + br);
            if better {
                best = Some((ep, er, q));
            }
        }
        let (position_error_m, orientation_error_rad, best) =
            best.unwrap_or((f64::INFINITY, f64::INFINITY, seed.to_vec()));
        Err(IkError::DidNotConverge {
            position_error_m,
            orientation_error_rad,
            attempts,
            best,
        })
    }

    /// One LM run from `q`; returns the final q and its position/orientation errors.
    fn solve_lm(
        &self,
        base_from_target: &Isometry3<f64>,
        mut q: Vec<f64>,
        opts: &IkOptions,
    ) -> (Vec<f64>, f64, f64) {
        let n = self.dof();
        self.clamp(&mut q);
        let (tip, mut jac) = self.fk_and_jacobian(&q);
        let mut e = pose_error(base_from_target, &tip);
        let mut cost = e.norm_squared();
        let mut lambda = 1e-3;
        let mut trial = vec![0.0; n];
        for _ in 0..opts.max_iterations {
            let (ep, er) = split_norms(&e);
            if ep <= opts.position_tolerance_m && er <= opts.orientation_tolerance_rad {
                break;
            }
            // (JᵀJ + λI) Δq = Jᵀe
            let jt = jac.transpose();
            let g: DVector<f64> = &jt * DVector::from_column_slice(e.as_slice());
            let mut a: DMatrix<f64> = &jt * &jac;
            for i in 0..n {
                a[(i, i)] += lambda;
            }
            let Some(chol) = a.cholesky() else {
                lambda *= 10.0;
                continue;
            };
            let dq = chol.solve(&g);
            for i in 0..n {
                trial[i] = q[i] + dq[i];
            }
            self.clamp(&mut trial);
            let (t_tip, t_jac) = self.fk_and_jacobian(&trial);
            let t_e = pose_error(base_from_target, &t_tip);
            let t_cost = t_e.norm_squared();
            if t_cost < cost {
                q.copy_from_slice(&trial);
                (jac, e, cost) = (t_jac, t_e, t_cost);
                lambda = (lambda * 0.2).max(1e-12);
            } else {
                lambda *= 10.0;
                if lambda > 1e8 {
                    break; // stuck against a limit or in a local minimum
                }
            }
        }
        let (ep, er) = split_norms(&e);
        (q, ep, er)
    }
}
