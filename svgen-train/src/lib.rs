//! # svgen-train
//!
//! Two model families in Burn (generic over the backend), each with LoRA fine-tuning:
//!
//! - **Llama 2/3/3.1/3.2** ([`llama`]): HF checkpoints (single or sharded safetensors,
//!   f32/bf16/f16) with parity against transformers, PEFT adapters, KV-cache generation of SVG,
//!   the Llama 3 tokenizer with the thesis' special tokens, and supervised fine-tuning on
//!   (description, SVG) pairs.
//! - **Stable Diffusion 1.5** ([`sd`]): UNet, VAE, schedulers and the text-to-image pipeline
//!   with parity against diffusers, LoRA files in the diffusers, PEFT and kohya formats, LoRA
//!   training of the UNet, and the grid search for "SVG-friendly" settings.
//!
//! | module | contents |
//! |---|---|
//! | [`llama`] | config, model, KV cache, LoRA, tokenizer, generation, SFT |
//! | [`sd`] | config, blocks, UNet, VAE, schedulers, LoRA, pipeline, training, grid search |
//! | [`nn`] | what both families share: tensor helpers, the LoRA linear layer, PEFT adapter I/O |
//! | [`train`] | what both trainers share: AdamW over adapters, LR schedule, checkpoints, logs |
//! | [`cpu`] | host kernels for `burn::backend::Flex` and their one dispatch (exempt from the lint below) |
//! | [`weights`], [`error`] | safetensors reading and writing, typed errors |
//!
//! `llama` and `sd` do not depend on each other; both build on `nn`, `train` and `cpu`.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod cpu;
pub mod diffusion;
pub mod error;
pub mod flux;
pub mod llama;
pub mod nn;
pub mod sd;
pub mod t5;
pub mod train;
pub mod weights;

pub use error::{Result, TrainError};
pub use llama::config::{LlamaConfig, RopeScaling};
pub use llama::generate::{GenerationConfig, GenerationOutput, Generator, StopReason, SvgReport};
pub use llama::tokenizer::LlamaTokenizer;
pub use llama::{KvCache, Llama, LoadOptions};
pub use llama::{LoraConfig, LoraTarget};
pub use nn::LoraLinear;
pub use weights::{Checkpoint, HostData, HostTensor, StoreDtype};

/// Re-export of the pinned Burn, so users and examples need no direct dependency.
pub use burn;

/// The CPU backend used by tests and examples.
pub type CpuBackend = burn::backend::Flex;
/// The CPU autodiff backend used for training on CPU.
pub type CpuTrainBackend = burn::backend::Autodiff<burn::backend::Flex>;
/// The training backend of the examples: `Autodiff` over svgen-eval's `DefaultBackend` (`Flex`
/// on CPU, `Cuda` with the `cuda` feature).
pub type DefaultTrainBackend = burn::backend::Autodiff<svgen_eval::DefaultBackend>;
