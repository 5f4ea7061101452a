//! FLUX as an svgen-data [`ImageGenerator`] (the dataset pipeline's image stage), batched on a
//! worker thread (see [`crate::diffusion::generator`]).

use std::time::Duration;

use burn::tensor::backend::Backend;
use image::RgbImage;
use svgen_data::generate::{GeneratedImage, GenerationRequest, ImageGenerator};
use svgen_data::StageError;

use super::pipeline::{FluxLoadOptions, FluxParams, FluxPipeline};
use crate::diffusion::generator::{
    BatchOutput, BatchPipeline, BatchedGenerator, GenerationStats, InProcessOptions, PromptItem,
    StatsHandle,
};
use crate::diffusion::scheduler_kind::SchedulerKind;
use crate::error::{Result, TrainError};

struct FluxBatch<B: Backend> {
    flux: FluxPipeline<B>,
    template: FluxParams,
}

impl<B: Backend> BatchPipeline for FluxBatch<B> {
    fn generate_batch(&mut self, items: &[PromptItem]) -> Result<BatchOutput> {
        let (images, truncated) = self.flux.generate_items(items, &self.template)?;
        Ok(BatchOutput { images, truncated })
    }
}

/// FLUX as an svgen-data [`ImageGenerator`]: the request's prompt, negative prompt (the
/// template's when the request has none; used only with `true_cfg_scale > 1`) and seed, the
/// template's other settings; PNG bytes out. Concurrent requests are batched (up to
/// [`FluxImageGenerator::with_batch`]); each image equals the single-image run of its seed.
/// Prompts cut by T5's `max_sequence_length` (or CLIP's 77 tokens) are counted in
/// [`FluxImageGenerator::stats`].
pub struct FluxImageGenerator<B: Backend> {
    inner: BatchedGenerator,
    template: FluxParams,
    _backend: std::marker::PhantomData<fn() -> B>,
}

impl<B: Backend> std::fmt::Debug for FluxImageGenerator<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FluxImageGenerator")
            .field("name", &self.inner.name())
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> FluxImageGenerator<B> {
    /// Wraps a pipeline; `template` gives steps, size, scales, the T5 limit and the default
    /// negative prompt (its prompt, seed, latents and batch are replaced per request).
    ///
    /// # Errors
    /// [`TrainError::Io`] when the worker thread cannot be started.
    pub fn new(flux: FluxPipeline<B>, template: FluxParams) -> Result<Self> {
        let batch = FluxBatch {
            flux,
            template: FluxParams {
                latents: None,
                batch: 1,
                ..template.clone()
            },
        };
        Ok(Self {
            inner: BatchedGenerator::spawn(batch, "flux", 1, Duration::ZERO)?,
            template,
            _backend: std::marker::PhantomData,
        })
    }

    /// Loads the FLUX folder of `options` (bf16 transformer and T5 where the backend computes in
    /// bf16, unless `options.bf16` says otherwise) and starts a generator with the options'
    /// settings over the checkpoint's defaults (schnell: 4 steps, 1024², T5 limit 256; dev: 28
    /// steps, guidance 3.5, limit 512), the given default negative prompt, batches of
    /// `options.batch`.
    ///
    /// # Errors
    /// Loading errors ([`FluxPipeline::from_pretrained`]); a LoRA or a Stable Diffusion sampler,
    /// which FLUX does not take, refused by name.
    pub fn from_options(
        options: &InProcessOptions,
        negative_prompt: Option<String>,
        device: &B::Device,
    ) -> Result<Self> {
        if let Some(lora) = &options.lora {
            return Err(TrainError::InvalidArgument(format!(
                "LoRA files are not supported for FLUX yet ({})",
                lora.display()
            )));
        }
        if let Some(k) = options
            .scheduler
            .filter(|k| *k != SchedulerKind::FlowMatchEuler)
        {
            return Err(TrainError::UnsupportedValue {
                key: "scheduler".into(),
                value: format!(
                    "{} (FLUX runs FlowMatchEulerDiscreteScheduler only)",
                    k.class_name()
                ),
            });
        }
        let load = match options.bf16 {
            None => FluxLoadOptions::for_backend::<B>(),
            Some(true) => FluxLoadOptions {
                transformer_dtype: Some(burn::tensor::DType::BF16),
                text_encoder_2_dtype: Some(burn::tensor::DType::BF16),
            },
            Some(false) => FluxLoadOptions {
                transformer_dtype: Some(burn::tensor::DType::F32),
                text_encoder_2_dtype: Some(burn::tensor::DType::F32),
            },
        };
        let flux = FluxPipeline::<B>::from_pretrained(&options.model, &load, device)?;
        let d = if flux.transformer.config().guidance_embeds {
            FluxParams::dev()
        } else {
            FluxParams::schnell()
        };
        let template = FluxParams {
            negative_prompt,
            true_cfg_scale: options.true_cfg_scale.unwrap_or(d.true_cfg_scale),
            steps: options.steps.unwrap_or(d.steps),
            guidance_scale: options.guidance.unwrap_or(d.guidance_scale),
            width: options.width.unwrap_or(d.width),
            height: options.height.unwrap_or(d.height),
            max_sequence_length: options
                .max_sequence_length
                .unwrap_or_else(|| flux.default_max_sequence_length()),
            ..d
        };
        let g = Self::new(flux, template)?;
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

    /// The generation settings.
    pub fn template(&self) -> &FluxParams {
        &self.template
    }

    /// The statistics so far (images, batches, failures, truncated prompts).
    pub fn stats(&self) -> GenerationStats {
        self.inner.stats()
    }

    /// A handle on the statistics that outlives the generator.
    pub fn stats_handle(&self) -> StatsHandle {
        self.inner.stats_handle()
    }

    fn item(&self, request: &GenerationRequest<'_>) -> PromptItem {
        let negative = if request.negative_prompt.trim().is_empty() {
            self.template.negative_prompt.clone()
        } else {
            Some(request.negative_prompt.to_string())
        };
        PromptItem {
            prompt: request.prompt.to_string(),
            negative_prompt: negative,
            seed: request.seed,
        }
    }

    /// Generates the image of a request.
    ///
    /// # Errors
    /// As [`FluxPipeline::generate_items`].
    pub fn generate_image(&self, request: &GenerationRequest<'_>) -> Result<RgbImage> {
        self.inner.generate_item(request.id, self.item(request))
    }
}

impl<B: Backend> ImageGenerator for FluxImageGenerator<B> {
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
