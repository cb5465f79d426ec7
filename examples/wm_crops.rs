//! Writes `docs/world_model_crops.png`: for each task (seed 0), the object-only crop at the
//! CPU preset's resolution (128×64, shown ×3) before and after the hidden good action, and
//! the arm video's last frame for that action.
//! `cargo run --release --example wm_crops`
use dreamplan::planner::eval::{observe, EvalConfig};
use dreamplan::sim::tasks::Task;
use dreamplan::world_model::{rollout, Config};

fn main() {
    let cfg = Config::cpu();
    let (w, h, s) = (cfg.width, cfg.height, 3usize);
    let ec = EvalConfig::default();
    let mut rows: Vec<Vec<Vec<u8>>> = Vec::new();
    for task in Task::ALL {
        let obs = observe(task, 0, &ec);
        let now = rollout::object_crop(&obs.world, ec.size, &cfg);
        let goal = rollout::object_crop(&obs.goal, ec.size, &cfg);
        let action = dreamplan::sim::tasks::hidden_action(task, 0);
        let plan = dreamplan::robot::motion::plan_pick_place(
            &dreamplan::sim::episode::default_arm(),
            &dreamplan::sim::episode::READY,
            &action.pick,
            &action.place,
            &Default::default(),
        )
        .expect("the hidden action plans");
        let arm = rollout::motion(&plan, ec.size, &cfg).arm;
        rows.push(vec![now, goal, arm[arm.len() / 2].clone()]);
    }
    let (cols, gap) = (3usize, 4usize);
    let (ow, oh) = (cols * (w * s + gap), rows.len() * (h * s + gap));
    let mut img = image::RgbImage::from_pixel(ow as u32, oh as u32, image::Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        for (c, f) in row.iter().enumerate() {
            for y in 0..h * s {
                for x in 0..w * s {
                    let i = ((y / s) * w + x / s) * 3;
                    img.put_pixel(
                        (c * (w * s + gap) + x) as u32,
                        (r * (h * s + gap) + y) as u32,
                        image::Rgb([f[i], f[i + 1], f[i + 2]]),
                    );
                }
            }
        }
    }
    img.save("docs/world_model_crops.png").unwrap();
    println!("wrote docs/world_model_crops.png (rows rope, cloth, toy; columns now, goal, arm video mid-motion)");
}
