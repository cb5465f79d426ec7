//! The world-model trainer: `dreamplan train-world-model --bags DIR --out DIR`.
//!
//! Rectified flow on cached clips ([`super::dataset`]): each step draws a batch of training
//! clips, logit-normal flow times and Gaussian noise from a generator seeded by the run seed
//! and the step number (so a resumed run draws what an uninterrupted one draws), and
//! minimises [`WorldModel::flow_loss`] with AdamW (linear warm-up, cosine decay to 10%).
//!
//! Every `checkpoint_every` steps: one safetensors checkpoint (weights, AdamW moments, step,
//! history; [`crate::train::checkpoint`], temp file + rename), and the model folder
//! (`config.json` + `model.safetensors`, each written atomically) so the newest model is
//! always usable. A re-run with the same settings resumes from the checkpoint, after a
//! `kill -9` too. A loss or gradient that is not finite stops the run before the update is
//! applied: the last checkpoint is the last good state.
//!
//! Validation (every `val_every` steps and at the end) samples the held-out episodes' clips
//! and compares the predicted final frame with the true one, beside the baseline that copies
//! the current frame: PSNR, SSIM, and the IoU of the object masks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::dataset::{to_rgb, Dataset};
use super::{gaussian, metrics, Config, WorldModel, WorldModelError};
use crate::device::DeviceSpec;
use crate::sim::rng::Rng;
use crate::sim::tasks::Task;
use crate::train::adamw::{AdamW, AdamWParams};
use crate::train::checkpoint;

/// Settings of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Clips per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Seed of weights, batches, times and noise.
    pub seed: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Steps between validations (0: only at the end).
    pub val_every: usize,
    /// Validation clips sampled per validation (at most).
    pub val_clips: usize,
    /// One episode in this many goes to validation.
    pub val_split: u64,
    /// Where the run computes (always f32: the optimiser needs it). Not part of the run's
    /// identity: a run checkpointed on one device resumes on another. Read from a node's
    /// parameters (the trainer's `world_model.device`), never written; before session 50
    /// it was not read, and the key was refused as unknown.
    #[serde(skip_serializing)]
    pub device: DeviceSpec,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch: 8,
            lr: 1e-3,
            warmup: 100,
            seed: 0,
            checkpoint_every: 100,
            val_every: 500,
            val_clips: 48,
            val_split: 10,
            device: DeviceSpec::Cpu,
        }
    }
}

impl TrainConfig {
    /// The settings with the warm-up cut to at most a tenth of the steps: what
    /// `dreamplan train-world-model` and the trainer node both train with, so the same
    /// settings make the same run (and checkpoint) from either.
    pub fn warmup_capped(self) -> Self {
        Self {
            warmup: self.warmup.min(self.steps / 10),
            ..self
        }
    }
}

/// Validation figures at one step (final frame; `*_copy`: the copy-the-current-frame
/// baseline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValStats {
    /// Step.
    pub step: usize,
    /// Clips measured.
    pub clips: usize,
    /// PSNR (dB).
    pub psnr: f64,
    /// PSNR of the baseline.
    pub psnr_copy: f64,
    /// SSIM.
    pub ssim: f64,
    /// SSIM of the baseline.
    pub ssim_copy: f64,
    /// Object-mask IoU per task `(task, model, copy, clips)`.
    pub iou: Vec<(String, f64, f64, usize)>,
    /// Object-mask IoU of the configured prior's final frame per task (a model that starts
    /// from it must beat it; empty for models without it).
    #[serde(default)]
    pub iou_prior: Vec<(String, f64)>,
}

/// What the trainer reports as it goes.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// Resumed from a checkpoint at this step.
    Resumed(usize),
    /// A step finished with this loss.
    Step {
        /// Steps done.
        step: usize,
        /// Of.
        total: usize,
        /// Its loss.
        loss: f64,
    },
    /// A validation finished.
    Validated(ValStats),
}

/// The run's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Model configuration.
    pub config: Config,
    /// Run settings.
    pub train: TrainConfig,
    /// Training and validation clips.
    pub clips: (usize, usize),
    /// Loss per step.
    pub losses: Vec<f64>,
    /// Validations.
    pub validations: Vec<ValStats>,
    /// Wall seconds of training over every invocation of the run: a resumed run adds its
    /// own to those its checkpoint recorded (a killed one loses the time since its last
    /// checkpoint), and re-running a finished run keeps its total.
    pub seconds: f64,
}

/// The checkpoint file in `out`.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.join("checkpoint.safetensors")
}

/// Writes the model folder (`config.json`, `model.safetensors`) atomically.
pub fn save_model(out: &Path, cfg: &Config, vars: &[(String, Var)]) -> Result<(), WorldModelError> {
    let json = serde_json::to_vec_pretty(cfg).expect("config serialises");
    super::dataset::write_atomic(&out.join("config.json"), &json)?;
    let tensors: Vec<(&str, Tensor)> = vars
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_tensor().detach()))
        .collect();
    super::dataset::write_tensors(&out.join("model.safetensors"), &tensors)
}

/// Creates every variable the model asks for from the project's seeded generator (one
/// stream per weight name), following the initialisation hint it asks with: candle's CPU
/// device cannot be seeded, and a run must be reproducible from its seed.
struct SeededVars {
    seed: u64,
    vars: std::sync::Arc<std::sync::Mutex<Vec<(String, Var)>>>,
}

impl candle_nn::var_builder::SimpleBackend for SeededVars {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        use candle_nn::init::NormalOrUniform;
        let mut vars = self.vars.lock().expect("vars lock");
        if let Some((_, v)) = vars.iter().find(|(n, _)| n == name) {
            if v.shape() != &s {
                candle_core::bail!("{name}: asked for {s:?}, made as {:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let stream = checkpoint::fnv1a(name.as_bytes());
        let mut rng = Rng::new(self.seed, stream);
        let n = s.elem_count();
        let values: Vec<f32> = match h {
            candle_nn::Init::Const(c) => vec![c as f32; n],
            candle_nn::Init::Uniform { lo, up } => {
                (0..n).map(|_| rng.uniform(lo, up) as f32).collect()
            }
            candle_nn::Init::Randn { mean, stdev } => (0..n)
                .map(|_| (mean + stdev * gaussian(&mut rng)) as f32)
                .collect(),
            candle_nn::Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(&s) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let b = 3f64.sqrt() * std;
                        (0..n).map(|_| rng.uniform(-b, b) as f32).collect()
                    }
                    NormalOrUniform::Normal => {
                        (0..n).map(|_| (std * gaussian(&mut rng)) as f32).collect()
                    }
                }
            }
        };
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        vars.push((name.to_string(), var.clone()));
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: a fresh model has no weight without a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars
            .lock()
            .expect("vars lock")
            .iter()
            .any(|(n, _)| n == name)
    }
}

/// Fresh weights for `cfg` from `seed` (sorted by name), on the CPU.
pub fn init_vars(
    cfg: &Config,
    seed: u64,
) -> Result<(WorldModel, Vec<(String, Var)>), WorldModelError> {
    init_vars_on(cfg, seed, &Device::Cpu)
}

/// [`init_vars`] on `device` (the same values: they are drawn on the CPU and copied).
pub fn init_vars_on(
    cfg: &Config,
    seed: u64,
    device: &Device,
) -> Result<(WorldModel, Vec<(String, Var)>), WorldModelError> {
    let vars = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let backend = SeededVars {
        seed,
        vars: vars.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
    let model = WorldModel::new(cfg, vb)?;
    let mut vars = vars.lock().expect("vars lock").clone();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((model, vars))
}

/// At most `n` of `ids`, evenly spaced over the whole list: clips are in bag order (cloth,
/// rope, toy), and the first `n` would all be one task's.
pub fn spread(ids: Vec<usize>, n: usize) -> Vec<usize> {
    if ids.len() <= n {
        return ids;
    }
    (0..n).map(|k| ids[k * ids.len() / n]).collect()
}

/// `n` standard normal values as a tensor of `shape`.
pub fn noise(rng: &mut Rng, shape: &[usize]) -> Result<Tensor, WorldModelError> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| gaussian(rng) as f32).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Validation of `model` on clips `ids` (sampled with noise from `seed`).
pub fn validate(
    model: &WorldModel,
    data: &Dataset,
    ids: &[usize],
    step: usize,
    seed: u64,
) -> Result<ValStats, WorldModelError> {
    let cfg = model.config();
    let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
    let mut rng = Rng::new(seed, 0x5A1);
    let mut sums = [0.0f64; 4];
    let mut per_task: std::collections::BTreeMap<String, (f64, f64, usize)> = Default::default();
    let mut prior_iou: std::collections::BTreeMap<String, f64> = Default::default();
    for chunk in ids.chunks(8) {
        let b = data.batch(chunk, cfg)?;
        let eps = noise(&mut rng, &[chunk.len(), f, 3, h, w])?;
        let pred = model.sample(&eps, &b.context, &b.arm, b.prior.as_ref(), cfg.sample_steps)?;
        for (i, &id) in chunk.iter().enumerate() {
            let truth = to_rgb(&b.future.get(i)?.get(f - 1)?)?;
            let guess = to_rgb(&pred.get(i)?.get(f - 1)?)?;
            let copy = to_rgb(&b.context.get(i)?)?;
            sums[0] += metrics::psnr(&guess, &truth);
            sums[1] += metrics::psnr(&copy, &truth);
            sums[2] += metrics::ssim(&guess, &truth, w, h);
            sums[3] += metrics::ssim(&copy, &truth, w, h);
            let name = &data.index.clips[id].task;
            if let Some(task) = Task::from_name(name) {
                let m_true = metrics::mask(task, &truth, w, h)?;
                let e = per_task.entry(name.clone()).or_default();
                e.0 += metrics::iou(&metrics::mask(task, &guess, w, h)?, &m_true);
                e.1 += metrics::iou(&metrics::mask(task, &copy, w, h)?, &m_true);
                e.2 += 1;
                if let Some(p) = &b.prior {
                    let guess = to_rgb(&p.get(i)?.get(f - 1)?)?;
                    *prior_iou.entry(name.clone()).or_default() +=
                        metrics::iou(&metrics::mask(task, &guess, w, h)?, &m_true);
                }
            }
        }
    }
    let n = ids.len().max(1) as f64;
    Ok(ValStats {
        step,
        clips: ids.len(),
        psnr: sums[0] / n,
        psnr_copy: sums[1] / n,
        ssim: sums[2] / n,
        ssim_copy: sums[3] / n,
        iou_prior: prior_iou
            .into_iter()
            .map(|(t, sum)| {
                let k = per_task.get(&t).map_or(1, |e| e.2.max(1));
                (t, sum / k as f64)
            })
            .collect(),
        iou: per_task
            .into_iter()
            .map(|(t, (a, b, k))| (t, a / k as f64, b / k as f64, k))
            .collect(),
    })
}

/// Trains a world model of configuration `cfg` on the cache `data`, writing into `out`.
pub fn train(
    data: &Dataset,
    cfg: &Config,
    tc: &TrainConfig,
    out: &Path,
    progress: &dyn Fn(TrainEvent),
) -> Result<TrainSummary, WorldModelError> {
    cfg.validate().map_err(WorldModelError::Data)?;
    let c = &data.index.config;
    if (c.width, c.height, c.frames, c.crop) != (cfg.width, cfg.height, cfg.frames, cfg.crop) {
        return Err(WorldModelError::Data(format!(
            "the clip cache was cut for {}×{}, {} frames, crop {:?}; the model wants {}×{}, {} frames, crop {:?}",
            c.width, c.height, c.frames, c.crop, cfg.width, cfg.height, cfg.frames, cfg.crop
        )));
    }
    if tc.batch == 0 || tc.steps == 0 || !(tc.lr > 0.0 && tc.lr.is_finite()) {
        return Err(WorldModelError::Data(format!(
            "steps, batch and lr must be > 0 (steps {}, batch {}, lr {})",
            tc.steps, tc.batch, tc.lr
        )));
    }
    // 0 checkpointed every step (the model and the curve rewritten each time) without a
    // word before session 44.
    if tc.checkpoint_every == 0 {
        return Err(WorldModelError::Data(
            "checkpoint_every must be ≥ 1 (steps between checkpoints)".into(),
        ));
    }
    let (train_ids, val_ids) = data.split(tc.val_split);
    if train_ids.is_empty() {
        return Err(WorldModelError::Data(
            "no training clips after the validation split (record more episodes)".into(),
        ));
    }
    let val_ids = spread(val_ids, tc.val_clips);
    std::fs::create_dir_all(out).map_err(|source| WorldModelError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let _lock = checkpoint::lock_output(out).map_err(WorldModelError::Data)?;

    let device = tc
        .device
        .open()
        .map_err(|e| WorldModelError::Data(e.to_string()))?;
    let (model, vars) = init_vars_on(cfg, tc.seed, &device)?;
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWParams {
            lr: tc.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let ck = checkpoint_path(out);
    // What the run trains on: the config, the settings, and the clips themselves (their
    // bags, episodes and steps), so that a checkpoint is not resumed on other bags that
    // happen to give as many clips (`checkpoint::same_run` compares older checkpoints,
    // which have no "data", without it).
    let clip_list: Vec<(&str, u32, u32)> = data
        .index
        .clips
        .iter()
        .map(|c| (c.bag.as_str(), c.episode, c.step))
        .collect();
    let fnv = checkpoint::fnv1a(
        serde_json::to_string(&clip_list)
            .expect("clip list serialises")
            .as_bytes(),
    );
    // The bags' files too (name, size, modification time): bags recorded again at the
    // same paths can give the same episodes and steps, and a resumed run would go on
    // training on other data (a review finding, session 52).
    let sources = checkpoint::fnv1a(
        serde_json::to_string(&data.index.sources)
            .expect("source list serialises")
            .as_bytes(),
    );
    let run_id = serde_json::json!({
        "config": cfg, "train": tc, "clips": data.index.clips.len(),
        "data": {"bags": data.index.bags, "clip_list_fnv1a": format!("{fnv:016x}"),
                 "sources_fnv1a": format!("{sources:016x}")},
    });
    let mut losses: Vec<f64> = Vec::new();
    let mut validations: Vec<ValStats> = Vec::new();
    let mut start = 0;
    // Seconds the checkpoint's earlier invocations trained (absent before session 38).
    let mut before = 0.0;
    if ck.exists() {
        let (tensors, state) =
            checkpoint::load(&ck).map_err(|e| WorldModelError::Checkpoint(e.to_string()))?;
        if !checkpoint::same_run(state.get("run"), &run_id) {
            return Err(WorldModelError::Checkpoint(format!(
                "{} holds a checkpoint of another run ({}); use another --out or delete it",
                out.display(),
                checkpoint::run_difference(state.get("run"), &run_id)
            )));
        }
        start = state["step"].as_u64().unwrap_or(0) as usize;
        before = state["seconds"].as_f64().unwrap_or(0.0);
        opt.restore(&tensors, start)
            .map_err(|e| WorldModelError::Checkpoint(format!("{}: {e}", ck.display())))?;
        let parse = |key: &str| state[key].clone();
        losses = serde_json::from_value(parse("losses"))
            .map_err(|e| WorldModelError::Checkpoint(format!("{}: {e}", ck.display())))?;
        validations = serde_json::from_value(parse("validations"))
            .map_err(|e| WorldModelError::Checkpoint(format!("{}: {e}", ck.display())))?;
        progress(TrainEvent::Resumed(start));
    } else {
        // A fresh run: a task choice left by an earlier run in this folder would be paired
        // with these weights (and outlive them when this run validates nothing).
        let stale = out.join(super::predict::TASK_CHOICE_FILE);
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(|source| WorldModelError::Io {
                path: stale.clone(),
                source,
            })?;
        }
    }
    let t0 = Instant::now();
    let save = |opt: &AdamW, step: usize, losses: &[f64], vals: &[ValStats]| {
        let tensors = opt.state_tensors();
        let state = serde_json::json!({
            "run": run_id, "step": step, "losses": losses, "validations": vals,
            "seconds": before + t0.elapsed().as_secs_f64(),
        });
        checkpoint::save(&ck, &tensors, &state)
            .map_err(|e| WorldModelError::Checkpoint(e.to_string()))?;
        save_model(out, cfg, &vars)?;
        let _ = curves(losses, vals, &out.join("curves.png"));
        Ok::<(), WorldModelError>(())
    };

    let mut last_good = start;
    let shape = [tc.batch, cfg.frames, 3, cfg.height, cfg.width];
    for step in start..tc.steps {
        opt.params.lr = if step < tc.warmup {
            tc.lr * (step + 1) as f64 / tc.warmup as f64
        } else {
            let p = (step - tc.warmup) as f64 / (tc.steps - tc.warmup).max(1) as f64;
            tc.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
        };
        let mut rng = Rng::new(tc.seed, 0x3D00 + step as u64);
        let ids: Vec<usize> = (0..tc.batch)
            .map(|_| train_ids[rng.below(train_ids.len())])
            .collect();
        let times: Vec<f32> = (0..tc.batch)
            .map(|_| (1.0 / (1.0 + (-gaussian(&mut rng)).exp())) as f32)
            .collect();
        let t = Tensor::from_vec(times, tc.batch, &Device::Cpu)?;
        let eps = noise(&mut rng, &shape)?;
        let b = data.batch(&ids, model.config())?;
        let loss_t = model.flow_loss(&b.future, &t, &eps, &b.context, &b.arm, b.prior.as_ref())?;
        let loss = f64::from(loss_t.to_scalar::<f32>()?);
        let grads = loss_t.backward()?;
        if !loss.is_finite() || !opt.grads_finite(&grads)? {
            return Err(WorldModelError::NotFinite {
                step: step + 1,
                loss,
                checkpoint: last_good,
            });
        }
        opt.step(&grads)?;
        losses.push(loss);
        progress(TrainEvent::Step {
            step: step + 1,
            total: tc.steps,
            loss,
        });
        let done = step + 1 == tc.steps;
        if !val_ids.is_empty() && (done || (tc.val_every > 0 && (step + 1) % tc.val_every == 0)) {
            let v = validate(&model, data, &val_ids, step + 1, tc.seed)?;
            progress(TrainEvent::Validated(v.clone()));
            validations.push(v);
        }
        if done || (step + 1) % tc.checkpoint_every.max(1) == 0 {
            save(&opt, step + 1, &losses, &validations)?;
            last_good = step + 1;
        }
    }
    if start >= tc.steps {
        save_model(out, cfg, &vars)?;
    }
    let summary = TrainSummary {
        config: cfg.clone(),
        train: tc.clone(),
        clips: (train_ids.len(), val_ids.len()),
        losses,
        validations,
        seconds: before + t0.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    super::dataset::write_atomic(&out.join("train_summary.json"), &json)?;
    // Which tasks the prior predicts alone, from the last validation (a run without one
    // leaves the file as it is).
    if let Some(choice) = summary
        .validations
        .last()
        .and_then(super::predict::TaskChoice::from_validation)
    {
        let json = serde_json::to_vec_pretty(&choice).expect("task choice serialises");
        super::dataset::write_atomic(&out.join(super::predict::TASK_CHOICE_FILE), &json)?;
    }
    Ok(summary)
}

/// Loss and validation curves as PNG.
pub fn curves(losses: &[f64], vals: &[ValStats], path: &Path) -> Result<(), String> {
    use crate::plot::{line_panels, smooth, Panel, Series};
    let mut iou_model = Vec::new();
    let mut iou_copy = Vec::new();
    // Validation values on the step axis: held between validations.
    let mut k = 0;
    let (mut im, mut ic) = (f64::NAN, f64::NAN);
    for s in 1..=losses.len() {
        while k < vals.len() && vals[k].step <= s {
            let n: usize = vals[k].iou.iter().map(|x| x.3).sum::<usize>().max(1);
            im = vals[k].iou.iter().map(|x| x.1 * x.3 as f64).sum::<f64>() / n as f64;
            ic = vals[k].iou.iter().map(|x| x.2 * x.3 as f64).sum::<f64>() / n as f64;
            k += 1;
        }
        iou_model.push(im);
        iou_copy.push(ic);
    }
    line_panels(
        &[
            Panel {
                title: "flow loss (smoothed)",
                series: vec![Series {
                    label: "loss",
                    values: smooth(losses, 25),
                    rgb: (31, 119, 180),
                }],
            },
            Panel {
                title: "validation: final-frame object IoU",
                series: vec![
                    Series {
                        label: "world model",
                        values: iou_model,
                        rgb: (214, 39, 40),
                    },
                    Series {
                        label: "copy current frame",
                        values: iou_copy,
                        rgb: (127, 127, 127),
                    },
                ],
            },
        ],
        path,
    )
}

#[cfg(test)]
mod tests {
    use super::TrainConfig;

    #[test]
    fn the_warm_up_is_at_most_a_tenth_of_the_run() {
        let short = TrainConfig {
            steps: 200,
            ..TrainConfig::default()
        };
        assert_eq!(short.warmup_capped().warmup, 20);
        assert_eq!(TrainConfig::default().warmup_capped().warmup, 100);
        let small = TrainConfig {
            steps: 5000,
            warmup: 7,
            ..TrainConfig::default()
        };
        assert_eq!(small.warmup_capped().warmup, 7);
    }
}
