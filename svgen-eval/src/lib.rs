//! # svgen-eval
//!
//! Scores generated SVGs the way the thesis does, natively in Burn (CPU by default, CUDA with the
//! `cuda` feature):
//! - [`ClipModel`]: CLIP text and vision towers with HF key names, loaded from `model.safetensors`;
//! - [`ClipTokenizer`]: CLIP tokenization from HF `tokenizer.json` (77-token context);
//! - [`ClipImageProcessor`]: bit-exact `CLIPImageProcessor` preprocessing (PIL bicubic);
//! - [`AestheticPredictor`]: the LAION improved-aesthetic-predictor head (and the v1 linear head);
//! - [`ClipScorer`]: batched `clip_similarity`, `clip_score` and `aesthetic` over rasters or SVGs;
//! - [`report`]: evaluation reports (CSV, JSON, summary, markdown, contact sheet, histograms);
//! - [`weights`]: the safetensors loader (single or sharded, any dtype, read on demand) and writer
//!   shared by every Burn model of svgen; [`hf_config`]: typed reading of HF JSON configs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The Burn version svgen-eval is built on (`=0.21.0`), re-exported for callers' backends.
pub use burn;

pub mod aesthetic;
pub mod clip;
pub mod config;
pub mod error;
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
pub use error::{EvalError, Result};
pub use hf_config::{ConfigError, HfConfig};
pub use preprocess::{ClipImageProcessor, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
pub use scorer::{clip_score_from_cosine, ClipScorer, ScoreImage};
pub use tokenizer::{ClipTokenizer, ClipTokens};
pub use weights::{WeightError, Weights};
