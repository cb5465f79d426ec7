//! Node logic, written once against [`Bus`] and run in-process or under ROS 2.
//!
//! A node is a struct built from its own config type ([`Node::Config`], YAML) whose
//! `run` future publishes and subscribes until the context's shutdown token fires or the
//! bus closes. Algorithms live elsewhere; a node is the only place a model meets a topic.

pub mod camera;
pub mod envelope_audit;
#[cfg(feature = "ros2")]
pub mod executable;
pub mod executor;
pub mod markers;
pub mod monitor;
pub mod params;
pub mod planner;
pub mod recorder;
pub mod sim;
pub mod trainer;
pub mod verifier;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::config::{node_config, NodeSpec};

/// What a running node gets: its name, the bus, and the token that asks it to stop.
pub struct NodeContext<B> {
    /// Instance name (for logs).
    pub name: String,
    /// The bus to publish and subscribe on.
    pub bus: B,
    /// Cancelled when the node must stop (Ctrl-C, end of run, fatal error elsewhere).
    pub shutdown: CancellationToken,
    /// Its parameters as the bus's parameter services see them; a node that applies
    /// some while running ([`Node::LIVE`]) watches this for changes.
    pub params: Arc<params::LiveParams>,
}

/// A node type: a kind name, a config type, a constructor and a run loop.
pub trait Node: Sized + Send + 'static {
    /// The `kind` that names this node type in graph configs and executables.
    const KIND: &'static str;
    /// Its parameters; unknown keys must be rejected (`#[serde(deny_unknown_fields)]`).
    type Config: DeserializeOwned + Send + 'static;
    /// Parameters (dotted names, or prefixes ending in `.`) the node applies while it runs
    /// when they are set through the parameter services; the others are read at start.
    const LIVE: &'static [&'static str] = &[];
    /// Builds the node, validating the config.
    fn new(config: Self::Config) -> anyhow::Result<Self>;
    /// Checks a config without building the node (what a parameter set must pass);
    /// nodes with [`Self::LIVE`] parameters implement it with `new`'s checks.
    fn validate(_config: &Self::Config) -> anyhow::Result<()> {
        Ok(())
    }
    /// Every parameter with its value, defaults filled in, for the parameter services;
    /// `None`: the keys the graph config gave.
    fn declared(_config: &Self::Config) -> Option<serde_yaml::Value> {
        None
    }
    /// Runs until `ctx.shutdown` is cancelled or the bus closes.
    fn run<B: Bus>(self, ctx: NodeContext<B>) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Node kinds `dreamplan run` can start.
pub const KINDS: &[&str] = &[
    camera::CameraNode::KIND,
    monitor::MonitorNode::KIND,
    recorder::RecorderNode::KIND,
    sim::SimNode::KIND,
    executor::ExecutorNode::KIND,
    planner::PlannerNode::KIND,
    verifier::VerifierNode::KIND,
    trainer::TrainerNode::KIND,
];

/// A node that has been configured and is ready to run on a bus of type `B`.
pub type ReadyNode<B> = Box<
    dyn FnOnce(NodeContext<B>) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send,
>;

/// Node `N` built from `spec`'s parameters, ready to run with its parameter services (what
/// `dreamplan run` and the per-node ROS executables both start).
pub(crate) fn ready<N: Node, B: Bus>(
    spec: &NodeSpec,
    origin: &str,
) -> anyhow::Result<ReadyNode<B>> {
    let where_ = format!("{origin}: node `{}` (kind {})", spec.name, spec.kind);
    let config: N::Config = node_config(&spec.params, &where_)?;
    let params = params::LiveParams::for_node::<N>(&spec.name, &config, &spec.params);
    let node = N::new(config).with_context(|| where_.clone())?;
    Ok(Box::new(move |mut ctx: NodeContext<B>| {
        if let Err(e) = ctx.bus.serve_parameters(params.clone()) {
            tracing::warn!(node = %ctx.name, "no parameter services: {e}");
        }
        ctx.params = params;
        Box::pin(node.run(ctx))
    }))
}

/// Whether a node of `kind` takes `params` (its config reads them, unknown keys
/// refused), without building the node: what `--ros-args` overrides are checked with.
pub fn accepts(kind: &str, params: &serde_yaml::Value) -> Result<(), String> {
    fn reads<N: Node>(params: &serde_yaml::Value) -> Result<(), String> {
        node_config::<N::Config>(params, N::KIND)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    match kind {
        camera::CameraNode::KIND => reads::<camera::CameraNode>(params),
        monitor::MonitorNode::KIND => reads::<monitor::MonitorNode>(params),
        recorder::RecorderNode::KIND => reads::<recorder::RecorderNode>(params),
        sim::SimNode::KIND => reads::<sim::SimNode>(params),
        executor::ExecutorNode::KIND => reads::<executor::ExecutorNode>(params),
        planner::PlannerNode::KIND => reads::<planner::PlannerNode>(params),
        verifier::VerifierNode::KIND => reads::<verifier::VerifierNode>(params),
        trainer::TrainerNode::KIND => reads::<trainer::TrainerNode>(params),
        other => Err(format!("unknown kind `{other}`")),
    }
}

/// Builds the node `spec` describes; unknown kinds and bad parameters are errors naming
/// `origin`, the node and the key.
pub fn build<B: Bus>(spec: &NodeSpec, origin: &str) -> anyhow::Result<ReadyNode<B>> {
    match spec.kind.as_str() {
        camera::CameraNode::KIND => ready::<camera::CameraNode, B>(spec, origin),
        monitor::MonitorNode::KIND => ready::<monitor::MonitorNode, B>(spec, origin),
        recorder::RecorderNode::KIND => ready::<recorder::RecorderNode, B>(spec, origin),
        sim::SimNode::KIND => ready::<sim::SimNode, B>(spec, origin),
        executor::ExecutorNode::KIND => ready::<executor::ExecutorNode, B>(spec, origin),
        planner::PlannerNode::KIND => ready::<planner::PlannerNode, B>(spec, origin),
        verifier::VerifierNode::KIND => ready::<verifier::VerifierNode, B>(spec, origin),
        trainer::TrainerNode::KIND => ready::<trainer::TrainerNode, B>(spec, origin),
        other => anyhow::bail!(
            "{origin}: node `{}` has unknown kind `{other}` (known kinds: {})",
            spec.name,
            KINDS.join(", ")
        ),
    }
}
