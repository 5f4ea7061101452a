//! # svgen-eval
//!
//! Scores generated SVGs the way the thesis does, natively in Burn (CPU by default, CUDA with the
//! `cuda` feature):
//! - [`ClipModel`]: CLIP text and vision towers with HF key names, loaded from `model.safetensors`;
//! - [`ClipTokenizer`]: CLIP tokenization from HF `tokenizer.json` (77-token context);
//! - [`ClipImageProcessor`]: bit-exact `CLIPImageProcessor` preprocessing (PIL bicubic);
//! - [`AestheticPredictor`]: the LAION improved-aesthetic-predictor head (and the v1 linear head);
//! - [`ClipScorer`]: batched `clip_similarity`, `clip_score` and `aesthetic` over rasters or SVGs;
//! - [`report`]: evaluation reports (CSV, JSON, summary, markdown, contact sheet, histograms) over
//!   any inputs that yield a prompt and an SVG ([`report::PromptSvg`]);
//! - [`weights`]: the safetensors loader (single or sharded, any dtype, read on demand) and writer
//!   shared by every Burn model of svgen; [`hf_config`]: typed reading of HF JSON configs;
//! - [`gpu`]: cubecl's kernel caches, the first-step compilation notice and the parity examples'
//!   `--tf32` switch (GPU backends).
//!
//! [`DefaultBackend`] names the usual backend: `Flex` (CPU), or `Cuda` with the `cuda` feature.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The Burn version svgen-eval is built on (`=0.21.0`), re-exported for callers' backends.
pub use burn;

/// The backend the examples, benches and binaries run on: Burn's CPU backend `Flex` by default,
/// `Cuda` (device 0 by default) when the crate is built with the `cuda` feature.
///
/// Every model type is generic over the backend; this alias only names the usual choice once.
/// svgen-train adds `DefaultTrainBackend`, its `Autodiff` wrapper for training.
///
/// ```
/// use svgen_eval::{ClipScorer, DefaultBackend};
/// fn load(dir: &std::path::Path) -> svgen_eval::Result<ClipScorer<DefaultBackend>> {
///     ClipScorer::from_pretrained(dir, &Default::default())
/// }
/// ```
#[cfg(not(feature = "cuda"))]
pub type DefaultBackend = burn::backend::Flex;
/// The backend the examples, benches and binaries run on: Burn's CPU backend `Flex` by default,
/// `Cuda` (device 0 by default) when the crate is built with the `cuda` feature.
///
/// Every model type is generic over the backend; this alias only names the usual choice once.
/// svgen-train adds `DefaultTrainBackend`, its `Autodiff` wrapper for training.
#[cfg(feature = "cuda")]
pub type DefaultBackend = burn::backend::Cuda;

pub mod aesthetic;
pub mod clip;
pub mod config;
pub mod dtype;
pub mod error;
pub mod gpu;
pub mod hf_config;
pub mod preprocess;
pub mod report;
pub mod scorer;
pub mod tokenizer;
pub mod weights;

pub use aesthetic::{AestheticKind, AestheticPredictor};
pub use clip::{
    ClipModel, ClipOutput, ClipTextModel, ClipTextOutput, ClipVisionModel, ClipVisionOutput,
};
pub use config::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig};
pub use dtype::{check_backend_dtype, parse_dtype_flag, require_f32, DtypeError};
pub use error::{EvalError, Result};
pub use hf_config::{ConfigError, HfConfig};
pub use preprocess::{ClipImageProcessor, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
pub use scorer::{clip_score_from_cosine, ClipScorer, ScoreImage};
pub use tokenizer::{ClipTokenizer, ClipTokens};
pub use weights::{WeightError, Weights};
