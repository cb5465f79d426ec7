//! Does the hand-eye pose agree with the camera? The arm is drawn from its joint state
//! through the URDF, the camera's intrinsics and the configured `base_from_camera` pose,
//! and laid over the camera's image (`dreamplan check-calibration`). Where the pose is
//! right, the drawn arm's outline lies on the real arm's edges; where it is off, the
//! outline fits the image's edges best somewhere else, and how far (in pixels) is what
//! this module measures.
//!
//! The measure: the image's edges (OpenCV's Canny on the grey image, each edge widened by
//! a pixel so that a one-pixel rendering difference still counts), and the share of the
//! drawn outline's pixels that land on one, at the drawn place and shifted by every
//! offset up to a radius. The offset with the largest share is the image-space error of
//! the calibration; its share says how well the drawn arm fits at all (a cluttered image
//! has edges everywhere, so the share at the best offset is read against the share at
//! offsets far from it). The search and the overlay are our own: a few loops over a mask,
//! no OpenCV routine does this fit.

use opencv::core::{Mat, Size, Vec3b};
use opencv::imgproc;
use opencv::prelude::*;

use super::{RgbView, VisionError};
use crate::render::{render, scene, PinholeCamera, RenderMode, RenderOptions};
use crate::robot::ArmModel;

/// The arm drawn through a camera.
#[derive(Debug, Clone)]
pub struct DrawnArm {
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Row-major: where the arm is drawn.
    pub mask: Vec<bool>,
    /// The tool point's pixel (`None`: behind the camera).
    pub tcp_px: Option<(f64, f64)>,
    /// The median depth (m, along the optical axis) of the drawn arm's pixels.
    pub depth_m: Option<f64>,
}

impl DrawnArm {
    /// The arm at joint positions `q` (the model's order) as `camera` sees it.
    pub fn new(arm: &ArmModel, q: &[f64], gripper_open: bool, camera: &PinholeCamera) -> Self {
        let poses: Vec<_> = arm.link_poses(q).into_iter().map(|(_, p)| p).collect();
        let prims = scene::arm_primitives(&poses, gripper_open);
        let frame = render(
            &prims,
            camera,
            RenderMode::ArmOnWhite,
            &RenderOptions::default(),
        );
        // Drawn on white: anything visibly darker is arm (antialiased rims included).
        let mask: Vec<bool> = frame
            .rgb
            .chunks_exact(3)
            .map(|p| p.iter().any(|&c| c < 235))
            .collect();
        let mut depths: Vec<f64> = mask
            .iter()
            .zip(&frame.depth)
            .filter(|(m, d)| **m && d.is_finite())
            .map(|(_, d)| *d as f64)
            .collect();
        depths.sort_by(f64::total_cmp);
        let tcp = arm.fk(q).translation.vector;
        Self {
            width: camera.width,
            height: camera.height,
            mask,
            tcp_px: camera
                .project(&nalgebra::Point3::from(tcp))
                .map(|(u, v, _)| (u, v)),
            depth_m: depths.get(depths.len() / 2).copied(),
        }
    }

    fn at(&self, x: i64, y: i64) -> bool {
        x >= 0
            && y >= 0
            && x < self.width as i64
            && y < self.height as i64
            && self.mask[(y * self.width as i64 + x) as usize]
    }

    /// The drawn arm's outline: its pixels with a 4-neighbour outside it.
    pub fn outline(&self) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        for y in 0..self.height as i64 {
            for x in 0..self.width as i64 {
                if self.at(x, y)
                    && !(self.at(x - 1, y)
                        && self.at(x + 1, y)
                        && self.at(x, y - 1)
                        && self.at(x, y + 1))
                {
                    out.push((x, y));
                }
            }
        }
        out
    }

    /// Pixels of the arm on the image.
    pub fn area(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }
}

/// The image's edges, each widened by a pixel (row-major).
pub fn edges(image: &RgbView<'_>) -> Result<Vec<bool>, VisionError> {
    let (w, h) = (image.width as i32, image.height as i32);
    let rgb = Mat::new_rows_cols_with_bytes::<Vec3b>(h, w, image.data)?;
    let mut grey = Mat::default();
    imgproc::cvt_color_def(&rgb, &mut grey, imgproc::COLOR_RGB2GRAY)?;
    let mut blurred = Mat::default();
    imgproc::gaussian_blur_def(&grey, &mut blurred, Size::new(3, 3), 0.0)?;
    let mut edges = Mat::default();
    imgproc::canny_def(&blurred, &mut edges, 40.0, 120.0)?;
    let mut wide = Mat::default();
    let kernel = imgproc::get_structuring_element_def(imgproc::MORPH_RECT, Size::new(3, 3))?;
    imgproc::dilate_def(&edges, &mut wide, &kernel)?;
    Ok(wide.data_bytes()?.iter().map(|&b| b > 0).collect())
}

/// How the drawn outline fits the image's edges.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Fit {
    /// Outline pixels.
    pub outline_px: usize,
    /// Share of them on an edge where the arm is drawn.
    pub on_edges: f64,
    /// The offset (px, image x right, y down) at which the most of them are on an edge.
    pub best_shift: (i64, i64),
    /// That share.
    pub best_on_edges: f64,
    /// The median share over the offsets searched: what the image's clutter gives an
    /// outline anywhere.
    pub clutter: f64,
}

impl Fit {
    /// How far the best offset is from the drawn place (px).
    pub fn error_px(&self) -> f64 {
        (self.best_shift.0 as f64).hypot(self.best_shift.1 as f64)
    }
}

/// The share of `outline` on `edges` (an image of `width`×`height`) at every offset within
/// `radius` px. Ties go to the smaller offset, so a flat fit says "no shift".
pub fn fit(outline: &[(i64, i64)], edges: &[bool], width: u32, height: u32, radius: i64) -> Fit {
    let (w, h) = (width as i64, height as i64);
    let share = |dx: i64, dy: i64| {
        if outline.is_empty() {
            return 0.0;
        }
        let hits = outline
            .iter()
            .filter(|&&(x, y)| {
                let (x, y) = (x + dx, y + dy);
                x >= 0 && y >= 0 && x < w && y < h && edges[(y * w + x) as usize]
            })
            .count();
        hits as f64 / outline.len() as f64
    };
    let mut shares = Vec::new();
    let mut best = ((0, 0), share(0, 0));
    for dy in -radius..=radius {
        for dx in -radius..=radius {
            let s = share(dx, dy);
            shares.push(s);
            let closer = dx * dx + dy * dy < best.0 .0 * best.0 .0 + best.0 .1 * best.0 .1;
            if s > best.1 || (s == best.1 && closer) {
                best = ((dx, dy), s);
            }
        }
    }
    shares.sort_by(f64::total_cmp);
    Fit {
        outline_px: outline.len(),
        on_edges: share(0, 0),
        best_shift: best.0,
        best_on_edges: best.1,
        clutter: shares[shares.len() / 2],
    }
}

/// The first-order correction of a hand-eye pose's position from a fit: the move of the
/// camera (m, in the base frame) that shifts what lies `depth_m` in front of it by `shift`
/// pixels, so that the drawn arm lands where the image shows it. A small rotation error
/// looks the same at one depth and is absorbed into it; the orientation is kept.
pub fn camera_correction(
    camera: &PinholeCamera,
    shift: (i64, i64),
    depth_m: f64,
) -> nalgebra::Vector3<f64> {
    // A point's pixel moves by −f·Δ/Z when the camera moves by Δ along its own x or y.
    let in_camera = nalgebra::Vector3::new(
        -(shift.0 as f64) * depth_m / camera.fx,
        -(shift.1 as f64) * depth_m / camera.fy,
        0.0,
    );
    camera.world_from_camera.rotation * in_camera
}

/// `image` with the drawn arm over it: its pixels tinted magenta, its outline solid, and
/// the tool point as a green cross; with `shifted`, the outline also at the best fit's
/// offset, in cyan.
pub fn overlay(image: &RgbView<'_>, arm: &DrawnArm, shifted: Option<(i64, i64)>) -> Vec<u8> {
    let (w, h) = (image.width as i64, image.height as i64);
    let mut out = image.data.to_vec();
    let mut put = |x: i64, y: i64, c: [u8; 3], alpha: f32| {
        if x < 0 || y < 0 || x >= w || y >= h {
            return;
        }
        let i = ((y * w + x) * 3) as usize;
        for k in 0..3 {
            out[i + k] = (out[i + k] as f32 * (1.0 - alpha) + c[k] as f32 * alpha).round() as u8;
        }
    };
    for y in 0..h {
        for x in 0..w {
            if arm.at(x, y) {
                put(x, y, [255, 0, 255], 0.35);
            }
        }
    }
    let outline = arm.outline();
    for &(x, y) in &outline {
        put(x, y, [255, 0, 255], 1.0);
    }
    if let Some((dx, dy)) = shifted.filter(|&s| s != (0, 0)) {
        for &(x, y) in &outline {
            put(x + dx, y + dy, [0, 230, 255], 1.0);
        }
    }
    if let Some((u, v)) = arm.tcp_px {
        let (x, y) = (u.floor() as i64, v.floor() as i64);
        for d in -6..=6 {
            put(x + d, y, [0, 255, 0], 1.0);
            put(x, y + d, [0, 255, 0], 1.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outline drawn 3 px left of a square's edges fits best shifted 3 px right; the
    /// share there is all of it, at the drawn place none.
    #[test]
    fn the_fit_finds_the_offset_that_puts_the_outline_on_the_edges() {
        let (w, h) = (40u32, 30u32);
        let mut rgb = vec![30u8; (w * h * 3) as usize];
        for y in 10..20 {
            for x in 15..25 {
                let i = ((y * w + x) * 3) as usize;
                rgb[i..i + 3].copy_from_slice(&[220, 220, 220]);
            }
        }
        let e = edges(&RgbView::new(w, h, &rgb).unwrap()).unwrap();
        let mut mask = vec![false; (w * h) as usize];
        for y in 10..20 {
            for x in 12..22 {
                mask[(y * w + x) as usize] = true;
            }
        }
        let arm = DrawnArm {
            width: w,
            height: h,
            mask,
            tcp_px: Some((16.5, 15.5)),
            depth_m: Some(1.0),
        };
        let outline = arm.outline();
        assert_eq!(outline.len(), 36);
        let f = fit(&outline, &e, w, h, 6);
        assert_eq!(f.best_shift.1, 0, "{f:?}");
        assert!((2..=4).contains(&f.best_shift.0), "{f:?}");
        assert!(f.best_on_edges > 0.9, "{f:?}");
        assert!(f.on_edges < f.best_on_edges, "{f:?}");
        let drawn = overlay(&RgbView::new(w, h, &rgb).unwrap(), &arm, Some(f.best_shift));
        let px = |x: u32, y: u32| &drawn[((y * w + x) * 3) as usize..][..3];
        assert_eq!(px(12, 10), [255, 0, 255], "the outline");
        assert_eq!(px(16, 15), [0, 255, 0], "the tool's cross");
        assert_eq!(px(0, 0), [30, 30, 30], "untouched");
    }

    /// The correction moves the camera so that a point at the given depth lands the
    /// given shift further in the image.
    #[test]
    fn the_camera_correction_shifts_a_point_at_its_depth_by_the_fit_s_offset() {
        let mut camera = scene::default_camera(128, 128);
        let p = nalgebra::Point3::new(0.5, 0.05, 0.1);
        let (u, v, z) = camera.project(&p).unwrap();
        let delta = camera_correction(&camera, (7, -4), z);
        camera.world_from_camera.translation.vector += delta;
        let (u2, v2, _) = camera.project(&p).unwrap();
        assert!(
            (u2 - u - 7.0).abs() < 0.05 && (v2 - v + 4.0).abs() < 0.05,
            "({u}, {v}) → ({u2}, {v2})"
        );
    }
}
