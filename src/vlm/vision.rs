//! The Qwen3-VL vision tower: patch embedding (a Conv3d whose stride equals its kernel,
//! so a matmul on flattened patches), the learned position table bilinearly resampled to
//! each image's patch grid, 2D rotary attention within each image, and the patch mergers
//! that turn 2×2 patches into one LLM token — the final one and the DeepStack ones taken
//! after selected blocks.
//!
//! Patches arrive in merge-window order (see [`super::image`]): the 4 patches of one
//! merged token are consecutive rows, so merging is a reshape.

use candle_core::{DType, Tensor};

use super::config::VisionConfig;
use super::error::{Result, VlmError};
use super::linear::Linear;
use super::ops::{self, Mode};
use super::weights::WeightStore;

const LN_EPS: f64 = 1e-6;

struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn load(store: &WeightStore, path: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: store.get(&format!("{path}.weight"), &[dim])?,
            bias: store.get(&format!("{path}.bias"), &[dim])?,
        })
    }
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, LN_EPS, mode)
    }
}

struct Block {
    norm1: Norm,
    norm2: Norm,
    qkv: Linear,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
}

/// `Qwen3VLVisionPatchMerger`: LayerNorm before (`postshuffle = false`) or after
/// (`true`) grouping 2×2 patches, then a GELU MLP to the text width.
struct Merger {
    norm: Norm,
    fc1: Linear,
    fc2: Linear,
    postshuffle: bool,
    merged_dim: usize,
}

impl Merger {
    fn load(
        store: &WeightStore,
        path: &str,
        cfg: &VisionConfig,
        postshuffle: bool,
    ) -> Result<Self> {
        let merged_dim = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let norm_dim = if postshuffle {
            merged_dim
        } else {
            cfg.hidden_size
        };
        Ok(Self {
            norm: Norm::load(store, &format!("{path}.norm"), norm_dim)?,
            fc1: Linear::load(
                store,
                &format!("{path}.linear_fc1"),
                merged_dim,
                merged_dim,
                true,
            )?,
            fc2: Linear::load(
                store,
                &format!("{path}.linear_fc2"),
                merged_dim,
                cfg.out_hidden_size,
                true,
            )?,
            postshuffle,
            merged_dim,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let rows = x.elem_count() / self.merged_dim;
        let x = if self.postshuffle {
            self.norm
                .forward(&x.reshape((rows, self.merged_dim))?, mode)?
        } else {
            self.norm
                .forward(x, mode)?
                .reshape((rows, self.merged_dim))?
        };
        let x = self.fc1.forward(&x)?.gelu_erf()?;
        self.fc2.forward(&x)
    }
}

/// The vision tower.
pub struct VisionModel {
    patch_embed: Linear,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack: Vec<(usize, Merger)>,
    cfg: VisionConfig,
    /// `θ^(−2i/(head_dim/2))` for the `head_dim/4` frequencies of each spatial axis.
    inv_freq: Vec<f32>,
}

/// Vision tower output: one row per merged token, plus the DeepStack features.
pub struct VisionOutput {
    /// `[tokens, out_hidden]`.
    pub embeds: Tensor,
    /// One `[tokens, out_hidden]` per DeepStack layer.
    pub deepstack: Vec<Tensor>,
}

impl VisionModel {
    /// Loads `model.visual.*`.
    pub fn load(store: &WeightStore, cfg: &VisionConfig) -> Result<Self> {
        let p = "model.visual";
        let hid = cfg.hidden_size;
        let pe_name = format!("{p}.patch_embed.proj.weight");
        let w = store.get(
            &pe_name,
            &[
                hid,
                cfg.in_channels,
                cfg.temporal_patch_size,
                cfg.patch_size,
                cfg.patch_size,
            ],
        )?;
        let patch_embed = Linear::from_parts(
            w.reshape((hid, cfg.patch_len()))?,
            Some(store.get(&format!("{p}.patch_embed.proj.bias"), &[hid])?),
            &format!("{p}.patch_embed.proj"),
        );
        let pos_embed = store.get(
            &format!("{p}.pos_embed.weight"),
            &[cfg.num_position_embeddings, hid],
        )?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let bp = format!("{p}.blocks.{i}");
            blocks.push(Block {
                norm1: Norm::load(store, &format!("{bp}.norm1"), hid)?,
                norm2: Norm::load(store, &format!("{bp}.norm2"), hid)?,
                qkv: Linear::load(store, &format!("{bp}.attn.qkv"), hid, 3 * hid, true)?,
                proj: Linear::load(store, &format!("{bp}.attn.proj"), hid, hid, true)?,
                fc1: Linear::load(
                    store,
                    &format!("{bp}.mlp.linear_fc1"),
                    hid,
                    cfg.intermediate_size,
                    true,
                )?,
                fc2: Linear::load(
                    store,
                    &format!("{bp}.mlp.linear_fc2"),
                    cfg.intermediate_size,
                    hid,
                    true,
                )?,
            });
        }
        let merger = Merger::load(store, &format!("{p}.merger"), cfg, false)?;
        let deepstack = cfg
            .deepstack_visual_indexes
            .iter()
            .enumerate()
            .map(|(j, &layer)| {
                Ok((
                    layer,
                    Merger::load(store, &format!("{p}.deepstack_merger_list.{j}"), cfg, true)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let spatial = hid / cfg.num_heads / 2;
        let inv_freq = (0..spatial / 2)
            .map(|i| 1.0f32 / (cfg.rope_theta as f32).powf((2 * i) as f32 / spatial as f32))
            .collect();
        Ok(Self {
            patch_embed,
            pos_embed,
            blocks,
            merger,
            deepstack,
            cfg: cfg.clone(),
            inv_freq,
        })
    }

    /// (row, column) of each patch in merge-window order, for each image of `grids`.
    fn patch_coords(&self, grids: &[[usize; 3]]) -> Vec<(usize, usize)> {
        let m = self.cfg.spatial_merge_size;
        let mut out = Vec::new();
        for &[t, h, w] in grids {
            for _ in 0..t {
                for bh in 0..h / m {
                    for bw in 0..w / m {
                        for ih in 0..m {
                            for iw in 0..m {
                                out.push((bh * m + ih, bw * m + iw));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Learned positions resampled to each grid (bilinear, align_corners = true, as HF's
    /// `get_vision_interpolation_indices_and_weights`): `[patches, hidden]`.
    fn position_embeddings(&self, grids: &[[usize; 3]]) -> Result<Tensor> {
        let side = (self.cfg.num_position_embeddings as f64).sqrt() as usize;
        let mut idx = Vec::new();
        let mut wts = Vec::new();
        let taps = |i: usize, size: usize| -> [(u32, f32); 2] {
            let src = i as f32 * (side - 1) as f32 / (size.max(2) - 1) as f32;
            let fl = src.floor();
            let mut out = [(0u32, 0f32); 2];
            for (o, slot) in out.iter_mut().enumerate() {
                let tap = ((fl as i64) + o as i64).clamp(0, side as i64 - 1) as u32;
                let w = (1.0 - (src - fl - o as f32).abs()).max(0.0);
                *slot = (tap, w);
            }
            out
        };
        for &[t, h, w] in grids {
            let m = self.cfg.spatial_merge_size;
            for _ in 0..t {
                for bh in 0..h / m {
                    for bw in 0..w / m {
                        for ih in 0..m {
                            for iw in 0..m {
                                let (r, c) = (bh * m + ih, bw * m + iw);
                                let (rt, ct) = (taps(r, h), taps(c, w));
                                for (ri, rw) in rt {
                                    for (ci, cw) in ct {
                                        idx.push(ri * side as u32 + ci);
                                        wts.push(rw * cw);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let n = wts.len() / 4;
        let dev = self.pos_embed.device();
        let idx = Tensor::from_vec(idx, n * 4, dev)?;
        let wts = Tensor::from_vec(wts, (n, 4, 1), dev)?.to_dtype(self.pos_embed.dtype())?;
        let rows = self
            .pos_embed
            .index_select(&idx, 0)?
            .reshape((n, 4, self.cfg.hidden_size))?;
        Ok(rows.broadcast_mul(&wts)?.sum(1)?)
    }

    /// 2D rotary angles per patch: `[patches, head_dim/2]` = (row freqs, column freqs).
    fn rotary(&self, grids: &[[usize; 3]]) -> Result<(Tensor, Tensor)> {
        let coords = self.patch_coords(grids);
        let q = self.inv_freq.len();
        let mut cos = Vec::with_capacity(coords.len() * 2 * q);
        let mut sin = Vec::with_capacity(coords.len() * 2 * q);
        for &(r, c) in &coords {
            for pos in [r, c] {
                for f in &self.inv_freq {
                    let a = pos as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        let dev = self.pos_embed.device();
        let shape = (coords.len(), 2 * q);
        Ok((
            Tensor::from_vec(cos, shape, dev)?,
            Tensor::from_vec(sin, shape, dev)?,
        ))
    }

    /// Runs the tower on `pixel_values` (`[patches, C·T·P·P]`) of the images `grids`
    /// (`[t, h, w]` in patches each).
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        grids: &[[usize; 3]],
        mode: Mode,
    ) -> Result<VisionOutput> {
        let n: usize = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
        let (rows, cols) = pixel_values.dims2()?;
        if rows != n || cols != self.cfg.patch_len() {
            return Err(VlmError::Shape {
                name: "pixel_values".into(),
                expected: format!("[{n}, {}] (from image_grid_thw)", self.cfg.patch_len()),
                found: vec![rows, cols],
            });
        }
        let dtype = self.pos_embed.dtype();
        // Pixels are made on the CPU by the preprocessor; the tower may live on a GPU.
        let pixels = pixel_values
            .to_device(self.pos_embed.device())?
            .to_dtype(dtype)?;
        let x = self.patch_embed.forward(&pixels)?;
        let mut x = (x + self.position_embeddings(grids)?)?;
        let (cos, sin) = self.rotary(grids)?;
        // Attention never crosses a frame: segments of h·w patches.
        let mut segments = Vec::new();
        let mut start = 0;
        for &[t, h, w] in grids {
            for _ in 0..t {
                segments.push((start, h * w));
                start += h * w;
            }
        }
        let heads = self.cfg.num_heads;
        let hd = self.cfg.hidden_size / heads;
        let mut deepstack = Vec::new();
        for (i, blk) in self.blocks.iter().enumerate() {
            let normed = blk.norm1.forward(&x, mode)?;
            let qkv = blk
                .qkv
                .forward(&normed)?
                .reshape((n, 3, heads, hd))?
                .permute((1, 2, 0, 3))?;
            let rot = |t: Tensor| -> Result<Tensor> {
                let t32 = t.to_dtype(DType::F32)?.unsqueeze(0)?;
                Ok(ops::rope(&t32, &cos, &sin, mode)?
                    .squeeze(0)?
                    .to_dtype(dtype)?)
            };
            let q = rot(qkv.get(0)?)?;
            let k = rot(qkv.get(1)?)?;
            let v = qkv.get(2)?.contiguous()?;
            let mut outs = Vec::with_capacity(segments.len());
            for &(s, len) in &segments {
                let qs = q.narrow(1, s, len)?.contiguous()?;
                let ks = k.narrow(1, s, len)?.contiguous()?;
                let vs = v.narrow(1, s, len)?.contiguous()?;
                let scores = (qs.matmul(&ks.t()?)? * (hd as f64).powf(-0.5))?;
                let probs = ops::softmax_last(&scores, mode)?;
                outs.push(probs.matmul(&vs)?);
            }
            let attn = Tensor::cat(&outs, 1)?
                .transpose(0, 1)?
                .reshape((n, heads * hd))?;
            x = (x + blk.proj.forward(&attn)?)?;
            let normed = blk.norm2.forward(&x, mode)?;
            let h = blk.fc1.forward(&normed)?;
            let h = if self.cfg.gelu_tanh {
                ops::gelu_tanh(&h, mode)?
            } else {
                h.gelu_erf()?
            };
            x = (&x + blk.fc2.forward(&h)?)?;
            for (layer, merger) in &self.deepstack {
                if *layer == i {
                    deepstack.push(merger.forward(&x, mode)?);
                }
            }
        }
        Ok(VisionOutput {
            embeds: self.merger.forward(&x, mode)?,
            deepstack,
        })
    }
}
