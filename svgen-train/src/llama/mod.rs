//! Llama 2/3/3.1/3.2.

pub mod config;
pub mod generate;
pub mod lora;
mod model;
pub mod sft;
pub mod tokenizer;

pub use lora::{LoraConfig, LoraTarget};
pub use model::{
    Attention, DecoderLayer, KvCache, Llama, LoadOptions, Mlp, RmsNorm, DEFAULT_KV_MERGE_INTERVAL,
};
