//! Stable Diffusion 1.5 in Burn: UNet2DConditionModel, AutoencoderKL, schedulers, the
//! text-to-image pipeline with classifier-free guidance, LoRA training and loading (diffusers,
//! PEFT, kohya), and the prompt × steps × seed × guidance grid search used to pick
//! "SVG-friendly" settings.
//!
//! The text encoder is svgen-eval's CLIP text model.
//!
//! | module | contents |
//! |---|---|
//! | [`config`] | the UNet's and VAE's `config.json` |
//! | [`blocks`] | the building blocks, with diffusers parameter names, and where weights come from |
//! | [`unet`], [`vae`] | the models |
//! | [`scheduler`] | DDIM, Euler, Euler ancestral, DPM-Solver++ and the training forward process |
//! | [`lora`] | the UNet's adapters, LoRA files in every format, text-encoder LoRA |
//! | [`pipeline`], [`tokenizer`] | text-to-image generation, the CLIP tokenizer of a pipeline folder |
//! | [`train`] | LoRA training of the UNet |
//! | [`grid`], [`generator`] | the grid search, Stable Diffusion as an svgen-data image generator |

pub mod blocks;
pub mod config;
pub mod generator;
pub mod grid;
pub mod lora;
pub mod pipeline;
pub mod scheduler;
pub mod tokenizer;
pub mod train;
pub mod unet;
pub mod vae;

pub use config::{AutoencoderKLConfig, UNet2DConditionConfig};
pub use generator::SdImageGenerator;
pub use grid::{GridReport, GridSpec, ImageScorer, TraceTokenScorer};
pub use lora::{LoraFormat, UNetLoraConfig};
pub use pipeline::{GenerateParams, StableDiffusion};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
pub use train::{SdLoraTrainConfig, SdLoraTrainer, SdTrainingModels};
pub use unet::UNet2DConditionModel;
pub use vae::{AutoencoderKL, DiagonalGaussian};
