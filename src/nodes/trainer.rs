//! Trainer node: the offline trainer as a node. It runs one job when it starts, ORPO on a
//! preference file (LoRA adapters, one per task by default, [`crate::train::orpo`]) or the
//! world model on bags ([`crate::world_model::train`]), and reports on a `TrainerStatus`
//! topic: `running` with the step, total and loss as it goes, then `done` with the output
//! folder, or `failed` with the reason. A planner node listening to that topic
//! (`topics.trainer`) loads a finished adapter without restarting.
//!
//! The job runs on a thread of its own. Shutdown does not wait for it: the trainers write
//! atomic checkpoints, so starting the node again with the same parameters resumes where the
//! last checkpoint left off (after a crash or `kill -9` too).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Node, NodeContext};
use crate::bus::{Bus, Qos};
use crate::msg::dreamplan::TrainerStatus;
use crate::msg::prelude::*;
use crate::train::orpo::{self, OrpoConfig, OrpoProgress};

/// What the node trains.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// ORPO on `pairs` for the planner in `planner`: LoRA adapters into `out`.
    Orpo,
    /// The world model on `bags`, into `out`.
    WorldModel,
}

impl Job {
    fn name(self) -> &'static str {
        match self {
            Job::Orpo => "orpo",
            Job::WorldModel => "world_model",
        }
    }
}

/// Topic names of the trainer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerTopics {
    /// Progress and result (out, latched: a late planner still sees the last `done`).
    pub status: String,
}

impl Default for TrainerTopics {
    fn default() -> Self {
        Self {
            status: "/trainer/status".into(),
        }
    }
}

/// Trainer parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerConfig {
    /// What to train.
    pub job: Job,
    /// The planner's model folder (job `orpo`).
    pub planner: Option<PathBuf>,
    /// The preference file (job `orpo`), from `dreamplan preferences`.
    pub pairs: Option<PathBuf>,
    /// Bags, or folders of bags (job `world_model`), from `dreamplan collect` or `ros2 bag record`.
    pub bags: Vec<PathBuf>,
    /// Output folder: the adapter (set) or the world-model folder. A checkpoint there from
    /// the same settings is resumed.
    pub out: PathBuf,
    /// ORPO settings (job `orpo`); `steps` etc. as `dreamplan train-orpo`.
    pub orpo: OrpoConfig,
    /// One adapter for every task instead of one per task (job `orpo`).
    pub shared: bool,
    /// World-model size preset (job `world_model`): `cpu` or `gpu`.
    pub preset: String,
    /// World-model training settings (job `world_model`).
    pub world_model: crate::world_model::train::TrainConfig,
    /// The camera the bags were recorded through when it is not the built-in world's (job
    /// `world_model`; `render::CameraSpec`: its calibration and hand-eye pose, as
    /// `train-world-model --camera`). Unset: the built-in camera; a real arm's bags are
    /// then refused with the reason.
    pub camera: Option<crate::render::CameraSpec>,
    /// Topic names.
    pub topics: TrainerTopics,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            job: Job::Orpo,
            planner: None,
            pairs: None,
            bags: Vec::new(),
            out: PathBuf::new(),
            orpo: OrpoConfig::default(),
            shared: false,
            preset: "cpu".into(),
            world_model: crate::world_model::train::TrainConfig::default(),
            camera: None,
            topics: TrainerTopics::default(),
        }
    }
}

/// The trainer node.
pub struct TrainerNode {
    config: TrainerConfig,
}

/// What the job thread reports.
#[derive(Debug)]
enum Report {
    Step {
        step: usize,
        total: usize,
        loss: f64,
        part: String,
    },
    Done,
    Failed(String),
}

fn run_orpo(cfg: &TrainerConfig, tx: &mpsc::UnboundedSender<Report>) -> anyhow::Result<()> {
    let planner = cfg.planner.as_deref().expect("checked in new");
    let pairs = cfg.pairs.as_deref().expect("checked in new");
    let step = |part: String, p: OrpoProgress| match p {
        OrpoProgress::Step { step, total, stats } => {
            let _ = tx.send(Report::Step {
                step,
                total,
                loss: stats.loss,
                part,
            });
        }
        OrpoProgress::Note(note) => tracing::warn!("{part}: {note}"),
        OrpoProgress::Resumed(_) => {}
    };
    if cfg.shared {
        orpo::train(planner, pairs, &cfg.out, &cfg.orpo, &|p| {
            step("shared adapter".into(), p)
        })?;
    } else {
        orpo::train_per_task(
            planner,
            &[pairs.to_path_buf()],
            &cfg.out,
            &cfg.orpo,
            &|task, p| step(format!("{} adapter", task.name()), p),
        )?;
    }
    Ok(())
}

fn run_world_model(cfg: &TrainerConfig, tx: &mpsc::UnboundedSender<Report>) -> anyhow::Result<()> {
    use crate::world_model::{dataset, train::TrainEvent, Config};
    let mut model = match cfg.preset.as_str() {
        "cpu" => Config::cpu(),
        "gpu" => Config::gpu(),
        other => anyhow::bail!("unknown world-model preset {other:?} (cpu or gpu)"),
    };
    model.camera = cfg.camera.clone();
    let bags = dataset::find_bags(&cfg.bags)?;
    let cache = cfg.out.join("cache");
    // The minutes before the first training step are reported too (before session 44 the
    // status said nothing until then): transitions read while the clips are cut (against
    // the bags' count of actions; `total` 0 where a bag does not say), then prior frames made.
    let report = |step: usize, total: usize, part: &str| {
        let _ = tx.send(Report::Step {
            step,
            total,
            loss: f64::NAN,
            part: part.into(),
        });
    };
    let expected = dataset::expected_transitions(&bags).unwrap_or(0);
    dataset::build(&bags, &cache, &model, 64, &|read, _| {
        if read % 50 == 0 {
            report(read, expected.max(read), "cutting clips (transitions read)");
        }
    })?;
    let mut data = dataset::Dataset::open(&cache)?;
    data.cache_priors(&model, &|done, total| {
        if done % 50 == 0 || done == total {
            report(done, total, "prior frames");
        }
    })?;
    // The warm-up is at most a tenth of the run, as `dreamplan train-world-model` sets it:
    // the same settings then make the same run (and the same checkpoint identity) from the
    // node and from the command line. Before session 44 a 200-step job warmed up for 100.
    let tc = cfg.world_model.clone().warmup_capped();
    crate::world_model::train::train(&data, &model, &tc, &cfg.out, &|ev| {
        if let TrainEvent::Step { step, total, loss } = ev {
            let _ = tx.send(Report::Step {
                step,
                total,
                loss,
                part: "world model".into(),
            });
        }
    })?;
    Ok(())
}

fn check_exists(what: &str, p: Option<&Path>) -> anyhow::Result<()> {
    let p = p.ok_or_else(|| anyhow::anyhow!("job orpo needs `{what}`"))?;
    anyhow::ensure!(p.exists(), "{what} {}: no such file or folder", p.display());
    Ok(())
}

impl Node for TrainerNode {
    const KIND: &'static str = "trainer";
    type Config = TrainerConfig;

    fn new(config: TrainerConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.out.as_os_str().is_empty(),
            "`out` (the output folder) is required"
        );
        match config.job {
            Job::Orpo => {
                check_exists("planner", config.planner.as_deref())?;
                check_exists("pairs", config.pairs.as_deref())?;
                // Per-task training sets each adapter's task itself.
                anyhow::ensure!(
                    config.shared || config.orpo.task.is_none(),
                    "orpo.task trains one adapter on one task's states: it needs `shared: true` (without it the trainer makes one adapter per task)"
                );
            }
            Job::WorldModel => {
                anyhow::ensure!(!config.bags.is_empty(), "job world_model needs `bags`");
                anyhow::ensure!(
                    matches!(config.preset.as_str(), "cpu" | "gpu"),
                    "unknown world-model preset {:?} (cpu or gpu)",
                    config.preset
                );
                if let Some(c) = &config.camera {
                    c.validate().map_err(anyhow::Error::msg)?;
                }
            }
        }
        Ok(Self { config })
    }

    async fn run<B: Bus>(self, ctx: NodeContext<B>) -> anyhow::Result<()> {
        let cfg = self.config;
        let status_pub = ctx
            .bus
            .publisher::<TrainerStatus>(&cfg.topics.status, Qos::latched())?;
        let job = cfg.job;
        // Absolute: a planner started elsewhere (its own `ros2 run`, another working
        // folder) reads the same folder (a relative path went out as given before
        // session 52).
        let out = std::path::absolute(&cfg.out)
            .unwrap_or_else(|_| cfg.out.clone())
            .display()
            .to_string();
        let status = |state: &str, step: usize, total: usize, loss: f64, detail: String| {
            let done = state == TrainerStatus::STATE_DONE;
            TrainerStatus {
                header: Header {
                    stamp: ctx.bus.clock().now(),
                    frame_id: String::new(),
                },
                job: job.name().into(),
                state: state.into(),
                step: step as u32,
                total: total as u32,
                loss,
                output: if done { out.clone() } else { String::new() },
                detail,
            }
        };
        status_pub.publish(status(
            TrainerStatus::STATE_RUNNING,
            0,
            0,
            f64::NAN,
            "starting".into(),
        ))?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name(format!("{}-{}", ctx.name, job.name()))
            .spawn(move || {
                let result = match cfg.job {
                    Job::Orpo => run_orpo(&cfg, &tx),
                    Job::WorldModel => run_world_model(&cfg, &tx),
                };
                let _ = tx.send(match result {
                    Ok(()) => Report::Done,
                    Err(e) => Report::Failed(format!("{e:#}")),
                });
            })?;
        let (mut last_step, mut last_total, mut last_loss) = (0, 0, f64::NAN);
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => {
                    tracing::info!(node = %ctx.name, "stopping; the job resumes from its last checkpoint when started again");
                    return Ok(());
                }
                r = rx.recv() => match r {
                    Some(Report::Step { step, total, loss, part }) => {
                        (last_step, last_total, last_loss) = (step, total, loss);
                        status_pub.publish(status(TrainerStatus::STATE_RUNNING, step, total, loss, part))?;
                    }
                    Some(Report::Done) => {
                        tracing::info!(node = %ctx.name, "{} done: {out}", job.name());
                        status_pub.publish(status(TrainerStatus::STATE_DONE, last_step, last_total, last_loss, String::new()))?;
                        break;
                    }
                    Some(Report::Failed(why)) => {
                        tracing::error!(node = %ctx.name, "{} failed: {why}", job.name());
                        status_pub.publish(status(TrainerStatus::STATE_FAILED, last_step, last_total, last_loss, why))?;
                        break;
                    }
                    None => {
                        status_pub.publish(status(TrainerStatus::STATE_FAILED, last_step, last_total, last_loss, "the training thread ended without a result".into()))?;
                        break;
                    }
                }
            }
        }
        // The job is over; the latched status stays for late listeners until shutdown.
        ctx.shutdown.cancelled().await;
        Ok(())
    }
}
