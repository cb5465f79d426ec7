//! The evaluation every result is measured with, in the paper's form: seeded episodes on
//! the built-in world, one pick-and-place each, scored 0 / 0.5 / 1 against the goal; mean
//! score per task with a 95% interval, the average, and seconds per decision.
//!
//! An episode is what the nodes do, called directly (no bus, so thousands run quickly and
//! deterministically): reset; the goal made by the arm; the current view (arm at its ready
//! pose) and the goal view rendered with depth; the object segmented and keypoints sampled
//! on both; the planner decides; the executor's `plan_action` turns the pixels into a
//! checked trajectory; the arm plays it; the final state is scored.

use std::time::Instant;

use serde::Serialize;

use super::baselines::{random_choice, Rule};
use super::{prompt, KeypointChoice};
use crate::msg::dreamplan::KeypointAction;
use crate::nodes::executor::{plan_action, ExecutorConfig};
use crate::render::{render, scene, Frame, RenderMode, RenderOptions};
use crate::robot::safety::DepthImage;
use crate::sim::episode::{
    arm_goal, default_arm, execute_plan, surface_point, ArmExecParams, READY,
};
use crate::sim::rng::Rng;
use crate::sim::tasks::{self, Task};
use crate::sim::World;
use crate::vision::{self, Keypoint, RgbView, SegmentParams};

/// What a planner sees at decision time.
pub struct Scene<'a> {
    /// The task.
    pub task: Task,
    /// Episode seed.
    pub seed: u64,
    /// Current camera image (rgb8, arm at its ready pose).
    pub current: &'a Frame,
    /// Goal image (rgb8, object only).
    pub goal: &'a Frame,
    /// Keypoints on the current image.
    pub current_keypoints: &'a [Keypoint],
    /// Keypoints on the goal image.
    pub goal_keypoints: &'a [Keypoint],
    /// The simulated world, where there is one. Only oracles may look at it.
    pub world: Option<&'a World>,
    /// The goal state, where there is one. Only oracles may look at it.
    pub goal_world: Option<&'a World>,
}

/// A planner's decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Keypoint numbers on the current and goal images.
    Keypoints(KeypointChoice),
    /// Raw pixels (source on the current image, target on the goal image).
    Pixels {
        /// Source pixel.
        source: (f32, f32),
        /// Target pixel.
        target: (f32, f32),
    },
    /// No action (an unparseable answer after every retry, say), with the reason.
    None(String),
}

/// Anything that decides one pick-and-place per episode.
pub trait Planner {
    /// Short name for tables.
    fn name(&self) -> String;
    /// The decision for `scene`.
    fn decide(&mut self, scene: &Scene<'_>) -> Decision;
    /// The candidates the last decision chose from (empty for planners that do not sample).
    fn candidates(&self) -> &[super::vlm_planner::Candidate] {
        &[]
    }
    /// New sampling settings from the next decision on (planners that sample; the others
    /// ignore them).
    fn set_sampling(&mut self, _config: &super::vlm_planner::VlmPlannerConfig) {}
    /// A flag that, once set, ends the current and every later decision early with
    /// [`Decision::None`] (planners whose decisions take long: the VLM's). The planner node
    /// sets it when it is asked to stop, so Ctrl-C does not wait for a decision to finish.
    /// `None`: decisions are quick and cannot be stopped.
    fn halt_flag(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        None
    }
}

/// Random keypoints (seeded per episode).
pub struct RandomPlanner;

impl Planner for RandomPlanner {
    fn name(&self) -> String {
        "random".into()
    }
    fn decide(&mut self, s: &Scene<'_>) -> Decision {
        let mut rng = Rng::new(s.seed, 0x5A4D);
        random_choice(s.current_keypoints, s.goal_keypoints, &mut rng).map_or_else(
            || Decision::None("no keypoints".into()),
            Decision::Keypoints,
        )
    }
}

/// A physics-blind keypoint rule ([`Rule::choice`]) as a planner; named as the CLI and the
/// node's `backend` name it (`coverage`, `correspondence` for the assignment rule).
pub struct RulePlanner(pub Rule);

impl Planner for RulePlanner {
    fn name(&self) -> String {
        match self.0 {
            Rule::Coverage => "coverage",
            Rule::Assignment => "correspondence",
            Rule::Fold => "fold",
            Rule::Reach => "reach",
            Rule::Ranks => "ranks",
            Rule::Stretch => "stretch",
        }
        .into()
    }
    fn decide(&mut self, s: &Scene<'_>) -> Decision {
        self.0
            .choice(s.current_keypoints, s.goal_keypoints)
            .map_or_else(
                || Decision::None("no keypoints".into()),
                Decision::Keypoints,
            )
    }
}

/// The hidden good action that made the goal, seen through the camera: the upper bound.
pub struct OraclePlanner {
    /// Image size the pixels are for.
    pub width: u32,
    /// See `width`.
    pub height: u32,
}

impl Planner for OraclePlanner {
    fn name(&self) -> String {
        "oracle".into()
    }
    fn decide(&mut self, s: &Scene<'_>) -> Decision {
        let Some(world) = s.world else {
            return Decision::None("the oracle needs the simulator's state".into());
        };
        let cam = scene::default_camera(self.width, self.height);
        let action = tasks::hidden_action(s.task, s.seed);
        let pick = surface_point(world, &action.pick, ArmExecParams::default().grasp_radius);
        match (cam.project(&pick), cam.project(&action.place)) {
            (Some((su, sv, _)), Some((tu, tv, _))) => Decision::Pixels {
                source: (su as f32, sv as f32),
                target: (tu as f32, tv as f32),
            },
            _ => Decision::None("hidden action behind the camera".into()),
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Image size (square images are what the VLM is given).
    pub size: u32,
    /// Keypoints per image.
    pub keypoints: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            size: 256,
            keypoints: 8,
        }
    }
}

/// How an episode ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action was executed.
    Executed,
    /// The planner gave no action.
    NoAction(String),
    /// The object was not found in an image.
    NoObject(String),
    /// The executor refused the action.
    Refused(String),
}

/// One episode's result.
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeResult {
    /// Task name.
    pub task: String,
    /// Seed.
    pub seed: u64,
    /// 0, 0.5 or 1.
    pub score: f64,
    /// Distance to the goal (m).
    pub distance_m: f64,
    /// Seconds the planner took to decide.
    pub decision_s: f64,
    /// How it ended.
    pub outcome: Outcome,
    /// The keypoint action decided (`[pick, place]` numbers as the planner was given them;
    /// absent for a planner that answers in pixels or decided nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<[u32; 2]>,
}

/// The built-in world's segmentation settings for `task`.
pub fn segment_params(task: Task) -> SegmentParams {
    match task {
        Task::Rope => SegmentParams::rope(),
        Task::Cloth => SegmentParams::cloth(),
        Task::Toy => SegmentParams::toy(),
    }
}

fn depth(frame: &Frame) -> DepthImage {
    DepthImage {
        width: frame.width,
        height: frame.height,
        data: frame.depth.clone(),
    }
}

/// `n` numbered keypoints on the object of `task` in `frame`: segmentation with the
/// task's colour range, then farthest-point sampling (what every planner is given).
pub fn keypoints(
    task: Task,
    frame: &Frame,
    n: usize,
) -> Result<Vec<Keypoint>, vision::VisionError> {
    let view = RgbView::new(frame.width, frame.height, &frame.rgb)?;
    let mask = vision::segment(&view, &segment_params(task))?;
    vision::farthest_point_sampling(&mask, n)
}

/// What one episode shows the planner before it decides: the world, the goal state, the
/// current view (arm at its ready pose, with depth), the goal view (object only) and the
/// keypoints sampled on both (or why the object was not found).
pub struct Observation {
    /// The world at decision time.
    pub world: World,
    /// The goal state (the hidden good action played by the arm).
    pub goal: World,
    /// The current camera image.
    pub current: Frame,
    /// The goal image.
    pub goal_frame: Frame,
    /// Keypoints on the current and goal images.
    pub keypoints: Result<(Vec<Keypoint>, Vec<Keypoint>), KeypointError>,
}

/// The keypoints every planner is given: [`keypoints`] on the current and on the goal
/// image, numbered by their relation to each other ([`prompt::number_by_rank`]: keypoint 1
/// of each image lies farthest from the other image's shape).
pub fn keypoint_pair(
    task: Task,
    current: &Frame,
    goal: &Frame,
    n: usize,
) -> Result<(Vec<Keypoint>, Vec<Keypoint>), KeypointError> {
    let kc = keypoints(task, current, n).map_err(KeypointError::Current)?;
    let kg = keypoints(task, goal, n).map_err(KeypointError::Goal)?;
    Ok(prompt::number_by_rank(&kc, &kg))
}

/// Why an image gave no keypoints.
#[derive(Debug, thiserror::Error)]
pub enum KeypointError {
    /// On the current image.
    #[error("current image: {0}")]
    Current(vision::VisionError),
    /// On the goal image.
    #[error("goal image: {0}")]
    Goal(vision::VisionError),
}

/// Resets `task` from `seed`, makes its goal with the arm, renders both views and samples
/// keypoints on them: everything before the planner's decision.
pub fn observe(task: Task, seed: u64, config: &EvalConfig) -> Observation {
    let arm = default_arm();
    let cam = scene::default_camera(config.size, config.size);
    let opts = RenderOptions::default();
    let goal = arm_goal(task, seed, &arm).expect("the hidden action of every seed is plannable");
    let world = tasks::reset(task, seed);
    let current = render(
        &scene::full_scene(&world, &arm, &READY, true),
        &cam,
        RenderMode::Full,
        &opts,
    );
    let goal_frame = render(
        &scene::world_primitives(&goal),
        &cam,
        RenderMode::ObjectOnly,
        &opts,
    );
    let n = config.keypoints;
    let keypoints = keypoint_pair(task, &current, &goal_frame, n);
    Observation {
        world,
        goal,
        current,
        goal_frame,
        keypoints,
    }
}

/// Runs one episode of `task` from `seed` with `planner`.
pub fn run_episode(
    task: Task,
    seed: u64,
    planner: &mut dyn Planner,
    config: &EvalConfig,
) -> EpisodeResult {
    let Observation {
        mut world,
        goal,
        current,
        goal_frame,
        keypoints,
    } = observe(task, seed, config);
    let mut action = None;
    let result = |world: &World, decision_s: f64, outcome: Outcome, action| {
        let (distance_m, score) = tasks::score(task, world, &goal);
        EpisodeResult {
            task: format!("{task:?}").to_lowercase(),
            seed,
            score,
            distance_m,
            decision_s,
            outcome,
            action,
        }
    };
    let (kc, kg) = match keypoints {
        Ok(k) => k,
        Err(e) => return result(&world, 0.0, Outcome::NoObject(e.to_string()), None),
    };
    let scene_view = Scene {
        task,
        seed,
        current: &current,
        goal: &goal_frame,
        current_keypoints: &kc,
        goal_keypoints: &kg,
        world: Some(&world),
        goal_world: Some(&goal),
    };
    let t0 = Instant::now();
    let decision = planner.decide(&scene_view);
    let decision_s = t0.elapsed().as_secs_f64();
    let (source, target) = match decision {
        Decision::Keypoints(c) => {
            action = Some([c.pick, c.place]);
            match choice_pixels(&c, &kc, &kg) {
                Some(p) => p,
                None => {
                    return result(
                        &world,
                        decision_s,
                        Outcome::NoAction(format!("unknown keypoint in {c:?}")),
                        action,
                    )
                }
            }
        }
        Decision::Pixels { source, target } => (source, target),
        Decision::None(why) => return result(&world, decision_s, Outcome::NoAction(why), None),
    };
    let outcome = play(&mut world, &current, &goal_frame, source, target, config);
    result(&world, decision_s, outcome, action)
}

/// The executor's checked pick-and-place plan for pixels (`source` on `current`, `target`
/// on `goal_frame`), through the depth of both images, from the ready pose; the reason when
/// the executor would refuse it.
pub fn plan_pixels(
    current: &Frame,
    goal_frame: &Frame,
    source: (f32, f32),
    target: (f32, f32),
    config: &EvalConfig,
) -> Result<crate::robot::motion::PickPlacePlan, String> {
    let arm = default_arm();
    let exec = ExecutorConfig {
        width: config.size,
        height: config.size,
        ..Default::default()
    };
    plan_pixels_through(
        &exec.camera(None),
        current,
        goal_frame,
        source,
        target,
        &arm,
    )
}

/// [`plan_pixels`] through another camera than the built-in one (a real arm's, placed in
/// the arm's base frame): the executor's decision with its default settings, from the
/// ready pose. `current` and `goal_frame` carry the depth seen through `camera`.
pub fn plan_pixels_through(
    camera: &crate::render::PinholeCamera,
    current: &Frame,
    goal_frame: &Frame,
    source: (f32, f32),
    target: (f32, f32),
    arm: &crate::robot::ArmModel,
) -> Result<crate::robot::motion::PickPlacePlan, String> {
    let action = KeypointAction {
        source_u: source.0,
        source_v: source.1,
        target_u: target.0,
        target_v: target.1,
        ..Default::default()
    };
    let exec = ExecutorConfig {
        width: camera.width,
        height: camera.height,
        ..Default::default()
    };
    plan_action(
        &exec,
        arm,
        camera,
        &action,
        Some(&depth(current)),
        Some(&depth(goal_frame)),
        &READY,
    )
    .map_err(|e| e.to_string())
}

/// Plays one pick-and-place given as pixels (`source` on `current`, `target` on
/// `goal_frame`) in `world`, as the executor would: [`plan_pixels`], then the arm plays
/// the plan. A refused action leaves `world` as it was.
pub fn play(
    world: &mut World,
    current: &Frame,
    goal_frame: &Frame,
    source: (f32, f32),
    target: (f32, f32),
    config: &EvalConfig,
) -> Outcome {
    match plan_pixels(current, goal_frame, source, target, config) {
        Ok(plan) => {
            let params = ArmExecParams {
                fps: 0.0,
                ..Default::default()
            };
            execute_plan(world, &default_arm(), &plan, &params, |_, _, _, _| {});
            Outcome::Executed
        }
        Err(e) => Outcome::Refused(e),
    }
}

/// The pixels of `choice` on the two keypoint sets (`None` when a number is unknown).
pub fn choice_pixels(
    choice: &KeypointChoice,
    current: &[Keypoint],
    goal: &[Keypoint],
) -> Option<((f32, f32), (f32, f32))> {
    let find = |kps: &[Keypoint], id: u32| kps.iter().find(|k| k.id == id).map(|k| (k.u, k.v));
    Some((find(current, choice.pick)?, find(goal, choice.place)?))
}

/// The average of several groups' mean scores (each task weighted alike) and its 95%
/// interval (normal approximation, clipped to [0, 1]): the standard error is the groups'
/// own, `sqrt(Σ s²ₜ / nₜ) / T`, so the spread between the tasks' means is not counted as
/// sampling noise (a task whose scores are all the same counts the variance of its Wilson
/// interval, as [`mean_ci`] does). Before session 44 the experiment's average pooled the
/// tasks' episodes into one sample, which made its interval wider than it need be.
/// NaN when a group is empty.
pub fn stratified_mean_ci(groups: &[Vec<f64>]) -> (f64, f64, f64) {
    let (mean, half) = stratified(groups, |m, n| {
        // A task whose scores are all the same still has an uncertain mean: the variance
        // its Wilson interval implies, as `mean_ci` gives it.
        let (_, lo, hi) = wilson(m, n);
        ((hi - lo) / (2.0 * 1.96)).powi(2)
    });
    if mean.is_nan() {
        return (f64::NAN, f64::NAN, f64::NAN); // `max` and `min` would drop a NaN
    }
    (mean, (mean - half).max(0.0), (mean + half).min(1.0))
}

/// The average over tasks of paired differences (one `Vec` of tuned − base per task, each
/// episode's pair of the same seed) and its 95% interval, from within the tasks as
/// [`stratified_mean_ci`], not clipped (a gain can be negative). A task whose differences
/// are all the same adds no variance, as `scripts/paired_gain.py` counts it.
pub fn paired_gain_ci(diffs_by_task: &[Vec<f64>]) -> (f64, f64, f64) {
    let (mean, half) = stratified(diffs_by_task, |_, _| 0.0);
    (mean, mean - half, mean + half)
}

/// The average of the groups' means, each group weighted alike, and the half-width of its
/// 95% normal interval from the groups' own variances (`1.96·sqrt(Σ s²ₜ / nₜ) / T`); a
/// group whose values are all the same adds `constant_var(mean, n)` instead. NaN when
/// there is no group or one is empty.
fn stratified(groups: &[Vec<f64>], constant_var: impl Fn(f64, f64) -> f64) -> (f64, f64) {
    if groups.is_empty() || groups.iter().any(Vec::is_empty) {
        return (f64::NAN, f64::NAN);
    }
    let t = groups.len() as f64;
    let (mut mean, mut var) = (0.0, 0.0);
    for g in groups {
        let n = g.len() as f64;
        let (m, v) = mean_and_variance(g);
        mean += m / t;
        var += if v > 0.0 { v / n } else { constant_var(m, n) };
    }
    (mean, 1.96 * var.sqrt() / t)
}

/// Mean and 95% interval (normal approximation, clipped to [0, 1]) of scores.
pub fn mean_ci(scores: &[f64]) -> (f64, f64, f64) {
    let n = scores.len() as f64;
    if scores.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let (mean, var) = mean_and_variance(scores);
    if var == 0.0 {
        // Every score the same (all 0, say): the normal interval has no width, which
        // claims a certainty 100 episodes do not give. The Wilson interval of n trials at
        // that rate says what they do (100 zeros: 0–0.037). Before session 44 it was
        // (0, 0).
        return wilson(mean, n);
    }
    let half = 1.96 * (var / n).sqrt();
    (mean, (mean - half).max(0.0), (mean + half).min(1.0))
}

/// The mean of non-empty `scores` and their sample variance (0 for one score).
fn mean_and_variance(scores: &[f64]) -> (f64, f64) {
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let var = if n > 1.0 {
        scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var)
}

/// The Wilson score interval (95%) of a rate `p` seen over `n` trials.
fn wilson(p: f64, n: f64) -> (f64, f64, f64) {
    let z2 = 1.96f64 * 1.96;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = 1.96 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    (p, (centre - half).max(0.0), (centre + half).min(1.0))
}
