//! Stable Diffusion as an svgen-data [`ImageGenerator`] (the dataset pipeline's image stage).

use std::io::Cursor;
use std::sync::Mutex;

use burn::tensor::backend::Backend;
use image::{DynamicImage, ImageFormat, RgbImage};
use svgen_data::generate::{GeneratedImage, GenerationRequest, ImageGenerator};
use svgen_data::StageError;

use super::pipeline::{GenerateParams, StableDiffusion};
use crate::error::{Result, TrainError};

/// Stable Diffusion as an svgen-data [`ImageGenerator`]: the request's prompt, negative prompt (the
/// template's when the request has none) and seed, the template's other settings; PNG bytes out.
///
/// The pipeline sits behind a mutex (Burn modules need not be `Sync`), so concurrent workers take
/// turns; the backend parallelises each generation itself.
pub struct SdImageGenerator<B: Backend> {
    sd: Mutex<StableDiffusion<B>>,
    template: GenerateParams,
    name: String,
}

impl<B: Backend> std::fmt::Debug for SdImageGenerator<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdImageGenerator")
            .field("name", &self.name)
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> SdImageGenerator<B> {
    /// Wraps a pipeline; `template` gives steps, guidance, size, scheduler, CLIP skip and the default
    /// negative prompt (its prompt, seed, latents and batch are replaced per request).
    pub fn new(sd: StableDiffusion<B>, template: GenerateParams) -> Self {
        Self {
            sd: Mutex::new(sd),
            template,
            name: "stable-diffusion".into(),
        }
    }

    /// Sets the name recorded in the dataset's `generator` column.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The generation settings of a request.
    pub fn params_for(&self, request: &GenerationRequest<'_>) -> GenerateParams {
        let negative = if request.negative_prompt.trim().is_empty() {
            self.template.negative_prompt.clone()
        } else {
            Some(request.negative_prompt.to_string())
        };
        GenerateParams {
            prompt: request.prompt.to_string(),
            negative_prompt: negative,
            seed: request.seed,
            latents: None,
            batch: 1,
            ..self.template.clone()
        }
    }

    /// Generates the image of a request.
    ///
    /// # Errors
    /// As [`StableDiffusion::generate`].
    pub fn generate_image(&self, request: &GenerationRequest<'_>) -> Result<RgbImage> {
        let params = self.params_for(request);
        let sd = self
            .sd
            .lock()
            .map_err(|_| TrainError::InvalidArgument("the pipeline mutex is poisoned".into()))?;
        let mut images = sd.generate(&params)?;
        images
            .pop()
            .ok_or_else(|| TrainError::InvalidArgument("the pipeline returned no image".into()))
    }
}

impl<B: Backend> ImageGenerator for SdImageGenerator<B> {
    fn name(&self) -> &str {
        &self.name
    }

    fn generate(
        &self,
        request: &GenerationRequest<'_>,
    ) -> std::result::Result<GeneratedImage, StageError> {
        if request.prompt.trim().is_empty() {
            return Err(StageError::bad_input("empty prompt"));
        }
        let image = self.generate_image(request).map_err(|e| match e {
            TrainError::InvalidArgument(m) | TrainError::Tokenizer(m) => StageError::bad_input(m),
            other => StageError::internal(other.to_string()),
        })?;
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(image)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .map_err(|e| StageError::internal(format!("PNG encoding: {e}")))?;
        Ok(GeneratedImage {
            bytes,
            seed: Some(request.seed),
        })
    }
}
