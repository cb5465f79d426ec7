//! Verifiers: given one (observation, goal) state and a batch of candidate actions, a score
//! per candidate (higher is better). Stage 3 turns these scores into preference pairs
//! ([`preferences`]); test-time verification picks the best-scoring candidate.
//!
//! - [`SimVerifier`] plays every candidate in the built-in world from the same seeded
//!   state: the perfect verifier, the ceiling DreamPlan works toward.
//! - A verifier that predicts images (the world model) scores its predicted final frames
//!   with an [`OutcomeJudge`]: [`MaskJudge`] (the documented mask measure of [`measure`],
//!   shared by every image verifier) or, as the paper did with GPT-4o, a VLM judge that a
//!   user plugs in through the same trait.

pub mod measure;
pub mod preferences;
pub mod world_model;

use crate::planner::eval::{choice_pixels, play, EvalConfig, Scene};
use crate::planner::KeypointChoice;
use crate::render::Frame;
use crate::sim::tasks::{self, Task};
use crate::vision::{Keypoint, Mask, RgbView, VisionError};

pub use measure::{mask_score, MaskScore};

/// Errors of a verifier.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// The state lacks what this verifier needs.
    #[error("{0}")]
    State(String),
    /// Segmenting or comparing images failed.
    #[error(transparent)]
    Vision(#[from] VisionError),
}

/// One decision state as a verifier sees it.
pub struct VerifyState<'a> {
    /// The task.
    pub task: Task,
    /// The world at decision time (simulating verifiers only).
    pub world: Option<&'a crate::sim::World>,
    /// The goal state (simulating verifiers only).
    pub goal_world: Option<&'a crate::sim::World>,
    /// The current camera image (rgb8 with depth).
    pub current: &'a Frame,
    /// The goal image.
    pub goal: &'a Frame,
    /// The current object-only image (arm masked out), when a camera pipeline provides it;
    /// image-predicting verifiers need it (or `world` to render it).
    pub current_object: Option<&'a Frame>,
    /// Keypoints on the current image.
    pub current_keypoints: &'a [Keypoint],
    /// Keypoints on the goal image.
    pub goal_keypoints: &'a [Keypoint],
}

/// Scores candidate actions from one state.
pub trait Verifier {
    /// Short name (recorded with the preference data it makes).
    fn name(&self) -> String;
    /// One score per candidate, higher is better, in the verifier's documented unit.
    fn score(
        &mut self,
        state: &VerifyState<'_>,
        candidates: &[KeypointChoice],
    ) -> Result<Vec<f64>, VerifierError>;
}

/// Judges predicted final frames against the goal image: the last step of any verifier that
/// imagines outcomes as images. The paper used GPT-4o here; [`MaskJudge`] is the built-in,
/// deterministic one. A VLM judge implements this trait.
pub trait OutcomeJudge {
    /// One value per outcome image, higher is better.
    fn judge(
        &mut self,
        task: Task,
        goal: &Frame,
        outcomes: &[Frame],
    ) -> Result<Vec<f64>, VerifierError>;
}

/// The object's mask in `frame` (the task's colour segmentation); an image without the
/// object gives an empty mask, not an error (an outcome may lose the object from view).
pub fn object_mask(task: Task, frame: &Frame) -> Result<Mask, VerifierError> {
    let view = RgbView::new(frame.width, frame.height, &frame.rgb)?;
    match crate::vision::segment(&view, &crate::planner::eval::segment_params(task)) {
        Ok(m) => Ok(m),
        Err(VisionError::NoObject(_)) => Ok(Mask {
            width: frame.width,
            height: frame.height,
            data: vec![false; (frame.width * frame.height) as usize],
        }),
        Err(e) => Err(e.into()),
    }
}

/// [`measure::mask_score`]'s value of each outcome's object mask against the goal's.
#[derive(Debug, Default, Clone, Copy)]
pub struct MaskJudge;

impl OutcomeJudge for MaskJudge {
    fn judge(
        &mut self,
        task: Task,
        goal: &Frame,
        outcomes: &[Frame],
    ) -> Result<Vec<f64>, VerifierError> {
        let goal_mask = object_mask(task, goal)?;
        outcomes
            .iter()
            .map(|f| Ok(mask_score(&object_mask(task, f)?, &goal_mask)?.value))
            .collect()
    }
}

/// What the simulator verifier compares an outcome with the goal by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimMeasure {
    /// The task's own distance to the goal state (what the evaluation scores), as
    /// `−distance / half_threshold`: ≥ −1 exactly when the episode would score ≥ 0.5, ≥
    /// −`one/half` when it would score 1. The perfect verifier.
    #[default]
    State,
    /// The mask measure on the rendered object-only final frame ([`MaskJudge`]): what an
    /// image-predicting verifier can see at best.
    Mask,
}

/// Plays every candidate in the built-in world from the observation's state.
#[derive(Debug, Clone, Default)]
pub struct SimVerifier {
    /// How outcomes are compared with the goal.
    pub measure: SimMeasure,
    /// Image size and keypoints of the observation.
    pub config: EvalConfig,
}

impl SimVerifier {
    /// The final world and the evaluation's (distance, 0/0.5/1 score) of one candidate.
    pub fn outcome(
        &self,
        state: &VerifyState<'_>,
        choice: &KeypointChoice,
    ) -> Result<(crate::sim::World, f64, f64), VerifierError> {
        let (Some(world), Some(goal)) = (state.world, state.goal_world) else {
            return Err(VerifierError::State(
                "the simulator verifier needs the simulated world and goal state".into(),
            ));
        };
        let mut world = world.clone();
        if let Some((s, t)) = choice_pixels(choice, state.current_keypoints, state.goal_keypoints) {
            play(&mut world, state.current, state.goal, s, t, &self.config);
        }
        let (distance, score) = tasks::score(state.task, &world, goal);
        Ok((world, distance, score))
    }

    /// [`SimVerifier::outcome`] of every candidate, in order, with the same results: the
    /// candidates that pick at one keypoint are played together, their shared approach,
    /// grasp and lift simulated once ([`crate::sim::episode::execute_plans_shared`]).
    pub fn outcomes(
        &self,
        state: &VerifyState<'_>,
        candidates: &[KeypointChoice],
    ) -> Result<Vec<(crate::sim::World, f64, f64)>, VerifierError> {
        use crate::planner::eval::plan_pixels;
        use crate::sim::episode::{default_arm, execute_plans_shared, ArmExecParams};
        let (Some(world), Some(goal)) = (state.world, state.goal_world) else {
            return Err(VerifierError::State(
                "the simulator verifier needs the simulated world and goal state".into(),
            ));
        };
        // Each candidate's plan (none: unknown keypoint or refused, the world stays put).
        let plans: Vec<Option<crate::robot::motion::PickPlacePlan>> = candidates
            .iter()
            .map(|c| {
                let (s, t) = choice_pixels(c, state.current_keypoints, state.goal_keypoints)?;
                plan_pixels(state.current, state.goal, s, t, &self.config).ok()
            })
            .collect();
        let mut worlds: Vec<Option<crate::sim::World>> = vec![None; candidates.len()];
        let mut picks: Vec<u32> = candidates.iter().map(|c| c.pick).collect();
        picks.sort_unstable();
        picks.dedup();
        let arm = default_arm();
        let params = ArmExecParams {
            fps: 0.0,
            ..Default::default()
        };
        for pick in picks {
            let group: Vec<usize> = (0..candidates.len())
                .filter(|&i| candidates[i].pick == pick && plans[i].is_some())
                .collect();
            let group_plans: Vec<_> = group.iter().filter_map(|&i| plans[i].as_ref()).collect();
            for (i, (w, _)) in
                group
                    .iter()
                    .zip(execute_plans_shared(world, &arm, &group_plans, &params))
            {
                worlds[*i] = Some(w);
            }
        }
        Ok(worlds
            .into_iter()
            .map(|w| {
                let w = w.unwrap_or_else(|| world.clone());
                let (distance, score) = tasks::score(state.task, &w, goal);
                (w, distance, score)
            })
            .collect())
    }
}

impl Verifier for SimVerifier {
    fn name(&self) -> String {
        match self.measure {
            SimMeasure::State => "sim".into(),
            SimMeasure::Mask => "sim-mask".into(),
        }
    }

    fn score(
        &mut self,
        state: &VerifyState<'_>,
        candidates: &[KeypointChoice],
    ) -> Result<Vec<f64>, VerifierError> {
        let half = state.task.thresholds().1;
        let mut out = Vec::with_capacity(candidates.len());
        let mut frames = Vec::new();
        for (world, distance, _) in self.outcomes(state, candidates)? {
            match self.measure {
                SimMeasure::State => out.push(-distance / half),
                SimMeasure::Mask => frames.push(object_frame(&world, self.config.size)),
            }
        }
        if self.measure == SimMeasure::Mask {
            out = MaskJudge.judge(state.task, state.goal, &frames)?;
        }
        Ok(out)
    }
}

/// The object-only view of `world` from the built-in camera (`size`², as the goal image).
pub fn object_frame(world: &crate::sim::World, size: u32) -> Frame {
    use crate::render::{render, scene, RenderMode, RenderOptions};
    render(
        &scene::world_primitives(world),
        &scene::default_camera(size, size),
        RenderMode::ObjectOnly,
        &RenderOptions::default(),
    )
}

/// Every `pick i place j` over the two keypoint sets, in order.
pub fn all_choices(current: &[Keypoint], goal: &[Keypoint]) -> Vec<KeypointChoice> {
    current
        .iter()
        .flat_map(|c| {
            goal.iter().map(move |g| KeypointChoice {
                pick: c.id,
                place: g.id,
            })
        })
        .collect()
}

impl<'a> VerifyState<'a> {
    /// The state of an evaluation's observation (world and goal state included), with its
    /// keypoints.
    pub fn of_observation(
        task: Task,
        obs: &'a crate::planner::eval::Observation,
        current_keypoints: &'a [Keypoint],
        goal_keypoints: &'a [Keypoint],
    ) -> Self {
        Self {
            task,
            world: Some(&obs.world),
            goal_world: Some(&obs.goal),
            current: &obs.current,
            goal: &obs.goal_frame,
            current_object: None,
            current_keypoints,
            goal_keypoints,
        }
    }

    /// The state a planner was shown.
    pub fn of_scene(scene: &Scene<'a>) -> Self {
        Self {
            task: scene.task,
            world: scene.world,
            goal_world: scene.goal_world,
            current: scene.current,
            goal: scene.goal,
            current_object: None,
            current_keypoints: scene.current_keypoints,
            goal_keypoints: scene.goal_keypoints,
        }
    }
}

/// Test-time verification: a sampling planner's distinct candidates are scored by a
/// verifier and the best one is played (on ties the planner's own choice when it is among
/// the best, else the first in the planner's order). The
/// paper's "best of K" rows with the world model as verifier. A planner that returns fewer
/// than two distinct valid candidates keeps its own decision; a verifier error is no
/// action, with the reason.
pub struct VerifiedPlanner<P> {
    /// The sampling planner.
    pub planner: P,
    /// The verifier (it may render the object-only frame from the scene's world, as a
    /// segmenting camera would give it, but a world-model verifier sees nothing else of it).
    pub verifier: Box<dyn Verifier + Send>,
}

impl<P: crate::planner::eval::Planner> crate::planner::eval::Planner for VerifiedPlanner<P> {
    fn name(&self) -> String {
        format!("{} + {}", self.planner.name(), self.verifier.name())
    }

    fn set_sampling(&mut self, config: &crate::planner::vlm_planner::VlmPlannerConfig) {
        self.planner.set_sampling(config);
    }

    fn decide(&mut self, s: &Scene<'_>) -> crate::planner::eval::Decision {
        use crate::planner::eval::Decision;
        let own = self.planner.decide(s);
        let mut distinct: Vec<KeypointChoice> = Vec::new();
        for c in self.planner.candidates() {
            if let Ok(ch) = &c.choice {
                if !distinct.contains(ch) {
                    distinct.push(*ch);
                }
            }
        }
        if distinct.len() < 2 {
            return own;
        }
        let state = VerifyState {
            task: s.task,
            world: s.world,
            goal_world: s.goal_world,
            current: s.current,
            goal: s.goal,
            current_object: None,
            current_keypoints: s.current_keypoints,
            goal_keypoints: s.goal_keypoints,
        };
        match self.verifier.score(&state, &distinct) {
            Ok(scores) => {
                let mut best = 0;
                for (i, &v) in scores.iter().enumerate() {
                    if v > scores[best] {
                        best = i;
                    }
                }
                // Among equal best scores the planner's own choice stays: scores that are
                // all the same (a world model that lost the object everywhere, an empty
                // goal) prefer nothing. Before session 43 the first sample was played.
                if let Decision::Keypoints(mine) = &own {
                    if let Some(i) = distinct.iter().position(|c| c == mine) {
                        if scores[i] == scores[best] {
                            best = i;
                        }
                    }
                }
                Decision::Keypoints(distinct[best])
            }
            Err(e) => Decision::None(format!("verifier: {e}")),
        }
    }

    fn candidates(&self) -> &[crate::planner::vlm_planner::Candidate] {
        self.planner.candidates()
    }
}

/// The keypoint oracle: the best of all N×M keypoint actions as the simulator scores them
/// (first on ties): the most any planner that answers with keypoints can reach.
#[derive(Debug, Default)]
pub struct KeypointOracle {
    /// The verifier that plays every action.
    pub verifier: SimVerifier,
}

impl crate::planner::eval::Planner for KeypointOracle {
    fn name(&self) -> String {
        "keypoint-oracle".into()
    }
    fn decide(&mut self, scene: &Scene<'_>) -> crate::planner::eval::Decision {
        use crate::planner::eval::Decision;
        let state = VerifyState::of_scene(scene);
        let choices = all_choices(scene.current_keypoints, scene.goal_keypoints);
        match self.verifier.score(&state, &choices) {
            Ok(scores) => scores
                .iter()
                .zip(&choices)
                .fold(None::<(f64, KeypointChoice)>, |b, (s, c)| match b {
                    Some(b) if b.0 >= *s => Some(b),
                    _ => Some((*s, *c)),
                })
                .map_or_else(
                    || Decision::None("no keypoints".into()),
                    |b| Decision::Keypoints(b.1),
                ),
            Err(e) => Decision::None(e.to_string()),
        }
    }
}
