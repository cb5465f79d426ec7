//! Single-file training checkpoints: every tensor of a trainer's state (weights, optimiser
//! moments) and a JSON document of the rest (step, history, settings) in one safetensors
//! file, the JSON in its metadata. One file means one rename makes it current: it is written
//! to `NAME.tmp`, synced, then renamed over `NAME`, so a `kill -9` at any moment leaves
//! either the previous checkpoint or the new one, never a half-written file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

/// Errors of checkpoint files.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing failed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

const STATE_KEY: &str = "dreamplan_state";

/// Writes `tensors` and `state` to `path` atomically (temp file, sync, rename).
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    state: &serde_json::Value,
) -> Result<(), CheckpointError> {
    let err = |message: String| CheckpointError::File {
        path: path.to_path_buf(),
        message,
    };
    let tmp = path.with_extension("tmp");
    let metadata = Some(HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (STATE_KEY.to_string(), state.to_string()),
    ]));
    let entries: Vec<(&String, &Tensor)> = tensors.iter().map(|(n, t)| (n, t)).collect();
    safetensors::serialize_to_file(entries, metadata, &tmp).map_err(|e| err(e.to_string()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

/// Reads a checkpoint written by [`save`]: its tensors and its JSON state.
pub fn load(path: &Path) -> Result<(HashMap<String, Tensor>, serde_json::Value), CheckpointError> {
    let err = |message: String| CheckpointError::File {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(format!("not a safetensors file: {e}")))?;
    let state = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STATE_KEY))
        .ok_or_else(|| err("not a dreamplan checkpoint (no training state)".into()))?;
    let state: serde_json::Value =
        serde_json::from_str(state).map_err(|e| err(format!("training state: {e}")))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| err(e.to_string()))?;
    Ok((tensors, state))
}
