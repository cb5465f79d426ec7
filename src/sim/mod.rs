//! The built-in world: deformable objects (rope, cloth, plush toy) on a table, a kinematic
//! gripper point, and the three benchmark tasks.
//!
//! (Engine comparison and calibration tables: filled in below.)

pub mod bodies;
mod collide;
pub mod metrics;
pub mod rng;
pub mod tasks;
mod world;

pub use bodies::{Chain, ObjectKind};
pub use world::{Object, SimParams, World};
