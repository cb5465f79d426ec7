//! Typed publish/subscribe between nodes.
//!
//! A node is written once against [`Bus`] and runs unchanged on the in-process bus
//! ([`LocalBus`], tokio, no ROS needed) or on ROS 2 (`RosBus`, r2r, cargo feature `ros2`).
//! Both deliver into the same bounded [`Subscriber`] queue, so keep-last semantics
//! (a slow subscriber loses its oldest messages, memory never grows) hold everywhere.

mod action;
#[cfg(feature = "dds-bus")]
pub mod dds;
mod inbox;
mod local;
mod qos;
pub mod remap;
#[cfg(feature = "ros2")]
pub mod ros;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::clock::Clock;
use crate::msg::Message;

pub use action::{
    error_code_name, ActionOutcome, GripperClient, GripperCommand, GripperGoal, GripperKind,
    GripperMove, GripperResult, TrajectoryClient, TrajectoryGoal,
};
pub(crate) use inbox::Inbox;
pub use inbox::{late_copy, AnyDurability, Subscriber, ECHO_S};
pub use local::{LocalBus, TopicUse};
pub use qos::{Durability, Qos, Reliability};

/// What can go wrong when creating or using a publisher or subscription.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The topic name breaks ROS 2 naming rules.
    #[error("invalid topic name `{topic}`: {reason}")]
    InvalidTopic {
        /// The offending name.
        topic: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The topic already carries another message type.
    #[error("topic `{topic}` carries {existing}, not {requested}")]
    TypeMismatch {
        /// The topic.
        topic: String,
        /// The type it already has.
        existing: String,
        /// The type asked for.
        requested: String,
    },
    /// The bus was shut down.
    #[error("bus is shut down (topic `{0}`)")]
    Closed(String),
    /// The ROS 2 middleware reported an error.
    #[error("ROS 2: {0}")]
    Ros(String),
    /// The bus cannot do what was asked (e.g. a ROS action on a bus without one).
    #[error("{0}")]
    Unsupported(String),
}

/// Typed publish/subscribe with explicit quality of service, plus the clock nodes stamp with.
pub trait Bus: Clone + Send + Sync + 'static {
    /// A publisher of `M` on `topic`.
    fn publisher<M: Message>(&self, topic: &str, qos: Qos) -> Result<Publisher<M>, BusError>;
    /// A subscription to `M` on `topic`; its queue holds at most `qos.depth` messages.
    fn subscribe<M: Message>(&self, topic: &str, qos: Qos) -> Result<Subscriber<M>, BusError>;
    /// A reader of a state-like topic (a goal image, camera info, the e-stop) that any
    /// publisher matches, whatever its durability and reliability: a transient-local
    /// reader, which gets a latched publisher's last message when this node starts; a
    /// reliable volatile one, which a reliable volatile publisher matches (an rclpy or
    /// rclcpp `create_publisher(…, 10)`, `ros2 topic pub`, most drivers, ros_gz_bridge),
    /// where by the DDS rules a transient-local reader matches none, and which has a lost
    /// sample sent again; and a best-effort volatile one, which a best-effort publisher
    /// matches too (the `sensor_data` profile). Before session 48 the volatile reader was
    /// best-effort only, so a reliable volatile publisher's single `/estop` sample lost
    /// under image traffic was never sent again. A message may come through several
    /// ([`AnyDurability`]).
    fn subscribe_any_durability<M: Message>(
        &self,
        topic: &str,
        depth: usize,
    ) -> Result<AnyDurability<M>, BusError> {
        let latched = Qos {
            depth: depth.max(1),
            ..Qos::latched()
        };
        Ok(AnyDurability::new(
            self.subscribe(topic, latched)?,
            self.subscribe(topic, Qos::keep_last(depth))?,
            self.subscribe(topic, Qos::stream(depth))?,
        ))
    }
    /// Topics currently known to the bus with their ROS type names.
    fn topic_types(&self) -> BTreeMap<String, String>;
    /// QoS offered by the current publishers of `topic` (empty when there are none), so
    /// recorders can match latched publishers and store what was offered.
    fn publisher_qos(&self, topic: &str) -> Vec<Qos>;
    /// The clock nodes stamp messages with (wall time, or sim time under `use_sim_time`).
    fn clock(&self) -> Clock;
    /// Closes every subscription: pending `recv` calls return `None` once drained.
    fn shutdown(&self);
    /// How long a message published now may take to reach the subscribers of this
    /// process (zero in process; a DDS round through the network stack otherwise): what
    /// a graph waits before closing the bus after its last message.
    fn settle(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Serves the ROS parameter services (`/<node>/list_parameters`, `get_parameters`,
    /// `set_parameters`, ...) of one node from its [`LiveParams`]. Buses without ROS
    /// services do nothing: their nodes keep the graph config's values.
    ///
    /// [`LiveParams`]: crate::nodes::params::LiveParams
    fn serve_parameters(
        &self,
        _params: Arc<crate::nodes::params::LiveParams>,
    ) -> Result<(), BusError> {
        Ok(())
    }
    /// A client of the `control_msgs/action/FollowJointTrajectory` server `action` (e.g.
    /// `/arm_controller/follow_joint_trajectory`). Buses without ROS actions refuse.
    fn trajectory_client(&self, action: &str) -> Result<Arc<dyn TrajectoryClient>, BusError> {
        Err(BusError::Unsupported(format!(
            "this bus has no ROS actions, so the FollowJointTrajectory action `{action}` cannot be used: publish on a trajectory topic instead (the executor's topics.trajectory)"
        )))
    }
    /// A client of the gripper action server `action` (e.g.
    /// `/gripper_controller/gripper_cmd`) speaking `kind`. Buses without ROS actions refuse.
    fn gripper_client(
        &self,
        action: &str,
        _kind: &GripperKind,
    ) -> Result<Arc<dyn GripperClient>, BusError> {
        Err(BusError::Unsupported(format!(
            "this bus has no ROS actions, so the gripper action `{action}` cannot be used: give the gripper as a finger joint of the trajectory instead (the executor's finger_joint)"
        )))
    }
}

/// Where a publisher's messages go (one implementation per bus).
pub(crate) trait Sink<M>: Send + Sync {
    fn send(&self, msg: Arc<M>) -> Result<(), BusError>;
    /// Resolves when every current subscriber has room for one more message (buses that
    /// cannot tell, like ROS 2, resolve at once).
    fn wait_room(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
    /// Subscribers of the topic, where the bus can tell; `None` otherwise.
    fn subscribers(&self) -> Option<usize> {
        None
    }
}

/// Publishes messages of type `M` on one topic.
pub struct Publisher<M> {
    topic: String,
    sink: Arc<dyn Sink<M>>,
}

impl<M: Message> Publisher<M> {
    pub(crate) fn new(topic: String, sink: Arc<dyn Sink<M>>) -> Self {
        Self { topic, sink }
    }

    /// Sends `msg` to every current subscriber (and the latch, if transient-local).
    pub fn publish(&self, msg: M) -> Result<(), BusError> {
        self.sink.send(Arc::new(msg))
    }

    /// Sends a message that is already shared, without copying it.
    pub fn publish_shared(&self, msg: Arc<M>) -> Result<(), BusError> {
        self.sink.send(msg)
    }

    /// Waits until every subscriber's queue has room, so the next publish drops nothing
    /// (in-process bus; on ROS 2 it returns at once). For "as fast as consumers take it".
    pub async fn wait_for_room(&self) {
        self.sink.wait_room().await
    }

    /// Subscribers now listening on the topic: in-process, the live ones; over DDS, the
    /// readers in the participant's discovery database (this process's, and other
    /// processes' once discovery has announced them); on r2r, the subscriptions rcl has
    /// matched. `None` where the bus cannot tell.
    pub fn subscriber_count(&self) -> Option<usize> {
        self.sink.subscribers()
    }

    /// The topic this publisher writes to.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl<M> Clone for Publisher<M> {
    fn clone(&self) -> Self {
        Self {
            topic: self.topic.clone(),
            sink: self.sink.clone(),
        }
    }
}

/// The subscriptions a network bus feeds from its own tasks (r2r, DDS): each becomes a
/// [`Subscriber`] whose feeding task ends when it is dropped, and whose queue
/// [`Feeds::close_all`] closes at shutdown.
#[cfg(any(feature = "ros2", feature = "dds-bus"))]
#[derive(Default)]
pub(crate) struct Feeds {
    inboxes: std::sync::Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

#[cfg(any(feature = "ros2", feature = "dds-bus"))]
impl Feeds {
    /// The subscriber of `inbox` on `topic`, fed by the task `feeder`.
    pub(crate) fn subscriber<M: Message>(
        &self,
        topic: String,
        inbox: Arc<Inbox<M>>,
        feeder: tokio::task::JoinHandle<()>,
    ) -> Subscriber<M> {
        /// Aborts the feeding task when the subscriber is dropped.
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let weak = Arc::downgrade(&inbox);
        self.inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(move || {
                if let Some(i) = weak.upgrade() {
                    i.close();
                }
            }));
        Subscriber::new(topic, inbox, Some(Box::new(AbortOnDrop(feeder))))
    }

    /// Closes every subscription's queue: pending `recv` calls return `None` once drained.
    pub(crate) fn close_all(&self) {
        for close in self
            .inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            close();
        }
    }
}

/// Checks a topic name against ROS 2's rules and makes it absolute (`image` → `/image`).
pub fn resolve_topic(topic: &str) -> Result<String, BusError> {
    let bad = |reason| {
        Err(BusError::InvalidTopic {
            topic: topic.to_string(),
            reason,
        })
    };
    if topic.is_empty() || topic == "/" {
        return bad("empty");
    }
    if topic.ends_with('/') {
        return bad("must not end with '/'");
    }
    if topic.contains("//") {
        return bad("must not contain '//'");
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '~')
    {
        return bad("only letters, digits, '_', '/' and '~' are allowed");
    }
    if topic
        .split('/')
        .any(|part| part.chars().next().is_some_and(|c| c.is_ascii_digit()))
    {
        return bad("a name token must not start with a digit");
    }
    Ok(if topic.starts_with('/') {
        topic.to_string()
    } else {
        format!("/{topic}")
    })
}
