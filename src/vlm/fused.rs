//! Fused operations of the decoder's inference forward, for a GPU.
//!
//! Decoding the 8B on an H200 is bound by kernel launches, not by memory: a step is ~850
//! small kernels, each launched from the host, and takes 9–10 ms where reading the weights
//! takes 3.8 ms (docs/gpu.md). Two pairs of launches that follow each other in every layer
//! become one here:
//! - [`add_rms_norm`]: the residual add and the RMSNorm after it (twice a layer: after the
//!   attention, and after the MLP with the next layer's input norm or the final norm);
//! - [`silu_mul`]: the SwiGLU's `silu(gate) · up`.
//!
//! Why written here: candle has neither fused op. The GPU kernels are `fused.cu` (PTX made
//! by build.rs with the `cuda` feature). On the CPU the same ops run in plain Rust with the
//! kernels' arithmetic (f32 inside, one rounding to the storage type per output), which is
//! what the tests compare with the unfused ops.
//!
//! Numerics: the sum is rounded to the storage type before the norm reads it, as the
//! separate add rounds it; the norm and `silu · up` round once where the separate ops round
//! twice (≤ 1 unit in the last place of bf16 apart).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::error::Result;

/// `(x + a, rms_norm(x + a) · w)`, both `x`'s shape and dtype; `w` is `[cols]`.
pub fn add_rms_norm(x: &Tensor, a: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let w = w.to_dtype(x.dtype())?;
    let out =
        x.contiguous()?
            .apply_op3_no_bwd(&a.contiguous()?, &w, &AddRmsNorm { eps: eps as f32 })?;
    Ok((out.get(0)?, out.get(1)?))
}

/// `silu(g) · u`, `g`'s shape and dtype.
pub fn silu_mul(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    Ok(g.contiguous()?
        .apply_op2_no_bwd(&u.contiguous()?, &SiluMul)?)
}

struct AddRmsNorm {
    eps: f32,
}

struct SiluMul;

fn check_same(
    op: &str,
    l1: &Layout,
    l2: &Layout,
) -> candle_core::Result<(usize, usize, usize, usize)> {
    let (Some((s1, e1)), Some((s2, e2))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
    else {
        candle_core::bail!("{op}: the inputs must be contiguous");
    };
    if l1.shape() != l2.shape() {
        candle_core::bail!("{op}: shapes {:?} and {:?} differ", l1.shape(), l2.shape());
    }
    Ok((s1, e1, s2, e2))
}

/// An add-and-norm's inputs checked once: rows of `cols` elements, and the element ranges
/// of `x`, `a` and the weight in their storages.
struct NormInputs {
    cols: usize,
    x: std::ops::Range<usize>,
    a: std::ops::Range<usize>,
    w: std::ops::Range<usize>,
}

fn norm_inputs(l1: &Layout, l2: &Layout, lw: &Layout) -> candle_core::Result<NormInputs> {
    let cols = *l1.dims().last().unwrap_or(&0);
    let w = match lw.contiguous_offsets() {
        Some((s, e)) if cols > 0 && e - s == cols => s..e,
        _ => candle_core::bail!("add_rms_norm: weight {:?} for rows of {cols}", lw.shape()),
    };
    let (a1, b1, a2, b2) = check_same("add_rms_norm", l1, l2)?;
    Ok(NormInputs {
        cols,
        x: a1..b1,
        a: a2..b2,
        w,
    })
}

/// The CPU arithmetic of `fused.cu`, for one storage type.
trait Elem: Copy {
    fn f(self) -> f32;
    fn from_f(v: f32) -> Self;
}

impl Elem for f32 {
    fn f(self) -> f32 {
        self
    }
    fn from_f(v: f32) -> Self {
        v
    }
}

impl Elem for half::bf16 {
    fn f(self) -> f32 {
        self.to_f32()
    }
    fn from_f(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
}

impl Elem for half::f16 {
    fn f(self) -> f32 {
        self.to_f32()
    }
    fn from_f(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

fn add_rms_norm_cpu<T: Elem>(x: &[T], a: &[T], w: &[T], cols: usize, eps: f32) -> Vec<T> {
    let n = x.len();
    let mut out: Vec<T> = x
        .iter()
        .zip(a)
        .map(|(&x, &a)| T::from_f(x.f() + a.f()))
        .collect();
    out.reserve(n);
    for r in 0..n / cols {
        let row = &out[r * cols..(r + 1) * cols];
        let sq: f32 = row.iter().map(|v| v.f() * v.f()).sum();
        let scale = 1.0 / (sq / cols as f32 + eps).sqrt();
        let normed: Vec<T> = row
            .iter()
            .zip(w)
            .map(|(&s, &w)| T::from_f(scale * s.f() * w.f()))
            .collect();
        out.extend(normed);
    }
    out
}

fn silu_mul_cpu<T: Elem>(g: &[T], u: &[T]) -> Vec<T> {
    g.iter()
        .zip(u)
        .map(|(&g, &u)| {
            let v = g.f();
            T::from_f(v / (1.0 + (-v).exp()) * u.f())
        })
        .collect()
}

impl CustomOp3 for AddRmsNorm {
    fn name(&self) -> &'static str {
        "add_rms_norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let NormInputs {
            cols,
            x: rx,
            a: ra,
            w: rw,
            ..
        } = norm_inputs(l1, l2, l3)?;
        let mut dims = vec![2];
        dims.extend(l1.dims());
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(a), CpuStorage::F32(w)) => {
                CpuStorage::F32(add_rms_norm_cpu(
                    &x[rx.clone()],
                    &a[ra.clone()],
                    &w[rw.clone()],
                    cols,
                    self.eps,
                ))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(a), CpuStorage::BF16(w)) => {
                CpuStorage::BF16(add_rms_norm_cpu(
                    &x[rx.clone()],
                    &a[ra.clone()],
                    &w[rw.clone()],
                    cols,
                    self.eps,
                ))
            }
            (CpuStorage::F16(x), CpuStorage::F16(a), CpuStorage::F16(w)) => {
                CpuStorage::F16(add_rms_norm_cpu(
                    &x[rx.clone()],
                    &a[ra.clone()],
                    &w[rw.clone()],
                    cols,
                    self.eps,
                ))
            }
            _ => candle_core::bail!("add_rms_norm: f32, bf16 or f16, all three the same"),
        };
        Ok((out, Shape::from(dims)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{
            CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
        };
        use candle_core::cuda_backend::{Map3, WrapErr};
        use candle_core::{CudaDevice, WithDType};

        struct K {
            eps: f32,
        }
        impl Map3 for K {
            fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
                &self,
                x: &CudaSlice<T>,
                l1: &Layout,
                a: &CudaSlice<T>,
                l2: &Layout,
                w: &CudaSlice<T>,
                l3: &Layout,
                dev: &CudaDevice,
            ) -> candle_core::Result<CudaSlice<T>> {
                let NormInputs {
                    cols,
                    x: rx,
                    a: ra,
                    w: rw,
                } = norm_inputs(l1, l2, l3)?;
                let rows = rx.len() / cols;
                let n = rows * cols;
                let func = kernel(dev, "add_rms_norm", T::DTYPE)?;
                // SAFETY: every element is written by the kernel.
                let out = unsafe { dev.alloc::<T>(2 * n)? };
                let threads = cols.div_ceil(32).clamp(1, 32) as u32 * 32;
                let cfg = LaunchConfig {
                    grid_dim: (rows as u32, 1, 1),
                    block_dim: (threads, 1, 1),
                    shared_mem_bytes: 0,
                };
                let (x, a, w) = (x.slice(rx), a.slice(ra), w.slice(rw));
                let stream = dev.cuda_stream();
                let mut b = stream.launch_builder(&func);
                b.arg(&x);
                b.arg(&a);
                b.arg(&w);
                b.arg(&out);
                candle_core::builder_arg!(b, n, cols as i32, self.eps);
                // SAFETY: the kernel reads n elements of x and a, cols of w, writes 2n.
                unsafe { b.launch(cfg) }.w()?;
                Ok(out)
            }
        }
        let dev = s1.device();
        let slice = K { eps: self.eps }.map(&s1.slice, l1, &s2.slice, l2, &s3.slice, l3, dev)?;
        let mut dims = vec![2];
        dims.extend(l1.dims());
        Ok((
            candle_core::CudaStorage {
                slice,
                device: dev.clone(),
            },
            Shape::from(dims),
        ))
    }
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu_mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a1, b1, a2, b2) = check_same("silu_mul", l1, l2)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(u)) => {
                CpuStorage::F32(silu_mul_cpu(&g[a1..b1], &u[a2..b2]))
            }
            (CpuStorage::BF16(g), CpuStorage::BF16(u)) => {
                CpuStorage::BF16(silu_mul_cpu(&g[a1..b1], &u[a2..b2]))
            }
            (CpuStorage::F16(g), CpuStorage::F16(u)) => {
                CpuStorage::F16(silu_mul_cpu(&g[a1..b1], &u[a2..b2]))
            }
            _ => candle_core::bail!("silu_mul: f32, bf16 or f16, both the same"),
        };
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{
            CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
        };
        use candle_core::cuda_backend::{Map2, WrapErr};
        use candle_core::{CudaDevice, WithDType};

        struct K;
        impl Map2 for K {
            fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
                &self,
                g: &CudaSlice<T>,
                l1: &Layout,
                u: &CudaSlice<T>,
                l2: &Layout,
                dev: &CudaDevice,
            ) -> candle_core::Result<CudaSlice<T>> {
                let (a1, b1, a2, b2) = check_same("silu_mul", l1, l2)?;
                let n = b1 - a1;
                let func = kernel(dev, "silu_mul", T::DTYPE)?;
                // SAFETY: every element is written by the kernel.
                let out = unsafe { dev.alloc::<T>(n)? };
                let cfg = LaunchConfig::for_num_elems(n as u32);
                let (g, u) = (g.slice(a1..b1), u.slice(a2..b2));
                let stream = dev.cuda_stream();
                let mut b = stream.launch_builder(&func);
                b.arg(&g);
                b.arg(&u);
                b.arg(&out);
                candle_core::builder_arg!(b, n);
                // SAFETY: the kernel reads and writes n elements.
                unsafe { b.launch(cfg) }.w()?;
                Ok(out)
            }
        }
        let dev = s1.device();
        let slice = K.map(&s1.slice, l1, &s2.slice, l2, dev)?;
        Ok((
            candle_core::CudaStorage {
                slice,
                device: dev.clone(),
            },
            l1.shape().clone(),
        ))
    }
}

#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));

/// `name`'s kernel for `dtype` from `fused.cu`'s PTX (loaded once per device).
#[cfg(feature = "cuda")]
fn kernel(
    dev: &candle_core::CudaDevice,
    name: &str,
    dtype: candle_core::DType,
) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaFunction> {
    use candle_core::DType;
    let suffix = match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        d => candle_core::bail!("the fused kernels take f32, bf16 or f16, not {d:?}"),
    };
    Ok(dev
        .get_or_load_custom_func(&format!("{name}_{suffix}"), "dreamplan_fused", PTX)?
        .into_cuda_function())
}

/// Whether the decoder's inference forward on `device` uses these ops: on a GPU, unless
/// `DREAMPLAN_NO_FUSED` is set (to compare with the unfused path).
pub fn default_for(device: &candle_core::Device) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    device.is_cuda() && !*OFF.get_or_init(|| std::env::var_os("DREAMPLAN_NO_FUSED").is_some())
}
