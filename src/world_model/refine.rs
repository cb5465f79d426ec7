//! A mask model's refiner (`refine_width > 0`): a two-level U-Net at the model's full
//! resolution that corrects the transformer's per-pixel object logits. The transformer
//! works on 8×8 patches through a narrow token, while the corrections the bags ask of the
//! particle prior are a pixel or two at the object's edge (session 36's screen,
//! `scripts/wm_mask_probe.py`, found a small convolutional network learns them).
//!
//! It refines the final frame only: that is the frame the verifiers score, and the
//! earlier ones keep the transformer's logits. The output layer starts at zero, so a fresh
//! refiner changes nothing.
//!
//! Built from `candle_nn::Conv2d` (its `conv2d` has a backward pass); downsampling is
//! `avg_pool2d` with kernel = stride and upsampling is broadcast + reshape, because
//! candle's `upsample_nearest2d` backward overwrites gradients (DESIGN.md). It costs about
//! as much as the transformer per step on the CPU (docs/world_model.md, session 38).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Init, VarBuilder};

/// Input channels: the transformer's logit, the prior's mask, the current frame's mask,
/// the prior's colours and the current frame's colours.
pub const IN_CHANNELS: usize = 9;

/// The refiner's layers.
#[derive(Debug, Clone)]
pub struct Refiner {
    down: Vec<Conv2d>,
    up: Vec<Conv2d>,
    out: Conv2d,
}

/// A 3×3 convolution, padding 1 (candle's default initialisation).
fn conv3(vb: VarBuilder, inp: usize, out: usize) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    candle_nn::conv2d(inp, out, 3, cfg, vb)
}

/// `[N, C, h, w]` → `[N, C, 2h, 2w]`, each value repeated over a 2×2 block.
fn up2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h, 1, w, 1))?
        .broadcast_as((n, c, h, 2, w, 2))?
        .reshape((n, c, 2 * h, 2 * w))
}

impl Refiner {
    /// `width` channels at full resolution, twice that at the two coarser levels.
    pub fn new(vb: VarBuilder, width: usize) -> Result<Self> {
        let (w, w2) = (width, 2 * width);
        let down = vec![
            conv3(vb.pp("down.0"), IN_CHANNELS, w)?,
            conv3(vb.pp("down.1"), w, w)?,
            conv3(vb.pp("down.2"), w, w2)?,
            conv3(vb.pp("down.3"), w2, w2)?,
            conv3(vb.pp("down.4"), w2, w2)?,
            conv3(vb.pp("down.5"), w2, w2)?,
        ];
        let up = vec![
            conv3(vb.pp("up.0"), 2 * w2, w2)?,
            conv3(vb.pp("up.1"), w2 + w, w)?,
        ];
        Ok(Self {
            down,
            up,
            out: Conv2d::new(
                vb.get_with_hints((1, w, 1, 1), "out.weight", Init::Const(0.0))?,
                Some(vb.get_with_hints(1, "out.bias", Init::Const(0.0))?),
                Conv2dConfig::default(),
            ),
        })
    }

    /// `[N, IN_CHANNELS, H, W]` (H and W multiples of 4) → the logit's correction
    /// `[N, 1, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = &self.down;
        let a = d[1].forward(&d[0].forward(x)?.gelu()?)?.gelu()?;
        let b = d[2].forward(&a.avg_pool2d(2)?)?.gelu()?;
        let b = d[3].forward(&b)?.gelu()?;
        let c = d[4].forward(&b.avg_pool2d(2)?)?.gelu()?;
        let c = d[5].forward(&c)?.gelu()?;
        let u = self.up[0]
            .forward(&Tensor::cat(&[&up2(&c)?, &b], 1)?)?
            .gelu()?;
        let u = self.up[1]
            .forward(&Tensor::cat(&[&up2(&u)?, &a], 1)?)?
            .gelu()?;
        self.out.forward(&u)
    }
}
