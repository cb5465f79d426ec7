//! `dreamplan train-world-model`, `dreamplan predict` and `dreamplan wm-eval`: stage 2 of
//! DreamPlan, the action-conditioned video world model.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::progress::PhaseProgress;
use crate::TaskSel;

use dreamplan::planner::eval::{choice_pixels, observe, plan_pixels, EvalConfig, Observation};
use dreamplan::planner::grammar::parse_answer;
use dreamplan::planner::KeypointChoice;
use dreamplan::sim::rng::Rng;
use dreamplan::sim::tasks::{self, Task};
use dreamplan::verifier::all_choices;
use dreamplan::world_model::imagine::PixelAction;
use dreamplan::world_model::train::{TrainConfig, TrainEvent};
use dreamplan::world_model::{clip, dataset, metrics, prior, rollout, Config, Predictor};

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum Preset {
    /// 128×64 crops, 4 future frames, hidden 64, about 0.7 M weights: trains on 2 CPU cores.
    Cpu,
    /// 256×128 crops, 16 future frames, a wider, deeper model.
    Gpu,
}

/// The camera the bags were recorded through (`train-world-model` and `fit-prior`).
#[derive(Args)]
pub struct CameraArgs {
    /// The camera the bags were recorded through, when not the built-in world's: a YAML or
    /// JSON file (width, height, fx, fy, cx, cy as in its CameraInfo's K, and its hand-eye
    /// pose base_from_camera_xyz / base_from_camera_xyzw); it goes into the model's
    /// config, which then draws the arm through it.
    #[arg(
        id = "camera",
        long = "camera",
        value_name = "FILE",
        conflicts_with = "camera_pose"
    )]
    file: Option<PathBuf>,
    /// The same with the intrinsics taken from the bags' /camera/camera_info: only the
    /// camera's hand-eye pose in the arm's base frame, `X,Y,Z,QX,QY,QZ,QW` (m; the
    /// optical frame's quaternion).
    #[arg(
        id = "camera_pose",
        long = "camera-pose",
        value_name = "X,Y,Z,QX,QY,QZ,QW",
        allow_hyphen_values = true
    )]
    pose: Option<String>,
}

impl CameraArgs {
    /// `cfg` with `--camera`'s spec, or the bags' camera at `--camera-pose`, put in
    /// (replacing the config's).
    fn apply(&self, mut cfg: Config, bags: &[PathBuf]) -> anyhow::Result<Config> {
        if let Some(c) = &self.file {
            cfg.camera = Some(
                dreamplan::render::CameraSpec::read(c)
                    .map_err(|e| anyhow::anyhow!("--camera: {e}"))?,
            );
        }
        if let Some(pose) = &self.pose {
            let (xyz, xyzw) = parse_camera_pose(pose)?;
            cfg.camera = Some(dataset::camera_of_bags(bags, xyz, xyzw).context("--camera-pose")?);
        }
        Ok(cfg)
    }
}

/// `--camera-pose X,Y,Z,QX,QY,QZ,QW`: the camera's optical frame in the arm's base frame.
pub(crate) fn parse_camera_pose(pose: &str) -> anyhow::Result<([f64; 3], [f64; 4])> {
    let v: Vec<f64> = pose
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<Vec<f64>, _>>()
        .ok()
        .filter(|v| v.len() == 7 && v.iter().all(|x| x.is_finite()))
        .with_context(|| format!("--camera-pose {pose:?}: want seven numbers X,Y,Z,QX,QY,QZ,QW"))?;
    Ok(([v[0], v[1], v[2]], [v[3], v[4], v[5], v[6]]))
}

#[derive(Args)]
pub struct TrainArgs {
    /// Bags to train on: bag folders, or folders of bags (`dreamplan collect --task all`
    /// writes one per task). Repeat the flag for more.
    #[arg(long, required = true, num_args = 1..)]
    bags: Vec<PathBuf>,
    /// Output folder: config.json, model.safetensors, checkpoint, curves.png, summary.
    #[arg(long)]
    out: PathBuf,
    /// Model configuration (JSON, as the config.json written beside a model).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Built-in configuration when `--config` is absent.
    #[arg(long, value_enum, default_value_t = Preset::Cpu, conflicts_with = "config")]
    preset: Preset,
    #[command(flatten)]
    camera: CameraArgs,
    /// Where rendered clips are cached (default OUT/cache); reused when it matches.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Optimiser steps in all (a resumed run continues to this count).
    #[arg(long, default_value_t = TrainConfig::default().steps)]
    steps: usize,
    /// Clips per optimiser step.
    #[arg(long, default_value_t = TrainConfig::default().batch)]
    batch: usize,
    /// Peak learning rate (AdamW, warm-up then cosine decay).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,
    /// Seed of the initial weights, batches, flow times and noise.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Steps between validations on held-out episodes.
    #[arg(long, default_value_t = TrainConfig::default().val_every)]
    val_every: usize,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = TrainConfig::default().checkpoint_every)]
    checkpoint_every: usize,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

#[derive(Args)]
pub struct FitPriorArgs {
    /// Bags to fit on (as `train-world-model --bags`).
    #[arg(long, required = true, num_args = 1..)]
    bags: Vec<PathBuf>,
    /// Output folder: `config.json` (the base config with the fitted constants, for
    /// `train-world-model --config`) and `fit.json` (every setting's scores).
    #[arg(long)]
    out: PathBuf,
    /// Base model configuration (JSON); its particle prior is the one fitted.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Built-in base configuration when `--config` is absent.
    #[arg(long, value_enum, default_value_t = Preset::Cpu, conflicts_with = "config")]
    preset: Preset,
    #[command(flatten)]
    camera: CameraArgs,
    /// Where rendered clips are cached (default OUT/cache); reused when it matches, so
    /// `train-world-model --cache` can share it.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Training clips per task the grid is scored on at most (evenly spaced; 0 = all).
    #[arg(long, default_value_t = 150)]
    clips_per_task: usize,
}

/// Cuts the clips of the bags under `paths` into `cache` for `cfg` (an existing cache for
/// the same bags and clip settings is reused), says how many, and opens the cache.
fn cut_clips(
    paths: &[PathBuf],
    cache: &Path,
    cfg: &Config,
) -> anyhow::Result<(Vec<PathBuf>, dataset::Dataset)> {
    let bags = dataset::find_bags(paths).context("--bags")?;
    let t0 = Instant::now();
    // Against the bags' count of actions when they give one (a bar with ETA; before
    // session 45 a line per 100 transitions with no total).
    let expected = dataset::expected_transitions(&bags);
    let bar = PhaseProgress::stderr();
    let index = dataset::build(&bags, cache, cfg, 64, &|read, clips| match expected {
        Some(total) => bar.update("clips", read, total.max(read), &format!("{clips} cut")),
        None if read % 100 == 0 => {
            eprintln!("clips: {read} transitions read, {clips} clips cut")
        }
        None => {}
    })
    .with_context(|| format!("cutting clips from {} bag(s)", bags.len()))?;
    bar.finish();
    for d in &index.damaged {
        eprintln!("damaged: {d}; its transitions before the damage were cut");
    }
    eprintln!(
        "{} clips from {} bag(s) in {:.0} s ({} transitions skipped{}); cache {}",
        index.clips.len(),
        bags.len(),
        t0.elapsed().as_secs_f64(),
        index.skipped,
        index
            .first_skip
            .as_ref()
            .map(|s| format!(": {s}"))
            .unwrap_or_default(),
        cache.display()
    );
    Ok((bags, dataset::Dataset::open(cache)?))
}

/// `dreamplan fit-prior`.
pub fn fit_prior(args: FitPriorArgs) -> anyhow::Result<ExitCode> {
    use dreamplan::world_model::fit::{self, PriorParams};
    let base = args.camera.apply(
        load_config(args.config.as_deref(), args.preset)?,
        &args.bags,
    )?;
    anyhow::ensure!(
        base.prior && base.prior_model == dreamplan::world_model::PriorModel::Particles,
        "the base config has no particle prior to fit (it needs prior: true and prior_model: particles)"
    );
    // Its config.json under a trained model's weights would change the prior they were
    // trained over, and the folder would still load (the shapes match).
    anyhow::ensure!(
        !args.out.join("model.safetensors").exists(),
        "{} holds a trained world model: fit-prior writes a config.json for a new training run, give it another --out",
        args.out.display()
    );
    let cache = args.cache.clone().unwrap_or_else(|| args.out.join("cache"));
    // The bags first: a bad --bags leaves no empty --out behind.
    let (bags, data) = cut_clips(&args.bags, &cache, &base)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // The trainer's split: the fit sees only training episodes.
    let (train_ids, val_ids) = data.split(TrainConfig::default().val_split);
    let thin = |ids: &[usize]| -> Vec<usize> {
        let mut out = Vec::new();
        for t in Task::ALL {
            let of: Vec<usize> = ids
                .iter()
                .copied()
                .filter(|&i| data.index.clips[i].task == t.name())
                .collect();
            let n = if args.clips_per_task == 0 {
                of.len()
            } else {
                args.clips_per_task.min(of.len())
            };
            out.extend((0..n).map(|k| of[k * of.len() / n.max(1)]));
        }
        out
    };
    let fit_clips = fit::FitClips::read(&data, &thin(&train_ids))?;
    let check_clips = fit::FitClips::read(&data, &thin(&val_ids))?;
    anyhow::ensure!(
        !fit_clips.is_empty(),
        "no training clips with a gripper path to fit on in {} bag(s)",
        bags.len()
    );
    let grid = fit::default_grid();
    let progress = PhaseProgress::stderr();
    let t1 = Instant::now();
    let (rows, best) = fit::fit(&fit_clips, &base, &grid, &|done, total| {
        progress.update("prior settings", done, total, "")
    })
    .context("fitting the particle prior")?;
    progress.finish();
    let fitted = rows[best].params;
    let default = PriorParams::of(&Config::cpu());
    let check_fit = fit::score(&check_clips, &base, fitted)?;
    let check_default = fit::score(&check_clips, &base, default)?;
    let default_row = rows.iter().find(|r| r.params == default).cloned();
    let line = |name: &str, r: &fit::FitRow| {
        let per: Vec<String> = r
            .tasks
            .iter()
            .map(|(t, (v, n))| format!("{t} {v:.3} ({n})"))
            .collect();
        println!("{name}: mean {:.3}; {}", r.mean, per.join(", "));
    };
    println!(
        "fitted on {} training clips, {} settings, {:.0} s: table mobility {}, sag {} px, stretch {}, min length {}",
        fit_clips.len(),
        grid.len(),
        t1.elapsed().as_secs_f64(),
        fitted.table_mobility,
        fitted.sag_px,
        fitted.max_stretch,
        fitted.min_length
    );
    line("  fitted, training clips", &rows[best]);
    if let Some(d) = &default_row {
        line("  hand-set, training clips", d);
    }
    if val_ids.is_empty() {
        // Said, not printed as "mean NaN" (before session 43).
        println!("  validation clips: none (too few episodes for the split); the fit is not checked on held-out clips");
    } else {
        line("  fitted, validation clips", &check_fit);
        line("  hand-set, validation clips", &check_default);
    }
    let cfg = fitted.apply(&base);
    let cfg_path = args.out.join("config.json");
    dataset::write_atomic(&cfg_path, serde_json::to_string_pretty(&cfg)?.as_bytes())?;
    let report = serde_json::json!({
        "bags": bags,
        "fit_clips": fit_clips.len(),
        "validation_clips": check_clips.len(),
        "best": best,
        "fitted": fitted,
        "rows": rows,
        "validation": { "fitted": check_fit, "hand_set": check_default },
        "seconds": t1.elapsed().as_secs_f64(),
    });
    let fit_path = args.out.join("fit.json");
    dataset::write_atomic(&fit_path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    println!(
        "wrote {} (train with --config) and {}",
        cfg_path.display(),
        fit_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The device of a training run, which computes in f32 (`--dtype auto` or `f32`).
fn training_device(c: &crate::ComputeArgs) -> anyhow::Result<dreamplan::device::DeviceSpec> {
    use dreamplan::device::DtypeSpec;
    anyhow::ensure!(
        matches!(c.dtype, DtypeSpec::Auto | DtypeSpec::F32),
        "world-model training computes in f32 (the optimiser needs it); --dtype {} is for prediction",
        c.dtype
    );
    c.device.open()?;
    Ok(c.device)
}

fn load_config(path: Option<&Path>, preset: Preset) -> anyhow::Result<Config> {
    let cfg = match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not a world-model config", p.display()))?
        }
        None => match preset {
            Preset::Cpu => Config::cpu(),
            Preset::Gpu => Config::gpu(),
        },
    };
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("world-model config: {e}"))?;
    Ok(cfg)
}

pub fn train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    // Before any clip is cut or prior frame made (minutes on real bags; the library's own
    // check came after them before session 43, naming no flag).
    anyhow::ensure!(args.steps > 0, "--steps must be > 0");
    anyhow::ensure!(args.batch > 0, "--batch must be > 0");
    anyhow::ensure!(
        args.lr > 0.0 && args.lr.is_finite(),
        "--lr must be a finite number > 0"
    );
    anyhow::ensure!(
        args.checkpoint_every > 0,
        "--checkpoint-every must be ≥ 1 (steps between checkpoints)"
    );
    let device = training_device(&args.compute)?;
    let cfg = args.camera.apply(
        load_config(args.config.as_deref(), args.preset)?,
        &args.bags,
    )?;
    let cache = args.cache.clone().unwrap_or_else(|| args.out.join("cache"));
    let progress = PhaseProgress::stderr();
    let (_, mut data) = cut_clips(&args.bags, &cache, &cfg)?;
    if cfg.prior {
        let t1 = Instant::now();
        data.cache_priors(&cfg, &|done, total| {
            progress.update("prior frames", done, total, "")
        })
        .context("making the prior's frames of the clips")?;
        eprintln!(
            "\nprior frames of {} clips ready in {:.0} s ({})",
            data.index.clips.len(),
            t1.elapsed().as_secs_f64(),
            cache.join(dataset::prior_key(&cfg)).display()
        );
    }
    let tc = TrainConfig {
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        seed: args.seed,
        val_every: args.val_every,
        checkpoint_every: args.checkpoint_every,
        device,
        ..TrainConfig::default()
    }
    .warmup_capped();
    let started = Instant::now();
    let first = std::cell::Cell::new(None::<usize>);
    let summary =
        dreamplan::world_model::train::train(&data, &cfg, &tc, &args.out, &|ev| match ev {
            TrainEvent::Resumed(s) => eprintln!("resumed from the checkpoint at step {s}"),
            TrainEvent::Step { step, total, loss } => {
                let from = *first.get().get_or_insert(step - 1);
                first.set(Some(from));
                let rate = (step - from) as f64 / started.elapsed().as_secs_f64().max(1e-9);
                let eta = (total - step) as f64 / rate.max(1e-9);
                progress.update(
                    "train",
                    step,
                    total,
                    &format!(
                        "loss {loss:.4}, {rate:.2} steps/s, eta {:.0} min",
                        eta / 60.0
                    ),
                );
            }
            TrainEvent::Validated(v) => {
                let ious: Vec<String> = v
                    .iou
                    .iter()
                    .map(|(t, m, c, _)| {
                        let prior = v
                            .iou_prior
                            .iter()
                            .find(|(p, _)| p == t)
                            .map(|(_, x)| format!(", prior {x:.2}"))
                            .unwrap_or_default();
                        format!("{t} {m:.2} (copy {c:.2}{prior})")
                    })
                    .collect();
                eprintln!(
                    "\nstep {}: val PSNR {:.2} (copy {:.2}) SSIM {:.3} (copy {:.3}) mask IoU {}",
                    v.step,
                    v.psnr,
                    v.psnr_copy,
                    v.ssim,
                    v.ssim_copy,
                    ious.join(", ")
                );
            }
        })?;
    progress.finish();
    println!(
        "wrote {} ({} training / {} validation clips, {} steps in {:.0} s; curves.png, train_summary.json)",
        args.out.display(),
        summary.clips.0,
        summary.clips.1,
        summary.losses.len(),
        summary.seconds
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct PredictArgs {
    /// The world-model folder.
    #[arg(long)]
    world_model: PathBuf,
    /// A recorded bag: predict one of its transitions (with `--transition`).
    #[arg(long, conflicts_with_all = ["task", "seed"])]
    bag: Option<PathBuf>,
    /// Which transition of `--bag` (0 = the first, the default).
    #[arg(long, requires = "bag")]
    transition: Option<usize>,
    /// A built-in task: predict an action from its seeded state (with `--seed`).
    #[arg(long, value_enum, requires = "seed")]
    task: Option<TaskArg>,
    /// The seed of the `--task` state.
    #[arg(long)]
    seed: Option<u64>,
    /// `pick N place M` on the keypoints of the task's state (required with `--task`).
    #[arg(long)]
    action: Option<String>,
    /// Output folder: predicted.gif (true | the hand-made prior, when the model has one |
    /// predicted, side by side), predicted_final.png, true_final.png, prior_final.png.
    #[arg(long, default_value = "predict_out")]
    out: PathBuf,
    /// Seed of the sampler's noise.
    #[arg(long, default_value_t = 0)]
    noise_seed: u64,
    /// Sampler steps (the model's `sample_steps` when absent; 1 gives its mean prediction).
    #[arg(long)]
    sample_steps: Option<usize>,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum TaskArg {
    Rope,
    Cloth,
    Toy,
}

impl TaskArg {
    fn task(self) -> Task {
        match self {
            TaskArg::Rope => Task::Rope,
            TaskArg::Cloth => Task::Cloth,
            TaskArg::Toy => Task::Toy,
        }
    }
}

/// Frames side by side (left | right), each `w × h` rgb8.
/// `w × h` rgb8 frames in a row, 2 white pixels apart.
fn side_by_side(panels: &[&[u8]], w: usize, h: usize) -> Vec<u8> {
    let gap = 2;
    let ow = panels_width(panels.len(), w);
    let mut out = vec![255u8; ow * h * 3];
    for y in 0..h {
        for (k, p) in panels.iter().enumerate() {
            out[(y * ow + k * (w + gap)) * 3..][..w * 3].copy_from_slice(&p[y * w * 3..][..w * 3]);
        }
    }
    out
}

/// The width of `n` panels of width `w` side by side.
fn panels_width(n: usize, w: usize) -> usize {
    n * w + (n.saturating_sub(1)) * 2
}

/// Writes an animated GIF of rgb8 frames, each shown `delay_ms`, scaled up by `scale`.
fn write_gif(
    path: &Path,
    frames: &[Vec<u8>],
    w: usize,
    h: usize,
    scale: usize,
) -> anyhow::Result<()> {
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::{Delay, Frame, RgbaImage};
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = GifEncoder::new_with_speed(file, 10);
    enc.set_repeat(Repeat::Infinite)?;
    for f in frames {
        let img = RgbaImage::from_fn((w * scale) as u32, (h * scale) as u32, |x, y| {
            let i = ((y as usize / scale) * w + x as usize / scale) * 3;
            image::Rgba([f[i], f[i + 1], f[i + 2], 255])
        });
        enc.encode_frame(Frame::from_parts(
            img,
            0,
            0,
            Delay::from_numer_denom_ms(300, 1),
        ))?;
    }
    Ok(())
}

pub(crate) fn write_png(path: &Path, rgb: &[u8], w: usize, h: usize) -> anyhow::Result<()> {
    image::save_buffer(
        path,
        rgb,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
    )
    .with_context(|| format!("writing {}", path.display()))
}

pub fn predict(args: PredictArgs) -> anyhow::Result<ExitCode> {
    // The action's form before the model loads (its keypoints are checked on the scene).
    if let Some(a) = args.action.as_deref() {
        parse_answer(a, usize::MAX, usize::MAX).with_context(|| format!("--action {a:?}"))?;
    }
    let mut predictor = Predictor::load_on(&args.world_model, &args.compute.open()?)?;
    if let Some(n) = args.sample_steps {
        anyhow::ensure!(n > 0, "--sample-steps must be ≥ 1");
        predictor.sample_steps = n;
    }
    let cfg = predictor.config().clone();
    let (context, arm, truth, task) = if let Some(bag) = &args.bag {
        anyhow::ensure!(
            args.action.is_none(),
            "--action is for --task; a bag's transition has its recorded action"
        );
        let n = args.transition.unwrap_or(0);
        let reader = dreamplan::bag::BagReader::open(bag)?;
        let tr = reader
            .transitions(dreamplan::bag::transitions::TransitionTopics {
                after_window_s: cfg.after_s,
                ..Default::default()
            })
            .nth(n)
            .with_context(|| format!("{}: has no transition {n}", bag.display()))??;
        let size = tr
            .object_observation
            .as_ref()
            .or(tr.object_frames.first())
            .map(|(_, i)| (i.width, i.height))
            .with_context(|| {
                format!(
                    "{}: transition {n} has no object-only frames",
                    bag.display()
                )
            })?;
        dreamplan::world_model::dataset::check_bag_camera(
            &reader,
            &bag.display().to_string(),
            &cfg,
            size.0,
            size.1,
        )?;
        let video = clip::ArmVideo::new(
            dreamplan::robot::franka::default_arm(),
            &cfg.camera_model(size.0, size.1),
            &cfg,
        );
        let c = clip::from_transition(&tr, &video, &cfg)?;
        let motion = clip::Motion {
            arm: c.arm,
            grip: c.grip,
        };
        (
            c.context,
            motion,
            c.future,
            dreamplan::sim::tasks::Task::from_name(&tr.task),
        )
    } else {
        anyhow::ensure!(
            cfg.camera.is_none(),
            "{}: this model sees through another camera than the built-in world's (its config's `camera`), \
             and --task simulates the built-in world: use --bag B --transition N with a bag of that camera",
            args.world_model.display()
        );
        let (Some(task), Some(seed)) = (args.task, args.seed) else {
            anyhow::bail!(
                "give --bag B [--transition N], or --task T --seed S --action \"pick N place M\""
            );
        };
        let action = args
            .action
            .as_deref()
            .context("--task needs --action \"pick N place M\"")?;
        let ec = EvalConfig::default();
        let obs = observe(task.task(), seed, &ec);
        let (cur, goal) = obs
            .keypoints
            .as_ref()
            .map_err(|e| anyhow::anyhow!("no keypoints on seed {seed}: {e}"))?;
        let choice = parse_answer(action, cur.len(), goal.len())
            .with_context(|| format!("--action {action:?}"))?;
        let (plan, _) = candidate_plan(&obs, &choice, &ec)?;
        let (_, truth) = rollout::simulate(&obs.world, &plan, ec.size, &cfg);
        (
            rollout::object_crop(&obs.world, ec.size, &cfg),
            rollout::motion(&plan, ec.size, &cfg),
            truth,
            Some(task.task()),
        )
    };
    let t0 = Instant::now();
    let one = std::slice::from_ref(&arm);
    let pred = match task {
        Some(task) => predictor.predict_for(task, &context, one, args.noise_seed)?,
        None => predictor.predict(&context, one, args.noise_seed)?,
    }
    .remove(0);
    let secs = t0.elapsed().as_secs_f64();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let (w, h) = (cfg.width, cfg.height);
    // With a prior: true | prior | predicted; otherwise true | predicted.
    let prior_frames = match (&arm.grip, cfg.prior) {
        (Some(g), true) => Some(dreamplan::world_model::prior::frames(&context, g, &cfg)),
        (None, true) => Some(vec![context.clone(); cfg.frames]),
        _ => None,
    };
    let n = if prior_frames.is_some() { 3 } else { 2 };
    let mut frames = vec![side_by_side(&vec![context.as_slice(); n], w, h)];
    for (k, (t, p)) in truth.iter().zip(&pred).enumerate() {
        let mut row: Vec<&[u8]> = vec![t];
        if let Some(pf) = &prior_frames {
            row.push(&pf[k]);
        }
        row.push(p);
        frames.push(side_by_side(&row, w, h));
    }
    write_gif(
        &args.out.join("predicted.gif"),
        &frames,
        panels_width(n, w),
        h,
        3,
    )?;
    if let Some(last) = prior_frames.as_ref().and_then(|p| p.last()) {
        write_png(&args.out.join("prior_final.png"), last, w, h)?;
    }
    let last = pred.last().context("no frames predicted")?;
    write_png(&args.out.join("predicted_final.png"), last, w, h)?;
    if let Some(t) = truth.last() {
        write_png(&args.out.join("true_final.png"), t, w, h)?;
        println!(
            "final frame: PSNR {:.2} dB (copy {:.2}), SSIM {:.3} (copy {:.3})",
            metrics::psnr(last, t),
            metrics::psnr(&context, t),
            metrics::ssim(last, t, w, h),
            metrics::ssim(&context, t, w, h)
        );
    }
    println!(
        "predicted in {:.0} ms; wrote {} (left: true, {}right: predicted)",
        secs * 1e3,
        args.out.join("predicted.gif").display(),
        if n == 3 {
            "middle: the hand-made prior, "
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// A candidate's checked plan and its pick/place pixels.
fn candidate_plan(
    obs: &Observation,
    choice: &KeypointChoice,
    ec: &EvalConfig,
) -> anyhow::Result<(dreamplan::robot::motion::PickPlacePlan, PixelAction)> {
    let (cur, goal) = obs
        .keypoints
        .as_ref()
        .map_err(|e| anyhow::anyhow!("no keypoints: {e}"))?;
    let px = choice_pixels(choice, cur, goal)
        .context("the action names a keypoint that is not drawn")?;
    let plan = plan_pixels(&obs.current, &obs.goal_frame, px.0, px.1, ec)
        .map_err(|e| anyhow::anyhow!("the executor refuses the action: {e}"))?;
    Ok((plan, px))
}

#[derive(Args)]
pub struct WmEvalArgs {
    /// The world-model folder.
    #[arg(long)]
    world_model: PathBuf,
    /// States per task.
    #[arg(long, default_value_t = 50)]
    episodes: usize,
    /// Seed of each task's first state (default: 4,000,000, disjoint from `collect`'s
    /// default data seeds (2,000,000 up), the evaluation seeds 0–999 and the preference
    /// seeds (3,000,000 up)).
    #[arg(long, default_value_t = 4_000_000)]
    first_seed: u64,
    /// Candidate actions per state: the planner's distinct samples (with `--planner`), then
    /// distinct ones drawn uniformly from all N×M keypoint pairs.
    #[arg(long, default_value_t = 8)]
    k: usize,
    /// A zero-shot planner folder whose K samples (temperature 1) are the first candidates.
    #[arg(long)]
    planner: Option<PathBuf>,
    /// Sampler steps (the model's `sample_steps` when absent). With `prediction: sample`,
    /// 1 step gives the model's mean prediction.
    #[arg(long)]
    sample_steps: Option<usize>,
    /// Which tasks to evaluate.
    #[arg(long, value_enum, default_value_t = TaskSel::All)]
    task: TaskSel,
    /// Simulated outcomes closer than this (in the task's half-score distance) are not
    /// counted as a ranking pair.
    #[arg(long, default_value_t = 0.5)]
    margin: f64,
    /// The carry prior's drag reach in model pixels, for the prior-alone ranking reported
    /// beside the model's (the model's `prior_sigma_px` when absent).
    #[arg(long)]
    prior_sigma: Option<f64>,
    /// Which hand-made prior ranks alone beside the model (the model's `prior_model` when
    /// absent).
    #[arg(long, value_enum)]
    prior_model: Option<PriorArg>,
    /// The particle prior's carry height in model pixels (the model's `prior_lift_px` when
    /// absent).
    #[arg(long)]
    prior_lift: Option<f64>,
    /// The particle prior's grasp reach in model pixels (the model's `prior_grasp_px` when
    /// absent).
    #[arg(long)]
    prior_grasp: Option<f64>,
    /// The particle prior's table mobility (the model's `prior_table_mobility` when absent).
    #[arg(long)]
    prior_table_mobility: Option<f64>,
    /// The particle prior's sag per sub-step in model pixels (the model's `prior_sag_px`
    /// when absent).
    #[arg(long)]
    prior_sag: Option<f64>,
    /// The particle prior's stretch limit (the model's `prior_max_stretch` when absent).
    #[arg(long)]
    prior_max_stretch: Option<f64>,
    /// The particle prior's compression limit (the model's `prior_min_length` when absent).
    #[arg(long)]
    prior_min_length: Option<f64>,
    /// The particle prior's spread at the release (the model's `prior_spread_px` when absent).
    #[arg(long)]
    prior_spread: Option<f64>,
    /// JSON report.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write every state's masks, for studying the measure offline (JSON lines: task,
    /// seed, width, height, the goal's and the current frame's object masks, and per
    /// candidate its simulator score, its gripper path in model pixels (pick and the
    /// offsets per future frame) and the object masks of its true, predicted and prior
    /// final frames; a mask is a string of '0'/'1', row-major).
    #[arg(long)]
    dump_masks: Option<PathBuf>,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

/// A mask as a row-major string of '0' and '1' (`--dump-masks`).
fn mask_bits(m: &[bool]) -> String {
    m.iter().map(|&b| if b { '1' } else { '0' }).collect()
}

#[derive(serde::Serialize, Default)]
struct TaskReport {
    task: String,
    states: usize,
    candidates: usize,
    pairs: usize,
    agreement: f64,
    /// 95% interval of `agreement`, by bootstrap over states (pairs of one state are not
    /// independent).
    agreement_ci: (f64, f64),
    /// The same ranking made from the true final frames with the mask measure (what a
    /// perfect frame predictor would reach).
    agreement_true_frames: f64,
    /// The same ranking made from the carry prior's final frames alone (no network).
    agreement_prior: f64,
    /// 95% interval of `agreement_prior`.
    agreement_prior_ci: (f64, f64),
    /// How often the carry prior's top-1 is the simulator's top-1.
    top1_prior: f64,
    /// Mask IoU of the carry prior's final frame with the true one.
    iou_prior: f64,
    spearman: f64,
    top1_hits: f64,
    /// 95% interval of `top1_hits` − `top1_chance`, by bootstrap over states.
    top1_gain_ci: (f64, f64),
    top1_chance: f64,
    /// Mean simulated score (−distance/half) of the world model's top-1, of a random
    /// candidate, and of the best candidate.
    top1_sim_score: f64,
    random_sim_score: f64,
    best_sim_score: f64,
    psnr: f64,
    psnr_copy: f64,
    ssim: f64,
    ssim_copy: f64,
    iou: f64,
    iou_copy: f64,
    ms_per_candidate: f64,
}

/// 95% bootstrap interval (percentiles of 2,000 resamples of the states, fixed seed) of
/// Σ num / Σ den over the states.
/// `num / den`, NaN when there is nothing to divide by (`den` 0).
fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        f64::NAN
    }
}

/// A share as a percentage with one decimal, "—" when there was nothing to measure.
fn percent(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}%", 100.0 * x)
    } else {
        "—".into()
    }
}

/// A 95% interval of a share, as `lo–hi%`, "—" when there was nothing to measure.
fn percent_interval((lo, hi): (f64, f64)) -> String {
    if lo.is_finite() && hi.is_finite() {
        format!("{:.1}–{:.1}%", 100.0 * lo, 100.0 * hi)
    } else {
        "—".into()
    }
}

fn bootstrap_ratio(per_state: &[(f64, f64)]) -> (f64, f64) {
    if per_state.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = Rng::new(0xB007, 0);
    let mut stats: Vec<f64> = (0..2000)
        .map(|_| {
            let (mut num, mut den) = (0.0, 0.0);
            for _ in 0..per_state.len() {
                let (a, b) = per_state[rng.below(per_state.len())];
                num += a;
                den += b;
            }
            if den > 0.0 {
                num / den
            } else {
                f64::NAN
            }
        })
        .filter(|x| x.is_finite())
        .collect();
    if stats.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| stats[((stats.len() - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
}

/// Spearman's ρ of two equally long lists (average ranks for ties; NaN when one is constant).
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let ranks = |v: &[f64]| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut k = 0;
        while k < idx.len() {
            let mut e = k;
            while e + 1 < idx.len() && v[idx[e + 1]] == v[idx[k]] {
                e += 1;
            }
            for &i in &idx[k..=e] {
                r[i] = (k + e) as f64 / 2.0;
            }
            k = e + 1;
        }
        r
    };
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// A pair's credit for ranking as the simulator does: 1 when the scores order the pair as
/// the simulator (`truth_order`: the first is better), 0 when they order it the other way,
/// ½ when they tie. Before session 43 a tie counted as "the second is better", so with the
/// planner's samples listed first ties leaned against the planner.
pub(crate) fn pair_credit(a: f64, b: f64, truth_order: bool) -> f64 {
    if a == b {
        0.5
    } else if (a > b) == truth_order {
        1.0
    } else {
        0.0
    }
}

/// Top-1 of `scores` against the simulator's `sim`: the share of the candidates tied at the
/// top score that are among the simulator's best (a pick among them at random), and their
/// mean simulated score. Before session 43 the last of the tied was taken.
pub(crate) fn top1(scores: &[f64], sim: &[f64]) -> (f64, f64) {
    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tied: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] == top).collect();
    if tied.is_empty() {
        return (0.0, 0.0);
    }
    let best = sim.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let n = tied.len() as f64;
    let hits = tied.iter().filter(|&&i| sim[i] >= best - 1e-9).count() as f64;
    (hits / n, tied.iter().map(|&i| sim[i]).sum::<f64>() / n)
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len())
        .max_by(|&i, &j| v[i].total_cmp(&v[j]))
        .unwrap_or(0)
}

pub fn wm_eval(args: WmEvalArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.episodes > 0 && args.k >= 2,
        "--episodes must be > 0 and --k ≥ 2"
    );
    crate::check_seed_range(args.first_seed, args.episodes as u64, "--episodes")?;
    anyhow::ensure!(
        args.margin >= 0.0 && args.margin.is_finite(),
        "--margin must be a finite number ≥ 0 (half-thresholds)"
    );
    let mut predictor = Predictor::load_on(&args.world_model, &args.compute.open()?)?;
    if let Some(n) = args.sample_steps {
        anyhow::ensure!(n > 0, "--sample-steps must be ≥ 1");
        predictor.sample_steps = n;
    }
    let cfg = predictor.config().clone();
    anyhow::ensure!(
        cfg.camera.is_none(),
        "{}: this model sees through another camera than the built-in world's (its config's `camera`); \
         wm-eval simulates the built-in world through the built-in camera, so it cannot rate it",
        args.world_model.display()
    );
    let (w, h) = (cfg.width, cfg.height);
    let ec = EvalConfig::default();
    let mut prior_cfg = cfg.clone();
    if let Some(sigma) = args.prior_sigma {
        prior_cfg.prior_sigma_px = sigma;
    }
    if let Some(m) = args.prior_model {
        prior_cfg.prior_model = m.into();
    }
    if let Some(lift) = args.prior_lift {
        prior_cfg.prior_lift_px = lift;
    }
    if let Some(grasp) = args.prior_grasp {
        prior_cfg.prior_grasp_px = grasp;
    }
    if let Some(m) = args.prior_table_mobility {
        prior_cfg.prior_table_mobility = m;
    }
    if let Some(a) = args.prior_sag {
        prior_cfg.prior_sag_px = a;
    }
    if let Some(x) = args.prior_max_stretch {
        prior_cfg.prior_max_stretch = x;
    }
    if let Some(x) = args.prior_min_length {
        prior_cfg.prior_min_length = x;
    }
    if let Some(x) = args.prior_spread {
        prior_cfg.prior_spread_px = x;
    }
    prior_cfg.validate().map_err(anyhow::Error::msg)?;
    let mut planner = match &args.planner {
        Some(dir) => Some(
            dreamplan::planner::vlm_planner::VlmPlanner::load_with_adapter(
                dir,
                None,
                dreamplan::planner::vlm_planner::VlmPlannerConfig {
                    k: args.k,
                    temperature: 1.0,
                    device: args.compute.device,
                    dtype: args.compute.dtype,
                    ..Default::default()
                },
            )
            .with_context(|| format!("loading the planner {}", dir.display()))?,
        ),
        None => None,
    };
    let progress = PhaseProgress::stderr();
    let mut reports = Vec::new();
    let mut dump = match &args.dump_masks {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    for task in args.task.tasks() {
        let half = task.thresholds().1;
        let mut r = TaskReport {
            task: task.name().into(),
            ..Default::default()
        };
        let (mut agree, mut agree_true, mut rhos) = (0.0f64, 0.0f64, Vec::new());
        let (mut agree_prior, mut state_prior) = (0.0f64, Vec::new());
        let mut frame_sums = [0.0f64; 6];
        let mut predict_s = 0.0;
        // Per state: (agreeing pairs, pairs) and (top-1 hit − chance, 1).
        let (mut state_agree, mut state_gain) = (Vec::new(), Vec::new());
        for e in 0..args.episodes {
            let seed = args.first_seed + e as u64;
            progress.update(task.name(), e, args.episodes, "");
            let obs = observe(task, seed, &ec);
            let Ok((cur, goal)) = obs.keypoints.as_ref() else {
                continue;
            };
            let mut rng = Rng::new(seed, 0xE7A1);
            let mut pool = all_choices(cur, goal);
            let mut cands = Vec::new();
            if let Some(p) = planner.as_mut() {
                use dreamplan::planner::eval::Planner as _;
                let scene = dreamplan::planner::eval::Scene {
                    task,
                    seed,
                    current: &obs.current,
                    goal: &obs.goal_frame,
                    current_keypoints: cur,
                    goal_keypoints: goal,
                    world: None,
                    goal_world: None,
                };
                let _ = p.decide(&scene);
                for c in dreamplan::planner::eval::Planner::candidates(p) {
                    let Ok(choice) = &c.choice else { continue };
                    if let Some(i) = pool.iter().position(|x| x == choice) {
                        let choice = pool.swap_remove(i);
                        if let Ok((plan, _)) = candidate_plan(&obs, &choice, &ec) {
                            cands.push(plan);
                        }
                    }
                }
            }
            while cands.len() < args.k && !pool.is_empty() {
                let choice = pool.swap_remove(rng.below(pool.len()));
                if let Ok((plan, _)) = candidate_plan(&obs, &choice, &ec) {
                    cands.push(plan);
                }
            }
            if cands.len() < 2 {
                continue;
            }
            let context = rollout::object_crop(&obs.world, ec.size, &cfg);
            let goal_crop = clip::crop_resize(
                &obs.goal_frame.rgb,
                obs.goal_frame.width,
                obs.goal_frame.height,
                &cfg,
            )?;
            let goal_mask = to_mask(metrics::mask(task, &goal_crop, w, h)?, w, h);
            let motions: Vec<_> = cands
                .iter()
                .map(|p| rollout::motion(p, ec.size, &cfg))
                .collect();
            let t0 = Instant::now();
            let preds = predictor.predict_for(task, &context, &motions, seed)?;
            predict_s += t0.elapsed().as_secs_f64();
            let mut sim = Vec::new();
            let mut wm = Vec::new();
            let mut true_frames = Vec::new();
            let mut prior_scores = Vec::new();
            let mut dumped = Vec::new();
            for ((plan, pred), motion) in cands.iter().zip(&preds).zip(&motions) {
                let (world, truth) = rollout::simulate(&obs.world, plan, ec.size, &cfg);
                let (distance, _) = tasks::score(task, &world, &obs.goal);
                sim.push(-distance / half);
                // Each final frame is segmented once: its mask is scored, compared by IoU
                // and (with --dump-masks) written.
                let score = |m: &[bool]| -> anyhow::Result<f64> {
                    let m = to_mask(m.to_vec(), w, h);
                    Ok(dreamplan::verifier::measure::mask_score(&m, &goal_mask)?.value)
                };
                let last = pred.last().context("no predicted frames")?;
                let t_last = truth.last().context("no true frames")?;
                let prior_last = motion
                    .grip
                    .as_ref()
                    .and_then(|g| prior::frames(&context, g, &prior_cfg).pop())
                    .unwrap_or_else(|| context.clone());
                let (mpred, mt, mp) = (
                    metrics::mask(task, last, w, h)?,
                    metrics::mask(task, t_last, w, h)?,
                    metrics::mask(task, &prior_last, w, h)?,
                );
                wm.push(score(&mpred)?);
                true_frames.push(score(&mt)?);
                prior_scores.push(score(&mp)?);
                if dump.is_some() {
                    dumped.push(serde_json::json!({
                        "sim": sim.last(),
                        "grip": motion.grip.as_ref().map(|g| serde_json::json!({
                            "pick": g.pick, "offsets": g.offsets,
                        })),
                        "true": mask_bits(&mt),
                        "predicted": mask_bits(&mpred),
                        "prior": mask_bits(&mp),
                    }));
                }
                frame_sums[0] += metrics::psnr(last, t_last);
                frame_sums[1] += metrics::psnr(&context, t_last);
                frame_sums[2] += metrics::ssim(last, t_last, w, h);
                frame_sums[3] += metrics::ssim(&context, t_last, w, h);
                frame_sums[4] += metrics::iou(&mpred, &mt);
                frame_sums[5] += metrics::iou(&metrics::mask(task, &context, w, h)?, &mt);
                r.iou_prior += metrics::iou(&mp, &mt);
            }
            if let Some(d) = dump.as_mut() {
                use std::io::Write as _;
                let line = serde_json::json!({
                    "task": task.name(), "seed": seed, "width": w, "height": h,
                    "goal": mask_bits(&goal_mask.data),
                    "context": mask_bits(&metrics::mask(task, &context, w, h)?),
                    "candidates": dumped,
                });
                writeln!(d, "{line}")?;
            }
            let n = sim.len();
            r.states += 1;
            r.candidates += n;
            let (pairs0, agree0, prior0) = (r.pairs, agree, agree_prior);
            for i in 0..n {
                for j in i + 1..n {
                    if (sim[i] - sim[j]).abs() > args.margin {
                        r.pairs += 1;
                        let truth_order = sim[i] > sim[j];
                        agree += pair_credit(wm[i], wm[j], truth_order);
                        agree_true += pair_credit(true_frames[i], true_frames[j], truth_order);
                        agree_prior += pair_credit(prior_scores[i], prior_scores[j], truth_order);
                    }
                }
            }
            state_agree.push((agree - agree0, (r.pairs - pairs0) as f64));
            state_prior.push((agree_prior - prior0, (r.pairs - pairs0) as f64));
            // A world model that scores every candidate the same ranks nothing: ρ 0 (it
            // was left out of the mean before session 43, which flattered it). A state whose
            // simulated outcomes are all the same has nothing to rank and is left out.
            let rho = spearman(&wm, &sim);
            if rho.is_finite() {
                rhos.push(rho);
            } else if sim.iter().any(|x| *x != sim[0]) {
                rhos.push(0.0);
            }
            let best = argmax(&sim);
            let (hit, top_sim) = top1(&wm, &sim);
            r.top1_prior += top1(&prior_scores, &sim).0;
            r.top1_hits += hit;
            // Chance: a uniformly random pick is one of the (possibly tied) best.
            let n_best = sim.iter().filter(|&&x| x >= sim[best] - 1e-9).count();
            r.top1_chance += n_best as f64 / n as f64;
            state_gain.push((hit - n_best as f64 / n as f64, 1.0));
            r.top1_sim_score += top_sim;
            r.random_sim_score += sim.iter().sum::<f64>() / n as f64;
            r.best_sim_score += sim[best];
        }
        progress.finish();
        // Nothing to measure (no pair past the margin, no state) is NaN, written as null
        // and printed as "—": before session 44 it was 0, which reads as a model that
        // ranks every pair backwards.
        let (s, c, pairs) = (r.states as f64, r.candidates as f64, r.pairs as f64);
        r.agreement = ratio(agree, pairs);
        r.agreement_ci = bootstrap_ratio(&state_agree);
        r.top1_gain_ci = bootstrap_ratio(&state_gain);
        r.agreement_true_frames = ratio(agree_true, pairs);
        r.agreement_prior = ratio(agree_prior, pairs);
        r.agreement_prior_ci = bootstrap_ratio(&state_prior);
        r.top1_prior = ratio(r.top1_prior, s);
        r.iou_prior = ratio(r.iou_prior, c);
        r.spearman = ratio(rhos.iter().sum::<f64>(), rhos.len() as f64);
        r.top1_hits = ratio(r.top1_hits, s);
        r.top1_chance = ratio(r.top1_chance, s);
        r.top1_sim_score = ratio(r.top1_sim_score, s);
        r.random_sim_score = ratio(r.random_sim_score, s);
        r.best_sim_score = ratio(r.best_sim_score, s);
        r.psnr = ratio(frame_sums[0], c);
        r.psnr_copy = ratio(frame_sums[1], c);
        r.ssim = ratio(frame_sums[2], c);
        r.ssim_copy = ratio(frame_sums[3], c);
        r.iou = ratio(frame_sums[4], c);
        r.iou_copy = ratio(frame_sums[5], c);
        r.ms_per_candidate = ratio(predict_s * 1e3, c);
        reports.push(r);
    }
    println!(
        "world model {}, {} sampler steps; {} states per task from seed {}; K = {} candidates ({}random keypoint pairs); pairs differ by > {} half-thresholds",
        args.world_model.display(),
        predictor.sample_steps,
        args.episodes,
        args.first_seed,
        args.k,
        if args.planner.is_some() { "the planner's samples, then " } else { "" },
        args.margin
    );
    if !predictor.prior_only.is_empty() {
        let names: Vec<&str> = predictor.prior_only.iter().map(|t| t.name()).collect();
        println!(
            "the prior alone predicts {} ({}: the trainer's validation found the network no better there)",
            names.join(", "),
            dreamplan::world_model::predict::TASK_CHOICE_FILE
        );
    }
    println!(
        "{:<6} {:>6} {:>6} {:>9} {:>9} {:>8} {:>11} {:>18} {:>13} {:>13} {:>8}",
        "task",
        "states",
        "pairs",
        "agree",
        "agree*",
        "rho",
        "top1 (chance)",
        "sim score top1/rnd/best",
        "IoU (copy)",
        "PSNR (copy)",
        "ms/cand"
    );
    for r in &reports {
        println!(
            "{:<6} {:>6} {:>6} {:>9} {:>9} {:>8.2} {:>5.2} ({:.2}) {:>6.2}/{:.2}/{:.2} {:>6.3} ({:.3}) {:>6.2} ({:.2}) {:>8.1}",
            r.task,
            r.states,
            r.pairs,
            percent(r.agreement),
            percent(r.agreement_true_frames),
            r.spearman,
            r.top1_hits,
            r.top1_chance,
            r.top1_sim_score,
            r.random_sim_score,
            r.best_sim_score,
            r.iou,
            r.iou_copy,
            r.psnr,
            r.psnr_copy,
            r.ms_per_candidate
        );
    }
    for r in &reports {
        println!(
            "{}: agreement 95% interval {}; top-1 minus chance {:+.2} (95% interval {:+.2} to {:+.2}); SSIM {:.3} (copy {:.3})",
            r.task,
            percent_interval(r.agreement_ci),
            r.top1_hits - r.top1_chance,
            r.top1_gain_ci.0,
            r.top1_gain_ci.1,
            r.ssim,
            r.ssim_copy
        );
    }
    for r in &reports {
        println!(
            "{}: the {} alone: agreement {} ({}), top-1 {:.2}, IoU {:.3}",
            r.task,
            prior_label(&prior_cfg),
            percent(r.agreement_prior),
            percent_interval(r.agreement_prior_ci),
            r.top1_prior,
            r.iou_prior
        );
    }
    println!("agree*: the same pairs ranked from the true final frames with the mask measure (a perfect frame predictor's ceiling)");
    if let Some(mut d) = dump {
        use std::io::Write as _;
        d.flush()?;
    }
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn to_mask(data: Vec<bool>, w: usize, h: usize) -> dreamplan::vision::Mask {
    dreamplan::vision::Mask {
        width: w as u32,
        height: h as u32,
        data,
    }
}

#[derive(Args)]
pub struct WmBenchArgs {
    /// Model configuration (JSON); the built-in preset otherwise.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Built-in configuration when `--config` is absent.
    #[arg(long, value_enum, default_value_t = Preset::Cpu, conflicts_with = "config")]
    preset: Preset,
    /// Clips per training step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[command(flatten)]
    run: crate::BenchRun,
}

pub fn wm_bench(args: WmBenchArgs) -> anyhow::Result<ExitCode> {
    use dreamplan::world_model::train::{init_vars_on, noise};
    let compute = args.run.compute.open()?;
    let cfg = load_config(args.config.as_deref(), args.preset)?;
    // Training in f32; prediction in the compute dtype (bf16 on a GPU by default).
    let (model, vars) = init_vars_on(&cfg, 0, &compute.device)?;
    let predictor = if compute.dtype == candle_core::DType::F32 {
        model.clone()
    } else {
        let tensors = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let vb = candle_nn::VarBuilder::from_tensors(tensors, compute.dtype, &compute.device);
        dreamplan::world_model::WorldModel::new(&cfg, vb)?
    };
    let sync = || compute.device.synchronize();
    let weights: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
    let mut rng = Rng::new(0, 1);
    println!(
        "config {}×{}, {} frames, patch {}, hidden {}, depth {} (+{} control), {} weights, {} threads",
        w,
        h,
        f,
        cfg.patch_size,
        cfg.hidden,
        cfg.depth,
        cfg.control_blocks,
        weights,
        candle_core::utils::get_num_threads()
    );
    let b = args.batch;
    let x = noise(&mut rng, &[b, f, 3, h, w])?;
    let eps = noise(&mut rng, &[b, f, 3, h, w])?;
    let ctx = noise(&mut rng, &[b, 3, h, w])?;
    let arm = noise(&mut rng, &[b, f + 1, 3, h, w])?;
    let prior = noise(&mut rng, &[b, f, 3, h, w])?;
    let t = candle_core::Tensor::full(0.5f32, b, &candle_core::Device::Cpu)?;
    let step = crate::median_secs(args.run.iters, || {
        let loss = model.flow_loss(&x, &t, &eps, &ctx, &arm, Some(&prior))?;
        let _ = loss.backward()?;
        sync()?;
        Ok(())
    })?;
    println!(
        "training step (batch {b}, forward + backward): {:.0} ms, {:.2} steps/s, {:.1} clips/s",
        step * 1e3,
        1.0 / step,
        b as f64 / step
    );
    let mut predictions = Vec::new();
    // Each distinct step count once; a mask model predicts in one pass and takes no other.
    let mut step_counts = if cfg.loss == dreamplan::world_model::Loss::Mask {
        vec![1usize]
    } else {
        vec![1usize, cfg.sample_steps, 2 * cfg.sample_steps]
    };
    step_counts.dedup();
    for k in [1usize, 8] {
        for &steps in &step_counts {
            let e = noise(&mut rng, &[k, f, 3, h, w])?;
            let c = noise(&mut rng, &[k, 3, h, w])?;
            let a = noise(&mut rng, &[k, f + 1, 3, h, w])?;
            let pr = noise(&mut rng, &[k, f, 3, h, w])?;
            let s = crate::median_secs(args.run.iters, || {
                predictor.sample(&e, &c, &a, Some(&pr), steps)?;
                sync()?;
                Ok(())
            })?;
            println!(
                "predict K={k}, {steps} sampler steps: {:.0} ms per batch, {:.1} ms per candidate",
                s * 1e3,
                s * 1e3 / k as f64
            );
            predictions.push(serde_json::json!({
                "k": k, "sampler_steps": steps, "ms_per_batch": s * 1e3,
                "ms_per_candidate": s * 1e3 / k as f64,
            }));
        }
    }
    if args.run.json.is_some() {
        let doc = serde_json::json!({
            "device": compute.spec.to_string(),
            "predict_dtype": format!("{:?}", compute.dtype),
            "config": cfg,
            "weights": weights,
            "train_batch": b,
            "train_step_ms": step * 1e3,
            "train_steps_per_s": 1.0 / step,
            "predict": predictions,
        });
        args.run.write_json(&doc)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The hand-made prior that ranks alone in `wm-eval`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PriorArg {
    /// A blob around the pick carried by the gripper's travel.
    Carry,
    /// Connected particles pulled taut behind the gripper.
    Particles,
}

impl From<PriorArg> for dreamplan::world_model::PriorModel {
    fn from(p: PriorArg) -> Self {
        match p {
            PriorArg::Carry => Self::Carry,
            PriorArg::Particles => Self::Particles,
        }
    }
}

/// How `wm-eval` names the prior it ranked with.
fn prior_label(cfg: &Config) -> String {
    match cfg.prior_model {
        dreamplan::world_model::PriorModel::Carry => {
            format!("carry prior (σ {} px)", cfg.prior_sigma_px)
        }
        dreamplan::world_model::PriorModel::Particles => format!(
            "particle prior (lift {} px, grasp {} px, table mobility {}, sag {} px, stretch {}, \
             min length {}{})",
            cfg.prior_lift_px,
            cfg.prior_grasp_px,
            cfg.prior_table_mobility,
            cfg.prior_sag_px,
            cfg.prior_max_stretch,
            cfg.prior_min_length,
            if cfg.prior_spread_px > 0.0 {
                format!(", spread {} px", cfg.prior_spread_px)
            } else {
                String::new()
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{pair_credit, top1};

    #[test]
    fn ties_are_half_right_and_top1_shares_among_the_tied() {
        assert_eq!(pair_credit(0.7, 0.2, true), 1.0);
        assert_eq!(pair_credit(0.7, 0.2, false), 0.0);
        assert_eq!(pair_credit(0.2, 0.7, false), 1.0);
        // A tie is half right whichever candidate the simulator prefers.
        assert_eq!(pair_credit(0.4, 0.4, true), 0.5);
        assert_eq!(pair_credit(0.4, 0.4, false), 0.5);
        // The simulator's best is candidate 0; the scores tie 0 and 2 at the top.
        let sim = [0.9, 0.1, 0.3, 0.5];
        assert_eq!(top1(&[0.8, 0.1, 0.8, 0.2], &sim), (0.5, 0.6));
        assert_eq!(top1(&[0.8, 0.1, 0.2, 0.2], &sim), (1.0, 0.9));
        assert_eq!(top1(&[0.0; 4], &sim), (0.25, 0.45));
    }
}
