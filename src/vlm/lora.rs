//! LoRA adapters on the text model's linear layers, in the format of Hugging Face PEFT so
//! that an adapter trained here loads with `PeftModel.from_pretrained` and one trained with
//! PEFT loads here (`scripts/check_peft_adapter.py` checks both ways against peft 0.21.2).
//!
//! An adapter on a layer of weight `W` (`[out, in]`) adds
//! `scale · B (A dropout(x))` to `W x`, with `A` `[r, in]`, `B` `[out, r]` and
//! `scale = lora_alpha / r` (`lora_alpha / √r` with `use_rslora`). As in PEFT, `A` starts
//! kaiming-uniform (`U(±1/√in)`) and `B` at zero, so a fresh adapter changes nothing;
//! `init_lora_weights: false` draws `B` the same way (`U(±1/√r)`), which tests use.
//! Draws come from a SplitMix64 stream seeded by the caller's seed and the layer's HF
//! path: reproducible and independent of visiting order. Dropout masks are a function of
//! (seed set for the step, layer path), never of how many times a layer ran, so that
//! recomputing a layer in the backward pass (`super::train`) sees the same mask.
//!
//! Files: `adapter_config.json` (PEFT's `LoraConfig` fields; unknown ones kept and
//! written back) and `adapter_model.safetensors` with PEFT's key names,
//! `base_model.model.<module path>.lora_A.weight` / `.lora_B.weight`.
//! Features PEFT has and this module refuses with a named error rather than ignoring:
//! DoRA, bias training, `fan_in_fan_out`, `modules_to_save`, per-layer rank or alpha
//! patterns, `layers_to_transform`, `exclude_modules`, `all-linear`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{Result, VlmError};
use super::generate::Rng;
use super::ops::Mode;
use super::text::TextModel;

/// The projections PEFT users target in a Qwen decoder: every linear of the text model
/// (the vision tower's linears are named `qkv`, `proj`, `linear_fc*` and never match).
pub const DEFAULT_TARGET_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Name of the adapter config file.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// Name of the adapter weights file.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Prefix PEFT puts before a module path in adapter keys.
const KEY_PREFIX: &str = "base_model.model.";

/// Which layers get adapters: names matched against the end of the module path
/// (`q_proj` matches `model.language_model.layers.0.self_attn.q_proj`), or one regular
/// expression matched against the whole path (PEFT's `re.fullmatch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module-name suffixes.
    List(Vec<String>),
    /// A regular expression over the full module path.
    Pattern(String),
}

impl Default for TargetModules {
    fn default() -> Self {
        Self::List(DEFAULT_TARGET_MODULES.map(String::from).to_vec())
    }
}

/// PEFT's `init_lora_weights`: `true` (B = 0), `false` (B random), or a named scheme
/// (only `"gaussian"` is understood, for A ~ N(0, 1/r)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InitLoraWeights {
    /// `true`: PEFT's default; `false`: both matrices random.
    Bool(bool),
    /// A named initialisation.
    Named(String),
}

/// The fields of PEFT's `LoraConfig` as stored in `adapter_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Always `"LORA"`.
    #[serde(default = "lora_type")]
    pub peft_type: String,
    /// Rank of the update.
    #[serde(default = "default_r")]
    pub r: usize,
    /// Numerator of the scale `lora_alpha / r`.
    #[serde(default = "default_alpha", serialize_with = "number_as_written")]
    pub lora_alpha: f64,
    /// Dropout probability on the adapter's input, training only.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Layers that get an adapter (`null` in the file means the default list).
    #[serde(default, deserialize_with = "null_as_default")]
    pub target_modules: TargetModules,
    /// Bias training: only `"none"` is supported.
    #[serde(default = "bias_none")]
    pub bias: String,
    /// PEFT task type (`CAUSAL_LM`, or null).
    #[serde(default)]
    pub task_type: Option<String>,
    /// The base model the adapter was trained on (informative).
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Revision of the base model (informative).
    #[serde(default)]
    pub revision: Option<String>,
    /// Whether weights are stored `[in, out]` (Conv1D); must be false.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Whether the adapter was saved for inference.
    #[serde(default)]
    pub inference_mode: bool,
    /// How fresh adapters are initialised.
    #[serde(default = "init_true")]
    pub init_lora_weights: InitLoraWeights,
    /// Scale `alpha / √r` instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Weight-decomposed LoRA: unsupported.
    #[serde(default)]
    pub use_dora: bool,
    /// A bias on `lora_B`: unsupported.
    #[serde(default)]
    pub lora_bias: bool,
    /// Fully trained extra modules: unsupported.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Restricting layers by index: unsupported.
    #[serde(default)]
    pub layers_to_transform: Option<Value>,
    /// Excluding modules: unsupported.
    #[serde(default)]
    pub exclude_modules: Option<Value>,
    /// Per-layer ranks: must be empty.
    #[serde(default)]
    pub rank_pattern: Map<String, Value>,
    /// Per-layer alphas: must be empty.
    #[serde(default)]
    pub alpha_pattern: Map<String, Value>,
    /// Every other field of the file, written back unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn lora_type() -> String {
    "LORA".into()
}
fn default_r() -> usize {
    8
}
fn default_alpha() -> f64 {
    8.0
}
fn bias_none() -> String {
    "none".into()
}
fn init_true() -> InitLoraWeights {
    InitLoraWeights::Bool(true)
}

fn null_as_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TargetModules, D::Error> {
    Ok(Option::<TargetModules>::deserialize(d)?.unwrap_or_default())
}

/// PEFT writes `lora_alpha` as Python wrote it: an integer when it is one.
fn number_as_written<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

impl Default for LoraConfig {
    /// PEFT 0.21.2's defaults with the text projections as targets, plus the fields PEFT
    /// writes that this crate does not interpret (so a saved file has PEFT's key set).
    fn default() -> Self {
        let mut extra = Map::new();
        for key in [
            "alora_invocation_tokens",
            "arrow_config",
            "auto_mapping",
            "corda_config",
            "eva_config",
            "kasa_config",
            "layer_replication",
            "layers_pattern",
            "lora_ga_config",
            "megatron_config",
            "monteclora_config",
            "target_parameters",
            "trainable_token_indices",
            "use_bdlora",
            "velora_config",
        ] {
            extra.insert(key.into(), Value::Null);
        }
        extra.insert("ensure_weight_tying".into(), Value::Bool(false));
        extra.insert("loftq_config".into(), Value::Object(Map::new()));
        extra.insert("megatron_core".into(), Value::from("megatron.core"));
        extra.insert("qalora_group_size".into(), Value::from(16));
        extra.insert("use_qalora".into(), Value::Bool(false));
        Self {
            peft_type: lora_type(),
            r: default_r(),
            lora_alpha: default_alpha(),
            lora_dropout: 0.0,
            target_modules: TargetModules::default(),
            bias: bias_none(),
            task_type: None,
            base_model_name_or_path: None,
            revision: None,
            fan_in_fan_out: false,
            inference_mode: false,
            init_lora_weights: init_true(),
            use_rslora: false,
            use_dora: false,
            lora_bias: false,
            modules_to_save: None,
            layers_to_transform: None,
            exclude_modules: None,
            rank_pattern: Map::new(),
            alpha_pattern: Map::new(),
            extra,
        }
    }
}

impl LoraConfig {
    /// Reads `dir/adapter_config.json` (unknown fields are kept, missing ones defaulted
    /// as PEFT does) and checks that it describes an adapter this crate can run.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| VlmError::io(&path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| VlmError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        cfg.check(&path)?;
        Ok(cfg)
    }

    /// Writes `dir/adapter_config.json` (keys sorted, two-space indent, as PEFT does).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(CONFIG_FILE);
        let value = serde_json::to_value(self).map_err(|e| VlmError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // serde_json's Map is ordered by key without `preserve_order`: sorted like PEFT.
        let mut text = serde_json::to_string_pretty(&value).map_err(|e| VlmError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        text.push('\n');
        std::fs::create_dir_all(dir).map_err(|e| VlmError::io(dir, e))?;
        crate::train::checkpoint::write_atomic(&path, text.as_bytes())
            .map_err(|e| VlmError::io(&path, e))
    }

    /// The factor in front of `B A`.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Refuses what would silently compute something other than PEFT.
    pub fn check(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, message: &str| {
            Err(VlmError::BadField {
                path: path.to_path_buf(),
                field: field.into(),
                message: message.into(),
            })
        };
        if self.peft_type != "LORA" {
            return bad("peft_type", "only LORA adapters are supported");
        }
        if self.r == 0 {
            return bad("r", "the rank must be positive");
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return bad("lora_dropout", "must be in [0, 1)");
        }
        if self.bias != "none" {
            return bad("bias", "only \"none\" is supported");
        }
        if self.use_dora {
            return bad("use_dora", "DoRA is not supported");
        }
        if self.lora_bias {
            return bad("lora_bias", "a bias on lora_B is not supported");
        }
        if self.fan_in_fan_out {
            return bad("fan_in_fan_out", "Conv1D-layout weights are not supported");
        }
        if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return bad("modules_to_save", "fully trained modules are not supported");
        }
        if self.layers_to_transform.is_some() {
            return bad("layers_to_transform", "not supported (adapt every layer)");
        }
        if self.exclude_modules.is_some() {
            return bad("exclude_modules", "not supported");
        }
        if !self.rank_pattern.is_empty() {
            return bad("rank_pattern", "per-layer ranks are not supported");
        }
        if !self.alpha_pattern.is_empty() {
            return bad("alpha_pattern", "per-layer alphas are not supported");
        }
        match &self.init_lora_weights {
            InitLoraWeights::Bool(_) => {}
            InitLoraWeights::Named(n) if n == "gaussian" => {}
            InitLoraWeights::Named(n) => {
                return bad(
                    "init_lora_weights",
                    &format!("`{n}` is not supported (true, false or \"gaussian\")"),
                )
            }
        }
        if let TargetModules::Pattern(p) = &self.target_modules {
            if p == "all-linear" {
                return bad(
                    "target_modules",
                    "\"all-linear\" would include the vision tower; list the modules",
                );
            }
            if let Err(e) = fancy_regex::Regex::new(&format!("^(?:{p})$")) {
                return bad(
                    "target_modules",
                    &format!("invalid regular expression: {e}"),
                );
            }
        }
        Ok(())
    }

    /// Whether the layer at HF module `path` gets an adapter.
    pub fn targets(&self, path: &str) -> bool {
        match &self.target_modules {
            TargetModules::List(names) => names
                .iter()
                .any(|n| path == n || path.ends_with(&format!(".{n}"))),
            // fancy-regex, as Python's `re` has look-around: ms-swift, Qwen's own
            // fine-tuning tool, writes `model\.language_model(?=\.).*…`, which the `regex`
            // crate refuses (such adapters were refused before session 52).
            TargetModules::Pattern(p) => fancy_regex::Regex::new(&format!("^(?:{p})$"))
                .ok()
                .and_then(|re| re.is_match(path).ok())
                .unwrap_or(false),
        }
    }
}

/// The trainable low-rank update of one linear layer.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    a: Var,
    b: Var,
    scale: f64,
    dropout: f64,
    dropout_seed: Option<u64>,
}

/// FNV-1a of a layer path: mixes the layer into seeds so that draws do not depend on
/// the order layers are visited in.
fn path_hash(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn uniform_tensor(
    rng: &mut Rng,
    shape: (usize, usize),
    bound: f64,
    like: &Tensor,
) -> Result<Tensor> {
    let n = shape.0 * shape.1;
    let data: Vec<f64> = (0..n)
        .map(|_| (2.0 * rng.uniform() - 1.0) * bound)
        .collect();
    Ok(Tensor::from_vec(data, shape, like.device())?.to_dtype(like.dtype())?)
}

impl LoraAdapter {
    /// An adapter from its matrices: `a` `[r, in]`, `b` `[out, r]`.
    pub fn new(a: Var, b: Var, scale: f64, dropout: f64) -> Self {
        Self {
            a,
            b,
            scale,
            dropout,
            dropout_seed: None,
        }
    }

    /// `A`, `[r, in]`.
    pub fn a(&self) -> &Var {
        &self.a
    }

    /// `B`, `[out, r]`.
    pub fn b(&self) -> &Var {
        &self.b
    }

    /// The factor in front of `B A`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Sets the seed of this step's dropout masks (None: no dropout even in training).
    pub fn set_dropout_seed(&mut self, seed: Option<u64>) {
        self.dropout_seed = seed;
    }

    /// `scale · B A`, `[out, in]`: what merging adds to the weight.
    pub fn delta_weight(&self) -> Result<Tensor> {
        Ok((self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale)?)
    }

    /// `scale · B (A dropout(x))` for `x` `[..., in]`; dropout only in [`Mode::Train`]
    /// with a seed set, its mask drawn from (seed, `path`).
    pub fn forward(&self, x: &Tensor, path: &str, mode: Mode) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let mut h = x.reshape((rows, in_dim))?;
        if let (Mode::Train, Some(seed), true) = (mode, self.dropout_seed, self.dropout > 0.0) {
            let mut rng = Rng::new(seed ^ path_hash(path));
            let keep = 1.0 / (1.0 - self.dropout);
            let mask: Vec<f32> = (0..rows * in_dim)
                .map(|_| {
                    if rng.uniform() < self.dropout {
                        0.0
                    } else {
                        keep as f32
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, (rows, in_dim), x.device())?.to_dtype(x.dtype())?;
            h = (h * mask)?;
        }
        let a = self.a.as_tensor().to_dtype(x.dtype())?;
        let b = self.b.as_tensor().to_dtype(x.dtype())?;
        let y = (h.matmul(&a.t()?)?.matmul(&b.t()?)? * self.scale)?;
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = b.dim(0)?;
        Ok(y.reshape(out)?)
    }
}

/// Attaches fresh adapters to every text linear layer `cfg` targets, initialised as PEFT
/// does from `seed` (see the module docs). Returns how many layers got one.
pub fn attach(text: &mut TextModel, cfg: &LoraConfig, seed: u64) -> Result<usize> {
    cfg.check(Path::new(CONFIG_FILE))?;
    let mut count = 0;
    for lin in text.linears_mut() {
        if !cfg.targets(lin.path()) {
            continue;
        }
        let (in_dim, out_dim) = lin.dims();
        // Adapters are f32 under a bf16 or f16 base (as PEFT keeps them under autocast):
        // the optimiser's small updates would vanish in 16 bits. An f64 base (the gradient
        // tests) keeps f64.
        let master = match lin.weight().dtype() {
            candle_core::DType::F64 => candle_core::DType::F64,
            _ => candle_core::DType::F32,
        };
        let like = Tensor::zeros(1, master, lin.weight().device())?;
        let mut rng = Rng::new(seed ^ path_hash(lin.path()));
        let a = match &cfg.init_lora_weights {
            InitLoraWeights::Named(_) => {
                // "gaussian": N(0, 1/r) by Box–Muller.
                let std = 1.0 / cfg.r as f64;
                let data: Vec<f64> = (0..cfg.r * in_dim)
                    .map(|_| {
                        let u1 = 1.0 - rng.uniform();
                        let u2 = rng.uniform();
                        std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                    })
                    .collect();
                Tensor::from_vec(data, (cfg.r, in_dim), like.device())?.to_dtype(like.dtype())?
            }
            // kaiming_uniform_(a=√5) on [r, in]: bound = gain·√(3/fan_in) = 1/√in.
            InitLoraWeights::Bool(_) => uniform_tensor(
                &mut rng,
                (cfg.r, in_dim),
                1.0 / (in_dim as f64).sqrt(),
                &like,
            )?,
        };
        let b = match cfg.init_lora_weights {
            InitLoraWeights::Bool(false) => uniform_tensor(
                &mut rng,
                (out_dim, cfg.r),
                1.0 / (cfg.r as f64).sqrt(),
                &like,
            )?,
            _ => Tensor::zeros((out_dim, cfg.r), like.dtype(), like.device())?,
        };
        lin.set_lora(Some(LoraAdapter::new(
            Var::from_tensor(&a)?,
            Var::from_tensor(&b)?,
            cfg.scale(),
            cfg.lora_dropout,
        )));
        count += 1;
    }
    if count == 0 {
        return Err(VlmError::BadField {
            path: PathBuf::from(CONFIG_FILE),
            field: "target_modules".into(),
            message: "matches no linear layer of the text model".into(),
        });
    }
    Ok(count)
}

/// The trainable tensors of every attached adapter (A then B, layer by layer).
pub fn vars(text: &TextModel) -> Vec<Var> {
    text.linears()
        .filter_map(|l| l.lora())
        .flat_map(|a| [a.a().clone(), a.b().clone()])
        .collect()
}

/// Sets the dropout seed of every adapter (None: dropout off). A trainer sets a new seed
/// per step.
pub fn set_dropout_seed(text: &mut TextModel, seed: Option<u64>) {
    for lin in text.linears_mut() {
        if let Some(a) = lin.lora_mut() {
            a.set_dropout_seed(seed);
        }
    }
}

/// PEFT's key of a layer's `A` (`which = "lora_A"`) or `B` tensor.
pub fn peft_key(path: &str, which: &str) -> String {
    format!("{KEY_PREFIX}{path}.{which}.weight")
}

/// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` (f32 unless the
/// model computes in f16/bf16, which are kept).
pub fn save(text: &TextModel, cfg: &LoraConfig, dir: &Path) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for lin in text.linears() {
        if let Some(a) = lin.lora() {
            let keep = |t: &Tensor| -> Result<Tensor> {
                let t = t.detach();
                Ok(match t.dtype() {
                    DType::F16 | DType::BF16 | DType::F32 => t,
                    _ => t.to_dtype(DType::F32)?,
                })
            };
            tensors.insert(peft_key(lin.path(), "lora_A"), keep(a.a().as_tensor())?);
            tensors.insert(peft_key(lin.path(), "lora_B"), keep(a.b().as_tensor())?);
        }
    }
    if tensors.is_empty() {
        return Err(VlmError::Input(
            "the model has no LoRA adapter to save".into(),
        ));
    }
    cfg.save(dir)?;
    let path = dir.join(WEIGHTS_FILE);
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let mut entries: Vec<(&String, &Tensor)> = tensors.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    // Through a temporary file: a re-run rewrites a finished adapter, and a kill (or an
    // `eval` reading it) meanwhile must not meet a torn one.
    let bytes = safetensors::serialize(entries, metadata).map_err(|e| VlmError::Safetensors {
        path: path.clone(),
        message: e.to_string(),
    })?;
    crate::train::checkpoint::write_atomic(&path, &bytes).map_err(|e| VlmError::io(&path, e))
}

/// Reads a PEFT adapter folder and attaches its adapters to `text` (replacing any
/// present). Every targeted layer must have both tensors with shapes `[r, in]` and
/// `[out, r]`, and every tensor in the file must belong to a targeted layer.
pub fn load(text: &mut TextModel, dir: &Path) -> Result<LoraConfig> {
    let cfg = LoraConfig::load(dir)?;
    let path = dir.join(WEIGHTS_FILE);
    let bad = |message: String| VlmError::Safetensors {
        path: path.clone(),
        message,
    };
    let device = text
        .linears()
        .next()
        .map(|l| l.weight().device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
        .map_err(|e| bad(e.to_string()))?;
    // Everything is read and checked before the model changes: a bad file leaves it as it was.
    let mut adapters = Vec::new();
    for lin in text.linears() {
        if !cfg.targets(lin.path()) {
            adapters.push(None);
            continue;
        }
        let (in_dim, out_dim) = lin.dims();
        let dtype = lin.weight().dtype();
        let mut take = |which: &str, shape: [usize; 2]| -> Result<Tensor> {
            let key = peft_key(lin.path(), which);
            let t = tensors
                .remove(&key)
                .ok_or_else(|| VlmError::MissingTensor {
                    name: key.clone(),
                    context: format!(" in {}", path.display()),
                })?;
            if t.dims() != shape {
                return Err(VlmError::Shape {
                    name: key,
                    expected: format!("{shape:?}"),
                    found: t.dims().to_vec(),
                });
            }
            Ok(t.to_dtype(dtype)?.to_device(&device)?)
        };
        let a = take("lora_A", [cfg.r, in_dim])?;
        let b = take("lora_B", [out_dim, cfg.r])?;
        adapters.push(Some(LoraAdapter::new(
            Var::from_tensor(&a)?,
            Var::from_tensor(&b)?,
            cfg.scale(),
            cfg.lora_dropout,
        )));
    }
    if let Some(extra) = tensors.keys().min() {
        return Err(bad(format!(
            "tensor `{extra}` matches no targeted text linear layer"
        )));
    }
    let count = adapters.iter().flatten().count();
    if count == 0 {
        return Err(VlmError::BadField {
            path: dir.join(CONFIG_FILE),
            field: "target_modules".into(),
            message: "matches no linear layer of the text model".into(),
        });
    }
    for (lin, adapter) in text.linears_mut().zip(adapters) {
        if adapter.is_some() {
            lin.set_lora(adapter);
        }
    }
    Ok(cfg)
}

/// Folds every adapter into its layer's weight (`W += scale · B A`) and removes the
/// adapters; returns how many were merged.
pub fn merge(text: &mut TextModel) -> Result<usize> {
    let mut count = 0;
    for lin in text.linears_mut() {
        if lin.lora().is_some() {
            lin.merge_lora()?;
            count += 1;
        }
    }
    Ok(count)
}

/// Writes the merged text linear weights of `text`, with every other tensor of the base
/// checkpoint `base` copied unchanged, to `out` (one safetensors file, the base's
/// names): a plain HF checkpoint with the adapters folded in. Call after [`merge`].
pub fn save_merged(text: &TextModel, base: &super::weights::WeightStore, out: &Path) -> Result<()> {
    // Each tensor in the dtype the base stores it in: the unchanged ones as stored (no
    // f32 copy of the whole model), the merged ones cast back, as PEFT's
    // `merge_and_unload` keeps the model's dtype. Before session 52 everything was written
    // f32, a bf16 checkpoint doubled in size.
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in base.names() {
        tensors.insert(name.to_string(), base.stored(name)?);
    }
    for lin in text.linears() {
        if lin.lora().is_some() {
            return Err(VlmError::Input(format!(
                "{}: merge the adapters before saving merged weights",
                lin.path()
            )));
        }
        let key = format!("{}.weight", lin.path());
        if let Some(stored) = tensors.get(&key) {
            let dtype = stored.dtype();
            let merged = lin.weight().detach().to_dtype(dtype)?;
            tensors.insert(key, merged.to_device(&candle_core::Device::Cpu)?);
        }
    }
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let mut entries: Vec<(&String, &Tensor)> = tensors.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::serialize_to_file(entries, metadata, out).map_err(|e| VlmError::Safetensors {
        path: out.to_path_buf(),
        message: e.to_string(),
    })
}
