//! The arm in the loop: the hidden good action executed by the arm reproduces the goal,
//! a random one does not, and the same seed gives bit-identical camera frames.

use dreamplan::render::{render, scene, RenderMode, RenderOptions};
use dreamplan::sim::episode::{arm_goal, arm_pick_place, default_arm, ArmExecParams};
use dreamplan::sim::tasks::{hidden_action, reset, sample_random_action, score, Task};

#[test]
fn the_arm_executes_the_hidden_action_and_reaches_the_goal() {
    let arm = default_arm();
    for task in [Task::Rope, Task::Toy] {
        let seed = 11;
        let goal = arm_goal(task, seed, &arm).unwrap();
        let mut world = reset(task, seed);
        let exec = arm_pick_place(
            &mut world,
            &arm,
            &hidden_action(task, seed),
            &ArmExecParams {
                fps: 0.0,
                ..Default::default()
            },
            |_, _, _, _| {},
        )
        .unwrap();
        assert!(exec.held > 0, "{task:?}: the gripper closed on the object");
        assert_eq!(
            score(task, &world, &goal),
            (0.0, 1.0),
            "{task:?}: same seed, same action, same outcome"
        );
        // The start state is far from the goal (the action did something).
        assert_eq!(score(task, &reset(task, seed), &goal).1, 0.0, "{task:?}");
        let mut other = reset(task, seed);
        let random = sample_random_action(&other, &mut dreamplan::sim::rng::Rng::new(seed, 99));
        if arm_pick_place(
            &mut other,
            &arm,
            &random,
            &ArmExecParams {
                fps: 0.0,
                ..Default::default()
            },
            |_, _, _, _| {},
        )
        .is_ok()
        {
            assert!(
                score(task, &other, &goal).1 < 1.0,
                "{task:?}: a random action does not reach the goal"
            );
        }
    }
}

#[test]
fn frames_of_an_episode_are_bit_identical_for_a_seed() {
    let arm = default_arm();
    let cam = scene::default_camera(96, 96);
    let run = |seed: u64| {
        let mut frames = Vec::new();
        let mut world = reset(Task::Rope, seed);
        let params = ArmExecParams {
            fps: 2.0,
            ..Default::default()
        };
        arm_pick_place(
            &mut world,
            &arm,
            &hidden_action(Task::Rope, seed),
            &params,
            |_, w, q, closed| {
                frames.push(render(
                    &scene::full_scene(w, &arm, q, !closed),
                    &cam,
                    RenderMode::Full,
                    &RenderOptions {
                        supersample: 1,
                        ..Default::default()
                    },
                ));
            },
        )
        .unwrap();
        frames
    };
    let (a, b, c) = (run(4), run(4), run(5));
    assert!(a.len() > 10);
    assert_eq!(a, b);
    assert_ne!(a, c);
    // The arm moves: first and middle frames differ; arm pixels are bright.
    assert_ne!(a[0].rgb, a[a.len() / 2].rgb);
}

/// Sleeping skips the physics only where it would move nothing: an arm episode ends within
/// a millimetre of the same episode simulated at every step, and the world does sleep
/// (before the grasp and after the settle) without ever sleeping while it holds something.
#[test]
fn sleeping_changes_an_episode_by_less_than_a_millimetre() {
    let arm = default_arm();
    for task in [Task::Rope, Task::Cloth, Task::Toy] {
        let seed = 5;
        let mut sleepy = reset(task, seed);
        let mut awake = sleepy.clone();
        awake.set_params(dreamplan::sim::SimParams {
            sleep_speed: 0.0,
            ..sleepy.params().clone()
        });
        let params = ArmExecParams {
            fps: 20.0,
            ..Default::default()
        };
        let action = hidden_action(task, seed);
        let (mut slept, mut slept_holding) = (0, 0);
        arm_pick_place(&mut sleepy, &arm, &action, &params, |_, w, _, closed| {
            if w.asleep() {
                slept += 1;
                if closed {
                    slept_holding += 1;
                }
            }
        })
        .unwrap();
        arm_pick_place(&mut awake, &arm, &action, &params, |_, w, _, _| {
            assert!(!w.asleep())
        })
        .unwrap();
        let diff = sleepy
            .positions()
            .iter()
            .zip(awake.positions())
            .map(|(p, q)| (p - q).norm())
            .fold(0.0, f64::max);
        eprintln!("{task:?}: slept {slept} of the frames; largest difference {diff:.2e} m");
        assert!(diff < 1e-3, "{task:?}: {diff} m");
        assert!(slept > 5, "{task:?}: never slept");
        assert_eq!(slept_holding, 0, "{task:?}");
    }
}
