//! Numbered labels drawn on an image: what the VLM (and a person checking it) reads.
//!
//! Each keypoint gets a label, a dark disc with its number in white. Where the label
//! would hide the object or another keypoint, it is moved beside the point and joined to
//! it by a thin leader line, the point itself marked by a small dot (a callout). At the
//! planner's 256² input a rope is about 3 px thick and its eight keypoints lie 6–10 px
//! apart, so labels drawn on the points themselves would pile up and bury the rope.
//!
//! Placement is greedy and our own (no crate in the tree places labels): the most crowded
//! keypoint first, each label at the cheapest free spot on rings around its point. A spot
//! is free when its disc stays inside the image, clear of every label placed so far and of
//! every other keypoint; its cost is the object pixels it covers plus its distance. Object
//! pixels are told from the background as pixels far from the image's most common colour
//! (the table in the built-in world); on a cluttered image that guess only makes the
//! placement less good, never wrong. The result is deterministic.

use opencv::core::{Mat, Point, Scalar, Vec3b};
use opencv::imgproc;

use super::{Keypoint, RgbView, VisionError};

/// Label radius (px) for an image of this size: legible from 128 px up.
pub fn dot_radius(width: u32, height: u32) -> i32 {
    ((width.min(height) as f32 / 48.0).round() as i32).max(5)
}

/// Where a keypoint's number is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Label {
    /// The keypoint's number.
    pub id: u32,
    /// The keypoint (pixels).
    pub point: (f32, f32),
    /// The label disc's centre (pixels).
    pub centre: (i32, i32),
    /// The label disc's radius, its white rim included.
    pub radius: i32,
}

impl Label {
    /// Whether the label sits on its point (no leader line).
    pub fn on_point(&self) -> bool {
        let (dx, dy) = (
            self.centre.0 as f32 - self.point.0.floor(),
            self.centre.1 as f32 - self.point.1.floor(),
        );
        dx.hypot(dy) < 1.0
    }
}

/// Pixels that differ from the most common colour by more than this (max over channels)
/// count as object when placing labels.
const OBJECT_CONTRAST: i32 = 40;
/// Cost of one pixel of distance between a label and its point, in covered object pixels.
const DISTANCE_COST: f32 = 2.0;

/// Object-like pixels: far from the image's most common colour (4-bit quantised mode).
fn object_pixels(image: &RgbView<'_>) -> Vec<bool> {
    let mut hist = vec![0u32; 4096];
    let key =
        |p: &[u8]| ((p[0] as usize >> 4) << 8) | ((p[1] as usize >> 4) << 4) | (p[2] as usize >> 4);
    for p in image.data.chunks_exact(3) {
        hist[key(p)] += 1;
    }
    let mode = (0..4096)
        .max_by_key(|&k| (hist[k], std::cmp::Reverse(k)))
        .unwrap_or(0);
    // The mean colour of the modal bin is the background.
    let (mut sum, mut n) = ([0u64; 3], 0u64);
    for p in image.data.chunks_exact(3).filter(|p| key(p) == mode) {
        for c in 0..3 {
            sum[c] += p[c] as u64;
        }
        n += 1;
    }
    let bg: Vec<i32> = sum.iter().map(|&s| (s / n.max(1)) as i32).collect();
    image
        .data
        .chunks_exact(3)
        .map(|p| (0..3).any(|c| (p[c] as i32 - bg[c]).abs() > OBJECT_CONTRAST))
        .collect()
}

/// Where each keypoint's label goes (in the keypoints' order). See the module doc.
pub fn place_labels(image: &RgbView<'_>, keypoints: &[Keypoint]) -> Vec<Label> {
    let (w, h) = (image.width as i32, image.height as i32);
    let radius = dot_radius(image.width, image.height) + 1;
    let object = object_pixels(image);
    // Object pixels covered by a disc at (cx, cy).
    let covered = |cx: i32, cy: i32| -> usize {
        let mut n = 0;
        for y in (cy - radius).max(0)..=(cy + radius).min(h - 1) {
            for x in (cx - radius).max(0)..=(cx + radius).min(w - 1) {
                let (dx, dy) = (x - cx, y - cy);
                if dx * dx + dy * dy <= radius * radius && object[(y * w + x) as usize] {
                    n += 1;
                }
            }
        }
        n
    };
    let pts: Vec<(f32, f32)> = keypoints
        .iter()
        .map(|k| (k.u.floor(), k.v.floor()))
        .collect();
    // Most crowded first: the most other keypoints within two label diameters.
    let crowd = |i: usize| {
        pts.iter()
            .filter(|q| {
                let (dx, dy) = (q.0 - pts[i].0, q.1 - pts[i].1);
                dx.hypot(dy) < 4.0 * radius as f32
            })
            .count()
    };
    let mut order: Vec<usize> = (0..pts.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(crowd(i)), i));
    // Candidate offsets: the point itself, then rings of 24 directions out to 6 radii.
    let mut offsets = vec![(0i32, 0i32)];
    let mut ring = radius + 3;
    while ring <= 6 * radius {
        for a in 0..24 {
            let t = a as f32 * std::f32::consts::TAU / 24.0;
            let o = (
                (ring as f32 * t.cos()).round() as i32,
                (ring as f32 * t.sin()).round() as i32,
            );
            if !offsets.contains(&o) {
                offsets.push(o);
            }
        }
        ring += (radius / 2).max(2);
    }
    let mut placed: Vec<Option<Label>> = vec![None; pts.len()];
    for &i in &order {
        let p = (pts[i].0 as i32, pts[i].1 as i32);
        // (hard violations, cost): a spot that breaks a rule only when nothing else fits.
        let mut best: Option<((u32, f32), (i32, i32))> = None;
        for &(dx, dy) in &offsets {
            let c = (p.0 + dx, p.1 + dy);
            let mut hard = 0u32;
            if c.0 - radius < 0 || c.1 - radius < 0 || c.0 + radius >= w || c.1 + radius >= h {
                hard += 4;
            }
            for l in placed.iter().flatten() {
                let d = ((c.0 - l.centre.0) as f32).hypot((c.1 - l.centre.1) as f32);
                if d < (2 * radius + 1) as f32 {
                    hard += 2;
                }
            }
            for (j, q) in pts.iter().enumerate() {
                let d = (c.0 as f32 - q.0).hypot(c.1 as f32 - q.1);
                if j != i && d < (radius + 2) as f32 {
                    hard += 1;
                }
            }
            let dist = (dx as f32).hypot(dy as f32);
            let cost = covered(c.0, c.1) as f32 + DISTANCE_COST * dist;
            if best.is_none_or(|(b, _)| (hard, cost) < b) {
                best = Some(((hard, cost), c));
            }
        }
        let centre = best.map_or(p, |(_, c)| c);
        placed[i] = Some(Label {
            id: keypoints[i].id,
            point: (keypoints[i].u, keypoints[i].v),
            centre,
            radius,
        });
    }
    placed.into_iter().flatten().collect()
}

/// `image` with a numbered label for every keypoint, placed by [`place_labels`]: a dark
/// disc with a white rim and a white number, on the point or beside it with a leader line
/// and a small dot on the point. Returns new rgb8 bytes of the same size.
pub fn draw_keypoints(image: &RgbView<'_>, keypoints: &[Keypoint]) -> Result<Vec<u8>, VisionError> {
    let labels = place_labels(image, keypoints);
    let mut out = image.data.to_vec();
    let (w, h) = (image.width as i32, image.height as i32);
    {
        let mut mat = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(h, w, &mut out)?;
        let white = Scalar::new(255.0, 255.0, 255.0, 0.0);
        let black = Scalar::new(0.0, 0.0, 0.0, 0.0);
        let font = imgproc::FONT_HERSHEY_SIMPLEX;
        // Leaders and point dots first, so that no line crosses a label's number.
        // Thin, so that a 3 px rope stays visible: the white underlay that makes a leader
        // readable on a dark object stops 3 px short of the point, and the point's dot is
        // a 5-pixel cross.
        for l in labels.iter().filter(|l| !l.on_point()) {
            let (px, py) = (l.point.0.floor(), l.point.1.floor());
            let p = Point::new(px as i32, py as i32);
            let c = Point::new(l.centre.0, l.centre.1);
            let (dx, dy) = (l.centre.0 as f32 - px, l.centre.1 as f32 - py);
            let len = dx.hypot(dy).max(1.0);
            let near = Point::new(
                (px + 3.0 * dx / len).round() as i32,
                (py + 3.0 * dy / len).round() as i32,
            );
            imgproc::line(&mut mat, near, c, white, 2, imgproc::LINE_AA, 0)?;
            imgproc::line(&mut mat, p, c, black, 1, imgproc::LINE_8, 0)?;
            imgproc::circle(&mut mat, p, 1, black, -1, imgproc::LINE_8, 0)?;
        }
        for l in &labels {
            let r = l.radius - 1;
            let c = Point::new(l.centre.0, l.centre.1);
            imgproc::circle(&mut mat, c, r + 1, white, -1, imgproc::LINE_AA, 0)?;
            imgproc::circle(&mut mat, c, r, black, -1, imgproc::LINE_AA, 0)?;
            let text = l.id.to_string();
            // Scale the digits to fill the disc: two digits fit its width.
            let thickness = 1.max(r / 6);
            let mut base = 0;
            let unit = imgproc::get_text_size(&text, font, 1.0, thickness, &mut base)?;
            let fit_w = (1.6 * r as f64) / unit.width.max(1) as f64;
            let fit_h = (1.1 * r as f64) / unit.height.max(1) as f64;
            let scale = fit_w.min(fit_h);
            let size = imgproc::get_text_size(&text, font, scale, thickness, &mut base)?;
            let org = Point::new(c.x - size.width / 2, c.y + size.height / 2);
            imgproc::put_text(
                &mut mat,
                &text,
                org,
                font,
                scale,
                white,
                thickness,
                imgproc::LINE_AA,
                false,
            )?;
        }
    }
    Ok(out)
}
