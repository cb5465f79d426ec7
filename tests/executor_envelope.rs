//! The executor's safety envelope: over 100,000 random and adversarial keypoint actions,
//! nothing that would be published leaves the envelope. Each action goes through the
//! executor's gates (finite, inside the image, valid depth, workspace policy); a sample of
//! the admitted ones is planned, gated by `SafetyEnvelope::verify`, and what passes is
//! checked again here independently (dense joint-space interpolation, FK of every sample).
//! The audit through the executor's real `plan_action`, every admitted action planned, is
//! `dreamplan robot envelope` (`nodes::envelope_audit`): CI runs it at 10⁵ actions in
//! release; here it runs small, and its auditor is shown to catch what it must.

use dreamplan::msg::dreamplan::KeypointAction;
use dreamplan::render::{render, scene, RenderMode, RenderOptions};
use dreamplan::robot::motion::{plan_pick_place, PickPlaceParams};
use dreamplan::robot::safety::{action_points, DepthImage, OutOfBounds, Rejection, SafetyEnvelope};
use dreamplan::sim::episode::{default_arm, READY};
use dreamplan::sim::tasks::{reset, Task};
use nalgebra::Isometry3;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn pixel() -> impl Strategy<Value = f32> {
    prop_oneof![
        60 => -10.0f32..138.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(-0.0f32),
        1 => Just(127.999f32),
        1 => Just(128.0f32),
        1 => Just(1e30f32),
    ]
}

/// Independent check: joints within limits, speeds within limits, TCP in the box and above
/// the table at 8 samples between consecutive points.
fn independently_safe(
    traj: &dreamplan::msg::trajectory_msgs::JointTrajectory,
    env: &SafetyEnvelope,
) -> Result<(), String> {
    let arm = default_arm();
    let joints: Vec<_> = arm.movable_joints().cloned().collect();
    for w in traj.points.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let dt = b.time_from_start.as_secs_f64() - a.time_from_start.as_secs_f64();
        if dt <= 0.0 {
            return Err("time does not increase".into());
        }
        for s in 0..=8 {
            let f = s as f64 / 8.0;
            let q: Vec<f64> = a
                .positions
                .iter()
                .zip(&b.positions)
                .map(|(x, y)| x + (y - x) * f)
                .collect();
            for (j, joint) in joints.iter().enumerate() {
                if q[j] < joint.lower - 1e-9 || q[j] > joint.upper + 1e-9 {
                    return Err(format!("joint {j} at {} outside its limits", q[j]));
                }
                if (b.positions[j] - a.positions[j]).abs() / dt > joint.velocity * 1.001 {
                    return Err(format!("joint {j} too fast"));
                }
            }
            let p = arm.fk(&q).translation.vector;
            for i in 0..3 {
                if p[i] < env.workspace_min[i] - 1e-3 || p[i] > env.workspace_max[i] + 1e-3 {
                    return Err(format!("TCP {p:?} outside the box"));
                }
            }
            if p.z < env.table_z + env.table_clearance - 1e-3 {
                return Err(format!("TCP z {} below the table clearance", p.z));
            }
        }
    }
    Ok(())
}

#[test]
fn no_published_trajectory_leaves_the_envelope() {
    let arm = default_arm();
    let camera = scene::default_camera(128, 128);
    let world = reset(Task::Cloth, 7);
    let frame = render(
        &scene::full_scene(&world, &arm, &READY, true),
        &camera,
        RenderMode::Full,
        &RenderOptions {
            supersample: 1,
            ..Default::default()
        },
    );
    let depth = DepthImage {
        width: 128,
        height: 128,
        data: frame.depth,
    };
    let base_from_world = Isometry3::identity();
    let mut runner = TestRunner::new(Config {
        cases: 100_000,
        failure_persistence: None,
        ..Config::default()
    });
    let counts = std::cell::RefCell::new(std::collections::BTreeMap::<String, u64>::new());
    let planned = std::cell::Cell::new(0u32);
    let strategy = (
        pixel(),
        pixel(),
        pixel(),
        pixel(),
        any::<bool>(),
        any::<bool>(),
        0u32..50,
    );
    runner
        .run(
            &strategy,
            |(su, sv, tu, tv, clamp, with_goal_depth, plan_one_in)| {
                let env = SafetyEnvelope {
                    out_of_bounds: if clamp {
                        OutOfBounds::Clamp
                    } else {
                        OutOfBounds::Reject
                    },
                    ..Default::default()
                };
                let action = KeypointAction {
                    source_u: su,
                    source_v: sv,
                    target_u: tu,
                    target_v: tv,
                    ..Default::default()
                };
                let goal = with_goal_depth.then_some(&depth);
                let outcome: Result<(), Rejection> = (|| {
                    let (pick, place) =
                        action_points(&action, &camera, &depth, goal, &base_from_world, 0.0)?;
                    let (pick, _) = env.admit("pick", pick)?;
                    let (place, _) = env.admit("place", place)?;
                    for p in [pick, place] {
                        prop_assert_ok(p.iter().all(|v| v.is_finite()))?;
                        for i in 0..3 {
                            prop_assert_ok(
                                p[i] >= env.workspace_min[i] - 1e-9
                                    && p[i] <= env.workspace_max[i] + 1e-9,
                            )?;
                        }
                        prop_assert_ok(p.z >= env.table_z + env.table_clearance - 1e-9)?;
                    }
                    // Planning costs ~1 ms: plan one admitted action in 50.
                    if plan_one_in == 0 {
                        let plan = plan_pick_place(
                            &arm,
                            &READY,
                            &pick,
                            &place,
                            &PickPlaceParams::default(),
                        )
                        .map_err(|e| Rejection::Planning(e.to_string()))?;
                        // The executor publishes only what `verify` passes; whatever passes
                        // must also pass the independent check below.
                        env.verify(&plan.trajectory, &arm)
                            .map_err(|e| Rejection::Planning(format!("gated by verify: {e}")))?;
                        independently_safe(&plan.trajectory, &env).map_err(Rejection::Envelope)?;
                        planned.set(planned.get() + 1);
                    }
                    Ok(())
                })();
                let key = match &outcome {
                    Ok(()) => "admitted".to_string(),
                    Err(Rejection::Envelope(m)) if m.starts_with("ASSERT") => {
                        return Err(TestCaseError::fail(m.clone()))
                    }
                    Err(Rejection::Envelope(m)) => {
                        return Err(TestCaseError::fail(format!("{action:?}: {m}")))
                    }
                    Err(r) => match r {
                        Rejection::NotFinite(_) => "not finite",
                        Rejection::OutOfImage { .. } => "out of image",
                        Rejection::NoDepth(_) => "no depth",
                        Rejection::NoDepthImage => "no depth image",
                        Rejection::OutsideWorkspace { .. } => "outside workspace",
                        Rejection::Planning(m) if m.starts_with("gated") => "gated by verify",
                        Rejection::Planning(_) => "no motion",
                        Rejection::Envelope(_) => "envelope",
                        Rejection::EStopped => "e-stop",
                    }
                    .to_string(),
                };
                *counts.borrow_mut().entry(key).or_default() += 1;
                Ok(())
            },
        )
        .unwrap();
    let (counts, planned) = (counts.into_inner(), planned.get());
    eprintln!("outcomes: {counts:?}, planned and verified: {planned}");
    assert!(
        counts.get("admitted").copied().unwrap_or(0) > 10_000,
        "most in-image actions on the table are admitted: {counts:?}"
    );
    assert!(planned > 100, "{planned} plans verified");
    assert!(
        counts.len() >= 4,
        "adversarial inputs hit several rejection reasons: {counts:?}"
    );
}

fn prop_assert_ok(cond: bool) -> Result<(), Rejection> {
    if cond {
        Ok(())
    } else {
        Err(Rejection::Envelope(
            "ASSERT: an admitted point is outside the envelope".into(),
        ))
    }
}

#[test]
fn each_gate_rejects_with_a_clear_reason() {
    let camera = scene::default_camera(64, 64);
    let depth = DepthImage {
        width: 64,
        height: 64,
        data: vec![f32::NAN; 64 * 64],
    };
    let id = Isometry3::identity();
    let act = |su: f32, sv: f32| KeypointAction {
        source_u: su,
        source_v: sv,
        target_u: 10.0,
        target_v: 10.0,
        ..Default::default()
    };
    assert_eq!(
        action_points(&act(f32::NAN, 1.0), &camera, &depth, None, &id, 0.0),
        Err(Rejection::NotFinite("source"))
    );
    assert!(matches!(
        action_points(&act(64.0, 1.0), &camera, &depth, None, &id, 0.0),
        Err(Rejection::OutOfImage { .. })
    ));
    assert_eq!(
        action_points(&act(30.0, 40.0), &camera, &depth, None, &id, 0.0),
        Err(Rejection::NoDepth("source"))
    );
    let env = SafetyEnvelope::default();
    let far = nalgebra::Point3::new(2.0, 0.0, 0.1);
    assert!(matches!(
        env.admit("pick", far),
        Err(Rejection::OutsideWorkspace { .. })
    ));
    let clamp = SafetyEnvelope {
        out_of_bounds: OutOfBounds::Clamp,
        ..Default::default()
    };
    let (p, clamped) = clamp.admit("pick", far).unwrap();
    assert!(clamped && (p.x - (clamp.workspace_max[0] - clamp.point_margin)).abs() < 1e-12);
    // An object point a hair under the clearance is lifted, not rejected.
    let (p, clamped) = env
        .admit("pick", nalgebra::Point3::new(0.5, 0.0, 0.001))
        .unwrap();
    assert!(!clamped && (p.z - env.table_clearance).abs() < 1e-12);
}

/// On a real arm the executor's camera model is the `CameraInfo` intrinsics placed at the
/// configured hand-eye pose; a depth image of another size than the model is refused.
#[test]
fn the_camera_model_comes_from_camera_info_and_the_configured_pose() {
    use dreamplan::nodes::executor::{plan_action, ExecutorConfig};
    use dreamplan::render::PinholeCamera;
    let real = PinholeCamera::look_at(
        320,
        240,
        70.0,
        nalgebra::Point3::new(0.9, 0.4, 0.8),
        nalgebra::Point3::new(0.5, 0.0, 0.0),
        nalgebra::Vector3::z(),
    );
    let pose = real.world_from_camera;
    let q = pose.rotation.quaternion();
    let config = ExecutorConfig {
        base_from_camera_xyz: Some(pose.translation.vector.into()),
        base_from_camera_xyzw: Some([q.i, q.j, q.k, q.w]),
        ..Default::default()
    };
    let info = real.camera_info(Default::default());
    let model = config.camera(Some(&info));
    assert_eq!((model.width, model.height), (320, 240));
    let p = nalgebra::Point3::new(0.55, -0.1, 0.02);
    let (u, v, d) = real.project(&p).unwrap();
    let back = model.unproject(u, v, d);
    assert!((back - p).norm() < 1e-9, "{back:?} vs {p:?}");
    // Without CameraInfo: the built-in camera at the configured size.
    let builtin = ExecutorConfig::default().camera(None);
    assert_eq!(builtin, scene::default_camera(256, 256));

    let depth = DepthImage {
        width: 256,
        height: 256,
        data: vec![1.0; 256 * 256],
    };
    let action = KeypointAction {
        source_u: 10.0,
        source_v: 10.0,
        target_u: 20.0,
        target_v: 20.0,
        ..Default::default()
    };
    let err = plan_action(
        &config,
        &default_arm(),
        &model,
        &action,
        Some(&depth),
        None,
        &READY,
    )
    .unwrap_err();
    assert!(err.to_string().contains("256x256"), "{err}");
    // Before any depth image: said so, not blamed on a pixel.
    let err =
        plan_action(&config, &default_arm(), &model, &action, None, None, &READY).unwrap_err();
    assert_eq!(err, Rejection::NoDepthImage);
    assert_eq!(err.to_string(), "no depth image has arrived yet");
}

/// The auditor of `dreamplan robot envelope` catches what it must: a real plan passes, and
/// each of a joint past its limit, a joint too fast, the TCP under the table, a jump from
/// the start pose and a non-increasing time fails, naming the problem.
#[test]
fn the_envelope_auditor_catches_each_kind_of_violation() {
    use dreamplan::nodes::envelope_audit::audit_trajectory;
    let arm = default_arm();
    let env = SafetyEnvelope::default();
    let plan = plan_pick_place(
        &arm,
        &READY,
        &nalgebra::Point3::new(0.5, -0.1, 0.01),
        &nalgebra::Point3::new(0.45, 0.15, 0.01),
        &PickPlaceParams::default(),
    )
    .unwrap();
    audit_trajectory(&plan.trajectory, &READY, &arm, &env).unwrap();
    let joints: Vec<_> = arm.movable_joints().cloned().collect();
    let n = plan.trajectory.points.len();
    let mid = n / 2;
    let mut past_limit = plan.trajectory.clone();
    past_limit.points[mid].positions[0] = joints[0].upper + 0.01;
    let mut too_fast = plan.trajectory.clone();
    let t0 = too_fast.points[mid - 1].time_from_start.as_secs_f64();
    let t1 = too_fast.points[mid].time_from_start.as_secs_f64();
    too_fast.points[mid].positions[1] += joints[1].velocity * (t1 - t0) * 1.5;
    let mut jump = plan.trajectory.clone();
    jump.points[0].positions[2] += 0.5;
    jump.points[0].time_from_start = Default::default();
    let mut backwards = plan.trajectory.clone();
    backwards.points[mid].time_from_start = backwards.points[mid - 1].time_from_start.clone();
    for (name, traj, q0, why) in [
        (
            "past its limit",
            &past_limit,
            READY.to_vec(),
            "outside its limits",
        ),
        ("too fast", &too_fast, READY.to_vec(), "rad/s"),
        (
            "a jump from the start",
            &jump,
            READY.to_vec(),
            "does not increase",
        ),
        (
            "time standing still",
            &backwards,
            READY.to_vec(),
            "does not increase",
        ),
    ] {
        let err = audit_trajectory(traj, &q0, &arm, &env).expect_err(name);
        assert!(err.contains(why), "{name}: {err}");
    }
    // The TCP under the table: the same plan against a table 30 cm higher.
    let high_table = SafetyEnvelope {
        table_z: 0.3,
        ..env.clone()
    };
    let err = audit_trajectory(&plan.trajectory, &READY, &arm, &high_table).unwrap_err();
    assert!(err.contains("under the clearance"), "{err}");
}

/// The audit itself, small: through the real `plan_action`, several outcomes, some plans,
/// no violation, and the same report for one thread and two.
#[test]
fn the_envelope_audit_plans_through_the_executor_and_finds_no_violation() {
    use dreamplan::nodes::envelope_audit::{run_audit, AuditOptions};
    use dreamplan::nodes::executor::ExecutorConfig;
    let config = ExecutorConfig {
        width: 96,
        height: 96,
        ..Default::default()
    };
    let opts = AuditOptions {
        actions: 400,
        scenes: 1,
        starts: 2,
        seed: 3,
        threads: 1,
    };
    let one = run_audit(&config, &opts, &|_| {});
    let two = run_audit(&config, &AuditOptions { threads: 2, ..opts }, &|_| {});
    eprintln!("{one:?}");
    assert_eq!(one.violations, 0, "{:?}", one.examples);
    assert_eq!(one.outcomes.values().sum::<u64>(), 400);
    assert!(
        one.outcomes.get("planned").copied().unwrap_or(0) >= 40,
        "{:?}",
        one.outcomes
    );
    assert!(one.outcomes.len() >= 5, "{:?}", one.outcomes);
    assert_eq!(
        one.outcomes, two.outcomes,
        "the thread count changes nothing"
    );
}

/// A tighter speed cap slows the arm instead of refusing its actions: with
/// `envelope.max_speed_fraction` 0.3 the executor plans every action it plans at the
/// default cap (1.0), each within the cap. Before session 45 it planned at the motion's own
/// speed and the envelope refused most of them as too fast.
#[test]
fn a_lower_speed_cap_slows_the_arm_instead_of_refusing_its_actions() {
    use dreamplan::nodes::envelope_audit::{run_audit, AuditOptions};
    use dreamplan::nodes::executor::ExecutorConfig;
    let opts = AuditOptions {
        actions: 150,
        scenes: 1,
        starts: 1,
        seed: 5,
        threads: 1,
    };
    let base = ExecutorConfig {
        width: 96,
        height: 96,
        ..Default::default()
    };
    let mut slow = base.clone();
    slow.envelope.max_speed_fraction = 0.3;
    let fast = run_audit(&base, &opts, &|_| {});
    let capped = run_audit(&slow, &opts, &|_| {});
    eprintln!("{fast:?}\n{capped:?}");
    let planned = |r: &dreamplan::nodes::envelope_audit::AuditReport| {
        r.outcomes.get("planned").copied().unwrap_or(0)
    };
    assert!(planned(&fast) >= 15, "{:?}", fast.outcomes);
    assert_eq!(planned(&capped), planned(&fast), "{:?}", capped.outcomes);
    assert_eq!(capped.violations, 0, "{:?}", capped.examples);
}

/// The floor is the higher of `table_z` and `envelope.table_z`: a cell that set only
/// `table_z` for a table 10 cm above the arm's base had the floor at the base before
/// session 52, and a depth reading 8 cm under the table top (a bad pixel) was planned as a
/// pick there. Now it is refused; with the table at the base it is the table itself.
#[test]
fn the_floor_follows_table_z_when_only_table_z_is_set() {
    use dreamplan::nodes::executor::{plan_action, ExecutorConfig};
    let low = 0.02;
    let camera = scene::default_camera(256, 256);
    let o = camera.world_from_camera.translation.vector;
    // Depth of a plane at z = `low` (what a broken depth map might read).
    let mut data = vec![0f32; 256 * 256];
    for v in 0..256 {
        for u in 0..256 {
            let p1 = camera.unproject(u as f64 + 0.5, v as f64 + 0.5, 1.0).coords;
            data[v * 256 + u] = ((low - o.z) / (p1.z - o.z)) as f32;
        }
    }
    let depth = DepthImage {
        width: 256,
        height: 256,
        data,
    };
    let pixel = |x: f64, y: f64| {
        let (u, v, _) = camera.project(&nalgebra::Point3::new(x, y, low)).unwrap();
        (u as f32, v as f32)
    };
    let ((su, sv), (tu, tv)) = (pixel(0.5, -0.1), pixel(0.5, 0.1));
    let action = KeypointAction {
        source_u: su,
        source_v: sv,
        target_u: tu,
        target_v: tv,
        ..Default::default()
    };
    let raised = ExecutorConfig {
        table_z: 0.1,
        ..Default::default()
    };
    assert_eq!(raised.envelope.table_z, 0.0);
    assert_eq!(raised.safety_envelope().table_z, 0.1);
    let e = plan_action(
        &raised,
        &default_arm(),
        &camera,
        &action,
        Some(&depth),
        None,
        &READY,
    )
    .unwrap_err();
    assert!(
        matches!(e, Rejection::OutsideWorkspace { which: "pick", .. }),
        "{e}"
    );
    // The table at the base: the same pixels are a pick on it.
    let at_base = ExecutorConfig::default();
    let r = plan_action(
        &at_base,
        &default_arm(),
        &camera,
        &action,
        Some(&depth),
        None,
        &READY,
    );
    assert!(
        !matches!(r, Err(Rejection::OutsideWorkspace { .. })),
        "{:?}",
        r.err()
    );
    // A higher envelope floor is kept.
    let mut higher = raised.clone();
    higher.envelope.table_z = 0.2;
    assert_eq!(higher.safety_envelope().table_z, 0.2);
}
