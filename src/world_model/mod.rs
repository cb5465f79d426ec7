//! Stage 2: the action-conditioned video world model.
//!
//! Given the current object-only frame and the arm's commanded motion rendered as a video,
//! it imagines the object's future frames. It is a small spatio-temporal diffusion
//! transformer trained with rectified flow ([`model`]), on clips cut from recorded
//! transitions ([`clip`]), cached on disk as safetensors shards ([`dataset`]), by a
//! resumable trainer ([`train`]); [`predict`] samples a batch of candidate actions from one
//! state; [`metrics`] holds the frame and mask measures the trainer validates with;
//! [`fit`] fits the particle prior's constants to the bags.

pub mod clip;
pub mod config;
pub mod dataset;
pub mod fit;
pub mod imagine;
pub mod metrics;
pub mod model;
pub mod particles;
pub mod predict;
pub mod prior;
pub mod refine;
pub mod rollout;
pub mod train;

pub use clip::Clip;
pub use config::{Config, Crop, Loss, Prediction, PriorModel};
pub use model::WorldModel;
pub use predict::Predictor;

/// Errors of the world model, its data and its trainer.
#[derive(Debug, thiserror::Error)]
pub enum WorldModelError {
    /// Input data that cannot be used (a bag without the needed topics, mismatched frames).
    #[error("{0}")]
    Data(String),
    /// A model folder or checkpoint that does not fit (another config, corrupted file).
    #[error("{0}")]
    Checkpoint(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A bag could not be read.
    #[error(transparent)]
    Bag(#[from] crate::bag::BagError),
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The loss or a gradient is NaN or infinite; nothing of that step was applied.
    #[error("step {step}: the loss or a gradient is not finite ({loss}); {}", crate::train::checkpoint::kept(.checkpoint))]
    NotFinite {
        /// The step.
        step: usize,
        /// The loss value.
        loss: f64,
        /// The last checkpoint's step (0: none written yet).
        checkpoint: usize,
    },
}

/// A standard normal draw from the project's seeded generator (Box–Muller).
pub(crate) fn gaussian(rng: &mut crate::sim::rng::Rng) -> f64 {
    let u1 = rng.unit().max(1e-12);
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
