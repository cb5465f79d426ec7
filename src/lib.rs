//! dreamplan: fine-tune vision-language robot planners for deformable objects inside a
//! learned video world model (DreamPlan, arXiv 2603.16860), as ROS 2 nodes in Rust.
//!
//! Start with `ARCHITECTURE.md`. Layers: [`msg`] (message mirrors + CDR), [`bus`]
//! (typed pub/sub, in-process or ROS 2), [`nodes`] (node logic written once against a
//! bus), [`config`] (YAML configs), [`runner`] (a node graph in one process).
#![warn(missing_docs)]

#[cfg(all(feature = "ros2-dds", feature = "ros2-dds-humble"))]
compile_error!(
    "features `ros2-dds` (Iron/Jazzy graph layout, a default one) and `ros2-dds-humble` exclude each other: for Humble build with `--no-default-features --features ros2-dds-humble,videoio`"
);
#[cfg(all(
    feature = "dds-bus",
    not(any(feature = "ros2-dds", feature = "ros2-dds-humble"))
))]
compile_error!("feature `dds-bus` names no ROS 2 distribution: enable `ros2-dds` (Iron, Jazzy and later) or `ros2-dds-humble` instead");

pub mod bag;
pub mod bus;
pub mod clock;
pub mod config;
pub mod device;
pub mod launch;
pub mod msg;
pub mod nodes;
pub mod planner;
pub mod plot;
pub mod render;
pub mod robot;
pub mod ros_args;
pub mod runner;
pub mod sim;
pub mod train;
pub mod verifier;
pub mod vision;
pub mod vlm;
pub mod world_model;
