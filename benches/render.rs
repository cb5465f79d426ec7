//! Render time of the built-in world at 256×256 (2×2 supersampling), per task and mode,
//! and of the simulator's camera step (full and object-only frames in one call) with and
//! without the per-thread cache of rays and table hits: `cargo bench --bench render`.

use criterion::{criterion_group, criterion_main, Criterion};
use dreamplan::render::{
    render, render_modes, render_modes_uncached, scene, RenderMode, RenderOptions,
};
use dreamplan::robot::franka::{default_arm, READY};
use dreamplan::sim::tasks::{reset, Task};

fn bench(c: &mut Criterion) {
    let arm = default_arm();
    let cam = scene::default_camera(256, 256);
    let opts = RenderOptions::default();
    let mut g = c.benchmark_group("render_256");
    for task in [Task::Rope, Task::Cloth, Task::Toy] {
        let prims = scene::full_scene(&reset(task, 3), &arm, &READY, true);
        for (mode, name) in [
            (RenderMode::Full, "full"),
            (RenderMode::ArmOnWhite, "arm"),
            (RenderMode::ObjectOnly, "object"),
        ] {
            g.bench_function(format!("{task:?}_{name}").to_lowercase(), |b| {
                b.iter(|| render(&prims, &cam, mode, &opts))
            });
        }
        let both = [RenderMode::Full, RenderMode::ObjectOnly];
        g.bench_function(format!("{task:?}_full_and_object").to_lowercase(), |b| {
            b.iter(|| render_modes(&prims, &cam, &both, &opts))
        });
        g.bench_function(
            format!("{task:?}_full_and_object_uncached").to_lowercase(),
            |b| b.iter(|| render_modes_uncached(&prims, &cam, &both, &opts)),
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
