//! The weights of an HF model folder: `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`, memory-mapped and turned into candle tensors of the
//! compute dtype on request. A request states the shape it expects, so a wrong checkpoint
//! fails with the tensor's name and both shapes instead of a matmul error later.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use safetensors::tensor::{Dtype, SafeTensors};

use super::config::read_json;
use super::error::{Result, VlmError};

struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Byte range inside the mapped file.
    start: usize,
    end: usize,
}

/// Named tensors of one checkpoint (one or more files).
pub struct WeightStore {
    files: Vec<(PathBuf, memmap2::Mmap)>,
    entries: HashMap<String, Entry>,
    dtype: DType,
    device: Device,
    /// When training every weight: the variable handed out for each name.
    trainable: Option<std::sync::Mutex<Vec<(String, Var)>>>,
    /// No checkpoint: every tensor asked for is made up ([`Self::random`]), or only its
    /// name and shape are noted ([`Self::shapes_only`]).
    made_up: MadeUp,
    /// What a [`Self::shapes_only`] store was asked for.
    asked: std::sync::Mutex<Vec<(String, Vec<usize>)>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MadeUp {
    No,
    Random,
    Shapes,
}

fn st_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        _ => return None,
    })
}

impl WeightStore {
    /// Opens the weights in `dir`; tensors come out as `dtype` on `device`.
    pub fn open(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let paths = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            let value = read_json(&index)?;
            let map = value
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| VlmError::MissingField {
                    path: index.clone(),
                    field: "weight_map".into(),
                })?;
            let mut files: Vec<String> = Vec::new();
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| VlmError::BadField {
                    path: index.clone(),
                    field: format!("weight_map.{name}"),
                    message: "expected a file name".into(),
                })?;
                if !files.iter().any(|f| f == file) {
                    files.push(file.to_string());
                }
            }
            files.sort();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            return Err(VlmError::NoWeights {
                dir: dir.to_path_buf(),
            });
        };
        let mut store = Self {
            files: Vec::new(),
            entries: HashMap::new(),
            dtype,
            device: device.clone(),
            trainable: None,
            made_up: MadeUp::No,
            asked: Default::default(),
        };
        for path in paths {
            store.add_file(path)?;
        }
        Ok(store)
    }

    fn add_file(&mut self, path: PathBuf) -> Result<()> {
        let file = std::fs::File::open(&path).map_err(|e| VlmError::io(&path, e))?;
        // SAFETY: the mapping is read-only and the model folder is not modified while the
        // model loads; a concurrent writer could change bytes but not memory safety of the
        // slices we copy out (they stay in bounds of the mapping's fixed length).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| VlmError::io(&path, e))?;
        let bad = |message: String| VlmError::Safetensors {
            path: path.clone(),
            message,
        };
        let st = SafeTensors::deserialize(&map).map_err(|e| bad(e.to_string()))?;
        let base = map.as_ptr() as usize;
        let index = self.files.len();
        for (name, view) in st.tensors() {
            let dtype = st_dtype(view.dtype()).ok_or_else(|| {
                bad(format!(
                    "tensor `{name}` has element type {:?}; weights must be f32, f16 or bf16",
                    view.dtype()
                ))
            })?;
            let data = view.data();
            let start = data.as_ptr() as usize - base;
            self.entries.insert(
                name,
                Entry {
                    file: index,
                    dtype,
                    shape: view.shape().to_vec(),
                    start,
                    end: start + data.len(),
                },
            );
        }
        self.files.push((path, map));
        Ok(())
    }

    /// Like [`Self::open`], but every tensor handed out is a trainable variable (the same
    /// one for the same name), so a model built from this store trains all its weights;
    /// [`Self::vars`] lists them for the optimiser and for saving.
    pub fn open_trainable(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let mut store = Self::open(dir, dtype, device)?;
        store.trainable = Some(std::sync::Mutex::new(Vec::new()));
        Ok(store)
    }

    /// A store without a checkpoint that makes up every tensor asked for, in `dtype` on
    /// `device`: normalisation weights 1, biases 0, everything else N(0, 0.02²). For speed
    /// and memory figures of real architectures (an 8B config) where no weights can be
    /// downloaded; what such a model says is noise.
    pub fn random(dtype: DType, device: &Device) -> Self {
        Self {
            files: Vec::new(),
            entries: HashMap::new(),
            dtype,
            device: device.clone(),
            trainable: None,
            made_up: MadeUp::Random,
            asked: Default::default(),
        }
    }

    /// A store that hands out a zero of each asked shape without memory (a broadcast
    /// scalar) and notes what was asked ([`Self::vars`] lists it, as zero tensors): the
    /// names and shapes a model of some config reads ([`Self::asked`]), e.g. to count an
    /// 8B model's parameters on a machine that could not hold them. Such a model cannot
    /// compute.
    pub fn shapes_only(dtype: DType) -> Self {
        Self {
            files: Vec::new(),
            entries: HashMap::new(),
            dtype,
            device: Device::Cpu,
            trainable: None,
            made_up: MadeUp::Shapes,
            asked: Default::default(),
        }
    }

    /// The distinct names and shapes a [`Self::shapes_only`] store was asked for, in order.
    pub fn asked(&self) -> Vec<(String, Vec<usize>)> {
        self.asked.lock().expect("weight store lock").clone()
    }

    /// A made-up tensor `name` of `shape` (see [`Self::random`]).
    fn made_up(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = if name.ends_with(".bias") {
            Tensor::zeros(shape, self.dtype, &self.device)?
        } else if name.contains("norm") {
            Tensor::ones(shape, self.dtype, &self.device)?
        } else {
            Tensor::randn(0f32, 0.02, shape, &self.device)?.to_dtype(self.dtype)?
        };
        Ok(t)
    }

    /// The variables handed out so far by a trainable store, with their names (empty for
    /// a plain store).
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.trainable
            .as_ref()
            .map_or_else(Vec::new, |m| m.lock().expect("weight store lock").clone())
    }

    /// The compute dtype tensors are converted to.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device tensors are placed on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the checkpoint has `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Tensor `name`, checked to have `shape`, as the compute dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        match self.made_up {
            MadeUp::No => {}
            MadeUp::Random => return self.made_up(name, shape),
            MadeUp::Shapes => {
                let mut asked = self.asked.lock().expect("weight store lock");
                if !asked.iter().any(|(n, _)| n == name) {
                    asked.push((name.to_string(), shape.to_vec()));
                }
                return Ok(Tensor::zeros((), self.dtype, &self.device)?.broadcast_as(shape)?);
            }
        }
        let entry = self.entry(name)?;
        if entry.shape != shape {
            return Err(VlmError::Shape {
                name: name.to_string(),
                expected: format!("{shape:?}"),
                found: entry.shape.clone(),
            });
        }
        let t = self.raw(entry)?;
        let t = t.to_dtype(self.dtype)?.to_device(&self.device)?;
        match &self.trainable {
            None => Ok(t),
            Some(vars) => {
                let mut vars = vars.lock().expect("weight store lock");
                if let Some((_, v)) = vars.iter().find(|(n, _)| n == name) {
                    return Ok(v.as_tensor().clone());
                }
                let v = Var::from_tensor(&t)?;
                vars.push((name.to_string(), v.clone()));
                Ok(v.as_tensor().clone())
            }
        }
    }

    /// Tensor `name` with whatever shape it has, as the compute dtype.
    pub fn get_any(&self, name: &str) -> Result<Tensor> {
        let shape = self.entry(name)?.shape.clone();
        self.get(name, &shape)
    }

    /// The checkpoint's entry for `name`, or the error naming it as missing.
    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries
            .get(name)
            .ok_or_else(|| VlmError::MissingTensor {
                name: name.to_string(),
                context: " in the checkpoint".into(),
            })
    }

    /// An entry's bytes as a tensor of its stored dtype, on the CPU.
    fn raw(&self, entry: &Entry) -> Result<Tensor> {
        let bytes = &self.files[entry.file].1[entry.start..entry.end];
        Ok(Tensor::from_raw_buffer(
            bytes,
            entry.dtype,
            &entry.shape,
            &Device::Cpu,
        )?)
    }

    /// Tensor `name` as the checkpoint stores it (its own dtype, on the CPU): what a merged
    /// folder writes back for the weights it does not change.
    pub fn stored(&self, name: &str) -> Result<Tensor> {
        self.raw(self.entry(name)?)
    }

    /// Names of all tensors (for diagnostics and adapters).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}
