//! Shared Burn plumbing.

pub mod lora;
