//! Camera node: publishes `sensor_msgs/Image` and a latched `sensor_msgs/CameraInfo`.
//!
//! Sources: a synthetic test pattern (no hardware needed), a list of image files played
//! in a loop, a video file played in a loop or a camera device (both through OpenCV's
//! `videoio`: V4L2 on Linux), or another image topic (re-stamped and paired with this
//! camera's info).
//!
//! Calibration: an ideal pinhole from `hfov_deg` (or `intrinsics`) by default, or a
//! calibration file in the ROS camera_info YAML format (what `camera_calibration` writes
//! and `camera_info_manager` reads) with `calibration: FILE`.
//!
//! With `object_only_topic` it also publishes each frame's object alone on a plain table
//! ([`crate::vision::object_only`]: the task's colour segmentation), stamped as the frame:
//! the object-only frames that the world model's verifier and its training clips read,
//! which the built-in world renders and a real camera does not give.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{Node, NodeContext};
use crate::bus::{Bus, Qos};
use crate::msg::prelude::*;
use crate::msg::sensor_msgs::RegionOfInterest;

/// Where frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Moving colour bars, generated.
    #[default]
    Pattern,
    /// PNG/JPEG files from `files`, in order, looping.
    Files,
    /// Images arriving on `input_topic`.
    Topic,
    /// A video file (`video`), played at `rate_hz` from its first frame again at its end.
    Video,
    /// A camera device (`device`: `/dev/video0` or an index such as `0`), read at its own
    /// pace; `rate_hz` caps the rate published.
    Device,
}

/// Camera parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Frame source.
    pub source: Source,
    /// Frames per second (pattern and files).
    pub rate_hz: f64,
    /// Image width in pixels (pattern; files are resized to it).
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Horizontal field of view used for the default intrinsics.
    pub hfov_deg: f64,
    /// Intrinsics override `[fx, fy, cx, cy]` in pixels.
    pub intrinsics: Option<[f64; 4]>,
    /// Optical frame of the camera.
    pub frame_id: String,
    /// Output image topic (empty, with `source: topic`: the frames are not re-published,
    /// only their object-only frames, for a graph whose camera topics come from elsewhere).
    pub image_topic: String,
    /// Output camera-info topic (latched; empty: none).
    pub info_topic: String,
    /// Image files for `source: files`.
    pub files: Vec<PathBuf>,
    /// Input image topic for `source: topic`.
    pub input_topic: String,
    /// Video file for `source: video`.
    pub video: Option<PathBuf>,
    /// Device for `source: device`: a path (`/dev/video0`) or an index (`0`, as a string
    /// or a number: `ros2 launch … device:=0` gives a number; refused before session 48).
    #[serde(deserialize_with = "string_or_number")]
    pub device: String,
    /// Calibration in the ROS camera_info YAML format; its image size must be
    /// `width`×`height`. Overrides `hfov_deg` and `intrinsics`. Empty: none.
    pub calibration: Option<PathBuf>,
    /// Also publish each frame's object alone on a plain table on this topic, stamped as
    /// the frame (rgb8). Empty: off.
    pub object_only_topic: String,
    /// Whose colour segmentation finds the object: `rope`, `cloth` or `toy`; empty: the
    /// task of the latest `reset` on `episode_topic` (no object-only frame before one).
    pub object_task: String,
    /// Episode events (in, with `object_only_topic` and an empty `object_task`).
    pub episode_topic: String,
}

/// A string, or an integer taken as its decimal text.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(u64),
    }
    Ok(match <Either as serde::Deserialize>::deserialize(d)? {
        Either::Text(s) => s,
        Either::Number(n) => n.to_string(),
    })
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            source: Source::Pattern,
            rate_hz: 10.0,
            width: 640,
            height: 480,
            hfov_deg: 60.0,
            intrinsics: None,
            frame_id: "camera_color_optical_frame".into(),
            image_topic: "/camera/image_raw".into(),
            info_topic: "/camera/camera_info".into(),
            files: Vec::new(),
            input_topic: "/camera/input".into(),
            video: None,
            device: "/dev/video0".into(),
            calibration: None,
            object_only_topic: String::new(),
            object_task: String::new(),
            episode_topic: "/dreamplan/episode".into(),
        }
    }
}

/// The camera node.
pub struct CameraNode {
    config: CameraConfig,
    frames: Vec<Vec<u8>>,
    capture: Option<Capture>,
    info: CameraInfo,
}

/// A `rows`×`cols` matrix as the camera_info YAML writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlMatrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl YamlMatrix {
    fn checked(
        &self,
        name: &str,
        rows: Option<usize>,
        cols: Option<usize>,
    ) -> anyhow::Result<&[f64]> {
        anyhow::ensure!(
            rows.is_none_or(|r| r == self.rows) && cols.is_none_or(|c| c == self.cols),
            "{name} is {}×{}, expected {}×{}",
            self.rows,
            self.cols,
            rows.map_or("N".into(), |r| r.to_string()),
            cols.map_or("N".into(), |c| c.to_string())
        );
        anyhow::ensure!(
            self.data.len() == self.rows * self.cols,
            "{name} declares {}×{} but holds {} numbers",
            self.rows,
            self.cols,
            self.data.len()
        );
        anyhow::ensure!(
            self.data.iter().all(|v| v.is_finite()),
            "{name} holds a number that is not finite"
        );
        Ok(&self.data)
    }
}

/// The ROS camera_info YAML format (`camera_calibration_parsers`); other keys, such as
/// `camera_name`, are ignored.
#[derive(Debug, Deserialize)]
struct CalibrationYaml {
    image_width: u32,
    image_height: u32,
    camera_matrix: YamlMatrix,
    distortion_model: String,
    distortion_coefficients: YamlMatrix,
    #[serde(default)]
    rectification_matrix: Option<YamlMatrix>,
    #[serde(default)]
    projection_matrix: Option<YamlMatrix>,
}

/// A `CameraInfo` (stamp left at zero) from a calibration file in the ROS camera_info YAML
/// format. A missing rectification is the identity; a missing projection is `[K | 0]`.
pub fn load_calibration(path: &std::path::Path, frame_id: &str) -> anyhow::Result<CameraInfo> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let y: CalibrationYaml = serde_yaml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a camera_info calibration: {e}", path.display()))?;
    let at = |e: anyhow::Error| anyhow::anyhow!("{}: {e}", path.display());
    anyhow::ensure!(
        y.image_width > 0 && y.image_height > 0,
        "{}: image_width and image_height must be > 0",
        path.display()
    );
    let k: [f64; 9] = y
        .camera_matrix
        .checked("camera_matrix", Some(3), Some(3))
        .map_err(at)?
        .try_into()?;
    let d = y
        .distortion_coefficients
        .checked("distortion_coefficients", Some(1), None)
        .map_err(at)?
        .to_vec();
    let r: [f64; 9] = match &y.rectification_matrix {
        Some(m) => m
            .checked("rectification_matrix", Some(3), Some(3))
            .map_err(at)?
            .try_into()?,
        None => [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    };
    let p: [f64; 12] = match &y.projection_matrix {
        Some(m) => m
            .checked("projection_matrix", Some(3), Some(4))
            .map_err(at)?
            .try_into()?,
        None => [
            k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0,
        ],
    };
    Ok(CameraInfo {
        header: Header {
            stamp: Time::default(),
            frame_id: frame_id.to_string(),
        },
        height: y.image_height,
        width: y.image_width,
        distortion_model: y.distortion_model,
        d,
        k,
        r,
        p,
        binning_x: 0,
        binning_y: 0,
        roi: RegionOfInterest::default(),
    })
}

/// How long a video or device source may fail every read before it is opened again; a
/// reopen that fails ends the node with the reason.
pub const REOPEN_AFTER_S: f64 = 3.0;

/// What to do about a failed read of a video or device source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReadFailure {
    /// Skip this frame; `first` is true for the first failure of a streak (say it once).
    Skip {
        /// The streak's first failure.
        first: bool,
    },
    /// Failures for [`REOPEN_AFTER_S`]: open the source again.
    Reopen,
}

/// A streak of failed reads. A USB camera drops a frame now and then (a select timeout,
/// a short USB reset): that costs the frame, not the node, which ended on the first failed
/// read before session 43.
#[derive(Debug, Default)]
pub struct ReadFailures {
    since: Option<std::time::Instant>,
    count: u64,
}

impl ReadFailures {
    /// A read failed at `now`.
    pub fn failed(&mut self, now: std::time::Instant) -> OnReadFailure {
        self.count += 1;
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since).as_secs_f64() >= REOPEN_AFTER_S {
            self.since = Some(now);
            OnReadFailure::Reopen
        } else {
            OnReadFailure::Skip {
                first: self.count == 1,
            }
        }
    }

    /// A read succeeded: the number of failures of the streak it ends (0 for none).
    pub fn recovered(&mut self) -> u64 {
        self.since = None;
        std::mem::take(&mut self.count)
    }
}

/// A video file or a camera device opened through OpenCV, giving rgb8 frames of the
/// configured size.
#[cfg(feature = "videoio")]
struct Capture {
    cap: opencv::videoio::VideoCapture,
    /// Start again at the end (files).
    looping: bool,
    width: u32,
    height: u32,
    what: String,
    /// The size of the frames as read, before the resize (after the first read).
    native: Option<(i32, i32)>,
}

/// Without the `videoio` feature there is no capture (no value of this type can exist): a
/// video or device source is refused at start with the reason.
#[cfg(not(feature = "videoio"))]
enum Capture {}

#[cfg(not(feature = "videoio"))]
impl Capture {
    fn open(c: &CameraConfig) -> anyhow::Result<Self> {
        anyhow::bail!(
            "camera source `{}` needs OpenCV's videoio, and this dreamplan was built without \
             the `videoio` feature (a default one): rebuild with it, or use source `pattern`, \
             `files` or `topic`",
            format!("{:?}", c.source).to_lowercase()
        )
    }

    fn read(&mut self) -> anyhow::Result<Vec<u8>> {
        match *self {}
    }
}

#[cfg(feature = "videoio")]
impl Capture {
    fn open(c: &CameraConfig) -> anyhow::Result<Self> {
        use opencv::prelude::*;
        use opencv::videoio::{VideoCapture, CAP_ANY};
        let (cap, looping, what) = match c.source {
            Source::Video => {
                let path = c
                    .video
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("source `video` needs `video: FILE`"))?;
                anyhow::ensure!(path.is_file(), "video {}: no such file", path.display());
                let cap = VideoCapture::from_file(path, CAP_ANY)?;
                (cap, true, format!("video {}", path.display()))
            }
            _ => {
                let cap = match c.device.trim().parse::<i32>() {
                    Ok(index) => VideoCapture::new(index, CAP_ANY)?,
                    Err(_) => VideoCapture::from_file(&c.device, CAP_ANY)?,
                };
                let mut cap = cap;
                // V4L2 queues a few frames: read at a lower rate than the device's, each
                // frame would be that many frames old. One buffer keeps it the newest
                // (a backend without the property ignores it).
                let _ = cap.set(opencv::videoio::CAP_PROP_BUFFERSIZE, 1.0);
                // Ask for the configured mode: a UVC camera opens in its default one
                // (often 640×480), which was resized to width×height before session 52,
                // stretched when the aspect differs. A device that cannot give it is
                // checked below.
                let _ = cap.set(opencv::videoio::CAP_PROP_FRAME_WIDTH, f64::from(c.width));
                let _ = cap.set(opencv::videoio::CAP_PROP_FRAME_HEIGHT, f64::from(c.height));
                (cap, false, format!("camera device {}", c.device))
            }
        };
        anyhow::ensure!(
            cap.is_opened()?,
            "{what}: OpenCV cannot open it (no such device, no permission, or no decoder for its format)"
        );
        let mut me = Self {
            cap,
            looping,
            width: c.width,
            height: c.height,
            what,
            native: None,
        };
        // Fail at start, not at the first tick, on a file with no readable frame.
        me.read()?;
        if looping {
            me.rewind()?;
        }
        // Frames of another aspect than width×height are stretched by the resize: a
        // calibration made at width×height does not describe them, and the executor's
        // 3-D points would be off. Refused with a calibration, said without one.
        if let Some((w, h)) = me.native {
            let (want, got) = (
                f64::from(c.width) / f64::from(c.height),
                f64::from(w) / f64::from(h),
            );
            if (want / got - 1.0).abs() > 0.01 {
                let what = format!(
                    "{}: its frames are {w}×{h}, resized to {}×{} they are stretched (aspect {got:.3} to {want:.3})",
                    me.what, c.width, c.height
                );
                match &c.calibration {
                    Some(cal) => anyhow::bail!(
                        "{what}, and the calibration {} is for {}×{}: set width and height to the camera's mode, calibrated at it",
                        cal.display(),
                        c.width,
                        c.height
                    ),
                    None => tracing::warn!("camera: {what}; set width and height to the camera's mode"),
                }
            }
        }
        Ok(me)
    }

    fn rewind(&mut self) -> anyhow::Result<()> {
        use opencv::prelude::*;
        self.cap.set(opencv::videoio::CAP_PROP_POS_FRAMES, 0.0)?;
        Ok(())
    }

    /// The next frame as rgb8 bytes of the configured size.
    fn read(&mut self) -> anyhow::Result<Vec<u8>> {
        use opencv::core::{Mat, Size};
        use opencv::imgproc;
        use opencv::prelude::*;
        let mut bgr = Mat::default();
        let mut got = self.cap.read(&mut bgr)? && !bgr.empty();
        if !got && self.looping {
            self.rewind()?;
            got = self.cap.read(&mut bgr)? && !bgr.empty();
        }
        anyhow::ensure!(got, "{}: no frame", self.what);
        anyhow::ensure!(
            bgr.channels() == 3,
            "{}: frames with {} channels (BGR expected)",
            self.what,
            bgr.channels()
        );
        self.native = Some((bgr.cols(), bgr.rows()));
        let mut rgb = Mat::default();
        imgproc::cvt_color_def(&bgr, &mut rgb, imgproc::COLOR_BGR2RGB)?;
        let (w, h) = (self.width as i32, self.height as i32);
        let out = if rgb.cols() != w || rgb.rows() != h {
            let mut sized = Mat::default();
            imgproc::resize(
                &rgb,
                &mut sized,
                Size::new(w, h),
                0.0,
                0.0,
                imgproc::INTER_AREA,
            )?;
            sized
        } else {
            rgb
        };
        Ok(out.data_bytes()?.to_vec())
    }
}

/// Ideal pinhole calibration (no distortion) for a `width`×`height` image.
/// Intrinsics are `[fx, fy, cx, cy]` in pixels.
pub fn pinhole_camera_info(
    width: u32,
    height: u32,
    intrinsics: [f64; 4],
    frame_id: &str,
) -> CameraInfo {
    let [fx, fy, cx, cy] = intrinsics;
    CameraInfo {
        header: Header {
            stamp: Time::default(),
            frame_id: frame_id.to_string(),
        },
        height,
        width,
        distortion_model: "plumb_bob".into(),
        d: vec![0.0; 5],
        k: [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
        r: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p: [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
        binning_x: 0,
        binning_y: 0,
        roi: RegionOfInterest::default(),
    }
}

/// Intrinsics `[fx, fy, cx, cy]` of a square-pixel camera with horizontal FOV `hfov_deg`
/// and its principal point at the image's centre, as `CameraInfo`'s `K` writes them (the
/// first pixel's centre at 0, so the centre of a 640-pixel row is 319.5).
pub fn intrinsics_from_hfov(width: u32, height: u32, hfov_deg: f64) -> [f64; 4] {
    let fx = 0.5 * width as f64 / (0.5 * hfov_deg.to_radians()).tan();
    [
        fx,
        fx,
        0.5 * width as f64 - crate::render::camera::ROS_PRINCIPAL_OFFSET,
        0.5 * height as f64 - crate::render::camera::ROS_PRINCIPAL_OFFSET,
    ]
}

/// Frame `index` of the synthetic test pattern: eight vertical colour bars scrolling one
/// bar width per 16 frames, with a white square marking the frame count on a dark band.
pub fn test_pattern(width: u32, height: u32, index: u64) -> Vec<u8> {
    const BARS: [[u8; 3]; 8] = [
        [235, 235, 235],
        [235, 235, 16],
        [16, 235, 235],
        [16, 235, 16],
        [235, 16, 235],
        [235, 16, 16],
        [16, 16, 235],
        [16, 16, 16],
    ];
    let (w, h) = (width as usize, height as usize);
    let bar_w = w.div_ceil(8).max(1);
    let shift = (index as usize % 16) * bar_w / 16;
    let mut data = vec![0u8; w * h * 3];
    let band = h * 7 / 8;
    let marker = (index as usize * 4) % w.max(1);
    for (y, row) in data.chunks_exact_mut(w * 3).enumerate() {
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let c = if y >= band {
                if x >= marker && x < marker + (h - band) {
                    [255, 255, 255]
                } else {
                    [32, 32, 32]
                }
            } else {
                BARS[((x + shift) / bar_w) % 8]
            };
            px.copy_from_slice(&c);
        }
    }
    data
}

fn load_frame(path: &std::path::Path, width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let img = crate::vlm::image::open_upright(path)
        .with_context(|| format!("reading image {}", path.display()))?;
    let img = if img.width() != width || img.height() != height {
        img.resize_exact(width, height, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    Ok(img.to_rgb8().into_raw())
}

/// The object-only frames of `object_only_topic`: the task to segment for, its publisher.
struct ObjectOnly {
    publisher: Option<crate::bus::Publisher<Image>>,
    task: Option<crate::sim::tasks::Task>,
    episodes: Option<crate::bus::Subscriber<EpisodeEvent>>,
    /// Whether a frame went without (no task yet, or one that failed) since the last one
    /// made: warned once, not per frame.
    warned: bool,
    /// Whether frames without the object were said since the last one with it.
    empty_warned: bool,
}

impl ObjectOnly {
    fn new<B: Bus>(c: &CameraConfig, ctx: &NodeContext<B>) -> anyhow::Result<Self> {
        let on = !c.object_only_topic.is_empty();
        Ok(Self {
            publisher: on
                .then(|| {
                    ctx.bus
                        .publisher::<Image>(&c.object_only_topic, Qos::keep_last(5))
                })
                .transpose()?,
            task: crate::sim::tasks::Task::from_name(&c.object_task),
            episodes: (on && c.object_task.is_empty())
                .then(|| {
                    ctx.bus
                        .subscribe::<EpisodeEvent>(&c.episode_topic, Qos::keep_last(100))
                })
                .transpose()?,
            warned: false,
            empty_warned: false,
        })
    }

    /// The object-only frame of `img` (rgb8, bgr8, rgba8 or bgra8), stamped as it; `None` (warned once)
    /// without a task or for an image that cannot be read.
    fn frame(&mut self, img: &Image, node: &str) -> Option<Image> {
        if let Some(events) = self.episodes.as_mut() {
            while let Some(e) = events.try_recv() {
                if e.event != EpisodeEvent::EVENT_RESET {
                    continue;
                }
                // A reset naming no known task leaves the task as it was (as the planner
                // does).
                match crate::sim::tasks::Task::from_name(&e.task) {
                    Some(t) => self.task = Some(t),
                    None => {
                        tracing::warn!(node = %node, "reset names task `{}`, not rope, cloth or toy: keeping {:?}", e.task, self.task)
                    }
                }
            }
        }
        let made = self
            .task
            .ok_or_else(|| "no episode reset has named the task yet".to_string())
            .and_then(|task| {
                let rgb = crate::world_model::clip::image_rgb(img).map_err(|e| e.to_string())?;
                let view = crate::vision::RgbView::new(img.width, img.height, &rgb)
                    .map_err(|e| e.to_string())?;
                let params = crate::planner::eval::segment_params(task);
                let (data, found) = crate::vision::object_only(&view, &params).map_err(|e| e.to_string())?;
                // A frame without the task's object is published (all table: the object
                // may have left the view), and said once.
                if !found && !std::mem::replace(&mut self.empty_warned, true) {
                    tracing::warn!(node = %node, "no {} found in the camera's frames (its colour segmentation): the object-only frames show only the table", task.name());
                }
                self.empty_warned &= !found;
                Ok(data)
            });
        match made {
            Ok(rgb) => {
                self.warned = false;
                let frame = crate::render::Frame {
                    width: img.width,
                    height: img.height,
                    rgb,
                    depth: Vec::new(),
                };
                Some(super::sim::rgb_image(
                    &frame,
                    &img.header.stamp,
                    &img.header.frame_id,
                ))
            }
            Err(e) => {
                if !std::mem::replace(&mut self.warned, true) {
                    tracing::warn!(node = %node, "no object-only frame: {e}");
                }
                None
            }
        }
    }

    /// Makes and publishes `img`'s object-only frame, if configured. A reader that cannot
    /// keep up costs that frame (warned once), never the camera; `false`: the bus closed.
    fn publish(&mut self, img: &Image, node: &str) -> bool {
        if self.publisher.is_none() {
            return true;
        }
        let Some(m) = self.frame(img, node) else {
            return true;
        };
        let Some(p) = &self.publisher else {
            return true;
        };
        match p.publish(m) {
            Ok(()) => true,
            Err(crate::bus::BusError::Closed(_)) => false,
            Err(e) => {
                if !std::mem::replace(&mut self.warned, true) {
                    tracing::warn!(node = %node, "object-only frame not sent: {e}");
                }
                true
            }
        }
    }
}

impl Node for CameraNode {
    const KIND: &'static str = "camera";
    type Config = CameraConfig;
    /// `rate_hz` applies from the next frame (pattern, files, video, device); the source,
    /// size, calibration and topics are read at start.
    const LIVE: &'static [&'static str] = &["rate_hz"];

    fn declared(config: &CameraConfig) -> Option<serde_yaml::Value> {
        serde_yaml::to_value(config).ok()
    }

    fn validate(config: &CameraConfig) -> anyhow::Result<()> {
        // Bounded both ways: 1e10 Hz made a zero period, which tokio's interval refuses
        // with a panic, and 1e-20 Hz overflowed the period (both could be set live).
        anyhow::ensure!(
            config.rate_hz.is_finite() && (1e-3..=1000.0).contains(&config.rate_hz),
            "rate_hz must be between 0.001 and 1000"
        );
        Ok(())
    }

    fn new(mut config: CameraConfig) -> anyhow::Result<Self> {
        // An empty path means none (a ROS launch argument cannot be left out).
        let none_if_empty = |p: &mut Option<PathBuf>| {
            if p.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                *p = None;
            }
        };
        none_if_empty(&mut config.calibration);
        none_if_empty(&mut config.video);
        anyhow::ensure!(
            config.width > 0 && config.height > 0,
            "width and height must be > 0"
        );
        anyhow::ensure!(
            config.width <= 16384 && config.height <= 16384,
            "width and height must be ≤ 16384"
        );
        Self::validate(&config)?;
        anyhow::ensure!(
            !config.image_topic.is_empty() || config.source == Source::Topic,
            "image_topic may be empty only with source `topic` (the frames come from elsewhere)"
        );
        anyhow::ensure!(
            !(config.image_topic.is_empty() && config.object_only_topic.is_empty()),
            "image_topic and object_only_topic are both empty: the camera would publish nothing"
        );
        anyhow::ensure!(
            config.object_task.is_empty()
                || crate::sim::tasks::Task::from_name(&config.object_task).is_some(),
            "object_task `{}` is not a task: rope, cloth, toy, or empty for the episode's",
            config.object_task
        );
        anyhow::ensure!(
            config.hfov_deg > 0.0 && config.hfov_deg < 180.0,
            "hfov_deg must be in (0, 180)"
        );
        let mut info = match &config.calibration {
            Some(path) => {
                let info = load_calibration(path, &config.frame_id)?;
                anyhow::ensure!(
                    (info.width, info.height) == (config.width, config.height),
                    "{}: calibrated for {}×{} images, the camera is set to {}×{}",
                    path.display(),
                    info.width,
                    info.height,
                    config.width,
                    config.height
                );
                info
            }
            None => {
                // A real camera's frames with a made-up calibration: the executor's 3-D
                // points would be off by centimetres and still inside the workspace.
                if config.intrinsics.is_none()
                    && !config.info_topic.is_empty()
                    && matches!(
                        config.source,
                        Source::Device | Source::Topic | Source::Video
                    )
                {
                    tracing::warn!(
                        "camera: no calibration and no intrinsics: publishing an ideal {}° pinhole CameraInfo for real frames; \
                         give `calibration` (a camera_info YAML) or `intrinsics`, or point the executor's topics.camera_info at the driver's",
                        config.hfov_deg
                    );
                }
                let intr = config.intrinsics.unwrap_or_else(|| {
                    intrinsics_from_hfov(config.width, config.height, config.hfov_deg)
                });
                pinhole_camera_info(config.width, config.height, intr, &config.frame_id)
            }
        };
        info.header.frame_id = config.frame_id.clone();
        let capture = match config.source {
            Source::Video | Source::Device => Some(Capture::open(&config)?),
            _ => None,
        };
        let frames = if config.source == Source::Files {
            anyhow::ensure!(
                !config.files.is_empty(),
                "source `files` needs at least one entry in `files`"
            );
            config
                .files
                .iter()
                .map(|p| load_frame(p, config.width, config.height))
                .collect::<anyhow::Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            config,
            frames,
            capture,
            info,
        })
    }

    async fn run<B: Bus>(mut self, ctx: NodeContext<B>) -> anyhow::Result<()> {
        let c = self.config.clone();
        let mut info = self.info.clone();
        let optional = |topic: &str| (!topic.is_empty()).then(|| topic.to_string());
        let image_pub = optional(&c.image_topic)
            .map(|t| ctx.bus.publisher::<Image>(&t, Qos::sensor_data()))
            .transpose()?;
        let info_pub = optional(&c.info_topic)
            .map(|t| ctx.bus.publisher::<CameraInfo>(&t, Qos::latched()))
            .transpose()?;
        info.header.stamp = ctx.bus.clock().now();
        if let Some(p) = &info_pub {
            p.publish(info.clone())?;
        }
        let mut objects = ObjectOnly::new(&c, &ctx)?;

        if c.source == Source::Topic {
            let mut input = ctx
                .bus
                .subscribe::<Image>(&c.input_topic, Qos::sensor_data())?;
            let mut mismatch: Option<(u32, u32)> = None;
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    msg = input.recv() => {
                        let Some(msg) = msg else { return Ok(()) };
                        let mut img = (*msg).clone();
                        img.header.frame_id = c.frame_id.clone();
                        // The camera_info's intrinsics are those of its size: for images of
                        // another size nobody knows them. Before session 42 the info took the
                        // image's size and kept the old matrices, and the executor unprojected
                        // pixels with intrinsics of another resolution (tens of cm off). Now
                        // the info stays as calibrated, so a depth image of the new size is
                        // refused by the executor, and this is said once per size.
                        if (img.width, img.height) != (info.width, info.height)
                            && mismatch != Some((img.width, img.height))
                        {
                            mismatch = Some((img.width, img.height));
                            tracing::warn!(
                                node = %ctx.name,
                                "input images are {}×{} but the camera_info is for {}×{}: set width and height, or a calibration for this size (the camera_info is left as it is; the executor refuses depth of another size)",
                                img.width, img.height, info.width, info.height
                            );
                        }
                        // The frame goes out first; its object-only frame (a few ms of
                        // segmentation) after it.
                        let img = std::sync::Arc::new(img);
                        if let Some(p) = &image_pub {
                            p.publish_shared(img.clone())?;
                        }
                        if !objects.publish(&img, &ctx.name) {
                            return Ok(());
                        }
                    }
                }
            }
        }

        let every = |rate: f64| {
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            t
        };
        let mut rate = c.rate_hz;
        let mut tick = every(rate);
        let mut param_changes = ctx.params.watch();
        let mut params_open = true;
        let mut index: u64 = 0;
        let mut failures = ReadFailures::default();
        loop {
            // A new rate takes effect at once, not at the old rate's next tick (which may be
            // seconds away): the frame goes out now and the next ones at the new period.
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
                r = param_changes.changed(), if params_open => {
                    if r.is_err() {
                        params_open = false;
                        continue;
                    }
                    match ctx.params.config::<CameraConfig>() {
                        Ok(n) if n.rate_hz != rate => {
                            tracing::info!(node = %ctx.name, "rate_hz {rate} → {}", n.rate_hz);
                            rate = n.rate_hz;
                            tick = every(rate);
                            tick.tick().await; // an interval's first tick is at once
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::warn!(node = %ctx.name, "parameters do not read back ({e}); keeping rate_hz {rate}");
                            continue;
                        }
                    }
                }
            }
            let data = match (c.source, self.capture.take()) {
                (Source::Files, _) => {
                    self.frames[(index % self.frames.len() as u64) as usize].clone()
                }
                // A device read blocks until its next frame: off the async threads.
                (_, Some(mut cap)) => {
                    let (cap, frame) = tokio::task::spawn_blocking(move || {
                        let f = cap.read();
                        (cap, f)
                    })
                    .await?;
                    self.capture = Some(cap);
                    match frame {
                        Ok(f) => {
                            let lost = failures.recovered();
                            if lost > 0 {
                                tracing::info!(node = %ctx.name, "frames again after {lost} failed reads");
                            }
                            f
                        }
                        Err(e) => {
                            match failures.failed(std::time::Instant::now()) {
                                OnReadFailure::Skip { first: true } => {
                                    tracing::warn!(node = %ctx.name, "{e:#}; skipping the frame (said once per streak)");
                                }
                                OnReadFailure::Skip { first: false } => {}
                                OnReadFailure::Reopen => {
                                    tracing::warn!(node = %ctx.name, "{e:#} for {REOPEN_AFTER_S} s; opening the source again");
                                    self.capture = None;
                                    let cfg = c.clone();
                                    let opened =
                                        tokio::task::spawn_blocking(move || Capture::open(&cfg))
                                            .await?;
                                    self.capture = Some(opened.with_context(|| {
                                        format!("every read failed for {REOPEN_AFTER_S} s ({e:#}) and opening the source again failed")
                                    })?);
                                }
                            }
                            continue;
                        }
                    }
                }
                _ => test_pattern(c.width, c.height, index),
            };
            let img = Image {
                header: Header {
                    stamp: ctx.bus.clock().now(),
                    frame_id: c.frame_id.clone(),
                },
                height: c.height,
                width: c.width,
                encoding: "rgb8".into(),
                is_bigendian: 0,
                step: c.width * 3,
                data,
            };
            let image_pub = image_pub
                .as_ref()
                .expect("checked in new: generated frames have a topic");
            let img = std::sync::Arc::new(img);
            match image_pub.publish_shared(img.clone()) {
                Ok(()) => {}
                Err(crate::bus::BusError::Closed(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            if !objects.publish(&img, &ctx.name) {
                return Ok(());
            }
            index += 1;
        }
    }
}
