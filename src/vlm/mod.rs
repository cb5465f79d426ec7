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
