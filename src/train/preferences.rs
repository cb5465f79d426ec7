//! `dreamplan preferences`: preference data from a planner and a verifier. For each state
//! (a seeded episode of each task, from seeds no evaluation uses), the planner samples K
//! candidates, the verifier scores the distinct ones, and the best makes a pair with each
//! candidate scored more than the margin below it ([`crate::verifier::preferences`]).
//! States are observed as the evaluation observes them. The file is appended one state at a
//! time and a re-run with the same settings continues where the last one stopped.

use std::path::{Path, PathBuf};

use crate::planner::eval::{observe, Decision, EvalConfig, Planner, Scene};
use crate::planner::vlm_planner::{VlmPlanner, VlmPlannerConfig};
use crate::sim::tasks::Task;
use crate::verifier::preferences::{
    self as prefs, images_dir, keypoints_to_file, make_pairs, merge_candidates, Header,
    PreferenceState,
};
use crate::verifier::{Verifier, VerifyState};

/// The first seed of preference states: disjoint from evaluation (0–99, 5000–5099 and
/// 5,000,000 up in the docs), zero-shot training (1,000,000 up), its held-out check and the collection
/// (both 2,000,000 up).
pub const PREFERENCE_SEED_BASE: u64 = 3_000_000;

/// Settings of a generation run.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// States per task.
    pub states: usize,
    /// Tasks.
    pub tasks: Vec<Task>,
    /// Seed of each task's first state.
    pub first_seed: u64,
    /// Planner sampling (K, temperature, …).
    pub planner: VlmPlannerConfig,
    /// Extra exploring samples per state as `(count, temperature)`, drawn after the K
    /// (`(0, _)`: none). With the planner's own K at a moderate temperature its favourite
    /// actions stay among the candidates (ties go to them), while the hot samples reach
    /// actions it rarely proposes.
    pub explore: (usize, f32),
    /// Score margin for a pair.
    pub margin: f64,
    /// Image size and keypoints.
    pub eval: EvalConfig,
    /// Worker threads (each loads its own planner).
    pub threads: usize,
}

/// Errors of generation.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The preference file.
    #[error(transparent)]
    File(#[from] prefs::PreferenceError),
    /// Loading the planner.
    #[error("planner {path}: {error}")]
    Planner {
        /// Model folder.
        path: PathBuf,
        /// Why (said in the message, so not a `source`).
        error: crate::vlm::VlmError,
    },
    /// Writing an image.
    #[error("{path}: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The verifier failed.
    #[error("verifier: {0}")]
    Verifier(#[from] crate::verifier::VerifierError),
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GenerateSummary {
    /// States in the file now.
    pub states: usize,
    /// States found already written (resumed).
    pub resumed: usize,
    /// States skipped because the object was not found.
    pub skipped: usize,
    /// Pairs in the file now.
    pub pairs: usize,
    /// States with at least one pair.
    pub states_with_pairs: usize,
}

fn task_name(t: Task) -> String {
    format!("{t:?}").to_lowercase()
}

fn save_png(frame: &crate::render::Frame, path: &Path) -> Result<(), GenerateError> {
    let err = |message: String| GenerateError::Image {
        path: path.to_path_buf(),
        message,
    };
    let img = image::RgbImage::from_raw(frame.width, frame.height, frame.rgb.clone())
        .ok_or_else(|| err("frame buffer size".into()))?;
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

/// One state: observe, sample K, score, pair. `None` when the object is not found.
fn one_state(
    task: Task,
    seed: u64,
    planner: &mut VlmPlanner,
    verifier: &mut dyn Verifier,
    cfg: &GenerateConfig,
    images: &Path,
) -> Result<Option<PreferenceState>, GenerateError> {
    let obs = observe(task, seed, &cfg.eval);
    let Ok((kc, kg)) = &obs.keypoints else {
        return Ok(None);
    };
    let scene = Scene {
        task,
        seed,
        current: &obs.current,
        goal: &obs.goal_frame,
        current_keypoints: kc,
        goal_keypoints: kg,
        world: None,
        goal_world: None,
    };
    let sample = |planner: &mut VlmPlanner| -> Vec<_> {
        match planner.decide(&scene) {
            Decision::Keypoints(_) => Planner::candidates(planner)
                .iter()
                .filter_map(|c| {
                    c.choice
                        .as_ref()
                        .ok()
                        .map(|ch| (*ch, c.logprob, c.text.trim().to_string()))
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut answers: Vec<_> = sample(planner);
    if cfg.explore.0 > 0 {
        let own = planner.config.clone();
        planner.config.k = cfg.explore.0;
        planner.config.temperature = cfg.explore.1;
        planner.config.seed = own.seed.wrapping_add(0xE4_0000);
        answers.extend(sample(planner));
        planner.config = own;
    }
    let mut distinct: Vec<crate::planner::KeypointChoice> = Vec::new();
    for (c, _, _) in &answers {
        if !distinct.contains(c) {
            distinct.push(*c);
        }
    }
    let state = VerifyState::of_observation(task, &obs, kc, kg);
    let distinct_scores = verifier.score(&state, &distinct)?;
    let scores: Vec<f64> = answers
        .iter()
        .map(|(c, _, _)| {
            let i = distinct.iter().position(|d| d == c).expect("listed above");
            distinct_scores[i]
        })
        .collect();
    let plain: Vec<_> = answers.iter().map(|(c, l, _)| (*c, *l)).collect();
    let mut candidates = merge_candidates(&plain, &scores);
    // Keep the text of answers that say more than the action (a reasoning line): the
    // first sample's, as its log-probability is the one kept.
    for cand in &mut candidates {
        if let Some((_, _, text)) = answers.iter().find(|(c, _, _)| *c == cand.choice()) {
            if *text != crate::planner::format_answer(&cand.choice()) {
                cand.answer = Some(text.clone());
            }
        }
    }
    let pairs = make_pairs(&candidates, cfg.margin);
    let name = |which: &str| format!("{}_{seed}_{which}.png", task_name(task));
    save_png(&obs.current, &images.join(name("current")))?;
    save_png(&obs.goal_frame, &images.join(name("goal")))?;
    let dir_name = images
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Some(PreferenceState {
        task: task_name(task),
        seed,
        current_image: format!("{dir_name}/{}", name("current")),
        goal_image: format!("{dir_name}/{}", name("goal")),
        current_keypoints: keypoints_to_file(kc),
        goal_keypoints: keypoints_to_file(kg),
        candidates,
        pairs,
    }))
}

/// Progress of [`generate`].
#[derive(Debug, Clone, Copy)]
pub struct GenerateProgress {
    /// States done (written or skipped), resumed ones included.
    pub done: usize,
    /// States to do.
    pub total: usize,
    /// Pairs written so far in this run.
    pub pairs: usize,
}

/// Generates (or continues) the preference file `out` for the planner in `planner_dir`
/// (with an optional LoRA `adapter`), scoring with verifiers made by `make_verifier` (one
/// per worker thread).
pub fn generate(
    planner_dir: &Path,
    adapter: Option<&Path>,
    make_verifier: &(dyn Fn() -> Box<dyn Verifier + Send> + Sync),
    cfg: &GenerateConfig,
    out: &Path,
    progress: &(dyn Fn(GenerateProgress) + Sync),
) -> Result<GenerateSummary, GenerateError> {
    let load = || {
        VlmPlanner::load_with_adapter(planner_dir, adapter, cfg.planner.clone()).map_err(|error| {
            GenerateError::Planner {
                path: planner_dir.to_path_buf(),
                error,
            }
        })
    };
    // Load once before touching the file: a bad planner folder leaves nothing behind.
    let first = load()?;
    let header = Header {
        format: prefs::FORMAT.into(),
        version: prefs::VERSION,
        planner: planner_dir.display().to_string(),
        tokenizer: prefs::tokenizer_fingerprint(planner_dir)?,
        verifier: make_verifier().name(),
        k: cfg.planner.k,
        temperature: cfg.planner.temperature,
        constrained: cfg.planner.constrained,
        explore_k: cfg.explore.0,
        explore_temperature: if cfg.explore.0 > 0 {
            cfg.explore.1
        } else {
            0.0
        },
        margin: cfg.margin,
        first_seed: cfg.first_seed,
        keypoints: cfg.eval.keypoints,
        size: cfg.eval.size,
        top_p: cfg.planner.top_p,
        adapter: adapter.map(|a| a.display().to_string()).unwrap_or_default(),
        weights: prefs::weights_fingerprint(planner_dir, adapter)?,
    };
    let (writer, existing) = prefs::open_for_append(out, &header)?;
    let images = images_dir(out);
    std::fs::create_dir_all(&images).map_err(|e| GenerateError::Image {
        path: images.clone(),
        message: e.to_string(),
    })?;
    let done: std::collections::HashSet<(String, u64)> =
        existing.iter().map(|s| (s.task.clone(), s.seed)).collect();
    let summary = GenerateSummary {
        resumed: existing.len(),
        states: existing.len(),
        pairs: existing.iter().map(|s| s.pairs.len()).sum(),
        states_with_pairs: existing.iter().filter(|s| !s.pairs.is_empty()).count(),
        ..Default::default()
    };
    // Interleave tasks so an interrupted run has some of each.
    let jobs: Vec<(Task, u64)> = (0..cfg.states as u64)
        .flat_map(|i| cfg.tasks.iter().map(move |&t| (t, cfg.first_seed + i)))
        .filter(|(t, s)| !done.contains(&(task_name(*t), *s)))
        .collect();
    let total = jobs.len() + existing.len();
    let shared = std::sync::Mutex::new((writer, summary, existing.len()));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = cfg.threads.max(1);
    let mut planners = vec![first];
    for _ in 1..threads {
        planners.push(load()?);
    }
    let results: Vec<Result<(), GenerateError>> = std::thread::scope(|s| {
        let handles: Vec<_> = planners
            .into_iter()
            .map(|mut planner| {
                let (jobs, next, shared, images) = (&jobs, &next, &shared, &images);
                s.spawn(move || -> Result<(), GenerateError> {
                    let mut verifier = make_verifier();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(task, seed)) = jobs.get(i) else {
                            return Ok(());
                        };
                        let state =
                            one_state(task, seed, &mut planner, verifier.as_mut(), cfg, images)?;
                        let mut g = shared.lock().expect("writer lock");
                        let (writer, sum, count) = &mut *g;
                        match state {
                            Some(st) => {
                                writer.append(&st)?;
                                sum.states += 1;
                                sum.pairs += st.pairs.len();
                                sum.states_with_pairs += usize::from(!st.pairs.is_empty());
                            }
                            None => sum.skipped += 1,
                        }
                        *count += 1;
                        progress(GenerateProgress {
                            done: *count,
                            total,
                            pairs: sum.pairs,
                        });
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("preference worker panicked"))
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(shared.into_inner().expect("writer lock").1)
}
