//! Llama configuration read from a Hugging Face `config.json`.

use std::path::Path;

use serde_json::Value;

use crate::error::{Result, TrainError};
use crate::nn::json::read_json;

/// How RoPE frequencies are derived from `rope_theta`.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (Llama 2, Llama 3.0).
    Default,
    /// Positions divided by `factor` (`rope_type: "linear"`).
    Linear {
        /// The position interpolation factor.
        factor: f64,
    },
    /// Llama 3.1/3.2 frequency-dependent scaling (`rope_type: "llama3"`).
    Llama3 {
        /// `factor` (8 in Llama 3.1).
        factor: f64,
        /// `low_freq_factor` (1 in Llama 3.1).
        low_freq_factor: f64,
        /// `high_freq_factor` (4 in Llama 3.1).
        high_freq_factor: f64,
        /// `original_max_position_embeddings` (8192 in Llama 3.1).
        original_max_position_embeddings: f64,
    },
}

/// The architecture hyper-parameters of a Llama 2/3/3.1/3.2 model, with HF names.
///
/// ```
/// let json = r#"{"vocab_size": 128, "hidden_size": 64, "intermediate_size": 128,
///   "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
///   "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": true,
///   "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
///                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#;
/// let cfg = svgen_train::LlamaConfig::from_json_str(json).unwrap();
/// assert_eq!(cfg.head_dim, 16);
/// assert_eq!(cfg.rope_theta, 500000.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `intermediate_size` (SwiGLU width).
    pub intermediate_size: usize,
    /// `num_hidden_layers`.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`.
    pub num_attention_heads: usize,
    /// `num_key_value_heads` (GQA; equals the head count for MHA).
    pub num_key_value_heads: usize,
    /// `head_dim` (defaults to `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// `rms_norm_eps`.
    pub rms_norm_eps: f64,
    /// `rope_theta` (top level, or inside `rope_parameters`).
    pub rope_theta: f64,
    /// `rope_scaling` / `rope_parameters` type.
    pub rope_scaling: RopeScaling,
    /// `max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// `tie_word_embeddings`: `lm_head` shares `model.embed_tokens.weight`.
    pub tie_word_embeddings: bool,
    /// `bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` (a list in Llama 3 Instruct).
    pub eos_token_ids: Vec<u32>,
    /// `pad_token_id`.
    pub pad_token_id: Option<u32>,
}

fn get_usize(v: &Value, key: &str) -> Result<Option<usize>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| TrainError::Config(format!("`{key}` must be a non-negative integer"))),
    }
}

fn get_f64(v: &Value, key: &str) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| TrainError::Config(format!("`{key}` must be a number"))),
    }
}

fn require_usize(v: &Value, key: &str) -> Result<usize> {
    get_usize(v, key)?.ok_or_else(|| TrainError::Config(format!("missing `{key}`")))
}

fn token_ids(v: &Value, key: &str) -> Result<Vec<u32>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_u64()
                    .map(|n| n as u32)
                    .ok_or_else(|| TrainError::Config(format!("`{key}` must hold token ids")))
            })
            .collect(),
        Some(x) => x
            .as_u64()
            .map(|n| vec![n as u32])
            .ok_or_else(|| TrainError::Config(format!("`{key}` must be a token id"))),
    }
}

impl LlamaConfig {
    /// Reads `config.json` from a model folder (or the file itself).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("config.json");
        }
        Self::from_json(&read_json(&path)?)
    }

    /// Parses the text of a `config.json`.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| TrainError::json("config.json", e))?;
        Self::from_json(&value)
    }

    /// Parses a `config.json` value, accepting both the classic form (`rope_theta` at the top
    /// level plus `rope_scaling`) and the transformers 5 form (`rope_parameters`).
    pub fn from_json(v: &Value) -> Result<Self> {
        if let Some(mt) = v.get("model_type").and_then(Value::as_str) {
            if mt != "llama" {
                return Err(TrainError::Config(format!(
                    "model_type `{mt}` is not supported (expected `llama`)"
                )));
            }
        }
        for flag in ["attention_bias", "mlp_bias"] {
            if v.get(flag).and_then(Value::as_bool) == Some(true) {
                return Err(TrainError::Config(format!(
                    "`{flag}: true` is not supported"
                )));
            }
        }
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(TrainError::Config(format!(
                    "hidden_act `{act}` is not supported (Llama uses `silu`)"
                )));
            }
        }
        let hidden_size = require_usize(v, "hidden_size")?;
        let num_attention_heads = require_usize(v, "num_attention_heads")?;
        let num_key_value_heads =
            get_usize(v, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_attention_heads == 0 || num_key_value_heads == 0 {
            return Err(TrainError::Config("head counts must be positive".into()));
        }
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(TrainError::Config(format!(
                "num_attention_heads ({num_attention_heads}) is not a multiple of \
                 num_key_value_heads ({num_key_value_heads})"
            )));
        }
        let head_dim = get_usize(v, "head_dim")?.unwrap_or(hidden_size / num_attention_heads);
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(TrainError::Config(format!(
                "head_dim ({head_dim}) must be even and positive"
            )));
        }

        // rope_parameters (transformers >= 5) wins; else rope_scaling + top-level rope_theta.
        let params = match v.get("rope_parameters") {
            Some(Value::Null) | None => v.get("rope_scaling").filter(|x| !x.is_null()),
            Some(p) => Some(p),
        };
        let rope_theta = params
            .map(|p| get_f64(p, "rope_theta"))
            .transpose()?
            .flatten()
            .or(get_f64(v, "rope_theta")?)
            .unwrap_or(10000.0);
        let rope_scaling = match params {
            None => RopeScaling::Default,
            Some(p) => {
                let kind = p
                    .get("rope_type")
                    .or_else(|| p.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let need = |k: &str| {
                    get_f64(p, k)?
                        .ok_or_else(|| TrainError::Config(format!("rope scaling needs `{k}`")))
                };
                match kind {
                    "default" => RopeScaling::Default,
                    "linear" => RopeScaling::Linear {
                        factor: need("factor")?,
                    },
                    "llama3" => {
                        let s = RopeScaling::Llama3 {
                            factor: need("factor")?,
                            low_freq_factor: need("low_freq_factor")?,
                            high_freq_factor: need("high_freq_factor")?,
                            original_max_position_embeddings: need(
                                "original_max_position_embeddings",
                            )?,
                        };
                        if let RopeScaling::Llama3 {
                            low_freq_factor,
                            high_freq_factor,
                            ..
                        } = s
                        {
                            if high_freq_factor <= low_freq_factor {
                                return Err(TrainError::Config(
                                    "llama3 rope scaling needs high_freq_factor > low_freq_factor"
                                        .into(),
                                ));
                            }
                        }
                        s
                    }
                    other => {
                        return Err(TrainError::Config(format!(
                            "rope_type `{other}` is not supported"
                        )))
                    }
                }
            }
        };
        let cfg = Self {
            vocab_size: require_usize(v, "vocab_size")?,
            hidden_size,
            intermediate_size: require_usize(v, "intermediate_size")?,
            num_hidden_layers: require_usize(v, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: get_f64(v, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: get_usize(v, "max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            bos_token_id: token_ids(v, "bos_token_id")?.first().copied(),
            eos_token_ids: token_ids(v, "eos_token_id")?,
            pad_token_id: token_ids(v, "pad_token_id")?.first().copied(),
        };
        if cfg.vocab_size == 0 || cfg.hidden_size == 0 || cfg.intermediate_size == 0 {
            return Err(TrainError::Config("sizes must be positive".into()));
        }
        Ok(cfg)
    }

    /// The position range: how many positions a sequence may use (its largest position id
    /// plus one). `max_position_embeddings`, unless RoPE scaling covers more:
    /// - `llama3`: `factor × original_max_position_embeddings` when larger (Llama 3.1's config
    ///   already says 131,072 for both);
    /// - `linear`: `factor × max_position_embeddings` (position interpolation stretches the
    ///   trained range by `factor`; configs of this kind keep the pre-scaling length).
    ///
    /// ```
    /// let json = r#"{"vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
    ///   "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64,
    ///   "rope_scaling": {"rope_type": "linear", "factor": 4.0}}"#;
    /// let cfg = svgen_train::LlamaConfig::from_json_str(json).unwrap();
    /// assert_eq!(cfg.max_positions(), 256);
    /// ```
    pub fn max_positions(&self) -> usize {
        let own = self.max_position_embeddings;
        let scaled = match self.rope_scaling {
            RopeScaling::Default => own as f64,
            RopeScaling::Linear { factor } => factor * own as f64,
            RopeScaling::Llama3 {
                factor,
                original_max_position_embeddings,
                ..
            } => factor * original_max_position_embeddings,
        };
        if scaled.is_finite() && scaled > own as f64 {
            scaled.min(usize::MAX as f64 / 2.0) as usize
        } else {
            own
        }
    }

    /// The RoPE inverse frequencies (`head_dim / 2` values), scaled as the config says.
    pub fn inv_freq(&self) -> Vec<f64> {
        let dim = self.head_dim as f64;
        let base: Vec<f64> = (0..self.head_dim / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / dim))
            .collect();
        match self.rope_scaling {
            RopeScaling::Default => base,
            RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_freq_wavelen = old / low_freq_factor;
                let high_freq_wavelen = old / high_freq_factor;
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_freq_wavelen {
                            f
                        } else if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// Writes the config in the transformers 5 form (used when saving merged checkpoints).
    pub fn to_json(&self) -> Value {
        let mut rope = serde_json::Map::new();
        rope.insert("rope_theta".into(), self.rope_theta.into());
        match self.rope_scaling {
            RopeScaling::Default => {
                rope.insert("rope_type".into(), "default".into());
            }
            RopeScaling::Linear { factor } => {
                rope.insert("rope_type".into(), "linear".into());
                rope.insert("factor".into(), factor.into());
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                rope.insert("rope_type".into(), "llama3".into());
                rope.insert("factor".into(), factor.into());
                rope.insert("low_freq_factor".into(), low_freq_factor.into());
                rope.insert("high_freq_factor".into(), high_freq_factor.into());
                rope.insert(
                    "original_max_position_embeddings".into(),
                    (original_max_position_embeddings as u64).into(),
                );
            }
        }
        let eos: Value = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => (*one).into(),
            many => many.to_vec().into(),
        };
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": Value::Object(rope),
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": false,
            "mlp_bias": false,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "pad_token_id": self.pad_token_id,
            "dtype": "float32",
        })
    }
}
