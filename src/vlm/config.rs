//! `config.json` of an HF Qwen3-VL folder, in both formats transformers has written:
//! 4.57 (`text_config.rope_theta` + `rope_scaling`) and 5.x (`rope_parameters`).
//!
//! Fields that fix a tensor shape are required and a missing one is named; fields with a
//! documented transformers default take that default.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::{Result, VlmError};

/// The language model half (`text_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Rows of `embed_tokens` and `lm_head`.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary base θ.
    pub rope_theta: f64,
    /// Rotary frequency channels given to (T, H, W) positions; sums to `head_dim / 2`.
    pub mrope_section: [usize; 3],
    /// Whether q/k/v/o projections have biases.
    pub attention_bias: bool,
}

/// The vision tower (`vision_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Transformer blocks.
    pub depth: usize,
    /// Width of the ViT.
    pub hidden_size: usize,
    /// Width of the ViT MLP.
    pub intermediate_size: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Image channels (3).
    pub in_channels: usize,
    /// Spatial patch side in pixels.
    pub patch_size: usize,
    /// Frames per temporal patch (a still image is duplicated this many times).
    pub temporal_patch_size: usize,
    /// Side of the square of patches merged into one LLM token.
    pub spatial_merge_size: usize,
    /// Width of merged tokens (= the text hidden size).
    pub out_hidden_size: usize,
    /// Rows of the learned position table (a square grid).
    pub num_position_embeddings: usize,
    /// Blocks after which a DeepStack feature is taken, in order.
    pub deepstack_visual_indexes: Vec<usize>,
    /// Rotary base θ of the 2D ViT rotary.
    pub rope_theta: f64,
    /// MLP activation: `true` for tanh-approximated GELU (`gelu_pytorch_tanh`).
    pub gelu_tanh: bool,
}

impl VisionConfig {
    /// Values in one row of `pixel_values`: channels × temporal patch × patch × patch.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// A whole Qwen3-VL `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Language model.
    pub text: TextConfig,
    /// Vision tower.
    pub vision: VisionConfig,
    /// `<|image_pad|>`: one per merged image token.
    pub image_token_id: u32,
    /// `<|video_pad|>` (videos are not supported yet).
    pub video_token_id: u32,
    /// `<|vision_start|>`.
    pub vision_start_token_id: u32,
    /// `<|vision_end|>`.
    pub vision_end_token_id: u32,
    /// `lm_head` shares `embed_tokens`' weight.
    pub tie_word_embeddings: bool,
}

struct Fields<'a> {
    path: &'a Path,
    prefix: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }
    fn bad(&self, key: &str, message: impl Into<String>) -> VlmError {
        VlmError::BadField {
            path: self.path.to_path_buf(),
            field: self.name(key),
            message: message.into(),
        }
    }
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }
    fn required(&self, key: &str) -> Result<&'a Value> {
        self.get(key).ok_or_else(|| VlmError::MissingField {
            path: self.path.to_path_buf(),
            field: self.name(key),
        })
    }
    fn as_usize(&self, key: &str, v: &Value) -> Result<usize> {
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.bad(key, format!("expected a non-negative integer, found {v}")))
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.as_usize(key, self.required(key)?)
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        self.get(key).map_or(Ok(default), |v| self.as_usize(key, v))
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.bad(key, format!("expected a number, found {v}"))),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.bad(key, format!("expected true or false, found {v}"))),
        }
    }
    fn sub(&self, key: &'a str) -> Result<Fields<'a>> {
        let v = self.required(key)?;
        let map = v
            .as_object()
            .ok_or_else(|| self.bad(key, "expected an object"))?;
        Ok(Fields {
            path: self.path,
            prefix: key,
            map,
        })
    }
}

fn token_id(f: &Fields, key: &str, default: u32) -> Result<u32> {
    let id = f.usize_or(key, default as usize)?;
    u32::try_from(id).map_err(|_| f.bad(key, "token id does not fit in 32 bits"))
}

/// Rotary settings from either format: 5.x `rope_parameters`, or 4.57 `rope_theta` beside a
/// `rope_scaling` object. As transformers reads them (`convert_rope_params_to_dict`): a
/// `rope_scaling` wins over `rope_parameters` (a YaRN added to a 5.x config is refused,
/// not run as default rotary), and a theta missing from the one read is the text config's
/// `rope_theta` (before session 52 `rope_parameters` hid both).
fn text_rope(t: &Fields) -> Result<(f64, [usize; 3])> {
    fn object<'a>(t: &Fields<'a>, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        match t.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_object()
                .map(Some)
                .ok_or_else(|| t.bad(key, "expected an object")),
        }
    }
    let (params, params_key) = match object(t, "rope_scaling")? {
        Some(m) => (Some(m), "text_config.rope_scaling"),
        None => (object(t, "rope_parameters")?, "text_config.rope_parameters"),
    };
    let outer = t.f64_or("rope_theta", 500_000.0)?;
    let theta = match params {
        Some(map) => Fields {
            path: t.path,
            prefix: params_key,
            map,
        }
        .f64_or("rope_theta", outer)?,
        None => outer,
    };
    let mut section = [24, 20, 20];
    if let Some(map) = params {
        let f = Fields {
            path: t.path,
            prefix: params_key,
            map,
        };
        let kind = f
            .get("rope_type")
            .or_else(|| f.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if kind != "default" && kind != "mrope" {
            return Err(f.bad(
                "rope_type",
                format!("only `default` rotary is supported, found `{kind}`"),
            ));
        }
        if let Some(v) = f.get("mrope_section") {
            let items = v
                .as_array()
                .filter(|a| a.len() == 3)
                .ok_or_else(|| f.bad("mrope_section", "expected three integers"))?;
            for (slot, item) in section.iter_mut().zip(items) {
                *slot = f.as_usize("mrope_section", item)?;
            }
        }
    }
    Ok((theta, section))
}

impl Config {
    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let value = read_json(&path)?;
        Self::from_value(&path, &value)
    }

    /// Parses a config already read from `path` (named in errors).
    pub fn from_value(path: &Path, value: &Value) -> Result<Self> {
        let map = value.as_object().ok_or_else(|| VlmError::BadField {
            path: path.to_path_buf(),
            field: "(top level)".into(),
            message: "expected an object".into(),
        })?;
        let top = Fields {
            path,
            prefix: "",
            map,
        };
        if map.get("text_config").is_none()
            && map.contains_key("patch_size")
            && map.contains_key("sample_steps")
        {
            // The likeliest mix-up: a world model's folder where the planner's was meant.
            return Err(VlmError::BadField {
                path: path.to_path_buf(),
                field: "text_config".into(),
                message: "missing: this is a world model's config (train-world-model writes it), not a Qwen3-VL model folder".into(),
            });
        }
        let t = top.sub("text_config")?;
        let heads = t.usize("num_attention_heads")?;
        let hidden = t.usize("hidden_size")?;
        let (rope_theta, mrope_section) = text_rope(&t)?;
        let text = TextConfig {
            vocab_size: t.usize("vocab_size")?,
            hidden_size: hidden,
            intermediate_size: t.usize("intermediate_size")?,
            num_hidden_layers: t.usize("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: t.usize_or("num_key_value_heads", heads)?,
            head_dim: t.usize("head_dim")?,
            rms_norm_eps: t.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta,
            mrope_section,
            attention_bias: t.bool_or("attention_bias", false)?,
        };
        if let Some(act) = t.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(t.bad(
                    "hidden_act",
                    format!("only silu is supported, found `{act}`"),
                ));
            }
        }
        if text.num_attention_heads == 0
            || text.num_key_value_heads == 0
            || !text
                .num_attention_heads
                .is_multiple_of(text.num_key_value_heads)
        {
            return Err(t.bad(
                "num_key_value_heads",
                "must be positive and divide num_attention_heads",
            ));
        }
        // Checked sums and products: a config is user input, and an absurd number must be
        // an error, not an overflow (fuzz/fuzz_targets/configs.rs).
        let section_sum = mrope_section
            .iter()
            .try_fold(0usize, |a, &b| a.checked_add(b));
        if !text.head_dim.is_multiple_of(2) || section_sum != Some(text.head_dim / 2) {
            return Err(t.bad(
                "rope_parameters.mrope_section",
                format!(
                    "{mrope_section:?} must sum to head_dim / 2 = {}",
                    text.head_dim / 2
                ),
            ));
        }

        let v = top.sub("vision_config")?;
        let vision_theta = match v.get("rope_parameters").and_then(Value::as_object) {
            Some(map) => Fields {
                path,
                prefix: "vision_config.rope_parameters",
                map,
            }
            .f64_or("rope_theta", 10_000.0)?,
            None => 10_000.0,
        };
        let deepstack = match v.get("deepstack_visual_indexes") {
            None => vec![8, 16, 24],
            Some(val) => val
                .as_array()
                .ok_or_else(|| v.bad("deepstack_visual_indexes", "expected a list"))?
                .iter()
                .map(|i| v.as_usize("deepstack_visual_indexes", i))
                .collect::<Result<Vec<_>>>()?,
        };
        let act = v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu_pytorch_tanh");
        let gelu_tanh = match act {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => true,
            "gelu" => false,
            other => {
                return Err(v.bad(
                    "hidden_act",
                    format!("expected gelu or gelu_pytorch_tanh, found `{other}`"),
                ))
            }
        };
        let vision = VisionConfig {
            depth: v.usize("depth")?,
            hidden_size: v.usize("hidden_size")?,
            intermediate_size: v.usize("intermediate_size")?,
            num_heads: v.usize("num_heads")?,
            in_channels: v.usize_or("in_channels", 3)?,
            patch_size: v.usize_or("patch_size", 16)?,
            temporal_patch_size: v.usize_or("temporal_patch_size", 2)?,
            spatial_merge_size: v.usize_or("spatial_merge_size", 2)?,
            out_hidden_size: v.usize("out_hidden_size")?,
            num_position_embeddings: v.usize("num_position_embeddings")?,
            deepstack_visual_indexes: deepstack,
            rope_theta: vision_theta,
            gelu_tanh,
        };
        if vision.num_heads == 0
            || !vision
                .num_heads
                .checked_mul(4)
                .is_some_and(|q| vision.hidden_size.is_multiple_of(q))
        {
            return Err(v.bad(
                "num_heads",
                "hidden_size / num_heads must be a multiple of 4 (2D rotary)",
            ));
        }
        let side = (vision.num_position_embeddings as f64).sqrt() as usize;
        if side.checked_mul(side) != Some(vision.num_position_embeddings) || side == 0 {
            return Err(v.bad("num_position_embeddings", "must be a positive square"));
        }
        if vision.out_hidden_size != text.hidden_size {
            return Err(v.bad(
                "out_hidden_size",
                format!("must equal text_config.hidden_size = {}", text.hidden_size),
            ));
        }
        if let Some(&bad) = vision
            .deepstack_visual_indexes
            .iter()
            .find(|&&i| i >= vision.depth)
        {
            return Err(v.bad(
                "deepstack_visual_indexes",
                format!("index {bad} is not below depth {}", vision.depth),
            ));
        }
        if vision.deepstack_visual_indexes.len() > text.num_hidden_layers {
            return Err(v.bad(
                "deepstack_visual_indexes",
                "more DeepStack features than text layers",
            ));
        }
        let tie = top.bool_or(
            "tie_word_embeddings",
            t.bool_or("tie_word_embeddings", false)?,
        )?;
        Ok(Self {
            text,
            vision,
            image_token_id: token_id(&top, "image_token_id", 151_655)?,
            video_token_id: token_id(&top, "video_token_id", 151_656)?,
            vision_start_token_id: token_id(&top, "vision_start_token_id", 151_652)?,
            vision_end_token_id: token_id(&top, "vision_end_token_id", 151_653)?,
            tie_word_embeddings: tie,
        })
    }
}

/// Reads and parses a JSON file, naming it in errors.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| VlmError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| VlmError::Json {
        path: PathBuf::from(path),
        message: e.to_string(),
    })
}
