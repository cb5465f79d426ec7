//! The arm model: FK agrees with an independent implementation (the `k` crate, its own
//! URDF loader and FK) on urdf/franka_like.urdf, IK round-trips across the workspace, the
//! Jacobian matches finite differences, and bad URDFs give typed errors.

use dreamplan::robot::{ArmModel, IkError, IkOptions, JointKind, UrdfError};
use std::f64::consts::{FRAC_PI_2, FRAC_PI_4};

use nalgebra::{Isometry3, Translation3, UnitQuaternion, Vector3};

const URDF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/urdf/franka_like.urdf");

/// splitmix64, so the tests need no RNG crate and are reproducible.
struct Rng(u64);
impl Rng {
    fn f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn q(&mut self, model: &ArmModel) -> Vec<f64> {
        model
            .movable_joints()
            .map(|j| j.lower + (j.upper - j.lower) * self.f64())
            .collect()
    }
}

fn panda() -> ArmModel {
    ArmModel::from_urdf_file(URDF, "world", "panda_tcp").expect("franka_like.urdf loads")
}

/// (position error m, rotation error rad) between our pose and k's (other nalgebra).
fn pose_diff(ours: &Isometry3<f64>, theirs: &k::nalgebra::Isometry3<f64>) -> (f64, f64) {
    let t = theirs.translation.vector;
    let q = theirs.rotation;
    let theirs = Isometry3::from_parts(
        Translation3::new(t.x, t.y, t.z),
        UnitQuaternion::new_normalize(nalgebra::Quaternion::new(q.w, q.i, q.j, q.k)),
    );
    (
        (ours.translation.vector - theirs.translation.vector).norm(),
        ours.rotation.angle_to(&theirs.rotation),
    )
}

#[test]
fn panda_chain_has_the_published_shape() {
    let model = panda();
    assert_eq!(model.dof(), 7);
    let names: Vec<String> = (1..=7).map(|i| format!("panda_joint{i}")).collect();
    assert_eq!(model.joint_names(), names);
    assert!(model
        .movable_joints()
        .all(|j| j.kind == JointKind::Revolute));
    let j4 = model.movable_joints().nth(3).unwrap();
    assert_eq!((j4.lower, j4.upper, j4.velocity), (-3.0718, -0.0698, 2.175));
    let j7 = model.movable_joints().nth(6).unwrap();
    assert_eq!(j7.velocity, 2.61);
    // Zero pose (outside joint 4's limits, but FK does not care): the Panda's flange is
    // at x = a4 + a7 = 0.088, z = 0.333 + 0.316 + 0.384 - 0.107 - 0.1034 (pointing down).
    let tcp = model.fk(&[0.0; 7]);
    let p = tcp.translation.vector;
    assert!((p - Vector3::new(0.088, 0.0, 0.333 + 0.316 + 0.384 - 0.107 - 0.1034)).norm() < 1e-9);
    // Ready pose points the gripper down.
    let ready = [
        0.0,
        -FRAC_PI_4,
        0.0,
        -3.0 * FRAC_PI_4,
        0.0,
        FRAC_PI_2,
        FRAC_PI_4,
    ];
    let z = model.fk(&ready).rotation * Vector3::z();
    assert!((z + Vector3::z()).norm() < 1e-5, "{z}");
}

#[test]
fn fk_matches_k_on_1000_random_configurations() {
    let model = panda();
    let chain = k::Chain::<f64>::from_urdf_file(URDF).expect("k loads the URDF");
    assert_eq!(chain.dof(), 7);
    let mut rng = Rng(1);
    let (mut max_p, mut max_r) = (0.0_f64, 0.0_f64);
    for _ in 0..1000 {
        let q = rng.q(&model);
        chain.set_joint_positions(&q).unwrap();
        chain.update_transforms();
        for (link, base_from_link) in model.link_poses(&q) {
            let node = chain
                .find_link(link)
                .unwrap_or_else(|| panic!("k has no link {link}"));
            let (dp, dr) = pose_diff(&base_from_link, &node.world_transform().unwrap());
            max_p = max_p.max(dp);
            max_r = max_r.max(dr);
        }
        let tip = chain
            .find_link("panda_tcp")
            .unwrap()
            .world_transform()
            .unwrap();
        let (dp, dr) = pose_diff(&model.fk(&q), &tip);
        max_p = max_p.max(dp);
        max_r = max_r.max(dr);
    }
    eprintln!("max FK difference vs k: {max_p:.3e} m, {max_r:.3e} rad");
    assert!(max_p <= 1e-6 && max_r <= 1e-6, "{max_p} m, {max_r} rad");
}

#[test]
fn jacobian_matches_finite_differences() {
    let model = panda();
    let mut rng = Rng(2);
    let h = 1e-6;
    let mut max_err = 0.0_f64;
    for _ in 0..200 {
        let q = rng.q(&model);
        let jac = model.jacobian(&q);
        let base_from_tip = model.fk(&q);
        for c in 0..7 {
            let mut qp = q.clone();
            qp[c] += h;
            let moved = model.fk(&qp);
            let lin = (moved.translation.vector - base_from_tip.translation.vector) / h;
            let ang = (moved.rotation * base_from_tip.rotation.inverse()).scaled_axis() / h;
            let col = jac.column(c);
            max_err = max_err
                .max((col.fixed_rows::<3>(0) - lin).norm())
                .max((col.fixed_rows::<3>(3) - ang).norm());
        }
    }
    eprintln!("max |J - finite difference| = {max_err:.3e}");
    assert!(max_err < 1e-5, "{max_err}");
}

#[test]
fn ik_round_trips_across_the_workspace() {
    let model = panda();
    let mut rng = Rng(3);
    let opts = IkOptions::default();
    let trials = 500;
    let (mut ok, mut max_p, mut max_r) = (0, 0.0_f64, 0.0_f64);
    let mut failures = Vec::new();
    for _ in 0..trials {
        let target = model.fk(&rng.q(&model));
        let seed = rng.q(&model);
        match model.ik(&target, &seed, &opts) {
            Ok(q) => {
                for (qi, j) in q.iter().zip(model.movable_joints()) {
                    assert!(*qi >= j.lower && *qi <= j.upper, "{} = {qi}", j.name);
                }
                let reached = model.fk(&q);
                max_p = max_p.max((reached.translation.vector - target.translation.vector).norm());
                max_r = max_r.max(reached.rotation.angle_to(&target.rotation));
                ok += 1;
            }
            Err(e) => failures.push(e),
        }
    }
    let rate = ok as f64 / trials as f64;
    eprintln!(
        "IK: {ok}/{trials} converged ({:.1}%), max error {max_p:.2e} m, {max_r:.2e} rad; failures: {:?}",
        100.0 * rate,
        failures.first()
    );
    assert!(max_p <= 1e-3 && max_r <= 1e-3);
    assert!(rate >= 0.98, "success rate {rate}");
}

#[test]
fn ik_reports_unreachable_and_bad_seeds() {
    let model = panda();
    let seed = [
        0.0,
        -FRAC_PI_4,
        0.0,
        -3.0 * FRAC_PI_4,
        0.0,
        FRAC_PI_2,
        FRAC_PI_4,
    ];
    let far = Isometry3::translation(3.0, 0.0, 0.5);
    assert!(matches!(
        model.ik(&far, &seed, &IkOptions::default()),
        Err(IkError::Unreachable { .. })
    ));
    let near = model.fk(&seed);
    assert!(matches!(
        model.ik(&near, &seed[..3], &IkOptions::default()),
        Err(IkError::WrongSeedLength {
            expected: 7,
            got: 3
        })
    ));
    // Within the reach bound, but straight under the base: joint 2 cannot fold that far.
    let inside = Isometry3::from_parts(
        Translation3::new(0.0, 0.0, -0.6),
        UnitQuaternion::from_axis_angle(&Vector3::y_axis(), 1.0),
    );
    let opts = IkOptions {
        restarts: 3,
        ..IkOptions::default()
    };
    match model.ik(&inside, &seed, &opts) {
        Err(IkError::DidNotConverge {
            position_error_m,
            attempts,
            best,
            ..
        }) => {
            assert_eq!(attempts, 4);
            assert!(position_error_m > 1e-6);
            assert_eq!(best.len(), 7);
        }
        other => panic!("expected DidNotConverge, got {other:?}"),
    }
}

const TWO_LINK: &str = r#"<robot name="t">
  <link name="a"/><link name="b"/><link name="c"/><link name="d"/>
  <joint name="j1" type="revolute"><parent link="a"/><child link="b"/>
    <axis xyz="0 0 1"/><limit lower="-1" upper="1" effort="1" velocity="1"/></joint>
  <joint name="j2" type="JOINT2TYPE"><parent link="b"/><child link="c"/>
    <origin xyz="1 0 0"/><axis xyz="AXIS"/><limit lower="-1" upper="1" effort="1" velocity="1"/></joint>
  <joint name="j3" type="fixed"><parent link="a"/><child link="d"/></joint>
</robot>"#;

fn two_link(kind: &str, axis: &str) -> String {
    TWO_LINK.replace("JOINT2TYPE", kind).replace("AXIS", axis)
}

#[test]
fn bad_urdfs_give_typed_errors_naming_the_element() {
    let ok = two_link("prismatic", "1 0 0");
    let model = ArmModel::from_urdf_str(&ok, "a", "c").unwrap();
    assert_eq!(model.dof(), 2);
    assert!(
        (model.fk(&[0.0, 0.5]).translation.vector - Vector3::new(1.5, 0.0, 0.0)).norm() < 1e-12
    );

    let err = |r: Result<ArmModel, UrdfError>| r.expect_err("must fail");
    match err(ArmModel::from_urdf_str(&ok, "a", "nope")) {
        UrdfError::UnknownLink(l) => assert_eq!(l, "nope"),
        e => panic!("{e:?}"),
    }
    match err(ArmModel::from_urdf_str(&ok, "c", "d")) {
        UrdfError::NotAChain { base, tip } => assert_eq!((base.as_str(), tip.as_str()), ("c", "d")),
        e => panic!("{e:?}"),
    }
    match err(ArmModel::from_urdf_str(
        &two_link("floating", "1 0 0"),
        "a",
        "c",
    )) {
        UrdfError::UnsupportedJoint { joint, kind } => {
            assert_eq!((joint.as_str(), kind.as_str()), ("j2", "floating"))
        }
        e => panic!("{e:?}"),
    }
    match err(ArmModel::from_urdf_str(
        &two_link("revolute", "0 0 0"),
        "a",
        "c",
    )) {
        UrdfError::BadAxis(j) => assert_eq!(j, "j2"),
        e => panic!("{e:?}"),
    }
    let dangling = ok.replace(r#"<child link="d"/>"#, r#"<child link="ghost"/>"#);
    match err(ArmModel::from_urdf_str(&dangling, "a", "c")) {
        UrdfError::UnknownLink(l) => assert_eq!(l, "ghost"),
        e => panic!("{e:?}"),
    }
    let two_parents = ok.replace(r#"<child link="d"/>"#, r#"<child link="c"/>"#);
    assert!(matches!(
        err(ArmModel::from_urdf_str(&two_parents, "a", "c")),
        UrdfError::NotATree(_)
    ));
    let inverted = ok.replace(
        r#"lower="-1" upper="1" effort="1" velocity="1"/></joint>
  <joint name="j3""#,
        r#"lower="1" upper="-1" effort="1" velocity="1"/></joint>
  <joint name="j3""#,
    );
    assert!(matches!(
        err(ArmModel::from_urdf_str(&inverted, "a", "c")),
        UrdfError::BadValue { joint, .. } if joint == "j2"
    ));
    assert!(matches!(
        err(ArmModel::from_urdf_str("<robot><link", "a", "c")),
        UrdfError::Parse(_)
    ));
    assert!(matches!(
        err(ArmModel::from_urdf_file("/no/such/file.urdf", "a", "c")),
        UrdfError::Parse(_)
    ));
}
