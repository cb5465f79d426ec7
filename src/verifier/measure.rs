//! The outcome measure every image-predicting verifier shares: how close an object mask
//! (a predicted or simulated final frame, segmented) is to the goal's object mask.
//!
//! Built from the distance of every object pixel of one mask to the nearest object pixel of
//! the other (OpenCV's exact distance transform, `DIST_L2`, `DIST_MASK_PRECISE`):
//! - **coverage**: the mean, over the goal's object pixels, of their distance to the
//!   outcome: how far the outcome is from covering the goal shape;
//! - **spill**: the mean, over the outcome's object pixels, of their distance to the goal;
//! - **reach** (a robust Hausdorff distance): the larger of the two directions' 90th
//!   percentiles (linear interpolation between order statistics): the worst part, with the
//!   few farthest pixels (segmentation noise) left out.
//!
//! The value, higher is better, in [0, 1]: `exp(−d / (0.05 · side))` with
//! `d = (coverage + ½·reach) / 1.5` and `side` the image's shorter side (a distance of 5% of
//! the image costs a factor e). An empty mask on either side has value 0 (nothing to
//! compare). IoU, the spill and the symmetric Chamfer distance (the mean of coverage and
//! spill) are reported beside it.
//!
//! **Why this fold** (session 30). The simulator scores a final state by how far its
//! particles are from the goal's: the mean for rope and cloth, the worst part for the toy
//! (`sim::tasks::score`). `d` mirrors that: a mean term (the goal's coverage: a missing
//! part of the goal, a limb left behind or a flap unfolded, is the error the simulator
//! punishes) and a worst-part term. A measure is judged by how often it orders two outcomes
//! as the simulator does (pairs whose simulator scores differ by > 0.5 half-thresholds).
//! On 150 screening states (seeds 4,500,000+, K = 8 random actions;
//! `scripts/measure_screen.py` on `wm-eval --dump-masks`), the fold of sessions 7–29,
//! `½·IoU + ½·exp(−chamfer / (0.05·side))`, ordered the true final frames' pairs
//! 82.5 / 96.3 / 78.7% (rope / cloth / toy) and the particle prior's 78.4 / 91.6 / 70.2%;
//! this one 88.1 / 95.6 / 82.9% and 85.5 / 91.8 / 75.8%. With the planner's samples as
//! the candidates: true frames 83.8 / 97.7 / 80.5% → 91.2 / 97.0 / 85.1%, prior
//! 77.6 / 93.7 / 71.6% → 88.2 / 92.5 / 77.1%. IoU was what cost rope most: a thin rope a
//! few pixels off overlaps nothing (IoU alone orders 64% of the true frames' rope pairs).
//! The measure is not symmetric: the goal is the second argument.

use opencv::core::{Mat, CV_32F};
use opencv::imgproc;
use opencv::prelude::*;

use crate::vision::{Mask, VisionError};

/// The measure's name where a message says which one scored (`VerifierScores.metric`).
pub const MEASURE_NAME: &str = "mask_coverage_reach";

/// The measure of one outcome against the goal.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MaskScore {
    /// Intersection over union (0–1).
    pub iou: f64,
    /// Mean distance (pixels) from the goal's object pixels to the outcome's (infinite when
    /// a mask is empty).
    pub coverage_px: f64,
    /// Mean distance (pixels) from the outcome's object pixels to the goal's (infinite when
    /// a mask is empty).
    pub spill_px: f64,
    /// The larger of the two directions' 90th-percentile distances (pixels; infinite when a
    /// mask is empty).
    pub reach_px: f64,
    /// Symmetric Chamfer distance: `½·(coverage + spill)` (pixels).
    pub chamfer_px: f64,
    /// `exp(−((coverage + ½·reach) / 1.5) / (0.05·side))` (0–1, higher is better).
    pub value: f64,
}

/// Distance (pixels) from every pixel to the nearest object pixel of `mask`.
fn distance_to(mask: &Mask) -> Result<Vec<f32>, VisionError> {
    let (w, h) = (mask.width as i32, mask.height as i32);
    // distanceTransform measures the distance to the nearest zero pixel: object = 0.
    let inverted: Vec<u8> = mask.data.iter().map(|&b| if b { 0 } else { 255 }).collect();
    let src = Mat::new_rows_cols_with_data(h, w, &inverted)?;
    let mut dist = Mat::default();
    imgproc::distance_transform(
        &src,
        &mut dist,
        imgproc::DIST_L2,
        imgproc::DIST_MASK_PRECISE,
        CV_32F,
    )?;
    Ok(dist.data_typed::<f32>()?.to_vec())
}

/// Scores `outcome` against `goal` (masks of the same size; not symmetric: see the module
/// doc).
pub fn mask_score(outcome: &Mask, goal: &Mask) -> Result<MaskScore, VisionError> {
    if outcome.width != goal.width || outcome.height != goal.height {
        return Err(VisionError::BadImage(format!(
            "outcome mask {}x{} and goal mask {}x{} differ in size",
            outcome.width, outcome.height, goal.width, goal.height
        )));
    }
    let (a, b) = (outcome.area(), goal.area());
    if a == 0 || b == 0 {
        return Ok(MaskScore {
            iou: 0.0,
            coverage_px: f64::INFINITY,
            spill_px: f64::INFINITY,
            reach_px: f64::INFINITY,
            chamfer_px: f64::INFINITY,
            value: 0.0,
        });
    }
    let inter = outcome
        .data
        .iter()
        .zip(&goal.data)
        .filter(|(x, y)| **x && **y)
        .count();
    let iou = inter as f64 / (a + b - inter) as f64;
    // The distances of `from`'s object pixels to the nearest object pixel of the other mask.
    let directed = |from: &Mask, to: &[f32]| -> Vec<f64> {
        from.data
            .iter()
            .zip(to)
            .filter(|(m, _)| **m)
            .map(|(_, d)| f64::from(*d))
            .collect()
    };
    let to_goal = directed(outcome, &distance_to(goal)?);
    let to_outcome = directed(goal, &distance_to(outcome)?);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (coverage_px, spill_px) = (mean(&to_outcome), mean(&to_goal));
    let reach_px = percentile(to_goal, 0.9).max(percentile(to_outcome, 0.9));
    let side = f64::from(goal.width.min(goal.height));
    let d = (coverage_px + 0.5 * reach_px) / 1.5;
    Ok(MaskScore {
        iou,
        coverage_px,
        spill_px,
        reach_px,
        chamfer_px: 0.5 * (coverage_px + spill_px),
        value: (-d / (0.05 * side)).exp(),
    })
}

/// The `q` quantile of `v` (not empty), interpolated linearly between the order statistics
/// at `q·(n − 1)` (NumPy's default).
fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let at = q * (v.len() - 1) as f64;
    let (lo, frac) = (at.floor() as usize, at.fract());
    match v.get(lo + 1) {
        Some(hi) => v[lo] + frac * (hi - v[lo]),
        None => v[lo],
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_interpolate_between_order_statistics_as_numpy_does() {
        let v: Vec<f64> = vec![4.0, 1.0, 3.0, 2.0, 10.0];
        // numpy.percentile([4, 1, 3, 2, 10], 90) = 7.6; 50 → 3; 100 → 10; 0 → 1.
        assert!((super::percentile(v.clone(), 0.9) - 7.6).abs() < 1e-12);
        assert_eq!(super::percentile(v.clone(), 0.5), 3.0);
        assert_eq!(super::percentile(v.clone(), 1.0), 10.0);
        assert_eq!(super::percentile(v, 0.0), 1.0);
        assert_eq!(super::percentile(vec![2.5], 0.9), 2.5);
    }
}
