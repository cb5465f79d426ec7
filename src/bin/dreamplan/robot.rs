//! `dreamplan robot fk`: where a link of a URDF arm is for given joint positions.
//! `dreamplan robot envelope`: the executor's safety envelope under many adversarial
//! actions (`dreamplan::nodes::envelope_audit`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Subcommand;

use dreamplan::robot::ArmModel;

#[derive(Subcommand)]
pub enum RobotCommand {
    /// Forward kinematics: a link's pose in the URDF root frame.
    Fk {
        /// URDF file.
        #[arg(long)]
        urdf: PathBuf,
        /// Link whose pose to print.
        #[arg(long)]
        link: String,
        /// Positions (rad or m) of the movable joints from the root to the link, in chain
        /// order, comma separated.
        #[arg(long, allow_hyphen_values = true)]
        joints: String,
    },
    /// The executor's safety envelope under load: adversarial actions (random, edge of the
    /// image, NaN/inf pixels, depth holes and junk, unreachable points; both out-of-bounds
    /// policies) on all three built-in tasks from several start poses, each through the
    /// executor's real decision, and every trajectory it would publish audited
    /// independently. Exits 1 on any violation.
    Envelope {
        /// Actions in all.
        #[arg(long, default_value_t = 1_000_000)]
        actions: u64,
        /// The executor's parameters: a ROS params file such as config/ros/executor.yaml,
        /// or the parameters alone (as a graph config's `executor` node takes them); the
        /// built-in defaults when absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Scene seeds per task.
        #[arg(long, default_value_t = 4)]
        scenes: u64,
        /// Start poses (the ready pose and random ones around it).
        #[arg(long, default_value_t = 4)]
        starts: usize,
        /// Seed of scenes, actions and damage.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

pub fn run(cmd: RobotCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RobotCommand::Envelope {
            actions,
            config,
            scenes,
            starts,
            seed,
            threads,
            json,
        } => {
            use dreamplan::nodes::envelope_audit::{run_audit, AuditOptions};
            use dreamplan::nodes::executor::ExecutorConfig;
            let cfg: ExecutorConfig = match &config {
                Some(path) => dreamplan::config::node_config_file(path, "executor")
                    .with_context(|| format!("{}: not executor parameters", path.display()))?,
                None => ExecutorConfig::default(),
            };
            anyhow::ensure!(actions > 0, "--actions must be at least 1");
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let bar = crate::progress::PhaseProgress::stderr();
            let every = (actions / 20).max(1);
            let shown_step = std::sync::atomic::AtomicU64::new(u64::MAX);
            let t0 = std::time::Instant::now();
            let report = run_audit(
                &cfg,
                &AuditOptions {
                    actions,
                    scenes,
                    starts,
                    seed,
                    threads,
                },
                &|done| {
                    // Whole 5% steps, so that logs get a line per step.
                    let shown = if done == actions {
                        done
                    } else {
                        done / every * every
                    };
                    if shown_step.swap(shown, std::sync::atomic::Ordering::Relaxed) != shown {
                        bar.update("actions", shown as usize, actions as usize, "");
                    }
                },
            );
            bar.finish();
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "{} actions in {secs:.0} s ({:.0}/s, {threads} threads)",
                report.actions,
                report.actions as f64 / secs
            );
            for (k, v) in &report.outcomes {
                println!("  {k:<18} {v:>9}");
            }
            println!("violations: {}", report.violations);
            for e in &report.examples {
                println!("  {e}");
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(if report.violations == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        RobotCommand::Fk { urdf, link, joints } => {
            let robot = urdf_rs::read_file(&urdf)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("reading URDF {}", urdf.display()))?;
            let root = ArmModel::root_link(&robot)?;
            let model = ArmModel::from_robot(&robot, &root, &link)
                .with_context(|| format!("{}", urdf.display()))?;
            let q = parse_joints(&joints)?;
            if q.len() != model.dof() {
                let names = model.joint_names().join(", ");
                bail!(
                    "--joints has {} values, but `{link}` is moved by {} joints ({names})",
                    q.len(),
                    model.dof()
                );
            }
            let root_from_link = model.fk(&q);
            let t = root_from_link.translation.vector;
            let r = root_from_link.rotation;
            println!("frame: {root}");
            println!("xyz: {:.9} {:.9} {:.9}", t.x, t.y, t.z);
            println!("quat_xyzw: {:.9} {:.9} {:.9} {:.9}", r.i, r.j, r.k, r.w);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `"0, -0.78,1"` → [0, -0.78, 1]; empty → []. Names the offending value.
fn parse_joints(text: &str) -> anyhow::Result<Vec<f64>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .enumerate()
        .map(|(i, s)| {
            let v: f64 = s.trim().parse().with_context(|| {
                format!("--joints value {} `{}` is not a number", i + 1, s.trim())
            })?;
            anyhow::ensure!(
                v.is_finite(),
                "--joints value {} `{}` is not finite",
                i + 1,
                s.trim()
            );
            Ok(v)
        })
        .collect()
}
