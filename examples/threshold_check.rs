//! Checks that the score thresholds of the built-in tasks mean something, with the arm in
//! the loop exactly as episodes run it: every action except `hidden-direct` goes through
//! pixels (projected with the built-in camera at 256×256, then back to 3D through the
//! rendered depth, the executor's workspace policy, its planner and envelope check:
//! `nodes::executor::plan_action`) and is played by the arm on the world
//! (`sim::episode::execute_plan`). Goals are `sim::episode::arm_goal`.
//!
//! Rows per task: the hidden good action sent directly (3D points) and through pixels;
//! the hidden action with ±5 mm and ±1 cm of jitter on both points; another draw of the
//! good-action sampler; doing nothing; a random action. Then the time of one full episode
//! (reset, goal, one action, final render) per task.
//!
//! `cargo run --release --example threshold_check -- [seeds] [rope|cloth|toy]` (default 100,
//! all tasks).

use dreamplan::msg::dreamplan::KeypointAction;
use dreamplan::nodes::executor::{plan_action, ExecutorConfig};
use dreamplan::render::{render, scene, RenderMode, RenderOptions};
use dreamplan::robot::safety::DepthImage;
use dreamplan::robot::ArmModel;
use dreamplan::sim::episode::{
    arm_goal, arm_pick_place, default_arm, execute_plan, surface_point, ArmExecParams, READY,
};
use dreamplan::sim::rng::Rng;
use dreamplan::sim::tasks::{self, Action, Task};
use dreamplan::sim::World;
use nalgebra::Vector3;
use std::time::Instant;

const KINDS: [&str; 7] = [
    "hidden, direct",
    "hidden, pixels",
    "hidden ±5 mm",
    "hidden ±1 cm",
    "resampled good",
    "nothing",
    "random",
];
const SIZE: u32 = 256;

fn depth_of(world: &World, arm: &ArmModel) -> DepthImage {
    let cam = scene::default_camera(SIZE, SIZE);
    let prims = scene::full_scene(world, arm, &READY, true);
    let frame = render(&prims, &cam, RenderMode::Full, &RenderOptions::default());
    DepthImage {
        width: SIZE,
        height: SIZE,
        data: frame.depth,
    }
}

/// Sends `action` through the executor's pixel path and plays it; `None` when the
/// executor refuses it (the world is left as it was: the robot did nothing).
fn through_pixels(
    world: &mut World,
    goal_depth: &DepthImage,
    arm: &ArmModel,
    action: &Action,
    params: &ArmExecParams,
) -> Result<(), String> {
    let cam = scene::default_camera(SIZE, SIZE);
    let pick = surface_point(world, &action.pick, params.grasp_radius);
    let (su, sv, _) = cam.project(&pick).ok_or("pick behind the camera")?;
    let (tu, tv, _) = cam
        .project(&action.place)
        .ok_or("place behind the camera")?;
    let msg = KeypointAction {
        source_u: su as f32,
        source_v: sv as f32,
        target_u: tu as f32,
        target_v: tv as f32,
        ..Default::default()
    };
    let depth = depth_of(world, arm);
    let config = ExecutorConfig {
        width: SIZE,
        height: SIZE,
        ..Default::default()
    };
    let plan = plan_action(
        &config,
        arm,
        &config.camera(None),
        &msg,
        Some(&depth),
        Some(goal_depth),
        &READY,
    )
    .map_err(|e| e.to_string())?;
    execute_plan(world, arm, &plan, params, |_, _, _, _| {});
    Ok(())
}

fn run_seed(task: Task, seed: u64, arm: &ArmModel) -> ([(f64, f64); 7], usize) {
    let params = ArmExecParams {
        fps: 0.0,
        ..Default::default()
    };
    let goal = arm_goal(task, seed, arm).expect("the hidden action is plannable");
    let cam = scene::default_camera(SIZE, SIZE);
    let goal_frame = render(
        &scene::world_primitives(&goal),
        &cam,
        RenderMode::ObjectOnly,
        &RenderOptions::default(),
    );
    let goal_depth = DepthImage {
        width: SIZE,
        height: SIZE,
        data: goal_frame.depth,
    };
    let start = tasks::reset(task, seed);
    let hidden = tasks::hidden_action(task, seed);
    let mut rng = Rng::new(seed, 0x7E57);
    let mut jittered = |m: f64| {
        let mut j = || Vector3::new(rng.uniform(-m, m), rng.uniform(-m, m), 0.0);
        Action {
            pick: hidden.pick + j(),
            place: hidden.place + j(),
        }
    };
    let (j5, j10) = (jittered(0.005), jittered(0.01));
    let resampled = tasks::sample_good_action(task, &start, &mut Rng::new(seed, 0xBEEF));
    let random = tasks::sample_random_action(&start, &mut Rng::new(seed, 0xD1CE));
    let mut refused = 0;
    let mut pixels = |a: &Action| {
        let mut w = start.clone();
        if let Err(e) = through_pixels(&mut w, &goal_depth, arm, a, &params) {
            eprintln!("{task:?} seed {seed}: refused: {e} ({a:?})");
            refused += 1;
        }
        tasks::score(task, &w, &goal)
    };
    let direct = {
        let mut w = start.clone();
        arm_pick_place(&mut w, arm, &hidden, &params, |_, _, _, _| {}).expect("plannable");
        tasks::score(task, &w, &goal)
    };
    let rows = [
        direct,
        pixels(&hidden),
        pixels(&j5),
        pixels(&j10),
        pixels(&resampled),
        tasks::score(task, &start, &goal),
        pixels(&random),
    ];
    (rows, refused)
}

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let only = std::env::args().nth(2).map(|s| s.to_lowercase());
    let arm = default_arm();
    println!("| task | action | score 1 | 0.5 | 0 | distance p10 / median / p90 (cm) |");
    println!("|---|---|---|---|---|---|");
    let selected: Vec<Task> = Task::ALL
        .into_iter()
        .filter(|t| {
            only.as_deref()
                .is_none_or(|o| o == format!("{t:?}").to_lowercase())
        })
        .collect();
    for &task in &selected {
        let results: Vec<([(f64, f64); 7], usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2u64)
                .map(|t| {
                    let arm = &arm;
                    s.spawn(move || {
                        (0..seeds)
                            .filter(|seed| seed % 2 == t)
                            .map(|seed| (seed, run_seed(task, seed, arm)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<_> = handles
                .into_iter()
                .flat_map(|h| h.join().expect("worker"))
                .collect();
            all.sort_by_key(|r| r.0);
            all.into_iter().map(|r| r.1).collect()
        });
        for (k, kind) in KINDS.iter().enumerate() {
            let mut d: Vec<f64> = results.iter().map(|r| r.0[k].0).collect();
            d.sort_by(f64::total_cmp);
            let count = |s: f64| results.iter().filter(|r| r.0[k].1 == s).count();
            let q = |f: f64| 100.0 * d[((d.len() - 1) as f64 * f).round() as usize];
            println!(
                "| {task:?} | {kind} | {} | {} | {} | {:.1} / {:.1} / {:.1} |",
                count(1.0),
                count(0.5),
                count(0.0),
                q(0.1),
                q(0.5),
                q(0.9)
            );
        }
        let refused: usize = results.iter().map(|r| r.1).sum();
        println!("| {task:?} | (actions the executor refused) | {refused} | | | |");
    }
    println!("\nspeed (one thread, seed 1):");
    for &task in &selected {
        let mut world = tasks::reset(task, 1);
        let t = Instant::now();
        let n = 300;
        for _ in 0..n {
            world.wake();
            world.step(tasks::DT);
        }
        let steps_per_s = n as f64 / t.elapsed().as_secs_f64();
        // One full episode as the sim node runs it: reset, goal, one action through pixels
        // played by the arm, final render.
        let t = Instant::now();
        let goal = arm_goal(task, 1, &arm).expect("plannable");
        let t_goal = t.elapsed().as_secs_f64();
        let cam = scene::default_camera(SIZE, SIZE);
        let opts = RenderOptions::default();
        let goal_frame = render(
            &scene::world_primitives(&goal),
            &cam,
            RenderMode::ObjectOnly,
            &opts,
        );
        let goal_depth = DepthImage {
            width: SIZE,
            height: SIZE,
            data: goal_frame.depth,
        };
        let mut w = tasks::reset(task, 1);
        let action = tasks::sample_good_action(task, &w, &mut Rng::new(1, 5));
        let params = ArmExecParams {
            fps: 0.0,
            ..Default::default()
        };
        through_pixels(&mut w, &goal_depth, &arm, &action, &params).expect("executed");
        let final_frame = render(
            &scene::full_scene(&w, &arm, &READY, true),
            &cam,
            RenderMode::Full,
            &opts,
        );
        let episode = t.elapsed().as_secs_f64();
        let (d, s) = tasks::score(task, &w, &goal);
        println!(
            "{task:?}: {} particles, {steps_per_s:.0} steps/s (dt {:.4} s, {:.0}× real time); episode (reset, goal, action, render {}×{}) {:.3} s of which goal {:.3} s, {:.1} s simulated; score {s} ({:.1} mm)",
            w.positions().len(),
            tasks::DT,
            steps_per_s * tasks::DT,
            final_frame.width,
            final_frame.height,
            episode,
            t_goal,
            w.time(),
            d * 1000.0
        );
    }
}
