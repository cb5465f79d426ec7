//! Replays a bag onto a bus: at the recorded rate, scaled, or as fast as the subscribers
//! take messages; optionally publishing `/clock` (rosgraph_msgs/Clock) for use_sim_time
//! and driving the bus's sim clock.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{BagError, BagReader, Decodable, Filter};
use crate::bus::{Bus, Durability, Publisher, Qos};
use crate::msg::builtin_interfaces::Time;
use crate::msg::rosgraph_msgs::Clock as ClockMsg;
use crate::msg::{visit_type, Message, TypeVisitor};

/// Playback pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Recorded timing multiplied by a rate (1.0 = real time, 2.0 = twice as fast).
    Rate(f64),
    /// No waiting on time; each publish waits until subscribers have queue room, so
    /// nothing is dropped on the in-process bus.
    AsFastAsConsumed,
}

/// How to play a bag.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// Pace of playback.
    pub pace: Pace,
    /// Which messages.
    pub filter: Filter,
    /// Publish `rosgraph_msgs/Clock` on this topic with each message's log time.
    pub clock_topic: Option<String>,
}

impl Default for PlayOptions {
    fn default() -> Self {
        Self {
            pace: Pace::Rate(1.0),
            filter: Filter::default(),
            clock_topic: None,
        }
    }
}

/// What a playback did.
#[derive(Debug, Default, Clone)]
pub struct PlayReport {
    /// Messages published per topic.
    pub published: BTreeMap<String, u64>,
    /// Messages skipped because their type is unknown or its schema differs, per topic.
    pub skipped: BTreeMap<String, u64>,
    /// Messages that failed to decode, per topic.
    pub undecodable: BTreeMap<String, u64>,
    /// Damage that ended reading early, if any.
    pub damage: Option<String>,
    /// Whether playback was stopped before the end.
    pub interrupted: bool,
}

trait CdrPublisher: Send + Sync {
    fn publish_cdr(&self, bytes: &[u8]) -> Result<(), crate::msg::CodecError>;
    fn wait_room(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
    fn subscribers(&self) -> Option<usize>;
}

impl<M: Message> CdrPublisher for Publisher<M> {
    fn publish_cdr(&self, bytes: &[u8]) -> Result<(), crate::msg::CodecError> {
        let m = M::from_cdr(bytes)?;
        // A closed bus ends playback through the shutdown token; nothing to do here.
        let _ = self.publish(m);
        Ok(())
    }
    fn wait_room(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.wait_for_room())
    }
    fn subscribers(&self) -> Option<usize> {
        self.subscriber_count()
    }
}

struct MakePublisher<'a, B> {
    bus: &'a B,
    topic: &'a str,
    qos: Qos,
}

impl<B: Bus> TypeVisitor for MakePublisher<'_, B> {
    type Output = Result<Box<dyn CdrPublisher>, crate::bus::BusError>;
    fn visit<M: Message>(self) -> Self::Output {
        Ok(Box::new(self.bus.publisher::<M>(self.topic, self.qos)?))
    }
}

/// Plays `reader` onto `bus` until the end of the bag or until `shutdown` fires.
pub async fn play<B: Bus>(
    reader: &BagReader,
    bus: &B,
    options: &PlayOptions,
    shutdown: &CancellationToken,
) -> Result<PlayReport, BagError> {
    Player::new(reader, bus, options)?
        .play(reader, bus, shutdown)
        .await
}

/// A playback whose publishers exist before the first message: the bag's topics (and
/// their types) are on the bus, so nodes that discover topics from the bus, like the
/// monitor, can subscribe before anything is sent, and nothing is published into a topic
/// nobody listens to yet. Made with [`Player::new`]; [`Player::wait_for_subscribers`]
/// then [`Player::play`].
pub struct Player {
    publishers: Vec<Option<Box<dyn CdrPublisher>>>,
    clock_pub: Option<Publisher<ClockMsg>>,
    options: PlayOptions,
}

impl Player {
    /// Declares a publisher for each playable topic of `reader` (and `/clock` if asked).
    pub fn new<B: Bus>(
        reader: &BagReader,
        bus: &B,
        options: &PlayOptions,
    ) -> Result<Self, BagError> {
        make_player(reader, bus, options)
    }

    /// Topics that will be played and have no subscriber yet (in-process bus; empty where
    /// the bus cannot tell).
    pub fn unsubscribed(&self, reader: &BagReader) -> Vec<String> {
        reader
            .topics()
            .iter()
            .zip(&self.publishers)
            .filter(|(t, p)| {
                self.options.filter.accepts(&t.name)
                    && p.as_ref().is_some_and(|p| p.subscribers() == Some(0))
            })
            .map(|(t, _)| t.name.clone())
            .collect()
    }

    /// Waits until every played topic has a subscriber, or `timeout` passes; returns the
    /// topics still without one.
    pub async fn wait_for_subscribers(&self, reader: &BagReader, timeout: Duration) -> Vec<String> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let missing = self.unsubscribed(reader);
            if missing.is_empty() || tokio::time::Instant::now() >= end {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Plays the bag until its end or until `shutdown` fires.
    pub async fn play<B: Bus>(
        self,
        reader: &BagReader,
        bus: &B,
        shutdown: &CancellationToken,
    ) -> Result<PlayReport, BagError> {
        run_player(self, reader, bus, shutdown).await
    }
}

fn make_player<B: Bus>(
    reader: &BagReader,
    bus: &B,
    options: &PlayOptions,
) -> Result<Player, BagError> {
    let mut publishers: Vec<Option<Box<dyn CdrPublisher>>> = Vec::new();
    for t in reader.topics() {
        let publisher = if t.decodable == Decodable::Yes {
            // Offer what the recorded publishers offered (latched stays latched).
            let qos = t.qos.first().copied().unwrap_or_default();
            let qos = if t
                .qos
                .iter()
                .any(|q| q.durability == Durability::TransientLocal)
            {
                qos.transient_local()
            } else {
                qos
            };
            match visit_type(
                &t.type_name,
                MakePublisher {
                    bus,
                    topic: &t.name,
                    qos,
                },
            ) {
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    tracing::warn!(topic = %t.name, "cannot publish: {e}");
                    None
                }
                None => None,
            }
        } else {
            tracing::warn!(topic = %t.name, type_name = %t.type_name, "skipped: {:?}", t.decodable);
            None
        };
        publishers.push(publisher);
    }
    let clock_pub = match &options.clock_topic {
        Some(topic) => Some(
            bus.publisher::<ClockMsg>(topic, Qos::keep_last(1))
                .map_err(|e| BagError::Mcap(e.to_string()))?,
        ),
        None => None,
    };
    Ok(Player {
        publishers,
        clock_pub,
        options: options.clone(),
    })
}

async fn run_player<B: Bus>(
    player: Player,
    reader: &BagReader,
    bus: &B,
    shutdown: &CancellationToken,
) -> Result<PlayReport, BagError> {
    let Player {
        publishers,
        clock_pub,
        options,
    } = player;
    let mut report = PlayReport::default();
    let clock = bus.clock();
    let start_wall = tokio::time::Instant::now();
    let mut first_log: Option<u64> = None;
    for item in reader.messages(&options.filter) {
        if shutdown.is_cancelled() {
            report.interrupted = true;
            break;
        }
        let rec = match item {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{e}");
                report.damage = Some(e.to_string());
                break;
            }
        };
        let Some(publisher) = &publishers[rec.topic_index] else {
            *report.skipped.entry(rec.topic.to_string()).or_insert(0) += 1;
            continue;
        };
        match options.pace {
            Pace::Rate(rate) => {
                let first = *first_log.get_or_insert(rec.log_time);
                let offset = Duration::from_nanos(rec.log_time.saturating_sub(first))
                    .div_f64(rate.max(1e-9));
                tokio::select! {
                    _ = shutdown.cancelled() => { report.interrupted = true; break }
                    _ = tokio::time::sleep_until(start_wall + offset) => {}
                }
            }
            Pace::AsFastAsConsumed => {
                tokio::select! {
                    _ = shutdown.cancelled() => { report.interrupted = true; break }
                    _ = publisher.wait_room() => {}
                }
            }
        }
        let stamp = Time::from_nanos(rec.log_time.min(i64::MAX as u64) as i64);
        clock.set(stamp.clone());
        if let Some(p) = &clock_pub {
            let _ = p.publish(ClockMsg { clock: stamp });
        }
        match publisher.publish_cdr(&rec.data) {
            Ok(()) => *report.published.entry(rec.topic.to_string()).or_insert(0) += 1,
            Err(e) => {
                tracing::warn!(topic = %rec.topic, "undecodable message: {e}");
                *report.undecodable.entry(rec.topic.to_string()).or_insert(0) += 1;
            }
        }
    }
    Ok(report)
}
