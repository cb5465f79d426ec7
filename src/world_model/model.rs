//! The spatio-temporal diffusion transformer.
//!
//! Tokens: every frame is cut into `patch_size`² patches, each embedded by one linear map;
//! the sequence is the context frame (the current object-only frame, clean) followed by the
//! `frames` noisy future frames, with learned spatial and temporal position embeddings.
//! Each block is spatial attention (within a frame), temporal attention (across frames at
//! one patch position) and an MLP, each behind adaLN-Zero: a zero-initialised linear map of
//! the flow-time embedding gives the shift, scale and gate of every sub-layer, so a fresh
//! block is the identity.
//!
//! The arm video (the commanded motion rendered on white, one frame per token frame) enters
//! through a ControlNet-style branch: its patches are embedded, pass a zero-initialised
//! projection and are added to the backbone's input tokens; a trainable copy of the first
//! `control_blocks` blocks processes them, and each copy's output is added to its backbone
//! block's output through another zero-initialised projection. A pretrained backbone can be
//! frozen and the branch alone trained ([`WorldModel::control_prefix`] names its weights).
//!
//! Only differentiable candle ops are used (no fused softmax or norms: DESIGN.md lists the
//! kernels without a backward); `tests/world_model.rs` compares autograd with finite
//! differences for each part.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, Linear, VarBuilder};

use super::{Config, Loss, Prediction};

fn linear(vb: VarBuilder, inp: usize, out: usize) -> Result<Linear> {
    candle_nn::linear(inp, out, vb)
}

/// A linear map whose weight and bias start at zero (adaLN-Zero, ControlNet projections).
fn zero_linear(vb: VarBuilder, inp: usize, out: usize) -> Result<Linear> {
    let w = vb.get_with_hints((out, inp), "weight", Init::Const(0.0))?;
    let b = vb.get_with_hints(out, "bias", Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

/// Layer norm over the last dimension without affine parameters (adaLN supplies them),
/// written out so that it has a backward. Its statistics are taken in f32 whatever the
/// model's dtype (a bf16 sum over a token's 384 values came out some 7% low, a review
/// finding, session 53), as candle_nn's own layer norm does.
fn norm(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(at_least_f32(dtype))?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + 1e-6)?.sqrt()?)?.to_dtype(dtype)
}

/// The dtype reductions run in: f32 for the half-precision types, else the tensor's own
/// (f64 stays f64: the gradient checks run in it).
fn at_least_f32(dtype: DType) -> DType {
    match dtype {
        DType::BF16 | DType::F16 => DType::F32,
        other => other,
    }
}

/// `x·(1 + scale) + shift` with per-sample `[B, 1, D]` modulation of `[B, N, D]` tokens.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)
}

/// Multi-head self-attention over `[N, L, D]` sequences.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    /// Weights under `vb`: `qkv`, `out`.
    pub fn new(vb: VarBuilder, hidden: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            qkv: linear(vb.pp("qkv"), hidden, 3 * hidden)?,
            out: linear(vb.pp("out"), hidden, hidden)?,
            heads,
        })
    }

    /// Attention of every position to every other (no mask).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, l, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((n, l, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let att = (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (hd as f64).sqrt()))?;
        // Normalised in f32 (the identity in training): a bf16 sum over a row drifts, as
        // the norm's did.
        let dtype = att.dtype();
        let att = candle_nn::ops::softmax(&att.to_dtype(at_least_f32(dtype))?, D::Minus1)?
            .to_dtype(dtype)?;
        let y = att
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, l, d))?;
        self.out.forward(&y)
    }
}

/// One block: spatial attention, temporal attention, MLP, each behind adaLN-Zero.
#[derive(Debug, Clone)]
pub struct Block {
    ada: Linear,
    spatial: Attention,
    temporal: Attention,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    /// Weights under `vb`: `ada` (zero), `spatial`, `temporal`, `fc1`, `fc2`.
    pub fn new(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let h = cfg.hidden;
        Ok(Self {
            ada: zero_linear(vb.pp("ada"), h, 9 * h)?,
            spatial: Attention::new(vb.pp("spatial"), h, cfg.heads)?,
            temporal: Attention::new(vb.pp("temporal"), h, cfg.heads)?,
            fc1: linear(vb.pp("fc1"), h, cfg.mlp_ratio * h)?,
            fc2: linear(vb.pp("fc2"), cfg.mlp_ratio * h, h)?,
        })
    }

    /// `x`: `[B, T, P, D]` tokens; `c`: `[B, D]` conditioning (the flow-time embedding).
    pub fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let (b, t, p, d) = x.dims4()?;
        let m = self
            .ada
            .forward(&c.silu()?)?
            .unsqueeze(1)?
            .chunk(9, D::Minus1)?;
        let x = x.reshape((b, t * p, d))?;
        // Spatial: the patches of one frame attend to each other.
        let h = modulate(&norm(&x)?, &m[0], &m[1])?.reshape((b * t, p, d))?;
        let h = self.spatial.forward(&h)?.reshape((b, t * p, d))?;
        let x = (&x + h.broadcast_mul(&m[2])?)?;
        // Temporal: one patch position across the frames.
        let h = modulate(&norm(&x)?, &m[3], &m[4])?
            .reshape((b, t, p, d))?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((b * p, t, d))?;
        let h = self
            .temporal
            .forward(&h)?
            .reshape((b, p, t, d))?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((b, t * p, d))?;
        let x = (&x + h.broadcast_mul(&m[5])?)?;
        let h = modulate(&norm(&x)?, &m[6], &m[7])?;
        let h = self.fc2.forward(&self.fc1.forward(&h)?.gelu()?)?;
        let x = (&x + h.broadcast_mul(&m[8])?)?;
        x.reshape((b, t, p, d))
    }
}

/// `[B, T, 3, H, W]` frames → `[B, T, P, 3·p·p]` patch vectors (row-major patches).
pub fn patchify(frames: &Tensor, p: usize) -> Result<Tensor> {
    let (b, t, c, h, w) = frames.dims5()?;
    let (hp, wp) = (h / p, w / p);
    frames
        .reshape(vec![b, t, c, hp, p, wp, p])?
        .permute([0, 1, 3, 5, 2, 4, 6])?
        .contiguous()?
        .reshape((b, t, hp * wp, c * p * p))
}

/// The inverse of [`patchify`] for `height`×`width` frames.
pub fn unpatchify(patches: &Tensor, p: usize, height: usize, width: usize) -> Result<Tensor> {
    let (b, t, _, dim) = patches.dims4()?;
    let c = dim / (p * p);
    let (hp, wp) = (height / p, width / p);
    patches
        .reshape(vec![b, t, hp, wp, c, p, p])?
        .permute([0, 1, 4, 2, 5, 3, 6])?
        .contiguous()?
        .reshape((b, t, c, height, width))
}

/// Sinusoidal embedding of the flow time `t` ∈ [0, 1] (`[B]` → `[B, dim]`), on the 0–1000
/// scale diffusion models use, in `t`'s dtype. Computed in f32: the arguments reach 1000
/// rad, which bf16 holds to 4 rad, so a GPU's bf16 prediction embedded a time the model
/// never trained on (cosine similarity 0.89 with the f32 embedding at t = 1; a review
/// finding, session 53).
pub fn time_features(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10_000f32.ln()) * i as f32 / half as f32).exp())
        .collect();
    let work = at_least_f32(t.dtype());
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?.to_dtype(work)?;
    let args = (t.to_dtype(work)? * 1000.0)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    let emb = Tensor::cat(&[args.cos()?, args.sin()?], 1)?;
    let emb = if dim % 2 == 1 {
        emb.pad_with_zeros(1, 0, 1)?
    } else {
        emb
    };
    emb.to_dtype(t.dtype())
}

/// The world model.
#[derive(Debug, Clone)]
pub struct WorldModel {
    cfg: Config,
    patch_embed: Linear,
    arm_embed: Linear,
    arm_in: Option<Linear>,
    prior_in: Option<Linear>,
    hint: Linear,
    pos_spatial: Tensor,
    pos_temporal: Tensor,
    time1: Linear,
    time2: Linear,
    blocks: Vec<Block>,
    control: Vec<Block>,
    control_out: Vec<Linear>,
    final_ada: Linear,
    final_out: Linear,
    refine: Option<super::refine::Refiner>,
}

impl WorldModel {
    /// Weight-name prefix of the ControlNet branch (`control.*`, `control_out.*`,
    /// `arm_embed.*`, `hint.*` are the branch; everything else is the backbone).
    pub fn control_prefix() -> [&'static str; 4] {
        ["control.", "control_out.", "arm_embed.", "hint."]
    }

    /// Builds the model from `vb` (fresh weights from a `VarMap`, or loaded ones).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let h = cfg.hidden;
        let pd = cfg.patch_dim();
        let randn = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let blocks = (0..cfg.depth)
            .map(|i| Block::new(vb.pp(format!("blocks.{i}")), cfg))
            .collect::<Result<_>>()?;
        let control = (0..cfg.control_blocks)
            .map(|i| Block::new(vb.pp(format!("control.{i}")), cfg))
            .collect::<Result<_>>()?;
        let control_out = (0..cfg.control_blocks)
            .map(|i| zero_linear(vb.pp(format!("control_out.{i}")), h, h))
            .collect::<Result<_>>()?;
        Ok(Self {
            patch_embed: linear(vb.pp("patch_embed"), pd, h)?,
            arm_embed: linear(vb.pp("arm_embed"), pd, h)?,
            arm_in: if cfg.arm_direct {
                Some(linear(vb.pp("arm_in"), pd, h)?)
            } else {
                None
            },
            prior_in: if cfg.prior {
                Some(linear(vb.pp("prior_in"), pd, h)?)
            } else {
                None
            },
            hint: zero_linear(vb.pp("hint"), h, h)?,
            pos_spatial: vb.get_with_hints((cfg.patches(), h), "pos_spatial", randn)?,
            pos_temporal: vb.get_with_hints((cfg.frames + 1, h), "pos_temporal", randn)?,
            time1: linear(vb.pp("time.0"), h, h)?,
            time2: linear(vb.pp("time.2"), h, h)?,
            blocks,
            control,
            control_out,
            final_ada: zero_linear(vb.pp("final_ada"), h, 2 * h)?,
            final_out: zero_linear(vb.pp("final_out"), h, pd)?,
            refine: if cfg.refine_width > 0 {
                Some(super::refine::Refiner::new(
                    vb.pp("refine"),
                    cfg.refine_width,
                )?)
            } else {
                None
            },
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &candle_core::Device {
        self.patch_embed.weight().device()
    }

    /// The dtype the model computes in.
    pub fn dtype(&self) -> candle_core::DType {
        self.patch_embed.weight().dtype()
    }

    /// `t` on the model's device and in its dtype (inputs are made on the CPU; the model
    /// may live on a GPU). Free when it is there already.
    fn place(&self, t: &Tensor) -> Result<Tensor> {
        t.to_device(self.device())?.to_dtype(self.dtype())
    }

    /// [`Self::place`] for an optional tensor.
    fn place_opt(&self, t: Option<&Tensor>) -> Result<Option<Tensor>> {
        t.map(|t| self.place(t)).transpose()
    }

    /// `frames`' patches through `embed`, with the spatial and temporal position embeddings.
    fn tokens(&self, frames: &Tensor, embed: &Linear) -> Result<Tensor> {
        let x = self.tokens_unplaced(frames, embed)?;
        let t = x.dim(1)?;
        let pos = self
            .pos_temporal
            .narrow(0, 0, t)?
            .unsqueeze(1)?
            .broadcast_add(&self.pos_spatial.unsqueeze(0)?)?;
        x.broadcast_add(&pos.unsqueeze(0)?)
    }

    /// `frames`' patches through `embed`, without position embeddings (for what is added
    /// to tokens that already carry them).
    fn tokens_unplaced(&self, frames: &Tensor, embed: &Linear) -> Result<Tensor> {
        let patches = patchify(frames, self.cfg.patch_size)?;
        let (b, t, p, pd) = patches.dims4()?;
        embed
            .forward(&patches.reshape((b, t * p, pd))?)?
            .reshape((b, t, p, self.cfg.hidden))
    }

    /// The network's output for the future frames: the velocity `ε − x`, or the clean
    /// target `x` itself, as [`Config::prediction`] says.
    ///
    /// - `noisy`: `[B, F, 3, H, W]`, the future frames at flow time `t` (values in −1…1 when
    ///   clean);
    /// - `t`: `[B]` flow times in 0…1 (1 = pure noise);
    /// - `context`: `[B, 3, H, W]`, the current object-only frame;
    /// - `arm`: `[B, F + 1, 3, H, W]`, the arm video (frame 0 at the start of the motion,
    ///   then one per future frame);
    /// - `prior`: `[B, F, 3, H, W]`, the carry prior's frames (required when
    ///   [`Config::prior`] is set, ignored otherwise).
    pub fn forward(
        &self,
        noisy: &Tensor,
        t: &Tensor,
        context: &Tensor,
        arm: &Tensor,
        prior: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (noisy, t, context, arm) = (
            &self.place(noisy)?,
            &self.place(t)?,
            &self.place(context)?,
            &self.place(arm)?,
        );
        let prior = self.place_opt(prior)?;
        let prior = prior.as_ref();
        let cfg = &self.cfg;
        let (b, f, _, h, w) = noisy.dims5()?;
        if (f, h, w) != (cfg.frames, cfg.height, cfg.width) {
            candle_core::bail!(
                "frames of {f}×{w}×{h} given to a model of {}×{}×{}",
                cfg.frames,
                cfg.width,
                cfg.height
            );
        }
        let frames = Tensor::cat(&[&context.unsqueeze(1)?, noisy], 1)?;
        let x = self.tokens(&frames, &self.patch_embed)?;
        let c = self
            .time2
            .forward(&self.time1.forward(&time_features(t, cfg.hidden)?)?.silu()?)?;
        // The ControlNet branch: backbone input plus the projected arm video.
        let arm_tokens = self.tokens(arm, &self.arm_embed)?;
        let (_, t_all, p, d) = arm_tokens.dims4()?;
        let hint = self
            .hint
            .forward(&arm_tokens.reshape((b, t_all * p, d))?)?
            .reshape((b, t_all, p, d))?;
        let mut branch = (&x + hint)?;
        let mut x = match &self.arm_in {
            Some(arm_in) => (x + self.tokens_unplaced(arm, arm_in)?)?,
            None => x,
        };
        if let Some(prior_in) = &self.prior_in {
            // The prior's frames on the tokens of the same frame and place; the context
            // frame's own slot gets the context again (the prior at time zero).
            let video = Tensor::cat(&[&context.unsqueeze(1)?, self.need_prior(prior)?], 1)?;
            x = (x + self.tokens_unplaced(&video, prior_in)?)?;
        }
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, &c)?;
            if let (Some(copy), Some(out)) = (self.control.get(i), self.control_out.get(i)) {
                branch = copy.forward(&branch, &c)?;
                let residual = out
                    .forward(&branch.reshape((b, t_all * p, d))?)?
                    .reshape((b, t_all, p, d))?;
                x = (x + residual)?;
            }
        }
        let m = self
            .final_ada
            .forward(&c.silu()?)?
            .unsqueeze(1)?
            .chunk(2, D::Minus1)?;
        let future = x.narrow(1, 1, f)?.reshape((b, f * p, d))?;
        let out = self
            .final_out
            .forward(&modulate(&norm(&future)?, &m[0], &m[1])?)?
            .reshape((b, f, p, cfg.patch_dim()))?;
        unpatchify(&out, cfg.patch_size, h, w)
    }

    /// The prior's frames, or an error naming the setting that needs them.
    fn need_prior<'a>(&self, prior: Option<&'a Tensor>) -> Result<&'a Tensor> {
        prior.ok_or_else(|| {
            candle_core::Error::msg("this world model starts from a hand-made prior (config `prior: true`) and was given no prior frames")
        })
    }

    /// The rectified-flow training loss on clean future frames `x` (`[B, F, 3, H, W]`; the
    /// flow runs on [`Self::target`] of them): `z = (1 − t)·x + t·ε`, target `ε − x` (or `x`
    /// with [`Prediction::Sample`]), mean squared error. `t` and `noise` are given
    /// (the trainer draws them from its seeded generator: logit-normal times).
    pub fn flow_loss(
        &self,
        x: &Tensor,
        t: &Tensor,
        noise: &Tensor,
        context: &Tensor,
        arm: &Tensor,
        prior: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (x, t, noise, context, arm) = (
            &self.place(x)?,
            &self.place(t)?,
            &self.place(noise)?,
            &self.place(context)?,
            &self.place(arm)?,
        );
        let prior = self.place_opt(prior)?;
        let prior = prior.as_ref();
        if self.cfg.loss == Loss::Mask {
            return self.mask_loss(x, noise, context, arm, self.need_prior(prior)?);
        }
        let clean = x;
        let x = &self.target(x, context, prior)?;
        let tb = t.reshape((t.dim(0)?, 1, 1, 1, 1))?;
        let z = (x.broadcast_mul(&(1.0 - &tb)?)? + noise.broadcast_mul(&tb)?)?;
        let gate = self.gate_of(context, prior)?;
        let out = gated(self.forward(&z, t, context, arm, prior)?, gate.as_ref())?;
        let diff = match self.cfg.prediction {
            Prediction::Velocity => (out - (noise - x)?)?,
            Prediction::Sample => (out - x)?,
        };
        let err = match self.cfg.loss {
            Loss::Squared => diff.sqr()?,
            // A mask model returned its own loss above.
            Loss::Absolute | Loss::Mask => diff.abs()?,
        };
        if self.cfg.motion_weight == 0.0 {
            return err.mean_all();
        }
        // 1 + w·(mean over channels of |future − current|), one weight per pixel; with the
        // prior, the pixels it moves count too (where it puts or removes material wrongly).
        let mut motion = clean
            .broadcast_sub(&context.unsqueeze(1)?)?
            .abs()?
            .mean_keepdim(2)?;
        if self.cfg.prior {
            let moved = self
                .need_prior(prior)?
                .broadcast_sub(&context.unsqueeze(1)?)?
                .abs()?
                .mean_keepdim(2)?;
            motion = motion.maximum(&moved)?;
        }
        let weight = ((motion * self.cfg.motion_weight)? + 1.0)?;
        err.broadcast_mul(&weight)?.mean_all()
    }

    /// Euler integration of the flow from `noise` (t = 1) to frames (t = 0) in
    /// `steps` equal steps: `z ← z − Δt·v(z, t)`.
    pub fn sample(
        &self,
        noise: &Tensor,
        context: &Tensor,
        arm: &Tensor,
        prior: Option<&Tensor>,
        steps: usize,
    ) -> Result<Tensor> {
        let (noise, context, arm) = (
            &self.place(noise)?,
            &self.place(context)?,
            &self.place(arm)?,
        );
        let prior = self.place_opt(prior)?;
        let prior = prior.as_ref();
        let b = noise.dim(0)?;
        // The gate depends only on the inputs: made once, not at every step.
        let gate = self.gate_of(context, prior)?;
        if self.cfg.loss == Loss::Mask {
            if steps != 1 {
                candle_core::bail!(
                    "this world model predicts the object's mask in one pass (loss: mask); \
                     it takes 1 sampler step, not {steps}"
                );
            }
            let prior = self.need_prior(prior)?;
            let logits = self.mask_logits(noise, context, arm, prior)?;
            return self.paint(context, prior, &logits, gate.as_ref());
        }
        let mut z = noise.clone();
        let dt = 1.0 / steps.max(1) as f64;
        for k in 0..steps.max(1) {
            let t = 1.0 - k as f64 * dt;
            let tt = Tensor::full(t, b, noise.device())?.to_dtype(noise.dtype())?;
            let out = gated(self.forward(&z, &tt, context, arm, prior)?, gate.as_ref())?;
            let v = match self.cfg.prediction {
                Prediction::Velocity => out,
                // z = (1 − t)·x + t·ε, so ε − x = (z − x) / t; t ≥ Δt here, and the last
                // step lands exactly on the prediction.
                Prediction::Sample => ((&z - out)? / t)?,
            };
            // Sampling is never differentiated: without the detach, a model whose weights
            // are variables (in training, in `wm-bench`) keeps every step's activations
            // alive through z's graph, and 16 steps of 8 candidates ran an H200 out of memory.
            z = (z - (v * dt)?)?.detach();
        }
        let frames = if self.cfg.residual {
            z.broadcast_add(&self.base(context, prior)?)?
        } else {
            z
        };
        frames.clamp(-1f32, 1f32)
    }

    /// The gate of [`Config::prior_gate_px`] for these inputs, or `None` without one.
    fn gate_of(&self, context: &Tensor, prior: Option<&Tensor>) -> Result<Option<Tensor>> {
        if self.cfg.prior_gate_px <= 0.0 {
            return Ok(None);
        }
        self.gate(context, self.need_prior(prior)?).map(Some)
    }

    /// The gate of [`Config::prior_gate_px`], `[B, F, 1, H, W]` of 0 and 1: the object's
    /// pixels of the current frame and of each prior frame (those that differ from the
    /// frame's background, as the priors segment), dilated by the gate's reach. Computed on
    /// the host from the inputs (no gradient flows through it).
    pub fn gate(&self, context: &Tensor, prior: &Tensor) -> Result<Tensor> {
        let (b, f, _, h, w) = prior.dims5()?;
        let ctx = host_rgb(context)?;
        let (here, there) = (
            object_pixels(&ctx, &ctx, b, 1, w, h),
            object_pixels(&ctx, &host_rgb(prior)?, b, f, w, h),
        );
        let n = h * w;
        let reach = self.cfg.prior_gate_px.ceil() as usize;
        let mut out = Vec::with_capacity(b * f * n);
        for i in 0..b {
            for k in 0..f {
                let at = (i * f + k) * n;
                let mask: Vec<bool> = (0..n).map(|j| here[i * n + j] || there[at + j]).collect();
                out.extend(dilate(&mask, w, h, reach));
            }
        }
        bits(&out, (b, f, 1, h, w), prior)
    }

    /// The per-pixel object logits of a mask model ([`Loss::Mask`]), `[B, F, 1, H, W]`: the
    /// network's output at flow time 1, averaged over the channels and scaled by
    /// [`MASK_OUT_SCALE`], added to ±[`MASK_PRIOR_LOGIT`] on and off the prior's object.
    /// At flow time 1 the future frames' slot holds pure noise, which says nothing about the
    /// outcome; a mask model is given its mean, zero, instead (`noise` only sets the shape),
    /// so that no training is spent learning to ignore it and the prediction is one value.
    fn mask_logits(
        &self,
        noise: &Tensor,
        context: &Tensor,
        arm: &Tensor,
        prior: &Tensor,
    ) -> Result<Tensor> {
        let (b, f, _, h, w) = prior.dims5()?;
        let ones = Tensor::ones(b, prior.dtype(), prior.device())?;
        let out = self.forward(&noise.zeros_like()?, &ones, context, arm, Some(prior))?;
        let ctx = host_rgb(context)?;
        let on = bits(
            &object_pixels(&ctx, &host_rgb(prior)?, b, f, w, h),
            (b, f, 1, h, w),
            prior,
        )?;
        let base = ((&on * (2.0 * MASK_PRIOR_LOGIT))? - MASK_PRIOR_LOGIT)?;
        let logit = ((out.mean_keepdim(2)? * MASK_OUT_SCALE)? + base)?;
        let Some(refine) = &self.refine else {
            return Ok(logit);
        };
        // The final frame only (the one the verifiers score).
        let last = |t: &Tensor| t.narrow(1, f - 1, 1)?.squeeze(1);
        let here = bits(
            &object_pixels(&ctx, &ctx, b, 1, w, h),
            (b, 1, 1, h, w),
            prior,
        )?;
        let features = Tensor::cat(
            &[
                &last(&logit)?,
                &last(&on)?,
                &here.squeeze(1)?,
                &last(prior)?,
                context,
            ],
            1,
        )?;
        let refined = (last(&logit)? + refine.forward(&features)?)?.unsqueeze(1)?;
        Tensor::cat(&[&logit.narrow(1, 0, f - 1)?, &refined], 1)
    }

    /// The loss of a mask model: binary cross-entropy of [`Self::mask_logits`] against the
    /// object pixels of the true future frames `x`, averaged over the gate's pixels (over all
    /// pixels without a gate).
    fn mask_loss(
        &self,
        x: &Tensor,
        noise: &Tensor,
        context: &Tensor,
        arm: &Tensor,
        prior: &Tensor,
    ) -> Result<Tensor> {
        let (b, f, _, h, w) = x.dims5()?;
        let truth = object_pixels(&host_rgb(context)?, &host_rgb(x)?, b, f, w, h);
        let y = bits(&truth, (b, f, 1, h, w), prior)?;
        let l = self.mask_logits(noise, context, arm, prior)?;
        // max(l, 0) − l·y + ln(1 + e^(−|l|)): the cross-entropy of sigmoid(l), stable for
        // any l, from ops that all have a backward pass.
        let bce = ((l.relu()? - (&l * &y)?)? + (l.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
        let gate = match self.gate_of(context, Some(prior))? {
            Some(g) => g,
            None => bce.ones_like()?,
        };
        (bce * &gate)?
            .sum_all()?
            .broadcast_div(&(gate.sum_all()? + 1.0)?)
    }

    /// The frames a mask model predicts: outside the gate the prior's frame exactly; inside
    /// it, a pixel whose logit is positive is object (the prior's colour there when the prior
    /// has the object there, else the current frame's, else the current object's mean
    /// colour) and any other is table (the current frame's background).
    fn paint(
        &self,
        context: &Tensor,
        prior: &Tensor,
        logits: &Tensor,
        gate: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, f, _, h, w) = prior.dims5()?;
        let n = h * w;
        let (ctx, pri) = (host_rgb(context)?, host_rgb(prior)?);
        let flat = |t: &Tensor| -> Result<Vec<f32>> {
            t.to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()
        };
        let logit = flat(logits)?;
        let gate = match gate {
            Some(g) => flat(g)?,
            None => vec![1.0; b * f * n],
        };
        let mut out = pri.clone();
        for i in 0..b {
            let c = &ctx[i * n * 3..(i + 1) * n * 3];
            let bg = super::prior::background(c, w, h);
            let mut sum = [0f64; 3];
            let mut count = 0usize;
            for px in c.chunks_exact(3) {
                if super::prior::is_object(px, bg) {
                    for (s, v) in sum.iter_mut().zip(px) {
                        *s += f64::from(*v);
                    }
                    count += 1;
                }
            }
            let mean = if count == 0 {
                bg
            } else {
                sum.map(|s| (s / count as f64).round() as u8)
            };
            for k in 0..f {
                let at = (i * f + k) * n;
                let p = &pri[at * 3..(at + n) * 3];
                for j in 0..n {
                    if gate[at + j] < 0.5 {
                        continue;
                    }
                    let colour: [u8; 3] = if logit[at + j] <= 0.0 {
                        bg
                    } else if super::prior::is_object(&p[j * 3..j * 3 + 3], bg) {
                        [p[j * 3], p[j * 3 + 1], p[j * 3 + 2]]
                    } else if super::prior::is_object(&c[j * 3..j * 3 + 3], bg) {
                        [c[j * 3], c[j * 3 + 1], c[j * 3 + 2]]
                    } else {
                        mean
                    };
                    out[(at + j) * 3..(at + j) * 3 + 3].copy_from_slice(&colour);
                }
            }
        }
        // Back to [B, F, 3, H, W] in −1…1.
        let hwc = Tensor::from_vec(out, (b, f, h, w, 3), prior.device())?
            .to_dtype(prior.dtype())?
            .permute((0, 1, 4, 2, 3))?
            .contiguous()?;
        (hwc / 127.5)? - 1.0
    }

    /// What a residual model adds its output to: the carry prior's frames `[B, F, 3, H, W]`
    /// when the configuration uses it, else the current frame `[B, 1, 3, H, W]`.
    fn base(&self, context: &Tensor, prior: Option<&Tensor>) -> Result<Tensor> {
        if self.cfg.prior {
            Ok(self.need_prior(prior)?.clone())
        } else {
            context.unsqueeze(1)
        }
    }

    /// What the flow generates from the future frames `x`: the frames, or their change from
    /// the current frame (from the carry prior's frames with [`Config::prior`]) when the
    /// configuration says `residual`.
    pub fn target(&self, x: &Tensor, context: &Tensor, prior: Option<&Tensor>) -> Result<Tensor> {
        if self.cfg.residual {
            x.broadcast_sub(&self.base(context, prior)?)
        } else {
            Ok(x.clone())
        }
    }
}

/// The network's output where the gate lets it act, zero elsewhere (so the prediction there
/// is the prior's frame); the output as it is without a gate.
fn gated(out: Tensor, gate: Option<&Tensor>) -> Result<Tensor> {
    match gate {
        Some(g) => out.broadcast_mul(g),
        None => Ok(out),
    }
}

/// The logit a fresh mask model gives the prior's object pixels (minus it elsewhere):
/// sigmoid(3) = 0.95, sure enough to reproduce the prior, not so sure that the network
/// cannot overrule it.
const MASK_PRIOR_LOGIT: f64 = 3.0;

/// The network's channel mean is scaled by this before it joins the prior's logit, so that
/// overruling the prior takes outputs of about 1 (the scale of a colour residual).
const MASK_OUT_SCALE: f64 = 4.0;

/// A tensor's values as rgb8, channels last (`[…, 3, H, W]` in −1…1 → `[…, H, W, 3]`).
fn host_rgb(t: &Tensor) -> Result<Vec<u8>> {
    let r = t.rank();
    let mut order: Vec<usize> = (0..r - 3).collect();
    order.extend([r - 2, r - 1, r - 3]);
    ((t.to_dtype(candle_core::DType::F32)?.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?
        .round()?
        .permute(order)?
        .contiguous()?
        .to_dtype(candle_core::DType::U8)?
        .flatten_all()?
        .to_vec1::<u8>()
}

/// The object pixels of `f` rgb8 frames per sample (`frames`, `b·f` frames of `w × h`), each
/// sample's background taken from its current frame (`context`, `b` frames), as the priors
/// segment.
fn object_pixels(
    context: &[u8],
    frames: &[u8],
    b: usize,
    f: usize,
    w: usize,
    h: usize,
) -> Vec<bool> {
    let n = w * h;
    let mut out = Vec::with_capacity(b * f * n);
    for i in 0..b {
        let bg = super::prior::background(&context[i * n * 3..(i + 1) * n * 3], w, h);
        let frames = &frames[i * f * n * 3..(i + 1) * f * n * 3];
        out.extend(
            frames
                .chunks_exact(3)
                .map(|px| super::prior::is_object(px, bg)),
        );
    }
    out
}

/// 0/1 values of `on` as a tensor of `shape`, on `like`'s device and in its dtype.
fn bits(on: &[bool], shape: (usize, usize, usize, usize, usize), like: &Tensor) -> Result<Tensor> {
    let v: Vec<f32> = on.iter().map(|&o| if o { 1.0 } else { 0.0 }).collect();
    Tensor::from_vec(v, shape, like.device())?.to_dtype(like.dtype())
}

/// A square (Chebyshev) dilation of a `w × h` mask by `r` pixels, rows then columns.
fn dilate(mask: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    if r == 0 {
        return mask.to_vec();
    }
    let mut rows = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let (lo, hi) = (x.saturating_sub(r), (x + r).min(w - 1));
            rows[y * w + x] = (lo..=hi).any(|u| mask[y * w + u]);
        }
    }
    let mut out = vec![false; w * h];
    for y in 0..h {
        let (lo, hi) = (y.saturating_sub(r), (y + r).min(h - 1));
        for x in 0..w {
            out[y * w + x] = (lo..=hi).any(|v| rows[v * w + x]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{dilate, norm, time_features};
    use candle_core::{DType, Device, Tensor};

    /// A bf16 model (a GPU's default) embeds the flow time and normalises its tokens as the
    /// f32 one it was trained as does, to bf16's rounding of the result: before session 53
    /// the embedding's arguments (up to 1000 rad) were rounded to bf16's 4 rad, some values
    /// off by 1.97 at t = 1, and the norm's statistics were summed in bf16.
    #[test]
    fn bf16_time_features_and_norms_match_f32() {
        let dev = Device::Cpu;
        let t = Tensor::new(&[1.0f32, 0.875, 0.5, 0.0625], &dev).unwrap();
        let max_diff = |a: &Tensor, b: &Tensor| -> f32 {
            let (a, b) = (
                a.to_dtype(DType::F32).unwrap(),
                b.to_dtype(DType::F32).unwrap(),
            );
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        for dim in [64, 384, 65] {
            let f32_emb = time_features(&t, dim).unwrap();
            let bf16_emb = time_features(&t.to_dtype(DType::BF16).unwrap(), dim).unwrap();
            assert_eq!(bf16_emb.dtype(), DType::BF16);
            assert_eq!(f32_emb.dims(), [4, dim]);
            let d = max_diff(&f32_emb, &bf16_emb);
            assert!(d < 0.01, "dim {dim}: {d}");
        }
        // Tokens of 384 values with a large mean: the statistics of a bf16 sum drift.
        // The same bf16 values either way: only the statistics' precision differs.
        let x = (Tensor::randn(0f32, 1.0, (2, 3, 384), &dev).unwrap() + 30.0)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let f32_norm = norm(&x.to_dtype(DType::F32).unwrap()).unwrap();
        let bf16_norm = norm(&x).unwrap();
        assert_eq!(bf16_norm.dtype(), DType::BF16);
        let d = max_diff(&f32_norm, &bf16_norm);
        assert!(d < 0.03, "{d}");
    }

    #[test]
    fn dilation_grows_a_pixel_into_a_square_clipped_at_the_edges() {
        let (w, h) = (7, 5);
        let mut m = vec![false; w * h];
        m[w + 1] = true; // (1, 1)
        let d = dilate(&m, w, h, 2);
        let on: Vec<(usize, usize)> = (0..w * h)
            .filter(|&j| d[j])
            .map(|j| (j % w, j / w))
            .collect();
        // x 0..=3, y 0..=3: 4 × 4 = 16 pixels.
        assert_eq!(on.len(), 16);
        assert!(on.iter().all(|&(x, y)| x <= 3 && y <= 3));
        assert_eq!(dilate(&m, w, h, 0), m);
    }
}
