//! Renders a test scene (a wavy rope, a cloth patch and two arm links on the table) to PNG:
//! `cargo run --release --example render_demo -- out_dir`.
use dreamplan::render::*;
use nalgebra::{Point3, Vector3};

fn main() {
    let out = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/render_demo".into()),
    );
    std::fs::create_dir_all(&out).unwrap();
    let cam = PinholeCamera::look_at(
        256,
        256,
        55.0,
        Point3::new(0.55, -0.55, 0.75),
        Point3::new(0.55, 0.0, 0.0),
        Vector3::z(),
    );
    let mut prims = table((0.2, 0.9), (-0.45, 0.45), 0.0, [0.55, 0.45, 0.33]);
    let rope: Vec<Point3<f64>> = (0..40)
        .map(|i| {
            let s = i as f64 / 39.0;
            Point3::new(0.35 + 0.4 * s, 0.12 * (s * 9.0).sin() - 0.1, 0.008)
        })
        .collect();
    for w in rope.windows(2) {
        prims.push(Primitive {
            shape: Shape::Capsule {
                a: w[0],
                b: w[1],
                radius: 0.008,
            },
            color: [0.8, 0.1, 0.1],
            layer: Layer::Object,
        });
    }
    let n = 12;
    let p = |i: usize, j: usize| {
        Point3::new(
            0.45 + 0.02 * i as f64,
            0.1 + 0.02 * j as f64,
            0.002 + 0.01 * (i as f64 * 0.5).sin().abs(),
        )
    };
    for i in 0..n - 1 {
        for j in 0..n - 1 {
            for tri in [
                [p(i, j), p(i + 1, j), p(i + 1, j + 1)],
                [p(i, j), p(i + 1, j + 1), p(i, j + 1)],
            ] {
                prims.push(Primitive {
                    shape: Shape::Triangle { corners: tri },
                    color: [0.2, 0.4, 0.85],
                    layer: Layer::Object,
                });
            }
        }
    }
    for (a, b) in [
        (Point3::new(0.0, 0.0, 0.0), Point3::new(0.0, 0.0, 0.33)),
        (Point3::new(0.0, 0.0, 0.33), Point3::new(0.4, 0.05, 0.25)),
        (Point3::new(0.4, 0.05, 0.25), Point3::new(0.5, 0.05, 0.05)),
    ] {
        prims.push(Primitive {
            shape: Shape::Capsule { a, b, radius: 0.04 },
            color: [0.92, 0.92, 0.92],
            layer: Layer::Arm,
        });
    }
    for (mode, name) in [
        (RenderMode::Full, "full"),
        (RenderMode::ArmOnWhite, "arm"),
        (RenderMode::ObjectOnly, "object"),
    ] {
        let t = std::time::Instant::now();
        let f = render(&prims, &cam, mode, &RenderOptions::default());
        eprintln!("{name}: {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
        image::RgbImage::from_raw(f.width, f.height, f.rgb)
            .unwrap()
            .save(out.join(format!("{name}.png")))
            .unwrap();
    }
}
