//! The Stable Diffusion text-to-image pipeline: a diffusers folder (`model_index.json`, `text_encoder/`,
//! `tokenizer/`, `unet/`, `vae/`, `scheduler/`) loaded into Burn, classifier-free guidance with a
//! negative prompt, any of the four schedulers, deterministic seeds, VAE decoding to RGB.
//!
//! What it computes is diffusers' `StableDiffusionPipeline.__call__` (prompt embeddings padded to the
//! text encoder's 77 positions, `uncond` = negative prompt or `""`, guidance
//! `ε_u + g·(ε_c − ε_u)` when `g > 1`, latents times the scheduler's `init_noise_sigma`, decoding of
//! `latents / scaling_factor`, then `clamp(x/2 + 0.5, 0, 1)`, `round(255·x)`). Random numbers come from
//! a seeded host [`StdRng`] (see [`randn`]); they are not bit-compatible with `torch.Generator`, so for
//! parity pass explicit [`GenerateParams::latents`].
//!
//! Real use: point [`StableDiffusion::from_pretrained`] at a Stable Diffusion 1.5 diffusers folder
//! (e.g. a local copy of `stable-diffusion-v1-5/stable-diffusion-v1-5`, f32 or f16 safetensors).
//!
//! ```no_run
//! use svgen_train::sd::pipeline::{GenerateParams, StableDiffusion};
//! use svgen_train::CpuBackend;
//!
//! let sd = StableDiffusion::<CpuBackend>::from_pretrained("models/sd15", &Default::default())?;
//! let params = GenerateParams {
//!     prompt: "a black silhouette of a cat, flat vector icon, white background".into(),
//!     negative_prompt: Some("photo, gradient, shading, text".into()),
//!     steps: 25,
//!     seed: 7,
//!     ..GenerateParams::default()
//! };
//! let images = sd.generate(&params)?;
//! images[0].save("cat.png").expect("writable");
//! # Ok::<(), svgen_train::TrainError>(())
//! ```

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use image::RgbImage;
use rand::rngs::StdRng;
use rand::SeedableRng;
use svgen_eval::clip::ClipTextModel;
use svgen_eval::config::ClipTextConfig;
use svgen_eval::tokenizer::ClipTokenizer;

use super::scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
use super::unet::UNet2DConditionModel;
use crate::diffusion::folder::{read_model_index, require, Component};
use crate::diffusion::generator::PromptItem;
use crate::diffusion::grid::{GridModel, GridPoint, GridSpec};
use crate::diffusion::request::{check_latents, check_size_batch_steps};
use crate::diffusion::tokenizer::load_tokenizer;
use crate::diffusion::vae::AutoencoderKL;
use crate::error::{Result, TrainError};

pub use crate::diffusion::image::to_rgb_images;
pub use crate::diffusion::noise::{randn, randn_host};

/// The components a Stable Diffusion folder needs, with the classes accepted in
/// `model_index.json` (the scheduler entry is not checked: any SD scheduler config drives the
/// implemented samplers).
const COMPONENTS: &[Component] = &[
    Component {
        name: "text_encoder",
        classes: &["CLIPTextModel"],
    },
    Component {
        name: "tokenizer",
        classes: &["CLIPTokenizer", "CLIPTokenizerFast"],
    },
    Component {
        name: "unet",
        classes: &["UNet2DConditionModel"],
    },
    Component {
        name: "vae",
        classes: &["AutoencoderKL"],
    },
];

pub use crate::diffusion::request::{MAX_BATCH, MAX_SIDE};

/// What to generate. `Default` is 512×512, 25 DPM-Solver++ 2M steps, guidance 7.5, seed 0, one image.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt (the unconditional branch of classifier-free guidance); `None` = `""`.
    pub negative_prompt: Option<String>,
    /// Number of inference steps.
    pub steps: usize,
    /// Classifier-free guidance scale `g`; at `g ≤ 1` there is no unconditional pass (as diffusers).
    pub guidance_scale: f64,
    /// Seed. Image `i` of a batch uses `seed + i` (its initial latents and, for Euler ancestral, its
    /// step noise), so it equals a single-image run with that seed.
    pub seed: u64,
    /// Image width in pixels (a multiple of the VAE's downscale factor, 8 for SD).
    pub width: usize,
    /// Image height in pixels (a multiple of the VAE's downscale factor).
    pub height: usize,
    /// The sampler.
    pub scheduler: SchedulerKind,
    /// Karras noise levels (`use_karras_sigmas`) for Euler and DPM-Solver ("DPM++ 2M Karras"); the
    /// folder's own setting is kept when false. Ignored by DDIM and Euler ancestral, as in diffusers.
    pub karras_sigmas: bool,
    /// Explicit initial latents `[batch, latent_channels, height/8, width/8]`, row-major, before the
    /// `init_noise_sigma` scaling (what diffusers' `latents=` argument takes). Overrides the seed for
    /// the initial noise.
    pub latents: Option<Vec<f32>>,
    /// Images per prompt.
    pub batch: usize,
    /// CLIP skip: condition on the hidden state `clip_skip` layers before the last (then the final
    /// LayerNorm), as diffusers' `clip_skip`. `None` or `Some(0)` = the last layer.
    pub clip_skip: Option<usize>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: None,
            steps: 25,
            guidance_scale: 7.5,
            seed: 0,
            width: 512,
            height: 512,
            scheduler: SchedulerKind::DpmSolverMultistep,
            karras_sigmas: false,
            latents: None,
            batch: 1,
            clip_skip: None,
        }
    }
}

/// A Stable Diffusion 1.x/2.x pipeline in Burn.
#[derive(Debug)]
pub struct StableDiffusion<B: Backend> {
    /// The CLIP text encoder (`text_encoder/`).
    pub text_encoder: ClipTextModel<B>,
    /// The CLIP tokenizer (`tokenizer/`), padding/truncating to the text encoder's context length.
    pub tokenizer: ClipTokenizer,
    /// The denoising UNet (`unet/`).
    pub unet: UNet2DConditionModel<B>,
    /// The autoencoder (`vae/`).
    pub vae: AutoencoderKL<B>,
    /// The noise schedule (`scheduler/scheduler_config.json`).
    pub scheduler_config: SchedulerConfig,
    /// The folder's scheduler, when it is one we implement (SD1.5 ships PNDM, which we do not).
    pub default_scheduler: Option<SchedulerKind>,
    device: B::Device,
}

impl<B: Backend> StableDiffusion<B> {
    /// Loads a diffusers Stable Diffusion folder.
    ///
    /// # Errors
    /// [`TrainError::MissingFolder`] naming `model_index.json` or the missing sub-folder
    /// (`text_encoder`, `tokenizer`, `unet`, `vae`, `scheduler`); the loaders' errors (missing tensors,
    /// wrong shapes, unsupported config values); [`TrainError::ShapeMismatch`] when the UNet's
    /// `cross_attention_dim` is not the text encoder's width or the latent channels disagree.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        read_model_index(dir, &[], COMPONENTS)?;
        let te_dir = require(dir, "text_encoder")?;
        let tok_dir = require(dir, "tokenizer")?;
        let unet_dir = require(dir, "unet")?;
        let vae_dir = require(dir, "vae")?;
        let sched_dir = require(dir, "scheduler")?;

        let sched_file = require(&sched_dir, "scheduler_config.json")?;
        let scheduler_config = SchedulerConfig::from_file(&sched_file)?;
        let default_scheduler = scheduler_config
            .class_name
            .as_deref()
            .and_then(|n| SchedulerKind::from_class_name(n).ok())
            .filter(|k| k.is_stable_diffusion());

        let te_config = ClipTextConfig::from_file(require(&te_dir, "config.json")?)?;
        let text_encoder = ClipTextModel::from_pretrained_with_config(&te_config, &te_dir, device)?;
        let tokenizer =
            load_tokenizer(&tok_dir)?.with_context_length(te_config.max_position_embeddings)?;
        let unet = UNet2DConditionModel::<B>::from_pretrained(&unet_dir, device)?;
        let vae = AutoencoderKL::<B>::from_pretrained(&vae_dir, device)?;

        let cross = unet
            .config()
            .cross_attention_dim
            .resolve("cross_attention_dim", unet.config().down_block_types.len())?;
        if cross.iter().any(|&d| d != te_config.hidden_size) {
            return Err(TrainError::ShapeMismatch {
                key: "unet.cross_attention_dim".into(),
                expected: vec![te_config.hidden_size],
                found: cross,
            });
        }
        let latent = vae.config().latent_channels;
        if unet.config().in_channels != latent || unet.config().out_channels != latent {
            return Err(TrainError::ShapeMismatch {
                key: "unet.in_channels/out_channels".into(),
                expected: vec![latent, latent],
                found: vec![unet.config().in_channels, unet.config().out_channels],
            });
        }
        Ok(Self {
            text_encoder,
            tokenizer,
            unet,
            vae,
            scheduler_config,
            default_scheduler,
            device: device.clone(),
        })
    }

    /// The device the models live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The VAE's downscale factor (8 for SD): image sides must be multiples of it.
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config().downscale_factor()
    }

    /// The image side the UNet was trained at (`sample_size × vae_scale_factor`; 512 for SD1.5), if
    /// the UNet config has a `sample_size`.
    pub fn default_image_size(&self) -> Option<usize> {
        self.unet
            .config()
            .sample_size
            .map(|s| s * self.vae_scale_factor())
    }

    /// Sliced attention in the UNet (`None` = full attention), bounding the attention score memory.
    pub fn set_attention_slice(&mut self, slice: Option<usize>) {
        self.unet.set_attention_slice(slice);
    }

    /// A scheduler of `kind` on this model's noise schedule (before `set_timesteps`).
    ///
    /// # Errors
    /// As [`Scheduler::from_config`].
    pub fn scheduler(&self, kind: SchedulerKind) -> Result<Scheduler> {
        Scheduler::from_config(kind, self.scheduler_config.clone())
    }

    /// Prompt embeddings `[B, 77, hidden]`: the text encoder's last hidden state (after the final
    /// LayerNorm) for the padded, truncated token ids, as diffusers' `encode_prompt`.
    ///
    /// # Errors
    /// Tokenizer and text-encoder errors.
    pub fn encode_prompt(&self, prompts: &[&str]) -> Result<Tensor<B, 3>> {
        self.encode_prompt_skip(prompts, 0)
    }

    /// [`StableDiffusion::encode_prompt`] with CLIP skip (`clip_skip` layers before the last, then the
    /// final LayerNorm).
    ///
    /// # Errors
    /// Tokenizer and text-encoder errors, e.g. `clip_skip` ≥ the number of layers.
    pub fn encode_prompt_skip(&self, prompts: &[&str], clip_skip: usize) -> Result<Tensor<B, 3>> {
        if prompts.is_empty() {
            return Err(TrainError::InvalidArgument("no prompts to encode".into()));
        }
        let tokens = self.tokenizer.encode_batch(prompts)?;
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(tokens.input_ids, [tokens.batch, tokens.context_length]),
            &self.device,
        );
        // SD's CLIPTextModel has no `use_attention_mask`: diffusers passes no mask.
        let out = self.text_encoder.forward_skip(ids, None, clip_skip)?;
        Ok(out.last_hidden_state)
    }

    /// Checks generation settings without generating: sizes, steps, batch, scales, explicit
    /// latents, and that the scheduler builds from the folder's schedule.
    ///
    /// # Errors
    /// As [`StableDiffusion::denoise`].
    pub fn check_params(&self, p: &GenerateParams) -> Result<()> {
        self.validate(p)?;
        let mut config = self.scheduler_config.clone();
        config.use_karras_sigmas |= p.karras_sigmas;
        Scheduler::from_config(p.scheduler, config).map(|_| ())
    }

    fn validate(&self, p: &GenerateParams) -> Result<[usize; 4]> {
        let f = self.vae_scale_factor();
        check_size_batch_steps(p.width, p.height, f, p.batch, p.steps)?;
        if !p.guidance_scale.is_finite() {
            return Err(TrainError::InvalidArgument(format!(
                "guidance_scale {} is not finite",
                p.guidance_scale
            )));
        }
        let shape = [
            p.batch,
            self.vae.config().latent_channels,
            p.height / f,
            p.width / f,
        ];
        check_latents(p.latents.as_deref(), &shape)?;
        Ok(shape)
    }

    /// Runs the denoising loop and returns the final latents `[batch, 4, h/8, w/8]` (still scaled by
    /// `scaling_factor`).
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] for bad sizes, step counts, batch sizes or guidance scales;
    /// [`TrainError::ShapeMismatch`] for explicit latents of the wrong length; encoder errors.
    pub fn denoise(&self, p: &GenerateParams) -> Result<Tensor<B, 4>> {
        self.denoise_with_progress(p, &mut |_, _| {})
    }

    /// [`StableDiffusion::denoise`] calling `progress(done, total)` after every denoising step.
    ///
    /// # Errors
    /// As [`StableDiffusion::denoise`].
    pub fn denoise_with_progress(
        &self,
        p: &GenerateParams,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor<B, 4>> {
        self.validate(p)?;
        // Image i of a batch is the single-image run with seed + i.
        let items: Vec<PromptItem> = (0..p.batch as u64)
            .map(|i| PromptItem {
                prompt: p.prompt.clone(),
                negative_prompt: p.negative_prompt.clone(),
                seed: p.seed.wrapping_add(i),
            })
            .collect();
        self.denoise_items(&items, p, progress)
    }

    /// Denoises one image per item (its own prompt, negative prompt and seed) in one batch, with
    /// `p`'s other settings (its prompt, negative prompt, seed and batch are not used; explicit
    /// `latents` must cover every item). Image `i` equals the single-image run of item `i`.
    ///
    /// # Errors
    /// As [`StableDiffusion::denoise`]; [`TrainError::InvalidArgument`] for no items or more than
    /// [`MAX_BATCH`].
    pub fn denoise_items(
        &self,
        items: &[PromptItem],
        p: &GenerateParams,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor<B, 4>> {
        let shape = self.validate(&GenerateParams {
            batch: items.len(),
            ..p.clone()
        })?;
        svgen_eval::gpu::note_first_step::<B>("denoising step");
        let [batch, c, h, w] = shape;
        let mut config = self.scheduler_config.clone();
        config.use_karras_sigmas |= p.karras_sigmas;
        let mut scheduler = Scheduler::from_config(p.scheduler, config)?;
        scheduler.set_timesteps(p.steps)?;

        let cfg = p.guidance_scale > 1.0;
        let clip_skip = p.clip_skip.unwrap_or(0);
        let cond = self.encode_items(items.iter().map(|i| i.prompt.as_str()), clip_skip)?;
        let context = if cfg {
            let negatives = items
                .iter()
                .map(|i| i.negative_prompt.as_deref().unwrap_or(""));
            let uncond = self.encode_items(negatives, clip_skip)?;
            Tensor::cat(vec![uncond, cond], 0)
        } else {
            cond
        };

        // One RNG per image, seeded with its item's seed.
        let mut rngs: Vec<StdRng> = items
            .iter()
            .map(|i| StdRng::seed_from_u64(i.seed))
            .collect();
        let per_image = c * h * w;
        let init: Vec<f32> = match &p.latents {
            Some(l) => l.clone(),
            None => rngs
                .iter_mut()
                .flat_map(|r| randn_host(r, per_image))
                .collect(),
        };
        let mut latents = Tensor::<B, 4>::from_data(TensorData::new(init, shape), &self.device)
            .mul_scalar(scheduler.init_noise_sigma() as f32);

        let timesteps = scheduler.timesteps().to_vec();
        let passes = if cfg { 2 * batch } else { batch };
        for (i, &t) in timesteps.iter().enumerate() {
            let input = if cfg {
                Tensor::cat(vec![latents.clone(), latents.clone()], 0)
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(input, i)?;
            let timestep = Tensor::<B, 1>::from_data(
                TensorData::new(vec![t as f32; passes], [passes]),
                &self.device,
            );
            let pred = self.unet.forward(input, timestep, context.clone());
            let pred = if cfg {
                let uncond = pred.clone().narrow(0, 0, batch);
                let text = pred.narrow(0, batch, batch);
                uncond.clone() + (text - uncond).mul_scalar(p.guidance_scale as f32)
            } else {
                pred
            };
            let noise = (p.scheduler == SchedulerKind::EulerAncestral).then(|| {
                let v: Vec<f32> = rngs
                    .iter_mut()
                    .flat_map(|r| randn_host(r, per_image))
                    .collect();
                Tensor::<B, 4>::from_data(TensorData::new(v, shape), &self.device)
            });
            latents = scheduler.step(pred, i, latents, noise)?;
            progress(i + 1, timesteps.len());
        }
        Ok(latents)
    }

    /// Prompt embeddings of several prompts, encoding each distinct prompt once.
    fn encode_items<'a>(
        &self,
        prompts: impl Iterator<Item = &'a str>,
        clip_skip: usize,
    ) -> Result<Tensor<B, 3>> {
        let prompts: Vec<&str> = prompts.collect();
        let mut distinct: Vec<&str> = Vec::new();
        let index: Vec<usize> = prompts
            .iter()
            .map(|p| match distinct.iter().position(|d| d == p) {
                Some(i) => i,
                None => {
                    distinct.push(p);
                    distinct.len() - 1
                }
            })
            .collect();
        let encoded = self.encode_prompt_skip(&distinct, clip_skip)?;
        if distinct.len() == 1 {
            let [_, t, d] = encoded.dims();
            return Ok(encoded.expand([prompts.len(), t, d]));
        }
        let ids = Tensor::<B, 1, Int>::from_data(
            TensorData::new(
                index.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                [index.len()],
            ),
            &self.device,
        );
        Ok(encoded.select(0, ids))
    }

    /// Generates one RGB image per item (see [`StableDiffusion::denoise_items`]).
    ///
    /// # Errors
    /// As [`StableDiffusion::denoise_items`].
    pub fn generate_items(
        &self,
        items: &[PromptItem],
        p: &GenerateParams,
    ) -> Result<Vec<RgbImage>> {
        let latents = self.denoise_items(items, p, &mut |_, _| {})?;
        to_rgb_images(self.decode_latents(latents))
    }

    /// Decodes diffusion latents to images `[B, 3, H, W]` in `[0, 1]` (diffusers' `output_type="np"`
    /// before the transpose): `vae.decode(latents / scaling_factor)`, then `clamp(x/2 + 0.5, 0, 1)`.
    /// Images are decoded one at a time to bound memory.
    pub fn decode_latents(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let scale = self.vae.config().scaling_factor as f32;
        let shift = self.vae.config().shift_factor.unwrap_or(0.0) as f32;
        let [b, _, h, w] = latents.dims();
        if b == 0 {
            let f = self.vae_scale_factor();
            return Tensor::zeros([0, 3, h * f, w * f], &latents.device());
        }
        let images: Vec<Tensor<B, 4>> = (0..b)
            .map(|i| {
                let z = latents
                    .clone()
                    .narrow(0, i, 1)
                    .div_scalar(scale)
                    .add_scalar(shift);
                self.vae
                    .decode(z)
                    .div_scalar(2.0)
                    .add_scalar(0.5)
                    .clamp(0.0, 1.0)
            })
            .collect();
        Tensor::cat(images, 0)
    }

    /// Generates images as a float tensor `[batch, 3, H, W]` in `[0, 1]`.
    ///
    /// # Errors
    /// As [`StableDiffusion::denoise`].
    pub fn generate_float(&self, p: &GenerateParams) -> Result<Tensor<B, 4>> {
        let latents = self.denoise(p)?;
        Ok(self.decode_latents(latents))
    }

    /// Generates `p.batch` RGB images.
    ///
    /// # Errors
    /// As [`StableDiffusion::denoise`].
    pub fn generate(&self, p: &GenerateParams) -> Result<Vec<RgbImage>> {
        to_rgb_images(self.generate_float(p)?)
    }
}

impl<B: Backend> GridModel for StableDiffusion<B> {
    fn generate_point(&self, spec: &GridSpec, point: &GridPoint) -> Result<RgbImage> {
        let params = GenerateParams {
            prompt: point.prompt.clone(),
            negative_prompt: spec.negative_prompt.clone(),
            steps: point.steps,
            guidance_scale: point.guidance_scale,
            seed: point.seed,
            width: spec.width,
            height: spec.height,
            scheduler: point.scheduler,
            karras_sigmas: spec.karras_sigmas,
            latents: None,
            batch: 1,
            clip_skip: spec.clip_skip,
        };
        self.generate(&params)?
            .pop()
            .ok_or_else(|| TrainError::InvalidArgument("the pipeline returned no image".into()))
    }
}
