//! Scoring grid images: the [`ImageScorer`] trait and the thesis' trace-and-count-tokens scorer.

use burn::tensor::backend::Backend;
use image::DynamicImage;
use svgen_core::{Cl100k, Svg, TokenCounter};
use svgen_data::stages::{PotraceTracer, SvgOptions, Threshold, TraceParams, Tracer};
use svgen_eval::{ClipScorer, ScoreImage};

use super::GridPoint;
use crate::error::{Result, TrainError};

/// The score of one grid image: higher `value` ranks first.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// The ranking value (higher is better).
    pub value: f64,
    /// Whether the image is usable at all (e.g. a trace with no paths is not); invalid images rank
    /// after every valid one.
    pub valid: bool,
    /// Named measurements shown in the table (e.g. `tokens`, `clip_similarity`).
    pub metrics: Vec<(String, f64)>,
    /// The traced SVG, when the scorer made one (saved next to the image).
    pub svg: Option<String>,
}

/// Scores one (background-normalised) grid image. Supplied by the caller of [`grid_search`](super::grid_search)(super::grid_search).
pub trait ImageScorer {
    /// Name for reports and errors.
    fn name(&self) -> &str;
    /// Scores `image`, generated for `point`.
    ///
    /// # Errors
    /// Whatever made scoring impossible ([`TrainError::Scorer`] for the provided scorer).
    fn score(&self, point: &GridPoint, image: &DynamicImage) -> Result<Score>;
}

type Similarity<'a> = Box<dyn Fn(&Svg, &str) -> Result<f32> + 'a>;

/// The thesis' criterion: trace with svgen-data's [`PotraceTracer`] stage (potrace's defaults, the
/// tracer of the dataset pipeline), count the SVG's `cl100k_base`
/// tokens, and optionally measure the CLIP similarity of the traced SVG (rendered on white) to the
/// point's subject.
///
/// `value = clip_weight · cos − tokens / token_budget` (without CLIP: `−tokens / token_budget`); a trace
/// without any path is invalid (an empty page would otherwise win on tokens).
pub struct TraceTokenScorer<'a> {
    /// Thresholding (potrace's `-k 0.5` by default).
    pub threshold: Threshold,
    /// Tracing parameters.
    pub params: TraceParams,
    /// SVG writing options.
    pub svg: SvgOptions,
    /// Weight of the CLIP cosine (default 10: a cosine gain of 0.05 is worth `0.5·token_budget` tokens).
    pub clip_weight: f64,
    /// Tokens that cost one unit of score (default 8000, the thesis' positive-label threshold).
    pub token_budget: f64,
    clip: Option<Similarity<'a>>,
}

impl std::fmt::Debug for TraceTokenScorer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceTokenScorer")
            .field("threshold", &self.threshold)
            .field("clip_weight", &self.clip_weight)
            .field("token_budget", &self.token_budget)
            .field("clip", &self.clip.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for TraceTokenScorer<'_> {
    fn default() -> Self {
        Self {
            threshold: Threshold::default(),
            params: TraceParams::default(),
            svg: SvgOptions::default(),
            clip_weight: 10.0,
            token_budget: 8000.0,
            clip: None,
        }
    }
}

impl<'a> TraceTokenScorer<'a> {
    /// Token count only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds CLIP similarity of the traced SVG to the subject, with svgen-eval's scorer.
    pub fn with_clip<B: Backend>(mut self, clip: &'a ClipScorer<B>) -> Self {
        self.clip = Some(Box::new(move |svg: &Svg, text: &str| {
            let cos = clip.clip_similarity(&[ScoreImage::Svg(svg)], &[text])?;
            cos.first().copied().ok_or_else(|| TrainError::Scorer {
                scorer: "clip".into(),
                message: "no similarity returned".into(),
            })
        }));
        self
    }

    fn fail(&self, message: impl std::fmt::Display) -> TrainError {
        TrainError::Scorer {
            scorer: self.name().into(),
            message: message.to_string(),
        }
    }
}

impl ImageScorer for TraceTokenScorer<'_> {
    fn name(&self) -> &str {
        "trace-tokens"
    }

    fn score(&self, point: &GridPoint, image: &DynamicImage) -> Result<Score> {
        if self.token_budget.is_nan() || self.token_budget <= 0.0 || !self.clip_weight.is_finite() {
            return Err(self.fail("token_budget must be positive and clip_weight finite"));
        }
        let tracer = PotraceTracer {
            threshold: self.threshold.clone(),
            params: self.params,
            svg: self.svg.clone(),
        };
        let svg = tracer
            .trace(image)
            .map_err(|e| self.fail(format!("tracing: {}", e.message)))?;
        let n_paths = path_elements(&svg);
        let tokens = Cl100k.count(&svg);
        let mut metrics = vec![
            ("tokens".to_string(), tokens as f64),
            ("paths".to_string(), n_paths as f64),
        ];
        let mut value = -(tokens as f64) / self.token_budget;
        if let Some(similarity) = &self.clip {
            let parsed =
                Svg::parse(svg.as_bytes()).map_err(|e| self.fail(format!("traced SVG: {e}")))?;
            let cos = f64::from(similarity(&parsed, &point.subject)?);
            metrics.push(("clip_similarity".to_string(), cos));
            value += self.clip_weight * cos;
        }
        Ok(Score {
            value,
            valid: n_paths > 0 && value.is_finite(),
            metrics,
            svg: Some(svg),
        })
    }
}

/// The number of non-empty `<path>` elements of a traced SVG: one per top-level traced outline
/// (with its holes) in potrace's grouped output.
fn path_elements(svg: &str) -> usize {
    svg.matches("<path").count() - svg.matches("<path d=\"\"").count()
}
