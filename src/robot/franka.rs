//! The arm shipped with dreamplan (`urdf/franka_like.urdf`) and its ready pose.

use super::ArmModel;

/// The URDF text of the shipped Franka-like arm.
pub const FRANKA_URDF: &str = include_str!("../../urdf/franka_like.urdf");

/// Joint positions of the ready pose (rad): gripper above the table, pointing down.
pub const READY: [f64; 7] = [
    0.0,
    -std::f64::consts::FRAC_PI_4,
    0.0,
    -3.0 * std::f64::consts::FRAC_PI_4,
    0.0,
    std::f64::consts::FRAC_PI_2,
    std::f64::consts::FRAC_PI_4,
];

/// The shipped arm, from its root (`world`) to the fingertip centre (`panda_tcp`).
pub fn default_arm() -> ArmModel {
    ArmModel::from_urdf_str(FRANKA_URDF, "world", "panda_tcp")
        .expect("the shipped URDF is valid (tested)")
}
