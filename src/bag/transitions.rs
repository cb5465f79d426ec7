//! DreamPlan transitions from a bag, streamed: what the world-model trainer learns from.
//!
//! # How episodes are delimited in a bag
//!
//! Record these topics (names configurable in [`TransitionTopics`]):
//!
//! | topic | type | role |
//! |---|---|---|
//! | `/dreamplan/episode` | `dreamplan/msg/EpisodeEvent` | `reset` starts episode *e* (its `task` names the task); `action_started` / `action_finished` bracket step *s*; `scored` gives the step's score; `failed` aborts it |
//! | `/camera/image_raw` | `sensor_msgs/msg/Image` | camera frames |
//! | `/goal/image` | `sensor_msgs/msg/Image` (latched) | the episode's goal image, published after `reset` or just before it (as the built-in simulator does: a goal that comes after the last step's events is the next episode's) |
//! | `/planner/action` | `dreamplan/msg/KeypointAction` | the action chosen for the step, published before `action_started` |
//! | `/joint_states` | `sensor_msgs/msg/JointState` | arm state while the action runs |
//! | `/camera/object_only` (optional) | `sensor_msgs/msg/Image` | object-only frames (arm masked out) |
//!
//! A transition is emitted for every `action_started`: the observation is the last camera
//! frame before it and after the episode's `reset` (none if the episode showed none: a
//! frame from before the reset is the previous episode's world), the action the last
//! `/planner/action` before it, joint states and
//! frames are those between `action_started` and `action_finished`, frames after are
//! those up to `after_window` later (or until the next event), and the score comes from
//! the `scored` event of the same episode and step. Your own robot's bags become training
//! data by publishing the same events around each executed action.
//!
//! Only one transition's frames are held at a time; the bag is never loaded whole.

use std::collections::BTreeMap;

use super::{BagError, BagReader, Filter, Messages};
use crate::msg::prelude::*;

/// Topic names the transition view reads.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransitionTopics {
    /// Episode events.
    pub episode: String,
    /// Camera frames.
    pub camera: String,
    /// Goal image.
    pub goal: String,
    /// Chosen actions.
    pub action: String,
    /// Joint states.
    pub joint_states: String,
    /// Object-only frames (optional; absent topics give empty lists).
    pub object_only: String,
    /// How long after `action_finished` frames still belong to the transition, seconds.
    pub after_window_s: f64,
}

impl Default for TransitionTopics {
    fn default() -> Self {
        Self {
            episode: "/dreamplan/episode".into(),
            camera: "/camera/image_raw".into(),
            goal: "/goal/image".into(),
            action: "/planner/action".into(),
            joint_states: "/joint_states".into(),
            object_only: "/camera/object_only".into(),
            after_window_s: 1.0,
        }
    }
}

/// One executed action with what the world model needs to learn its outcome.
#[derive(Debug, Clone, Default)]
pub struct Transition {
    /// Episode number.
    pub episode: u32,
    /// Step within the episode.
    pub step: u32,
    /// Task name from the `reset` event.
    pub task: String,
    /// The episode's goal image.
    pub goal: Option<Image>,
    /// Last camera frame before the action started, with its log time (ns).
    pub observation: Option<(u64, Image)>,
    /// The last object-only frame before `action_started` (log time, image): the
    /// observation without the arm.
    pub object_observation: Option<(u64, Image)>,
    /// The action that was executed.
    pub action: Option<KeypointAction>,
    /// Joint states while it ran.
    pub joint_states: Vec<(u64, JointState)>,
    /// Camera frames while it ran.
    pub frames_during: Vec<(u64, Image)>,
    /// Camera frames after it finished (within the window).
    pub frames_after: Vec<(u64, Image)>,
    /// Object-only frames while it ran and after.
    pub object_frames: Vec<(u64, Image)>,
    /// The step's score, if it was scored.
    pub score: Option<f64>,
    /// Whether the step was reported failed.
    pub failed: bool,
    /// Log times of action start and finish (ns).
    pub started: u64,
    /// `None` when the bag ended (or the next step began) before `action_finished`.
    pub finished: Option<u64>,
}

/// Counts of what the view could not use.
#[derive(Debug, Default, Clone)]
pub struct TransitionStats {
    /// Messages that failed to decode, per topic.
    pub undecodable: BTreeMap<String, u64>,
    /// Damage that ended reading early.
    pub damage: Option<String>,
}

/// Streaming iterator of transitions; see the module doc.
pub struct Transitions<'a> {
    messages: Messages<'a>,
    topics: TransitionTopics,
    episode: u32,
    task: String,
    goal: Option<Image>,
    /// Whether the goal came after the last step's events: then it is the next episode's
    /// (the built-in simulator publishes it just before the reset) and the reset keeps it.
    goal_fresh: bool,
    last_frame: Option<(u64, Image)>,
    last_object_frame: Option<(u64, Image)>,
    last_action: Option<KeypointAction>,
    open: Option<Transition>,
    ready: std::collections::VecDeque<Transition>,
    /// The finished transition: collects frames within the window after `action_finished`
    /// and its score, until the next step or episode begins.
    settling: Option<Transition>,
    /// Counters of skipped input.
    pub stats: TransitionStats,
    done: bool,
    /// The damage that ended the bag, given after the transitions it closed.
    damage: Option<BagError>,
}

impl BagReader {
    /// DreamPlan transitions of this bag, streamed in log-time order.
    pub fn transitions(&self, topics: TransitionTopics) -> Transitions<'_> {
        let filter = Filter::topics([
            topics.episode.clone(),
            topics.camera.clone(),
            topics.goal.clone(),
            topics.action.clone(),
            topics.joint_states.clone(),
            topics.object_only.clone(),
        ]);
        Transitions {
            messages: self.messages(&filter),
            topics,
            episode: 0,
            task: String::new(),
            goal: None,
            goal_fresh: false,
            last_frame: None,
            last_object_frame: None,
            last_action: None,
            open: None,
            ready: Default::default(),
            settling: None,
            stats: Default::default(),
            done: false,
            damage: None,
        }
    }
}

impl Transitions<'_> {
    fn window_ns(&self) -> u64 {
        (self.topics.after_window_s.max(0.0) * 1e9) as u64
    }

    fn close_settling(&mut self) {
        if let Some(t) = self.settling.take() {
            self.ready.push_back(t);
        }
    }

    fn close_open(&mut self) {
        if let Some(t) = self.open.take() {
            self.close_settling();
            self.settling = Some(t);
        }
    }

    fn on_event(&mut self, time: u64, ev: EpisodeEvent) {
        if ev.event != EpisodeEvent::EVENT_RESET {
            self.goal_fresh = false;
        }
        match ev.event.as_str() {
            EpisodeEvent::EVENT_RESET => {
                self.close_open();
                self.close_settling();
                self.episode = ev.episode;
                self.task = ev.task;
                if !self.goal_fresh {
                    self.goal = None;
                }
                self.last_action = None;
                // What the camera showed before the reset is the previous episode's world:
                // a step of this episode that saw no frame of its own has no observation.
                self.last_frame = None;
                self.last_object_frame = None;
            }
            EpisodeEvent::EVENT_ACTION_STARTED => {
                self.close_open();
                self.close_settling();
                self.open = Some(Transition {
                    episode: ev.episode,
                    step: ev.step,
                    task: if ev.task.is_empty() {
                        self.task.clone()
                    } else {
                        ev.task
                    },
                    goal: self.goal.clone(),
                    observation: self.last_frame.clone(),
                    object_observation: self.last_object_frame.clone(),
                    action: self.last_action.take(),
                    started: time,
                    ..Default::default()
                });
            }
            EpisodeEvent::EVENT_ACTION_FINISHED => {
                if let Some(mut t) = self.open.take() {
                    t.finished = Some(time);
                    self.close_settling();
                    self.settling = Some(t);
                }
            }
            EpisodeEvent::EVENT_SCORED | EpisodeEvent::EVENT_FAILED => {
                let failed = ev.event == EpisodeEvent::EVENT_FAILED;
                // A failure ends the running action only: one of a finished action is the
                // refusal of a later action that never started (busy, the table check),
                // which marked the finished one failed before session 52.
                let settling = if failed { None } else { self.settling.as_mut() };
                let target = [self.open.as_mut(), settling]
                    .into_iter()
                    .flatten()
                    .find(|t| t.episode == ev.episode && t.step == ev.step);
                if let Some(t) = target {
                    if failed {
                        t.failed = true;
                    } else {
                        t.score = Some(ev.score);
                    }
                }
                // A failed running action (an e-stop, the controller's error: no
                // `action_finished` follows) is over: closed now. Before session 53 it
                // stayed open and kept every frame and joint state until the next action or
                // reset, minutes of images held in memory on an e-stopped arm (a review
                // finding).
                if failed
                    && self
                        .open
                        .as_ref()
                        .is_some_and(|t| t.failed && t.episode == ev.episode && t.step == ev.step)
                {
                    self.close_open();
                    self.close_settling();
                }
            }
            _ => {}
        }
    }
}

impl Iterator for Transitions<'_> {
    type Item = Result<Transition, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(t) = self.ready.pop_front() {
                return Some(Ok(t));
            }
            if self.done {
                return self.damage.take().map(Err);
            }
            let rec = match self.messages.next() {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    // The transitions the damage closed come out first, then the damage
                    // once: before session 52 the error came first, and a reader that
                    // stops at an error (every caller) lost them all.
                    self.stats.damage = Some(e.to_string());
                    self.done = true;
                    self.close_open();
                    self.close_settling();
                    self.damage = Some(e);
                    continue;
                }
                None => {
                    self.done = true;
                    self.close_open();
                    self.close_settling();
                    continue;
                }
            };
            let time = rec.log_time;
            // A finished transition keeps collecting frames within the window, and waits for
            // its score until the next step or episode begins.
            let in_window = self
                .settling
                .as_ref()
                .is_some_and(|t| time <= t.finished.unwrap_or(t.started) + self.window_ns());
            let topic = rec.topic.to_string();
            let t = &self.topics;
            let result: Result<(), BagError> = if topic == t.episode {
                rec.decode::<EpisodeEvent>()
                    .map(|ev| self.on_event(time, ev))
            } else if topic == t.camera {
                rec.decode::<Image>().map(|img| {
                    if let Some(open) = self.open.as_mut() {
                        open.frames_during.push((time, img.clone()));
                    } else if let Some(s) = self.settling.as_mut().filter(|_| in_window) {
                        s.frames_after.push((time, img.clone()));
                    }
                    self.last_frame = Some((time, img));
                })
            } else if topic == t.object_only {
                rec.decode::<Image>().map(|img| {
                    if let Some(tr) = self
                        .open
                        .as_mut()
                        .or(self.settling.as_mut().filter(|_| in_window))
                    {
                        tr.object_frames.push((time, img.clone()));
                    }
                    self.last_object_frame = Some((time, img));
                })
            } else if topic == t.goal {
                rec.decode::<Image>().map(|img| {
                    self.goal = Some(img);
                    self.goal_fresh = true;
                })
            } else if topic == t.action {
                rec.decode::<KeypointAction>()
                    .map(|a| self.last_action = Some(a))
            } else if topic == t.joint_states {
                rec.decode::<JointState>().map(|js| {
                    if let Some(open) = self.open.as_mut() {
                        open.joint_states.push((time, js));
                    }
                })
            } else {
                Ok(())
            };
            if result.is_err() {
                *self.stats.undecodable.entry(topic).or_insert(0) += 1;
            }
        }
    }
}
