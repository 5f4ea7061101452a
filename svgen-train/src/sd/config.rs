//! Configurations of the Stable Diffusion UNet (and, re-exported, the shared VAE), read from
//! diffusers `config.json` files.
//!
//! Field names and defaults are diffusers' (`UNet2DConditionModel`, `AutoencoderKL`). Options that
//! change the architecture in ways this crate does not implement (class / addition embeddings,
//! time-conditioned projections, `scale_shift` resnets, gated attention, ...) are rejected at load
//! time with [`TrainError::UnsupportedValue`] naming the key and the value found, instead of being
//! silently ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diffusion::config::{unsupported, DiffusersConfig};
use crate::error::{Result, TrainError};

pub use crate::diffusion::vae::AutoencoderKLConfig;

/// A diffusers config value that is either one number for every block or one per block
/// (e.g. `attention_head_dim: 8` in SD1.5, `[5, 10, 20, 20]` in SD2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    /// The same value for every block.
    One(usize),
    /// One value per down block (in down-block order).
    Many(Vec<usize>),
}

impl PerBlock {
    /// The value for down block `i` of `n`, or a typed error naming `key` when a list has the
    /// wrong length.
    pub fn resolve(&self, key: &str, n: usize) -> Result<Vec<usize>> {
        match self {
            Self::One(v) => Ok(vec![*v; n]),
            Self::Many(v) if v.len() == n => Ok(v.clone()),
            Self::Many(v) => Err(TrainError::UnsupportedValue {
                key: key.into(),
                value: format!("{v:?} (expected one value or {n} values, one per block)"),
            }),
        }
    }
}

/// `only_cross_attention`: a flag for every block or one per block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FlagPerBlock {
    /// The same flag for every block.
    One(bool),
    /// One flag per down block.
    Many(Vec<bool>),
}

/// The architecture of a diffusers `UNet2DConditionModel` (`unet/config.json`).
///
/// ```
/// use svgen_train::sd::config::UNet2DConditionConfig;
/// let cfg = UNet2DConditionConfig::from_json_str(r#"{
///     "block_out_channels": [320, 640, 1280, 1280], "attention_head_dim": 8,
///     "cross_attention_dim": 768, "sample_size": 64}"#).unwrap();
/// // SD1.5 quirk: `attention_head_dim` is the number of heads when `num_attention_heads` is null.
/// assert_eq!(cfg.heads_per_block().unwrap(), vec![8, 8, 8, 8]);
/// assert_eq!(cfg.time_embed_dim(), 1280);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    /// `sample_size`: the latent side the model was trained at (64 for SD1.5 = 512 px).
    pub sample_size: Option<usize>,
    /// `in_channels` (4 latent channels).
    pub in_channels: usize,
    /// `out_channels`.
    pub out_channels: usize,
    /// `center_input_sample`: maps the input from `[0, 1]` to `[-1, 1]` first.
    pub center_input_sample: bool,
    /// `flip_sin_to_cos`: the sinusoidal timestep embedding is `[cos, sin]` instead of `[sin, cos]`.
    pub flip_sin_to_cos: bool,
    /// `freq_shift`: the `downscale_freq_shift` of the timestep embedding.
    pub freq_shift: f64,
    /// `down_block_types` (`CrossAttnDownBlock2D`, `DownBlock2D`).
    pub down_block_types: Vec<String>,
    /// `mid_block_type` (`UNetMidBlock2DCrossAttn`, or null for none).
    pub mid_block_type: Option<String>,
    /// `up_block_types` (`UpBlock2D`, `CrossAttnUpBlock2D`).
    pub up_block_types: Vec<String>,
    /// `only_cross_attention`.
    pub only_cross_attention: FlagPerBlock,
    /// `block_out_channels`.
    pub block_out_channels: Vec<usize>,
    /// `layers_per_block` (resnets per down block; up blocks have one more).
    pub layers_per_block: PerBlock,
    /// `downsample_padding`.
    pub downsample_padding: usize,
    /// `mid_block_scale_factor` (the mid block's resnet output scale).
    pub mid_block_scale_factor: f64,
    /// `dropout` (inactive at inference).
    pub dropout: f64,
    /// `act_fn` (`silu`).
    pub act_fn: String,
    /// `norm_num_groups` (GroupNorm groups).
    pub norm_num_groups: Option<usize>,
    /// `norm_eps`.
    pub norm_eps: f64,
    /// `cross_attention_dim` (the text encoder's hidden size).
    pub cross_attention_dim: PerBlock,
    /// `transformer_layers_per_block`.
    pub transformer_layers_per_block: PerBlock,
    /// `attention_head_dim`. diffusers quirk: when `num_attention_heads` is null this is used as
    /// the number of heads (SD1.5: 8 heads at every level).
    pub attention_head_dim: PerBlock,
    /// `num_attention_heads`.
    pub num_attention_heads: Option<PerBlock>,
    /// `use_linear_projection`: `proj_in`/`proj_out` are linears (SD2) instead of 1×1 convs (SD1.5).
    pub use_linear_projection: bool,
    /// `upcast_attention` (no effect in f32).
    pub upcast_attention: bool,
    /// `resnet_time_scale_shift` (only `default` is supported).
    pub resnet_time_scale_shift: String,
    /// `time_embedding_type` (only `positional` is supported).
    pub time_embedding_type: String,
    /// `conv_in_kernel`.
    pub conv_in_kernel: usize,
    /// `conv_out_kernel`.
    pub conv_out_kernel: usize,
    /// `attention_type` (only `default` is supported).
    pub attention_type: String,
    /// `resnet_out_scale_factor` (the resnets' output scale in the down/up blocks).
    pub resnet_out_scale_factor: f64,
}

impl Default for UNet2DConditionConfig {
    /// diffusers' `UNet2DConditionModel()` defaults (the SD1.x architecture).
    fn default() -> Self {
        Self {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: [
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            only_cross_attention: FlagPerBlock::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            dropout: 0.0,
            act_fn: "silu".into(),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(1280),
            transformer_layers_per_block: PerBlock::One(1),
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            use_linear_projection: false,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            time_embedding_type: "positional".into(),
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            attention_type: "default".into(),
            resnet_out_scale_factor: 1.0,
        }
    }
}

/// Keys that must be null / false / absent because the architecture they select is not
/// implemented (SDXL add-embeddings, class conditioning, LCM time conditioning, ...).
const UNET_MUST_BE_NULL: &[&str] = &[
    "class_embed_type",
    "addition_embed_type",
    "num_class_embeds",
    "time_cond_proj_dim",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "time_embedding_dim",
    "time_embedding_act_fn",
    "timestep_post_act",
    "cross_attention_norm",
    "reverse_transformer_layers_per_block",
    "mid_block_only_cross_attention",
    "projection_class_embeddings_input_dim",
];
const UNET_MUST_BE_FALSE: &[&str] = &[
    "dual_cross_attention",
    "class_embeddings_concat",
    "resnet_skip_time_act",
];

impl DiffusersConfig for UNet2DConditionConfig {
    const CLASS_NAMES: &'static [&'static str] = &["UNet2DConditionModel"];
    const MUST_BE_NULL: &'static [&'static str] = UNET_MUST_BE_NULL;
    const MUST_BE_FALSE: &'static [&'static str] = UNET_MUST_BE_FALSE;

    fn check(&self) -> Result<()> {
        self.validate()
    }
}

impl UNet2DConditionConfig {
    /// Reads and validates a diffusers `unet/config.json`.
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
        if self.down_block_types.len() != n {
            return Err(unsupported(
                "down_block_types",
                format!(
                    "{:?} ({} blocks for {n} channels)",
                    self.down_block_types,
                    self.down_block_types.len()
                ),
            ));
        }
        if self.up_block_types.len() != n {
            return Err(unsupported(
                "up_block_types",
                format!(
                    "{:?} ({} blocks for {n} channels)",
                    self.up_block_types,
                    self.up_block_types.len()
                ),
            ));
        }
        for t in &self.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return Err(unsupported("down_block_types", format!("\"{t}\"")));
            }
        }
        for t in &self.up_block_types {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return Err(unsupported("up_block_types", format!("\"{t}\"")));
            }
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2DCrossAttn") => {}
            Some(t) => return Err(unsupported("mid_block_type", format!("\"{t}\""))),
        }
        match &self.only_cross_attention {
            FlagPerBlock::One(false) => {}
            FlagPerBlock::Many(v) if v.iter().all(|f| !f) => {}
            other => return Err(unsupported("only_cross_attention", format!("{other:?}"))),
        }
        if self.act_fn != "silu" {
            return Err(unsupported("act_fn", format!("\"{}\"", self.act_fn)));
        }
        if self.resnet_time_scale_shift != "default" {
            return Err(unsupported(
                "resnet_time_scale_shift",
                format!("\"{}\"", self.resnet_time_scale_shift),
            ));
        }
        if self.time_embedding_type != "positional" {
            return Err(unsupported(
                "time_embedding_type",
                format!("\"{}\"", self.time_embedding_type),
            ));
        }
        if self.attention_type != "default" {
            return Err(unsupported(
                "attention_type",
                format!("\"{}\"", self.attention_type),
            ));
        }
        for (key, k) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if k % 2 == 0 {
                return Err(unsupported(key, k));
            }
        }
        let groups = self.groups()?;
        for &c in &self.block_out_channels {
            if c == 0 || c % groups != 0 {
                return Err(unsupported(
                    "norm_num_groups",
                    format!("{groups} (does not divide block_out_channels {c})"),
                ));
            }
        }
        let heads = self.heads_per_block()?;
        for (&c, &h) in self.block_out_channels.iter().zip(&heads) {
            if h == 0 || c % h != 0 {
                let key = if self.num_attention_heads.is_some() {
                    "num_attention_heads"
                } else {
                    "attention_head_dim"
                };
                return Err(unsupported(key, format!("{h} heads for {c} channels")));
            }
        }
        self.layers_per_block.resolve("layers_per_block", n)?;
        self.cross_attention_dim.resolve("cross_attention_dim", n)?;
        self.transformer_layers_per_block
            .resolve("transformer_layers_per_block", n)?;
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(unsupported("in_channels", self.in_channels));
        }
        Ok(())
    }

    /// GroupNorm groups (`norm_num_groups`; null, which disables the output norm in diffusers,
    /// is not supported).
    pub fn groups(&self) -> Result<usize> {
        match self.norm_num_groups {
            Some(g) if g > 0 => Ok(g),
            other => Err(unsupported("norm_num_groups", format!("{other:?}"))),
        }
    }

    /// Attention heads per down block: `num_attention_heads`, or `attention_head_dim` when it is
    /// null (the diffusers/SD1.5 naming quirk).
    pub fn heads_per_block(&self) -> Result<Vec<usize>> {
        let n = self.block_out_channels.len();
        match &self.num_attention_heads {
            Some(h) => h.resolve("num_attention_heads", n),
            None => self.attention_head_dim.resolve("attention_head_dim", n),
        }
    }

    /// The timestep embedding width (`4 × block_out_channels[0]`).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels.first().copied().unwrap_or(0) * 4
    }

    /// `2^(number of downsamplers)`: latent sides that are multiples of this need no size fix-up
    /// in the up path.
    pub fn upsampling_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }
}
