//! Image preprocessing identical to HF's Qwen2-VL image processor (which Qwen3-VL uses):
//! resize so both sides are multiples of patch × merge and the area lies within
//! [min_pixels, max_pixels] (`smart_resize`), bicubic resampling as Pillow does it
//! (separable, antialiased when shrinking, 8-bit fixed-point coefficients, rounding to
//! 8 bits after each pass), rescale + normalise, a still image repeated over the temporal
//! patch, and patches ordered by merge window so that the 2×2 patches of one LLM token are
//! consecutive rows of `pixel_values`.
//!
//! HF has two backends: Pillow (`Qwen2VLImageProcessorPil`) and torchvision (the default
//! `Qwen2VLImageProcessor`). They differ by one 8-bit level on some pixels after a resize;
//! this module reproduces Pillow (see `docs/vlm.md` for measured differences to both).

use std::path::Path;

use serde_json::Value;

use super::config::read_json;
use super::error::{Result, VlmError};

/// `preprocessor_config.json`: the fields the image processor reads, with the
/// Qwen2-VL processor's defaults for absent ones.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    /// Lower bound on resized area (`size.shortest_edge` or `min_pixels`).
    pub min_pixels: usize,
    /// Upper bound on resized area (`size.longest_edge` or `max_pixels`).
    pub max_pixels: usize,
    /// Spatial patch side.
    pub patch_size: usize,
    /// Frames per temporal patch.
    pub temporal_patch_size: usize,
    /// Merge window side.
    pub merge_size: usize,
    /// Per-channel mean (after rescale).
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation.
    pub image_std: [f32; 3],
    /// Whether to resize.
    pub do_resize: bool,
    /// Whether to multiply by `rescale_factor`.
    pub do_rescale: bool,
    /// Usually 1/255.
    pub rescale_factor: f64,
    /// Whether to normalise.
    pub do_normalize: bool,
}

impl Default for PreprocessorConfig {
    /// The defaults of transformers' `Qwen2VLImageProcessor` (CLIP mean/std, patch 14).
    fn default() -> Self {
        Self {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
            do_resize: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
        }
    }
}

impl PreprocessorConfig {
    /// Reads `dir/preprocessor_config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        let v = read_json(&path)?;
        Self::from_value(&path, &v)
    }

    /// Parses a config read from `path`.
    pub fn from_value(path: &Path, v: &Value) -> Result<Self> {
        let bad = |field: &str, message: &str| VlmError::BadField {
            path: path.to_path_buf(),
            field: field.into(),
            message: message.into(),
        };
        let mut c = Self::default();
        let uint = |field: &str, val: &Value| -> Result<usize> {
            val.as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(field, "expected a non-negative integer"))
        };
        let get = |k: &str| v.get(k).filter(|x| !x.is_null());
        if let Some(size) = get("size") {
            if let Some(x) = size.get("shortest_edge") {
                c.min_pixels = uint("size.shortest_edge", x)?;
            }
            if let Some(x) = size.get("longest_edge") {
                c.max_pixels = uint("size.longest_edge", x)?;
            }
        }
        if let Some(x) = get("min_pixels") {
            c.min_pixels = uint("min_pixels", x)?;
        }
        if let Some(x) = get("max_pixels") {
            c.max_pixels = uint("max_pixels", x)?;
        }
        for (key, slot) in [
            ("patch_size", &mut c.patch_size),
            ("temporal_patch_size", &mut c.temporal_patch_size),
            ("merge_size", &mut c.merge_size),
        ] {
            if let Some(x) = get(key) {
                *slot = uint(key, x)?;
                if *slot == 0 {
                    return Err(bad(key, "must be positive"));
                }
            }
        }
        for (key, slot) in [
            ("image_mean", &mut c.image_mean),
            ("image_std", &mut c.image_std),
        ] {
            if let Some(x) = get(key) {
                let items = x
                    .as_array()
                    .filter(|a| a.len() == 3)
                    .ok_or_else(|| bad(key, "expected three numbers"))?;
                for (s, item) in slot.iter_mut().zip(items) {
                    *s = item
                        .as_f64()
                        .ok_or_else(|| bad(key, "expected three numbers"))?
                        as f32;
                }
            }
        }
        for (key, slot) in [
            ("do_resize", &mut c.do_resize),
            ("do_rescale", &mut c.do_rescale),
            ("do_normalize", &mut c.do_normalize),
        ] {
            if let Some(x) = get(key) {
                *slot = x
                    .as_bool()
                    .ok_or_else(|| bad(key, "expected true or false"))?;
            }
        }
        if let Some(x) = get("rescale_factor") {
            c.rescale_factor = x
                .as_f64()
                .ok_or_else(|| bad("rescale_factor", "expected a number"))?;
        }
        if let Some(r) = get("resample") {
            if r.as_u64() != Some(3) {
                return Err(bad("resample", "only bicubic (3) is supported"));
            }
        }
        if c.image_std.contains(&0.0) {
            return Err(bad("image_std", "must not contain 0"));
        }
        Ok(c)
    }

    /// Values per row of `pixel_values` (3 channels).
    pub fn patch_len(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// Target `(height, width)`: multiples of `factor`, area within `[min_pixels, max_pixels]`,
/// aspect ratio kept as well as possible (Python's round-half-to-even, like HF).
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    if height == 0 || width == 0 {
        return Err(VlmError::Image(format!("empty image ({width}×{height})")));
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > 200.0 {
        return Err(VlmError::Image(format!(
            "aspect ratio of {width}×{height} exceeds 200"
        )));
    }
    let mut hb = (h / f).round_ties_even() * f;
    let mut wb = (w / f).round_ties_even() * f;
    if hb * wb > max_pixels as f64 {
        let beta = (h * w / max_pixels as f64).sqrt();
        hb = f.max((h / beta / f).floor() * f);
        wb = f.max((w / beta / f).floor() * f);
    } else if hb * wb < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        hb = (h * beta / f).ceil() * f;
        wb = (w * beta / f).ceil() * f;
    }
    Ok((hb as usize, wb as usize))
}

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `height × width × 3` bytes.
    pub data: Vec<u8>,
}

/// Decodes an image file upright: its Exif orientation applied, as transformers'
/// `load_image` does (`ImageOps.exif_transpose`). A phone photo tagged "rotate 90°" was
/// read sideways before session 52.
pub fn open_upright(path: &Path) -> image::ImageResult<image::DynamicImage> {
    use image::ImageDecoder as _;
    let mut decoder = image::ImageReader::open(path)?
        .with_guessed_format()?
        .into_decoder()?;
    let orientation = decoder.orientation()?;
    let mut img = image::DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    Ok(img)
}

impl Rgb8 {
    /// Decodes a PNG/JPEG/GIF file upright ([`open_upright`]), alpha dropped, as PIL's
    /// `convert("RGB")`.
    pub fn open(path: &Path) -> Result<Self> {
        let img = open_upright(path)
            .map_err(|e| VlmError::Image(format!("{}: {e}", path.display())))?
            .to_rgb8();
        Ok(Self {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img.into_raw(),
        })
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    // Keys' cubic with a = −0.5, as Pillow's BICUBIC.
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: for each output index, the first
/// input index and fixed-point weights.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let mut k: Vec<f64> = (0..n)
                .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = k.iter().sum();
            if total != 0.0 {
                k.iter_mut().for_each(|w| *w /= total);
            }
            let fixed = k
                .iter()
                .map(|&w| {
                    let s = w * (1u32 << PRECISION_BITS) as f64;
                    if w < 0.0 {
                        (-0.5 + s) as i32
                    } else {
                        (0.5 + s) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's bicubic resize of an RGB image to `width × height` (horizontal pass, then
/// vertical, each rounded to 8 bits).
pub fn resize_bicubic(img: &Rgb8, width: usize, height: usize) -> Rgb8 {
    let mut cur = img.clone();
    if width != cur.width {
        let coeffs = coefficients(cur.width, width);
        let mut out = vec![0u8; cur.height * width * 3];
        for y in 0..cur.height {
            let row = &cur.data[y * cur.width * 3..(y + 1) * cur.width * 3];
            for (x, (xmin, k)) in coeffs.iter().enumerate() {
                for c in 0..3 {
                    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, &w) in k.iter().enumerate() {
                        acc += row[(xmin + i) * 3 + c] as i64 * w as i64;
                    }
                    out[(y * width + x) * 3 + c] = clip8(acc);
                }
            }
        }
        cur = Rgb8 {
            width,
            height: cur.height,
            data: out,
        };
    }
    if height != cur.height {
        let coeffs = coefficients(cur.height, height);
        let w3 = cur.width * 3;
        let mut out = vec![0u8; height * w3];
        for (y, (ymin, k)) in coeffs.iter().enumerate() {
            for x in 0..w3 {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &w) in k.iter().enumerate() {
                    acc += cur.data[(ymin + i) * w3 + x] as i64 * w as i64;
                }
                out[y * w3 + x] = clip8(acc);
            }
        }
        cur = Rgb8 {
            width: cur.width,
            height,
            data: out,
        };
    }
    cur
}

/// One preprocessed image: `pixel_values` rows and its `[t, h, w]` patch grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// `rows × patch_len` values, row-major.
    pub pixel_values: Vec<f32>,
    /// `[t, h, w]` in patches.
    pub grid_thw: [usize; 3],
}

/// Preprocesses one still image as HF's processor does.
pub fn preprocess(img: &Rgb8, cfg: &PreprocessorConfig) -> Result<Preprocessed> {
    let factor = cfg.patch_size * cfg.merge_size;
    let img = if cfg.do_resize {
        let (h, w) = smart_resize(
            img.height,
            img.width,
            factor,
            cfg.min_pixels,
            cfg.max_pixels,
        )?;
        resize_bicubic(img, w, h)
    } else {
        img.clone()
    };
    let (p, m, tp) = (cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size);
    if img.height % (p * m) != 0 || img.width % (p * m) != 0 {
        return Err(VlmError::Image(format!(
            "{}×{} is not a multiple of patch × merge = {}",
            img.width,
            img.height,
            p * m
        )));
    }
    // Fused as torchvision's backend does: (x − 255·mean) / (255·std) in f32.
    let inv = (1.0 / cfg.rescale_factor) as f32;
    let norm: Vec<(f32, f32)> = (0..3)
        .map(|c| match (cfg.do_rescale, cfg.do_normalize) {
            (true, true) => (cfg.image_mean[c] * inv, cfg.image_std[c] * inv),
            (false, true) => (cfg.image_mean[c], cfg.image_std[c]),
            (true, false) => (0.0, inv),
            (false, false) => (0.0, 1.0),
        })
        .collect();
    let (gh, gw) = (img.height / p, img.width / p);
    let row_len = 3 * tp * p * p;
    let mut out = Vec::with_capacity(gh * gw * row_len);
    for bh in 0..gh / m {
        for bw in 0..gw / m {
            for ih in 0..m {
                for iw in 0..m {
                    let (py0, px0) = ((bh * m + ih) * p, (bw * m + iw) * p);
                    for (c, &(mean, std)) in norm.iter().enumerate() {
                        for _ in 0..tp {
                            for py in 0..p {
                                for px in 0..p {
                                    let v = img.data[((py0 + py) * img.width + px0 + px) * 3 + c];
                                    out.push((v as f32 - mean) / std);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Preprocessed {
        pixel_values: out,
        grid_thw: [1, gh, gw],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4×2 PNG, left half red, tagged with an Exif orientation of 6 ("rotate 90°
    /// clockwise to display", as a phone held upright writes it) in an eXIf chunk.
    fn png_rotated() -> Vec<u8> {
        let mut img = image::RgbImage::new(4, 2);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if x < 2 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            };
        }
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        // A big-endian TIFF header and one IFD entry: Orientation (0x0112), SHORT, 1, 6.
        let exif: Vec<u8> = [
            &b"MM\0*"[..],
            &[
                0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0,
            ],
        ]
        .concat();
        let mut chunk = (exif.len() as u32).to_be_bytes().to_vec();
        let body = [&b"eXIf"[..], &exif].concat();
        chunk.extend(&body);
        chunk.extend(crc32fast::hash(&body).to_be_bytes());
        // After the signature (8 bytes) and IHDR (25).
        png.splice(33..33, chunk);
        png
    }

    #[test]
    fn a_photo_tagged_with_an_orientation_is_read_upright() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phone.png");
        std::fs::write(&path, png_rotated()).unwrap();
        let img = Rgb8::open(&path).unwrap();
        // Turned a quarter clockwise: 2 wide, 4 high, the red half on top.
        assert_eq!((img.width, img.height), (2, 4));
        assert_eq!(&img.data[..3], &[255, 0, 0]);
        assert_eq!(&img.data[img.data.len() - 3..], &[0, 0, 255]);
    }
}
