//! Frame measures of a prediction against the truth: PSNR, SSIM and the IoU of the object
//! masks (the task's colour segmentation, as the stage-3 mask measure uses). Written here
//! because they are a few lines each over rgb8 buffers and no crate in the tree has them.

use crate::render::Frame;
use crate::sim::tasks::Task;
use crate::verifier::object_mask;
use crate::vision::Mask;

use super::WorldModelError;

/// Peak signal-to-noise ratio of two rgb8 buffers (dB; 99 for identical ones). Reports
/// average it per frame. Buffers of different lengths are a caller's bug (frames are
/// checked for size where they enter): it panics rather than compare a prefix.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "psnr of buffers of different lengths");
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64;
    if mse <= 1e-10 {
        99.0
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

fn gray(rgb: &[u8]) -> Vec<f64> {
    rgb.chunks_exact(3)
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect()
}

/// Mean SSIM (Wang et al. 2004) of the grey images over 7×7 windows (uniform weights,
/// K1 = 0.01, K2 = 0.03, L = 255), `width × height` rgb8.
pub fn ssim(a: &[u8], b: &[u8], width: usize, height: usize) -> f64 {
    assert!(
        a.len() == width * height * 3 && b.len() == a.len(),
        "ssim of buffers that are not both {width}×{height} rgb8"
    );
    let (x, y) = (gray(a), gray(b));
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let r = 3usize;
    if width < 2 * r + 1 || height < 2 * r + 1 {
        return if a == b { 1.0 } else { 0.0 };
    }
    let mut total = 0.0;
    let mut n = 0usize;
    for cy in r..height - r {
        for cx in r..width - r {
            let (mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for v in cy - r..=cy + r {
                for u in cx - r..=cx + r {
                    let (p, q) = (x[v * width + u], y[v * width + u]);
                    sx += p;
                    sy += q;
                    sxx += p * p;
                    syy += q * q;
                    sxy += p * q;
                }
            }
            let k = ((2 * r + 1) * (2 * r + 1)) as f64;
            let (mx, my) = (sx / k, sy / k);
            let (vx, vy) = (sxx / k - mx * mx, syy / k - my * my);
            let cov = sxy / k - mx * my;
            total += ((2.0 * mx * my + c1) * (2.0 * cov + c2))
                / ((mx * mx + my * my + c1) * (vx + vy + c2));
            n += 1;
        }
    }
    total / n as f64
}

/// The object mask of an rgb8 frame (empty when the object is not in view, as
/// [`object_mask`] says). A buffer that is not `width`×`height` rgb8, or a segmentation
/// that fails for another reason, is an error, never an empty mask: an empty mask would
/// quietly score as an outcome that lost the object.
pub fn mask(
    task: Task,
    rgb: &[u8],
    width: usize,
    height: usize,
) -> Result<Vec<bool>, WorldModelError> {
    Ok(mask_of(task, rgb, width, height)?.data)
}

/// [`mask`] as a [`Mask`], what the outcome measure takes.
pub fn mask_of(
    task: Task,
    rgb: &[u8],
    width: usize,
    height: usize,
) -> Result<Mask, WorldModelError> {
    let frame = Frame {
        width: width as u32,
        height: height as u32,
        rgb: rgb.to_vec(),
        depth: Vec::new(),
    };
    object_mask(task, &frame).map_err(|e| {
        WorldModelError::Data(format!(
            "segmenting a {width}×{height} {} frame ({} bytes): {e}",
            task.name(),
            rgb.len()
        ))
    })
}

/// Intersection over union of two masks (1 when both are empty).
pub fn iou(a: &[bool], b: &[bool]) -> f64 {
    assert_eq!(a.len(), b.len(), "iou of masks of different sizes");
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_without_the_object_is_an_empty_mask_and_a_short_buffer_an_error() {
        // The table's colour alone: nothing of the rope's colour in view.
        let table: Vec<u8> = [190u8, 180, 160].repeat(16 * 8);
        let m = mask(Task::Rope, &table, 16, 8).unwrap();
        assert_eq!(m.len(), 16 * 8);
        assert!(m.iter().all(|b| !b));
        // A buffer one pixel short is not a frame of that size.
        let err = mask(Task::Rope, &table[..table.len() - 3], 16, 8).unwrap_err();
        assert!(err.to_string().contains("16×8 rope frame"), "{err}");
    }

    #[test]
    fn frame_measures_of_known_buffers_and_no_prefix_compared() {
        assert_eq!(psnr(&[7; 12], &[7; 12]), 99.0);
        // MSE 1 → 10·log10(255²) = 48.13 dB.
        assert!((psnr(&[0; 12], &[1; 12]) - 48.1308).abs() < 1e-3);
        assert_eq!(iou(&[true, true, false], &[true, false, false]), 0.5);
        assert_eq!(iou(&[false; 4], &[false; 4]), 1.0);
        let flat = vec![100u8; 8 * 8 * 3];
        assert!((ssim(&flat, &flat, 8, 8) - 1.0).abs() < 1e-12);
        for unequal in [
            std::panic::catch_unwind(|| psnr(&[0; 6], &[0; 3])),
            std::panic::catch_unwind(|| iou(&[true; 3], &[true; 2])),
            std::panic::catch_unwind(|| ssim(&[0; 8 * 8 * 3], &[0; 8 * 8 * 3 - 3], 8, 8)),
        ] {
            assert!(unequal.is_err(), "a prefix was compared");
        }
    }
}
