//! Dumps observed scenes as JSON lines, for `scripts/zero_shot_probe.py`: per scene the
//! task index (0 rope, 1 cloth, 2 toy), the seed, both keypoint lists as `[id, x, y]` in
//! the prompt's 0–1000 coordinates, and each rule's answer as computed by
//! `planner::baselines::Rule` on the keypoints' pixel positions (`answers`: `{"coverage":
//! [pick, place], "assignment": [pick, place]}`), so the probe learns exactly the labels
//! `pretrain-zero-shot` teaches. Scenes are observed exactly as the evaluation and
//! `pretrain-zero-shot` observe them (256² images, 8 keypoints).
//!
//! `cargo run --release --example dump_scenes -- FIRST_SEED COUNT_PER_TASK > scenes.jsonl`

use dreamplan::planner::baselines::Rule;
use dreamplan::sim::tasks::Task;
use dreamplan::train::zero_shot::observe_scene;
use serde_json::json;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("FIRST_SEED and COUNT_PER_TASK are integers")
        })
        .collect();
    let [first, count] = args[..] else {
        eprintln!("usage: dump_scenes FIRST_SEED COUNT_PER_TASK > scenes.jsonl");
        std::process::exit(2);
    };
    for (index, task) in [Task::Rope, Task::Cloth, Task::Toy].into_iter().enumerate() {
        let mut found = 0;
        for seed in first..first + count {
            let Some(scene) = observe_scene(task, seed, 8, 256) else {
                continue;
            };
            let (w, h) = (scene.current.width as u32, scene.current.height as u32);
            let list = |kps: &[dreamplan::vision::Keypoint]| -> Vec<[u32; 3]> {
                kps.iter()
                    .map(|k| {
                        let (x, y) = k.normalized(w, h);
                        [k.id, x, y]
                    })
                    .collect()
            };
            let (cur, goal) = (&scene.current_keypoints, &scene.goal_keypoints);
            let answer = |rule: Rule| {
                let c = rule.choice(cur, goal).expect("both lists are non-empty");
                [c.pick, c.place]
            };
            println!(
                "{}",
                json!({"task": index, "seed": seed, "cur": list(cur), "goal": list(goal),
                       "answers": {"coverage": answer(Rule::Coverage),
                                   "assignment": answer(Rule::Assignment)}})
            );
            found += 1;
        }
        eprintln!("{task:?}: {found} of {count} scenes");
    }
}
