//! Stable Diffusion 1.5 in Burn: UNet2DConditionModel, AutoencoderKL, schedulers, the
//! text-to-image pipeline with classifier-free guidance, LoRA training and loading (diffusers,
//! PEFT, kohya), and the prompt × steps × seed × guidance grid search used to pick
//! "SVG-friendly" settings.
//!
//! The text encoder is svgen-eval's CLIP text model. The VAE, the building blocks, the CLIP
//! tokenizer loading, the grid search and the generator plumbing are shared with FLUX in
//! [`crate::diffusion`] and re-exported here under their earlier paths.
//!
//! | module | contents |
//! |---|---|
//! | [`config`] | the UNet's (and, re-exported, the VAE's) `config.json` |
//! | [`blocks`] | (re-exported) the building blocks, with diffusers parameter names |
//! | [`unet`], [`vae`] | the models (the VAE re-exported) |
//! | [`scheduler`] | DDIM, Euler, Euler ancestral, DPM-Solver++ and the training forward process |
//! | [`lora`] | the UNet's adapters, LoRA files in every format, text-encoder LoRA |
//! | [`pipeline`], [`tokenizer`] | text-to-image generation, (re-exported) the CLIP tokenizer |
//! | [`train`] | LoRA training of the UNet |
//! | [`grid`], [`generator`] | (re-exported) the grid search; Stable Diffusion as an svgen-data image generator |

pub mod config;
pub mod generator;
pub mod lora;
pub mod pipeline;
pub mod scheduler;
pub mod train;
pub mod unet;

pub use crate::diffusion::{blocks, grid, tokenizer, vae};

pub use config::{AutoencoderKLConfig, UNet2DConditionConfig};
pub use generator::SdImageGenerator;
pub use grid::{GridReport, GridSpec, ImageScorer, TraceTokenScorer};
pub use lora::{LoraFormat, UNetLoraConfig};
pub use pipeline::{GenerateParams, StableDiffusion};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
pub use train::{SdLoraTrainConfig, SdLoraTrainer, SdTrainingModels};
pub use unet::UNet2DConditionModel;
pub use vae::{AutoencoderKL, DiagonalGaussian};
