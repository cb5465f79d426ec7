//! The carry prior: a crude, hand-made guess of the future frames from the gripper's path,
//! which the world model can take as its starting point and correct (`Config::prior`).
//!
//! A [`GripPath`] is where the gripper closes (its tip projected into the model's frame) and
//! how far the held material has been carried at each future frame (zero before the grasp,
//! the tip's travel while closed, the place minus the pick after the release). [`carry`]
//! moves the object's pixels of the current frame by that offset, weighted by
//! `exp(−d² / 2σ²)` of their distance `d` to the pick: what is held moves with the gripper,
//! what is near it is dragged part of the way, the rest stays. Every pixel is split into
//! 4×4 samples before it is moved, so a stretched region keeps no holes.
//!
//! Written here rather than taken from an image crate: it is a forward splat with a
//! per-pixel displacement (no crate in the tree warps by a scattered field), a few dozen
//! lines over rgb8 buffers. It knows no physics (no fold, no tension, no collision): the
//! network learns the rest. `docs/world_model.md` reports how well it ranks alone.

use serde::{Deserialize, Serialize};

use super::config::PriorModel;
use super::Config;

/// The gripper's path through the model's frame, in its pixels (u right, v down).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GripPath {
    /// Where the gripper's tip is when it closes.
    pub pick: [f32; 2],
    /// The held material's offset from the pick at each future frame.
    pub offsets: Vec<[f32; 2]>,
    /// Where each future frame falls in the grasp's life (empty in clip caches cut before
    /// the particle prior: then every frame but the last counts as held).
    #[serde(default)]
    pub phases: Vec<Phase>,
}

impl GripPath {
    /// A path from the tip's pixel at the grasp and, per future frame, the tip's pixel and
    /// whether the frame falls before the grasp (`Before`), while held (`Held`) or after
    /// the release (`After`); `place` is the tip's pixel at the release.
    pub fn new(pick: [f32; 2], place: [f32; 2], frames: &[(Phase, [f32; 2])]) -> Self {
        let offsets = frames
            .iter()
            .map(|(phase, tip)| match phase {
                Phase::Before => [0.0, 0.0],
                Phase::Held => [tip[0] - pick[0], tip[1] - pick[1]],
                Phase::After => [place[0] - pick[0], place[1] - pick[1]],
            })
            .collect();
        let phases = frames.iter().map(|(phase, _)| *phase).collect();
        Self {
            pick,
            offsets,
            phases,
        }
    }
}

/// Where a frame falls in the grasp's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The gripper has not closed yet.
    Before,
    /// The gripper holds the material.
    Held,
    /// The gripper has opened again.
    After,
}

/// The background colour of an object-only frame: the median of its border pixels, per
/// channel (the table fills the border of the workspace crop).
pub(super) fn background(rgb: &[u8], w: usize, h: usize) -> [u8; 3] {
    let mut chans: [Vec<u8>; 3] = Default::default();
    let mut push = |x: usize, y: usize| {
        for (c, chan) in chans.iter_mut().enumerate() {
            chan.push(rgb[(y * w + x) * 3 + c]);
        }
    };
    for x in 0..w {
        push(x, 0);
        push(x, h - 1);
    }
    for y in 1..h.saturating_sub(1) {
        push(0, y);
        push(w - 1, y);
    }
    chans.map(|mut v| {
        v.sort_unstable();
        v[v.len() / 2]
    })
}

/// Whether a pixel differs from the background by more than a small tolerance (the area
/// resize blends an object's edge into the table).
pub(super) fn is_object(p: &[u8], bg: [u8; 3]) -> bool {
    p.iter()
        .zip(bg)
        .map(|(a, b)| (i32::from(*a) - i32::from(b)).abs())
        .sum::<i32>()
        > 24
}

/// The configured prior's future frames (rgb8, the model's size) for the gripper's `path`:
/// [`carry`] or [`super::particles::particles`], as `cfg.prior_model` says.
pub fn frames(context: &[u8], path: &GripPath, cfg: &Config) -> Vec<Vec<u8>> {
    match cfg.prior_model {
        PriorModel::Carry => carry(context, path, cfg),
        PriorModel::Particles => super::particles::particles(context, path, cfg),
    }
}

/// The carry prior's future frames (rgb8, the model's size): the object's pixels of `context`
/// carried along `path`, with the drag reach `cfg.prior_sigma_px`.
pub fn carry(context: &[u8], path: &GripPath, cfg: &Config) -> Vec<Vec<u8>> {
    let (w, h) = (cfg.width, cfg.height);
    let bg = background(context, w, h);
    let sigma = cfg.prior_sigma_px.max(1e-3) as f32;
    // The object's samples: position, colour, weight; drawn in order of weight so that
    // what is held lands on top of what it is dragged over.
    const SUB: usize = 4;
    let mut samples: Vec<([f32; 2], [u8; 3], f32)> = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = (y * w + x) * 3;
            let p = &context[i..i + 3];
            if !is_object(p, bg) {
                continue;
            }
            for sy in 0..SUB {
                for sx in 0..SUB {
                    let u = x as f32 + (sx as f32 + 0.5) / SUB as f32;
                    let v = y as f32 + (sy as f32 + 0.5) / SUB as f32;
                    let d2 = (u - path.pick[0]).powi(2) + (v - path.pick[1]).powi(2);
                    let wgt = (-d2 / (2.0 * sigma * sigma)).exp();
                    samples.push(([u, v], [p[0], p[1], p[2]], wgt));
                }
            }
        }
    }
    samples.sort_by(|a, b| a.2.total_cmp(&b.2));
    path.offsets
        .iter()
        .map(|off| {
            let mut out: Vec<u8> = bg.iter().copied().cycle().take(w * h * 3).collect();
            for (pos, col, wgt) in &samples {
                let u = pos[0] + off[0] * wgt;
                let v = pos[1] + off[1] * wgt;
                // Written so that a NaN falls outside too.
                if !(u >= 0.0 && v >= 0.0 && u < w as f32 && v < h as f32) {
                    continue;
                }
                let i = (v as usize * w + u as usize) * 3;
                out[i..i + 3].copy_from_slice(col);
            }
            out
        })
        .collect()
}
