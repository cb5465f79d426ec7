//! Imagining candidate actions: each pick-and-place (pixels on the current and goal images)
//! is planned as the executor would plan it, its arm motion rendered, and all of them
//! predicted in one batch from the current object-only frame; each predicted final frame is
//! scored against the goal with the stage-3 mask measure. This is what the world-model
//! verifier and the verifier node run.

use super::clip::{crop_resize, ArmVideo, Motion};
use super::{metrics, Predictor, WorldModelError};
use crate::planner::eval::plan_pixels_through;
use crate::render::Frame;
use crate::sim::tasks::Task;
use crate::verifier::measure::mask_score;

/// One imagined outcome.
#[derive(Debug, Clone)]
pub struct Imagined {
    /// The mask measure's value of the predicted final frame against the goal (0–1).
    pub score: f64,
    /// The predicted final object-only frame (rgb8 at the model's resolution).
    pub final_frame: Vec<u8>,
}

/// What a pick-and-place is given as: pixels on the current image, pixels on the goal image.
pub type PixelAction = ((f32, f32), (f32, f32));

/// The goal's object mask as the measure sees it: `goal` cut to the model's crop and size,
/// segmented for `task`. Empty where the crop misses the object or the object is too thin
/// for the model's size; then every outcome scores 0.
pub fn goal_mask(
    cfg: &super::Config,
    task: Task,
    goal: &Frame,
) -> Result<crate::vision::Mask, WorldModelError> {
    let crop = crop_resize(&goal.rgb, goal.width, goal.height, cfg)?;
    metrics::mask_of(task, &crop, cfg.width, cfg.height)
}

/// Imagines every action in `actions` from the state: `object_now` (the current object-only
/// image), `current` and `goal` (camera images with depth, as the executor plans from).
/// An action the executor would refuse gets `None`.
pub fn imagine(
    predictor: &Predictor,
    task: Task,
    object_now: &Frame,
    current: &Frame,
    goal: &Frame,
    actions: &[PixelAction],
    seed: u64,
) -> Result<Vec<Option<Imagined>>, WorldModelError> {
    let cfg = predictor.config();
    if (current.width, current.height) != (goal.width, goal.height) {
        return Err(WorldModelError::Data(format!(
            "current ({}×{}) and goal ({}×{}) images must be of one size",
            current.width, current.height, goal.width, goal.height
        )));
    }
    let context = crop_resize(&object_now.rgb, object_now.width, object_now.height, cfg)?;
    let (w, h) = (cfg.width, cfg.height);
    let goal_mask = goal_mask(cfg, task, goal)?;
    // The model's camera (a real arm's, from its config) or the built-in one: actions are
    // planned through it as the executor would, and the arm drawn through it as in the
    // clips the model learned from.
    let camera = cfg.camera_model(current.width, current.height);
    let arm = crate::robot::franka::default_arm();
    let video = ArmVideo::new(arm.clone(), &camera, cfg);
    let plans: Vec<Option<Motion>> = actions
        .iter()
        .map(|(s, t)| {
            plan_pixels_through(&camera, current, goal, *s, *t, &arm)
                .ok()
                .map(|p| video.motion_of_plan(&p, cfg))
        })
        .collect();
    let motions: Vec<Motion> = plans.iter().flatten().cloned().collect();
    let mut predicted = predictor
        .predict_for(task, &context, &motions, seed)?
        .into_iter();
    plans
        .iter()
        .map(|p| {
            let Some(_) = p else { return Ok(None) };
            let frames = predicted.next().expect("one prediction per planned action");
            let last = frames.last().cloned().unwrap_or_default();
            let score = mask_score(&metrics::mask_of(task, &last, w, h)?, &goal_mask)
                .map_err(|e| WorldModelError::Data(e.to_string()))?
                .value;
            Ok(Some(Imagined {
                score,
                final_frame: last,
            }))
        })
        .collect()
}
