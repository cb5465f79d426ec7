//! The planner node on bad input: a wrong encoding, a buffer that does not match its size,
//! an image with no object, more keypoints than the object has pixels. Each ends the
//! episode's decision with a `failed` event whose detail says what was wrong, no action is
//! published, and the node goes on to decide the next episode.

use std::time::Duration;

use dreamplan::bus::{Bus, LocalBus, Qos, Subscriber};
use dreamplan::msg::prelude::*;
use dreamplan::nodes::planner::{PlannerConfig, PlannerNode};
use dreamplan::nodes::{Node, NodeContext};
use dreamplan::planner::baselines::coverage_choice;
use dreamplan::planner::eval::{observe, EvalConfig};
use dreamplan::render::{render, scene, RenderMode, RenderOptions};
use dreamplan::sim::tasks::Task;
use tokio_util::sync::CancellationToken;

const SIZE: u32 = 96;

fn image(encoding: &str, width: u32, height: u32, data: Vec<u8>) -> Image {
    Image {
        encoding: encoding.into(),
        width,
        height,
        step: width * 3,
        data,
        ..Default::default()
    }
}

fn reset(episode: u32) -> EpisodeEvent {
    EpisodeEvent {
        episode,
        task: "rope".into(),
        event: EpisodeEvent::EVENT_RESET.into(),
        ..Default::default()
    }
}

async fn next_failed(events: &mut Subscriber<EpisodeEvent>) -> EpisodeEvent {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("event in time")
            .expect("bus open");
        if e.event == EpisodeEvent::EVENT_FAILED {
            return (*e).clone();
        }
    }
}

struct Rig {
    bus: LocalBus,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    events: Subscriber<EpisodeEvent>,
    actions: Subscriber<KeypointAction>,
    event_pub: dreamplan::bus::Publisher<EpisodeEvent>,
    image_pub: dreamplan::bus::Publisher<Image>,
}

async fn rig(keypoints: usize) -> Rig {
    rig_with(PlannerConfig {
        keypoints,
        ..Default::default()
    })
    .await
}

async fn rig_with(config: PlannerConfig) -> Rig {
    rig_with_params(config, dreamplan::nodes::params::LiveParams::fixed()).await
}

async fn rig_with_params(
    config: PlannerConfig,
    params: std::sync::Arc<dreamplan::nodes::params::LiveParams>,
) -> Rig {
    rig_node(PlannerNode::new(config).unwrap(), params).await
}

async fn rig_node(
    node: PlannerNode,
    params: std::sync::Arc<dreamplan::nodes::params::LiveParams>,
) -> Rig {
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let events = bus
        .subscribe::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let actions = bus
        .subscribe::<KeypointAction>("/planner/action", Qos::keep_last(10))
        .unwrap();
    let ctx = NodeContext {
        name: "planner".into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params,
    };
    let task = tokio::spawn(node.run(ctx));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The goal image, latched, as the sim publishes it.
    let goal_pub = bus
        .publisher::<Image>("/goal/image", Qos::latched())
        .unwrap();
    goal_pub
        .publish(image("rgb8", SIZE, SIZE, goal_rgb()))
        .unwrap();
    let event_pub = bus
        .publisher::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let image_pub = bus
        .publisher::<Image>("/camera/image_raw", Qos::keep_last(1))
        .unwrap();
    Rig {
        bus,
        stop,
        task,
        events,
        actions,
        event_pub,
        image_pub,
    }
}

impl Rig {
    async fn episode(&mut self, n: u32, img: Image) {
        self.event_pub.publish(reset(n)).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.image_pub.publish(img).unwrap();
    }

    async fn finish(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        drop(self.bus);
    }
}

/// The scene every test here decides on: rope, seed 3, four keypoints.
fn rope_scene() -> dreamplan::planner::eval::Observation {
    observe(
        Task::Rope,
        3,
        &EvalConfig {
            size: SIZE,
            keypoints: 4,
        },
    )
}

fn current_rgb() -> Vec<u8> {
    rope_scene().current.rgb
}

fn goal_rgb() -> Vec<u8> {
    rope_scene().goal_frame.rgb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_are_failed_events_and_the_node_keeps_deciding() {
    let mut r = rig(8).await;
    let good = current_rgb();

    // An encoding it cannot read is refused by name.
    r.episode(1, image("yuv422", SIZE, SIZE, good.clone()))
        .await;
    let e = next_failed(&mut r.events).await;
    assert_eq!(e.episode, 1);
    assert_eq!(
        e.detail,
        "planner: image encoding \"yuv422\" is not rgb8, bgr8, rgba8 or bgra8"
    );

    // A buffer that does not match width × height × 3.
    r.episode(
        2,
        image("rgb8", SIZE, SIZE, good[..good.len() - 3].to_vec()),
    )
    .await;
    let e = next_failed(&mut r.events).await;
    assert_eq!(e.episode, 2);
    assert!(
        e.detail
            .contains("image of 96×96 holds 27645 bytes, fewer than its size needs"),
        "{e:?}"
    );

    // An empty table: no object, so no keypoints and no action.
    let table = render(
        &dreamplan::render::table(scene::TABLE_X, scene::TABLE_Y, 0.0, [0.52, 0.43, 0.33]),
        &scene::default_camera(SIZE, SIZE),
        RenderMode::Full,
        &RenderOptions::default(),
    );
    r.episode(3, image("rgb8", SIZE, SIZE, table.rgb)).await;
    let e = next_failed(&mut r.events).await;
    assert_eq!(e.episode, 3);
    assert!(
        e.detail
            .starts_with("planner: current image: no object found"),
        "{e:?}"
    );
    assert!(r.actions.try_recv().is_none(), "an action after bad input");

    // The node still decides a good episode.
    r.episode(4, image("rgb8", SIZE, SIZE, good)).await;
    let a = tokio::time::timeout(Duration::from_secs(30), r.actions.recv())
        .await
        .expect("an action in time")
        .expect("bus open");
    assert!(a.source_id >= 1 && a.target_id >= 1, "{a:?}");

    // A bgr8 driver's image of the same scene (a RealSense's, most USB cameras'): the same
    // pixels once converted, so a decision, not a failure (refused before session 48).
    let bgr: Vec<u8> = current_rgb()
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    r.episode(14, image("bgr8", SIZE, SIZE, bgr)).await;
    let b = tokio::time::timeout(Duration::from_secs(30), r.actions.recv())
        .await
        .expect("an action on a bgr8 image")
        .expect("bus open");
    assert!(b.source_id >= 1 && b.target_id >= 1, "{b:?}");
    assert!(
        r.events.try_recv().is_none_or(|e| e.event != "failed"),
        "a bgr8 image failed"
    );

    // A camera image of another size than the goal: the keypoints of the two could not be
    // compared (it was planned on before session 43).
    let half = SIZE / 2;
    r.episode(
        5,
        image("rgb8", half, half, vec![90; (half * half * 3) as usize]),
    )
    .await;
    let e = next_failed(&mut r.events).await;
    assert_eq!(e.episode, 5);
    assert_eq!(
        e.detail,
        format!("planner: the goal image is {SIZE}×{SIZE} but the camera's is {half}×{half}: a goal image must come from the same camera view")
    );
    assert!(
        r.actions.try_recv().is_none(),
        "an action for a mismatched goal"
    );
    r.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_keypoints_than_object_pixels_is_a_failed_event() {
    let mut r = rig(50_000).await;
    r.episode(1, image("rgb8", SIZE, SIZE, current_rgb())).await;
    let e = next_failed(&mut r.events).await;
    assert!(
        e.detail.starts_with("planner: current image: only ")
            && e.detail.ends_with(" object pixels for 50000 keypoints"),
        "{e:?}"
    );
    assert!(r.actions.try_recv().is_none());
    r.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coverage_backend_from_yaml_publishes_the_coverage_rules_choice() {
    let config: PlannerConfig = serde_yaml::from_str("backend: coverage\nkeypoints: 4\n")
        .expect("a planner config with the coverage backend");
    let mut r = rig_with(config).await;
    r.episode(1, image("rgb8", SIZE, SIZE, current_rgb())).await;
    let a = tokio::time::timeout(Duration::from_secs(60), r.actions.recv())
        .await
        .expect("an action in time")
        .expect("bus open");
    let (current, goal) = rope_scene().keypoints.expect("rope 3 has keypoints");
    let want = coverage_choice(&current, &goal).unwrap();
    assert_eq!((a.source_id, a.target_id), (want.pick, want.place), "{a:?}");
    r.finish().await;
}

/// A planner whose decision runs until it is halted (or 120 s pass), saying when it starts.
struct UntilHalted {
    halt: std::sync::Arc<std::sync::atomic::AtomicBool>,
    started: std::sync::mpsc::Sender<()>,
}

impl dreamplan::planner::eval::Planner for UntilHalted {
    fn name(&self) -> String {
        "until-halted".into()
    }
    fn decide(
        &mut self,
        _: &dreamplan::planner::eval::Scene<'_>,
    ) -> dreamplan::planner::eval::Decision {
        let _ = self.started.send(());
        let t0 = std::time::Instant::now();
        while !self.halt.load(std::sync::atomic::Ordering::Relaxed)
            && t0.elapsed() < Duration::from_secs(120)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        dreamplan::planner::eval::Decision::None("halted".into())
    }
    fn halt_flag(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        Some(self.halt.clone())
    }
}

/// Asked to stop in the middle of a long decision (a real VLM on a CPU), the node halts it
/// and ends at once; before session 44 it noticed the stop only after the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_long_decision_halts_it() {
    let halt = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (started, decision_started) = std::sync::mpsc::channel();
    let planner = UntilHalted {
        halt: halt.clone(),
        started,
    };
    let config = PlannerConfig {
        keypoints: 4,
        ..Default::default()
    };
    let node = PlannerNode::with_planner(config, Box::new(planner)).unwrap();
    let mut r = rig_node(node, dreamplan::nodes::params::LiveParams::fixed()).await;
    r.episode(1, image("rgb8", SIZE, SIZE, current_rgb())).await;
    tokio::task::spawn_blocking(move || decision_started.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the decision starts");
    let t0 = std::time::Instant::now();
    r.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), &mut r.task)
        .await
        .expect("the node ends without waiting for the decision")
        .unwrap()
        .unwrap();
    assert!(halt.load(std::sync::atomic::Ordering::Relaxed));
    assert!(t0.elapsed() < Duration::from_secs(10));
}

/// `with_planner` checks the config as `new` does.
#[test]
fn with_planner_checks_the_config() {
    let (started, _) = std::sync::mpsc::channel();
    let planner = UntilHalted {
        halt: Default::default(),
        started,
    };
    let config = PlannerConfig {
        keypoints: 0,
        ..Default::default()
    };
    let e = PlannerNode::with_planner(config, Box::new(planner))
        .err()
        .expect("0 keypoints refused");
    assert!(e.to_string().contains("keypoints"), "{e}");
}

fn event_at(name: &str, sec: i32) -> EpisodeEvent {
    EpisodeEvent {
        header: Header {
            stamp: Time { sec, nanosec: 0 },
            frame_id: String::new(),
        },
        episode: 1,
        task: "rope".into(),
        event: name.into(),
        ..Default::default()
    }
}

fn image_at(sec: i32) -> Image {
    let mut img = image("rgb8", SIZE, SIZE, current_rgb());
    img.header.stamp = Time { sec, nanosec: 0 };
    img
}

/// Whether an action arrives within `wait`.
async fn action_within(r: &mut Rig, wait: Duration) -> Option<KeypointAction> {
    tokio::time::timeout(wait, r.actions.recv())
        .await
        .ok()
        .flatten()
        .map(|a| (*a).clone())
}

/// On a real arm a decision may be asked for while the arm still moves: the planner holds
/// it until the executor reports the action finished, and decides on an image taken after
/// that, not on one that shows the arm mid-motion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_asked_while_the_arm_moves_waits_for_an_image_of_the_idle_arm() {
    let config: PlannerConfig = serde_yaml::from_str("backend: coverage\nkeypoints: 4\n").unwrap();
    let mut r = rig_with(config).await;
    r.event_pub
        .publish(event_at(EpisodeEvent::EVENT_ACTION_STARTED, 5))
        .unwrap();
    r.event_pub
        .publish(event_at(EpisodeEvent::EVENT_RESET, 6))
        .unwrap();
    for sec in [7, 8, 9] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        r.image_pub.publish(image_at(sec)).unwrap();
    }
    assert!(
        action_within(&mut r, Duration::from_millis(1500))
            .await
            .is_none(),
        "decided while the arm was busy"
    );
    r.event_pub
        .publish(event_at(EpisodeEvent::EVENT_ACTION_FINISHED, 10))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Queued before the arm stopped: shows it moving.
    r.image_pub.publish(image_at(9)).unwrap();
    assert!(
        action_within(&mut r, Duration::from_millis(1500))
            .await
            .is_none(),
        "decided on an image from before the arm was idle"
    );
    r.image_pub.publish(image_at(11)).unwrap();
    let a = action_within(&mut r, Duration::from_secs(60))
        .await
        .expect("a decision once the arm is idle");
    assert_eq!(a.header.stamp.sec, 11, "decided on the wrong image: {a:?}");
    r.finish().await;
}

/// The arm stays busy through a `scored` (an evaluation scoring while the arm retreats)
/// and through the executor's refusal of an action because the arm still moves; only the
/// executor's `action_finished` (or a failure that ends the motion) frees it. Both freed it
/// before: the reset was decided at once, refused as busy, and never decided again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_score_or_a_busy_refusal_does_not_free_the_arm() {
    let config: PlannerConfig = serde_yaml::from_str("backend: coverage\nkeypoints: 4\n").unwrap();
    let mut r = rig_with(config).await;
    r.event_pub
        .publish(event_at(EpisodeEvent::EVENT_ACTION_STARTED, 5))
        .unwrap();
    r.event_pub
        .publish(event_at(EpisodeEvent::EVENT_SCORED, 6))
        .unwrap();
    let mut refused = event_at(EpisodeEvent::EVENT_FAILED, 6);
    refused.detail = format!("planning failed: {}", dreamplan::nodes::executor::BUSY);
    r.event_pub.publish(refused).unwrap();
    r.event_pub
        .publish(event_at(EpisodeEvent::EVENT_RESET, 7))
        .unwrap();
    for sec in [8, 9] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        r.image_pub.publish(image_at(sec)).unwrap();
    }
    assert!(
        action_within(&mut r, Duration::from_millis(1500))
            .await
            .is_none(),
        "decided while the arm was busy"
    );
    r.event_pub
        .publish(event_at(EpisodeEvent::EVENT_ACTION_FINISHED, 10))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.image_pub.publish(image_at(11)).unwrap();
    let a = action_within(&mut r, Duration::from_secs(60))
        .await
        .expect("a decision once the arm is idle");
    assert_eq!(a.header.stamp.sec, 11, "decided on the wrong image: {a:?}");
    r.finish().await;
}

impl Rig {
    /// Publishes the event `name` stamped `sec`.
    fn event(&self, name: &str, sec: i32) {
        self.event_pub.publish(event_at(name, sec)).unwrap();
    }

    /// A moment later, a camera image stamped `sec`.
    async fn image_after(&self, sec: i32) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.image_pub.publish(image_at(sec)).unwrap();
    }

    /// Asserts that no action comes within `ms` milliseconds.
    async fn no_action_within(&mut self, ms: u64, why: &str) {
        let a = action_within(self, Duration::from_millis(ms)).await;
        assert!(a.is_none(), "{why}: {a:?}");
    }

    /// Asserts that an action comes, decided on the image stamped `sec`.
    async fn decided_on(&mut self, sec: i32, what: &str) {
        let a = action_within(self, Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("{what}: no action"));
        assert_eq!(
            a.header.stamp.sec, sec,
            "{what}: decided on the wrong image: {a:?}"
        );
    }

    /// An executor that has reported an action (so the planner knows one is on the graph),
    /// then a reset decided on the image stamped 4.
    async fn first_decision_with_an_executor(&mut self) {
        self.event(EpisodeEvent::EVENT_ACTION_STARTED, 1);
        self.event(EpisodeEvent::EVENT_ACTION_FINISHED, 2);
        self.event(EpisodeEvent::EVENT_RESET, 3);
        self.image_after(4).await;
        self.decided_on(4, "the first decision").await;
    }
}

/// A reset that arrives after the planner published an action but before the executor
/// reported its start (a new goal with `trigger: goal`, say) waits for the arm: once an
/// executor is known on the graph, a published action counts as started. Before session 43
/// the reset was decided at once, on an image of an arm about to move, and the executor
/// refused that action as busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_between_an_action_and_its_start_waits_for_the_arm() {
    let config: PlannerConfig = serde_yaml::from_str("backend: coverage\nkeypoints: 4\n").unwrap();
    let mut r = rig_with(config).await;
    r.first_decision_with_an_executor().await;
    // The next reset comes before the executor reports the action's start.
    r.event(EpisodeEvent::EVENT_RESET, 5);
    r.image_after(6).await;
    r.no_action_within(1500, "decided before the executor started the last action")
        .await;
    r.event(EpisodeEvent::EVENT_ACTION_STARTED, 7);
    r.image_after(8).await;
    r.no_action_within(1000, "decided while the arm was busy")
        .await;
    r.event(EpisodeEvent::EVENT_ACTION_FINISHED, 9);
    r.image_after(10).await;
    r.decided_on(10, "once the arm is idle").await;
    r.finish().await;
}

/// The planner's own `failed` (an earlier decision without an action, read late: events
/// and images are taken in any order) says nothing of the arm and does not end the wait for
/// the executor's `action_started` (it did before this was caught by a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planner_s_own_failure_does_not_end_the_wait_for_the_start() {
    use dreamplan::nodes::planner::OWN_FAILURE;
    let config: PlannerConfig = serde_yaml::from_str("backend: coverage\nkeypoints: 4\n").unwrap();
    let mut r = rig_with(config).await;
    r.first_decision_with_an_executor().await;
    let mut own = event_at(EpisodeEvent::EVENT_FAILED, 5);
    own.detail = format!("{OWN_FAILURE}no valid answer");
    r.event_pub.publish(own).unwrap();
    r.event(EpisodeEvent::EVENT_RESET, 5);
    r.image_after(6).await;
    r.no_action_within(1500, "decided before the executor started the last action")
        .await;
    r.event(EpisodeEvent::EVENT_ACTION_STARTED, 7);
    r.event(EpisodeEvent::EVENT_ACTION_FINISHED, 8);
    r.image_after(9).await;
    r.decided_on(9, "once the arm is idle").await;
    r.finish().await;
}

/// An action the executor never reports (it was lost, or the executor went away) holds
/// the next decision for `START_TIMEOUT_S`, not for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_never_reported_started_holds_the_next_decision_only_for_the_start_timeout() {
    use dreamplan::nodes::planner::START_TIMEOUT_S;
    let config: PlannerConfig = serde_yaml::from_str("backend: coverage\nkeypoints: 4\n").unwrap();
    let mut r = rig_with(config).await;
    r.first_decision_with_an_executor().await;
    let published = std::time::Instant::now();
    r.event(EpisodeEvent::EVENT_RESET, 5);
    r.image_after(6).await;
    r.no_action_within(
        (START_TIMEOUT_S * 500.0) as u64,
        "decided before the executor started the last action",
    )
    .await;
    // The image waits in its queue; once the wait for the start times out it is decided.
    r.decided_on(6, "once the wait for the start timed out")
        .await;
    let waited = published.elapsed().as_secs_f64();
    assert!(
        waited >= START_TIMEOUT_S - 0.1,
        "decided after {waited:.1} s, before the start timeout"
    );
    r.finish().await;
}

/// With `verify.wait`, each candidate set carries its own number in `step` and only the
/// answer echoing it is taken. An answer that came after its set timed out (its stamp the
/// same, 0 from an unstamped camera) waited in the queue and was taken for the next set
/// before session 43, its index choosing from another list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_answer_that_came_too_late_is_not_taken_for_the_next_set() {
    use dreamplan::msg::dreamplan::{ActionCandidates, VerifierScores};
    let config: PlannerConfig = serde_yaml::from_str(
        "backend: coverage\nkeypoints: 4\nverify: {wait: true, timeout_s: 3.0}\n",
    )
    .unwrap();
    let mut r = rig_with(config).await;
    let mut sets = r
        .bus
        .subscribe::<ActionCandidates>("/planner/candidates", Qos::keep_last(10))
        .unwrap();
    let answers = r
        .bus
        .publisher::<VerifierScores>("/verifier/scores", Qos::keep_last(10))
        .unwrap();
    let answer = |set: &ActionCandidates| VerifierScores {
        header: set.header.clone(),
        episode: set.episode,
        step: set.step,
        distance: vec![0.0; set.candidates.len()],
        score: vec![0.5; set.candidates.len()],
        best: 0,
        metric: "test".into(),
    };
    // The first set is not answered in time: the planner's own action is executed.
    r.episode(1, image("rgb8", SIZE, SIZE, current_rgb())).await;
    let first = tokio::time::timeout(Duration::from_secs(60), sets.recv())
        .await
        .unwrap()
        .unwrap();
    action_within(&mut r, Duration::from_secs(60))
        .await
        .expect("the planner's own action after the timeout");
    // Its answer comes late and waits in the planner's queue.
    answers.publish(answer(&first)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The next set, from an image with the same (zero) stamp.
    r.episode(2, image("rgb8", SIZE, SIZE, current_rgb())).await;
    let second = tokio::time::timeout(Duration::from_secs(60), sets.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.header.stamp, first.header.stamp);
    assert_ne!(second.step, first.step);
    let asked = std::time::Instant::now();
    assert!(
        action_within(&mut r, Duration::from_millis(1000))
            .await
            .is_none(),
        "the late answer to the first set was taken for the second"
    );
    answers.publish(answer(&second)).unwrap();
    action_within(&mut r, Duration::from_secs(60))
        .await
        .expect("an action once the second set is answered");
    assert!(
        asked.elapsed().as_secs_f64() < 2.5,
        "the second set's own answer was not taken (the action came after the timeout)"
    );
    r.finish().await;
}

/// A goal image the planner cannot read replaces the goal held before: the next decision
/// fails naming it, instead of planning toward the previous goal (it was only warned about).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_goal_fails_the_decision_instead_of_keeping_the_old_goal() {
    let config: PlannerConfig = serde_yaml::from_str("backend: coverage\nkeypoints: 4\n").unwrap();
    let mut r = rig_with(config).await;
    // Episode 1 on the rig's readable goal.
    r.episode(1, image("rgb8", SIZE, SIZE, current_rgb())).await;
    assert!(action_within(&mut r, Duration::from_secs(60))
        .await
        .is_some());
    let goal_pub = r
        .bus
        .publisher::<Image>("/goal/image", Qos::latched())
        .unwrap();
    goal_pub
        .publish(image("yuv422", SIZE, SIZE, goal_rgb()))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.episode(2, image("rgb8", SIZE, SIZE, current_rgb())).await;
    let e = next_failed(&mut r.events).await;
    assert_eq!(
        e.detail,
        "planner: goal image: image encoding \"yuv422\" is not rgb8, bgr8, rgba8 or bgra8"
    );
    assert!(
        r.actions.try_recv().is_none(),
        "planned toward the old goal"
    );
    r.finish().await;
}

/// With `wait_idle: false` the planner decides at once, busy or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wait_idle_a_busy_arm_does_not_hold_the_decision() {
    let config: PlannerConfig =
        serde_yaml::from_str("backend: coverage\nkeypoints: 4\nwait_idle: false\n").unwrap();
    let mut r = rig_with(config).await;
    r.event_pub
        .publish(event_at(EpisodeEvent::EVENT_ACTION_STARTED, 5))
        .unwrap();
    r.event_pub
        .publish(event_at(EpisodeEvent::EVENT_RESET, 6))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.image_pub.publish(image_at(7)).unwrap();
    let a = action_within(&mut r, Duration::from_secs(60)).await;
    assert!(a.is_some(), "no decision");
    r.finish().await;
}

/// `trigger: goal`: each new goal image starts an episode of the configured task: the
/// planner publishes the `reset` itself (so recorders and the executor see the usual
/// life cycle) and decides on the next image. The same goal delivered again is not a
/// new request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_trigger_goal_each_new_goal_image_is_an_episode_and_a_decision() {
    let config: PlannerConfig =
        serde_yaml::from_str("backend: coverage\nkeypoints: 4\ntrigger: goal\ntask: rope\n")
            .unwrap();
    let mut r = rig_with(config).await;
    // The rig published the latched goal: the planner announces episode 0.
    let reset = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = r.events.recv().await.expect("bus open");
            if e.event == EpisodeEvent::EVENT_RESET {
                return (*e).clone();
            }
        }
    })
    .await
    .expect("a reset from the planner");
    assert_eq!((reset.episode, reset.task.as_str()), (0, "rope"));
    assert_eq!(reset.detail, "new goal image");
    tokio::time::sleep(Duration::from_millis(30)).await;
    r.image_pub
        .publish(image_at(reset.header.stamp.sec + 1))
        .unwrap();
    let a = action_within(&mut r, Duration::from_secs(60)).await;
    assert!(a.is_some(), "no decision for the first goal");
    // The same goal again (a latched sample re-delivered): nothing new.
    let goal_pub = r
        .bus
        .publisher::<Image>("/goal/image", Qos::latched())
        .unwrap();
    goal_pub
        .publish(image("rgb8", SIZE, SIZE, goal_rgb()))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.image_pub.publish(image_at(i32::MAX - 2)).unwrap();
    assert!(
        action_within(&mut r, Duration::from_millis(1500))
            .await
            .is_none(),
        "the same goal asked twice"
    );
    // A new goal (here: a new stamp): episode 1.
    let mut goal = image("rgb8", SIZE, SIZE, goal_rgb());
    goal.header.stamp = Time {
        sec: 42,
        nanosec: 0,
    };
    goal_pub.publish(goal).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.image_pub.publish(image_at(i32::MAX - 1)).unwrap();
    let a = action_within(&mut r, Duration::from_secs(60)).await;
    assert!(a.is_some(), "no decision for the second goal");
    let mut resets = Vec::new();
    while let Some(e) = r.events.try_recv() {
        if e.event == EpisodeEvent::EVENT_RESET {
            resets.push(e.episode);
        }
    }
    assert_eq!(resets, vec![1], "one more episode, numbered 1");
    r.finish().await;
}

#[test]
fn trigger_goal_without_a_task_or_with_an_unknown_one_is_a_clear_error() {
    for (yaml, want) in [
        ("trigger: goal\n", "trigger: goal needs `task`"),
        (
            "trigger: goal\ntask: sock\n",
            "\"sock\" is not one of rope, cloth, toy",
        ),
    ] {
        let config: PlannerConfig = serde_yaml::from_str(yaml).unwrap();
        let err = PlannerNode::new(config).err().expect("refused").to_string();
        assert!(err.contains(want), "{yaml}: {err}");
    }
}

async fn next_sets(sets: &mut Subscriber<KeypointSets>) -> std::sync::Arc<KeypointSets> {
    tokio::time::timeout(Duration::from_secs(30), sets.recv())
        .await
        .expect("keypoints in time")
        .expect("bus open")
}

/// The planner's live parameters (`PlannerNode::LIVE`), set as the parameter services set
/// them: `keypoints` applies from the next decision; a value its checks refuse and a
/// parameter read at start are refused with the reason and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keypoints_set_while_running_apply_from_the_next_decision_and_bad_sets_are_refused() {
    use dreamplan::nodes::params::LiveParams;
    use serde_yaml::Value;
    let config = PlannerConfig {
        keypoints: 4,
        ..Default::default()
    };
    // As a graph builds it: the declared config, the live names, the node's own checks.
    let params = LiveParams::for_node::<PlannerNode>("planner", &config, &Value::Null);
    // Every sampling setting is a parameter, defaults included.
    for name in [
        "sampling.k",
        "sampling.temperature",
        "verify.timeout_s",
        "backend",
    ] {
        assert!(params.get(name).is_some(), "{name} not declared");
    }
    let mut r = rig_with_params(config, params.clone()).await;
    let mut sets = r
        .bus
        .subscribe::<KeypointSets>("/planner/keypoints", Qos::keep_last(10))
        .unwrap();
    r.episode(0, image("rgb8", SIZE, SIZE, current_rgb())).await;
    assert_eq!(next_sets(&mut sets).await.current.keypoints.len(), 4);

    let e = params.set("sampling.top_p", Value::from(0.0)).unwrap_err();
    assert!(e.contains("top_p must be in (0, 1]"), "{e}");
    let e = params.set("backend", Value::from("random")).unwrap_err();
    assert!(e.contains("read when node `planner` starts"), "{e}");
    let e = params.set("keypoints", Value::from(0)).unwrap_err();
    assert!(e.contains("keypoints must be > 0"), "{e}");
    // A wait too long for a Duration panicked at the first verified decision.
    let e = params
        .set("verify.timeout_s", Value::from(1e20))
        .unwrap_err();
    assert!(
        e.contains("verify.timeout_s must be between 0 and 3600"),
        "{e}"
    );
    params.set("keypoints", Value::from(6)).unwrap();
    params.set("sampling.k", Value::from(2)).unwrap();
    assert_eq!(params.get("sampling.top_p"), Some(Value::from(0.9)));

    r.episode(1, image("rgb8", SIZE, SIZE, current_rgb())).await;
    let s = next_sets(&mut sets).await;
    assert_eq!(s.current.keypoints.len(), 6);
    assert_eq!(s.goal.keypoints.len(), 6);
    r.finish().await;
}

/// A coverage planner that saw an action start at 100 s and finish at 101 s (bus time),
/// then a reset stamped `sec`.
async fn reset_after_an_action_at(sec: i32) -> Rig {
    let config: PlannerConfig = serde_yaml::from_str("backend: coverage\nkeypoints: 4\n").unwrap();
    let r = rig_with(config).await;
    r.event_pub
        .publish(event_at(EpisodeEvent::EVENT_ACTION_STARTED, 100))
        .unwrap();
    r.event_pub
        .publish(event_at(EpisodeEvent::EVENT_ACTION_FINISHED, 101))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.event_pub
        .publish(event_at(EpisodeEvent::EVENT_RESET, sec))
        .unwrap();
    r
}

/// The clock went back (a Gazebo world reset, `ros2 bag play --loop`): a reset stamped
/// before the arm's last idle time, with the arm idle, is decided on frames of the new
/// time. Before session 52 every frame was "older" than that idle time and nothing was
/// decided until the clock came round again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_after_the_clock_went_back_is_decided() {
    let mut r = reset_after_an_action_at(5).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.image_pub.publish(image_at(6)).unwrap();
    let a = action_within(&mut r, Duration::from_secs(60))
        .await
        .expect("a decision on the frame of the new time");
    assert_eq!(a.header.stamp.sec, 6);
    r.finish().await;

    // An unstamped reset (`ros2 topic pub` sends 0) is no clock going back: a frame from
    // before the arm became idle is still not decided on.
    let mut r = reset_after_an_action_at(0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.image_pub.publish(image_at(100)).unwrap();
    assert!(
        action_within(&mut r, Duration::from_millis(1500))
            .await
            .is_none(),
        "decided on a frame of the moving arm"
    );
    r.image_pub.publish(image_at(102)).unwrap();
    let a = action_within(&mut r, Duration::from_secs(60))
        .await
        .expect("a decision on a frame of the idle arm");
    assert_eq!(a.header.stamp.sec, 102);
    r.finish().await;
}

/// A reset of a task the planner does not know is a `failed` event of that episode, not
/// only a log line (a script waiting for the episode's end saw nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_of_an_unknown_task_is_a_failed_event() {
    let mut r = rig(4).await;
    r.event_pub
        .publish(EpisodeEvent {
            episode: 7,
            task: "Rope".into(),
            event: EpisodeEvent::EVENT_RESET.into(),
            ..Default::default()
        })
        .unwrap();
    let e = next_failed(&mut r.events).await;
    assert_eq!(e.episode, 7);
    assert!(
        e.detail
            .starts_with("planner: reset of unknown task \"Rope\""),
        "{}",
        e.detail
    );
    r.finish().await;
}

/// A stop while the planner waits for the verifier ends the node at once and publishes no
/// action (under `ros2 launch` the wait ran out its timeout, then an action went out after
/// the stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_waiting_for_the_verifier_publishes_no_action() {
    use dreamplan::msg::dreamplan::ActionCandidates;
    let config: PlannerConfig = serde_yaml::from_str(
        "backend: coverage\nkeypoints: 4\nverify: {wait: true, timeout_s: 30.0}\n",
    )
    .unwrap();
    let mut r = rig_with(config).await;
    let mut sets = r
        .bus
        .subscribe::<ActionCandidates>("/planner/candidates", Qos::keep_last(10))
        .unwrap();
    r.episode(1, image("rgb8", SIZE, SIZE, current_rgb())).await;
    tokio::time::timeout(Duration::from_secs(60), sets.recv())
        .await
        .expect("candidates in time")
        .unwrap();
    r.stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), &mut r.task)
        .await
        .expect("the planner stops at once")
        .unwrap()
        .unwrap();
    assert!(r.actions.try_recv().is_none(), "an action after the stop");
}
