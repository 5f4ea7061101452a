//! Stable Diffusion as an svgen-data [`ImageGenerator`] (the dataset pipeline's image stage),
//! batched on a worker thread (see [`crate::diffusion::generator`]).

use std::time::Duration;

use burn::tensor::backend::Backend;
use image::RgbImage;
use svgen_data::generate::{GeneratedImage, GenerationRequest, ImageGenerator};
use svgen_data::StageError;

use super::pipeline::{GenerateParams, StableDiffusion};
use crate::diffusion::generator::{
    BatchOutput, BatchPipeline, BatchedGenerator, GenerationStats, InProcessOptions, PromptItem,
    StatsHandle,
};
use crate::error::{Result, TrainError};

/// The pipeline and its settings, on the generator's worker thread.
struct SdBatch<B: Backend> {
    sd: StableDiffusion<B>,
    template: GenerateParams,
}

impl<B: Backend> BatchPipeline for SdBatch<B> {
    fn generate_batch(&mut self, items: &[PromptItem]) -> Result<BatchOutput> {
        let prompts: Vec<&str> = items.iter().map(|i| i.prompt.as_str()).collect();
        let limit = format!("clip ({} tokens)", self.sd.tokenizer.context_length());
        let truncated = self
            .sd
            .tokenizer
            .encode_batch(&prompts)?
            .truncated
            .into_iter()
            .map(|t| if t { vec![limit.clone()] } else { Vec::new() })
            .collect();
        let images = self.sd.generate_items(items, &self.template)?;
        Ok(BatchOutput { images, truncated })
    }
}

/// Stable Diffusion as an svgen-data [`ImageGenerator`]: the request's prompt, negative prompt (the
/// template's when the request has none) and seed, the template's other settings; PNG bytes out.
///
/// The pipeline runs on a worker thread that batches concurrent requests (up to
/// [`SdImageGenerator::with_batch`], 1 by default); each image equals the single-image run of its
/// request's seed, whatever else is in its batch.
pub struct SdImageGenerator<B: Backend> {
    inner: BatchedGenerator,
    template: GenerateParams,
    _backend: std::marker::PhantomData<fn() -> B>,
}

impl<B: Backend> std::fmt::Debug for SdImageGenerator<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdImageGenerator")
            .field("name", &self.inner.name())
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> SdImageGenerator<B> {
    /// Wraps a pipeline; `template` gives steps, guidance, size, scheduler, CLIP skip and the default
    /// negative prompt (its prompt, seed, latents and batch are replaced per request).
    ///
    /// # Panics
    /// If the operating system cannot start the worker thread ([`SdImageGenerator::try_new`]
    /// returns that as an error).
    pub fn new(sd: StableDiffusion<B>, template: GenerateParams) -> Self {
        match Self::try_new(sd, template) {
            Ok(g) => g,
            Err(e) => panic!("cannot start the generator thread: {e}"),
        }
    }

    /// [`SdImageGenerator::new`], with the thread start failure as an error.
    ///
    /// # Errors
    /// [`TrainError::Io`] when the worker thread cannot be started.
    pub fn try_new(sd: StableDiffusion<B>, template: GenerateParams) -> Result<Self> {
        let batch = SdBatch {
            sd,
            template: GenerateParams {
                latents: None,
                batch: 1,
                ..template.clone()
            },
        };
        Ok(Self {
            inner: BatchedGenerator::spawn(batch, "stable-diffusion", 1, Duration::ZERO)?,
            template,
            _backend: std::marker::PhantomData,
        })
    }

    /// Loads the pipeline folder of `options` (and its LoRA) and starts a generator with the
    /// options' settings over Stable Diffusion's defaults (`GenerateParams::default()`), the
    /// given default negative prompt, batches of `options.batch`.
    ///
    /// # Errors
    /// Loading errors ([`StableDiffusion::from_pretrained`], LoRA files), FLUX-only options
    /// (`true_cfg_scale`, `max_sequence_length`, bf16) refused by name, invalid settings.
    pub fn from_options(
        options: &InProcessOptions,
        negative_prompt: Option<String>,
        device: &B::Device,
    ) -> Result<Self> {
        for (set, name) in [
            (options.true_cfg_scale.is_some(), "true_cfg_scale"),
            (options.max_sequence_length.is_some(), "max_sequence_length"),
            (options.bf16 == Some(true), "bf16"),
        ] {
            if set {
                return Err(TrainError::InvalidArgument(format!(
                    "`{name}` is a FLUX option; the Stable Diffusion generator does not take it"
                )));
            }
        }
        let mut sd = StableDiffusion::<B>::from_pretrained(&options.model, device)?;
        if let Some(lora) = &options.lora {
            sd.unet.load_lora(lora)?;
        }
        let d = GenerateParams::default();
        let template = GenerateParams {
            negative_prompt,
            steps: options.steps.unwrap_or(d.steps),
            guidance_scale: options.guidance.unwrap_or(d.guidance_scale),
            scheduler: options.scheduler.unwrap_or(d.scheduler),
            width: options.width.unwrap_or(d.width),
            height: options.height.unwrap_or(d.height),
            ..d
        };
        let g = Self::try_new(sd, template)?;
        g.inner.set_max_batch(options.batch);
        g.inner.set_max_wait(options.max_wait());
        Ok(g)
    }

    /// Sets the name recorded in the dataset's `generator` column.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.inner.set_name(name);
        self
    }

    /// Batches up to `n` concurrent requests (clamped to `1..=64`), waiting up to `wait` after the
    /// first one of a batch.
    pub fn with_batch(self, n: usize, wait: Duration) -> Self {
        self.inner.set_max_batch(n);
        self.inner.set_max_wait(wait);
        self
    }

    /// The statistics so far (images, batches, failures, truncated prompts).
    pub fn stats(&self) -> GenerationStats {
        self.inner.stats()
    }

    /// A handle on the statistics that outlives the generator.
    pub fn stats_handle(&self) -> StatsHandle {
        self.inner.stats_handle()
    }

    /// The generation settings of a request.
    pub fn params_for(&self, request: &GenerationRequest<'_>) -> GenerateParams {
        GenerateParams {
            prompt: request.prompt.to_string(),
            negative_prompt: self.negative_for(request),
            seed: request.seed,
            latents: None,
            batch: 1,
            ..self.template.clone()
        }
    }

    fn negative_for(&self, request: &GenerationRequest<'_>) -> Option<String> {
        if request.negative_prompt.trim().is_empty() {
            self.template.negative_prompt.clone()
        } else {
            Some(request.negative_prompt.to_string())
        }
    }

    fn item(&self, request: &GenerationRequest<'_>) -> PromptItem {
        PromptItem {
            prompt: request.prompt.to_string(),
            negative_prompt: self.negative_for(request),
            seed: request.seed,
        }
    }

    /// Generates the image of a request.
    ///
    /// # Errors
    /// As [`StableDiffusion::generate`].
    pub fn generate_image(&self, request: &GenerationRequest<'_>) -> Result<RgbImage> {
        self.inner.generate_item(request.id, self.item(request))
    }
}

impl<B: Backend> ImageGenerator for SdImageGenerator<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn generate(
        &self,
        request: &GenerationRequest<'_>,
    ) -> std::result::Result<GeneratedImage, StageError> {
        self.inner.generate_request(request, self.item(request))
    }
}
