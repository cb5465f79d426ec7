//! The in-process bus: nodes in one process exchange `Arc`s of messages, no copies.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{
    resolve_topic, ActionOutcome, AnyDurability, Bus, BusError, Durability, GripperClient,
    GripperCommand, GripperGoal, Inbox, Publisher, Qos, Sink, Subscriber, TrajectoryClient,
    TrajectoryGoal,
};
use crate::clock::Clock;
use crate::msg::prelude::JointTrajectory;
use crate::msg::Message;

/// Type-erased view of a topic, for shutdown and introspection.
trait AnyTopic: Send + Sync {
    fn close(&self);
    fn publisher_qos(&self) -> Vec<Qos>;
    fn subscriptions(&self) -> usize;
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

struct Topic<M> {
    /// Lock order: `subscribers`, then `latched`. A send and a subscription each hold
    /// `subscribers` while they touch the history, so a transient-local subscriber that
    /// joins during a send gets that message exactly once: from the history or live.
    subscribers: Mutex<Vec<Weak<Inbox<M>>>>,
    /// Transient-local history, kept per publisher as ROS 2 keeps it per writer: each
    /// latched publisher's last `depth` messages, whatever the others send.
    latched: Mutex<Latched<M>>,
    /// Numbers the topic's publishers, for their latched histories.
    next_publisher: std::sync::atomic::AtomicU64,
    /// QoS of every publisher created on the topic.
    offered: Mutex<Vec<Qos>>,
    /// Subscriptions ever made on the topic.
    subscriptions: std::sync::atomic::AtomicUsize,
}

impl<M: Message> AnyTopic for Topic<M> {
    fn close(&self) {
        let subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for inbox in subs.iter().filter_map(Weak::upgrade) {
            inbox.close();
        }
    }
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
    fn publisher_qos(&self) -> Vec<Qos> {
        self.offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Acquire)
    }
}

/// The latched messages of a topic's publishers, numbered in the order they were sent.
struct Latched<M> {
    next_seq: u64,
    by_publisher: HashMap<u64, VecDeque<(u64, Arc<M>)>>,
}

impl<M> Latched<M> {
    fn new() -> Self {
        Self {
            next_seq: 0,
            by_publisher: HashMap::new(),
        }
    }

    fn keep(&mut self, publisher: u64, depth: usize, msg: Arc<M>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let history = self.by_publisher.entry(publisher).or_default();
        history.push_back((seq, msg));
        while history.len() > depth {
            history.pop_front();
        }
    }

    /// Every publisher's kept messages, oldest first.
    fn in_order(&self) -> Vec<Arc<M>> {
        let mut all: Vec<&(u64, Arc<M>)> = self.by_publisher.values().flatten().collect();
        all.sort_by_key(|(seq, _)| *seq);
        all.into_iter().map(|(_, m)| m.clone()).collect()
    }
}

struct Entry {
    type_name: &'static str,
    topic: Arc<dyn AnyTopic>,
}

struct Inner {
    topics: Mutex<HashMap<String, Entry>>,
    closed: AtomicBool,
    clock: Clock,
    /// In-process `FollowJointTrajectory` servers, by action name.
    actions: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<TrajectoryGoal>>>,
    /// `GripperCommand` servers by action name (`serve_grippers`).
    grippers: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<GripperGoal>>>,
}

/// How a topic of a [`LocalBus`] is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicUse {
    /// The message type (ROS name).
    pub type_name: &'static str,
    /// Publishers ever created.
    pub publishers: usize,
    /// Subscriptions ever made.
    pub subscriptions: usize,
}

/// In-process bus on tokio. Cloning shares the bus.
///
/// QoS: keep-last `depth` per subscription; each transient-local publisher's last `depth`
/// messages are kept on the topic and handed, oldest first, to transient-local
/// subscribers that join later (ROS 2's "latched" behaviour). Unlike ROS 2, the history
/// outlives its publisher: a node that latched a goal and ended still hands it on.
/// Reliability has no effect in-process: nothing is
/// lost except by keep-last eviction.
#[derive(Clone)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new(Clock::system())
    }
}

impl LocalBus {
    /// A bus whose nodes stamp messages with `clock`.
    pub fn new(clock: Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                topics: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                clock,
                actions: Mutex::new(HashMap::new()),
                grippers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Serves the `FollowJointTrajectory` action `action` in this process: every goal a
    /// [`Bus::trajectory_client`] of this bus sends arrives here with the channel for its
    /// outcome (tests, or a simulated controller). A later call replaces the server.
    pub fn serve_trajectories(
        &self,
        action: &str,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<TrajectoryGoal>, BusError> {
        let name = resolve_topic(action)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.inner
            .actions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, tx);
        Ok(rx)
    }

    /// Serves the `GripperCommand` action `action` in this process: every command a
    /// [`Bus::gripper_client`] of this bus sends arrives here with the channel for its
    /// outcome (tests, or a simulated gripper). A later call replaces the server.
    pub fn serve_grippers(
        &self,
        action: &str,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<GripperGoal>, BusError> {
        let name = resolve_topic(action)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.inner
            .grippers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, tx);
        Ok(rx)
    }

    /// Every topic the bus has seen, by name: its type and how many publishers and
    /// subscriptions were ever made on it (what `ros2 topic list -v` shows of a graph).
    pub fn topic_graph(&self) -> BTreeMap<String, TopicUse> {
        let topics = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .iter()
            .map(|(k, e)| {
                let u = TopicUse {
                    type_name: e.type_name,
                    publishers: e.topic.publisher_qos().len(),
                    subscriptions: e.topic.subscriptions(),
                };
                (k.clone(), u)
            })
            .collect()
    }

    fn topic<M: Message>(&self, name: &str) -> Result<(String, Arc<Topic<M>>), BusError> {
        let name = resolve_topic(name)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed(name));
        }
        let mut topics = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        let entry = topics.entry(name.clone()).or_insert_with(|| Entry {
            type_name: M::TYPE_NAME,
            topic: Arc::new(Topic::<M> {
                subscribers: Mutex::new(Vec::new()),
                latched: Mutex::new(Latched::new()),
                next_publisher: std::sync::atomic::AtomicU64::new(0),
                offered: Mutex::new(Vec::new()),
                subscriptions: std::sync::atomic::AtomicUsize::new(0),
            }),
        });
        if entry.type_name != M::TYPE_NAME {
            return Err(BusError::TypeMismatch {
                topic: name,
                existing: entry.type_name.to_string(),
                requested: M::TYPE_NAME.to_string(),
            });
        }
        let topic = entry
            .topic
            .clone()
            .as_any()
            .downcast::<Topic<M>>()
            .map_err(|_| BusError::TypeMismatch {
                topic: name.clone(),
                existing: entry.type_name.to_string(),
                requested: M::TYPE_NAME.to_string(),
            })?;
        Ok((name, topic))
    }
}

struct LocalSink<M> {
    topic_name: String,
    topic: Arc<Topic<M>>,
    latch_depth: Option<usize>,
    /// This publisher's number on its topic (its latched history).
    id: u64,
    bus: Arc<Inner>,
}

impl<M: Message> Sink<M> for LocalSink<M> {
    fn send(&self, msg: Arc<M>) -> Result<(), BusError> {
        if self.bus.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed(self.topic_name.clone()));
        }
        let mut subs = self
            .topic
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(depth) = self.latch_depth {
            self.topic
                .latched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keep(self.id, depth, msg.clone());
        }
        subs.retain(|weak| match weak.upgrade() {
            Some(inbox) => inbox.push(msg.clone()) || !inbox.is_closed(),
            None => false,
        });
        Ok(())
    }

    fn wait_room(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let inboxes: Vec<_> = {
                let subs = self
                    .topic
                    .subscribers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                subs.iter().filter_map(Weak::upgrade).collect()
            };
            for inbox in inboxes {
                inbox.wait_room().await;
            }
        })
    }

    fn subscribers(&self) -> Option<usize> {
        let subs = self
            .topic
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Some(
            subs.iter()
                .filter_map(Weak::upgrade)
                .filter(|inbox| !inbox.is_closed())
                .count(),
        )
    }
}

impl Bus for LocalBus {
    fn publisher<M: Message>(&self, topic: &str, qos: Qos) -> Result<Publisher<M>, BusError> {
        let (name, topic) = self.topic::<M>(topic)?;
        topic
            .offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(qos);
        let latch_depth =
            (qos.durability == Durability::TransientLocal).then_some(qos.depth.max(1));
        let id = topic.next_publisher.fetch_add(1, Ordering::AcqRel);
        let sink = LocalSink {
            topic_name: name.clone(),
            topic,
            latch_depth,
            id,
            bus: self.inner.clone(),
        };
        Ok(Publisher::new(name, Arc::new(sink)))
    }

    fn subscribe<M: Message>(&self, topic: &str, qos: Qos) -> Result<Subscriber<M>, BusError> {
        let (name, topic) = self.topic::<M>(topic)?;
        let inbox = Inbox::new(qos.depth, self.inner.clock.clone());
        let mut subs = topic.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if qos.durability == Durability::TransientLocal {
            let latched = topic.latched.lock().unwrap_or_else(|e| e.into_inner());
            for m in latched.in_order() {
                inbox.push(m);
            }
        }
        subs.push(Arc::downgrade(&inbox));
        drop(subs);
        topic.subscriptions.fetch_add(1, Ordering::AcqRel);
        Ok(Subscriber::new(name, inbox, None))
    }

    /// In process every subscription gets every message whatever the publisher's
    /// durability, so the transient-local reader alone serves: more readers would deliver
    /// each message again. The other two never receive.
    fn subscribe_any_durability<M: Message>(
        &self,
        topic: &str,
        depth: usize,
    ) -> Result<AnyDurability<M>, BusError> {
        let latched = self.subscribe(
            topic,
            Qos {
                depth: depth.max(1),
                ..Qos::latched()
            },
        )?;
        let name = latched.topic().to_string();
        let idle = || Subscriber::new(name.clone(), Inbox::new(1, self.inner.clock.clone()), None);
        Ok(AnyDurability::new(latched, idle(), idle()))
    }

    fn topic_types(&self) -> BTreeMap<String, String> {
        let topics = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .iter()
            .map(|(k, e)| (k.clone(), e.type_name.to_string()))
            .collect()
    }

    fn publisher_qos(&self, topic: &str) -> Vec<Qos> {
        let Ok(name) = resolve_topic(topic) else {
            return Vec::new();
        };
        let topics = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .get(&name)
            .map(|e| e.topic.publisher_qos())
            .unwrap_or_default()
    }

    fn clock(&self) -> Clock {
        self.inner.clock.clone()
    }

    fn trajectory_client(&self, action: &str) -> Result<Arc<dyn TrajectoryClient>, BusError> {
        let server = served(&self.inner.actions, action, |name| {
            format!(
                "no FollowJointTrajectory server `{name}` in this process (the in-process bus serves one only through LocalBus::serve_trajectories): publish on a trajectory topic instead"
            )
        })?;
        Ok(Arc::new(LocalTrajectoryClient {
            server,
            cancel: Mutex::new(tokio_util::sync::CancellationToken::new()),
        }))
    }

    /// The in-process server takes the command whatever the kind.
    fn gripper_client(
        &self,
        action: &str,
        _kind: &super::GripperKind,
    ) -> Result<Arc<dyn GripperClient>, BusError> {
        let server = served(&self.inner.grippers, action, |name| {
            format!(
                "no gripper server `{name}` in this process (the in-process bus serves one only through LocalBus::serve_grippers): give the gripper as the trajectory's finger joint instead"
            )
        })?;
        Ok(Arc::new(LocalGripperClient {
            server,
            cancel: Mutex::new(tokio_util::sync::CancellationToken::new()),
        }))
    }

    fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let topics = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        for entry in topics.values() {
            entry.topic.close();
        }
    }
}

/// The in-process server of `action` in `servers`, or the error `missing` words for its
/// resolved name.
fn served<G>(
    servers: &Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<G>>>,
    action: &str,
    missing: impl FnOnce(&str) -> String,
) -> Result<tokio::sync::mpsc::UnboundedSender<G>, BusError> {
    let name = resolve_topic(action)?;
    let server = servers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&name)
        .cloned();
    server.ok_or_else(|| BusError::Unsupported(missing(&name)))
}

/// A client of an in-process `FollowJointTrajectory` server.
struct LocalTrajectoryClient {
    server: tokio::sync::mpsc::UnboundedSender<TrajectoryGoal>,
    /// Cancels the goals sent so far; replaced after each `cancel_all`.
    cancel: Mutex<tokio_util::sync::CancellationToken>,
}

impl TrajectoryClient for LocalTrajectoryClient {
    fn follow(
        &self,
        trajectory: JointTrajectory,
        accepted: tokio::sync::oneshot::Sender<()>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ActionOutcome> + Send + 'static>> {
        let (answer, outcome) = tokio::sync::oneshot::channel();
        let sent = self
            .server
            .send(TrajectoryGoal { trajectory, answer })
            .is_ok();
        // An in-process server takes every goal it is given.
        if sent {
            let _ = accepted.send(());
        }
        Box::pin(local_outcome(sent, current(&self.cancel), outcome))
    }

    fn cancel_all(&self) {
        cancel_and_renew(&self.cancel);
    }
}

/// A client of an in-process `GripperCommand` server.
struct LocalGripperClient {
    server: tokio::sync::mpsc::UnboundedSender<GripperGoal>,
    /// Cancels the goals sent so far; replaced after each `cancel_all`.
    cancel: Mutex<tokio_util::sync::CancellationToken>,
}

impl GripperClient for LocalGripperClient {
    fn command(
        &self,
        command: GripperCommand,
        _what: super::GripperMove,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ActionOutcome> + Send + 'static>> {
        let (answer, outcome) = tokio::sync::oneshot::channel();
        let sent = self.server.send(GripperGoal { command, answer }).is_ok();
        Box::pin(local_outcome(sent, current(&self.cancel), outcome))
    }

    fn cancel_all(&self) {
        cancel_and_renew(&self.cancel);
    }
}

/// The token that cancels the goals sent from now until the next `cancel_all`.
fn current(
    cancel: &Mutex<tokio_util::sync::CancellationToken>,
) -> tokio_util::sync::CancellationToken {
    cancel.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Cancels every goal sent so far; later goals get a fresh token.
fn cancel_and_renew(cancel: &Mutex<tokio_util::sync::CancellationToken>) {
    let mut c = cancel.lock().unwrap_or_else(|e| e.into_inner());
    c.cancel();
    *c = tokio_util::sync::CancellationToken::new();
}

/// An in-process goal's outcome: the server's answer, or why there is none.
async fn local_outcome(
    sent: bool,
    cancel: tokio_util::sync::CancellationToken,
    outcome: tokio::sync::oneshot::Receiver<ActionOutcome>,
) -> ActionOutcome {
    if !sent {
        return ActionOutcome::Failed("the action server is gone".into());
    }
    tokio::select! {
        _ = cancel.cancelled() => ActionOutcome::Failed("cancelled".into()),
        o = outcome => o.unwrap_or_else(|_| ActionOutcome::Failed("the server dropped the goal".into())),
    }
}
