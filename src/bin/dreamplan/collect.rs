//! `dreamplan collect`: zero-shot data for the world model. Runs the sim, the planner
//! (sampling), the executor and the recorder in one process and writes one rosbag2 bag per
//! task with everything the world model trains on (camera, depth, object-only frames, goal,
//! joint states, trajectories, keypoints, candidates, actions, episode events).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::TaskSel;

use dreamplan::bus::{Bus, LocalBus, Qos};
use dreamplan::config::{GraphConfig, NodeSpec};
use dreamplan::msg::prelude::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// `collect`'s first seed by default, and the experiment's: zero-shot data scenes.
pub const DATA_SEED_BASE: u64 = 2_000_000;

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum Backend {
    Correspondence,
    Coverage,
    Random,
    Vlm,
}

/// The sampling flags' defaults (`--planner vlm`); another planner refuses other values.
const K: usize = 8;
const TEMPERATURE: f32 = 1.0;

#[derive(Args)]
pub struct CollectArgs {
    /// Which tasks to record (`all` runs them in parallel, one bag each).
    #[arg(long, value_enum)]
    task: TaskSel,
    /// Episodes per task.
    #[arg(long)]
    episodes: u32,
    /// Output directory: the bag itself for one task, one bag per task inside it for `all`.
    /// Must not exist.
    #[arg(long)]
    out: PathBuf,
    /// The planner whose actions are recorded.
    #[arg(long, value_enum, default_value_t = Backend::Correspondence)]
    planner: Backend,
    /// Model folder for `--planner vlm`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// A PEFT LoRA adapter folder merged into `--model` at load.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Candidates sampled per decision (`--planner vlm`).
    #[arg(long, default_value_t = K)]
    k: usize,
    /// Sampling temperature of the candidates (`--planner vlm`); > 0 keeps actions diverse.
    #[arg(long, default_value_t = TEMPERATURE)]
    temperature: f32,
    /// The first episode seed (episode i of a task uses seed + i). The default,
    /// 2,000,000, keeps the recorded scenes apart from `eval`'s seeds (0 up), the
    /// preference seeds (3,000,000 up) and `wm-eval`'s (4,000,000 up): a world model
    /// trained on the evaluation's own scenes would be rated on what it saw.
    #[arg(long, default_value_t = DATA_SEED_BASE)]
    seed: u64,
    /// Image size (square).
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// zstd-compress the bag's chunks.
    #[arg(long)]
    zstd: bool,
    /// Camera (and object-only) frames per simulated second.
    #[arg(long, default_value_t = 5.0)]
    camera_rate_hz: f64,
    /// Tasks collected at once (`--task all`); each runs its own simulator, planner and
    /// recorder. Defaults to the number of CPUs.
    #[arg(long)]
    jobs: Option<usize>,
    /// A YAML or JSON file with another camera to see the scene through (`render::CameraSpec`:
    /// width, height, fx, fy, cx, cy as in CameraInfo's K, base_from_camera_xyz,
    /// base_from_camera_xyzw), scaled to `--size`: the sim renders through it and the
    /// executor places actions with its pose. Default: the built-in camera.
    #[arg(long)]
    camera: Option<PathBuf>,
    /// Where `--planner vlm` computes (the other planners run no model).
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

fn spec(name: &str, params: serde_json::Value) -> anyhow::Result<NodeSpec> {
    Ok(NodeSpec {
        name: name.into(),
        kind: name.into(),
        params: serde_yaml::to_value(params).context("collect's node params")?,
        enabled: true,
    })
}

pub fn run(args: CollectArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.episodes > 0, "--episodes must be > 0");
    anyhow::ensure!(
        args.seed.checked_add(u64::from(args.episodes)).is_some(),
        "--seed {} + --episodes {} runs past the largest seed ({})",
        args.seed,
        args.episodes,
        u64::MAX
    );
    anyhow::ensure!(
        !args.out.exists(),
        "{} exists; collect writes new bags only",
        args.out.display()
    );
    anyhow::ensure!(
        args.planner != Backend::Vlm || args.model.is_some(),
        "--planner vlm needs --model DIR"
    );
    if args.planner == Backend::Vlm {
        // A GPU this build or machine cannot give is one clear line before anything runs,
        // not a planner node's failure in every task's graph.
        args.compute.open()?;
    } else {
        crate::refuse_model_flags(
            backend_name(args.planner),
            &[
                ("--model", args.model.is_some()),
                ("--adapter", args.adapter.is_some()),
                ("--k", args.k != K),
                ("--temperature", args.temperature != TEMPERATURE),
                (
                    "--device",
                    args.compute.device != dreamplan::device::DeviceSpec::Cpu,
                ),
                (
                    "--dtype",
                    args.compute.dtype != dreamplan::device::DtypeSpec::Auto,
                ),
            ],
        )?;
    }
    let tasks: Vec<String> = args
        .task
        .tasks()
        .iter()
        .map(|t| format!("{t:?}").to_lowercase())
        .collect();
    anyhow::ensure!(
        args.camera_rate_hz > 0.0 && args.camera_rate_hz.is_finite(),
        "--camera-rate-hz must be > 0"
    );
    // As eval's: the nodes' own checks would name a node instead of the option.
    anyhow::ensure!(args.size >= 64, "--size must be ≥ 64");
    let camera = args
        .camera
        .as_deref()
        .map(dreamplan::render::CameraSpec::read)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--camera: {e}"))?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, tasks.len());
    // Per task: episodes scored and the sum of their scores.
    let done: Vec<std::sync::Mutex<(u32, f64)>> = tasks
        .iter()
        .map(|_| std::sync::Mutex::new((0, 0.0)))
        .collect();
    let progress = crate::LineProgress::stderr();
    let total = args.episodes as usize * tasks.len();
    let show = || {
        let counts: Vec<(u32, f64)> = done
            .iter()
            .map(|d| *d.lock().expect("progress lock"))
            .collect();
        let line: Vec<String> = tasks
            .iter()
            .zip(&counts)
            .map(|(t, (n, sum))| {
                format!(
                    "{t}: {n}/{} episodes, mean score {:.2}",
                    args.episodes,
                    sum / f64::from((*n).max(1))
                )
            })
            .collect();
        let sum: usize = counts.iter().map(|(n, _)| *n as usize).sum();
        progress.update(sum, total, &line.join("; "));
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(task) = tasks.get(k) else {
                            return Ok(());
                        };
                        let out = if tasks.len() > 1 {
                            args.out.join(task)
                        } else {
                            args.out.clone()
                        };
                        collect_task(&args, camera.as_ref(), task, &out, &|score| {
                            {
                                let mut d = done[k].lock().expect("progress lock");
                                d.0 += 1;
                                d.1 += score;
                            }
                            show();
                        })?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a collect worker panicked")))
            })
            .collect()
    });
    progress.finish();
    for r in results {
        r?;
    }
    for task in &tasks {
        let out = if tasks.len() > 1 {
            args.out.join(task)
        } else {
            args.out.clone()
        };
        println!("wrote {}", out.display());
    }
    // What was collected, on which seeds: `dreamplan experiment --bags` refuses bags whose
    // seeds another of its stages uses (the evaluation's above all).
    let record = json!({
        "tasks": tasks,
        "seed": args.seed,
        "episodes": args.episodes,
        "planner": backend_name(args.planner),
        "model": args.model.as_ref().map(|m| m.display().to_string()),
        "adapter": args.adapter.as_ref().map(|m| m.display().to_string()),
        "k": args.k,
        "temperature": args.temperature,
        "camera": camera,
    });
    let file = args.out.join("collect.json");
    dreamplan::train::checkpoint::write_atomic(&file, &serde_json::to_vec_pretty(&record)?)
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// The planner node's name of a backend.
fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Correspondence => "correspondence",
        Backend::Coverage => "coverage",
        Backend::Random => "random",
        Backend::Vlm => "vlm",
    }
}

/// Runs one task's graph until `args.episodes` episodes are scored; `on_episode` is called
/// with each score.
fn collect_task(
    args: &CollectArgs,
    camera: Option<&dreamplan::render::CameraSpec>,
    task: &str,
    out: &std::path::Path,
    on_episode: &(dyn Fn(f64) + Sync),
) -> anyhow::Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let backend = backend_name(args.planner);
    let s = args.size;
    let mut planner = json!({
        "backend": backend,
        "sampling": {
            "k": args.k,
            "temperature": args.temperature,
            "seed": args.seed,
            "device": args.compute.device.to_string(),
            "dtype": args.compute.dtype.to_string(),
        },
    });
    if let Some(m) = &args.model {
        planner["model"] = json!(m.to_string_lossy());
    }
    if let Some(a) = &args.adapter {
        planner["adapter"] = json!(a.to_string_lossy());
    }
    let mut executor = json!({"width": s, "height": s});
    if let Some(c) = camera {
        executor["base_from_camera_xyz"] = json!(c.base_from_camera_xyz);
        executor["base_from_camera_xyzw"] = json!(c.base_from_camera_xyzw);
    }
    let graph = GraphConfig {
        duration_s: 0.0,
        origin: "dreamplan collect".into(),
        nodes: vec![
            spec(
                "recorder",
                json!({
                    "out_dir": out.to_string_lossy(),
                    "compression": if args.zstd { "zstd" } else { "none" },
                    "exclude": ["/clock", "/rosout", "/parameter_events"],
                }),
            )?,
            spec("planner", planner)?,
            spec("executor", executor)?,
            spec(
                "sim",
                // The first reset waits until the planner, the executor (which reads the
                // goal's stamp, since session 52) and the recorder listen on the goal
                // topic (30 s at most): the recorder finds the topics by polling the bus,
                // and on a loaded machine its first look once came after a fixed delay's
                // reset (a CI run beside two trainings), leaving that episode without its
                // transition.
                json!({
                    "task": task, "seed": args.seed, "episodes": args.episodes,
                    "width": s, "height": s, "realtime": false,
                    "camera_rate_hz": args.camera_rate_hz, "start_delay_s": 30.0,
                    "wait_for_subscribers": 3, "camera": camera,
                }),
            )?,
        ],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let bus = LocalBus::default();
    let mut events = bus.subscribe::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(1000))?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let n = args.episodes;
    let report = rt.block_on(async move {
        let watcher = async move {
            let mut done = 0u32;
            // Ctrl-C or SIGTERM stops the graph as the last episode does, so the recorder
            // closes its bag (summary and metadata.yaml) with what was recorded.
            let signal = dreamplan::runner::stop_requested();
            tokio::pin!(signal);
            loop {
                let e = tokio::select! {
                    what = &mut signal => {
                        tracing::warn!("{what}: stopping after {done} of {n} episodes; the bag keeps what was recorded");
                        stop.cancel();
                        return;
                    }
                    e = events.recv() => e,
                };
                let Some(e) = e else { return };
                if e.event == EpisodeEvent::EVENT_SCORED {
                    done += 1;
                    on_episode(e.score);
                    if done == n {
                        // Let the recorder write the last messages.
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        stop.cancel();
                        return;
                    }
                }
            }
        };
        // The graph may end first: a node refusing its settings (`--k 0`, a model folder
        // that does not load) ends it at once, with the reason. Before session 43 the
        // watcher went on waiting for episodes that never came, silently, for ever.
        let graph_run = dreamplan::runner::run_graph(bus, &graph, shutdown);
        tokio::pin!(graph_run);
        tokio::pin!(watcher);
        tokio::select! {
            // The graph also ends when the sim has played its episodes, which can be
            // before this task has read the last `scored` from its queue: the watcher
            // reads what is queued (the bus is closed, so it then ends) before the count
            // is final. Before session 50 the last episode could go uncounted ("1/2").
            r = &mut graph_run => {
                // (A graph that did not start has not closed the bus: nothing to read.)
                if r.is_ok() {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut watcher).await;
                }
                r
            }
            () = &mut watcher => graph_run.await,
        }
    })?;
    anyhow::ensure!(report.is_clean(), "collection of {task} failed: {report:?}");
    Ok(())
}
