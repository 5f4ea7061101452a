//! The configuration of diffusers' `AutoencoderKL` (`vae/config.json`): Stable Diffusion's
//! 4-channel VAE and FLUX's 16-channel one (with `shift_factor`) are the same class.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diffusion::config::{unsupported, DiffusersConfig};
use crate::error::Result;

/// The architecture of a diffusers `AutoencoderKL` (`vae/config.json`).
///
/// ```
/// use svgen_train::diffusion::vae::AutoencoderKLConfig;
/// let cfg = AutoencoderKLConfig::from_json_str(r#"{"block_out_channels": [128, 256, 512, 512],
///     "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
///     "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
///     "layers_per_block": 2, "sample_size": 512}"#).unwrap();
/// assert_eq!(cfg.downscale_factor(), 8);
/// assert_eq!(cfg.scaling_factor, 0.18215);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    /// `in_channels` (3, RGB).
    pub in_channels: usize,
    /// `out_channels` (3, RGB).
    pub out_channels: usize,
    /// `down_block_types` (`DownEncoderBlock2D`).
    pub down_block_types: Vec<String>,
    /// `up_block_types` (`UpDecoderBlock2D`).
    pub up_block_types: Vec<String>,
    /// `block_out_channels`.
    pub block_out_channels: Vec<usize>,
    /// `layers_per_block` (resnets per encoder block; decoder blocks have one more).
    pub layers_per_block: usize,
    /// `act_fn` (`silu`).
    pub act_fn: String,
    /// `latent_channels` (4).
    pub latent_channels: usize,
    /// `norm_num_groups`.
    pub norm_num_groups: usize,
    /// `sample_size` (image side the VAE was trained at).
    pub sample_size: usize,
    /// `scaling_factor`: latents are multiplied by it after encoding (0.18215 for SD1.x).
    pub scaling_factor: f64,
    /// `shift_factor` (SD3/Flux; null for SD1.x).
    pub shift_factor: Option<f64>,
    /// `force_upcast` (no effect in f32).
    pub force_upcast: bool,
    /// `use_quant_conv`.
    pub use_quant_conv: bool,
    /// `use_post_quant_conv`.
    pub use_post_quant_conv: bool,
    /// `mid_block_add_attention`.
    pub mid_block_add_attention: bool,
}

impl Default for AutoencoderKLConfig {
    /// diffusers' `AutoencoderKL()` defaults.
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl DiffusersConfig for AutoencoderKLConfig {
    const CLASS_NAMES: &'static [&'static str] = &["AutoencoderKL"];
    const MUST_BE_NULL: &'static [&'static str] = &["latents_mean", "latents_std"];
    const MUST_BE_FALSE: &'static [&'static str] = &[];

    fn check(&self) -> Result<()> {
        self.validate()
    }
}

impl AutoencoderKLConfig {
    /// Reads and validates a diffusers `vae/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::read_file(path)
    }

    /// Parses and validates a config from JSON text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::parse_str(text)
    }

    /// Checks that every option is one this crate implements; the error names the key and value.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(unsupported("block_out_channels", "[] (empty)"));
        }
        if self.down_block_types.len() != n
            || self
                .down_block_types
                .iter()
                .any(|t| t != "DownEncoderBlock2D")
        {
            return Err(unsupported(
                "down_block_types",
                format!("{:?}", self.down_block_types),
            ));
        }
        if self.up_block_types.len() != n
            || self.up_block_types.iter().any(|t| t != "UpDecoderBlock2D")
        {
            return Err(unsupported(
                "up_block_types",
                format!("{:?}", self.up_block_types),
            ));
        }
        if self.act_fn != "silu" {
            return Err(unsupported("act_fn", format!("\"{}\"", self.act_fn)));
        }
        let g = self.norm_num_groups;
        if g == 0
            || self
                .block_out_channels
                .iter()
                .any(|&c| c == 0 || c % g != 0)
        {
            return Err(unsupported(
                "norm_num_groups",
                format!("{g} (must divide every block_out_channels entry)"),
            ));
        }
        if self.latent_channels == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return Err(unsupported("latent_channels", self.latent_channels));
        }
        if self.layers_per_block == 0 {
            return Err(unsupported("layers_per_block", 0));
        }
        Ok(())
    }

    /// Image side / latent side (`2^(blocks - 1)`, 8 for SD1.x).
    pub fn downscale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }
}
