//! `dreamplan preferences` and `dreamplan train-orpo`: stage 3 of DreamPlan, preference
//! pairs from a planner and a verifier, and ORPO on them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::progress::PhaseProgress;
use crate::TaskSel;

use dreamplan::planner::eval::EvalConfig;
use dreamplan::planner::vlm_planner::VlmPlannerConfig;
use dreamplan::sim::tasks::Task;
use dreamplan::train::orpo::{train, train_per_task, Method, OrpoConfig, OrpoProgress};
use dreamplan::train::preferences::{generate, GenerateConfig, PREFERENCE_SEED_BASE};
use dreamplan::verifier::world_model::WorldModelVerifier;
use dreamplan::verifier::{SimMeasure, SimVerifier, Verifier};
use dreamplan::world_model::Predictor;

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum VerifierArg {
    /// The simulator, scoring by the task's own distance to the goal (the perfect verifier).
    Sim,
    /// The simulator, scoring the rendered final frame with the mask measure (what an
    /// image-predicting verifier can see at best).
    SimMask,
    /// A world model (`--world-model DIR`): each candidate's imagined final frame, scored
    /// with the mask measure against the goal (DreamPlan's verifier).
    WorldModel,
}

#[derive(Args)]
pub struct PreferencesArgs {
    /// The planner's model folder (the pairs are made from its samples and for its tokenizer).
    #[arg(long)]
    planner: PathBuf,
    /// A LoRA adapter folder to merge into the planner first.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Which verifier scores the candidates.
    #[arg(long, value_enum, default_value_t = VerifierArg::Sim)]
    verifier: VerifierArg,
    /// The world-model folder for `--verifier world-model` (from `train-world-model`).
    #[arg(long)]
    world_model: Option<PathBuf>,
    /// Seed of the world model's sampler noise (the same for every state).
    #[arg(long, default_value_t = 0)]
    noise_seed: u64,
    /// States per task.
    #[arg(long, default_value_t = 100)]
    states: usize,
    /// Which tasks.
    #[arg(long, value_enum, default_value_t = TaskSel::All)]
    task: TaskSel,
    /// Seed of each task's first state (default: 3,000,000, disjoint from evaluation and
    /// zero-shot training seeds).
    #[arg(long, default_value_t = PREFERENCE_SEED_BASE)]
    first_seed: u64,
    /// Candidates sampled per state (duplicates are merged).
    #[arg(long, default_value_t = 16)]
    k: usize,
    /// Sampling temperature (> 0 for diverse candidates; 3 explores actions beyond the
    /// planner's favourite without losing its rule, docs/stage3.md).
    #[arg(long, default_value_t = 3.0)]
    temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Extra exploring samples per state, at --explore-temperature, after the K (0: none).
    /// They bring actions the planner rarely proposes into the pairs (cloth's fold:
    /// docs/stage3.md).
    #[arg(long, default_value_t = 16)]
    explore_k: usize,
    /// Temperature of the exploring samples.
    #[arg(long, default_value_t = 8.0)]
    explore_temperature: f32,
    /// Sample every token freely. By default, where the answer needs a number only the
    /// numbers that keep it a valid action are sampled, so a high temperature explores
    /// actions instead of producing invalid text.
    #[arg(long)]
    unconstrained: bool,
    /// A rejected candidate must score more than this below the chosen one, in the
    /// verifier's units. Default: 0.25 for `sim` (distance in half-thresholds, a quarter of
    /// the 0.5-score distance); 0.05 for the mask measure of `sim-mask` and `world-model`
    /// (0–1).
    #[arg(long)]
    margin: Option<f64>,
    /// Output file (JSON lines; images go to a folder beside it). An existing file made with
    /// the same settings is continued.
    #[arg(long)]
    out: PathBuf,
    /// Worker threads (each loads the planner and runs its own simulations).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

pub fn preferences(args: PreferencesArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.states > 0, "--states must be > 0");
    crate::check_seed_range(args.first_seed, args.states as u64, "--states")?;
    anyhow::ensure!(args.k >= 2, "--k must be ≥ 2 (a pair needs two candidates)");
    anyhow::ensure!(
        args.temperature > 0.0 && args.temperature.is_finite(),
        "--temperature must be > 0 (greedy sampling gives K copies of one answer)"
    );
    anyhow::ensure!(
        args.explore_temperature > 0.0 && args.explore_temperature.is_finite(),
        "--explore-temperature must be > 0"
    );
    let margin = args.margin.unwrap_or(match args.verifier {
        VerifierArg::Sim => 0.25,
        VerifierArg::SimMask | VerifierArg::WorldModel => 0.05,
    });
    anyhow::ensure!(margin >= 0.0 && margin.is_finite(), "--margin must be ≥ 0");
    let predictor = match (args.verifier, &args.world_model) {
        (VerifierArg::WorldModel, Some(dir)) => {
            let p = Predictor::load_on(dir, &args.compute.open()?)
                .with_context(|| format!("loading the world model {}", dir.display()))?;
            // Checked once here; each worker's verifier below is then made from it.
            let p = WorldModelVerifier::for_built_in_world(p, args.noise_seed)
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
                .predictor;
            Some(p)
        }
        (VerifierArg::WorldModel, None) => {
            anyhow::bail!("--verifier world-model needs --world-model DIR (from `dreamplan train-world-model`)")
        }
        (_, Some(_)) => anyhow::bail!("--world-model is read only with --verifier world-model"),
        (_, None) => None,
    };
    let eval = EvalConfig::default();
    let cfg = GenerateConfig {
        states: args.states,
        tasks: args.task.tasks(),
        first_seed: args.first_seed,
        planner: VlmPlannerConfig {
            k: args.k,
            temperature: args.temperature,
            top_p: args.top_p,
            constrained: !args.unconstrained,
            device: args.compute.device,
            dtype: args.compute.dtype,
            ..Default::default()
        },
        explore: (args.explore_k, args.explore_temperature),
        margin,
        eval: eval.clone(),
        threads: args.threads,
    };
    let measure = match args.verifier {
        VerifierArg::SimMask => SimMeasure::Mask,
        _ => SimMeasure::State,
    };
    let noise_seed = args.noise_seed;
    let make = move || -> Box<dyn Verifier + Send> {
        match &predictor {
            Some(p) => Box::new(WorldModelVerifier {
                predictor: p.clone(),
                noise_seed,
            }),
            None => Box::new(SimVerifier {
                measure,
                config: eval.clone(),
            }),
        }
    };
    let bar = PhaseProgress::stderr();
    let t0 = std::time::Instant::now();
    let summary = generate(
        &args.planner,
        args.adapter.as_deref(),
        &make,
        &cfg,
        &args.out,
        &|p| bar.update("states", p.done, p.total, &format!("{} pairs", p.pairs)),
    )
    .with_context(|| format!("making preference pairs into {}", args.out.display()))?;
    bar.finish();
    println!(
        "{}: {} states ({} resumed, {} without an object skipped), {} with pairs, {} pairs; {:.0} s",
        args.out.display(),
        summary.states,
        summary.resumed,
        summary.skipped,
        summary.states_with_pairs,
        summary.pairs,
        t0.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct TrainOrpoArgs {
    /// The planner's model folder (the base model the pairs were made for).
    #[arg(long)]
    planner: PathBuf,
    /// Preference file from `dreamplan preferences`. With one adapter per task (the
    /// default) it may be given once per task's file (e.g. `preferences --task cloth`),
    /// each task's pairs in one of them.
    #[arg(long, required = true)]
    pairs: Vec<PathBuf>,
    /// Output folder: a PEFT LoRA adapter (default) or, with --full, a whole model folder.
    /// A checkpoint there from the same settings is resumed.
    #[arg(long)]
    out: PathBuf,
    /// Optimiser steps (per adapter: each task's with per-task adapters).
    #[arg(long, default_value_t = OrpoConfig::default().steps)]
    steps: usize,
    /// States per step, in turn from each task; each brings its chosen answer and up to
    /// --rejected of its rejected ones, packed after one run of its prompt.
    #[arg(long, default_value_t = OrpoConfig::default().batch)]
    batch: usize,
    /// Rejected answers per state and step.
    #[arg(long, default_value_t = OrpoConfig::default().rejected)]
    rejected: usize,
    /// Peak learning rate (warm-up, then cosine decay to 10%).
    #[arg(long, default_value_t = OrpoConfig::default().lr)]
    lr: f64,
    /// Weight λ of the odds-ratio term.
    #[arg(long, default_value_t = OrpoConfig::default().lambda)]
    lambda: f64,
    /// LoRA rank (scale alpha / r with alpha = 2r).
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// Train every weight instead of LoRA adapters (fine for the tiny model).
    #[arg(long)]
    full: bool,
    /// Seed of pair draws and adapter initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = OrpoConfig::default().checkpoint_every)]
    checkpoint_every: usize,
    /// One adapter for every task, its steps taking states from each task in turn. By
    /// default each task gets its own adapter, trained on its pairs alone for --steps
    /// steps, into OUT/<task>/ with OUT/adapter_set.json (`--adapter OUT` then answers each
    /// task with its own adapter): one shared adapter trades the tasks against each other
    /// (docs/stage3.md, session 12). --full always trains one shared model.
    #[arg(long)]
    shared: bool,
    /// One adapter trained on this task's pairs only (rope, cloth or toy).
    #[arg(long, value_parser = parse_task, conflicts_with = "shared")]
    task: Option<Task>,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

fn parse_task(s: &str) -> Result<Task, String> {
    Task::from_name(s).ok_or_else(|| format!("unknown task {s:?} (rope, cloth or toy)"))
}

pub fn train_orpo(args: TrainOrpoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.rank > 0, "--rank must be > 0");
    let cfg = OrpoConfig {
        steps: args.steps,
        batch: args.batch,
        rejected: args.rejected,
        lr: args.lr,
        lambda: args.lambda,
        method: if args.full {
            Method::Full
        } else {
            Method::Lora {
                r: args.rank,
                alpha: 2.0 * args.rank as f64,
            }
        },
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        device: args.compute.device,
        dtype: args.compute.dtype,
        ..Default::default()
    };
    // A GPU this build or machine cannot give is refused before any pair is read.
    args.compute.open()?;
    let bar = PhaseProgress::stderr();
    // Per-task runs of one file would say the same note once per task.
    let said = std::cell::RefCell::new(std::collections::HashSet::new());
    let show = |label: &str, p: OrpoProgress| match p {
        OrpoProgress::Resumed(step) => {
            eprintln!("{label}: resuming from the checkpoint at step {step}")
        }
        OrpoProgress::Note(note) => {
            if said.borrow_mut().insert(note.clone()) {
                eprintln!("note: {note}");
            }
        }
        OrpoProgress::Step { step, total, stats } => bar.update(
            label,
            step,
            total,
            &format!(
                "loss {:.3} nll {:.3} acc {:.2}",
                stats.loss, stats.nll, stats.accuracy
            ),
        ),
    };
    let per_task = !(args.shared || args.full || args.task.is_some());
    let reports = if per_task {
        train_per_task(&args.planner, &args.pairs, &args.out, &cfg, &|task, p| {
            show(&format!("orpo {}", task.name()), p)
        })
        .with_context(|| format!("per-task ORPO training into {}", args.out.display()))?
        .into_iter()
        .map(|(task, r)| (args.out.join(task.name()), r))
        .collect()
    } else {
        let cfg = OrpoConfig {
            task: args.task,
            ..cfg
        };
        let [pairs] = args.pairs.as_slice() else {
            anyhow::bail!(
                "--shared, --task and --full train one adapter (or model) from one --pairs file"
            );
        };
        let report = train(&args.planner, pairs, &args.out, &cfg, &|p| show("orpo", p))
            .with_context(|| format!("ORPO training into {}", args.out.display()))?;
        vec![(args.out.clone(), report)]
    };
    bar.finish();
    for (out, report) in &reports {
        let curves = out.join("orpo_curves.png");
        dreamplan::plot::orpo_curves(&report.history, &curves)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", curves.display()))?;
        let tail = &report.history[report.history.len().saturating_sub(10)..];
        let mean = |f: &dyn Fn(&dreamplan::train::orpo::StepStats) -> f64| {
            tail.iter().map(f).sum::<f64>() / tail.len().max(1) as f64
        };
        println!(
            "{}: {} pairs from {} states, {} trainable parameters, {:.0} s",
            out.display(),
            report.examples,
            report.states,
            report.trainable,
            report.seconds
        );
        println!(
            "last 10 steps: loss {:.3}, chosen log-prob {:.3}, rejected {:.3}, accuracy {:.2}",
            mean(&|s| s.loss),
            mean(&|s| s.chosen_logp),
            mean(&|s| s.rejected_logp),
            mean(&|s| s.accuracy)
        );
        println!("curves: {}", curves.display());
    }
    if per_task {
        println!(
            "adapter set: {} (pass it as --adapter)",
            args.out
                .join(dreamplan::planner::adapters::ADAPTER_SET)
                .display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct MergeAdapterArgs {
    /// The base model folder.
    #[arg(long)]
    model: PathBuf,
    /// A PEFT LoRA adapter folder made for it (e.g. by `train-orpo`).
    #[arg(long)]
    adapter: PathBuf,
    /// Output model folder (created; must not hold a model).
    #[arg(long)]
    out: PathBuf,
}

pub fn merge_adapter(args: MergeAdapterArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.out.join("model.safetensors").exists(),
        "{} already holds a model",
        args.out.display()
    );
    dreamplan::train::orpo::merge_adapter(&args.model, &args.adapter, &args.out).with_context(
        || {
            format!(
                "merging {} into {}",
                args.adapter.display(),
                args.out.display()
            )
        },
    )?;
    println!(
        "{}: {} with {} merged",
        args.out.display(),
        args.model.display(),
        args.adapter.display()
    );
    Ok(ExitCode::SUCCESS)
}
