//! A one-row prompt batch from chat-template text and preprocessed images, so callers
//! outside `vlm` never touch tensors.

use candle_core::{Device, Tensor};

use super::chat::{expand_image_pads, Tokenizer};
use super::error::Result;
use super::image::{Preprocessed, PreprocessorConfig};
use super::{Batch, Images};

/// Tokenises `text` (rendered by the chat template, one `<|image_pad|>` per image) with
/// each image's pad run expanded to its merged patch count, and stacks the images' pixels.
pub fn prompt_batch(
    tokenizer: &Tokenizer,
    text: &str,
    images: &[Preprocessed],
    cfg: &PreprocessorConfig,
) -> Result<Batch> {
    let merge = cfg.merge_size * cfg.merge_size;
    let counts: Vec<usize> = images
        .iter()
        .map(|p| p.grid_thw.iter().product::<usize>() / merge)
        .collect();
    let ids = tokenizer.encode(&expand_image_pads(text, &counts)?)?;
    let images = if images.is_empty() {
        None
    } else {
        let pixels: Vec<f32> = images
            .iter()
            .flat_map(|p| p.pixel_values.iter().copied())
            .collect();
        let rows = pixels.len() / cfg.patch_len();
        Some(Images {
            pixel_values: Tensor::from_vec(pixels, (rows, cfg.patch_len()), &Device::Cpu)?,
            grid_thw: images.iter().map(|p| p.grid_thw).collect(),
        })
    };
    Ok(Batch {
        input_ids: vec![ids],
        attention_mask: None,
        images,
    })
}
