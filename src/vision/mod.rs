//! What the planner sees: the object found in an RGB image (colour segmentation), numbered
//! keypoints sampled on it, and the overlays that put the numbers on the image the VLM
//! reads (as in the DreamPlan paper's figure). Pixel → 3D is the camera model's job
//! ([`crate::render::PinholeCamera::unproject`] with a depth image).
//!
//! Image processing runs on OpenCV (`imgproc`: colour conversion, thresholds, morphology,
//! connected components, drawing). Keypoint sampling is our own: farthest-point sampling
//! on a mask is a few lines and has to be deterministic to the pixel, tie-breaks included.

pub mod handeye;
pub mod keypoints;
pub mod overlay;
pub mod segment;

pub use keypoints::{farthest_point_sampling, Keypoint};
pub use overlay::draw_keypoints;
pub use segment::{object_only, segment, ColorRange, Mask, SegmentParams};

/// An 8-bit RGB image, row-major, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: &'a [u8],
}

impl<'a> RgbView<'a> {
    /// Checks the buffer size.
    pub fn new(width: u32, height: u32, data: &'a [u8]) -> Result<Self, VisionError> {
        let want = width as usize * height as usize * 3;
        if width == 0 || height == 0 || data.len() != want {
            return Err(VisionError::BadImage(format!(
                "{width}x{height} rgb8 needs {want} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }
}

/// Why an image could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// Wrong size, encoding or buffer length.
    #[error("bad image: {0}")]
    BadImage(String),
    /// No pixel of the object's colour survived the clean-up.
    #[error("no object found ({0})")]
    NoObject(String),
    /// The object is smaller than the keypoints asked for.
    #[error("only {found} object pixels for {wanted} keypoints")]
    TooFewPixels {
        /// Keypoints asked for.
        wanted: usize,
        /// Object pixels available.
        found: usize,
    },
    /// OpenCV failed.
    #[error("opencv: {0}")]
    OpenCv(#[from] opencv::Error),
}

/// rgb8 pixels of a ROS image (`rgb8`, `bgr8`, or with alpha `rgba8`, `bgra8`, which is
/// dropped: what colour camera drivers publish), rows packed (a padded `step` is read
/// through). What the planner and the world model read.
pub fn rgb_pixels(img: &crate::msg::prelude::Image) -> Result<Vec<u8>, String> {
    let (w, h) = (img.width as usize, img.height as usize);
    if w == 0 || h == 0 {
        return Err(format!("an image of {w}×{h} pixels holds nothing to see"));
    }
    let (channels, swap) = match img.encoding.as_str() {
        "rgb8" => (3, false),
        "bgr8" => (3, true),
        "rgba8" => (4, false),
        "bgra8" => (4, true),
        other => {
            return Err(format!(
                "image encoding {other:?} is not rgb8, bgr8, rgba8 or bgra8"
            ))
        }
    };
    let row = w * channels;
    if (img.step as usize) < row {
        return Err(format!(
            "image step {} is shorter than a {w}-pixel {} row",
            img.step, img.encoding
        ));
    }
    // In u128, whatever the platform's usize: a made-up header of 2³² rows is refused
    // here, before anything is allocated.
    if (img.data.len() as u128) < img.step as u128 * (h as u128 - 1) + row as u128 {
        return Err(format!(
            "image of {w}×{h} holds {} bytes, fewer than its size needs",
            img.data.len()
        ));
    }
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let line = &img.data[y * img.step as usize..][..row];
        for p in line.chunks_exact(channels) {
            if swap {
                out.extend_from_slice(&[p[2], p[1], p[0]]);
            } else {
                out.extend_from_slice(&p[..3]);
            }
        }
    }
    Ok(out)
}
