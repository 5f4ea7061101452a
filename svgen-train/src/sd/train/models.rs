//! The frozen models a training run needs (UNet, VAE, CLIP text encoder, tokenizer, scheduler
//! configuration), loaded from a diffusers pipeline folder.

use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use svgen_eval::clip::ClipTextModel;
use svgen_eval::{ClipTextConfig, ClipTokenizer};

use crate::diffusion::folder::require;
use crate::diffusion::tokenizer::load_tokenizer;
use crate::diffusion::vae::AutoencoderKL;
use crate::error::Result;
use crate::sd::scheduler::SchedulerConfig;
use crate::sd::unet::UNet2DConditionModel;

/// The frozen parts of the pipeline the trainer needs.
pub struct SdTrainingModels<B: AutodiffBackend> {
    /// The UNet (adapters are added or loaded by the trainer).
    pub unet: UNet2DConditionModel<B>,
    /// The VAE (encoder used), on the inner backend: no graph is recorded through it.
    pub vae: AutoencoderKL<B::InnerBackend>,
    /// The CLIP text encoder, on the inner backend.
    pub text_encoder: ClipTextModel<B::InnerBackend>,
    /// Its tokenizer.
    pub tokenizer: ClipTokenizer,
    /// `scheduler/scheduler_config.json` (the DDPM forward process and `prediction_type`).
    pub scheduler: SchedulerConfig,
}

impl<B: AutodiffBackend> SdTrainingModels<B> {
    /// Loads `unet/`, `vae/`, `text_encoder/`, `tokenizer/` and `scheduler/` from a diffusers
    /// pipeline folder; a missing sub-folder is a typed error naming it.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        let unet = require(dir, "unet")?;
        let vae = require(dir, "vae")?;
        let text_encoder = require(dir, "text_encoder")?;
        let tokenizer = require(dir, "tokenizer")?;
        let scheduler = require(dir, "scheduler")?;
        let (text_encoder, te_config) = load_text_encoder(&text_encoder, device)?;
        Ok(Self {
            unet: UNet2DConditionModel::from_pretrained(unet, device)?,
            vae: AutoencoderKL::from_pretrained(vae, device)?,
            text_encoder,
            tokenizer: load_tokenizer(tokenizer)?
                .with_context_length(te_config.max_position_embeddings)?,
            scheduler: SchedulerConfig::from_file(scheduler.join("scheduler_config.json"))?,
        })
    }
}

/// Loads a diffusers `text_encoder/` folder (`config.json` + `model.safetensors`) into
/// svgen-eval's CLIP text model, with its configuration; keys with the `text_model.` prefix
/// (transformers ≤ 4) or without it (transformers 5) are both accepted.
pub fn load_text_encoder<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(ClipTextModel<B>, ClipTextConfig)> {
    let cfg = ClipTextConfig::from_file(dir.join("config.json"))?;
    let model = ClipTextModel::from_pretrained_with_config(&cfg, dir, device)?;
    Ok((model, cfg))
}

impl<B: AutodiffBackend> SdTrainingModels<B> {
    /// `2^(len(vae.block_out_channels) − 1)`: pixels per latent.
    pub fn vae_scale_factor(&self) -> usize {
        1 << self.vae.config().block_out_channels.len().saturating_sub(1)
    }
}
