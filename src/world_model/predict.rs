//! Inference: a trained world model folder (`config.json` + `model.safetensors`) predicts the
//! future frames of a batch of candidate actions from one state.
//!
//! A folder may also hold `tasks.json` ([`TaskChoice`]): the tasks on which the trainer's
//! last validation found the network no better than its prior (object-mask IoU of the
//! final frame). [`Predictor::predict_for`] predicts those tasks with the prior alone, so
//! one folder is never worse than its prior on a task the validation could tell (session
//! 38: `wm37`'s network helps cloth and harms rope). Deleting the file puts the network
//! back on every task.

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
use crate::sim::tasks::Task;

/// The file of a world-model folder that names the tasks its prior predicts alone.
pub const TASK_CHOICE_FILE: &str = "tasks.json";

/// What `tasks.json` holds: which tasks the prior predicts alone, and the validation that
/// chose them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskChoice {
    /// Tasks predicted by the prior alone (`rope`, `cloth`, `toy`).
    pub prior_only: Vec<String>,
    /// The training step of the validation that chose them.
    pub step: usize,
    /// Per validated task: the network's and the prior's final-frame object IoU, and the
    /// clips they were measured on.
    pub validation: Vec<(String, f64, f64, usize)>,
}

impl TaskChoice {
    /// The choice a validation makes: the prior alone wherever the network's IoU is not
    /// above the prior's. `None` for a model without a prior (nothing to fall back on).
    pub fn from_validation(v: &super::train::ValStats) -> Option<Self> {
        if v.iou_prior.is_empty() {
            return None;
        }
        let validation: Vec<(String, f64, f64, usize)> = v
            .iou
            .iter()
            .filter_map(|(task, model, _, n)| {
                let prior = v.iou_prior.iter().find(|(t, _)| t == task)?.1;
                Some((task.clone(), *model, prior, *n))
            })
            .collect();
        Some(Self {
            prior_only: validation
                .iter()
                .filter(|(_, model, prior, _)| model <= prior)
                .map(|(t, ..)| t.clone())
                .collect(),
            step: v.step,
            validation,
        })
    }
}

/// A loaded world model (cloning shares its weights).
#[derive(Clone)]
pub struct Predictor {
    /// The model.
    pub model: WorldModel,
    /// Euler steps of the sampler (the configuration's `sample_steps` when loaded).
    pub sample_steps: usize,
    /// Which weights these are: the CRC-32 and size of `model.safetensors`, as
    /// `crc32hex-bytes` (what a preference file's header records of its verifier), followed
    /// by `+prior-only:` and the tasks when `tasks.json` names any.
    pub fingerprint: String,
    /// Tasks [`Self::predict_for`] predicts with the prior alone (from `tasks.json`).
    pub prior_only: Vec<Task>,
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
        let cfg: Config = serde_json::from_str(&text).map_err(|e| {
            // A Hugging Face model folder (the planner's) is the likeliest mix-up.
            let hint = if text.contains("\"architectures\"") || text.contains("\"text_config\"") {
                " (this is a Hugging Face model's config, e.g. the planner's: --world-model wants a folder written by train-world-model)"
            } else {
                ""
            };
            WorldModelError::Checkpoint(format!("{}: {e}{hint}", cfg_path.display()))
        })?;
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
        let mut fingerprint = format!("{:08x}-{}", crc32fast::hash(&bytes), bytes.len());
        let prior_only = read_task_choice(dir, &cfg)?;
        if !prior_only.is_empty() {
            let names: Vec<&str> = prior_only.iter().map(|t| t.name()).collect();
            fingerprint.push_str(&format!("+prior-only:{}", names.join(",")));
        }
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
            prior_only,
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
        self.check(context, motions)?;
        let cfg = self.config();
        let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
        let k = motions.len();
        if k == 0 {
            return Ok(Vec::new());
        }
        let ctx = to_tensor(context.repeat(k), &[k, h, w, 3])?;
        let arm = to_tensor(
            motions.iter().flat_map(|m| m.arm.concat()).collect(),
            &[k, f + 1, h, w, 3],
        )?;
        let prior = if cfg.prior {
            let bytes: Vec<u8> = motions
                .iter()
                .flat_map(|m| self.prior_frames(context, m).concat())
                .collect();
            Some(to_tensor(bytes, &[k, f, h, w, 3])?)
        } else {
            None
        };
        // One noise for every candidate (common random numbers): a candidate's prediction
        // does not depend on its place in the batch, so a verifier compares actions, not
        // draws. Before session 53 candidate i took the i-th slice of a [K, …] draw, and a
        // refused candidate dropped from the batch changed every later one's prediction.
        let eps = noise(&mut Rng::new(seed, 0x9ED), &[1, f, 3, h, w])?
            .broadcast_as((k, f, 3, h, w))?
            .contiguous()?;
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

    /// [`Self::predict`] for a state of `task`: the prior's frames alone when `tasks.json`
    /// names the task, the model's otherwise.
    pub fn predict_for(
        &self,
        task: Task,
        context: &[u8],
        motions: &[Motion],
        seed: u64,
    ) -> Result<Vec<Vec<Vec<u8>>>, WorldModelError> {
        if !self.prior_only.contains(&task) {
            return self.predict(context, motions, seed);
        }
        self.check(context, motions)?;
        Ok(motions
            .iter()
            .map(|m| self.prior_frames(context, m))
            .collect())
    }

    /// The prior's future frames of one motion (the current frame held where the motion has
    /// no gripper path over every frame).
    fn prior_frames(&self, context: &[u8], m: &Motion) -> Vec<Vec<u8>> {
        let cfg = self.config();
        match &m.grip {
            Some(g) if g.offsets.len() == cfg.frames => frames(context, g, cfg),
            _ => vec![context.to_vec(); cfg.frames],
        }
    }

    /// Refuses a current frame or an arm video of the wrong size.
    fn check(&self, context: &[u8], motions: &[Motion]) -> Result<(), WorldModelError> {
        let cfg = self.config();
        let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
        let frame = w * h * 3;
        if context.len() != frame {
            return Err(WorldModelError::Data(format!(
                "current frame of {} bytes; the model takes {w}×{h} rgb ({frame} bytes)",
                context.len()
            )));
        }
        if let Some(bad) = motions
            .iter()
            .map(|m| &m.arm)
            .find(|a| a.len() != f + 1 || a.iter().any(|x| x.len() != frame))
        {
            return Err(WorldModelError::Data(format!(
                "an arm video of {} frames ({:?} bytes); the model takes {} frames of {w}×{h} rgb",
                bad.len(),
                bad.first().map(Vec::len),
                f + 1
            )));
        }
        Ok(())
    }
}

/// The tasks `dir/tasks.json` names (none without the file); an unreadable file or an
/// unknown task is an error naming the file.
fn read_task_choice(dir: &Path, cfg: &Config) -> Result<Vec<Task>, WorldModelError> {
    let path = dir.join(TASK_CHOICE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(WorldModelError::Io { path, source }),
    };
    let bad = |why: String| WorldModelError::Checkpoint(format!("{}: {why}", path.display()));
    let choice: TaskChoice = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if !choice.prior_only.is_empty() && !cfg.prior {
        return Err(bad(
            "names tasks for the prior alone, but the model has no prior".into(),
        ));
    }
    choice
        .prior_only
        .iter()
        .map(|name| {
            Task::from_name(name)
                .ok_or_else(|| bad(format!("unknown task {name:?} (rope, cloth or toy)")))
        })
        .collect()
}
