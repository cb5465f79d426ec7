//! The zero-shot planner at small scale: a model with the Qwen3-VL architecture (a few
//! million parameters) trained on one generic, physics-blind skill — a keypoint rule over
//! the current and goal images ([`Rule`]: by default coverage, "drag the nearest part of the
//! object into the part of the goal it covers least") — on the three tasks' images, and on
//! nothing about action outcomes. It plays the role the 8B model plays in the paper: a
//! planner that is better than chance and leaves room that world-model alignment can
//! close. (At the default budget it learns the rule's per-task answer prior — which
//! keypoint numbers the rule tends to answer — not the comparison of positions behind it;
//! see docs/planner.md.)
//!
//! What [`build`] makes is an ordinary HF model folder (`config.json` in the transformers
//! 5.x format, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json` and
//! `chat_template.jinja` with a Qwen-style chat template, `preprocessor_config.json`,
//! `generation_config.json`) that [`crate::vlm::Qwen3Vl`] and
//! [`crate::planner::vlm_planner::VlmPlanner`] load like any other, plus `zero_shot.json` (how it
//! was trained, the loss curve, held-out accuracy).
//!
//! How:
//! 1. scenes: seeded episodes of every task (seeds from [`TRAIN_SEED_BASE`] up, never the
//!    evaluation's) observed exactly as the evaluation does ([`observe`]);
//! 2. a tokenizer made with `tokenizers` ([`build_tokenizer`]): byte-level
//!    pre-tokenisation, one token per number 0–1000 and per word of the prompts, Qwen's
//!    special tokens;
//! 3. a randomly initialised model (N(0, 0.02), as transformers initialises Qwen3-VL),
//!    trained whole (every weight a variable, [`WeightStore::open_trainable`]) by
//!    supervised fine-tuning — mean NLL of the answer tokens — on the rule's answer
//!    `pick N place M` for each scene ([`ZeroShotConfig::rule`]), keypoints numbered as
//!    the evaluation numbers them (farthest-point order) or, with `relabel`, renumbered at
//!    random per sample (the overlays redrawn) so the model must read coordinates rather
//!    than learn which numbers the rule tends to answer. (LoRA alone on a random model
//!    does not work: with the LM head and final norm frozen at their initial scale the
//!    logits cannot exceed about 2.6, so the answer NLL stalls near 4 nats — measured.)

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use serde_json::json;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, TokenizerImpl,
};

use crate::planner::baselines::{farthest_match, Rule};
use crate::planner::eval::{observe, EvalConfig};
use crate::planner::grammar::{AnswerForm, Lookup, Side, Via};
use crate::planner::prompt::PromptForm;
use crate::planner::vlm_planner::{model_view, Processor};
use crate::planner::{format_answer, parse_answer, prompt, KeypointChoice};
use crate::sim::rng::Rng;
use crate::sim::tasks::Task;
use crate::train::adamw::{AdamW, AdamWParams};
use crate::vision::Keypoint;
use crate::vlm::generate::{generate, SamplingParams};
use crate::vlm::image::{PreprocessorConfig, Rgb8};
use crate::vlm::weights::WeightStore;
use crate::vlm::{Batch, Config, Images, Mode, Qwen3Vl, VlmError};

/// Training scenes use seeds from here up; evaluations use small seeds (0–99 by default).
pub const TRAIN_SEED_BASE: u64 = 1_000_000;
/// Held-out scenes (accuracy after training) use seeds from here up. They are the same
/// seeds `dreamplan experiment` collects its bags on (2,000,000 up): harmless, since the
/// check only reports how well a build learned its rule and the build keeps the candidate
/// of lowest training loss, never chosen on these scenes; evaluations (0–99, 5000–5099,
/// 5,000,000 up) stay disjoint from both.
pub const HELD_OUT_SEED_BASE: u64 = 2_000_000;

/// Qwen's special tokens, in Qwen's order.
pub const SPECIAL_TOKENS: [&str; 7] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
];

/// A Qwen-style chat template: string or list content, each image as
/// `<|vision_start|><|image_pad|><|vision_end|>`, the generation prompt on request (the
/// real Qwen3-VL template also handles tools and videos, which the planner never sends).
pub const CHAT_TEMPLATE: &str = concat!(
    "{%- for message in messages -%}",
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}",
    "{%- if message['content'] is string -%}",
    "{{- message['content'] -}}",
    "{%- else -%}",
    "{%- for item in message['content'] -%}",
    "{%- if item['type'] == 'image' or 'image' in item -%}",
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}",
    "{%- elif item['type'] == 'text' -%}",
    "{{- item['text'] | trim -}}",
    "{%- endif -%}",
    "{%- endfor -%}",
    "{%- endif -%}",
    "{{- '<|im_end|>\\n' -}}",
    "{%- endfor -%}",
    "{%- if add_generation_prompt -%}",
    "{{- '<|im_start|>assistant\\n' -}}",
    "{%- endif -%}"
);

/// Errors of building the zero-shot model.
#[derive(Debug, thiserror::Error)]
pub enum ZeroShotError {
    /// The model layer failed.
    #[error(transparent)]
    Vlm(#[from] VlmError),
    /// candle failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Training the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// No scene could be observed.
    #[error("no training scene: {0}")]
    NoScenes(String),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] crate::train::checkpoint::CheckpointError),
    /// The loss or a gradient stopped being finite.
    #[error("the loss or a gradient is not finite at step {step} (loss {loss}); nothing of this step was applied and {}; every step is seeded, so the same command meets this step again: lower --lr and build again with --force or into a new --out (this checkpoint resumes only its own settings)", crate::train::checkpoint::kept(.last_good))]
    NotFinite {
        /// The step.
        step: usize,
        /// Its loss.
        loss: f64,
        /// Step of the checkpoint on disk (0: none yet).
        last_good: usize,
    },
}

type Result<T> = std::result::Result<T, ZeroShotError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ZeroShotError + '_ {
    move |source| ZeroShotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Sizes of the tiny model and its training.
#[derive(Debug, Clone, Serialize)]
pub struct ZeroShotConfig {
    /// Text model width.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads (query).
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Vision tower width.
    pub vision_hidden: usize,
    /// Vision tower blocks.
    pub vision_depth: usize,
    /// Side of the square image the model is given (pixels; a multiple of 32).
    pub image_side: usize,
    /// Training scenes per task, as `[rope, cloth, toy]` (cloth episodes cost the most).
    pub scenes: [usize; 3],
    /// Held-out scenes per task for the accuracy check.
    pub held_out: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Samples per step.
    pub batch: usize,
    /// Peak learning rate (linear warm-up over `warmup` steps, cosine decay to 10%).
    pub lr: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Keypoints per image.
    pub keypoints: usize,
    /// Rendered image size (square), as the evaluation renders it.
    pub render_size: u32,
    /// Seed of initialisation and sampling.
    pub seed: u64,
    /// Relabel the keypoints at random in every training sample (instead of the
    /// evaluation's farthest-point order).
    pub relabel: bool,
    /// The physics-blind rule whose answers the model is taught ([`Rule::Coverage`] by
    /// default).
    pub rule: Rule,
    /// Other rules taught beside [`ZeroShotConfig::rule`]: each sample follows one of
    /// them (drawn uniformly) with probability [`ZeroShotConfig::also_weight`], else the
    /// main rule. Empty by default. With [`Rule::SINGLE_LOOKUP`] the model learns to
    /// propose every one-step lookup of the prompt, its favourite staying the main rule's
    /// answer (docs/stage3.md, session 13).
    pub also_rules: Vec<Rule>,
    /// Probability that a sample follows one of [`ZeroShotConfig::also_rules`].
    pub also_weight: f64,
    /// Answers in [`AnswerForm::Reasoned`]: each answer first names the lookup it makes
    /// (`goal 1 near 3`, then `pick 3 place 1`), so a model taught several rules
    /// ([`ZeroShotConfig::also_rules`]) is taught each one unambiguously. Every rule taught
    /// must be one of [`Rule::SINGLE_LOOKUP`]. Recorded in `zero_shot.json`, where the
    /// planner reads it ([`crate::planner::vlm_planner::answer_form`]).
    pub reasoning: bool,
    /// Prompts end with the recap line ([`PromptForm::Recap`]: the rank-1 keypoints'
    /// relations repeated next to the answer). Recorded in `zero_shot.json`, where the
    /// planner reads it ([`crate::planner::vlm_planner::prompt_form`]).
    pub recap: bool,
    /// Steps between checkpoints (`zero_shot_checkpoint.safetensors`: weights, optimiser
    /// moments, losses so far), from which a killed build resumes.
    pub checkpoint_every: usize,
    /// Weight of the correspondence questions (training only): at the end of each goal
    /// keypoint in the prompt, the model is also taught the number of the current keypoint
    /// the rule matches to it ([`training_batch`]). 0 turns them off.
    pub match_weight: f64,
    /// Models trained side by side from different initialisations (seeds
    /// [`candidate_seed`]), of which the one with the lowest final training loss is kept
    /// (restarts). A lookup emerges abruptly, at a step that varies from seed to seed
    /// (docs/stage3.md, session 18); on a 2-core CPU two candidates train in the wall time
    /// of one, each on one core. Candidate 0 is the model a one-candidate build makes.
    pub candidates: usize,
}

impl Default for ZeroShotConfig {
    fn default() -> Self {
        Self {
            hidden: 128,
            layers: 4,
            heads: 4,
            kv_heads: 2,
            intermediate: 384,
            vision_hidden: 64,
            vision_depth: 2,
            image_side: 64,
            scenes: [300, 120, 300],
            held_out: 20,
            steps: 1000,
            batch: 8,
            lr: 2e-3,
            warmup: 30,
            keypoints: 8,
            render_size: 256,
            seed: 0,
            relabel: false,
            rule: Rule::Coverage,
            also_rules: Vec::new(),
            also_weight: 0.0,
            reasoning: false,
            recap: false,
            checkpoint_every: 50,
            match_weight: 0.0,
            candidates: 2,
        }
    }
}

impl ZeroShotConfig {
    /// The form of the answers the model is taught.
    pub fn form(&self) -> AnswerForm {
        if self.reasoning {
            AnswerForm::Reasoned
        } else {
            AnswerForm::Plain
        }
    }

    /// The form of the prompts the model is taught on.
    pub fn prompt_form(&self) -> PromptForm {
        if self.recap {
            PromptForm::Recap
        } else {
            PromptForm::Plain
        }
    }

    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(ZeroShotError::Config(m.to_string()));
        if self.heads == 0 || !self.hidden.is_multiple_of(self.heads) {
            return bad("hidden must be a multiple of heads");
        }
        let head_dim = self.hidden / self.heads;
        if !head_dim.is_multiple_of(4) {
            return bad("hidden / heads must be a multiple of 4 (three MRoPE sections)");
        }
        if self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return bad("heads must be a multiple of kv_heads");
        }
        if !self.vision_hidden.is_multiple_of(2) || self.vision_hidden < 8 {
            return bad("vision_hidden must be even and at least 8");
        }
        if self.image_side < 32 || !self.image_side.is_multiple_of(32) {
            return bad("image_side must be a positive multiple of 32 (patch 16, merge 2)");
        }
        if self.layers == 0
            || self.vision_depth == 0
            || self.steps == 0
            || self.batch == 0
            || self.checkpoint_every == 0
        {
            return bad("layers, vision_depth, steps, batch and checkpoint_every must be positive");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            // A NaN rate wrote a model of NaN weights, kept and reported done, before
            // session 43.
            return bad("lr must be a finite number > 0");
        }
        if self.keypoints < 2 {
            return bad("at least two keypoints per image");
        }
        if self.candidates == 0 {
            return bad("candidates must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.also_weight) {
            return bad("also_weight must be a probability in [0, 1]");
        }
        if self.also_weight > 0.0 && self.also_rules.is_empty() {
            return bad("also_weight > 0 needs also_rules");
        }
        if self.reasoning {
            if let Some(r) = std::iter::once(&self.rule)
                .chain(&self.also_rules)
                .find(|r| !Rule::SINGLE_LOOKUP.contains(r))
            {
                return Err(ZeroShotError::Config(format!(
                    "rule {r:?} is not one lookup of the prompt's relations: reasoning lines \
                     name one of {:?}",
                    Rule::SINGLE_LOOKUP
                )));
            }
            if self.match_weight > 0.0 {
                return bad("correspondence questions (match_weight) work with plain answers only");
            }
        }
        if !(self.match_weight >= 0.0 && self.match_weight.is_finite()) {
            return bad("match_weight must be a finite number ≥ 0");
        }
        Ok(())
    }
}

/// One observed training scene: the two rendered images and their keypoints.
#[derive(Clone)]
pub struct SceneSample {
    /// Task.
    pub task: Task,
    /// Episode seed.
    pub seed: u64,
    /// Current image (rgb8, `render_size`²).
    pub current: Rgb8,
    /// Goal image.
    pub goal: Rgb8,
    /// Keypoints on the current image.
    pub current_keypoints: Vec<Keypoint>,
    /// Keypoints on the goal image.
    pub goal_keypoints: Vec<Keypoint>,
}

/// Observes `task` at `seed` as the evaluation does; `None` when the object is not found.
pub fn observe_scene(task: Task, seed: u64, keypoints: usize, size: u32) -> Option<SceneSample> {
    let cfg = EvalConfig { size, keypoints };
    let obs = observe(task, seed, &cfg);
    let (kc, kg) = obs.keypoints.ok()?;
    let rgb = |f: crate::render::Frame| Rgb8 {
        width: f.width as usize,
        height: f.height as usize,
        data: f.rgb,
    };
    Some(SceneSample {
        task,
        seed,
        current: rgb(obs.current),
        goal: rgb(obs.goal_frame),
        current_keypoints: kc,
        goal_keypoints: kg,
    })
}

/// A training sample: a scene with relabelled keypoints, overlays drawn, and the answer.
pub struct Sample {
    /// Overlaid current image.
    pub current: Rgb8,
    /// Overlaid goal image.
    pub goal: Rgb8,
    /// The chat-template messages.
    pub messages: serde_json::Value,
    /// The rule's answer for these labels.
    pub answer: KeypointChoice,
    /// The answer as the model is taught to write it (in the config's [`AnswerForm`]).
    pub answer_text: String,
    /// The rule's matching under these labels: `(current keypoint number, goal keypoint
    /// number)` pairs.
    pub matches: Vec<(u32, u32)>,
    /// Current keypoints listed in the prompt.
    pub current_count: usize,
    /// Goal keypoint numbers in the order the prompt lists them.
    pub goal_ids: Vec<u32>,
}

/// Renumbers `kps` by a random permutation of `1..=n`, listed in the new order.
fn relabel(kps: &[Keypoint], rng: &mut Rng) -> Vec<Keypoint> {
    let mut ids: Vec<u32> = (1..=kps.len() as u32).collect();
    for i in (1..ids.len()).rev() {
        let j = rng.below(i + 1);
        ids.swap(i, j);
    }
    let mut out: Vec<Keypoint> = kps
        .iter()
        .zip(ids)
        .map(|(k, id)| Keypoint { id, ..*k })
        .collect();
    out.sort_by_key(|k| k.id);
    out
}

/// A sample of `scene` as a model with preprocessing `cfg` is shown it (overlays drawn at
/// its input size), answered by `rule` in `form`; with `rng`, the keypoints are relabelled
/// at random. In [`AnswerForm::Reasoned`] the answer is the rule's [`Rule::lookup`] (read
/// from the prompt's relations) and `rule` must be one of [`Rule::SINGLE_LOOKUP`].
pub fn sample(
    scene: &SceneSample,
    rule: Rule,
    form: AnswerForm,
    prompt_form: PromptForm,
    cfg: &PreprocessorConfig,
    rng: Option<&mut Rng>,
) -> Result<Sample> {
    let (kc, kg) = match rng {
        Some(rng) => (
            relabel(&scene.current_keypoints, rng),
            relabel(&scene.goal_keypoints, rng),
        ),
        None => (
            scene.current_keypoints.clone(),
            scene.goal_keypoints.clone(),
        ),
    };
    let pairs = rule.matches(&kc, &kg);
    let no_keypoints = || ZeroShotError::NoScenes("a scene without keypoints".into());
    let (answer, answer_text) = match form {
        AnswerForm::Plain => {
            let a = farthest_match(&kc, &kg, &pairs).ok_or_else(no_keypoints)?;
            (a, format_answer(&a))
        }
        AnswerForm::Reasoned => {
            let l = rule.lookup(&kc, &kg).ok_or_else(|| {
                ZeroShotError::Config(format!(
                    "rule {rule:?} has no lookup here (not a single-lookup rule, or no keypoints)"
                ))
            })?;
            (l.choice(), l.answer())
        }
    };
    let matches = pairs
        .into_iter()
        .map(|(i, j)| (kc[i].id, kg[j].id))
        .collect();
    let err = |e: String| ZeroShotError::Config(format!("overlay: {e}"));
    let messages = prompt::messages_in(
        prompt_form,
        scene.task,
        &kc,
        &kg,
        scene.current.width as u32,
        scene.current.height as u32,
    );
    Ok(Sample {
        current: model_view(&scene.current, &kc, cfg).map_err(err)?,
        goal: model_view(&scene.goal, &kg, cfg).map_err(err)?,
        messages,
        answer,
        answer_text,
        matches,
        current_count: kc.len(),
        goal_ids: kg.iter().map(|k| k.id).collect(),
    })
}

/// The tokenizer's unknown-word token (a word-level vocabulary needs one).
pub const UNK_TOKEN: &str = "<|unk|>";

/// Largest number with a token of its own (the 0–1000 coordinate range).
pub const MAX_NUMBER: u32 = 1000;

/// Id of the token of number `n` (≤ [`MAX_NUMBER`]) written after a space (`" 612"`) or not
/// (`"437"`): the vocabulary starts with `0..=1000`, then `" 0"..=" 1000"`.
pub fn number_token_id(n: u32, after_space: bool) -> u32 {
    n + if after_space { MAX_NUMBER + 1 } else { 0 }
}

/// The tokenizer: byte-level pre-tokenisation as GPT-2/Qwen (so decoding restores every
/// space), then a word-level vocabulary: every number 0–1000 is one token (with and
/// without a leading space), every other word of `corpus` one token, Qwen's special
/// tokens after them, and [`UNK_TOKEN`] for anything else.
///
/// Qwen's own tokenizer writes a number digit by digit. A model of a few million
/// parameters trained for minutes on a CPU does not learn to compose three digit tokens
/// into a position and compare positions (measured: its answer loss stayed at chance,
/// 0.60 nats per token, for 300 steps of 8); with one token per coordinate, whose
/// embedding starts as a Fourier code of the value ([`init_weights`]), it does.
pub fn build_tokenizer(corpus: &[String]) -> Result<tokenizers::Tokenizer> {
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
    let terr = |e: tokenizers::Error| ZeroShotError::Tokenizer(e.to_string());
    let byte_level = ByteLevel::new(false, true, true);
    let mut words: Vec<String> = Vec::new();
    for n in 0..=MAX_NUMBER {
        words.push(n.to_string());
    }
    for n in 0..=MAX_NUMBER {
        words.push(format!("\u{120}{n}"));
    }
    let mut seen: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for text in corpus {
        let mut pts = PreTokenizedString::from(text.as_str());
        byte_level.pre_tokenize(&mut pts).map_err(terr)?;
        for (piece, _, _) in pts.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            seen.insert(piece.to_string());
        }
    }
    // Every single byte (as its byte-level character), so lone punctuation is never unknown.
    seen.extend(ByteLevel::alphabet().into_iter().map(String::from));
    let numbers: HashSet<String> = words.iter().cloned().collect();
    words.extend(seen.into_iter().filter(|w| !numbers.contains(w)));
    words.push(UNK_TOKEN.to_string());
    let model = tokenizers::models::wordlevel::WordLevel::builder()
        .vocab(
            words
                .iter()
                .enumerate()
                .map(|(i, w)| (w.clone(), i as u32))
                .collect(),
        )
        .unk_token(UNK_TOKEN.to_string())
        .build()
        .map_err(terr)?;
    let mut tok: TokenizerImpl<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    > = TokenizerImpl::new(ModelWrapper::WordLevel(model));
    tok.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(byte_level)));
    tok.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    let mut tok: tokenizers::Tokenizer = tok.into();
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tok.add_special_tokens(specials).map_err(terr)?;
    Ok(tok)
}

/// The texts the tokenizer is trained on: every scene's prompt text and every answer (with
/// `reasoning`, the reasoning lines' words as well; without, the vocabulary is the one
/// builds before reasoning lines had).
fn corpus(
    scenes: &[SceneSample],
    keypoints: usize,
    reasoning: bool,
    form: PromptForm,
) -> Vec<String> {
    let mut out: Vec<String> = scenes
        .iter()
        .map(|s| {
            prompt::user_text_in(
                form,
                s.task,
                &s.current_keypoints,
                &s.goal_keypoints,
                s.current.width as u32,
                s.current.height as u32,
            )
        })
        .collect();
    for n in 1..=keypoints as u32 {
        for m in 1..=keypoints as u32 {
            out.push(format_answer(&KeypointChoice { pick: n, place: m }));
        }
    }
    if reasoning {
        for side in [Side::Current, Side::Goal] {
            for via in [Via::Near, Via::Far, Via::Rank] {
                let l = Lookup {
                    side,
                    anchor: 1,
                    via,
                    value: keypoints as u32,
                };
                out.push(l.answer());
            }
        }
    }
    out.push("user\nassistant\nsystem\n".into());
    out
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    // Atomic: a torn zero_shot.json would read as the plain prompt form.
    crate::train::checkpoint::write_atomic(path, (text + "\n").as_bytes()).map_err(io(path))
}

/// `config.json` (transformers 5.x layout) for `cfg` and a tokenizer with `vocab` ids.
fn model_config(cfg: &ZeroShotConfig, tok: &tokenizers::Tokenizer) -> Result<serde_json::Value> {
    let id = |t: &str| {
        tok.token_to_id(t)
            .ok_or_else(|| ZeroShotError::Tokenizer(format!("{t} missing")))
    };
    let head_dim = cfg.hidden / cfg.heads;
    // Interleaved MRoPE sections (t, h, w) over head_dim / 2 frequencies, as Qwen3-VL's
    // [24, 20, 20] for head_dim 128.
    let half = head_dim / 2;
    let hw = half * 5 / 16;
    let section = [half - 2 * hw, hw, hw];
    let patches_per_side = cfg.image_side / 16;
    Ok(json!({
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "dtype": "float32",
        "image_token_id": id("<|image_pad|>")?,
        "video_token_id": id("<|video_pad|>")?,
        "vision_start_token_id": id("<|vision_start|>")?,
        "vision_end_token_id": id("<|vision_end|>")?,
        "model_type": "qwen3_vl",
        "tie_word_embeddings": false,
        "text_config": {
            "attention_bias": false,
            "attention_dropout": 0.0,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "hidden_size": cfg.hidden,
            "initializer_range": 0.02,
            "intermediate_size": cfg.intermediate,
            "max_position_embeddings": 4096,
            "model_type": "qwen3_vl_text",
            "num_attention_heads": cfg.heads,
            "num_hidden_layers": cfg.layers,
            "num_key_value_heads": cfg.kv_heads,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "mrope_interleaved": true,
                "mrope_section": section,
                "rope_theta": 10000.0,
                "rope_type": "default"
            },
            "use_cache": true,
            "vocab_size": tok.get_vocab_size(true),
        },
        "vision_config": {
            "deepstack_visual_indexes": [0],
            "depth": cfg.vision_depth,
            "hidden_act": "gelu_pytorch_tanh",
            "hidden_size": cfg.vision_hidden,
            "in_channels": 3,
            "initializer_range": 0.02,
            "intermediate_size": 2 * cfg.vision_hidden,
            "model_type": "qwen3_vl_vision",
            "num_heads": 2,
            "num_position_embeddings": patches_per_side * patches_per_side,
            "out_hidden_size": cfg.hidden,
            "patch_size": 16,
            "rope_parameters": {"rope_theta": 10000.0, "rope_type": "axial"},
            "spatial_merge_size": 2,
            "temporal_patch_size": 2
        }
    }))
}

/// Every tensor of a Qwen3-VL checkpoint for `cfg`, with HF's names and shapes.
fn tensor_shapes(cfg: &ZeroShotConfig, vocab: usize) -> Vec<(String, Vec<usize>)> {
    let (h, v, i) = (cfg.hidden, cfg.vision_hidden, cfg.intermediate);
    let head_dim = h / cfg.heads;
    let kv = cfg.kv_heads * head_dim;
    let mut out: Vec<(String, Vec<usize>)> = vec![
        ("lm_head.weight".into(), vec![vocab, h]),
        (
            "model.language_model.embed_tokens.weight".into(),
            vec![vocab, h],
        ),
        ("model.language_model.norm.weight".into(), vec![h]),
    ];
    for l in 0..cfg.layers {
        let p = format!("model.language_model.layers.{l}");
        out.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
            (
                format!("{p}.self_attn.q_proj.weight"),
                vec![cfg.heads * head_dim, h],
            ),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, cfg.heads * head_dim],
            ),
            (format!("{p}.self_attn.q_norm.weight"), vec![head_dim]),
            (format!("{p}.self_attn.k_norm.weight"), vec![head_dim]),
        ]);
    }
    let side = cfg.image_side / 16;
    out.extend([
        (
            "model.visual.patch_embed.proj.weight".into(),
            vec![v, 3, 2, 16, 16],
        ),
        ("model.visual.patch_embed.proj.bias".into(), vec![v]),
        ("model.visual.pos_embed.weight".into(), vec![side * side, v]),
    ]);
    for b in 0..cfg.vision_depth {
        let p = format!("model.visual.blocks.{b}");
        out.extend([
            (format!("{p}.attn.qkv.weight"), vec![3 * v, v]),
            (format!("{p}.attn.qkv.bias"), vec![3 * v]),
            (format!("{p}.attn.proj.weight"), vec![v, v]),
            (format!("{p}.attn.proj.bias"), vec![v]),
            (format!("{p}.mlp.linear_fc1.weight"), vec![2 * v, v]),
            (format!("{p}.mlp.linear_fc1.bias"), vec![2 * v]),
            (format!("{p}.mlp.linear_fc2.weight"), vec![v, 2 * v]),
            (format!("{p}.mlp.linear_fc2.bias"), vec![v]),
            (format!("{p}.norm1.weight"), vec![v]),
            (format!("{p}.norm1.bias"), vec![v]),
            (format!("{p}.norm2.weight"), vec![v]),
            (format!("{p}.norm2.bias"), vec![v]),
        ]);
    }
    let merged = 4 * v;
    for (p, norm) in [
        ("model.visual.merger".to_string(), v),
        ("model.visual.deepstack_merger_list.0".to_string(), merged),
    ] {
        out.extend([
            (format!("{p}.norm.weight"), vec![norm]),
            (format!("{p}.norm.bias"), vec![norm]),
            (format!("{p}.linear_fc1.weight"), vec![merged, merged]),
            (format!("{p}.linear_fc1.bias"), vec![merged]),
            (format!("{p}.linear_fc2.weight"), vec![h, merged]),
            (format!("{p}.linear_fc2.bias"), vec![h]),
        ]);
    }
    out
}

/// Frequencies of the number code (cycles over 0–1000): 0.5 to 32, geometric.
const NUMBER_FREQS: usize = 12;
/// Amplitude of each number-code feature.
const NUMBER_CODE: f64 = 0.1;

/// The initial weights: as transformers initialises Qwen3-VL (N(0, 0.02) weights, zero
/// biases, unit norm scales), except that the embedding of each number token also carries
/// a Fourier code of its value — `sin` and `cos` of `2π f u` for `u = n / 1000` and
/// [`NUMBER_FREQS`] frequencies `f` — in the first `4·NUMBER_FREQS` dimensions: numbers
/// without a leading space (x coordinates) in the first half, with one (y coordinates,
/// keypoint numbers) in the second. Close values then start with similar embeddings.
fn init_weights(cfg: &ZeroShotConfig, vocab: usize, seed: u64) -> Result<Vec<(String, Tensor)>> {
    let mut rng = Rng::new(seed, 0x1417);
    let h = cfg.hidden;
    tensor_shapes(cfg, vocab)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.contains("norm") && name.ends_with(".weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                let mut d: Vec<f32> = (0..n).map(|_| (0.02 * normal(&mut rng)) as f32).collect();
                if name == "model.language_model.embed_tokens.weight" && h >= 4 * NUMBER_FREQS {
                    for after_space in [false, true] {
                        let base = if after_space { 2 * NUMBER_FREQS } else { 0 };
                        for v in 0..=MAX_NUMBER {
                            let row = number_token_id(v, after_space) as usize;
                            let u = f64::from(v) / f64::from(MAX_NUMBER);
                            for k in 0..NUMBER_FREQS {
                                let f = 0.5 * 64f64.powf(k as f64 / (NUMBER_FREQS - 1) as f64);
                                let phase = std::f64::consts::TAU * f * u;
                                d[row * h + base + 2 * k] += (NUMBER_CODE * phase.sin()) as f32;
                                d[row * h + base + 2 * k + 1] += (NUMBER_CODE * phase.cos()) as f32;
                            }
                        }
                    }
                }
                d
            };
            let t = Tensor::from_vec(data, shape, &Device::Cpu)?;
            Ok((name, t))
        })
        .collect()
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rng.unit();
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Writes weights to `path` through a synced temporary file renamed over it.
fn save_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let entries: Vec<(&String, &Tensor)> = tensors.iter().map(|(n, t)| (n, t)).collect();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    safetensors::serialize_to_file(entries, metadata, &tmp)
        .map_err(|e| ZeroShotError::Config(format!("{}: {e}", tmp.display())))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| crate::train::checkpoint::sync_dir_of(path))
        .map_err(io(path))
}

/// Writes an untrained model folder: config, random weights, tokenizer, template and
/// preprocessor settings.
pub fn write_initial_folder(
    dir: &Path,
    cfg: &ZeroShotConfig,
    tok: &tokenizers::Tokenizer,
) -> Result<()> {
    cfg.check()?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_json(&dir.join("config.json"), &model_config(cfg, tok)?)?;
    let tok_path = dir.join("tokenizer.json");
    tok.save(&tok_path, true)
        .map_err(|e| ZeroShotError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "model_max_length": 4096,
            "chat_template": CHAT_TEMPLATE,
        }),
    )?;
    // transformers' processors read their template from here (the tokenizer from above).
    let jinja = dir.join("chat_template.jinja");
    std::fs::write(&jinja, CHAT_TEMPLATE).map_err(io(&jinja))?;
    let pixels = cfg.image_side * cfg.image_side;
    write_json(
        &dir.join("preprocessor_config.json"),
        &json!({
            "size": {"shortest_edge": pixels, "longest_edge": pixels},
            "patch_size": 16,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "do_resize": true,
            "do_rescale": true,
            "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "resample": 3,
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen3VLProcessor",
        }),
    )?;
    write_json(
        &dir.join("generation_config.json"),
        &json!({
            "eos_token_id": [
                tok.token_to_id("<|im_end|>"),
                tok.token_to_id("<|endoftext|>")
            ],
            "pad_token_id": tok.token_to_id("<|endoftext|>"),
            "do_sample": true,
            "temperature": 1.0,
            "top_p": 0.9,
        }),
    )?;
    let vocab = tok.get_vocab_size(true);
    save_tensors(
        &dir.join("model.safetensors"),
        &init_weights(cfg, vocab, cfg.seed)?,
    )
}

/// Token ids of an answer written out (either [`AnswerForm`]), then `<|im_end|>`.
pub(crate) fn answer_text_ids(p: &Processor, text: &str) -> Result<Vec<u32>> {
    let mut ids = p.tokenizer.encode(text)?;
    ids.push(
        p.tokenizer
            .token_id("<|im_end|>")
            .ok_or_else(|| ZeroShotError::Tokenizer("<|im_end|> missing".into()))?,
    );
    Ok(ids)
}

/// A training batch: the model input, which tokens are the answer, and the
/// correspondence questions.
pub struct TrainingBatch {
    /// Left-padded input: prompt then answer, per row.
    pub batch: Batch,
    /// 1 where a token belongs to the answer (`pick N place M<|im_end|>`).
    pub response: Vec<Vec<u8>>,
    /// Correspondence questions as `(row, position, token)`: the logits at `position`
    /// (the token that closes a goal keypoint's entry, its rank number) should give `token`, the
    /// number (as written after a space, as in the answer) of the current keypoint the
    /// rule matches to that goal keypoint.
    pub matches: Vec<(usize, usize, u32)>,
}

/// Positions of the tokens that close a keypoint's entry in a prompt (its rank number,
/// after ` rank`), in prompt order: the current keypoints' first, then the goal keypoints'.
fn keypoint_ends(p: &Processor, ids: &[u32]) -> Result<Vec<usize>> {
    let rank = match p.tokenizer.encode(" rank")?[..] {
        [id] => id,
        _ => {
            return Err(ZeroShotError::Tokenizer(
                "the tokenizer has no ` rank` token".into(),
            ))
        }
    };
    Ok(ids
        .iter()
        .enumerate()
        // ` rank` followed by a number (the instruction also says "the rank of …").
        .filter(|(i, t)| *i > 0 && ids[*i - 1] == rank && **t <= number_token_id(MAX_NUMBER, true))
        .map(|(i, _)| i)
        .collect())
}

/// The correspondence questions of one sample whose prompt tokens are `ids`, as
/// `(position, token)` ([`TrainingBatch::matches`]).
fn sample_questions(p: &Processor, s: &Sample, ids: &[u32]) -> Result<Vec<(usize, u32)>> {
    let ends = keypoint_ends(p, ids)?;
    if ends.len() != s.current_count + s.goal_ids.len() {
        return Err(ZeroShotError::Tokenizer(format!(
            "found {} keypoint ends in the prompt, expected {} current and {} goal",
            ends.len(),
            s.current_count,
            s.goal_ids.len()
        )));
    }
    let mut out = Vec::new();
    for (k, goal_id) in s.goal_ids.iter().enumerate() {
        let Some(&(cur, _)) = s.matches.iter().find(|m| m.1 == *goal_id) else {
            continue; // more goal than current keypoints: this one has no match
        };
        let token = p.tokenizer.encode(&format!(" {cur}"))?;
        let [token] = token[..] else {
            return Err(ZeroShotError::Tokenizer(format!(
                "keypoint number {cur} is {} tokens, expected one",
                token.len()
            )));
        };
        out.push((ends[s.current_count + k], token));
    }
    Ok(out)
}

/// `rows` left-padded with `pad` to the longest, and their attention masks (0 on padding):
/// the training rows of the zero-shot and ORPO trainers.
pub(crate) fn left_pad(rows: Vec<Vec<u32>>, pad: u32) -> (Vec<Vec<u32>>, Vec<Vec<u8>>) {
    let len = rows.iter().map(Vec::len).max().unwrap_or(0);
    rows.into_iter()
        .map(|ids| {
            let padn = len - ids.len();
            let mut mask = vec![0u8; padn];
            mask.extend(std::iter::repeat_n(1u8, ids.len()));
            let mut row = vec![pad; padn];
            row.extend(ids);
            (row, mask)
        })
        .unzip()
}

/// A left-padded training batch of `samples` with each row's answer as the response and,
/// with `with_questions`, at the end of each goal keypoint the correspondence question
/// ([`TrainingBatch`]).
pub fn training_batch(
    p: &Processor,
    samples: &[Sample],
    with_questions: bool,
) -> Result<TrainingBatch> {
    let pad = p
        .tokenizer
        .token_id("<|endoftext|>")
        .ok_or_else(|| ZeroShotError::Tokenizer("<|endoftext|> missing".into()))?;
    let mut rows = Vec::new();
    let mut pixels = Vec::new();
    let mut grids = Vec::new();
    let mut questions: Vec<(usize, usize, u32)> = Vec::new();
    for (row, s) in samples.iter().enumerate() {
        let prompt = p.batch(&s.messages, &s.current, &s.goal)?;
        let mut ids = prompt.input_ids.into_iter().next().unwrap_or_default();
        let prompt_len = ids.len();
        if with_questions {
            questions.extend(
                sample_questions(p, s, &ids)?
                    .into_iter()
                    .map(|(pos, token)| (row, pos, token)),
            );
        }
        ids.extend(answer_text_ids(p, &s.answer_text)?);
        if let Some(images) = prompt.images {
            pixels.push(images.pixel_values);
            grids.extend(images.grid_thw);
        }
        rows.push((ids, prompt_len));
    }
    let len = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    // Left padding shifts every position of a row by its padding.
    for q in &mut questions {
        q.1 += len - rows[q.0].0.len();
    }
    let response = rows
        .iter()
        .map(|(ids, prompt_len)| {
            let mut resp = vec![0u8; len - ids.len() + prompt_len];
            resp.extend(std::iter::repeat_n(1u8, ids.len() - prompt_len));
            resp
        })
        .collect();
    let (input_ids, mask) = left_pad(rows.into_iter().map(|r| r.0).collect(), pad);
    let batch = Batch {
        input_ids,
        attention_mask: Some(mask),
        images: Some(Images {
            pixel_values: Tensor::cat(&pixels, 0)?,
            grid_thw: grids,
        }),
    };
    Ok(TrainingBatch {
        batch,
        response,
        matches: questions,
    })
}

/// The positions a training step scores, as flat indices `b · L + l` into the batch:
/// first each answer token's predecessor (the logits there score the token), row by row,
/// then the correspondence questions. [`step_loss`] reads logits in this order.
pub fn scored_rows(tb: &TrainingBatch) -> Vec<usize> {
    let l = tb.batch.input_ids.first().map_or(0, Vec::len);
    answer_targets(tb)
        .iter()
        .map(|&(r, p, _)| (r, p))
        .chain(tb.matches.iter().map(|&(r, p, _)| (r, p)))
        .map(|(r, p)| r * l + p)
        .collect()
}

/// `(row, position, token)` of every answer token, scored at the position before it.
fn answer_targets(tb: &TrainingBatch) -> Vec<(usize, usize, u32)> {
    let mut out = Vec::new();
    for (row, (ids, mask)) in tb.batch.input_ids.iter().zip(&tb.response).enumerate() {
        for t in 1..ids.len() {
            if mask[t] != 0 {
                out.push((row, t - 1, ids[t]));
            }
        }
    }
    out
}

/// The losses of a step from the logits at [`scored_rows`] (`[n, vocab]`): the answer NLL
/// (mean over rows of the mean over each row's answer tokens, as
/// [`crate::vlm::loss::mean_response_logprob`]) and, when the batch has questions, their mean NLL.
pub fn step_loss(logits: &Tensor, tb: &TrainingBatch) -> Result<(Tensor, Option<Tensor>)> {
    let answers = answer_targets(tb);
    let b = tb.batch.input_ids.len();
    let mut counts = vec![0usize; b];
    for a in &answers {
        counts[a.0] += 1;
    }
    if let Some(row) = counts.iter().position(|&c| c == 0) {
        return Err(ZeroShotError::Config(format!(
            "row {row} has no answer token"
        )));
    }
    let (na, nq) = (answers.len(), tb.matches.len());
    let n = logits.dim(0)?;
    if n != na + nq {
        return Err(ZeroShotError::Config(format!(
            "{n} rows of logits for {na} answer tokens and {nq} questions"
        )));
    }
    let targets: Vec<u32> = answers
        .iter()
        .chain(&tb.matches)
        .map(|&(_, _, t)| t)
        .collect();
    let device = logits.device();
    let logp = candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?
        .gather(
            &Tensor::from_vec(targets, (n, 1), device)?,
            candle_core::D::Minus1,
        )?
        .squeeze(1)?;
    let weights: Vec<f32> = answers
        .iter()
        .map(|a| 1.0 / (counts[a.0] * b) as f32)
        .collect();
    let answer = (logp.narrow(0, 0, na)? * Tensor::from_vec(weights, na, device)?)?
        .sum_all()?
        .neg()?;
    let questions = if nq > 0 {
        Some(logp.narrow(0, na, nq)?.mean_all()?.neg()?)
    } else {
        None
    };
    Ok((answer, questions))
}

/// Progress of [`build`], reported to the caller (the CLI draws a bar).
#[derive(Debug, Clone)]
pub enum Progress {
    /// A scene was observed (`done` of `total`).
    Scene {
        /// Scenes done.
        done: usize,
        /// Scenes to do.
        total: usize,
    },
    /// An optimiser step finished.
    Step {
        /// The candidate that took it ([`ZeroShotConfig::candidates`]).
        candidate: usize,
        /// Steps done.
        step: usize,
        /// Steps to do.
        total: usize,
        /// This step's loss.
        loss: f64,
    },
    /// Training resumes from the checkpoint written after `step` steps.
    Resumed {
        /// The candidate that resumes.
        candidate: usize,
        /// Steps already done.
        step: usize,
    },
    /// Held-out samples checked.
    Check {
        /// Done.
        done: usize,
        /// To do.
        total: usize,
    },
}

/// Present in a folder while a build runs (removed with its checkpoints once
/// `zero_shot.json` is written): what tells a killed build, which resumes, from a model.
pub const BUILDING_FILE: &str = crate::vlm::BUILDING_FILE;

/// What `zero_shot.json` records.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The settings.
    pub config: ZeroShotConfig,
    /// Parameters of the merged model.
    pub parameters: usize,
    /// Training scenes per task that were observed (object found).
    pub scenes: [usize; 3],
    /// Answer loss (mean NLL per answer token) of every step.
    pub loss: Vec<f64>,
    /// Correspondence-question loss (mean NLL) of every step (empty when off).
    pub match_loss: Vec<f64>,
    /// Every candidate trained ([`ZeroShotConfig::candidates`]): its seed, its final
    /// loss, whether it is the one kept (whose curve `loss` is).
    pub candidates: Vec<CandidateReport>,
    /// Seconds spent observing scenes, training (wall, candidates side by side), checking.
    pub seconds: [f64; 3],
    /// Held-out greedy answers equal to the rule's (fraction), per task.
    pub held_out_exact: [f64; 3],
    /// Held-out greedy answers whose pick equals the rule's (fraction), per task.
    pub held_out_pick: [f64; 3],
    /// Held-out greedy answers that parse (fraction), per task.
    pub held_out_valid: [f64; 3],
    /// With reasoning lines: for each rule taught, the model given the rule's line up to
    /// its value (`goal 1 near`) on held-out scenes, how often its greedy answer is the
    /// rule's action ([`held_out_lookup`]). Whether it executes every lookup it was
    /// taught, not only its favourite.
    pub held_out_lookups: Vec<LookupCheck>,
}

/// One candidate of a build, as [`Report`] lists it.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateReport {
    /// Its seed ([`candidate_seed`]).
    pub seed: u64,
    /// Mean answer loss of its last 20 steps ([`final_loss`]).
    pub final_loss: f64,
    /// Whether it is the model in the folder.
    pub kept: bool,
}

/// One rule's [`held_out_lookup`] result.
#[derive(Debug, Clone, Serialize)]
pub struct LookupCheck {
    /// The rule.
    pub rule: Rule,
    /// Greedy answers equal to the rule's action, per task (fraction).
    pub exact: [f64; 3],
}

fn observe_all(
    jobs: &[(Task, u64)],
    cfg: &ZeroShotConfig,
    threads: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<SceneSample> {
    let done = std::sync::atomic::AtomicUsize::new(0);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, SceneSample)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(task, seed)) = jobs.get(i) else {
                            break;
                        };
                        if let Some(scene) =
                            observe_scene(task, seed, cfg.keypoints, cfg.render_size)
                        {
                            mine.push((i, scene));
                        }
                        let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        progress(Progress::Scene {
                            done: d,
                            total: jobs.len(),
                        });
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("scene worker panicked"))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, s)| s).collect()
}

fn task_index(t: Task) -> usize {
    match t {
        Task::Rope => 0,
        Task::Cloth => 1,
        Task::Toy => 2,
    }
}

/// The rule a training sample follows: one of [`ZeroShotConfig::also_rules`] (uniformly)
/// with probability [`ZeroShotConfig::also_weight`], else [`ZeroShotConfig::rule`]. Draws
/// from `rng` only when other rules are taught, so builds without them keep their sample
/// order.
pub fn draw_rule(cfg: &ZeroShotConfig, rng: &mut Rng) -> Rule {
    if !cfg.also_rules.is_empty() && rng.unit() < cfg.also_weight {
        cfg.also_rules[rng.below(cfg.also_rules.len())]
    } else {
        cfg.rule
    }
}

/// Builds the zero-shot model folder in `out` (created; must not hold a model already):
/// observes the scenes, trains the tokenizer, initialises and trains the model, merges the
/// adapters, checks held-out accuracy and writes `zero_shot.json`.
pub fn build(
    out: &Path,
    cfg: &ZeroShotConfig,
    threads: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Report> {
    cfg.check()?;
    let tasks = [Task::Rope, Task::Cloth, Task::Toy];
    let t0 = Instant::now();
    let mut jobs = Vec::new();
    for t in tasks {
        for i in 0..cfg.scenes[task_index(t)] {
            jobs.push((t, TRAIN_SEED_BASE + i as u64));
        }
    }
    for t in tasks {
        for i in 0..cfg.held_out {
            jobs.push((t, HELD_OUT_SEED_BASE + i as u64));
        }
    }
    let all = observe_all(&jobs, cfg, threads, progress);
    let (train, held): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|s| s.seed < HELD_OUT_SEED_BASE);
    if train.is_empty() {
        return Err(ZeroShotError::NoScenes(
            "the object was found in no training scene".into(),
        ));
    }
    let mut counts = [0usize; 3];
    for s in &train {
        counts[task_index(s.task)] += 1;
    }
    let observe_s = t0.elapsed().as_secs_f64();

    let tok = build_tokenizer(&corpus(
        &train,
        cfg.keypoints,
        cfg.reasoning,
        cfg.prompt_form(),
    ))?;
    // A folder being (re)built has no report until it is done: that is what tells a killed
    // build, which resumes, from a finished one.
    let _lock = crate::train::checkpoint::lock_output(out).map_err(ZeroShotError::Config)?;
    let report_path = out.join("zero_shot.json");
    if report_path.exists() {
        std::fs::remove_file(&report_path).map_err(io(&report_path))?;
    }
    // Marked as being built until the report is written: a kill before the first
    // checkpoint, or after the kept candidate's weights were moved in but before the
    // report, read as a finished model before session 42 ("already holds a model").
    std::fs::create_dir_all(out).map_err(io(out))?;
    let marker = out.join(BUILDING_FILE);
    std::fs::write(&marker, b"").map_err(io(&marker))?;
    let trained = if cfg.candidates == 1 {
        write_initial_folder(out, cfg, &tok)?;
        let t = train_candidate(out, cfg, 0, &train, progress)?;
        vec![t]
    } else {
        // Each candidate trains in a folder of its own (its own checkpoint, so a killed
        // build resumes every candidate), on a thread of its own.
        let dirs: Vec<PathBuf> = (0..cfg.candidates).map(|c| candidate_dir(out, c)).collect();
        let cfgs: Vec<ZeroShotConfig> = (0..cfg.candidates)
            .map(|c| ZeroShotConfig {
                seed: candidate_seed(cfg.seed, c),
                candidates: 1,
                ..cfg.clone()
            })
            .collect();
        for (dir, c) in dirs.iter().zip(&cfgs) {
            write_initial_folder(dir, c, &tok)?;
        }
        let results: Vec<Result<Trained>> = std::thread::scope(|scope| {
            let handles: Vec<_> = dirs
                .iter()
                .zip(&cfgs)
                .enumerate()
                .map(|(c, (dir, ccfg))| {
                    let train = &train;
                    scope.spawn(move || train_candidate(dir, ccfg, c, train, progress))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join() {
                    Ok(r) => r,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<_>>>()?
    };
    let best = best_candidate(&trained);
    if cfg.candidates > 1 {
        // The kept candidate's weights become the folder's; the candidate folders go.
        write_initial_folder(out, cfg, &tok)?;
        let to = out.join("model.safetensors");
        std::fs::rename(candidate_dir(out, best).join("model.safetensors"), &to)
            .map_err(io(&to))?;
        for c in 0..cfg.candidates {
            let dir = candidate_dir(out, c);
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
    }
    let processor = Processor::load(out)?;
    let model = Qwen3Vl::from_store(
        Config::load(out)?,
        &WeightStore::open(out, DType::F32, &Device::Cpu)?,
    )?;

    let t2 = Instant::now();
    let check = held_out_accuracy(
        &model,
        &processor,
        cfg.rule,
        (cfg.form(), cfg.prompt_form()),
        &held,
        progress,
    )?;
    let lookups = if cfg.reasoning {
        let mut rules = vec![cfg.rule];
        for r in &cfg.also_rules {
            if !rules.contains(r) {
                rules.push(*r);
            }
        }
        rules
            .into_iter()
            .map(|rule| {
                held_out_lookup(&model, &processor, rule, cfg.prompt_form(), &held)
                    .map(|exact| LookupCheck { rule, exact })
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let train_s = trained.iter().map(|t| t.seconds).fold(0.0, f64::max);
    let candidates = trained
        .iter()
        .enumerate()
        .map(|(c, t)| CandidateReport {
            seed: candidate_seed(cfg.seed, c),
            final_loss: final_loss(&t.losses),
            kept: c == best,
        })
        .collect();
    let others: Vec<Vec<f64>> = trained
        .iter()
        .enumerate()
        .filter(|&(c, _)| c != best)
        .map(|(_, t)| t.losses.clone())
        .collect();
    let kept = trained.into_iter().nth(best).expect("best is a candidate");
    let report = Report {
        config: cfg.clone(),
        parameters: kept.parameters,
        scenes: counts,
        loss: kept.losses,
        match_loss: kept.match_losses,
        candidates,
        seconds: [observe_s, train_s, t2.elapsed().as_secs_f64()],
        held_out_exact: check.0,
        held_out_pick: check.1,
        held_out_valid: check.2,
        held_out_lookups: lookups,
    };
    let path = out.join("zero_shot.json");
    write_json(
        &path,
        &serde_json::to_value(&report).expect("the report serialises"),
    )?;
    loss_curve(&report, &others, &out.join(CURVE_FILE))?;
    // The build is complete: its checkpoint is no longer needed.
    clear_progress(out).map_err(io(out))?;
    Ok(report)
}

/// One trained candidate of [`build`].
struct Trained {
    losses: Vec<f64>,
    match_losses: Vec<f64>,
    seconds: f64,
    parameters: usize,
}

/// The seed of candidate `c` of a build seeded `seed`: `seed` itself for candidate 0, then
/// steps of 1,000, so builds whose seeds differ by less than 1,000 share no candidate.
pub fn candidate_seed(seed: u64, c: usize) -> u64 {
    seed.wrapping_add(1_000 * c as u64)
}

/// Where candidate `c` of a build into `out` trains (removed once the build is done).
pub fn candidate_dir(out: &Path, c: usize) -> PathBuf {
    out.join(format!("candidate-{c}"))
}

/// The mean answer loss of the last 20 steps (fewer if there were fewer): what
/// [`build`] keeps a candidate by and reports.
pub fn final_loss(losses: &[f64]) -> f64 {
    let tail = &losses[losses.len().saturating_sub(20)..];
    if tail.is_empty() {
        return f64::NAN;
    }
    tail.iter().sum::<f64>() / tail.len() as f64
}

/// The candidate with the lowest [`final_loss`] (the first of equals).
fn best_candidate(trained: &[Trained]) -> usize {
    let mut best = 0;
    for (c, t) in trained.iter().enumerate() {
        if final_loss(&t.losses) < final_loss(&trained[best].losses) {
            best = c;
        }
    }
    best
}

/// Trains the model initialised in `dir` (by [`write_initial_folder`] with `cfg`) on
/// `train`, resuming from the checkpoint in `dir` if one of this run is there, and writes
/// the trained weights over `dir`'s `model.safetensors` (temp file, then rename).
fn train_candidate(
    dir: &Path,
    cfg: &ZeroShotConfig,
    candidate: usize,
    train: &[SceneSample],
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Trained> {
    let processor = Processor::load(dir)?;
    // Every weight is a variable: the model is trained whole.
    let store = WeightStore::open_trainable(dir, DType::F32, &Device::Cpu)?;
    let model = Qwen3Vl::from_store(Config::load(dir)?, &store)?;
    let named = store.vars();
    let mut opt = AdamW::new(
        named.clone(),
        AdamWParams {
            lr: cfg.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;

    // Resume: the checkpoint must be this build's (same settings, same tokenizer).
    let ck = checkpoint_path(dir);
    let run = json!({
        "config": cfg,
        "tokenizer": crate::verifier::preferences::tokenizer_fingerprint(dir)
            .map_err(|e| ZeroShotError::Config(e.to_string()))?,
    });
    let mut start = 0;
    let mut losses: Vec<f64> = Vec::with_capacity(cfg.steps);
    let mut match_losses: Vec<f64> = Vec::with_capacity(cfg.steps);
    let mut train_before = 0.0;
    if ck.exists() {
        let (tensors, state) = crate::train::checkpoint::load(&ck)?;
        if state.get("run") != Some(&run) {
            return Err(ZeroShotError::Config(format!(
                "{} holds a checkpoint of another build (other settings or scenes); pass --force to start over, or use another --out",
                dir.display()
            )));
        }
        let bad = |what: String| ZeroShotError::Config(format!("{}: {what}", ck.display()));
        start = state["step"]
            .as_u64()
            .ok_or_else(|| bad("no step".into()))? as usize;
        opt.restore(&tensors, start).map_err(bad)?;
        losses = serde_json::from_value(state["loss"].clone()).map_err(|e| bad(e.to_string()))?;
        match_losses =
            serde_json::from_value(state["match_loss"].clone()).map_err(|e| bad(e.to_string()))?;
        train_before = state["seconds"].as_f64().unwrap_or(0.0);
        progress(Progress::Resumed {
            candidate,
            step: start,
        });
    }

    let t1 = Instant::now();
    let mut last_good = start;
    for step in start..cfg.steps {
        let lr = if step < cfg.warmup {
            cfg.lr * (step + 1) as f64 / cfg.warmup as f64
        } else {
            let p = (step - cfg.warmup) as f64 / (cfg.steps - cfg.warmup).max(1) as f64;
            cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
        };
        opt.params.lr = lr;
        // A stream per step: a resumed build draws what the uninterrupted one would.
        let mut rng = Rng::new(cfg.seed, 0x2E50_0000 + step as u64);
        let samples = (0..cfg.batch)
            .map(|_| {
                let scene = &train[rng.below(train.len())];
                let rule = draw_rule(cfg, &mut rng);
                sample(
                    scene,
                    rule,
                    cfg.form(),
                    cfg.prompt_form(),
                    &processor.preprocessor,
                    cfg.relabel.then_some(&mut rng),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let tb = training_batch(&processor, &samples, cfg.match_weight > 0.0)?;
        // Logits only where the loss reads them, not over every prompt position.
        let logits = model.forward_rows(&tb.batch, Mode::Train, &scored_rows(&tb))?;
        let (answer, questions) = step_loss(&logits, &tb)?;
        let (total, match_loss) = match questions {
            Some(m) => {
                let ml = f64::from(m.to_scalar::<f32>()?);
                ((&answer + (m * cfg.match_weight)?)?, Some(ml))
            }
            None => (answer.clone(), None),
        };
        let loss = f64::from(answer.to_scalar::<f32>()?);
        let grads = total.backward()?;
        if !loss.is_finite() || !opt.grads_finite(&grads)? {
            return Err(ZeroShotError::NotFinite {
                step: step + 1,
                loss,
                last_good,
            });
        }
        opt.step(&grads)?;
        losses.push(loss);
        match_losses.extend(match_loss);
        if (step + 1) % cfg.checkpoint_every.max(1) == 0 && step + 1 < cfg.steps {
            crate::train::checkpoint::save(
                &ck,
                &opt.state_tensors(),
                &json!({
                    "run": run,
                    "step": step + 1,
                    "loss": losses,
                    "match_loss": match_losses,
                    "seconds": train_before + t1.elapsed().as_secs_f64(),
                }),
            )?;
            last_good = step + 1;
        }
        progress(Progress::Step {
            candidate,
            step: step + 1,
            total: cfg.steps,
            loss,
        });
    }
    let seconds = train_before + t1.elapsed().as_secs_f64();

    let parameters = named.iter().map(|(_, v)| v.elem_count()).sum();
    let tensors: Vec<(String, Tensor)> = named
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect();
    drop(store);
    save_tensors(&dir.join("model.safetensors"), &tensors)?;
    Ok(Trained {
        losses,
        match_losses,
        seconds,
        parameters,
    })
}

/// The training curve [`build`] draws next to the model: answer loss per step, raw and
/// smoothed over 20 steps (and the correspondence questions' loss when they were on).
pub const CURVE_FILE: &str = "zero_shot_loss.png";

/// Whether `out` holds a build that was killed before it finished (a checkpoint of it, or
/// of one of its candidates, and no report): running the build again resumes it.
pub fn in_progress(out: &Path) -> bool {
    if out.join("zero_shot.json").exists() {
        return false;
    }
    out.join(BUILDING_FILE).exists()
        || checkpoint_path(out).exists()
        || std::fs::read_dir(out)
            .map(|entries| {
                entries.flatten().any(|e| {
                    e.file_name().to_string_lossy().starts_with("candidate-")
                        && checkpoint_path(&e.path()).exists()
                })
            })
            .unwrap_or(false)
}

/// Removes what a killed build left in `out` (its checkpoint, its candidates' folders), so
/// that the next build starts over.
pub fn clear_progress(out: &Path) -> std::io::Result<()> {
    for f in [checkpoint_path(out), out.join(BUILDING_FILE)] {
        if f.exists() {
            std::fs::remove_file(&f)?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(out) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("candidate-") && e.path().is_dir() {
                std::fs::remove_dir_all(e.path())?;
            }
        }
    }
    Ok(())
}

/// Where [`build`] keeps its checkpoint while training (removed once the folder is done).
pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.join("zero_shot_checkpoint.safetensors")
}

/// `others`: the answer losses of the candidates not kept, drawn (smoothed, grey) beside
/// the kept one's in the zoomed panel.
fn loss_curve(report: &Report, others: &[Vec<f64>], path: &Path) -> Result<()> {
    use crate::plot::{line_panels, smooth, Panel, Series};
    // The first steps fall from ~7.5 nats; the second panel leaves out the first tenth so
    // that the plateau and any later drop (a lookup emerging) are readable.
    let cut = (report.loss.len() / 10).max(1);
    let zoomed = |v: Vec<f64>| -> Vec<f64> {
        v.into_iter()
            .enumerate()
            .map(|(i, x)| if i < cut { f64::NAN } else { x })
            .collect()
    };
    let zoom_title = format!("answer loss from step {}", cut + 1);
    let mut panels = vec![
        Panel {
            title: "answer loss (nats/token)",
            series: vec![
                Series {
                    label: "step",
                    values: report.loss.clone(),
                    rgb: (174, 199, 232),
                },
                Series {
                    label: "mean of 20",
                    values: smooth(&report.loss, 20),
                    rgb: (31, 119, 180),
                },
            ],
        },
        Panel {
            title: &zoom_title,
            series: vec![
                Series {
                    label: "step",
                    values: zoomed(report.loss.clone()),
                    rgb: (174, 199, 232),
                },
                Series {
                    label: "mean of 20",
                    values: zoomed(smooth(&report.loss, 20)),
                    rgb: (31, 119, 180),
                },
            ]
            .into_iter()
            .chain(others.iter().map(|l| Series {
                label: "other seed",
                values: zoomed(smooth(l, 20)),
                rgb: (150, 150, 150),
            }))
            .collect(),
        },
    ];
    if !report.match_loss.is_empty() {
        panels.push(Panel {
            title: "correspondence questions (nats)",
            series: vec![Series {
                label: "mean of 20",
                values: smooth(&report.match_loss, 20),
                rgb: (214, 39, 40),
            }],
        });
    }
    line_panels(&panels, path)
        .map_err(|e| ZeroShotError::Config(format!("{}: {e}", path.display())))
}

/// Greedy answers on held-out scenes (keypoints as the evaluation numbers them) compared
/// with the rule: fractions (exact, same pick, parses) per task.
#[allow(clippy::type_complexity)]
pub fn held_out_accuracy(
    model: &Qwen3Vl,
    p: &Processor,
    rule: Rule,
    (form, prompt_form): (AnswerForm, PromptForm),
    scenes: &[SceneSample],
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<([f64; 3], [f64; 3], [f64; 3])> {
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 16,
        stop_tokens: p.stop_tokens(),
        ..SamplingParams::default()
    };
    let (mut exact, mut pick, mut valid, mut n) = ([0f64; 3], [0f64; 3], [0f64; 3], [0f64; 3]);
    for (i, scene) in scenes.iter().enumerate() {
        let s = sample(scene, rule, form, prompt_form, &p.preprocessor, None)?;
        let batch = p.batch(&s.messages, &s.current, &s.goal)?;
        let out = generate(model, &batch, 1, &params)?;
        let answer = p.tokenizer.decode(&out[0].tokens, true)?;
        let k = task_index(scene.task);
        n[k] += 1.0;
        if let Ok(c) = parse_answer(
            &answer,
            scene.current_keypoints.len(),
            scene.goal_keypoints.len(),
        ) {
            valid[k] += 1.0;
            exact[k] += f64::from(u8::from(c == s.answer));
            pick[k] += f64::from(u8::from(c.pick == s.answer.pick));
        }
        progress(Progress::Check {
            done: i + 1,
            total: scenes.len(),
        });
    }
    Ok((
        per_task_share(exact, n),
        per_task_share(pick, n),
        per_task_share(valid, n),
    ))
}

/// `counts / n` per task (NaN for a task with no scene).
fn per_task_share(counts: [f64; 3], n: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|k| {
        if n[k] > 0.0 {
            counts[k] / n[k]
        } else {
            f64::NAN
        }
    })
}

/// The model given `rule`'s reasoning line up to its value (`goal 1 near`) on each held-out
/// scene, then decoding greedily: the fraction of answers equal to the rule's action, per
/// task ([`Report::held_out_lookups`]). `rule` must be one of [`Rule::SINGLE_LOOKUP`].
pub fn held_out_lookup(
    model: &Qwen3Vl,
    p: &Processor,
    rule: Rule,
    prompt_form: PromptForm,
    scenes: &[SceneSample],
) -> Result<[f64; 3]> {
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 12,
        stop_tokens: p.stop_tokens(),
        ..SamplingParams::default()
    };
    let (mut exact, mut n) = ([0f64; 3], [0f64; 3]);
    for scene in scenes {
        let s = sample(
            scene,
            rule,
            AnswerForm::Reasoned,
            prompt_form,
            &p.preprocessor,
            None,
        )?;
        // The line without its value: "goal 1 near".
        let head = s
            .answer_text
            .lines()
            .next()
            .and_then(|l| l.rsplit_once(' '))
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
        let forced = p.tokenizer.encode(&head)?;
        let mut batch = p.batch(&s.messages, &s.current, &s.goal)?;
        batch.input_ids[0].extend(&forced);
        if let Some(mask) = batch.attention_mask.as_mut() {
            mask[0].extend(std::iter::repeat_n(1u8, forced.len()));
        }
        let out = generate(model, &batch, 1, &params)?;
        let answer = format!("{head}{}", p.tokenizer.decode(&out[0].tokens, true)?);
        let k = task_index(scene.task);
        n[k] += 1.0;
        let ok = parse_answer(
            &answer,
            scene.current_keypoints.len(),
            scene.goal_keypoints.len(),
        )
        .is_ok_and(|c| c == s.answer);
        exact[k] += f64::from(u8::from(ok));
    }
    Ok(per_task_share(exact, n))
}

/// Whether `dir` already holds a model (so `build` would overwrite one).
pub fn holds_model(dir: &Path) -> bool {
    dir.join("model.safetensors").exists() || dir.join("config.json").exists()
}
