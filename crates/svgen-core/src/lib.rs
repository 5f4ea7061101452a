//! # svgen-core
//!
//! The base of svgen: safe SVG parsing and rendering, exact token counting, token-aware SVG
//! writing, raster comparison metrics and shared error types.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod svg;

// --- svgen-core modules owned by the compaction work (compact, budget, chunk) ---
pub mod budget;
pub mod chunk;
pub mod compact;
// --- end ---

pub use error::SvgError;
pub use svg::Svg;
