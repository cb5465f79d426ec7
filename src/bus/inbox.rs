//! The bounded per-subscription queue every bus delivers into. Each message is stamped
//! with the bus clock as it arrives, the receive time a rosbag2 recorder logs: a node
//! that handles it later (a recorder's task waiting for the CPU while a simulator runs
//! ahead of the wall clock) still knows when it came.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::msg::builtin_interfaces::Time;

struct State<M> {
    queue: VecDeque<(Arc<M>, Time)>,
    closed: bool,
    dropped: u64,
    received: u64,
}

/// Keep-last queue of one subscription: pushing into a full queue evicts the oldest.
pub(crate) struct Inbox<M> {
    state: Mutex<State<M>>,
    notify: Notify,
    /// Signalled when the reader takes a message (for publishers that wait for room).
    room: Notify,
    depth: usize,
    /// Stamps arrivals.
    clock: Clock,
}

impl<M> Inbox<M> {
    pub(crate) fn new(depth: usize, clock: Clock) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(depth.min(64)),
                closed: false,
                dropped: 0,
                received: 0,
            }),
            notify: Notify::new(),
            room: Notify::new(),
            depth: depth.max(1),
            clock,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<M>> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every critical section is a single VecDeque operation), so poison is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `msg`; returns false once the inbox is closed.
    pub(crate) fn push(&self, msg: Arc<M>) -> bool {
        let arrived = self.clock.now();
        {
            let mut s = self.lock();
            if s.closed {
                return false;
            }
            if s.queue.len() == self.depth {
                s.queue.pop_front();
                s.dropped += 1;
            }
            s.queue.push_back((msg, arrived));
            s.received += 1;
        }
        self.notify.notify_one();
        true
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
        // A publisher waiting for room in this queue (`wait_for_room`) waits no longer:
        // nobody will take from it. Before session 42 only the reader was woken, and
        // `bag play --fast` hung on a graph that had stopped itself.
        self.room.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until the queue is not full (or closed).
    pub(crate) async fn wait_room(&self) {
        loop {
            let notified = self.room.notified();
            {
                let s = self.lock();
                if s.closed || s.queue.len() < self.depth {
                    return;
                }
            }
            notified.await;
        }
    }
}

/// Receives messages of type `M` from one topic.
///
/// Holds at most the subscription's QoS depth: when the node falls behind, the oldest
/// queued messages are dropped and counted ([`Subscriber::dropped`]).
pub struct Subscriber<M> {
    topic: String,
    inbox: Arc<Inbox<M>>,
    // Keeps whatever feeds the inbox alive (e.g. a ROS forwarding task's abort handle).
    _feeder: Option<Box<dyn Send + Sync>>,
}

impl<M> Drop for Subscriber<M> {
    /// Nobody reads this queue any more: closed, so a publisher waiting for room in it
    /// goes on.
    fn drop(&mut self) {
        self.inbox.close();
    }
}

impl<M> Subscriber<M> {
    pub(crate) fn new(
        topic: String,
        inbox: Arc<Inbox<M>>,
        feeder: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Self {
            topic,
            inbox,
            _feeder: feeder,
        }
    }

    /// The next message; `None` once the bus has shut down and the queue is drained.
    pub async fn recv(&mut self) -> Option<Arc<M>> {
        self.recv_stamped().await.map(|(m, _)| m)
    }

    /// The next message with the bus-clock time it arrived in this subscription's queue
    /// (what a recorder logs: not when this task got round to it); `None` once the bus has
    /// shut down and the queue is drained.
    pub async fn recv_stamped(&mut self) -> Option<(Arc<M>, Time)> {
        loop {
            {
                let mut s = self.inbox.lock();
                if let Some(m) = s.queue.pop_front() {
                    drop(s);
                    self.inbox.room.notify_waiters();
                    return Some(m);
                }
                if s.closed {
                    return None;
                }
            }
            // notify_one stores a permit when nobody waits, so a push between the
            // check above and this await is not lost.
            self.inbox.notify.notified().await;
        }
    }

    /// The next queued message without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<M>> {
        self.try_recv_stamped().map(|(m, _)| m)
    }

    /// [`Subscriber::try_recv`] with the message's arrival time (see
    /// [`Subscriber::recv_stamped`]).
    pub fn try_recv_stamped(&mut self) -> Option<(Arc<M>, Time)> {
        let m = self.inbox.lock().queue.pop_front();
        if m.is_some() {
            self.inbox.room.notify_waiters();
        }
        m
    }

    /// Messages evicted unread because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inbox.lock().dropped
    }

    /// Messages delivered into this subscription's queue so far.
    pub fn received(&self) -> u64 {
        self.inbox.lock().received
    }

    /// Messages waiting in the queue.
    pub fn queued(&self) -> usize {
        self.inbox.lock().queue.len()
    }

    /// The topic this subscription reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// Three readers of one topic, transient-local, reliable volatile and best-effort
/// volatile ([`Bus::subscribe_any_durability`](super::Bus::subscribe_any_durability)), read
/// as one. A message may arrive through several (a latched publisher's through all three,
/// a reliable volatile one's through the last two), and in any order relative to the next
/// one: readers keep the newest state (by its stamp, where it has one), or drop a repeat.
pub struct AnyDurability<M> {
    latched: Subscriber<M>,
    reliable: Subscriber<M>,
    volatile: Subscriber<M>,
}

impl<M> AnyDurability<M> {
    /// How many readers [`AnyDurability::recv_from`] tells apart.
    pub const READERS: usize = 3;

    pub(crate) fn new(
        latched: Subscriber<M>,
        reliable: Subscriber<M>,
        volatile: Subscriber<M>,
    ) -> Self {
        Self {
            latched,
            reliable,
            volatile,
        }
    }

    /// The next message from any reader; `None` once the bus has shut down.
    pub async fn recv(&mut self) -> Option<Arc<M>> {
        self.recv_from().await.map(|(_, m)| m)
    }

    /// [`AnyDurability::recv`] with which reader it came through (0: the transient-local
    /// one, 1: the reliable volatile one, 2: the best-effort one), for a state without a
    /// stamp that keeps each reader's last value (the e-stop).
    pub async fn recv_from(&mut self) -> Option<(usize, Arc<M>)> {
        tokio::select! {
            m = self.latched.recv() => m.map(|m| (0, m)),
            m = self.reliable.recv() => m.map(|m| (1, m)),
            m = self.volatile.recv() => m.map(|m| (2, m)),
        }
    }

    /// A queued message from any reader, without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<M>> {
        self.try_recv_from().map(|(_, m)| m)
    }

    /// [`AnyDurability::try_recv`] with which reader it came through.
    pub fn try_recv_from(&mut self) -> Option<(usize, Arc<M>)> {
        self.latched
            .try_recv()
            .map(|m| (0, m))
            .or_else(|| self.reliable.try_recv().map(|m| (1, m)))
            .or_else(|| self.volatile.try_recv().map(|m| (2, m)))
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        self.latched.topic()
    }
}

/// How long (wall-clock seconds) a message of a state topic read through the readers of
/// [`AnyDurability`] counts as another reader's late copy: the copies come within
/// milliseconds; a bag played again in a loop repeats its stamps seconds apart.
pub const ECHO_S: f64 = 1.0;

/// Whether a message stamped `stamp` (ns) is a late copy of an earlier one: stamped before
/// the state held, which came `held` = (its stamp, when it came) less than [`ECHO_S`] ago.
/// Then it must not replace the newer state. Unstamped messages (0) are never copies.
pub fn late_copy(stamp: i64, held: Option<(i64, std::time::Instant)>) -> bool {
    held.is_some_and(|(t, at)| stamp != 0 && stamp < t && at.elapsed().as_secs_f64() < ECHO_S)
}
