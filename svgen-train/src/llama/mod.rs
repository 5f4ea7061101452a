//! Llama 2/3/3.1/3.2 in Burn, generic over the backend, with LoRA: HF checkpoints (single or
//! sharded safetensors, f32/bf16/f16) with parity against transformers, PEFT adapters (with
//! trainable rows for added tokens), KV-cache generation of SVG, HF tokenizers and chat
//! templates, the thesis' special tokens and prompt format, and supervised fine-tuning.
//!
//! | module | contents |
//! |---|---|
//! | [`config`] | `config.json` ([`LlamaConfig`](config::LlamaConfig), RoPE scaling) |
//! | `model`, `attention` | the decoder ([`Llama`], [`DecoderLayer`], [`Attention`], [`Mlp`], [`RmsNorm`]) |
//! | `kv_cache` | [`KvCache`] for incremental decoding |
//! | `pretrained` | [`Llama::from_pretrained`], [`Llama::save_pretrained`], [`LoadOptions`] |
//! | [`lora`] | [`LoraConfig`], [`LoraTarget`], adapters and PEFT folders |
//! | [`memory`] | the training-memory model ([`memory::estimate_train_memory`]) |
//! | [`tokenizer`] | [`LlamaTokenizer`](tokenizer::LlamaTokenizer), the thesis' tokens and prompt formats |
//! | [`chat_template`] | HF chat templates (`apply_chat_template`) |
//! | [`trainable_tokens`] | trainable rows for added tokens (PEFT `trainable_token_indices`), resizing |
//! | [`generate`] | sampling with stop tokens, SVG extraction and repair |
//! | [`sft`] | SFT data, loss and trainer |

mod attention;
pub mod chat_template;
pub mod config;
pub mod generate;
mod kv_cache;
pub mod lora;
pub mod memory;
mod model;
mod pretrained;
pub mod sft;
pub mod tokenizer;
pub mod trainable_tokens;

pub use attention::Attention;
pub use kv_cache::{KvCache, DEFAULT_KV_MERGE_INTERVAL};
pub use lora::{LoraConfig, LoraTarget};
pub use model::{DecoderLayer, Llama, Mlp, RmsNorm};
pub use pretrained::LoadOptions;
