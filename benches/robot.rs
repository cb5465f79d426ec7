//! Arm kinematics cost on urdf/franka_like.urdf: FK, FK + Jacobian, IK from a nearby seed
//! (the pick-and-place case: each Cartesian sample seeded by the previous one), IK from a
//! far seed, and a whole pick-and-place plan.
//!
//! `cargo bench --bench robot`. On the 2-core dev container (release): FK 0.16 µs,
//! Jacobian 0.21 µs, IK from a 5 mrad seed 1.8 µs, IK from the ready pose 3.1 µs, a
//! whole pick-and-place plan (≈ 200 IK solves) 0.40 ms.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use dreamplan::robot::franka::READY;
use dreamplan::robot::motion::{plan_pick_place, PickPlaceParams};
use dreamplan::robot::{ArmModel, IkOptions};

use nalgebra::Point3;

fn kinematics(c: &mut Criterion) {
    let urdf = concat!(env!("CARGO_MANIFEST_DIR"), "/urdf/franka_like.urdf");
    let model = ArmModel::from_urdf_file(urdf, "panda_link0", "panda_tcp").unwrap();
    let mut g = c.benchmark_group("franka_like");
    g.bench_function("fk", |b| b.iter(|| model.fk(black_box(&READY))));
    g.bench_function("jacobian", |b| b.iter(|| model.jacobian(black_box(&READY))));

    let q_target = [0.3, -0.5, 0.2, -2.0, 0.1, 1.7, 0.5];
    let target = model.fk(&q_target);
    let opts = IkOptions::default();
    // A seed 5 mrad away per joint: a Cartesian path step.
    let near: Vec<f64> = q_target.iter().map(|q| q + 0.005).collect();
    g.bench_function("ik_near_seed", |b| {
        b.iter(|| {
            model
                .ik(black_box(&target), black_box(&near), &opts)
                .unwrap()
        })
    });
    g.bench_function("ik_from_ready", |b| {
        b.iter(|| {
            model
                .ik(black_box(&target), black_box(&READY), &opts)
                .unwrap()
        })
    });
    g.bench_function("pick_and_place_plan", |b| {
        let params = PickPlaceParams::default();
        let (pick, place) = (Point3::new(0.45, -0.2, 0.02), Point3::new(0.6, 0.25, 0.0));
        b.iter(|| plan_pick_place(&model, &READY, &pick, &place, &params).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = kinematics
}
criterion_main!(benches);
