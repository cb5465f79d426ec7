//! The ORPO trainer (odds ratio preference optimisation, Hong et al. 2024) on a preference
//! file: `dreamplan train-orpo --planner DIR --pairs FILE --out DIR`.
//!
//! Each step takes `batch` states, in turn from each task so that every task is trained as
//! often whatever its share of pairs (drawn with a generator seeded by the run seed and the
//! step number, so a resumed run draws what an uninterrupted one draws). A state's pairs
//! share their prompt and their chosen answer, so each state is one row: the prompt, then
//! the chosen answer `pick N place M<|im_end|>`, then up to `rejected` of its rejected
//! answers, each answer attending to the prompt and to itself only and placed as if it
//! alone followed the prompt ([`Qwen3Vl::forward_rows_packed`]; its logits equal those of
//! separate rows, `tests/stage3.rs`). The prompt, nearly all of a row, is run once instead
//! of twice per pair. The step reads the logits at the answer positions only and minimises
//! `NLL(chosen) − λ·log σ(log odds(chosen) − log odds(rejected))` with the mean token
//! log-probability of each answer, averaged per state and then over states
//! ([`crate::vlm::loss::orpo_grouped`]).
//!
//! What is trained: LoRA adapters on the text model's projections (PEFT format, the
//! default; `--model` + `--adapter` loads them, merged, at no latency cost), or with
//! `full` every weight (allowed for the tiny model: its output is then a whole model folder).
//!
//! Safety of a long run: a checkpoint (weights and AdamW moments and the metric history, one
//! safetensors file, [`super::checkpoint`]) every `checkpoint_every` steps, written
//! atomically; a re-run with the same settings resumes from it (after `kill -9` too). A loss
//! or gradient that is not finite stops the run with an error before the update is applied,
//! so the last checkpoint is the last good state.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use super::adamw::{AdamW, AdamWParams};
use super::checkpoint;
use crate::device::{DeviceSpec, DtypeSpec};
use crate::planner::vlm_planner::{model_view, prompt_form, Processor};
use crate::planner::{prompt, KeypointChoice};
use crate::sim::rng::Rng;
use crate::sim::tasks::Task;
use crate::train::zero_shot::{answer_text_ids, left_pad};
use crate::verifier::preferences::{self as prefs, keypoints_from_file, PreferenceFile};
use crate::vlm::image::Rgb8;
use crate::vlm::lora::{self, LoraConfig};
use crate::vlm::loss::orpo_grouped;
use crate::vlm::model::{Batch, Images};
use crate::vlm::weights::WeightStore;
use crate::vlm::{Config, Mode, Qwen3Vl, VlmError};

/// What the trainer changes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Method {
    /// LoRA adapters of rank `r` (scale `alpha / r`) on every text projection.
    Lora {
        /// Rank.
        r: usize,
        /// Alpha.
        alpha: f64,
    },
    /// Every weight of the model.
    Full,
}

/// Settings of a run (a partial map, e.g. in a node's parameters, takes the defaults for
/// what it leaves out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrpoConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// States per step, drawn in turn from each task's states (a step of 8 over three
    /// tasks holds 3, 3 and 2; the next step starts where it stopped).
    pub batch: usize,
    /// Rejected answers per state and step (drawn among the state's when it has more).
    /// The state's prompt is run once, its chosen and rejected answers packed after it
    /// ([`Qwen3Vl::forward_rows_packed`]).
    #[serde(default = "default_rejected")]
    pub rejected: usize,
    /// Peak learning rate (linear warm-up, then cosine decay to 10%).
    pub lr: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Weight λ of the odds-ratio term.
    pub lambda: f64,
    /// LoRA or full fine-tuning.
    pub method: Method,
    /// Seed of the pair draws and the adapters' initialisation.
    pub seed: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Train on this task's states only (a per-task adapter, [`train_per_task`]); `None`:
    /// every task's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// Where the run computes. Not part of the run's identity: a checkpoint made on one
    /// device resumes on another. Read from a node's parameters (`orpo.device`), never
    /// written; before session 44 it was not read either, and a node's `orpo.device: cuda`
    /// trained on the CPU without a word.
    #[serde(skip_serializing)]
    pub device: DeviceSpec,
    /// The base model's compute dtype (`auto`: f32 on the CPU, bf16 on a GPU); LoRA
    /// adapters and the optimiser stay f32. `--full` training needs f32.
    #[serde(skip_serializing)]
    pub dtype: DtypeSpec,
}

impl OrpoConfig {
    /// This config with its warm-up at most a tenth of its steps (what [`train`] runs).
    pub fn warmup_capped(self) -> Self {
        Self {
            warmup: self.warmup.min(self.steps / 10),
            ..self
        }
    }
}

impl Default for OrpoConfig {
    fn default() -> Self {
        Self {
            // 200 since session 31: on the DreamPlan pairs the tuned planner went from
            // +0.21 to +0.31 on validation seeds with twice the steps (docs/stage3.md).
            steps: 200,
            batch: 8,
            rejected: 8,
            lr: 1e-3,
            warmup: 10,
            lambda: 2.0,
            method: Method::Lora { r: 16, alpha: 32.0 },
            seed: 0,
            checkpoint_every: 25,
            task: None,
            device: DeviceSpec::Cpu,
            dtype: DtypeSpec::Auto,
        }
    }
}

fn default_rejected() -> usize {
    8
}

/// Errors of ORPO training.
#[derive(Debug, thiserror::Error)]
pub enum OrpoError {
    /// The preference file.
    #[error(transparent)]
    Pairs(#[from] prefs::PreferenceError),
    /// The pairs cannot train this planner.
    #[error("{0}")]
    Data(String),
    /// The model layer.
    #[error(transparent)]
    Vlm(#[from] VlmError),
    /// candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// Building a batch.
    #[error(transparent)]
    Batch(#[from] crate::train::zero_shot::ZeroShotError),
    /// A file.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The loss or a gradient stopped being finite.
    #[error("the loss or a gradient is not finite at step {step} (loss {loss}); nothing of this step was applied and {}; every step is seeded, so the same command meets this step again: lower --lr or --lambda and train into a new --out (this checkpoint resumes only its own settings)", crate::train::checkpoint::kept(.last_good))]
    NotFinite {
        /// The step.
        step: usize,
        /// Its loss.
        loss: f64,
        /// Step of the checkpoint on disk (0: none yet).
        last_good: usize,
    },
}

type Result<T> = std::result::Result<T, OrpoError>;

/// One step's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepStats {
    /// The loss minimised.
    pub loss: f64,
    /// NLL of the chosen answers (mean token).
    pub nll: f64,
    /// Mean log odds ratio (chosen vs rejected).
    pub log_odds_ratio: f64,
    /// Mean token log-prob of the chosen answers.
    pub chosen_logp: f64,
    /// Mean token log-prob of the rejected answers.
    pub rejected_logp: f64,
    /// Fraction of pairs whose chosen answer is the more likely.
    pub accuracy: f64,
}

/// A training group: a state, its chosen answer and every answer rejected against it.
struct Group {
    state: usize,
    chosen: Answer,
    rejected: Vec<Answer>,
}

/// An answer of a pair: the action, and the text trained (as the planner wrote it, a
/// reasoning line included).
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    choice: KeypointChoice,
    text: String,
}

/// A state as the model is shown it.
struct ShownState {
    task: Task,
    current: Rgb8,
    goal: Rgb8,
    messages: serde_json::Value,
}

fn load_png(path: &Path) -> Result<Rgb8> {
    let img = crate::vlm::image::open_upright(path)
        .map_err(|e| OrpoError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .to_rgb8();
    Ok(Rgb8 {
        width: img.width() as usize,
        height: img.height() as usize,
        data: img.into_raw(),
    })
}

/// Checks that `file` can train the planner in `planner_dir` and lists its examples (those
/// of task `only` when given).
fn examples(
    file: &PreferenceFile,
    pairs_path: &Path,
    planner_dir: &Path,
    processor: &Processor,
    only: Option<Task>,
) -> Result<(Vec<ShownState>, Vec<Group>, usize)> {
    let fp = prefs::tokenizer_fingerprint(planner_dir)?;
    if fp != file.header.tokenizer {
        return Err(OrpoError::Data(format!(
            "{} was made for a planner with another tokenizer ({}; {} has {fp}): answers would be trained as other tokens. Make the pairs with this planner.",
            pairs_path.display(),
            file.header.tokenizer,
            planner_dir.display()
        )));
    }
    if file.states.is_empty() {
        return Err(OrpoError::Data(format!(
            "{} holds no state: nothing to train on",
            pairs_path.display()
        )));
    }
    let base = pairs_path.parent().unwrap_or(Path::new("."));
    let mut shown = Vec::new();
    let mut out: Vec<Group> = Vec::new();
    let mut pairs = 0usize;
    // The planner folder's prompt form, read once (not per state).
    let form = prompt_form(planner_dir);
    // In (task, seed) order, not the file's: a preference file written by several threads
    // (or resumed) holds its states in completion order, and training draws by position,
    // so the same states must train the same adapter whatever order they were written in.
    let mut states: Vec<_> = file.states.iter().collect();
    states.sort_by_key(|st| {
        let task = Task::ALL.iter().position(|t| t.name() == st.task);
        (task.unwrap_or(usize::MAX), st.task.clone(), st.seed)
    });
    for st in states {
        if st.pairs.is_empty() {
            continue;
        }
        let task = Task::from_name(&st.task).ok_or_else(|| {
            OrpoError::Data(format!("state {} has unknown task {:?}", st.seed, st.task))
        })?;
        if only.is_some_and(|t| t != task) {
            continue;
        }
        let kc = keypoints_from_file(&st.current_keypoints);
        let kg = keypoints_from_file(&st.goal_keypoints);
        let current = load_png(&base.join(&st.current_image))?;
        let goal = load_png(&base.join(&st.goal_image))?;
        let overlay = |img: &Rgb8, kps: &[crate::vision::Keypoint]| {
            model_view(img, kps, &processor.preprocessor)
                .map_err(|e| OrpoError::Data(format!("state {}: overlay: {e}", st.seed)))
        };
        let index = shown.len();
        for p in &st.pairs {
            let get = |i: usize| {
                st.candidates
                    .get(i)
                    .map(|c| Answer {
                        choice: c.choice(),
                        text: c.text(),
                    })
                    .ok_or_else(|| {
                        OrpoError::Data(format!(
                            "{} state {} ({}): pair names candidate {i} of {}",
                            pairs_path.display(),
                            st.seed,
                            st.task,
                            st.candidates.len()
                        ))
                    })
            };
            let (chosen, rejected) = (get(p.chosen)?, get(p.rejected)?);
            let fits = |c: &KeypointChoice| {
                c.pick >= 1
                    && c.place >= 1
                    && kc.iter().any(|k| k.id == c.pick)
                    && kg.iter().any(|k| k.id == c.place)
            };
            if chosen.choice == rejected.choice || !fits(&chosen.choice) || !fits(&rejected.choice)
            {
                return Err(OrpoError::Data(format!(
                    "{} state {} ({}): pair {:?} / {:?} is not two different answers about its keypoints",
                    pairs_path.display(),
                    st.seed,
                    st.task,
                    chosen.choice,
                    rejected.choice
                )));
            }
            pairs += 1;
            match out
                .iter_mut()
                .find(|g| g.state == index && g.chosen == chosen)
            {
                Some(g) => {
                    if !g.rejected.contains(&rejected) {
                        g.rejected.push(rejected);
                    }
                }
                None => out.push(Group {
                    state: index,
                    chosen,
                    rejected: vec![rejected],
                }),
            }
        }
        shown.push(ShownState {
            task,
            messages: prompt::messages_in(
                form,
                task,
                &kc,
                &kg,
                current.width as u32,
                current.height as u32,
            ),
            current: overlay(&current, &kc)?,
            goal: overlay(&goal, &kg)?,
        });
    }
    if out.is_empty() && only.is_some() {
        return Err(OrpoError::Data(format!(
            "{} has no pair for task {}: nothing to train its adapter on",
            pairs_path.display(),
            only.map_or("", Task::name)
        )));
    }
    if out.is_empty() {
        return Err(OrpoError::Data(format!(
            "{} is one-sided: {} states but no pair (no candidate scored more than the margin {} below the best); sample more candidates (--k), raise --temperature or lower --margin",
            pairs_path.display(),
            file.states.len(),
            file.header.margin
        )));
    }
    Ok((shown, out, pairs))
}

/// One step's input: per state a row holding its prompt, then its chosen answer, then its
/// rejected ones, each answer a segment that sees only the prompt and itself.
struct PackedStep {
    batch: Batch,
    segments: Vec<Vec<(usize, usize)>>,
    /// Flat positions `b · L + l` whose logits score an answer token, answer by answer.
    rows: Vec<usize>,
    /// The token each of them scores.
    targets: Vec<u32>,
    /// The answer (numbered over the step, row by row, segment by segment) each scores.
    answer: Vec<usize>,
    /// Answers in the step.
    answers: usize,
}

fn packed_step(p: &Processor, rows: &[(&ShownState, Vec<Answer>)]) -> Result<PackedStep> {
    let pad = p
        .tokenizer
        .token_id("<|endoftext|>")
        .ok_or_else(|| OrpoError::Data("the tokenizer has no <|endoftext|>".into()))?;
    let mut built = Vec::new();
    let mut pixels = Vec::new();
    let mut grids = Vec::new();
    for (s, answers) in rows {
        let prompt = p.batch(&s.messages, &s.current, &s.goal)?;
        let mut ids = prompt.input_ids.into_iter().next().unwrap_or_default();
        let prompt_len = ids.len();
        let mut segs = Vec::new();
        for a in answers {
            let more = answer_text_ids(p, &a.text)?;
            segs.push((ids.len(), more.len()));
            ids.extend(more);
        }
        if let Some(images) = prompt.images {
            pixels.push(images.pixel_values);
            grids.extend(images.grid_thw);
        }
        built.push((ids, prompt_len, segs));
    }
    let len = built.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let mut out = PackedStep {
        batch: Batch {
            input_ids: Vec::new(),
            attention_mask: Some(Vec::new()),
            images: None,
        },
        segments: Vec::new(),
        rows: Vec::new(),
        targets: Vec::new(),
        answer: Vec::new(),
        answers: 0,
    };
    let mut unpadded = Vec::new();
    for (b, (ids, prompt_len, segs)) in built.into_iter().enumerate() {
        let padn = len - ids.len();
        for &(start, n) in &segs {
            for k in 0..n {
                // The first token of every answer is scored where the prompt ends.
                let at = if k == 0 {
                    prompt_len - 1
                } else {
                    start + k - 1
                };
                out.rows.push(b * len + padn + at);
                out.targets.push(ids[start + k]);
                out.answer.push(out.answers);
            }
            out.answers += 1;
        }
        out.segments
            .push(segs.iter().map(|&(st, n)| (st + padn, n)).collect());
        unpadded.push(ids);
    }
    let (input_ids, mask) = left_pad(unpadded, pad);
    out.batch.input_ids = input_ids;
    out.batch.attention_mask = Some(mask);
    out.batch.images = Some(Images {
        pixel_values: Tensor::cat(&pixels, 0)?,
        grid_thw: grids,
    });
    Ok(out)
}

/// Mean log-probability of each answer's tokens, `[answers]`, from the logits at
/// `step.rows` (`[n, vocab]`).
fn answer_logprobs(logits: &Tensor, step: &PackedStep) -> Result<Tensor> {
    let n = step.targets.len();
    if logits.dim(0)? != n {
        return Err(OrpoError::Data(format!(
            "{} rows of logits for {n} answer tokens",
            logits.dim(0)?
        )));
    }
    let mut counts = vec![0usize; step.answers];
    for &a in &step.answer {
        counts[a] += 1;
    }
    let mut w = vec![0f32; step.answers * n];
    for (i, &a) in step.answer.iter().enumerate() {
        w[a * n + i] = 1.0 / counts[a] as f32;
    }
    let device = logits.device();
    // The loss in f32 whatever the model computes in (bf16 log-odds lose the pair's gap).
    let logits = &logits.to_dtype(DType::F32)?;
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?.gather(
        &Tensor::from_vec(step.targets.clone(), (n, 1), device)?,
        D::Minus1,
    )?;
    let w = Tensor::from_vec(w, (step.answers, n), device)?.to_dtype(logp.dtype())?;
    Ok(w.matmul(&logp)?.squeeze(1)?)
}

/// Refuses an output folder that is the planner's own: a whole model's side files were
/// copied onto themselves (`std::fs::copy` truncates first: `config.json` ended empty), and
/// an adapter's checkpoint joined the planner's weight files, so its own resume was refused
/// as another run's.
fn not_into_the_planner(planner_dir: &Path, out: &Path) -> Result<()> {
    let same = match (planner_dir.canonicalize(), out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(OrpoError::Data(format!(
            "the output folder {} is the planner's own folder: choose another --out",
            out.display()
        )));
    }
    Ok(())
}

/// What to tell the user when `pairs` were not sampled by the weights this run trains: an
/// adapter on top of the planner (this run trains a new adapter on the planner alone, which
/// replaces that one instead of building on it), or planner weight files that changed since
/// (rebuilt or trained again at the same path). ORPO needs no reference model, so either run
/// is valid, but rarely what was meant; before session 45 it ran without a word.
fn sampled_elsewhere(
    header: &prefs::Header,
    pairs: &Path,
    planner_dir: &Path,
) -> Result<Option<String>> {
    if !header.adapter.is_empty() {
        return Ok(Some(format!(
            "{} was sampled with the adapter {} on {}; this run trains a new adapter on {} alone, \
             which replaces that adapter instead of building on it. To build on it, merge it \
             (`dreamplan merge-adapter`) and make the pairs with, and train on, the merged folder.",
            pairs.display(),
            header.adapter,
            header.planner,
            planner_dir.display()
        )));
    }
    if !header.weights.is_empty()
        && header.weights != prefs::weights_fingerprint(planner_dir, None)?
    {
        return Ok(Some(format!(
            "the weight files of {} (names, sizes, modification times) differ from those {} \
             was sampled with: if the planner was built or trained again since, the pairs hold \
             another planner's answers (a copied folder differs too, harmlessly).",
            planner_dir.display(),
            pairs.display()
        )));
    }
    Ok(None)
}

/// Progress of [`train`].
#[derive(Debug, Clone)]
pub enum OrpoProgress {
    /// Resumed from a checkpoint at this step.
    Resumed(usize),
    /// Something the user should know before trusting the run, said once before the first
    /// step (e.g. the pairs were sampled with an adapter this run does not build on).
    Note(String),
    /// A step finished.
    Step {
        /// Steps done.
        step: usize,
        /// Steps to do.
        total: usize,
        /// Its figures.
        stats: StepStats,
    },
}

/// What `orpo.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrpoReport {
    /// The settings.
    pub config: OrpoConfig,
    /// Planner folder.
    pub planner: String,
    /// Preference file.
    pub pairs: String,
    /// Pairs and states with pairs.
    pub examples: usize,
    /// States with at least one pair.
    pub states: usize,
    /// Every step's figures.
    pub history: Vec<StepStats>,
    /// Trainable parameters.
    pub trainable: usize,
    /// Wall seconds of training over every invocation of the run (a resumed run adds its
    /// own to its checkpoint's; before session 44 only the last invocation's counted).
    pub seconds: f64,
}

const CHECKPOINT: &str = "checkpoint.safetensors";

/// Where [`train`] keeps its checkpoint inside `out`.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.join(CHECKPOINT)
}

/// The rate of `step`: a linear warm-up to `cfg.lr` over `cfg.warmup` steps, then a cosine
/// decay to a tenth of it at the last step.
fn learning_rate(cfg: &OrpoConfig, step: usize) -> f64 {
    if step < cfg.warmup {
        cfg.lr * (step + 1) as f64 / cfg.warmup as f64
    } else {
        let p = (step - cfg.warmup) as f64 / (cfg.steps - cfg.warmup).max(1) as f64;
        cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
    }
}

/// Trains `planner_dir` on `pairs` into `out` (a LoRA adapter folder, or a model folder with
/// [`Method::Full`]), resuming from `out`'s checkpoint when one from the same settings is
/// there.
pub fn train(
    planner_dir: &Path,
    pairs: &Path,
    out: &Path,
    cfg: &OrpoConfig,
    progress: &dyn Fn(OrpoProgress),
) -> Result<OrpoReport> {
    if cfg.steps == 0 || cfg.batch == 0 || cfg.rejected == 0 || cfg.checkpoint_every == 0 {
        return Err(OrpoError::Data(
            "steps, batch, rejected and checkpoint_every must be positive".into(),
        ));
    }
    // The warm-up is at most a tenth of the run, as the world model's trainer sets it:
    // before session 52 a run of 10 steps or fewer never reached its peak rate nor began
    // its decay (`experiment --quick` trains 2). Runs of 100 steps and more are unchanged.
    let capped = cfg.clone().warmup_capped();
    let cfg = &capped;
    if !(cfg.lr > 0.0 && cfg.lr.is_finite() && cfg.lambda >= 0.0 && cfg.lambda.is_finite()) {
        return Err(OrpoError::Data(
            "lr must be > 0 and lambda ≥ 0, both finite".into(),
        ));
    }
    not_into_the_planner(planner_dir, out)?;
    crate::vlm::check_finished(planner_dir)?;
    let processor = Processor::load(planner_dir)?;
    let file = prefs::read(pairs)?;
    let (shown, groups, pair_count) = examples(&file, pairs, planner_dir, &processor, cfg.task)?;
    if let Some(note) = sampled_elsewhere(&file.header, pairs, planner_dir)? {
        progress(OrpoProgress::Note(note));
    }
    let by_task: Vec<Vec<usize>> = Task::ALL
        .iter()
        .map(|&t| {
            (0..groups.len())
                .filter(|&g| shown[groups[g].state].task == t)
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
        .collect();
    let fs_err = |path: &Path, e: std::io::Error| OrpoError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    };

    // The model and what is trained.
    let config = Config::load(planner_dir)?;
    let device = cfg
        .device
        .open()
        .map_err(|e| OrpoError::Data(e.to_string()))?;
    let dtype = cfg.dtype.resolve(cfg.device);
    let (model, named, _store, lora_cfg) = match cfg.method {
        Method::Full => {
            if dtype != DType::F32 {
                return Err(OrpoError::Data(format!(
                    "--full trains every weight, which needs f32 (asked: {:?}); use --dtype f32 or LoRA",
                    dtype
                )));
            }
            let store = WeightStore::open_trainable(planner_dir, DType::F32, &device)?;
            let model = Qwen3Vl::from_store(config, &store)?;
            let named = store.vars();
            (model, named, Some(store), None)
        }
        Method::Lora { r, alpha } => {
            let mut model = Qwen3Vl::load(planner_dir, dtype, &device)?;
            let lcfg = LoraConfig {
                r,
                lora_alpha: alpha,
                ..LoraConfig::default()
            };
            lora::attach(model.text_mut(), &lcfg, cfg.seed)?;
            let named: Vec<(String, Var)> = model
                .text()
                .linears()
                .filter_map(|l| {
                    l.lora().map(|a| {
                        [
                            (lora::peft_key(l.path(), "lora_A"), a.a().clone()),
                            (lora::peft_key(l.path(), "lora_B"), a.b().clone()),
                        ]
                    })
                })
                .flatten()
                .collect();
            (model, named, None, Some(lcfg))
        }
    };
    let trainable = named.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = AdamW::new(
        named,
        AdamWParams {
            lr: cfg.lr,
            ..Default::default()
        },
    )?;

    // Resume.
    let ck = checkpoint_path(out);
    let mut history: Vec<StepStats> = Vec::new();
    let mut start = 0usize;
    // Seconds of training spent by earlier invocations of this run (its checkpoint's).
    let mut before = 0.0;
    // What the run trains: the settings, and the data itself (the pairs file's bytes, the
    // planner's weight files by size and time), so that a checkpoint is not resumed on
    // other pairs with as many examples or on a rebuilt planner of the same shape.
    // Checkpoints written before session 42 have no "data" and are compared without it.
    let mut weights: Vec<String> = std::fs::read_dir(planner_dir)
        .map_err(|e| fs_err(planner_dir, e))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .filter_map(|e| checkpoint::file_stamp(&e.path()).ok())
        .collect();
    weights.sort();
    let run_id = serde_json::json!({
        "config": cfg,
        "planner": planner_dir.display().to_string(),
        "pairs": pairs.display().to_string(),
        "examples": pair_count,
        "data": {
            "pairs_fnv1a": checkpoint::file_fingerprint(pairs).map_err(|e| fs_err(pairs, e))?,
            "planner_weights": weights,
        },
    });
    // Held from before the checkpoint is read until the report is written.
    let _lock = checkpoint::lock_output(out).map_err(OrpoError::Data)?;
    if ck.exists() {
        let (tensors, state) = checkpoint::load(&ck)?;
        if !checkpoint::same_run(state.get("run"), &run_id) {
            return Err(OrpoError::Data(format!(
                "{} holds a checkpoint of another run ({}); use another --out or delete it",
                out.display(),
                checkpoint::run_difference(state.get("run"), &run_id)
            )));
        }
        start = state["step"].as_u64().unwrap_or(0) as usize;
        opt.restore(&tensors, start)
            .map_err(|e| OrpoError::Data(format!("{}: {e}", ck.display())))?;
        history = serde_json::from_value(state["history"].clone())
            .map_err(|e| OrpoError::Data(format!("{}: history: {e}", ck.display())))?;
        before = state["seconds"].as_f64().unwrap_or(0.0);
        progress(OrpoProgress::Resumed(start));
    }
    // Every refusal is behind: only now is the folder written. It will hold one adapter
    // (or model): an adapter set left by an earlier per-task run here would be loaded in
    // its place (`--adapter` reads the set first). Before session 44 the set was removed
    // before the checks, so a refused run (f32 for --full, a checkpoint of another run)
    // still cost the folder its set.
    std::fs::create_dir_all(out).map_err(|e| fs_err(out, e))?;
    let set = out.join(crate::planner::adapters::ADAPTER_SET);
    if set.exists() {
        std::fs::remove_file(&set).map_err(|e| fs_err(&set, e))?;
    }
    let t0 = Instant::now();
    let save_checkpoint = |opt: &AdamW, step: usize, history: &[StepStats]| -> Result<()> {
        let tensors = opt.state_tensors();
        checkpoint::save(
            &ck,
            &tensors,
            &serde_json::json!({
                "run": run_id,
                "step": step,
                "history": history,
                "seconds": before + t0.elapsed().as_secs_f64(),
            }),
        )?;
        Ok(())
    };

    let mut last_good = start;
    for step in start..cfg.steps {
        let lr = learning_rate(cfg, step);
        opt.params.lr = lr;
        let mut rng = Rng::new(cfg.seed, 0x0B70 + step as u64);
        // The step's states, in turn from each task, and their answers.
        let mut rows: Vec<(&ShownState, Vec<Answer>)> = Vec::new();
        let mut chosen_of = Vec::new();
        let mut group = Vec::new();
        for i in 0..cfg.batch {
            let pool = &by_task[(step * cfg.batch + i) % by_task.len()];
            let g = &groups[pool[rng.below(pool.len())]];
            let mut rejected = g.rejected.clone();
            // A seeded partial shuffle keeps `rejected` of them.
            let keep = cfg.rejected.min(rejected.len());
            for j in 0..keep {
                let k = j + rng.below(rejected.len() - j);
                rejected.swap(j, k);
            }
            rejected.truncate(keep);
            let first = chosen_of.len() + group.len();
            chosen_of.push(first);
            group.extend(std::iter::repeat_n(i, rejected.len()));
            let mut answers = vec![g.chosen.clone()];
            answers.extend(rejected);
            rows.push((&shown[g.state], answers));
        }
        let packed = packed_step(&processor, &rows)?;
        let logits = model.forward_rows_packed(
            &packed.batch,
            &packed.segments,
            Mode::Train,
            &packed.rows,
        )?;
        let logp = answer_logprobs(&logits, &packed)?;
        let rejected_at: Vec<u32> = (0..packed.answers)
            .filter(|a| !chosen_of.contains(a))
            .map(|a| a as u32)
            .collect();
        let idx = |v: Vec<u32>| Tensor::from_vec(v.clone(), v.len(), logp.device());
        let lc = logp.index_select(&idx(chosen_of.iter().map(|&a| a as u32).collect())?, 0)?;
        let lr_ = logp.index_select(&idx(rejected_at)?, 0)?;
        let parts = orpo_grouped(&lc, &lr_, &group, cfg.lambda)?;
        let loss = f64::from(parts.loss.to_scalar::<f32>()?);
        let grads = parts.loss.backward()?;
        if !loss.is_finite() || !opt.grads_finite(&grads)? {
            return Err(OrpoError::NotFinite {
                step: step + 1,
                loss,
                last_good,
            });
        }
        opt.step(&grads)?;
        let c: Vec<f32> = lc.to_vec1()?;
        let r: Vec<f32> = lr_.to_vec1()?;
        let ratio: Vec<f32> = parts.log_odds_ratio.to_vec1()?;
        let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let stats = StepStats {
            loss,
            nll: f64::from(parts.nll.to_scalar::<f32>()?),
            log_odds_ratio: mean(&ratio),
            chosen_logp: mean(&c),
            rejected_logp: mean(&r),
            accuracy: r.iter().zip(&group).filter(|(rj, &g)| c[g] > **rj).count() as f64
                / r.len() as f64,
        };
        history.push(stats.clone());
        progress(OrpoProgress::Step {
            step: step + 1,
            total: cfg.steps,
            stats,
        });
        if (step + 1) % cfg.checkpoint_every.max(1) == 0 || step + 1 == cfg.steps {
            save_checkpoint(&opt, step + 1, &history)?;
            last_good = step + 1;
        }
    }

    // The result.
    match (&cfg.method, &lora_cfg) {
        (Method::Lora { .. }, Some(lcfg)) => lora::save(model.text(), lcfg, out)?,
        _ => write_model_folder(planner_dir, out, &opt)?,
    }
    let report = OrpoReport {
        config: cfg.clone(),
        planner: planner_dir.display().to_string(),
        pairs: pairs.display().to_string(),
        examples: pair_count,
        states: shown.len(),
        history,
        trainable,
        seconds: before + t0.elapsed().as_secs_f64(),
    };
    let path = out.join("orpo.json");
    checkpoint::write_atomic(
        &path,
        serde_json::to_string_pretty(&report)
            .expect("report serialises")
            .as_bytes(),
    )
    .map_err(|e| fs_err(&path, e))?;
    Ok(report)
}

/// [`train`] once per task that has pairs in the `pairs` files, each on that task's states
/// alone, into `out/<task>/`, then an adapter set naming them ([`crate::planner::adapters`]):
/// `--adapter out` then answers each task with its own adapter. A task's pairs must all be
/// in one of the files (so each task can have pairs made with its own settings, e.g. more
/// states where the simulator is cheap). `cfg.steps` is per task; each task's run resumes
/// on its own. LoRA only (`Method::Full` would make a whole model per task).
pub fn train_per_task(
    planner_dir: &Path,
    pairs: &[PathBuf],
    out: &Path,
    cfg: &OrpoConfig,
    progress: &dyn Fn(Task, OrpoProgress),
) -> Result<Vec<(Task, OrpoReport)>> {
    if cfg.method == Method::Full {
        return Err(OrpoError::Data(
            "per-task training makes LoRA adapters; full fine-tuning would make a whole model per task".into(),
        ));
    }
    not_into_the_planner(planner_dir, out)?;
    // Each task's file.
    let mut sources: Vec<(Task, &Path)> = Vec::new();
    let mut states = 0;
    for path in pairs {
        let file = prefs::read(path)?;
        states += file.states.len();
        for t in Task::ALL {
            if !file
                .states
                .iter()
                .any(|s| s.task == t.name() && !s.pairs.is_empty())
            {
                continue;
            }
            if let Some((_, first)) = sources.iter().find(|(task, _)| *task == t) {
                return Err(OrpoError::Data(format!(
                    "{} pairs are in both {} and {}: give each task's pairs in one file",
                    t.name(),
                    first.display(),
                    path.display()
                )));
            }
            sources.push((t, path));
        }
    }
    if sources.is_empty() {
        let names: Vec<String> = pairs.iter().map(|p| p.display().to_string()).collect();
        return Err(OrpoError::Data(format!(
            "{} has no pair of any task ({states} states): nothing to train on; sample more candidates (--k), raise --temperature or lower --margin",
            names.join(", ")
        )));
    }
    sources.sort_by_key(|(t, _)| Task::ALL.iter().position(|x| x == t));
    std::fs::create_dir_all(out).map_err(|e| OrpoError::File {
        path: out.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut reports = Vec::new();
    for &(task, path) in &sources {
        let one = OrpoConfig {
            task: Some(task),
            ..cfg.clone()
        };
        let report = train(planner_dir, path, &out.join(task.name()), &one, &|p| {
            progress(task, p)
        })?;
        reports.push((task, report));
    }
    let tasks: Vec<Task> = sources.iter().map(|(t, _)| *t).collect();
    crate::planner::adapters::AdapterSet::of_tasks(&tasks)
        .write(out)
        .map_err(|e| OrpoError::File {
            path: out.join(crate::planner::adapters::ADAPTER_SET),
            message: e.to_string(),
        })?;
    Ok(reports)
}

/// Copies a model folder's side files (configs, tokenizer, chat template: `*.json` and
/// `*.jinja`, not a trainer's `orpo.json`) into `out`.
fn copy_side_files(planner_dir: &Path, out: &Path) -> Result<()> {
    let err = |path: &Path, e: String| OrpoError::File {
        path: path.to_path_buf(),
        message: e,
    };
    let entries = std::fs::read_dir(planner_dir).map_err(|e| err(planner_dir, e.to_string()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name_s = name.to_string_lossy();
        // Not a sharded checkpoint's index: the folder written here holds one
        // `model.safetensors`, and a loader that follows the index (vLLM) would look for
        // shards that are not there (copied before session 52).
        let keep = entry.path().is_file()
            && (name_s.ends_with(".json") || name_s.ends_with(".jinja"))
            && name_s != "orpo.json"
            && !name_s.ends_with(".safetensors.index.json");
        if keep {
            std::fs::copy(entry.path(), out.join(&name))
                .map_err(|e| err(&entry.path(), e.to_string()))?;
        }
    }
    Ok(())
}

/// A whole model folder: the planner's files with the trained weights.
fn write_model_folder(planner_dir: &Path, out: &Path, opt: &AdamW) -> Result<()> {
    copy_side_files(planner_dir, out)?;
    let tensors: Vec<(String, Tensor)> = opt
        .slots
        .iter()
        .map(|(n, v, _, _)| (n.clone(), v.as_tensor().detach()))
        .collect();
    let path = out.join("model.safetensors");
    let entries: Vec<(&String, &Tensor)> = tensors.iter().map(|(n, t)| (n, t)).collect();
    let meta = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let err = |path: &Path, e: String| OrpoError::File {
        path: path.to_path_buf(),
        message: e,
    };
    // Streamed to a temporary file (a whole model does not go through memory twice),
    // synced, then renamed over the old one.
    let tmp = out.join("model.safetensors.tmp");
    safetensors::serialize_to_file(entries, meta, &tmp).map_err(|e| err(&tmp, e.to_string()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| checkpoint::sync_dir_of(&path))
        .map_err(|e| err(&path, e.to_string()))
}

/// A whole model folder in `out`: `base`'s files with the LoRA `adapter` merged into its
/// weights. What a next ORPO round trains from (its pairs sampled from the tuned planner).
pub fn merge_adapter(base: &Path, adapter: &Path, out: &Path) -> Result<()> {
    not_into_the_planner(base, out)?;
    if crate::planner::adapters::AdapterSet::is_set(adapter) {
        return Err(OrpoError::Data(format!(
            "{} is an adapter set (one adapter per task): merge one of its task folders, e.g. {}",
            adapter.display(),
            adapter.join("cloth").display()
        )));
    }
    crate::vlm::check_finished(base)?;
    let store = WeightStore::open(base, DType::F32, &Device::Cpu)?;
    let mut model = Qwen3Vl::from_store(Config::load(base)?, &store)?;
    lora::load(model.text_mut(), adapter)?;
    lora::merge(model.text_mut())?;
    // Only a merge that worked makes the folder (a refused base or adapter left an empty
    // --out before session 44).
    std::fs::create_dir_all(out).map_err(|e| OrpoError::File {
        path: out.to_path_buf(),
        message: e.to_string(),
    })?;
    copy_side_files(base, out)?;
    let tmp = out.join("model.safetensors.tmp");
    lora::save_merged(model.text(), &store, &tmp)?;
    let path = out.join("model.safetensors");
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| checkpoint::sync_dir_of(&path))
        .map_err(|e| OrpoError::File {
            path,
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_warms_up_for_at_most_a_tenth_of_its_steps() {
        // Before session 52 a 5-step run spent all of it warming up to half the peak rate.
        let short = OrpoConfig {
            steps: 5,
            ..OrpoConfig::default()
        }
        .warmup_capped();
        assert_eq!(short.warmup, 0);
        assert_eq!(learning_rate(&short, 0), short.lr);
        let last = learning_rate(&short, 4);
        assert!(last < 0.5 * short.lr && last > 0.1 * short.lr, "{last}");
        // The documented runs (100 and 200 steps) keep their 10 steps of warm-up.
        for steps in [100, 200] {
            let long = OrpoConfig {
                steps,
                ..OrpoConfig::default()
            }
            .warmup_capped();
            assert_eq!(long.warmup, 10);
            assert!((learning_rate(&long, 0) - long.lr / 10.0).abs() < 1e-15);
            assert!((learning_rate(&long, 10) - long.lr).abs() < 1e-15);
        }
    }
}
