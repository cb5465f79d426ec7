//! The operations whose fast kernels have no backward pass (softmax, RMSNorm/LayerNorm,
//! rotary, and the SiLU / GELU gates): each comes here as a pair, the fast kernel for inference
//! and plain differentiable arithmetic for training, selected by [`Mode`]. Gradients
//! through the fused kernels are silently zero, so a training forward must never reach
//! them; keeping both halves side by side keeps them computing the same function
//! (`tests/vlm_golden.rs` checks that the two modes agree).
//!
//! Statistics run in f32 for half-precision inputs (as HF does) and in f64 for f64 inputs,
//! so that the finite-difference gradient tests (`tests/vlm_grad.rs`) can run the whole
//! training path in f64.
//!
//! On CPU, softmax and the gates use this module's own kernels (SIMD `exp` from `wide`,
//! rows in parallel with rayon) instead of candle's scalar ones; each says why and how
//! much it saved. Other devices keep candle's kernels.

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
    if mode == Mode::Infer && x.device().is_cuda() && dtype != DType::F32 {
        // candle's GPU kernel accumulates half precision in f32 itself: the same result as
        // the round trip through f32 below, in one launch instead of three.
        return Ok(candle_nn::ops::softmax_last_dim(x)?);
    }
    let sd = match mode {
        Mode::Infer => DType::F32,
        Mode::Train => stat_dtype(dtype),
    };
    let x32 = x.to_dtype(sd)?;
    let y = match mode {
        Mode::Infer if x32.device().is_cpu() => {
            x32.contiguous()?.apply_op1_no_bwd(&CpuSoftmaxLastDim)?
        }
        Mode::Infer => candle_nn::ops::softmax_last_dim(&x32)?,
        Mode::Train => candle_nn::ops::softmax(&x32, D::Minus1)?,
    };
    Ok(y.to_dtype(dtype)?)
}

/// The f32 elements of a contiguous CPU input of one of this module's kernels.
fn contiguous_f32<'a>(
    op: &str,
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: this kernel takes f32");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous");
    };
    Ok(&data[start..end])
}

/// Softmax over the last dimension on CPU, f32, rows in parallel, `exp` eight lanes at a
/// time through `wide`. candle's kernel calls glibc's scalar `expf` on every element: 4.5 ns
/// each on the 2-core machine, and slower still on masked scores (`f32::MIN` added, as HF's
/// eager attention does), where `expf` takes its underflow path that sets `errno`. That was
/// 15 of the ~50 ms of a tiny-model prompt (timed per operation, one thread).
/// `wide`'s `exp` is a range reduction plus polynomial within a few ulp of `expf`; the
/// golden tests against transformers hold with it.
struct CpuSoftmaxLastDim;

impl candle_core::CustomOp1 for CpuSoftmaxLastDim {
    fn name(&self) -> &'static str {
        "dreamplan-softmax-last-dim"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let src = contiguous_f32(self.name(), storage, layout)?;
        let n = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut dst = vec![0f32; src.len()];
        // Rows in tasks big enough that scheduling does not dominate a short row.
        let rows_per_task = (8192 / n).max(1);
        dst.par_chunks_mut(n * rows_per_task)
            .zip(src.par_chunks(n * rows_per_task))
            .for_each(|(d, s)| {
                for (d, s) in d.chunks_mut(n).zip(s.chunks(n)) {
                    softmax_row(s, d);
                }
            });
        Ok((candle_core::CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// `x · sigmoid(a(x))` elementwise on CPU f32, eight lanes at a time: SiLU (`a(x) = x`)
/// and the tanh form of GELU (`0.5·x·(1 + tanh z) = x / (1 + e^(−2z))`,
/// `z = √(2/π)·(x + 0.044715·x³)`). candle's kernels call scalar `expf`/`tanhf` per
/// element; these were 3 of the ~35 ms of a tiny-model prompt. Same functions to a few
/// ulp (the golden tests against transformers hold).
#[derive(Clone, Copy)]
enum Gate {
    Silu,
    GeluTanh,
}

impl Gate {
    fn arg8(self, x: wide::f32x8) -> wide::f32x8 {
        use wide::f32x8;
        match self {
            Gate::Silu => -x,
            Gate::GeluTanh => {
                let c = f32x8::splat(-2.0 * (2.0 / std::f32::consts::PI).sqrt());
                c * (x + f32x8::splat(0.044715) * x * x * x)
            }
        }
    }

    fn arg(self, x: f32) -> f32 {
        match self {
            Gate::Silu => -x,
            Gate::GeluTanh => {
                -2.0 * (2.0 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x)
            }
        }
    }
}

impl candle_core::CustomOp1 for Gate {
    fn name(&self) -> &'static str {
        match self {
            Gate::Silu => "dreamplan-silu",
            Gate::GeluTanh => "dreamplan-gelu-tanh",
        }
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        use wide::f32x8;
        let src = contiguous_f32(self.name(), storage, layout)?;
        let mut dst = vec![0f32; src.len()];
        let gate = *self;
        dst.par_chunks_mut(16384)
            .zip(src.par_chunks(16384))
            .for_each(|(d, s)| {
                let (sc, sr) = s.split_at(s.len() / 8 * 8);
                let (dc, dr) = d.split_at_mut(sc.len());
                for (s, d) in sc.chunks_exact(8).zip(dc.chunks_exact_mut(8)) {
                    let x = f32x8::from(<[f32; 8]>::try_from(s).expect("8 lanes"));
                    let y = x / (f32x8::ONE + gate.arg8(x).exp());
                    d.copy_from_slice(&y.to_array());
                }
                for (s, d) in sr.iter().zip(dr.iter_mut()) {
                    *d = s / (1.0 + gate.arg(*s).exp());
                }
            });
        Ok((candle_core::CpuStorage::F32(dst), layout.shape().clone()))
    }
}

fn gate(x: &Tensor, g: Gate, mode: Mode) -> Result<Option<Tensor>> {
    if mode == Mode::Infer && x.device().is_cpu() && x.dtype() == DType::F32 {
        Ok(Some(x.contiguous()?.apply_op1_no_bwd(&g)?))
    } else {
        Ok(None)
    }
}

/// SiLU, `x · sigmoid(x)`.
pub fn silu(x: &Tensor, mode: Mode) -> Result<Tensor> {
    match gate(x, Gate::Silu, mode)? {
        Some(y) => Ok(y),
        None => Ok(x.silu()?),
    }
}

/// GELU, tanh approximation (`gelu_pytorch_tanh`).
pub fn gelu_tanh(x: &Tensor, mode: Mode) -> Result<Tensor> {
    match gate(x, Gate::GeluTanh, mode)? {
        Some(y) => Ok(y),
        None => Ok(x.gelu()?),
    }
}

/// `dst = softmax(src)` for one row.
fn softmax_row(src: &[f32], dst: &mut [f32]) {
    use wide::f32x8;
    let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let m = f32x8::splat(max);
    let mut sum = f32x8::ZERO;
    let (sc, sr) = src.split_at(src.len() / 8 * 8);
    let (dc, dr) = dst.split_at_mut(sc.len());
    for (s, d) in sc.chunks_exact(8).zip(dc.chunks_exact_mut(8)) {
        let e = (f32x8::from(<[f32; 8]>::try_from(s).expect("8 lanes")) - m).exp();
        sum += e;
        d.copy_from_slice(&e.to_array());
    }
    let mut total = sum.reduce_add();
    for (s, d) in sr.iter().zip(dr.iter_mut()) {
        *d = (s - max).exp();
        total += *d;
    }
    let inv = 1.0 / total;
    dst.iter_mut().for_each(|v| *v *= inv);
}

/// `x / sqrt(mean(x²) + eps) * weight` over the last dimension; statistics in f32.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    match mode {
        // On a GPU in half precision candle's kernel reads bf16/f16, accumulates in f32 and
        // rounds once, as the f32 round trip below does, without its three conversion
        // kernels: a decoding step is bound by kernel launches there, and a norm is one
        // launch instead of four.
        Mode::Infer if x.device().is_cuda() && x.dtype() != DType::F32 => Ok(
            candle_nn::ops::rms_norm(&x.contiguous()?, &weight.to_dtype(x.dtype())?, eps as f32)?,
        ),
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
