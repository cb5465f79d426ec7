//! Verifier node: the world model as a ROS 2 node. For every set of candidate actions the
//! planner publishes, it imagines each candidate's outcome in one batch
//! ([`crate::world_model::imagine`]) from the latest object-only frame, depth, goal image
//! and goal depth, and publishes `VerifierScores` (mask measure per candidate, the best
//! index) and the predicted final frames side by side as one image. A planner configured to
//! wait for it (`verify.wait`) then executes the best candidate: test-time verification,
//! best of N. A set it cannot score (no goal yet, a goal depth of another size, a goal
//! that shows no object in the model's crop) is answered with NaN scores and `best = -1`
//! and a warning, and the planner keeps its own choice.
//!
//! `world_model` and `noise_seed` are live parameters: a new world-model folder set
//! through the parameter services (e.g. the trainer's newest) is loaded before the next
//! verification, and the old model is kept if it does not load.

use std::path::PathBuf;

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
    /// Depth frames, 32FC1 (in).
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

/// Everything the node keeps between messages.
#[derive(Default)]
struct Latest {
    task: Option<Task>,
    object: Option<Image>,
    depth: Option<Image>,
    goal: Option<Image>,
    goal_depth: Option<Image>,
}

/// Scores of one candidate set, and the predicted final frames side by side.
fn verify(
    predictor: &Predictor,
    latest: &Latest,
    candidates: &ActionCandidates,
    seed: u64,
) -> Result<(VerifierScores, Option<Image>), String> {
    let task = latest
        .task
        .ok_or("no episode reset seen yet (the task is unknown)")?;
    let need = |x: &Option<Image>, what: &str| x.clone().ok_or(format!("no {what} yet"));
    let object = rgb_frame(&need(&latest.object, "object-only frame")?)?;
    let depth_img = need(&latest.depth, "depth frame")?;
    let mut goal = rgb_frame(&need(&latest.goal, "goal image")?)?;
    let goal_depth = need(&latest.goal_depth, "goal depth")?;
    if (goal_depth.width, goal_depth.height) != (goal.width, goal.height) {
        return Err(format!(
            "the goal depth is {}×{} but the goal image {}×{}: they must be one view",
            goal_depth.width, goal_depth.height, goal.width, goal.height
        ));
    }
    goal.depth = depth_of(&goal_depth)?;
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
        depth: depth_of(&depth_img)?,
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
    let best = score
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(-1, |(i, _)| i as i32);
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
            .subscribe::<Image>(&t.object_only, Qos::keep_last(1))?;
        let mut depths = ctx.bus.subscribe::<Image>(&t.depth, Qos::keep_last(1))?;
        let mut goals = ctx.bus.subscribe::<Image>(&t.goal, Qos::latched())?;
        let mut goal_depths = ctx.bus.subscribe::<Image>(&t.goal_depth, Qos::latched())?;
        let mut events = ctx
            .bus
            .subscribe::<EpisodeEvent>(&t.episode, Qos::keep_last(100))?;
        let scores_pub = ctx
            .bus
            .publisher::<VerifierScores>(&t.scores, Qos::keep_last(10))?;
        let frames_pub = ctx
            .bus
            .publisher::<Image>(&t.predicted, Qos::keep_last(1))?;
        let mut latest = Latest::default();
        let mut seed = self.config.noise_seed;
        let mut param_changes = ctx.params.watch();
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                m = events.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    if m.event == EpisodeEvent::EVENT_RESET {
                        latest.task = Task::from_name(&m.task);
                    }
                }
                m = objects.recv() => { let Some(m) = m else { return Ok(()) }; latest.object = Some((*m).clone()); }
                m = depths.recv() => { let Some(m) = m else { return Ok(()) }; latest.depth = Some((*m).clone()); }
                m = goals.recv() => { let Some(m) = m else { return Ok(()) }; latest.goal = Some((*m).clone()); }
                m = goal_depths.recv() => { let Some(m) = m else { return Ok(()) }; latest.goal_depth = Some((*m).clone()); }
                m = cands.recv() => {
                    let Some(c) = m else { return Ok(()) };
                    // Frames that came with the candidates may still wait in their queues.
                    while let Some(m) = objects.try_recv() { latest.object = Some((*m).clone()); }
                    while let Some(m) = depths.try_recv() { latest.depth = Some((*m).clone()); }
                    while let Some(m) = goals.try_recv() { latest.goal = Some((*m).clone()); }
                    while let Some(m) = goal_depths.try_recv() { latest.goal_depth = Some((*m).clone()); }
                    while let Some(m) = events.try_recv() {
                        if m.event == EpisodeEvent::EVENT_RESET {
                            latest.task = Task::from_name(&m.task);
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
                    let snapshot = Latest {
                        task: latest.task,
                        object: latest.object.clone(),
                        depth: latest.depth.clone(),
                        goal: latest.goal.clone(),
                        goal_depth: latest.goal_depth.clone(),
                    };
                    let (predictor, result) = tokio::task::spawn_blocking(move || {
                        // A bug met by odd input answers this set unverified instead of
                        // ending the node.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            verify(&predictor, &snapshot, &c, seed)
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

    /// The sim node's rgb and depth images of a frame.
    fn images(frame: &Frame) -> (Image, Image) {
        let stamp = Time::default();
        (
            super::super::sim::rgb_image(frame, &stamp, ""),
            super::super::sim::depth_image(frame, &stamp, ""),
        )
    }

    /// A fresh tiny world model (mechanics, not quality) and a state's inputs.
    fn setup(task: Task) -> (tempfile::TempDir, Predictor, Latest, ActionCandidates) {
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
        let latest = Latest {
            task: Some(task),
            object: Some(images(&object).0),
            depth: Some(depth),
            goal: Some(goal),
            goal_depth: Some(goal_depth),
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
        latest.goal_depth = Some(images(&half).1);
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
}
