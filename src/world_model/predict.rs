//! Inference: a trained world model folder (`config.json` + `model.safetensors`) predicts the
//! future frames of a batch of candidate actions from one state.

use std::path::Path;

use candle_core::Device;
use candle_nn::VarBuilder;

use super::clip::Motion;
use super::dataset::{to_rgb, to_tensor};
use super::prior::frames;
use super::train::noise;
use super::{Config, WorldModel, WorldModelError};
use crate::device::Compute;
use crate::sim::rng::Rng;

/// A loaded world model (cloning shares its weights).
#[derive(Clone)]
pub struct Predictor {
    /// The model.
    pub model: WorldModel,
    /// Euler steps of the sampler (the configuration's `sample_steps` when loaded).
    pub sample_steps: usize,
    /// Which weights these are: the CRC-32 and size of `model.safetensors`, as
    /// `crc32hex-bytes` (what a preference file's header records of its verifier).
    pub fingerprint: String,
}

impl Predictor {
    /// Loads the folder `dir` onto the CPU in f32; a missing, corrupted or mismatched file
    /// is an error naming it.
    pub fn load(dir: &Path) -> Result<Self, WorldModelError> {
        Self::load_on(dir, &Compute::cpu())
    }

    /// [`Self::load`] onto `compute`'s device, computing in its dtype (bf16 halves the
    /// memory on a GPU; the frames come out as rgb8 either way).
    pub fn load_on(dir: &Path, compute: &Compute) -> Result<Self, WorldModelError> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
            WorldModelError::Checkpoint(format!(
                "{}: {e} (a world-model folder holds config.json and model.safetensors)",
                cfg_path.display()
            ))
        })?;
        let cfg: Config = serde_json::from_str(&text)
            .map_err(|e| WorldModelError::Checkpoint(format!("{}: {e}", cfg_path.display())))?;
        cfg.validate()
            .map_err(|e| WorldModelError::Checkpoint(format!("{}: {e}", cfg_path.display())))?;
        let w_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&w_path).map_err(|source| WorldModelError::Io {
            path: w_path.clone(),
            source,
        })?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
            WorldModelError::Checkpoint(format!(
                "{}: not a readable safetensors file (corrupted or truncated?): {e}",
                w_path.display()
            ))
        })?;
        let fingerprint = format!("{:08x}-{}", crc32fast::hash(&bytes), bytes.len());
        let vb = VarBuilder::from_tensors(tensors, compute.dtype, &compute.device);
        let model = WorldModel::new(&cfg, vb).map_err(|e| {
            WorldModelError::Checkpoint(format!(
                "{}: its weights do not fit {} ({e}); a checkpoint from another config?",
                w_path.display(),
                cfg_path.display()
            ))
        })?;
        let sample_steps = model.config().sample_steps;
        Ok(Self {
            model,
            sample_steps,
            fingerprint,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.model.config()
    }

    /// Predicted future frames (rgb8 at the model's resolution) of each candidate's motion
    /// in `motions` (arm videos of `frames + 1` frames, and gripper paths), all from the
    /// current object-only crop `context`, in one batch; the noise comes from `seed`.
    pub fn predict(
        &self,
        context: &[u8],
        motions: &[Motion],
        seed: u64,
    ) -> Result<Vec<Vec<Vec<u8>>>, WorldModelError> {
        let arms: Vec<&Vec<Vec<u8>>> = motions.iter().map(|m| &m.arm).collect();
        let cfg = self.config();
        let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
        let frame = w * h * 3;
        if context.len() != frame {
            return Err(WorldModelError::Data(format!(
                "current frame of {} bytes; the model takes {w}×{h} rgb ({frame} bytes)",
                context.len()
            )));
        }
        if let Some(bad) = arms
            .iter()
            .find(|a| a.len() != f + 1 || a.iter().any(|x| x.len() != frame))
        {
            return Err(WorldModelError::Data(format!(
                "an arm video of {} frames ({:?} bytes); the model takes {} frames of {w}×{h} rgb",
                bad.len(),
                bad.first().map(Vec::len),
                f + 1
            )));
        }
        let k = arms.len();
        if k == 0 {
            return Ok(Vec::new());
        }
        let ctx = to_tensor(context.repeat(k), &[k, h, w, 3])?;
        let arm = to_tensor(
            arms.iter().copied().flatten().flatten().copied().collect(),
            &[k, f + 1, h, w, 3],
        )?;
        let prior = if cfg.prior {
            let bytes: Vec<u8> = motions
                .iter()
                .flat_map(|m| match &m.grip {
                    Some(g) if g.offsets.len() == f => frames(context, g, cfg).concat(),
                    _ => context.repeat(f),
                })
                .collect();
            Some(to_tensor(bytes, &[k, f, h, w, 3])?)
        } else {
            None
        };
        let eps = noise(&mut Rng::new(seed, 0x9ED), &[k, f, 3, h, w])?;
        let out = self
            .model
            .sample(&eps, &ctx, &arm, prior.as_ref(), self.sample_steps)?;
        (0..k)
            .map(|i| {
                (0..f)
                    .map(|j| to_rgb(&out.get(i)?.get(j)?))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect()
    }
}
