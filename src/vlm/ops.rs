//! The three operations whose fused candle kernels have no backward pass (softmax,
//! RMSNorm/LayerNorm, rotary): each comes here as a pair, the fused kernel for inference
//! and plain differentiable arithmetic for training, selected by [`Mode`]. Gradients
//! through the fused kernels are silently zero, so a training forward must never reach
//! them; keeping both halves side by side keeps them computing the same function
//! (`tests/vlm_golden.rs` checks that the two modes agree).
//!
//! Statistics run in f32 for half-precision inputs (as HF does) and in f64 for f64 inputs,
//! so that the finite-difference gradient tests (`tests/vlm_grad.rs`) can run the whole
//! training path in f64.

use candle_core::{DType, Tensor, D};

use super::error::Result;

/// Which implementation of the paired ops a forward uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Fused kernels, KV cache allowed.
    #[default]
    Infer,
    /// Differentiable arithmetic only, no KV cache.
    Train,
}

/// The dtype reductions (softmax, norm statistics) run in: f64 stays f64, everything else
/// is computed in f32.
pub fn stat_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Softmax over the last dimension, computed in f32 (as HF does; f64 inputs in f64) and
/// returned in `x`'s dtype.
pub fn softmax_last(x: &Tensor, mode: Mode) -> Result<Tensor> {
    let dtype = x.dtype();
    let sd = match mode {
        Mode::Infer => DType::F32,
        Mode::Train => stat_dtype(dtype),
    };
    let x32 = x.to_dtype(sd)?;
    let y = match mode {
        Mode::Infer => candle_nn::ops::softmax_last_dim(&x32)?,
        Mode::Train => candle_nn::ops::softmax(&x32, D::Minus1)?,
    };
    Ok(y.to_dtype(dtype)?)
}

/// `x / sqrt(mean(x²) + eps) * weight` over the last dimension; statistics in f32.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer => {
            let dtype = x.dtype();
            let y = candle_nn::ops::rms_norm(
                &x.to_dtype(DType::F32)?.contiguous()?,
                &weight.to_dtype(DType::F32)?,
                eps as f32,
            )?;
            Ok(y.to_dtype(dtype)?)
        }
        Mode::Train => {
            let dtype = x.dtype();
            let x32 = x.to_dtype(stat_dtype(dtype))?;
            let var = x32.sqr()?.mean_keepdim(D::Minus1)?;
            let y = x32.broadcast_div(&(var + eps)?.sqrt()?)?;
            Ok(y.to_dtype(dtype)?.broadcast_mul(weight)?)
        }
    }
}

/// LayerNorm over the last dimension with weight and bias; statistics in f32.
pub fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    mode: Mode,
) -> Result<Tensor> {
    let dtype = x.dtype();
    let sd = match mode {
        Mode::Infer => DType::F32,
        Mode::Train => stat_dtype(dtype),
    };
    let x32 = x.to_dtype(sd)?;
    let w = weight.to_dtype(sd)?;
    let b = bias.to_dtype(sd)?;
    let y = match mode {
        Mode::Infer => candle_nn::ops::layer_norm(&x32.contiguous()?, &w, &b, eps as f32)?,
        Mode::Train => {
            let mean = x32.mean_keepdim(D::Minus1)?;
            let centred = x32.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            centred
                .broadcast_div(&(var + eps)?.sqrt()?)?
                .broadcast_mul(&w)?
                .broadcast_add(&b)?
        }
    };
    Ok(y.to_dtype(dtype)?)
}

/// Rotary embedding in the "rotate half" layout (HF's `rotate_half`): for `x` of shape
/// `[B, H, L, D]` and angles' `cos`, `sin` of shape `[L, D/2]` or `[B, L, D/2]`,
/// `x[..i] ← x[..i] cos − x[i..] sin`, `x[i..] ← x[i..] cos + x[..i] sin` with `i = D/2`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer => Ok(candle_nn::rotary_emb::rope(
            &x.contiguous()?,
            &cos.contiguous()?,
            &sin.contiguous()?,
        )?),
        Mode::Train => {
            let half = x.dim(D::Minus1)? / 2;
            let (cos, sin) = if cos.rank() == 2 {
                (
                    cos.unsqueeze(0)?.unsqueeze(0)?,
                    sin.unsqueeze(0)?.unsqueeze(0)?,
                )
            } else {
                (cos.unsqueeze(1)?, sin.unsqueeze(1)?)
            };
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let y1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
            let y2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
            Ok(Tensor::cat(&[y1, y2], D::Minus1)?)
        }
    }
}
