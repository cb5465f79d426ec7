//! Pick-and-place plans: within the URDF's position and velocity limits, and the TCP is
//! at the pick and place points, pointing down, when the gripper acts.

use dreamplan::msg::trajectory_msgs::JointTrajectory;
use dreamplan::robot::franka::READY;
use dreamplan::robot::motion::{check_limits, plan_pick_place, LimitViolation, PickPlaceParams};
use dreamplan::robot::ArmModel;

use nalgebra::{Point3, Vector3};

const URDF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/urdf/franka_like.urdf");

struct Rng(u64);
impl Rng {
    fn f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }
    /// A point on the table workspace in front of the robot (base frame, table at z = 0).
    fn table_point(&mut self) -> Point3<f64> {
        Point3::new(
            self.range(0.3, 0.7),
            self.range(-0.3, 0.3),
            self.range(0.0, 0.05),
        )
    }
}

fn panda() -> ArmModel {
    ArmModel::from_urdf_file(URDF, "panda_link0", "panda_tcp").unwrap()
}

fn positions_at(traj: &JointTrajectory, t: f64) -> Vec<f64> {
    traj.points
        .iter()
        .find(|p| (p.time_from_start.as_secs_f64() - t).abs() < 1e-6)
        .unwrap_or_else(|| panic!("no point at t = {t}"))
        .positions
        .clone()
}

/// Largest |v| / limit over commanded velocities and mean velocities between points.
fn max_velocity_ratio(traj: &JointTrajectory, model: &ArmModel) -> f64 {
    let limits: Vec<f64> = model.movable_joints().map(|j| j.velocity).collect();
    let mut ratio = 0.0_f64;
    for (k, p) in traj.points.iter().enumerate() {
        for (j, v) in p.velocities.iter().enumerate() {
            ratio = ratio.max(v.abs() / limits[j]);
        }
        if k > 0 {
            let prev = &traj.points[k - 1];
            let dt = p.time_from_start.as_secs_f64() - prev.time_from_start.as_secs_f64();
            for (j, limit) in limits.iter().enumerate() {
                ratio = ratio.max((p.positions[j] - prev.positions[j]).abs() / dt / limit);
            }
        }
    }
    ratio
}

#[test]
fn random_pick_and_place_stays_within_limits_and_hits_the_points() {
    let model = panda();
    let params = PickPlaceParams::default();
    let mut rng = Rng(7);
    let (mut max_ratio, mut max_miss, mut max_tilt) = (0.0_f64, 0.0_f64, 0.0_f64);
    let mut durations = Vec::new();
    for trial in 0..60 {
        let (pick, place) = (rng.table_point(), rng.table_point());
        let plan = plan_pick_place(&model, &READY, &pick, &place, &params)
            .unwrap_or_else(|e| panic!("trial {trial}: {pick} → {place}: {e}"));
        let traj = &plan.trajectory;
        check_limits(traj, &model).unwrap_or_else(|e| panic!("trial {trial}: {e}"));
        let names: Vec<String> = (1..=7).map(|i| format!("panda_joint{i}")).collect();
        assert_eq!(traj.joint_names, names);
        assert!(traj.points.iter().all(|p| p.velocities.len() == 7));
        assert!(plan.grasp_time_s < plan.release_time_s);
        let end = traj.points.last().unwrap().time_from_start.as_secs_f64();
        assert!(plan.release_time_s < end);
        // The arm starts at q0 and ends at rest.
        let first = &traj.points[0];
        assert_eq!(first.time_from_start.as_secs_f64(), 0.0);
        assert!(first
            .positions
            .iter()
            .zip(READY)
            .all(|(a, b)| (a - b).abs() < 1e-12));
        assert!(traj
            .points
            .last()
            .unwrap()
            .velocities
            .iter()
            .all(|v| v.abs() < 1e-9));
        for (t, target) in [(plan.grasp_time_s, pick), (plan.release_time_s, place)] {
            let tcp = model.fk(&positions_at(traj, t));
            max_miss = max_miss.max((tcp.translation.vector - target.coords).norm());
            let z = tcp.rotation * Vector3::z();
            max_tilt = max_tilt.max(z.angle(&-Vector3::z()));
        }
        max_ratio = max_ratio.max(max_velocity_ratio(traj, &model));
        durations.push(end);
    }
    let mean = durations.iter().sum::<f64>() / durations.len() as f64;
    eprintln!(
        "60 plans: max TCP miss {max_miss:.2e} m, max tilt {max_tilt:.2e} rad, \
         max joint velocity / limit {max_ratio:.3}, mean duration {mean:.2} s"
    );
    assert!(max_miss <= 1e-3, "{max_miss}");
    assert!(max_tilt <= 1e-3, "{max_tilt}");
    assert!(max_ratio <= 1.0, "{max_ratio}");
}

#[test]
fn a_fast_request_is_slowed_to_the_joint_limits() {
    let model = panda();
    let params = PickPlaceParams {
        cartesian_speed_m_s: 50.0,
        cartesian_accel_m_s2: 500.0,
        joint_speed_fraction: 1.0,
        joint_accel_rad_s2: 500.0,
        ..PickPlaceParams::default()
    };
    let plan = plan_pick_place(
        &model,
        &READY,
        &Point3::new(0.35, -0.25, 0.02),
        &Point3::new(0.65, 0.28, 0.0),
        &params,
    )
    .unwrap();
    check_limits(&plan.trajectory, &model).unwrap();
    let ratio = max_velocity_ratio(&plan.trajectory, &model);
    eprintln!("fast request: max joint velocity / limit {ratio:.3}");
    assert!(
        ratio <= params.velocity_margin + 1e-6 && ratio > 0.5,
        "{ratio}"
    );
}

#[test]
fn check_limits_reports_violations() {
    let model = panda();
    let plan = plan_pick_place(
        &model,
        &READY,
        &Point3::new(0.5, 0.1, 0.01),
        &Point3::new(0.4, -0.2, 0.01),
        &PickPlaceParams::default(),
    )
    .unwrap();
    let mut traj = plan.trajectory.clone();
    traj.points[3].positions[3] = 0.5; // joint 4 upper limit is -0.0698
    assert!(matches!(
        check_limits(&traj, &model),
        Err(LimitViolation::Position { point: 3, ref joint, .. }) if joint == "panda_joint4"
    ));
    let mut traj = plan.trajectory.clone();
    traj.points[5].velocities[6] = 3.0;
    assert!(matches!(
        check_limits(&traj, &model),
        Err(LimitViolation::Velocity { point: 5, ref joint, .. }) if joint == "panda_joint7"
    ));
    let mut traj = plan.trajectory.clone();
    traj.points[4].time_from_start = traj.points[3].time_from_start.clone();
    assert!(matches!(
        check_limits(&traj, &model),
        Err(LimitViolation::Time { point: 4 })
    ));
    let mut traj = plan.trajectory;
    traj.joint_names.swap(0, 1);
    assert!(matches!(
        check_limits(&traj, &model),
        Err(LimitViolation::JointNames { .. })
    ));
}
