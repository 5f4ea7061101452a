//! The T5 encoder (transformers' `T5EncoderModel`) in Burn, with its SentencePiece tokenizer:
//! FLUX's second text encoder (T5 v1.1 XXL, `text_encoder_2/` and `tokenizer_2/` of a FLUX
//! folder).
//!
//! | module | contents |
//! |---|---|
//! | [`config`] | [`T5Config`] (`config.json`) |
//! | [`model`] | [`T5EncoderModel`]: relative position buckets, gated-GELU feed-forward, RMS norms |
//! | [`tokenizer`] | [`T5Tokenizer`]: `tokenizer.json`, padding and truncation as diffusers |

pub mod config;
pub mod model;
pub mod tokenizer;

pub use config::{T5Config, T5FeedForward};
pub use model::{relative_position_bucket, T5EncoderModel};
pub use tokenizer::{T5Tokenizer, T5Tokens};
