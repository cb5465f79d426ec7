//! Clips cached on disk: bags are read and rendered once, then every epoch reads the cache.
//!
//! A cache folder holds `index.json` (the model configuration it was cut for, the bags, one
//! entry per clip: shard, row, bag, episode, step, task, score) and `shard-NNNNN.safetensors`
//! files of `shard_size` clips each, as u8 tensors `context` `[n, H, W, 3]`, `arm`
//! `[n, F + 1, H, W, 3]` and `future` `[n, F, H, W, 3]`. Shards are memory-mapped when
//! read, so memory does not grow with the data: a batch copies only its rows. Every file is
//! written to a temporary name and renamed, so an interrupted build leaves no file that looks
//! complete.
//!
//! Train and validation are split by episode (a hash of bag and episode), never by clip, so
//! no validation episode's frames are seen in training. A bag is named by its folder and
//! the folder above it, from its canonical path ([`bag_key`]), so however the path is
//! spelled on the command line the same episodes go to validation. A cache is reused only
//! for the same clip settings and the same bag files (names, sizes and modification times:
//! [`bag_stamps`]); a bag recorded again at the same path is cut again.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::clip::{self, ArmVideo, Clip};
use super::prior::{self, GripPath};
use super::{Config, WorldModelError};
use crate::bag::transitions::TransitionTopics;
use crate::bag::BagReader;

/// One cached clip's origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipInfo {
    /// Shard number.
    pub shard: usize,
    /// Row in the shard.
    pub row: usize,
    /// Bag it came from.
    pub bag: String,
    /// Episode in that bag.
    pub episode: u32,
    /// Step in the episode.
    pub step: u32,
    /// Task name.
    pub task: String,
    /// The recorded score, if any.
    pub score: Option<f64>,
    /// The gripper's path (what the carry prior needs), when it closed in view.
    #[serde(default)]
    pub grip: Option<GripPath>,
}

/// The cache's table of contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// The configuration the clips were cut for (size, frames, crop, after_s).
    pub config: Config,
    /// The bags read, each as its folder and the folder above ([`bag_key`]).
    pub bags: Vec<String>,
    /// The bags' files when cut ([`bag_stamps`]); a cache without them (cut before
    /// session 42) is cut again.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Clips per shard file.
    pub shard_size: usize,
    /// Every clip.
    pub clips: Vec<ClipInfo>,
    /// Transitions skipped, with the first reason.
    pub skipped: usize,
    /// Why the first skipped transition was skipped.
    pub first_skip: Option<String>,
    /// Bags whose files are damaged (a recording killed mid-write), with the damage: the
    /// transitions before it were cut (before session 52 the cut stopped there with an
    /// error).
    #[serde(default)]
    pub damaged: Vec<String>,
    /// Whether the clips' gripper paths were recorded (caches cut before the carry prior
    /// existed have none and are cut again for a model that uses it).
    #[serde(default)]
    pub grips: bool,
    /// Whether the clips' after-window is the config's `after_s` (caches cut before
    /// session 43 used a fixed 1 s: they are cut again for another `after_s`).
    #[serde(default)]
    pub after_s_window: bool,
}

/// A bag's name in the index and in the validation split: its last two path components,
/// from the canonical path (`bags37/toy` whether given as `bags37/toy`, `./bags37/toy/` or
/// `/data/bags37/toy`). Before session 42 the split hashed the path as typed, so a resumed
/// run given another spelling split its episodes differently.
pub fn bag_key(path: &Path) -> String {
    let full = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let names: Vec<String> = full
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    names[names.len().saturating_sub(2)..].join("/")
}

/// What a bag's files were when it was cut: for the bag (a folder or one file) and each
/// file in its folder, `name:bytes:modified-ns`, sorted. A bag recorded again, extended or
/// replaced at the same path changes them.
pub fn bag_stamps(path: &Path) -> Result<Vec<String>, WorldModelError> {
    if path.is_file() {
        return Ok(vec![
            crate::train::checkpoint::file_stamp(path).map_err(io(path))?
        ]);
    }
    let files = crate::train::checkpoint::folder_stamps(path, false).map_err(io(path))?;
    // Sorted by the stamp, as caches cut before session 47 stored them.
    let mut stamps: Vec<String> = files.into_iter().map(|(_, stamp)| stamp).collect();
    stamps.sort();
    Ok(stamps)
}

/// Whether two configurations cut the same clips (the camera too: it draws the arm video
/// and the grips, and a corrected hand-eye pose must cut them again).
fn same_clips(a: &Config, b: &Config) -> bool {
    (a.width, a.height, a.frames, a.crop) == (b.width, b.height, b.frames, b.crop)
        && (a.after_s - b.after_s).abs() < 1e-12
        && a.camera == b.camera
}

fn shard_name(k: usize) -> String {
    format!("shard-{k:05}.safetensors")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorldModelError + '_ {
    move |source| WorldModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temporary file, sync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WorldModelError> {
    crate::train::checkpoint::write_atomic(path, bytes).map_err(io(path))
}

fn write_shard(dir: &Path, k: usize, clips: &[Clip], cfg: &Config) -> Result<(), WorldModelError> {
    let (h, w, f) = (cfg.height, cfg.width, cfg.frames);
    let n = clips.len();
    let cat = |pick: &dyn Fn(&Clip) -> Vec<u8>| clips.iter().flat_map(pick).collect::<Vec<u8>>();
    let context = cat(&|c| c.context.clone());
    let arm = cat(&|c| c.arm.concat());
    let future = cat(&|c| c.future.concat());
    let tensors = [
        (
            "context",
            Tensor::from_vec(context, (n, h, w, 3), &Device::Cpu)?,
        ),
        (
            "arm",
            Tensor::from_vec(arm, (n, f + 1, h, w, 3), &Device::Cpu)?,
        ),
        (
            "future",
            Tensor::from_vec(future, (n, f, h, w, 3), &Device::Cpu)?,
        ),
    ];
    write_tensors(&dir.join(shard_name(k)), &tensors)
}

/// Writes named tensors as a safetensors file atomically (temporary file, sync, rename).
pub(crate) fn write_tensors(
    path: &Path,
    tensors: &[(&str, Tensor)],
) -> Result<(), WorldModelError> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        safetensors::serialize_to_file(tensors.iter().map(|(k, t)| (*k, t)), None, &tmp)
            .map_err(|e| WorldModelError::Data(format!("{}: {e}", tmp.display())))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        crate::train::checkpoint::sync_dir_of(path).map_err(io(path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Refuses a bag whose camera is not the one the world model draws the arm through at
/// `w`×`h`: the configured camera ([`Config::camera`], scaled to the frames), else the
/// built-in one. Another size or other intrinsics (a real arm's camera without
/// `camera` in the config) would pair the frames with an arm drawn elsewhere. The
/// camera's pose cannot be checked (`CameraInfo` has none).
fn check_camera(
    name: &str,
    info: &crate::msg::prelude::CameraInfo,
    cfg: &Config,
    w: u32,
    h: u32,
) -> Result<(), WorldModelError> {
    let ours = cfg.camera_model(w, h);
    let spec = crate::render::CameraSpec::of(&ours);
    let same_size = (info.width, info.height) == (w, h);
    // Bags of the built-in camera recorded before session 46 wrote its principal point
    // without ROS's half-pixel shift (`render::camera`'s module doc): the same camera.
    let before_46 = || {
        let offset = crate::render::camera::ROS_PRINCIPAL_OFFSET;
        let mut old = spec.clone();
        (old.cx, old.cy) = (old.cx + offset, old.cy + offset);
        old.same_intrinsics(info)
    };
    let same = same_size && (spec.same_intrinsics(info) || (cfg.camera.is_none() && before_46()));
    if same {
        return Ok(());
    }
    let (what, how) = match &cfg.camera {
        Some(_) => (
            "the camera of the world model's config (`camera`)",
            "record with that camera, or give the config the bag's calibration",
        ),
        None => (
            "the built-in camera the world model draws the arm through",
            "for a real arm's camera, give the config its calibration and hand-eye pose \
             (`camera`; `dreamplan train-world-model --camera FILE`, docs/world_model.md)",
        ),
    };
    // Both in CameraInfo's K terms (the principal point from the first pixel's centre),
    // as the user wrote them in the camera file and the driver publishes them.
    let k = ours.camera_info(Default::default()).k;
    Err(WorldModelError::Data(format!(
        "{name}: its camera (/camera/camera_info: {}×{}, K fx {:.1}, fy {:.1}, cx {:.1}, cy {:.1}) \
         is not {what} ({w}×{h}: K fx {:.1}, fy {:.1}, cx {:.1}, cy {:.1}): {how}",
        info.width, info.height, info.k[0], info.k[4], info.k[2], info.k[5], k[0], k[4], k[2], k[5]
    )))
}

/// The camera the bags under `paths` were recorded through, from their
/// `/camera/camera_info` (each bag's first), placed at the hand-eye pose `xyz` / `xyzw`
/// (`train-world-model --camera-pose`): a real arm's bags carry their intrinsics, only the
/// pose must be given. Bags that disagree, or none with camera info, are refused.
pub fn camera_of_bags(
    paths: &[PathBuf],
    xyz: [f64; 3],
    xyzw: [f64; 4],
) -> Result<crate::render::CameraSpec, WorldModelError> {
    let mut found: Option<(String, crate::render::CameraSpec)> = None;
    for bag in find_bags(paths)? {
        let Some(info) = first_camera_info(&BagReader::open(&bag)?) else {
            continue;
        };
        let name = bag.display().to_string();
        match &found {
            None => {
                let spec = crate::render::CameraSpec::from_camera_info(&info, xyz, xyzw);
                spec.validate()
                    .map_err(|e| WorldModelError::Data(format!("{name}: {e}")))?;
                found = Some((name, spec));
            }
            Some((first, spec)) => {
                if !spec.same_intrinsics(&info) {
                    return Err(WorldModelError::Data(format!(
                        "{name}: its camera (K fx {:.1}, fy {:.1}, cx {:.1}, cy {:.1} at {}×{}) is not \
                         {first}'s (fx {:.1}, fy {:.1}, cx {:.1}, cy {:.1} at {}×{}): one model sees \
                         through one camera",
                        info.k[0], info.k[4], info.k[2], info.k[5], info.width, info.height,
                        spec.fx, spec.fy, spec.cx, spec.cy, spec.width, spec.height
                    )));
                }
            }
        }
    }
    found.map(|(_, spec)| spec).ok_or_else(|| {
        WorldModelError::Data(format!(
            "no bag has {CAMERA_INFO} to take the camera's intrinsics from: give the whole camera \
             with --camera FILE"
        ))
    })
}

/// The topic the camera's calibration is recorded on.
const CAMERA_INFO: &str = "/camera/camera_info";

/// A bag's first readable camera info; `None` for a bag that does not record the topic
/// (only a bag that has it is read for it: a filter naming no recorded topic would still
/// walk every message of the bag).
/// Refuses `reader`'s bag when its camera (its first `/camera/camera_info`) is not the one
/// the world model of `cfg` draws the arm through at `w`×`h`, as cutting clips does; a
/// bag without camera info passes. For a command that reads one transition of a bag
/// (`dreamplan predict --bag`), which before session 53 drew the arm through the model's
/// camera whatever the bag's.
pub fn check_bag_camera(
    reader: &BagReader,
    name: &str,
    cfg: &Config,
    w: u32,
    h: u32,
) -> Result<(), WorldModelError> {
    match first_camera_info(reader) {
        Some(info) => check_camera(name, &info, cfg, w, h),
        None => Ok(()),
    }
}

fn first_camera_info(reader: &BagReader) -> Option<crate::msg::prelude::CameraInfo> {
    reader.topic(CAMERA_INFO).and_then(|_| {
        reader
            .read_topic::<crate::msg::prelude::CameraInfo>(CAMERA_INFO)
            .find_map(|r| r.ok())
            .map(|(_, info)| info)
    })
}

/// How many transitions `bags` hold, from their metadata's count of the action topic's
/// messages (one is published before every step): the total a cut's progress is shown
/// against. An estimate (a step whose action never started is counted too); `None` when a
/// bag cannot be opened or does not say.
pub fn expected_transitions(bags: &[PathBuf]) -> Option<usize> {
    let action = TransitionTopics::default().action;
    bags.iter().try_fold(0usize, |sum, b| {
        let reader = BagReader::open(b).ok()?;
        let n = reader.topic(&action)?.message_count?;
        Some(sum + n as usize)
    })
}

/// Progress of a cache build: (transitions read, clips written).
pub type BuildProgress<'a> = &'a dyn Fn(usize, usize);

/// Cuts every transition of `bags` into clips for `cfg` and writes the cache into `dir`.
/// An existing cache for the same bags and clip settings is reused as is.
pub fn build(
    bags: &[PathBuf],
    dir: &Path,
    cfg: &Config,
    shard_size: usize,
    progress: BuildProgress<'_>,
) -> Result<Index, WorldModelError> {
    let names: Vec<String> = bags.iter().map(|b| bag_key(b)).collect();
    let mut sources = Vec::new();
    for (b, name) in bags.iter().zip(&names) {
        sources.extend(bag_stamps(b)?.into_iter().map(|s| format!("{name}/{s}")));
    }
    if let Ok(index) = Dataset::open(dir) {
        if same_clips(&index.index.config, cfg)
            && index.index.bags == names
            && index.index.sources == sources
            && (index.index.grips || !cfg.prior)
            && (index.index.after_s_window || cfg.after_s == 1.0)
        {
            return Ok(index.index);
        }
    }
    // Two runs cutting into one cache at once overwrote each other's shards (their
    // temporary names are fixed) and one failed on a vanished file; the second is now
    // told that another is writing (a review finding, session 52). A cache reused as it
    // is (above) takes no lock: it may be shared, or read-only.
    let _lock = crate::train::checkpoint::lock_output(dir).map_err(WorldModelError::Data)?;
    // The old index goes first: a cut that stops part-way (a kill, a truncated bag) must
    // not leave it describing shards that are partly new.
    let old_index = dir.join("index.json");
    if old_index.exists() {
        std::fs::remove_file(&old_index).map_err(io(&old_index))?;
    }
    // The clips are cut anew: prior frames made from the old ones would not match them.
    for e in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        if e.file_name().to_string_lossy().starts_with("prior-") && e.path().is_dir() {
            std::fs::remove_dir_all(e.path()).map_err(io(&e.path()))?;
        }
    }
    let mut index = Index {
        config: cfg.clone(),
        bags: names.clone(),
        sources,
        shard_size,
        clips: Vec::new(),
        skipped: 0,
        first_skip: None,
        damaged: Vec::new(),
        grips: true,
        after_s_window: true,
    };
    let mut pending: Vec<Clip> = Vec::new();
    let mut read = 0;
    for (bag, name) in bags.iter().zip(&names) {
        let reader = BagReader::open(bag)?;
        // The arm video is drawn through the model's camera (`Config::camera_model`) at the
        // frames' size; a bag from another camera would pair its frames with an arm drawn
        // elsewhere, so it is refused (before session 45 it trained on that mismatch
        // without a word).
        let info = first_camera_info(&reader);
        let camera_size = std::cell::Cell::new(None::<(u32, u32)>);
        let mut video: Option<ArmVideo> = None;
        // The after-window is the config's, as at inference (a planned clip spans the
        // motion and `after_s`): before session 43 it was the transition view's default
        // 1 s whatever `after_s` said.
        let topics = TransitionTopics {
            after_window_s: cfg.after_s,
            ..TransitionTopics::default()
        };
        let read_before = read;
        for tr in reader.transitions(topics) {
            let tr = match tr {
                Ok(tr) => tr,
                // A recording killed mid-write ends damaged: what came before is cut. A
                // bag damaged before its first transition gives nothing and stays an error.
                Err(e @ crate::bag::BagError::Damaged { .. }) if read > read_before => {
                    tracing::warn!("{name}: {e}; its transitions before the damage are cut");
                    index.damaged.push(format!("{name}: {e}"));
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            read += 1;
            let size = tr
                .object_observation
                .as_ref()
                .or(tr.object_frames.first())
                .map(|(_, i)| (i.width, i.height));
            let made = match size {
                None => Err(WorldModelError::Data(format!(
                    "{name}: episode {} step {}: no object-only frames (topic /camera/object_only)",
                    tr.episode, tr.step
                ))),
                Some((w, h)) => {
                    if camera_size.get() != Some((w, h)) {
                        // Checked once per frame size, as the video is made.
                        if let Some(info) = &info {
                            check_camera(name, info, cfg, w, h)?;
                        }
                        camera_size.set(Some((w, h)));
                        video = Some(ArmVideo::new(
                            crate::robot::franka::default_arm(),
                            &cfg.camera_model(w, h),
                            cfg,
                        ));
                    }
                    clip::from_transition(&tr, video.as_ref().expect("set above"), cfg)
                }
            };
            match made {
                Ok(c) => {
                    index.clips.push(ClipInfo {
                        shard: index.clips.len() / shard_size,
                        row: index.clips.len() % shard_size,
                        bag: name.clone(),
                        episode: tr.episode,
                        step: tr.step,
                        task: tr.task.clone(),
                        score: tr.score,
                        grip: c.grip.clone(),
                    });
                    pending.push(c);
                    if pending.len() == shard_size {
                        write_shard(dir, (index.clips.len() - 1) / shard_size, &pending, cfg)?;
                        pending.clear();
                    }
                }
                Err(e) => {
                    index.skipped += 1;
                    index.first_skip.get_or_insert_with(|| e.to_string());
                }
            }
            progress(read, index.clips.len());
        }
    }
    if index.clips.is_empty() {
        // A bag recorded without the topics a transition is made of gives none at all:
        // name them rather than only "0 read".
        let need = TransitionTopics::default();
        let mut lacking = Vec::new();
        for (bag, name) in bags.iter().zip(&names) {
            let reader = BagReader::open(bag)?;
            let has = |t: &str| reader.topics().iter().any(|i| i.name == t);
            let missing: Vec<&str> = [
                need.episode.as_str(),
                need.action.as_str(),
                need.joint_states.as_str(),
                need.object_only.as_str(),
            ]
            .into_iter()
            .filter(|t| !has(t))
            .collect();
            if !missing.is_empty() {
                lacking.push(format!("{name} has no {}", missing.join(", ")));
            }
        }
        return Err(WorldModelError::Data(format!(
            "no usable transitions in {} ({} read{}{})",
            names.join(", "),
            read,
            index
                .first_skip
                .as_ref()
                .map(|s| format!("; first problem: {s}"))
                .unwrap_or_default(),
            if lacking.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} (record them: docs/world_model.md, Data)",
                    lacking.join("; ")
                )
            }
        )));
    }
    if !pending.is_empty() {
        write_shard(dir, (index.clips.len() - 1) / shard_size, &pending, cfg)?;
    }
    let json = serde_json::to_vec_pretty(&index).expect("index serialises");
    write_atomic(&dir.join("index.json"), &json)?;
    Ok(index)
}

/// A batch as tensors in −1…1, channels first: context `[B, 3, H, W]`, arm
/// `[B, F + 1, 3, H, W]`, future `[B, F, 3, H, W]`.
pub struct Batch {
    /// Current object-only frames.
    pub context: Tensor,
    /// Arm videos.
    pub arm: Tensor,
    /// Future object-only frames.
    pub future: Tensor,
    /// The carry prior's future frames `[B, F, 3, H, W]`, for a model that uses it.
    pub prior: Option<Tensor>,
}

/// An opened cache.
pub struct Dataset {
    /// Its table of contents.
    pub index: Index,
    dir: PathBuf,
    shards: Vec<memmap2::Mmap>,
    /// The prior's frames of every clip, made once by [`Dataset::cache_priors`]: the
    /// settings they were made with ([`prior_key`]) and their shards.
    priors: Option<(String, Vec<memmap2::Mmap>)>,
}

/// The version of the prior's code in [`prior_key`]: raise it with any change to what
/// `prior` or `particles` draw, so caches made by the older code are made again (before
/// session 53 a change of the code kept the old frames for training while inference drew
/// with the new; a review finding).
pub const PRIOR_CODE_VERSION: u32 = 2;

/// The name of the folder, inside the cache, that holds the prior frames made with
/// `model`'s prior settings and [`PRIOR_CODE_VERSION`] (a change of any makes another
/// folder).
pub fn prior_key(model: &Config) -> String {
    let mut key = format!(
        "prior-{:?}-s{}-l{}-g{}",
        model.prior_model, model.prior_sigma_px, model.prior_lift_px, model.prior_grasp_px
    );
    // The particle prior's fitted constants; folders made at their defaults keep the name
    // they had before the constants could change.
    let d = Config::cpu();
    if (
        model.prior_table_mobility,
        model.prior_sag_px,
        model.prior_max_stretch,
    ) != (d.prior_table_mobility, d.prior_sag_px, d.prior_max_stretch)
    {
        key.push_str(&format!(
            "-m{}-a{}-x{}",
            model.prior_table_mobility, model.prior_sag_px, model.prior_max_stretch
        ));
    }
    if model.prior_min_length > 0.0 {
        key.push_str(&format!("-n{}", model.prior_min_length));
    }
    if model.prior_spread_px > 0.0 {
        key.push_str(&format!("-p{}", model.prior_spread_px));
    }
    key.push_str(&format!("-v{PRIOR_CODE_VERSION}"));
    key.to_lowercase()
}

fn map(p: &Path) -> Result<memmap2::Mmap, WorldModelError> {
    let f = std::fs::File::open(p).map_err(io(p))?;
    // SAFETY: cache files are written once (temp + rename) and never modified.
    unsafe { memmap2::Mmap::map(&f) }.map_err(io(p))
}

/// The parsed header of shard `k` (one parse serves every tensor read from it).
fn header(
    shard: &memmap2::Mmap,
    k: usize,
) -> Result<safetensors::SafeTensors<'_>, WorldModelError> {
    safetensors::SafeTensors::deserialize(shard)
        .map_err(|e| WorldModelError::Data(format!("shard {k}: {e}")))
}

/// Row `row` (`len` bytes) of tensor `name` in shard `k`.
fn rows<'a>(
    st: &safetensors::SafeTensors<'a>,
    k: usize,
    name: &str,
    row: usize,
    len: usize,
) -> Result<&'a [u8], WorldModelError> {
    let view = st
        .tensor(name)
        .map_err(|e| WorldModelError::Data(format!("shard {k}: {e}")))?;
    let data: &'a [u8] = view.data();
    data.get(row * len..(row + 1) * len)
        .ok_or_else(|| WorldModelError::Data(format!("shard {k} is shorter than its index says")))
}

impl Dataset {
    /// Opens the cache in `dir`.
    pub fn open(dir: &Path) -> Result<Self, WorldModelError> {
        let path = dir.join("index.json");
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| WorldModelError::Data(format!("{}: {e}", path.display())))?;
        let n_shards = index.clips.len().div_ceil(index.shard_size.max(1));
        // A hand-edited or foreign index naming a shard that is not there was an index
        // out of bounds at the first batch (a review finding, session 53).
        if let Some((i, c)) = index
            .clips
            .iter()
            .enumerate()
            .find(|(_, c)| c.shard >= n_shards)
        {
            return Err(WorldModelError::Data(format!(
                "{}: clip {i} is in shard {}, but {} clips in shards of {} make {n_shards}: the cache is damaged; remove it to cut it again",
                path.display(),
                c.shard,
                index.clips.len(),
                index.shard_size
            )));
        }
        let shards = (0..n_shards)
            .map(|k| map(&dir.join(shard_name(k))))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            index,
            dir: dir.to_path_buf(),
            shards,
            priors: None,
        })
    }

    /// Clip `i`'s current frame and its true final frame (rgb8, the clips' size).
    pub fn context_and_final(&self, i: usize) -> Result<(Vec<u8>, Vec<u8>), WorldModelError> {
        let info = self
            .index
            .clips
            .get(i)
            .ok_or_else(|| WorldModelError::Data(format!("no clip {i} in the cache")))?;
        let cfg = &self.index.config;
        let frame = cfg.height * cfg.width * 3;
        let st = header(&self.shards[info.shard], info.shard)?;
        let context = rows(&st, info.shard, "context", info.row, frame)?.to_vec();
        let future = rows(&st, info.shard, "future", info.row, cfg.frames * frame)?;
        Ok((context, future[future.len() - frame..].to_vec()))
    }

    /// The prior's future frames (rgb8, `F` frames concatenated) of clip `i`, whose current
    /// frame is `ctx`: made now with `model`'s settings. A clip whose gripper never closed
    /// in view keeps its current frame.
    fn make_prior(&self, i: usize, ctx: &[u8], model: &Config) -> Vec<u8> {
        let f = self.index.config.frames;
        match &self.index.clips[i].grip {
            Some(g) if g.offsets.len() == f => prior::frames(ctx, g, model).concat(),
            _ => ctx.repeat(f),
        }
    }

    /// Makes the prior's frames of every clip once, for a model configured by `model`, and
    /// keeps them beside the clips (`DIR/prior-…/shard-NNNNN.safetensors`, u8 `prior`
    /// `[n, F, H, W, 3]`), so that epochs read them instead of running the prior again (the
    /// particle prior: 34 s for 2,074 clips on 2 cores, measured in session 27, paid once
    /// instead of once per epoch).
    /// Clips are made in parallel (rayon); each shard is written atomically, so an
    /// interrupted run keeps its finished shards and makes only the rest. Does nothing for a
    /// model without a prior. `progress(done, total)` after each shard.
    pub fn cache_priors(
        &mut self,
        model: &Config,
        progress: BuildProgress<'_>,
    ) -> Result<(), WorldModelError> {
        use rayon::prelude::*;
        if !model.prior {
            return Ok(());
        }
        self.check_grips()?;
        let key = prior_key(model);
        let folder = self.dir.join(&key);
        // Locked only when some shard is to be made (see `build`).
        let whole = (0..self.shards.len()).all(|k| folder.join(shard_name(k)).exists());
        let _lock = if whole {
            None
        } else {
            Some(crate::train::checkpoint::lock_output(&self.dir).map_err(WorldModelError::Data)?)
        };
        std::fs::create_dir_all(&folder).map_err(io(&folder))?;
        let cfg = self.index.config.clone();
        let (h, w, f) = (cfg.height, cfg.width, cfg.frames);
        let frame = h * w * 3;
        let total = self.index.clips.len();
        let mut maps = Vec::with_capacity(self.shards.len());
        for k in 0..self.shards.len() {
            let path = folder.join(shard_name(k));
            if !path.exists() {
                // Clips are numbered shard by shard (`build`): shard k holds a run of them.
                let first = k * self.index.shard_size;
                let ids = first..(first + self.index.shard_size).min(total);
                let st = header(&self.shards[k], k)?;
                let made: Vec<Vec<u8>> = ids
                    .into_par_iter()
                    .map(|i| {
                        let ctx = rows(&st, k, "context", i - first, frame)?;
                        Ok(self.make_prior(i, ctx, model))
                    })
                    .collect::<Result<_, WorldModelError>>()?;
                let n = made.len();
                let t = Tensor::from_vec(made.concat(), (n, f, h, w, 3), &Device::Cpu)?;
                write_tensors(&path, &[("prior", t)])?;
            }
            maps.push(map(&path)?);
            progress(((k + 1) * self.index.shard_size).min(total), total);
        }
        self.priors = Some((key, maps));
        Ok(())
    }

    fn check_grips(&self) -> Result<(), WorldModelError> {
        if self.index.grips {
            Ok(())
        } else {
            Err(WorldModelError::Data(
                "this clip cache holds no gripper paths (cut before the carry prior existed); \
                 delete it and train again to cut it anew"
                    .into(),
            ))
        }
    }

    /// Clip numbers of the training and validation episodes (`val_every`: one episode in
    /// that many, by a hash of bag and episode, goes to validation).
    pub fn split(&self, val_every: u64) -> (Vec<usize>, Vec<usize>) {
        let mut train = Vec::new();
        let mut val = Vec::new();
        for (i, c) in self.index.clips.iter().enumerate() {
            // FNV-1a of "bag/episode": stable across runs and platforms.
            let key = format!("{}/{}", c.bag, c.episode);
            let h = crate::train::checkpoint::fnv1a(key.as_bytes());
            if val_every > 1 && h.is_multiple_of(val_every) {
                val.push(i);
            } else {
                train.push(i);
            }
        }
        (train, val)
    }

    /// The clips `ids` as a batch for a model configured by `model`. A model with a prior
    /// gets its frames from [`Dataset::cache_priors`] when that made them with the same
    /// prior settings, and has them made now otherwise.
    pub fn batch(&self, ids: &[usize], model: &Config) -> Result<Batch, WorldModelError> {
        if model.prior {
            self.check_grips()?;
        }
        let cfg = &self.index.config;
        let (h, w, f) = (cfg.height, cfg.width, cfg.frames);
        let frame = h * w * 3;
        let mut parts: [Vec<u8>; 3] = Default::default();
        for &i in ids {
            let info = self
                .index
                .clips
                .get(i)
                .ok_or_else(|| WorldModelError::Data(format!("no clip {i} in the cache")))?;
            let st = header(&self.shards[info.shard], info.shard)?;
            for (k, (name, per)) in [("context", 1), ("arm", f + 1), ("future", f)]
                .into_iter()
                .enumerate()
            {
                parts[k].extend_from_slice(rows(&st, info.shard, name, info.row, per * frame)?);
            }
        }
        let b = ids.len();
        let [context, arm, future] = parts;
        let prior = if model.prior {
            let cached = self
                .priors
                .as_ref()
                .filter(|(key, _)| *key == prior_key(model));
            let mut bytes = Vec::with_capacity(b * f * frame);
            for (k, &i) in ids.iter().enumerate() {
                let info = &self.index.clips[i];
                match cached {
                    Some((_, maps)) => bytes.extend_from_slice(rows(
                        &header(&maps[info.shard], info.shard)?,
                        info.shard,
                        "prior",
                        info.row,
                        f * frame,
                    )?),
                    None => bytes.extend(self.make_prior(
                        i,
                        &context[k * frame..(k + 1) * frame],
                        model,
                    )),
                }
            }
            Some(to_tensor(bytes, &[b, f, h, w, 3])?)
        } else {
            None
        };
        Ok(Batch {
            context: to_tensor(context, &[b, h, w, 3])?,
            arm: to_tensor(arm, &[b, f + 1, h, w, 3])?,
            future: to_tensor(future, &[b, f, h, w, 3])?,
            prior,
        })
    }
}

/// u8 `[..., H, W, 3]` → f32 `[..., 3, H, W]` in −1…1.
pub fn to_tensor(bytes: Vec<u8>, shape: &[usize]) -> Result<Tensor, WorldModelError> {
    let t = Tensor::from_vec(bytes, shape, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .affine(2.0 / 255.0, -1.0)?;
    let r = shape.len();
    let mut order: Vec<usize> = (0..r - 3).collect();
    order.extend([r - 1, r - 3, r - 2]);
    Ok(t.permute(order)?.contiguous()?)
}

/// f32 `[3, H, W]` in −1…1 → rgb8 bytes.
pub fn to_rgb(frame: &Tensor) -> Result<Vec<u8>, WorldModelError> {
    let t = ((frame.to_dtype(DType::F32)?.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?
        .round()?
        .permute((1, 2, 0))?
        .contiguous()?
        .to_dtype(DType::U8)?;
    Ok(t.flatten_all()?.to_vec1::<u8>()?)
}

/// Bag folders in `paths`: a path that is a bag (metadata.yaml, .mcap or .db3 inside, or a
/// file) is taken as is; otherwise its sub-folders that are bags. Sorted by their canonical
/// paths; a bag named twice is an error.
pub fn find_bags(paths: &[PathBuf]) -> Result<Vec<PathBuf>, WorldModelError> {
    let is_bag = |p: &Path| -> bool {
        p.is_file()
            || p.join("metadata.yaml").exists()
            || std::fs::read_dir(p).is_ok_and(|rd| {
                rd.flatten().any(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.ends_with(".mcap") || n.ends_with(".db3")
                })
            })
    };
    let mut out = Vec::new();
    for p in paths {
        if !p.exists() {
            return Err(WorldModelError::Data(format!(
                "{}: no such bag or folder",
                p.display()
            )));
        }
        if is_bag(p) {
            out.push(p.clone());
            continue;
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|source| WorldModelError::Io {
                path: p.clone(),
                source,
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|s| s.is_dir() && is_bag(s))
            .collect();
        subs.sort();
        if subs.is_empty() {
            return Err(WorldModelError::Data(format!(
                "{}: neither a bag nor a folder of bags (no metadata.yaml, .mcap or .db3 in it or in a folder \
                 below; `dreamplan collect --out DIR` records some)",
                p.display()
            )));
        }
        out.extend(subs);
    }
    // One order and each bag once, however the bags were named: `--bags bags` and `--bags
    // bags/rope bags/cloth bags/toy` cut the same cache and resume the same run, and a bag
    // named twice (`--bags bags bags/rope`) is refused rather than weighted double (before
    // session 52 both were taken as typed).
    let mut keyed: Vec<(PathBuf, PathBuf)> = out
        .into_iter()
        .map(|p| (std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone()), p))
        .collect();
    keyed.sort();
    if let Some(w) = keyed.windows(2).find(|w| w[0].0 == w[1].0) {
        let (a, b) = (w[0].1.display(), w[1].1.display());
        let named = if a.to_string() == b.to_string() {
            format!("{a} is given twice")
        } else {
            format!("{} is given twice (as {a} and {b})", w[0].0.display())
        };
        return Err(WorldModelError::Data(format!(
            "{named}: name each bag once"
        )));
    }
    Ok(keyed.into_iter().map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bags_are_found_in_one_order_and_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bags");
        for task in ["rope", "cloth", "toy"] {
            std::fs::create_dir_all(root.join(task)).unwrap();
            std::fs::write(root.join(task).join(format!("{task}_0.mcap")), b"").unwrap();
        }
        let whole = find_bags(std::slice::from_ref(&root)).unwrap();
        let names = |v: &[PathBuf]| -> Vec<String> {
            v.iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
                .collect()
        };
        assert_eq!(names(&whole), ["cloth", "rope", "toy"]);
        let typed = ["rope", "cloth", "toy"].map(|t| root.join(".").join(t));
        assert_eq!(names(&find_bags(&typed).unwrap()), names(&whole));
        let e = find_bags(&[root.clone(), root.join("rope")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("given twice") && e.contains("rope"), "{e}");
    }

    #[test]
    fn a_bag_is_cut_only_through_the_camera_it_was_recorded_with() {
        let header = crate::msg::prelude::Header::default();
        let builtin = Config::cpu();
        // What the built-in camera node publishes passes, at any size.
        for (w, h) in [(128, 128), (256, 256)] {
            let info = crate::render::scene::default_camera(w, h).camera_info(header.clone());
            check_camera("b", &info, &builtin, w, h).unwrap();
        }
        // A real arm's camera, or the built-in one at another size than the frames, not.
        let real = crate::render::camera::PinholeCamera {
            width: 640,
            height: 480,
            fx: 610.0,
            fy: 610.0,
            cx: 320.0,
            cy: 240.0,
            ..crate::render::scene::default_camera(640, 480)
        };
        let real_info = real.camera_info(header.clone());
        let e = check_camera("real", &real_info, &builtin, 640, 480)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("real: its camera") && e.contains("fx 610.0") && e.contains("--camera FILE"),
            "{e}"
        );
        let info = crate::render::scene::default_camera(256, 256).camera_info(header.clone());
        assert!(check_camera("b", &info, &builtin, 128, 128).is_err());
        // Bags recorded before the half-pixel convention (K's cx, cy at 128) pass; a
        // principal point a pixel off does not.
        let mut old = info.clone();
        old.k[2] += 0.5;
        old.k[5] += 0.5;
        check_camera("old", &old, &builtin, 256, 256).unwrap();
        let mut shifted = info.clone();
        shifted.k[2] += 1.0;
        assert!(check_camera("shifted", &shifted, &builtin, 256, 256).is_err());
        // With the real camera in the config, its bags pass, at its size or scaled (frames
        // downsized by a driver), and the built-in camera's are refused.
        let with_real = Config {
            camera: Some(crate::render::CameraSpec::of(&real)),
            ..Config::cpu()
        };
        check_camera("real", &real_info, &with_real, 640, 480).unwrap();
        let half = real.resized(320, 240).camera_info(header);
        check_camera("real", &half, &with_real, 320, 240).unwrap();
        let e = check_camera("b", &info, &with_real, 256, 256)
            .unwrap_err()
            .to_string();
        assert!(e.contains("the camera of the world model's config"), "{e}");
        // The spec round-trips the camera.
        assert_eq!(with_real.camera_model(640, 480).fx, 610.0);
        let m = with_real.camera_model(640, 480);
        assert!((m.cx - real.cx).abs() < 1e-12 && (m.cy - real.cy).abs() < 1e-12);
        assert!(
            (m.world_from_camera.translation.vector - real.world_from_camera.translation.vector)
                .norm()
                < 1e-12
        );
        assert!(
            m.world_from_camera
                .rotation
                .angle_to(&real.world_from_camera.rotation)
                < 1e-9
        );
    }
}
