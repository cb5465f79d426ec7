//! `dreamplan plan-bench`: decision latency of the VLM planner, image in → action out, and
//! K candidates sampled as one batch (prompt computed once, K rows decoded together)
//! against K separate samples (prompt recomputed each time).
//!
//! Decisions follow one episode: the goal image stays, the current image is new at every
//! decision (the scene after each action), so the goal comes from the planner's vision
//! cache from the second decision on. The first decision of an episode (nothing cached) is
//! reported beside it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use dreamplan::planner::eval::{keypoint_pair, observe, Decision, EvalConfig, Planner, Scene};
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
    /// A PEFT LoRA adapter folder merged into `--model` at load.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Which tasks' scenes to decide on.
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
    /// Decode without the grammar's guide (every answer token sampled, up to the end
    /// token), for comparison with the default guided decoding.
    #[arg(long)]
    unguided: bool,
    /// Made-up weights of `--model`'s architecture (the folder needs config.json, the
    /// tokenizer and the processor files, no safetensors): the cost of a decision of a
    /// model whose weights are not here, e.g. the 8B config (docs/gpu.md).
    #[arg(long, conflicts_with = "adapter")]
    random_weights: bool,
    /// Also write the figures (milliseconds per task) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    compute: crate::ComputeArgs,
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
        guided: !args.unguided,
        // Made-up weights answer noise: sampled under the grammar, each decision takes one
        // round, as a trained model's does.
        constrained: args.random_weights,
        device: args.compute.device,
        dtype: args.compute.dtype,
        ..VlmPlannerConfig::default()
    };
    let mut planner = if args.random_weights {
        VlmPlanner::load_random(&args.model, config.clone())?
    } else {
        VlmPlanner::load_with_adapter(&args.model, args.adapter.as_deref(), config.clone())?
    };
    let mut rows = Vec::new();
    let eval = EvalConfig {
        size: args.size,
        keypoints: args.keypoints,
    };
    println!(
        "model {}, K = {}, {} decoding, {} iterations, {} rayon threads, {}² images, {} keypoints",
        args.model.display(),
        args.k,
        if args.unguided { "unguided" } else { "guided" },
        args.iters,
        rayon_threads(),
        args.size,
        args.keypoints
    );
    println!("| task | image in → action out, K batched (ms, median / p90) | same, goal not yet encoded (first decision of an episode) | sampling alone, nothing cached | of which the prompt (vision + prefill) | K one by one, sampling only (ms) | batched speed-up |");
    println!("|---|---|---|---|---|---|---|");
    for task in args.task.tasks() {
        // One episode's goal; a fresh current image at every decision, as after each
        // action (the current image is never in the vision cache, the goal is).
        let goal_obs = observe(task, 0, &eval);
        let goal = &goal_obs.goal_frame;
        let (mut full, mut cold, mut sampling, mut single, mut prompt) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..=args.iters {
            let obs = observe(task, i as u64 + 1, &eval);
            let current = &obs.current;
            let decide = |planner: &mut VlmPlanner| -> anyhow::Result<f64> {
                // Image in → action out: segmentation, keypoints, overlays, prompt, K
                // samples, parsing, choice.
                let t0 = Instant::now();
                let (kc, kg) = keypoint_pair(task, current, goal, args.keypoints)?;
                let scene = Scene {
                    task,
                    seed: i as u64,
                    current,
                    goal,
                    current_keypoints: &kc,
                    goal_keypoints: &kg,
                    world: None,
                    goal_world: None,
                };
                if let Decision::None(why) = planner.decide(&scene) {
                    tracing::debug!("no action: {why}");
                }
                Ok(t0.elapsed().as_secs_f64())
            };
            let t_full = decide(&mut planner)?;
            planner.clear_vision_cache();
            let t_cold = decide(&mut planner)?;
            // The sampling alone, batched and one by one, on the same prompt.
            let (kc, kg) = keypoint_pair(task, current, goal, args.keypoints)?;
            let kg = &kg;
            let cfg = planner.preprocessor().clone();
            let ci = model_view(&frame_rgb(current), &kc, &cfg).map_err(anyhow::Error::msg)?;
            let gi = model_view(&frame_rgb(goal), kg, &cfg).map_err(anyhow::Error::msg)?;
            let batch = planner.prompt(task, &ci, &gi, &kc, kg, (current.width, current.height))?;
            // The prompt alone (vision tower + text prefill), as generation runs it, and
            // the sampling batched vs one by one: nothing cached, each call encodes both
            // images (one by one would otherwise reuse them from the vision cache).
            let model = planner.model_for(task);
            planner.clear_vision_cache();
            let t_p = Instant::now();
            let mut cache = model.new_cache(batch.input_ids[0].len() + 1);
            model.prefill(&batch, &mut cache)?;
            model.device().synchronize()?;
            let t_prompt = t_p.elapsed().as_secs_f64();
            planner.clear_vision_cache();
            let t1 = Instant::now();
            let _ = best(&planner.candidates(task, &batch, kc.len(), kg.len(), i as u64)?);
            let t_batched = t1.elapsed().as_secs_f64();
            planner.config.k = 1;
            let t2 = Instant::now();
            let mut all: Vec<Candidate> = Vec::new();
            for s in 0..args.k {
                planner.clear_vision_cache();
                all.extend(planner.candidates(
                    task,
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
                cold.push(t_cold * 1e3);
                sampling.push(t_batched * 1e3);
                single.push(t_single * 1e3);
                prompt.push(t_prompt * 1e3);
            }
        }
        let (f50, f90) = quantiles(full);
        let (c50, _) = quantiles(cold);
        let (s50, _) = quantiles(sampling);
        let (o50, _) = quantiles(single);
        let (p50, _) = quantiles(prompt);
        println!(
            "| {} | {f50:.1} / {f90:.1} | {c50:.1} | {s50:.1} | {p50:.1} | {o50:.1} | {:.2}× |",
            task_name(task),
            o50 / s50
        );
        rows.push(serde_json::json!({
            "task": task_name(task), "decision_ms_median": f50, "decision_ms_p90": f90,
            "decision_cold_ms": c50, "sampling_batched_ms": s50, "prompt_ms": p50,
            "sampling_one_by_one_ms": o50,
        }));
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "model": args.model.display().to_string(),
            "random_weights": args.random_weights,
            "device": args.compute.device.to_string(),
            "dtype": format!("{:?}", args.compute.dtype.resolve(args.compute.device)),
            "k": args.k, "iters": args.iters, "image_side": args.size,
            "tasks": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
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
