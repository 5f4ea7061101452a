//! Safetensors reading and writing: svgen-eval's shared loader ([`svgen_eval::weights`]), which
//! every model of this crate uses, re-exported with one convenience for small files.
//!
//! Checkpoint folders open with [`Weights::open`] (`model.safetensors` or its shard index,
//! [`TRANSFORMERS_STEM`]; diffusers' [`DIFFUSERS_STEM`]; PEFT's [`PEFT_STEM`]); tensors are read
//! on demand in their stored dtype, with typed missing / unused / shape errors.

use std::collections::BTreeMap;
use std::path::Path;

pub use svgen_eval::weights::{
    safetensors_bytes, transpose, write_safetensors, Dtype, HostData, HostTensor, StoreDtype,
    TransposeOn, WeightError, Weights, DIFFUSERS_STEM, PEFT_STEM, TRANSFORMERS_STEM,
};

use crate::error::Result;

/// Reads every tensor of one safetensors file (or of the shards a `.index.json` lists), each in
/// its stored dtype; for small files (adapters, optimiser state, reference outputs).
///
/// # Errors
/// [`crate::TrainError::Io`], [`crate::TrainError::Safetensors`] for a corrupt file,
/// [`crate::TrainError::UnsupportedDtype`].
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, HostTensor>> {
    Ok(Weights::open_file(path)?.read_all()?)
}
