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
    let written = safetensors::serialize_to_file(entries, metadata, &tmp)
        .map_err(|e| err(e.to_string()))
        .and_then(|()| {
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .and_then(|()| std::fs::rename(&tmp, path))
                .and_then(|()| sync_dir_of(path))
                .map_err(|e| err(e.to_string()))
        });
    // A half-written temporary file (a full disk, a write error) is not left behind.
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes `bytes` to `path` through a temporary file that is synced and renamed over it:
/// a reader, or a process killed while writing, sees the old file or the new one, never a
/// torn one. The temporary file is removed when a step fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir_of(path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Makes a rename into `path`'s folder durable: fsyncs the folder, so that after a power
/// loss the folder names the new file, not the old one or none (the file's own bytes were
/// synced before the rename). Best effort: a filesystem that cannot sync a folder is left
/// as it is. Every atomic write here (temporary file, fsync, rename) ends with it; before
/// session 44 none did.
pub fn sync_dir_of(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The file in an output folder whose lock a run holds while it writes there.
pub const LOCK_FILE: &str = ".dreamplan.lock";

/// An exclusive lock on an output folder, held while a run writes into it and released
/// when the run ends, however it ends (`kill -9` included: the kernel drops it with the
/// process).
#[derive(Debug)]
pub struct OutputLock {
    _file: std::fs::File,
}

/// Creates `dir` and takes its [`OutputLock`]. A second run into the same folder (the
/// same command started twice) is refused with the reason instead of writing the same
/// checkpoint and temporary files as the first. A filesystem that cannot lock (some
/// network mounts) is warned about and the run goes on unlocked.
pub fn lock_output(dir: &Path) -> Result<OutputLock, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(format!(
                "another run is writing into {} (it holds {}): wait for it to end, or use another --out",
                dir.display(),
                path.display()
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!("{}: cannot lock ({e}); going on without", path.display());
        }
    }
    Ok(OutputLock { _file: file })
}

/// FNV-1a (64 bits) of `bytes`: stable across runs and platforms (validation splits,
/// seeded weight streams, the data a run trains on).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// What a file is without reading it: `name:bytes:modified-ns`. A file written again at the
/// same path changes it (the bags a cache was cut from, a run's planner weights, the
/// weights a preference file was sampled with).
pub fn file_stamp(path: &Path) -> std::io::Result<String> {
    let m = std::fs::metadata(path)?;
    let modified = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    Ok(format!("{name}:{}:{modified}", m.len()))
}

/// The [`file_stamp`] of each file in `dir` (in its subfolders too with `recursive`), with
/// its path relative to `dir`, sorted by path; hidden files (locks, a writer's temporary
/// files) are left out. What an input folder was, without reading it: the bags a cache
/// was cut from, the folders an experiment's stage read.
pub fn folder_stamps(dir: &Path, recursive: bool) -> std::io::Result<Vec<(PathBuf, String)>> {
    fn walk(
        dir: &Path,
        root: &Path,
        recursive: bool,
        out: &mut Vec<(PathBuf, String)>,
    ) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = e.path();
            if path.is_dir() {
                if recursive {
                    walk(&path, root, recursive, out)?;
                }
            } else if path.is_file() {
                let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                out.push((rel, file_stamp(&path)?));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, recursive, &mut out)?;
    out.sort();
    Ok(out)
}

/// A fingerprint of a file's bytes ([`fnv1a`], hex): what a resumed run compares to know
/// it reads the same data.
pub fn file_fingerprint(path: &Path) -> std::io::Result<String> {
    Ok(format!("{:016x}", fnv1a(&std::fs::read(path)?)))
}

/// This run's identity as `stored` can be compared with it: identities written before
/// session 42 have no `"data"` (what the run trains on), so it is left out for them, and
/// those written before session 52 no `"data.sources_fnv1a"` (the bags' files).
fn comparable(stored: &serde_json::Value, run_id: &serde_json::Value) -> serde_json::Value {
    let mut now = run_id.clone();
    match stored.get("data") {
        None => {
            if let Some(o) = now.as_object_mut() {
                o.remove("data");
            }
        }
        Some(d) if d.get("sources_fnv1a").is_none() => {
            if let Some(o) = now.get_mut("data").and_then(|d| d.as_object_mut()) {
                o.remove("sources_fnv1a");
            }
        }
        Some(_) => {}
    }
    now
}

/// Whether a checkpoint's stored run identity is this run's `run_id` ([`comparable`]: a
/// run started before session 42 still resumes).
pub fn same_run(stored: Option<&serde_json::Value>, run_id: &serde_json::Value) -> bool {
    stored.is_some_and(|s| *s == comparable(s, run_id))
}

/// What differs between a stored run fingerprint and this run's, as `key: was → now`
/// lines joined by "; " (nested keys dotted): what a "checkpoint of another run" refusal
/// names, instead of the whole fingerprint (hundreds of characters of JSON).
pub fn run_difference(stored: Option<&serde_json::Value>, run_id: &serde_json::Value) -> String {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let none = serde_json::Value::Null;
                    walk(
                        &p,
                        x.get(k).unwrap_or(&none),
                        y.get(k).unwrap_or(&none),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{path}: {a} → {b}")),
            _ => {}
        }
    }
    let Some(stored) = stored else {
        return "it records no run fingerprint".into();
    };
    let mut out = Vec::new();
    walk("", stored, &comparable(stored, run_id), &mut out);
    out.join("; ")
}

/// How a trainer's non-finite stop says what is kept: the checkpoint of step `last_good`,
/// or (0) that none was written yet.
pub fn kept(last_good: &usize) -> String {
    if *last_good == 0 {
        "no checkpoint was written yet, so there is nothing to resume from".into()
    } else {
        format!("the last checkpoint (step {last_good}) holds the last good state")
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_run_is_the_same_when_its_identity_is_and_an_old_one_is_compared_without_its_data() {
        let now = json!({"lr": 0.001, "steps": 10, "data": "abc"});
        assert!(same_run(Some(&now), &now));
        assert!(!same_run(None, &now));
        let other_data = json!({"lr": 0.001, "steps": 10, "data": "xyz"});
        assert!(!same_run(Some(&other_data), &now));
        assert_eq!(
            run_difference(Some(&other_data), &now),
            r#"data: "xyz" → "abc""#
        );
        // Written before session 42: no "data", compared without it.
        let old = json!({"lr": 0.001, "steps": 10});
        assert!(same_run(Some(&old), &now));
        assert_eq!(run_difference(Some(&old), &now), "");
        let old_lr = json!({"lr": 0.01, "steps": 10});
        assert!(!same_run(Some(&old_lr), &now));
        assert_eq!(run_difference(Some(&old_lr), &now), "lr: 0.01 → 0.001");
        assert_eq!(run_difference(None, &now), "it records no run fingerprint");
        // Written before session 52: "data" without the bags' files, compared without them;
        // with them, other files are another run.
        let files = json!({"lr": 0.001, "data": {"bags": ["b"], "sources_fnv1a": "01"}});
        let before_52 = json!({"lr": 0.001, "data": {"bags": ["b"]}});
        assert!(same_run(Some(&before_52), &files));
        let other_files = json!({"lr": 0.001, "data": {"bags": ["b"], "sources_fnv1a": "02"}});
        assert!(!same_run(Some(&other_files), &files));
        assert_eq!(
            run_difference(Some(&other_files), &files),
            r#"data.sources_fnv1a: "02" → "01""#
        );
        let other_bags = json!({"lr": 0.001, "data": {"bags": ["c"]}});
        assert!(!same_run(Some(&other_bags), &files));
        let nested = json!({"cfg": {"a": 1, "b": 2}, "data": "abc"});
        let changed = json!({"cfg": {"a": 1, "c": 3}, "data": "abc"});
        assert_eq!(
            run_difference(Some(&nested), &changed),
            "cfg.b: 2 → null; cfg.c: null → 3"
        );
    }
}
