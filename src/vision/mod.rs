//! What the planner sees: the object found in an RGB image (colour segmentation), numbered
//! keypoints sampled on it, and the overlays that put the numbers on the image the VLM
//! reads (as in the DreamPlan paper's figure). Pixel → 3D is the camera model's job
//! ([`crate::render::PinholeCamera::unproject`] with a depth image).
//!
//! Image processing runs on OpenCV (`imgproc`: colour conversion, thresholds, morphology,
//! connected components, drawing). Keypoint sampling is our own: farthest-point sampling
//! on a mask is a few lines and has to be deterministic to the pixel, tie-breaks included.

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
