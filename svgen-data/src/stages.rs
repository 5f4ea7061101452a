//! CPU stages: tracing (with background normalisation), token counting and labelling, and
//! the optional CLIP-similarity / aesthetic filters.

use image::DynamicImage;
use serde::Serialize;
use svgen_trace::preprocess;
use svgen_trace::Bitmap;

use crate::error::StageError;
use crate::sample::Label;

pub use svgen_core::{Cl100k, TokenCounter};
/// The tracing, thresholding, background and decoding settings of these stages (svgen-trace's
/// types), so that callers configure them without depending on svgen-trace.
pub use svgen_trace::preprocess::{decode_image, BackgroundOptions, DecodeLimits, Threshold};
pub use svgen_trace::{SvgOptions, TraceParams};

/// Turns a raster into an SVG document. Shared across worker threads.
pub trait Tracer: Send + Sync {
    /// Name for reports.
    fn name(&self) -> &str;
    /// Traces one (already normalised) image.
    fn trace(&self, image: &DynamicImage) -> Result<String, StageError>;
}

/// Potrace-style tracing with svgen-trace: threshold → bitmap → paths → SVG.
#[derive(Debug, Clone, Default)]
pub struct PotraceTracer {
    /// How pixels become black or white (potrace's `-k 0.5` by default).
    pub threshold: Threshold,
    /// Tracing parameters (`turdsize`, `alphamax`, `opttolerance`, ...).
    pub params: TraceParams,
    /// SVG writing options.
    pub svg: SvgOptions,
}

impl Tracer for PotraceTracer {
    fn name(&self) -> &str {
        "svgen-trace"
    }

    fn trace(&self, image: &DynamicImage) -> Result<String, StageError> {
        let bitmap = Bitmap::from_image(image, &self.threshold)
            .map_err(|e| StageError::bad_input(format!("thresholding failed: {e}")))?;
        let paths = svgen_trace::trace(&bitmap, &self.params)
            .map_err(|e| StageError::internal(format!("tracing failed: {e}")))?;
        Ok(paths.to_svg(&self.svg))
    }
}

/// Dark-background normalisation (the thesis' OpenCV step): when the border of the image is
/// dark, the image is inverted so the background becomes white. Returns the image to trace
/// and whether it was inverted.
pub fn normalise_background(
    image: &DynamicImage,
    options: &BackgroundOptions,
) -> Result<(DynamicImage, bool), StageError> {
    let (out, decision) = preprocess::normalise_background(image, options)
        .map_err(|e| StageError::internal(format!("background normalisation: {e}")))?;
    Ok((out, decision.inverted))
}

/// Token threshold for the positive label (the thesis: < 8k tokens; < 4k for the scaled set).
///
/// ```
/// use svgen_data::stages::LabelPolicy;
/// use svgen_data::sample::Label;
/// let p = LabelPolicy::default();
/// assert_eq!(p.label(7_999), Label::Positive);
/// assert_eq!(p.label(8_000), Label::Negative);
/// assert_eq!(LabelPolicy::scaled().label(4_000), Label::Negative);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LabelPolicy {
    /// A sample is positive when it has fewer tokens than this.
    pub max_tokens: usize,
    /// Drop negatives instead of storing them with `label = negative`.
    pub drop_negative: bool,
}

impl Default for LabelPolicy {
    /// The small dataset's 8k threshold, negatives kept.
    fn default() -> Self {
        LabelPolicy {
            max_tokens: 8_000,
            drop_negative: false,
        }
    }
}

impl LabelPolicy {
    /// The scaled dataset's 4k threshold.
    pub fn scaled() -> Self {
        LabelPolicy {
            max_tokens: 4_000,
            drop_negative: false,
        }
    }

    /// The label of a sample with `n_tokens` tokens.
    pub fn label(&self, n_tokens: usize) -> Label {
        if n_tokens < self.max_tokens {
            Label::Positive
        } else {
            Label::Negative
        }
    }
}

/// Image–text similarity (CLIP cosine). [`crate::eval::EvalScorer`] puts svgen-eval's CLIP
/// scorer behind it.
pub trait ImageTextScorer: Send + Sync {
    /// Cosine similarity between `image` and `text` embeddings.
    fn similarity(&self, image: &DynamicImage, text: &str) -> Result<f32, StageError>;
}

/// Aesthetic quality of an image (LAION predictor, about 1–10); see [`crate::eval::EvalScorer`].
pub trait AestheticScorer: Send + Sync {
    /// The score of `image`.
    fn aesthetic(&self, image: &DynamicImage) -> Result<f32, StageError>;
}

/// A CLIP-similarity filter: scores every sample (the `clip_similarity` column) and rejects those
/// below `min_similarity`: they are recorded in `failures.jsonl` (stage `filter`, kind
/// `rejected`) and not written. [`crate::eval::EvalScorer::clip_filter`] builds one.
pub struct ClipFilter {
    /// The scorer.
    pub scorer: Box<dyn ImageTextScorer>,
    /// Samples scoring below this are recorded as rejected (`None`: score only).
    pub min_similarity: Option<f32>,
}

impl std::fmt::Debug for ClipFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipFilter")
            .field("min_similarity", &self.min_similarity)
            .finish_non_exhaustive()
    }
}
