//! What the planner is asked: the instruction, the current and goal images (overlaid with
//! numbered keypoints), and the keypoints as text with coordinates normalised to 0–1000
//! (Qwen-VL's grounding convention), as one user turn in the HF chat format, rendered by
//! the model's own chat template.
//!
//! **Geometry in the prompt.** After each keypoint's coordinates the prompt says which
//! keypoints of the *other* image are nearest to it and farthest from it (`near N far F`),
//! and how far the nearest is, as a rank among this image's keypoints (`rank R`, 1 = the
//! keypoint farthest from the other image's shape). This is a
//! perception step, generic and physics-blind (the same for any object and any task), that
//! turns the nearest-neighbour search and the comparison of magnitudes, which a small
//! decoder does not learn on a CPU budget (../shared/DESIGN.md, probes), into categories it
//! can select and copy. Which action to take given them is still the planner's to learn:
//! the physics-blind coverage rule reads "place at the goal keypoint of rank 1, pick its
//! `near`"; the best keypoint action of a cloth fold is almost always "pick the current
//! keypoint of rank 1, place at its `far`" (measured with `examples/action_table.rs`, see
//! docs/stage3.md); stage 3 teaches such choices.
//!
//! **Numbered by rank.** Since session 10 every planner is given keypoints numbered by that
//! rank ([`number_by_rank`], applied by `planner::eval::keypoint_pair`): the rules then
//! read "place at goal keypoint 1, pick its `near`" and "pick current keypoint 1, place at
//! its `far`", one copy from a fixed place of the prompt each (the `rank` stays in the text,
//! equal to the number, so a model reading the list needs no other convention).

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

/// What the prompt says about one keypoint relative to the other image's keypoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relation {
    /// Number of the nearest keypoint of the other image (0 when it has none).
    pub near: u32,
    /// Number of the farthest keypoint of the other image (0 when it has none).
    pub far: u32,
    /// Rank of the distance to `near` among this image's keypoints (1 = the largest).
    pub rank: u32,
}

/// [`Relation`] of every keypoint of `own` to `other` (ties: the earlier keypoint of
/// `other` for `near` and `far`, the earlier keypoint of `own` for the rank).
pub fn relations(own: &[Keypoint], other: &[Keypoint]) -> Vec<Relation> {
    let extremes: Vec<((u32, f32), (u32, f32))> = own
        .iter()
        .map(|a| {
            other
                .iter()
                .map(|b| (b.id, (a.u - b.u).hypot(a.v - b.v)))
                .fold(
                    ((0, f32::INFINITY), (0, f32::NEG_INFINITY)),
                    |(lo, hi), x| {
                        (
                            if x.1 < lo.1 { x } else { lo },
                            if x.1 > hi.1 { x } else { hi },
                        )
                    },
                )
        })
        .collect();
    let nearest = |i: usize| {
        let d = extremes[i].0 .1;
        if d.is_finite() {
            d
        } else {
            0.0
        }
    };
    let mut order: Vec<usize> = (0..own.len()).collect();
    order.sort_by(|&i, &j| nearest(j).total_cmp(&nearest(i)).then(i.cmp(&j)));
    let mut rank = vec![0u32; own.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r as u32 + 1;
    }
    extremes
        .iter()
        .zip(rank)
        .map(|((near, far), rank)| Relation {
            near: near.0,
            far: far.0,
            rank,
        })
        .collect()
}

/// Both keypoint sets numbered by [`Relation::rank`]: on each image, keypoint 1 is the one
/// whose nearest keypoint on the other image is farthest away (the part of the shape the
/// other image covers least), keypoint N the one lying closest to the other shape. The
/// positions are farthest-point samples and stay as they are; only the numbers drawn on
/// the images and named in the prompt change.
///
/// Why: the number then carries the comparison itself. The coverage rule becomes "place
/// at goal keypoint 1, pick its `near`" and the best cloth fold "pick current keypoint 1,
/// place at its `far`": one copy from a fixed place in the prompt instead of a search for
/// the keypoint of rank 1 and a copy from wherever it is, which the tiny planner did not
/// learn in its CPU budget (docs/stage3.md). Generic and physics-blind, like the relations.
pub fn number_by_rank(current: &[Keypoint], goal: &[Keypoint]) -> (Vec<Keypoint>, Vec<Keypoint>) {
    let renumber = |own: &[Keypoint], other: &[Keypoint]| {
        let mut out: Vec<Keypoint> = own.to_vec();
        for (k, r) in out.iter_mut().zip(relations(own, other)) {
            k.id = r.rank;
        }
        out.sort_by_key(|k| k.id);
        out
    };
    (renumber(current, goal), renumber(goal, current))
}

/// The keypoints of one image as text: `1 (x, y) near 3 far 6 rank 5, 2 (x, y) near …` in
/// 0–1000 coordinates, with each keypoint's [`Relation`] to `other`.
pub fn keypoint_list(
    keypoints: &[Keypoint],
    other: &[Keypoint],
    width: u32,
    height: u32,
) -> String {
    keypoints
        .iter()
        .zip(relations(keypoints, other))
        .map(|(k, r)| {
            let (x, y) = k.normalized(width, height);
            format!(
                "{} ({x}, {y}) near {} far {} rank {}",
                k.id, r.near, r.far, r.rank
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How the prompt's text ends.
///
/// **Recap** (since session 15): after the instructions, one more line repeats the
/// relations of the two rank-1 keypoints, `Keypoint 1 of each image: current 1 near A far
/// B, goal 1 near C far D.`, so that every one-step lookup of the relations
/// ([`crate::planner::baselines::Rule::SINGLE_LOOKUP`]) is a copy from a few tokens before
/// the answer instead of from far back in the lists. The same facts as the lists, in a
/// fixed place; why it was tried is in docs/stage3.md (session 15). A model folder says
/// which form it was built with (`zero_shot.json` `config.recap`,
/// `crate::planner::vlm_planner::prompt_form`); every other folder gets [`Self::Plain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptForm {
    /// The lists and the instructions only.
    #[default]
    Plain,
    /// The rank-1 keypoints' relations repeated as the last line.
    Recap,
}

/// The recap line of [`PromptForm::Recap`]: the relations of the first-listed keypoint of
/// each image (keypoint 1 when they are numbered by rank), or `None` when an image has no
/// keypoints.
pub fn recap(current: &[Keypoint], goal: &[Keypoint]) -> Option<String> {
    let (c, g) = (current.first()?, goal.first()?);
    let (rc, rg) = (relations(current, goal)[0], relations(goal, current)[0]);
    Some(format!(
        "Keypoint 1 of each image: current {} near {} far {}, goal {} near {} far {}.",
        c.id, rc.near, rc.far, g.id, rg.near, rg.far
    ))
}

/// The user turn's text, after the two images ([`PromptForm::Plain`]).
pub fn user_text(
    task: Task,
    current: &[Keypoint],
    goal: &[Keypoint],
    width: u32,
    height: u32,
) -> String {
    user_text_in(PromptForm::Plain, task, current, goal, width, height)
}

/// The user turn's text in `form`.
pub fn user_text_in(
    form: PromptForm,
    task: Task,
    current: &[Keypoint],
    goal: &[Keypoint],
    width: u32,
    height: u32,
) -> String {
    let mut text = format!(
        "The first image is the current scene, the second the goal. {}\n\
         Keypoints on the current image: {}.\n\
         Keypoints on the goal image: {}.\n\
         After each keypoint: the nearest and the farthest keypoint of the other image, and \
         the rank of the distance to the nearest one (1 = the largest).\n\
         Choose one pick-and-place: the current keypoint to grasp and the goal keypoint where \
         it must go. Answer with one line: pick <current keypoint> place <goal keypoint>",
        instruction(task),
        keypoint_list(current, goal, width, height),
        keypoint_list(goal, current, width, height),
    );
    if form == PromptForm::Recap {
        if let Some(line) = recap(current, goal) {
            text.push('\n');
            text.push_str(&line);
        }
    }
    text
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
    messages_in(PromptForm::Plain, task, current, goal, width, height)
}

/// [`messages`] with the text in `form`.
pub fn messages_in(
    form: PromptForm,
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
            {"type": "text", "text": user_text_in(form, task, current, goal, width, height)},
        ],
    }])
}
