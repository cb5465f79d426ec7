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

    /// The drawn arm's outline: its pixels with a 4-neighbour on the image outside it.
    /// Where the image's border cuts the arm there is no edge to fit, so the border is
    /// not outline (before session 51 it was, and a pose was pulled by an arm reaching
    /// out of view).
    pub fn outline(&self) -> Vec<(i64, i64)> {
        let (w, h) = (self.width as i64, self.height as i64);
        let arm_or_off = |x: i64, y: i64| x < 0 || y < 0 || x >= w || y >= h || self.at(x, y);
        let mut out = Vec::new();
        for y in 0..h {
            for x in 0..w {
                if self.at(x, y)
                    && !(arm_or_off(x - 1, y)
                        && arm_or_off(x + 1, y)
                        && arm_or_off(x, y - 1)
                        && arm_or_off(x, y + 1))
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

/// The image's Canny edges (255 on an edge, 0 elsewhere).
fn canny(image: &RgbView<'_>) -> Result<Mat, VisionError> {
    let (w, h) = (image.width as i32, image.height as i32);
    let rgb = Mat::new_rows_cols_with_bytes::<Vec3b>(h, w, image.data)?;
    let mut grey = Mat::default();
    imgproc::cvt_color_def(&rgb, &mut grey, imgproc::COLOR_RGB2GRAY)?;
    let mut blurred = Mat::default();
    imgproc::gaussian_blur_def(&grey, &mut blurred, Size::new(3, 3), 0.0)?;
    let mut edges = Mat::default();
    imgproc::canny_def(&blurred, &mut edges, 40.0, 120.0)?;
    Ok(edges)
}

/// The image's edges, each widened by a pixel (row-major).
pub fn edges(image: &RgbView<'_>) -> Result<Vec<bool>, VisionError> {
    let edges = canny(image)?;
    let mut wide = Mat::default();
    let kernel = imgproc::get_structuring_element_def(imgproc::MORPH_RECT, Size::new(3, 3))?;
    imgproc::dilate_def(&edges, &mut wide, &kernel)?;
    Ok(wide.data_bytes()?.iter().map(|&b| b > 0).collect())
}

/// Every pixel's distance (px) to the image's nearest edge (row-major; OpenCV's exact
/// Euclidean distance transform of the Canny edges). An image without an edge is
/// `f32::MAX` everywhere.
pub fn edge_distance(image: &RgbView<'_>) -> Result<Vec<f32>, VisionError> {
    let edges = canny(image)?;
    // The transform measures the distance to the nearest zero: the edges must be zeros.
    let mut inverted = Mat::default();
    opencv::core::bitwise_not_def(&edges, &mut inverted)?;
    let mut distance = Mat::default();
    imgproc::distance_transform_def(
        &inverted,
        &mut distance,
        imgproc::DIST_L2,
        imgproc::DIST_MASK_PRECISE,
    )?;
    Ok(distance.data_typed::<f32>()?.to_vec())
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

/// One frame a hand-eye pose is refined on: where the arm was, and how far each pixel of
/// the image the camera took then is from an edge ([`edge_distance`]).
#[derive(Debug, Clone)]
pub struct RefineFrame {
    /// Joint positions (the model's order).
    pub q: Vec<f64>,
    /// Whether the gripper was open.
    pub gripper_open: bool,
    /// Row-major, the camera's size.
    pub distance: Vec<f32>,
}

/// How well the arm drawn through `camera` lies on the frames' edges: the mean over frames
/// of the mean distance (px) from the drawn outline's pixels to the nearest edge, each
/// capped at `cap_px`; an arm drawn all but outside the image counts the cap. 0 is a
/// perfect fit; clutter lowers it for any pose alike, which the cap bounds. The outline
/// lies on the image (its border is not outline), so a pose that draws part of the arm
/// out of view is judged on the part in view. Session 51 tried counting each pixel gone
/// out of view at the cap instead (against the start's outline): it held the search back
/// from poses with less of the arm in view, the true one among them, and the refined
/// poses of five test poses at 512 px ended 1.1–7.1 mm off on the table instead of
/// 0.4–1.5 mm (docs/ros2.md).
pub fn outline_distance(
    arm: &ArmModel,
    frames: &[RefineFrame],
    camera: &PinholeCamera,
    cap_px: f64,
) -> f64 {
    if frames.is_empty() {
        return cap_px;
    }
    let w = camera.width as i64;
    let total: f64 = frames
        .iter()
        .map(|f| {
            let outline = DrawnArm::new(arm, &f.q, f.gripper_open, camera).outline();
            if outline.len() < MIN_OUTLINE_PX {
                return cap_px;
            }
            let sum: f64 = outline
                .iter()
                .map(|&(x, y)| (f.distance[(y * w + x) as usize] as f64).min(cap_px))
                .sum();
            sum / outline.len() as f64
        })
        .sum();
    total / frames.len() as f64
}

/// Fewer outline pixels than this: the arm is drawn (all but) outside the image.
pub const MIN_OUTLINE_PX: usize = 30;

/// A plane in the camera's optical frame: the points `p` with `normal · p + distance_m
/// = 0`, `normal` of unit length and towards the camera (`distance_m > 0`: the camera's
/// distance from it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plane {
    /// Unit normal, on the camera's side.
    pub normal: nalgebra::Vector3<f64>,
    /// The camera's distance from the plane (m).
    pub distance_m: f64,
    /// The share of the points within the tolerance of it.
    pub inlier_share: f64,
}

/// The plane most of `points` (the camera's frame, m) lie on, within `tolerance_m`:
/// RANSAC over point triples (a seeded SplitMix64, so a run repeats), then a least-squares
/// fit to the best triple's inliers. `None` with fewer than 3 points or when no plane
/// holds a fifth of them. Our own few lines: no crate we use fits a plane robustly.
pub fn fit_plane(points: &[nalgebra::Vector3<f64>], tolerance_m: f64) -> Option<Plane> {
    use nalgebra::{Matrix3, Vector3};
    if points.len() < 3 {
        return None;
    }
    let inliers = |n: &Vector3<f64>, d: f64| {
        points
            .iter()
            .filter(|p| (n.dot(p) + d).abs() <= tolerance_m)
            .count()
    };
    let mut rng = crate::sim::rng::Rng::new(0x7AB1E, 0);
    let mut best: Option<(usize, Vector3<f64>, f64)> = None;
    // Triples until one of three inliers would have been drawn with probability 1 − 1e-4
    // at the best plane's share so far, at least 100 (a noisy table's best triple is
    // better among more) and at most 2,000 (a fifth of inliers: a miss in 1e-7).
    let mut needed = 2000usize;
    let mut tried = 0;
    while tried < needed.clamp(100, 2000) {
        tried += 1;
        let [a, b, c] = [0; 3].map(|_| points[rng.below(points.len())]);
        let n = (b - a).cross(&(c - a));
        if n.norm() < 1e-9 {
            continue;
        }
        let n = n.normalize();
        let d = -n.dot(&a);
        let count = inliers(&n, d);
        if best.as_ref().is_none_or(|(k, _, _)| count > *k) {
            best = Some((count, n, d));
            let share = count as f64 / points.len() as f64;
            let miss = 1.0 - share.powi(3);
            if miss <= 0.0 {
                break;
            }
            needed = ((1e-4f64).ln() / miss.ln()).ceil().max(1.0) as usize;
        }
    }
    let (_, mut normal, mut distance) = best?;
    // Least squares on the inliers (the normal is their covariance's least direction),
    // twice: the second on the first fit's inliers, which a noisy triple's miss.
    for _ in 0..2 {
        let near: Vec<&Vector3<f64>> = points
            .iter()
            .filter(|p| (normal.dot(p) + distance).abs() <= tolerance_m)
            .collect();
        if near.len() < 3 {
            break;
        }
        let centroid = near.iter().copied().sum::<Vector3<f64>>() / near.len() as f64;
        let cov = near.iter().fold(Matrix3::zeros(), |m, p| {
            let q = *p - centroid;
            m + q * q.transpose()
        });
        let eig = cov.symmetric_eigen();
        let (k, _) = eig
            .eigenvalues
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))?;
        normal = eig.eigenvectors.column(k).into_owned().normalize();
        distance = -normal.dot(&centroid);
    }
    if distance < 0.0 {
        (normal, distance) = (-normal, -distance);
    }
    let share = inliers(&normal, distance) as f64 / points.len() as f64;
    (share >= 0.2).then_some(Plane {
        normal,
        distance_m: distance,
        inlier_share: share,
    })
}

/// The points of a depth image (m along the optical axis, row-major, `camera`'s size) in
/// the camera's optical frame, on a grid of at most `columns` columns (a pixel's centre is
/// at +0.5, as the renderer casts its rays), of the pixels `keep(u, v)` (their centres)
/// holds; unmeasured (non-finite) and nearer than 5 cm left out. Empty when the image is
/// not the camera's size.
fn grid_points(
    camera: &PinholeCamera,
    depth: &[f32],
    columns: usize,
    keep: impl Fn(f64, f64) -> bool,
) -> Vec<nalgebra::Vector3<f64>> {
    let (w, h) = (camera.width as usize, camera.height as usize);
    if depth.len() != w * h {
        return Vec::new();
    }
    let stride = w.div_ceil(columns.max(1)).max(1);
    let mut points = Vec::new();
    for v in (0..h).step_by(stride) {
        for u in (0..w).step_by(stride) {
            let d = depth[v * w + u] as f64;
            let (uc, vc) = (u as f64 + 0.5, v as f64 + 0.5);
            if d.is_finite() && d > 0.05 && keep(uc, vc) {
                points.push(nalgebra::Vector3::new(
                    (uc - camera.cx) / camera.fx * d,
                    (vc - camera.cy) / camera.fy * d,
                    d,
                ));
            }
        }
    }
    points
}

/// [`grid_points`] of the pixels where `camera` (its pose) says the table is: whose ray
/// meets the plane at height `table_z` inside the box `xy_min`..`xy_max` (the base frame's
/// x and y, e.g. the workspace). A wall or the floor beyond the table, even where it fills
/// more of the image than the table, is left out; a camera that has moved a little still
/// sees mostly table there.
pub fn table_points(
    camera: &PinholeCamera,
    depth: &[f32],
    columns: usize,
    table_z: f64,
    xy_min: [f64; 2],
    xy_max: [f64; 2],
) -> Vec<nalgebra::Vector3<f64>> {
    grid_points(camera, depth, columns, |u, v| {
        let (o, r) = camera.ray(u, v);
        if r.z > -1e-9 {
            return false;
        }
        let p = o + r * ((table_z - o.z) / r.z);
        (xy_min[0]..=xy_max[0]).contains(&p.x) && (xy_min[1]..=xy_max[1]).contains(&p.y)
    })
}

/// How far `pose` puts `plane` (seen from the camera) from the table at height `table_z`
/// with its normal up: the angle between them (degrees), and how much higher than the
/// table it puts the plane (m, at the point where the optical axis meets it).
pub fn table_offset(pose: &nalgebra::Isometry3<f64>, plane: &Plane, table_z: f64) -> (f64, f64) {
    let up = pose.rotation * plane.normal;
    let tilt = up.z.clamp(-1.0, 1.0).acos().to_degrees();
    (tilt, pose.transform_point(&axis_point(plane)).z - table_z)
}

/// Where the optical axis meets `plane` (the camera's frame); the plane's point nearest
/// the camera when the axis runs along it.
fn axis_point(plane: &Plane) -> nalgebra::Point3<f64> {
    let s = -plane.distance_m / plane.normal.z;
    if s.is_finite() && s > 0.0 {
        nalgebra::Point3::new(0.0, 0.0, s)
    } else {
        nalgebra::Point3::from(-plane.distance_m * plane.normal)
    }
}

/// The pose nearest `pose` that puts `plane` on the table (height `table_z`, normal up):
/// the camera turned by the least rotation about the point where its optical axis meets
/// the plane, then raised or lowered. A depth camera sees the table's plane in all three
/// of the degrees of freedom a pose fitted to the arm's outline alone trades against each
/// other (the camera's tilt both ways and its height); the other three are left to the
/// outline ([`refine_on_table`]).
/// Also returns where the optical axis meets the table then (the base frame).
pub fn level_on_table(
    pose: &nalgebra::Isometry3<f64>,
    plane: &Plane,
    table_z: f64,
) -> (nalgebra::Isometry3<f64>, nalgebra::Point3<f64>) {
    use nalgebra::{Isometry3, Translation3, UnitQuaternion, Vector3};
    let up = pose.rotation * plane.normal;
    let turn = UnitQuaternion::rotation_between(&up, &Vector3::z())
        .unwrap_or_else(UnitQuaternion::identity);
    let pivot = pose.transform_point(&axis_point(plane)).coords;
    let mut out: Isometry3<f64> = Translation3::from(pivot)
        * Isometry3::from_parts(Translation3::identity(), turn)
        * Translation3::from(-pivot)
        * pose;
    out.translation.vector.z = table_z + plane.distance_m;
    (out, out.transform_point(&axis_point(plane)))
}

/// A hand-eye pose refined on frames ([`refine_on_table`]).
#[derive(Debug, Clone)]
pub struct Refined {
    /// The optical frame in the arm's base frame.
    pub world_from_camera: nalgebra::Isometry3<f64>,
    /// [`outline_distance`] at the start and at the refined pose (px).
    pub distance_before_px: f64,
    /// See `distance_before_px`.
    pub distance_after_px: f64,
    /// Poses tried (each draws the arm once per frame).
    pub evaluations: usize,
}

/// The pose that puts the drawn arm on the frames' edges ([`outline_distance`], capped at
/// `cap_px`), moving `start` only in the three ways that keep the table where it is: along
/// the table (x, y) and turning about the vertical through `pivot` (a point on the table
/// in view). A pattern search: each of the three tried both ways in turn, the steps
/// halved when none helps, from 2 cm and 0.02 rad down to about 0.3 mm and 0.0003 rad,
/// at most `max_evaluations` poses (a sweep under way is finished). `progress(evaluations)` after each pose tried. Our own
/// few lines: the cost is a rendering, with no gradient, and three parameters.
#[allow(clippy::too_many_arguments)]
pub fn refine_on_table(
    arm: &ArmModel,
    frames: &[RefineFrame],
    camera: &PinholeCamera,
    start: nalgebra::Isometry3<f64>,
    pivot: nalgebra::Point3<f64>,
    cap_px: f64,
    max_evaluations: usize,
    mut progress: impl FnMut(usize),
) -> Refined {
    use nalgebra::{Isometry3, Translation3, UnitQuaternion, Vector3};
    let pose_of = |x: &[f64; 3]| -> Isometry3<f64> {
        Translation3::new(x[0], x[1], 0.0)
            * Translation3::from(pivot.coords)
            * Isometry3::from_parts(
                Translation3::identity(),
                UnitQuaternion::from_axis_angle(&Vector3::z_axis(), x[2]),
            )
            * Translation3::from(-pivot.coords)
            * start
    };
    let evaluations = std::cell::Cell::new(0);
    let mut cost = |x: &[f64; 3]| {
        let mut c = camera.clone();
        c.world_from_camera = pose_of(x);
        evaluations.set(evaluations.get() + 1);
        let d = outline_distance(arm, frames, &c, cap_px);
        progress(evaluations.get());
        d
    };
    let mut x = [0.0; 3];
    let before = cost(&x);
    let mut best = before;
    // Metres along the table, radians about the vertical.
    let mut step = [0.02, 0.02, 0.02];
    while step[0] >= 2.5e-4 && evaluations.get() < max_evaluations {
        let mut moved = false;
        for i in 0..3 {
            for sign in [1.0, -1.0] {
                let mut y = x;
                y[i] += sign * step[i];
                let c = cost(&y);
                if c < best - 1e-6 {
                    (x, best, moved) = (y, c, true);
                    break;
                }
            }
        }
        if !moved {
            step.iter_mut().for_each(|s| *s *= 0.5);
        }
    }
    Refined {
        world_from_camera: pose_of(&x),
        distance_before_px: before,
        distance_after_px: best,
        evaluations: evaluations.get(),
    }
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

    /// An arm drawn out of the image's top has no outline along the border: no edge can
    /// be there to fit.
    #[test]
    fn the_image_border_is_not_outline() {
        let (w, h) = (40u32, 30u32);
        let mut mask = vec![false; (w * h) as usize];
        for y in 0..5 {
            for x in 10..20 {
                mask[(y * w + x) as usize] = true;
            }
        }
        let arm = DrawnArm {
            width: w,
            height: h,
            mask,
            tcp_px: None,
            depth_m: None,
        };
        let outline = arm.outline();
        assert_eq!(outline.len(), 10 + 2 * 4, "{outline:?}");
        assert!(!outline.iter().any(|&(x, y)| y == 0 && x > 10 && x < 19));
    }

    /// A table seen by the built-in camera, a fifth of its points replaced by clutter
    /// above it: the plane is found within a millimetre; levelling a pose tilted by 3°
    /// and raised 4 cm puts it back on the table (normal up, at `table_z`), and the
    /// offsets it reports before are the tilt and the height.
    #[test]
    fn a_table_in_depth_levels_a_tilted_pose() {
        use nalgebra::{Isometry3, Translation3, UnitQuaternion, Vector3};
        let camera = scene::default_camera(128, 128);
        let truth = camera.world_from_camera;
        let table_z = 0.0;
        let mut rng = crate::sim::rng::Rng::new(5, 0);
        let points: Vec<Vector3<f64>> = (0..2000)
            .map(|i| {
                let z = if i % 5 == 0 {
                    rng.uniform(0.02, 0.3)
                } else {
                    table_z
                };
                let w = nalgebra::Point3::new(rng.uniform(0.2, 0.8), rng.uniform(-0.3, 0.3), z);
                truth.inverse_transform_point(&w).coords
            })
            .collect();
        let plane = fit_plane(&points, 0.01).unwrap();
        assert!((plane.inlier_share - 0.8).abs() < 0.02, "{plane:?}");
        let (tilt, height) = table_offset(&truth, &plane, table_z);
        assert!(tilt < 0.01 && height.abs() < 1e-3, "{tilt} {height}");
        let off: Isometry3<f64> = Translation3::new(0.0, 0.0, 0.04)
            * truth
            * UnitQuaternion::from_axis_angle(&Vector3::x_axis(), 3f64.to_radians());
        let (tilt, height) = table_offset(&off, &plane, table_z);
        assert!((tilt - 3.0).abs() < 0.05, "{tilt}");
        assert!(height.abs() > 0.02, "{height}");
        let (level, pivot) = level_on_table(&off, &plane, table_z);
        let (tilt, height) = table_offset(&level, &plane, table_z);
        assert!(tilt < 0.01 && height.abs() < 1e-3, "{tilt} {height}");
        assert!((pivot.z - table_z).abs() < 1e-9, "{pivot}");
        // What is left is a turn about the vertical and a move along the table: the
        // camera's height is the truth's.
        let dz = level.translation.vector.z - truth.translation.vector.z;
        assert!(dz.abs() < 1e-3, "{dz}");
        assert!(fit_plane(&points[..2], 0.01).is_none());
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
