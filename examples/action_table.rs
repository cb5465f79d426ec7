//! Every keypoint action of observed scenes played in the simulator, as JSON lines: per
//! scene the task index (0 rope, 1 cloth, 2 toy), the seed, both keypoint lists as
//! `[id, x, y]` (0–1000 coordinates), and `scores[i][j]` = the evaluation's 0/0.5/1 score
//! and `dist[i][j]` = the distance to the goal (m) of `pick i+1 place j+1`. What the
//! keypoint oracle chooses from; used to ask which generic, physics-blind features of the
//! two keypoint sets single out the good actions (docs/stage3.md).
//!
//! `cargo run --release --example action_table -- FIRST_SEED COUNT_PER_TASK THREADS [TASKS] > t.jsonl`
//! (TASKS: a comma list such as `toy` or `rope,toy`; all three by default).

use dreamplan::planner::eval::{observe, EvalConfig};
use dreamplan::sim::tasks::Task;
use dreamplan::verifier::{all_choices, SimVerifier, VerifyState};
use serde_json::json;

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let wanted = raw
        .get(3)
        .cloned()
        .unwrap_or_else(|| "rope,cloth,toy".into());
    let args: Vec<u64> = raw
        .iter()
        .take(3)
        .map(|a| a.parse().expect("the first three arguments are integers"))
        .collect();
    let [first, count, threads] = args[..] else {
        eprintln!("usage: action_table FIRST_SEED COUNT_PER_TASK THREADS [TASKS] > table.jsonl");
        std::process::exit(2);
    };
    let jobs: Vec<(usize, Task, u64)> = [Task::Rope, Task::Cloth, Task::Toy]
        .into_iter()
        .enumerate()
        .filter(|(_, t)| {
            wanted
                .split(',')
                .any(|w| w == format!("{t:?}").to_lowercase())
        })
        .flat_map(|(i, t)| (first..first + count).map(move |s| (i, t, s)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(index, task, seed)) = jobs.get(k) else {
                    break;
                };
                let cfg = EvalConfig::default();
                let obs = observe(task, seed, &cfg);
                let Ok((kc, kg)) = &obs.keypoints else {
                    continue;
                };
                let state = VerifyState::of_observation(task, &obs, kc, kg);
                let v = SimVerifier::default();
                let choices = all_choices(kc, kg);
                let (mut scores, mut dist) = (
                    vec![vec![0.0; kg.len()]; kc.len()],
                    vec![vec![0.0; kg.len()]; kc.len()],
                );
                for c in &choices {
                    let (_, d, sc) = v.outcome(&state, c).expect("simulated state");
                    scores[c.pick as usize - 1][c.place as usize - 1] = sc;
                    dist[c.pick as usize - 1][c.place as usize - 1] = d;
                }
                let list = |kps: &[dreamplan::vision::Keypoint]| -> Vec<[u32; 3]> {
                    kps.iter()
                        .map(|k| {
                            let (x, y) = k.normalized(cfg.size, cfg.size);
                            [k.id, x, y]
                        })
                        .collect()
                };
                let line = json!({"task": index, "seed": seed, "cur": list(kc), "goal": list(kg),
                                  "scores": scores, "dist": dist});
                use std::io::Write;
                let mut o = out.lock().expect("stdout");
                writeln!(o, "{line}").expect("stdout");
                eprintln!("{task:?} {seed}");
            });
        }
    });
}
