//! What the planner sees: the object segmented in the built-in camera's images, keypoints
//! spread on it, numbered dots drawn where they are, and clear errors on bad images.

use dreamplan::render::{render, scene, RenderMode, RenderOptions};
use dreamplan::sim::episode::{default_arm, READY};
use dreamplan::sim::tasks::{reset, Task};
use dreamplan::vision::{self, RgbView, SegmentParams, VisionError};

const SIZE: u32 = 224;

fn params(task: Task) -> SegmentParams {
    dreamplan::planner::eval::segment_params(task)
}

/// The mask matches the object: mask pixels unproject (through the rendered depth) to
/// within 1.5 cm of an object particle, and almost every particle projects onto the mask.
#[test]
fn segmentation_finds_the_object_and_only_it() {
    let arm = default_arm();
    let cam = scene::default_camera(SIZE, SIZE);
    for task in Task::ALL {
        for seed in [1, 7] {
            let world = reset(task, seed);
            let frame = render(
                &scene::full_scene(&world, &arm, &READY, true),
                &cam,
                RenderMode::Full,
                &RenderOptions::default(),
            );
            let view = RgbView::new(SIZE, SIZE, &frame.rgb).unwrap();
            let mask = vision::segment(&view, &params(task)).unwrap();
            let pos = world.positions();
            let mut far = 0;
            for y in 0..SIZE {
                for x in 0..SIZE {
                    if !mask.get(x, y) {
                        continue;
                    }
                    let d = frame.depth[(y * SIZE + x) as usize] as f64;
                    let p = cam.unproject(x as f64 + 0.5, y as f64 + 0.5, d);
                    let nearest = pos.iter().map(|q| (q - p).norm()).fold(f64::MAX, f64::min);
                    if nearest > 0.015 {
                        far += 1;
                    }
                }
            }
            let missed = pos
                .iter()
                .filter(|q| {
                    let (u, v, _) = cam.project(q).unwrap();
                    let (u, v) = (u.floor() as i64, v.floor() as i64);
                    !(-1..=1).any(|dy| {
                        (-1..=1).any(|dx| {
                            let (x, y) = (u + dx, v + dy);
                            x >= 0 && y >= 0 && mask.get(x as u32, y as u32)
                        })
                    })
                })
                .count();
            eprintln!(
                "{task:?} seed {seed}: {} mask px, {far} farther than 1.5 cm, {missed}/{} particles off the mask",
                mask.area(),
                pos.len()
            );
            assert!(far * 100 <= mask.area(), "{task:?}: {far} stray pixels");
            assert!(
                missed * 20 <= pos.len(),
                "{task:?}: {missed} particles missed"
            );
        }
    }
}

#[test]
fn keypoints_are_spread_deterministic_and_on_the_mask() {
    let arm = default_arm();
    let cam = scene::default_camera(SIZE, SIZE);
    for task in Task::ALL {
        let world = reset(task, 3);
        let frame = render(
            &scene::full_scene(&world, &arm, &READY, true),
            &cam,
            RenderMode::Full,
            &RenderOptions::default(),
        );
        let view = RgbView::new(SIZE, SIZE, &frame.rgb).unwrap();
        let mask = vision::segment(&view, &params(task)).unwrap();
        let a = vision::farthest_point_sampling(&mask, 8).unwrap();
        let b = vision::farthest_point_sampling(&mask, 8).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.iter().map(|k| k.id).collect::<Vec<_>>(),
            (1..=8).collect::<Vec<_>>()
        );
        for k in &a {
            assert!(
                mask.get(k.u as u32, k.v as u32),
                "{task:?}: {k:?} off the mask"
            );
        }
        // Farthest-point sampling: the first 4 are farther apart than any 4 random pixels
        // would reliably be; at least a fifth of the object's extent.
        let d = |i: usize, j: usize| ((a[i].u - a[j].u).powi(2) + (a[i].v - a[j].v).powi(2)).sqrt();
        let extent = (0..8)
            .flat_map(|i| (0..8).map(move |j| (i, j)))
            .map(|(i, j)| d(i, j))
            .fold(0.0, f32::max);
        let closest = (0..8)
            .flat_map(|i| (i + 1..8).map(move |j| (i, j)))
            .map(|(i, j)| d(i, j))
            .fold(f32::MAX, f32::min);
        assert!(
            closest > extent / 12.0,
            "{task:?}: closest {closest} px of extent {extent}"
        );
        let (nu, nv) = a[0].normalized(SIZE, SIZE);
        assert!(nu <= 1000 && nv <= 1000);
    }
}

#[test]
fn overlays_draw_a_readable_dot_on_each_keypoint_and_nothing_else() {
    let (w, h) = (160u32, 120u32);
    let base = vec![180u8; (w * h * 3) as usize];
    let view = RgbView::new(w, h, &base).unwrap();
    let kps = [
        vision::Keypoint {
            id: 1,
            u: 30.5,
            v: 40.5,
        },
        vision::Keypoint {
            id: 12,
            u: 110.5,
            v: 80.5,
        },
    ];
    let out = vision::draw_keypoints(&view, &kps).unwrap();
    let px = |x: u32, y: u32| &out[((y * w + x) * 3) as usize..((y * w + x) * 3 + 3) as usize];
    let r = vision::overlay::dot_radius(w, h) as u32;
    for k in &kps {
        let (cx, cy) = (k.u as u32, k.v as u32);
        // The disc is dark with white digits inside: both present within the radius.
        let inside: Vec<&[u8]> = (cy - r + 2..cy + r - 1)
            .flat_map(|y| (cx - r + 2..cx + r - 1).map(move |x| (x, y)))
            .map(|(x, y)| px(x, y))
            .collect();
        assert!(
            inside.iter().any(|p| p.iter().all(|&c| c < 40)),
            "dark disc at {k:?}"
        );
        assert!(
            inside.iter().any(|p| p.iter().all(|&c| c > 215)),
            "white digits at {k:?}"
        );
    }
    // Far from every dot the image is untouched.
    for (x, y) in [(2, 2), (80, 10), (150, 110), (70, 60)] {
        assert_eq!(px(x, y), &[180, 180, 180]);
    }
}

/// At the planner's input size (256²) with 8 keypoints, on start and goal scenes of every
/// task: no two labels overlap, none leaves the image or covers another keypoint, leaders
/// are short, and most of the object stays visible (rope is the hard case: 3 px thick,
/// keypoints 6–10 px apart, so discs on the points would pile up).
#[test]
fn labels_never_overlap_and_leave_the_object_visible_at_the_planners_size() {
    let side = 256u32;
    let arm = default_arm();
    let cam = scene::default_camera(side, side);
    let mut crowded_points = 0;
    for task in Task::ALL {
        let mut least_visible = 1.0f32;
        for seed in 0..6u64 {
            // The camera image (arm at its ready pose) and the goal image (object only),
            // as the planner is shown them.
            let goal = dreamplan::sim::episode::arm_goal(task, seed, &arm).unwrap();
            let start = scene::full_scene(&reset(task, seed), &arm, &READY, true);
            for (prims, mode) in [
                (start, RenderMode::Full),
                (scene::world_primitives(&goal), RenderMode::ObjectOnly),
            ] {
                let frame = render(&prims, &cam, mode, &RenderOptions::default());
                let view = RgbView::new(side, side, &frame.rgb).unwrap();
                let mask = vision::segment(&view, &params(task)).unwrap();
                let kps = vision::farthest_point_sampling(&mask, 8).unwrap();
                let labels = vision::overlay::place_labels(&view, &kps);
                assert_eq!(labels.len(), kps.len());
                let r = labels[0].radius;
                let dist = |a: (f32, f32), b: (f32, f32)| (a.0 - b.0).hypot(a.1 - b.1);
                let c = |l: &vision::overlay::Label| (l.centre.0 as f32, l.centre.1 as f32);
                for (i, a) in labels.iter().enumerate() {
                    assert_eq!(a.id, kps[i].id);
                    let (x, y) = a.centre;
                    assert!(
                        x >= r && y >= r && x + r < side as i32 && y + r < side as i32,
                        "{task:?} seed {seed}: label {} leaves the image at {:?}",
                        a.id,
                        a.centre
                    );
                    assert!(
                        dist(c(a), a.point) <= 6.0 * r as f32 + 1.0,
                        "{task:?} seed {seed}: label {} is {} px from its point",
                        a.id,
                        dist(c(a), a.point)
                    );
                    for b in labels.iter().skip(i + 1) {
                        assert!(
                            dist(c(a), c(b)) >= (2 * r + 1) as f32,
                            "{task:?} seed {seed}: labels {} and {} overlap",
                            a.id,
                            b.id
                        );
                    }
                    for k in kps.iter().filter(|k| k.id != a.id) {
                        assert!(
                            dist(c(a), (k.u.floor(), k.v.floor())) >= (r + 2) as f32,
                            "{task:?} seed {seed}: label {} covers keypoint {}",
                            a.id,
                            k.id
                        );
                    }
                }
                crowded_points += (0..kps.len())
                    .flat_map(|i| (i + 1..kps.len()).map(move |j| (i, j)))
                    .filter(|&(i, j)| {
                        dist((kps[i].u, kps[i].v), (kps[j].u, kps[j].v)) < (2 * r + 1) as f32
                    })
                    .count();
                let drawn = vision::draw_keypoints(&view, &kps).unwrap();
                let (mut seen, mut all) = (0usize, 0usize);
                for y in 0..side {
                    for x in 0..side {
                        if mask.get(x, y) {
                            let i = ((y * side + x) * 3) as usize;
                            all += 1;
                            // Touched by anti-aliasing only: still visible.
                            let same =
                                (0..3).all(|c| drawn[i + c].abs_diff(frame.rgb[i + c]) <= 24);
                            seen += usize::from(same);
                        }
                    }
                }
                least_visible = least_visible.min(seen as f32 / all as f32);
            }
        }
        eprintln!("{task:?}: at least {least_visible:.2} of the object visible");
        assert!(
            least_visible >= 0.7,
            "{task:?}: only {least_visible:.2} of the object visible"
        );
    }
    // The case the placement exists for: keypoints closer than a label's width.
    eprintln!("{crowded_points} keypoint pairs closer than a label");
    assert!(crowded_points > 0);
}

#[test]
fn bad_images_and_missing_objects_are_errors() {
    assert!(matches!(
        RgbView::new(10, 10, &[0u8; 299]),
        Err(VisionError::BadImage(_))
    ));
    // An empty table: no object.
    let cam = scene::default_camera(96, 96);
    let frame = render(
        &dreamplan::render::table(scene::TABLE_X, scene::TABLE_Y, 0.0, [0.52, 0.43, 0.33]),
        &cam,
        RenderMode::Full,
        &RenderOptions::default(),
    );
    let view = RgbView::new(96, 96, &frame.rgb).unwrap();
    for p in [
        SegmentParams::rope(),
        SegmentParams::cloth(),
        SegmentParams::toy(),
    ] {
        let err = vision::segment(&view, &p).unwrap_err();
        assert!(matches!(err, VisionError::NoObject(_)), "{err}");
    }
    // Fewer object pixels than keypoints asked for.
    let mask = vision::Mask {
        width: 4,
        height: 4,
        data: (0..16).map(|i| i < 3).collect(),
    };
    let err = vision::farthest_point_sampling(&mask, 5).unwrap_err();
    assert_eq!(err.to_string(), "only 3 object pixels for 5 keypoints");
}
