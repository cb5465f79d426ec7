//! Qwen3-VL, the planner's vision-language model, on candle. candle-transformers' own
//! `qwen3_vl` lacks multimodal RoPE and inverts its causal mask, so this is the project's
//! implementation, checked against HF transformers on tiny random models
//! (`tests/vlm_golden.rs`, fixtures from `scripts/gen_vlm_fixtures.py`).
//!
//! Pieces, in the order data flows: [`config`] and [`weights`] read an HF model folder;
//! [`chat`] renders the chat template and tokenises; [`image`] turns a picture into
//! `pixel_values`; [`vision`] encodes them; [`rope_index`] assigns multimodal positions;
//! [`text`] runs the language model; [`model`] ties these together; [`generate`] samples.
//! [`linear`] and [`ops`] are the hooks for training: every text linear layer keeps its HF
//! module path (LoRA attaches there), and [`ops::Mode`] swaps fused kernels for
//! differentiable ones. [`io`] reads and writes the reference tools' tensor files.
//!
//! Training: [`lora`] attaches PEFT-format LoRA adapters to those layers, [`train`] runs
//! the differentiable forward and backward (optionally recomputing each decoder layer's
//! activations in the backward pass), [`loss`] holds the sequence log-probabilities and
//! the ORPO objective.

pub mod batch;
pub mod chat;
pub mod config;
pub mod error;
pub mod fused;
pub mod generate;
pub mod image;
pub mod io;
pub mod linear;
pub mod lora;
pub mod loss;
pub mod model;
pub mod ops;
pub mod rope_index;
pub mod text;
pub mod train;
pub mod vision;
pub mod weights;

/// Present in a model folder while `dreamplan pretrain-zero-shot` builds it (removed once
/// its report is written): every loader of a model to plan with, train or merge refuses
/// such a folder ([`check_finished`]).
pub const BUILDING_FILE: &str = "zero_shot.building";

/// Refuses a model folder whose zero-shot build has not finished. Before session 44 a
/// build killed mid-training left random or half-trained weights, a tokenizer and a
/// config in its folder, and `preferences`, `train-orpo`, `merge-adapter` and the planner
/// took them for a model.
pub fn check_finished(dir: &std::path::Path) -> error::Result<()> {
    if dir.join(BUILDING_FILE).exists() {
        return Err(VlmError::Unfinished {
            dir: dir.to_path_buf(),
            file: BUILDING_FILE,
        });
    }
    Ok(())
}

pub use batch::prompt_batch;
pub use candle_core::{DType, Device};
pub use config::Config;
pub use error::VlmError;
pub use model::{Batch, DecoderInputs, ForwardOutput, Images, Qwen3Vl};
pub use ops::Mode;

/// Fixes candle's CPU thread count for the whole process. Without `RAYON_NUM_THREADS`,
/// candle works the count out again for every matrix product, reading `/proc/cpuinfo`
/// each time (6% of a planner decision under `perf`); this sets the variable once to the
/// count candle would choose. Call it first thing in `main`, before any thread exists:
/// it writes the process environment.
pub fn pin_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// Gives each of `jobs` trainings that run side by side in this process its share of the
/// CPU threads: candle's thread count (`RAYON_NUM_THREADS` for its matrix products,
/// `CANDLE_NUM_THREADS` for its element-wise pool) becomes `threads_per_job`. candle has
/// one element-wise pool per process and lets one caller use it at a time, so two
/// trainings on two threads each mostly wait on each other and spin; with a thread each
/// they run apart. Measured on 2 cores with `pretrain-zero-shot`'s two candidates: 41% less
/// training time (1,363 → 810 s), and byte-identical weights (docs/planner.md, "Build
/// time"). Does nothing
/// where the user set either variable, or for one job. Call it before
/// [`pin_cpu_threads`], first thing in `main`, before any thread exists.
pub fn share_cpu_threads(jobs: usize) {
    if jobs <= 1
        || std::env::var_os("RAYON_NUM_THREADS").is_some()
        || std::env::var_os("CANDLE_NUM_THREADS").is_some()
    {
        return;
    }
    let total = candle_core::utils::get_num_threads();
    let per = threads_per_job(total, jobs);
    std::env::set_var("RAYON_NUM_THREADS", per.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", per.to_string());
    let _ = THREAD_SHARE.set(ThreadShare { total, jobs, per });
}

/// What [`share_cpu_threads`] decided, for a run's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadShare {
    /// candle's thread count before the split.
    pub total: usize,
    /// Jobs side by side.
    pub jobs: usize,
    /// Threads each job's candle calls use.
    pub per: usize,
}

static THREAD_SHARE: std::sync::OnceLock<ThreadShare> = std::sync::OnceLock::new();

/// The split [`share_cpu_threads`] made in this process, if it made one.
pub fn cpu_thread_share() -> Option<ThreadShare> {
    THREAD_SHARE.get().copied()
}

/// `total` CPU threads shared by `jobs` side-by-side jobs: at least one each.
pub fn threads_per_job(total: usize, jobs: usize) -> usize {
    (total / jobs.max(1)).max(1)
}
