//! The configuration of diffusers' `FluxTransformer2DModel` (`transformer/config.json`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diffusion::config::{unsupported, DiffusersConfig};
use crate::error::Result;

/// The architecture of a FLUX transformer; field names and defaults are diffusers' (the
/// FLUX.1 12B model).
///
/// ```
/// use svgen_train::flux::FluxTransformerConfig;
/// let cfg = FluxTransformerConfig::default();
/// assert_eq!(cfg.inner_dim(), 3072);
/// assert_eq!(cfg.latent_channels(), 16);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FluxTransformerConfig {
    /// `patch_size` (1: the pipeline packs 2×2 latent patches itself).
    pub patch_size: usize,
    /// `in_channels` (64 = 16 latent channels × 2 × 2).
    pub in_channels: usize,
    /// `out_channels` (`None` = `in_channels`).
    pub out_channels: Option<usize>,
    /// `num_layers`: double-stream blocks (19).
    pub num_layers: usize,
    /// `num_single_layers`: single-stream blocks (38).
    pub num_single_layers: usize,
    /// `attention_head_dim` (128).
    pub attention_head_dim: usize,
    /// `num_attention_heads` (24).
    pub num_attention_heads: usize,
    /// `joint_attention_dim`: the T5 width (4096).
    pub joint_attention_dim: usize,
    /// `pooled_projection_dim`: the CLIP width (768).
    pub pooled_projection_dim: usize,
    /// `guidance_embeds`: a distilled-guidance embedding (FLUX.1-dev; schnell has none).
    pub guidance_embeds: bool,
    /// `axes_dims_rope`: RoPE channels per position axis (text index, row, column); they sum to
    /// `attention_head_dim`.
    pub axes_dims_rope: Vec<usize>,
}

impl Default for FluxTransformerConfig {
    fn default() -> Self {
        Self {
            patch_size: 1,
            in_channels: 64,
            out_channels: None,
            num_layers: 19,
            num_single_layers: 38,
            attention_head_dim: 128,
            num_attention_heads: 24,
            joint_attention_dim: 4096,
            pooled_projection_dim: 768,
            guidance_embeds: false,
            axes_dims_rope: vec![16, 56, 56],
        }
    }
}

impl DiffusersConfig for FluxTransformerConfig {
    const CLASS_NAMES: &'static [&'static str] = &["FluxTransformer2DModel"];
    const MUST_BE_NULL: &'static [&'static str] = &[];
    const MUST_BE_FALSE: &'static [&'static str] = &[];

    fn check(&self) -> Result<()> {
        self.validate()
    }
}

impl FluxTransformerConfig {
    /// Reads and validates a diffusers `transformer/config.json`.
    ///
    /// # Errors
    /// I/O and JSON errors; [`crate::TrainError::UnsupportedValue`] naming `_class_name` or a
    /// value this crate does not implement.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::read_file(path)
    }

    /// Parses and validates a config from JSON text.
    ///
    /// # Errors
    /// As [`FluxTransformerConfig::from_file`].
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::parse_str(text)
    }

    /// Checks that every option is one this crate implements; the error names the key and value.
    ///
    /// # Errors
    /// [`crate::TrainError::UnsupportedValue`].
    pub fn validate(&self) -> Result<()> {
        if self.patch_size != 1 {
            return Err(unsupported(
                "patch_size",
                format!("{} (FLUX.1 uses 1)", self.patch_size),
            ));
        }
        for (key, v) in [
            ("in_channels", self.in_channels),
            ("attention_head_dim", self.attention_head_dim),
            ("num_attention_heads", self.num_attention_heads),
            ("joint_attention_dim", self.joint_attention_dim),
            ("pooled_projection_dim", self.pooled_projection_dim),
        ] {
            if v == 0 {
                return Err(unsupported(key, 0));
            }
        }
        if self.out_channels == Some(0) {
            return Err(unsupported("out_channels", 0));
        }
        if !self.in_channels.is_multiple_of(4) {
            return Err(unsupported(
                "in_channels",
                format!(
                    "{} (the latent channels packed 2 × 2: a multiple of 4)",
                    self.in_channels
                ),
            ));
        }
        let sum: usize = self.axes_dims_rope.iter().sum();
        if self.axes_dims_rope.len() != 3
            || sum != self.attention_head_dim
            || self.axes_dims_rope.iter().any(|d| d % 2 != 0)
        {
            return Err(unsupported(
                "axes_dims_rope",
                format!(
                    "{:?} (three even sizes summing to attention_head_dim {})",
                    self.axes_dims_rope, self.attention_head_dim
                ),
            ));
        }
        Ok(())
    }

    /// `num_attention_heads × attention_head_dim`.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Output channels (`out_channels`, or `in_channels`).
    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// The VAE latent channels the transformer works on (`in_channels / 4`).
    pub fn latent_channels(&self) -> usize {
        self.in_channels / 4
    }

    /// Number of parameters of a model of this shape.
    pub fn num_params(&self) -> u64 {
        let d = self.inner_dim() as u64;
        let lin = |i: u64, o: u64| i * o + o;
        let hd = self.attention_head_dim as u64;
        let embed = lin(256, d) + lin(d, d) + lin(self.pooled_projection_dim as u64, d) + lin(d, d);
        let guidance = if self.guidance_embeds {
            lin(256, d) + lin(d, d)
        } else {
            0
        };
        let io = lin(self.joint_attention_dim as u64, d)
            + lin(self.in_channels as u64, d)
            + lin(d, 2 * d)
            + lin(d, self.out_channels() as u64);
        let double =
            2 * lin(d, 6 * d) + 8 * lin(d, d) + 4 * hd + 2 * (lin(d, 4 * d) + lin(4 * d, d));
        let single = lin(d, 3 * d) + 3 * lin(d, d) + 2 * hd + lin(d, 4 * d) + lin(5 * d, d);
        embed
            + guidance
            + io
            + double * self.num_layers as u64
            + single * self.num_single_layers as u64
    }
}
