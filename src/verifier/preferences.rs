//! Preference data for ORPO: per decision state, the planner's sampled candidates (duplicates
//! merged) with a verifier's scores, and the pairs made from them; and the dataset file that
//! holds them.
//!
//! **Pairs** ([`make_pairs`]): the best-scoring candidate (the first on ties) against every
//! other candidate whose score is lower by more than `margin`. Candidates within the margin
//! of the best make no pair (the verifier cannot tell them apart).
//!
//! **The file** (JSON lines, UTF-8): line 1 is a [`Header`] (what made the data: the planner
//! folder and a fingerprint of its tokenizer, the verifier, sampling settings, margin);
//! every further line is one [`PreferenceState`]: the task and seed, the two images (PNG
//! files in a folder beside the file, named in the line, so bags from a real arm fit the same
//! format), both keypoint lists in pixels, the scored candidates and the pairs. Lines are
//! appended and flushed one state at a time, so an interrupted run loses at most the line it
//! was writing; [`read`] drops a torn last line and [`open_for_append`] truncates it, which
//! is how generation resumes.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::planner::KeypointChoice;
use crate::vision::Keypoint;

/// The `format` of line 1.
pub const FORMAT: &str = "dreamplan-preferences";
/// The version this code writes and reads.
pub const VERSION: u32 = 1;

/// Errors of the preference file.
#[derive(Debug, thiserror::Error)]
pub enum PreferenceError {
    /// Reading or writing failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why (not a `source`: the message already says it, once).
        error: std::io::Error,
    },
    /// The content is not a preference file of this version.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

type Result<T> = std::result::Result<T, PreferenceError>;

/// What made the data (line 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// The planner's model folder, as given.
    pub planner: String,
    /// [`tokenizer_fingerprint`] of the planner's `tokenizer.json`: answers are tokenised
    /// by the trainer, and a different tokenizer would train other tokens.
    pub tokenizer: String,
    /// The verifier's name (`sim`, `sim-mask`, `world-model`, …).
    pub verifier: String,
    /// Candidates sampled per state.
    pub k: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// Whether sampling was constrained to valid answers (files from before this field:
    /// not).
    #[serde(default)]
    pub constrained: bool,
    /// Extra exploring samples per state, drawn at `explore_temperature` after the K at
    /// `temperature` (0: none; files from before this field: none).
    #[serde(default)]
    pub explore_k: usize,
    /// Their temperature.
    #[serde(default)]
    pub explore_temperature: f32,
    /// Score margin a rejected candidate must be below the chosen one by.
    pub margin: f64,
    /// Seed of the first state of each task (state `i` of a task has seed `first_seed + i`).
    pub first_seed: u64,
    /// Keypoints per image.
    pub keypoints: usize,
    /// Image side (pixels).
    pub size: u32,
    /// Nucleus sampling's top-p (files from before session 42: 0, unknown).
    #[serde(default)]
    pub top_p: f32,
    /// The LoRA adapter (or adapter set) the planner sampled with, as given; empty: none.
    /// Before session 42 neither this nor `top_p` was recorded, and a file of the base
    /// planner's samples was continued with a tuned planner's.
    #[serde(default)]
    pub adapter: String,
    /// [`weights_fingerprint`] of the planner's and the adapter's weight files: a planner
    /// rebuilt, or an adapter trained again, at the same path samples differently. Files
    /// from before session 44 have none and are continued without the comparison.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub weights: String,
}

/// One sampled answer and its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoredCandidate {
    /// Current keypoint to grasp.
    pub pick: u32,
    /// Goal keypoint to place at.
    pub place: u32,
    /// The verifier's score (higher is better). JSON has no NaN or infinity: a non-finite
    /// score is written `null` and read back as NaN, which makes no pair (before session
    /// 53 such a line was written and then refused on reading: the whole file could
    /// neither be resumed nor trained on).
    #[serde(deserialize_with = "nan_if_null")]
    pub score: f64,
    /// How many of the K samples gave this answer.
    pub count: usize,
    /// The planner's log-probability of the answer (`null`, read as NaN, when it was not
    /// finite).
    #[serde(deserialize_with = "nan_if_null")]
    pub logprob: f32,
    /// The answer as the planner wrote it, when that is more than `pick N place M` (a
    /// reasoning line first: `planner::grammar::AnswerForm::Reasoned`); absent otherwise,
    /// and in files from before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// A number that may be `null`, JSON's spelling of what `serde_json` writes for NaN and
/// infinities, read as NaN.
fn nan_if_null<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + num_nan::Nan,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or(T::NAN))
}

mod num_nan {
    /// The float types a preference file stores.
    pub trait Nan {
        const NAN: Self;
    }
    impl Nan for f64 {
        const NAN: f64 = f64::NAN;
    }
    impl Nan for f32 {
        const NAN: f32 = f32::NAN;
    }
}

impl ScoredCandidate {
    /// The answer text a trainer teaches: [`ScoredCandidate::answer`], else the plain
    /// `pick N place M`.
    pub fn text(&self) -> String {
        self.answer
            .clone()
            .unwrap_or_else(|| crate::planner::format_answer(&self.choice()))
    }

    /// The answer as a choice.
    pub fn choice(&self) -> KeypointChoice {
        KeypointChoice {
            pick: self.pick,
            place: self.place,
        }
    }
}

/// A preference pair: indices into the state's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    /// The better candidate.
    pub chosen: usize,
    /// The worse one.
    pub rejected: usize,
}

/// One decision state with its scored candidates and pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceState {
    /// `rope`, `cloth` or `toy`.
    pub task: String,
    /// Episode seed.
    pub seed: u64,
    /// Current image (PNG, rgb8), relative to the file's folder.
    pub current_image: String,
    /// Goal image (PNG, rgb8), relative to the file's folder.
    pub goal_image: String,
    /// Current keypoints as `[id, u, v]` (pixels).
    pub current_keypoints: Vec<(u32, f32, f32)>,
    /// Goal keypoints as `[id, u, v]` (pixels).
    pub goal_keypoints: Vec<(u32, f32, f32)>,
    /// Distinct valid candidates, best first.
    pub candidates: Vec<ScoredCandidate>,
    /// Pairs ([`make_pairs`]).
    pub pairs: Vec<Pair>,
}

/// Keypoints as the file stores them.
pub fn keypoints_to_file(kps: &[Keypoint]) -> Vec<(u32, f32, f32)> {
    kps.iter().map(|k| (k.id, k.u, k.v)).collect()
}

/// Keypoints from the file.
pub fn keypoints_from_file(kps: &[(u32, f32, f32)]) -> Vec<Keypoint> {
    kps.iter()
        .map(|&(id, u, v)| Keypoint { id, u, v })
        .collect()
}

/// Merges duplicate answers (keeping the first one's log-probability and counting the
/// rest) and sorts by score, best first (stable: sampling order on ties).
pub fn merge_candidates(answers: &[(KeypointChoice, f32)], scores: &[f64]) -> Vec<ScoredCandidate> {
    let mut out: Vec<ScoredCandidate> = Vec::new();
    for ((choice, logprob), &score) in answers.iter().zip(scores) {
        match out.iter_mut().find(|c| c.choice() == *choice) {
            Some(c) => c.count += 1,
            None => out.push(ScoredCandidate {
                pick: choice.pick,
                place: choice.place,
                score,
                count: 1,
                logprob: *logprob,
                answer: None,
            }),
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

/// The chosen candidate against every candidate scored more than `margin` below it.
///
/// The chosen one is the best, except that among the candidates within `margin` of the
/// best the planner's own favourite (highest log-probability) is taken: where the planner
/// is already as good as the best sample, no other answer is taught. Without this, states
/// whose good actions differ in ways no prompt feature explains (which of several rope
/// points to drag) pulled the tuned planner off the rule it had, and rope fell from 0.72
/// to 0.55 while cloth rose (docs/stage3.md). `candidates` need not be sorted; NaN scores
/// make no pair.
pub fn make_pairs(candidates: &[ScoredCandidate], margin: f64) -> Vec<Pair> {
    let top = candidates
        .iter()
        .map(|c| c.score)
        .filter(|s| !s.is_nan())
        .fold(f64::NEG_INFINITY, f64::max);
    if top == f64::NEG_INFINITY {
        return Vec::new();
    }
    // Among the near-best: highest log-probability, then highest score, then first.
    let chosen = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.score >= top - margin)
        .fold(None::<(usize, &ScoredCandidate)>, |b, (i, c)| match b {
            Some((_, bc))
                if (bc.logprob, bc.score) >= (c.logprob, c.score) || c.logprob.is_nan() =>
            {
                b
            }
            _ => Some((i, c)),
        })
        .map(|(i, _)| i)
        .expect("the best candidate is within the margin of itself");
    let floor = candidates[chosen].score - margin;
    candidates
        .iter()
        .enumerate()
        .filter(|(i, c)| *i != chosen && c.score < floor)
        .map(|(rejected, _)| Pair { chosen, rejected })
        .collect()
}

/// A short, stable fingerprint of a tokenizer file's bytes (CRC-32 and length, hex).
pub fn tokenizer_fingerprint(model_dir: &Path) -> Result<String> {
    let path = model_dir.join("tokenizer.json");
    let bytes = std::fs::read(&path).map_err(|error| PreferenceError::Io {
        path: path.clone(),
        error,
    })?;
    Ok(format!("{:08x}-{}", crc32fast::hash(&bytes), bytes.len()))
}

/// A fingerprint of the weights a planner samples with: the name, size and modification
/// time of every `.safetensors` and `.json` file in `model_dir` and, when given, under the
/// adapter (a folder, or an adapter set's folders), FNV-1a hashed. Cheap (no file is read)
/// and what tells a model rebuilt at the same path from the one a file was made with.
pub fn weights_fingerprint(model_dir: &Path, adapter: Option<&Path>) -> Result<String> {
    fn list(dir: &Path, tag: &str, depth: usize, out: &mut Vec<String>) -> Result<()> {
        let io = |error| PreferenceError::Io {
            path: dir.to_path_buf(),
            error,
        };
        for e in std::fs::read_dir(dir).map_err(io)?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let path = e.path();
            if path.is_dir() {
                if depth > 0 {
                    list(&path, &format!("{tag}/{name}"), depth - 1, out)?;
                }
                continue;
            }
            if !(name.ends_with(".safetensors") || name.ends_with(".json")) {
                continue;
            }
            let stamp = crate::train::checkpoint::file_stamp(&path).map_err(io)?;
            out.push(format!("{tag}/{stamp}"));
        }
        Ok(())
    }
    let mut files = Vec::new();
    list(model_dir, "model", 0, &mut files)?;
    if let Some(a) = adapter {
        list(a, "adapter", 1, &mut files)?;
    }
    files.sort();
    Ok(format!(
        "{:016x}",
        crate::train::checkpoint::fnv1a(files.join("\n").as_bytes())
    ))
}

/// The folder the images of preference file `file` go to (`pairs.jsonl` → `pairs.images/`).
pub fn images_dir(file: &Path) -> PathBuf {
    file.with_extension("images")
}

/// A preference file read whole.
#[derive(Debug, Clone)]
pub struct PreferenceFile {
    /// Line 1.
    pub header: Header,
    /// Every complete state line.
    pub states: Vec<PreferenceState>,
    /// Bytes of the file up to the end of the last complete line.
    pub good_len: u64,
}

/// Reads `file`. A last line without its newline (a write that was interrupted) is
/// dropped; any other bad line is an error naming its line number.
pub fn read(file: &Path) -> Result<PreferenceFile> {
    let fmt = |message: String| PreferenceError::Format {
        path: file.to_path_buf(),
        message,
    };
    let f = std::fs::File::open(file).map_err(|error| PreferenceError::Io {
        path: file.to_path_buf(),
        error,
    })?;
    let mut reader = std::io::BufReader::new(f);
    let mut header: Option<Header> = None;
    let mut states = Vec::new();
    let mut good_len = 0u64;
    let mut line = String::new();
    for n in 1.. {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|e| fmt(format!("line {n}: {e}")))?;
        if read == 0 {
            break;
        }
        if !line.ends_with('\n') {
            break; // torn last line
        }
        if header.is_none() {
            let h: Header = serde_json::from_str(&line)
                .map_err(|e| fmt(format!("line 1 is not a preference file header: {e}")))?;
            if h.format != FORMAT || h.version != VERSION {
                return Err(fmt(format!(
                    "format {} version {}, expected {FORMAT} version {VERSION}",
                    h.format, h.version
                )));
            }
            header = Some(h);
        } else {
            states.push(serde_json::from_str(&line).map_err(|e| fmt(format!("line {n}: {e}")))?);
        }
        good_len += read as u64;
    }
    let header = header.ok_or_else(|| fmt("empty file: no header line".into()))?;
    Ok(PreferenceFile {
        header,
        states,
        good_len,
    })
}

/// Appends states to a preference file, one flushed line at a time.
pub struct Writer {
    path: PathBuf,
    file: std::fs::File,
    /// Held while the writer lives.
    _lock: crate::train::checkpoint::OutputLock,
}

/// Opens `file` for appending states made with `header`: creates it (with the header line)
/// when missing; otherwise its header must equal `header` (else an error says which run made
/// it), a torn last line is cut off, and the states already there are returned so the
/// caller skips them.
pub fn open_for_append(file: &Path, header: &Header) -> Result<(Writer, Vec<PreferenceState>)> {
    let io = |error| PreferenceError::Io {
        path: file.to_path_buf(),
        error,
    };
    // One writer at a time (the lock is in the images folder beside the file, which a
    // rename of the header line cannot replace): two runs of the same command appended
    // every remaining state twice, and one cut the other's lines on opening.
    let lock = crate::train::checkpoint::lock_output(&images_dir(file)).map_err(|message| {
        PreferenceError::Format {
            path: file.to_path_buf(),
            message,
        }
    })?;
    // An empty file holds nothing to keep: a header written before session 44 could be
    // cut off by a kill right after the file was created, and every re-run then failed.
    let empty = std::fs::metadata(file).is_ok_and(|m| m.len() == 0);
    if file.exists() && !empty {
        let existing = read(file)?;
        // A file from before session 44 records no weights: compared without them.
        let mut want = header.clone();
        if existing.header.weights.is_empty() {
            want.weights.clear();
        }
        if existing.header != want {
            return Err(PreferenceError::Format {
                path: file.to_path_buf(),
                message: format!(
                    "was made with other settings ({}); choose another --out or delete it",
                    serde_json::to_string(&existing.header).expect("header serialises")
                ),
            });
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .map_err(io)?;
        f.set_len(existing.good_len).map_err(io)?;
        drop(f);
        let file_handle = std::fs::OpenOptions::new()
            .append(true)
            .open(file)
            .map_err(io)?;
        return Ok((
            Writer {
                path: file.to_path_buf(),
                file: file_handle,
                _lock: lock,
            },
            existing.states,
        ));
    }
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // The header line lands whole or not at all (temporary file, then rename).
    let line = serde_json::to_string(header).expect("header serialises") + "\n";
    crate::train::checkpoint::write_atomic(file, line.as_bytes()).map_err(io)?;
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .map_err(io)?;
    Ok((
        Writer {
            path: file.to_path_buf(),
            file: f,
            _lock: lock,
        },
        Vec::new(),
    ))
}

impl Writer {
    /// Appends one state line and flushes it to disk.
    pub fn append(&mut self, state: &PreferenceState) -> Result<()> {
        let line = serde_json::to_string(state).expect("states serialise") + "\n";
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|error| PreferenceError::Io {
                path: self.path.clone(),
                error,
            })
    }
}
