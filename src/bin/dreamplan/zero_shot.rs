//! `dreamplan pretrain-zero-shot`: builds the tiny zero-shot planner model folder.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use dreamplan::planner::baselines::Rule;
use dreamplan::train::zero_shot::{
    build, clear_progress, final_loss, holds_model, in_progress, Progress, ZeroShotConfig,
    CURVE_FILE,
};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RuleArg {
    Coverage,
    Assignment,
    Stretch,
    Reach,
    Fold,
    Ranks,
}

impl RuleArg {
    fn rule(self) -> Rule {
        match self {
            RuleArg::Coverage => Rule::Coverage,
            RuleArg::Assignment => Rule::Assignment,
            RuleArg::Stretch => Rule::Stretch,
            RuleArg::Reach => Rule::Reach,
            RuleArg::Fold => Rule::Fold,
            RuleArg::Ranks => Rule::Ranks,
        }
    }
}

#[derive(Args)]
pub struct ZeroShotArgs {
    /// Output model folder (created; refused if it already holds a model unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Replace a model already in --out.
    #[arg(long)]
    force: bool,
    /// Optimiser steps.
    #[arg(long, default_value_t = ZeroShotConfig::default().steps)]
    steps: usize,
    /// Samples per step.
    #[arg(long, default_value_t = ZeroShotConfig::default().batch)]
    batch: usize,
    /// Training scenes per task: rope,cloth,toy (e.g. 300,120,300).
    #[arg(long, value_delimiter = ',', default_values_t = ZeroShotConfig::default().scenes)]
    scenes: Vec<usize>,
    /// Held-out scenes per task for the accuracy check.
    #[arg(long, default_value_t = ZeroShotConfig::default().held_out)]
    held_out: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = ZeroShotConfig::default().lr)]
    lr: f64,
    /// Text model width.
    #[arg(long, default_value_t = ZeroShotConfig::default().hidden)]
    hidden: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = ZeroShotConfig::default().layers)]
    layers: usize,
    /// Side of the square image the model is given, in pixels (a multiple of 32): the
    /// vision tower's cost grows with its square.
    #[arg(long, default_value_t = ZeroShotConfig::default().image_side)]
    image_side: usize,
    /// Seed of initialisation and sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The physics-blind rule the model is taught: coverage (drag the nearest part of the
    /// object into the goal keypoint it covers least) or assignment (least-distance
    /// one-to-one matching, move the keypoint farthest from its match).
    #[arg(long, value_enum, default_value_t = RuleArg::Coverage)]
    rule: RuleArg,
    /// Other rules taught beside --rule, e.g. `stretch,reach,fold,ranks` (with coverage:
    /// every one-step lookup of the prompt's relations); each sample follows one of them
    /// with probability --also-weight.
    #[arg(long, value_enum, value_delimiter = ',')]
    also: Vec<RuleArg>,
    /// Probability that a training sample follows one of --also instead of --rule.
    #[arg(long, default_value_t = 0.0)]
    also_weight: f64,
    /// Teach answers with a reasoning line that names the lookup first (`goal 1 near 3`,
    /// then `pick 3 place 1`): with --also, each rule is then taught unambiguously. Every
    /// rule must be a one-step lookup (not assignment).
    #[arg(long)]
    reasoning: bool,
    /// Steps between checkpoints; a build killed before it finished resumes from its last
    /// one when run again with the same settings.
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// End every prompt with the recap line: the relations of keypoint 1 of each image
    /// repeated next to the answer (`Keypoint 1 of each image: current 1 near 4 far 7, goal 1
    /// near 2 far 6.`), so each one-step lookup is a copy from a few tokens back. The planner
    /// reads the form from the folder.
    #[arg(long)]
    recap: bool,
    /// Relabel keypoints at random in every training sample.
    #[arg(long)]
    relabel: bool,
    /// Weight of the correspondence questions (at each goal keypoint, the number of the
    /// current keypoint the rule matches to it; training only). 0 turns them off.
    #[arg(long, default_value_t = ZeroShotConfig::default().match_weight)]
    match_weight: f64,
    /// Models trained side by side from different seeds (seed, seed + 1000, …), of which
    /// the one with the lowest final training loss is kept: on two cores two candidates
    /// take the wall time of one.
    #[arg(long, default_value_t = ZeroShotConfig::default().candidates)]
    candidates: usize,
    /// Threads that observe scenes (the simulator is single-threaded per episode).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

impl ZeroShotArgs {
    /// How many models this build trains at once (each on a thread of its own).
    pub fn candidates_side_by_side(&self) -> usize {
        self.candidates
    }
}

pub fn run(args: ZeroShotArgs) -> anyhow::Result<ExitCode> {
    // A build killed before it finished left its checkpoints and no zero_shot.json: it resumes.
    let resumable = in_progress(&args.out);
    if args.force {
        clear_progress(&args.out)
            .with_context(|| format!("removing the unfinished build in {}", args.out.display()))?;
    }
    anyhow::ensure!(
        args.force || resumable || !holds_model(&args.out),
        "{} already holds a model (pass --force to replace it)",
        args.out.display()
    );
    anyhow::ensure!(
        args.scenes.len() == 3,
        "--scenes takes three counts: rope,cloth,toy"
    );
    let d = ZeroShotConfig::default();
    let cfg = ZeroShotConfig {
        steps: args.steps,
        batch: args.batch,
        scenes: [args.scenes[0], args.scenes[1], args.scenes[2]],
        held_out: args.held_out,
        lr: args.lr,
        hidden: args.hidden,
        layers: args.layers,
        image_side: args.image_side,
        seed: args.seed,
        relabel: args.relabel,
        rule: args.rule.rule(),
        also_rules: args.also.iter().map(|r| r.rule()).collect(),
        also_weight: args.also_weight,
        reasoning: args.reasoning,
        recap: args.recap,
        checkpoint_every: args.checkpoint_every,
        match_weight: args.match_weight,
        candidates: args.candidates,
        ..d
    };
    let bar = crate::progress::PhaseProgress::stderr();
    // The latest loss of each candidate; the bar follows candidate 0 (they step alike).
    let last = std::sync::Mutex::new(vec![f64::NAN; cfg.candidates]);
    let progress = |p: Progress| {
        let (phase, done, total, msg) = match p {
            Progress::Scene { done, total } => ("scenes", done, total, String::new()),
            Progress::Step {
                candidate,
                step,
                total,
                loss,
            } => {
                let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                last[candidate] = loss;
                if candidate != 0 {
                    return;
                }
                let losses: Vec<String> = last.iter().map(|l| format!("{l:.4}")).collect();
                (
                    "training",
                    step,
                    total,
                    format!("loss {}", losses.join(" / ")),
                )
            }
            Progress::Check { done, total } => ("held-out", done, total, String::new()),
            Progress::Resumed { candidate, step } => {
                eprintln!("candidate {candidate}: resuming from the checkpoint at step {step}");
                return;
            }
        };
        bar.update(phase, done, total, &msg);
    };
    let report = build(&args.out, &cfg, args.threads, &progress)
        .with_context(|| format!("building the zero-shot model in {}", args.out.display()))?;
    bar.finish();
    println!(
        "model: {} ({:.2} M parameters), {} + {} + {} scenes (rope, cloth, toy)",
        args.out.display(),
        report.parameters as f64 / 1e6,
        report.scenes[0],
        report.scenes[1],
        report.scenes[2]
    );
    println!(
        "loss: {:.4} first step, {:.4} mean of the last {}",
        report.loss.first().copied().unwrap_or(f64::NAN),
        final_loss(&report.loss),
        report.loss.len().min(20)
    );
    if report.candidates.len() > 1 {
        let list: Vec<String> = report
            .candidates
            .iter()
            .map(|c| {
                format!(
                    "seed {} {:.4}{}",
                    c.seed,
                    c.final_loss,
                    if c.kept { " (kept)" } else { "" }
                )
            })
            .collect();
        println!("candidates, final loss: {}", list.join(", "));
    }
    println!(
        "time: {:.0} s scenes, {:.0} s training, {:.0} s held-out check",
        report.seconds[0], report.seconds[1], report.seconds[2]
    );
    match dreamplan::vlm::cpu_thread_share() {
        Some(s) => println!(
            "threads: {} per candidate ({} shared by {} candidates side by side)",
            s.per, s.total, s.jobs
        ),
        None => println!(
            "threads: {} per candidate (RAYON_NUM_THREADS / CANDLE_NUM_THREADS as set, or one candidate)",
            candle_core::utils::get_num_threads()
        ),
    }
    println!("held-out greedy answers vs the rule (rope / cloth / toy):");
    let pct = |a: [f64; 3]| {
        format!(
            "{:.0}% / {:.0}% / {:.0}%",
            100.0 * a[0],
            100.0 * a[1],
            100.0 * a[2]
        )
    };
    println!("  valid {}", pct(report.held_out_valid));
    println!("  same pick {}", pct(report.held_out_pick));
    println!("  same action {}", pct(report.held_out_exact));
    for l in &report.held_out_lookups {
        println!(
            "  given its line up to the value, {:?}'s action {}",
            l.rule,
            pct(l.exact)
        );
    }
    println!(
        "details: {}, curve: {}",
        args.out.join("zero_shot.json").display(),
        args.out.join(CURVE_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}
