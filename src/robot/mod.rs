//! The robot arm: a URDF serial chain, its kinematics, and the pick-and-place motion that
//! the executor sends and the simulator and renderer play back.
//!
//! Why our own kinematics: the planner's actions are pick and place *points*; turning
//! them into joint trajectories needs forward kinematics (rendering the arm, checking
//! where the gripper is), a geometric Jacobian and a joint-limit-aware inverse kinematics
//! that is fast, deterministic and panic-free on any URDF a user hands us. The chain is
//! a handful of isometries on `nalgebra` (already the simulator's maths) and `urdf-rs`
//! parses the XML; the whole thing is a few hundred lines that we can test against an
//! independent implementation (the `k` crate, a dev-dependency only) instead of pulling a
//! second nalgebra version into the product.
//!
//! Frames follow the house naming: `base_from_tcp` maps TCP coordinates into the chain's
//! base link. Nothing here does I/O except [`ArmModel::from_urdf_file`], a convenience
//! for the CLI and node configs.

mod ik;
mod model;
pub mod motion;

pub mod franka;
pub mod safety;

pub use ik::{IkError, IkOptions};
pub use model::{ArmModel, ChainJoint, JointKind, UrdfError};
