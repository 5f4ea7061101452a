//! Llama 2/3/3.1/3.2 in Burn, generic over the backend, with LoRA: HF checkpoints (single or
//! sharded safetensors, f32/bf16/f16) with parity against transformers, PEFT adapters, KV-cache
//! generation of SVG, the Llama 3 tokenizer with the thesis' special tokens, and supervised
//! fine-tuning.
//!
//! | module | contents |
//! |---|---|
//! | [`config`] | `config.json` ([`LlamaConfig`](config::LlamaConfig), RoPE scaling) |
//! | `model`, `attention` | the decoder ([`Llama`], [`DecoderLayer`], [`Attention`], [`Mlp`], [`RmsNorm`]) |
//! | `kv_cache` | [`KvCache`] for incremental decoding |
//! | `pretrained` | [`Llama::from_pretrained`], [`Llama::save_pretrained`], [`LoadOptions`] |
//! | [`lora`] | [`LoraConfig`], [`LoraTarget`], adapters and PEFT folders |
//! | [`memory`] | the training-memory model ([`memory::estimate_train_memory`]) |
//! | [`tokenizer`] | [`LlamaTokenizer`](tokenizer::LlamaTokenizer), prompt formats |
//! | [`generate`] | sampling with stop tokens, SVG extraction and repair |
//! | [`sft`] | SFT data, loss and trainer |

mod attention;
pub mod config;
pub mod generate;
mod kv_cache;
pub mod lora;
pub mod memory;
mod model;
mod pretrained;
pub mod sft;
pub mod tokenizer;

pub use attention::Attention;
pub use kv_cache::{KvCache, DEFAULT_KV_MERGE_INTERVAL};
pub use lora::{LoraConfig, LoraTarget};
pub use model::{DecoderLayer, Llama, Mlp, RmsNorm};
pub use pretrained::LoadOptions;
