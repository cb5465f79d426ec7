//! Speed of the built-in world: one physics step per task, and one full episode (reset, the
//! good action executed, score against a precomputed goal).

use criterion::{criterion_group, criterion_main, Criterion};
use dreamplan::sim::rng::Rng;
use dreamplan::sim::tasks::{self, ExecParams, Task};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    for task in Task::ALL {
        let world = tasks::reset(task, 1);
        c.bench_function(&format!("sim/step/{task:?}"), |b| {
            let mut w = world.clone();
            b.iter(|| w.step(black_box(tasks::DT)))
        });
        let goal = tasks::goal_for(task, 1);
        let mut group = c.benchmark_group("sim/episode");
        group.sample_size(10);
        group.bench_function(format!("{task:?}"), |b| {
            b.iter(|| {
                let mut w = tasks::reset(task, black_box(1));
                let action = tasks::sample_good_action(task, &w, &mut Rng::new(1, 5));
                tasks::execute_point_pick_place(&mut w, &action, &ExecParams::default());
                tasks::score(task, &w, &goal)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
