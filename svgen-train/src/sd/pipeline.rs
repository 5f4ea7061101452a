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

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use image::RgbImage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use svgen_eval::clip::ClipTextModel;
use svgen_eval::config::ClipTextConfig;
use svgen_eval::tokenizer::ClipTokenizer;

use super::scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
use super::tokenizer::load_tokenizer;
use super::unet::UNet2DConditionModel;
use super::vae::AutoencoderKL;
use crate::error::{Result, TrainError};

/// Largest image side accepted by [`StableDiffusion::generate`] (memory guard).
pub const MAX_SIDE: usize = 4096;
/// Largest number of images per prompt in one call (memory guard).
pub const MAX_BATCH: usize = 64;

/// `n` standard-normal `f32` values from `rng` (Box–Muller on `f64` uniforms).
pub fn randn_host(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// A tensor of standard-normal values, deterministic in `seed` on every backend and machine (host
/// [`StdRng`] + Box–Muller; not bit-compatible with `torch.randn`).
///
/// ```
/// use svgen_train::sd::pipeline::randn;
/// use svgen_train::CpuBackend;
/// let a = randn::<CpuBackend, 4>(42, [1, 4, 8, 8], &Default::default());
/// let b = randn::<CpuBackend, 4>(42, [1, 4, 8, 8], &Default::default());
/// assert_eq!(a.into_data(), b.into_data());
/// ```
pub fn randn<B: Backend, const D: usize>(
    seed: u64,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::from_data(TensorData::new(randn_host(&mut rng, n), shape), device)
}

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

/// `dir/name`, or [`TrainError::MissingFolder`] naming it.
pub(crate) fn require(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(TrainError::MissingFolder {
            name: name.to_string(),
            path: dir.to_path_buf(),
        })
    }
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
        let index_path = require(dir, "model_index.json")?;
        let index_text =
            std::fs::read_to_string(&index_path).map_err(|e| TrainError::io(&index_path, e))?;
        let index: Value =
            serde_json::from_str(&index_text).map_err(|e| TrainError::json(&index_path, e))?;
        if !index.is_object() {
            return Err(TrainError::json(&index_path, "not a JSON object"));
        }
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
            .and_then(|n| SchedulerKind::from_class_name(n).ok());

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

    fn validate(&self, p: &GenerateParams) -> Result<[usize; 4]> {
        let f = self.vae_scale_factor();
        let bad = |m: String| Err(TrainError::InvalidArgument(m));
        if p.width == 0
            || p.height == 0
            || !p.width.is_multiple_of(f)
            || !p.height.is_multiple_of(f)
        {
            return bad(format!(
                "width and height must be positive multiples of {f}, got {}x{}",
                p.width, p.height
            ));
        }
        if p.width > MAX_SIDE || p.height > MAX_SIDE {
            return bad(format!(
                "image sides above {MAX_SIDE} px are not supported, got {}x{}",
                p.width, p.height
            ));
        }
        if p.batch == 0 || p.batch > MAX_BATCH {
            return bad(format!("batch must be in 1..={MAX_BATCH}, got {}", p.batch));
        }
        if p.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if !p.guidance_scale.is_finite() {
            return bad(format!("guidance_scale {} is not finite", p.guidance_scale));
        }
        let shape = [
            p.batch,
            self.vae.config().latent_channels,
            p.height / f,
            p.width / f,
        ];
        if let Some(l) = &p.latents {
            let n: usize = shape.iter().product();
            if l.len() != n {
                return Err(TrainError::ShapeMismatch {
                    key: "latents".into(),
                    expected: shape.to_vec(),
                    found: vec![l.len()],
                });
            }
            if l.iter().any(|x| !x.is_finite()) {
                return bad("latents contain NaN or infinite values".into());
            }
        }
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
        let shape = self.validate(p)?;
        let [batch, c, h, w] = shape;
        let mut config = self.scheduler_config.clone();
        config.use_karras_sigmas |= p.karras_sigmas;
        let mut scheduler = Scheduler::from_config(p.scheduler, config)?;
        scheduler.set_timesteps(p.steps)?;

        let cfg = p.guidance_scale > 1.0;
        let clip_skip = p.clip_skip.unwrap_or(0);
        let cond = self.encode_prompt_skip(&[p.prompt.as_str()], clip_skip)?;
        let [_, t_len, dim] = cond.dims();
        let cond = cond.expand([batch, t_len, dim]);
        let context = if cfg {
            let negative = p.negative_prompt.as_deref().unwrap_or("");
            let uncond = self
                .encode_prompt_skip(&[negative], clip_skip)?
                .expand([batch, t_len, dim]);
            Tensor::cat(vec![uncond, cond], 0)
        } else {
            cond
        };

        // One RNG per image: image i is the single-image run with seed + i.
        let mut rngs: Vec<StdRng> = (0..batch as u64)
            .map(|i| StdRng::seed_from_u64(p.seed.wrapping_add(i)))
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

/// Converts `[B, 3, H, W]` floats in `[0, 1]` to 8-bit RGB images (`round(255·x)`, as diffusers'
/// `numpy_to_pil`).
///
/// # Errors
/// [`TrainError::ShapeMismatch`] when the tensor does not have 3 channels.
pub fn to_rgb_images<B: Backend>(images: Tensor<B, 4>) -> Result<Vec<RgbImage>> {
    let [b, c, h, w] = images.dims();
    if c != 3 {
        return Err(TrainError::ShapeMismatch {
            key: "image".into(),
            expected: vec![b, 3, h, w],
            found: vec![b, c, h, w],
        });
    }
    let data: Vec<f32> = images
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| TrainError::InvalidArgument(format!("image tensor unreadable: {e:?}")))?;
    let plane = h * w;
    let mut out = Vec::with_capacity(b);
    for i in 0..b {
        let base = i * 3 * plane;
        let mut img = RgbImage::new(w as u32, h as u32);
        for (k, px) in img.pixels_mut().enumerate() {
            for ch in 0..3 {
                let v = data[base + ch * plane + k];
                px.0[ch] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        out.push(img);
    }
    Ok(out)
}
