//! Camera node pieces: calibration from a field of view or a ROS calibration file, the test
//! pattern, image files, video files through OpenCV, and clear errors on bad sources.

use std::time::Duration;

use dreamplan::bus::{Bus, LocalBus, Qos};
use dreamplan::msg::prelude::*;
use dreamplan::nodes::camera::{
    intrinsics_from_hfov, load_calibration, pinhole_camera_info, test_pattern, CameraConfig,
    CameraNode, Source,
};
use dreamplan::nodes::{Node, NodeContext};
use tokio_util::sync::CancellationToken;

#[test]
fn a_60_degree_camera_has_the_textbook_focal_length() {
    let [fx, fy, cx, cy] = intrinsics_from_hfov(640, 480, 60.0);
    // fx = (w/2) / tan(hfov/2) = 320 / tan(30°)
    assert!((fx - 554.2562584220407).abs() < 1e-9);
    // ROS's K counts from the first pixel's centre: a 640-pixel row's centre is 319.5.
    assert_eq!((fy, cx, cy), (fx, 319.5, 239.5));
    let info = pinhole_camera_info(640, 480, [fx, fy, cx, cy], "cam");
    assert_eq!(info.k, [fx, 0.0, 319.5, 0.0, fx, 239.5, 0.0, 0.0, 1.0]);
    assert_eq!(info.p[3], 0.0);
    assert_eq!(info.d.len(), 5);
}

/// A ROS calibration's principal point counts from the first pixel's centre; the camera
/// model's pixels count from the corner. Read through `from_camera_info`, a centred
/// calibration puts the optical axis at the image's centre (320, 240 of 640×480), and
/// `camera_info` writes back the K it read.
#[test]
fn a_ros_principal_point_is_read_in_the_models_pixel_convention() {
    use dreamplan::render::PinholeCamera;
    let info = pinhole_camera_info(640, 480, [500.0, 500.0, 319.5, 239.5], "cam");
    let cam = PinholeCamera::from_camera_info(&info, nalgebra::Isometry3::identity());
    let (u, v, d) = cam.project(&nalgebra::Point3::new(0.0, 0.0, 2.0)).unwrap();
    assert_eq!((u, v, d), (320.0, 240.0, 2.0));
    // The first pixel's centre is (0.5, 0.5) here and (0, 0) in K's terms.
    let ray = cam.ray(0.5, 0.5).1;
    let expected = nalgebra::Vector3::new(-319.5 / 500.0, -239.5 / 500.0, 1.0).normalize();
    assert!((ray - expected).norm() < 1e-12, "{ray:?}");
    assert_eq!(cam.camera_info(info.header.clone()).k, info.k);
}

/// A device that drops a frame costs that frame (said once per streak); only failures for
/// `REOPEN_AFTER_S` open it again, and a success ends the streak.
#[test]
fn failed_reads_skip_frames_and_a_long_streak_reopens_the_source() {
    use dreamplan::nodes::camera::{OnReadFailure, ReadFailures, REOPEN_AFTER_S};
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let at = |s: f64| t0 + Duration::from_secs_f64(s);
    let mut f = ReadFailures::default();
    assert_eq!(f.failed(at(0.0)), OnReadFailure::Skip { first: true });
    assert_eq!(f.failed(at(0.1)), OnReadFailure::Skip { first: false });
    assert_eq!(f.recovered(), 2);
    assert_eq!(f.recovered(), 0);
    // A new streak starts its own clock.
    assert_eq!(f.failed(at(10.0)), OnReadFailure::Skip { first: true });
    assert_eq!(
        f.failed(at(10.0 + REOPEN_AFTER_S * 0.9)),
        OnReadFailure::Skip { first: false }
    );
    assert_eq!(f.failed(at(10.0 + REOPEN_AFTER_S)), OnReadFailure::Reopen);
    // After a reopen that gives no frame either, the next reopen is a full period later.
    assert_eq!(
        f.failed(at(10.0 + REOPEN_AFTER_S * 1.5)),
        OnReadFailure::Skip { first: false }
    );
    assert_eq!(
        f.failed(at(10.0 + REOPEN_AFTER_S * 2.0)),
        OnReadFailure::Reopen
    );
}

#[test]
fn the_test_pattern_has_bars_and_moves() {
    let a = test_pattern(64, 32, 0);
    let b = test_pattern(64, 32, 8);
    assert_eq!(a.len(), 64 * 32 * 3);
    assert_eq!(&a[0..3], &[235, 235, 235], "first bar is white");
    assert_eq!(
        &a[8 * 3..8 * 3 + 3],
        &[235, 235, 16],
        "second bar is yellow"
    );
    assert_ne!(a, b, "the pattern scrolls");
    assert_eq!(a, test_pattern(64, 32, 0), "deterministic");
}

#[tokio::test]
async fn image_files_are_loaded_and_resized() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frame.png");
    image::RgbImage::from_pixel(20, 10, image::Rgb([10, 20, 30]))
        .save(&path)
        .unwrap();
    let config = CameraConfig {
        source: Source::Files,
        files: vec![path],
        width: 40,
        height: 20,
        ..Default::default()
    };
    let (images, info) = run_camera(
        CameraConfig {
            rate_hz: 100.0,
            ..config
        },
        2,
    )
    .await;
    for img in &images {
        assert_eq!((img.width, img.height, img.step), (40, 20, 120));
        assert_eq!(img.data.len(), 40 * 20 * 3);
        assert!(img.data.chunks(3).all(|p| p == [10, 20, 30]));
    }
    assert_eq!((info.width, info.height), (40, 20));
    let missing = CameraConfig {
        source: Source::Files,
        files: vec![dir.path().join("nope.png")],
        ..Default::default()
    };
    let err = format!("{:#}", CameraNode::new(missing).err().unwrap());
    assert!(err.contains("nope.png"), "{err}");
}

/// A short video written by OpenCV itself (MJPG in AVI: OpenCV's own codec, no ffmpeg
/// needed): red, green, blue frames.
#[cfg(feature = "videoio")]
fn rgb_video(path: &std::path::Path, w: i32, h: i32) {
    use opencv::core::{Mat, Scalar, Size, CV_8UC3};
    use opencv::prelude::*;
    use opencv::videoio::VideoWriter;
    let fourcc = VideoWriter::fourcc('M', 'J', 'P', 'G').unwrap();
    let mut out = VideoWriter::new(path, fourcc, 10.0, Size::new(w, h), true).unwrap();
    assert!(out.is_opened().unwrap(), "OpenCV cannot write MJPG here");
    // BGR order.
    for bgr in [[0.0, 0.0, 255.0], [0.0, 255.0, 0.0], [255.0, 0.0, 0.0]] {
        let frame = Mat::new_rows_cols_with_default(
            h,
            w,
            CV_8UC3,
            Scalar::new(bgr[0], bgr[1], bgr[2], 0.0),
        )
        .unwrap();
        out.write(&frame).unwrap();
    }
    out.release().unwrap();
}

/// A re-published camera whose images come at another size than its camera_info's keeps
/// the camera_info as calibrated: before session 42 it took the images' size and kept the
/// other size's matrices, and the executor unprojected pixels with the wrong intrinsics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_of_another_size_leave_the_camera_info_as_calibrated() {
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let mut infos = bus
        .subscribe::<CameraInfo>("/camera/camera_info", Qos::latched())
        .unwrap();
    let mut out = bus
        .subscribe::<Image>("/camera/restamped", Qos::keep_last(16))
        .unwrap();
    let input = bus
        .publisher::<Image>("/camera/input", Qos::keep_last(4))
        .unwrap();
    let node = CameraNode::new(CameraConfig {
        source: Source::Topic,
        input_topic: "/camera/input".into(),
        image_topic: "/camera/restamped".into(),
        width: 64,
        height: 48,
        ..Default::default()
    })
    .unwrap();
    let task = tokio::spawn(node.run(NodeContext {
        name: "camera".into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params: dreamplan::nodes::params::LiveParams::fixed(),
    }));
    let first = tokio::time::timeout(Duration::from_secs(5), infos.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.width, first.height), (64, 48));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let small = Image {
        width: 32,
        height: 24,
        encoding: "rgb8".into(),
        step: 32 * 3,
        data: vec![90; 32 * 24 * 3],
        ..Default::default()
    };
    for _ in 0..3 {
        input.publish(small.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let img = tokio::time::timeout(Duration::from_secs(5), out.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((img.width, img.height), (32, 24), "the images still go out");
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Some(info) = infos.try_recv() {
        assert_eq!(
            (info.width, info.height, info.k),
            (first.width, first.height, first.k),
            "a camera_info of another size with the old matrices"
        );
    }
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// Runs a camera node on the in-process bus until `n` images have arrived; returns them
/// and the latched camera info.
async fn run_camera(config: CameraConfig, n: usize) -> (Vec<Image>, CameraInfo) {
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let mut images = bus
        .subscribe::<Image>("/camera/image_raw", Qos::keep_last(64))
        .unwrap();
    let mut infos = bus
        .subscribe::<CameraInfo>("/camera/camera_info", Qos::latched())
        .unwrap();
    let node = CameraNode::new(config).unwrap();
    let task = tokio::spawn(node.run(NodeContext {
        name: "camera".into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params: dreamplan::nodes::params::LiveParams::fixed(),
    }));
    let mut got = Vec::new();
    while got.len() < n {
        let img = tokio::time::timeout(Duration::from_secs(20), images.recv())
            .await
            .expect("an image within 20 s")
            .expect("the bus stays open");
        got.push((*img).clone());
    }
    let info = (*tokio::time::timeout(Duration::from_secs(5), infos.recv())
        .await
        .unwrap()
        .unwrap())
    .clone();
    stop.cancel();
    task.await.unwrap().unwrap();
    (got, info)
}

#[cfg(feature = "videoio")]
#[tokio::test]
async fn a_video_file_is_played_resized_in_rgb_and_looped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgb.avi");
    rgb_video(&path, 64, 48);
    let config = CameraConfig {
        source: Source::Video,
        video: Some(path),
        width: 32,
        height: 24,
        rate_hz: 100.0,
        ..Default::default()
    };
    let (images, info) = run_camera(config, 7).await;
    let want = [[255u8, 0, 0], [0, 255, 0], [0, 0, 255]];
    for (i, img) in images.iter().enumerate() {
        assert_eq!((img.width, img.height, img.step), (32, 24, 96));
        assert_eq!(img.encoding, "rgb8");
        assert_eq!(img.data.len(), 32 * 24 * 3);
        // The centre pixel, within JPEG's error.
        let c = &img.data[(12 * 32 + 16) * 3..(12 * 32 + 16) * 3 + 3];
        let w = want[i % 3];
        assert!(
            (0..3).all(|k| c[k].abs_diff(w[k]) <= 40),
            "frame {i}: centre {c:?}, expected about {w:?}"
        );
    }
    assert_eq!((info.width, info.height), (32, 24));
}

/// Frames of another aspect than width×height would be stretched by the resize: with a
/// calibration made at width×height that is refused at start, naming both sizes (before
/// session 52 a 4:3 camera under a 16:9 calibration was stretched without a word).
#[cfg(feature = "videoio")]
#[test]
fn frames_stretched_to_a_calibrated_size_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgb.avi");
    rgb_video(&path, 64, 48);
    let cal = dir.path().join("wide.yaml");
    std::fs::write(
        &cal,
        CALIBRATION.replace("image_height: 480", "image_height: 360"),
    )
    .unwrap();
    let config = CameraConfig {
        source: Source::Video,
        video: Some(path),
        width: 640,
        height: 360,
        calibration: Some(cal),
        ..Default::default()
    };
    let e = format!("{:#}", CameraNode::new(config.clone()).err().unwrap());
    assert!(
        e.contains("its frames are 64×48, resized to 640×360 they are stretched")
            && e.contains("wide.yaml is for 640×360"),
        "{e}"
    );
    // Without a calibration it is said, not refused.
    CameraNode::new(CameraConfig {
        calibration: None,
        ..config
    })
    .unwrap();
}

const CALIBRATION: &str = "image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [610.5, 0, 318.2, 0, 611.25, 241.7, 0, 0, 1]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.1, -0.25, 0.001, 0.002, 0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]
projection_matrix:
  rows: 3
  cols: 4
  data: [600.1, 0, 317.9, 0, 0, 605.2, 240.8, 0, 0, 0, 1, 0]
";

#[tokio::test]
async fn a_ros_calibration_file_becomes_the_published_camera_info() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cam.yaml");
    std::fs::write(&path, CALIBRATION).unwrap();
    let config = CameraConfig {
        calibration: Some(path.clone()),
        rate_hz: 100.0,
        ..Default::default()
    };
    let (_, info) = run_camera(config, 1).await;
    assert_eq!((info.width, info.height), (640, 480));
    assert_eq!(
        info.k,
        [610.5, 0.0, 318.2, 0.0, 611.25, 241.7, 0.0, 0.0, 1.0]
    );
    assert_eq!(info.d, vec![0.1, -0.25, 0.001, 0.002, 0.0]);
    assert_eq!(info.distortion_model, "plumb_bob");
    assert_eq!(info.r, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    assert_eq!(
        info.p,
        [600.1, 0.0, 317.9, 0.0, 0.0, 605.2, 240.8, 0.0, 0.0, 0.0, 1.0, 0.0]
    );
    assert_eq!(info.header.frame_id, "camera_color_optical_frame");

    // Without rectification and projection: the identity and [K | 0].
    let short: String = CALIBRATION
        .split("rectification_matrix")
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&path, &short).unwrap();
    let info = load_calibration(&path, "cam").unwrap();
    assert_eq!(info.r, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    assert_eq!(
        info.p,
        [610.5, 0.0, 318.2, 0.0, 0.0, 611.25, 241.7, 0.0, 0.0, 0.0, 1.0, 0.0]
    );
}

#[test]
fn bad_sources_and_calibrations_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = |config: CameraConfig| format!("{:#}", CameraNode::new(config).err().unwrap());
    let cal = dir.path().join("cam.yaml");
    std::fs::write(&cal, CALIBRATION).unwrap();
    // An object task that is not a task.
    let e = err(CameraConfig {
        object_only_topic: "/camera/object_only".into(),
        object_task: "rag".into(),
        ..Default::default()
    });
    assert!(e.contains("object_task `rag` is not a task"), "{e}");
    // Generated frames need a topic to go to.
    let e = err(CameraConfig {
        image_topic: String::new(),
        ..Default::default()
    });
    assert!(
        e.contains("image_topic may be empty only with source `topic`"),
        "{e}"
    );
    let e = err(CameraConfig {
        source: Source::Topic,
        image_topic: String::new(),
        ..Default::default()
    });
    assert!(e.contains("would publish nothing"), "{e}");
    // Calibrated for 640×480, set to 320×240.
    let e = err(CameraConfig {
        calibration: Some(cal.clone()),
        width: 320,
        height: 240,
        ..Default::default()
    });
    assert!(
        e.ends_with("cam.yaml: calibrated for 640×480 images, the camera is set to 320×240"),
        "{e}"
    );
    // A matrix whose numbers do not fill it.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        CALIBRATION.replace("[0.1, -0.25, 0.001, 0.002, 0]", "[0.1, -0.25]"),
    )
    .unwrap();
    let e = err(CameraConfig {
        calibration: Some(bad.clone()),
        ..Default::default()
    });
    assert!(
        e.ends_with("bad.yaml: distortion_coefficients declares 1×5 but holds 2 numbers"),
        "{e}"
    );
    std::fs::write(&bad, "image_width: 640\n").unwrap();
    let e = err(CameraConfig {
        calibration: Some(bad),
        ..Default::default()
    });
    assert!(e.contains("bad.yaml: not a camera_info calibration"), "{e}");
    // Sources that cannot be opened.
    let e = err(CameraConfig {
        source: Source::Video,
        video: Some(dir.path().join("none.avi")),
        ..Default::default()
    });
    assert!(e.ends_with("none.avi: no such file"), "{e}");
    let e = err(CameraConfig {
        source: Source::Video,
        ..Default::default()
    });
    assert_eq!(e, "source `video` needs `video: FILE`");
    let not_video = dir.path().join("x.avi");
    std::fs::write(&not_video, b"not a video").unwrap();
    let e = err(CameraConfig {
        source: Source::Video,
        video: Some(not_video),
        ..Default::default()
    });
    assert!(e.contains("x.avi: OpenCV cannot open it"), "{e}");
    let e = err(CameraConfig {
        source: Source::Device,
        device: "/dev/video97".into(),
        ..Default::default()
    });
    assert!(
        e.starts_with("camera device /dev/video97: OpenCV cannot open it"),
        "{e}"
    );
}

/// `rate_hz` is the camera's live parameter (`CameraNode::LIVE`): set while it runs, the
/// next frames come at the new rate; a parameter read at start and a rate of 0 are refused
/// with the reason. Virtual time (tokio's paused clock), so the counts are exact.
#[tokio::test(start_paused = true)]
async fn rate_hz_set_while_running_applies_from_the_next_frame() {
    use dreamplan::nodes::params::LiveParams;
    use serde_yaml::Value;
    let config = CameraConfig {
        rate_hz: 5.0,
        width: 16,
        height: 8,
        ..Default::default()
    };
    let params = LiveParams::for_node::<CameraNode>("camera", &config, &Value::Null);
    let e = params.set("width", Value::from(32)).unwrap_err();
    assert!(e.contains("read when node `camera` starts"), "{e}");
    // 0, and rates whose period is 0 or overflows (they panicked the running camera).
    for bad in [0.0, 1e10, 1e-20] {
        let e = params.set("rate_hz", Value::from(bad)).unwrap_err();
        assert!(
            e.contains("rate_hz must be between 0.001 and 1000"),
            "{bad}: {e}"
        );
    }
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let mut images = bus
        .subscribe::<Image>("/camera/image_raw", Qos::keep_last(1000))
        .unwrap();
    let task = tokio::spawn(CameraNode::new(config).unwrap().run(NodeContext {
        name: "camera".into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params: params.clone(),
    }));
    let count = |images: &mut dreamplan::bus::Subscriber<Image>| {
        let mut n = 0;
        while images.try_recv().is_some() {
            n += 1;
        }
        n
    };
    tokio::time::sleep(Duration::from_millis(2010)).await;
    // Ticks at 0, 0.2, …, 2.0 s.
    assert_eq!(count(&mut images), 11);
    params.set("rate_hz", Value::from(50.0)).unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // At once, not at the old rate's next tick: a frame at 2.01 s, then every 20 ms.
    let n = count(&mut images);
    assert!((99..=102).contains(&n), "{n} frames in 2 s at 50 Hz");
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// A real camera's frames made into object-only frames (`object_only_topic`, the task from
/// the episode's `reset`) against the simulator's own: the built-in world, a random planner
/// and the executor play one episode per task while a camera node re-publishes the sim's
/// full frames (the arm in view); each object-only frame it makes is paired by stamp with
/// the one the simulator renders without the arm. Nothing but the object may be made
/// object in any frame, and in frames where the arm hides none of the object, all of it
/// must be found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cameras_frames_become_object_only_frames_like_the_simulators() {
    use dreamplan::nodes::{executor::ExecutorNode, planner::PlannerNode, sim::SimNode};
    use dreamplan::sim::tasks::Task;
    use std::collections::BTreeMap;

    for task in Task::ALL {
        let graph: serde_yaml::Value = serde_yaml::from_str(&format!(
            "{{ sim: {{ task: {}, seed: 21, episodes: 1, width: 256, height: 256, realtime: false }},
               planner: {{ backend: random }},
               executor: {{ width: 256, height: 256 }} }}",
            task.name()
        ))
        .unwrap();
        let bus = LocalBus::default();
        let stop = CancellationToken::new();
        let mut made = bus
            .subscribe::<Image>("/camera/object_only_made", Qos::keep_last(1000))
            .unwrap();
        let mut rendered = bus
            .subscribe::<Image>("/camera/object_only", Qos::keep_last(1000))
            .unwrap();
        let mut events = bus
            .subscribe::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
            .unwrap();
        let mut fulls = bus
            .subscribe::<Image>("/camera/image_raw", Qos::keep_last(1000))
            .unwrap();
        let mut restamped = bus
            .subscribe::<Image>("/camera/restamped", Qos::keep_last(1000))
            .unwrap();
        let ctx = |name: &str| NodeContext {
            name: name.into(),
            bus: bus.clone(),
            shutdown: stop.clone(),
            params: dreamplan::nodes::params::LiveParams::fixed(),
        };
        let camera = CameraNode::new(CameraConfig {
            source: Source::Topic,
            input_topic: "/camera/image_raw".into(),
            // Rope: only the object-only frames, as in gazebo.launch.xml (the frames and
            // their info come from elsewhere); cloth and toy: the frames re-published too,
            // as in real_arm.launch.xml.
            image_topic: if task == Task::Rope {
                String::new()
            } else {
                "/camera/restamped".into()
            },
            info_topic: String::new(),
            object_only_topic: "/camera/object_only_made".into(),
            ..Default::default()
        })
        .unwrap();
        let mut handles = vec![tokio::spawn(camera.run(ctx("camera")))];
        handles.push(tokio::spawn(
            PlannerNode::new(serde_yaml::from_value(graph["planner"].clone()).unwrap())
                .unwrap()
                .run(ctx("planner")),
        ));
        handles.push(tokio::spawn(
            ExecutorNode::new(serde_yaml::from_value(graph["executor"].clone()).unwrap())
                .unwrap()
                .run(ctx("executor")),
        ));
        handles.push(tokio::spawn(
            SimNode::new(serde_yaml::from_value(graph["sim"].clone()).unwrap())
                .unwrap()
                .run(ctx("sim")),
        ));
        loop {
            let e = tokio::time::timeout(Duration::from_secs(300), events.recv())
                .await
                .expect("the episode is scored within 300 s")
                .unwrap();
            if e.event == EpisodeEvent::EVENT_SCORED {
                break;
            }
        }
        stop.cancel();
        bus.shutdown();
        for h in handles {
            let _ = h.await;
        }
        let stamp = |m: &Image| m.header.stamp.as_nanos();
        let mut truth = BTreeMap::new();
        while let Some(m) = rendered.try_recv() {
            truth.insert(stamp(&m), m);
        }
        let mask = |m: &Image| {
            let frame = dreamplan::render::Frame {
                width: m.width,
                height: m.height,
                rgb: m.data.clone(),
                depth: Vec::new(),
            };
            dreamplan::verifier::object_mask(task, &frame).unwrap().data
        };
        let mut full = BTreeMap::new();
        while let Some(m) = fulls.try_recv() {
            full.insert(stamp(&m), m);
        }
        let mut republished = std::collections::BTreeSet::new();
        while let Some(m) = restamped.try_recv() {
            republished.insert(stamp(&m));
        }
        let mut ious = Vec::new();
        let mut paired = 0;
        while let Some(m) = made.try_recv() {
            let (Some(t), Some(f)) = (truth.get(&stamp(&m)), full.get(&stamp(&m))) else {
                continue;
            };
            paired += 1;
            // Re-published (real arm) or not (Gazebo), the frame goes out before its
            // object-only frame.
            assert_eq!(republished.contains(&stamp(&m)), task != Task::Rope);
            assert_eq!((m.width, m.height, m.encoding.as_str()), (256, 256, "rgb8"));
            let (a, b) = (mask(&m), mask(t));
            let inter = a.iter().zip(&b).filter(|(x, y)| **x && **y).count();
            let union = a.iter().zip(&b).filter(|(x, y)| **x || **y).count();
            // Nothing but the object is made object, arm or not.
            let made_px = a.iter().filter(|x| **x).count();
            assert!(
                inter as f64 >= 0.95 * made_px as f64,
                "{task:?}: {made_px} object pixels made, {inter} of them the object's"
            );
            // Outside the object: one plain colour.
            let mut outside = m
                .data
                .chunks(3)
                .zip(&a)
                .filter(|(_, o)| !**o)
                .map(|(p, _)| p);
            let first = outside.next().unwrap();
            assert!(outside.all(|p| p == first), "the table is not plain");
            // Where the arm hides none of the object, all of it is found.
            let hidden = b
                .iter()
                .zip(f.data.chunks(3).zip(t.data.chunks(3)))
                .filter(|(o, (x, y))| {
                    **o && x
                        .iter()
                        .zip(*y)
                        .map(|(p, q)| p.abs_diff(*q) as u32)
                        .sum::<u32>()
                        > 30
                })
                .count();
            if hidden == 0 {
                ious.push(inter as f64 / union.max(1) as f64);
            }
        }
        ious.sort_by(f64::total_cmp);
        eprintln!(
            "{task:?}: {paired} frames paired, {} with the object in full view: object-mask IoU min {:.3}",
            ious.len(),
            ious.first().copied().unwrap_or(f64::NAN)
        );
        assert!(
            ious.len() >= 3,
            "{task:?}: {} frames in full view",
            ious.len()
        );
        assert!(ious[0] >= 0.95, "{task:?}: IoU {:.3}", ious[0]);
    }
}
