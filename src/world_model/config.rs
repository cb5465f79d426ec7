//! The world model's configuration: its size, what it sees (the workspace crop) and how it
//! samples. Saved beside every checkpoint as `config.json`; a checkpoint is only loaded with
//! the configuration it was trained with.

use serde::{Deserialize, Serialize};

/// A region of interest of the camera image, as fractions of its width and height, so one
/// configuration serves any camera resolution. Objects live inside it; the model works on
/// this crop resized to its resolution (a naive downscale of the whole view would erase a
/// 3 px rope). Its aspect in pixels should match the model's frames.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crop {
    /// Left edge (fraction of the width).
    pub u0: f64,
    /// Top edge (fraction of the height).
    pub v0: f64,
    /// Right edge (fraction of the width).
    pub u1: f64,
    /// Bottom edge (fraction of the height).
    pub v1: f64,
}

impl Crop {
    /// The built-in camera's workspace: the table region objects and actions use
    /// (`sim::tasks::TABLE_X/Y` plus 2 cm, up to 5 cm above the table) projects to
    /// u 0.03–0.97, v 0.29–0.75 of the view; this 2:1 region holds it
    /// (`tests/world_model.rs` checks it).
    pub const BUILT_IN: Crop = Crop {
        u0: 0.02,
        v0: 0.28,
        u1: 0.98,
        v1: 0.76,
    };

    /// The crop in pixels of a `width`×`height` image: `(x0, y0, w, h)`, inside it and at
    /// least one pixel.
    pub fn pixels(&self, width: u32, height: u32) -> (u32, u32, u32, u32) {
        let px = |f: f64, n: u32| ((f * f64::from(n)).round().max(0.0) as u32).min(n);
        let (x0, x1) = (px(self.u0, width), px(self.u1, width));
        let (y0, y1) = (px(self.v0, height), px(self.v1, height));
        // An empty image (a bad frame in a user's bag) is refused later, with its reason;
        // `width - 1` panicked here first in debug builds before session 45.
        let x0 = x0.min(width.saturating_sub(1));
        let y0 = y0.min(height.saturating_sub(1));
        (x0, y0, x1.max(x0 + 1) - x0, y1.max(y0 + 1) - y0)
    }
}

/// Sizes and settings of the world model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Frame width in pixels.
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Future frames predicted (evenly spaced over the motion and the settling after it).
    pub frames: usize,
    /// Token width.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Backbone blocks (each: spatial attention, temporal attention, MLP).
    pub depth: usize,
    /// Blocks copied into the ControlNet branch (the arm video's path).
    pub control_blocks: usize,
    /// MLP width as a multiple of `hidden`.
    pub mlp_ratio: usize,
    /// Euler steps of the sampler.
    pub sample_steps: usize,
    /// Seconds of settling after the motion covered by the future frames.
    pub after_s: f64,
    /// The workspace crop.
    pub crop: Crop,
    /// Generate the change from the current frame (future − current) instead of the
    /// frames themselves: in object-only frames almost every pixel keeps its value, so the
    /// flow's target is zero nearly everywhere and a small model spends its capacity on the
    /// object that moves. The sampler adds the current frame back.
    #[serde(default)]
    pub residual: bool,
    /// What the network outputs (see [`Prediction`]).
    #[serde(default)]
    pub prediction: Prediction,
    /// Also add the arm video's patches, through a trainable linear map with the usual
    /// random start, to the backbone's tokens of the same frame and place (a channel
    /// concatenation of arm and object frames before the patch embedding, written as a
    /// sum). The ControlNet branch alone enters the backbone through zero-initialised maps
    /// in series, so the arm reaches the output only once two of them have grown: at the
    /// CPU budget (1,000 steps) the model learned the object staying put. This direct path
    /// lets every token see where the gripper is from the first step.
    #[serde(default)]
    pub arm_direct: bool,
    /// Weight of the pixels that move in the loss: each pixel's squared error counts
    /// `1 + motion_weight · m`, with `m` the mean absolute change of the pixel from the
    /// current frame to the true future one (0–2 over the channels' mean, in −1…1 units).
    /// In object-only frames the moving object is a few percent of the pixels; an
    /// unweighted loss is lowest for a model that predicts no motion. 0 = unweighted.
    #[serde(default)]
    pub motion_weight: f64,
    /// Start from the carry prior ([`super::prior`]): the object's pixels near the pick
    /// moved along the gripper's path. The network sees the prior's frames (added to the
    /// tokens of the same frame and place) and generates the change from them instead of
    /// from the current frame, so "nothing learned" means the prior, not "nothing moves".
    #[serde(default)]
    pub prior: bool,
    /// The carry prior's drag reach σ in model pixels: a pixel at distance `d` from the pick
    /// moves `exp(−d² / 2σ²)` of the gripper's travel.
    #[serde(default = "default_prior_sigma")]
    pub prior_sigma_px: f64,
    /// Which hand-made prior: `particles` (the material as connected particles that follow
    /// the gripper where pulled taut, [`super::particles`]; both presets) or `carry` (a blob
    /// around the pick moves; what configs written before the choice existed read as).
    #[serde(default)]
    pub prior_model: PriorModel,
    /// The particle prior's carry height in model pixels (the executor lifts 5 cm; the
    /// built-in crop at 128 px is about 0.6 cm per pixel).
    #[serde(default = "default_prior_lift")]
    pub prior_lift_px: f64,
    /// The particle prior's grasp reach: the particles within it of the pick are held
    /// (model pixels; the simulated fingers hold within 1.2 cm).
    #[serde(default = "default_prior_grasp")]
    pub prior_grasp_px: f64,
    /// The particle prior's table friction: a particle lying on the table moves this
    /// fraction as readily as a hanging one (1 = no friction; small = what lies on the
    /// table stays unless pulled hard). `fit-prior` fits it from bags.
    #[serde(default = "default_prior_table_mobility")]
    pub prior_table_mobility: f64,
    /// The particle prior's sag: how far an unheld particle above the table sinks per
    /// sub-step before the joins pull it back (model pixels): what makes a lifted flap
    /// drape instead of floating. `fit-prior` fits it from bags.
    #[serde(default = "default_prior_sag")]
    pub prior_sag_px: f64,
    /// The particle prior's stretch limit: after each sub-step no join stays longer than
    /// this times its rest length. `fit-prior` fits it from bags.
    #[serde(default = "default_prior_max_stretch")]
    pub prior_max_stretch: f64,
    /// The particle prior's compression limit: a join between neighbours (1 px straight or
    /// diagonal) shorter than this times its rest length is pushed apart, so that dragged
    /// material keeps its area instead of collapsing onto the gripper's path. 0 (the
    /// default, sessions 22–36) pushes nothing: joins only pull. Joins 2 px across (the
    /// material's bending) are never pushed, so it still folds. Left out of `config.json`
    /// at 0, so a config written before the key existed reads and writes the same.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub prior_min_length: f64,
    /// The particle prior's spread at the release (model pixels; 0, the default, = none):
    /// a carried particle that lands on a pixel another particle already covers slides to
    /// the nearest free pixel within this distance, so material lowered in a heap lies
    /// beside itself instead of vanishing into one spot. Left out of `config.json` at 0.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub prior_spread_px: f64,
    /// Gate the network's correction of the prior: it may change only the pixels within
    /// this many model pixels of the object in the current frame or in the prior's frame
    /// (a square dilation of their union); everywhere else the prediction is the prior's
    /// frame exactly. 0 = no gate. Needs `prior`, `residual` and `prediction: sample`.
    /// An ungated network trained from the carry prior spent its output over the whole
    /// table (a faint patch checkerboard) and washed the object's colour out where it
    /// expected change, so it ranked worse than the prior it started from.
    #[serde(default)]
    pub prior_gate_px: f64,
    /// The per-pixel error the flow loss averages (see [`Loss`]).
    #[serde(default)]
    pub loss: Loss,
    /// Channels of a small convolutional refiner of a mask model's logits (0 = none; needs
    /// `loss: mask`): a two-level U-Net at the model's full resolution over the
    /// transformer's logit, the prior's and the current frame's masks and colours, whose
    /// zero-initialised output adds to the logit. The transformer sees 8×8 patches through
    /// a 64-wide token; the corrections the bags ask for are a pixel or two at the object's
    /// edge (session 36).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refine_width: usize,
    /// The camera the bags were recorded through, when it is not the built-in world's (a
    /// real arm's: its calibration and hand-eye pose, `render::CameraSpec`): the arm video
    /// is drawn through it, in training and at inference, and a bag whose camera info
    /// has other intrinsics is refused. Unset (the default): the built-in camera. Left out
    /// of `config.json` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<crate::render::CameraSpec>,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

/// The per-pixel error of the flow loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Squared error: the network learns the mean of the outcomes it cannot tell apart. With
    /// one sampler step that mean is its prediction, and where it is unsure whether the
    /// material lands on a pixel it paints a faint wash of the object's colour there, which
    /// the colour segmentation of the mask measure half keeps and half drops.
    #[default]
    Squared,
    /// Absolute error: the network learns the per-pixel median, which for a pixel that is
    /// either object or table is one of the two, so a one-step prediction commits to a mask
    /// instead of washing it out (the velocity objective keeps its own meaning of it).
    Absolute,
    /// The object's mask instead of its colours (session 36): the network's output, averaged
    /// over the three channels, is a per-pixel logit added to the prior's mask (±3, so an
    /// untrained model predicts the prior), trained with binary cross-entropy against the true
    /// frame's object pixels inside the gate. The predicted frame paints the pixels the logit
    /// calls object in the object's colour and the others in the table's. A logit commits
    /// where a colour regression averages: it flips a pixel as soon as the network finds the
    /// prior wrong there more often than right. It is a one-pass predictor: it is trained
    /// and sampled at flow time 1, with the noise's mean (zero) in the future frames' slot,
    /// so it needs `sample_steps: 1`, `prior: true`,
    /// `residual: true` and `prediction: sample`.
    Mask,
}

/// The hand-made prior a model with `prior: true` starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorModel {
    /// The object's pixels near the pick moved by the gripper's travel ([`super::prior::carry`]).
    #[default]
    Carry,
    /// Connected particles pulled taut behind the gripper ([`super::particles::particles`]).
    Particles,
}

fn default_prior_sigma() -> f64 {
    6.0
}

fn default_prior_lift() -> f64 {
    8.0
}

fn default_prior_grasp() -> f64 {
    2.0
}

fn default_prior_table_mobility() -> f64 {
    0.1
}

fn default_prior_sag() -> f64 {
    0.5
}

fn default_prior_max_stretch() -> f64 {
    1.05
}

/// What the network predicts from the noisy frames.
///
/// With patches wider than the token (`patch_dim > hidden`: 192 values into 64 at the CPU
/// preset, 768 into 384 at the GPU one) a network cannot pass the noise through, and the
/// velocity `ε − x` is mostly noise: its loss stalls near `1 − hidden / patch_dim` (0.68
/// measured at the CPU preset, 0.67 predicted) and the samples stay noisy. The clean frames
/// (here: their change from the current frame) are low-dimensional, so predicting them fits
/// through the same tokens; the sampler turns the prediction into a velocity. (The same
/// argument as Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise".)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prediction {
    /// The velocity `ε − x`; loss on it.
    #[default]
    Velocity,
    /// The clean target `x`; loss on it, velocity `(z − x̂) / t` in the sampler.
    Sample,
}

impl Config {
    /// The CPU configuration: 128×64 crops (the workspace is twice as wide as deep; the rope
    /// stays 1.5 px wide), 4 future frames, hidden 64, 4 + 2 blocks (about 0.7 M weights):
    /// the size that trains on ~2,000 clips within 30 minutes on 2 cores. The network
    /// corrects the particle prior's frames near the object (gate 3 px) under an absolute
    /// error, sampled in one step: the best measured setting (session 27, `m27l1`: ranking
    /// agreement 78 / 89 / 72% for rope / cloth / toy, against 47 / 56 / 51% for the same
    /// network without the prior; docs/world_model.md).
    pub fn cpu() -> Self {
        Self {
            width: 128,
            height: 64,
            patch_size: 8,
            frames: 4,
            hidden: 64,
            heads: 4,
            depth: 4,
            control_blocks: 2,
            mlp_ratio: 4,
            sample_steps: 1,
            after_s: 1.0,
            crop: Crop::BUILT_IN,
            residual: true,
            prediction: Prediction::Sample,
            arm_direct: true,
            motion_weight: 10.0,
            prior: true,
            prior_sigma_px: default_prior_sigma(),
            prior_model: PriorModel::Particles,
            prior_lift_px: default_prior_lift(),
            prior_grasp_px: default_prior_grasp(),
            prior_table_mobility: default_prior_table_mobility(),
            prior_sag_px: default_prior_sag(),
            prior_max_stretch: default_prior_max_stretch(),
            prior_min_length: 0.0,
            prior_spread_px: 0.0,
            prior_gate_px: 3.0,
            loss: Loss::Absolute,
            refine_width: 0,
            camera: None,
        }
    }

    /// The GPU configuration: 256×128 crops, 16 future frames, a wider and deeper model.
    pub fn gpu() -> Self {
        Self {
            width: 256,
            height: 128,
            patch_size: 16,
            frames: 16,
            hidden: 384,
            heads: 6,
            depth: 12,
            control_blocks: 4,
            mlp_ratio: 4,
            sample_steps: 8,
            after_s: 1.0,
            crop: Crop::BUILT_IN,
            residual: true,
            prediction: Prediction::Sample,
            arm_direct: true,
            motion_weight: 10.0,
            prior: false,
            prior_sigma_px: default_prior_sigma(),
            prior_model: PriorModel::Particles,
            prior_lift_px: default_prior_lift(),
            prior_grasp_px: default_prior_grasp(),
            prior_table_mobility: default_prior_table_mobility(),
            prior_sag_px: default_prior_sag(),
            prior_max_stretch: default_prior_max_stretch(),
            prior_min_length: 0.0,
            prior_spread_px: 0.0,
            prior_gate_px: 0.0,
            loss: Loss::Squared,
            refine_width: 0,
            camera: None,
        }
    }

    /// A tiny configuration for tests.
    pub fn tiny() -> Self {
        Self {
            width: 16,
            height: 8,
            patch_size: 4,
            frames: 2,
            hidden: 16,
            heads: 2,
            depth: 2,
            control_blocks: 1,
            mlp_ratio: 2,
            sample_steps: 2,
            after_s: 1.0,
            crop: Crop::BUILT_IN,
            residual: false,
            prediction: Prediction::Velocity,
            arm_direct: false,
            motion_weight: 0.0,
            prior: false,
            prior_sigma_px: default_prior_sigma(),
            prior_model: PriorModel::Carry,
            prior_lift_px: default_prior_lift(),
            prior_grasp_px: default_prior_grasp(),
            prior_table_mobility: default_prior_table_mobility(),
            prior_sag_px: default_prior_sag(),
            prior_max_stretch: default_prior_max_stretch(),
            prior_min_length: 0.0,
            prior_spread_px: 0.0,
            prior_gate_px: 0.0,
            loss: Loss::Squared,
            refine_width: 0,
            camera: None,
        }
    }

    /// Patches per frame.
    pub fn patches(&self) -> usize {
        (self.width / self.patch_size) * (self.height / self.patch_size)
    }

    /// Values per patch (RGB).
    pub fn patch_dim(&self) -> usize {
        3 * self.patch_size * self.patch_size
    }

    /// The camera that sees frames of `width`×`height`: [`Config::camera`] scaled to them,
    /// or the built-in world's camera.
    pub fn camera_model(&self, width: u32, height: u32) -> crate::render::PinholeCamera {
        match &self.camera {
            Some(c) => c.model_at(width, height),
            None => crate::render::scene::default_camera(width, height),
        }
    }

    /// Checks the sizes fit together; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(c) = &self.camera {
            c.validate()?;
        }
        let positive = [
            ("width", self.width),
            ("height", self.height),
            ("patch_size", self.patch_size),
            ("frames", self.frames),
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("depth", self.depth),
            ("mlp_ratio", self.mlp_ratio),
            ("sample_steps", self.sample_steps),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be > 0"));
        }
        if !self.width.is_multiple_of(self.patch_size)
            || !self.height.is_multiple_of(self.patch_size)
        {
            return Err(format!(
                "width {} and height {} must be multiples of patch_size {}",
                self.width, self.height, self.patch_size
            ));
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(format!(
                "hidden {} is not a multiple of heads {}",
                self.hidden, self.heads
            ));
        }
        if self.control_blocks > self.depth {
            return Err(format!(
                "control_blocks {} exceeds depth {}",
                self.control_blocks, self.depth
            ));
        }
        let c = &self.crop;
        if !(0.0 <= c.u0 && c.u0 < c.u1 && c.u1 <= 1.0 && 0.0 <= c.v0 && c.v0 < c.v1 && c.v1 <= 1.0)
        {
            return Err(format!("crop {c:?} is not inside the image"));
        }
        if !(self.motion_weight >= 0.0 && self.motion_weight.is_finite()) {
            return Err("motion_weight must be finite and ≥ 0".into());
        }
        if !(self.prior_sigma_px > 0.0 && self.prior_sigma_px.is_finite()) {
            return Err("prior_sigma_px must be finite and > 0".into());
        }
        if !(self.prior_lift_px >= 0.0 && self.prior_lift_px.is_finite()) {
            return Err("prior_lift_px must be finite and ≥ 0".into());
        }
        if !(self.prior_grasp_px > 0.0 && self.prior_grasp_px.is_finite()) {
            return Err("prior_grasp_px must be finite and > 0".into());
        }
        if !(self.prior_table_mobility > 0.0 && self.prior_table_mobility <= 1.0) {
            return Err("prior_table_mobility must be in (0, 1]".into());
        }
        if !(self.prior_sag_px >= 0.0 && self.prior_sag_px.is_finite()) {
            return Err("prior_sag_px must be finite and ≥ 0".into());
        }
        if !(self.prior_max_stretch >= 1.0 && self.prior_max_stretch.is_finite()) {
            return Err("prior_max_stretch must be finite and ≥ 1".into());
        }
        if !(0.0..1.0).contains(&self.prior_min_length) {
            return Err("prior_min_length must be in [0, 1)".into());
        }
        if !(0.0..=16.0).contains(&self.prior_spread_px) {
            return Err("prior_spread_px must be in [0, 16]".into());
        }
        if !(self.prior_gate_px >= 0.0 && self.prior_gate_px.is_finite()) {
            return Err("prior_gate_px must be finite and ≥ 0".into());
        }
        if self.prior_gate_px > 0.0
            && !(self.prior && self.residual && self.prediction == Prediction::Sample)
        {
            return Err(
                "prior_gate_px > 0 needs prior: true, residual: true and prediction: sample \
                 (the gate keeps the prior's pixels where the network may not change them)"
                    .into(),
            );
        }
        if self.loss == Loss::Mask
            && !(self.prior
                && self.residual
                && self.prediction == Prediction::Sample
                && self.sample_steps == 1)
        {
            return Err(
                "loss: mask needs prior: true, residual: true, prediction: sample and \
                 sample_steps: 1 (it corrects the prior's mask in one pass)"
                    .into(),
            );
        }
        if self.refine_width > 0 && self.loss != Loss::Mask {
            return Err("refine_width > 0 needs loss: mask (it refines the mask's logits)".into());
        }
        if self.refine_width > 0 && !(self.width.is_multiple_of(4) && self.height.is_multiple_of(4))
        {
            return Err(format!(
                "refine_width > 0 needs width and height that are multiples of 4 (the refiner \
                 halves them twice), not {}×{}",
                self.width, self.height
            ));
        }
        if !(0.0..=60.0).contains(&self.after_s) {
            return Err("after_s must be between 0 and 60 s".into());
        }
        Ok(())
    }
}
