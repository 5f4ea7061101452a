//! svgen-eval's CLIP scorer behind the pipeline's filter traits.
//!
//! [`EvalScorer`] wraps a [`svgen_eval::ClipScorer`] (any Burn backend: Flex on the CPU, CUDA
//! with svgen-eval's `cuda` feature) and implements [`ImageTextScorer`] (the
//! `clip_similarity` column, raw CLIP cosine of the traced image and the simplified caption, or
//! the caption when no simplifier ran) and [`AestheticScorer`] (the `aesthetic` column, the
//! LAION head on the same image embedding). One loaded model serves both stages: the handle is
//! cheap to clone.
//!
//! The model is shared by all CPU workers behind a mutex, so scoring runs one image at a time;
//! the backend parallelises inside each forward pass.
//!
//! ```no_run
//! use svgen_data::eval::EvalScorer;
//! use svgen_eval::burn::backend::Flex;
//!
//! // An HF CLIP folder (config.json, model.safetensors, tokenizer.json) and a LAION head.
//! let scorer = EvalScorer::<Flex>::from_pretrained(
//!     "clip-vit-large-patch14",
//!     Some("sac+logos+ava1-l14-linearMSE.pth".as_ref()),
//!     &Default::default(),
//! )?;
//! let clip = scorer.clip_filter(Some(0.2)); // reject samples below cosine 0.2
//! let aesthetic = scorer.aesthetic_scorer(); // Some(..): a head is attached
//! # let _ = (clip, aesthetic);
//! # Ok::<(), svgen_eval::EvalError>(())
//! ```

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use image::DynamicImage;
use svgen_eval::burn::prelude::Backend;
use svgen_eval::{AestheticPredictor, ClipScorer, EvalError, ScoreImage};

use crate::error::StageError;
use crate::stages::{AestheticScorer, ClipFilter, ImageTextScorer};

/// A shared [`ClipScorer`] usable as the pipeline's CLIP filter and aesthetic scorer.
///
/// Cloning shares the same loaded model.
pub struct EvalScorer<B: Backend> {
    inner: Arc<Mutex<ClipScorer<B>>>,
    has_aesthetic: bool,
}

impl<B: Backend> Clone for EvalScorer<B> {
    fn clone(&self) -> Self {
        EvalScorer {
            inner: Arc::clone(&self.inner),
            has_aesthetic: self.has_aesthetic,
        }
    }
}

impl<B: Backend> std::fmt::Debug for EvalScorer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalScorer")
            .field("has_aesthetic", &self.has_aesthetic)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> EvalScorer<B> {
    /// Wraps an assembled scorer (with or without an aesthetic head).
    pub fn new(scorer: ClipScorer<B>) -> Self {
        let has_aesthetic = scorer.has_aesthetic();
        EvalScorer {
            inner: Arc::new(Mutex::new(scorer)),
            has_aesthetic,
        }
    }

    /// Loads an HF CLIP folder (`config.json`, `model.safetensors`, `tokenizer.json`, optional
    /// `preprocessor_config.json`) and, when given, a LAION aesthetic head (`.pth` or
    /// `.safetensors`; its input width must equal the CLIP projection width, i.e. ViT-L/14 for
    /// the published heads).
    pub fn from_pretrained(
        clip_dir: impl AsRef<Path>,
        aesthetic_head: Option<&Path>,
        device: &B::Device,
    ) -> Result<Self, EvalError> {
        let mut scorer = ClipScorer::<B>::from_pretrained(clip_dir, device)?;
        if let Some(head) = aesthetic_head {
            scorer = scorer.with_aesthetic(AestheticPredictor::from_file(head, device)?)?;
        }
        Ok(Self::new(scorer))
    }

    /// Whether an aesthetic head is attached.
    pub fn has_aesthetic(&self) -> bool {
        self.has_aesthetic
    }

    /// The pipeline's CLIP stage backed by this scorer: every sample gets `clip_similarity`;
    /// with `min_similarity`, samples scoring below it are recorded in `failures.jsonl` as
    /// `rejected` at the `filter` stage and not written.
    pub fn clip_filter(&self, min_similarity: Option<f32>) -> ClipFilter
    where
        B: 'static,
    {
        ClipFilter {
            scorer: Box::new(self.clone()),
            min_similarity,
        }
    }

    /// The pipeline's aesthetic stage backed by this scorer, or `None` without a head.
    pub fn aesthetic_scorer(&self) -> Option<Box<dyn AestheticScorer>>
    where
        B: 'static,
    {
        self.has_aesthetic
            .then(|| Box::new(self.clone()) as Box<dyn AestheticScorer>)
    }

    /// Locks the model. Scoring only reads it, so a lock poisoned by a panicking worker still
    /// holds a usable scorer.
    fn lock(&self) -> MutexGuard<'_, ClipScorer<B>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An [`EvalError`] met while scoring one sample: bad input for that sample, anything else is
/// an internal failure.
fn stage_error(what: &str, e: EvalError) -> StageError {
    match e {
        EvalError::InvalidInput { .. } | EvalError::Image { .. } => {
            StageError::bad_input(format!("{what}: {e}"))
        }
        other => StageError::internal(format!("{what}: {other}")),
    }
}

fn single(what: &str, v: Vec<f32>) -> Result<f32, StageError> {
    match v.as_slice() {
        [x] if x.is_finite() => Ok(*x),
        [x] => Err(StageError::internal(format!("{what} is not finite: {x}"))),
        _ => Err(StageError::internal(format!(
            "{what}: expected one score, got {}",
            v.len()
        ))),
    }
}

impl<B: Backend> ImageTextScorer for EvalScorer<B> {
    fn similarity(&self, image: &DynamicImage, text: &str) -> Result<f32, StageError> {
        let v = self
            .lock()
            .clip_similarity(&[ScoreImage::Dynamic(image)], &[text])
            .map_err(|e| stage_error("CLIP similarity", e))?;
        single("CLIP similarity", v)
    }
}

impl<B: Backend> AestheticScorer for EvalScorer<B> {
    fn aesthetic(&self, image: &DynamicImage) -> Result<f32, StageError> {
        let v = self
            .lock()
            .aesthetic(&[ScoreImage::Dynamic(image)])
            .map_err(|e| stage_error("aesthetic", e))?;
        single("aesthetic score", v)
    }
}
