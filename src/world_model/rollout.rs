//! Candidate actions in the built-in world, as the world model sees them: the current
//! object-only crop, a candidate's arm video from its planned trajectory, and (for
//! measuring the model) the simulated true future crops at the same times.

use super::clip::{crop_resize, ArmVideo};
use super::Config;
use crate::robot::motion::PickPlacePlan;
use crate::sim::episode::{default_arm, execute_plan, ArmExecParams};
use crate::sim::World;
use crate::verifier::object_frame;

/// The object-only view of `world` (`size`² built-in camera) cut to the model's crop.
pub fn object_crop(world: &World, size: u32, cfg: &Config) -> Vec<u8> {
    let f = object_frame(world, size);
    crop_resize(&f.rgb, f.width, f.height, cfg).expect("a rendered frame has its own size")
}

/// Plays `plan` from `world` and returns the final world and the object-only crops at the
/// future frames' times (`cfg.frames` evenly over the motion and `cfg.after_s` after it).
pub fn simulate(
    world: &World,
    plan: &PickPlacePlan,
    size: u32,
    cfg: &Config,
) -> (World, Vec<Vec<u8>>) {
    let span = super::clip::plan_span_s(plan, cfg);
    let params = ArmExecParams {
        settle_s: cfg.after_s,
        fps: cfg.frames as f64 / span.max(1e-6),
        ..Default::default()
    };
    let mut w = world.clone();
    let mut frames = Vec::new();
    execute_plan(&mut w, &default_arm(), plan, &params, |t, now, _, _| {
        if t > 1e-9 && frames.len() < cfg.frames {
            frames.push(object_crop(now, size, cfg));
        }
    });
    while frames.len() < cfg.frames {
        frames.push(object_crop(&w, size, cfg));
    }
    if let Some(last) = frames.last_mut() {
        *last = object_crop(&w, size, cfg);
    }
    (w, frames)
}

/// The motion (arm video and gripper path) of `plan` for images of the built-in `size`²
/// camera.
pub fn motion(plan: &PickPlacePlan, size: u32, cfg: &Config) -> super::clip::Motion {
    ArmVideo::new(
        default_arm(),
        &crate::render::scene::default_camera(size, size),
        cfg,
    )
    .motion_of_plan(plan, cfg)
}
