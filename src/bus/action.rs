//! `control_msgs/action/FollowJointTrajectory`: how a ros2_control
//! `joint_trajectory_controller` takes a trajectory and reports how it ended.
//!
//! The executor can send its trajectories as goals of this action instead of publishing
//! them on a topic: the controller then says when the motion has ended and whether it
//! succeeded, instead of the executor assuming it from the trajectory's duration. The
//! action is a bus facility ([`Bus::trajectory_client`](super::Bus::trajectory_client)):
//! on ROS 2 (r2r) and over DDS it is the real action client; in-process it is served by
//! whoever calls [`LocalBus::serve_trajectories`](super::LocalBus::serve_trajectories)
//! (tests, or a simulated controller).

use std::future::Future;
use std::pin::Pin;

use crate::msg::prelude::JointTrajectory;

/// How a trajectory goal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrajectoryOutcome {
    /// The controller reached the goal (action status SUCCEEDED, error code 0).
    Succeeded,
    /// Rejected, aborted, cancelled or failed, with the reason (the controller's error
    /// code and string where it gave them).
    Failed(String),
}

/// A client of one `FollowJointTrajectory` action server.
pub trait TrajectoryClient: Send + Sync {
    /// Sends `trajectory` as a goal; resolves when the controller reports the result.
    fn follow(
        &self,
        trajectory: JointTrajectory,
    ) -> Pin<Box<dyn Future<Output = TrajectoryOutcome> + Send + 'static>>;
    /// Asks the server to cancel every goal this client sent (the e-stop).
    fn cancel_all(&self);
}

/// What an in-process action server receives: the goal and where to answer. Dropping the
/// answer without sending reports the goal as failed ("the server dropped the goal").
pub struct TrajectoryGoal {
    /// The trajectory to follow.
    pub trajectory: JointTrajectory,
    /// The outcome goes here.
    pub answer: tokio::sync::oneshot::Sender<TrajectoryOutcome>,
}

/// `FollowJointTrajectory_Result.error_code` values (control_msgs), as text.
pub fn error_code_name(code: i64) -> &'static str {
    match code {
        0 => "SUCCESSFUL",
        -1 => "INVALID_GOAL",
        -2 => "INVALID_JOINTS",
        -3 => "OLD_HEADER_TIMESTAMP",
        -4 => "PATH_TOLERANCE_VIOLATED",
        -5 => "GOAL_TOLERANCE_VIOLATED",
        _ => "UNKNOWN_ERROR_CODE",
    }
}
