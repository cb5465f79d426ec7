//! `dreamplan eval`: the paper's table for a planner on the built-in world.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::TaskSel;

use dreamplan::planner::baselines::Rule;
use dreamplan::planner::eval::{
    mean_ci, run_episode, EpisodeResult, EvalConfig, OraclePlanner, Outcome, Planner,
    RandomPlanner, RulePlanner,
};
use dreamplan::planner::vlm_planner::{VlmPlanner, VlmPlannerConfig};
use dreamplan::sim::tasks::Task;
use dreamplan::verifier::world_model::WorldModelVerifier;
use dreamplan::verifier::{KeypointOracle, SimVerifier, VerifiedPlanner, Verifier};
use dreamplan::world_model::Predictor;

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum PlannerArg {
    /// A random keypoint on each image.
    Random,
    /// The physics-blind coverage rule (the zero-shot model's default skill).
    Coverage,
    /// The physics-blind assignment rule (least-distance one-to-one matching).
    Correspondence,
    /// Pick current keypoint 1 (farthest from the goal shape), place at its farthest goal
    /// keypoint: cloth's best action in the simulator's tables, so a ceiling found by
    /// looking at outcomes.
    Fold,
    /// Pick current keypoint 1, place at its nearest goal keypoint.
    Reach,
    /// Pick current keypoint 1, place at goal keypoint 1.
    Ranks,
    /// Place at goal keypoint 1, pick its farthest current keypoint.
    Stretch,
    /// The hidden good action that made the goal (upper bound).
    Oracle,
    /// The best of all N×N keypoint actions as the simulator scores them (the most a
    /// keypoint planner can reach; N² simulated actions per episode).
    KeypointOracle,
    /// A Qwen3-VL model folder (`--model`), sampling `--k` candidates per decision.
    Vlm,
}

/// The sampling flags' defaults (`--planner vlm`); another planner refuses other values.
const K: usize = 8;
const TEMPERATURE: f32 = 1.0;
const TOP_P: f32 = 0.9;
const ATTEMPTS: usize = 3;

#[derive(Args)]
pub struct EvalArgs {
    /// Which planner.
    #[arg(long, value_enum)]
    planner: PlannerArg,
    /// Which tasks to evaluate.
    #[arg(long, value_enum, default_value_t = TaskSel::All)]
    task: TaskSel,
    /// Episodes per task (seeds first-seed .. first-seed + episodes).
    #[arg(long, default_value_t = 100)]
    episodes: u64,
    /// The first episode seed; the seeds are first-seed .. first-seed + episodes, the end
    /// excluded.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Keypoints per image.
    #[arg(long, default_value_t = 8)]
    keypoints: usize,
    /// Image size (square).
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Worker threads (episodes are independent and deterministic).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Also write every episode and the table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Model folder for `--planner vlm`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// A PEFT LoRA adapter folder (e.g. from `train-orpo`) merged into `--model` at load.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Candidates sampled per decision (`--planner vlm`).
    #[arg(long, default_value_t = K)]
    k: usize,
    /// Sampling temperature of the candidates (`--planner vlm`); 0 = greedy.
    #[arg(long, default_value_t = TEMPERATURE)]
    temperature: f32,
    /// Nucleus sampling (`--planner vlm`): keep the most likely tokens up to this total
    /// probability.
    #[arg(long, default_value_t = TOP_P)]
    top_p: f32,
    /// Sampling rounds before a decision is given up (`--planner vlm`).
    #[arg(long, default_value_t = ATTEMPTS)]
    attempts: usize,
    /// Test-time verification (`--planner vlm`): the K samples' distinct actions are scored
    /// by this verifier and the best is played. `world-model` needs `--world-model`; `sim`
    /// plays each candidate in the simulator (the perfect verifier: best of K).
    #[arg(long, value_enum)]
    verifier: Option<EvalVerifier>,
    /// The world-model folder for `--verifier world-model`.
    #[arg(long)]
    world_model: Option<PathBuf>,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum EvalVerifier {
    /// The world model imagines each candidate; its mask score against the goal ranks them.
    WorldModel,
    /// The simulator plays each candidate (the perfect verifier).
    Sim,
}

fn make(args: &EvalArgs) -> anyhow::Result<Box<dyn Planner + Send>> {
    Ok(match args.planner {
        PlannerArg::Random => Box::new(RandomPlanner),
        PlannerArg::Coverage => Box::new(RulePlanner(Rule::Coverage)),
        PlannerArg::Correspondence => Box::new(RulePlanner(Rule::Assignment)),
        PlannerArg::Fold => Box::new(RulePlanner(Rule::Fold)),
        PlannerArg::Reach => Box::new(RulePlanner(Rule::Reach)),
        PlannerArg::Ranks => Box::new(RulePlanner(Rule::Ranks)),
        PlannerArg::Stretch => Box::new(RulePlanner(Rule::Stretch)),
        PlannerArg::Oracle => Box::new(OraclePlanner {
            width: args.size,
            height: args.size,
        }),
        PlannerArg::KeypointOracle => Box::new(KeypointOracle {
            verifier: SimVerifier {
                config: EvalConfig {
                    size: args.size,
                    keypoints: args.keypoints,
                },
                ..Default::default()
            },
        }),
        PlannerArg::Vlm => {
            let dir = args
                .model
                .as_ref()
                .context("--planner vlm needs --model DIR")?;
            let config = VlmPlannerConfig {
                k: args.k,
                temperature: args.temperature,
                top_p: args.top_p,
                attempts: args.attempts,
                device: args.compute.device,
                dtype: args.compute.dtype,
                ..Default::default()
            };
            let planner = VlmPlanner::load_with_adapter(dir, args.adapter.as_deref(), config)
                .with_context(|| format!("loading {}", dir.display()))?;
            let eval_config = EvalConfig {
                size: args.size,
                keypoints: args.keypoints,
            };
            let verifier: Box<dyn Verifier + Send> = match (args.verifier, &args.world_model) {
                (None, None) => return Ok(Box::new(planner)),
                (None, Some(_)) => {
                    anyhow::bail!("--world-model is read only with --verifier world-model")
                }
                (Some(EvalVerifier::Sim), _) => Box::new(SimVerifier {
                    config: eval_config,
                    ..Default::default()
                }),
                (Some(EvalVerifier::WorldModel), Some(wm)) => Box::new(
                    WorldModelVerifier::for_built_in_world(
                        Predictor::load_on(wm, &args.compute.open()?)
                            .with_context(|| format!("loading the world model {}", wm.display()))?,
                        0,
                    )
                    .map_err(|e| anyhow::anyhow!("{}: {e}", wm.display()))?,
                ),
                (Some(EvalVerifier::WorldModel), None) => {
                    anyhow::bail!("--verifier world-model needs --world-model DIR")
                }
            };
            Box::new(VerifiedPlanner { planner, verifier })
        }
    })
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.episodes > 0, "--episodes must be > 0");
    crate::check_seed_range(args.first_seed, args.episodes, "--episodes")?;
    // Taken silently before session 52: a run that named a world model was not verified by it.
    anyhow::ensure!(
        !(matches!(args.verifier, Some(EvalVerifier::Sim)) && args.world_model.is_some()),
        "--world-model is read only with --verifier world-model (--verifier sim plays each \
         candidate in the built-in world)"
    );
    anyhow::ensure!(args.keypoints > 0, "--keypoints must be > 0");
    anyhow::ensure!(args.size >= 64, "--size must be ≥ 64");
    // Before the episodes, not after them (the report was only written at the end).
    if let Some(dir) = args
        .json
        .as_deref()
        .and_then(std::path::Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
    {
        anyhow::ensure!(
            dir.is_dir(),
            "--json: the folder {} does not exist",
            dir.display()
        );
    }
    if args.planner != PlannerArg::Vlm {
        let planner = args
            .planner
            .to_possible_value()
            .expect("no planner is skipped");
        crate::refuse_model_flags(
            planner.get_name(),
            &[
                ("--model", args.model.is_some()),
                ("--adapter", args.adapter.is_some()),
                ("--k", args.k != K),
                ("--temperature", args.temperature != TEMPERATURE),
                ("--top-p", args.top_p != TOP_P),
                ("--attempts", args.attempts != ATTEMPTS),
                // Test-time verification chooses among the model's samples.
                ("--verifier", args.verifier.is_some()),
                ("--world-model", args.world_model.is_some()),
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
    let tasks: Vec<Task> = args.task.tasks();
    let config = EvalConfig {
        size: args.size,
        keypoints: args.keypoints,
    };
    let name = make(&args)?.name();
    let planners: Vec<Box<dyn Planner + Send>> = (0..args.threads.max(1))
        .map(|_| make(&args))
        .collect::<anyhow::Result<_>>()?;
    let jobs: Vec<(Task, u64)> = tasks
        .iter()
        .flat_map(|&t| (args.first_seed..args.first_seed + args.episodes).map(move |s| (t, s)))
        .collect();
    let total = jobs.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let threads = args.threads.max(1);
    let progress = crate::LineProgress::stderr();
    let mut results: Vec<EpisodeResult> = std::thread::scope(|s| {
        let handles: Vec<_> = planners
            .into_iter()
            .enumerate()
            .map(|(t, mut planner)| {
                let (jobs, done, config, name) = (&jobs, &done, &config, &name);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for (k, &(task, seed)) in jobs.iter().enumerate() {
                        if k % threads != t {
                            continue;
                        }
                        out.push(run_episode(task, seed, planner.as_mut(), config));
                        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        progress.update(n, total, &format!("{name}: {n}/{total} episodes"));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread"))
            .collect()
    });
    progress.finish();
    results.sort_by(|a, b| a.task.cmp(&b.task).then(a.seed.cmp(&b.seed)));

    println!(
        "planner: {name}; {} episodes per task, seeds {} to {} (both included)",
        args.episodes,
        args.first_seed,
        (args.first_seed + args.episodes).saturating_sub(1)
    );
    println!("| task | score (95% CI) | 1 / 0.5 / 0 | no action / refused / no object | s per decision |");
    println!("|---|---|---|---|---|");
    let mut rows = Vec::new();
    let mut means = Vec::new();
    for task in &tasks {
        let tname = format!("{task:?}").to_lowercase();
        let rs: Vec<&EpisodeResult> = results.iter().filter(|r| r.task == tname).collect();
        let scores: Vec<f64> = rs.iter().map(|r| r.score).collect();
        let (mean, lo, hi) = mean_ci(&scores);
        let count = |v: f64| scores.iter().filter(|&&s| s == v).count();
        let kind = |f: fn(&Outcome) -> bool| rs.iter().filter(|r| f(&r.outcome)).count();
        let decision = rs.iter().map(|r| r.decision_s).sum::<f64>() / rs.len().max(1) as f64;
        println!(
            "| {tname} | {mean:.2} ({lo:.2}–{hi:.2}) | {} / {} / {} | {} / {} / {} | {decision:.2e} |",
            count(1.0),
            count(0.5),
            count(0.0),
            kind(|o| matches!(o, Outcome::NoAction(_))),
            kind(|o| matches!(o, Outcome::Refused(_))),
            kind(|o| matches!(o, Outcome::NoObject(_))),
        );
        means.push(mean);
        rows.push(serde_json::json!({
            "task": tname, "mean": mean, "ci95": [lo, hi], "episodes": rs.len(),
            "seconds_per_decision": decision,
        }));
    }
    let average = means.iter().sum::<f64>() / means.len() as f64;
    println!("| average | {average:.2} | | | |");
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "planner": name, "keypoints": args.keypoints, "size": args.size,
            "tasks": rows, "average": average, "episodes": results,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
