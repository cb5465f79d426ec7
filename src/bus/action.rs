//! The two ROS actions the executor is a client of:
//! `control_msgs/action/FollowJointTrajectory` (how a ros2_control
//! `joint_trajectory_controller` takes a trajectory and reports how it ended) and
//! `control_msgs/action/GripperCommand` (how a `GripperActionController`, a Robotiq or a
//! Franka gripper driver opens and closes the fingers, [`GripperClient`]).
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

/// How an action goal (a trajectory, a gripper command) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionOutcome {
    /// The controller reached the goal (a trajectory: action status SUCCEEDED, error code
    /// 0; a gripper command: see [`ActionOutcome::from_gripper_result`]).
    Succeeded,
    /// Rejected, aborted, cancelled or failed, with the reason (the controller's error
    /// code and string where it gave them).
    Failed(String),
}

impl ActionOutcome {
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

/// `control_msgs/GripperCommand`: where the gripper should go and with how much force.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GripperCommand {
    /// The gripper's position (its controller's unit: the finger joint's position for a
    /// `GripperActionController`, e.g. 0.04 m open for the Panda's finger, 0.8 rad closed
    /// for a Robotiq 2F-85).
    pub position: f64,
    /// The most effort the gripper may exert (N); how it is used is the controller's.
    pub max_effort: f64,
}

/// Which action a gripper's server speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GripperKind {
    /// `control_msgs/action/GripperCommand`: ros2_controllers' `GripperActionController`,
    /// Robotiq's and Franka's drivers.
    Command,
    /// `control_msgs/action/ParallelGripperCommand` (control_msgs 5, Jazzy's
    /// `parallel_gripper_action_controller`): the command is a `sensor_msgs/JointState`,
    /// here one position and the effort, under the joint's name (none when empty).
    Parallel {
        /// The gripper joint's name in the command.
        joint: String,
    },
}

/// What a gripper command is for: opening, or closing from `open_position` (the
/// controller's open position, which tells on which side of the target "short of it"
/// lies).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GripperMove {
    /// Opening.
    Open,
    /// Closing, the gripper's open position being `open_position`.
    Close {
        /// The controller's open position.
        open_position: f64,
    },
}

/// `control_msgs/action/GripperCommand`'s result: where the gripper ended and whether it
/// stalled or reached the commanded position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GripperResult {
    /// Where the gripper ended (the controller's unit).
    pub position: f64,
    /// Whether it stopped, exerting its effort, short of the position.
    pub stalled: bool,
    /// Whether it reached the commanded position.
    pub reached_goal: bool,
}

impl GripperCommand {
    /// The command as `ParallelGripperCommand`'s joint state: the position, the effort
    /// when one is set (an empty effort leaves the controller's own limit), under `joint`
    /// (no name when empty).
    pub fn joint_state(&self, joint: &str) -> crate::msg::prelude::JointState {
        crate::msg::prelude::JointState {
            name: if joint.is_empty() {
                Vec::new()
            } else {
                vec![joint.to_string()]
            },
            position: vec![self.position],
            effort: if self.max_effort > 0.0 {
                vec![self.max_effort]
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }
}

impl ActionOutcome {
    /// The outcome of a `GripperCommand` goal `command` for `what` that ended with action
    /// status `status` (`succeeded`: whether it is SUCCEEDED) and `result`.
    ///
    /// A close is a grasp when it succeeded, or ended with the fingers stopped on
    /// something: stalled (ros2_controllers' `GripperActionController` aborts such a goal
    /// unless its `allow_stalling` is set), or, without a stall, clearly short of the
    /// commanded position, by more than a tenth of the open-to-closed travel, yet having
    /// moved at least a tenth of it (franka_gripper ends a grasp whose width is outside its
    /// epsilon ABORTED, stalled or not; a driver that aborts before moving, or a goal
    /// cancelled, reports where the fingers still are, which is no grasp). A close
    /// that reaches the closed position is a success too: an empty grasp is not told from
    /// a thin cloth's. An open succeeds when it succeeded without a stall; a stall while
    /// opening (something blocks the fingers) is a failure whatever the status says (with
    /// `allow_stalling` the controller reports it SUCCEEDED).
    pub fn from_gripper_result(
        succeeded: bool,
        status: &str,
        command: GripperCommand,
        what: GripperMove,
        result: GripperResult,
    ) -> Self {
        let fail = |what: &str| Self::Failed(format!("{status}: the gripper {what}"));
        match what {
            GripperMove::Open if result.stalled => fail("stalled"),
            GripperMove::Open if succeeded => Self::Succeeded,
            GripperMove::Open => fail("did not reach the position"),
            GripperMove::Close { open_position } => {
                let travel = open_position - command.position;
                // How far short of the closed position the gripper ended, as a share of the
                // travel: 0 closed, 1 still open.
                let short = (result.position - command.position) * travel.signum() / travel.abs();
                let stopped_on_something = (0.1..0.9).contains(&short) && status != "Canceled";
                if succeeded || result.stalled || stopped_on_something {
                    Self::Succeeded
                } else {
                    fail("neither reached the position nor stopped on an object")
                }
            }
        }
    }
}

/// A client of one `GripperCommand` action server.
pub trait GripperClient: Send + Sync {
    /// Sends `command` as a goal; resolves when the server reports the result, read as
    /// [`ActionOutcome::from_gripper_result`] for `what`.
    fn command(
        &self,
        command: GripperCommand,
        what: GripperMove,
    ) -> Pin<Box<dyn Future<Output = ActionOutcome> + Send + 'static>>;
    /// Asks the server to cancel every goal this client sent.
    fn cancel_all(&self);
}

/// What an in-process `GripperCommand` server receives: the command and where to answer.
pub struct GripperGoal {
    /// The command.
    pub command: GripperCommand,
    /// The outcome goes here.
    pub answer: tokio::sync::oneshot::Sender<ActionOutcome>,
}

/// A client of one `FollowJointTrajectory` action server.
pub trait TrajectoryClient: Send + Sync {
    /// Sends `trajectory` as a goal; resolves when the controller reports the result.
    /// `accepted` is sent `()` when the controller accepts the goal (the motion starts
    /// then, not when the goal was sent: finding the server may take seconds), and dropped
    /// unsent when it does not.
    fn follow(
        &self,
        trajectory: JointTrajectory,
        accepted: tokio::sync::oneshot::Sender<()>,
    ) -> Pin<Box<dyn Future<Output = ActionOutcome> + Send + 'static>>;
    /// Asks the server to cancel every goal this client sent (the e-stop).
    fn cancel_all(&self);
}

/// What an in-process action server receives: the goal and where to answer. Dropping the
/// answer without sending reports the goal as failed ("the server dropped the goal").
pub struct TrajectoryGoal {
    /// The trajectory to follow.
    pub trajectory: JointTrajectory,
    /// The outcome goes here.
    pub answer: tokio::sync::oneshot::Sender<ActionOutcome>,
}

/// What a bus's action client hands to the thread or task that owns it (r2r's goal
/// futures are not `Send`, ros2-client's live on the bus's runtime): a goal `G` (r2r: the
/// goal as JSON; DDS: the trajectory, or the gripper command and whether it closes) with
/// where to answer (and, for a trajectory, where to say that the goal was accepted), or
/// the e-stop.
#[cfg_attr(not(any(feature = "ros2", feature = "dds-bus")), allow(dead_code))]
pub(crate) enum GoalCommand<G> {
    Follow(
        G,
        tokio::sync::oneshot::Sender<ActionOutcome>,
        Option<tokio::sync::oneshot::Sender<()>>,
    ),
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
    use super::ActionOutcome;

    /// A close that stops on the object (stalled, or clearly short of the closed
    /// position, as franka_gripper reports a grasp outside its epsilon) is a grasp,
    /// whatever the controller's `allow_stalling` made of it; an open that stalls is a
    /// failure even when reported SUCCEEDED; other goals that do not succeed say what the
    /// gripper did.
    #[test]
    fn a_gripper_closing_on_an_object_stops_short_and_that_is_a_grasp() {
        use super::{GripperCommand, GripperMove, GripperResult};
        let ok = ActionOutcome::Succeeded;
        // A Robotiq-like gripper: open 0.0, closed 0.8.
        let close = GripperCommand {
            position: 0.8,
            max_effort: 10.0,
        };
        let closing = GripperMove::Close { open_position: 0.0 };
        let r = |position, stalled, reached_goal| GripperResult {
            position,
            stalled,
            reached_goal,
        };
        let at = |s, st, c, w, res| ActionOutcome::from_gripper_result(s, st, c, w, res);
        assert_eq!(
            at(true, "Succeeded", close, closing, r(0.8, false, true)),
            ok
        );
        assert_eq!(
            at(false, "Aborted", close, closing, r(0.5, true, false)),
            ok
        );
        // Stopped at 0.5 of 0.8 without a stall: short by 0.3 > 0.08, a grasp.
        assert_eq!(
            at(false, "Aborted", close, closing, r(0.5, false, false)),
            ok
        );
        // Aborted without moving (a faulted driver reports the open position), or
        // cancelled short of the position: no grasp.
        for (status, at_) in [("Aborted", 0.0), ("Aborted", 0.05), ("Canceled", 0.5)] {
            assert!(
                matches!(
                    at(false, status, close, closing, r(at_, false, false)),
                    ActionOutcome::Failed(_)
                ),
                "{status} at {at_}"
            );
        }
        // Aborted at 0.75: short by 0.05 only, so neither a grasp nor the position.
        assert_eq!(
            at(false, "Aborted", close, closing, r(0.75, false, false)),
            ActionOutcome::Failed(
                "Aborted: the gripper neither reached the position nor stopped on an object".into()
            )
        );
        // The Panda's finger closes downwards (open 0.04, closed 0.0): the same rule.
        let panda = GripperCommand {
            position: 0.0,
            max_effort: 10.0,
        };
        let from = GripperMove::Close {
            open_position: 0.04,
        };
        assert_eq!(
            at(false, "Aborted", panda, from, r(0.015, false, false)),
            ok
        );
        assert!(matches!(
            at(false, "Aborted", panda, from, r(0.002, false, false)),
            ActionOutcome::Failed(_)
        ));
        let open = GripperCommand {
            position: 0.0,
            max_effort: 10.0,
        };
        assert_eq!(
            at(
                true,
                "Succeeded",
                open,
                GripperMove::Open,
                r(0.3, true, false)
            ),
            ActionOutcome::Failed("Succeeded: the gripper stalled".into())
        );
        assert_eq!(
            at(
                true,
                "Succeeded",
                open,
                GripperMove::Open,
                r(0.0, false, true)
            ),
            ok
        );
        assert_eq!(
            at(
                false,
                "Canceled",
                open,
                GripperMove::Open,
                r(0.4, false, false)
            ),
            ActionOutcome::Failed("Canceled: the gripper did not reach the position".into())
        );
    }

    #[test]
    fn results_map_to_one_outcome_text_whatever_the_bus() {
        assert_eq!(
            ActionOutcome::from_result(true, "Succeeded", 0, ""),
            ActionOutcome::Succeeded
        );
        // SUCCEEDED with a nonzero code is a failure, named by the code.
        assert_eq!(
            ActionOutcome::from_result(true, "Succeeded", -5, "  joint 3 off by 0.1 rad "),
            ActionOutcome::Failed(
                "Succeeded: GOAL_TOLERANCE_VIOLATED joint 3 off by 0.1 rad".into()
            )
        );
        assert_eq!(
            ActionOutcome::from_result(false, "Aborted", -4, "path"),
            ActionOutcome::Failed("Aborted: PATH_TOLERANCE_VIOLATED path".into())
        );
        // A cancelled goal with code 0 is not a success, and an empty string adds nothing.
        assert_eq!(
            ActionOutcome::from_result(false, "Canceled", 0, ""),
            ActionOutcome::Failed("Canceled: SUCCESSFUL".into())
        );
        assert_eq!(
            ActionOutcome::from_result(false, "Aborted", 7, ""),
            ActionOutcome::Failed("Aborted: UNKNOWN_ERROR_CODE".into())
        );
    }
}
