//! Speed of the built-in world: one physics step per task (awake: sleeping would skip it),
//! and one full episode as the sim node runs it: reset, the goal (the hidden action played
//! by the arm), one good action played by the arm, and the final 256×256 render.

use criterion::{criterion_group, criterion_main, Criterion};
use dreamplan::render::{render, scene, RenderMode, RenderOptions};
use dreamplan::sim::episode::{arm_goal, arm_pick_place, default_arm, ArmExecParams, READY};
use dreamplan::sim::rng::Rng;
use dreamplan::sim::tasks::{self, Task};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let arm = default_arm();
    for task in Task::ALL {
        let world = tasks::reset(task, 1);
        c.bench_function(&format!("sim/step/{task:?}"), |b| {
            let mut w = world.clone();
            b.iter(|| {
                w.wake();
                w.step(black_box(tasks::DT))
            })
        });
        let mut group = c.benchmark_group("sim/episode");
        group.sample_size(10);
        group.bench_function(format!("{task:?}"), |b| {
            b.iter(|| {
                let goal = arm_goal(task, black_box(1), &arm).expect("plannable");
                let mut w = tasks::reset(task, black_box(1));
                let action = tasks::sample_good_action(task, &w, &mut Rng::new(1, 5));
                let params = ArmExecParams {
                    fps: 0.0,
                    ..Default::default()
                };
                arm_pick_place(&mut w, &arm, &action, &params, |_, _, _, _| {}).expect("plannable");
                let frame = render(
                    &scene::full_scene(&w, &arm, &READY, true),
                    &scene::default_camera(256, 256),
                    RenderMode::Full,
                    &RenderOptions::default(),
                );
                (tasks::score(task, &w, &goal), frame.rgb.len())
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
