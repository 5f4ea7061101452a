//! What the diffusion families ([`crate::sd`] and [`crate::flux`]) share, so that neither imports
//! the other: the diffusers building blocks and the `AutoencoderKL` VAE (Stable Diffusion's 4
//! latent channels and FLUX's 16 are the same class), reading diffusers configs and pipeline
//! folders, the CLIP tokenizer of a pipeline folder, seeded noise, image conversion, sampler
//! names, the grid search and the in-process dataset generators.
//!
//! | module | contents |
//! |---|---|
//! | [`blocks`] | convolutions, norms, resnets, attention, transformer blocks, with diffusers names |
//! | [`vae`] | [`AutoencoderKL`](vae::AutoencoderKL) and its config |
//! | `config`, `folder` | diffusers `config.json` reading; `model_index.json` and component folders |
//! | [`tokenizer`] | the CLIP tokenizer of a pipeline's `tokenizer/` folder |
//! | [`noise`], [`image`] | seeded Gaussian noise; `[B, 3, H, W]` floats to RGB images |
//! | `request` | size, batch, steps and latents checks every pipeline makes first |
//! | [`scheduler_kind`] | [`SchedulerKind`](scheduler_kind::SchedulerKind): every pipeline's sampler names |
//! | [`grid`] | the grid search over prompts × steps × seeds × guidance × samplers |
//! | [`generator`] | batched in-process generators for svgen-data's dataset pipeline |

pub mod blocks;
pub(crate) mod config;
pub(crate) mod folder;
pub mod generator;
pub mod grid;
pub mod image;
pub mod noise;
pub(crate) mod request;
pub mod scheduler_kind;
pub mod tokenizer;
pub mod vae;

pub use generator::{BatchedGenerator, GenerationStats, InProcessOptions, PromptItem};
pub use grid::{grid_search, GridModel, GridReport, GridSpec, ImageScorer, TraceTokenScorer};
pub use scheduler_kind::SchedulerKind;
pub use vae::{AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian};
