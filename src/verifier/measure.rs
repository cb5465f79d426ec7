//! The outcome measure every image-predicting verifier shares: how close an object mask
//! (a predicted or simulated final frame, segmented) is to the goal's object mask.
//!
//! Two numbers, both deterministic and symmetric:
//! - **IoU** of the two masks (0–1, 1 = the same pixels);
//! - **symmetric Chamfer distance**: the mean, over the object pixels of each mask, of the
//!   Euclidean distance (pixels) to the nearest object pixel of the other mask, averaged over
//!   both directions. 0 = the same pixels; it keeps grading outcomes whose masks no longer
//!   overlap, where IoU is 0 for all of them.
//!
//! They are folded into one value, higher is better, in [0, 1]:
//! `value = ½·IoU + ½·exp(−chamfer / (0.05 · side))`, with `side` the image's shorter side
//! (a Chamfer distance of 5% of the image costs half of its share). An empty mask on either
//! side has value 0 (nothing to compare). The distance transform is OpenCV's exact one
//! (`DIST_L2`, `DIST_MASK_PRECISE`).

use opencv::core::{Mat, CV_32F};
use opencv::imgproc;
use opencv::prelude::*;

use crate::vision::{Mask, VisionError};

/// IoU, Chamfer and the folded value of one outcome against the goal.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MaskScore {
    /// Intersection over union (0–1).
    pub iou: f64,
    /// Symmetric Chamfer distance (pixels; infinite when a mask is empty).
    pub chamfer_px: f64,
    /// `½·IoU + ½·exp(−chamfer / (0.05·side))` (0–1, higher is better).
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

/// Scores `outcome` against `goal` (masks of the same size).
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
    let mean_dist = |from: &Mask, to: &[f32]| -> f64 {
        let (sum, n) = from
            .data
            .iter()
            .zip(to)
            .filter(|(m, _)| **m)
            .fold((0.0f64, 0usize), |(s, n), (_, d)| {
                (s + f64::from(*d), n + 1)
            });
        sum / n as f64
    };
    let chamfer_px =
        0.5 * (mean_dist(outcome, &distance_to(goal)?) + mean_dist(goal, &distance_to(outcome)?));
    let side = f64::from(goal.width.min(goal.height));
    let value = 0.5 * iou + 0.5 * (-chamfer_px / (0.05 * side)).exp();
    Ok(MaskScore {
        iou,
        chamfer_px,
        value,
    })
}
