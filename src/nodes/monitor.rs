//! Monitor node: what `ros2 topic hz` and `ros2 topic bw` report, for several topics at
//! once — message rate, serialized bandwidth and messages dropped by keep-last queues.
//!
//! Topic types are discovered from the bus, so a topic is picked up once any node has
//! created it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Node, NodeContext};
use crate::bus::{Bus, Qos};
use crate::msg::{encoded_len, visit_type, Message, TypeVisitor};

/// Monitor parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Topics to watch.
    pub topics: Vec<String>,
    /// Seconds between reports.
    pub report_every_s: f64,
    /// Queue depth per subscription.
    pub depth: usize,
    /// Topics to subscribe with transient-local durability, to also count the message a
    /// latched publisher sent before the monitor joined (e.g. camera info). On ROS 2 a
    /// transient-local subscription only matches transient-local publishers. A topic whose
    /// publisher the bus already knows as latched is read so without being named here, and
    /// one with a best-effort publisher is read best effort ([`Qos::reader_for`], as the
    /// recorder reads).
    pub latched_topics: Vec<String>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            topics: Vec::new(),
            report_every_s: 2.0,
            depth: 10,
            latched_topics: Vec::new(),
        }
    }
}

/// Counters of one topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicStats {
    /// ROS type name.
    pub type_name: String,
    /// Messages received.
    pub messages: u64,
    /// Their total CDR size in bytes (with encapsulation header).
    pub bytes: u64,
    /// Messages lost to the keep-last queue.
    pub dropped: u64,
}

/// Shared view of the monitor's counters (for tests and the CLI's final summary).
pub type StatsTable = Arc<Mutex<BTreeMap<String, TopicStats>>>;

/// The monitor node.
pub struct MonitorNode {
    config: MonitorConfig,
    stats: StatsTable,
}

impl MonitorNode {
    /// The counters this node updates while it runs.
    pub fn stats(&self) -> StatsTable {
        self.stats.clone()
    }
}

struct Watch<B> {
    bus: B,
    topic: String,
    qos: Qos,
    stats: StatsTable,
    shutdown: CancellationToken,
}

type WatchLoop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl<B: Bus> TypeVisitor for Watch<B> {
    type Output = anyhow::Result<WatchLoop>;
    fn visit<M: Message>(self) -> anyhow::Result<WatchLoop> {
        let mut sub = self.bus.subscribe::<M>(&self.topic, self.qos)?;
        let (stats, topic, shutdown) = (self.stats, self.topic, self.shutdown);
        stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(topic.clone())
            .or_default()
            .type_name = M::TYPE_NAME.into();
        Ok(Box::pin(async move {
            let count = |msg: &M, dropped: u64| {
                let mut table = stats.lock().unwrap_or_else(|e| e.into_inner());
                let s = table.entry(topic.clone()).or_default();
                s.messages += 1;
                s.bytes += encoded_len(msg) as u64;
                s.dropped = dropped;
            };
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = sub.recv() => match m { Some(m) => m, None => break },
                };
                count(&msg, sub.dropped());
            }
            // What reached the queue before the stop was delivered: count it too.
            while let Some(msg) = sub.try_recv() {
                count(&msg, sub.dropped());
            }
        }))
    }
}

impl Node for MonitorNode {
    const KIND: &'static str = "monitor";
    type Config = MonitorConfig;

    fn new(config: MonitorConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.topics.is_empty(),
            "`topics` must list at least one topic"
        );
        anyhow::ensure!(config.report_every_s > 0.0, "report_every_s must be > 0");
        for t in &config.topics {
            crate::bus::resolve_topic(t)?;
        }
        Ok(Self {
            config,
            stats: Arc::default(),
        })
    }

    async fn run<B: Bus>(self, ctx: NodeContext<B>) -> anyhow::Result<()> {
        let mut pending: Vec<String> = self
            .config
            .topics
            .iter()
            .map(|t| crate::bus::resolve_topic(t))
            .collect::<Result<_, _>>()?;
        let latched: Vec<String> = self
            .config
            .latched_topics
            .iter()
            .map(|t| crate::bus::resolve_topic(t))
            .collect::<Result<_, _>>()?;
        let mut tasks = JoinSet::new();
        let period = Duration::from_secs_f64(self.config.report_every_s);
        let mut tick = tokio::time::interval(period.min(Duration::from_millis(200)));
        let mut last_report = Instant::now();
        let mut last_counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if !pending.is_empty() {
                let known = ctx.bus.topic_types();
                let mut still = Vec::new();
                for topic in pending {
                    match known.get(&topic) {
                        Some(ty) => {
                            // As the recorder reads: a reliable reader saw nothing of a
                            // best-effort camera over DDS (before session 43).
                            let qos = Qos::reader_for(
                                &ctx.bus.publisher_qos(&topic),
                                self.config.depth,
                                latched.contains(&topic),
                            );
                            let watch = Watch {
                                bus: ctx.bus.clone(),
                                topic: topic.clone(),
                                qos,
                                stats: self.stats.clone(),
                                shutdown: ctx.shutdown.clone(),
                            };
                            match visit_type(ty, watch) {
                                Some(watch_loop) => {
                                    tasks.spawn(watch_loop?);
                                }
                                None => {
                                    tracing::warn!(node = %ctx.name, %topic, "type {ty} is not known to dreamplan; not watched")
                                }
                            }
                        }
                        None => still.push(topic),
                    }
                }
                pending = still;
            }
            let elapsed = last_report.elapsed();
            if elapsed >= period {
                last_report = Instant::now();
                let table = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
                for (topic, s) in &table {
                    let (m0, b0) = last_counts.get(topic).copied().unwrap_or((0, 0));
                    let dt = elapsed.as_secs_f64();
                    tracing::info!(
                        node = %ctx.name,
                        "{topic} [{}]: {:.1} Hz, {:.2} MB/s, {} msgs, {} dropped",
                        s.type_name,
                        (s.messages - m0) as f64 / dt,
                        (s.bytes - b0) as f64 / dt / 1e6,
                        s.messages,
                        s.dropped
                    );
                    last_counts.insert(topic.clone(), (s.messages, s.bytes));
                }
                for topic in &pending {
                    tracing::info!(node = %ctx.name, "{topic}: not published yet");
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        let table = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (topic, s) in &table {
            tracing::info!(node = %ctx.name, "total {topic}: {} msgs, {} bytes, {} dropped", s.messages, s.bytes, s.dropped);
        }
        Ok(())
    }
}
