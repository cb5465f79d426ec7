//! Camera node pieces: calibration from a field of view, the test pattern, image files.

use dreamplan::nodes::camera::{
    intrinsics_from_hfov, pinhole_camera_info, test_pattern, CameraConfig, CameraNode, Source,
};
use dreamplan::nodes::Node;

#[test]
fn a_60_degree_camera_has_the_textbook_focal_length() {
    let [fx, fy, cx, cy] = intrinsics_from_hfov(640, 480, 60.0);
    // fx = (w/2) / tan(hfov/2) = 320 / tan(30°)
    assert!((fx - 554.2562584220407).abs() < 1e-9);
    assert_eq!((fy, cx, cy), (fx, 320.0, 240.0));
    let info = pinhole_camera_info(640, 480, [fx, fy, cx, cy], "cam");
    assert_eq!(info.k, [fx, 0.0, 320.0, 0.0, fx, 240.0, 0.0, 0.0, 1.0]);
    assert_eq!(info.p[3], 0.0);
    assert_eq!(info.d.len(), 5);
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

#[test]
fn image_files_are_loaded_and_resized() {
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
    assert!(CameraNode::new(config).is_ok());
    let missing = CameraConfig {
        source: Source::Files,
        files: vec![dir.path().join("nope.png")],
        ..Default::default()
    };
    let err = format!("{:#}", CameraNode::new(missing).err().unwrap());
    assert!(err.contains("nope.png"), "{err}");
}
