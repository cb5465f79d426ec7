//! Farthest-point sampling of numbered keypoints on an object mask.
//!
//! Deterministic to the pixel: the first keypoint is the object pixel farthest from the
//! mask's centroid (an extremity: a rope end, a cloth corner, a paw), each next one the pixel
//! farthest from all chosen so far; ties go to the first pixel in row-major order.

use super::{Mask, VisionError};

/// A numbered point on an image (pixel centre coordinates: column `u`, row `v`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keypoint {
    /// 1-based number, as drawn on the overlay and named in the prompt.
    pub id: u32,
    /// Column (pixels, continuous; pixel centres at +0.5).
    pub u: f32,
    /// Row.
    pub v: f32,
}

impl Keypoint {
    /// Coordinates normalised to 0–1000 of the image size (Qwen-VL's grounding convention).
    pub fn normalized(&self, width: u32, height: u32) -> (u32, u32) {
        let n = |x: f32, size: u32| ((x / size as f32) * 1000.0).round().clamp(0.0, 1000.0) as u32;
        (n(self.u, width), n(self.v, height))
    }
}

/// `n` keypoints spread over `mask` (see the module doc for the order).
pub fn farthest_point_sampling(mask: &Mask, n: usize) -> Result<Vec<Keypoint>, VisionError> {
    let pts: Vec<(f32, f32)> = (0..mask.height)
        .flat_map(|y| (0..mask.width).map(move |x| (x, y)))
        .filter(|&(x, y)| mask.get(x, y))
        .map(|(x, y)| (x as f32 + 0.5, y as f32 + 0.5))
        .collect();
    if pts.len() < n {
        return Err(VisionError::TooFewPixels {
            wanted: n,
            found: pts.len(),
        });
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let count = pts.len() as f64;
    let (cx, cy) = pts.iter().fold((0.0f64, 0.0f64), |(a, b), p| {
        (a + p.0 as f64 / count, b + p.1 as f64 / count)
    });
    let d2 = |p: &(f32, f32), q: (f32, f32)| {
        let (dx, dy) = (p.0 - q.0, p.1 - q.1);
        dx * dx + dy * dy
    };
    // Index of the maximum, first one on ties.
    let argmax = |vals: &[f32]| {
        vals.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0
    };
    let from_centre: Vec<f32> = pts.iter().map(|p| d2(p, (cx as f32, cy as f32))).collect();
    let mut chosen = vec![argmax(&from_centre)];
    let mut nearest: Vec<f32> = pts.iter().map(|p| d2(p, pts[chosen[0]])).collect();
    while chosen.len() < n {
        let next = argmax(&nearest);
        chosen.push(next);
        for (d, p) in nearest.iter_mut().zip(&pts) {
            *d = d.min(d2(p, pts[next]));
        }
    }
    Ok(chosen
        .into_iter()
        .enumerate()
        .map(|(k, i)| Keypoint {
            id: k as u32 + 1,
            u: pts[i].0,
            v: pts[i].1,
        })
        .collect())
}
