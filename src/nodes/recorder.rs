//! Recorder node: writes topics from any bus into a rosbag2 MCAP bag.
//!
//! Subscribes to the configured topics (or every topic the bus knows, discovered as they
//! appear), encodes each message to CDR on the receiving task and hands it to a writer
//! thread through a bounded channel: when the disk falls behind, the subscriptions'
//! keep-last queues drop (and count) messages instead of memory growing. The current
//! chunk is closed every `flush_every_s`, so a recording cut off by a crash (kill -9)
//! keeps everything up to the last flush.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Node, NodeContext};
use crate::bag::{BagWriter, Compression, WriterOptions};
use crate::bus::{Bus, Qos};
use crate::msg::{visit_type, Message, TypeVisitor};

/// Recorder parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecorderConfig {
    /// Bag directory to create (must not exist). Default: `bags/dreamplan_<unix time>`.
    pub out_dir: Option<PathBuf>,
    /// Topics to record; empty = every topic on the bus.
    pub topics: Vec<String>,
    /// Topics never recorded.
    pub exclude: Vec<String>,
    /// Topics whose publishers are latched (recorded with transient-local QoS, so the
    /// last message sent before the recorder joined is captured too).
    pub latched_topics: Vec<String>,
    /// MCAP chunk compression.
    pub compression: Compression,
    /// Queue depth per subscription.
    pub depth: usize,
    /// Close the current chunk this often (crash safety), seconds.
    pub flush_every_s: f64,
    /// Start a new file after this many MiB of messages, counted before compression.
    pub split_max_mib: Option<u64>,
    /// Start a new file after this many seconds of log time.
    pub split_max_s: Option<f64>,
    /// Drop what arrives instead of writing it (like `ros2 bag record --start-paused` and
    /// its pause/resume services). Live: set it through the parameter services to pause
    /// and resume a recording; topics found meanwhile are still added to the bag.
    pub paused: bool,
    /// At a stop, how long (s) what is still queued is written before the rest is dropped
    /// (counted, and said) and the bag closed: a disk that cannot keep up still leaves a
    /// whole bag. Below the runner's 5 s, after which a node is aborted.
    pub stop_timeout_s: f64,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            out_dir: None,
            topics: Vec::new(),
            exclude: vec!["/clock".into()],
            latched_topics: Vec::new(),
            compression: Compression::None,
            depth: 100,
            flush_every_s: 1.0,
            split_max_mib: None,
            split_max_s: None,
            paused: false,
            stop_timeout_s: 3.0,
        }
    }
}

/// What the recorder wrote, per topic.
pub type RecordedCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// The recorder node.
pub struct RecorderNode {
    config: RecorderConfig,
    out_dir: PathBuf,
    counts: RecordedCounts,
    skipped: Arc<AtomicU64>,
    unwritten: Arc<AtomicU64>,
}

impl RecorderNode {
    /// The bag directory this node writes.
    pub fn out_dir(&self) -> &std::path::Path {
        &self.out_dir
    }

    /// Messages written so far, per topic.
    pub fn counts(&self) -> RecordedCounts {
        self.counts.clone()
    }

    /// Messages received while paused, and so not written.
    pub fn skipped(&self) -> Arc<AtomicU64> {
        self.skipped.clone()
    }

    /// Messages received but dropped at the stop, once `stop_timeout_s` had passed with
    /// them still queued (a disk that could not keep up).
    pub fn unwritten(&self) -> Arc<AtomicU64> {
        self.unwritten.clone()
    }
}

enum Cmd {
    Topic {
        id: usize,
        name: String,
        type_name: &'static str,
        definition: &'static str,
        offered: Vec<Qos>,
    },
    Write {
        id: usize,
        time: u64,
        cdr: Vec<u8>,
    },
}

struct Subscribe<B> {
    bus: B,
    topic: String,
    id: usize,
    qos: Qos,
    offered: Vec<Qos>,
    tx: mpsc::Sender<Cmd>,
    shutdown: CancellationToken,
    paused: Paused,
}

/// Whether the recording is paused now: the `paused` parameter as last set, read for each
/// message (so a set applies to every message handled after it returns), or the config's
/// value for a node without parameter services.
#[derive(Clone)]
struct Paused {
    params: Arc<crate::nodes::params::LiveParams>,
    at_start: bool,
    skipped: Arc<AtomicU64>,
}

impl Paused {
    fn now(&self) -> bool {
        self.params
            .get("paused")
            .and_then(|v| v.as_bool())
            .unwrap_or(self.at_start)
    }
}

type Forward = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl<B: Bus> TypeVisitor for Subscribe<B> {
    type Output = anyhow::Result<(Forward, Cmd)>;
    fn visit<M: Message>(self) -> Self::Output {
        let mut sub = self.bus.subscribe::<M>(&self.topic, self.qos)?;
        let register = Cmd::Topic {
            id: self.id,
            name: self.topic.clone(),
            type_name: M::TYPE_NAME,
            definition: M::DEFINITION,
            offered: self.offered,
        };
        let (tx, id, shutdown, paused) = (self.tx, self.id, self.shutdown, self.paused);
        let topic = self.topic.clone();
        let forward = Box::pin(async move {
            // Encodes and hands one message to the writer (none while paused); an error
            // once the writer is gone.
            // Logged at the bus-clock time the message reached the subscription (rosbag2's
            // receive time), not when this task handles it: on a loaded machine the task may
            // run after a simulator has moved its clock on, and a transition's messages would
            // then be out of order with the episode events of other topics.
            let write =
                |(msg, arrived): (std::sync::Arc<M>, crate::msg::builtin_interfaces::Time)| {
                    let time = arrived.as_nanos().max(0) as u64;
                    let cmd = if paused.now() {
                        paused.skipped.fetch_add(1, Ordering::Relaxed);
                        None
                    } else {
                        Some(Cmd::Write {
                            id,
                            time,
                            cdr: msg.to_cdr(),
                        })
                    };
                    let tx = tx.clone();
                    async move {
                        match cmd {
                            Some(c) => tx.send(c).await.map_err(|_| ()),
                            None => Ok(()),
                        }
                    }
                };
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = sub.recv_stamped() => match m { Some(m) => m, None => break },
                };
                if write(msg).await.is_err() {
                    return;
                }
            }
            // Drain what is already queued so a stop loses nothing received.
            while let Some(msg) = sub.try_recv_stamped() {
                if write(msg).await.is_err() {
                    return;
                }
            }
            // The keep-last queue's evictions (the writer fell behind the topic): said at
            // the end, not only counted (before session 52 nothing said them).
            let dropped = sub.dropped();
            if dropped > 0 {
                tracing::warn!(%topic, "{dropped} messages were dropped unread: the recorder's queue for the topic was full (raise `depth`, or record fewer topics)");
            }
        });
        Ok((forward, register))
    }
}

fn writer_thread(
    dir: PathBuf,
    options: WriterOptions,
    flush_every: Duration,
    mut rx: mpsc::Receiver<Cmd>,
    counts: RecordedCounts,
    (hurry, unwritten): (Arc<AtomicBool>, Arc<AtomicU64>),
) -> anyhow::Result<crate::bag::WrittenBag> {
    let mut writer = BagWriter::create(&dir, options)?;
    let mut ids = BTreeMap::new();
    let mut names = BTreeMap::new();
    // A small runtime of its own lets this thread wait for messages and the flush timer
    // at once without busy-waiting; file I/O stays off the node runtime's workers.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("writer runtime")?;
    let _context = rt.enter();
    let mut flush_timer = tokio::time::interval(flush_every);
    loop {
        let cmd = rt.block_on(async {
            tokio::select! {
                c = rx.recv() => Some(c),
                _ = flush_timer.tick() => None,
            }
        });
        let cmd = match cmd {
            None => {
                writer.flush()?;
                continue;
            }
            Some(c) => c,
        };
        let Some(cmd) = cmd else { break };
        match cmd {
            Cmd::Topic {
                id,
                name,
                type_name,
                definition,
                offered,
            } => {
                let tid = writer.add_topic(&name, type_name, definition, &offered)?;
                ids.insert(id, tid);
                names.insert(id, name);
            }
            // Told to hurry (the stop's time is up): the rest is counted, not written, so
            // that the bag is closed whole within the node's grace.
            Cmd::Write { .. } if hurry.load(Ordering::Relaxed) => {
                unwritten.fetch_add(1, Ordering::Relaxed);
            }
            Cmd::Write { id, time, cdr } => {
                let tid = *ids.get(&id).context("message for an unregistered topic")?;
                writer.write_raw(tid, time, &cdr)?;
                *counts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(names[&id].clone())
                    .or_insert(0) += 1;
            }
        }
    }
    Ok(writer.finish()?)
}

impl Node for RecorderNode {
    const KIND: &'static str = "recorder";
    type Config = RecorderConfig;
    /// Applied at once; everything else is read at start.
    const LIVE: &'static [&'static str] = &["paused"];

    fn declared(config: &RecorderConfig) -> Option<serde_yaml::Value> {
        serde_yaml::to_value(config).ok()
    }

    fn validate(config: &RecorderConfig) -> anyhow::Result<()> {
        anyhow::ensure!(config.depth > 0, "depth must be > 0");
        anyhow::ensure!(
            config.flush_every_s.is_finite() && config.flush_every_s > 0.0,
            "flush_every_s must be a number of seconds > 0, not {}",
            config.flush_every_s
        );
        anyhow::ensure!(
            config.stop_timeout_s.is_finite() && (0.0..=4.5).contains(&config.stop_timeout_s),
            "stop_timeout_s must be 0–4.5 s (a node is aborted 5 s after the stop), not {}",
            config.stop_timeout_s
        );
        if let Some(s) = config.split_max_s {
            anyhow::ensure!(
                s.is_finite() && s > 0.0 && s < 1e9,
                "split_max_s must be a number of seconds > 0, not {s}"
            );
        }
        for t in config
            .topics
            .iter()
            .chain(&config.exclude)
            .chain(&config.latched_topics)
        {
            crate::bus::resolve_topic(t)?;
        }
        Ok(())
    }

    fn new(config: RecorderConfig) -> anyhow::Result<Self> {
        Self::validate(&config)?;
        let out_dir = config.out_dir.clone().unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            PathBuf::from(format!("bags/dreamplan_{secs}"))
        });
        anyhow::ensure!(
            !out_dir.exists(),
            "out_dir {} exists already",
            out_dir.display()
        );
        Ok(Self {
            config,
            out_dir,
            counts: Arc::default(),
            skipped: Arc::default(),
            unwritten: Arc::default(),
        })
    }

    async fn run<B: Bus>(self, ctx: NodeContext<B>) -> anyhow::Result<()> {
        let c = &self.config;
        let options = WriterOptions {
            compression: c.compression,
            max_file_bytes: c.split_max_mib.map(|m| m << 20),
            max_file_duration: c.split_max_s.map(Duration::from_secs_f64),
            ..Default::default()
        };
        let (tx, rx) = mpsc::channel::<Cmd>(1024);
        // Set once the stop's time is up: what is still queued is counted, not written.
        let hurry = Arc::new(AtomicBool::new(false));
        let (dir, counts, flush, hurried) = (
            self.out_dir.clone(),
            self.counts.clone(),
            Duration::from_secs_f64(c.flush_every_s),
            (hurry.clone(), self.unwritten.clone()),
        );
        let writer = std::thread::Builder::new()
            .name("bag-writer".into())
            .spawn(move || writer_thread(dir, options, flush, rx, counts, hurried))
            .context("starting the bag writer thread")?;
        tracing::info!(node = %ctx.name, "recording into {}{}", self.out_dir.display(), if c.paused { " (paused)" } else { "" });
        let paused = Paused {
            params: ctx.params.clone(),
            at_start: c.paused,
            skipped: self.skipped.clone(),
        };
        {
            // Says when a set pauses or resumes the recording.
            let (paused, stop, name) = (paused.clone(), ctx.shutdown.clone(), ctx.name.clone());
            let mut changes = ctx.params.watch();
            let mut was = paused.now();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = changes.changed() => if r.is_err() { return },
                    }
                    if paused.now() != was {
                        was = !was;
                        let skipped = paused.skipped.load(Ordering::Relaxed);
                        tracing::info!(node = %name, "recording {} ({skipped} messages not recorded while paused so far)", if was { "paused" } else { "resumed" });
                    }
                }
            });
        }

        let resolve = |v: &Vec<String>| {
            v.iter()
                .map(|t| crate::bus::resolve_topic(t))
                .collect::<Result<BTreeSet<_>, _>>()
        };
        let wanted = resolve(&c.topics)?;
        let exclude = resolve(&c.exclude)?;
        let latched = resolve(&c.latched_topics)?;
        let mut subscribed = BTreeSet::new();
        let mut forwards = JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut result = Ok(());
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if writer.is_finished() {
                break; // the writer failed; its error is reported below
            }
            for (topic, type_name) in ctx.bus.topic_types() {
                if subscribed.contains(&topic)
                    || exclude.contains(&topic)
                    || (!wanted.is_empty() && !wanted.contains(&topic))
                {
                    continue;
                }
                subscribed.insert(topic.clone());
                let offered = ctx.bus.publisher_qos(&topic);
                let qos = Qos::reader_for(&offered, c.depth, latched.contains(&topic));
                let visit = Subscribe {
                    bus: ctx.bus.clone(),
                    topic: topic.clone(),
                    id: subscribed.len(),
                    qos,
                    tx: tx.clone(),
                    shutdown: ctx.shutdown.clone(),
                    paused: paused.clone(),
                    offered: if offered.is_empty() {
                        vec![qos]
                    } else {
                        offered
                    },
                };
                match visit_type(&type_name, visit) {
                    Some(Ok((forward, register))) => {
                        if tx.send(register).await.is_err() {
                            break;
                        }
                        forwards.spawn(forward);
                        tracing::info!(node = %ctx.name, %topic, %type_name, "recording");
                    }
                    Some(Err(e)) => {
                        result = Err(e);
                        break;
                    }
                    None => {
                        tracing::warn!(node = %ctx.name, %topic, "type {type_name} is not known to dreamplan; not recorded")
                    }
                }
            }
            if result.is_err() {
                break;
            }
        }
        // A writer that failed (a full disk) ends the recording now: the forwarding task of a
        // quiet topic (a latched camera_info, a goal between episodes) would otherwise wait
        // for its next message or the shutdown, and the node went on running, recording
        // nothing, with its error held back until Ctrl-C.
        if writer.is_finished() && !ctx.shutdown.is_cancelled() {
            forwards.abort_all();
        }
        // A disk behind the topics holds the forwarders (the channel is full) and the
        // writer: `stop_timeout_s` after the stop the rest is counted and dropped, and the
        // bag closed whole. Before session 52 the runner aborted the node after its grace,
        // the writer thread died with the process, and the bag had no summary and no
        // metadata.yaml.
        // The clock runs from here over both the forwarders and the writer's queue (up to
        // 1024 messages once the forwarders are done).
        let timer = {
            let (hurry, grace, name) = (
                hurry.clone(),
                Duration::from_secs_f64(c.stop_timeout_s),
                ctx.name.clone(),
            );
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                tracing::warn!(node = %name, "the disk is behind: {} s after the stop messages are still queued; dropping the rest and closing the bag", grace.as_secs_f64());
                hurry.store(true, Ordering::Relaxed);
            })
        };
        while forwards.join_next().await.is_some() {}
        drop(tx);
        let joined = tokio::task::spawn_blocking(move || writer.join()).await;
        timer.abort();
        let written = joined
            .context("joining the bag writer")?
            .map_err(|_| anyhow::anyhow!("the bag writer thread panicked"))?
            .with_context(|| format!("writing {}", self.out_dir.display()))?;
        let unwritten = self.unwritten.load(Ordering::Relaxed);
        if unwritten > 0 {
            tracing::warn!(node = %ctx.name, "{unwritten} messages received were not written: the disk could not keep up (the bag is whole without them)");
        }
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tracing::info!(node = %ctx.name, "wrote {} messages on {} topics to {}", written.metadata.message_count, counts.len(), written.dir.display());
        // A topic asked for by name that never appeared (a typo, a node that did not start)
        // left no trace but a smaller bag before session 43.
        let mut never: Vec<&String> = wanted
            .iter()
            .filter(|t| !subscribed.contains(*t) && !exclude.contains(*t))
            .collect();
        never.sort();
        if !never.is_empty() {
            let seen: Vec<String> = ctx.bus.topic_types().into_keys().collect();
            tracing::warn!(
                node = %ctx.name,
                "nothing recorded of {}: no node published it (topics seen: {})",
                never.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "),
                if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
            );
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Told to hurry (the stop's time is up), the writer counts what is still queued
    /// instead of writing it, and closes the bag whole with its metadata.
    #[test]
    fn a_hurried_writer_counts_the_queue_and_closes_a_whole_bag() {
        use crate::msg::Message as _;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("bag");
        let (tx, rx) = mpsc::channel::<Cmd>(64);
        let t = crate::msg::builtin_interfaces::Time { sec: 1, nanosec: 0 };
        tx.try_send(Cmd::Topic {
            id: 0,
            name: "/ticks".into(),
            type_name: crate::msg::builtin_interfaces::Time::TYPE_NAME,
            definition: crate::msg::builtin_interfaces::Time::DEFINITION,
            offered: vec![Qos::keep_last(10)],
        })
        .ok()
        .unwrap();
        for i in 0..10u64 {
            tx.try_send(Cmd::Write {
                id: 0,
                time: i,
                cdr: t.to_cdr(),
            })
            .ok()
            .unwrap();
        }
        drop(tx);
        let unwritten = Arc::new(AtomicU64::new(0));
        let written = writer_thread(
            out.clone(),
            WriterOptions::default(),
            Duration::from_secs(1),
            rx,
            RecordedCounts::default(),
            (Arc::new(AtomicBool::new(true)), unwritten.clone()),
        )
        .unwrap();
        assert_eq!(written.metadata.message_count, 0);
        assert_eq!(unwritten.load(Ordering::Relaxed), 10);
        assert!(out.join("metadata.yaml").exists());
    }

    #[test]
    fn durations_that_are_not_seconds_are_refused() {
        // Each panicked in Duration::from_secs_f64 once the node ran.
        for (split, flush) in [
            (Some(-1.0), 1.0),
            (Some(f64::NAN), 1.0),
            (None, f64::INFINITY),
        ] {
            let e = RecorderNode::validate(&RecorderConfig {
                split_max_s: split,
                flush_every_s: flush,
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains("must be a number of seconds"), "{e}");
        }
        RecorderNode::validate(&RecorderConfig {
            split_max_s: Some(60.0),
            ..Default::default()
        })
        .unwrap();
    }
}
