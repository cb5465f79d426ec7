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
    let origin = format!("ROS parameters of node `{}`", N::KIND);
    let config: N::Config = node_config(&bus.parameters(), &origin)?;
    let node = N::new(config).with_context(|| origin.clone())?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    let watcher = tokio::spawn(async move {
        crate::runner::stop_requested().await;
        on_signal.cancel();
    });
    let ctx = NodeContext {
        name: N::KIND.to_string(),
        bus: bus.clone(),
        shutdown: shutdown.clone(),
        params: crate::nodes::params::LiveParams::fixed(),
    };
    let result = node.run(ctx).await;
    shutdown.cancel();
    bus.shutdown();
    watcher.abort();
    result
}
