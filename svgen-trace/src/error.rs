//! The error type shared by every stage of svgen-trace.

use thiserror::Error;

/// Everything that can go wrong while building a bitmap or tracing it.
///
/// Tracing itself never fails on a valid [`Bitmap`](crate::Bitmap); errors come from sizes,
/// limits, parameters and (in the preprocessing and batch modules) image decoding.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The requested bitmap has more pixels than the configured limit allows.
    #[error("image of {width}x{height} pixels exceeds the pixel limit of {limit}")]
    TooLarge {
        /// Requested width in pixels.
        width: u64,
        /// Requested height in pixels.
        height: u64,
        /// The limit that was exceeded (total pixels).
        limit: u64,
    },
    /// A tracing parameter is out of its valid range (for example a negative `alphamax`).
    #[error("invalid trace parameter `{name}`: {reason}")]
    InvalidParam {
        /// Parameter name, as in potrace (`alphamax`, `opttolerance`, ...).
        name: &'static str,
        /// Why the value was rejected.
        reason: String,
    },
    /// An input image could not be decoded or is malformed.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// An I/O error while reading or writing files.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Tracing was cancelled by the progress callback.
    #[error("tracing cancelled by the progress callback")]
    Cancelled,
}
