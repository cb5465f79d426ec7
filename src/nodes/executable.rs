//! `main` of the per-node executables that `ros2 run` / `ros2 launch` start
//! (feature `ros2`): one r2r node, parameters from the ROS params file and `-p`
//! overrides, Ctrl-C (SIGINT from launch) stops the node cleanly.

use std::process::ExitCode;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::{Node, NodeContext};
use crate::bus::ros::RosBus;
use crate::bus::Bus;

/// Runs node type `N` as a ROS 2 node named `N::KIND` (renamable with `__node:=`).
pub fn ros_main<N: Node>() -> ExitCode {
    crate::vlm::pin_cpu_threads();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DREAMPLAN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Runtime::new()
        .context("starting the tokio runtime")
        .and_then(|rt| rt.block_on(run::<N>()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run<N: Node>() -> anyhow::Result<()> {
    let bus = RosBus::new(N::KIND, "").context("creating the ROS 2 node")?;
    let name = bus.node_name();
    // Built and served as `dreamplan run` builds a graph's node: the parameter services
    // (`ros2 param list/get/set`) answer, live parameters apply while it runs. Before
    // session 44 the executables `ros2 launch` starts served none, though docs/ros2.md
    // said so.
    let spec = crate::config::NodeSpec {
        name: name.clone(),
        kind: N::KIND.into(),
        params: bus.parameters(),
        enabled: true,
    };
    let start = super::ready::<N, RosBus>(&spec, "ROS parameters")?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    let watcher = tokio::spawn(async move {
        crate::runner::stop_requested().await;
        on_signal.cancel();
    });
    let ctx = NodeContext {
        name,
        bus: bus.clone(),
        shutdown: shutdown.clone(),
        params: crate::nodes::params::LiveParams::fixed(),
    };
    let result = start(ctx).await;
    shutdown.cancel();
    bus.shutdown();
    watcher.abort();
    result
}
