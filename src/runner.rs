//! Runs a node graph in one process: build every node first (so a config error starts
//! nothing), spawn them, stop them all on Ctrl-C, after the configured duration, or when
//! one fails, and make sure no task outlives the run.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::config::GraphConfig;
use crate::nodes::{self, Node as _, NodeContext, ReadyNode};

/// How long nodes get to return after shutdown is requested before they are aborted.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How each node ended.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Nodes that returned `Ok`.
    pub stopped: Vec<String>,
    /// Nodes that returned an error, with it.
    pub failed: Vec<(String, String)>,
    /// Nodes that did not stop within [`STOP_GRACE`] and were aborted.
    pub aborted: Vec<String>,
}

impl RunReport {
    /// True when every node stopped cleanly.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.aborted.is_empty()
    }
}

/// Runs `graph` on `bus` until `shutdown` is cancelled, `graph.duration_s` passes, a
/// node fails, or every `sim` node has played its episodes and returned (the world the
/// graph acts in has ended, so nothing more can happen). Every spawned task has finished
/// when this returns.
pub async fn run_graph<B: Bus>(
    bus: B,
    graph: &GraphConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<RunReport> {
    let stop = shutdown.child_token();
    let sims = graph
        .nodes
        .iter()
        .filter(|n| n.enabled && n.kind == nodes::sim::SimNode::KIND)
        .count();
    let sims_left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(sims));
    let mut ready = Vec::new();
    for spec in graph.nodes.iter().filter(|n| n.enabled) {
        let mut start = nodes::build::<B>(spec, &graph.origin)?;
        if spec.kind == nodes::sim::SimNode::KIND {
            let (stop, left) = (stop.clone(), sims_left.clone());
            start = Box::new(move |ctx| {
                let settle = ctx.bus.settle();
                let run = start(ctx);
                Box::pin(async move {
                    let r = run.await;
                    let last = left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1;
                    // Only a simulator that ended by itself (its episodes played) stops
                    // the graph; one that ended because the graph stopped says nothing.
                    if r.is_ok() && last && !stop.is_cancelled() {
                        tracing::info!("the simulator played its episodes; stopping the graph");
                        // Let its last events (the final `scored`) reach every subscriber
                        // (a recorder, the run report) before the bus closes.
                        tokio::time::sleep(settle).await;
                        stop.cancel();
                    }
                    r
                })
            });
        }
        ready.push((spec.name.clone(), start));
    }
    anyhow::ensure!(!ready.is_empty(), "{}: no enabled nodes", graph.origin);
    let deadline = (graph.duration_s > 0.0).then(|| Duration::from_secs_f64(graph.duration_s));
    Ok(run_nodes(bus, ready, deadline, STOP_GRACE, stop).await)
}

/// Runs already-built nodes; see [`run_graph`]. Nodes that ignore the shutdown token are
/// aborted `grace` after it fires and listed in the report.
pub async fn run_nodes<B: Bus>(
    bus: B,
    ready: Vec<(String, ReadyNode<B>)>,
    deadline: Option<Duration>,
    grace: Duration,
    shutdown: CancellationToken,
) -> RunReport {
    let mut tasks: JoinSet<(String, anyhow::Result<()>)> = JoinSet::new();
    let mut names = HashMap::new();
    for (name, start) in ready {
        let ctx = NodeContext {
            name: name.clone(),
            bus: bus.clone(),
            shutdown: shutdown.child_token(),
            params: crate::nodes::params::LiveParams::fixed(),
        };
        tracing::info!(node = %name, "starting");
        let fut = start(ctx);
        let id = tasks
            .spawn({
                let name = name.clone();
                async move { (name, fut.await) }
            })
            .id();
        names.insert(id, name);
    }

    let mut report = RunReport::default();
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    // Wait for: the external stop, the deadline, or the first node to end.
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = &mut sleep => { tracing::info!("run duration reached"); break }
            done = tasks.join_next() => match done {
                None => break,
                Some(joined) => {
                    record(&mut report, &names, joined, false);
                    if !report.failed.is_empty() {
                        tracing::error!("a node failed; stopping the graph");
                        break;
                    }
                }
            }
        }
    }

    shutdown.cancel();
    bus.shutdown();
    let drain = async {
        while let Some(joined) = tasks.join_next().await {
            record(&mut report, &names, joined, true);
        }
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tasks.abort_all();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Err(e) if e.is_cancelled() => report.aborted.push(
                    names
                        .get(&e.id())
                        .cloned()
                        .unwrap_or_else(|| format!("task {}", e.id())),
                ),
                other => record(&mut report, &names, other, true),
            }
        }
        tracing::warn!(aborted = ?report.aborted, "nodes did not stop within {grace:?}; aborted");
    }
    report
}

/// `stopping`: the graph was told to stop and the bus closed; a node that ends then
/// because the bus refused it (one still subscribing when a very short run ended) has
/// stopped, not failed.
fn record(
    report: &mut RunReport,
    names: &HashMap<tokio::task::Id, String>,
    joined: Result<(String, anyhow::Result<()>), tokio::task::JoinError>,
    stopping: bool,
) {
    match joined {
        Ok((name, Ok(()))) => {
            tracing::info!(node = %name, "stopped");
            report.stopped.push(name);
        }
        Ok((name, Err(e)))
            if stopping
                && e.chain().any(|c| {
                    matches!(
                        c.downcast_ref::<crate::bus::BusError>(),
                        Some(crate::bus::BusError::Closed(_))
                    )
                }) =>
        {
            tracing::info!(node = %name, "stopped (the bus closed under it: {e:#})");
            report.stopped.push(name);
        }
        Ok((name, Err(e))) => {
            tracing::error!(node = %name, "failed: {e:#}");
            report.failed.push((name, format!("{e:#}")));
        }
        // A node that panicked: its name is known from the task id.
        Err(e) => report.failed.push((
            names
                .get(&e.id())
                .cloned()
                .unwrap_or_else(|| format!("task {}", e.id())),
            e.to_string(),
        )),
    }
}

/// Waits for a request to stop: Ctrl-C (SIGINT) or, on Unix, SIGTERM (what `kill`,
/// `timeout`, `docker stop` and systemd send). Returns its name; never returns when
/// neither can be listened for. Before session 42 only Ctrl-C was heard, and a SIGTERM
/// ended the process at once: a recording lost its last second and its `metadata.yaml`.
pub async fn stop_requested() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                r = tokio::signal::ctrl_c() => match r {
                    Ok(()) => "Ctrl-C",
                    Err(_) => { term.recv().await; "SIGTERM" }
                },
                _ = term.recv() => "SIGTERM",
            };
        }
    }
    match tokio::signal::ctrl_c().await {
        Ok(()) => "Ctrl-C",
        Err(_) => std::future::pending().await,
    }
}

/// `run_graph` with Ctrl-C and SIGTERM wired to the shutdown token.
pub async fn run_until_ctrl_c<B: Bus>(bus: B, graph: &GraphConfig) -> anyhow::Result<RunReport> {
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    let watcher = tokio::spawn(async move {
        let what = stop_requested().await;
        tracing::info!("{what}: stopping all nodes");
        on_signal.cancel();
    });
    let report = run_graph(bus, graph, shutdown)
        .await
        .context("running the node graph");
    watcher.abort();
    let _ = watcher.await;
    report
}
