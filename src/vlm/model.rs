//! The whole Qwen3-VL: loading a model folder, merging image features into the token
//! embeddings, multimodal positions and masks, and the forward pass with or without a
//! KV cache.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

use super::config::Config;
use super::error::{Result, VlmError};
use super::ops::Mode;
use super::rope_index::{rope_index, RopeIndex};
use super::text::{attention_mask, packed_attention_mask, Deepstack, KvCache, TextModel};
use super::vision::{VisionModel, VisionOutput};
use super::weights::WeightStore;

/// Images of a batch, as the processor produces them.
#[derive(Debug, Clone)]
pub struct Images {
    /// `[patches, C·T·P·P]`, patches of all images in order.
    pub pixel_values: Tensor,
    /// `[t, h, w]` in patches, per image.
    pub grid_thw: Vec<[usize; 3]>,
}

/// A batch of prompts: token ids (equal lengths, padded), optional 0/1 mask, images.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `B` rows of `L` token ids.
    pub input_ids: Vec<Vec<u32>>,
    /// `B` rows of `L` values, 1 = real token, 0 = padding; `None` = all real.
    pub attention_mask: Option<Vec<Vec<u8>>>,
    /// Images referenced by the `<|image_pad|>` runs, in order.
    pub images: Option<Images>,
}

/// Result of a full forward.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// `[B, L, vocab]` f32.
    pub logits: Tensor,
    /// Positions used, with generation offsets.
    pub rope: RopeIndex,
}

/// What a training forward feeds the decoder layers: everything upstream of them, computed
/// without gradient (the embeddings and the vision tower are frozen).
#[derive(Debug, Clone)]
pub struct DecoderInputs {
    /// `[B, L, hidden]`, image features merged in, detached.
    pub embeds: Tensor,
    /// MRoPE cos, `[B, L, head_dim/2]`.
    pub cos: Tensor,
    /// MRoPE sin, `[B, L, head_dim/2]`.
    pub sin: Tensor,
    /// Additive causal + padding mask, `[B, 1, L, L]` f32.
    pub mask: Tensor,
    /// DeepStack features (detached) when the batch has images.
    pub deepstack: Option<Deepstack>,
}

/// Qwen3-VL for conditional generation.
pub struct Qwen3Vl {
    config: Config,
    text: TextModel,
    vision: VisionModel,
    device: Device,
    dtype: DType,
    vision_cache: Option<Mutex<VisionCache>>,
}

/// Vision-tower outputs of the last few images (least recently used dropped first), for inference: a planner shows the model
/// the same goal image at every decision of an episode, and a preference pair shows the
/// same two images twice. Entries are matched on the exact pixels and grid (a hash would
/// risk handing back another image's features); the tower encodes each image on its own
/// (attention never crosses images), so a cached image gives what a fresh run would.
#[derive(Default)]
struct VisionCache {
    capacity: usize,
    entries: VecDeque<CachedImage>,
    hits: u64,
    misses: u64,
}

struct CachedImage {
    grid: [usize; 3],
    pixels: Vec<f32>,
    embeds: Tensor,
    deepstack: Vec<Tensor>,
}

impl Qwen3Vl {
    /// Loads `config.json` and the weights of `dir`, computing in `dtype` on `device`.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        super::check_finished(dir)?;
        let config = Config::load(dir)?;
        let store = WeightStore::open(dir, dtype, device)?;
        Self::from_store(config, &store)
    }

    /// The architecture of `dir`'s `config.json` with made-up weights
    /// ([`WeightStore::random`]): the real sizes and speed of a model whose weights are
    /// not here (an 8B config), answering noise.
    pub fn random(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::from_store(Config::load(dir)?, &WeightStore::random(dtype, device))
    }

    /// Builds the model from a parsed config and opened weights.
    pub fn from_store(config: Config, store: &WeightStore) -> Result<Self> {
        let text = TextModel::load(store, &config.text, config.tie_word_embeddings)?;
        let vision = VisionModel::load(store, &config.vision)?;
        Ok(Self {
            config,
            text,
            vision,
            device: store.device().clone(),
            dtype: store.dtype(),
            vision_cache: None,
        })
    }

    /// Keeps the vision-tower outputs of the last `capacity` distinct images and reuses
    /// them for inference forwards (`Mode::Infer`) that show the same pixels again; 0
    /// turns the cache off (the default). Only for frozen vision weights: a caller that
    /// updates them in place (whole-model training) must leave it off or call
    /// [`Self::clear_vision_cache`] after every update.
    pub fn set_vision_cache(&mut self, capacity: usize) {
        self.vision_cache = (capacity > 0).then(|| {
            Mutex::new(VisionCache {
                capacity,
                ..VisionCache::default()
            })
        });
    }

    /// Forgets every cached image.
    pub fn clear_vision_cache(&self) {
        if let Some(c) = &self.vision_cache {
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            c.entries.clear();
        }
    }

    /// Images served from the vision cache and images encoded, since it was turned on.
    pub fn vision_cache_stats(&self) -> (u64, u64) {
        self.vision_cache.as_ref().map_or((0, 0), |c| {
            let c = c.lock().unwrap_or_else(|e| e.into_inner());
            (c.hits, c.misses)
        })
    }

    /// The vision tower on `images`, through the cache when it is on and `mode` is
    /// inference.
    fn encode_images(&self, images: &Images, mode: Mode) -> Result<VisionOutput> {
        let cache = match (&self.vision_cache, mode) {
            (Some(c), Mode::Infer) => c,
            _ => {
                return self
                    .vision
                    .forward(&images.pixel_values, &images.grid_thw, mode)
            }
        };
        let pixels = images
            .pixel_values
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let row = images.pixel_values.dim(1)?;
        let m2 = self.config.vision.spatial_merge_size.pow(2);
        // Patch offset and merged-token count of each image.
        let mut spans = Vec::with_capacity(images.grid_thw.len());
        let mut off = 0;
        for g in &images.grid_thw {
            let n = g[0] * g[1] * g[2];
            spans.push((off, n, n / m2));
            off += n;
        }
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<Option<(Tensor, Vec<Tensor>)>> = images
            .grid_thw
            .iter()
            .zip(&spans)
            .map(|(g, &(off, n, _))| {
                let px = &pixels[off * row..(off + n) * row];
                // Least recently used first: a hit moves to the back.
                let pos = cache
                    .entries
                    .iter()
                    .position(|e| e.grid == *g && e.pixels == px)?;
                let e = cache.entries.remove(pos)?;
                let out = (e.embeds.clone(), e.deepstack.clone());
                cache.entries.push_back(e);
                Some(out)
            })
            .collect();
        let missing: Vec<usize> = (0..found.len()).filter(|&i| found[i].is_none()).collect();
        cache.hits += (found.len() - missing.len()) as u64;
        cache.misses += missing.len() as u64;
        if !missing.is_empty() {
            // The missing images in one tower run, then split per image.
            let parts = missing
                .iter()
                .map(|&i| images.pixel_values.narrow(0, spans[i].0, spans[i].1))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let grids: Vec<[usize; 3]> = missing.iter().map(|&i| images.grid_thw[i]).collect();
            let out = self
                .vision
                .forward(&Tensor::cat(&parts, 0)?, &grids, mode)?;
            let mut tok = 0;
            for &i in &missing {
                let (off, n, t) = spans[i];
                let embeds = out.embeds.narrow(0, tok, t)?;
                let deepstack = out
                    .deepstack
                    .iter()
                    .map(|d| d.narrow(0, tok, t))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                tok += t;
                cache.entries.push_back(CachedImage {
                    grid: images.grid_thw[i],
                    pixels: pixels[off * row..(off + n) * row].to_vec(),
                    embeds: embeds.clone(),
                    deepstack: deepstack.clone(),
                });
                found[i] = Some((embeds, deepstack));
            }
            while cache.entries.len() > cache.capacity {
                cache.entries.pop_front();
            }
        }
        drop(cache);
        let found: Vec<(Tensor, Vec<Tensor>)> = found.into_iter().flatten().collect();
        let embeds = Tensor::cat(&found.iter().map(|f| &f.0).collect::<Vec<_>>(), 0)?;
        let layers = found.first().map_or(0, |f| f.1.len());
        let deepstack = (0..layers)
            .map(|j| Tensor::cat(&found.iter().map(|f| &f.1[j]).collect::<Vec<_>>(), 0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(VisionOutput { embeds, deepstack })
    }

    /// The parsed config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The language model (e.g. to attach adapters to its linear layers).
    pub fn text_mut(&mut self) -> &mut TextModel {
        &mut self.text
    }

    /// The language model.
    pub fn text(&self) -> &TextModel {
        &self.text
    }

    /// The decoder's inputs for a training forward of `batch`: the vision tower runs
    /// once with `Mode::Infer` (frozen, no graph) and everything is detached.
    pub fn decoder_inputs(&self, batch: &Batch) -> Result<DecoderInputs> {
        let (b, l) = self.check(batch)?;
        let (embeds, deepstack) = self.embed(batch, Mode::Infer)?;
        let rope = self.rope_index(batch)?;
        let (cos, sin) = self
            .text
            .rotary(&rope.position_ids, b, l, self.dtype, &self.device)?;
        let valid: Vec<Vec<bool>> = match &batch.attention_mask {
            Some(m) => m
                .iter()
                .map(|r| r.iter().map(|&v| v != 0).collect())
                .collect(),
            None => vec![vec![true; l]; b],
        };
        let mask = attention_mask(&valid, 0, l, &self.device)?;
        Ok(DecoderInputs {
            embeds: embeds.detach(),
            cos,
            sin,
            mask,
            deepstack: deepstack.map(|d| Deepstack {
                rows: d.rows,
                features: d.features.iter().map(Tensor::detach).collect(),
            }),
        })
    }

    /// A KV cache for this model with room for `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(self.config.text.num_hidden_layers, capacity)
    }

    fn check(&self, batch: &Batch) -> Result<(usize, usize)> {
        let b = batch.input_ids.len();
        let l = batch.input_ids.first().map_or(0, Vec::len);
        if b == 0 || l == 0 {
            return Err(VlmError::Input("input_ids is empty".into()));
        }
        if let Some(row) = batch.input_ids.iter().position(|r| r.len() != l) {
            return Err(VlmError::Input(format!(
                "input_ids row {row} is not {l} long"
            )));
        }
        let vocab = self.config.text.vocab_size;
        for row in &batch.input_ids {
            if let Some(&bad) = row.iter().find(|&&t| t as usize >= vocab) {
                return Err(VlmError::Input(format!(
                    "token id {bad} is outside the vocabulary of {vocab}"
                )));
            }
        }
        if let Some(mask) = &batch.attention_mask {
            if mask.len() != b || mask.iter().any(|r| r.len() != l) {
                return Err(VlmError::Shape {
                    name: "attention_mask".into(),
                    expected: format!("[{b}, {l}] (as input_ids)"),
                    found: vec![mask.len(), mask.first().map_or(0, Vec::len)],
                });
            }
        }
        let image_tokens: usize = batch
            .input_ids
            .iter()
            .map(|r| {
                r.iter()
                    .filter(|&&t| t == self.config.image_token_id)
                    .count()
            })
            .sum();
        let m = self.config.vision.spatial_merge_size;
        let expected: usize = match &batch.images {
            None => 0,
            Some(img) => {
                for g in &img.grid_thw {
                    if g[1] % m != 0 || g[2] % m != 0 || g.contains(&0) {
                        return Err(VlmError::Input(format!(
                            "image_grid_thw {g:?}: h and w must be positive multiples of the merge size {m}"
                        )));
                    }
                }
                img.grid_thw
                    .iter()
                    .map(|g| g[0] * g[1] * g[2] / (m * m))
                    .sum()
            }
        };
        if image_tokens != expected {
            return Err(VlmError::Input(format!(
                "input_ids hold {image_tokens} image tokens but image_grid_thw accounts for {expected}"
            )));
        }
        Ok((b, l))
    }

    /// Token embeddings with image features written over the image tokens, and the
    /// DeepStack features for the same positions.
    fn embed(&self, batch: &Batch, mode: Mode) -> Result<(Tensor, Option<Deepstack>)> {
        let (b, l) = (batch.input_ids.len(), batch.input_ids[0].len());
        let flat: Vec<u32> = batch.input_ids.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat.clone(), (b, l), &self.device)?;
        let embeds = self.text.embed(&ids)?;
        let Some(images) = &batch.images else {
            return Ok((embeds, None));
        };
        let rows: Vec<u32> = flat
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == self.config.image_token_id)
            .map(|(i, _)| i as u32)
            .collect();
        if rows.is_empty() {
            return Ok((embeds, None));
        }
        let out = self.encode_images(images, mode)?;
        let hid = self.config.text.hidden_size;
        let n = rows.len();
        let rows_t = Tensor::from_vec(rows, n, &self.device)?;
        let flat_e = embeds.reshape((b * l, hid))?;
        let scattered =
            flat_e
                .zeros_like()?
                .index_add(&rows_t, &out.embeds.to_dtype(flat_e.dtype())?, 0)?;
        let mut is_image = vec![0u8; b * l];
        for (i, &t) in batch.input_ids.iter().flatten().enumerate() {
            is_image[i] = u8::from(t == self.config.image_token_id);
        }
        let mask =
            Tensor::from_vec(is_image, (b * l, 1), &self.device)?.broadcast_as((b * l, hid))?;
        let merged = mask.where_cond(&scattered, &flat_e)?.reshape((b, l, hid))?;
        Ok((
            merged,
            Some(Deepstack {
                rows: rows_t,
                features: out.deepstack,
            }),
        ))
    }

    /// Multimodal positions of a batch.
    pub fn rope_index(&self, batch: &Batch) -> Result<RopeIndex> {
        let grids = batch.images.as_ref().map_or(&[][..], |i| &i.grid_thw[..]);
        rope_index(
            &batch.input_ids,
            batch.attention_mask.as_deref(),
            grids,
            self.config.image_token_id,
            self.config.vision.spatial_merge_size,
        )
    }

    /// Logits at every position of `batch`, no cache. `Mode::Train` uses only
    /// differentiable operations.
    pub fn forward(&self, batch: &Batch, mode: Mode) -> Result<ForwardOutput> {
        self.forward_impl(batch, None, mode, None)
    }

    /// Like [`Self::forward`], filling `cache` (which must be empty) with the prompt, but
    /// with logits for the last position only (`[B, 1, vocab]`: all that generation needs;
    /// the LM head over every prompt position was a fifth of the prompt's arithmetic).
    pub fn prefill(&self, batch: &Batch, cache: &mut KvCache) -> Result<ForwardOutput> {
        self.prefill_tail(batch, cache, 1)
    }

    /// [`Self::prefill`] with logits for the last `n` positions (`[B, n, vocab]`): a prompt
    /// that ends with tokens forced by a grammar scores them in the same pass.
    pub fn prefill_tail(
        &self,
        batch: &Batch,
        cache: &mut KvCache,
        n: usize,
    ) -> Result<ForwardOutput> {
        if !cache.is_empty() {
            return Err(VlmError::Input(
                "prefill needs an empty KV cache (reset it)".into(),
            ));
        }
        self.forward_impl(batch, Some(cache), Mode::Infer, Some(n.max(1)))
    }

    /// Logits at chosen positions only: `rows` are flat indices `b · L + l` into the batch,
    /// the result is `[rows.len(), vocab]` f32. A training loss that scores a few tokens
    /// per row (answers, questions) skips the LM head and its softmax everywhere else.
    pub fn forward_rows(&self, batch: &Batch, mode: Mode, rows: &[usize]) -> Result<Tensor> {
        self.rows_of(batch, None, mode, rows)
    }

    /// [`Self::forward_rows`] on rows that each pack several answers after one shared
    /// prompt: `segments[b]` lists row `b`'s answer segments as `(start, len)`, contiguous
    /// and in order, the first right after the prompt, the last ending the row. Every
    /// segment takes the positions the first one has (so each answer is placed as if it
    /// alone followed the prompt) and sees only the prompt and itself
    /// ([`packed_attention_mask`]): the logits of each answer equal those of a row holding
    /// the prompt and that answer alone, while the prompt is run once for all of them.
    pub fn forward_rows_packed(
        &self,
        batch: &Batch,
        segments: &[Vec<(usize, usize)>],
        mode: Mode,
        rows: &[usize],
    ) -> Result<Tensor> {
        let b = batch.input_ids.len();
        let l = batch.input_ids.first().map_or(0, Vec::len);
        if segments.len() != b {
            return Err(VlmError::Input(format!(
                "{} rows of answer segments for a batch of {b} rows",
                segments.len()
            )));
        }
        for (bi, segs) in segments.iter().enumerate() {
            let ok = !segs.is_empty()
                && segs[0].0 > 0
                && segs.iter().all(|&(_, n)| n > 0)
                && segs.windows(2).all(|w| w[1].0 == w[0].0 + w[0].1)
                && segs.last().is_some_and(|&(s, n)| s + n == l);
            if !ok {
                return Err(VlmError::Input(format!(
                    "row {bi}: answer segments {segs:?} must be non-empty, contiguous, after a prompt and end the row of {l} tokens"
                )));
            }
        }
        self.rows_of(batch, Some(segments), mode, rows)
    }

    fn rows_of(
        &self,
        batch: &Batch,
        segments: Option<&[Vec<(usize, usize)>]>,
        mode: Mode,
        rows: &[usize],
    ) -> Result<Tensor> {
        let (b, l) = self.check(batch)?;
        if let Some(&bad) = rows.iter().find(|&&r| r >= b * l) {
            return Err(VlmError::Input(format!(
                "row {bad} is outside the batch's {b} × {l} positions"
            )));
        }
        let (hidden, _) = self.hidden_states(batch, None, mode, None, segments)?;
        let hid = hidden.dim(2)?;
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let picked = hidden
            .reshape((b * l, hid))?
            .index_select(&Tensor::from_vec(idx, rows.len(), &self.device)?, 0)?;
        Ok(self.text.lm_head(&picked)?.to_dtype(DType::F32)?)
    }

    fn forward_impl(
        &self,
        batch: &Batch,
        cache: Option<&mut KvCache>,
        mode: Mode,
        tail: Option<usize>,
    ) -> Result<ForwardOutput> {
        let (hidden, rope) = self.hidden_states(batch, cache, mode, tail, None)?;
        let logits = self.text.lm_head(&hidden)?.to_dtype(DType::F32)?;
        Ok(ForwardOutput { logits, rope })
    }

    /// Final-normed hidden states (`[B, L or tail, hidden]`) and the batch's positions.
    fn hidden_states(
        &self,
        batch: &Batch,
        cache: Option<&mut KvCache>,
        mode: Mode,
        tail: Option<usize>,
        segments: Option<&[Vec<(usize, usize)>]>,
    ) -> Result<(Tensor, RopeIndex)> {
        let (b, l) = self.check(batch)?;
        let (embeds, deepstack) = self.embed(batch, mode)?;
        let mut rope = self.rope_index(batch)?;
        if let Some(segs) = segments {
            // Every answer segment continues from where the prompt ends, on all three axes.
            let n = b * l;
            for (bi, row) in segs.iter().enumerate() {
                let first = row[0].0;
                for &(start, len) in &row[1..] {
                    for axis in 0..3 {
                        let p0 = rope.position_ids[axis * n + bi * l + first];
                        for k in 0..len {
                            rope.position_ids[axis * n + bi * l + start + k] = p0 + k as i64;
                        }
                    }
                }
            }
        }
        let (cos, sin) = self
            .text
            .rotary(&rope.position_ids, b, l, self.dtype, &self.device)?;
        let valid: Vec<Vec<bool>> = match &batch.attention_mask {
            Some(m) => m
                .iter()
                .map(|r| r.iter().map(|&v| v != 0).collect())
                .collect(),
            None => vec![vec![true; l]; b],
        };
        let mask = match segments {
            Some(segs) => packed_attention_mask(&valid, segs, l, &self.device)?,
            None => attention_mask(&valid, 0, l, &self.device)?,
        };
        let hidden = self.text.forward(
            &embeds,
            &cos,
            &sin,
            Some(&mask),
            cache,
            deepstack.as_ref(),
            mode,
            tail,
        )?;
        Ok((hidden, rope))
    }

    /// One decoding step: `tokens` (one per cached row) at `positions` (same position on
    /// all three axes, as for text), appended to `cache`. `key_valid` marks, per row, which
    /// cached positions plus the new one are real (None: all). Returns `[B, vocab]` f32.
    pub fn decode_step(
        &self,
        tokens: &[u32],
        positions: &[i64],
        cache: &mut KvCache,
        key_valid: Option<&[Vec<bool>]>,
    ) -> Result<Tensor> {
        let tokens: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
        let positions: Vec<Vec<i64>> = positions.iter().map(|&p| vec![p]).collect();
        Ok(self
            .decode(&tokens, &positions, cache, key_valid)?
            .squeeze(1)?)
    }

    /// A decoding step of `n` tokens per row (`tokens[b]`, all rows the same length) at
    /// text `positions[b]`, appended to `cache`; each new token attends to the cache and to
    /// the new tokens before it. `key_valid` marks, per row, which cached positions plus
    /// the `n` new ones are real (None: all): a row with fewer real tokens than `n` pads
    /// with masked ones. Returns `[B, n, vocab]` f32.
    pub fn decode(
        &self,
        tokens: &[Vec<u32>],
        positions: &[Vec<i64>],
        cache: &mut KvCache,
        key_valid: Option<&[Vec<bool>]>,
    ) -> Result<Tensor> {
        let b = tokens.len();
        let n = tokens.first().map_or(0, Vec::len);
        if n == 0
            || positions.len() != b
            || cache.batch() != b
            || tokens.iter().any(|t| t.len() != n)
            || positions.iter().any(|p| p.len() != n)
        {
            return Err(VlmError::Input(format!(
                "decode: {b} token rows of {n} (all rows equal, at least one token), {} \
                 position rows, {} cached rows",
                positions.len(),
                cache.batch()
            )));
        }
        let ids = Tensor::from_vec(tokens.concat(), (b, n), &self.device)?;
        let embeds = self.text.embed(&ids)?;
        let flat: Vec<i64> = positions.concat();
        let pos3: Vec<i64> = (0..3).flat_map(|_| flat.iter().copied()).collect();
        let (cos, sin) = self.text.rotary(&pos3, b, n, self.dtype, &self.device)?;
        let mask = match key_valid {
            Some(v) => Some(attention_mask(v, cache.len(), n, &self.device)?),
            None if n > 1 => {
                let all = vec![vec![true; cache.len() + n]; b];
                Some(attention_mask(&all, cache.len(), n, &self.device)?)
            }
            None => None,
        };
        let hidden = self.text.forward(
            &embeds,
            &cos,
            &sin,
            mask.as_ref(),
            Some(cache),
            None,
            Mode::Infer,
            None,
        )?;
        Ok(self.text.lm_head(&hidden)?.to_dtype(DType::F32)?)
    }
}
