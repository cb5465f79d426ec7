//! `dreamplan sim render|episode`: look at the built-in world.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};

use dreamplan::planner::eval::segment_params;
use dreamplan::render::{render, scene, Frame, RenderMode, RenderOptions};
use dreamplan::sim::episode::{arm_goal, arm_pick_place, default_arm, ArmExecParams, READY};
use dreamplan::sim::tasks::{hidden_action, reset, sample_random_action, score, Task};
use dreamplan::vision;

#[derive(Clone, Copy, ValueEnum)]
pub enum TaskArg {
    Rope,
    Cloth,
    Toy,
}

impl From<TaskArg> for Task {
    fn from(t: TaskArg) -> Task {
        match t {
            TaskArg::Rope => Task::Rope,
            TaskArg::Cloth => Task::Cloth,
            TaskArg::Toy => Task::Toy,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum ActionArg {
    /// The hidden good action that made the goal.
    Hidden,
    /// A random pick and place on the table.
    Random,
}

#[derive(Subcommand)]
pub enum SimCommand {
    /// Render a task's initial state (or its goal) with the arm at its ready pose.
    Render {
        /// The task whose scene to render.
        #[arg(long, value_enum)]
        task: TaskArg,
        /// The scene's seed (object shape, pose and goal).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Image to write; the format follows the extension (PNG, JPEG, …).
        #[arg(long)]
        out: PathBuf,
        /// Render the goal state instead (object only, no arm).
        #[arg(long)]
        goal: bool,
        /// Image width in pixels.
        #[arg(long, default_value_t = 512)]
        width: u32,
        /// Image height in pixels.
        #[arg(long, default_value_t = 512)]
        height: u32,
        /// Segment the object and draw this many numbered keypoints on it (as the planner
        /// sees it).
        #[arg(long)]
        keypoints: Option<usize>,
    },
    /// Run one episode with the arm and write it as an animated GIF.
    Episode {
        /// The task to run.
        #[arg(long, value_enum)]
        task: TaskArg,
        /// The scene's seed (object shape, pose and goal).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// GIF to write (camera view); the name must end in `.gif`.
        #[arg(long)]
        video: PathBuf,
        /// Also write the arm-only conditioning video here.
        #[arg(long)]
        arm_video: Option<PathBuf>,
        /// Also write the object-only video here.
        #[arg(long)]
        object_video: Option<PathBuf>,
        /// The pick-and-place action the arm performs.
        #[arg(long, value_enum, default_value_t = ActionArg::Hidden)]
        action: ActionArg,
        /// Frames per second of the videos, in (0, 60].
        #[arg(long, default_value_t = 10.0)]
        fps: f64,
        /// Width and height of the square videos in pixels.
        #[arg(long, default_value_t = 256)]
        size: u32,
    },
}

fn save_png(frame: &Frame, path: &Path) -> anyhow::Result<()> {
    image::RgbImage::from_raw(frame.width, frame.height, frame.rgb.clone())
        .context("frame size")?
        .save(path)
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn save_gif(frames: &[Frame], fps: f64, path: &Path) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = image::codecs::gif::GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
    enc.set_repeat(image::codecs::gif::Repeat::Infinite)?;
    let delay = image::Delay::from_numer_denom_ms((1000.0 / fps).round() as u32, 1);
    for f in frames {
        let rgba = image::DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(f.width, f.height, f.rgb.clone()).context("frame size")?,
        )
        .to_rgba8();
        enc.encode_frame(image::Frame::from_parts(rgba, 0, 0, delay))?;
    }
    Ok(())
}

pub fn run(cmd: SimCommand) -> anyhow::Result<ExitCode> {
    let arm = default_arm();
    match cmd {
        SimCommand::Render {
            task,
            seed,
            out,
            goal,
            width,
            height,
            keypoints,
        } => {
            let task: Task = task.into();
            let cam = scene::default_camera(width, height);
            let opts = RenderOptions::default();
            let frame = if goal {
                let goal = arm_goal(task, seed, &arm)
                    .map_err(|e| anyhow::anyhow!("planning the hidden action: {e}"))?;
                render(
                    &scene::world_primitives(&goal),
                    &cam,
                    RenderMode::ObjectOnly,
                    &opts,
                )
            } else {
                render(
                    &scene::full_scene(&reset(task, seed), &arm, &READY, true),
                    &cam,
                    RenderMode::Full,
                    &opts,
                )
            };
            let mut frame = frame;
            if let Some(n) = keypoints {
                let view = vision::RgbView::new(frame.width, frame.height, &frame.rgb)?;
                let mask = vision::segment(&view, &segment_params(task))?;
                let kps = vision::farthest_point_sampling(&mask, n)?;
                frame.rgb = vision::draw_keypoints(&view, &kps)?;
                println!("{} object pixels; keypoints:", mask.area());
                for k in &kps {
                    let (x, y) = k.normalized(frame.width, frame.height);
                    println!(
                        "  {}: ({:.1}, {:.1}) px, ({x}, {y}) of 1000",
                        k.id, k.u, k.v
                    );
                }
            }
            save_png(&frame, &out)?;
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        SimCommand::Episode {
            task,
            seed,
            video,
            arm_video,
            object_video,
            action,
            fps,
            size,
        } => {
            anyhow::ensure!(fps > 0.0 && fps <= 60.0, "--fps must be in (0, 60]");
            for p in std::iter::once(&video)
                .chain(&arm_video)
                .chain(&object_video)
            {
                let gif = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gif"));
                anyhow::ensure!(
                    gif,
                    "{}: videos are written as GIF; give the file a .gif name",
                    p.display()
                );
            }
            let task: Task = task.into();
            let mut world = reset(task, seed);
            let goal = arm_goal(task, seed, &arm)
                .map_err(|e| anyhow::anyhow!("planning the hidden action: {e}"))?;
            let act = match action {
                ActionArg::Hidden => hidden_action(task, seed),
                ActionArg::Random => {
                    sample_random_action(&world, &mut dreamplan::sim::rng::Rng::new(seed, 0x5eed))
                }
            };
            let cam = scene::default_camera(size, size);
            let opts = RenderOptions::default();
            let (mut full, mut arm_only, mut object_only) = (Vec::new(), Vec::new(), Vec::new());
            let params = ArmExecParams {
                fps,
                ..Default::default()
            };
            let exec = arm_pick_place(&mut world, &arm, &act, &params, |_, w, q, closed| {
                let prims = scene::full_scene(w, &arm, q, !closed);
                full.push(render(&prims, &cam, RenderMode::Full, &opts));
                if arm_video.is_some() {
                    arm_only.push(render(&prims, &cam, RenderMode::ArmOnWhite, &opts));
                }
                if object_video.is_some() {
                    object_only.push(render(&prims, &cam, RenderMode::ObjectOnly, &opts));
                }
            })
            .map_err(|e| {
                anyhow::anyhow!(
                    "no arm motion for pick {:?} place {:?}: {e}",
                    act.pick,
                    act.place
                )
            })?;
            let (distance, score) = score(task, &world, &goal);
            save_gif(&full, fps, &video)?;
            if let Some(p) = &arm_video {
                save_gif(&arm_only, fps, p)?;
            }
            if let Some(p) = &object_video {
                save_gif(&object_only, fps, p)?;
            }
            println!(
                "{task:?} seed {seed}: held {} particles, {:.1} s simulated, distance to goal {:.4} m, score {score}; wrote {} ({} frames)",
                exec.held,
                exec.duration_s,
                distance,
                video.display(),
                full.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
