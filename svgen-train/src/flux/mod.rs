//! FLUX.1 (schnell and dev) in Burn, loaded from a diffusers folder: the rectified-flow
//! transformer, the flow-matching Euler scheduler, the text-to-image pipeline (CLIP-L pooled
//! output from svgen-eval, T5 v1.1 from [`crate::t5`], the shared 16-channel
//! [`AutoencoderKL`](crate::diffusion::vae::AutoencoderKL)), FLUX as an svgen-data image
//! generator, and the memory prediction for the real model's shapes. Parity with diffusers is
//! tested on tiny random checkpoints written by `tools/fixtures/make_flux.py`.
//!
//! | module | contents |
//! |---|---|
//! | [`config`] | [`FluxTransformerConfig`] (`transformer/config.json`) |
//! | [`layers`] | RoPE, timestep / guidance / pooled-text embedding, adaptive norms, attention |
//! | [`transformer`] | [`FluxTransformer2DModel`]: double- and single-stream blocks |
//! | [`scheduler`] | [`FlowMatchEulerScheduler`] with static or dynamic shifting |
//! | [`pipeline`] | [`FluxPipeline`], 2 × 2 latent packing |
//! | [`generator`] | [`FluxImageGenerator`] for the dataset pipeline |
//! | [`memory`] | predicted peak memory for given shapes and sizes |

pub mod config;
pub mod generator;
pub mod layers;
pub mod memory;
pub mod pipeline;
pub mod scheduler;
pub mod transformer;

pub use config::FluxTransformerConfig;
pub use generator::FluxImageGenerator;
pub use pipeline::{
    pack_latents, unpack_latents, FluxLoadOptions, FluxParams, FluxPipeline, FluxPromptEmbeds,
};
pub use scheduler::{FlowMatchEulerScheduler, FlowMatchSchedulerConfig};
pub use transformer::FluxTransformer2DModel;
