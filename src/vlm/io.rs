//! Tensor files of the reference tools (`dreamplan vlm forward|preprocess`): inputs named
//! as HF's processor names them (`input_ids`, `attention_mask`, `pixel_values`,
//! `image_grid_thw`), checked once here so that a missing or mis-shaped tensor is
//! reported by name with the expected and found shapes.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::error::{Result, VlmError};
use super::model::{Batch, Images};

fn ints(name: &str, view: &TensorView) -> Result<Vec<i64>> {
    let data = view.data();
    let out: Vec<i64> = match view.dtype() {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64)
            .collect(),
        Dtype::U32 => data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64)
            .collect(),
        Dtype::U8 | Dtype::BOOL => data.iter().map(|&b| b as i64).collect(),
        other => {
            return Err(VlmError::Dtype {
                name: name.into(),
                expected: "an integer type (i64, i32, u32, u8 or bool)".into(),
                found: format!("{other:?}"),
            })
        }
    };
    Ok(out)
}

fn rank2(name: &str, view: &TensorView, expected: &str) -> Result<(usize, usize)> {
    match view.shape() {
        &[a, b] => Ok((a, b)),
        other => Err(VlmError::Shape {
            name: name.into(),
            expected: expected.into(),
            found: other.to_vec(),
        }),
    }
}

/// Reads a forward-input file into a [`Batch`]; `patch_len` is the model's row width of
/// `pixel_values` (1536 for Qwen3-VL).
pub fn read_batch(path: &Path, patch_len: usize, device: &Device) -> Result<Batch> {
    let bytes = std::fs::read(path).map_err(|e| VlmError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| VlmError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let names: HashMap<String, TensorView> = st.tensors().into_iter().collect();
    let missing = |name: &str| VlmError::MissingTensor {
        name: name.into(),
        context: format!(" in {}", path.display()),
    };
    let ids_view = names.get("input_ids").ok_or_else(|| missing("input_ids"))?;
    let (b, l) = rank2("input_ids", ids_view, "[B, L]")?;
    let flat = ints("input_ids", ids_view)?;
    let mut input_ids = Vec::with_capacity(b);
    for row in flat.chunks(l.max(1)).take(b) {
        input_ids.push(
            row.iter()
                .map(|&t| {
                    u32::try_from(t).map_err(|_| VlmError::Input(format!("input_ids holds {t}")))
                })
                .collect::<Result<Vec<u32>>>()?,
        );
    }
    let attention_mask = match names.get("attention_mask") {
        None => None,
        Some(v) => {
            let shape = rank2("attention_mask", v, &format!("[{b}, {l}] (as input_ids)"))?;
            if shape != (b, l) {
                return Err(VlmError::Shape {
                    name: "attention_mask".into(),
                    expected: format!("[{b}, {l}] (as input_ids)"),
                    found: vec![shape.0, shape.1],
                });
            }
            let m = ints("attention_mask", v)?;
            Some(
                m.chunks(l.max(1))
                    .take(b)
                    .map(|r| r.iter().map(|&x| u8::from(x != 0)).collect())
                    .collect(),
            )
        }
    };
    let images = match (names.get("pixel_values"), names.get("image_grid_thw")) {
        (None, None) => None,
        (Some(_), None) => return Err(missing("image_grid_thw")),
        (None, Some(_)) => return Err(missing("pixel_values")),
        (Some(pv), Some(grid)) => {
            let (i, three) = rank2("image_grid_thw", grid, "[I, 3]")?;
            if three != 3 {
                return Err(VlmError::Shape {
                    name: "image_grid_thw".into(),
                    expected: "[I, 3]".into(),
                    found: vec![i, three],
                });
            }
            let g = ints("image_grid_thw", grid)?;
            let mut grid_thw = Vec::with_capacity(i);
            for c in g.chunks(3) {
                if c.iter().any(|&x| x <= 0) {
                    return Err(VlmError::Input(format!("image_grid_thw holds {c:?}")));
                }
                grid_thw.push([c[0] as usize, c[1] as usize, c[2] as usize]);
            }
            let patches: usize = grid_thw.iter().map(|g| g[0] * g[1] * g[2]).sum();
            let expected =
                format!("[{patches}, {patch_len}] (patches from image_grid_thw × C·T·P·P)");
            let (n, d) = rank2("pixel_values", pv, &expected)?;
            if (n, d) != (patches, patch_len) {
                return Err(VlmError::Shape {
                    name: "pixel_values".into(),
                    expected,
                    found: vec![n, d],
                });
            }
            let dtype = match pv.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::F16 => DType::F16,
                Dtype::BF16 => DType::BF16,
                Dtype::F64 => DType::F64,
                other => {
                    return Err(VlmError::Dtype {
                        name: "pixel_values".into(),
                        expected: "a float type".into(),
                        found: format!("{other:?}"),
                    })
                }
            };
            let t = Tensor::from_raw_buffer(pv.data(), dtype, &[n, d], &Device::Cpu)?
                .to_dtype(DType::F32)?
                .to_device(device)?;
            Some(Images {
                pixel_values: t,
                grid_thw,
            })
        }
    };
    Ok(Batch {
        input_ids,
        attention_mask,
        images,
    })
}

/// Writes named tensors to a safetensors file.
pub fn write_tensors(path: &Path, tensors: &[(&str, Tensor)]) -> Result<()> {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, t)| Ok(((*n).to_string(), t.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&map, path).map_err(|e| VlmError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
