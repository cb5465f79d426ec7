//! The Qwen3 language model inside Qwen3-VL: token embeddings, decoder layers with
//! per-head q/k RMSNorm, grouped-query attention and SwiGLU, interleaved multimodal RoPE,
//! DeepStack injection of visual features after the first layers, and the LM head.
//!
//! Frames: `[B, L, ·]` is batch × sequence; attention runs on `[B, heads, L, head_dim]`.
//! Positions come in as `[3, B, L]` (T, H, W) from [`super::rope_index`].

use candle_core::{DType, Device, Tensor};

use super::config::TextConfig;
use super::error::{Result, VlmError};
use super::fused;
use super::linear::Linear;
use super::ops::{self, Mode};
use super::weights::WeightStore;

/// Keys and values of every layer for the tokens seen so far, preallocated for a known
/// sequence length (prompt + new tokens) and grown if exceeded. Not `Clone`: its tensors
/// are written in place, and a clone (a shared handle) would write into the same buffers
/// (a review finding, session 53); `repeat_row0` copies.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `num_layers` layers, room for `capacity` positions.
    pub fn new(num_layers: usize, capacity: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
            capacity: capacity.max(1),
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position (keeps the buffers for reuse).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Batch rows held (0 before the first forward).
    pub fn batch(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .next()
            .and_then(|(k, _)| k.dim(0).ok())
            .unwrap_or(0)
    }

    /// This cache with batch row 0 copied `rows` times: a prompt computed once, continued
    /// as `rows` independent samples.
    pub fn repeat_row0(&self, rows: usize) -> Result<Self> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for slot in &self.layers {
            layers.push(match slot {
                Some((k, v)) => {
                    let idx = Tensor::zeros(rows, DType::U32, k.device())?;
                    Some((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?))
                }
                None => None,
            });
        }
        Ok(Self {
            layers,
            len: self.len,
            capacity: self.capacity,
        })
    }

    /// Writes `k`, `v` (`[B, kv_heads, n, D]`) after the held positions of `layer` and
    /// returns all keys and values of that layer, `[B, kv_heads, len + n, D]`.
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, heads, n, d) = k.dims4()?;
        let need = self.len + n;
        let slot = &mut self.layers[layer];
        let fresh = |cap: usize| Tensor::zeros((b, heads, cap, d), k.dtype(), k.device());
        let grow = match slot {
            Some((kc, _)) => kc.dim(2)? < need || kc.dim(0)? != b,
            None => true,
        };
        if grow {
            let cap = need.max(self.capacity);
            let (kn, vn) = (fresh(cap)?, fresh(cap)?);
            if let Some((kc, vc)) = slot.as_ref() {
                if self.len > 0 && kc.dim(0)? == b {
                    kn.slice_set(&kc.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                    vn.slice_set(&vc.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                }
            }
            *slot = Some((kn, vn));
        }
        let Some((kc, vc)) = slot.as_ref() else {
            unreachable!("slot filled above")
        };
        kc.slice_set(&k.contiguous()?, 2, self.len)?;
        vc.slice_set(&v.contiguous()?, 2, self.len)?;
        // Views, not copies: the batched matmuls read strided rows, so nothing is copied
        // per step.
        Ok((kc.narrow(2, 0, need)?, vc.narrow(2, 0, need)?))
    }
}

/// Visual features added to the hidden states at image positions after the first layers
/// (DeepStack): `features[i]` (`[n_visual, hidden]`) is added after layer `i`.
#[derive(Debug, Clone)]
pub struct Deepstack {
    /// Flat indices `b * L + l` of the image tokens, u32.
    pub rows: Tensor,
    /// One feature matrix per early layer.
    pub features: Vec<Tensor>,
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
}

struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

struct DecoderLayer {
    input_layernorm: Tensor,
    post_attention_layernorm: Tensor,
    attn: Attention,
    mlp: Mlp,
}

/// The text model with its LM head.
pub struct TextModel {
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    lm_head: Linear,
    cfg: TextConfig,
    /// `θ^(−2i/D)` for `i < D/2`, computed in f32 as HF does.
    inv_freq: Vec<f32>,
    /// Whether the inference forward uses [`fused`]'s operations; `None`: on a GPU
    /// ([`fused::default_for`]).
    fused: Option<bool>,
}

impl Attention {
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<(&mut KvCache, usize)>,
        mode: Mode,
        tail: Option<usize>,
    ) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        // Queries (and so outputs) for the last `lq` positions only; keys and values for all.
        let lq = tail.map_or(l, |n| n.clamp(1, l));
        let last = |t: &Tensor, dim: usize| -> Result<Tensor> {
            Ok(if lq < l {
                t.narrow(dim, l - lq, lq)?.contiguous()?
            } else {
                t.clone()
            })
        };
        let q = self
            .q_proj
            .forward_t(&last(x, 1)?, mode)?
            .reshape((b, lq, h, d))?;
        let k = self.k_proj.forward_t(x, mode)?.reshape((b, l, kvh, d))?;
        let v = self.v_proj.forward_t(x, mode)?.reshape((b, l, kvh, d))?;
        let q = ops::rms_norm(&q, &self.q_norm, self.eps, mode)?.transpose(1, 2)?;
        let k = ops::rms_norm(&k, &self.k_norm, self.eps, mode)?.transpose(1, 2)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let q = ops::rope(&q.contiguous()?, &last(cos, 1)?, &last(sin, 1)?, mode)?;
        let k = ops::rope(&k.contiguous()?, cos, sin, mode)?;
        let mask = match mask {
            Some(m) => Some(last(m, 2)?),
            None => None,
        };
        let l = lq;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?,
            None => (k, v),
        };
        let t = k.dim(2)?;
        let rep = h / kvh;
        // Heads [i·rep, (i+1)·rep) share kv head i: fold them into the query rows.
        let qf = q.reshape((b, kvh, rep * l, d))?;
        let scores = (qf.matmul(&k.t()?)? * (d as f64).powf(-0.5))?.reshape((b, h, l, t))?;
        let scores = match &mask {
            Some(m) => {
                // f32 as HF does (f64 stays f64 for the gradient tests).
                let sd = ops::stat_dtype(scores.dtype());
                scores.to_dtype(sd)?.broadcast_add(&m.to_dtype(sd)?)?
            }
            None => scores,
        };
        let probs = ops::softmax_last(&scores, mode)?.to_dtype(v.dtype())?;
        let out = probs
            .reshape((b, kvh, rep * l, t))?
            .matmul(&v)?
            .reshape((b, h, l, d))?
            .transpose(1, 2)?
            .reshape((b, l, h * d))?;
        self.o_proj.forward_t(&out, mode)
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let gate = ops::silu(&self.gate_proj.forward_t(x, mode)?, mode)?;
        let up = self.up_proj.forward_t(x, mode)?;
        self.down_proj.forward_t(&(gate * up)?, mode)
    }

    /// [`Mlp::forward`] for inference with `silu(gate) · up` as one operation.
    fn forward_fused(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward_t(x, Mode::Infer)?;
        let up = self.up_proj.forward_t(x, Mode::Infer)?;
        self.down_proj
            .forward_t(&fused::silu_mul(&gate, &up)?, Mode::Infer)
    }
}

impl DecoderLayer {
    /// Pre-norm attention and MLP blocks with residuals, then the DeepStack features of
    /// layer `i` (if any) added at the image positions.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        i: usize,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<(&mut KvCache, usize)>,
        deepstack: Option<&Deepstack>,
        eps: f64,
        mode: Mode,
        tail: Option<usize>,
    ) -> Result<Tensor> {
        let (_, l0, _) = x.dims3()?;
        let normed = ops::rms_norm(x, &self.input_layernorm, eps, mode)?;
        let a = self
            .attn
            .forward(&normed, cos, sin, mask, cache, mode, tail)?;
        let (b, l, hid) = a.dims3()?;
        let x = if l < l0 {
            x.narrow(1, l0 - l, l)?
        } else {
            x.clone()
        };
        let x = (x + a)?;
        let normed = ops::rms_norm(&x, &self.post_attention_layernorm, eps, mode)?;
        let mut x = (&x + self.mlp.forward(&normed, mode)?)?;
        if let Some(ds) = deepstack {
            if let Some(feat) = ds.features.get(i) {
                x = x
                    .reshape((b * l, hid))?
                    .index_add(&ds.rows, &feat.to_dtype(x.dtype())?, 0)?
                    .reshape((b, l, hid))?;
            }
        }
        Ok(x)
    }
}

impl TextModel {
    /// Loads `model.language_model.*` and `lm_head` (or the tied embedding).
    pub fn load(store: &WeightStore, cfg: &TextConfig, tie_word_embeddings: bool) -> Result<Self> {
        let p = "model.language_model";
        let (hid, d) = (cfg.hidden_size, cfg.head_dim);
        let (h, kvh) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let embed_tokens =
            store.get(&format!("{p}.embed_tokens.weight"), &[cfg.vocab_size, hid])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let lp = format!("{p}.layers.{i}");
            let ab = cfg.attention_bias;
            let attn = Attention {
                q_proj: Linear::load(store, &format!("{lp}.self_attn.q_proj"), hid, h * d, ab)?,
                k_proj: Linear::load(store, &format!("{lp}.self_attn.k_proj"), hid, kvh * d, ab)?,
                v_proj: Linear::load(store, &format!("{lp}.self_attn.v_proj"), hid, kvh * d, ab)?,
                o_proj: Linear::load(store, &format!("{lp}.self_attn.o_proj"), h * d, hid, ab)?,
                q_norm: store.get(&format!("{lp}.self_attn.q_norm.weight"), &[d])?,
                k_norm: store.get(&format!("{lp}.self_attn.k_norm.weight"), &[d])?,
                heads: h,
                kv_heads: kvh,
                head_dim: d,
                eps: cfg.rms_norm_eps,
            };
            let im = cfg.intermediate_size;
            let mlp = Mlp {
                gate_proj: Linear::load(store, &format!("{lp}.mlp.gate_proj"), hid, im, false)?,
                up_proj: Linear::load(store, &format!("{lp}.mlp.up_proj"), hid, im, false)?,
                down_proj: Linear::load(store, &format!("{lp}.mlp.down_proj"), im, hid, false)?,
            };
            layers.push(DecoderLayer {
                input_layernorm: store.get(&format!("{lp}.input_layernorm.weight"), &[hid])?,
                post_attention_layernorm: store
                    .get(&format!("{lp}.post_attention_layernorm.weight"), &[hid])?,
                attn,
                mlp,
            });
        }
        let norm = store.get(&format!("{p}.norm.weight"), &[hid])?;
        let lm_head = if tie_word_embeddings && !store.contains("lm_head.weight") {
            Linear::from_parts(embed_tokens.clone(), None, "lm_head")
        } else {
            Linear::load(store, "lm_head", hid, cfg.vocab_size, false)?
        };
        let inv_freq = (0..d / 2)
            .map(|i| 1.0f32 / (cfg.rope_theta as f32).powf((2 * i) as f32 / d as f32))
            .collect();
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            cfg: cfg.clone(),
            inv_freq,
            fused: None,
        })
    }

    /// Makes the inference forward use the fused add + RMSNorm and SiLU · mul operations
    /// (`Some(true)`), or not, or (`None`, the default) use them on a GPU only.
    pub fn set_fused(&mut self, fused: Option<bool>) {
        self.fused = fused;
    }

    /// The config this model was built from.
    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// Every linear layer of the decoder (q, k, v, o, gate, up, down per layer).
    pub fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.layers.iter().flat_map(|l| {
            [
                &l.attn.q_proj,
                &l.attn.k_proj,
                &l.attn.v_proj,
                &l.attn.o_proj,
                &l.mlp.gate_proj,
                &l.mlp.up_proj,
                &l.mlp.down_proj,
            ]
        })
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Decoder layer `i` alone, without cache: the unit of activation recomputation
    /// (`super::train`) and of the gradient tests.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_forward(
        &self,
        i: usize,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        deepstack: Option<&Deepstack>,
        mode: Mode,
    ) -> Result<Tensor> {
        let layer = self.layer(i)?;
        layer.forward(
            i,
            x,
            cos,
            sin,
            mask,
            None,
            deepstack,
            self.cfg.rms_norm_eps,
            mode,
            None,
        )
    }

    /// The attention block of layer `i` (q/k norm, MRoPE, GQA, `mask`) on already-normed
    /// `x`, without cache; exposed for the gradient tests.
    pub fn attention_forward(
        &self,
        i: usize,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        self.layer(i)?
            .attn
            .forward(x, cos, sin, mask, None, mode, None)
    }

    /// The SwiGLU MLP of layer `i`; exposed for the gradient tests.
    pub fn mlp_forward(&self, i: usize, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.layer(i)?.mlp.forward(x, mode)
    }

    /// The final RMSNorm.
    pub fn final_norm(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        ops::rms_norm(x, &self.norm, self.cfg.rms_norm_eps, mode)
    }

    fn layer(&self, i: usize) -> Result<&DecoderLayer> {
        self.layers.get(i).ok_or_else(|| {
            VlmError::Input(format!(
                "layer {i} does not exist (the model has {})",
                self.layers.len()
            ))
        })
    }

    /// Every linear layer of the decoder (q, k, v, o, gate, up, down per layer), for
    /// attaching adapters by [`Linear::path`].
    pub fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.layers.iter_mut().flat_map(|l| {
            [
                &mut l.attn.q_proj,
                &mut l.attn.k_proj,
                &mut l.attn.v_proj,
                &mut l.attn.o_proj,
                &mut l.mlp.gate_proj,
                &mut l.mlp.up_proj,
                &mut l.mlp.down_proj,
            ]
        })
    }

    /// Token embeddings `[B, L, hidden]` of `ids` (`[B, L]`, u32).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        Ok(self
            .embed_tokens
            .index_select(&flat, 0)?
            .reshape((b, l, self.cfg.hidden_size))?)
    }

    /// cos and sin (`[B, L, head_dim/2]`, compute dtype) of the interleaved MRoPE angles for
    /// `position_ids` laid out `[3, B, L]`: frequency channel `j` follows the H position if
    /// `j ≡ 1 (mod 3)` and `j < 3·section[1]`, the W position if `j ≡ 2 (mod 3)` and
    /// `j < 3·section[2]`, and the T position otherwise.
    pub fn rotary(
        &self,
        position_ids: &[i64],
        batch: usize,
        len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        if position_ids.len() != 3 * batch * len {
            return Err(VlmError::Input(format!(
                "position ids: expected 3 × {batch} × {len} values, found {}",
                position_ids.len()
            )));
        }
        let half = self.inv_freq.len();
        let sec = self.cfg.mrope_section;
        let axis = |j: usize| -> usize {
            if j % 3 == 1 && j < 3 * sec[1] {
                1
            } else if j % 3 == 2 && j < 3 * sec[2] {
                2
            } else {
                0
            }
        };
        let n = batch * len;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for row in 0..n {
            for (j, f) in self.inv_freq.iter().enumerate() {
                let pos = position_ids[axis(j) * n + row] as f32;
                let angle = pos * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let shape = (batch, len, half);
        Ok((
            Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?,
            Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?,
        ))
    }

    /// Runs the decoder on `embeds` (`[B, L, hidden]`) and returns the final-normed hidden
    /// states. `mask` is additive, `[B, 1, L, T]` f32 with `T` = cached + L positions (None:
    /// every query sees every key, right for a single new token without padding). With
    /// `tail = Some(n)` only the last `n` positions' states are returned, and the last
    /// layer computes little else (the cache still gets every position).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        embeds: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        deepstack: Option<&Deepstack>,
        mode: Mode,
        tail: Option<usize>,
    ) -> Result<Tensor> {
        if mode == Mode::Train && cache.is_some() {
            return Err(VlmError::Input(
                "a training forward takes no KV cache".into(),
            ));
        }
        let fused = self
            .fused
            .unwrap_or_else(|| fused::default_for(embeds.device()));
        if mode == Mode::Infer && fused && !self.layers.is_empty() {
            return self.forward_fused(embeds, cos, sin, mask, cache, deepstack, tail);
        }
        let l = embeds.dim(1)?;
        let eps = self.cfg.rms_norm_eps;
        let mut x = embeds.clone();
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            // The last layer's outputs feed only the LM head: with a tail, it computes
            // keys and values everywhere (the cache needs them) and the rest only at the
            // tail, which saves most of that layer's arithmetic. Not where DeepStack adds
            // features after it (they sit at image positions).
            let ds_here = deepstack.is_some_and(|d| d.features.len() > i);
            let t = if i + 1 == n && !ds_here { tail } else { None };
            x = layer.forward(i, &x, cos, sin, mask, c, deepstack, eps, mode, t)?;
        }
        if let Some(c) = cache {
            c.len += l;
        }
        if let Some(t) = tail {
            let t = t.clamp(1, l);
            if x.dim(1)? > t {
                x = x.narrow(1, l - t, t)?;
            }
        }
        ops::rms_norm(&x, &self.norm, eps, mode)
    }

    /// [`TextModel::forward`] for inference with the residual adds fused into the norms
    /// after them (the attention's into the post-attention norm, the MLP's into the next
    /// layer's input norm or the final norm) and SiLU · mul fused: three kernel launches a
    /// layer fewer. The same arithmetic as the plain path up to one rounding (`fused`).
    #[allow(clippy::too_many_arguments)]
    fn forward_fused(
        &self,
        embeds: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        deepstack: Option<&Deepstack>,
        tail: Option<usize>,
    ) -> Result<Tensor> {
        let l = embeds.dim(1)?;
        let eps = self.cfg.rms_norm_eps;
        let n = self.layers.len();
        let mut x = embeds.clone();
        let mut normed = ops::rms_norm(&x, &self.layers[0].input_layernorm, eps, Mode::Infer)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            let feat = deepstack.and_then(|d| d.features.get(i).map(|f| (d, f)));
            let t = if i + 1 == n && feat.is_none() {
                tail
            } else {
                None
            };
            let a = layer
                .attn
                .forward(&normed, cos, sin, mask, c, Mode::Infer, t)?;
            let (b, la, hid) = a.dims3()?;
            let l0 = x.dim(1)?;
            if la < l0 {
                x = x.narrow(1, l0 - la, la)?;
            }
            let (h, normed2) = fused::add_rms_norm(&x, &a, &layer.post_attention_layernorm, eps)?;
            let m = layer.mlp.forward_fused(&normed2)?;
            let next = self
                .layers
                .get(i + 1)
                .map_or(&self.norm, |nl| &nl.input_layernorm);
            (x, normed) = match feat {
                // DeepStack adds its features between the MLP's residual and the next norm.
                Some((ds, f)) => {
                    let y = (h + m)?
                        .reshape((b * la, hid))?
                        .index_add(&ds.rows, &f.to_dtype(a.dtype())?, 0)?
                        .reshape((b, la, hid))?;
                    let nn = ops::rms_norm(&y, next, eps, Mode::Infer)?;
                    (y, nn)
                }
                None => fused::add_rms_norm(&h, &m, next, eps)?,
            };
        }
        if let Some(c) = cache {
            c.len += l;
        }
        // `normed` is the final norm of every position left; rows are independent, so the
        // tail is cut after it.
        if let Some(t) = tail {
            let t = t.clamp(1, l);
            if normed.dim(1)? > t {
                normed = normed.narrow(1, normed.dim(1)? - t, t)?.contiguous()?;
            }
        }
        Ok(normed)
    }

    /// Logits `[B, L, vocab]` of final hidden states.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }
}

/// The additive mask of rows that pack several answers after one shared prompt
/// (`[B, 1, L, L]`, f32, 0 or `f32::MIN`): as [`attention_mask`] with no past, and in
/// addition a token of an answer segment does not see the tokens of another segment, so
/// every answer reads the prompt and its own earlier tokens only, exactly as it would alone.
/// `segments[b]` are row `b`'s answer segments as `(start, len)`.
pub fn packed_attention_mask(
    key_valid: &[Vec<bool>],
    segments: &[Vec<(usize, usize)>],
    len: usize,
    device: &Device,
) -> Result<Tensor> {
    if segments.len() != key_valid.len() {
        return Err(VlmError::Input(format!(
            "{} rows of answer segments for {} rows",
            segments.len(),
            key_valid.len()
        )));
    }
    let b = key_valid.len();
    let mut data = mask_data(key_valid, 0, len)?;
    for (bi, segs) in segments.iter().enumerate() {
        let mut seg_of = vec![usize::MAX; len];
        for (si, &(start, n)) in segs.iter().enumerate() {
            for s in seg_of.iter_mut().skip(start).take(n) {
                *s = si;
            }
        }
        for i in 0..len {
            if seg_of[i] == usize::MAX {
                continue;
            }
            let row = &mut data[(bi * len + i) * len..(bi * len + i + 1) * len];
            for (j, v) in row.iter_mut().enumerate().take(i) {
                if seg_of[j] != usize::MAX && seg_of[j] != seg_of[i] {
                    *v = f32::MIN;
                }
            }
        }
    }
    Ok(Tensor::from_vec(data, (b, 1, len, len), device)?)
}

/// Additive attention mask `[B, 1, L, past + L]` (f32, 0 or `f32::MIN`): query `i` (absolute
/// position `past + i`) sees key `j` iff `j ≤ past + i` and `key_valid[b][j]`. `f32::MIN`
/// rather than −∞ keeps fully masked rows (left padding) finite, as HF's eager path does.
pub fn attention_mask(
    key_valid: &[Vec<bool>],
    past: usize,
    len: usize,
    device: &Device,
) -> Result<Tensor> {
    let data = mask_data(key_valid, past, len)?;
    Ok(Tensor::from_vec(
        data,
        (key_valid.len(), 1, len, past + len),
        device,
    )?)
}

/// The values of [`attention_mask`], row-major.
fn mask_data(key_valid: &[Vec<bool>], past: usize, len: usize) -> Result<Vec<f32>> {
    let b = key_valid.len();
    let t = past + len;
    let mut data = vec![0f32; b * len * t];
    for (bi, valid) in key_valid.iter().enumerate() {
        if valid.len() != t {
            return Err(VlmError::Input(format!(
                "attention mask row {bi} has {} keys, expected {t}",
                valid.len()
            )));
        }
        for i in 0..len {
            let row = &mut data[(bi * len + i) * t..(bi * len + i + 1) * t];
            for (j, v) in row.iter_mut().enumerate() {
                if j > past + i || !valid[j] {
                    *v = f32::MIN;
                }
            }
        }
    }
    Ok(data)
}
