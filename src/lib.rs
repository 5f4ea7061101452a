//! # svgen
//!
//! A toolkit for text-to-SVG work: building (text, raster, SVG) datasets, tracing bitmaps to
//! compact SVG, fine-tuning language and diffusion models with LoRA, and scoring the results.
//!
//! This crate is a thin facade: each part lives in its own crate and is re-exported here behind
//! a cargo feature.
//!
//! | module  | crate          | feature | what it does |
//! |---------|----------------|---------|--------------|
//! | [`core`]  | `svgen-core`  | always  | SVG parse/validate/render, token counting, token-aware writing, raster metrics |
//! | `trace` | `svgen-trace` | `trace` | Potrace-compatible bitmap tracing, preprocessing, colour tracing |
//! | `eval`  | `svgen-eval`  | `eval`  | CLIP and LAION aesthetic scorers (Burn), evaluation reports |
//! | `data`  | `svgen-data`  | `data`  | the streaming, sharded, resumable triplet dataset pipeline |
//! | `train` | `svgen-train` | `train` | Llama + LoRA and Stable Diffusion + LoRA (Burn), trainers, generation |
//!
//! The `cuda` feature enables Burn's CUDA backend in the model crates. [`DefaultBackend`]
//! (feature `eval`) and [`DefaultTrainBackend`] (feature `train`, its `Autodiff` wrapper) name the
//! backend the examples run on: Burn's CPU backend `Flex`, or `Cuda` with the `cuda` feature. The
//! models are generic over the backend; the aliases only spell the usual choice once.
//!
//! ## Quickstart
//!
//! ```no_run
//! use svgen::core::{compact, render, Cl100k, CompactOptions, RenderOptions, Svg, TokenCounter};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let text = std::fs::read("icon.svg")?;
//! let svg = Svg::parse(&text)?; // typed errors, bounded time and memory
//! let short = compact(&svg, &CompactOptions::default()); // same picture, fewer tokens
//! let cl100k = Cl100k::new();
//! println!("{} -> {} tokens", cl100k.count(std::str::from_utf8(&text)?), cl100k.count(&short));
//! render(&svg, &RenderOptions::square(256)).save("icon.png")?; // on white, deterministic
//! # Ok(()) }
//! ```
//!
//! Tracing a raster the way `potrace -s` does:
//!
//! ```no_run
//! # #[cfg(feature = "trace")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use svgen::trace::{trace, Bitmap, SvgOptions, Threshold, TraceParams};
//!
//! let img = svgen::trace::open_image("silhouette.png", &Default::default())?;
//! let bitmap = Bitmap::from_image(&img, &Threshold::default())?;
//! let paths = trace(&bitmap, &TraceParams::default())?; // potrace's defaults
//! std::fs::write("silhouette.svg", paths.to_svg(&SvgOptions::default()))?;
//! # Ok(()) }
//! # #[cfg(not(feature = "trace"))]
//! # fn main() {}
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use svgen_core as core;

#[cfg(feature = "trace")]
pub use svgen_trace as trace;

#[cfg(feature = "eval")]
pub use svgen_eval as eval;

#[cfg(feature = "eval")]
pub use svgen_eval::DefaultBackend;

#[cfg(feature = "data")]
pub use svgen_data as data;

#[cfg(feature = "train")]
pub use svgen_train as train;

#[cfg(feature = "train")]
pub use svgen_train::DefaultTrainBackend;
