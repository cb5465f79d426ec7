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

impl TrajectoryOutcome {
    /// The outcome of a goal that ended with action status `status` (its name, e.g.
    /// `Succeeded`, `Aborted`; `succeeded`: whether it is SUCCEEDED) and the controller's
    /// result: success only when the status is SUCCEEDED *and* the error code is 0 (a controller may report
    /// SUCCEEDED with a tolerance violation in the code). Otherwise the reason reads
    /// `"<status>: <error code name> <error string>"`. Every action client (r2r, DDS)
    /// maps results through here, so the executor sees the same text from either bus.
    pub fn from_result(succeeded: bool, status: &str, error_code: i64, error_string: &str) -> Self {
        if succeeded && error_code == 0 {
            return Self::Succeeded;
        }
        let text = error_string.trim();
        let mut why = format!("{status}: {}", error_code_name(error_code));
        if !text.is_empty() {
            why.push(' ');
            why.push_str(text);
        }
        Self::Failed(why)
    }
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

/// What a bus's trajectory client hands to the thread or task that owns its action client
/// (r2r's goal futures are not `Send`, ros2-client's live on the bus's runtime): a goal
/// `G` (r2r: the goal as JSON; DDS: the trajectory) with where to answer, or the e-stop.
#[cfg_attr(not(any(feature = "ros2", feature = "dds-bus")), allow(dead_code))]
pub(crate) enum GoalCommand<G> {
    Follow(G, tokio::sync::oneshot::Sender<TrajectoryOutcome>),
    CancelAll,
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

#[cfg(test)]
mod tests {
    use super::TrajectoryOutcome;

    #[test]
    fn results_map_to_one_outcome_text_whatever_the_bus() {
        assert_eq!(
            TrajectoryOutcome::from_result(true, "Succeeded", 0, ""),
            TrajectoryOutcome::Succeeded
        );
        // SUCCEEDED with a nonzero code is a failure, named by the code.
        assert_eq!(
            TrajectoryOutcome::from_result(true, "Succeeded", -5, "  joint 3 off by 0.1 rad "),
            TrajectoryOutcome::Failed(
                "Succeeded: GOAL_TOLERANCE_VIOLATED joint 3 off by 0.1 rad".into()
            )
        );
        assert_eq!(
            TrajectoryOutcome::from_result(false, "Aborted", -4, "path"),
            TrajectoryOutcome::Failed("Aborted: PATH_TOLERANCE_VIOLATED path".into())
        );
        // A cancelled goal with code 0 is not a success, and an empty string adds nothing.
        assert_eq!(
            TrajectoryOutcome::from_result(false, "Canceled", 0, ""),
            TrajectoryOutcome::Failed("Canceled: SUCCESSFUL".into())
        );
        assert_eq!(
            TrajectoryOutcome::from_result(false, "Aborted", 7, ""),
            TrajectoryOutcome::Failed("Aborted: UNKNOWN_ERROR_CODE".into())
        );
    }
}
