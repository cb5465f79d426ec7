//! Planner node: once per episode, looks at the current image and the goal image, samples
//! candidate actions and publishes the keypoint sets, the candidates and the chosen action.
//!
//! An episode starts with a `reset` event (its `task` names the instruction); the node
//! takes the first camera image after it and the latest (latched) goal image, segments the
//! object, samples keypoints on both, and asks its planner: a VLM model folder, or one of
//! the baselines. Acting once per reset is how it waits for the executor: the next
//! decision comes with the next episode. Anything that goes wrong (bad image, no object,
//! no valid answer) is a `failed` event with the reason; the node keeps running.
//!
//! On a real arm nothing resets a world, so two things make the same protocol safe there:
//! - **when to decide** (`trigger`): on a `reset` event (the simulator's, or one a user
//!   or a task script publishes), or on every new goal image (`trigger: goal`, with the
//!   configured `task`): the node then publishes the `reset` itself, so recorders and the
//!   executor see the usual episode life cycle;
//! - **only while the arm is idle** (`wait_idle`, on by default): an `action_started`
//!   from the executor marks the arm busy until its `action_finished` or a `failed` that
//!   ends the motion (not a `scored`, nor the executor's refusal of an action because the
//!   arm still moves); a decision asked for meanwhile waits and is taken on the first
//!   camera image after the arm is idle again. Once an executor has reported on the graph,
//!   an action the node published counts as started until the executor says so (or fails
//!   it), for at most [`START_TIMEOUT_S`]: a reset that arrives between the two (a new goal
//!   with `trigger: goal`) is not decided on an arm about to move.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use super::{Node, NodeContext};
use crate::bus::{Bus, Qos};
use crate::msg::dreamplan::{ActionCandidates, Keypoint as KeypointMsg, KeypointSet, KeypointSets};
use crate::msg::prelude::*;
use crate::planner::baselines::Rule;
use crate::planner::eval::{keypoint_pair, Decision, Planner, RandomPlanner, RulePlanner, Scene};
use crate::planner::vlm_planner::{VlmPlanner, VlmPlannerConfig};
use crate::planner::KeypointChoice;
use crate::render::Frame;
use crate::sim::tasks::Task;
use crate::vision::Keypoint;

/// Which planner decides.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// A Qwen3-VL model folder (`model`).
    Vlm,
    /// The physics-blind assignment rule (`correspondence_choice`).
    Correspondence,
    /// The physics-blind coverage rule (`coverage_choice`).
    Coverage,
    /// Random keypoints.
    Random,
}

/// Topic names of the planner.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlannerTopics {
    /// Camera images (rgb8, bgr8, rgba8 or bgra8).
    pub image: String,
    /// Goal image (rgb8, bgr8, rgba8 or bgra8; latched or not).
    pub goal: String,
    /// Episode events (in: reset; out: failed).
    pub episode: String,
    /// Keypoints sampled on both images.
    pub keypoint_sets: String,
    /// The candidates sampled, with the chosen index.
    pub candidates: String,
    /// The chosen action (the executor's input).
    pub action: String,
    /// The verifier's scores (in, when `verify.wait`).
    pub scores: String,
    /// The trainer node's status (in): a finished ORPO job's adapter is loaded (backend
    /// `vlm`) before the next decision, without restarting the node.
    pub trainer: String,
}

impl Default for PlannerTopics {
    fn default() -> Self {
        Self {
            image: "/camera/image_raw".into(),
            goal: "/goal/image".into(),
            episode: "/dreamplan/episode".into(),
            keypoint_sets: "/planner/keypoints".into(),
            candidates: "/planner/candidates".into(),
            action: "/planner/action".into(),
            scores: "/verifier/scores".into(),
            trainer: "/trainer/status".into(),
        }
    }
}

/// What asks the planner for a decision.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A `reset` episode event (the simulator's, or one published by hand or a script).
    Reset,
    /// Every new goal image: the node publishes the episode's `reset` itself, for `task`.
    Goal,
}

/// Planner parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlannerConfig {
    /// Which planner decides.
    pub backend: Backend,
    /// What asks for a decision.
    pub trigger: Trigger,
    /// The task of goal-triggered decisions (`rope`, `cloth` or `toy`; `trigger: goal`).
    pub task: Option<String>,
    /// Hold a decision while the executor reports an action in progress, and take it on
    /// the first image after the arm is idle again.
    pub wait_idle: bool,
    /// Model folder (backend `vlm`).
    pub model: Option<PathBuf>,
    /// A PEFT LoRA adapter folder, or an adapter set, merged into `model` at load (backend
    /// `vlm`), e.g. from `dreamplan train-orpo`. A trainer node's finished adapter
    /// (`topics.trainer`) replaces it while running.
    pub adapter: Option<PathBuf>,
    /// Keypoints per image.
    pub keypoints: usize,
    /// Sampling (backend `vlm`).
    pub sampling: VlmPlannerConfig,
    /// Test-time verification: wait for the verifier node's scores of the candidates.
    pub verify: VerifyConfig,
    /// Topic names.
    pub topics: PlannerTopics,
}

/// Test-time verification (best of N with the world model).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// Publish the candidates, wait for `VerifierScores` answering them, and execute the
    /// best one (the planner's own choice when none scores or the wait times out).
    pub wait: bool,
    /// Seconds to wait for the scores.
    pub timeout_s: f64,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            wait: false,
            timeout_s: 30.0,
        }
    }
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Correspondence,
            trigger: Trigger::Reset,
            task: None,
            wait_idle: true,
            model: None,
            adapter: None,
            keypoints: 8,
            sampling: VlmPlannerConfig::default(),
            verify: VerifyConfig::default(),
            topics: PlannerTopics::default(),
        }
    }
}

/// The planner node.
pub struct PlannerNode {
    config: PlannerConfig,
    planner: Box<dyn Planner + Send>,
}

/// The image as the planner's frame: rgb8, or bgr8 / rgba8 / bgra8 converted (what colour
/// drivers publish; before session 48 only rgb8 was read, and every decision on a bgr8
/// driver's images failed).
fn frame_of(img: &Image) -> Result<Frame, String> {
    Ok(Frame {
        width: img.width,
        height: img.height,
        rgb: crate::vision::rgb_pixels(img)?,
        depth: Vec::new(),
    })
}

/// How long, in wall-clock seconds, a published action counts as started before the
/// executor reports it (only once an executor has reported on the graph): past this the
/// node warns and decides again without waiting.
pub const START_TIMEOUT_S: f64 = 10.0;

/// How the planner's own `failed` events begin (`planner: <why>`).
pub const OWN_FAILURE: &str = "planner: ";

/// How far (s) before the arm's last idle time a reset must be stamped to be taken for a
/// clock that went back (a simulator reset, a bag played again).
const CLOCK_BACK_S: f64 = 5.0;

/// The goal the planner plans toward, and (with `trigger: goal`) which goal last asked for
/// an episode. Both places a goal image can be taken from (its own branch, and the drain
/// before a decision) go through [`GoalSlot::offer`], so that a goal is announced however
/// it arrives.
#[derive(Default)]
struct GoalSlot {
    goal: Option<Frame>,
    /// Why the last goal image could not be read: the goal held before is dropped (the
    /// planner planned toward it before session 42) and a decision fails naming this.
    refused: Option<String>,
    /// The stamp of the goal in `goal`; with its pixels, what tells a new request from a
    /// latched sample delivered again.
    stamp: Option<(i32, u32)>,
    /// The goals offered in the last [`GOAL_ECHO_S`]: stamp, size, a hash of the pixels,
    /// and when. The goal topic is read through three readers (latched, reliable and
    /// best-effort volatile), and a latched publisher's goal arrives through each, possibly after the next goal's first
    /// copy: that late copy is not a new request, nor does it replace the newer goal.
    recent: Vec<(GoalKey, std::time::Instant)>,
    /// The held goal's stamp (ns) and when it was taken: a copy stamped earlier that comes
    /// within [`crate::bus::ECHO_S`] (the other reader's copy of an earlier goal, its own
    /// first copy pushed out of a one-deep queue) does not replace it.
    held_at: Option<(i64, std::time::Instant)>,
}

/// A goal's stamp, size and a hash of its pixels.
type GoalKey = ((i32, u32), (u32, u32), u64);

/// How long (wall-clock seconds) a goal offered again counts as the other reader's copy
/// of it rather than a new request (both copies come within milliseconds; a bag played
/// again in a loop repeats its goals seconds apart, and they are requests).
const GOAL_ECHO_S: f64 = crate::bus::ECHO_S;

impl GoalSlot {
    /// Takes `frame` (stamped `stamp`) as the goal; true when it differs from the goal held
    /// (another stamp or other pixels), i.e. when it is a new request. A copy of a goal
    /// offered within the last [`GOAL_ECHO_S`] is neither taken nor new.
    fn offer(&mut self, stamp: (i32, u32), frame: Frame) -> bool {
        let now = std::time::Instant::now();
        let ns = stamp.0 as i64 * 1_000_000_000 + stamp.1 as i64;
        if crate::bus::late_copy(ns, self.held_at) {
            return false;
        }
        let key = (
            stamp,
            (frame.width, frame.height),
            crate::train::checkpoint::fnv1a(&frame.rgb),
        );
        self.recent
            .retain(|r| now.duration_since(r.1).as_secs_f64() < GOAL_ECHO_S);
        let echo = self.recent.iter().any(|r| r.0 == key);
        let held = self.stamp == Some(stamp)
            && self.goal.as_ref().is_some_and(|g| {
                (g.width, g.height, &g.rgb) == (frame.width, frame.height, &frame.rgb)
            });
        if echo && !held {
            // An earlier goal's late copy: the newer goal stays.
            return false;
        }
        if !echo {
            self.recent.push((key, now));
        }
        let same = held;
        self.goal = Some(frame);
        self.stamp = Some(stamp);
        if !same {
            self.held_at = Some((ns, now));
        }
        self.refused = None;
        !same
    }

    /// The newest goal image cannot be read: no goal is in force.
    fn refuse(&mut self, why: String) {
        self.goal = None;
        self.stamp = None;
        self.refused = Some(why);
    }
}

fn task_of(name: &str) -> Option<Task> {
    match name {
        "rope" => Some(Task::Rope),
        "cloth" => Some(Task::Cloth),
        "toy" => Some(Task::Toy),
        _ => None,
    }
}

fn keypoint_set(header: &Header, frame: &Frame, kps: &[Keypoint]) -> KeypointSet {
    KeypointSet {
        header: header.clone(),
        width: frame.width,
        height: frame.height,
        keypoints: kps
            .iter()
            .map(|k| KeypointMsg {
                id: k.id,
                u: k.u,
                v: k.v,
                ..Default::default()
            })
            .collect(),
    }
}

fn action_msg(
    header: &Header,
    choice: &KeypointChoice,
    kc: &[Keypoint],
    kg: &[Keypoint],
    text: String,
    logprob: f64,
) -> Option<KeypointAction> {
    let s = kc.iter().find(|k| k.id == choice.pick)?;
    let t = kg.iter().find(|k| k.id == choice.place)?;
    Some(KeypointAction {
        header: header.clone(),
        source_id: s.id,
        target_id: t.id,
        source_u: s.u,
        source_v: s.v,
        target_u: t.u,
        target_v: t.v,
        raw_text: text,
        log_prob: logprob,
        ..Default::default()
    })
}

/// What one decision produced, ready to publish.
struct Outcome {
    sets: KeypointSets,
    candidates: ActionCandidates,
    action: Option<KeypointAction>,
    failure: Option<String>,
}

fn decide(
    planner: &mut dyn Planner,
    task: Task,
    episode: u32,
    header: Header,
    current: Frame,
    goal: Frame,
    n: usize,
) -> Result<Outcome, String> {
    let (kc, kg) = keypoint_pair(task, &current, &goal, n).map_err(|e| e.to_string())?;
    let scene = Scene {
        task,
        seed: episode as u64,
        current: &current,
        goal: &goal,
        current_keypoints: &kc,
        goal_keypoints: &kg,
        world: None,
        goal_world: None,
    };
    let decision = planner.decide(&scene);
    let sets = KeypointSets {
        header: header.clone(),
        current: keypoint_set(&header, &current, &kc),
        goal: keypoint_set(&header, &goal, &kg),
    };
    let mut candidates = ActionCandidates {
        header: header.clone(),
        episode,
        step: 0,
        candidates: Vec::new(),
        chosen: -1,
    };
    for c in planner.candidates() {
        let a = match &c.choice {
            Ok(ch) => action_msg(&header, ch, &kc, &kg, c.text.clone(), c.logprob as f64),
            Err(_) => None,
        };
        candidates
            .candidates
            .push(a.unwrap_or_else(|| KeypointAction {
                header: header.clone(),
                raw_text: c.text.clone(),
                log_prob: c.logprob as f64,
                source_u: f32::NAN,
                source_v: f32::NAN,
                target_u: f32::NAN,
                target_v: f32::NAN,
                ..Default::default()
            }));
    }
    let (action, failure) = match decision {
        Decision::Keypoints(ch) => {
            let text = crate::planner::format_answer(&ch);
            let logprob = planner
                .candidates()
                .iter()
                .filter(|c| c.choice.as_ref().ok() == Some(&ch))
                .map(|c| c.logprob as f64)
                .fold(f64::NAN, f64::max);
            match action_msg(&header, &ch, &kc, &kg, text, logprob) {
                Some(a) => (Some(a), None),
                None => (
                    None,
                    Some(format!("planner chose unknown keypoints {ch:?}")),
                ),
            }
        }
        Decision::Pixels { .. } => (
            None,
            Some("pixel decisions are not published by the node".into()),
        ),
        Decision::None(why) => (None, Some(why)),
    };
    if let Some(a) = &action {
        let idx = candidates.candidates.iter().position(|c| {
            c.source_id == a.source_id && c.target_id == a.target_id && c.source_u.is_finite()
        });
        match idx {
            Some(i) => candidates.chosen = i as i32,
            None => {
                candidates.candidates.push(a.clone());
                candidates.chosen = candidates.candidates.len() as i32 - 1;
            }
        }
    }
    Ok(Outcome {
        sets,
        candidates,
        action,
        failure,
    })
}

impl PlannerNode {
    /// A planner node that decides with `planner` (one of your own, say) instead of the
    /// config's `backend`, which is not loaded; every other setting is checked as
    /// [`Node::new`] checks it.
    pub fn with_planner(
        config: PlannerConfig,
        planner: Box<dyn Planner + Send>,
    ) -> anyhow::Result<Self> {
        Self::check(&config)?;
        Ok(Self { config, planner })
    }

    /// `new`'s checks of everything but the backend.
    fn check(config: &PlannerConfig) -> anyhow::Result<()> {
        Self::validate(config)?;
        let task = config.task.as_deref().filter(|t| !t.is_empty());
        if let Some(t) = task {
            anyhow::ensure!(
                task_of(t).is_some(),
                "task {t:?} is not one of rope, cloth, toy"
            );
        }
        anyhow::ensure!(
            config.trigger != Trigger::Goal || task.is_some(),
            "trigger: goal needs `task` (rope, cloth or toy): the goal image does not say which task it is"
        );
        Ok(())
    }

    /// The config's backend, loaded.
    fn backend(config: &PlannerConfig) -> anyhow::Result<Box<dyn Planner + Send>> {
        Ok(match config.backend {
            Backend::Correspondence => Box::new(RulePlanner(Rule::Assignment)),
            Backend::Coverage => Box::new(RulePlanner(Rule::Coverage)),
            Backend::Random => Box::new(RandomPlanner),
            Backend::Vlm => {
                // An empty model path (a launch file's `model:=` default) is none too: it
                // was read as a folder and said "loading model : config.json: No such
                // file" before session 52.
                let dir = config
                    .model
                    .as_ref()
                    .filter(|p| !p.as_os_str().is_empty())
                    .ok_or_else(|| anyhow::anyhow!("backend vlm needs `model` (a model folder)"))?;
                // An empty adapter path (a launch file's default) means none.
                let adapter = config
                    .adapter
                    .as_deref()
                    .filter(|p| !p.as_os_str().is_empty());
                Box::new(
                    VlmPlanner::load_with_adapter(dir, adapter, config.sampling.clone())
                        .map_err(|e| anyhow::anyhow!("loading model {}: {e}", dir.display()))?,
                )
            }
        })
    }
}

impl Node for PlannerNode {
    const KIND: &'static str = "planner";
    type Config = PlannerConfig;
    /// Applied from the next decision on; the model, adapter, device and topics are read
    /// at start.
    const LIVE: &'static [&'static str] = &[
        "keypoints",
        "verify.wait",
        "verify.timeout_s",
        "sampling.k",
        "sampling.temperature",
        "sampling.top_p",
        "sampling.top_k",
        "sampling.max_new_tokens",
        "sampling.attempts",
        "sampling.seed",
        "sampling.guided",
        "sampling.constrained",
    ];

    fn declared(config: &PlannerConfig) -> Option<serde_yaml::Value> {
        serde_yaml::to_value(config).ok()
    }

    fn validate(config: &PlannerConfig) -> anyhow::Result<()> {
        anyhow::ensure!(config.keypoints > 0, "keypoints must be > 0");
        if let Err((field, rule)) = config.sampling.check() {
            anyhow::bail!("sampling.{field} {rule}");
        }
        anyhow::ensure!(
            // Bounded: 1e20 s passed and panicked in Duration::from_secs_f64 at the first
            // verified decision.
            config.verify.timeout_s.is_finite()
                && (0.0..=3600.0).contains(&config.verify.timeout_s),
            "verify.timeout_s must be between 0 and 3600 s"
        );
        Ok(())
    }

    fn new(config: PlannerConfig) -> anyhow::Result<Self> {
        Self::check(&config)?;
        let planner = Self::backend(&config)?;
        Ok(Self { config, planner })
    }

    async fn run<B: Bus>(self, ctx: NodeContext<B>) -> anyhow::Result<()> {
        let t = &self.config.topics;
        let mut images = ctx.bus.subscribe::<Image>(&t.image, Qos::stream(1))?;
        // Latched or volatile goal publishers alike (an rclpy `create_publisher(Image,
        // "/goal/image", 10)` is volatile; before session 47 only a latched one was heard).
        let mut goals = ctx.bus.subscribe_any_durability::<Image>(&t.goal, 1)?;
        let mut events = ctx
            .bus
            .subscribe::<EpisodeEvent>(&t.episode, Qos::keep_last(100))?;
        let sets_pub = ctx
            .bus
            .publisher::<KeypointSets>(&t.keypoint_sets, Qos::keep_last(10))?;
        let cand_pub = ctx
            .bus
            .publisher::<ActionCandidates>(&t.candidates, Qos::keep_last(10))?;
        let action_pub = ctx
            .bus
            .publisher::<KeypointAction>(&t.action, Qos::keep_last(1))?;
        let event_pub = ctx
            .bus
            .publisher::<EpisodeEvent>(&t.episode, Qos::keep_last(100))?;
        let mut scores = ctx
            .bus
            .subscribe::<crate::msg::dreamplan::VerifierScores>(&t.scores, Qos::keep_last(10))?;
        let mut trainer = ctx
            .bus
            .subscribe::<crate::msg::dreamplan::TrainerStatus>(&t.trainer, Qos::latched())?;
        let mut adapter = self
            .config
            .adapter
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        let mut param_changes = ctx.params.watch();
        // The stamp of the trainer status whose adapter was loaded: a run trained again into
        // the same folder is another status (stamp) with the same path, and is loaded too
        // (before session 42 the path alone was compared, and it was not).
        let mut adapter_stamp: Option<(i32, u32)> = None;
        let mut n = self.config.keypoints;
        let mut verify = self.config.verify.clone();
        // The sampling settings in force, live changes included: a reloaded planner takes
        // these, not the ones the node started with.
        let mut sampling = self.config.sampling.clone();
        let mut planner = Some(self.planner);
        let mut goal = GoalSlot::default();
        // Episode waiting for its first image: (task, episode number, reset stamp).
        let mut pending: Option<(Task, u32, (i32, u32))> = None;
        // The executor's last report: an action started and not yet finished or failed.
        let mut busy = false;
        // When the arm last became idle: an image from before shows it moving.
        let mut idle_at: (i32, u32) = (i32::MIN, 0);
        // Frames skipped in a row as older than the reset or the idle time.
        let mut skips = SkipWatch::default();
        // Whether an executor has reported an action's start, end or failure on this graph.
        let mut executor_seen = false;
        // An action published and not yet reported started by the executor (the arm counts
        // as busy meanwhile): until when it does.
        let mut awaiting_start: Option<tokio::time::Instant> = None;
        // Candidate sets sent to the verifier: the number of the last, in its `step`.
        let mut sets_sent: u32 = 0;
        // Goal-triggered episodes: the next episode number.
        let next_episode = std::sync::atomic::AtomicU32::new(0);
        let goal_task = self.config.task.clone().unwrap_or_default();
        // A goal image, from whichever branch took it: held as the goal and, with `trigger:
        // goal`, announced as a new episode unless it is the goal held already (a latched
        // sample delivered again is not a new request). True when it was announced. The
        // reset comes back through `events` like anyone's.
        let take_goal = |m: &Image, goal: &mut GoalSlot| -> anyhow::Result<bool> {
            let f = match frame_of(m) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(node = %ctx.name, "goal image refused: {e}");
                    goal.refuse(e);
                    return Ok(false);
                }
            };
            let new = goal.offer((m.header.stamp.sec, m.header.stamp.nanosec), f);
            if !new || self.config.trigger != Trigger::Goal {
                return Ok(false);
            }
            let episode = next_episode.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            event_pub.publish(EpisodeEvent {
                header: Header {
                    stamp: ctx.bus.clock().now(),
                    frame_id: String::new(),
                },
                episode,
                task: goal_task.clone(),
                event: EpisodeEvent::EVENT_RESET.into(),
                score: f64::NAN,
                detail: "new goal image".into(),
                ..Default::default()
            })?;
            Ok(true)
        };
        loop {
            // In this order: the stop, then the events, before any image is decided on.
            // Unbiased, an image could win over a newer reset or an `action_started`
            // queued behind a long decision, and be decided as the older episode (with a
            // frame of the arm moving), then the newer reset again (a review finding,
            // session 52).
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => return Ok(()),
                m = events.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    // The executor says when the arm is idle: `action_finished`, or a `failed`
                    // that ends the motion (e-stop, the controller) or refuses an action of
                    // an idle arm. Not its refusal of an action because the arm still moves,
                    // nor a `scored` (on a real arm the evaluation may score while the arm
                    // retreats; in the built-in world the executor reports the arm freed at
                    // the episode's end itself). Before session 42 both counted as idle:
                    // the next reset was decided at once, refused as busy, and never again.
                    let refused_busy = m.event == EpisodeEvent::EVENT_FAILED
                        && m.detail.contains(super::executor::BUSY);
                    // The planner's own `failed` (no action) says nothing of the arm: read
                    // after a later decision's action, it cleared that action's start-wait.
                    if m.event == EpisodeEvent::EVENT_FAILED && m.detail.starts_with(OWN_FAILURE) {
                        continue;
                    }
                    match m.event.as_str() {
                        EpisodeEvent::EVENT_ACTION_STARTED => {
                            busy = true;
                            executor_seen = true;
                            awaiting_start = None;
                        }
                        EpisodeEvent::EVENT_ACTION_FINISHED | EpisodeEvent::EVENT_FAILED
                            if !refused_busy =>
                        {
                            if busy {
                                idle_at = (m.header.stamp.sec, m.header.stamp.nanosec);
                            }
                            if m.event == EpisodeEvent::EVENT_ACTION_FINISHED {
                                executor_seen = true;
                            }
                            busy = false;
                            awaiting_start = None;
                        }
                        EpisodeEvent::EVENT_FAILED => {
                            // Refused because the arm moves: this action will not start, and
                            // the arm stays busy until the running motion ends.
                            executor_seen = true;
                            awaiting_start = None;
                        }
                        _ => {}
                    }
                    if m.event == EpisodeEvent::EVENT_RESET {
                        let stamp = (m.header.stamp.sec, m.header.stamp.nanosec);
                        // A reset stamped before the arm last became idle, with the arm idle:
                        // the clock went back (a Gazebo world reset, `ros2 bag play --loop`).
                        // Every frame would be "older" than that idle time until the clock
                        // came round again; before session 52 nothing was decided meanwhile.
                        // Unstamped (`ros2 topic pub` sends 0) or a little earlier (clocks of
                        // two hosts) is not a clock that went back: the idle time stands.
                        let secs = |t: (i32, u32)| f64::from(t.0) + f64::from(t.1) * 1e-9;
                        if stamp != (0, 0) && !busy && secs(idle_at) - secs(stamp) > CLOCK_BACK_S {
                            tracing::info!(node = %ctx.name, "reset stamped {}.{:09} s, before the arm's last idle time {}.{:09} s: the clock went back; deciding on frames of the new time", stamp.0, stamp.1, idle_at.0, idle_at.1);
                            idle_at = (i32::MIN, 0);
                        }
                        match task_of(&m.task) {
                            Some(task) => {
                                if busy && self.config.wait_idle {
                                    tracing::info!(node = %ctx.name, "episode {}: the arm is busy; deciding once it is idle", m.episode);
                                }
                                pending = Some((task, m.episode, stamp))
                            }
                            // Said as a `failed` event of that episode too (only a log line
                            // before session 52: a script saw a reset that never ended).
                            None => {
                                tracing::warn!(node = %ctx.name, "reset of unknown task {:?} ignored", m.task);
                                event_pub.publish(EpisodeEvent {
                                    header: Header { stamp: ctx.bus.clock().now(), frame_id: String::new() },
                                    episode: m.episode,
                                    task: m.task.clone(),
                                    event: EpisodeEvent::EVENT_FAILED.into(),
                                    score: f64::NAN,
                                    detail: format!("{OWN_FAILURE}reset of unknown task {:?} (rope, cloth or toy)", m.task),
                                    ..Default::default()
                                })?;
                            }
                        }
                    }
                }
                m = goals.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    take_goal(&m, &mut goal)?;
                }
                m = trainer.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    let fresh = Some(std::path::PathBuf::from(&m.output));
                    if self.config.backend != Backend::Vlm
                        || m.job != "orpo"
                        || m.state != crate::msg::dreamplan::TrainerStatus::STATE_DONE
                        || m.output.is_empty()
                        || (fresh == adapter
                            && adapter_stamp == Some((m.header.stamp.sec, m.header.stamp.nanosec)))
                    {
                        continue;
                    }
                    let dir = self.config.model.clone().expect("backend vlm has a model");
                    let (path, sampling) = (fresh.clone().unwrap_or_default(), sampling.clone());
                    let loading = tokio::task::spawn_blocking(move || {
                        VlmPlanner::load_with_adapter(&dir, Some(&path), sampling)
                    });
                    let loaded = tokio::select! {
                        l = loading => l?,
                        _ = ctx.shutdown.cancelled() => return Ok(()),
                    };
                    match loaded {
                        Ok(p) => {
                            tracing::info!(node = %ctx.name, "loaded the trainer's adapter {}", m.output);
                            planner = Some(Box::new(p));
                            adapter = fresh;
                            adapter_stamp = Some((m.header.stamp.sec, m.header.stamp.nanosec));
                        }
                        Err(e) => tracing::warn!(node = %ctx.name, "the trainer's adapter {} not loaded, keeping the current one: {e}", m.output),
                    }
                }
                _ = tokio::time::sleep_until(awaiting_start.unwrap_or_else(tokio::time::Instant::now)), if awaiting_start.is_some() => {
                    tracing::warn!(node = %ctx.name, "the executor did not report the start of the last action within {START_TIMEOUT_S} s; deciding without waiting for it");
                    awaiting_start = None;
                    busy = false;
                }
                m = images.recv(), if pending.is_some() && !(busy && self.config.wait_idle) => {
                    let Some(m) = m else { return Ok(()) };
                    // The goal of this episode may be queued behind the image: take it first.
                    let mut announced = false;
                    while let Some(g) = goals.try_recv() {
                        announced |= take_goal(&g, &mut goal)?;
                    }
                    if announced {
                        // A new goal asked for a new episode: its reset (on its way back
                        // through `events`) supersedes the pending one, and this image,
                        // taken before it, is not decided on.
                        pending = None;
                        continue;
                    }
                    if goal.goal.is_none() && goal.refused.is_none() {
                        // Wait for the latched goal; the next image retries.
                        continue;
                    }
                    // A frame taken before the reset shows the previous episode's world, one
                    // taken before the arm became idle shows it moving (either may wait in
                    // the queue): decide on the first frame after both.
                    let reset_at = pending.map(|p| p.2).unwrap_or_default().max(idle_at);
                    if (m.header.stamp.sec, m.header.stamp.nanosec) < reset_at {
                        // Every frame skipped for seconds: the camera's stamps are on another
                        // clock than the reset's or the executor's (a driver on another
                        // host, a device time base). It waited without a word before
                        // session 52.
                        if skips.skipped(std::time::Instant::now()) {
                            tracing::warn!(node = %ctx.name, "frames keep coming stamped before the reset or the arm's idle time (this one {}.{:09} s, waiting for {}.{:09} s): is the camera's driver on another clock than the executor and the reset (another host, a device time base, use_sim_time on one side only)?", m.header.stamp.sec, m.header.stamp.nanosec, reset_at.0, reset_at.1);
                        }
                        continue;
                    }
                    skips = SkipWatch::default();
                    let Some((task, episode, _)) = pending.take() else { continue };
                    let header = m.header.clone();
                    let fail = |detail: String| EpisodeEvent {
                        header: Header { stamp: ctx.bus.clock().now(), frame_id: String::new() },
                        episode,
                        task: format!("{task:?}").to_lowercase(),
                        event: EpisodeEvent::EVENT_FAILED.into(),
                        score: f64::NAN,
                        detail: format!("{OWN_FAILURE}{detail}"),
                        ..Default::default()
                    };
                    let (current, goal_frame) = match (frame_of(&m), goal.goal.clone()) {
                        (Ok(c), Some(g)) => (c, g),
                        (Err(e), _) => { event_pub.publish(fail(e))?; continue }
                        (_, None) => {
                            let why = goal.refused.as_ref().map_or("no goal image yet".into(), |r| format!("goal image: {r}"));
                            event_pub.publish(fail(why))?;
                            continue
                        }
                    };
                    if (goal_frame.width, goal_frame.height) != (current.width, current.height) {
                        // The keypoint geometry and the rules compare positions across the
                        // two images: a goal from another camera or crop would be planned
                        // toward in the wrong place.
                        event_pub.publish(fail(format!(
                            "the goal image is {}×{} but the camera's is {}×{}: a goal image must come from the same camera view",
                            goal_frame.width, goal_frame.height, current.width, current.height
                        )))?;
                        continue;
                    }
                    let mut p = planner.take().expect("planner is returned after every decision");
                    if let Some(c) = ctx.params.changed::<PlannerConfig>(&mut param_changes) {
                        tracing::info!(node = %ctx.name, "parameters changed: keypoints, verify and sampling from the parameter services apply from this decision on");
                        n = c.keypoints;
                        verify = c.verify;
                        p.set_sampling(&c.sampling);
                        sampling = c.sampling.clone();
                    }
                    let halt = p.halt_flag();
                    let mut deciding = tokio::task::spawn_blocking(move || {
                        let r = decide(p.as_mut(), task, episode, header, current, goal_frame, n);
                        (p, r)
                    });
                    // A stop asked for mid-decision halts a planner that can be halted
                    // (the VLM checks between model steps) and waits for it to return; one
                    // that cannot is left to the runner's grace. Before session 44 the node
                    // saw the stop only after the decision, so Ctrl-C waited for it.
                    let (p, result) = tokio::select! {
                        r = &mut deciding => r?,
                        _ = ctx.shutdown.cancelled() => {
                            if let Some(h) = &halt {
                                h.store(true, std::sync::atomic::Ordering::Relaxed);
                                tracing::info!(node = %ctx.name, "stopping: the decision under way is halted");
                            }
                            let _ = deciding.await;
                            return Ok(());
                        }
                    };
                    planner = Some(p);
                    match result {
                        Ok(mut out) => {
                            sets_pub.publish(out.sets.clone())?;
                            if verify.wait && out.action.is_some() {
                                // Candidates go out unchosen; the verifier's best is executed.
                                let own = out.candidates.chosen;
                                out.candidates.chosen = -1;
                                // Each set carries its own number in `step`, which the verifier
                                // echoes: an answer that came too late for an earlier set (its
                                // stamp may be the same, 0 from an unstamped camera) is never
                                // taken for this one. Before session 43 the stamp alone was
                                // compared, and a late answer's index chose from another list.
                                sets_sent = sets_sent.wrapping_add(1);
                                out.candidates.step = sets_sent;
                                while scores.try_recv().is_some() {}
                                let key = (out.candidates.header.stamp.clone(), out.candidates.episode, sets_sent, out.candidates.candidates.len());
                                cand_pub.publish(out.candidates.clone())?;
                                let wait = std::time::Duration::from_secs_f64(verify.timeout_s.max(0.0));
                                let waiting = tokio::time::timeout(wait, async {
                                    while let Some(s) = scores.recv().await {
                                        if (s.header.stamp.clone(), s.episode, s.step, s.score.len()) == key {
                                            return Some(s);
                                        }
                                    }
                                    None
                                });
                                // A stop while waiting publishes nothing (before session 52 the
                                // wait ran out its timeout, then an action went out after the
                                // stop under `ros2 launch`).
                                let answer = tokio::select! {
                                    a = waiting => a.ok().flatten(),
                                    _ = ctx.shutdown.cancelled() => return Ok(()),
                                };
                                let best = answer.as_ref().map_or(-1, |s| s.best);
                                let pick = if best >= 0 && (best as usize) < out.candidates.candidates.len() {
                                    best
                                } else {
                                    tracing::warn!(node = %ctx.name, "no verifier choice (timeout, no candidate scored, or all scored the same); executing the planner's own");
                                    own
                                };
                                if pick >= 0 {
                                    out.action = Some(out.candidates.candidates[pick as usize].clone());
                                }
                            } else {
                                cand_pub.publish(out.candidates)?;
                            }
                            if let Some(a) = out.action {
                                action_pub.publish(a)?;
                                if executor_seen && self.config.wait_idle {
                                    busy = true;
                                    awaiting_start = Some(
                                        tokio::time::Instant::now()
                                            + std::time::Duration::from_secs_f64(START_TIMEOUT_S),
                                    );
                                }
                            }
                            if let Some(f) = out.failure {
                                tracing::warn!(node = %ctx.name, "no action: {f}");
                                event_pub.publish(fail(f))?;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(node = %ctx.name, "no action: {e}");
                            event_pub.publish(fail(e))?;
                        }
                    }
                }
            }
        }
    }
}

/// Frames skipped in a row: says when to warn (once, after [`SkipWatch::WARN_AFTER_S`] of
/// skipping).
#[derive(Default)]
struct SkipWatch {
    since: Option<std::time::Instant>,
    said: bool,
}

impl SkipWatch {
    const WARN_AFTER_S: f64 = 2.0;

    /// A frame was skipped at `now`: whether to warn now.
    fn skipped(&mut self, now: std::time::Instant) -> bool {
        let since = *self.since.get_or_insert(now);
        let due = !self.said && (now - since).as_secs_f64() >= Self::WARN_AFTER_S;
        self.said |= due;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_skipped_for_seconds_are_said_once() {
        let t0 = std::time::Instant::now();
        let at = |s: f64| t0 + std::time::Duration::from_secs_f64(s);
        let mut w = SkipWatch::default();
        assert!(!w.skipped(at(0.0)));
        assert!(!w.skipped(at(1.9)));
        assert!(w.skipped(at(2.1)));
        assert!(!w.skipped(at(5.0)));
        // A frame taken resets it (the node starts a new watch).
        let mut w = SkipWatch::default();
        assert!(!w.skipped(at(10.0)));
        assert!(w.skipped(at(12.0)));
    }

    fn frame(value: u8) -> Frame {
        Frame {
            width: 2,
            height: 1,
            rgb: vec![value; 6],
            depth: Vec::new(),
        }
    }

    /// What tells a new goal request from a latched sample delivered again: the stamp and
    /// the pixels, whichever branch of the node took the image.
    #[test]
    fn a_goal_is_new_unless_both_its_stamp_and_its_pixels_are_the_held_ones() {
        let mut slot = GoalSlot::default();
        assert!(slot.offer((1, 0), frame(7)), "the first goal");
        assert!(!slot.offer((1, 0), frame(7)), "the same goal again");
        assert!(slot.offer((2, 0), frame(7)), "a new stamp");
        assert!(
            slot.offer((2, 0), frame(9)),
            "new pixels under the same stamp"
        );
        assert!(!slot.offer((2, 0), frame(9)));
        assert_eq!(slot.goal.as_ref().map(|g| g.rgb[0]), Some(9));
        let mut wider = frame(9);
        wider.width = 1;
        wider.rgb.truncate(3);
        assert!(slot.offer((2, 0), wider), "another size");
    }

    /// A latched goal read through several readers: the second copy of goal A, arriving after
    /// goal B's first, neither counts as new nor replaces B; A offered again after
    /// `GOAL_ECHO_S` (a bag played in a loop) is a new request.
    #[test]
    fn a_late_copy_of_an_earlier_goal_does_not_replace_the_newer_one() {
        let mut slot = GoalSlot::default();
        assert!(slot.offer((1, 0), frame(7)), "goal A");
        assert!(slot.offer((2, 0), frame(9)), "goal B");
        assert!(!slot.offer((1, 0), frame(7)), "A's late copy");
        assert!(!slot.offer((2, 0), frame(9)), "B's copy");
        assert_eq!(slot.stamp, Some((2, 0)));
        assert_eq!(slot.goal.as_ref().map(|g| g.rgb[0]), Some(9), "B stays");
        std::thread::sleep(std::time::Duration::from_secs_f64(GOAL_ECHO_S + 0.05));
        assert!(slot.offer((1, 0), frame(7)), "A again, a loop later");
        assert_eq!(slot.goal.as_ref().map(|g| g.rgb[0]), Some(7));
        // A's first copy pushed out of a one-deep queue: only its late copy comes, after
        // B. Stamped before B, it does not replace B.
        let mut slot = GoalSlot::default();
        assert!(slot.offer((1, 0), frame(7)));
        std::thread::sleep(std::time::Duration::from_secs_f64(GOAL_ECHO_S + 0.05));
        assert!(slot.offer((3, 0), frame(9)), "B");
        assert!(!slot.offer((2, 0), frame(8)), "a copy stamped before B");
        assert_eq!(slot.goal.as_ref().map(|g| g.rgb[0]), Some(9));
    }
}
