//! # svgen-train
//!
//! Llama 2/3/3.1/3.2 in Burn (generic over the backend) with LoRA: loading HF checkpoints
//! (single or sharded safetensors, f32/bf16/f16), parity with transformers, PEFT adapters,
//! KV-cache generation of SVG and the Llama 3 tokenizer with the thesis' special tokens.
#![warn(missing_docs)]

pub mod config;
pub mod cpu;
mod decode_cpu;
pub mod error;
pub mod generate;
pub mod llama;
pub mod lora;
pub mod nn;
pub mod plot;
pub mod sd;
pub mod sft;
pub mod tokenizer;
pub mod trainer;
pub mod weights;

pub use config::{LlamaConfig, RopeScaling};
pub use error::{Result, TrainError};
pub use generate::{GenerationConfig, GenerationOutput, Generator, StopReason, SvgReport};
pub use llama::{KvCache, Llama, LoadOptions};
pub use lora::{LoraConfig, LoraLinear, LoraTarget};
pub use tokenizer::LlamaTokenizer;
pub use weights::{Checkpoint, HostData, HostTensor, StoreDtype};

/// Re-export of the pinned Burn, so users and examples need no direct dependency.
pub use burn;

/// The CPU backend used by tests and examples.
pub type CpuBackend = burn::backend::Flex;
/// The CPU autodiff backend used for training on CPU.
pub type CpuTrainBackend = burn::backend::Autodiff<burn::backend::Flex>;
