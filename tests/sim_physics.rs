//! Physics of the built-in world: a rope dragged by one end trails, a folded cloth stays
//! folded, toy limbs hang off the torso, and runs are bit-reproducible.

use dreamplan::sim::bodies;
use dreamplan::sim::metrics::covered_area;
use dreamplan::sim::tasks::{self, Task, DT};
use dreamplan::sim::{SimParams, World};
use nalgebra::{Point3, Vector3};

/// Default solver, never sleeping: these tests watch the physics itself.
fn awake() -> SimParams {
    SimParams {
        sleep_speed: 0.0,
        ..Default::default()
    }
}

fn centroid(p: &[Point3<f64>]) -> Vector3<f64> {
    p.iter().fold(Vector3::zeros(), |s, q| s + q.coords) / p.len() as f64
}

/// A 40 cm rope lying along y, its first end pulled 30 cm along +x over 1.5 s.
#[test]
fn rope_pulled_by_one_end_trails_behind() {
    let points = (0..41)
        .map(|i| Point3::new(0.5, -0.2 + 0.01 * i as f64, 0.005))
        .collect();
    let mut world = World::new(awake());
    world.add(bodies::rope(points, 0.01));
    let start = world.positions().to_vec();
    let held = world.grasp(start[0], 0.001);
    assert_eq!(held, 1);
    let steps = 90;
    for k in 1..=steps {
        let s = k as f64 / steps as f64;
        world.move_gripper(start[0] + Vector3::new(0.3 * s, 0.0, 0.0));
        world.step(DT);
    }
    world.release();
    for _ in 0..30 {
        world.step(DT);
    }
    let end = world.positions();
    let moved = |i: usize| end[i].x - start[i].x;
    let centroid_dx = centroid(end).x - centroid(&start).x;
    let max_strain = (0..40)
        .map(|i| ((end[i + 1] - end[i]).norm() / 0.01 - 1.0).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "rope drag: pulled end dx {:.3} m, far end dx {:.3} m dy {:.3} m, centroid dx {:.3} m, max strain {:.4}",
        moved(0),
        moved(40),
        end[40].y - start[40].y,
        centroid_dx,
        max_strain
    );
    assert!(
        (moved(0) - 0.3).abs() < 0.01,
        "pulled end follows the gripper"
    );
    assert!(centroid_dx > 0.05, "the rope as a whole moves +x");
    assert!(moved(40) < moved(0) - 0.05, "the far end trails");
    assert!(
        max_strain < 0.02,
        "segments within 2% of rest: {max_strain}"
    );
    assert!(
        end.iter().all(|p| p.z > 0.004 && p.z < 0.02),
        "stays on the table"
    );
}

fn flat_cloth() -> World {
    let mut world = World::new(awake());
    let step = 0.3 / 23.0;
    world.add(bodies::cloth(
        Point3::new(0.4, -0.15, 0.005),
        Vector3::new(step, 0.0, 0.0),
        Vector3::new(0.0, step, 0.0),
        24,
        24,
    ));
    world
}

/// Folds a cloth in half by carrying the two corners of the x-min edge over the x-max edge.
/// Returns (initial area, area at release + 0.5 s, at release + 2.5 s).
fn fold_cloth() -> (f64, f64, f64, World) {
    let mut world = flat_cloth();
    let area0 = covered_area(&world, 0, 0.002);
    let pos = world.positions().to_vec();
    let (a, b) = (0usize, 23usize); // row 0: x = 0.4, the two corners y = ±0.15
    let mid = Point3::from((pos[a].coords + pos[b].coords) / 2.0);
    world.teleport_gripper(mid);
    world.grasp_particles(&[a, b]);
    // Lift 12 cm while carrying 30 cm along +x, over 2 s, then lower onto the far edge.
    let steps = 120;
    for k in 1..=steps {
        let s = k as f64 / steps as f64;
        let x = 0.3 * s;
        let z = 0.12 * (std::f64::consts::PI * s).sin().max(0.0) + 0.01 * s;
        world.move_gripper(mid + Vector3::new(x - 0.005 * s, 0.0, z));
        world.step(DT);
    }
    world.release();
    let mut half = 0.0;
    for k in 1..=150 {
        world.step(DT);
        if k == 30 {
            half = covered_area(&world, 0, 0.002);
        }
    }
    let end = covered_area(&world, 0, 0.002);
    (area0, half, end, world)
}

#[test]
fn cloth_folded_in_half_stays_folded() {
    let (area0, half, end, world) = fold_cloth();
    let zmax = world.positions().iter().map(|p| p.z).fold(0.0, f64::max);
    eprintln!(
        "cloth fold: area {:.4} m² → {:.4} (release+0.5 s, ratio {:.3}) → {:.4} (release+2.5 s, change {:.2}%), top layer z {:.4}",
        area0,
        half,
        half / area0,
        end,
        100.0 * (end - half).abs() / half,
        zmax
    );
    assert!((area0 - 0.09).abs() < 0.005, "a 30 cm cloth covers 0.09 m²");
    assert!(
        (half / area0 - 0.5).abs() < 0.05,
        "folded area is half (±10%): ratio {}",
        half / area0
    );
    assert!((end - half).abs() / half < 0.05, "stays folded");
    assert!(
        zmax > 0.012,
        "two layers: the top one rests on the bottom one"
    );
}

#[test]
fn toy_limbs_stay_attached_to_the_torso() {
    let mut world = tasks::reset(Task::Toy, 7);
    let action = tasks::good_actions(Task::Toy, &world)[0];
    tasks::execute_point_pick_place(&mut world, &action, &tasks::ExecParams::default());
    let obj = world.objects()[0].clone();
    let pos = world.positions();
    let mut worst = 0.0f64;
    for chain in &obj.chains {
        let link = if chain.name == "tail" {
            bodies::toy_shape::TAIL_LINK
        } else {
            bodies::toy_shape::LIMB_LINK
        };
        let mut prev = chain.anchor.expect("toy chains hang off the torso");
        for &i in &chain.particles {
            worst = worst.max(((pos[i] - pos[prev]).norm() / link - 1.0).abs());
            prev = i;
        }
    }
    eprintln!("toy: worst link strain after a limb pick-and-place {worst:.4}");
    assert_eq!(obj.chains.len(), 5, "four limbs and a tail");
    assert!(worst < 0.02, "links within 2% of rest");
}

fn bits(world: &World) -> Vec<u64> {
    world
        .positions()
        .iter()
        .flat_map(|p| [p.x.to_bits(), p.y.to_bits(), p.z.to_bits()])
        .collect()
}

#[test]
fn same_seed_same_bits_different_seed_differs() {
    for task in Task::ALL {
        let run = |seed| {
            let mut world = tasks::reset(task, seed);
            let mut rng = dreamplan::sim::rng::Rng::new(seed, 99);
            let action = tasks::sample_random_action(&world, &mut rng);
            tasks::execute_point_pick_place(&mut world, &action, &tasks::ExecParams::default());
            world
        };
        assert_eq!(
            bits(&run(3)),
            bits(&run(3)),
            "{task:?}: same seed, same bits"
        );
        assert_ne!(bits(&run(3)), bits(&run(4)), "{task:?}: seeds differ");
    }
}
