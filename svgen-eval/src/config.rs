//! CLIP configuration, read from a Hugging Face `config.json`.
//!
//! Keys and defaults follow transformers' `CLIPConfig`, `CLIPTextConfig` and `CLIPVisionConfig`: a key
//! absent from the file takes the transformers default (ViT-B/32 shapes, `quick_gelu`, `eps = 1e-5`).

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{EvalError, Result};

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
    /// Parses a transformers `hidden_act` name.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        Some(match name {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            _ => return None,
        })
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

struct Reader<'a> {
    obj: &'a Map<String, Value>,
    origin: &'a str,
}

impl Reader<'_> {
    fn err(&self, key: &str, what: &str) -> EvalError {
        EvalError::Config {
            path: self.origin.into(),
            message: format!("key `{key}`: {what}"),
        }
    }

    fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => {
                let n = v
                    .as_u64()
                    .ok_or_else(|| self.err(key, "expected a non-negative integer"))?;
                usize::try_from(n).map_err(|_| self.err(key, "out of range"))
            }
        }
    }

    fn positive(&self, key: &str, default: usize) -> Result<usize> {
        let n = self.usize(key, default)?;
        if n == 0 {
            return Err(self.err(key, "must be positive"));
        }
        Ok(n)
    }

    fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.err(key, "expected a number")),
        }
    }

    fn token(&self, key: &str, default: i64) -> Result<i64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Array(a)) => a
                .first()
                .and_then(Value::as_i64)
                .ok_or_else(|| self.err(key, "expected an integer or a list of integers")),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| self.err(key, "expected an integer")),
        }
    }

    fn act(&self, key: &str) -> Result<Activation> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(Activation::QuickGelu),
            Some(Value::String(s)) => Activation::from_hf_name(s)
                .ok_or_else(|| self.err(key, &format!("unsupported activation `{s}`"))),
            Some(_) => Err(self.err(key, "expected a string")),
        }
    }

    fn side(&self, key: &str, default: usize) -> Result<usize> {
        match self.obj.get(key) {
            Some(Value::Array(a)) => {
                let v: Vec<u64> = a.iter().filter_map(Value::as_u64).collect();
                match v.as_slice() {
                    [h, w] if h == w && *h > 0 => Ok(*h as usize),
                    _ => Err(self.err(key, "only square sizes are supported")),
                }
            }
            _ => self.positive(key, default),
        }
    }
}

fn sub_config(root: &Map<String, Value>, key: &str) -> Map<String, Value> {
    let mut out = match root.get(key) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    // Old configs carry a `*_config_dict` that transformers lets override `*_config`.
    if let Some(Value::Object(m)) = root.get(&format!("{key}_dict")) {
        for (k, v) in m {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

impl ClipTextConfig {
    fn from_map(obj: &Map<String, Value>, origin: &str) -> Result<Self> {
        let r = Reader { obj, origin };
        let d = ClipTextConfig::default();
        let cfg = ClipTextConfig {
            vocab_size: r.positive("vocab_size", d.vocab_size)?,
            hidden_size: r.positive("hidden_size", d.hidden_size)?,
            intermediate_size: r.positive("intermediate_size", d.intermediate_size)?,
            num_hidden_layers: r.usize("num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads: r.positive("num_attention_heads", d.num_attention_heads)?,
            max_position_embeddings: r
                .positive("max_position_embeddings", d.max_position_embeddings)?,
            hidden_act: r.act("hidden_act")?,
            layer_norm_eps: r.f64("layer_norm_eps", d.layer_norm_eps)?,
            pad_token_id: r.token("pad_token_id", d.pad_token_id)?,
            bos_token_id: r.token("bos_token_id", d.bos_token_id)?,
            eos_token_id: r.token("eos_token_id", d.eos_token_id)?,
        };
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(r.err(
                "num_attention_heads",
                &format!("does not divide hidden_size {}", cfg.hidden_size),
            ));
        }
        Ok(cfg)
    }

    /// Parses a text-only `config.json` (`CLIPTextModel`, e.g. Stable Diffusion's `text_encoder`),
    /// or the `text_config` of a full `CLIPConfig`.
    pub fn from_json_str(json: &str) -> Result<Self> {
        let root = parse_object(json, "<string>")?;
        if root.contains_key("text_config") || root.contains_key("text_config_dict") {
            Self::from_map(&sub_config(&root, "text_config"), "<string>")
        } else {
            Self::from_map(&root, "<string>")
        }
    }

    /// Reads [`ClipTextConfig::from_json_str`] from a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        Self::from_json_str(&text).map_err(|e| relabel(e, path))
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

impl ClipVisionConfig {
    fn from_map(obj: &Map<String, Value>, origin: &str) -> Result<Self> {
        let r = Reader { obj, origin };
        let d = ClipVisionConfig::default();
        let cfg = ClipVisionConfig {
            hidden_size: r.positive("hidden_size", d.hidden_size)?,
            intermediate_size: r.positive("intermediate_size", d.intermediate_size)?,
            num_hidden_layers: r.usize("num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads: r.positive("num_attention_heads", d.num_attention_heads)?,
            num_channels: r.positive("num_channels", d.num_channels)?,
            image_size: r.side("image_size", d.image_size)?,
            patch_size: r.side("patch_size", d.patch_size)?,
            hidden_act: r.act("hidden_act")?,
            layer_norm_eps: r.f64("layer_norm_eps", d.layer_norm_eps)?,
        };
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(r.err(
                "num_attention_heads",
                &format!("does not divide hidden_size {}", cfg.hidden_size),
            ));
        }
        if cfg.patch_size > cfg.image_size {
            return Err(r.err("patch_size", "larger than image_size"));
        }
        Ok(cfg)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

fn parse_object(json: &str, origin: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(EvalError::Config {
            path: origin.into(),
            message: "top level is not a JSON object".into(),
        }),
        Err(e) => Err(EvalError::Config {
            path: origin.into(),
            message: e.to_string(),
        }),
    }
}

fn relabel(e: EvalError, path: &Path) -> EvalError {
    match e {
        EvalError::Config { message, .. } => EvalError::Config {
            path: path.to_path_buf(),
            message,
        },
        other => other,
    }
}

impl ClipConfig {
    /// Parses a `CLIPConfig` JSON document; absent keys take transformers' defaults.
    pub fn from_json_str(json: &str) -> Result<Self> {
        let root = parse_object(json, "<string>")?;
        let r = Reader {
            obj: &root,
            origin: "<string>",
        };
        Ok(ClipConfig {
            text: ClipTextConfig::from_map(&sub_config(&root, "text_config"), "<string>")?,
            vision: ClipVisionConfig::from_map(&sub_config(&root, "vision_config"), "<string>")?,
            projection_dim: r.positive("projection_dim", 512)?,
            logit_scale_init_value: r.f64("logit_scale_init_value", 2.6592)?,
        })
    }

    /// Reads a `config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        Self::from_json_str(&text).map_err(|e| relabel(e, path))
    }
}
