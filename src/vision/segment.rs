//! Object segmentation by colour: HSV thresholds per task (from config), an opening and a
//! closing to remove speckles and fill holes, then the largest connected components.

use opencv::core::{self, Mat, Scalar, Size, Vec3b};
use opencv::imgproc;
use opencv::prelude::*;
use serde::{Deserialize, Serialize};

use super::{RgbView, VisionError};

/// An HSV box in OpenCV's 8-bit convention: hue 0–179 (degrees / 2), saturation and value
/// 0–255. A hue range with `hue[0] > hue[1]` wraps through 0 (reds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColorRange {
    /// Hue bounds, inclusive.
    pub hue: [u8; 2],
    /// Saturation bounds, inclusive.
    pub sat: [u8; 2],
    /// Value bounds, inclusive.
    pub val: [u8; 2],
}

/// Segmentation settings for one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentParams {
    /// The object's colour.
    pub color: ColorRange,
    /// Opening kernel diameter (px, 0 = none): removes specks smaller than this.
    pub open_px: u32,
    /// Closing kernel diameter (px, 0 = none): fills holes and joins gaps up to this.
    pub close_px: u32,
    /// Components smaller than this many pixels are dropped.
    pub min_area_px: u32,
    /// At most this many components are kept, largest first (a rope crossing the arm's
    /// shadow or the gripper can split into two).
    pub max_components: u32,
}

impl Default for SegmentParams {
    fn default() -> Self {
        Self::rope()
    }
}

impl SegmentParams {
    /// The built-in world's red rope.
    pub fn rope() -> Self {
        Self {
            color: ColorRange {
                hue: [170, 10],
                sat: [120, 255],
                val: [40, 255],
            },
            open_px: 0,
            close_px: 3,
            min_area_px: 4,
            max_components: 3,
        }
    }

    /// The built-in world's blue cloth.
    pub fn cloth() -> Self {
        Self {
            color: ColorRange {
                hue: [100, 125],
                sat: [100, 255],
                val: [40, 255],
            },
            open_px: 3,
            close_px: 5,
            min_area_px: 20,
            max_components: 2,
        }
    }

    /// The built-in world's orange plush toy (the table is a duller brown of nearly the
    /// same hue: saturation tells them apart; shaded, the toy sits at 100–130 and the
    /// table at 30–65).
    pub fn toy() -> Self {
        Self {
            color: ColorRange {
                hue: [14, 26],
                sat: [80, 255],
                val: [60, 255],
            },
            open_px: 0,
            close_px: 3,
            min_area_px: 4,
            max_components: 1,
        }
    }
}

/// A binary mask, row-major, `true` = object.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` flags.
    pub data: Vec<bool>,
}

impl Mask {
    /// Object pixels.
    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&b| b).count()
    }

    /// Whether pixel (x, y) is object.
    pub fn get(&self, x: u32, y: u32) -> bool {
        x < self.width && y < self.height && self.data[(y * self.width + x) as usize]
    }
}

fn kernel(px: u32) -> opencv::Result<Mat> {
    let k = px.max(1) as i32;
    imgproc::get_structuring_element_def(imgproc::MORPH_ELLIPSE, Size::new(k, k))
}

/// The object's pixels in `image`.
pub fn segment(image: &RgbView<'_>, params: &SegmentParams) -> Result<Mask, VisionError> {
    let (w, h) = (image.width as i32, image.height as i32);
    let rgb = Mat::new_rows_cols_with_bytes::<Vec3b>(h, w, image.data)?;
    let mut hsv = Mat::default();
    imgproc::cvt_color_def(&rgb, &mut hsv, imgproc::COLOR_RGB2HSV)?;
    let c = &params.color;
    let lo = |hue: u8| Scalar::new(hue as f64, c.sat[0] as f64, c.val[0] as f64, 0.0);
    let hi = |hue: u8| Scalar::new(hue as f64, c.sat[1] as f64, c.val[1] as f64, 0.0);
    let mut mask = Mat::default();
    if c.hue[0] <= c.hue[1] {
        core::in_range(&hsv, &lo(c.hue[0]), &hi(c.hue[1]), &mut mask)?;
    } else {
        let (mut a, mut b) = (Mat::default(), Mat::default());
        core::in_range(&hsv, &lo(c.hue[0]), &hi(179), &mut a)?;
        core::in_range(&hsv, &lo(0), &hi(c.hue[1]), &mut b)?;
        core::bitwise_or_def(&a, &b, &mut mask)?;
    }
    if params.open_px > 1 {
        let mut out = Mat::default();
        imgproc::morphology_ex_def(
            &mask,
            &mut out,
            imgproc::MORPH_OPEN,
            &kernel(params.open_px)?,
        )?;
        mask = out;
    }
    if params.close_px > 1 {
        let mut out = Mat::default();
        imgproc::morphology_ex_def(
            &mask,
            &mut out,
            imgproc::MORPH_CLOSE,
            &kernel(params.close_px)?,
        )?;
        mask = out;
    }
    let (mut labels, mut stats, mut centroids) = (Mat::default(), Mat::default(), Mat::default());
    let n = imgproc::connected_components_with_stats_def(
        &mask,
        &mut labels,
        &mut stats,
        &mut centroids,
    )?;
    // Label 0 is the background. Keep the largest components (ties: lower label).
    let mut comps: Vec<(i32, i32)> = (1..n)
        .map(|l| Ok((l, *stats.at_2d::<i32>(l, imgproc::CC_STAT_AREA)?)))
        .collect::<opencv::Result<_>>()?;
    comps.retain(|&(_, a)| a >= params.min_area_px as i32);
    comps.sort_by_key(|&(l, a)| (std::cmp::Reverse(a), l));
    comps.truncate(params.max_components as usize);
    if comps.is_empty() {
        return Err(VisionError::NoObject(format!(
            "no component of at least {} px in hue {:?}, sat {:?}, val {:?}",
            params.min_area_px, c.hue, c.sat, c.val
        )));
    }
    let keep: Vec<i32> = comps.iter().map(|c| c.0).collect();
    let labels = labels.data_typed::<i32>()?;
    Ok(Mask {
        width: image.width,
        height: image.height,
        data: labels.iter().map(|l| keep.contains(l)).collect(),
    })
}

/// The object alone on a plain table, as the world model's object-only frames show it: the
/// pixels of [`segment`]'s mask keep their colour and every other pixel takes the median
/// colour of the pixels outside it (the table's where the table fills most of the view). The built-in world renders these frames;
/// from a real camera this is how they are made (the camera node's `object_only_topic`).
/// An arm whose colour differs from the object's drops out with the rest of the scene;
/// what it hides of the object is lost. An image without the object is all table; the
/// flag says whether the object was found.
pub fn object_only(
    image: &RgbView<'_>,
    params: &SegmentParams,
) -> Result<(Vec<u8>, bool), VisionError> {
    let n = image.width as usize * image.height as usize;
    let (mask, found) = match segment(image, params) {
        Ok(m) => (m.data, true),
        Err(VisionError::NoObject(_)) => (vec![false; n], false),
        Err(e) => return Err(e),
    };
    // Per-channel histograms of the pixels outside the object, and their medians.
    let mut hist = [[0usize; 256]; 3];
    let mut outside = 0;
    for (px, &m) in image.data.chunks_exact(3).zip(&mask) {
        if !m {
            for (h, &v) in hist.iter_mut().zip(px) {
                h[v as usize] += 1;
            }
            outside += 1;
        }
    }
    let median = hist.map(|h| {
        let mut seen = 0;
        h.iter()
            .position(|&c| {
                seen += c;
                2 * seen > outside
            })
            .unwrap_or(0) as u8
    });
    let mut out = Vec::with_capacity(n * 3);
    for (px, &m) in image.data.chunks_exact(3).zip(&mask) {
        out.extend_from_slice(if m { px } else { &median });
    }
    Ok((out, found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::eval::segment_params;
    use crate::sim::tasks::Task;

    #[test]
    fn object_only_keeps_the_object_on_the_median_table_and_an_empty_view_is_all_table() {
        // A 40×20 table of two shades (the median is the commoner), a red 6×4 rope piece.
        let (w, h) = (40u32, 20u32);
        let mut rgb = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let px: [u8; 3] = if (10..16).contains(&x) && (8..12).contains(&y) {
                    [210, 40, 40]
                } else if x < 5 {
                    [120, 120, 120]
                } else {
                    [190, 180, 160]
                };
                rgb.extend_from_slice(&px);
            }
        }
        let params = segment_params(Task::Rope);
        let (out, found) = object_only(&RgbView::new(w, h, &rgb).unwrap(), &params).unwrap();
        assert!(found);
        let at = |x: u32, y: u32| &out[((y * w + x) * 3) as usize..][..3];
        assert_eq!(at(12, 9), [210, 40, 40]);
        assert_eq!(at(2, 2), [190, 180, 160], "the grey strip becomes table");
        assert_eq!(at(30, 15), [190, 180, 160]);
        // Without the object: all table.
        let table: Vec<u8> = [190u8, 180, 160].repeat((w * h) as usize);
        let (out, found) = object_only(&RgbView::new(w, h, &table).unwrap(), &params).unwrap();
        assert!(!found);
        assert_eq!(out, table);
    }
}
