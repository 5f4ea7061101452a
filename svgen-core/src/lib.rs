//! # svgen-core
//!
//! The base of svgen: safe SVG parsing and rendering, exact token counting, token-aware SVG
//! writing, raster comparison metrics and shared error types.
//!
//! * [`Svg::parse`] / [`Svg::parse_with`]: parse untrusted SVG bytes with bounded time and memory
//!   ([`ParseOptions`] limits, typed [`SvgError`]s); no file or network access, `<text>` shaped
//!   with bundled DejaVu fonts.
//! * [`render()`]: deterministic resvg rendering to an [`image::RgbaImage`] ([`RenderOptions`]:
//!   size, fit, background; white by default).
//! * [`TokenCounter`]: exact counts with GPT-4's [`Cl100k`] or any Hugging Face tokenizer
//!   ([`HfTokenizer`]); batches run on all cores.
//! * [`metrics`]: ink-mask IoU, mean absolute error and SSIM between renderings
//!   ([`compare_svgs`]).
//! * [`compare`]: NaN-safe, length-checked numeric comparison for parity checks (absolute,
//!   relative and RMS-relative tolerances).
//!
//! ## Quickstart
//!
//! ```
//! use svgen_core::{compare_svgs, render, Cl100k, RenderOptions, Svg, TokenCounter};
//!
//! let text = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
//!   <circle cx="12" cy="12" r="9" fill="none" stroke="black" stroke-width="2"/>
//! </svg>"#;
//! let svg = Svg::parse(text.as_bytes())?;
//!
//! // How many GPT-4 tokens is this file?
//! let tokens = Cl100k::new().count(text);
//! assert!(tokens > 20);
//!
//! // Render it at 256 x 256 on white.
//! let img = render(&svg, &RenderOptions::square(256));
//! assert_eq!(img.dimensions(), (256, 256));
//!
//! // A hand-shortened version draws the same picture.
//! let short = br##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><circle
//!   cx="12" cy="12" r="9" fill="none" stroke="#000" stroke-width="2"/></svg>"##;
//! let short = Svg::parse(short)?;
//! assert_eq!(compare_svgs(&svg, &short, 256).ink_iou, 1.0);
//! # Ok::<(), svgen_core::SvgError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compare;
pub mod error;
pub mod io;
pub mod metrics;
pub mod render;
pub mod svg;
pub mod tokens;

pub mod budget;
pub mod chunk;
pub mod compact;
pub use budget::{fit_to_budget, BudgetError, Fitted};
pub use chunk::{chunk, reassemble, Chunk, ChunkError};
pub use compact::{compact, CompactOptions, Precision};

pub use error::SvgError;
pub use metrics::{compare_svgs, RasterDiff};
pub use render::{render, try_render, Fit, RenderOptions, RenderSize};
pub use svg::{ExternalResources, ParseOptions, Svg, SvgStats, TextPolicy, ViewBox};
pub use tokens::{parse_tokenizer_json, Cl100k, HfTokenizer, TokenCounter, TokenizerError};
