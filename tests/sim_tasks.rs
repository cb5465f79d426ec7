//! The benchmark tasks: seeded resets, goals reachable by one good action, scores that
//! separate good actions from doing nothing.

use dreamplan::sim::tasks::{self, ExecParams, Task, TABLE_X, TABLE_Y};
use dreamplan::sim::ObjectKind;

#[test]
fn resets_are_seeded_and_on_the_table() {
    for task in Task::ALL {
        let a = tasks::reset(task, 11);
        let b = tasks::reset(task, 11);
        let c = tasks::reset(task, 12);
        assert_eq!(a.positions(), b.positions(), "{task:?}: same seed");
        assert_ne!(a.positions(), c.positions(), "{task:?}: different seeds");
        for p in a.positions() {
            assert!(
                p.x > TABLE_X.0 - 0.02 && p.x < TABLE_X.1 + 0.02,
                "{task:?}: x {}",
                p.x
            );
            assert!(p.y > TABLE_Y.0 - 0.02 && p.y < TABLE_Y.1 + 0.02);
            assert!(p.z > 0.0 && p.z < 0.03, "{task:?}: resting, z {}", p.z);
        }
    }
}

/// At rest nothing creeps (bending is held by friction) and nothing jitters: a toy whose
/// limb started across its tail used to walk 10–20 cm on its own. Physics runs every step
/// (`wake`), so sleeping cannot hide motion.
#[test]
fn resets_stay_at_rest() {
    for task in Task::ALL {
        let (seeds, steps) = if task == Task::Cloth {
            (1, 120)
        } else {
            (16, 240)
        };
        let mut worst: f64 = 0.0;
        for seed in 0..seeds {
            let a = tasks::reset(task, seed);
            let mut still = a.clone();
            for _ in 0..steps {
                still.wake();
                still.step(tasks::DT);
            }
            let creep = a
                .positions()
                .iter()
                .zip(still.positions())
                .map(|(p, q)| (p - q).norm())
                .fold(0.0, f64::max);
            assert!(creep < 0.003, "{task:?} seed {seed}: creeps {creep} m");
            worst = worst.max(creep);
        }
        eprintln!(
            "{task:?}: largest creep at rest over {} s, {seeds} seeds: {:.2} mm",
            steps as f64 * tasks::DT,
            worst * 1e3
        );
    }
}

#[test]
fn objects_have_the_promised_topology() {
    let rope = tasks::reset(Task::Rope, 0);
    assert_eq!(rope.objects()[0].kind, ObjectKind::Rope);
    assert_eq!(rope.objects()[0].chains[0].particles.len(), 41);
    let cloth = tasks::reset(Task::Cloth, 0);
    assert_eq!(cloth.objects()[0].grid, Some((24, 24)));
    assert_eq!(cloth.objects()[0].triangles.len(), 2 * 23 * 23);
    let toy = tasks::reset(Task::Toy, 0);
    let names: Vec<_> = toy.objects()[0].chains.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "front_left",
            "front_right",
            "back_left",
            "back_right",
            "tail"
        ]
    );
}

#[test]
fn hidden_action_reaches_the_goal_and_nothing_does_not() {
    for task in Task::ALL {
        for seed in 0..4 {
            let goal = tasks::goal_for(task, seed);
            let mut world = tasks::reset(task, seed);
            let (d_none, s_none) = tasks::score(task, &world, &goal);
            let action = tasks::hidden_action(task, seed);
            let held = tasks::execute_point_pick_place(&mut world, &action, &ExecParams::default());
            let (d, s) = tasks::score(task, &world, &goal);
            eprintln!("{task:?} seed {seed}: held {held}, good {d:.4} m → {s}, nothing {d_none:.4} m → {s_none}");
            assert!(held >= 1);
            assert_eq!(
                (d, s),
                (0.0, 1.0),
                "{task:?}: re-executed = goal (determinism)"
            );
            assert!(
                s_none < 1.0,
                "{task:?} seed {seed}: doing nothing is no success"
            );
        }
    }
}

#[test]
fn cloth_good_action_folds_it_in_half() {
    use dreamplan::sim::metrics::covered_area;
    for seed in 0..3 {
        let start = tasks::reset(Task::Cloth, seed);
        let goal = tasks::goal_for(Task::Cloth, seed);
        let ratio = covered_area(&goal, 0, 0.002) / covered_area(&start, 0, 0.002);
        eprintln!("cloth seed {seed}: diagonal fold area ratio {ratio:.3}");
        assert!((ratio - 0.5).abs() < 0.1, "seed {seed}: ratio {ratio}");
    }
}

#[test]
fn rope_good_action_straightens() {
    // The goal episodes use: the hidden action played by the arm.
    let arm = dreamplan::sim::episode::default_arm();
    for seed in 0..4 {
        let start = tasks::reset(Task::Rope, seed);
        let goal = dreamplan::sim::episode::arm_goal(Task::Rope, seed, &arm).unwrap();
        let chord = |w: &dreamplan::sim::World| {
            let p = w.positions();
            (p[0] - p[p.len() - 1]).norm()
        };
        eprintln!(
            "rope seed {seed}: end-to-end {:.3} m → {:.3} m (length 0.40)",
            chord(&start),
            chord(&goal)
        );
        assert!(chord(&goal) > 0.34, "nearly straight (85% of the length)");
        assert!(chord(&goal) > chord(&start));
    }
}

#[test]
fn a_missed_pick_moves_nothing() {
    let mut world = tasks::reset(Task::Toy, 5);
    let before = world.clone();
    let far = nalgebra::Point3::new(0.79, 0.34, 0.0);
    let action = tasks::Action {
        pick: far,
        place: nalgebra::Point3::new(0.31, -0.34, 0.0),
    };
    let held = tasks::execute_point_pick_place(&mut world, &action, &ExecParams::default());
    assert_eq!(held, 0);
    let (d, _) = tasks::score(Task::Toy, &world, &before);
    assert!(d < 0.002, "moved {d} m");
}
