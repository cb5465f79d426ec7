//! `main` of the per-node executables that `ros2 run` / `ros2 launch` start
//! (feature `ros2`): one r2r node, parameters from the ROS params file and `-p`
//! overrides, Ctrl-C (SIGINT from launch) stops the node cleanly.

use std::process::ExitCode;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::{Node, NodeContext};
use crate::bus::ros::RosBus;
use crate::bus::Bus;
use crate::config::node_config;

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
    let origin = format!("ROS parameters of node `{name}` (kind {})", N::KIND);
    let given = bus.parameters();
    let config: N::Config = node_config(&given, &origin)?;
    // The parameter services (`ros2 param list/get/set`), as `dreamplan run` serves them:
    // live parameters apply while the node runs, the others are read-only. Before session
    // 44 the executables `ros2 launch` starts served none, though docs/ros2.md said so.
    let params = crate::nodes::params::LiveParams::for_node::<N>(&name, &config, &given);
    let node = N::new(config).with_context(|| origin.clone())?;
    if let Err(e) = bus.serve_parameters(params.clone()) {
        tracing::warn!(node = %name, "no parameter services: {e}");
    }
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
        params,
    };
    let result = node.run(ctx).await;
    shutdown.cancel();
    bus.shutdown();
    watcher.abort();
    result
}
