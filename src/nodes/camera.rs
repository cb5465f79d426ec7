//! Camera node: publishes `sensor_msgs/Image` and a latched `sensor_msgs/CameraInfo`.
//!
//! Sources: a synthetic test pattern (no hardware needed), a list of image files played
//! in a loop, or another image topic (re-stamped and paired with this camera's info).
//! Device and video-file sources arrive with the vision layer (opencv).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use super::{Node, NodeContext};
use crate::bus::{Bus, Qos};
use crate::msg::prelude::*;
use crate::msg::sensor_msgs::RegionOfInterest;

/// Where frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Moving colour bars, generated.
    #[default]
    Pattern,
    /// PNG/JPEG files from `files`, in order, looping.
    Files,
    /// Images arriving on `input_topic`.
    Topic,
}

/// Camera parameters.
#[derive(Debug, Clone, Deserialize)]
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
    /// Output image topic.
    pub image_topic: String,
    /// Output camera-info topic (latched).
    pub info_topic: String,
    /// Image files for `source: files`.
    pub files: Vec<PathBuf>,
    /// Input image topic for `source: topic`.
    pub input_topic: String,
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
        }
    }
}

/// The camera node.
pub struct CameraNode {
    config: CameraConfig,
    frames: Vec<Vec<u8>>,
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

/// Intrinsics `[fx, fy, cx, cy]` of a square-pixel camera with horizontal FOV `hfov_deg`.
pub fn intrinsics_from_hfov(width: u32, height: u32, hfov_deg: f64) -> [f64; 4] {
    let fx = 0.5 * width as f64 / (0.5 * hfov_deg.to_radians()).tan();
    [fx, fx, 0.5 * width as f64, 0.5 * height as f64]
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

fn load_frame(path: &PathBuf, width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let img = image::open(path).with_context(|| format!("reading image {}", path.display()))?;
    let img = if img.width() != width || img.height() != height {
        img.resize_exact(width, height, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    Ok(img.to_rgb8().into_raw())
}

impl Node for CameraNode {
    const KIND: &'static str = "camera";
    type Config = CameraConfig;

    fn new(config: CameraConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.width > 0 && config.height > 0,
            "width and height must be > 0"
        );
        anyhow::ensure!(
            config.width <= 16384 && config.height <= 16384,
            "width and height must be ≤ 16384"
        );
        anyhow::ensure!(
            config.rate_hz.is_finite() && config.rate_hz > 0.0,
            "rate_hz must be > 0"
        );
        anyhow::ensure!(
            config.hfov_deg > 0.0 && config.hfov_deg < 180.0,
            "hfov_deg must be in (0, 180)"
        );
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
        Ok(Self { config, frames })
    }

    async fn run<B: Bus>(self, ctx: NodeContext<B>) -> anyhow::Result<()> {
        let c = &self.config;
        let intr = c
            .intrinsics
            .unwrap_or_else(|| intrinsics_from_hfov(c.width, c.height, c.hfov_deg));
        let mut info = pinhole_camera_info(c.width, c.height, intr, &c.frame_id);
        let image_pub = ctx
            .bus
            .publisher::<Image>(&c.image_topic, Qos::sensor_data())?;
        let info_pub = ctx
            .bus
            .publisher::<CameraInfo>(&c.info_topic, Qos::latched())?;
        info.header.stamp = ctx.bus.clock().now();
        info_pub.publish(info.clone())?;

        if c.source == Source::Topic {
            let mut input = ctx
                .bus
                .subscribe::<Image>(&c.input_topic, Qos::sensor_data())?;
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    msg = input.recv() => {
                        let Some(msg) = msg else { return Ok(()) };
                        let mut img = (*msg).clone();
                        img.header.frame_id = c.frame_id.clone();
                        if img.width != info.width || img.height != info.height {
                            info.width = img.width;
                            info.height = img.height;
                            info.header.stamp = img.header.stamp.clone();
                            info_pub.publish(info.clone())?;
                        }
                        image_pub.publish(img)?;
                    }
                }
            }
        }

        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / c.rate_hz));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut index: u64 = 0;
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let data = match c.source {
                Source::Files => self.frames[(index % self.frames.len() as u64) as usize].clone(),
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
            match image_pub.publish(img) {
                Ok(()) => {}
                Err(crate::bus::BusError::Closed(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            index += 1;
        }
    }
}
