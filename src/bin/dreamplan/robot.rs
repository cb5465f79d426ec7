//! `dreamplan robot fk`: where a link of a URDF arm is for given joint positions.

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
}

pub fn run(cmd: RobotCommand) -> anyhow::Result<ExitCode> {
    match cmd {
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
