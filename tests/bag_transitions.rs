//! The transition view: a bag with two episodes becomes the right transitions, streamed.

use dreamplan::bag::transitions::TransitionTopics;
use dreamplan::bag::{BagReader, BagWriter, WriterOptions};
use dreamplan::msg::prelude::*;

const MS: u64 = 1_000_000;

fn frame(tag: u8) -> Image {
    Image {
        width: 2,
        height: 1,
        encoding: "rgb8".into(),
        step: 6,
        data: vec![tag; 6],
        ..Default::default()
    }
}

fn event(episode: u32, step: u32, event: &str, score: f64) -> EpisodeEvent {
    EpisodeEvent {
        episode,
        step,
        task: "rope".into(),
        event: event.into(),
        score,
        ..Default::default()
    }
}

/// A new bag `episodes` in a temporary folder (kept while the first value lives).
fn episodes_bag() -> (tempfile::TempDir, std::path::PathBuf, BagWriter) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("episodes");
    let w = BagWriter::create(&dir, WriterOptions::default()).unwrap();
    (tmp, dir, w)
}

/// The built-in simulator publishes an episode's goal just before its reset: the reset
/// keeps it. A goal of an earlier episode, seen before that episode's steps, does not
/// carry over to an episode that published none.
#[test]
fn a_goal_published_just_before_the_reset_is_the_new_episodes() {
    let (_tmp, dir, mut w) = episodes_bag();
    let mut t = 1_000 * MS;
    let mut at = |dt: u64| {
        t += dt * MS;
        t
    };
    for ep in 0..3u32 {
        if ep < 2 {
            w.write("/goal/image", at(1), &frame(200 + ep as u8))
                .unwrap();
        }
        w.write(
            "/dreamplan/episode",
            at(1),
            &event(ep, 0, EpisodeEvent::EVENT_RESET, f64::NAN),
        )
        .unwrap();
        w.write("/camera/image_raw", at(10), &frame(10)).unwrap();
        w.write(
            "/dreamplan/episode",
            at(1),
            &event(ep, 0, EpisodeEvent::EVENT_ACTION_STARTED, f64::NAN),
        )
        .unwrap();
        w.write(
            "/dreamplan/episode",
            at(100),
            &event(ep, 0, EpisodeEvent::EVENT_ACTION_FINISHED, f64::NAN),
        )
        .unwrap();
        w.write(
            "/dreamplan/episode",
            at(1),
            &event(ep, 0, EpisodeEvent::EVENT_SCORED, 1.0),
        )
        .unwrap();
    }
    w.finish().unwrap();
    let reader = BagReader::open(&dir).unwrap();
    let goals: Vec<Option<u8>> = reader
        .transitions(TransitionTopics::default())
        .map(|t| t.unwrap().goal.map(|g| g.data[0]))
        .collect();
    assert_eq!(goals, [Some(200), Some(201), None]);
}

#[test]
fn two_episodes_become_two_scored_transitions() {
    let (_tmp, dir, mut w) = episodes_bag();
    let mut t = 1_000 * MS;
    let mut at = |dt: u64| {
        t += dt * MS;
        t
    };
    for ep in 0..2u32 {
        w.write(
            "/dreamplan/episode",
            at(10),
            &event(ep, 0, EpisodeEvent::EVENT_RESET, f64::NAN),
        )
        .unwrap();
        w.write("/goal/image", at(1), &frame(200 + ep as u8))
            .unwrap();
        w.write("/camera/image_raw", at(10), &frame(10)).unwrap(); // observation candidate
        w.write("/camera/image_raw", at(10), &frame(11)).unwrap(); // the observation
        let action = KeypointAction {
            source_id: 3 + ep,
            target_id: 7,
            raw_text: format!("pick 3 place 7 ({ep})"),
            ..Default::default()
        };
        w.write("/planner/action", at(1), &action).unwrap();
        w.write(
            "/dreamplan/episode",
            at(1),
            &event(ep, 0, EpisodeEvent::EVENT_ACTION_STARTED, f64::NAN),
        )
        .unwrap();
        for k in 0..5 {
            w.write(
                "/joint_states",
                at(5),
                &JointState {
                    position: vec![k as f64],
                    ..Default::default()
                },
            )
            .unwrap();
            w.write("/camera/image_raw", at(1), &frame(20 + k)).unwrap();
        }
        w.write(
            "/dreamplan/episode",
            at(1),
            &event(ep, 0, EpisodeEvent::EVENT_ACTION_FINISHED, f64::NAN),
        )
        .unwrap();
        w.write("/camera/image_raw", at(100), &frame(30)).unwrap(); // within the 1 s window
        w.write(
            "/dreamplan/episode",
            at(1),
            &event(ep, 0, EpisodeEvent::EVENT_SCORED, 0.5 + ep as f64 * 0.5),
        )
        .unwrap();
        w.write("/camera/image_raw", at(2000), &frame(40)).unwrap(); // after the window
    }
    w.finish().unwrap();

    let reader = BagReader::open(&dir).unwrap();
    let mut view = reader.transitions(TransitionTopics::default());
    let transitions: Vec<_> = view.by_ref().collect::<Result<_, _>>().unwrap();
    assert!(view.stats.undecodable.is_empty());
    assert_eq!(transitions.len(), 2);
    for (ep, tr) in transitions.iter().enumerate() {
        assert_eq!(
            (tr.episode, tr.step, tr.task.as_str()),
            (ep as u32, 0, "rope")
        );
        assert_eq!(tr.goal.as_ref().unwrap().data[0], 200 + ep as u8);
        assert_eq!(tr.observation.as_ref().unwrap().1.data[0], 11);
        assert_eq!(tr.action.as_ref().unwrap().source_id, 3 + ep as u32);
        assert_eq!(
            tr.joint_states
                .iter()
                .map(|(_, j)| j.position[0])
                .collect::<Vec<_>>(),
            vec![0.0, 1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(
            tr.frames_during
                .iter()
                .map(|(_, f)| f.data[0])
                .collect::<Vec<_>>(),
            vec![20, 21, 22, 23, 24]
        );
        assert_eq!(
            tr.frames_after
                .iter()
                .map(|(_, f)| f.data[0])
                .collect::<Vec<_>>(),
            vec![30]
        );
        assert_eq!(tr.score, Some(0.5 + ep as f64 * 0.5));
        assert!(tr.finished.unwrap() > tr.started);
        assert!(!tr.failed);
    }
}

/// A step whose episode showed no frame after its `reset` has no observation: the frames
/// before the reset are the previous episode's world, not this one's.
#[test]
fn a_frame_from_before_the_reset_is_not_the_next_episodes_observation() {
    let (_tmp, dir, mut w) = episodes_bag();
    let mut t = 1_000 * MS;
    let mut at = |dt: u64| {
        t += dt * MS;
        t
    };
    let reset = |ep| event(ep, 0, EpisodeEvent::EVENT_RESET, f64::NAN);
    let started = |ep| event(ep, 0, EpisodeEvent::EVENT_ACTION_STARTED, f64::NAN);
    let finished = |ep| event(ep, 0, EpisodeEvent::EVENT_ACTION_FINISHED, f64::NAN);
    // Episode 0 sees its world; episode 1 starts its action before any frame of its own.
    w.write("/dreamplan/episode", at(10), &reset(0)).unwrap();
    w.write("/camera/image_raw", at(10), &frame(11)).unwrap();
    w.write("/camera/object_only", at(1), &frame(12)).unwrap();
    w.write("/dreamplan/episode", at(1), &started(0)).unwrap();
    w.write("/dreamplan/episode", at(10), &finished(0)).unwrap();
    w.write("/camera/image_raw", at(2000), &frame(13)).unwrap(); // after the window
    w.write("/camera/object_only", at(1), &frame(14)).unwrap();
    w.write("/dreamplan/episode", at(10), &reset(1)).unwrap();
    w.write("/dreamplan/episode", at(10), &started(1)).unwrap();
    w.write("/dreamplan/episode", at(10), &finished(1)).unwrap();
    // Episode 2 shows a frame after its reset: that one is its observation.
    w.write("/dreamplan/episode", at(2000), &reset(2)).unwrap();
    w.write("/camera/image_raw", at(10), &frame(21)).unwrap();
    w.write("/camera/object_only", at(1), &frame(22)).unwrap();
    w.write("/dreamplan/episode", at(1), &started(2)).unwrap();
    w.write("/dreamplan/episode", at(10), &finished(2)).unwrap();
    w.finish().unwrap();

    let reader = BagReader::open(&dir).unwrap();
    let transitions: Vec<_> = reader
        .transitions(TransitionTopics::default())
        .collect::<Result<_, _>>()
        .unwrap();
    let seen = |tr: &dreamplan::bag::transitions::Transition| {
        (
            tr.observation.as_ref().map(|(_, f)| f.data[0]),
            tr.object_observation.as_ref().map(|(_, f)| f.data[0]),
        )
    };
    assert_eq!(
        transitions.iter().map(seen).collect::<Vec<_>>(),
        vec![(Some(11), Some(12)), (None, None), (Some(21), Some(22))]
    );
}

/// A `failed` event after an action finished is the refusal of a later action that never
/// started (busy, the table check): it does not mark the finished action failed (before
/// session 52 it did, and `bag info --transitions` counted it). One before the finish
/// does.
#[test]
fn a_refusal_after_an_action_finished_does_not_fail_it() {
    let (_tmp, dir, mut w) = episodes_bag();
    let mut t = 1_000 * MS;
    let mut put = |w: &mut BagWriter, name: &str| {
        t += 100 * MS;
        w.write("/dreamplan/episode", t, &event(0, 0, name, f64::NAN))
            .unwrap();
    };
    put(&mut w, EpisodeEvent::EVENT_RESET);
    put(&mut w, EpisodeEvent::EVENT_ACTION_STARTED);
    put(&mut w, EpisodeEvent::EVENT_ACTION_FINISHED);
    put(&mut w, EpisodeEvent::EVENT_FAILED);
    put(&mut w, EpisodeEvent::EVENT_ACTION_STARTED);
    put(&mut w, EpisodeEvent::EVENT_FAILED);
    w.finish().unwrap();
    let reader = BagReader::open(&dir).unwrap();
    let failed: Vec<bool> = reader
        .transitions(TransitionTopics::default())
        .map(|t| t.unwrap().failed)
        .collect();
    assert_eq!(failed, [false, true]);
}

/// A running action that failed (an e-stop: no `action_finished` follows) is closed at its
/// failure: the frames of the idle arm after it are nobody's. Before session 53 it stayed
/// open and held every frame until the next action, minutes of images on an e-stopped arm.
#[test]
fn a_failed_action_stops_collecting_frames_at_its_failure() {
    let (_tmp, dir, mut w) = episodes_bag();
    let camera = TransitionTopics::default().camera;
    let mut t = 1_000 * MS;
    let mut tick = || {
        t += 100 * MS;
        t
    };
    w.write(
        "/dreamplan/episode",
        tick(),
        &event(0, 0, EpisodeEvent::EVENT_RESET, f64::NAN),
    )
    .unwrap();
    w.write(
        "/dreamplan/episode",
        tick(),
        &event(0, 0, EpisodeEvent::EVENT_ACTION_STARTED, f64::NAN),
    )
    .unwrap();
    for _ in 0..3 {
        w.write(&camera, tick(), &frame(1)).unwrap();
    }
    w.write(
        "/dreamplan/episode",
        tick(),
        &event(0, 0, EpisodeEvent::EVENT_FAILED, f64::NAN),
    )
    .unwrap();
    // The arm stands e-stopped; the camera goes on.
    for _ in 0..200 {
        w.write(&camera, tick(), &frame(2)).unwrap();
    }
    w.write(
        "/dreamplan/episode",
        tick(),
        &event(0, 1, EpisodeEvent::EVENT_ACTION_STARTED, f64::NAN),
    )
    .unwrap();
    w.write(&camera, tick(), &frame(3)).unwrap();
    w.write(
        "/dreamplan/episode",
        tick(),
        &event(0, 1, EpisodeEvent::EVENT_ACTION_FINISHED, f64::NAN),
    )
    .unwrap();
    w.write(
        "/dreamplan/episode",
        tick(),
        &event(0, 1, EpisodeEvent::EVENT_SCORED, 1.0),
    )
    .unwrap();
    w.finish().unwrap();
    let reader = BagReader::open(&dir).unwrap();
    let all: Vec<_> = reader
        .transitions(TransitionTopics::default())
        .map(|t| t.unwrap())
        .collect();
    assert_eq!(all.len(), 2);
    assert!(all[0].failed && all[0].finished.is_none());
    assert_eq!(all[0].frames_during.len(), 3);
    assert!(all[0].frames_after.is_empty());
    assert!(!all[1].failed);
    assert_eq!(all[1].score, Some(1.0));
    assert_eq!(all[1].frames_during.len(), 1);
    // The next action's observation is the last frame before it, as ever.
    assert_eq!(all[1].observation.as_ref().unwrap().1.data[0], 2);
}
