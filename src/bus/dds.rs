//! The ROS 2 bus over DDS with no ROS install (cargo feature `ros2-dds`), on the crate
//! `ros2-client` (pure-Rust RustDDS). The only module that imports it.
//!
//! Every node becomes a real ROS 2 participant: topic `/x` is the DDS topic `rt/x`, the
//! type `pkg/msg/Name` is `pkg::msg::dds_::Name_`, samples are plain little-endian CDR
//! (XCDR1), so `rclcpp`/`rclpy` nodes on `rmw_cyclonedds_cpp` or `rmw_fastrtps_cpp`, and a
//! bare Cyclone DDS peer, exchange messages with it (`tests/dds_interop.rs` checks the
//! wire against Cyclone DDS from PyPI). Our message mirrors serialise through serde with
//! the same `cdr-encoding` crate RustDDS uses, so the bytes on the wire are our codec's
//! (a unit test pins it).
//!
//! Parameter services: each graph node is also a ROS node of its own name (`/executor`)
//! serving `list_parameters`, `get_parameters`, `get_parameter_types`,
//! `describe_parameters`, `set_parameters` and `set_parameters_atomically` (all or none,
//! [`LiveParams::set_all`]) from its [`LiveParams`], in the request/reply
//! mapping of `rmw_cyclonedds_cpp` (topics `rq/<node>/<service>Request` and
//! `rr/<node>/<service>Reply`, each sample led by the client's `{guid, sequence}` header,
//! which the reply carries back). ros2-client's own parameter services speak only the
//! Fast DDS mapping, which Cyclone-based ROS tools do not reach, so they stay off. Each
//! accepted set is published on `/parameter_events` ([`ParamEvents`]).
//!
//! Actions: [`Bus::trajectory_client`] (`control_msgs/action/FollowJointTrajectory`) and
//! [`Bus::gripper_client`] (`control_msgs/action/GripperCommand`) are ros2-client's action
//! client, in the same Cyclone request/reply mapping, each on a ROS node
//! (`<node>_trajectory_client`, `<node>_gripper_client`) in a DDS participant of its own,
//! whose spinner tracks discovery so that a goal is sent only once the server's
//! `send_goal` and `get_result` services are matched. The goal, result and feedback types
//! are mirrored here in the Humble/Jazzy layout ([`fjt`], [`gripper`]);
//! `tests/dds_interop.rs` has a Cyclone DDS peer serve both actions with its own IDL
//! types. No action is served. `/clock` drives the clock
//! under `use_sim_time` through our own subscription, as on the r2r bus.
//!
//! The domain is `ROS_DOMAIN_ID` (0 when unset). `ROS_LOCALHOST_ONLY=1` restricts RustDDS
//! to 127.0.0.1; known limit (RustDDS 0.15): so restricted, it receives from a peer that
//! advertises only loopback addresses (a Cyclone DDS on `lo`) but does not send to it,
//! because its route selection keeps loopback locators for peers it has confirmed to be
//! on the same host. Unrestricted (the default), both directions work
//! (`tests/dds_interop.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use ros2_client::dds::rustdds::DomainParticipantBuilder;
use ros2_client::{Context, MessageTypeName, Name, NodeName, NodeOptions, QosProfile};

use super::action::GoalCommand;
use super::{
    resolve_topic, Bus, BusError, Durability, Feeds, Inbox, Publisher, Qos, Reliability, Sink,
    Subscriber,
};
use crate::clock::Clock;
use crate::msg::{self, Message};
use crate::nodes::params::LiveParams;

fn dds_err(e: impl std::fmt::Display) -> BusError {
    BusError::Ros(format!("DDS: {e}"))
}

fn qos_profile(qos: Qos) -> QosProfile {
    let p = QosProfile::publisher_default().history(ros2_client::qos::History::KeepLast {
        depth: qos.depth.max(1),
    });
    let p = match qos.reliability {
        // A full send window waits 20 ms; then a sensor stream's sample is dropped with a
        // warning (`DdsSink::send`), any other's publish fails.
        Reliability::Reliable => p.reliability_reliable(ros2_client::qos::WhenFull::Wait(
            std::time::Duration::from_millis(20),
        )),
        Reliability::BestEffort => p.reliability_best_effort(),
    };
    p.durability(match qos.durability {
        Durability::Volatile => ros2_client::qos::Durability::Volatile,
        Durability::TransientLocal => ros2_client::qos::Durability::TransientLocal,
    })
}

/// A DDS topic name as ROS 2 names it (`rt/x` → `/x`); `None` for DDS topics that are
/// not ROS topics (services `rq/`/`rr/`, discovery info).
fn ros_topic(dds: &str) -> Option<String> {
    dds.strip_prefix("rt/").map(|t| format!("/{t}"))
}

/// A DDS type name as ROS 2 names it (`pkg::msg::dds_::Name_` → `pkg/msg/Name`).
fn ros_type(dds: &str) -> Option<String> {
    let (pkg, rest) = dds.split_once("::msg::dds_::")?;
    Some(format!("{pkg}/msg/{}", rest.strip_suffix('_')?))
}

/// `pkg/msg/Name` → ros2-client's type name.
fn type_name<M: Message>() -> Result<MessageTypeName, BusError> {
    let mut parts = M::TYPE_NAME.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(pkg), Some("msg"), Some(name), None) => Ok(MessageTypeName::new(pkg, name)),
        _ => Err(BusError::Ros(format!(
            "type name `{}` is not pkg/msg/Name",
            M::TYPE_NAME
        ))),
    }
}

/// A shared message serialised as the message itself (publishing without a copy).
#[derive(Debug)]
struct Shared<M>(Arc<M>);

impl<M: serde::Serialize> serde::Serialize for Shared<M> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (*self.0).serialize(s)
    }
}

/// Message types whose samples stream at a rate, each replacing the last: a dropped one
/// costs a frame, not a decision.
fn is_sensor_stream(type_name: &str) -> bool {
    matches!(
        type_name,
        "sensor_msgs/msg/Image" | "sensor_msgs/msg/CameraInfo" | "sensor_msgs/msg/JointState"
    )
}

struct DdsSink<M: Message> {
    publisher: ros2_client::Publisher<Shared<M>>,
    closed: Arc<AtomicBool>,
    topic: String,
    /// The participant's discovery database: who reads the topic.
    context: Context,
    /// Samples dropped because a reliable reader's send window was full.
    dropped: AtomicU64,
}

impl<M: Message> Sink<M> for DdsSink<M> {
    fn send(&self, msg: Arc<M>) -> Result<(), BusError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed(self.topic.clone()));
        }
        match self.publisher.publish(Shared(msg)) {
            Ok(()) => Ok(()),
            // On a sensor stream (images, camera info, joint states) a reliable reader that
            // does not keep up fills the send window: this sample is dropped, the next one
            // replaces it, instead of failing the node (before session 46 the publish error
            // stopped the sim, and with it the whole graph). Said at the first drop and each
            // time the count doubles. On any other topic (an action, a trajectory, an
            // event, a latched goal) losing the sample would lose a decision: the error
            // stands.
            Err(ros2_client::WriteError::WouldBlock { .. }) if is_sensor_stream(M::TYPE_NAME) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        "DDS: `{}`: {n} sample(s) dropped so far: a reliable reader does not keep up",
                        self.topic
                    );
                }
                Ok(())
            }
            Err(e) => Err(BusError::Ros(format!(
                "DDS publish on `{}`: {e:?}",
                self.topic
            ))),
        }
    }

    /// The readers of the topic in the participant's discovery database: this process's
    /// own and, once discovery (SEDP) has announced them, other processes'.
    fn subscribers(&self) -> Option<usize> {
        let dds_topic = format!("rt/{}", self.topic.trim_start_matches('/'));
        Some(
            self.context
                .domain_participant()
                .discovered_readers()
                .iter()
                .filter(|r| r.subscription_topic_data.topic_name() == &dds_topic)
                .count(),
        )
    }
}

struct Inner {
    // Kept alive for the bus's lifetime: dropping the context ends the participant.
    context: Context,
    node: Mutex<ros2_client::Node>,
    closed: Arc<AtomicBool>,
    clock: Clock,
    feeds: Feeds,
    /// Topics this bus publishes or subscribes, with their ROS type names and the QoS of
    /// its own publishers.
    topics: Mutex<BTreeMap<String, (String, Vec<Qos>)>>,
    /// The ROS nodes that host each graph node's parameter services (kept alive).
    param_nodes: Mutex<Vec<ros2_client::Node>>,
    /// The namespace of this process's ROS nodes.
    namespace: String,
    /// The name of this process's ROS node.
    node_name: String,
    /// Where the participant joined (each action client joins alike with its own).
    domain_id: u16,
    localhost_only: bool,
    /// The clock follows `/clock`: each node's read-only `use_sim_time` parameter.
    use_sim_time: bool,
}

/// A ROS 2 participant over DDS (one per process).
#[derive(Clone)]
pub struct DdsBus {
    inner: Arc<Inner>,
}

/// Where a [`DdsBus`] joins the ROS 2 graph.
#[derive(Debug, Clone)]
pub struct DdsOptions {
    /// ROS domain id (`ROS_DOMAIN_ID`).
    pub domain_id: u16,
    /// Only 127.0.0.1 (`ROS_LOCALHOST_ONLY=1`): discovery and data stay on this host.
    pub localhost_only: bool,
    /// Node name.
    pub node: String,
    /// Node namespace (`/` for none).
    pub namespace: String,
    /// Take the clock from `/clock` (`use_sim_time`).
    pub use_sim_time: bool,
}

impl DdsOptions {
    /// Options from the environment ROS 2 users set: `ROS_DOMAIN_ID` (0 when unset),
    /// `ROS_LOCALHOST_ONLY`; a malformed domain id is an error naming it.
    pub fn from_env(node: &str) -> Result<Self, BusError> {
        let domain_id = match std::env::var("ROS_DOMAIN_ID") {
            Ok(s) if !s.trim().is_empty() => s
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|d| *d <= 232)
                .ok_or_else(|| {
                    BusError::Ros(format!("ROS_DOMAIN_ID `{s}` is not a domain id (0–232)"))
                })?,
            _ => 0,
        };
        let localhost_only = std::env::var("ROS_LOCALHOST_ONLY").is_ok_and(|v| v.trim() == "1");
        Ok(Self {
            domain_id,
            localhost_only,
            node: node.to_string(),
            namespace: "/".into(),
            use_sim_time: false,
        })
    }
}

impl DdsBus {
    /// Joins the domain as node `opts.node`. Must run inside a tokio runtime.
    pub fn new(opts: &DdsOptions) -> Result<Self, BusError> {
        let context = ros_context(opts.domain_id, opts.localhost_only)?;
        let node = ros_node(&context, &opts.namespace, &opts.node)?;
        let clock = if opts.use_sim_time {
            Clock::sim(Default::default())
        } else {
            Clock::system()
        };
        let bus = Self {
            inner: Arc::new(Inner {
                context,
                node: Mutex::new(node),
                closed: Arc::new(AtomicBool::new(false)),
                clock: clock.clone(),
                feeds: Feeds::default(),
                topics: Mutex::new(BTreeMap::new()),
                param_nodes: Mutex::new(Vec::new()),
                namespace: opts.namespace.clone(),
                node_name: opts.node.clone(),
                domain_id: opts.domain_id,
                localhost_only: opts.localhost_only,
                use_sim_time: opts.use_sim_time,
            }),
        };
        if opts.use_sim_time {
            let mut sub = bus.subscribe::<msg::rosgraph_msgs::Clock>("/clock", Qos::clock())?;
            tokio::spawn(async move {
                while let Some(c) = sub.recv().await {
                    clock.set(c.clock.clone());
                }
            });
        }
        Ok(bus)
    }

    fn topic<M: Message>(
        &self,
        topic: &str,
        qos: Qos,
    ) -> Result<ros2_client::dds::rustdds::Topic, BusError> {
        let name =
            Name::parse(topic).map_err(|e| BusError::Ros(format!("topic `{topic}`: {e:?}")))?;
        let node = self.inner.node.lock().unwrap_or_else(|e| e.into_inner());
        node.create_topic(&name, type_name::<M>()?, &qos_profile(qos))
            .map_err(dds_err)
    }

    /// What opening a publisher (`published` = its QoS) or a subscription of `M` on
    /// `topic` starts with: the resolved name and its DDS topic, once the name, the bus's
    /// state and the topic's type are checked.
    fn open<M: Message>(
        &self,
        topic: &str,
        qos: Qos,
        published: Option<Qos>,
    ) -> Result<(String, ros2_client::dds::rustdds::Topic), BusError> {
        let topic = resolve_topic(topic)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed(topic));
        }
        self.note_topic::<M>(&topic, published)?;
        let t = self.topic::<M>(&topic, qos)?;
        Ok((topic, t))
    }

    fn note_topic<M: Message>(&self, topic: &str, published: Option<Qos>) -> Result<(), BusError> {
        let mut topics = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        let entry = topics
            .entry(topic.to_string())
            .or_insert_with(|| (M::TYPE_NAME.to_string(), Vec::new()));
        if entry.0 != M::TYPE_NAME {
            return Err(BusError::TypeMismatch {
                topic: topic.to_string(),
                existing: entry.0.clone(),
                requested: M::TYPE_NAME.to_string(),
            });
        }
        entry.1.extend(published);
        Ok(())
    }
}

impl DdsBus {
    /// A client of the action `A` under `action`, on a ROS node of its own
    /// (`<node>_<suffix>`) in a DDS participant of its own, with the task that sends its
    /// goals; the channel feeds that task. Its own participant, because the node's spinner
    /// (which tells the client that the server's services are matched) reads the
    /// participant's status events from one channel that every spinner of the participant
    /// takes from: with a trajectory and a gripper client on one participant, each
    /// spinner took some of the other's match events, and a goal waited in vain for a
    /// server that was there (found in session 49).
    fn action_client<A: ClientAction>(
        &self,
        action: &str,
        suffix: &str,
    ) -> Result<tokio::sync::mpsc::UnboundedSender<GoalCommand<A::Input>>, BusError> {
        let name = resolve_topic(action)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed(name));
        }
        let action_name =
            Name::parse(&name).map_err(|e| BusError::Ros(format!("action `{name}`: {e:?}")))?;
        let context = ros_context(self.inner.domain_id, self.inner.localhost_only)?;
        let mut node = ros_node(
            &context,
            &self.inner.namespace,
            &format!("{}_{suffix}", self.inner.node_name),
        )?;
        // rcl_action's defaults: reliable services and feedback; the status is latched by
        // the server (transient-local), read here as volatile, which matches either.
        let reliable = qos_profile(Qos::keep_last(10));
        let client = node
            .create_action_client::<A::Goal, A::Result, A::Feedback>(
                ros2_client::ServiceMapping::Cyclone,
                &action_name,
                &ros2_client::ActionTypeName::new("control_msgs", A::TYPE),
                ros2_client::action::ActionClientQosPolicies {
                    goal_service: reliable.clone(),
                    result_service: reliable.clone(),
                    cancel_service: reliable.clone(),
                    feedback_subscription: reliable.clone(),
                    status_subscription: qos_profile(Qos::keep_last(1)),
                },
            )
            .map_err(|e| dds_err(format!("{} client `{name}`: {e:?}", A::TYPE)))?;
        let spinner = node.spinner().map_err(|e| dds_err(format!("{e:?}")))?;
        tokio::spawn(async move {
            if let Err(e) = spinner.spin().await {
                tracing::warn!("the {} client's spinner ended: {e:?}", A::TYPE);
            }
        });
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run_goals::<A>(
            (context, node),
            client,
            rx,
            name,
            self.inner.closed.clone(),
        ));
        Ok(tx)
    }
}

impl Bus for DdsBus {
    fn publisher<M: Message>(&self, topic: &str, qos: Qos) -> Result<Publisher<M>, BusError> {
        let (topic, t) = self.open::<M>(topic, qos, Some(qos))?;
        let publisher = self
            .inner
            .node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .create_publisher::<Shared<M>>(&t, Some(qos_profile(qos)))
            .map_err(dds_err)?;
        let sink = DdsSink {
            publisher,
            closed: self.inner.closed.clone(),
            topic: topic.clone(),
            context: self.inner.context.clone(),
            dropped: AtomicU64::new(0),
        };
        Ok(Publisher::new(topic, Arc::new(sink)))
    }

    fn subscribe<M: Message>(&self, topic: &str, qos: Qos) -> Result<Subscriber<M>, BusError> {
        let (topic, t) = self.open::<M>(topic, qos, None)?;
        // Always an explicit profile: ros2-client's default subscription is best-effort
        // and would never match a reliable writer's history.
        let sub = self
            .inner
            .node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .create_subscription::<M>(&t, Some(qos_profile(qos)))
            .map_err(dds_err)?;
        let inbox = Inbox::new(qos.depth, self.inner.clock.clone());
        let feeder = {
            let inbox = inbox.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                let stream = sub.async_stream();
                futures::pin_mut!(stream);
                while let Some(r) = stream.next().await {
                    match r {
                        Ok((m, _)) => {
                            if !inbox.push(Arc::new(m)) {
                                break;
                            }
                        }
                        // A sample that does not decode (a peer's malformed CDR) is
                        // dropped with a warning; the subscription stays up.
                        Err(e) => {
                            tracing::warn!(%topic, "dropping a sample that does not decode: {e:?}")
                        }
                    }
                }
                inbox.close();
            })
        };
        Ok(self.inner.feeds.subscriber(topic, inbox, feeder))
    }

    /// This bus's own topics and every ROS topic discovered on the domain.
    fn topic_types(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .inner
            .context
            .discovered_topics()
            .into_iter()
            .filter_map(|t| Some((ros_topic(&t.name)?, ros_type(&t.type_name)?)))
            .collect();
        for (t, (ty, _)) in self
            .inner
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.insert(t.clone(), ty.clone());
        }
        out
    }

    /// The QoS of this bus's publishers of `topic` and of the writers discovered on the
    /// domain (DDS discovery carries no history depth: those report depth 1).
    fn publisher_qos(&self, topic: &str) -> Vec<Qos> {
        use ros2_client::dds::rustdds::{policy, RTPSEntity as _};
        let Ok(topic) = resolve_topic(topic) else {
            return Vec::new();
        };
        let mut out = self
            .inner
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&topic)
            .map(|(_, q)| q.clone())
            .unwrap_or_default();
        let own = self.inner.context.domain_participant().guid().prefix;
        for w in self.inner.context.domain_participant().discovered_writers() {
            let d = &w.publication_topic_data;
            if d.key.prefix == own || ros_topic(&d.topic_name).as_deref() != Some(topic.as_str()) {
                continue;
            }
            out.push(Qos {
                depth: 1,
                reliability: match d.reliability {
                    Some(policy::Reliability::Reliable { .. }) => Reliability::Reliable,
                    _ => Reliability::BestEffort,
                },
                durability: match d.durability {
                    Some(policy::Durability::Volatile) | None => Durability::Volatile,
                    Some(_) => Durability::TransientLocal,
                },
            });
        }
        out
    }

    fn clock(&self) -> Clock {
        self.inner.clock.clone()
    }

    fn serve_parameters(&self, params: Arc<LiveParams>) -> Result<(), BusError> {
        if params.node().is_empty() {
            return Ok(());
        }
        // Every rclcpp node has it (`ros2 param get /node use_sim_time`, `ros2 param dump`);
        // ours is the bus's, set at start (session 53: before, "parameter not set").
        params.declare_read_only(
            "use_sim_time",
            serde_yaml::Value::Bool(self.inner.use_sim_time),
        );
        let ns = &self.inner.namespace;
        let mut node = ros_node(&self.inner.context, ns, params.node())?;
        let fqn = format!("{}/{}", ns.trim_end_matches('/'), params.node());
        // Created before the services, so a client that sees them has seen it too.
        let events = Arc::new(ParamEvents {
            writer: node
                .create_publisher(
                    &self.inner.context.get_parameter_events_topic(),
                    // rcl's parameter-events profile: reliable, volatile, keep last 1000.
                    Some(qos_profile(Qos::keep_last(1000))),
                )
                .map_err(dds_err)?,
            node: fqn.clone(),
            clock: self.inner.clock.clone(),
        });
        // rclcpp's services default: reliable, volatile, keep last 10.
        let qos = qos_profile(Qos::keep_last(10));
        macro_rules! serve {
            ($service:literal, $type:literal, $req:ty, $resp:ty, $answer:expr) => {{
                let server = node
                    .create_server::<$req, $resp>(
                        ros2_client::ServiceMapping::Cyclone,
                        &Name::new(&fqn, $service).map_err(|e| dds_err(format!("{e:?}")))?,
                        &ros2_client::ServiceTypeName::new("rcl_interfaces", $type),
                        qos.clone(),
                        qos.clone(),
                    )
                    .map_err(dds_err)?;
                let (params, closed) = (params.clone(), self.inner.closed.clone());
                let answer = $answer;
                tokio::spawn(async move {
                    while !closed.load(Ordering::Acquire) {
                        match server.async_receive_request().await {
                            Ok((id, req)) => {
                                let resp = answer(&params, req);
                                if let Err(e) = server.async_send_response(id, resp).await {
                                    tracing::warn!(node = %params.node(), "{} reply: {e:?}", $service);
                                }
                            }
                            Err(e) => {
                                tracing::warn!(node = %params.node(), "{} request: {e:?}", $service)
                            }
                        }
                    }
                });
            }};
        }
        use ros2_client::rcl_interfaces as rcl;
        serve!(
            "list_parameters",
            "ListParameters",
            rcl::ListParametersRequest,
            rcl::ListParametersResponse,
            |p: &LiveParams, req: rcl::ListParametersRequest| list_parameters(p, &req)
        );
        serve!(
            "get_parameters",
            "GetParameters",
            rcl::GetParametersRequest,
            rcl::GetParametersResponse,
            |p: &LiveParams, req: rcl::GetParametersRequest| rcl::GetParametersResponse {
                values: req
                    .names
                    .iter()
                    .map(|n| to_ros(p.get(n).as_ref()))
                    .collect(),
            }
        );
        serve!(
            "get_parameter_types",
            "GetParameterTypes",
            rcl::GetParameterTypesRequest,
            rcl::GetParameterTypesResponse,
            |p: &LiveParams, req: rcl::GetParameterTypesRequest| rcl::GetParameterTypesResponse {
                values: req
                    .names
                    .iter()
                    .map(|n| to_ros(p.get(n).as_ref()).ptype)
                    .collect(),
            }
        );
        serve!(
            "describe_parameters",
            "DescribeParameters",
            rcl::DescribeParametersRequest,
            rcl::DescribeParametersResponse,
            |p: &LiveParams, req: rcl::DescribeParametersRequest| {
                rcl::DescribeParametersResponse {
                    values: req
                        .names
                        .iter()
                        .map(|n| ros2_client::parameters::raw::ParameterDescriptor {
                            name: n.clone(),
                            r#type: to_ros(p.get(n).as_ref()).ptype,
                            description: String::new(),
                            additional_constraints: if p.is_live(n) {
                                "applied while the node runs".into()
                            } else {
                                "read when the node starts".into()
                            },
                            read_only: !p.is_live(n),
                            dynamic_typing: false,
                            floating_point_range: Vec::new(),
                            integer_range: Vec::new(),
                        })
                        .collect(),
                }
            }
        );
        let ev = events.clone();
        serve!(
            "set_parameters",
            "SetParameters",
            rcl::SetParametersRequest,
            rcl::SetParametersResponse,
            move |p: &LiveParams, req: rcl::SetParametersRequest| rcl::SetParametersResponse {
                results: req
                    .parameter
                    .iter()
                    .map(|q| {
                        let r = from_ros(&q.value)
                            .ok_or_else(|| format!("`{}`: no value given", q.name))
                            .and_then(|v| p.set(&q.name, v));
                        match &r {
                            Ok(()) => {
                                tracing::info!(node = %p.node(), "parameter {} set", q.name);
                                // As rclcpp: one event per parameter set.
                                ev.changed(p, [q.name.as_str()]);
                            }
                            Err(e) => {
                                tracing::warn!(node = %p.node(), "parameter set refused: {e}")
                            }
                        }
                        ros2_client::parameters::raw::SetParametersResult {
                            successful: r.is_ok(),
                            reason: r.err().unwrap_or_default(),
                        }
                    })
                    .collect(),
            }
        );
        serve!(
            "set_parameters_atomically",
            "SetParametersAtomically",
            rcl::SetParametersRequest,
            rcl::SetParametersAtomicallyResponse,
            move |p: &LiveParams, req: rcl::SetParametersRequest| {
                let r = req
                    .parameter
                    .iter()
                    .map(|q| {
                        from_ros(&q.value)
                            .map(|v| (q.name.clone(), v))
                            .ok_or_else(|| format!("`{}`: no value given", q.name))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .and_then(|changes| p.set_all(changes));
                let names = req
                    .parameter
                    .iter()
                    .map(|q| q.name.as_str())
                    .collect::<Vec<_>>();
                match &r {
                    Ok(()) => {
                        tracing::info!(node = %p.node(), "parameters {names:?} set atomically");
                        events.changed(p, names.iter().copied());
                    }
                    Err(e) => tracing::warn!(node = %p.node(), "atomic parameter set refused: {e}"),
                }
                rcl::SetParametersAtomicallyResponse {
                    result: ros2_client::parameters::raw::SetParametersResult {
                        successful: r.is_ok(),
                        reason: r.err().unwrap_or_default(),
                    },
                }
            }
        );
        self.inner
            .param_nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(node);
        Ok(())
    }

    fn settle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }

    fn trajectory_client(
        &self,
        action: &str,
    ) -> Result<Arc<dyn super::TrajectoryClient>, BusError> {
        let commands = self.action_client::<FollowTrajectory>(action, "trajectory_client")?;
        Ok(Arc::new(DdsTrajectoryClient { commands }))
    }

    fn gripper_client(
        &self,
        action: &str,
        kind: &super::GripperKind,
    ) -> Result<Arc<dyn super::GripperClient>, BusError> {
        Ok(match kind {
            super::GripperKind::Command => {
                let commands = self.action_client::<CommandGripper>(action, "gripper_client")?;
                Arc::new(DdsGripperClient { commands })
            }
            super::GripperKind::Parallel { joint } => {
                let commands =
                    self.action_client::<CommandParallelGripper>(action, "gripper_client")?;
                Arc::new(DdsParallelGripperClient {
                    commands,
                    joint: joint.clone(),
                })
            }
        })
    }

    fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.feeds.close_all();
    }
}

/// `control_msgs/action/FollowJointTrajectory`'s goal, result and feedback as they are on
/// the wire in Humble and Jazzy (control_msgs 4.x): the goal carries, after the joint
/// trajectory, a multi-DOF trajectory and per-joint and per-component tolerances, all
/// sent empty (the controller's defaults apply).
pub(crate) mod fjt {
    use crate::msg::geometry_msgs::{Transform, Vector3};
    use crate::msg::prelude::{Duration, Header, JointTrajectory, JointTrajectoryPoint};
    use serde::{Deserialize, Serialize};

    /// `geometry_msgs/Twist`.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct Twist {
        pub linear: Vector3,
        pub angular: Vector3,
    }

    /// `trajectory_msgs/MultiDOFJointTrajectoryPoint`.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct MultiDofPoint {
        pub transforms: Vec<Transform>,
        pub velocities: Vec<Twist>,
        pub accelerations: Vec<Twist>,
        pub time_from_start: Duration,
    }

    /// `trajectory_msgs/MultiDOFJointTrajectory`.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct MultiDofTrajectory {
        pub header: Header,
        pub joint_names: Vec<String>,
        pub points: Vec<MultiDofPoint>,
    }

    /// `control_msgs/JointTolerance`.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct Tolerance {
        pub name: String,
        pub position: f64,
        pub velocity: f64,
        pub acceleration: f64,
    }

    /// `control_msgs/JointComponentTolerance`.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct ComponentTolerance {
        pub joint_name: String,
        pub component: u16,
        pub position: f64,
        pub velocity: f64,
        pub acceleration: f64,
    }

    /// `FollowJointTrajectory_Goal`.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct Goal {
        pub trajectory: JointTrajectory,
        pub multi_dof_trajectory: MultiDofTrajectory,
        pub path_tolerance: Vec<Tolerance>,
        pub component_path_tolerance: Vec<ComponentTolerance>,
        pub goal_tolerance: Vec<Tolerance>,
        pub component_goal_tolerance: Vec<ComponentTolerance>,
        pub goal_time_tolerance: Duration,
    }

    /// `FollowJointTrajectory_Result`.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct Result {
        pub error_code: i32,
        pub error_string: String,
    }

    /// `FollowJointTrajectory_Feedback` (received and not used).
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct Feedback {
        pub header: Header,
        pub joint_names: Vec<String>,
        pub desired: JointTrajectoryPoint,
        pub actual: JointTrajectoryPoint,
        pub error: JointTrajectoryPoint,
        pub multi_dof_joint_names: Vec<String>,
        pub multi_dof_desired: MultiDofPoint,
        pub multi_dof_actual: MultiDofPoint,
        pub multi_dof_error: MultiDofPoint,
    }

    impl ros2_client::Message for Goal {}
    impl ros2_client::Message for Result {}
    impl ros2_client::Message for Feedback {}
}

/// How long a goal waits for the controller's action services to be discovered, and for
/// its acceptance once sent.
const ACTION_SERVER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Unanswered goals whose ids each cancel request also names (the newest).
const LOST_GOALS_KEPT: usize = 8;

/// An action the DDS bus is a client of: its `control_msgs` type, the goal, result and
/// feedback mirrors, and how the executor's request becomes a goal and a result an
/// outcome. One goal task ([`run_goals`]) serves both.
trait ClientAction: 'static {
    /// What the executor asks for.
    type Input: Send + Sync + 'static;
    type Goal: ros2_client::Message + Clone + Send + Sync + 'static;
    type Result: ros2_client::Message + Clone + Send + Sync + 'static;
    type Feedback: ros2_client::Message + Send + Sync + 'static;
    /// The action's name in `control_msgs`.
    const TYPE: &'static str;
    fn goal(input: &Self::Input) -> Self::Goal;
    /// The outcome of a goal for `input` that ended with `status` and `result`.
    fn outcome(
        input: &Self::Input,
        status: ros2_client::action::GoalStatusEnum,
        result: &Self::Result,
    ) -> super::ActionOutcome;
}

/// `FollowJointTrajectory`: the trajectory, all tolerances empty.
struct FollowTrajectory;

impl ClientAction for FollowTrajectory {
    type Input = crate::msg::prelude::JointTrajectory;
    type Goal = fjt::Goal;
    type Result = fjt::Result;
    type Feedback = fjt::Feedback;
    const TYPE: &'static str = "FollowJointTrajectory";
    fn goal(trajectory: &Self::Input) -> fjt::Goal {
        fjt::Goal {
            trajectory: trajectory.clone(),
            ..Default::default()
        }
    }
    fn outcome(
        _: &Self::Input,
        status: ros2_client::action::GoalStatusEnum,
        r: &fjt::Result,
    ) -> super::ActionOutcome {
        super::ActionOutcome::from_result(
            matches!(status, ros2_client::action::GoalStatusEnum::Succeeded),
            &format!("{status:?}"),
            i64::from(r.error_code),
            &r.error_string,
        )
    }
}

/// `GripperCommand`: the command, and what it is for.
struct CommandGripper;

impl ClientAction for CommandGripper {
    type Input = (super::GripperCommand, super::GripperMove);
    type Goal = gripper::Goal;
    type Result = gripper::Result;
    type Feedback = gripper::Result;
    const TYPE: &'static str = "GripperCommand";
    fn goal((command, _): &Self::Input) -> gripper::Goal {
        gripper::Goal { command: *command }
    }
    fn outcome(
        (command, what): &Self::Input,
        status: ros2_client::action::GoalStatusEnum,
        r: &gripper::Result,
    ) -> super::ActionOutcome {
        gripper_outcome(
            status,
            *command,
            *what,
            r.position,
            r.stalled,
            r.reached_goal,
        )
    }
}

/// What a gripper action's end means ([`super::ActionOutcome::from_gripper_result`]),
/// whichever of the two actions reported it.
fn gripper_outcome(
    status: ros2_client::action::GoalStatusEnum,
    command: super::GripperCommand,
    what: super::GripperMove,
    position: f64,
    stalled: bool,
    reached_goal: bool,
) -> super::ActionOutcome {
    super::ActionOutcome::from_gripper_result(
        matches!(status, ros2_client::action::GoalStatusEnum::Succeeded),
        &format!("{status:?}"),
        command,
        what,
        super::GripperResult {
            position,
            stalled,
            reached_goal,
        },
    )
}

/// `ParallelGripperCommand`: the command as a joint state, and what it is for.
struct CommandParallelGripper;

impl ClientAction for CommandParallelGripper {
    type Input = (super::GripperCommand, super::GripperMove, String);
    type Goal = gripper::ParallelGoal;
    type Result = gripper::ParallelResult;
    type Feedback = gripper::ParallelFeedback;
    const TYPE: &'static str = "ParallelGripperCommand";
    fn goal((command, _, joint): &Self::Input) -> gripper::ParallelGoal {
        gripper::ParallelGoal {
            command: command.joint_state(joint),
        }
    }
    fn outcome(
        (command, what, _): &Self::Input,
        status: ros2_client::action::GoalStatusEnum,
        r: &gripper::ParallelResult,
    ) -> super::ActionOutcome {
        let position = r.state.position.first().copied().unwrap_or(f64::NAN);
        gripper_outcome(status, *command, *what, position, r.stalled, r.reached_goal)
    }
}

/// `control_msgs/action/GripperCommand`'s goal and result (the feedback has the result's
/// fields) as they are on the wire.
pub(crate) mod gripper {
    use serde::{Deserialize, Serialize};

    /// `GripperCommand_Goal`: one `control_msgs/GripperCommand`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Goal {
        pub command: crate::bus::GripperCommand,
    }

    /// `GripperCommand_Result` (and `_Feedback`).
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct Result {
        pub position: f64,
        pub effort: f64,
        pub stalled: bool,
        pub reached_goal: bool,
    }

    impl ros2_client::Message for Goal {}
    impl ros2_client::Message for Result {}

    /// `ParallelGripperCommand_Goal`: a `sensor_msgs/JointState` command.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ParallelGoal {
        pub command: crate::msg::prelude::JointState,
    }

    /// `ParallelGripperCommand_Result`.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct ParallelResult {
        pub state: crate::msg::prelude::JointState,
        pub stalled: bool,
        pub reached_goal: bool,
    }

    /// `ParallelGripperCommand_Feedback` (received and not used).
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct ParallelFeedback {
        pub state: crate::msg::prelude::JointState,
    }

    impl ros2_client::Message for ParallelGoal {}
    impl ros2_client::Message for ParallelResult {}
    impl ros2_client::Message for ParallelFeedback {}
}

/// The executor's side of a DDS action client: goals and cancels go to its task.
type Commands<I> = tokio::sync::mpsc::UnboundedSender<GoalCommand<I>>;

/// Sends `input` to the goal task; resolves with its outcome.
fn send_goal<I: Send + 'static>(
    commands: &Commands<I>,
    input: I,
    accepted: Option<tokio::sync::oneshot::Sender<()>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = super::ActionOutcome> + Send>> {
    use super::ActionOutcome::Failed;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = commands.send(GoalCommand::Follow(input, tx, accepted));
    Box::pin(async move {
        if sent.is_err() {
            return Failed("the action client has stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Failed("the goal was given up for a newer one".into()))
    })
}

struct DdsTrajectoryClient {
    commands: Commands<crate::msg::prelude::JointTrajectory>,
}

impl super::TrajectoryClient for DdsTrajectoryClient {
    fn follow(
        &self,
        trajectory: crate::msg::prelude::JointTrajectory,
        accepted: tokio::sync::oneshot::Sender<()>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = super::ActionOutcome> + Send>> {
        send_goal(&self.commands, trajectory, Some(accepted))
    }

    fn cancel_all(&self) {
        let _ = self.commands.send(GoalCommand::CancelAll);
    }
}

struct DdsGripperClient {
    commands: Commands<(super::GripperCommand, super::GripperMove)>,
}

impl super::GripperClient for DdsGripperClient {
    fn command(
        &self,
        command: super::GripperCommand,
        what: super::GripperMove,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = super::ActionOutcome> + Send>> {
        send_goal(&self.commands, (command, what), None)
    }

    fn cancel_all(&self) {
        let _ = self.commands.send(GoalCommand::CancelAll);
    }
}

struct DdsParallelGripperClient {
    commands: Commands<(super::GripperCommand, super::GripperMove, String)>,
    joint: String,
}

impl super::GripperClient for DdsParallelGripperClient {
    fn command(
        &self,
        command: super::GripperCommand,
        what: super::GripperMove,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = super::ActionOutcome> + Send>> {
        send_goal(&self.commands, (command, what, self.joint.clone()), None)
    }

    fn cancel_all(&self) {
        let _ = self.commands.send(GoalCommand::CancelAll);
    }
}

type Client<A> = ros2_client::action::ActionClient<
    <A as ClientAction>::Goal,
    <A as ClientAction>::Result,
    <A as ClientAction>::Feedback,
>;

/// The action task: one goal at a time (a new goal gives up the one before, whose
/// outcome the executor no longer waits for: the result service's replies are read from
/// one stream, so two waiting goals could take each other's), cancels on request; ends
/// when the client is dropped or the bus shuts down.
async fn run_goals<A: ClientAction>(
    // The context is held for the participant's lifetime.
    (_context, node): (Context, ros2_client::Node),
    client: Client<A>,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<GoalCommand<A::Input>>,
    name: String,
    closed: Arc<AtomicBool>,
) {
    let active: Mutex<Option<ros2_client::action::GoalId>> = Mutex::new(None);
    // Goals the controller did not answer in time: reported failed, yet the request went
    // out and a late acceptance (or an answer that was lost) would run them. Each cancel
    // request goes to them too (the last few), so an e-stop still stops them; before
    // session 52 their ids were lost and nothing could cancel them.
    let lost: Mutex<Vec<ros2_client::action::GoalId>> = Mutex::new(Vec::new());
    // Cancel requests so far: a goal compares it with the count when it was given, so that
    // a cancel that comes before the controller accepted the goal (while the server is
    // looked for, or the goal request is under way) still cancels it. Before session 42
    // such a cancel found no goal id and was lost: the arm ran the whole trajectory.
    let cancels = AtomicU64::new(0);
    let mut current: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> =
        None;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            c = commands.recv() => match c {
                None => return,
                Some(GoalCommand::Follow(input, answer, accepted)) => {
                    let given = (&cancels, cancels.load(Ordering::Acquire));
                    current = Some(Box::pin(follow_goal::<A>(&node, &client, &name, (&active, &lost), given, input, (answer, accepted))));
                }
                Some(GoalCommand::CancelAll) => {
                    cancels.fetch_add(1, Ordering::AcqRel);
                    let id = active.lock().unwrap_or_else(|e| e.into_inner()).take();
                    let lost_ids = lost.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    for id in id.into_iter().chain(lost_ids) {
                        if let Err(e) = client.cancel_goal(id) {
                            tracing::warn!(action = %name, "cancel request not sent: {e:?}");
                        }
                    }
                }
            },
            _ = async { current.as_mut().expect("guarded").await }, if current.is_some() => {
                current = None;
            }
            _ = tick.tick() => {
                if closed.load(Ordering::Acquire) {
                    return;
                }
            }
        }
    }
}

/// One goal: waits for the server (at most [`ACTION_SERVER_WAIT`]), sends the goal, and
/// answers with the result the server reports. `(cancels, given)`: the cancel count and
/// its value when the goal was given; a cancel since then stops the goal before it is
/// sent, or cancels it as soon as it is accepted.
async fn follow_goal<A: ClientAction>(
    node: &ros2_client::Node,
    client: &Client<A>,
    name: &str,
    (active, lost): (
        &Mutex<Option<ros2_client::action::GoalId>>,
        &Mutex<Vec<ros2_client::action::GoalId>>,
    ),
    (cancels, given): (&AtomicU64, u64),
    input: A::Input,
    (answer, accepted): (
        tokio::sync::oneshot::Sender<super::ActionOutcome>,
        Option<tokio::sync::oneshot::Sender<()>>,
    ),
) {
    use super::ActionOutcome::Failed;
    let outcome = async {
        let discovered = futures::future::join(
            client.goal_client().wait_for_service(node),
            client.result_client().wait_for_service(node),
        );
        if tokio::time::timeout(ACTION_SERVER_WAIT, discovered)
            .await
            .is_err()
        {
            return Failed(format!(
                "no {} server `{name}` found within {} s (is the controller running, in this ROS domain?)",
                A::TYPE,
                ACTION_SERVER_WAIT.as_secs()
            ));
        }
        let cancelled = || cancels.load(Ordering::Acquire) != given;
        if cancelled() {
            return Failed("cancelled before it was sent".into());
        }
        // The goal's id is known from the request on (`async_send_goal` kept it to
        // itself until the answer): a goal that is not answered in time can be cancelled.
        let (request, id) = match client.send_goal(A::goal(&input)) {
            Ok(r) => r,
            Err(e) => return Failed(format!("goal not sent: {e:?}")),
        };
        let deadline = tokio::time::Instant::now() + ACTION_SERVER_WAIT;
        let response = loop {
            match client.receive_goal_response(request) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => return Failed(format!("no answer to the goal: {e:?}")),
            }
            if tokio::time::Instant::now() >= deadline {
                if let Err(e) = client.cancel_goal(id) {
                    tracing::warn!(action = %name, "cancel request not sent: {e:?}");
                }
                let mut lost = lost.lock().unwrap_or_else(|e| e.into_inner());
                lost.push(id);
                let n = lost.len();
                lost.drain(..n.saturating_sub(LOST_GOALS_KEPT));
                return Failed(format!(
                    "`{name}` did not answer the goal within {} s (a cancel was sent, and goes again with the next e-stop)",
                    ACTION_SERVER_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        if !response.accepted {
            return Failed("goal rejected by the controller".into());
        }
        if let Some(a) = accepted {
            let _ = a.send(());
        }
        *active.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        if cancelled() {
            active.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Err(e) = client.cancel_goal(id) {
                tracing::warn!(action = %name, "cancel request not sent: {e:?}");
            }
        }
        let result = client.async_request_result(id).await;
        active.lock().unwrap_or_else(|e| e.into_inner()).take();
        match result {
            Err(e) => Failed(format!("no result: {e}")),
            Ok((status, r)) => A::outcome(&input, status, &r),
        }
    }
    .await;
    let _ = answer.send(outcome);
}

/// A graph node's `/parameter_events` writer: what `rqt_reconfigure`, `ros2 topic echo
/// /parameter_events` and rclcpp's `ParameterEventHandler` follow. Each accepted set is
/// published as the parameters' values after it, stamped by the bus clock (sim time under
/// `use_sim_time`), as rclcpp does; refused sets publish nothing.
struct ParamEvents {
    writer: ros2_client::Publisher<ros2_client::parameters::raw::ParameterEvent>,
    /// The node's fully qualified name, as in the events of rclcpp (`/lab/executor`).
    node: String,
    clock: Clock,
}

impl ParamEvents {
    fn changed<'a>(&self, p: &LiveParams, names: impl IntoIterator<Item = &'a str>) {
        use ros2_client::parameters::raw;
        let changed: Vec<raw::Parameter> = names
            .into_iter()
            .map(|n| raw::Parameter {
                name: n.to_string(),
                value: to_ros(p.get(n).as_ref()),
            })
            .collect();
        if changed.is_empty() {
            return;
        }
        let event = raw::ParameterEvent {
            stamp: ros2_client::builtin_interfaces::Time::from_nanos(self.clock.now().as_nanos()),
            node: self.node.clone(),
            new_parameters: Vec::new(),
            changed_parameters: changed,
            deleted_parameters: Vec::new(),
        };
        if let Err(e) = self.writer.publish(event) {
            tracing::warn!(node = %self.node, "parameter event: {e:?}");
        }
    }
}

/// A DDS participant in `domain_id` (only on 127.0.0.1 with `localhost_only`), as a ROS
/// context.
fn ros_context(domain_id: u16, localhost_only: bool) -> Result<Context, BusError> {
    let mut builder = DomainParticipantBuilder::new(domain_id);
    if localhost_only {
        builder = builder.with_only_networks([std::net::Ipv4Addr::LOCALHOST]);
    }
    let participant = builder.build().map_err(dds_err)?;
    Context::from_domain_participant(participant).map_err(dds_err)
}

/// A ROS node `namespace/name` in `context`, without rosout or ros2-client's own
/// parameter services (Fast DDS mapping only; ours are served by `serve_parameters`).
fn ros_node(context: &Context, namespace: &str, name: &str) -> Result<ros2_client::Node, BusError> {
    let node_name = NodeName::new(namespace, name)
        .map_err(|e| BusError::Ros(format!("node name `{name}`: {e:?}")))?;
    context
        .new_node(
            node_name,
            NodeOptions::new()
                .enable_rosout(false)
                .start_parameter_services(false),
        )
        .map_err(dds_err)
}

/// `list_parameters` as rclcpp answers it: with no prefix, the names at most `depth`
/// levels deep (0: any); with prefixes, each name equal to one, or below one with fewer
/// than `depth` separators after the prefix (the one after the prefix counted, as rclcpp
/// counts it); and the prefixes of the names listed. Before session 52 a name equal to a
/// prefix was left out and the separator after the prefix not counted.
fn list_parameters(
    p: &LiveParams,
    req: &ros2_client::rcl_interfaces::ListParametersRequest,
) -> ros2_client::rcl_interfaces::ListParametersResponse {
    let result = list_names(&p.names(), &req.prefixes, req.depth);
    ros2_client::rcl_interfaces::ListParametersResponse {
        result: ros2_client::rcl_interfaces::ListParametersResult {
            names: result.0,
            prefixes: result.1,
        },
    }
}

/// [`list_parameters`]' (names, prefixes).
fn list_names(all: &[String], wanted: &[String], depth: u64) -> (Vec<String>, Vec<String>) {
    let shallow = |s: &str| depth == 0 || (s.matches('.').count() as u64) < depth;
    let mut names = Vec::new();
    let mut prefixes = std::collections::BTreeSet::new();
    for n in all {
        let listed = if wanted.is_empty() {
            shallow(n)
        } else {
            wanted.iter().any(|pre| {
                n == pre
                    || n.strip_prefix(pre.as_str())
                        .is_some_and(|rest| rest.starts_with('.') && shallow(rest))
            })
        };
        if listed {
            if let Some((pre, _)) = n.rsplit_once('.') {
                prefixes.insert(pre.to_string());
            }
            names.push(n.clone());
        }
    }
    (names, prefixes.into_iter().collect())
}

/// A YAML value as `rcl_interfaces/ParameterValue` (`None`: type NOT_SET).
fn to_ros(v: Option<&serde_yaml::Value>) -> ros2_client::parameters::raw::ParameterValue {
    use ros2_client::parameters::raw::{ParameterType as T, ParameterValue};
    use serde_yaml::Value;
    let mut out = ParameterValue {
        ptype: T::NOT_SET,
        boolean_value: false,
        int_value: 0,
        double_value: 0.0,
        string_value: String::new(),
        byte_array: Vec::new(),
        bool_array: Vec::new(),
        int_array: Vec::new(),
        double_array: Vec::new(),
        string_array: Vec::new(),
    };
    match v {
        Some(Value::Bool(b)) => (out.ptype, out.boolean_value) = (T::BOOL, *b),
        Some(Value::Number(n)) if n.is_f64() => {
            (out.ptype, out.double_value) = (T::DOUBLE, n.as_f64().unwrap_or(f64::NAN))
        }
        Some(Value::Number(n)) => {
            (out.ptype, out.int_value) = (T::INTEGER, n.as_i64().unwrap_or(0))
        }
        Some(Value::String(s)) => (out.ptype, out.string_value) = (T::STRING, s.clone()),
        Some(Value::Sequence(items)) => {
            // An empty list says nothing of its elements: the parameters that default to
            // one are lists of names (topics, files, joints), so a string array (every
            // `all` of an empty list is true: it was reported as a bool array before
            // session 52, "Boolean values are: []").
            if items.is_empty() {
                out.ptype = T::STRING_ARRAY;
            } else if items.iter().all(Value::is_bool) {
                out.ptype = T::BOOL_ARRAY;
                out.bool_array = items.iter().filter_map(Value::as_bool).collect();
            } else if items.iter().all(|v| v.as_i64().is_some()) {
                out.ptype = T::INTEGER_ARRAY;
                out.int_array = items.iter().filter_map(Value::as_i64).collect();
            } else if items.iter().all(|v| v.as_f64().is_some()) {
                out.ptype = T::DOUBLE_ARRAY;
                out.double_array = items.iter().filter_map(Value::as_f64).collect();
            } else if items.iter().all(Value::is_string) {
                out.ptype = T::STRING_ARRAY;
                out.string_array = items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
            }
        }
        _ => {}
    }
    out
}

/// An `rcl_interfaces/ParameterValue` as YAML (`None`: NOT_SET or an unknown type).
fn from_ros(v: &ros2_client::parameters::raw::ParameterValue) -> Option<serde_yaml::Value> {
    use ros2_client::parameters::raw::ParameterType as T;
    use serde_yaml::Value;
    Some(match v.ptype {
        T::BOOL => Value::from(v.boolean_value),
        T::INTEGER => Value::from(v.int_value),
        T::DOUBLE => Value::from(v.double_value),
        T::STRING => Value::from(v.string_value.clone()),
        T::BYTE_ARRAY => Value::Sequence(v.byte_array.iter().map(|b| Value::from(*b)).collect()),
        T::BOOL_ARRAY => Value::Sequence(v.bool_array.iter().map(|b| Value::from(*b)).collect()),
        T::INTEGER_ARRAY => Value::Sequence(v.int_array.iter().map(|b| Value::from(*b)).collect()),
        T::DOUBLE_ARRAY => {
            Value::Sequence(v.double_array.iter().map(|b| Value::from(*b)).collect())
        }
        T::STRING_ARRAY => Value::Sequence(
            v.string_array
                .iter()
                .map(|b| Value::from(b.clone()))
                .collect(),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rclcpp's answers: a name equal to the prefix is listed; the separator after a
    /// prefix counts toward `depth`.
    #[test]
    fn parameters_are_listed_as_rclcpp_lists_them() {
        let all: Vec<String> = [
            "table_check",
            "table_check_deg",
            "motion.lift_height_m",
            "motion.speed.max",
            "dry_run",
        ]
        .map(String::from)
        .to_vec();
        let list = |pre: &[&str], depth| {
            let pre: Vec<String> = pre.iter().map(|p| p.to_string()).collect();
            list_names(&all, &pre, depth)
        };
        assert_eq!(list(&["table_check"], 0).0, ["table_check"]);
        assert!(list(&["motion"], 1).0.is_empty());
        assert_eq!(list(&["motion"], 2).0, ["motion.lift_height_m"]);
        assert_eq!(
            list(&["motion"], 0),
            (
                vec![
                    "motion.lift_height_m".to_string(),
                    "motion.speed.max".to_string()
                ],
                vec!["motion".to_string(), "motion.speed".to_string()]
            )
        );
        assert_eq!(
            list(&[], 1).0,
            ["table_check", "table_check_deg", "dry_run"]
        );
        assert_eq!(list(&[], 0).0.len(), 5);
    }

    /// An empty list parameter is reported as a string array, not a bool array.
    #[test]
    fn an_empty_list_parameter_is_a_string_array() {
        use ros2_client::parameters::raw::ParameterType as T;
        let empty = serde_yaml::Value::Sequence(Vec::new());
        assert_eq!(to_ros(Some(&empty)).ptype, T::STRING_ARRAY);
        let flags = serde_yaml::Value::Sequence(vec![true.into()]);
        assert_eq!(to_ros(Some(&flags)).ptype, T::BOOL_ARRAY);
    }
    use crate::msg::sensor_msgs::Image;

    #[test]
    fn dds_names_map_to_ros_names_and_back() {
        assert_eq!(
            ros_topic("rt/camera/image_raw").as_deref(),
            Some("/camera/image_raw")
        );
        assert_eq!(ros_topic("rq/add_two_intsRequest"), None);
        assert_eq!(ros_topic("ros_discovery_info"), None);
        assert_eq!(
            ros_type("sensor_msgs::msg::dds_::Image_").as_deref(),
            Some("sensor_msgs/msg/Image")
        );
        assert_eq!(
            ros_type("rmw_dds_common::msg::ParticipantEntitiesInfo"),
            None
        );
        assert_eq!(
            type_name::<Image>().unwrap().dds_msg_type(),
            "sensor_msgs::msg::dds_::Image_"
        );
    }

    #[test]
    fn the_domain_comes_from_ros_domain_id_and_a_bad_one_is_named() {
        // One test touches the environment (tests of a binary share it).
        std::env::set_var("ROS_DOMAIN_ID", "42");
        std::env::set_var("ROS_LOCALHOST_ONLY", "1");
        let o = DdsOptions::from_env("n").unwrap();
        assert_eq!(
            (o.domain_id, o.localhost_only, o.node.as_str()),
            (42, true, "n")
        );
        std::env::set_var("ROS_DOMAIN_ID", "300");
        let e = DdsOptions::from_env("n").unwrap_err().to_string();
        assert!(e.contains("ROS_DOMAIN_ID") && e.contains("300"), "{e}");
        std::env::set_var("ROS_DOMAIN_ID", "");
        std::env::remove_var("ROS_LOCALHOST_ONLY");
        let o = DdsOptions::from_env("n").unwrap();
        assert_eq!((o.domain_id, o.localhost_only), (0, false));
        std::env::remove_var("ROS_DOMAIN_ID");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publisher_counts_the_readers_of_its_topic_in_this_and_other_participants() {
        let options = |node: &str| DdsOptions {
            domain_id: 170 + (std::process::id() % 30) as u16,
            localhost_only: false,
            node: node.into(),
            namespace: "/".into(),
            use_sim_time: false,
        };
        let wait_for = |p: &Publisher<Image>, n: usize| {
            let p = p.clone();
            async move {
                let t0 = std::time::Instant::now();
                while p.subscriber_count() < Some(n) && t0.elapsed().as_secs() < 30 {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                p.subscriber_count()
            }
        };
        let sim = DdsBus::new(&options("sim")).unwrap();
        let goal = sim
            .publisher::<Image>("/goal/image", Qos::latched())
            .unwrap();
        let _other_topic = sim
            .subscribe::<Image>("/goal/depth", Qos::latched())
            .unwrap();
        assert_eq!(goal.subscriber_count(), Some(0));
        // A reader in the same participant (a graph run in one process) counts,
        let _own = sim
            .subscribe::<Image>("/goal/image", Qos::latched())
            .unwrap();
        assert_eq!(wait_for(&goal, 1).await, Some(1));
        // and so does one of another participant (another process), once discovered.
        let planner = DdsBus::new(&options("planner")).unwrap();
        let _sub = planner
            .subscribe::<Image>("/goal/image", Qos::latched())
            .unwrap();
        assert_eq!(wait_for(&goal, 2).await, Some(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_goal_nobody_serves_fails_with_the_reason_after_the_wait() {
        let bus = DdsBus::new(&DdsOptions {
            domain_id: 200 + (std::process::id() % 30) as u16,
            localhost_only: false,
            node: "lonely".into(),
            namespace: "/".into(),
            use_sim_time: false,
        })
        .unwrap();
        let client = bus
            .trajectory_client("/nobody/follow_joint_trajectory")
            .unwrap();
        let started = std::time::Instant::now();
        let outcome = client
            .follow(Default::default(), tokio::sync::oneshot::channel().0)
            .await;
        let waited = started.elapsed();
        match outcome {
            super::super::ActionOutcome::Failed(why) => assert!(
                why.contains("no FollowJointTrajectory server `/nobody/follow_joint_trajectory`"),
                "{why}"
            ),
            o => panic!("{o:?}"),
        }
        assert!(
            waited >= ACTION_SERVER_WAIT && waited < ACTION_SERVER_WAIT * 3,
            "{waited:?}"
        );
        bus.shutdown();
    }

    #[test]
    fn the_goal_s_wire_layout_is_control_msgs_humble_and_jazzy() {
        // Field order and sizes of an empty goal, by hand from the .action file: the
        // trajectory (header: stamp 8, frame "" 4+1 → pad; names 0; points 0), the
        // multi-DOF trajectory (the same), four empty tolerance sequences, the duration.
        let bytes = crate::msg::encode(&fjt::Goal::default());
        let body = &bytes[4..];
        // 2 × (8 stamp + 4 len + 1 NUL + 3 pad + 4 names + 4 points) + 4 × 4 + 8
        assert_eq!(body.len(), 2 * 24 + 16 + 8, "{body:?}");
        let g = fjt::Goal {
            goal_time_tolerance: crate::msg::prelude::Duration { sec: 2, nanosec: 5 },
            ..Default::default()
        };
        let bytes = crate::msg::encode(&g);
        assert_eq!(&bytes[bytes.len() - 8..], &[2, 0, 0, 0, 5, 0, 0, 0]);
    }

    #[test]
    fn samples_on_the_wire_are_our_codec_s_cdr() {
        // RustDDS serialises through serde with cdr-encoding, little-endian, after the
        // 4-byte encapsulation header it writes itself: the body must equal our codec's.
        let img = Image {
            header: crate::msg::std_msgs::Header {
                stamp: crate::msg::builtin_interfaces::Time { sec: 7, nanosec: 8 },
                frame_id: "cam".into(),
            },
            height: 2,
            width: 3,
            encoding: "rgb8".into(),
            is_bigendian: 0,
            step: 9,
            data: (0..18).collect(),
        };
        let body = ros2_client::dds::rustdds::serialization::to_vec::<_, byteorder::LittleEndian>(
            &Shared(Arc::new(img.clone())),
        )
        .unwrap();
        let ours = img.to_cdr();
        assert_eq!(&ours[..4], &[0, 1, 0, 0]);
        assert_eq!(body, ours[4..]);
    }
}
