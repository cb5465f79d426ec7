//! What the world model sees, built from a recorded transition or a planned motion: a
//! [`Clip`] holds the current object-only frame, the arm video and the future object-only
//! frames, all cropped to the workspace and resized to the model's resolution.
//!
//! The arm video is rendered here, not recorded: the joint states (recorded, or sampled from
//! a planned trajectory) go through the arm model's forward kinematics and the renderer's
//! arm-on-white mode with a camera whose intrinsics are the source camera's cut to the crop,
//! so the arm lands on the same pixels as in the cropped camera frames.

use opencv::core::{Mat, Rect, Size};
use opencv::imgproc;
use opencv::prelude::*;

use super::prior::{GripPath, Phase};
use super::{Config, WorldModelError};
use crate::msg::prelude::*;
use crate::render::{render, scene, PinholeCamera, RenderMode, RenderOptions};
use crate::robot::motion::{sample_positions, PickPlacePlan};
use crate::robot::ArmModel;

/// One training or prediction example at the model's resolution: rgb8, row-major,
/// `width × height × 3` bytes per frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// The current object-only frame.
    pub context: Vec<u8>,
    /// The arm video: the start of the motion, then one frame per future frame.
    pub arm: Vec<Vec<u8>>,
    /// The future object-only frames (empty when predicting).
    pub future: Vec<Vec<u8>>,
    /// The gripper's path at the future frames (`None`: it never closed, or its tip left
    /// the view; the carry prior is then the current frame).
    pub grip: Option<GripPath>,
}

/// rgb8 pixels of a ROS image ([`crate::vision::rgb_pixels`]).
pub fn image_rgb(img: &Image) -> Result<Vec<u8>, WorldModelError> {
    crate::vision::rgb_pixels(img).map_err(WorldModelError::Data)
}

/// The crop of a `width × height` rgb8 image resized to the model's frame (area
/// interpolation, so thin objects fade instead of vanishing).
pub fn crop_resize(
    rgb: &[u8],
    width: u32,
    height: u32,
    cfg: &Config,
) -> Result<Vec<u8>, WorldModelError> {
    if width == 0 || height == 0 {
        return Err(WorldModelError::Data(format!(
            "an image of {width}×{height} pixels holds nothing to see"
        )));
    }
    if rgb.len() != width as usize * height as usize * 3 {
        return Err(WorldModelError::Data(format!(
            "a {width}×{height} rgb image needs {} bytes, got {}",
            width as usize * height as usize * 3,
            rgb.len()
        )));
    }
    let cv = |e: opencv::Error| WorldModelError::Data(format!("OpenCV: {e}"));
    let (x0, y0, w, h) = cfg.crop.pixels(width, height);
    let flat = Mat::new_rows_cols_with_data(height as i32, (width * 3) as i32, rgb).map_err(cv)?;
    let src = flat.reshape(3, height as i32).map_err(cv)?;
    let roi = Mat::roi(&src, Rect::new(x0 as i32, y0 as i32, w as i32, h as i32)).map_err(cv)?;
    let mut out = Mat::default();
    imgproc::resize(
        &roi,
        &mut out,
        Size::new(cfg.width as i32, cfg.height as i32),
        0.0,
        0.0,
        imgproc::INTER_AREA,
    )
    .map_err(cv)?;
    Ok(out.data_bytes().map_err(cv)?.to_vec())
}

/// The camera that sees exactly the crop of `camera`'s image at the model's resolution.
pub fn crop_camera(camera: &PinholeCamera, cfg: &Config) -> PinholeCamera {
    let (x0, y0, w, h) = cfg.crop.pixels(camera.width, camera.height);
    let sx = cfg.width as f64 / f64::from(w);
    let sy = cfg.height as f64 / f64::from(h);
    PinholeCamera {
        width: cfg.width as u32,
        height: cfg.height as u32,
        fx: camera.fx * sx,
        fy: camera.fy * sy,
        cx: (camera.cx - f64::from(x0)) * sx,
        cy: (camera.cy - f64::from(y0)) * sy,
        world_from_camera: camera.world_from_camera,
    }
}

/// A candidate's motion as the world model is given it: the arm video and the gripper's
/// path (for a model that starts from the carry prior).
#[derive(Debug, Clone, PartialEq)]
pub struct Motion {
    /// The arm video: the start of the motion, then one frame per future frame.
    pub arm: Vec<Vec<u8>>,
    /// The gripper's path at the future frames (`None`: the carry prior copies the
    /// current frame).
    pub grip: Option<GripPath>,
}

/// Renders the arm alone on white through the crop camera.
pub struct ArmVideo {
    arm: ArmModel,
    camera: PinholeCamera,
    options: RenderOptions,
}

impl ArmVideo {
    /// For images of `camera` and the model configured by `cfg`.
    pub fn new(arm: ArmModel, camera: &PinholeCamera, cfg: &Config) -> Self {
        Self {
            arm,
            camera: crop_camera(camera, cfg),
            options: RenderOptions::default(),
        }
    }

    /// One frame of the arm at joint positions `q` (the model's joint order).
    pub fn frame(&self, q: &[f64], gripper_open: bool) -> Vec<u8> {
        let poses: Vec<_> = self.arm.link_poses(q).into_iter().map(|(_, p)| p).collect();
        let prims = scene::arm_primitives(&poses, gripper_open);
        render(&prims, &self.camera, RenderMode::ArmOnWhite, &self.options).rgb
    }

    /// The arm video of a planned pick-and-place: the start, then `cfg.frames` frames evenly
    /// over the motion and `cfg.after_s` after it (what a recorded transition's video holds).
    pub fn of_plan(&self, plan: &PickPlacePlan, cfg: &Config) -> Vec<Vec<u8>> {
        let span = plan_span_s(plan, cfg);
        (0..=cfg.frames)
            .map(|k| {
                let t = span * k as f64 / cfg.frames as f64;
                let closed = t >= plan.grasp_time_s && t < plan.release_time_s;
                self.frame(&sample_positions(&plan.trajectory, t), !closed)
            })
            .collect()
    }

    /// The arm video and the gripper's path of a planned pick-and-place.
    pub fn motion_of_plan(&self, plan: &PickPlacePlan, cfg: &Config) -> Motion {
        Motion {
            arm: self.of_plan(plan, cfg),
            grip: self.grip_of_plan(plan, cfg),
        }
    }

    /// The gripper tip's pixel in the model's frame at joint positions `q` (`None` when it
    /// is behind the camera).
    pub fn tip_pixel(&self, q: &[f64]) -> Option<[f32; 2]> {
        let tip = self.arm.fk(q).translation.vector;
        let (u, v, _) = self.camera.project(&nalgebra::Point3::from(tip))?;
        Some([u as f32, v as f32])
    }

    /// The gripper's path of a planned pick-and-place at the arm video's future frames
    /// (what the carry prior moves the object along).
    pub fn grip_of_plan(&self, plan: &PickPlacePlan, cfg: &Config) -> Option<GripPath> {
        let span = plan_span_s(plan, cfg);
        let at = |t: f64| self.tip_pixel(&sample_positions(&plan.trajectory, t));
        let pick = at(plan.grasp_time_s)?;
        let place = at(plan.release_time_s)?;
        let frames = (1..=cfg.frames)
            .map(|k| {
                let t = span * k as f64 / cfg.frames as f64;
                let phase = if t < plan.grasp_time_s {
                    Phase::Before
                } else if t < plan.release_time_s {
                    Phase::Held
                } else {
                    Phase::After
                };
                Some((phase, at(t)?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(GripPath::new(pick, place, &frames))
    }

    /// The positions of the model's arm joints in a recorded joint state, when it has all.
    fn arm_of(&self, js: &JointState) -> Option<Vec<f64>> {
        self.arm
            .joint_names()
            .iter()
            .map(|name| {
                js.name
                    .iter()
                    .position(|n| n == name)
                    .and_then(|i| js.position.get(i).copied())
            })
            .collect()
    }

    /// Whether a recorded joint state has the gripper open (finger joint beyond 2 cm), when
    /// it records a finger joint.
    fn open_of(js: &JointState) -> Option<bool> {
        js.name
            .iter()
            .position(|n| n.contains("finger"))
            .and_then(|i| js.position.get(i))
            .map(|&p| p > 0.02)
    }
}

/// A transition's joint states split by what they carry: arm and gripper may come from
/// different publishers (a real arm's `/joint_states` and its gripper's), so the arm at a
/// time is the nearest state with every arm joint and the gripper the nearest with a finger
/// joint (open when none has one). Before session 45 the nearest state of any kind was
/// taken whole: a gripper-only one made the transition fail, an arm-only one showed the
/// gripper open.
struct JointTracks {
    arm: Vec<(u64, Vec<f64>)>,
    finger: Vec<(u64, bool)>,
}

impl JointTracks {
    fn new(states: &[(u64, JointState)], video: &ArmVideo) -> Self {
        Self {
            arm: states
                .iter()
                .filter_map(|(t, js)| video.arm_of(js).map(|q| (*t, q)))
                .collect(),
            finger: states
                .iter()
                .filter_map(|(t, js)| ArmVideo::open_of(js).map(|o| (*t, o)))
                .collect(),
        }
    }

    /// The arm's joints and whether the gripper is open at `t`.
    fn at(&self, t: u64) -> Option<(Vec<f64>, bool)> {
        let q = nearest(&self.arm, t)?.clone();
        Some((q, nearest(&self.finger, t).copied().unwrap_or(true)))
    }
}

/// The element of time-stamped `items` nearest to `t`.
fn nearest<T>(items: &[(u64, T)], t: u64) -> Option<&T> {
    items
        .iter()
        .min_by_key(|(s, _)| s.abs_diff(t))
        .map(|(_, x)| x)
}

/// The clip of one recorded transition: context = the last object-only frame before the
/// action (or the first during it); future frames evenly spaced through the transition's
/// object-only frames (the motion and the settling after it: the recorder's after-window,
/// or in the built-in world the second between motion end and `scored`), arm frames from
/// the joint states at the same moments.
pub fn from_transition(
    tr: &crate::bag::transitions::Transition,
    video: &ArmVideo,
    cfg: &Config,
) -> Result<Clip, WorldModelError> {
    let missing = |what: &str| {
        WorldModelError::Data(format!(
            "episode {} step {}: no {what} (record /camera/object_only and /joint_states)",
            tr.episode, tr.step
        ))
    };
    let finished = tr.finished.ok_or_else(|| {
        WorldModelError::Data(format!(
            "episode {} step {}: the action never finished (refused or failed), nothing to learn",
            tr.episode, tr.step
        ))
    })?;
    let context = tr
        .object_observation
        .as_ref()
        .or(tr.object_frames.first())
        .map(|(_, img)| img)
        .ok_or_else(|| missing("object-only frame"))?;
    if tr.object_frames.is_empty() {
        return Err(missing("object-only frames after the action"));
    }
    if tr.joint_states.is_empty() {
        return Err(missing("joint states"));
    }
    let frame = |img: &Image| -> Result<Vec<u8>, WorldModelError> {
        if (img.width, img.height) != (context.width, context.height) {
            return Err(WorldModelError::Data(format!(
                "episode {} step {}: object-only frames of {}×{} and {}×{} in one transition",
                tr.episode, tr.step, context.width, context.height, img.width, img.height
            )));
        }
        crop_resize(&image_rgb(img)?, img.width, img.height, cfg)
    };
    // Frame k of F is the object frame k/F of the way through the transition's frames
    // (motion and settling), by count: cameras run at a fixed rate in their own time, while
    // log times of a simulator running faster than real time are not proportional to it.
    // The arm frame is the joint state logged nearest to that frame (the last one once the
    // motion is over); frame 0 is the start.
    let n = tr.object_frames.len();
    let picks: Vec<usize> = (1..=cfg.frames)
        .map(|k| ((k * (n - 1)) as f64 / cfg.frames as f64).round() as usize)
        .collect();
    let mut times = vec![tr.started];
    times.extend(picks.iter().map(|&i| tr.object_frames[i].0));
    let mut arm = Vec::with_capacity(times.len());
    let mut at_frames = Vec::with_capacity(times.len());
    let tracks = JointTracks::new(&tr.joint_states, video);
    for &t in &times {
        let (q, open) = tracks.at(t.min(finished)).ok_or_else(|| {
            WorldModelError::Data(format!(
                "episode {} step {}: no joint state with a position for each of {:?}",
                tr.episode,
                tr.step,
                video.arm.joint_names()
            ))
        })?;
        arm.push(video.frame(&q, open));
        at_frames.push((t, q, open));
    }
    let grip = grip_of_states(&tracks, &at_frames[1..], video);
    let future = picks
        .iter()
        .map(|&i| frame(&tr.object_frames[i].1))
        .collect::<Result<_, _>>()?;
    Ok(Clip {
        context: frame(context)?,
        arm,
        future,
        grip,
    })
}

/// The gripper's path of a recorded transition: the tip where the first closed joint state
/// has it (the pick) and where the last one has it (the place); each future frame (its log
/// time, joints, open) is before, while or after the hold.
fn grip_of_states(
    tracks: &JointTracks,
    frames: &[(u64, Vec<f64>, bool)],
    video: &ArmVideo,
) -> Option<GripPath> {
    // The hold: from the first to the last state with the fingers closed, the arm where
    // the nearest arm state has it then.
    let closed: Vec<u64> = tracks
        .finger
        .iter()
        .filter(|(_, open)| !open)
        .map(|(t, _)| *t)
        .collect();
    let (t_grasp, t_release) = (*closed.first()?, *closed.last()?);
    let (q_pick, q_place) = (&tracks.at(t_grasp)?.0, &tracks.at(t_release)?.0);
    let t_grasp = &t_grasp;
    let (pick, place) = (video.tip_pixel(q_pick)?, video.tip_pixel(q_place)?);
    let mut phases = Vec::with_capacity(frames.len());
    for (t, q, open) in frames {
        let tip = video.tip_pixel(q)?;
        let phase = if !open {
            Phase::Held
        } else if t < t_grasp {
            Phase::Before
        } else {
            Phase::After
        };
        phases.push((phase, tip));
    }
    Some(GripPath::new(pick, place, &phases))
}

/// Seconds a clip of `plan` covers: the trajectory's motion plus `cfg.after_s` of settling.
pub fn plan_span_s(plan: &PickPlacePlan, cfg: &Config) -> f64 {
    let end = plan
        .trajectory
        .points
        .last()
        .map_or(0.0, |p| p.time_from_start.as_secs_f64());
    end + cfg.after_s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arm and gripper from different publishers (a real arm's `/joint_states` and its
    /// gripper's) make the same clip as one publisher of both: the arm from the nearest arm
    /// state, the gripper from the nearest finger state.
    #[test]
    fn arm_and_gripper_states_from_two_publishers_make_the_clip_of_one() {
        let cfg = Config::cpu();
        let video = ArmVideo::new(
            crate::robot::franka::default_arm(),
            &crate::render::scene::default_camera(64, 64),
            &cfg,
        );
        let arm_names: Vec<String> = video.arm.joint_names().to_vec();
        let ready = crate::robot::franka::READY.to_vec();
        // The arm moves joint 1 along; the fingers close from 250 to 450 ns.
        let q_at = |t: u64| {
            let mut q = ready.clone();
            q[0] += t as f64 * 1e-3;
            q
        };
        let finger_at = |t: u64| if (250..=450).contains(&t) { 0.0 } else { 0.04 };
        let state = |names: Vec<String>, position: Vec<f64>| JointState {
            name: names,
            position,
            ..Default::default()
        };
        let finger = "panda_finger_joint1".to_string();
        let frame = Image {
            width: 64,
            height: 64,
            encoding: "rgb8".into(),
            step: 64 * 3,
            data: vec![255; 64 * 64 * 3],
            ..Default::default()
        };
        let base = crate::bag::transitions::Transition {
            object_observation: Some((0, frame.clone())),
            object_frames: (1..=6).map(|k| (k * 100, frame.clone())).collect(),
            started: 0,
            finished: Some(600),
            ..Default::default()
        };
        let times: Vec<u64> = (0..=12).map(|k| k * 50).collect();
        let one = crate::bag::transitions::Transition {
            joint_states: times
                .iter()
                .map(|&t| {
                    let mut names = arm_names.clone();
                    names.push(finger.clone());
                    let mut q = q_at(t);
                    q.push(finger_at(t));
                    (t, state(names, q))
                })
                .collect(),
            ..base.clone()
        };
        let two = crate::bag::transitions::Transition {
            joint_states: times
                .iter()
                .flat_map(|&t| {
                    [
                        (t, state(arm_names.clone(), q_at(t))),
                        (t + 1, state(vec![finger.clone()], vec![finger_at(t)])),
                    ]
                })
                .collect(),
            ..base
        };
        let a = from_transition(&one, &video, &cfg).unwrap();
        let b = from_transition(&two, &video, &cfg).unwrap();
        assert!(a.grip.is_some());
        assert_eq!(a, b);
    }

    #[test]
    fn an_image_without_pixels_is_refused_not_cropped() {
        let empty = Image {
            width: 0,
            height: 0,
            encoding: "rgb8".into(),
            ..Default::default()
        };
        let err = image_rgb(&empty).unwrap_err().to_string();
        assert!(err.contains("0×0 pixels"), "{err}");
        let err = crop_resize(&[], 0, 0, &Config::cpu())
            .unwrap_err()
            .to_string();
        assert!(err.contains("0×0 pixels"), "{err}");
    }

    #[test]
    fn colour_encodings_with_and_without_alpha_read_as_rgb_and_others_are_named() {
        // Two pixels, red then blue, in a padded row (step 12 for 8 or 6 bytes).
        let image = |encoding: &str, px: &[u8]| Image {
            width: 2,
            height: 2,
            encoding: encoding.into(),
            step: 12,
            data: [px, &vec![0; 12 - px.len()], px].concat(),
            ..Default::default()
        };
        let want = [255u8, 0, 0, 0, 0, 255].repeat(2);
        for (enc, px) in [
            ("rgb8", vec![255, 0, 0, 0, 0, 255]),
            ("bgr8", vec![0, 0, 255, 255, 0, 0]),
            ("rgba8", vec![255, 0, 0, 7, 0, 0, 255, 7]),
            ("bgra8", vec![0, 0, 255, 7, 255, 0, 0, 7]),
        ] {
            assert_eq!(image_rgb(&image(enc, &px)).unwrap(), want, "{enc}");
        }
        let err = image_rgb(&image("mono8", &[1, 2])).unwrap_err().to_string();
        assert!(err.contains("encoding \"mono8\" is not rgb8"), "{err}");
        // A made-up header of huge rows is refused, not overflowed into a panic.
        let huge = Image {
            width: 1,
            height: u32::MAX,
            encoding: "rgba8".into(),
            step: u32::MAX,
            data: vec![0; 16],
            ..Default::default()
        };
        let err = image_rgb(&huge).unwrap_err().to_string();
        assert!(err.contains("fewer than its size needs"), "{err}");
    }
}
