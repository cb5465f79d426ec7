//! The one error type of the VLM layer: every failure names the file, field or tensor
//! at fault, so a user with a broken model folder or input file knows what to fix.

use std::path::PathBuf;

/// What went wrong while loading a model folder, checking inputs or running the model.
#[derive(Debug, thiserror::Error)]
pub enum VlmError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON.
    #[error("{path}: invalid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A required config field is absent.
    #[error("{path}: missing field `{field}`")]
    MissingField {
        /// The config file.
        path: PathBuf,
        /// Dotted path of the field, e.g. `text_config.hidden_size`.
        field: String,
    },
    /// A config field has the wrong type or an unsupported value.
    #[error("{path}: field `{field}`: {message}")]
    BadField {
        /// The config file.
        path: PathBuf,
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The model folder has no weights in a format we read.
    #[error("{dir}: no model.safetensors or model.safetensors.index.json")]
    NoWeights {
        /// The model folder.
        dir: PathBuf,
    },
    /// A safetensors file is malformed.
    #[error("{path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A tensor the model or a command needs is absent.
    #[error("missing tensor `{name}`{context}")]
    MissingTensor {
        /// Tensor name (HF naming).
        name: String,
        /// Where it was looked for (starts with a separator, may be empty).
        context: String,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}`: expected shape {expected}, found {found:?}")]
    Shape {
        /// Tensor name.
        name: String,
        /// The expected shape, in words where a dimension is free (`[B, L]`).
        expected: String,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A tensor has an element type we cannot use there.
    #[error("tensor `{name}`: expected {expected}, found {found}")]
    Dtype {
        /// Tensor name.
        name: String,
        /// Accepted element types, in words.
        expected: String,
        /// The element type found.
        found: String,
    },
    /// Inputs are inconsistent with each other or with the model.
    #[error("invalid input: {0}")]
    Input(String),
    /// The tokenizer failed to load or to encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// An image could not be decoded or preprocessed.
    #[error("image: {0}")]
    Image(String),
    /// The folder is a `pretrain-zero-shot` build that has not finished (its
    /// [`crate::vlm::BUILDING_FILE`] is there): its weights are a checkpoint's or random.
    #[error("{dir}: a zero-shot build that has not finished ({file} is there): run the same `dreamplan pretrain-zero-shot` command again to resume it, or use a finished model folder")]
    Unfinished {
        /// The model folder.
        dir: PathBuf,
        /// The marker's name.
        file: &'static str,
    },
    /// The caller asked generation to stop ([`crate::vlm::generate::Guide::halted`]): a
    /// node shutting down mid-decision.
    #[error("stopped before the answer was complete: the caller asked to stop")]
    Halted,
    /// The model's next-token scores hold NaN or +inf: its weights or activations are broken
    /// (a diverged adapter, an f16 overflow). Sampling from them would pick an arbitrary
    /// token and call it an answer.
    #[error("the model's scores for the next token are not finite (NaN or +inf): broken weights or an overflow in {dtype}; try --dtype f32, or check the adapter")]
    NonFinite {
        /// The dtype the model ran in.
        dtype: String,
    },
    /// A tensor operation failed (a bug or an exhausted device rather than bad input).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl VlmError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with [`VlmError`].
pub type Result<T, E = VlmError> = std::result::Result<T, E>;
