//! Error types shared across svgen.

/// An error from parsing, validating or writing an SVG.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SvgError {
    /// The document is not well-formed XML or not a valid SVG.
    #[error("invalid SVG: {0}")]
    Parse(String),
}
