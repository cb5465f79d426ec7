//! Numbered dots drawn on an image: what the VLM (and a person checking it) reads.

use opencv::core::{Mat, Point, Scalar, Vec3b};
use opencv::imgproc;

use super::{Keypoint, RgbView, VisionError};

/// Dot radius (px) for an image of this size: legible from 128 px up.
pub fn dot_radius(width: u32, height: u32) -> i32 {
    ((width.min(height) as f32 / 48.0).round() as i32).max(5)
}

/// `image` with a numbered dot on every keypoint (black disc, white rim, white number
/// centred in it). Returns new rgb8 bytes of the same size.
pub fn draw_keypoints(image: &RgbView<'_>, keypoints: &[Keypoint]) -> Result<Vec<u8>, VisionError> {
    let mut out = image.data.to_vec();
    let (w, h) = (image.width as i32, image.height as i32);
    {
        let mut mat = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(h, w, &mut out)?;
        let r = dot_radius(image.width, image.height);
        let white = Scalar::new(255.0, 255.0, 255.0, 0.0);
        let black = Scalar::new(0.0, 0.0, 0.0, 0.0);
        let font = imgproc::FONT_HERSHEY_SIMPLEX;
        for k in keypoints {
            let c = Point::new(k.u.floor() as i32, k.v.floor() as i32);
            imgproc::circle(&mut mat, c, r + 1, white, -1, imgproc::LINE_AA, 0)?;
            imgproc::circle(&mut mat, c, r, black, -1, imgproc::LINE_AA, 0)?;
            let text = k.id.to_string();
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
