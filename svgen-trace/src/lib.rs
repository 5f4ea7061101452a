//! # svgen-trace
//!
//! A native Rust implementation of the Potrace tracing algorithm (P. Selinger, *Potrace: a
//! polygon-based tracing algorithm*, 2003), written from the paper and from the observed
//! behaviour of potrace 1.16, plus preprocessing, colour tracing and batch tracing.
//!
//! The stages, named as in the paper:
//! 1. [`Bitmap`]: a packed 1-bit bitmap;
//! 2. path decomposition with turn policies and `turdsize` ([`decompose`]);
//! 3. the optimal polygon and vertex adjustment ([`polygon`]);
//! 4. smoothing with corner detection and curve optimisation ([`curve`]);
//! 5. the path tree with signs, holes and children ([`PathList`]), written as SVG ([`svg`]).
//!
//! ```
//! use svgen_trace::{trace, Bitmap, SvgOptions, TraceParams};
//! # fn main() -> Result<(), svgen_trace::TraceError> {
//! // A filled disc of radius 20 in a 64x64 image.
//! let bm = Bitmap::from_fn(64, 64, |x, y| {
//!     let (dx, dy) = (x as f64 - 31.5, y as f64 - 31.5);
//!     dx * dx + dy * dy < 400.0
//! })?;
//! let paths = trace(&bm, &TraceParams::default())?;
//! assert_eq!(paths.paths().len(), 1);
//! let svg = paths.to_svg(&SvgOptions::default());
//! assert!(svg.contains("<path d=\"M"));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bitmap;
pub mod curve;
pub mod decompose;
pub mod error;
pub mod params;
pub mod path;
mod pbm;
pub mod polygon;
pub mod svg;

pub mod batch;
pub mod color;
pub mod preprocess;

pub use batch::{trace_batch, trace_batch_with, BatchInput, BatchOptions};
pub use bitmap::{Bitmap, DEFAULT_PIXEL_LIMIT};
pub use color::{trace_color, ColorParams, ColorTrace, LayerMode, Palette};
pub use error::TraceError;
pub use params::{TraceParams, TurnPolicy};
pub use path::{PathList, Point, Segment, Sign, TracedPath};
pub use preprocess::{
    decode_image, despeckle, mkbitmap, normalise_background, open_image, BackgroundOptions,
    DecodeLimits, MkbitmapParams, Threshold,
};
pub use svg::SvgOptions;

/// Traces a bitmap into a tree of closed Bézier paths, as `potrace` does.
///
/// Black pixels are the foreground. An empty (all-white or zero-sized) bitmap gives an empty
/// [`PathList`]. Only invalid parameters produce an error.
pub fn trace(bitmap: &Bitmap, params: &TraceParams) -> Result<PathList, TraceError> {
    trace_with_progress(bitmap, params, |_| true)
}

/// Like [`trace`], reporting progress as a fraction in `0.0..=1.0` (monotone, ending at 1.0).
///
/// The callback runs on the calling thread; returning `false` cancels the trace with
/// [`TraceError::Cancelled`].
///
/// ```
/// use svgen_trace::{trace_with_progress, Bitmap, TraceParams};
/// # fn main() -> Result<(), svgen_trace::TraceError> {
/// let bm = Bitmap::from_fn(32, 32, |x, y| (x / 8 + y / 8) % 2 == 0)?;
/// let mut seen = Vec::new();
/// trace_with_progress(&bm, &TraceParams::default(), |f| { seen.push(f); true })?;
/// assert_eq!(seen.last(), Some(&1.0));
/// # Ok(()) }
/// ```
pub fn trace_with_progress(
    bitmap: &Bitmap,
    params: &TraceParams,
    mut progress: impl FnMut(f64) -> bool,
) -> Result<PathList, TraceError> {
    params.validate()?;
    let raw = decompose::decompose(bitmap, params.turdsize, params.turnpolicy);
    if !progress(0.1) {
        return Err(TraceError::Cancelled);
    }
    let fitted = path::fit_all(&raw, params, &mut progress)?;
    let list = path::PathList::build(bitmap.width(), bitmap.height(), raw, fitted);
    if !progress(1.0) {
        return Err(TraceError::Cancelled);
    }
    Ok(list)
}
