//! LoRA for the Stable Diffusion UNet: attaching fresh adapters to the attention projections,
//! loading LoRA files in the three formats found in the wild, saving in diffusers' format and as a
//! PEFT adapter folder, and fusing adapters into the base weights.
//!
//! # Formats read (auto-detected)
//! | format | keys | scale |
//! |---|---|---|
//! | diffusers / PEFT | `unet.<path>.lora_A.weight` `[r, in]`, `….lora_B.weight` `[out, r]`; also bare `<path>.…` (`get_peft_model_state_dict`) and `base_model.model.<path>.…` (PEFT adapter folder) | `lora_alpha/r` (or `/√r` with rsLoRA) from `adapter_config.json` or the `lora_adapter_metadata` header; `1` without either |
//! | diffusers (older) | `unet.<path>.lora.down.weight` `[r, in]`, `….lora.up.weight` `[out, r]`; also the attention-processor form of diffusers < 0.17 (`<attn>.processor.to_q_lora.down.weight`, `to_out_lora` = `to_out.0`) | `1`, or the metadata's alpha |
//! | kohya (sd-scripts) | `lora_unet_<path with . → _>.lora_down.weight`, `.lora_up.weight`, scalar `.alpha` | `alpha/r` per module, `1` without `.alpha` |
//!
//! `<path>` is the diffusers module path, e.g.
//! `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`. Kohya names are mapped back by
//! matching them against the paths the model actually has, never by guessing which `_` was a `.`.
//!
//! Text-encoder tensors (`lora_te_…`, `text_encoder.…`) are fused into svgen-eval's CLIP text
//! model by [`load_lora_with_text_encoder`] / [`fuse_text_encoder_lora`] (`q/k/v/out_proj`,
//! `fc1`, `fc2`); loading such a file into the UNet alone is a typed error naming the first
//! text-encoder key, never a silent drop. SDXL's second text encoder and DoRA are typed errors.
//! Keys that match no module, tensors of the wrong shape and unpaired halves are typed errors
//! naming the key; the model is left unchanged then.
//!
//! # Format written
//! [`save_lora_weights`] writes `pytorch_lora_weights.safetensors` as diffusers 0.42's
//! `StableDiffusionPipeline.save_lora_weights(unet_lora_layers=get_peft_model_state_dict(unet), …)`
//! does: the same tensor names (`unet.<path>.lora_A.weight` / `lora_B.weight`), shapes and dtype
//! (f32), `{"format": "pt"}`, and the PEFT `LoraConfig` fields we support under
//! `lora_adapter_metadata` (keys prefixed `unet.`), so diffusers' `load_lora_weights`
//! reproduces the scale (checked with `tools/fixtures/check_sd_lora_load.py`). [`save_peft_adapter`] writes a PEFT adapter folder
//! (`adapter_config.json`, `adapter_model.safetensors` with `base_model.model.<path>` keys).
//!
//! ```no_run
//! use svgen_train::sd::lora::UNetLoraConfig;
//! use svgen_train::sd::unet::UNet2DConditionModel;
//! # fn main() -> svgen_train::Result<()> {
//! type B = svgen_train::CpuBackend;
//! let mut unet = UNet2DConditionModel::<B>::from_pretrained("sd15/unet", &Default::default())?;
//! let report = unet.load_lora("downloads/style_lora.safetensors")?; // any of the 3 formats
//! println!("{:?}: {} modules", report.format, report.modules.len());
//! let cfg = UNetLoraConfig { r: 8, lora_alpha: 8.0, ..UNetLoraConfig::default() };
//! unet.save_lora_weights(&cfg, "converted")?; // diffusers' pytorch_lora_weights.safetensors
//! unet.fuse_lora(); // plain UNet with W + s·B·A
//! # Ok(())
//! # }
//! ```
//!
//! The functions work on the list of `(diffusers path, &mut LoraLinear)` pairs that
//! `UNet2DConditionModel::attention_linears_mut` returns; [`UNet2DConditionModel`] has
//! convenience methods ([`UNet2DConditionModel::add_lora`], [`UNet2DConditionModel::load_lora`],
//! …) that call them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::error::{Result, TrainError};
use crate::nn::json::read_json;
use crate::nn::lora::{LoraAdapter, LoraLinear};
pub use crate::nn::peft::PeftScaling;
use crate::nn::peft::{peft_adapter_state, peft_lora_json, write_peft_adapter, PEFT_PREFIX};
use crate::nn::tensor::{host_f32, trainable_param, transpose};
use crate::sd::unet::UNet2DConditionModel;
use crate::weights::{read_safetensors, write_safetensors, HostData, HostTensor, StoreDtype};
use svgen_eval::clip::ClipTextModel;
use svgen_eval::ClipTextConfig;

/// Prefix of UNet keys in diffusers' pipeline LoRA files.
pub const UNET_PREFIX: &str = "unet.";
/// Prefix of keys in PEFT adapter folders.
pub const PEFT_MODEL_PREFIX: &str = PEFT_PREFIX;
/// Prefix of UNet keys in kohya files.
pub const KOHYA_UNET_PREFIX: &str = "lora_unet_";
/// The file diffusers' `save_lora_weights` writes.
pub const LORA_WEIGHT_NAME: &str = "pytorch_lora_weights.safetensors";
/// The safetensors metadata entry holding diffusers' PEFT configuration.
pub const LORA_METADATA_KEY: &str = "lora_adapter_metadata";

/// The attention projections LoRA may target (diffusers `Attention` module names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttnProjection {
    /// `to_q`.
    ToQ,
    /// `to_k`.
    ToK,
    /// `to_v`.
    ToV,
    /// `to_out.0` (the output linear; `to_out.1` is dropout).
    ToOut0,
}

impl AttnProjection {
    /// All four, in PEFT's usual order.
    pub const ALL: [AttnProjection; 4] = [Self::ToQ, Self::ToK, Self::ToV, Self::ToOut0];

    /// The PEFT `target_modules` name.
    pub fn module_name(self) -> &'static str {
        match self {
            Self::ToQ => "to_q",
            Self::ToK => "to_k",
            Self::ToV => "to_v",
            Self::ToOut0 => "to_out.0",
        }
    }

    /// Parses a PEFT `target_modules` name.
    pub fn from_module_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.module_name() == name)
    }

    /// The projection a diffusers module path ends with.
    ///
    /// ```
    /// use svgen_train::sd::lora::AttnProjection;
    /// let p = "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0";
    /// assert_eq!(AttnProjection::of_path(p), Some(AttnProjection::ToOut0));
    /// assert_eq!(AttnProjection::of_path("conv_in"), None);
    /// ```
    pub fn of_path(path: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| path.ends_with(&format!(".{}", t.module_name())) || path == t.module_name())
    }
}

/// How fresh adapters are initialised (PEFT `init_lora_weights`). `B` is zero in both, so the
/// model's output is unchanged until training moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoraInit {
    /// PEFT's default (`true`): `A` Kaiming-uniform (bound `1/√in`).
    #[default]
    KaimingUniform,
    /// PEFT's `"gaussian"`: `A ~ N(0, 1/r²)`.
    Gaussian,
}

/// LoRA hyper-parameters for the UNet (PEFT `LoraConfig` names).
///
/// ```
/// use svgen_train::sd::lora::UNetLoraConfig;
/// let cfg = UNetLoraConfig { r: 4, lora_alpha: 8.0, ..UNetLoraConfig::default() };
/// assert_eq!(cfg.scale(), 2.0);
/// assert!(cfg.targets("up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0"));
/// let cross_only = UNetLoraConfig { module_filter: vec!["attn2".into()], ..cfg };
/// assert!(!cross_only.targets("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct UNetLoraConfig {
    /// Rank `r`.
    pub r: usize,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// `lora_dropout` on the adapter input while training.
    pub lora_dropout: f64,
    /// rsLoRA: scale `α/√r` instead of `α/r`.
    pub use_rslora: bool,
    /// The projections to adapt.
    pub target_modules: BTreeSet<AttnProjection>,
    /// Only paths containing at least one of these substrings (e.g. `"attn2"`, `"up_blocks"`);
    /// empty: every path.
    pub module_filter: Vec<String>,
    /// Initialisation of fresh adapters.
    pub init: LoraInit,
}

impl Default for UNetLoraConfig {
    fn default() -> Self {
        Self {
            r: 4,
            lora_alpha: 4.0,
            lora_dropout: 0.0,
            use_rslora: false,
            target_modules: AttnProjection::ALL.into_iter().collect(),
            module_filter: Vec::new(),
            init: LoraInit::KaimingUniform,
        }
    }
}

impl UNetLoraConfig {
    /// The scale applied to `A·B`.
    pub fn scale(&self) -> f64 {
        self.scaling().scale()
    }

    /// Rejects a zero rank, dropout outside `[0, 1)`, a non-finite alpha or no targets.
    pub fn validate(&self) -> Result<()> {
        self.scaling().validate(self.target_modules.is_empty())
    }

    /// The PEFT scaling fields of this configuration.
    fn scaling(&self) -> PeftScaling {
        PeftScaling {
            r: self.r,
            lora_alpha: self.lora_alpha,
            use_rslora: self.use_rslora,
            lora_dropout: self.lora_dropout,
        }
    }

    /// Whether the module at diffusers path `path` gets an adapter.
    pub fn targets(&self, path: &str) -> bool {
        AttnProjection::of_path(path).is_some_and(|t| self.target_modules.contains(&t))
            && (self.module_filter.is_empty()
                || self.module_filter.iter().any(|f| path.contains(f.as_str())))
    }

    /// The PEFT `LoraConfig` dictionary (what `peft_config["default"].to_dict()` gives for the
    /// settings we support), used for `adapter_config.json` and diffusers' metadata header.
    pub fn to_peft_json(&self) -> Value {
        let targets = self.target_modules.iter().map(|t| t.module_name());
        let mut v = peft_lora_json(&self.scaling(), targets);
        v["task_type"] = Value::Null;
        v["base_model_name_or_path"] = Value::Null;
        v["inference_mode"] = json!(false);
        v["exclude_modules"] = Value::Null;
        v["init_lora_weights"] = match self.init {
            LoraInit::KaimingUniform => json!(true),
            LoraInit::Gaussian => json!("gaussian"),
        };
        v
    }
}

/// The key family of a LoRA file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraFormat {
    /// `lora_A` / `lora_B` (diffusers' current files and PEFT; prefixed `unet.`,
    /// `base_model.model.` or bare).
    Peft,
    /// `lora.down` / `lora.up` (older diffusers files).
    Diffusers,
    /// `lora_unet_…` with `lora_down` / `lora_up` / `alpha` (kohya sd-scripts, A1111, ComfyUI).
    Kohya,
}

/// The two matrices (and optional alpha) of one module in a LoRA file, PEFT layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraModuleWeights {
    /// `lora_A` / `lora.down` / `lora_down`, `[r, in]`, row-major.
    pub down: HostTensor,
    /// The key it was stored under.
    pub down_key: String,
    /// `lora_B` / `lora.up` / `lora_up`, `[out, r]`, row-major.
    pub up: HostTensor,
    /// The key it was stored under.
    pub up_key: String,
    /// A per-module `alpha` scalar (kohya), if present.
    pub alpha: Option<f64>,
}

impl LoraModuleWeights {
    /// Checks the pair against a base linear `in_features` → `out_features`: `down` must be
    /// `[r, in]` and `up` `[out, r]`, with `r` from `scaling` when there is one (else the stored
    /// rank), never 0; a wrong shape is a typed error naming the key. Returns `down` and `up`
    /// as f32 (row-major, stored layout), `r` and the scale (`alpha/r` with a per-module alpha,
    /// else the PEFT scale, else 1).
    fn checked(
        &self,
        in_features: usize,
        out_features: usize,
        scaling: Option<PeftScaling>,
    ) -> Result<(Vec<f32>, Vec<f32>, usize, f64)> {
        let (i, o) = (in_features, out_features);
        let r = match scaling {
            Some(s) => s.r,
            None => self.down.shape.first().copied().unwrap_or(0),
        };
        if r == 0 || self.down.shape != [r, i] {
            return Err(TrainError::ShapeMismatch {
                key: self.down_key.clone(),
                expected: vec![r.max(1), i],
                found: self.down.shape.clone(),
            });
        }
        if self.up.shape != [o, r] {
            return Err(TrainError::ShapeMismatch {
                key: self.up_key.clone(),
                expected: vec![o, r],
                found: self.up.shape.clone(),
            });
        }
        let scale = match (self.alpha, scaling) {
            (Some(alpha), _) => alpha / r as f64,
            (None, Some(s)) => s.scale(),
            (None, None) => 1.0,
        };
        let down = self.down.clone().into_f32(&self.down_key)?;
        let up = self.up.clone().into_f32(&self.up_key)?;
        Ok((down, up, r, scale))
    }
}

/// A parsed LoRA file (or PEFT adapter folder), not yet bound to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraFile {
    /// The file read.
    pub path: PathBuf,
    /// Its key family.
    pub format: LoraFormat,
    /// Module name as written (diffusers path for PEFT/diffusers, kohya name without suffix for
    /// kohya) → weights.
    pub modules: BTreeMap<String, LoraModuleWeights>,
    /// Text-encoder modules (`lora_te_…` kohya names, or the path after `text_encoder.`).
    pub text_encoder_modules: BTreeMap<String, LoraModuleWeights>,
    /// UNet scaling from `adapter_config.json` or the `lora_adapter_metadata` header.
    pub scaling: Option<PeftScaling>,
    /// Text-encoder scaling from the `lora_adapter_metadata` header (`text_encoder.r`, …).
    pub text_encoder_scaling: Option<PeftScaling>,
}

/// What [`apply_lora`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraLoadReport {
    /// The format detected.
    pub format: LoraFormat,
    /// Diffusers paths that received an adapter.
    pub modules: Vec<String>,
    /// Ranks seen (usually one).
    pub ranks: BTreeSet<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    Down,
    Up,
    Alpha,
}

/// Splits a key into (module, half, format) from its suffix.
fn split_suffix(key: &str) -> Option<(String, Half, LoraFormat)> {
    const SUFFIXES: [(&str, Half, LoraFormat); 6] = [
        (".lora_A.weight", Half::Down, LoraFormat::Peft),
        (".lora_B.weight", Half::Up, LoraFormat::Peft),
        (".lora.down.weight", Half::Down, LoraFormat::Diffusers),
        (".lora.up.weight", Half::Up, LoraFormat::Diffusers),
        (".lora_down.weight", Half::Down, LoraFormat::Kohya),
        (".lora_up.weight", Half::Up, LoraFormat::Kohya),
    ];
    for (suffix, half, format) in SUFFIXES {
        if let Some(m) = key.strip_suffix(suffix) {
            return Some((m.to_string(), half, format));
        }
    }
    // diffusers < 0.17 attention-processor form:
    // `<attn>.processor.to_q_lora.down.weight` (`to_out_lora` is `to_out.0`).
    for (suffix, half) in [
        ("_lora.down.weight", Half::Down),
        ("_lora.up.weight", Half::Up),
    ] {
        let Some(m) = key.strip_suffix(suffix) else {
            continue;
        };
        let Some((attn, proj)) = m.rsplit_once(".processor.") else {
            continue;
        };
        let proj = match proj {
            "to_q" | "to_k" | "to_v" => proj,
            "to_out" => "to_out.0",
            _ => continue,
        };
        return Some((format!("{attn}.{proj}"), half, LoraFormat::Diffusers));
    }
    None
}

/// `text_encoder.` in diffusers' pipeline files.
pub const TEXT_ENCODER_PREFIX: &str = "text_encoder.";
/// Prefix of text-encoder keys in kohya files.
pub const KOHYA_TE_PREFIX: &str = "lora_te_";

fn is_sdxl_text_encoder_key(key: &str) -> bool {
    ["lora_te1_", "lora_te2_", "text_encoder_2."]
        .iter()
        .any(|p| key.starts_with(p))
}

/// The keys of one model (UNet or text encoder) of a file, by half.
#[derive(Default)]
struct Group {
    downs: BTreeMap<String, (String, HostTensor)>,
    ups: BTreeMap<String, (String, HostTensor)>,
    alphas: BTreeMap<String, (String, HostTensor)>,
}

impl Group {
    /// Pairs `down` with `up` (and `alpha`); an unpaired half is a typed error naming the
    /// missing key.
    fn pair_up(
        mut self,
        format: LoraFormat,
        path: &Path,
    ) -> Result<BTreeMap<String, LoraModuleWeights>> {
        let (down_suffix, up_suffix) = match format {
            LoraFormat::Peft => ("lora_A.weight", "lora_B.weight"),
            LoraFormat::Diffusers => ("lora.down.weight", "lora.up.weight"),
            LoraFormat::Kohya => ("lora_down.weight", "lora_up.weight"),
        };
        let mut modules = BTreeMap::new();
        for (module, (down_key, down)) in self.downs {
            let Some((up_key, up)) = self.ups.remove(&module) else {
                let stem = down_key
                    .strip_suffix(down_suffix)
                    .unwrap_or(down_key.as_str());
                return Err(TrainError::MissingTensor {
                    key: format!("{stem}{up_suffix}"),
                    path: path.to_path_buf(),
                });
            };
            let alpha = match self.alphas.remove(&module) {
                None => None,
                Some((key, t)) => Some(scalar(&key, t)?),
            };
            modules.insert(
                module,
                LoraModuleWeights {
                    down,
                    down_key,
                    up,
                    up_key,
                    alpha,
                },
            );
        }
        if let Some((_, (key, _))) = self.ups.into_iter().next() {
            let stem = key.strip_suffix(up_suffix).unwrap_or(key.as_str());
            return Err(TrainError::MissingTensor {
                key: format!("{stem}{down_suffix}"),
                path: path.to_path_buf(),
            });
        }
        if let Some((_, (key, _))) = self.alphas.into_iter().next() {
            return Err(TrainError::UnexpectedAdapterKey { key });
        }
        Ok(modules)
    }
}

/// Reads the `__metadata__` map of a safetensors header (without reading the tensors).
pub fn read_safetensors_metadata(path: impl AsRef<Path>) -> Result<HashMap<String, String>> {
    let path = path.as_ref();
    let bad = |m: &str| TrainError::Safetensors {
        path: path.to_path_buf(),
        message: m.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let file_len = f.metadata().map_err(|e| TrainError::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|e| TrainError::io(path, e))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || n + 8 > file_len {
        return Err(bad("header length out of range"));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| TrainError::io(path, e))?;
    let v: Value = serde_json::from_slice(&header).map_err(|e| bad(&e.to_string()))?;
    let mut out = HashMap::new();
    if let Some(m) = v.get("__metadata__").and_then(Value::as_object) {
        for (k, val) in m {
            if let Some(s) = val.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    Ok(out)
}

/// The part of diffusers' `lora_adapter_metadata` for the model whose keys start with `prefix`
/// (`unet.r`, … / `text_encoder.r`, … in pipeline files); with `bare`, unprefixed keys
/// (`save_lora_adapter` files) count too.
fn scaling_from_metadata(
    text: &str,
    path: &Path,
    prefix: &str,
    bare: bool,
) -> Result<Option<PeftScaling>> {
    let v: Value = serde_json::from_str(text).map_err(|e| TrainError::json(path, e))?;
    let Some(obj) = v.as_object() else {
        return Err(TrainError::json(
            path,
            format!("`{LORA_METADATA_KEY}` is not an object"),
        ));
    };
    let prefixed: serde_json::Map<String, Value> = obj
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect();
    let cfg = if !prefixed.is_empty() {
        Value::Object(prefixed)
    } else if bare && obj.contains_key("r") {
        v.clone()
    } else {
        return Ok(None);
    };
    let origin = format!("{} ({LORA_METADATA_KEY})", path.display());
    PeftScaling::from_json(&cfg, &origin).map(Some)
}

impl LoraFile {
    /// Reads a LoRA file, or a folder holding `pytorch_lora_weights.safetensors` (diffusers) or
    /// `adapter_model.safetensors` + `adapter_config.json` (PEFT), and detects its format.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut scaling = None;
        let file = if path.is_dir() {
            let diffusers = path.join(LORA_WEIGHT_NAME);
            let peft = path.join("adapter_model.safetensors");
            if diffusers.is_file() {
                diffusers
            } else if peft.is_file() {
                let cfg_path = path.join("adapter_config.json");
                if cfg_path.is_file() {
                    let v = read_json(&cfg_path)?;
                    scaling = Some(PeftScaling::from_json(&v, &cfg_path.display().to_string())?);
                }
                peft
            } else {
                return Err(TrainError::MissingFolder {
                    name: format!("{LORA_WEIGHT_NAME} or adapter_model.safetensors"),
                    path: path.to_path_buf(),
                });
            }
        } else {
            path.to_path_buf()
        };
        let meta = read_safetensors_metadata(&file)?;
        let mut te_scaling = None;
        if let Some(text) = meta.get(LORA_METADATA_KEY) {
            if scaling.is_none() {
                scaling = scaling_from_metadata(text, &file, UNET_PREFIX, true)?;
            }
            te_scaling = scaling_from_metadata(text, &file, TEXT_ENCODER_PREFIX, false)?;
        }
        let tensors = read_safetensors(&file)?;
        Self::from_parts(file, tensors, scaling, te_scaling)
    }

    /// Classifies the tensors of a LoRA file (see [`LoraFile::read`]).
    pub fn from_tensors(
        path: PathBuf,
        tensors: BTreeMap<String, HostTensor>,
        scaling: Option<PeftScaling>,
    ) -> Result<Self> {
        Self::from_parts(path, tensors, scaling, None)
    }

    fn from_parts(
        path: PathBuf,
        tensors: BTreeMap<String, HostTensor>,
        scaling: Option<PeftScaling>,
        text_encoder_scaling: Option<PeftScaling>,
    ) -> Result<Self> {
        let mut format: Option<(LoraFormat, String)> = None;
        let mut unet = Group::default();
        let mut te = Group::default();
        for (key, t) in tensors {
            if is_sdxl_text_encoder_key(&key) {
                return Err(TrainError::UnsupportedLora {
                    key,
                    reason: "second text encoder (SDXL): only SD 1.x/2.x pipelines are supported"
                        .into(),
                });
            }
            if key.contains("dora_scale") || key.contains("lora_magnitude_vector") {
                return Err(TrainError::UnsupportedLora {
                    key,
                    reason: "DoRA is not supported".into(),
                });
            }
            let (module, half, fmt) = match split_suffix(&key) {
                Some(x) => x,
                None => match key.strip_suffix(".alpha") {
                    Some(m) => (m.to_string(), Half::Alpha, LoraFormat::Kohya),
                    None => return Err(TrainError::UnexpectedAdapterKey { key }),
                },
            };
            if half != Half::Alpha {
                match &format {
                    None => format = Some((fmt, key.clone())),
                    Some((f, first)) if *f != fmt => {
                        return Err(TrainError::UnsupportedLora {
                            key,
                            reason: format!(
                                "{fmt:?} key in a file whose first key `{first}` is {f:?}; mixed \
                                 formats are not supported"
                            ),
                        })
                    }
                    Some(_) => {}
                }
            }
            let (group, module) = match module.strip_prefix(TEXT_ENCODER_PREFIX) {
                Some(m) => (&mut te, m.to_string()),
                None if module.starts_with(KOHYA_TE_PREFIX) => (&mut te, module),
                None => (&mut unet, module),
            };
            let slot = match half {
                Half::Down => &mut group.downs,
                Half::Up => &mut group.ups,
                Half::Alpha => &mut group.alphas,
            };
            slot.insert(module, (key, t));
        }
        let Some((format, _)) = format else {
            return Err(TrainError::InvalidArgument(format!(
                "{} holds no LoRA tensors",
                path.display()
            )));
        };
        Ok(Self {
            modules: unet.pair_up(format, &path)?,
            text_encoder_modules: te.pair_up(format, &path)?,
            path,
            format,
            scaling,
            text_encoder_scaling,
        })
    }

    /// Binds every module to a diffusers path among `known` (the model's attention projection
    /// paths). Unknown modules are typed errors naming their `down` key.
    fn resolve(&self, known: &[String]) -> Result<BTreeMap<String, &LoraModuleWeights>> {
        let set: BTreeSet<&str> = known.iter().map(String::as_str).collect();
        let kohya: HashMap<String, &str> = known
            .iter()
            .map(|p| {
                (
                    format!("{KOHYA_UNET_PREFIX}{}", p.replace('.', "_")),
                    p.as_str(),
                )
            })
            .collect();
        let mut out = BTreeMap::new();
        for (module, w) in &self.modules {
            let path = match self.format {
                LoraFormat::Kohya => kohya.get(module.as_str()).map(|p| p.to_string()),
                LoraFormat::Peft | LoraFormat::Diffusers => [UNET_PREFIX, PEFT_MODEL_PREFIX, ""]
                    .iter()
                    .find_map(|p| module.strip_prefix(p).filter(|m| set.contains(m)))
                    .map(str::to_string),
            };
            let Some(path) = path else {
                return Err(TrainError::UnexpectedAdapterKey {
                    key: w.down_key.clone(),
                });
            };
            if out.insert(path, w).is_some() {
                return Err(TrainError::UnsupportedLora {
                    key: w.down_key.clone(),
                    reason: "a second adapter for the same module".into(),
                });
            }
        }
        Ok(out)
    }
}

fn text_encoder_error(key: &str) -> TrainError {
    TrainError::UnsupportedLora {
        key: key.to_string(),
        reason: "text-encoder LoRA cannot be loaded into the UNet alone; load the file with \
                 `load_lora_with_text_encoder` (it fuses the text-encoder part into the CLIP text \
                 model)"
            .into(),
    }
}

fn scalar(key: &str, t: HostTensor) -> Result<f64> {
    if t.shape.iter().product::<usize>() != 1 {
        return Err(TrainError::ShapeMismatch {
            key: key.to_string(),
            expected: vec![],
            found: t.shape,
        });
    }
    let v = match t.data {
        HostData::F32(v) => v.first().map(|&x| x as f64),
        HostData::I64(v) => v.first().map(|&x| x as f64),
    };
    v.filter(|a| a.is_finite())
        .ok_or_else(|| TrainError::UnsupportedLora {
            key: key.to_string(),
            reason: "alpha is not a finite number".into(),
        })
}

/// Standard normal draws (Box–Muller) from a host RNG.
pub(crate) fn normal(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let rad = (-2.0 * u1.ln()).sqrt();
        let th = std::f64::consts::TAU * u2;
        out.push((rad * th.cos()) as f32);
        out.push((rad * th.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// Adds fresh adapters to the targeted linears of `linears` (from
/// `UNet2DConditionModel::attention_linears_mut`); `B` is zero, so outputs are unchanged.
/// Returns the number of modules adapted. `seed` makes `A` reproducible; an existing adapter is
/// replaced.
pub fn add_lora<B: Backend>(
    linears: Vec<(String, &mut LoraLinear<B>)>,
    cfg: &UNetLoraConfig,
    seed: u64,
) -> Result<usize> {
    cfg.validate()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut n = 0;
    for (path, lin) in linears {
        if !cfg.targets(&path) {
            continue;
        }
        let (i, o) = (lin.in_features(), lin.out_features());
        // Drawn in PEFT's [r, in] order, stored [in, r].
        let a: Vec<f32> = match cfg.init {
            LoraInit::KaimingUniform => {
                let bound = 1.0 / (i as f32).sqrt();
                (0..cfg.r * i)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect()
            }
            LoraInit::Gaussian => normal(&mut rng, cfg.r * i)
                .into_iter()
                .map(|x| x / cfg.r as f32)
                .collect(),
        };
        let w = lin.weight.val();
        lin.adapter = Some(LoraAdapter {
            lora_a: trainable_param(transpose(&a, cfg.r, i), [i, cfg.r], w.dtype(), &w.device()),
            lora_b: trainable_param(vec![0.0; cfg.r * o], [cfg.r, o], w.dtype(), &w.device()),
            scale: cfg.scale(),
            dropout: cfg.lora_dropout,
        });
        n += 1;
    }
    if n == 0 {
        return Err(TrainError::Config(
            "the LoRA configuration targets no module of this UNet".into(),
        ));
    }
    Ok(n)
}

/// Loads `file` into `linears`. Every module of the file must name one of them, with shapes
/// `[r, in]` / `[out, r]` matching the base linear (and `r` matching the PEFT config when there
/// is one); otherwise nothing is changed and a typed error names the key. Adapters are loaded
/// trainable (so training can continue from them) with dropout 0 unless the config says
/// otherwise.
pub fn apply_lora<B: Backend>(
    linears: Vec<(String, &mut LoraLinear<B>)>,
    file: &LoraFile,
) -> Result<LoraLoadReport> {
    if let Some(m) = file.text_encoder_modules.values().next() {
        return Err(text_encoder_error(&m.down_key));
    }
    let known: Vec<String> = linears.iter().map(|(p, _)| p.clone()).collect();
    let bound = file.resolve(&known)?;
    // Validate everything before touching the model.
    let mut plan: BTreeMap<String, (Vec<f32>, Vec<f32>, usize, f64)> = BTreeMap::new();
    let mut ranks = BTreeSet::new();
    for (path, lin) in &linears {
        let Some(w) = bound.get(path) else { continue };
        let (down, up, r, scale) =
            w.checked(lin.in_features(), lin.out_features(), file.scaling)?;
        ranks.insert(r);
        plan.insert(path.clone(), (down, up, r, scale));
    }
    let dropout = file.scaling.map_or(0.0, |s| s.lora_dropout);
    let mut modules = Vec::with_capacity(plan.len());
    for (path, lin) in linears {
        let Some((down, up, r, scale)) = plan.remove(&path) else {
            continue;
        };
        let (i, o) = (lin.in_features(), lin.out_features());
        let w = lin.weight.val();
        lin.adapter = Some(LoraAdapter {
            lora_a: trainable_param(transpose(&down, r, i), [i, r], w.dtype(), &w.device()),
            lora_b: trainable_param(transpose(&up, o, r), [r, o], w.dtype(), &w.device()),
            scale,
            dropout,
        });
        modules.push(path);
    }
    Ok(LoraLoadReport {
        format: file.format,
        modules,
        ranks,
    })
}

/// The adapters of `linears` under diffusers' saved key names (`unet.<path>.lora_A.weight`
/// `[r, in]`, `….lora_B.weight` `[out, r]`), each `lora_B` multiplied by
/// `adapter scale / target_scale` (1 when the adapter was made with the saved configuration).
pub fn lora_state<B: Backend>(
    linears: &[(String, &mut LoraLinear<B>)],
    prefix: &str,
    target_scale: Option<f64>,
) -> BTreeMap<String, HostTensor> {
    peft_adapter_state(
        linears.iter().map(|(path, lin)| (path.clone(), &**lin)),
        prefix,
        target_scale,
    )
}

pub(crate) fn check_savable<B: Backend>(
    linears: &[(String, &mut LoraLinear<B>)],
    cfg: &UNetLoraConfig,
) -> Result<()> {
    cfg.validate()?;
    let mut any = false;
    for (path, lin) in linears {
        if let Some(a) = &lin.adapter {
            any = true;
            let r = a.lora_a.val().dims()[1];
            if r != cfg.r {
                return Err(TrainError::InvalidArgument(format!(
                    "adapter of `{path}` has rank {r}, the configuration to save has r = {}",
                    cfg.r
                )));
            }
            if !cfg.targets(path) {
                return Err(TrainError::InvalidArgument(format!(
                    "`{path}` carries an adapter but the configuration to save does not target it"
                )));
            }
        }
    }
    if !any {
        return Err(TrainError::InvalidArgument(
            "the UNet has no LoRA adapters".into(),
        ));
    }
    Ok(())
}

/// Writes `dir/pytorch_lora_weights.safetensors` as diffusers' `save_lora_weights` does (see
/// the module docs). Adapters whose scale differs from `cfg.scale()` (e.g. loaded from a kohya
/// file with per-module alphas) have the ratio folded into `lora_B`, so the file reproduces the
/// model under `cfg`. Returns the file written.
pub fn save_lora_weights<B: Backend>(
    linears: &[(String, &mut LoraLinear<B>)],
    cfg: &UNetLoraConfig,
    dir: impl AsRef<Path>,
) -> Result<PathBuf> {
    check_savable(linears, cfg)?;
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let state = lora_state(linears, UNET_PREFIX, Some(cfg.scale()));
    let mut meta = serde_json::Map::new();
    if let Value::Object(o) = cfg.to_peft_json() {
        for (k, v) in o {
            meta.insert(format!("{UNET_PREFIX}{k}"), v);
        }
    }
    let path = dir.join(LORA_WEIGHT_NAME);
    let meta_text = serde_json::to_string_pretty(&Value::Object(meta))
        .map_err(|e| TrainError::json(&path, e))?;
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (LORA_METADATA_KEY.to_string(), meta_text),
    ]);
    write_safetensors(&path, &state, StoreDtype::F32, Some(metadata))?;
    Ok(path)
}

/// Writes a PEFT adapter folder: `adapter_config.json` and `adapter_model.safetensors` with
/// `base_model.model.<path>.lora_A.weight` keys (what `PeftModel.save_pretrained` writes for a
/// UNet wrapped with `get_peft_model`). `base_model_name_or_path` goes into the config.
pub fn save_peft_adapter<B: Backend>(
    linears: &[(String, &mut LoraLinear<B>)],
    cfg: &UNetLoraConfig,
    dir: impl AsRef<Path>,
    base_model_name_or_path: Option<&str>,
) -> Result<()> {
    check_savable(linears, cfg)?;
    let state = lora_state(linears, PEFT_MODEL_PREFIX, Some(cfg.scale()));
    let mut config = cfg.to_peft_json();
    config["base_model_name_or_path"] = base_model_name_or_path.map_or(Value::Null, Value::from);
    config["inference_mode"] = Value::Bool(true);
    write_peft_adapter(dir.as_ref(), &state, &config)
}

/// Folds every adapter into its base weight (`W + s·A·B`, diffusers' `fuse_lora` followed by
/// `unload_lora`); the linears end up adapter-free. Returns the number fused.
pub fn fuse_lora<B: Backend>(linears: Vec<(String, &mut LoraLinear<B>)>) -> usize {
    let mut n = 0;
    for (_, lin) in linears {
        if let Some(a) = lin.adapter.take() {
            let delta = a.lora_a.val().matmul(a.lora_b.val()).mul_scalar(a.scale);
            let w = (lin.weight.val() + delta).detach();
            lin.weight = Param::from_tensor(w).set_require_grad(false);
            n += 1;
        }
    }
    n
}

/// The LoRA-able linears of a CLIP text model with `layers` layers, as transformers 5 names them
/// (without `text_model.`): `encoder.layers.N.self_attn.{q,k,v,out}_proj`,
/// `encoder.layers.N.mlp.fc{1,2}`.
fn text_encoder_paths(layers: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(layers * 6);
    for l in 0..layers {
        for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            out.push(format!("encoder.layers.{l}.self_attn.{m}"));
        }
        for m in ["fc1", "fc2"] {
            out.push(format!("encoder.layers.{l}.mlp.{m}"));
        }
    }
    out
}

/// `s·(B·A)ᵀ` as `[in, out]` (our layout), from `A` `[r, in]` and `B` `[out, r]`.
fn delta_in_out(a: &[f32], b: &[f32], r: usize, i: usize, o: usize, s: f64) -> Vec<f32> {
    let mut d = vec![0f32; i * o];
    for k in 0..r {
        for (x, row) in d.chunks_mut(o).enumerate() {
            let ax = a[k * i + x] as f64 * s;
            for (y, v) in row.iter_mut().enumerate() {
                *v += (ax * b[y * r + k] as f64) as f32;
            }
        }
    }
    d
}

/// Fuses the text-encoder part of `file` into svgen-eval's CLIP text model (`W + s·B·A` on
/// `q/k/v/out_proj`, `fc1`, `fc2`; the query part of the fused `qkv_proj` also carries CLIP's
/// `1/√head_dim`, so its delta is scaled the same way). `config` is the text encoder's
/// `config.json`. Keys may name modules as transformers 4 (`text_model.encoder.…`,
/// `lora_te_text_model_encoder_…`) or 5 (`encoder.…`) did. Unknown modules and wrong shapes are
/// typed errors naming the key; nothing is changed then. Returns the number of modules fused.
pub fn fuse_text_encoder_lora<B: Backend>(
    text_encoder: &mut ClipTextModel<B>,
    config: &ClipTextConfig,
    file: &LoraFile,
) -> Result<usize> {
    let layers = text_encoder.encoder.layers.len();
    let d = config.hidden_size;
    let heads = config.num_attention_heads.max(1);
    let attn_scale = 1.0 / ((d / heads) as f64).sqrt();
    let known = text_encoder_paths(layers);
    let kohya: HashMap<String, &str> = known
        .iter()
        .map(|p| (p.replace('.', "_"), p.as_str()))
        .collect();
    let set: BTreeSet<&str> = known.iter().map(String::as_str).collect();
    // path -> (delta [in, out])
    let mut plan: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for (module, w) in &file.text_encoder_modules {
        let path = match file.format {
            LoraFormat::Kohya => module
                .strip_prefix(KOHYA_TE_PREFIX)
                .map(|m| m.strip_prefix("text_model_").unwrap_or(m))
                .and_then(|m| kohya.get(m).map(|p| p.to_string())),
            LoraFormat::Peft | LoraFormat::Diffusers => {
                let m = module.strip_prefix("text_model.").unwrap_or(module);
                set.contains(m).then(|| m.to_string())
            }
        };
        let Some(path) = path else {
            return Err(TrainError::UnexpectedAdapterKey {
                key: w.down_key.clone(),
            });
        };
        let (i, o) = if path.ends_with("fc1") {
            (d, config.intermediate_size)
        } else if path.ends_with("fc2") {
            (config.intermediate_size, d)
        } else {
            (d, d)
        };
        let (a, b, r, scale) = w.checked(i, o, file.text_encoder_scaling)?;
        if plan
            .insert(path, delta_in_out(&a, &b, r, i, o, scale))
            .is_some()
        {
            return Err(TrainError::UnsupportedLora {
                key: w.down_key.clone(),
                reason: "a second adapter for the same module".into(),
            });
        }
    }
    let n = plan.len();
    let add = |p: &mut Param<Tensor<B, 2>>, f: &dyn Fn(&mut [f32])| {
        let w = p.val();
        let dims = w.dims();
        let (device, dtype) = (w.device(), w.dtype());
        let mut v = host_f32(w);
        f(&mut v);
        let t = Tensor::from_data(TensorData::new(v, dims), (&device, dtype));
        *p = Param::from_tensor(t).set_require_grad(false);
    };
    for (path, delta) in plan {
        // "encoder.layers.{l}.{self_attn|mlp}.{name}"
        let mut parts = path.split('.');
        let l: usize = parts
            .nth(2)
            .and_then(|x| x.parse().ok())
            .unwrap_or(usize::MAX);
        let name = path.rsplit('.').next().unwrap_or_default();
        let Some(layer) = text_encoder.encoder.layers.get_mut(l) else {
            continue;
        };
        let j = match name {
            "q_proj" => Some((0, attn_scale)),
            "k_proj" => Some((1, 1.0)),
            "v_proj" => Some((2, 1.0)),
            _ => None,
        };
        match (j, name) {
            (Some((j, s)), _) => add(&mut layer.self_attn.qkv_proj.weight, &|w| {
                let n3 = 3 * d;
                for x in 0..d {
                    for y in 0..d {
                        w[x * n3 + j * d + y] += (delta[x * d + y] as f64 * s) as f32;
                    }
                }
            }),
            (None, "out_proj") => add(&mut layer.self_attn.out_proj.weight, &|w| {
                w.iter_mut().zip(&delta).for_each(|(w, d)| *w += d)
            }),
            (None, "fc1") => add(&mut layer.mlp.fc1.weight, &|w| {
                w.iter_mut().zip(&delta).for_each(|(w, d)| *w += d)
            }),
            (None, _) => add(&mut layer.mlp.fc2.weight, &|w| {
                w.iter_mut().zip(&delta).for_each(|(w, d)| *w += d)
            }),
        }
    }
    Ok(n)
}

/// Loads a pipeline LoRA file holding UNet and (optionally) text-encoder tensors: the UNet part
/// as adapters (see [`apply_lora`]), the text-encoder part fused into `text_encoder` (see
/// [`fuse_text_encoder_lora`]). Everything is validated before either model changes. Returns the
/// UNet report and the number of text-encoder modules fused.
pub fn load_lora_with_text_encoder<B: Backend>(
    unet: &mut UNet2DConditionModel<B>,
    text_encoder: &mut ClipTextModel<B>,
    text_encoder_config: &ClipTextConfig,
    path: impl AsRef<Path>,
) -> Result<(LoraLoadReport, usize)> {
    let file = LoraFile::read(path)?;
    // Validate the text-encoder part on a copy (cloning a module clones tensor handles).
    let mut probe = text_encoder.clone();
    fuse_text_encoder_lora(&mut probe, text_encoder_config, &file)?;
    let unet_only = LoraFile {
        text_encoder_modules: BTreeMap::new(),
        ..file.clone()
    };
    let report = apply_lora(unet.attention_linears_mut(), &unet_only)?;
    let n = file.text_encoder_modules.len();
    *text_encoder = probe;
    Ok((report, n))
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Adds fresh adapters to the attention projections `cfg` targets (see [`add_lora`]).
    pub fn add_lora(&mut self, cfg: &UNetLoraConfig, seed: u64) -> Result<usize> {
        add_lora(self.attention_linears_mut(), cfg, seed)
    }

    /// Loads a LoRA file or folder in any supported format (see the [module docs](self)).
    pub fn load_lora(&mut self, path: impl AsRef<Path>) -> Result<LoraLoadReport> {
        let file = LoraFile::read(path)?;
        apply_lora(self.attention_linears_mut(), &file)
    }

    /// The adapters under diffusers' key names (`unet.<path>.lora_A.weight`, …), unscaled.
    pub fn lora_state(&self) -> BTreeMap<String, HostTensor> {
        // Cloning a module clones tensor handles only.
        let mut m = self.clone();
        let linears = m.attention_linears_mut();
        lora_state(&linears, UNET_PREFIX, None)
    }

    /// Saves the adapters as `dir/pytorch_lora_weights.safetensors` (see [`save_lora_weights`]).
    pub fn save_lora_weights(
        &self,
        cfg: &UNetLoraConfig,
        dir: impl AsRef<Path>,
    ) -> Result<PathBuf> {
        let mut m = self.clone();
        let linears = m.attention_linears_mut();
        save_lora_weights(&linears, cfg, dir)
    }

    /// Saves the adapters as a PEFT adapter folder (see [`save_peft_adapter`]).
    pub fn save_peft_adapter(
        &self,
        cfg: &UNetLoraConfig,
        dir: impl AsRef<Path>,
        base_model_name_or_path: Option<&str>,
    ) -> Result<()> {
        let mut m = self.clone();
        let linears = m.attention_linears_mut();
        save_peft_adapter(&linears, cfg, dir, base_model_name_or_path)
    }

    /// Folds the adapters into the base weights (see [`fuse_lora`]).
    pub fn fuse_lora(&mut self) -> usize {
        fuse_lora(self.attention_linears_mut())
    }

    /// Number of LoRA parameters.
    pub fn num_lora_params(&self) -> usize {
        let mut m = self.clone();
        m.attention_linears_mut()
            .iter()
            .filter_map(|(_, l)| l.adapter.as_ref())
            .map(|a| a.lora_a.shape().num_elements() + a.lora_b.shape().num_elements())
            .sum()
    }
}
