//! `dreamplan check-calibration`: the arm drawn from a bag's joint states through the
//! executor's camera model (the camera info's intrinsics and the hand-eye pose) over the
//! images the camera took at the same moments ([`dreamplan::vision::handeye`]). One PNG per
//! frame to look at, and the offset at which the drawn outline fits the image's edges best:
//! a few pixels or less when the calibration is right.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use dreamplan::bag::BagReader;
use dreamplan::msg::prelude::*;
use dreamplan::nodes::executor::{arm_of, arm_positions, finger_of, ExecutorConfig};
use dreamplan::vision::handeye::{camera_correction, edges, fit, overlay, DrawnArm, Fit};
use dreamplan::vision::RgbView;

#[derive(Args)]
pub struct CheckCalibrationArgs {
    /// A bag with the camera's colour images, its camera info and the arm's joint states
    /// (`dreamplan bag record`, `ros2 bag record`, the recorder node).
    #[arg(long)]
    bag: PathBuf,
    /// The executor's params file (what `real_arm.launch.xml executor_params:=` takes: a
    /// ROS 2 params file with an `executor:` section, or the node's plain YAML): its
    /// hand-eye pose `base_from_camera_xyz/_xyzw`, `joint_names` and `finger_joint`.
    #[arg(long)]
    executor_params: Option<PathBuf>,
    /// The node's name in `--executor-params` (its section).
    #[arg(long, default_value = "executor")]
    node: String,
    /// The hand-eye pose, `X,Y,Z,QX,QY,QZ,QW` (the optical frame in the arm's base frame;
    /// m), instead of the params file's (whose other settings still apply). Without
    /// either, the built-in world's camera pose.
    #[arg(long, allow_hyphen_values = true, value_name = "X,Y,Z,QX,QY,QZ,QW")]
    camera_pose: Option<String>,
    /// Frames checked, spread evenly over the bag's images.
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// The colour images (rgb8, bgr8, rgba8 or bgra8).
    #[arg(long, default_value = "/camera/image_raw")]
    image_topic: String,
    /// The colour camera's `sensor_msgs/CameraInfo`.
    #[arg(long, default_value = "/camera/camera_info")]
    info_topic: String,
    /// The arm's joint states.
    #[arg(long, default_value = "/joint_states")]
    joint_states_topic: String,
    /// How far (px) the fit searches for a better place of the drawn outline.
    #[arg(long, default_value_t = 24)]
    search_px: i64,
    /// Exit 1 when the median offset over the frames is larger than this (px).
    #[arg(long, default_value_t = 4.0)]
    tolerance_px: f64,
    /// Output folder: frame_NN.png (the drawn arm in magenta over each image, its best
    /// fit in cyan, the tool point as a green cross) and report.json. Must not exist.
    /// Exit status: 0 within the tolerance, 1 beyond it (or no frame to check), 2 on an
    /// error.
    #[arg(long)]
    out: PathBuf,
}

/// A joint state this far in time from an image is not where the arm was when it was taken.
const MAX_STATE_GAP_NS: i64 = 200_000_000;

/// A message's time: its header stamp where it has one, else when the bag received it.
/// The stamps say when a camera frame was exposed and a joint state read; the receive
/// times add the camera's latency, tens of ms, in which a moving arm moves centimetres.
fn when(stamp: &Time, log_time: u64, stamped: bool) -> i64 {
    if stamped {
        stamp.sec as i64 * 1_000_000_000 + stamp.nanosec as i64
    } else {
        log_time as i64
    }
}

fn executor_config(a: &CheckCalibrationArgs) -> anyhow::Result<ExecutorConfig> {
    let mut c = match &a.executor_params {
        Some(p) => dreamplan::config::node_config_file(p, &a.node)
            .map_err(|e| anyhow::anyhow!("{e}: give --node for another section"))?,
        None => ExecutorConfig::default(),
    };
    if let Some(pose) = &a.camera_pose {
        let (xyz, xyzw) = crate::world_model::parse_camera_pose(pose)?;
        let n = xyzw.iter().map(|v| v * v).sum::<f64>().sqrt();
        anyhow::ensure!(
            (n - 1.0).abs() < 1e-3,
            "--camera-pose: the quaternion {xyzw:?} is not of unit length ({n})"
        );
        c.base_from_camera_xyz = Some(xyz);
        c.base_from_camera_xyzw = Some(xyzw);
    } else if c.base_from_camera_xyz.is_none() {
        eprintln!("note: no hand-eye pose given (--camera-pose, or base_from_camera_xyz/_xyzw in --executor-params): checking the built-in world's camera pose");
    }
    Ok(c)
}

/// One checked frame, as report.json lists it.
#[derive(serde::Serialize)]
struct Row {
    /// The image's log time (s from the bag's first image).
    t_s: f64,
    png: Option<String>,
    /// Why the frame tells nothing (the arm out of view, no joint state).
    skipped: Option<String>,
    arm_px: usize,
    tcp_px: Option<(f64, f64)>,
    /// The drawn arm's median depth (m).
    depth_m: Option<f64>,
    fit: Option<Fit>,
}

pub fn run(a: CheckCalibrationArgs) -> anyhow::Result<ExitCode> {
    // An error is told from a calibration that is off (1) by its status.
    match check(a) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {}", crate::error_text(&e));
            Ok(ExitCode::from(2))
        }
    }
}

fn check(a: CheckCalibrationArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.frames > 0, "--frames must be > 0");
    anyhow::ensure!(
        (0..=200).contains(&a.search_px),
        "--search-px must be 0–200"
    );
    anyhow::ensure!(
        !a.out.exists(),
        "{} exists; check-calibration writes a new folder",
        a.out.display()
    );
    let config = executor_config(&a)?;
    <dreamplan::nodes::executor::ExecutorNode as dreamplan::nodes::Node>::validate(&config)?;
    let arm = arm_of(&config)?;
    let names = arm.joint_names();
    let reader = BagReader::open(&a.bag).with_context(|| format!("opening {}", a.bag.display()))?;
    let missing: Vec<&str> = [&a.image_topic, &a.info_topic, &a.joint_states_topic]
        .into_iter()
        .filter(|t| reader.topic(t).is_none())
        .map(String::as_str)
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{} has no {} (it has {})",
        a.bag.display(),
        missing.join(", "),
        reader
            .topics()
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let info = reader
        .read_topic::<CameraInfo>(&a.info_topic)
        .filter_map(Result::ok)
        .map(|(_, m)| m)
        .find(|m| m.width > 0 && m.k[0] > 0.0 && m.k[4] > 0.0)
        .with_context(|| format!("no usable camera info on {}", a.info_topic))?;
    let camera = config.camera(Some(&info));
    // Joint states as (log time, header stamp, the arm's positions) and the finger's as
    // (log time, stamp, position): a gripper may publish its own joint states.
    let mut states: Vec<(u64, Time, Vec<f64>)> = Vec::new();
    let mut fingers: Vec<(u64, Time, f64)> = Vec::new();
    for r in reader.read_topic::<JointState>(&a.joint_states_topic) {
        let (t, m) = r?;
        if let Some(q) = arm_positions(&names, &m) {
            states.push((t, m.header.stamp.clone(), q));
        }
        if let Some(f) = finger_of(&m, &config.finger_joint) {
            fingers.push((t, m.header.stamp.clone(), f));
        }
    }
    anyhow::ensure!(
        !states.is_empty(),
        "no joint state on {} names the arm's joints {names:?} (set joint_names in the params file if the driver names them otherwise)",
        a.joint_states_topic
    );
    // The images to check, spread over their count: the bag's own where it has one (its
    // metadata or summary), else counted in a pass that reads no image.
    let count = match reader.topic(&a.image_topic).and_then(|t| t.message_count) {
        Some(n) => n as usize,
        None => reader
            .messages(&dreamplan::bag::Filter::topics([a.image_topic.as_str()]))
            .try_fold(0usize, |n, r| r.map(|_| n + 1))?,
    };
    anyhow::ensure!(count > 0, "no image on {}", a.image_topic);
    let n = a.frames.min(count);
    let chosen: Vec<usize> = (0..n).map(|k| (k * (count - 1)) / (n - 1).max(1)).collect();
    // Written into a partial folder, renamed at the end: an error half-way leaves nothing
    // that a second run would be refused for.
    let partial = {
        let mut p = a.out.clone().into_os_string();
        p.push(".partial");
        PathBuf::from(p)
    };
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let result = check_frames(
        &a, &arm, &camera, &reader, &chosen, &states, &fingers, &partial,
    );
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    finish(&a, rows, &camera, &partial)
}

#[allow(clippy::too_many_arguments)]
fn check_frames(
    a: &CheckCalibrationArgs,
    arm: &dreamplan::robot::ArmModel,
    camera: &dreamplan::render::PinholeCamera,
    reader: &BagReader,
    chosen: &[usize],
    states: &[(u64, Time, Vec<f64>)],
    fingers: &[(u64, Time, f64)],
    out: &Path,
) -> anyhow::Result<Vec<Row>> {
    let unstamped = |t: &Time| t.sec == 0 && t.nanosec == 0;
    let mut rows = Vec::new();
    let images = reader.messages(&dreamplan::bag::Filter::topics([a.image_topic.as_str()]));
    // The first image's log time (image 0 is always chosen): frames are timed from it.
    let mut t0 = None;
    for (i, r) in images.enumerate() {
        if !chosen.contains(&i) {
            continue;
        }
        let rec = r?;
        let t = rec.log_time;
        let t0 = *t0.get_or_insert(t);
        // Decoded only when chosen: a long bag of big images is read, not decoded, through.
        let img: Image = rec.decode()?;
        let t_s = t.saturating_sub(t0) as f64 * 1e-9;
        let mut row = Row {
            t_s,
            png: None,
            skipped: None,
            arm_px: 0,
            tcp_px: None,
            depth_m: None,
            fit: None,
        };
        let rgb = dreamplan::vision::rgb_pixels(&img)
            .map_err(|e| anyhow::anyhow!("{} at {t_s:.2} s: {e}", a.image_topic))?;
        anyhow::ensure!(
            (img.width, img.height) == (camera.width, camera.height),
            "the images are {}×{} but the camera info says {}×{}: the info must be the colour camera's",
            img.width,
            img.height,
            camera.width,
            camera.height
        );
        // Stamps where the image and the states both have them, else receive times.
        // (A gripper's own joint states may be stamped otherwise than the arm's.)
        let image_stamped = !unstamped(&img.header.stamp);
        let gap = |series_stamped: bool, l: u64, s: &Time| {
            let stamped = image_stamped && series_stamped;
            (when(s, l, stamped) - when(&img.header.stamp, t, stamped)).abs()
        };
        let arm_stamped = states.iter().all(|(_, s, _)| !unstamped(s));
        let finger_stamped = fingers.iter().all(|(_, s, _)| !unstamped(s));
        let state = states
            .iter()
            .map(|(l, s, q)| (gap(arm_stamped, *l, s), q))
            .min_by_key(|(g, _)| *g);
        let finger = fingers
            .iter()
            .map(|(l, s, f)| (gap(finger_stamped, *l, s), *f))
            .min_by_key(|(g, _)| *g)
            .filter(|(g, _)| *g <= MAX_STATE_GAP_NS)
            .map(|(_, f)| f);
        match state {
            Some((g, q)) if g <= MAX_STATE_GAP_NS => {
                let open = finger.is_none_or(|f| f >= dreamplan::nodes::sim::FINGER_CLOSED_BELOW);
                let drawn = DrawnArm::new(arm, q, open, camera);
                row.arm_px = drawn.area();
                row.tcp_px = drawn.tcp_px;
                row.depth_m = drawn.depth_m;
                let view = RgbView::new(img.width, img.height, &rgb)?;
                let outline = drawn.outline();
                let f = if outline.len() >= 30 {
                    Some(fit(
                        &outline,
                        &edges(&view)?,
                        img.width,
                        img.height,
                        a.search_px,
                    ))
                } else {
                    row.skipped = Some("the arm is drawn outside the image".into());
                    None
                };
                let png = format!("frame_{:02}.png", rows.len());
                crate::world_model::write_png(
                    &out.join(&png),
                    &overlay(&view, &drawn, f.as_ref().map(|f| f.best_shift)),
                    img.width as usize,
                    img.height as usize,
                )?;
                row.png = Some(png);
                row.fit = f;
            }
            _ => row.skipped = Some("no joint state within 0.2 s of it".into()),
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Prints each frame and the verdict, writes report.json and puts the folder in place.
fn finish(
    a: &CheckCalibrationArgs,
    rows: Vec<Row>,
    camera: &dreamplan::render::PinholeCamera,
    partial: &Path,
) -> anyhow::Result<ExitCode> {
    let fits: Vec<&Fit> = rows.iter().filter_map(|r| r.fit.as_ref()).collect();
    for r in &rows {
        match (&r.fit, &r.skipped) {
            (Some(f), _) => println!(
                "{:7.2} s  {}: outline on edges {:.0}% as drawn, {:.0}% shifted by ({:+}, {:+}) px (clutter {:.0}%)",
                r.t_s,
                r.png.as_deref().unwrap_or("-"),
                100.0 * f.on_edges,
                100.0 * f.best_on_edges,
                f.best_shift.0,
                f.best_shift.1,
                100.0 * f.clutter
            ),
            (None, Some(why)) => println!("{:7.2} s  skipped: {why}", r.t_s),
            (None, None) => {}
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let error = median(fits.iter().map(|f| f.error_px()).collect());
    let shift = (
        median(fits.iter().map(|f| f.best_shift.0 as f64).collect()),
        median(fits.iter().map(|f| f.best_shift.1 as f64).collect()),
    );
    // Each frame's correction of the camera's position, their median per axis.
    let corrections: Vec<nalgebra::Vector3<f64>> = rows
        .iter()
        .filter_map(|r| {
            Some(camera_correction(
                camera,
                r.fit.as_ref()?.best_shift,
                r.depth_m?,
            ))
        })
        .collect();
    let suggested = (!corrections.is_empty()).then(|| {
        let axis = |i: usize| median(corrections.iter().map(|c| c[i]).collect()).unwrap_or(0.0);
        camera.world_from_camera.translation.vector
            + nalgebra::Vector3::new(axis(0), axis(1), axis(2))
    });
    let report = serde_json::json!({
        "bag": a.bag,
        "base_from_camera": {
            "xyz": camera.world_from_camera.translation.vector.as_slice(),
            "xyzw": camera.world_from_camera.rotation.coords.as_slice(),
        },
        "frames": rows,
        "frames_fitted": fits.len(),
        "median_offset_px": error,
        "median_shift_px": [shift.0, shift.1],
        "suggested_base_from_camera_xyz": suggested.map(|v| [v.x, v.y, v.z]),
        "tolerance_px": a.tolerance_px,
    });
    std::fs::write(
        partial.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )
    .with_context(|| format!("writing {}", partial.join("report.json").display()))?;
    std::fs::rename(partial, &a.out)
        .with_context(|| format!("renaming {} to {}", partial.display(), a.out.display()))?;
    let path = a.out.join("report.json");
    let Some(error) = error else {
        let mut why: Vec<&str> = rows.iter().filter_map(|r| r.skipped.as_deref()).collect();
        why.sort();
        why.dedup();
        println!(
            "no frame could be checked ({}): nothing to check ({})",
            why.join("; "),
            path.display()
        );
        return Ok(ExitCode::FAILURE);
    };
    let (sx, sy) = (shift.0.unwrap_or(0.0), shift.1.unwrap_or(0.0));
    if error <= a.tolerance_px {
        println!(
            "the drawn arm fits the images within {error:.1} px (median of {} frames; tolerance {} px): the hand-eye pose agrees with the camera ({})",
            fits.len(),
            a.tolerance_px,
            a.out.display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "the drawn arm fits the images best {error:.1} px away (median shift ({sx:+}, {sy:+}) px over {} frames; tolerance {} px): check base_from_camera_xyz/_xyzw, and look at the PNGs in {}",
            fits.len(),
            a.tolerance_px,
            a.out.display()
        );
        if let Some(v) = suggested {
            let q = camera.world_from_camera.rotation.coords;
            let params = a
                .executor_params
                .as_ref()
                .map(|p| format!(" --executor-params {} --node {}", p.display(), a.node))
                .unwrap_or_default();
            println!(
                "a first-order correction of the position alone (orientation kept): base_from_camera_xyz: [{:.4}, {:.4}, {:.4}]; check it again with{params} --camera-pose {:.4},{:.4},{:.4},{},{},{},{}",
                v.x, v.y, v.z, v.x, v.y, v.z, q.x, q.y, q.z, q.w
            );
        }
        Ok(ExitCode::FAILURE)
    }
}
