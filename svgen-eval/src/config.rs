//! CLIP configuration, read from a Hugging Face `config.json`.
//!
//! Keys and defaults follow transformers' `CLIPConfig`, `CLIPTextConfig` and `CLIPVisionConfig`: a key
//! absent from the file takes the transformers default (ViT-B/32 shapes, `quick_gelu`, `eps = 1e-5`).

use std::path::Path;

use crate::error::Result;
use crate::hf_config::{ConfigError, HfConfig, OneOrMany};

/// The MLP activation of a CLIP encoder layer (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`: OpenAI's checkpoints.
    QuickGelu,
    /// Exact (erf) GELU: `gelu` (OpenCLIP / LAION checkpoints).
    Gelu,
    /// tanh-approximated GELU: `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    /// The transformers `hidden_act` names this crate implements.
    pub const HF_NAMES: [(&'static str, Activation); 8] = [
        ("quick_gelu", Activation::QuickGelu),
        ("gelu", Activation::Gelu),
        ("gelu_new", Activation::GeluTanh),
        ("gelu_pytorch_tanh", Activation::GeluTanh),
        ("gelu_fast", Activation::GeluTanh),
        ("relu", Activation::Relu),
        ("silu", Activation::Silu),
        ("swish", Activation::Silu),
    ];

    /// Parses a transformers `hidden_act` name.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        Self::HF_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
    }
}

/// Text tower configuration (`CLIPTextConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipTextConfig {
    /// Vocabulary size (`vocab_size`, default 49408).
    pub vocab_size: usize,
    /// Width (`hidden_size`, default 512).
    pub hidden_size: usize,
    /// MLP width (`intermediate_size`, default 2048).
    pub intermediate_size: usize,
    /// Depth (`num_hidden_layers`, default 12).
    pub num_hidden_layers: usize,
    /// Heads (`num_attention_heads`, default 8).
    pub num_attention_heads: usize,
    /// Context length (`max_position_embeddings`, default 77).
    pub max_position_embeddings: usize,
    /// MLP activation (`hidden_act`, default `quick_gelu`).
    pub hidden_act: Activation,
    /// LayerNorm epsilon (`layer_norm_eps`, default 1e-5).
    pub layer_norm_eps: f64,
    /// `pad_token_id` (default 1).
    pub pad_token_id: i64,
    /// `bos_token_id` (default 49406).
    pub bos_token_id: i64,
    /// `eos_token_id` (default 49407). The value 2 selects transformers' legacy pooling at
    /// `argmax(input_ids)`; any other value pools at the first position holding it.
    pub eos_token_id: i64,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            bos_token_id: 49406,
            eos_token_id: 49407,
        }
    }
}

/// Vision tower configuration (`CLIPVisionConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    /// Width (`hidden_size`, default 768).
    pub hidden_size: usize,
    /// MLP width (`intermediate_size`, default 3072).
    pub intermediate_size: usize,
    /// Depth (`num_hidden_layers`, default 12).
    pub num_hidden_layers: usize,
    /// Heads (`num_attention_heads`, default 12).
    pub num_attention_heads: usize,
    /// Input channels (`num_channels`, default 3).
    pub num_channels: usize,
    /// Square input side in pixels (`image_size`, default 224).
    pub image_size: usize,
    /// Square patch side (`patch_size`, default 32).
    pub patch_size: usize,
    /// MLP activation (`hidden_act`, default `quick_gelu`).
    pub hidden_act: Activation,
    /// LayerNorm epsilon (`layer_norm_eps`, default 1e-5).
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        ClipVisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipVisionConfig {
    /// Patches per side: `image_size / patch_size` (the convolution drops the remainder, as in torch).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Sequence length of the vision transformer: patches + the class token.
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }
}

/// Full CLIP configuration (`CLIPConfig`).
///
/// ```
/// use svgen_eval::ClipConfig;
/// let cfg = ClipConfig::from_json_str(r#"{"projection_dim": 768,
///     "vision_config": {"hidden_size": 1024, "num_attention_heads": 16, "patch_size": 14}}"#).unwrap();
/// assert_eq!(cfg.vision.patch_size, 14);
/// assert_eq!(cfg.text.hidden_size, 512); // transformers' default
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// Text tower.
    pub text: ClipTextConfig,
    /// Vision tower.
    pub vision: ClipVisionConfig,
    /// Width of the joint embedding space (`projection_dim`, default 512).
    pub projection_dim: usize,
    /// Initial value of `logit_scale` (`logit_scale_init_value`, default 2.6592); the loaded
    /// checkpoint's `logit_scale` tensor is what the model uses.
    pub logit_scale_init_value: f64,
}

impl Default for ClipConfig {
    fn default() -> Self {
        ClipConfig {
            text: ClipTextConfig::default(),
            vision: ClipVisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }
}

/// `hidden_act`.
fn activation(c: &HfConfig) -> Result<Activation, ConfigError> {
    c.choice("hidden_act", Activation::QuickGelu, &Activation::HF_NAMES)
}

/// A token id given as an integer or a list (the first one counts).
fn token(c: &HfConfig, key: &str, default: i64) -> Result<i64, ConfigError> {
    match c.get::<OneOrMany<i64>>(key)? {
        None => Ok(default),
        Some(ids) => ids
            .0
            .first()
            .copied()
            .ok_or_else(|| c.invalid(key, "is an empty list")),
    }
}

/// A square side given as an integer or `[h, w]` with `h == w`.
fn side(c: &HfConfig, key: &str, default: usize) -> Result<usize, ConfigError> {
    let Some(OneOrMany(v)) = c.get::<OneOrMany<usize>>(key)? else {
        return Ok(default);
    };
    match v[..] {
        [0] | [0, 0] => Err(c.invalid(key, "must be positive")),
        [n] => Ok(n),
        [h, w] if h == w => Ok(h),
        _ => Err(c.unsupported(key, "only square sizes are supported")),
    }
}

/// The heads must divide the width.
fn check_heads(c: &HfConfig, hidden: usize, heads: usize) -> Result<(), ConfigError> {
    if !hidden.is_multiple_of(heads) {
        return Err(c.invalid(
            "num_attention_heads",
            format!("does not divide hidden_size {hidden}"),
        ));
    }
    Ok(())
}

/// `{key}` of a `CLIPConfig`, with the old `{key}_dict` overriding it as transformers does.
fn tower(root: &HfConfig, key: &str) -> Result<HfConfig, ConfigError> {
    Ok(root
        .section(key)?
        .overridden_by(root.opt_section(&format!("{key}_dict"))?))
}

impl ClipTextConfig {
    /// Reads a `CLIPTextConfig` section (absent keys take transformers' defaults).
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn from_config(c: &HfConfig) -> Result<Self, ConfigError> {
        let d = ClipTextConfig::default();
        let cfg = ClipTextConfig {
            vocab_size: c.positive("vocab_size", d.vocab_size)?,
            hidden_size: c.positive("hidden_size", d.hidden_size)?,
            intermediate_size: c.positive("intermediate_size", d.intermediate_size)?,
            num_hidden_layers: c.get_or("num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads: c.positive("num_attention_heads", d.num_attention_heads)?,
            max_position_embeddings: c
                .positive("max_position_embeddings", d.max_position_embeddings)?,
            hidden_act: activation(c)?,
            layer_norm_eps: c.get_or("layer_norm_eps", d.layer_norm_eps)?,
            pad_token_id: token(c, "pad_token_id", d.pad_token_id)?,
            bos_token_id: token(c, "bos_token_id", d.bos_token_id)?,
            eos_token_id: token(c, "eos_token_id", d.eos_token_id)?,
        };
        check_heads(c, cfg.hidden_size, cfg.num_attention_heads)?;
        Ok(cfg)
    }

    /// Reads a text-only `config.json` (`CLIPTextModel`, e.g. Stable Diffusion's `text_encoder`),
    /// or the `text_config` of a full `CLIPConfig`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn from_root(root: &HfConfig) -> Result<Self, ConfigError> {
        if root.contains("text_config") || root.contains("text_config_dict") {
            Self::from_config(&tower(root, "text_config")?)
        } else {
            Self::from_config(root)
        }
    }

    /// Parses [`ClipTextConfig::from_root`] from JSON text.
    pub fn from_json_str(json: &str) -> Result<Self> {
        Ok(Self::from_root(&HfConfig::parse(json, "<string>")?)?)
    }

    /// Reads [`ClipTextConfig::from_root`] from a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::from_root(&HfConfig::read(path)?)?)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

impl ClipVisionConfig {
    /// Reads a `CLIPVisionConfig` section (absent keys take transformers' defaults).
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn from_config(c: &HfConfig) -> Result<Self, ConfigError> {
        let d = ClipVisionConfig::default();
        let cfg = ClipVisionConfig {
            hidden_size: c.positive("hidden_size", d.hidden_size)?,
            intermediate_size: c.positive("intermediate_size", d.intermediate_size)?,
            num_hidden_layers: c.get_or("num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads: c.positive("num_attention_heads", d.num_attention_heads)?,
            num_channels: c.positive("num_channels", d.num_channels)?,
            image_size: side(c, "image_size", d.image_size)?,
            patch_size: side(c, "patch_size", d.patch_size)?,
            hidden_act: activation(c)?,
            layer_norm_eps: c.get_or("layer_norm_eps", d.layer_norm_eps)?,
        };
        check_heads(c, cfg.hidden_size, cfg.num_attention_heads)?;
        if cfg.patch_size > cfg.image_size {
            return Err(c.invalid("patch_size", "is larger than image_size"));
        }
        Ok(cfg)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

impl ClipConfig {
    /// Reads a `CLIPConfig` (absent keys take transformers' defaults).
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn from_config(root: &HfConfig) -> Result<Self, ConfigError> {
        let d = ClipConfig::default();
        Ok(ClipConfig {
            text: ClipTextConfig::from_config(&tower(root, "text_config")?)?,
            vision: ClipVisionConfig::from_config(&tower(root, "vision_config")?)?,
            projection_dim: root.positive("projection_dim", d.projection_dim)?,
            logit_scale_init_value: root
                .get_or("logit_scale_init_value", d.logit_scale_init_value)?,
        })
    }

    /// Parses a `CLIPConfig` JSON document; absent keys take transformers' defaults.
    pub fn from_json_str(json: &str) -> Result<Self> {
        Ok(Self::from_config(&HfConfig::parse(json, "<string>")?)?)
    }

    /// Reads a `config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::from_config(&HfConfig::read(path)?)?)
    }
}
