//! Checks that the score thresholds of the built-in tasks mean something: over many seeds,
//! the hidden good action scores 1, doing nothing scores 0, random actions score mostly 0 or
//! 0.5; and good actions that are NOT the hidden one (±1 cm jitter, another sampler draw)
//! show how forgiving the thresholds are. Also times steps and episodes.
//!
//! `cargo run --release --example threshold_check -- [seeds] [rope|cloth|toy]` (default 100,
//! all tasks).

use dreamplan::sim::rng::Rng;
use dreamplan::sim::tasks::{self, Action, ExecParams, Task};
use nalgebra::Vector3;
use std::time::Instant;

const KINDS: [&str; 5] = ["hidden", "jitter1cm", "resampled", "nothing", "random"];

fn run_seed(task: Task, seed: u64) -> [(f64, f64); 5] {
    let params = ExecParams::default();
    let goal = tasks::goal_for(task, seed);
    let start = tasks::reset(task, seed);
    let hidden = tasks::hidden_action(task, seed);
    let mut rng = Rng::new(seed, 0x7E57);
    let mut jitter = || Vector3::new(rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01), 0.0);
    let jittered = Action {
        pick: hidden.pick + jitter(),
        place: hidden.place + jitter(),
    };
    let resampled = tasks::sample_good_action(task, &start, &mut Rng::new(seed, 0xBEEF));
    let random = tasks::sample_random_action(&start, &mut Rng::new(seed, 0xD1CE));
    let exec = |a: &Action| {
        let mut w = start.clone();
        tasks::execute_point_pick_place(&mut w, a, &params);
        tasks::score(task, &w, &goal)
    };
    [
        exec(&hidden),
        exec(&jittered),
        exec(&resampled),
        tasks::score(task, &start, &goal),
        exec(&random),
    ]
}

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    println!("| task | action | score 1 | 0.5 | 0 | distance p10 / median / p90 (cm) |");
    println!("|---|---|---|---|---|---|");
    let only = std::env::args().nth(2).map(|s| s.to_lowercase());
    for task in Task::ALL {
        if only
            .as_deref()
            .is_some_and(|o| o != format!("{task:?}").to_lowercase())
        {
            continue;
        }
        let results: Vec<[(f64, f64); 5]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2u64)
                .map(|t| {
                    s.spawn(move || {
                        (0..seeds)
                            .filter(|seed| seed % 2 == t)
                            .map(|seed| (seed, run_seed(task, seed)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<(u64, [(f64, f64); 5])> = handles
                .into_iter()
                .flat_map(|h| h.join().expect("worker"))
                .collect();
            all.sort_by_key(|r| r.0);
            all.into_iter().map(|r| r.1).collect()
        });
        for (k, kind) in KINDS.iter().enumerate() {
            let mut d: Vec<f64> = results.iter().map(|r| r[k].0).collect();
            d.sort_by(f64::total_cmp);
            let count = |s: f64| results.iter().filter(|r| r[k].1 == s).count();
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
    }
    println!("\nspeed (one thread):");
    for task in Task::ALL {
        let mut world = tasks::reset(task, 1);
        let t = Instant::now();
        let n = 300;
        for _ in 0..n {
            world.step(tasks::DT);
        }
        let steps_per_s = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let start = tasks::reset(task, 1);
        let action = tasks::sample_good_action(task, &start, &mut Rng::new(1, 5));
        let mut w = start.clone();
        tasks::execute_point_pick_place(&mut w, &action, &ExecParams::default());
        let episode = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let goal = tasks::goal_for(task, 1);
        let with_goal = episode + t.elapsed().as_secs_f64();
        let (d, s) = tasks::score(task, &w, &goal);
        println!(
            "{task:?}: {} particles, {steps_per_s:.0} steps/s (dt {:.4} s, {:.0}× real time); episode (reset + action + score) {:.3} s, {:.1} s simulated; + goal_for {:.3} s; score {s} ({:.1} mm)",
            start.positions().len(),
            tasks::DT,
            steps_per_s * tasks::DT,
            episode,
            w.time() - start.time(),
            with_goal,
            d * 1000.0
        );
    }
}
