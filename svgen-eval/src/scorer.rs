//! Batched CLIP similarity, CLIPScore and aesthetic scores over rasters or SVGs.

use std::path::Path;

use burn::prelude::*;
use image::{DynamicImage, RgbImage, RgbaImage};
use svgen_core::render::{render, RenderOptions};
use svgen_core::Svg;

use crate::aesthetic::AestheticPredictor;
use crate::clip::ClipModel;
use crate::error::{EvalError, Result};
use crate::preprocess::ClipImageProcessor;
use crate::tokenizer::ClipTokenizer;

/// An image to score: a raster, or an SVG rendered on white by svgen-core.
#[derive(Debug, Clone, Copy)]
pub enum ScoreImage<'a> {
    /// An RGB raster.
    Rgb(&'a RgbImage),
    /// An RGBA raster; alpha is dropped as PIL's `convert("RGB")` does (composite first if needed).
    Rgba(&'a RgbaImage),
    /// Any decoded image.
    Dynamic(&'a DynamicImage),
    /// An SVG, rendered on opaque white at [`ClipScorer::render_side`] pixels (longer side fitted,
    /// centred) before the usual preprocessing.
    Svg(&'a Svg),
}

impl<'a> From<&'a RgbImage> for ScoreImage<'a> {
    fn from(i: &'a RgbImage) -> Self {
        ScoreImage::Rgb(i)
    }
}
impl<'a> From<&'a RgbaImage> for ScoreImage<'a> {
    fn from(i: &'a RgbaImage) -> Self {
        ScoreImage::Rgba(i)
    }
}
impl<'a> From<&'a DynamicImage> for ScoreImage<'a> {
    fn from(i: &'a DynamicImage) -> Self {
        ScoreImage::Dynamic(i)
    }
}
impl<'a> From<&'a Svg> for ScoreImage<'a> {
    fn from(s: &'a Svg) -> Self {
        ScoreImage::Svg(s)
    }
}

/// Drops the alpha channel (PIL's `convert("RGB")`).
fn drop_alpha(img: &RgbaImage) -> RgbImage {
    DynamicImage::ImageRgba8(img.clone()).to_rgb8()
}

/// `100 · max(cos, 0)`: torchmetrics' `CLIPScore` of a raw cosine.
pub fn clip_score_from_cosine(cos: f32) -> f32 {
    100.0 * cos.max(0.0)
}

/// CLIP (and optionally the LAION aesthetic head) ready to score images against prompts.
///
/// This is the filter svgen-data uses (`clip_similarity`) and the scorer of the evaluation report.
///
/// ```no_run
/// use burn::backend::Flex;
/// use svgen_eval::{ClipScorer, ScoreImage};
/// let scorer = ClipScorer::<Flex>::from_pretrained("clip-vit-base-patch32", &Default::default())?;
/// let svg = svgen_core::Svg::parse(br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8">
///     <circle cx="4" cy="4" r="3" fill="red"/></svg>"#).unwrap();
/// let cos = scorer.clip_similarity(&[ScoreImage::Svg(&svg)], &["a red circle"])?;
/// println!("cosine {}", cos[0]);
/// # Ok::<(), svgen_eval::EvalError>(())
/// ```
#[derive(Debug)]
pub struct ClipScorer<B: Backend> {
    /// The CLIP model.
    pub model: ClipModel<B>,
    /// Its tokenizer.
    pub tokenizer: ClipTokenizer,
    /// Its image preprocessing.
    pub processor: ClipImageProcessor,
    aesthetic: Option<AestheticPredictor<B>>,
    device: B::Device,
    render_side: u32,
    batch_size: usize,
}

impl<B: Backend> ClipScorer<B> {
    /// Assembles a scorer. The tokenizer's context is set to the text model's length.
    pub fn new(
        model: ClipModel<B>,
        tokenizer: ClipTokenizer,
        processor: ClipImageProcessor,
        device: B::Device,
    ) -> Self {
        ClipScorer {
            model,
            tokenizer,
            processor,
            aesthetic: None,
            device,
            render_side: 448,
            batch_size: 16,
        }
    }

    /// Loads an HF CLIP folder: `config.json`, `model.safetensors`, `tokenizer.json` and, when
    /// present, `preprocessor_config.json` (else the CLIP defaults at the model's image size).
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg = crate::ClipConfig::from_file(dir.join("config.json"))?;
        let model = ClipModel::from_pretrained_with_config(&cfg, dir, device)?;
        let tokenizer = ClipTokenizer::from_dir(dir)?
            .with_context_length(cfg.text.max_position_embeddings.min(77))?;
        let pp = dir.join("preprocessor_config.json");
        let processor = if pp.exists() {
            ClipImageProcessor::from_file(pp)?
        } else {
            ClipImageProcessor::square(cfg.vision.image_size as u32)
        };
        Ok(Self::new(model, tokenizer, processor, device.clone()))
    }

    /// Adds the aesthetic head; its input width must equal the CLIP projection width (768 for the
    /// LAION heads, i.e. a ViT-L/14 CLIP).
    pub fn with_aesthetic(mut self, head: AestheticPredictor<B>) -> Result<Self> {
        let p = self.model.visual_projection.weight.dims()[1];
        if head.input_dim() != p {
            return Err(EvalError::ConfigMismatch {
                name: "layers.0.weight".into(),
                message: format!(
                    "the aesthetic head takes {}-d embeddings but this CLIP projects to {p} (LAION heads need ViT-L/14)",
                    head.input_dim()
                ),
            });
        }
        self.aesthetic = Some(head);
        Ok(self)
    }

    /// Sets the side in pixels SVGs are rendered at before preprocessing (default 448).
    pub fn with_render_side(mut self, side: u32) -> Self {
        self.render_side = side.max(1);
        self
    }

    /// Sets how many images / prompts go through the model at once (default 16).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Render side for SVGs.
    pub fn render_side(&self) -> u32 {
        self.render_side
    }

    /// Whether an aesthetic head is attached.
    pub fn has_aesthetic(&self) -> bool {
        self.aesthetic.is_some()
    }

    /// The device the model runs on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The RGB raster CLIP sees before resizing (SVGs rendered on white).
    pub fn rasterize(&self, img: ScoreImage<'_>) -> RgbImage {
        match img {
            ScoreImage::Rgb(i) => i.clone(),
            ScoreImage::Rgba(i) => drop_alpha(i),
            ScoreImage::Dynamic(i) => i.to_rgb8(),
            ScoreImage::Svg(s) => drop_alpha(&render(s, &RenderOptions::square(self.render_side))),
        }
    }

    /// L2-normalised image embeddings `[N, projection_dim]`, computed in batches.
    pub fn image_embeds(&self, images: &[ScoreImage<'_>]) -> Result<Tensor<B, 2>> {
        let mut parts = Vec::new();
        for chunk in images.chunks(self.batch_size) {
            let rasters: Vec<RgbImage> = chunk.iter().map(|i| self.rasterize(*i)).collect();
            let px = self
                .processor
                .preprocess_batch::<B>(&rasters, &self.device)?;
            parts.push(self.model.image_embeds(px)?);
        }
        if parts.is_empty() {
            let p = self.model.visual_projection.weight.dims()[1];
            return Ok(Tensor::zeros([0, p], &self.device));
        }
        Ok(Tensor::cat(parts, 0))
    }

    /// L2-normalised text embeddings `[N, projection_dim]`, computed in batches. Prompts longer than
    /// the context are truncated (EOS kept); empty prompts are fine.
    pub fn text_embeds<S: AsRef<str>>(&self, prompts: &[S]) -> Result<Tensor<B, 2>> {
        let mut parts = Vec::new();
        for chunk in prompts.chunks(self.batch_size) {
            let t = self.tokenizer.encode_batch(chunk)?;
            let shape = [t.batch, t.context_length];
            let ids =
                Tensor::<B, 2, Int>::from_data(TensorData::new(t.input_ids, shape), &self.device);
            let mask = Tensor::<B, 2, Int>::from_data(
                TensorData::new(t.attention_mask, shape),
                &self.device,
            );
            parts.push(self.model.text_embeds(ids, Some(mask))?);
        }
        if parts.is_empty() {
            let p = self.model.text_projection.weight.dims()[1];
            return Ok(Tensor::zeros([0, p], &self.device));
        }
        Ok(Tensor::cat(parts, 0))
    }

    /// Raw cosine between `images[i]` and `prompts[i]` (the thesis' and OmniSVG's "CLIP similarity").
    pub fn clip_similarity<S: AsRef<str>>(
        &self,
        images: &[ScoreImage<'_>],
        prompts: &[S],
    ) -> Result<Vec<f32>> {
        if images.len() != prompts.len() {
            return Err(EvalError::InvalidInput {
                name: "prompts".into(),
                expected: format!("{} prompts (one per image)", images.len()),
                found: prompts.len().to_string(),
            });
        }
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let i = self.image_embeds(images)?;
        let t = self.text_embeds(prompts)?;
        to_f32_vec((i * t).sum_dim(1), "similarity")
    }

    /// Cosine of every image with every prompt, `[images][prompts]`.
    pub fn similarity_matrix<S: AsRef<str>>(
        &self,
        images: &[ScoreImage<'_>],
        prompts: &[S],
    ) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() || prompts.is_empty() {
            return Ok(vec![Vec::new(); images.len()]);
        }
        let i = self.image_embeds(images)?;
        let t = self.text_embeds(prompts)?;
        let m = to_f32_vec(i.matmul(t.transpose()), "similarity")?;
        Ok(m.chunks(prompts.len()).map(<[f32]>::to_vec).collect())
    }

    /// torchmetrics' CLIPScore, `100 · max(cos, 0)`, of `images[i]` with `prompts[i]`.
    pub fn clip_score<S: AsRef<str>>(
        &self,
        images: &[ScoreImage<'_>],
        prompts: &[S],
    ) -> Result<Vec<f32>> {
        Ok(self
            .clip_similarity(images, prompts)?
            .into_iter()
            .map(clip_score_from_cosine)
            .collect())
    }

    /// LAION aesthetic scores of the images (needs [`ClipScorer::with_aesthetic`]).
    pub fn aesthetic(&self, images: &[ScoreImage<'_>]) -> Result<Vec<f32>> {
        let head = self
            .aesthetic
            .as_ref()
            .ok_or_else(|| EvalError::InvalidInput {
                name: "aesthetic".into(),
                expected: "a scorer built with_aesthetic".into(),
                found: "no aesthetic head".into(),
            })?;
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let e = self.image_embeds(images)?;
        self.aesthetic_of_embeds(head, e)
    }

    fn aesthetic_of_embeds(
        &self,
        head: &AestheticPredictor<B>,
        e: Tensor<B, 2>,
    ) -> Result<Vec<f32>> {
        to_f32_vec(head.score(e)?, "aesthetic")
    }

    /// Similarity and (when a head is attached) aesthetic in one pass over the images.
    pub fn score_pairs<S: AsRef<str>>(
        &self,
        images: &[ScoreImage<'_>],
        prompts: &[S],
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        if images.len() != prompts.len() {
            return Err(EvalError::InvalidInput {
                name: "prompts".into(),
                expected: format!("{} prompts (one per image)", images.len()),
                found: prompts.len().to_string(),
            });
        }
        if images.is_empty() {
            return Ok((Vec::new(), self.aesthetic.as_ref().map(|_| Vec::new())));
        }
        let i = self.image_embeds(images)?;
        let t = self.text_embeds(prompts)?;
        let sim = to_f32_vec((i.clone() * t).sum_dim(1), "similarity")?;
        let aes = match &self.aesthetic {
            Some(h) => Some(self.aesthetic_of_embeds(h, i)?),
            None => None,
        };
        Ok((sim, aes))
    }
}

/// Reads a score tensor back as `f32`s (a typed error names the tensor if that fails).
fn to_f32_vec<B: Backend, const D: usize>(t: Tensor<B, D>, name: &str) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| EvalError::InvalidInput {
            name: name.into(),
            expected: "f32 values".into(),
            found: format!("{e:?}"),
        })
}
