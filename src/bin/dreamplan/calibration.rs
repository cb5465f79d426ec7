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
use dreamplan::vision::handeye::{
    camera_correction, edge_distance, edges, fit, fit_plane, level_on_table, outline_distance,
    overlay, refine_on_table, table_offset, table_points, DrawnArm, Fit, Plane, RefineFrame,
    Refined, MIN_OUTLINE_PX,
};
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
    /// Depth aligned to the colour images (32FC1 metres or 16UC1 millimetres): the
    /// refinement finds the table's plane in it.
    #[arg(long, default_value = "/camera/depth/image_raw")]
    depth_topic: String,
    /// How far (px) the fit searches for a better place of the drawn outline; by default
    /// a tenth of the image's width (at least 8): 64 px at 640×480.
    #[arg(long)]
    search_px: Option<i64>,
    /// `--search-px`, or its default for the bag's images.
    #[arg(skip)]
    search: i64,
    /// Exit 1 when the median offset over the frames is larger than this (px).
    #[arg(long, default_value_t = 4.0)]
    tolerance_px: f64,
    /// Exit 1 when the table's plane in the depth images is tilted by more than this
    /// (degrees) from where the pose puts the table (`table_z`, level).
    #[arg(long, default_value_t = 1.0)]
    table_tolerance_deg: f64,
    /// Exit 1 when the pose puts the table's plane in the depth images further than this
    /// (cm) from `table_z`.
    #[arg(long, default_value_t = 1.0)]
    table_tolerance_cm: f64,
    /// Refine the hand-eye pose on the checked frames: the table's plane in the depth
    /// images sets the camera's tilt and height (`table_z` of the params file), and the
    /// drawn arm's outline on the images' edges the rest. `auto` when the pose is off
    /// (beyond a tolerance), `always`, or `never`. Each pose tried draws the arm once per
    /// frame.
    #[arg(long, value_enum, default_value_t = Refine::Auto)]
    refine: Refine,
    /// Output folder: frame_NN.png (the drawn arm in magenta over each image, its best
    /// fit in cyan, the tool point as a green cross), frame_NN_refined.png (the same with
    /// the refined pose) and report.json. Must not exist. Exit status: 0 when the arm and
    /// the table (where the bag has depth) agree with the pose, 1 when either is off (or
    /// no frame could be checked), 2 on an error.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Refine {
    Auto,
    Always,
    Never,
}

/// Poses the refinement tries at most (each draws the arm once per frame).
const MAX_POSES: usize = 600;

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
    #[serde(skip)]
    log_time: u64,
    png: Option<String>,
    /// Why the frame tells nothing (the arm out of view, no joint state).
    skipped: Option<String>,
    arm_px: usize,
    tcp_px: Option<(f64, f64)>,
    /// The drawn arm's median depth (m).
    depth_m: Option<f64>,
    fit: Option<Fit>,
    /// The frame drawn with the refined pose, and its fit then.
    refined_png: Option<String>,
    refined_fit: Option<Fit>,
}

/// A fitted frame, kept for the refinement: its image and where the arm was.
struct Kept {
    row: usize,
    rgb: Vec<u8>,
    q: Vec<f64>,
    gripper_open: bool,
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

fn check(mut a: CheckCalibrationArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.frames > 0, "--frames must be > 0");
    anyhow::ensure!(
        a.search_px.is_none_or(|s| (0..=200).contains(&s)),
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
    a.search = a
        .search_px
        .unwrap_or((camera.width as i64 / 10).clamp(8, 200));
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
    let result = result.and_then(|(mut rows, kept)| {
        let workspace = (config.envelope.workspace_min, config.envelope.workspace_max);
        let table = measure_table(&a, &camera, config.table_z, workspace, &reader, &rows)?;
        let off = verdict(&a, &rows, table.as_ref().ok()).is_some_and(|ok| !ok);
        let wanted = match a.refine {
            Refine::Never => false,
            Refine::Always => true,
            Refine::Auto => off,
        };
        let refined = match (&table, wanted, kept.is_empty()) {
            (_, false, _) => Err(None),
            (Err(why), true, _) => Err(Some(format!(
                "{why}; the refinement levels the pose on the table"
            ))),
            (_, true, true) => Err(Some("no frame was fitted".to_string())),
            (Ok(table), true, false) => Ok(refine(
                &a,
                &arm,
                &camera,
                config.table_z,
                table,
                &mut rows,
                &kept,
                &partial,
            )?),
        };
        Ok((rows, table, refined))
    });
    let (rows, table, refined) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    finish(&a, rows, table, refined, &camera, &partial)
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
) -> anyhow::Result<(Vec<Row>, Vec<Kept>)> {
    let unstamped = |t: &Time| t.sec == 0 && t.nanosec == 0;
    let mut rows = Vec::new();
    let mut kept = Vec::new();
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
            log_time: t,
            png: None,
            skipped: None,
            arm_px: 0,
            tcp_px: None,
            depth_m: None,
            fit: None,
            refined_png: None,
            refined_fit: None,
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
                let view = RgbView::new(img.width, img.height, &rgb)?;
                let (drawn, f) = draw_and_fit(a, arm, q, open, camera, &view)?;
                row.arm_px = drawn.area();
                row.tcp_px = drawn.tcp_px;
                row.depth_m = drawn.depth_m;
                if f.is_none() {
                    row.skipped = Some("the arm is drawn outside the image".into());
                }
                let png = format!("frame_{:02}.png", rows.len());
                write_overlay(&out.join(&png), &view, &drawn, f.as_ref())?;
                row.png = Some(png);
                if f.is_some() {
                    kept.push(Kept {
                        row: rows.len(),
                        rgb,
                        q: q.clone(),
                        gripper_open: open,
                    });
                }
                row.fit = f;
            }
            _ => row.skipped = Some("no joint state within 0.2 s of it".into()),
        }
        rows.push(row);
    }
    Ok((rows, kept))
}

/// The arm at `q` drawn through `camera`, and how its outline fits `view`'s edges within
/// `--search-px` (`None`: drawn all but outside the image).
fn draw_and_fit(
    a: &CheckCalibrationArgs,
    arm: &dreamplan::robot::ArmModel,
    q: &[f64],
    gripper_open: bool,
    camera: &dreamplan::render::PinholeCamera,
    view: &RgbView<'_>,
) -> anyhow::Result<(DrawnArm, Option<Fit>)> {
    let drawn = DrawnArm::new(arm, q, gripper_open, camera);
    let outline = drawn.outline();
    let f = if outline.len() >= MIN_OUTLINE_PX {
        Some(fit(
            &outline,
            &edges(view)?,
            view.width,
            view.height,
            a.search,
        ))
    } else {
        None
    };
    Ok((drawn, f))
}

/// `view` with the drawn arm (and the fit's outline) over it, as a PNG at `path`.
fn write_overlay(
    path: &Path,
    view: &RgbView<'_>,
    drawn: &DrawnArm,
    f: Option<&Fit>,
) -> anyhow::Result<()> {
    crate::world_model::write_png(
        path,
        &overlay(view, drawn, f.map(|f| f.best_shift)),
        view.width as usize,
        view.height as usize,
    )?;
    Ok(())
}

/// The median of `v` (the upper one of an even count).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// The first-order correction of the camera's position over the fitted frames (each
/// frame's, their median per axis), where any frame was fitted.
fn position_correction(
    rows: &[Row],
    camera: &dreamplan::render::PinholeCamera,
) -> Option<nalgebra::Vector3<f64>> {
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
    (!corrections.is_empty()).then(|| {
        let axis = |i: usize| median(corrections.iter().map(|c| c[i]).collect()).unwrap_or(0.0);
        camera.world_from_camera.translation.vector
            + nalgebra::Vector3::new(axis(0), axis(1), axis(2))
    })
}

/// The table in the bag's depth images, against where the given pose puts it.
struct Table {
    /// In the camera's frame.
    plane: Plane,
    /// How far the pose puts it from the table: (degrees tilted, m higher than table_z).
    offset: (f64, f64),
    depth_images: usize,
}

impl Table {
    fn within(&self, a: &CheckCalibrationArgs) -> bool {
        self.offset.0 <= a.table_tolerance_deg
            && 100.0 * self.offset.1.abs() <= a.table_tolerance_cm
    }
}

/// The table's plane in the depth images nearest in time to the checked frames (a grid of
/// about 80 columns of each); `Ok(Err(why))` when the bag has no depth or no plane holds a
/// fifth of its points.
fn measure_table(
    a: &CheckCalibrationArgs,
    camera: &dreamplan::render::PinholeCamera,
    table_z: f64,
    workspace: ([f64; 3], [f64; 3]),
    reader: &BagReader,
    rows: &[Row],
) -> anyhow::Result<Result<Table, String>> {
    if reader.topic(&a.depth_topic).is_none() {
        return Ok(Err(format!(
            "the bag has no {} (--depth-topic): the table was not checked",
            a.depth_topic
        )));
    }
    let filter = dreamplan::bag::Filter::topics([a.depth_topic.as_str()]);
    // First the log times alone, then only the nearest images are decoded.
    let mut times = Vec::new();
    for r in reader.messages(&filter) {
        times.push(r?.log_time);
    }
    let mut wanted: Vec<usize> = rows
        .iter()
        .filter_map(|r| {
            (0..times.len()).min_by_key(|&i| (times[i] as i64 - r.log_time as i64).abs())
        })
        .collect();
    wanted.dedup();
    let mut points = Vec::new();
    for (i, r) in reader.messages(&filter).enumerate() {
        if !wanted.contains(&i) {
            continue;
        }
        // Depth the table cannot be read from leaves the table unchecked; the arm's check
        // still stands.
        let depth = match r?
            .decode::<Image>()
            .map_err(|e| e.to_string())
            .and_then(|img| dreamplan::nodes::executor::decode_depth(&img))
        {
            Ok(d) => d,
            Err(e) => {
                return Ok(Err(format!(
                    "{}: {e}: the table was not checked",
                    a.depth_topic
                )))
            }
        };
        if (depth.width, depth.height) != (camera.width, camera.height) {
            return Ok(Err(format!(
                "the depth images on {} are {}×{} but the colour images {}×{}: the table was not checked (give depth aligned to the colour camera, --depth-topic)",
                a.depth_topic, depth.width, depth.height, camera.width, camera.height
            )));
        }
        points.extend(table_points(
            camera,
            &depth.data,
            80,
            table_z,
            [workspace.0[0], workspace.0[1]],
            [workspace.1[0], workspace.1[1]],
        ));
    }
    let Some(plane) = fit_plane(&points, 0.01) else {
        return Ok(Err(format!(
            "no plane holds a fifth of the {} depth points of {} images within 1 cm where the pose puts the table (rays meeting table_z inside the workspace box): the table was not checked",
            points.len(),
            wanted.len()
        )));
    };
    Ok(Ok(Table {
        plane,
        offset: table_offset(&camera.world_from_camera, &plane, table_z),
        depth_images: wanted.len(),
    }))
}

/// Whether the given pose agrees with the bag: the drawn arm within `--tolerance-px` and
/// the table (where measured) within its tolerances; `None` when no frame was fitted.
fn verdict(a: &CheckCalibrationArgs, rows: &[Row], table: Option<&Table>) -> Option<bool> {
    let error = median(
        rows.iter()
            .filter_map(|r| Some(r.fit.as_ref()?.error_px()))
            .collect(),
    )?;
    Some(error <= a.tolerance_px && table.is_none_or(|t| t.within(a)))
}

/// The pose refined on the kept frames: levelled on the table the depth images show
/// ([`level_on_table`]), then moved along the table and turned about the vertical until
/// the drawn arm lies best on the images' edges ([`refine_on_table`]); each frame drawn
/// again with it (`frame_NN_refined.png`) and fitted again, into its row.
#[allow(clippy::too_many_arguments)]
fn refine(
    a: &CheckCalibrationArgs,
    arm: &dreamplan::robot::ArmModel,
    camera: &dreamplan::render::PinholeCamera,
    table_z: f64,
    table: &Table,
    rows: &mut [Row],
    kept: &[Kept],
    out: &Path,
) -> anyhow::Result<(Refined, f64)> {
    let plane = table.plane;
    let given = camera.world_from_camera;
    let (mut levelled, pivot) = level_on_table(&given, &plane, table_z);
    let mut frames = Vec::new();
    for k in kept {
        let view = RgbView::new(camera.width, camera.height, &k.rgb)?;
        frames.push(RefineFrame {
            q: k.q.clone(),
            gripper_open: k.gripper_open,
            distance: edge_distance(&view)?,
        });
    }
    let cap = a.search.max(1) as f64;
    let given_px = outline_distance(arm, &frames, camera, cap);
    // The search's steps start at 2 cm: the outline's best shift, turned into a move of
    // the camera along the table, brings a pose that is centimetres off within them.
    let mut at = camera.clone();
    at.world_from_camera = levelled;
    let mut moves = Vec::new();
    for k in kept {
        let view = RgbView::new(camera.width, camera.height, &k.rgb)?;
        if let (drawn, Some(f)) = draw_and_fit(a, arm, &k.q, k.gripper_open, &at, &view)? {
            if let Some(depth) = drawn.depth_m {
                let c = camera_correction(&at, f.best_shift, depth);
                moves.push(along_table(&levelled.rotation, c));
            }
        }
    }
    if !moves.is_empty() {
        for i in 0..2 {
            levelled.translation.vector[i] +=
                median(moves.iter().map(|m| m[i]).collect()).unwrap_or(0.0);
        }
    }
    let pivot = pivot + (levelled.translation.vector - at.world_from_camera.translation.vector);
    let progress = crate::progress::PhaseProgress::stderr();
    let refined = refine_on_table(arm, &frames, camera, levelled, pivot, cap, MAX_POSES, |n| {
        progress.update("refine", n.min(MAX_POSES), MAX_POSES, "poses tried")
    });
    progress.finish();
    let mut at = camera.clone();
    at.world_from_camera = refined.world_from_camera;
    for k in kept {
        let view = RgbView::new(camera.width, camera.height, &k.rgb)?;
        let (drawn, f) = draw_and_fit(a, arm, &k.q, k.gripper_open, &at, &view)?;
        let row = &mut rows[k.row];
        let png = row
            .png
            .as_deref()
            .unwrap_or("frame.png")
            .replace(".png", "_refined.png");
        write_overlay(&out.join(&png), &view, &drawn, f.as_ref())?;
        row.refined_png = Some(png);
        row.refined_fit = f;
    }
    Ok((refined, given_px))
}

/// The camera's move along the table (base x, y) that has `c`'s components along the
/// camera's own x and y axes, for a camera turned by `r`: it shifts the image as `c` does
/// (a move of `c` with its vertical part dropped comes short where the camera looks
/// down at a slant). `c` without its vertical part for a camera whose x or y axis is
/// near vertical.
fn along_table(
    r: &nalgebra::UnitQuaternion<f64>,
    c: nalgebra::Vector3<f64>,
) -> nalgebra::Vector3<f64> {
    let m = r.to_rotation_matrix().into_inner();
    let want = r.inverse() * c;
    // A horizontal move (x, y, 0) seen along the camera's x and y axes.
    let a = nalgebra::Matrix2::new(m[(0, 0)], m[(1, 0)], m[(0, 1)], m[(1, 1)]);
    match a.try_inverse().filter(|_| a.determinant().abs() > 0.1) {
        Some(inv) => {
            let v = inv * nalgebra::Vector2::new(want.x, want.y);
            nalgebra::Vector3::new(v.x, v.y, 0.0)
        }
        None => nalgebra::Vector3::new(c.x, c.y, 0.0),
    }
}

/// Prints each frame and the verdict, writes report.json and puts the folder in place.
/// `refined`: the refined pose, or why there is none (`None`: not asked for).
fn finish(
    a: &CheckCalibrationArgs,
    rows: Vec<Row>,
    table: Result<Table, String>,
    refined: Result<(Refined, f64), Option<String>>,
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
    let error = median(fits.iter().map(|f| f.error_px()).collect());
    let shift = (
        median(fits.iter().map(|f| f.best_shift.0 as f64).collect()),
        median(fits.iter().map(|f| f.best_shift.1 as f64).collect()),
    );
    let ok = verdict(a, &rows, table.as_ref().ok());
    let suggested = position_correction(&rows, camera);
    let refined_error = median(
        rows.iter()
            .filter_map(|r| Some(r.refined_fit.as_ref()?.error_px()))
            .collect(),
    );
    let table_json = match &table {
        Ok(t) => serde_json::json!({
            "normal_in_camera": t.plane.normal.as_slice(),
            "distance_m": t.plane.distance_m,
            "inlier_share": t.plane.inlier_share,
            "depth_images": t.depth_images,
            "tilt_deg": t.offset.0,
            "height_above_table_z_m": t.offset.1,
            "within_tolerance": t.within(a),
        }),
        Err(why) => serde_json::json!({ "not_checked": why }),
    };
    let refined_json = match &refined {
        Ok((r, given_px)) => serde_json::json!({
            "base_from_camera": {
                "xyz": r.world_from_camera.translation.vector.as_slice(),
                "xyzw": r.world_from_camera.rotation.coords.as_slice(),
            },
            "median_offset_px": refined_error,
            "outline_distance_px_given": given_px,
            "outline_distance_px_levelled": r.distance_before_px,
            "outline_distance_px_refined": r.distance_after_px,
            "poses_tried": r.evaluations,
        }),
        Err(Some(why)) => serde_json::json!({ "not_refined": why }),
        Err(None) => serde_json::Value::Null,
    };
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
        "table": table_json,
        "agrees": ok,
        "suggested_base_from_camera_xyz": suggested.map(|v| [v.x, v.y, v.z]),
        "refined": refined_json,
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
    let (Some(error), Some(ok)) = (error, ok) else {
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
    let params = a
        .executor_params
        .as_ref()
        .map(|p| format!(" --executor-params {} --node {}", p.display(), a.node))
        .unwrap_or_default();
    if error <= a.tolerance_px {
        println!(
            "the drawn arm fits the images within {error:.1} px (median of {} frames; tolerance {} px)",
            fits.len(),
            a.tolerance_px,
        );
    } else {
        println!(
            "the drawn arm fits the images best {error:.1} px away (median shift ({sx:+}, {sy:+}) px over {} frames; tolerance {} px)",
            fits.len(),
            a.tolerance_px,
        );
    }
    match &table {
        Ok(t) => println!(
            "the table in {} depth images lies {:.2}° tilted and {:+.1} cm off table_z from where the pose puts it (tolerance {}°, {} cm)",
            t.depth_images,
            t.offset.0,
            100.0 * t.offset.1,
            a.table_tolerance_deg,
            a.table_tolerance_cm
        ),
        Err(why) => println!("{why}"),
    }
    if ok {
        println!(
            "the hand-eye pose agrees with the camera{} ({})",
            if table.is_ok() {
                ""
            } else {
                " (the arm only: the table was not checked)"
            },
            a.out.display()
        );
    } else {
        println!(
            "the hand-eye pose is off: check base_from_camera_xyz/_xyzw (and table_z), and look at the PNGs in {}",
            a.out.display()
        );
    }
    match &refined {
        Ok((r, given_px)) => {
            let (v, q) = (
                r.world_from_camera.translation.vector,
                r.world_from_camera.rotation.coords,
            );
            println!(
                "refined on {} frames (levelled on the table, then along it and about the vertical: {} poses tried; the outline's mean distance to an edge {:.2} px with the given pose, {:.2} px refined): base_from_camera_xyz: [{:.4}, {:.4}, {:.4}], base_from_camera_xyzw: [{:.6}, {:.6}, {:.6}, {:.6}]; drawn with it, the arm fits these frames {} (frame_NN_refined.png). Check it on another bag with{params} --camera-pose {:.4},{:.4},{:.4},{:.6},{:.6},{:.6},{:.6}",
                fits.len(),
                r.evaluations,
                given_px,
                r.distance_after_px,
                v.x, v.y, v.z, q.x, q.y, q.z, q.w,
                refined_error.map_or("nowhere (the arm drawn outside the images)".into(), |e| format!("{e:.1} px away")),
                v.x, v.y, v.z, q.x, q.y, q.z, q.w
            );
        }
        Err(why) => {
            if let Some(why) = why {
                println!("not refined: {why}");
            }
            if let Some(v) = suggested.filter(|_| !ok) {
                let q = camera.world_from_camera.rotation.coords;
                println!(
                    "a first-order correction of the position alone (orientation kept): base_from_camera_xyz: [{:.4}, {:.4}, {:.4}]; check it again with{params} --camera-pose {:.4},{:.4},{:.4},{},{},{},{}",
                    v.x, v.y, v.z, v.x, v.y, v.z, q.x, q.y, q.z, q.w
                );
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
