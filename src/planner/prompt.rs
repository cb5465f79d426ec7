//! What the planner is asked: the instruction, the current and goal images (overlaid with
//! numbered keypoints), and the keypoints as text with coordinates normalised to 0–1000
//! (Qwen-VL's grounding convention), as one user turn in the HF chat format, rendered by
//! the model's own chat template.

use serde_json::{json, Value};

use crate::sim::tasks::Task;
use crate::vision::Keypoint;

/// The task instruction, as the paper phrases its three tasks.
pub fn instruction(task: Task) -> &'static str {
    match task {
        Task::Rope => "Straighten the rope so that it matches the goal image.",
        Task::Cloth => "Fold the cloth so that it matches the goal image.",
        Task::Toy => "Move the plush toy's limb so that the toy matches the goal image.",
    }
}

/// The keypoints of one image as text: `1 (x, y), 2 (x, y), …` in 0–1000 coordinates.
pub fn keypoint_list(keypoints: &[Keypoint], width: u32, height: u32) -> String {
    keypoints
        .iter()
        .map(|k| {
            let (x, y) = k.normalized(width, height);
            format!("{} ({x}, {y})", k.id)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The user turn's text, after the two images.
pub fn user_text(
    task: Task,
    current: &[Keypoint],
    goal: &[Keypoint],
    width: u32,
    height: u32,
) -> String {
    format!(
        "The first image is the current scene, the second the goal. {}\n\
         Keypoints on the current image: {}.\n\
         Keypoints on the goal image: {}.\n\
         Choose one pick-and-place: the current keypoint to grasp and the goal keypoint where \
         it must go. Answer with one line: pick <current keypoint> place <goal keypoint>",
        instruction(task),
        keypoint_list(current, width, height),
        keypoint_list(goal, width, height),
    )
}

/// The conversation in the HF chat format: one user turn with the current image, the goal
/// image and [`user_text`]. The images are placeholders; the processor puts the pixels in.
pub fn messages(
    task: Task,
    current: &[Keypoint],
    goal: &[Keypoint],
    width: u32,
    height: u32,
) -> Value {
    json!([{
        "role": "user",
        "content": [
            {"type": "image"},
            {"type": "image"},
            {"type": "text", "text": user_text(task, current, goal, width, height)},
        ],
    }])
}
