//! How far objects keep moving after the gripper lets go (session 39).
//!
//! Plays every current keypoint of each state as a pick (placed on a goal keypoint) with
//! the arm, lets the world settle for 3 s after the release, and counts the actions whose
//! object's centroid still moves more than 1 cm (and 5 cm) between 1 s after the release
//! and the end, and those still awake (some particle faster than the sleep speed).
//! Nothing pushes an object after the release, so any such drift is the solver's.
//!
//! ```sh
//! cargo run --release --example settle_drift -- toy 5000000 60 [iterations]
//! ```
use dreamplan::planner::eval::{observe, plan_pixels, EvalConfig};
use dreamplan::sim::episode::{execute_plan, ArmExecParams};
use dreamplan::sim::tasks::Task;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: settle_drift TASK FIRST_SEED STATES [ITERATIONS]");
        std::process::exit(2);
    }
    let task = Task::from_name(&args[1]).expect("task: rope, cloth or toy");
    let first: u64 = args[2].parse().expect("FIRST_SEED: an integer");
    let states: u64 = args[3].parse().expect("STATES: an integer");
    let iterations: Option<usize> = args.get(4).map(|x| x.parse().expect("ITERATIONS"));
    let ec = EvalConfig::default();
    let arm = dreamplan::robot::franka::default_arm();
    let (mut total, mut awake, mut over_1cm, mut over_5cm) = (0, 0, 0, 0);
    for seed in first..first + states {
        let obs = observe(task, seed, &ec);
        let Ok((cur, goal)) = obs.keypoints.as_ref() else {
            continue;
        };
        for k in cur {
            let g = &goal[k.id as usize % goal.len()];
            let Ok(plan) = plan_pixels(&obs.current, &obs.goal_frame, (k.u, k.v), (g.u, g.v), &ec)
            else {
                continue;
            };
            let mut world = obs.world.clone();
            if let Some(n) = iterations {
                let mut p = world.params().clone();
                p.iterations = n;
                world.set_params(p);
            }
            let params = ArmExecParams {
                fps: 20.0,
                settle_s: 3.0,
                ..Default::default()
            };
            let settled_from = plan.release_time_s + 1.0;
            let (mut at_settle, mut last) = (None, None);
            execute_plan(&mut world, &arm, &plan, &params, |t, w, _, _| {
                let p = w.positions();
                let n = p.len() as f64;
                let c = p
                    .iter()
                    .fold([0.0; 2], |a, q| [a[0] + q.x / n, a[1] + q.y / n]);
                if at_settle.is_none() && t >= settled_from {
                    at_settle = Some(c);
                }
                last = Some(c);
            });
            total += 1;
            awake += usize::from(!world.asleep());
            if let (Some(s), Some(l)) = (at_settle, last) {
                let d = (s[0] - l[0]).hypot(s[1] - l[1]);
                over_1cm += usize::from(d > 0.01);
                if d > 0.05 {
                    over_5cm += 1;
                    println!("seed {seed}, keypoint {}: drifted {:.3} m", k.id, d);
                }
            }
        }
    }
    println!(
        "{}: {total} actions; {awake} still awake 3 s after the release; {over_1cm} drift more \
         than 1 cm from 1 s after the release on, {over_5cm} more than 5 cm",
        task.name()
    );
}
