//! The VLM as a planner: overlays the keypoints on both images, asks the model (through its
//! own chat template) for K candidate answers at once, parses each with the strict grammar,
//! and chooses the valid candidate with the highest log-probability. When no candidate is
//! valid it samples again (another seed), a bounded number of times, then reports the
//! failure as a decision with no action: model output never crashes the planner.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::eval::{Decision, Planner, Scene};
use super::grammar::{continuation_in, ends_answer_in, viable_in, AnswerForm, Continuation};
use super::prompt::PromptForm;
use super::{parse_answer, prompt, KeypointChoice, ParseError};
use crate::device::{DeviceSpec, DtypeSpec};
use crate::sim::tasks::Task;
use crate::vision::{self, Keypoint, RgbView};
use crate::vlm::chat::{ChatTemplate, Tokenizer};
use crate::vlm::generate::{generate_guided, Guide, GuideStep, SamplingParams, Unguided};
use crate::vlm::image::{preprocess, resize_bicubic, smart_resize, PreprocessorConfig, Rgb8};
use crate::vlm::{prompt_batch, Batch, Qwen3Vl, VlmError};

/// Sampling settings of the planner.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VlmPlannerConfig {
    /// Candidates sampled per decision.
    pub k: usize,
    /// Sampling temperature (0 = greedy: all K candidates are the same).
    #[serde(serialize_with = "f32_as_written")]
    pub temperature: f32,
    /// Nucleus sampling threshold (1 = off).
    #[serde(serialize_with = "f32_as_written")]
    pub top_p: f32,
    /// Top-k truncation (0 = off).
    pub top_k: usize,
    /// Longest answer (tokens).
    pub max_new_tokens: usize,
    /// Sampling rounds before giving up when no candidate parses.
    pub attempts: usize,
    /// Seed of the first round (decisions are reproducible).
    pub seed: u64,
    /// Guided decoding ([`AnswerGuide`]): the grammar writes `pick` and ` place` and ends
    /// the answer after its second number, so only the two numbers are sampled (two model
    /// steps instead of five for the tiny model). Off for a model that should think aloud
    /// before its answer line.
    pub guided: bool,
    /// Constrained sampling (with `guided`): wherever the model chooses, sample only among
    /// the tokens that keep the answer valid (`grammar::viable`), so every candidate is an
    /// action and a high temperature explores actions instead of invalid text. Off
    /// by default (the planner samples the model as it is); `dreamplan preferences` turns
    /// it on.
    pub constrained: bool,
    /// Where the model computes (`cpu`, `cuda`, `cuda:N`; [`crate::device`]).
    pub device: DeviceSpec,
    /// Compute dtype (`auto`: f32 on the CPU, bf16 on a GPU).
    pub dtype: DtypeSpec,
}

/// An f32 setting as the f64 of its shortest decimal (0.9, not 0.8999999761581421): what a
/// config or a parameter listing shows.
fn f32_as_written<S: serde::Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(x.to_string().parse().unwrap_or(f64::from(*x)))
}

impl VlmPlannerConfig {
    /// The settings a decision can be made with: `Err((field, rule))` names the first that
    /// is not (the planner node says `sampling.<field>`, the command lines `--<field>`).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.k < 1 {
            return Err(("k", "must be >= 1"));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(("temperature", "must be >= 0 (0 = greedy)"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(("top_p", "must be in (0, 1]"));
        }
        if self.max_new_tokens < 1 {
            return Err(("max_new_tokens", "must be >= 1"));
        }
        if self.attempts < 1 {
            return Err(("attempts", "must be >= 1"));
        }
        Ok(())
    }
}

impl Default for VlmPlannerConfig {
    fn default() -> Self {
        Self {
            k: 8,
            temperature: 1.0,
            top_p: 0.9,
            top_k: 0,
            max_new_tokens: 24,
            attempts: 3,
            seed: 0,
            guided: true,
            constrained: false,
            device: DeviceSpec::Cpu,
            dtype: DtypeSpec::Auto,
        }
    }
}

/// One sampled answer.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The decoded answer.
    pub text: String,
    /// What the grammar made of it.
    pub choice: Result<KeypointChoice, ParseError>,
    /// Sum of the answer tokens' log-probabilities (guided: those of `pick N place M`,
    /// the end token is not computed; unguided: every token up to and with the end token).
    pub logprob: f32,
}

/// The answer grammar ([`continuation`]) as a decoding guide: the literal words are
/// written as the model's own tokenizer writes the whole answer (when that extends the
/// tokens so far; otherwise the model writes them), and the answer ends after its second
/// number. Unless [`constrained`](Self::constrained), nothing is forbidden: an answer that
/// leaves the format is still parsed, and refused, as unguided.
pub struct AnswerGuide<'a> {
    tokenizer: &'a Tokenizer,
    current: usize,
    goal: usize,
    answer_tokens: Option<&'a [(u32, String)]>,
    /// The end tokens, allowed in constrained sampling once the answer is whole.
    stop: &'a [u32],
    form: AnswerForm,
}

impl<'a> AnswerGuide<'a> {
    /// The guide for answers about `current` and `goal` keypoints.
    pub fn new(tokenizer: &'a Tokenizer, current: usize, goal: usize) -> Self {
        Self {
            tokenizer,
            current,
            goal,
            answer_tokens: None,
            stop: &[],
            form: AnswerForm::Plain,
        }
    }

    /// The same guide for answers in `form` (a reasoning line first, or not).
    pub fn form(mut self, form: AnswerForm) -> Self {
        self.form = form;
        self
    }

    /// The same guide, constrained: wherever the model chooses, only the tokens of
    /// `answer_tokens` ([`Tokenizer::answer_tokens`]) that keep the answer valid may be
    /// sampled, and the `stop` tokens once the text is a whole valid answer that could still
    /// grow (`pick 3 place 1` with 12 goal keypoints: before session 45 it had to become
    /// 10, 11 or 12, and no answer could place at keypoint 1 or 2).
    pub fn constrained(mut self, answer_tokens: &'a [(u32, String)], stop: &'a [u32]) -> Self {
        self.answer_tokens = Some(answer_tokens);
        self.stop = stop;
        self
    }
}

impl Guide for AnswerGuide<'_> {
    fn step(&self, tokens: &[u32]) -> GuideStep {
        let Ok(text) = self.tokenizer.decode(tokens, false) else {
            return GuideStep::Free;
        };
        match continuation_in(self.form, &text, self.current, self.goal) {
            Continuation::Open => GuideStep::Free,
            Continuation::Complete => GuideStep::Done,
            Continuation::Literal(word) => match self.tokenizer.encode(&format!("{text}{word}")) {
                Ok(ids) if ids.len() > tokens.len() && ids.starts_with(tokens) => {
                    GuideStep::Force(ids[tokens.len()..].to_vec())
                }
                _ => GuideStep::Free,
            },
        }
    }

    fn allowed(&self, tokens: &[u32]) -> Option<Vec<u32>> {
        let answer_tokens = self.answer_tokens?;
        let text = self.tokenizer.decode(tokens, false).ok()?;
        if continuation_in(self.form, &text, self.current, self.goal) == Continuation::Complete {
            return None;
        }
        let mut allowed: Vec<u32> = answer_tokens
            .iter()
            .filter(|(_, piece)| {
                viable_in(
                    self.form,
                    &format!("{text}{piece}"),
                    self.current,
                    self.goal,
                )
            })
            .map(|&(id, _)| id)
            .collect();
        if ends_answer_in(self.form, &text, self.current, self.goal) {
            allowed.extend_from_slice(self.stop);
        }
        Some(allowed)
    }
}

/// The text and image side of a model folder (what HF calls its processor): tokenizer,
/// chat template and image preprocessing, loaded once. The planner asks with it; the
/// zero-shot trainer builds its training rows with it.
pub struct Processor {
    /// Tokenizer.
    pub tokenizer: Tokenizer,
    /// Chat template.
    pub template: ChatTemplate,
    /// Image preprocessing.
    pub preprocessor: PreprocessorConfig,
}

impl Processor {
    /// Loads `tokenizer.json`, the chat template and `preprocessor_config.json` of `dir`.
    pub fn load(dir: &Path) -> Result<Self, VlmError> {
        Ok(Self {
            tokenizer: Tokenizer::load(dir)?,
            template: ChatTemplate::load(dir)?.ok_or_else(|| {
                VlmError::Template(format!("{}: no chat template", dir.display()))
            })?,
            preprocessor: PreprocessorConfig::load(dir)?,
        })
    }

    /// One prompt row: `messages` rendered by the chat template (with the generation
    /// prompt), the two images preprocessed and their pad runs expanded.
    pub fn batch(
        &self,
        messages: &serde_json::Value,
        current: &Rgb8,
        goal: &Rgb8,
    ) -> Result<Batch, VlmError> {
        let text = self
            .template
            .render(messages, true, &serde_json::Value::Null)?;
        let cfg = &self.preprocessor;
        let images = [preprocess(current, cfg)?, preprocess(goal, cfg)?];
        prompt_batch(&self.tokenizer, &text, &images, cfg)
    }

    /// The ids that end an answer (`<|im_end|>`, `<|endoftext|>`), those the tokenizer has.
    pub fn stop_tokens(&self) -> Vec<u32> {
        ["<|im_end|>", "<|endoftext|>"]
            .iter()
            .filter_map(|t| self.tokenizer.token_id(t))
            .collect()
    }
}

/// The planner: a model folder loaded once.
pub struct VlmPlanner {
    model: Qwen3Vl,
    /// With an adapter set: per task, the model with that task's adapter merged.
    per_task: Vec<(Task, Qwen3Vl)>,
    processor: Processor,
    stop: Vec<u32>,
    answer_tokens: std::sync::OnceLock<Vec<(u32, String)>>,
    form: AnswerForm,
    prompt_form: PromptForm,
    last: Vec<Candidate>,
    /// Set by [`Planner::halt_flag`]'s holder to end a decision early.
    halt: Arc<AtomicBool>,
    /// Sampling settings.
    pub config: VlmPlannerConfig,
}

/// A guide that also ends generation once `halt` is set.
struct Halting<'a> {
    inner: &'a dyn Guide,
    halt: &'a AtomicBool,
}

impl Guide for Halting<'_> {
    fn step(&self, tokens: &[u32]) -> GuideStep {
        self.inner.step(tokens)
    }
    fn allowed(&self, tokens: &[u32]) -> Option<Vec<u32>> {
        self.inner.allowed(tokens)
    }
    fn halted(&self) -> bool {
        self.halt.load(Ordering::Relaxed) || self.inner.halted()
    }
}

impl VlmPlanner {
    /// Loads an HF Qwen3-VL folder (weights, tokenizer, chat template, preprocessor).
    pub fn load(dir: &Path, config: VlmPlannerConfig) -> Result<Self, VlmError> {
        Self::load_with_adapter(dir, None, config)
    }

    /// [`load`](Self::load), then a PEFT LoRA adapter folder read and merged into the
    /// weights (so a decision costs what it costs without one). An adapter made for another
    /// model is refused with the layer and shapes that do not fit. `adapter` may also be an
    /// adapter set ([`super::adapters`]): each task is then answered by the model with its
    /// own adapter merged (one model copy per task).
    pub fn load_with_adapter(
        dir: &Path,
        adapter: Option<&Path>,
        config: VlmPlannerConfig,
    ) -> Result<Self, VlmError> {
        // Every command that loads a planner gets the node's checks: `eval --k 0` made
        // every episode "no action" without saying why before session 43.
        config
            .check()
            .map_err(|(field, rule)| VlmError::Input(format!("sampling setting {field} {rule}")))?;
        let compute = crate::device::Compute::open(config.device, config.dtype)
            .map_err(|e| VlmError::Input(e.to_string()))?;
        let load_merged = |adapter: Option<&Path>| -> Result<Qwen3Vl, VlmError> {
            let mut model = Qwen3Vl::load(dir, compute.dtype, &compute.device)?;
            if let Some(adapter) = adapter {
                crate::vlm::lora::load(model.text_mut(), adapter).map_err(|e| match e {
                    VlmError::Shape { .. } | VlmError::MissingTensor { .. } => {
                        VlmError::Input(format!(
                            "adapter {} does not fit the model in {}: {e}",
                            adapter.display(),
                            dir.display()
                        ))
                    }
                    e => VlmError::Input(format!("adapter {}: {e}", adapter.display())),
                })?;
                crate::vlm::lora::merge(model.text_mut())?;
            }
            // The goal image is the same at every decision of an episode: encode it once.
            model.set_vision_cache(4);
            Ok(model)
        };
        let (model, per_task) = match adapter {
            Some(set) if super::adapters::AdapterSet::is_set(set) => {
                let members = super::adapters::AdapterSet::read(set).map_err(VlmError::Input)?;
                let per_task = members
                    .iter()
                    .map(|(task, folder)| Ok((*task, load_merged(Some(folder))?)))
                    .collect::<Result<Vec<_>, VlmError>>()?;
                (load_merged(None)?, per_task)
            }
            adapter => (load_merged(adapter)?, Vec::new()),
        };
        Self::assemble(dir, model, per_task, config)
    }

    /// A planner of `dir`'s architecture, tokenizer and processor with made-up weights
    /// ([`Qwen3Vl::random`]; `dir` needs no safetensors): what a decision of a model of
    /// that size costs, e.g. the 8B config on a GPU (`dreamplan plan-bench
    /// --random-weights`). Its answers are noise, shaped into actions by the grammar.
    pub fn load_random(dir: &Path, config: VlmPlannerConfig) -> Result<Self, VlmError> {
        let compute = crate::device::Compute::open(config.device, config.dtype)
            .map_err(|e| VlmError::Input(e.to_string()))?;
        let mut model = Qwen3Vl::random(dir, compute.dtype, &compute.device)?;
        model.set_vision_cache(4);
        Self::assemble(dir, model, Vec::new(), config)
    }

    fn assemble(
        dir: &Path,
        model: Qwen3Vl,
        per_task: Vec<(Task, Qwen3Vl)>,
        config: VlmPlannerConfig,
    ) -> Result<Self, VlmError> {
        let processor = Processor::load(dir)?;
        let stop = processor.stop_tokens();
        Ok(Self {
            model,
            per_task,
            processor,
            stop,
            answer_tokens: std::sync::OnceLock::new(),
            form: answer_form(dir),
            prompt_form: prompt_form(dir),
            last: Vec::new(),
            halt: Arc::new(AtomicBool::new(false)),
            config,
        })
    }

    /// The model that answers `task`: its adapter's with an adapter set, else the one.
    pub fn model_for(&self, task: Task) -> &Qwen3Vl {
        self.per_task
            .iter()
            .find(|(t, _)| *t == task)
            .map_or(&self.model, |(_, m)| m)
    }

    /// Forgets every cached image encoding (benchmarks that time the vision tower).
    pub fn clear_vision_cache(&self) {
        self.model.clear_vision_cache();
        for (_, m) in &self.per_task {
            m.clear_vision_cache();
        }
    }

    /// The loaded model (the base one with an adapter set: see [`model_for`](Self::model_for)).
    pub fn model(&self) -> &Qwen3Vl {
        &self.model
    }

    /// The form of the model's answers (read from its folder: [`answer_form`]).
    pub fn answer_form(&self) -> AnswerForm {
        self.form
    }

    /// The form of the model's prompt (read from its folder: [`prompt_form`]).
    pub fn prompt_form(&self) -> PromptForm {
        self.prompt_form
    }

    /// The model's image preprocessing settings.
    pub fn preprocessor(&self) -> &PreprocessorConfig {
        &self.processor.preprocessor
    }

    /// The prompt batch: the chat-template text with the two overlaid images.
    ///
    /// `frame` is the width and height of the camera frame the keypoints were found in:
    /// their 0–1000 coordinates in the text are relative to it, as the zero-shot and ORPO
    /// trainers write them, whatever size the images were resized to for the model
    /// ([`model_view`]). Before session 45 they were divided by the resized image's size, so
    /// a tiny model's 64-px view turned a 256-px frame's (128, 64) into (1000, 1000) at
    /// inference only (since `e12ce30`; docs/planner.md says which figures that touched).
    pub fn prompt(
        &self,
        task: Task,
        current: &Rgb8,
        goal: &Rgb8,
        current_keypoints: &[Keypoint],
        goal_keypoints: &[Keypoint],
        frame: (u32, u32),
    ) -> Result<Batch, VlmError> {
        let messages = prompt::messages_in(
            self.prompt_form,
            task,
            current_keypoints,
            goal_keypoints,
            frame.0,
            frame.1,
        );
        self.processor.batch(&messages, current, goal)
    }

    /// The prompt [`Planner::decide`] samples from for scene `s`: both frames as the model
    /// sees them ([`model_view`]) and the text with the keypoints' coordinates relative to
    /// the camera frame, as the trainers wrote them.
    pub fn scene_prompt(&self, s: &Scene<'_>) -> Result<Batch, String> {
        let cfg = &self.processor.preprocessor;
        let current = model_view(&frame_rgb(s.current), s.current_keypoints, cfg)
            .map_err(|e| format!("overlay: {e}"))?;
        let goal = model_view(&frame_rgb(s.goal), s.goal_keypoints, cfg)
            .map_err(|e| format!("overlay: {e}"))?;
        self.prompt(
            s.task,
            &current,
            &goal,
            s.current_keypoints,
            s.goal_keypoints,
            (s.current.width, s.current.height),
        )
        .map_err(|e| format!("prompt: {e}"))
    }

    /// K candidates for one prompt about `task`, sampled with `seed`.
    pub fn candidates(
        &self,
        task: Task,
        batch: &Batch,
        current_count: usize,
        goal_count: usize,
        seed: u64,
    ) -> Result<Vec<Candidate>, VlmError> {
        let c = &self.config;
        let params = SamplingParams {
            temperature: c.temperature,
            top_p: c.top_p,
            top_k: c.top_k,
            max_new_tokens: c.max_new_tokens,
            stop_tokens: self.stop.clone(),
            seed,
        };
        let mut guide =
            AnswerGuide::new(&self.processor.tokenizer, current_count, goal_count).form(self.form);
        if c.constrained {
            let answer_tokens = self
                .answer_tokens
                .get_or_init(|| self.processor.tokenizer.answer_tokens());
            guide = guide.constrained(answer_tokens, &self.stop);
        }
        let guide: &dyn Guide = if c.guided { &guide } else { &Unguided };
        let guide = Halting {
            inner: guide,
            halt: &self.halt,
        };
        generate_guided(self.model_for(task), batch, c.k.max(1), &params, &guide)?
            .into_iter()
            .map(|s| {
                let text = self.processor.tokenizer.decode(&s.tokens, true)?;
                Ok(Candidate {
                    choice: parse_answer(&text, current_count, goal_count),
                    logprob: answer_logprob(&s, &self.stop, c.guided),
                    text,
                })
            })
            .collect()
    }
}

/// A boolean of the build settings in `dir`'s `zero_shot.json` (`config.<key>`); false when
/// the folder has no such file or key (every folder not built by `pretrain-zero-shot`).
fn build_flag(dir: &Path, key: &str) -> bool {
    std::fs::read_to_string(dir.join("zero_shot.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("config")?.get(key)?.as_bool())
        .unwrap_or(false)
}

/// The answer form of the model folder `dir`: [`AnswerForm::Reasoned`] when its
/// `zero_shot.json` says the model was built with reasoning lines, else
/// [`AnswerForm::Plain`] (every other folder, a real Qwen3-VL's included).
pub fn answer_form(dir: &Path) -> AnswerForm {
    if build_flag(dir, "reasoning") {
        AnswerForm::Reasoned
    } else {
        AnswerForm::Plain
    }
}

/// The prompt form of the model folder `dir`: [`PromptForm::Recap`] when its
/// `zero_shot.json` says the model was built with the recap line, else
/// [`PromptForm::Plain`].
pub fn prompt_form(dir: &Path) -> PromptForm {
    if build_flag(dir, "recap") {
        PromptForm::Recap
    } else {
        PromptForm::Plain
    }
}

/// A sample's [`Candidate::logprob`]: the sum of its tokens' log-probabilities; guided,
/// without a trailing end token. An answer the grammar ends is done before its end token;
/// one whose last number could still grow (10 or more keypoints) ends with a sampled one,
/// whose log-prob counted before session 45 and ranked such answers below the others.
pub fn answer_logprob(sample: &crate::vlm::generate::Sample, stop: &[u32], guided: bool) -> f32 {
    let scored = match sample.tokens.last() {
        Some(t) if guided && stop.contains(t) => {
            &sample.logprobs[..sample.logprobs.len().saturating_sub(1)]
        }
        _ => &sample.logprobs[..],
    };
    scored.iter().sum()
}

/// The valid candidate with the highest log-probability (first on ties); a NaN log-prob
/// (which compared below nothing, so the last such candidate won) is never the best.
pub fn best(candidates: &[Candidate]) -> Option<KeypointChoice> {
    candidates
        .iter()
        .filter(|c| !c.logprob.is_nan())
        .filter_map(|c| c.choice.as_ref().ok().map(|ch| (c.logprob, *ch)))
        .fold(None::<(f32, KeypointChoice)>, |b, x| match b {
            Some(b) if b.0 >= x.0 => Some(b),
            _ => Some(x),
        })
        .map(|b| b.1)
}

/// What the model is shown: `img` resized to the size the model's processor would resize
/// it to, with the numbered dots drawn at that size (so the digits are as legible as the
/// dot size allows at the model's input, instead of being blurred by a later downscale).
/// Keypoint pixels are scaled along; their 0–1000 coordinates in the prompt do not change.
pub fn model_view(
    img: &Rgb8,
    keypoints: &[Keypoint],
    cfg: &PreprocessorConfig,
) -> Result<Rgb8, String> {
    let (h, w) = if cfg.do_resize {
        smart_resize(
            img.height,
            img.width,
            cfg.patch_size * cfg.merge_size,
            cfg.min_pixels,
            cfg.max_pixels,
        )
        .map_err(|e| e.to_string())?
    } else {
        (img.height, img.width)
    };
    let resized;
    let (img, scaled): (&Rgb8, Vec<Keypoint>) = if (h, w) == (img.height, img.width) {
        (img, keypoints.to_vec())
    } else {
        resized = resize_bicubic(img, w, h);
        let (sx, sy) = (w as f32 / img.width as f32, h as f32 / img.height as f32);
        let kps = keypoints
            .iter()
            .map(|k| Keypoint {
                u: k.u * sx,
                v: k.v * sy,
                ..*k
            })
            .collect();
        (&resized, kps)
    };
    let view =
        RgbView::new(img.width as u32, img.height as u32, &img.data).map_err(|e| e.to_string())?;
    let data = vision::draw_keypoints(&view, &scaled).map_err(|e| e.to_string())?;
    Ok(Rgb8 {
        width: img.width,
        height: img.height,
        data,
    })
}

/// The rgb8 pixels of a rendered frame as the model layer's image type.
pub fn frame_rgb(frame: &crate::render::Frame) -> Rgb8 {
    Rgb8 {
        width: frame.width as usize,
        height: frame.height as usize,
        data: frame.rgb.clone(),
    }
}

impl Planner for VlmPlanner {
    fn name(&self) -> String {
        "vlm".into()
    }

    /// Takes every sampling setting but the device and dtype, which the loaded model fixed.
    fn set_sampling(&mut self, config: &VlmPlannerConfig) {
        self.config = VlmPlannerConfig {
            device: self.config.device,
            dtype: self.config.dtype,
            ..config.clone()
        };
    }

    fn candidates(&self) -> &[Candidate] {
        &self.last
    }

    fn halt_flag(&self) -> Option<Arc<AtomicBool>> {
        Some(self.halt.clone())
    }

    fn decide(&mut self, s: &Scene<'_>) -> Decision {
        // A decision that fails before sampling has no candidates, not the last one's.
        self.last.clear();
        let batch = match self.scene_prompt(s) {
            Ok(b) => b,
            Err(e) => return Decision::None(e),
        };
        let mut last = String::new();
        for attempt in 0..self.config.attempts.max(1) {
            if self.halt.load(Ordering::Relaxed) {
                return Decision::None(VlmError::Halted.to_string());
            }
            let seed = self
                .config
                .seed
                .wrapping_add(s.seed.wrapping_mul(1_000_003))
                .wrapping_add(attempt as u64);
            match self.candidates(
                s.task,
                &batch,
                s.current_keypoints.len(),
                s.goal_keypoints.len(),
                seed,
            ) {
                Ok(cands) => {
                    let chosen = best(&cands);
                    self.last = cands;
                    if let Some(choice) = chosen {
                        return Decision::Keypoints(choice);
                    }
                    let cands = &self.last;
                    if let Some(c) = cands.last() {
                        last = format!(
                            "{:?}: {}",
                            c.text,
                            c.choice
                                .as_ref()
                                .err()
                                .map_or(String::new(), |e| e.to_string())
                        );
                    }
                }
                Err(e) => return Decision::None(format!("model: {e}")),
            }
        }
        Decision::None(format!(
            "no valid answer in {} × {} samples (last {last})",
            self.config.attempts.max(1),
            self.config.k.max(1)
        ))
    }
}
