//! `T5Config` of transformers, as far as the encoder uses it (`text_encoder_2/config.json` of a
//! FLUX folder: T5 v1.1 XXL).

use std::path::Path;

use svgen_eval::hf_config::HfConfig;

use crate::error::Result;

/// The feed-forward of a T5 block (`feed_forward_proj`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T5FeedForward {
    /// `"relu"`: `wo(relu(wi(x)))` (the original T5).
    Relu,
    /// `"gated-gelu"`: `wo(gelu_new(wi_0(x)) · wi_1(x))` (T5 v1.1, FLUX's encoder); `gelu_new` is
    /// the tanh approximation.
    GatedGelu,
}

/// The architecture of a T5 encoder (`T5Config`, transformers' defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct T5Config {
    /// `vocab_size` (32128).
    pub vocab_size: usize,
    /// `d_model` (512; 4096 for XXL).
    pub d_model: usize,
    /// `d_kv`: width of one head (64).
    pub d_kv: usize,
    /// `d_ff` (2048; 10240 for XXL).
    pub d_ff: usize,
    /// `num_layers` (6; 24 for XXL).
    pub num_layers: usize,
    /// `num_heads` (8; 64 for XXL).
    pub num_heads: usize,
    /// `relative_attention_num_buckets` (32).
    pub relative_attention_num_buckets: usize,
    /// `relative_attention_max_distance` (128).
    pub relative_attention_max_distance: usize,
    /// `layer_norm_epsilon` (1e-6).
    pub layer_norm_epsilon: f64,
    /// `feed_forward_proj` (`relu`; `gated-gelu` for T5 v1.1).
    pub feed_forward: T5FeedForward,
}

impl Default for T5Config {
    fn default() -> Self {
        Self {
            vocab_size: 32128,
            d_model: 512,
            d_kv: 64,
            d_ff: 2048,
            num_layers: 6,
            num_heads: 8,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward: T5FeedForward::Relu,
        }
    }
}

impl T5Config {
    /// Reads a transformers `config.json`.
    ///
    /// # Errors
    /// I/O and JSON errors; [`crate::TrainError::UnsupportedValue`] naming `feed_forward_proj`
    /// or `architectures` for a T5 variant we do not implement (a decoder, another activation),
    /// [`crate::TrainError::Config`] for a zero size.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_hf(&HfConfig::read(path)?)
    }

    /// Parses a `T5Config` object.
    ///
    /// # Errors
    /// As [`T5Config::from_file`].
    pub fn from_hf(c: &HfConfig) -> Result<Self> {
        if let Some(archs) = c.get::<Vec<String>>("architectures")? {
            const KNOWN: [&str; 3] = ["T5EncoderModel", "T5ForConditionalGeneration", "T5Model"];
            if let Some(a) = archs.iter().find(|a| !KNOWN.contains(&a.as_str())) {
                return Err(c
                    .unsupported(
                        "architectures",
                        format!("`{a}`; supported: T5EncoderModel (or a full T5 checkpoint)"),
                    )
                    .into());
            }
        }
        if let Some(t) = c.get::<String>("model_type")? {
            if t != "t5" {
                return Err(c.unsupported("model_type", "supported: t5").into());
            }
        }
        c.require_false(&["is_decoder"])?;
        let d = Self::default();
        let feed_forward = c.choice(
            "feed_forward_proj",
            T5FeedForward::Relu,
            &[
                ("relu", T5FeedForward::Relu),
                ("gated-gelu", T5FeedForward::GatedGelu),
            ],
        )?;
        if feed_forward == T5FeedForward::GatedGelu {
            // transformers maps "gated-gelu" to gelu_new whatever `dense_act_fn` says.
            if let Some(act) = c.get::<String>("dense_act_fn")? {
                if act != "gelu_new" && act != "gelu" {
                    return Err(c.unsupported("dense_act_fn", "supported: gelu_new").into());
                }
            }
        }
        Ok(Self {
            vocab_size: c.positive("vocab_size", d.vocab_size)?,
            d_model: c.positive("d_model", d.d_model)?,
            d_kv: c.positive("d_kv", d.d_kv)?,
            d_ff: c.positive("d_ff", d.d_ff)?,
            num_layers: c.positive("num_layers", d.num_layers)?,
            num_heads: c.positive("num_heads", d.num_heads)?,
            relative_attention_num_buckets: c.positive(
                "relative_attention_num_buckets",
                d.relative_attention_num_buckets,
            )?,
            relative_attention_max_distance: c.positive(
                "relative_attention_max_distance",
                d.relative_attention_max_distance,
            )?,
            layer_norm_epsilon: c.get_or("layer_norm_epsilon", d.layer_norm_epsilon)?,
            feed_forward,
        })
    }

    /// `num_heads · d_kv`.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// The T5 v1.1 XXL encoder of FLUX (`google/t5-v1_1-xxl`).
    pub fn t5_v1_1_xxl() -> Self {
        Self {
            vocab_size: 32128,
            d_model: 4096,
            d_kv: 64,
            d_ff: 10240,
            num_layers: 24,
            num_heads: 64,
            feed_forward: T5FeedForward::GatedGelu,
            ..Self::default()
        }
    }
}
