//! Verifier node: the world model as a ROS 2 node. For every set of candidate actions the
//! planner publishes, it imagines each candidate's outcome in one batch
//! ([`crate::world_model::imagine`]) from the object-only frame and depth of the moment the
//! candidates were made for (stamped nearest their stamp, within `pair_within_s`; waited
//! for up to `pair_wait_s` when they have not come yet; the next frame of the same episode
//! when a slow planner's frame was pushed out), the goal image, goal depth and task in
//! force at that moment, and publishes `VerifierScores` (mask measure per candidate, the best
//! index) and the predicted final frames side by side as one image. A planner configured to
//! wait for it (`verify.wait`) then executes the best candidate: test-time verification,
//! best of N. Candidates stamped 0 (a planner that does not stamp) take the latest frames.
//! A set it cannot score (no frames of its moment, no goal yet, a goal depth of another
//! size, a goal that shows no object in the model's crop) is answered with NaN scores and `best = -1`
//! and a warning, and the planner keeps its own choice.
//!
//! `world_model` and `noise_seed` are live parameters: a new world-model folder set
//! through the parameter services (e.g. the trainer's newest) is loaded before the next
//! verification, and the old model is kept if it does not load.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Node, NodeContext};
use crate::bus::{Bus, Qos};
use crate::msg::dreamplan::{ActionCandidates, VerifierScores};
use crate::msg::prelude::*;
use crate::render::Frame;
use crate::sim::tasks::Task;
use crate::world_model::imagine::{imagine, PixelAction};
use crate::world_model::Predictor;

/// Topic names of the verifier.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifierTopics {
    /// The planner's candidates (in).
    pub candidates: String,
    /// Object-only camera frames (in).
    pub object_only: String,
    /// Depth frames, 32FC1 metres or 16UC1 millimetres (in).
    pub depth: String,
    /// The goal image (in, latched).
    pub goal: String,
    /// The goal depth (in, latched).
    pub goal_depth: String,
    /// Episode events (in: `reset` names the task).
    pub episode: String,
    /// The scores (out).
    pub scores: String,
    /// Predicted final frames of all candidates, side by side, one column per candidate
    /// in their order (a candidate left unscored keeps its column white) (out).
    pub predicted: String,
}

impl Default for VerifierTopics {
    fn default() -> Self {
        Self {
            candidates: "/planner/candidates".into(),
            object_only: "/camera/object_only".into(),
            depth: "/camera/depth/image_raw".into(),
            goal: "/goal/image".into(),
            goal_depth: "/goal/depth".into(),
            episode: "/dreamplan/episode".into(),
            scores: "/verifier/scores".into(),
            predicted: "/verifier/predicted".into(),
        }
    }
}

/// Verifier parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifierConfig {
    /// The world-model folder (`dreamplan train-world-model --out`).
    pub world_model: PathBuf,
    /// Seed of the sampler's noise.
    pub noise_seed: u64,
    /// Where the world model computes (`cpu`, `cuda`, `cuda:N`).
    pub device: crate::device::DeviceSpec,
    /// Its compute dtype (`auto`: f32 on the CPU, bf16 on a GPU).
    pub dtype: crate::device::DtypeSpec,
    /// The object-only and depth frames scored are those stamped nearest the candidates'
    /// stamp, at most this far from it (seconds; a camera's colour and aligned depth share
    /// a stamp, a re-stamping driver may not).
    pub pair_within_s: f64,
    /// How long to wait for those frames when the candidates came first (seconds); then
    /// the set is answered unverified.
    pub pair_wait_s: f64,
    /// Topic names.
    pub topics: VerifierTopics,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            world_model: PathBuf::new(),
            noise_seed: 0,
            device: Default::default(),
            dtype: Default::default(),
            pair_within_s: 0.1,
            pair_wait_s: 2.0,
            topics: VerifierTopics::default(),
        }
    }
}

/// The verifier node.
pub struct VerifierNode {
    config: VerifierConfig,
    compute: crate::device::Compute,
    predictor: Option<Predictor>,
}

fn rgb_frame(img: &Image) -> Result<Frame, String> {
    let rgb = crate::world_model::clip::image_rgb(img).map_err(|e| e.to_string())?;
    Ok(Frame {
        width: img.width,
        height: img.height,
        rgb,
        depth: Vec::new(),
    })
}

fn depth_of(img: &Image) -> Result<Vec<f32>, String> {
    super::executor::decode_depth(img).map(|d| d.data)
}

/// The inputs of one verification: those of the moment the candidates were made for.
/// The images are the received messages themselves, shared with [`Received`], not copies.
#[derive(Default)]
struct Inputs {
    task: Option<Task>,
    object: Option<Arc<Image>>,
    depth: Option<Arc<Image>>,
    goal: Option<Arc<Image>>,
    goal_depth: Option<Arc<Image>>,
}

/// How many messages of each input the node keeps to find those of a candidate set's
/// moment (1.6 s of a 10-Hz camera); a moment whose frames were pushed out while the
/// planner decided takes the first later frame of the same episode.
const KEPT: usize = 16;

/// The last [`KEPT`] messages of one input with their stamps (ns), oldest first.
struct Recent<T> {
    kept: VecDeque<(i64, T)>,
    /// A wait for this input ended with nothing received: it is not waited for again
    /// until it delivers (a topic nobody publishes would stall every set).
    silent: bool,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Self {
            kept: VecDeque::new(),
            silent: false,
        }
    }
}

impl<T> Recent<T> {
    fn push(&mut self, stamp: i64, m: T) {
        if self.kept.len() == KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back((stamp, m));
        self.silent = false;
    }

    /// [`Recent::push`] for a state read through several readers (the goal and its depth,
    /// `Bus::subscribe_any_durability`): a copy of a stamp already kept is dropped, and a
    /// late copy of an earlier message goes where its stamp belongs, so that the one in
    /// force at a moment is the last stamped before it, whatever order the copies came
    /// in. Unstamped messages (0) go last, as they come. (A bag played again repeats its
    /// goals' stamps: the kept one is the same goal.)
    fn push_state(&mut self, stamp: i64, m: T) {
        if stamp == 0 {
            return self.push(stamp, m);
        }
        if self.kept.iter().any(|(t, _)| *t == stamp) {
            return;
        }
        let at = self
            .kept
            .iter()
            .rposition(|(t, _)| *t < stamp)
            .map_or(0, |i| i + 1);
        self.kept.insert(at, (stamp, m));
        if self.kept.len() > KEPT {
            self.kept.pop_front();
        }
        self.silent = false;
    }

    fn latest(&self) -> Option<&T> {
        self.kept.back().map(|(_, m)| m)
    }

    /// Whether its messages carry no stamps (the newest is stamped 0).
    fn unstamped(&self) -> bool {
        self.kept.back().is_some_and(|(t, _)| *t == 0)
    }

    /// The message stamped nearest `at`, if at most `within` ns from it; of equal ones
    /// the newest (as a planner takes the newest of equally stamped frames).
    fn nearest(&self, at: i64, within: i64) -> Option<&T> {
        self.kept
            .iter()
            .rev()
            .map(|(t, m)| ((t - at).abs(), m))
            .filter(|(d, _)| *d <= within)
            .min_by_key(|(d, _)| *d)
            .map(|(_, m)| m)
    }

    /// The first message stamped after `at`, with its stamp.
    fn first_after(&self, at: i64) -> Option<(i64, &T)> {
        self.kept
            .iter()
            .find(|(t, _)| *t > at)
            .map(|(t, m)| (*t, m))
    }

    /// Whether a message stamped later than `at` may still come: none kept is.
    fn may_come(&self, at: i64) -> bool {
        self.kept.back().is_none_or(|(t, _)| *t <= at)
    }

    /// The message in force at `at`: the last stamped at or before it, else (every kept
    /// one is later: a goal stamped by another clock) the latest.
    fn in_force(&self, at: i64) -> Option<&T> {
        self.kept
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .or(self.kept.back())
            .map(|(_, m)| m)
    }
}

/// What the node has received: the last few messages of every input.
#[derive(Default)]
struct Received {
    tasks: Recent<Option<Task>>,
    objects: Recent<Arc<Image>>,
    depths: Recent<Arc<Image>>,
    goals: Recent<Arc<Image>>,
    goal_depths: Recent<Arc<Image>>,
}

impl Received {
    /// The inputs of the moment `stamp` (ns): frames stamped nearest it within `within`
    /// ns, else (pushed out while the planner decided) the first later frame of the same
    /// episode, which shows the scene the planner saw while the arm waits for its answer;
    /// goal and task in force then. A planner that does not stamp (`stamp` 0), or frames
    /// without stamps, take the latest. `Err` names a frame that is missing.
    fn at(&self, stamp: i64, within: i64) -> Result<Inputs, String> {
        let reset_after = |a: i64, b: i64| self.tasks.kept.iter().any(|(t, _)| a < *t && *t <= b);
        let frame = |r: &Recent<Arc<Image>>, what: &str| -> Result<Option<Arc<Image>>, String> {
            if let Some(m) = r.nearest(stamp, within) {
                return Ok(Some(m.clone()));
            }
            if stamp == 0 || r.latest().is_none() || r.unstamped() {
                return Ok(r.latest().cloned());
            }
            if let Some((t, m)) = r
                .first_after(stamp)
                .filter(|(t, _)| !reset_after(stamp, *t))
            {
                tracing::debug!("the {what} of {stamp} ns is gone; using the next one, {t} ns");
                return Ok(Some(m.clone()));
            }
            Err(format!(
                "no {what} stamped within {:.3} s of the candidates' stamp {:.3} s, nor a later \
                 one of the same episode (kept: {:.3}–{:.3} s)",
                within as f64 * 1e-9,
                stamp as f64 * 1e-9,
                r.kept.front().map_or(0, |m| m.0) as f64 * 1e-9,
                r.kept.back().map_or(0, |m| m.0) as f64 * 1e-9,
            ))
        };
        fn in_force<T>(r: &Recent<T>, stamp: i64) -> Option<&T> {
            if stamp == 0 {
                r.latest()
            } else {
                r.in_force(stamp)
            }
        }
        Ok(Inputs {
            task: in_force(&self.tasks, stamp).copied().flatten(),
            object: frame(&self.objects, "object-only frame")?,
            depth: frame(&self.depths, "depth frame")?,
            goal: in_force(&self.goals, stamp).cloned(),
            goal_depth: in_force(&self.goal_depths, stamp).cloned(),
        })
    }

    /// Whether a frame of the moment `stamp` is missing and may still come: not for
    /// unstamped candidates or frames, nor for an input that stayed silent through a wait.
    fn waits_for(&self, stamp: i64, within: i64) -> bool {
        stamp != 0
            && [&self.objects, &self.depths].iter().any(|r| {
                !r.silent
                    && !r.unstamped()
                    && r.nearest(stamp, within).is_none()
                    && r.may_come(stamp + within)
            })
    }

    /// A wait ended: the frame inputs that delivered nothing at all are not waited for
    /// again until they do.
    fn gave_up(&mut self) {
        for r in [&mut self.objects, &mut self.depths] {
            if r.kept.is_empty() {
                r.silent = true;
            }
        }
    }
}

/// The index `VerifierScores::best` publishes: the first of the highest finite scores,
/// or -1 when none is finite or every finite one is the same (the scores prefer nothing,
/// and the planner keeps its own choice). Before session 43 the last of equal scores was
/// taken, so a set whose predictions all lost the object executed the planner's last
/// sample instead of its own choice.
pub fn best_index(score: &[f64]) -> i32 {
    let finite: Vec<(usize, f64)> = score
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, s)| s.is_finite())
        .collect();
    let Some(&(first, top)) = finite.iter().reduce(|a, b| if b.1 > a.1 { b } else { a }) else {
        return -1;
    };
    if finite.len() > 1 && finite.iter().all(|(_, s)| *s == top) {
        return -1;
    }
    first as i32
}

fn stamp_of(h: &Header) -> i64 {
    h.stamp.as_nanos()
}

/// Scores of one candidate set, and the predicted final frames side by side.
fn verify(
    predictor: &Predictor,
    inputs: &Inputs,
    candidates: &ActionCandidates,
    seed: u64,
) -> Result<(VerifierScores, Option<Image>), String> {
    let task = inputs
        .task
        .ok_or("no episode reset seen yet (the task is unknown)")?;
    fn need<'a>(x: &'a Option<Arc<Image>>, what: &str) -> Result<&'a Image, String> {
        x.as_deref().ok_or_else(|| format!("no {what} yet"))
    }
    let object = rgb_frame(need(&inputs.object, "object-only frame")?)?;
    let depth_img = need(&inputs.depth, "depth frame")?;
    let mut goal = rgb_frame(need(&inputs.goal, "goal image")?)?;
    let goal_depth = need(&inputs.goal_depth, "goal depth")?;
    if (goal_depth.width, goal_depth.height) != (goal.width, goal.height) {
        return Err(format!(
            "the goal depth is {}×{} but the goal image {}×{}: they must be one view",
            goal_depth.width, goal_depth.height, goal.width, goal.height
        ));
    }
    goal.depth = depth_of(goal_depth)?;
    // A goal that shows nothing at the model's resolution (a crop that misses the object,
    // an object too thin for the model's size) scores every outcome 0: no answer then,
    // rather than a tie-break passed off as the best.
    let cfg = predictor.config();
    let goal_mask =
        crate::world_model::imagine::goal_mask(cfg, task, &goal).map_err(|e| e.to_string())?;
    if !goal_mask.data.contains(&true) {
        return Err(format!(
            "the goal image shows no {} in the world model's {}×{} crop: nothing to score \
             against (check the model's crop, or its size for a thin object)",
            task.name(),
            cfg.width,
            cfg.height
        ));
    }
    let current = Frame {
        width: depth_img.width,
        height: depth_img.height,
        rgb: Vec::new(),
        depth: depth_of(depth_img)?,
    };
    let actions: Vec<Option<PixelAction>> = candidates
        .candidates
        .iter()
        .map(|a| {
            [a.source_u, a.source_v, a.target_u, a.target_v]
                .iter()
                .all(|x| x.is_finite())
                .then_some(((a.source_u, a.source_v), (a.target_u, a.target_v)))
        })
        .collect();
    let known: Vec<PixelAction> = actions.iter().flatten().copied().collect();
    let imagined = imagine(predictor, task, &object, &current, &goal, &known, seed)
        .map_err(|e| e.to_string())?;
    let mut it = imagined.into_iter();
    let per: Vec<Option<crate::world_model::imagine::Imagined>> = actions
        .iter()
        .map(|a| a.and_then(|_| it.next().flatten()))
        .collect();
    let score: Vec<f64> = per
        .iter()
        .map(|p| p.as_ref().map_or(f64::NAN, |i| i.score))
        .collect();
    let best = best_index(&score);
    let (w, h) = (cfg.width, cfg.height);
    // One column per candidate, in the candidates' order; a refused one's stays white.
    let mosaic = per.iter().any(Option::is_some).then(|| {
        let n = per.len();
        let mut data = vec![255u8; n * w * h * 3];
        for (k, f) in per.iter().enumerate() {
            let Some(f) = f.as_ref().map(|i| &i.final_frame) else {
                continue;
            };
            for y in 0..h {
                data[(y * n * w + k * w) * 3..][..w * 3].copy_from_slice(&f[y * w * 3..][..w * 3]);
            }
        }
        Image {
            header: candidates.header.clone(),
            height: h as u32,
            width: (n * w) as u32,
            encoding: "rgb8".into(),
            is_bigendian: 0,
            step: (n * w * 3) as u32,
            data,
        }
    });
    Ok((
        VerifierScores {
            header: candidates.header.clone(),
            episode: candidates.episode,
            step: candidates.step,
            distance: score.iter().map(|s| 1.0 - s).collect(),
            score,
            best,
            metric: crate::verifier::measure::MEASURE_NAME.into(),
        },
        mosaic,
    ))
}

impl Node for VerifierNode {
    const KIND: &'static str = "verifier";
    type Config = VerifierConfig;

    /// Applied before the next verification; device, dtype and topics are read at start.
    const LIVE: &'static [&'static str] = &["world_model", "noise_seed"];

    fn declared(config: &VerifierConfig) -> Option<serde_yaml::Value> {
        serde_yaml::to_value(config).ok()
    }

    fn validate(config: &VerifierConfig) -> anyhow::Result<()> {
        anyhow::ensure!(
            config.pair_within_s.is_finite() && config.pair_within_s >= 0.0,
            "pair_within_s must be a number of seconds ≥ 0, not {}",
            config.pair_within_s
        );
        anyhow::ensure!(
            config.pair_wait_s.is_finite() && (0.0..=600.0).contains(&config.pair_wait_s),
            "pair_wait_s must be between 0 and 600 s, not {}",
            config.pair_wait_s
        );
        anyhow::ensure!(
            !config.world_model.as_os_str().is_empty(),
            "world_model: the world-model folder is required"
        );
        for file in ["config.json", "model.safetensors"] {
            let path = config.world_model.join(file);
            anyhow::ensure!(
                path.is_file(),
                "world_model: {} has no {file} (a world-model folder from `dreamplan train-world-model --out`)",
                config.world_model.display()
            );
        }
        Ok(())
    }

    fn new(config: VerifierConfig) -> anyhow::Result<Self> {
        Self::validate(&config)?;
        let compute = crate::device::Compute::open(config.device, config.dtype)?;
        let predictor = Predictor::load_on(&config.world_model, &compute)
            .map_err(|e| anyhow::anyhow!("loading the world model: {e}"))?;
        Ok(Self {
            config,
            compute,
            predictor: Some(predictor),
        })
    }

    async fn run<B: Bus>(mut self, ctx: NodeContext<B>) -> anyhow::Result<()> {
        let t = &self.config.topics;
        let mut cands = ctx
            .bus
            .subscribe::<ActionCandidates>(&t.candidates, Qos::keep_last(10))?;
        let mut objects = ctx
            .bus
            .subscribe::<Image>(&t.object_only, Qos::stream(KEPT))?;
        let mut depths = ctx.bus.subscribe::<Image>(&t.depth, Qos::stream(KEPT))?;
        // Latched or volatile goal publishers alike (`Bus::subscribe_any_durability`).
        let mut goals = ctx.bus.subscribe_any_durability::<Image>(&t.goal, 1)?;
        let mut goal_depths = ctx
            .bus
            .subscribe_any_durability::<Image>(&t.goal_depth, 1)?;
        let mut events = ctx
            .bus
            .subscribe::<EpisodeEvent>(&t.episode, Qos::keep_last(100))?;
        let scores_pub = ctx
            .bus
            .publisher::<VerifierScores>(&t.scores, Qos::keep_last(10))?;
        let frames_pub = ctx
            .bus
            .publisher::<Image>(&t.predicted, Qos::keep_last(1))?;
        let mut got = Received::default();
        let on_event = |got: &mut Received, m: &EpisodeEvent| {
            if m.event == EpisodeEvent::EVENT_RESET {
                got.tasks
                    .push(stamp_of(&m.header), Task::from_name(&m.task));
            }
        };
        // The message itself is kept (an `Arc`), not a copy of its pixels.
        let image = |r: &mut Recent<Arc<Image>>, m: Arc<Image>| r.push(stamp_of(&m.header), m);
        let state =
            |r: &mut Recent<Arc<Image>>, m: Arc<Image>| r.push_state(stamp_of(&m.header), m);
        let mut seed = self.config.noise_seed;
        let mut param_changes = ctx.params.watch();
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                m = events.recv() => { let Some(m) = m else { return Ok(()) }; on_event(&mut got, &m); }
                m = objects.recv() => { let Some(m) = m else { return Ok(()) }; image(&mut got.objects, m); }
                m = depths.recv() => { let Some(m) = m else { return Ok(()) }; image(&mut got.depths, m); }
                m = goals.recv() => { let Some(m) = m else { return Ok(()) }; state(&mut got.goals, m); }
                m = goal_depths.recv() => { let Some(m) = m else { return Ok(()) }; state(&mut got.goal_depths, m); }
                m = cands.recv() => {
                    let Some(c) = m else { return Ok(()) };
                    let (stamp, within) = (stamp_of(&c.header), (self.config.pair_within_s * 1e9) as i64);
                    // The frames of the candidates' moment may still wait in their queues,
                    // or not have come yet (the planner answered before the camera's last
                    // topics went out): wait for them a while.
                    let deadline = tokio::time::Instant::now()
                        + std::time::Duration::from_secs_f64(self.config.pair_wait_s);
                    loop {
                        while let Some(m) = objects.try_recv() { image(&mut got.objects, m); }
                        while let Some(m) = depths.try_recv() { image(&mut got.depths, m); }
                        while let Some(m) = goals.try_recv() { state(&mut got.goals, m); }
                        while let Some(m) = goal_depths.try_recv() { state(&mut got.goal_depths, m); }
                        while let Some(m) = events.try_recv() { on_event(&mut got, &m); }
                        if !got.waits_for(stamp, within) {
                            break;
                        }
                        tokio::select! {
                            _ = ctx.shutdown.cancelled() => return Ok(()),
                            _ = tokio::time::sleep_until(deadline) => { got.gave_up(); break }
                            m = objects.recv() => { let Some(m) = m else { return Ok(()) }; image(&mut got.objects, m); }
                            m = depths.recv() => { let Some(m) = m else { return Ok(()) }; image(&mut got.depths, m); }
                        }
                    }
                    let (header, episode, step, n) = (c.header.clone(), c.episode, c.step, c.candidates.len());
                    if let Some(changed) = ctx.params.changed::<VerifierConfig>(&mut param_changes) {
                        seed = changed.noise_seed;
                        if changed.world_model != self.config.world_model {
                            let (dir, compute) = (changed.world_model.clone(), self.compute.clone());
                            match tokio::task::spawn_blocking(move || Predictor::load_on(&dir, &compute)).await? {
                                Ok(p) => {
                                    tracing::info!(node = %ctx.name, "world model {} loaded", changed.world_model.display());
                                    self.predictor = Some(p);
                                    self.config.world_model = changed.world_model;
                                }
                                Err(e) => tracing::warn!(node = %ctx.name, "world model {} not loaded, keeping {}: {e}", changed.world_model.display(), self.config.world_model.display()),
                            }
                        }
                    }
                    let predictor = self.predictor.take().expect("returned after each verification");
                    let snapshot = got.at(stamp, within);
                    let (predictor, result) = tokio::task::spawn_blocking(move || {
                        // A bug met by odd input answers this set unverified instead of
                        // ending the node.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            verify(&predictor, &snapshot?, &c, seed)
                        }))
                        .unwrap_or_else(|_| Err("the verification panicked (a bug: please report the inputs)".into()));
                        (predictor, r)
                    })
                    .await?;
                    self.predictor = Some(predictor);
                    match result {
                        Ok((scores, mosaic)) => {
                            tracing::info!(node = %ctx.name, "scored {} candidates, best {}", scores.score.len(), scores.best);
                            scores_pub.publish(scores)?;
                            if let Some(m) = mosaic {
                                frames_pub.publish(m)?;
                            }
                        }
                        Err(e) => {
                            // A planner waiting for this answer falls back to its own choice.
                            tracing::warn!(node = %ctx.name, "candidates not verified: {e}");
                            scores_pub.publish(VerifierScores {
                                header,
                                episode,
                                step,
                                distance: vec![f64::NAN; n],
                                score: vec![f64::NAN; n],
                                best: -1,
                                metric: crate::verifier::measure::MEASURE_NAME.into(),
                            })?;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::msg::dreamplan::KeypointAction;
    use crate::planner::eval::{observe, EvalConfig};
    use crate::world_model::{train, Config};

    #[test]
    fn best_is_the_first_highest_score_and_none_when_the_scores_prefer_nothing() {
        let nan = f64::NAN;
        assert_eq!(best_index(&[]), -1);
        assert_eq!(best_index(&[nan, nan]), -1);
        assert_eq!(best_index(&[0.0, 0.0, 0.0]), -1, "all equal: no preference");
        assert_eq!(best_index(&[nan, 0.3, 0.3]), -1);
        assert_eq!(best_index(&[0.3]), 0, "a single scored candidate");
        assert_eq!(best_index(&[nan, 0.2]), 1);
        assert_eq!(best_index(&[0.5, 0.7, 0.7]), 1, "the first of the best");
        assert_eq!(best_index(&[0.7, nan, 0.1]), 0);
    }

    /// The sim node's rgb and depth images of a frame.
    fn images(frame: &Frame) -> (Image, Image) {
        let stamp = Time::default();
        (
            super::super::sim::rgb_image(frame, &stamp, ""),
            super::super::sim::depth_image(frame, &stamp, ""),
        )
    }

    /// A fresh tiny world model (mechanics, not quality) and a state's inputs.
    fn setup(task: Task) -> (tempfile::TempDir, Predictor, Inputs, ActionCandidates) {
        let cfg = Config {
            width: 32,
            height: 16,
            patch_size: 4,
            frames: 2,
            hidden: 32,
            heads: 2,
            depth: 2,
            control_blocks: 1,
            mlp_ratio: 2,
            sample_steps: 1,
            ..Config::cpu()
        };
        let dir = tempfile::tempdir().unwrap();
        let (_, vars) = train::init_vars(&cfg, 0).unwrap();
        train::save_model(dir.path(), &cfg, &vars).unwrap();
        let predictor = Predictor::load_on(dir.path(), &crate::device::Compute::cpu()).unwrap();
        let obs = observe(task, 21, &EvalConfig::default());
        let (cur, goal_kps) = obs.keypoints.as_ref().unwrap();
        let object = crate::verifier::object_frame(&obs.world, obs.current.width);
        let (_, depth) = images(&obs.current);
        let (goal, goal_depth) = images(&obs.goal_frame);
        let latest = Inputs {
            task: Some(task),
            object: Some(Arc::new(images(&object).0)),
            depth: Some(Arc::new(depth)),
            goal: Some(Arc::new(goal)),
            goal_depth: Some(Arc::new(goal_depth)),
        };
        let action = |k: usize, target: (f32, f32)| KeypointAction {
            source_u: cur[k].u,
            source_v: cur[k].v,
            target_u: target.0,
            target_v: target.1,
            ..Default::default()
        };
        let candidates = ActionCandidates {
            candidates: vec![
                action(0, (goal_kps[0].u, goal_kps[0].v)),
                action(1, (f32::NAN, 3.0)),
                action(2, (200.0, 200.0)),
            ],
            ..Default::default()
        };
        (dir, predictor, latest, candidates)
    }

    #[test]
    fn a_goal_depth_of_another_size_is_refused_not_read_past_its_end() {
        let (_dir, predictor, mut latest, candidates) = setup(Task::Cloth);
        // Half the goal image's size: the target (200, 200) lies past its data.
        let half = Frame {
            width: 128,
            height: 128,
            rgb: Vec::new(),
            depth: vec![1.0; 128 * 128],
        };
        latest.goal_depth = Some(Arc::new(images(&half).1));
        let err = verify(&predictor, &latest, &candidates, 0).unwrap_err();
        assert!(err.contains("goal depth is 128×128"), "{err}");
    }

    #[test]
    fn a_goal_the_model_cannot_see_is_not_scored() {
        // The rope, a few pixels thick in the 256² view, vanishes in a 32×16 crop.
        let (_dir, predictor, latest, candidates) = setup(Task::Rope);
        let err = verify(&predictor, &latest, &candidates, 0).unwrap_err();
        assert!(
            err.contains("shows no rope in the world model's 32×16 crop"),
            "{err}"
        );
    }

    #[test]
    fn each_candidate_has_its_column() {
        let (_dir, predictor, latest, candidates) = setup(Task::Cloth);
        let w = predictor.config().width as u32;
        let (scores, mosaic) = verify(&predictor, &latest, &candidates, 0).unwrap();
        assert_eq!(scores.score.len(), 3);
        assert!(scores.score[1].is_nan(), "a NaN target was scored");
        let mosaic = mosaic.unwrap();
        assert_eq!(mosaic.width, 3 * w, "one column per candidate");
        let column = |k: u32| {
            (0..mosaic.height).all(|y| {
                let row = (y * mosaic.step) as usize;
                let at = row + (k * w * 3) as usize;
                mosaic.data[at..at + (w * 3) as usize]
                    .iter()
                    .all(|&b| b == 255)
            })
        };
        assert!(column(1), "the unscored candidate's column is not blank");
        assert!(!column(0), "the first candidate's column is blank");
    }

    /// An image `m` stamped `secs`.
    fn at(m: Arc<Image>, secs: f64) -> Image {
        let mut m = Arc::unwrap_or_clone(m);
        m.header.stamp = Time::from_nanos((secs * 1e9) as i64);
        m
    }

    /// Goals come through several readers: a copy of a kept stamp is dropped, and a late copy
    /// of an earlier goal (arriving after the next goal) does not take the newer one's
    /// place: the goal in force at a moment is the last stamped before it. Before, the
    /// late copy was kept last and was in force from then on.
    #[test]
    fn a_late_copy_of_an_earlier_goal_is_not_in_force_after_the_newer_one() {
        let ns = |s: f64| (s * 1e9) as i64;
        let mut goals: Recent<u8> = Recent::default();
        goals.push_state(ns(1.0), 1);
        goals.push_state(ns(2.0), 2);
        goals.push_state(ns(1.0), 1);
        goals.push_state(ns(2.0), 2);
        assert_eq!(goals.kept.len(), 2, "copies kept twice");
        assert_eq!(goals.in_force(ns(2.5)), Some(&2));
        assert_eq!(goals.in_force(ns(1.5)), Some(&1));
        // Only the late copy of a goal whose first copy was pushed out of its queue.
        let mut goals: Recent<u8> = Recent::default();
        goals.push_state(ns(2.0), 2);
        goals.push_state(ns(1.0), 1);
        assert_eq!(goals.in_force(ns(2.5)), Some(&2));
        assert_eq!(goals.latest(), Some(&2));
        // Unstamped goals go in the order they come.
        let mut goals: Recent<u8> = Recent::default();
        goals.push_state(0, 1);
        goals.push_state(0, 2);
        assert_eq!(goals.latest(), Some(&2));
    }

    #[test]
    fn the_inputs_are_those_of_the_candidates_moment_not_the_latest() {
        let ns = |s: f64| (s * 1e9) as i64;
        let tagged = |tag: u8| {
            Arc::new(Image {
                data: vec![tag],
                ..Default::default()
            })
        };
        let mut got = Received::default();
        for (t, tag) in [(1.0, 1), (1.2, 2)] {
            got.objects.push(ns(t), tagged(tag));
            got.depths.push(ns(t + 0.01), tagged(tag + 10));
        }
        // Episode 0 (rope) began at 0.5 s, episode 1 (cloth) at 1.1 s.
        got.goals.push(ns(0.5), tagged(50));
        got.goals.push(ns(1.1), tagged(51));
        got.goal_depths.push(ns(0.5), tagged(60));
        got.goal_depths.push(ns(1.1), tagged(61));
        got.tasks.push(ns(0.5), Some(Task::Rope));
        got.tasks.push(ns(1.1), Some(Task::Cloth));
        let tags = |i: &Inputs| {
            [&i.object, &i.depth, &i.goal, &i.goal_depth].map(|m| m.as_ref().unwrap().data[0])
        };
        let within = ns(0.1);
        let first = got.at(ns(1.0), within).unwrap();
        // The inputs are the received messages, not copies of their pixels.
        assert!(Arc::ptr_eq(
            first.object.as_ref().unwrap(),
            &got.objects.kept[0].1
        ));
        assert_eq!(
            (tags(&first), first.task),
            ([1, 11, 50, 60], Some(Task::Rope))
        );
        let second = got.at(ns(1.2), within).unwrap();
        assert_eq!(
            (tags(&second), second.task),
            ([2, 12, 51, 61], Some(Task::Cloth))
        );
        // A planner that does not stamp gets the latest.
        let unstamped = got.at(0, within).unwrap();
        assert_eq!(tags(&unstamped), [2, 12, 51, 61]);
        // A moment before every kept frame takes the first later one of its episode...
        let early = got.at(ns(0.7), within).unwrap();
        assert_eq!(tags(&early), [1, 11, 50, 60]);
        // ...but never one of the next episode.
        let err = got.at(ns(0.3), within).err().unwrap();
        assert!(
            err.contains("no object-only frame stamped within 0.100 s of the candidates' stamp 0.300 s, nor a later one of the same episode"),
            "{err}"
        );
        // A moment after the last frame waits for its frames; one that has its frames, or
        // an unstamped one, does not.
        assert!(got.waits_for(ns(1.5), within));
        assert!(!got.waits_for(ns(1.2), within));
        assert!(!got.waits_for(0, within));
        // Only the last KEPT are kept; a moment pushed out takes the next frame of its
        // episode (no reset since).
        for k in 0..KEPT {
            got.objects.push(ns(2.0 + k as f64), tagged(100 + k as u8));
        }
        assert!(got.objects.nearest(ns(1.2), within).is_none());
        assert_eq!(
            got.at(ns(1.2), within).unwrap().object.unwrap().data[0],
            100
        );
        // Of two frames with one stamp, the newer.
        got.depths.push(ns(1.2 + 0.01), tagged(99));
        assert_eq!(got.at(ns(1.2), within).unwrap().depth.unwrap().data[0], 99);
        // Goals all stamped after the moment (another clock): the latest, not the oldest.
        let mut later = Received::default();
        later.goals.push(ns(5.0), tagged(70));
        later.goals.push(ns(6.0), tagged(71));
        assert_eq!(later.at(ns(1.0), within).unwrap().goal.unwrap().data[0], 71);
        // An input nobody publishes is waited for once, then not again until it delivers;
        // frames without stamps are not waited for.
        assert!(later.waits_for(ns(1.0), within));
        later.gave_up();
        assert!(!later.waits_for(ns(1.0), within));
        later.objects.push(0, tagged(1));
        later.depths.push(0, tagged(2));
        assert!(!later.waits_for(ns(1.0), within));
        assert_eq!(
            tags(
                &later
                    .at(ns(1.0), within)
                    .map(|mut i| {
                        i.goal_depth = i.goal.clone();
                        i
                    })
                    .unwrap()
            ),
            [1, 2, 71, 71]
        );
        // Pairing parameters that are not durations are refused.
        for (within_s, wait_s) in [
            (f64::NAN, 2.0),
            (-0.1, 2.0),
            (0.1, f64::INFINITY),
            (0.1, 1e6),
        ] {
            let e = VerifierNode::validate(&VerifierConfig {
                pair_within_s: within_s,
                pair_wait_s: wait_s,
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.to_string().starts_with("pair_"), "{e}");
        }
    }

    /// Candidates that come before the frames of their moment wait for them: the planner
    /// answered before the camera's object-only and depth frames went out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn candidates_that_come_before_their_frames_wait_for_them() {
        use crate::bus::LocalBus;
        use crate::nodes::params::LiveParams;
        use tokio_util::sync::CancellationToken;

        let (dir, _predictor, inputs, mut candidates) = setup(Task::Cloth);
        let node = VerifierNode::new(VerifierConfig {
            world_model: dir.path().to_path_buf(),
            ..Default::default()
        })
        .unwrap();
        let bus = LocalBus::default();
        let stop = CancellationToken::new();
        let t = VerifierTopics::default();
        let mut scores = bus
            .subscribe::<VerifierScores>(&t.scores, Qos::keep_last(10))
            .unwrap();
        let publish = |topic: &str, m: Image| {
            bus.publisher::<Image>(topic, Qos::latched())
                .unwrap()
                .publish(m)
                .unwrap();
        };
        let ctx = NodeContext {
            name: "verifier".into(),
            bus: bus.clone(),
            shutdown: stop.clone(),
            params: LiveParams::fixed(),
        };
        let handle = tokio::spawn(node.run(ctx));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        bus.publisher::<EpisodeEvent>(&t.episode, Qos::keep_last(10))
            .unwrap()
            .publish(EpisodeEvent {
                header: Header {
                    stamp: Time::from_nanos(1_000_000_000),
                    frame_id: String::new(),
                },
                task: "cloth".into(),
                event: EpisodeEvent::EVENT_RESET.into(),
                ..Default::default()
            })
            .unwrap();
        publish(&t.goal, at(inputs.goal.unwrap(), 1.0));
        publish(&t.goal_depth, at(inputs.goal_depth.unwrap(), 1.0));
        candidates.header.stamp = Time::from_nanos(2_000_000_000);
        bus.publisher::<ActionCandidates>(&t.candidates, Qos::keep_last(10))
            .unwrap()
            .publish(candidates)
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        publish(&t.object_only, at(inputs.object.unwrap(), 2.0));
        publish(&t.depth, at(inputs.depth.unwrap(), 2.0));
        let s = tokio::time::timeout(std::time::Duration::from_secs(120), scores.recv())
            .await
            .expect("no scores")
            .unwrap();
        assert!(s.best >= 0, "the set was not verified: {s:?}");
        assert_eq!(s.header.stamp, Time::from_nanos(2_000_000_000));
        stop.cancel();
        bus.shutdown();
        let _ = handle.await;
    }
}
