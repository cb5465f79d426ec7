//! The camera model and renderer: projection round trips, metric depth, masks, determinism.

use dreamplan::render::*;
use nalgebra::{Point3, Vector3};

fn camera() -> PinholeCamera {
    PinholeCamera::look_at(
        128,
        96,
        60.0,
        Point3::new(0.5, 0.0, 1.0),
        Point3::new(0.5, 0.0, 0.0),
        Vector3::y(),
    )
}

#[test]
fn project_and_unproject_round_trip() {
    let cam = camera();
    for p in [
        Point3::new(0.5, 0.0, 0.0),
        Point3::new(0.6, -0.1, 0.05),
        Point3::new(0.3, 0.2, 0.2),
    ] {
        let (u, v, z) = cam.project(&p).unwrap();
        let back = cam.unproject(u, v, z);
        assert!((back - p).norm() < 1e-12, "{p} -> {back}");
    }
    // Looking straight down from 1 m: the target is at the principal point, 1 m deep.
    let (u, v, z) = cam.project(&Point3::new(0.5, 0.0, 0.0)).unwrap();
    assert!((u - 64.0).abs() < 1e-9 && (v - 48.0).abs() < 1e-9 && (z - 1.0).abs() < 1e-12);
    assert!(
        cam.project(&Point3::new(0.5, 0.0, 2.0)).is_none(),
        "behind the camera"
    );
}

#[test]
fn depth_is_metric_and_masks_select_layers() {
    let cam = camera();
    let mut prims = table((0.0, 1.0), (-0.5, 0.5), 0.0, [0.5, 0.5, 0.5]);
    prims.push(Primitive {
        shape: Shape::Sphere {
            center: Point3::new(0.5, 0.0, 0.1),
            radius: 0.05,
        },
        color: [1.0, 0.0, 0.0],
        layer: Layer::Object,
    });
    prims.push(Primitive {
        shape: Shape::Capsule {
            a: Point3::new(0.2, 0.2, 0.3),
            b: Point3::new(0.3, 0.2, 0.3),
            radius: 0.02,
        },
        color: [0.0, 1.0, 0.0],
        layer: Layer::Arm,
    });
    let full = render(&prims, &cam, RenderMode::Full, &RenderOptions::default());
    let centre = (48 * 128 + 64) as usize;
    // Sphere top at z = 0.15 seen from z = 1: depth 0.85 m.
    assert!(
        (full.depth[centre] - 0.85).abs() < 2e-3,
        "{}",
        full.depth[centre]
    );
    assert!(
        full.rgb[centre * 3] > 150 && full.rgb[centre * 3 + 1] < 40,
        "sphere is red"
    );
    // A table pixel away from the centre: the camera looks straight down from 1 m, so the
    // table's depth along the optical axis is 1 m everywhere (not the ray length).
    let off = (20 * 128 + 20) as usize;
    assert!((full.depth[off] - 1.0).abs() < 1e-6, "{}", full.depth[off]);
    let (_, d) = cam.ray(20.5, 20.5);
    assert!(
        1.0 / d.dot(&-Vector3::z()) > 1.05,
        "the ray length differs from the depth there"
    );
    // Outside the table nothing is hit.
    assert_eq!(full.depth[0], f32::INFINITY);

    let arm = render(
        &prims,
        &cam,
        RenderMode::ArmOnWhite,
        &RenderOptions::default(),
    );
    assert_eq!(
        &arm.rgb[centre * 3..centre * 3 + 3],
        &[255, 255, 255],
        "no object in the arm-only video"
    );
    assert!(
        arm.rgb.chunks(3).any(|p| p[1] > 100 && p[0] < 50),
        "the arm is drawn"
    );
    let obj = render(
        &prims,
        &cam,
        RenderMode::ObjectOnly,
        &RenderOptions::default(),
    );
    assert!(
        !obj.rgb
            .chunks(3)
            .any(|p| p[1] > 100 && p[0] < 50 && p[2] < 50),
        "no arm in object-only frames"
    );
    assert_eq!(
        &obj.rgb[centre * 3..centre * 3 + 3],
        &full.rgb[centre * 3..centre * 3 + 3]
    );
}

#[test]
fn edges_are_anti_aliased_and_rendering_is_deterministic() {
    let cam = camera();
    let prims = vec![Primitive {
        shape: Shape::Sphere {
            center: Point3::new(0.5, 0.0, 0.0),
            radius: 0.2,
        },
        color: [1.0, 1.0, 1.0],
        layer: Layer::Object,
    }];
    let a = render(
        &prims,
        &cam,
        RenderMode::Full,
        &RenderOptions {
            supersample: 3,
            ..Default::default()
        },
    );
    let b = render(
        &prims,
        &cam,
        RenderMode::Full,
        &RenderOptions {
            supersample: 3,
            ..Default::default()
        },
    );
    assert_eq!(a, b);
    let hard = render(
        &prims,
        &cam,
        RenderMode::Full,
        &RenderOptions {
            supersample: 1,
            ..Default::default()
        },
    );
    let distinct = |f: &Frame| {
        f.rgb
            .chunks(3)
            .map(|p| p[0])
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert!(
        distinct(&a) > distinct(&hard),
        "supersampling blends edge pixels"
    );
}

/// Every point objects and actions can use (the task region plus 2 cm) is in the built-in
/// camera's view with room to spare, so no action on the table is ever off the image.
#[test]
fn the_built_in_camera_sees_the_whole_work_area() {
    use dreamplan::sim::tasks::{TABLE_X, TABLE_Y};
    let cam = dreamplan::render::scene::default_camera(256, 256);
    for x in [TABLE_X.0 - 0.02, TABLE_X.1 + 0.02] {
        for y in [TABLE_Y.0 - 0.02, TABLE_Y.1 + 0.02] {
            for z in [0.0, 0.05] {
                let (u, v, _) = cam.project(&nalgebra::Point3::new(x, y, z)).unwrap();
                assert!(
                    (4.0..252.0).contains(&u) && (4.0..252.0).contains(&v),
                    "({x}, {y}, {z}) at pixel ({u:.1}, {v:.1})"
                );
            }
        }
    }
}

/// The per-thread cache of sample rays and table hits (`render_modes`) gives frames
/// bit-identical to casting everything anew, frame after frame of one scene and when the
/// camera, the supersampling, the light or the table change between calls on one thread.
#[test]
fn cached_rays_and_table_render_exactly_what_casting_everything_does() {
    use dreamplan::sim::episode::{default_arm, READY};
    use dreamplan::sim::tasks::{reset, Task};
    let arm = default_arm();
    let modes = [
        RenderMode::Full,
        RenderMode::ObjectOnly,
        RenderMode::ArmOnWhite,
    ];
    let big = scene::default_camera(96, 96);
    let small = big.resized(64, 64);
    let dim = RenderOptions {
        light: Vector3::new(-0.2, 0.5, 1.0),
        ambient: 0.5,
        ..Default::default()
    };
    let mut q = READY.to_vec();
    let mut frames = 0;
    for (k, task) in [Task::Rope, Task::Cloth, Task::Toy].into_iter().enumerate() {
        let mut world = reset(task, 40 + k as u64);
        for step in 0..4 {
            q[0] += 0.05;
            q[3] -= 0.03;
            if step > 0 {
                for _ in 0..20 {
                    world.step(1.0 / 240.0);
                }
            }
            let mut prims = scene::full_scene(&world, &arm, &q, step % 2 == 0);
            if step == 3 {
                // Another table: the cache must not serve the old one's hits.
                prims[0].color = [0.9, 0.1, 0.1];
                if let Shape::Triangle { corners } = &mut prims[1].shape {
                    corners[2].z += 0.01;
                }
            }
            // Begins and ends with the same camera and options, so that step 3's first frame
            // differs from the frame before it by the table alone.
            for (cam, opts) in [
                (&big, RenderOptions::default()),
                (&small, RenderOptions::default()),
                (
                    &big,
                    RenderOptions {
                        supersample: 3,
                        ..Default::default()
                    },
                ),
                (&big, dim),
                (&big, RenderOptions::default()),
            ] {
                let cached = render_modes(&prims, cam, &modes, &opts);
                let reference = render_modes_uncached(&prims, cam, &modes, &opts);
                for (m, (a, b)) in modes.iter().zip(cached.iter().zip(&reference)) {
                    assert_eq!(a.rgb, b.rgb, "{task:?} step {step} {m:?}: colours differ");
                    let bits = |f: &Frame| f.depth.iter().map(|d| d.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(a),
                        bits(b),
                        "{task:?} step {step} {m:?}: depths differ"
                    );
                }
                frames += 1;
            }
        }
    }
    assert_eq!(frames, 60);
    // A scene without a table, and one whose table is not first, on the same thread.
    let world = reset(Task::Toy, 3);
    let mut prims = scene::full_scene(&world, &arm, &READY, true);
    let table: Vec<Primitive> = prims.drain(..2).collect();
    let opts = RenderOptions::default();
    assert_eq!(
        render_modes(&prims, &big, &modes, &opts),
        render_modes_uncached(&prims, &big, &modes, &opts)
    );
    prims.extend(table);
    assert_eq!(
        render_modes(&prims, &big, &modes, &opts),
        render_modes_uncached(&prims, &big, &modes, &opts)
    );
}

/// Every pixel whose centre ray hits a ball is drawn, wherever the ball lies in a wide
/// view: an off-axis ball projects to an ellipse stretched outwards, and before session 53
/// the screen bounds were the on-axis disc (this ball lost its top rows, cut flat).
#[test]
fn a_ball_near_the_edge_of_a_wide_view_is_drawn_whole() {
    let cam = PinholeCamera {
        width: 256,
        height: 256,
        fx: 128.0,
        fy: 128.0,
        cx: 128.0,
        cy: 128.0,
        world_from_camera: nalgebra::Isometry3::identity(),
    };
    let options = RenderOptions {
        supersample: 1,
        ..Default::default()
    };
    for (center, radius) in [
        (Point3::new(0.0271, -0.4766, 0.682), 0.1282),
        (Point3::new(0.55, 0.3, 0.7), 0.12),
        (Point3::new(-0.2, 0.05, 0.4), 0.05),
    ] {
        let ball = Primitive {
            shape: Shape::Sphere { center, radius },
            color: [0.8, 0.2, 0.2],
            layer: Layer::Object,
        };
        let frame = render(&[ball], &cam, RenderMode::Full, &options);
        let mut hits = 0;
        for y in 0..256 {
            for x in 0..256 {
                let (o, d) = cam.ray(x as f64 + 0.5, y as f64 + 0.5);
                // The ray's closest approach to the centre, with a margin off the rim.
                let oc = center - o;
                let along = oc.dot(&d);
                let miss = (oc - d * along).norm();
                if along > 0.0 && miss < radius * 0.999 {
                    hits += 1;
                    assert!(
                        frame.depth[y * 256 + x].is_finite(),
                        "ball {center} r {radius}: pixel ({x}, {y}) hit but not drawn"
                    );
                }
            }
        }
        assert!(hits > 100, "ball {center}: only {hits} pixels");
    }
}
