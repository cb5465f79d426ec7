//! Where a model computes (`cpu`, `cuda`, `cuda:N`) and in which float type.
//!
//! Every command and node that runs a model (the planner, the world model, the ORPO
//! trainer, the experiment) takes the same two settings: `--device` and `--dtype` on the
//! command line, `device:` and `dtype:` in YAML. `dtype: auto` is f32 on the CPU (the
//! figures in the docs and the tests are f32) and bf16 on a GPU (the paper's 8B model in
//! the type its weights ship in).
//!
//! A CUDA device asked of a binary built without the `cuda` feature, or of a machine
//! without a usable GPU, is an error that says which and what to do, before any model is
//! read. The `cuda` build itself needs nvcc; `scripts/cuda_toolchain.sh` sets one up from
//! PyPI wheels (docs/gpu.md).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The text is not `cpu`, `cuda` or `cuda:N`.
    #[error("unknown device `{0}`: use cpu, cuda or cuda:N (N = the GPU's index)")]
    Parse(String),
    /// The text is not a known float type.
    #[error("unknown dtype `{0}`: use auto, f32, bf16 or f16")]
    ParseDtype(String),
    /// This binary has no CUDA backend.
    #[error(
        "device {0} asked for, but this dreamplan was built without CUDA: build it with \
         `scripts/cuda_toolchain.sh build` (or `cargo build --release --features cuda` where \
         nvcc is installed), or use --device cpu"
    )]
    NotBuilt(DeviceSpec),
    /// The CUDA driver or the GPU refused.
    #[error(
        "CUDA device {ordinal} could not be opened ({reason}); check that an NVIDIA driver is \
         installed and the GPU is visible (`nvidia-smi`), and that the index exists"
    )]
    Unavailable {
        /// The GPU index asked for.
        ordinal: usize,
        /// The driver's answer.
        reason: String,
    },
}

/// A device as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU (candle's CPU backend, all cores through rayon).
    #[default]
    Cpu,
    /// CUDA GPU number N (`cuda` = `cuda:0`).
    Cuda(usize),
}

impl DeviceSpec {
    /// Whether this is a GPU.
    pub fn is_cuda(self) -> bool {
        matches!(self, DeviceSpec::Cuda(_))
    }

    /// Opens the device: the CPU always; a GPU only in a `cuda` build on a machine with a
    /// driver and that GPU.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => open_cuda(ordinal),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device, DeviceError> {
    Device::new_cuda(ordinal).map_err(|e| DeviceError::Unavailable {
        ordinal,
        reason: e.to_string().lines().next().unwrap_or_default().to_string(),
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuilt(DeviceSpec::Cuda(ordinal)))
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => return Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => return Ok(DeviceSpec::Cuda(0)),
            _ => {}
        }
        t.strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(DeviceSpec::Cuda)
            .ok_or_else(|| DeviceError::Parse(s.to_string()))
    }
}

/// A float type as the user names it; `auto` follows the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtypeSpec {
    /// f32 on the CPU, bf16 on a GPU.
    #[default]
    Auto,
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl DtypeSpec {
    /// The candle dtype on `device`.
    pub fn resolve(self, device: DeviceSpec) -> DType {
        match self {
            DtypeSpec::Auto if device.is_cuda() => DType::BF16,
            DtypeSpec::Auto | DtypeSpec::F32 => DType::F32,
            DtypeSpec::Bf16 => DType::BF16,
            DtypeSpec::F16 => DType::F16,
        }
    }
}

impl fmt::Display for DtypeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DtypeSpec::Auto => "auto",
            DtypeSpec::F32 => "f32",
            DtypeSpec::Bf16 => "bf16",
            DtypeSpec::F16 => "f16",
        })
    }
}

impl FromStr for DtypeSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" => DtypeSpec::Auto,
            "f32" | "float32" => DtypeSpec::F32,
            "bf16" | "bfloat16" => DtypeSpec::Bf16,
            "f16" | "float16" | "half" => DtypeSpec::F16,
            _ => return Err(DeviceError::ParseDtype(s.to_string())),
        })
    }
}

/// Where and in which type a model computes, resolved and opened.
#[derive(Debug, Clone)]
pub struct Compute {
    /// What was asked for.
    pub spec: DeviceSpec,
    /// The opened device.
    pub device: Device,
    /// The compute dtype.
    pub dtype: DType,
}

impl Compute {
    /// The CPU in f32 (the default everywhere).
    pub fn cpu() -> Self {
        Self {
            spec: DeviceSpec::Cpu,
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }

    /// Opens `device` and resolves `dtype` for it.
    pub fn open(device: DeviceSpec, dtype: DtypeSpec) -> Result<Self, DeviceError> {
        Ok(Self {
            spec: device,
            device: device.open()?,
            dtype: dtype.resolve(device),
        })
    }
}

impl Default for Compute {
    fn default() -> Self {
        Self::cpu()
    }
}

macro_rules! serde_as_text {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_text!(DeviceSpec);
serde_as_text!(DtypeSpec);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_back() {
        for (text, spec) in [
            ("cpu", DeviceSpec::Cpu),
            ("CPU", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
            (" cuda:0 ", DeviceSpec::Cuda(0)),
        ] {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), spec, "{text}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        for bad in ["", "cuda:", "cuda:-1", "cuda:x", "tpu", "cuda0", "metal"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains("use cpu, cuda or cuda:N"), "{bad}: {err}");
        }
    }

    #[test]
    fn auto_dtype_is_f32_on_cpu_and_bf16_on_gpu() {
        assert_eq!(DtypeSpec::Auto.resolve(DeviceSpec::Cpu), DType::F32);
        assert_eq!(DtypeSpec::Auto.resolve(DeviceSpec::Cuda(0)), DType::BF16);
        assert_eq!(DtypeSpec::F32.resolve(DeviceSpec::Cuda(1)), DType::F32);
        assert_eq!("bf16".parse::<DtypeSpec>().unwrap(), DtypeSpec::Bf16);
        let err = "f8".parse::<DtypeSpec>().unwrap_err().to_string();
        assert!(err.contains("auto, f32, bf16 or f16"), "{err}");
    }

    #[test]
    fn settings_read_from_yaml_as_text() {
        #[derive(Deserialize)]
        struct S {
            device: DeviceSpec,
            dtype: DtypeSpec,
        }
        let s: S = serde_yaml::from_str("device: cuda:1\ndtype: bf16\n").unwrap();
        assert_eq!((s.device, s.dtype), (DeviceSpec::Cuda(1), DtypeSpec::Bf16));
        let err = serde_yaml::from_str::<S>("device: gpu7\ndtype: f32\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown device `gpu7`"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_gpu_asked_of_a_cpu_build_says_how_to_get_one() {
        let err = Compute::open(DeviceSpec::Cuda(0), DtypeSpec::Auto)
            .unwrap_err()
            .to_string();
        assert!(err.contains("built without CUDA"), "{err}");
        assert!(err.contains("--device cpu"), "{err}");
        let cpu = Compute::open(DeviceSpec::Cpu, DtypeSpec::Auto).unwrap();
        assert_eq!(cpu.dtype, DType::F32);
        assert!(cpu.device.is_cpu());
    }
}
