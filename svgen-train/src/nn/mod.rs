//! Burn plumbing shared by the Llama and Stable Diffusion families: tensor helpers, the LoRA
//! linear layer, PEFT adapter I/O and the JSON reader of configuration files.

pub(crate) mod json;
pub mod lora;
pub mod peft;
pub(crate) mod tensor;

pub use lora::{seed_lora_dropout, LoraAdapter, LoraLinear};
pub use peft::{PeftScaling, PEFT_PREFIX};
