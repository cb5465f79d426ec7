//! `dreamplan plan-bench`: decision latency of the VLM planner, image in → action out, and
//! K candidates sampled as one batch (prompt computed once, K rows decoded together)
//! against K separate samples (prompt recomputed each time).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use dreamplan::planner::eval::{keypoints, observe, Decision, EvalConfig, Planner, Scene};
use dreamplan::planner::vlm_planner::{
    best, frame_rgb, model_view, Candidate, VlmPlanner, VlmPlannerConfig,
};
use dreamplan::sim::tasks::Task;

use crate::TaskSel;

#[derive(Args)]
pub struct PlanBenchArgs {
    /// Model folder.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, value_enum, default_value_t = TaskSel::All)]
    task: TaskSel,
    /// Candidates per decision.
    #[arg(long, default_value_t = 8)]
    k: usize,
    /// Timed decisions per task and mode (after one warm-up).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Image size (square), as the evaluation renders.
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Keypoints per image.
    #[arg(long, default_value_t = 8)]
    keypoints: usize,
}

fn quantiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

pub fn run(args: PlanBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.iters > 0 && args.k > 0,
        "--iters and --k must be positive"
    );
    let config = VlmPlannerConfig {
        k: args.k,
        ..VlmPlannerConfig::default()
    };
    let mut planner = VlmPlanner::load(&args.model, config.clone())?;
    let eval = EvalConfig {
        size: args.size,
        keypoints: args.keypoints,
    };
    println!(
        "model {}, K = {}, {} iterations, {} rayon threads, {}² images, {} keypoints",
        args.model.display(),
        args.k,
        args.iters,
        rayon_threads(),
        args.size,
        args.keypoints
    );
    println!("| task | image in → action out, K batched (ms, median / p90) | of which sampling | K one by one, sampling only (ms) | batched speed-up |");
    println!("|---|---|---|---|---|");
    for task in args.task.tasks() {
        let obs = observe(task, 0, &eval);
        let (current, goal) = (&obs.current, &obs.goal_frame);
        let mut full = Vec::new();
        let mut sampling = Vec::new();
        let mut single = Vec::new();
        for i in 0..=args.iters {
            // Image in → action out: segmentation, keypoints, overlays, prompt, K samples,
            // parsing, choice.
            let t0 = Instant::now();
            let kc = keypoints(task, current, args.keypoints)?;
            let kg = keypoints(task, goal, args.keypoints)?;
            let scene = Scene {
                task,
                seed: i as u64,
                current,
                goal,
                current_keypoints: &kc,
                goal_keypoints: &kg,
                world: None,
            };
            let decision = planner.decide(&scene);
            let t_full = t0.elapsed().as_secs_f64();
            if let Decision::None(why) = &decision {
                tracing::debug!("no action: {why}");
            }
            // The sampling alone, batched and one by one, on the same prompt.
            let cfg = planner.preprocessor().clone();
            let ci = model_view(&frame_rgb(current), &kc, &cfg).map_err(anyhow::Error::msg)?;
            let gi = model_view(&frame_rgb(goal), &kg, &cfg).map_err(anyhow::Error::msg)?;
            let batch = planner.prompt(task, &ci, &gi, &kc, &kg)?;
            let t1 = Instant::now();
            let _ = best(&planner.candidates(&batch, kc.len(), kg.len(), i as u64)?);
            let t_batched = t1.elapsed().as_secs_f64();
            planner.config.k = 1;
            let t2 = Instant::now();
            let mut all: Vec<Candidate> = Vec::new();
            for s in 0..args.k {
                all.extend(planner.candidates(
                    &batch,
                    kc.len(),
                    kg.len(),
                    (i * 1000 + s) as u64,
                )?);
            }
            let _ = best(&all);
            let t_single = t2.elapsed().as_secs_f64();
            planner.config.k = args.k;
            if i > 0 {
                full.push(t_full * 1e3);
                sampling.push(t_batched * 1e3);
                single.push(t_single * 1e3);
            }
        }
        let (f50, f90) = quantiles(full);
        let (s50, _) = quantiles(sampling);
        let (o50, _) = quantiles(single);
        println!(
            "| {} | {f50:.1} / {f90:.1} | {s50:.1} | {o50:.1} | {:.2}× |",
            task_name(task),
            o50 / s50
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn task_name(t: Task) -> &'static str {
    match t {
        Task::Rope => "rope",
        Task::Cloth => "cloth",
        Task::Toy => "toy",
    }
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into())
}
