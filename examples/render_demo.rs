//! Renders each task's initial state and goal (seed from argv, default 3) to PNG so a
//! person can look at them: `cargo run --release --example render_demo -- OUT_DIR [SEED]`.
use dreamplan::render::{render, scene, PinholeCamera, RenderMode, RenderOptions};
use dreamplan::sim::tasks::{goal_for, reset, Task};
use nalgebra::{Point3, Vector3};

fn main() {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().unwrap_or_else(|| "target/render_demo".into()));
    let seed: u64 = args.next().map(|s| s.parse().expect("seed")).unwrap_or(3);
    std::fs::create_dir_all(&out).unwrap();
    let cam = PinholeCamera::look_at(
        256,
        256,
        50.0,
        Point3::new(1.15, 0.0, 0.70),
        Point3::new(0.55, 0.0, 0.0),
        Vector3::z(),
    );
    for task in [Task::Rope, Task::Cloth, Task::Toy] {
        for (label, world) in [("start", reset(task, seed)), ("goal", goal_for(task, seed))] {
            let t = std::time::Instant::now();
            let f = render(
                &scene::world_primitives(&world),
                &cam,
                RenderMode::Full,
                &RenderOptions::default(),
            );
            eprintln!(
                "{task:?} {label}: {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
            let name = format!("{task:?}_{label}.png").to_lowercase();
            image::RgbImage::from_raw(f.width, f.height, f.rgb)
                .unwrap()
                .save(out.join(name))
                .unwrap();
        }
    }
}
