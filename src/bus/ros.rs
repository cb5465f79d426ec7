//! The ROS 2 bus on r2r (cargo feature `ros2`). The only module that imports r2r.
//!
//! Standard messages (std, sensor, geometry, trajectory, builtin) go through r2r's typed
//! publishers and subscriptions, converted field by field to and from the crate's
//! mirrors — which also makes the compiler check that the mirrors match ROS's
//! definitions. The project's own messages (`dreamplan/msg/*`) go through r2r's untyped
//! API as CDR bytes made by our codec (`create_publisher_untyped` + `publish_raw`,
//! `subscribe_raw`); r2r must have been built with the `dreamplan` interfaces visible
//! (the colcon build does that, see docs/ros2.md).
//!
//! Every subscription delivers into the same keep-last [`Subscriber`] queue as the
//! in-process bus. One r2r node backs the bus; a thread spins it.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use super::action::GoalCommand;
use super::{
    resolve_topic, Bus, BusError, Durability, Feeds, Inbox, Publisher, Qos, Reliability, Sink,
    Subscriber,
};
use crate::clock::Clock;
use crate::msg::{self, Message};
use crate::nodes::params::LiveParams;

fn ros_err(e: r2r::Error) -> BusError {
    BusError::Ros(e.to_string())
}

fn qos_profile(qos: Qos) -> r2r::QosProfile {
    let p = r2r::QosProfile::default().keep_last(qos.depth.max(1));
    let p = match qos.reliability {
        Reliability::Reliable => p.reliable(),
        Reliability::BestEffort => p.best_effort(),
    };
    match qos.durability {
        Durability::Volatile => p.volatile(),
        Durability::TransientLocal => p.transient_local(),
    }
}

/// Conversion between a crate mirror and r2r's generated type.
trait RosTyped: Sized {
    type Ros: r2r::WrappedTypesupport + Send + 'static;
    fn to_ros(&self) -> Self::Ros;
    fn from_ros(ros: Self::Ros) -> Self;
}

/// Copies a ROS fixed-size array (a `Vec` in r2r) into ours; a wrong length (only from a
/// broken peer) is truncated or zero-padded rather than trusted.
fn to_array<const N: usize>(v: Vec<f64>) -> [f64; N] {
    let mut out = [0.0; N];
    for (o, x) in out.iter_mut().zip(v) {
        *o = x;
    }
    out
}

/// Field conversion kinds: `=` same type, `~` nested mirror, `[~]` vector of mirrors,
/// `[N]` fixed array. Field names are identical on both sides.
macro_rules! ros_typed {
    ($ours:ty => $ros:path { $($kind:tt $field:ident),* $(,)? }) => {
        impl RosTyped for $ours {
            type Ros = $ros;
            fn to_ros(&self) -> $ros {
                $ros { $($field: ros_typed!(@to $kind self.$field)),* }
            }
            fn from_ros(r: $ros) -> Self {
                Self { $($field: ros_typed!(@from $kind r.$field)),* }
            }
        }
    };
    (@to = $e:expr) => { $e.clone() };
    (@to ~ $e:expr) => { $e.to_ros() };
    (@to [~] $e:expr) => { $e.iter().map(RosTyped::to_ros).collect() };
    (@to [N] $e:expr) => { $e.to_vec() };
    (@from = $e:expr) => { $e };
    (@from ~ $e:expr) => { RosTyped::from_ros($e) };
    (@from [~] $e:expr) => { $e.into_iter().map(RosTyped::from_ros).collect() };
    (@from [N] $e:expr) => { to_array($e) };
}

use r2r::{
    builtin_interfaces as rb, geometry_msgs as rg, rosgraph_msgs as rr, sensor_msgs as rs,
    std_msgs as rstd, trajectory_msgs as rt,
};

ros_typed!(msg::builtin_interfaces::Time => rb::msg::Time { = sec, = nanosec });
ros_typed!(msg::builtin_interfaces::Duration => rb::msg::Duration { = sec, = nanosec });
ros_typed!(msg::rosgraph_msgs::Clock => rr::msg::Clock { ~ clock });
ros_typed!(msg::std_msgs::Header => rstd::msg::Header { ~ stamp, = frame_id });
ros_typed!(msg::std_msgs::Bool => rstd::msg::Bool { = data });
ros_typed!(msg::sensor_msgs::Image => rs::msg::Image {
    ~ header, = height, = width, = encoding, = is_bigendian, = step, = data });
ros_typed!(msg::sensor_msgs::RegionOfInterest => rs::msg::RegionOfInterest {
    = x_offset, = y_offset, = height, = width, = do_rectify });
ros_typed!(msg::sensor_msgs::CameraInfo => rs::msg::CameraInfo {
    ~ header, = height, = width, = distortion_model, = d, [N] k, [N] r, [N] p,
    = binning_x, = binning_y, ~ roi });
ros_typed!(msg::sensor_msgs::JointState => rs::msg::JointState {
    ~ header, = name, = position, = velocity, = effort });
ros_typed!(msg::geometry_msgs::Point => rg::msg::Point { = x, = y, = z });
ros_typed!(msg::geometry_msgs::Vector3 => rg::msg::Vector3 { = x, = y, = z });
ros_typed!(msg::geometry_msgs::Quaternion => rg::msg::Quaternion { = x, = y, = z, = w });
ros_typed!(msg::geometry_msgs::Pose => rg::msg::Pose { ~ position, ~ orientation });
ros_typed!(msg::geometry_msgs::PoseStamped => rg::msg::PoseStamped { ~ header, ~ pose });
ros_typed!(msg::geometry_msgs::Transform => rg::msg::Transform { ~ translation, ~ rotation });
ros_typed!(msg::trajectory_msgs::JointTrajectoryPoint => rt::msg::JointTrajectoryPoint {
    = positions, = velocities, = accelerations, = effort, ~ time_from_start });
ros_typed!(msg::trajectory_msgs::JointTrajectory => rt::msg::JointTrajectory {
    ~ header, = joint_names, [~] points });

/// Publishes one message through whichever r2r publisher the transport made.
type PublishFn<M> = Box<dyn Fn(&M) -> Result<(), BusError> + Send + Sync>;

/// The subscriptions rcl has matched with a publisher (this process's and others').
type CountFn = Box<dyn Fn() -> Option<usize> + Send + Sync>;

/// How messages of one Rust type cross into ROS: a typed r2r publisher/subscription, or
/// CDR bytes through the untyped API.
trait Transport<M>: Send + Sync {
    fn publisher(
        &self,
        node: &mut r2r::Node,
        topic: &str,
        qos: r2r::QosProfile,
    ) -> Result<(PublishFn<M>, CountFn), BusError>;
    fn subscribe(
        &self,
        node: &mut r2r::Node,
        topic: &str,
        qos: r2r::QosProfile,
        inbox: Arc<Inbox<M>>,
    ) -> Result<tokio::task::JoinHandle<()>, BusError>;
}

struct Typed<T>(std::marker::PhantomData<T>);
struct Raw;

impl<M: Message + RosTyped> Transport<M> for Typed<M> {
    fn publisher(
        &self,
        node: &mut r2r::Node,
        topic: &str,
        qos: r2r::QosProfile,
    ) -> Result<(PublishFn<M>, CountFn), BusError> {
        let p = Arc::new(Mutex::new(
            node.create_publisher::<M::Ros>(topic, qos)
                .map_err(ros_err)?,
        ));
        let counted = p.clone();
        Ok((
            Box::new(move |m: &M| {
                let p = p.lock().unwrap_or_else(|e| e.into_inner());
                p.publish(&m.to_ros()).map_err(ros_err)
            }),
            Box::new(move || {
                let p = counted.lock().unwrap_or_else(|e| e.into_inner());
                p.get_inter_process_subscription_count().ok()
            }),
        ))
    }
    fn subscribe(
        &self,
        node: &mut r2r::Node,
        topic: &str,
        qos: r2r::QosProfile,
        inbox: Arc<Inbox<M>>,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        let mut stream = node.subscribe::<M::Ros>(topic, qos).map_err(ros_err)?;
        Ok(tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                if !inbox.push(Arc::new(M::from_ros(m))) {
                    break;
                }
            }
            inbox.close();
        }))
    }
}

impl<M: Message> Transport<M> for Raw {
    fn publisher(
        &self,
        node: &mut r2r::Node,
        topic: &str,
        qos: r2r::QosProfile,
    ) -> Result<(PublishFn<M>, CountFn), BusError> {
        let p = Arc::new(Mutex::new(
            node.create_publisher_untyped(topic, M::TYPE_NAME, qos)
                .map_err(ros_err)?,
        ));
        let counted = p.clone();
        Ok((
            Box::new(move |m: &M| {
                let bytes = m.to_cdr();
                let p = p.lock().unwrap_or_else(|e| e.into_inner());
                p.publish_raw(&bytes).map_err(ros_err)
            }),
            Box::new(move || {
                let p = counted.lock().unwrap_or_else(|e| e.into_inner());
                p.get_inter_process_subscription_count().ok()
            }),
        ))
    }
    fn subscribe(
        &self,
        node: &mut r2r::Node,
        topic: &str,
        qos: r2r::QosProfile,
        inbox: Arc<Inbox<M>>,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        let mut stream = node
            .subscribe_raw(topic, M::TYPE_NAME, qos)
            .map_err(ros_err)?;
        let topic = topic.to_string();
        Ok(tokio::spawn(async move {
            while let Some(bytes) = stream.next().await {
                match M::from_cdr(&bytes) {
                    Ok(m) => {
                        if !inbox.push(Arc::new(m)) {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%topic, "dropping a message that does not decode: {e}")
                    }
                }
            }
            inbox.close();
        }))
    }
}

/// Picks the transport for `M`: typed for the standard types r2r ships, raw otherwise.
fn transport<M: Message>() -> Box<dyn Transport<M>> {
    fn typed<T: Message + RosTyped, M: Message>() -> Option<Box<dyn Transport<M>>> {
        let t: Box<dyn Transport<T>> = Box::new(Typed::<T>(std::marker::PhantomData));
        // `M` is `T` here (same TypeId), so this cast only renames the type.
        (Box::new(t) as Box<dyn Any>)
            .downcast::<Box<dyn Transport<M>>>()
            .ok()
            .map(|b| *b)
    }
    macro_rules! pick {
        ($($t:ty),*) => {
            $(if std::any::TypeId::of::<M>() == std::any::TypeId::of::<$t>() {
                if let Some(t) = typed::<$t, M>() { return t; }
            })*
        };
    }
    pick!(
        msg::builtin_interfaces::Time,
        msg::builtin_interfaces::Duration,
        msg::rosgraph_msgs::Clock,
        msg::std_msgs::Header,
        msg::std_msgs::Bool,
        msg::sensor_msgs::Image,
        msg::sensor_msgs::RegionOfInterest,
        msg::sensor_msgs::CameraInfo,
        msg::sensor_msgs::JointState,
        msg::geometry_msgs::Point,
        msg::geometry_msgs::Vector3,
        msg::geometry_msgs::Quaternion,
        msg::geometry_msgs::Pose,
        msg::geometry_msgs::PoseStamped,
        msg::geometry_msgs::Transform,
        msg::trajectory_msgs::JointTrajectoryPoint,
        msg::trajectory_msgs::JointTrajectory
    );
    Box::new(Raw)
}

struct RosSink<M> {
    publish: PublishFn<M>,
    count: CountFn,
    closed: Arc<AtomicBool>,
    topic: String,
}

impl<M: Message> Sink<M> for RosSink<M> {
    fn send(&self, msg: Arc<M>) -> Result<(), BusError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed(self.topic.clone()));
        }
        (self.publish)(&msg)
    }

    fn subscribers(&self) -> Option<usize> {
        (self.count)()
    }
}

struct Inner {
    node: Arc<Mutex<r2r::Node>>,
    closed: Arc<AtomicBool>,
    clock: Clock,
    feeds: Feeds,
    spinner: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A bus backed by one r2r node. Cloning shares it.
#[derive(Clone)]
pub struct RosBus {
    inner: Arc<Inner>,
}

impl RosBus {
    /// Creates the ROS 2 node `name` in `namespace` (command-line `--ros-args` apply,
    /// including `__node:=` renames and params files) and starts spinning it. When the
    /// node's `use_sim_time` parameter is true, the bus clock follows `/clock`.
    /// Must be called inside a tokio runtime.
    pub fn new(name: &str, namespace: &str) -> Result<Self, BusError> {
        let ctx = r2r::Context::create().map_err(ros_err)?;
        let node = r2r::Node::create(ctx, name, namespace).map_err(ros_err)?;
        let use_sim_time = matches!(
            node.params
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get("use_sim_time")
                .map(|p| &p.value),
            Some(r2r::ParameterValue::Bool(true))
        );
        let node = Arc::new(Mutex::new(node));
        let closed = Arc::new(AtomicBool::new(false));
        let clock = if use_sim_time {
            Clock::sim(Default::default())
        } else {
            Clock::system()
        };
        let spinner = {
            let (node, closed) = (node.clone(), closed.clone());
            std::thread::Builder::new()
                .name(format!("r2r-spin-{name}"))
                .spawn(move || {
                    while !closed.load(Ordering::Acquire) {
                        node.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .spin_once(Duration::from_millis(5));
                    }
                })
                .map_err(|e| BusError::Ros(format!("cannot start the spin thread: {e}")))?
        };
        let bus = Self {
            inner: Arc::new(Inner {
                node,
                closed,
                clock: clock.clone(),
                feeds: Feeds::default(),
                spinner: Mutex::new(Some(spinner)),
            }),
        };
        if use_sim_time {
            let mut sub = bus.subscribe::<msg::rosgraph_msgs::Clock>("/clock", Qos::clock())?;
            tokio::spawn(async move {
                while let Some(c) = sub.recv().await {
                    clock.set(c.clock.clone());
                }
            });
        }
        Ok(bus)
    }

    /// The node's name (after a `__node:=` rename).
    pub fn node_name(&self) -> String {
        self.inner
            .node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .name()
            .unwrap_or_else(|_| "dreamplan".into())
    }

    /// The node's parameters (params files and `-p` overrides, as rcl parsed them) as a
    /// YAML mapping; dotted names become nested mappings. `use_sim_time` is left out.
    pub fn parameters(&self) -> serde_yaml::Value {
        use serde_yaml::Value;
        let node = self.inner.node.lock().unwrap_or_else(|e| e.into_inner());
        let params = node.params.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = serde_yaml::Mapping::new();
        for (name, p) in params.iter() {
            if name == "use_sim_time" {
                continue;
            }
            let Some(v) = yaml_of(&p.value) else { continue };
            map.insert(Value::from(name.clone()), v);
        }
        crate::config::nest_dotted(map)
    }
}

/// An r2r parameter value as YAML (`None`: not set).
fn yaml_of(v: &r2r::ParameterValue) -> Option<serde_yaml::Value> {
    use serde_yaml::Value;
    Some(match v {
        r2r::ParameterValue::NotSet => return None,
        r2r::ParameterValue::Bool(b) => Value::from(*b),
        r2r::ParameterValue::Integer(i) => Value::from(*i),
        r2r::ParameterValue::Double(d) => Value::from(*d),
        r2r::ParameterValue::String(s) => Value::from(s.clone()),
        r2r::ParameterValue::BoolArray(v) => {
            Value::Sequence(v.iter().map(|x| Value::from(*x)).collect())
        }
        r2r::ParameterValue::ByteArray(v) => {
            Value::Sequence(v.iter().map(|x| Value::from(*x)).collect())
        }
        r2r::ParameterValue::IntegerArray(v) => {
            Value::Sequence(v.iter().map(|x| Value::from(*x)).collect())
        }
        r2r::ParameterValue::DoubleArray(v) => {
            Value::Sequence(v.iter().map(|x| Value::from(*x)).collect())
        }
        r2r::ParameterValue::StringArray(v) => {
            Value::Sequence(v.iter().map(|x| Value::from(x.clone())).collect())
        }
    })
}

/// YAML as an r2r parameter value (a sequence takes its first element's type).
fn r2r_of(v: Option<&serde_yaml::Value>) -> r2r::ParameterValue {
    use serde_yaml::Value;
    match v {
        Some(Value::Bool(b)) => r2r::ParameterValue::Bool(*b),
        Some(Value::Number(n)) if n.is_f64() => {
            r2r::ParameterValue::Double(n.as_f64().unwrap_or(f64::NAN))
        }
        Some(Value::Number(n)) => r2r::ParameterValue::Integer(n.as_i64().unwrap_or(0)),
        Some(Value::String(s)) => r2r::ParameterValue::String(s.clone()),
        Some(Value::Sequence(items)) => match items.first() {
            Some(Value::Bool(_)) => {
                r2r::ParameterValue::BoolArray(items.iter().filter_map(Value::as_bool).collect())
            }
            Some(Value::Number(n)) if n.is_f64() => {
                r2r::ParameterValue::DoubleArray(items.iter().filter_map(Value::as_f64).collect())
            }
            Some(Value::Number(_)) => {
                r2r::ParameterValue::IntegerArray(items.iter().filter_map(Value::as_i64).collect())
            }
            _ => r2r::ParameterValue::StringArray(
                items
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
            ),
        },
        _ => r2r::ParameterValue::NotSet,
    }
}

/// A node's [`LiveParams`] as r2r's parameter structure: r2r serves the ROS parameter
/// services and asks this to read and set, so a set passes through the node's own checks
/// and is refused with their reason.
struct LiveRosParams(Arc<LiveParams>);

impl r2r::RosParams for LiveRosParams {
    fn register_parameters(
        &mut self,
        _prefix: &str,
        _param: Option<r2r::Parameter>,
        params: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        for name in self.0.names() {
            let mut p = r2r::Parameter::new(r2r_of(self.0.get(&name).as_ref()));
            if !self.0.is_live(&name) {
                p.description = "read when the node starts";
            }
            params.insert(name, p);
        }
        Ok(())
    }

    fn get_parameter(&mut self, name: &str) -> r2r::Result<r2r::ParameterValue> {
        match self.0.get(name) {
            Some(v) => Ok(r2r_of(Some(&v))),
            None => Err(r2r::Error::InvalidParameterName { name: name.into() }),
        }
    }

    fn set_parameter(&mut self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        let v = yaml_of(value).ok_or_else(|| r2r::Error::ParameterValueConv {
            name: name.into(),
            msg: "no value given".into(),
        })?;
        self.0.set(name, v).map_err(|msg| {
            tracing::warn!(node = %self.0.node(), "parameter set refused: {msg}");
            r2r::Error::ParameterValueConv {
                name: name.into(),
                msg,
            }
        })
    }

    fn check_parameter(&self, name: &str, _value: &r2r::ParameterValue) -> r2r::Result<()> {
        match self.0.get(name) {
            Some(_) => Ok(()),
            None => Err(r2r::Error::InvalidParameterName { name: name.into() }),
        }
    }
}

impl Bus for RosBus {
    fn publisher<M: Message>(&self, topic: &str, qos: Qos) -> Result<Publisher<M>, BusError> {
        let topic = resolve_topic(topic)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed(topic));
        }
        let mut node = self.inner.node.lock().unwrap_or_else(|e| e.into_inner());
        let (publish, count) = transport::<M>().publisher(&mut node, &topic, qos_profile(qos))?;
        let sink = RosSink {
            publish,
            count,
            closed: self.inner.closed.clone(),
            topic: topic.clone(),
        };
        Ok(Publisher::new(topic, Arc::new(sink)))
    }

    fn subscribe<M: Message>(&self, topic: &str, qos: Qos) -> Result<Subscriber<M>, BusError> {
        let topic = resolve_topic(topic)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed(topic));
        }
        let inbox = Inbox::new(qos.depth, self.inner.clock.clone());
        let feeder = {
            let mut node = self.inner.node.lock().unwrap_or_else(|e| e.into_inner());
            transport::<M>().subscribe(&mut node, &topic, qos_profile(qos), inbox.clone())?
        };
        Ok(self.inner.feeds.subscriber(topic, inbox, feeder))
    }

    fn topic_types(&self) -> BTreeMap<String, String> {
        let node = self.inner.node.lock().unwrap_or_else(|e| e.into_inner());
        node.get_topic_names_and_types()
            .map(|m| {
                m.into_iter()
                    .filter_map(|(t, types)| types.into_iter().next().map(|ty| (t, ty)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn publisher_qos(&self, topic: &str) -> Vec<Qos> {
        let Ok(topic) = resolve_topic(topic) else {
            return Vec::new();
        };
        let node = self.inner.node.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(infos) = node.get_publishers_info_by_topic(&topic, false) else {
            return Vec::new();
        };
        infos
            .iter()
            .map(|i| Qos {
                depth: i.qos_profile.depth.max(1),
                reliability: match i.qos_profile.reliability {
                    r2r::qos::ReliabilityPolicy::BestEffort => Reliability::BestEffort,
                    _ => Reliability::Reliable,
                },
                durability: match i.qos_profile.durability {
                    r2r::qos::DurabilityPolicy::TransientLocal => Durability::TransientLocal,
                    _ => Durability::Volatile,
                },
            })
            .collect()
    }

    fn clock(&self) -> Clock {
        self.inner.clock.clone()
    }

    fn trajectory_client(
        &self,
        action: &str,
    ) -> Result<Arc<dyn super::TrajectoryClient>, BusError> {
        Ok(Arc::new(RosTrajectoryClient {
            commands: self.goal_thread(action, "FollowJointTrajectory")?,
        }))
    }

    fn gripper_client(
        &self,
        action: &str,
        kind: &super::GripperKind,
    ) -> Result<Arc<dyn super::GripperClient>, BusError> {
        let (type_name, joint) = match kind {
            super::GripperKind::Command => ("GripperCommand", None),
            super::GripperKind::Parallel { joint } => {
                ("ParallelGripperCommand", Some(joint.clone()))
            }
        };
        Ok(Arc::new(RosGripperClient {
            commands: self.goal_thread(action, type_name)?,
            joint,
        }))
    }

    fn serve_parameters(&self, params: Arc<LiveParams>) -> Result<(), BusError> {
        let live: Arc<Mutex<dyn r2r::RosParams + Send>> =
            Arc::new(Mutex::new(LiveRosParams(params.clone())));
        let (handler, mut events) = self
            .inner
            .node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .make_derived_parameter_handler(live)
            .map_err(ros_err)?;
        tokio::spawn(handler);
        let node = params.node().to_string();
        tokio::spawn(async move {
            while let Some((name, _)) = events.next().await {
                tracing::info!(node = %node, "parameter {name} set");
            }
        });
        Ok(())
    }

    fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.feeds.close_all();
        if let Some(handle) = self
            .inner
            .spinner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = handle.join();
        }
    }
}

/// `FollowJointTrajectory` through r2r's untyped action client (JSON goals, so that the
/// crate builds without control_msgs' generated types). r2r's goal futures are not `Send`:
/// they live on one thread with a local executor; the bus's spin thread completes them.
struct RosTrajectoryClient {
    commands: Mutex<std::sync::mpsc::Sender<GoalCommand<RosGoal>>>,
}

/// A goal for r2r's untyped action client: the goal as JSON and how its result (status,
/// whether it is SUCCEEDED, the result as JSON) becomes the outcome.
struct RosGoal {
    goal: serde_json::Value,
    outcome: ResultReader,
}

/// How a result (whether SUCCEEDED, the status's name, the result as JSON) becomes an
/// outcome.
type ResultReader = Box<dyn FnOnce(bool, &str, &serde_json::Value) -> super::ActionOutcome + Send>;

/// Hands `goal` to the goal thread; resolves with its outcome.
fn send_ros_goal(
    commands: &Mutex<std::sync::mpsc::Sender<GoalCommand<RosGoal>>>,
    goal: RosGoal,
    accepted: Option<tokio::sync::oneshot::Sender<()>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = super::ActionOutcome> + Send>> {
    use super::ActionOutcome::Failed;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = commands
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(GoalCommand::Follow(goal, tx, accepted));
    Box::pin(async move {
        if sent.is_err() {
            return Failed("the action thread has stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Failed("the action thread dropped the goal".into()))
    })
}

impl RosBus {
    /// An untyped client of the `control_msgs/action/<type_name>` server `action`, on the
    /// thread that owns it (r2r's goal futures are not `Send`); goals go to it through the
    /// channel returned.
    fn goal_thread(
        &self,
        action: &str,
        type_name: &str,
    ) -> Result<Mutex<std::sync::mpsc::Sender<GoalCommand<RosGoal>>>, BusError> {
        let name = resolve_topic(action)?;
        let client = self
            .inner
            .node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .create_action_client_untyped(&name, &format!("control_msgs/action/{type_name}"))
            .map_err(|e| {
                BusError::Ros(format!(
                    "{type_name} client `{name}`: {e} (is control_msgs installed and in r2r's build?)"
                ))
            })?;
        let (tx, rx) = std::sync::mpsc::channel::<GoalCommand<RosGoal>>();
        std::thread::Builder::new()
            .name(format!("r2r-action-{name}"))
            .spawn(move || run_goals(client, rx))
            .map_err(|e| BusError::Ros(format!("cannot start the action thread: {e}")))?;
        Ok(Mutex::new(tx))
    }
}

/// `GripperCommand`, or with `joint` `ParallelGripperCommand`, through r2r's untyped
/// action client.
struct RosGripperClient {
    commands: Mutex<std::sync::mpsc::Sender<GoalCommand<RosGoal>>>,
    /// `ParallelGripperCommand`'s joint name ("" for none); `None` for `GripperCommand`.
    joint: Option<String>,
}

impl super::GripperClient for RosGripperClient {
    fn command(
        &self,
        command: super::GripperCommand,
        what: super::GripperMove,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = super::ActionOutcome> + Send>> {
        let (goal, parallel) = match &self.joint {
            None => (serde_json::json!({ "command": command }), false),
            Some(joint) => match serde_json::to_value(command.joint_state(joint)) {
                Ok(state) => (serde_json::json!({ "command": state }), true),
                Err(e) => {
                    return Box::pin(std::future::ready(super::ActionOutcome::Failed(format!(
                        "goal: {e}"
                    ))))
                }
            },
        };
        let goal = RosGoal {
            goal,
            outcome: Box::new(move |succeeded, status, r| {
                let position = if parallel {
                    r["state"]["position"][0].as_f64()
                } else {
                    r["position"].as_f64()
                };
                super::ActionOutcome::from_gripper_result(
                    succeeded,
                    status,
                    command,
                    what,
                    super::GripperResult {
                        position: position.unwrap_or(f64::NAN),
                        stalled: r["stalled"].as_bool().unwrap_or(false),
                        reached_goal: r["reached_goal"].as_bool().unwrap_or(false),
                    },
                )
            }),
        };
        send_ros_goal(&self.commands, goal, None)
    }

    fn cancel_all(&self) {
        let _ = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(GoalCommand::CancelAll);
    }
}

impl super::TrajectoryClient for RosTrajectoryClient {
    fn follow(
        &self,
        trajectory: msg::prelude::JointTrajectory,
        accepted: tokio::sync::oneshot::Sender<()>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = super::ActionOutcome> + Send>> {
        let goal = match serde_json::to_value(&trajectory) {
            Ok(t) => serde_json::json!({ "trajectory": t }),
            Err(e) => {
                return Box::pin(std::future::ready(super::ActionOutcome::Failed(format!(
                    "goal: {e}"
                ))))
            }
        };
        let goal = RosGoal {
            goal,
            outcome: Box::new(|succeeded, status, r| {
                super::ActionOutcome::from_result(
                    succeeded,
                    status,
                    r["error_code"].as_i64().unwrap_or(0),
                    r["error_string"].as_str().unwrap_or(""),
                )
            }),
        };
        send_ros_goal(&self.commands, goal, Some(accepted))
    }

    fn cancel_all(&self) {
        let _ = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(GoalCommand::CancelAll);
    }
}

/// The action thread: sends goals, waits for their results, cancels on request; ends
/// when the client is dropped.
fn run_goals(
    client: r2r::ActionClientUntyped,
    commands: std::sync::mpsc::Receiver<GoalCommand<RosGoal>>,
) {
    use super::ActionOutcome::Failed;
    use futures::task::LocalSpawnExt;
    let mut pool = futures::executor::LocalPool::new();
    let spawner = pool.spawner();
    // The accepted goals not yet ended, by number: a goal leaves when its result comes
    // (before session 49 every goal stayed until the next e-stop).
    let handles: std::rc::Rc<
        std::cell::RefCell<std::collections::BTreeMap<u64, r2r::ActionClientGoalUntyped>>,
    > = Default::default();
    let mut goals_sent = 0u64;
    // Cancel requests so far: a goal accepted after a cancel that came while its request
    // was under way is cancelled at once (that cancel found no handle to cancel).
    let cancels: std::rc::Rc<std::cell::Cell<u64>> = Default::default();
    loop {
        pool.run_until_stalled();
        let command = match commands.recv_timeout(Duration::from_millis(10)) {
            Ok(c) => c,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        match command {
            GoalCommand::CancelAll => {
                cancels.set(cancels.get() + 1);
                for h in std::mem::take(&mut *handles.borrow_mut()).into_values() {
                    if let Ok(cancelled) = h.cancel() {
                        let _ = spawner.spawn_local(async move {
                            let _ = cancelled.await;
                        });
                    }
                }
            }
            GoalCommand::Follow(RosGoal { goal, outcome }, answer, accepted) => {
                let request = client.send_goal_request(goal);
                let handles = handles.clone();
                goals_sent += 1;
                let number = goals_sent;
                let (cancels, given) = (cancels.clone(), cancels.get());
                let task = async move {
                    let outcome = match request {
                        Err(e) => Failed(format!("goal not sent: {e}")),
                        Ok(request) => match request.await {
                            Err(e) => Failed(format!("goal rejected: {e}")),
                            Ok((handle, result, _feedback)) => {
                                if let Some(a) = accepted {
                                    let _ = a.send(());
                                }
                                if cancels.get() == given {
                                    handles.borrow_mut().insert(number, handle);
                                } else if let Ok(cancelled) = handle.cancel() {
                                    let _ = cancelled.await;
                                }
                                let result = result.await;
                                handles.borrow_mut().remove(&number);
                                match result {
                                    Err(e) => Failed(format!("no result: {e}")),
                                    Ok((status, Ok(r))) => outcome(
                                        matches!(status, r2r::GoalStatus::Succeeded),
                                        &format!("{status:?}"),
                                        &r,
                                    ),
                                    Ok((status, Err(e))) => {
                                        Failed(format!("{status:?}: unreadable result: {e}"))
                                    }
                                }
                            }
                        },
                    };
                    let _ = answer.send(outcome);
                };
                if spawner.spawn_local(task).is_err() {
                    return;
                }
            }
        }
    }
}
