//! The FLUX.1 text-to-image pipeline (diffusers' `FluxPipeline`): a diffusers folder
//! (`model_index.json`, `transformer/`, `text_encoder/` (CLIP-L, pooled output),
//! `text_encoder_2/` (T5 v1.1), `tokenizer/`, `tokenizer_2/`, `vae/`, `scheduler/`) loaded
//! into Burn.
//!
//! What it computes is `FluxPipeline.__call__`: the CLIP pooled embedding and the T5 last hidden
//! state of the prompt (T5 padded to `max_sequence_length` without attention mask, prompts longer
//! than that truncated, as diffusers does), Gaussian latents `[B, 16, H/8, W/8]` packed into 2 × 2
//! patches `[B, (H/16)(W/16), 64]` with position ids `[0, row, column]`, σ =
//! `linspace(1, 1/n, n)` shifted by the scheduler (dynamically, by `mu` from the image sequence
//! length, when the scheduler says so), Euler steps of the transformer's velocity, optional true
//! classifier-free guidance with a negative prompt (`true_cfg_scale > 1`), the guidance embedding
//! for guidance-distilled checkpoints, then unpacking, `latents / scaling_factor + shift_factor`,
//! the VAE decoder and `clamp(x/2 + 0.5, 0, 1)`. Random numbers come from a seeded host RNG per
//! image (see [`crate::diffusion::noise`]); for parity pass explicit [`FluxParams::latents`].
//!
//! ```no_run
//! use svgen_train::flux::{FluxLoadOptions, FluxParams, FluxPipeline};
//! use svgen_train::CpuBackend;
//!
//! let device = Default::default();
//! let mut flux = FluxPipeline::<CpuBackend>::from_pretrained(
//!     "models/FLUX.1-schnell",
//!     &FluxLoadOptions::for_backend::<CpuBackend>(),
//!     &device,
//! )?;
//! let params = FluxParams {
//!     prompt: "minimal fox with clean outlines, flat fills, high contrast".into(),
//!     width: 512,
//!     height: 512,
//!     seed: 7,
//!     ..FluxParams::schnell()
//! };
//! let embeds = flux.encode_prompts(&[params.prompt.as_str()], 256)?;
//! flux.free_text_encoders(); // the 4.7B-parameter T5 is not needed any more
//! let images = flux.generate_from_embeds(&embeds, None, &[params.seed], &params)?;
//! images[0].save("fox.png").expect("writable");
//! # Ok::<(), svgen_train::TrainError>(())
//! ```

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use image::RgbImage;
use rand::rngs::StdRng;
use rand::SeedableRng;
use svgen_eval::clip::ClipTextModel;
use svgen_eval::config::ClipTextConfig;
use svgen_eval::tokenizer::ClipTokenizer;

use super::scheduler::{FlowMatchEulerScheduler, FlowMatchSchedulerConfig};
use super::transformer::FluxTransformer2DModel;
use crate::diffusion::folder::{read_model_index, require, Component};
use crate::diffusion::generator::PromptItem;
use crate::diffusion::grid::{GridModel, GridPoint, GridSpec};
use crate::diffusion::image::to_rgb_images;
use crate::diffusion::noise::randn_host;
use crate::diffusion::request::{check_latents, check_size_batch_steps};
use crate::diffusion::scheduler_kind::SchedulerKind;
use crate::diffusion::tokenizer::load_tokenizer;
use crate::diffusion::vae::AutoencoderKL;
use crate::error::{Result, TrainError};
use crate::t5::{T5EncoderModel, T5Tokenizer};

pub use crate::diffusion::request::{MAX_BATCH, MAX_SIDE};
/// diffusers' limit on `max_sequence_length`.
pub const MAX_SEQUENCE_LENGTH: usize = 512;

/// The components of a FLUX folder with the classes accepted in `model_index.json`.
const COMPONENTS: &[Component] = &[
    Component {
        name: "transformer",
        classes: &["FluxTransformer2DModel"],
    },
    Component {
        name: "text_encoder",
        classes: &["CLIPTextModel"],
    },
    Component {
        name: "text_encoder_2",
        classes: &["T5EncoderModel"],
    },
    Component {
        name: "tokenizer",
        classes: &["CLIPTokenizer", "CLIPTokenizerFast"],
    },
    Component {
        name: "tokenizer_2",
        classes: &["T5TokenizerFast", "T5Tokenizer"],
    },
    Component {
        name: "vae",
        classes: &["AutoencoderKL"],
    },
    Component {
        name: "scheduler",
        classes: &["FlowMatchEulerDiscreteScheduler"],
    },
];

/// How a FLUX folder is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FluxLoadOptions {
    /// dtype of the transformer's weights and activations (`None`: the device default, f32).
    pub transformer_dtype: Option<DType>,
    /// dtype of the T5 encoder (`None`: the device default).
    pub text_encoder_2_dtype: Option<DType>,
}

impl FluxLoadOptions {
    /// bf16 transformer and T5 where the backend computes in bf16 (every backend but the CPU
    /// `Flex`, whose host kernels are f32), f32 on the CPU.
    pub fn for_backend<B: Backend>() -> Self {
        if crate::cpu::is_flex::<B>() {
            Self::default()
        } else {
            Self {
                transformer_dtype: Some(DType::BF16),
                text_encoder_2_dtype: Some(DType::BF16),
            }
        }
    }

    /// Options for a `--dtype` flag: `auto` ([`Self::for_backend`]) or `f32` / `bf16` / `f16`
    /// for both the transformer and T5, checked against backend `B` before anything is loaded
    /// ([`svgen_eval::dtype`]).
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] for an unknown value; [`TrainError::DtypeNotSupported`]
    /// when `B` cannot compute in the dtype.
    pub fn from_flag<B: Backend>(flag: &str, device: &B::Device) -> Result<Self> {
        if flag == "auto" {
            return Ok(Self::for_backend::<B>());
        }
        let dtype = svgen_eval::dtype::dtype_for_backend::<B>(flag, device)?;
        Ok(Self {
            transformer_dtype: Some(dtype),
            text_encoder_2_dtype: Some(dtype),
        })
    }
}

/// What to generate. [`FluxParams::schnell`] gives FLUX.1-schnell's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FluxParams {
    /// The prompt (both encoders).
    pub prompt: String,
    /// The negative prompt, used only with `true_cfg_scale > 1` (as diffusers).
    pub negative_prompt: Option<String>,
    /// True classifier-free guidance scale (`true_cfg_scale`; off at ≤ 1).
    pub true_cfg_scale: f64,
    /// Inference steps.
    pub steps: usize,
    /// Distilled guidance (`guidance_scale`), used by guidance-distilled checkpoints (dev) only.
    pub guidance_scale: f64,
    /// Seed of image 0; image `i` of a batch uses `seed + i`.
    pub seed: u64,
    /// Width in pixels (a multiple of 16).
    pub width: usize,
    /// Height in pixels (a multiple of 16).
    pub height: usize,
    /// T5 token limit (`max_sequence_length`, ≤ 512); longer prompts are truncated.
    pub max_sequence_length: usize,
    /// Images per prompt.
    pub batch: usize,
    /// Explicit packed latents `[batch, (H/16)·(W/16), 4·latent_channels]`, row-major (what
    /// diffusers' `latents=` takes); they override the seed.
    pub latents: Option<Vec<f32>>,
    /// Karras σ spacing (`use_karras_sigmas`), over the folder's setting.
    pub karras_sigmas: bool,
}

impl Default for FluxParams {
    fn default() -> Self {
        Self::schnell()
    }
}

impl FluxParams {
    /// FLUX.1-schnell: 4 steps, guidance unused, 1024², T5 limit 256.
    pub fn schnell() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: None,
            true_cfg_scale: 1.0,
            steps: 4,
            guidance_scale: 0.0,
            seed: 0,
            width: 1024,
            height: 1024,
            max_sequence_length: 256,
            batch: 1,
            latents: None,
            karras_sigmas: false,
        }
    }

    /// FLUX.1-dev: 28 steps, guidance 3.5, 1024², T5 limit 512.
    pub fn dev() -> Self {
        Self {
            steps: 28,
            guidance_scale: 3.5,
            max_sequence_length: 512,
            ..Self::schnell()
        }
    }
}

/// Prompt embeddings of a batch: T5's last hidden state and CLIP's pooled output.
#[derive(Debug, Clone)]
pub struct FluxPromptEmbeds<B: Backend> {
    /// `[B, max_sequence_length, 4096]` (T5).
    pub prompt_embeds: Tensor<B, 3>,
    /// `[B, 768]` (CLIP pooled output).
    pub pooled_prompt_embeds: Tensor<B, 2>,
    /// Per prompt: the encoders that cut it (`"t5 (256 tokens)"`, `"clip (77 tokens)"`).
    pub truncated: Vec<Vec<String>>,
}

impl<B: Backend> FluxPromptEmbeds<B> {
    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.prompt_embeds.dims()[0]
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows `index` (with repeats), e.g. one embedding per image.
    fn select(&self, index: &[usize]) -> Self {
        let device = self.prompt_embeds.device();
        let ids = Tensor::<B, 1, Int>::from_data(
            TensorData::new(
                index.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                [index.len()],
            ),
            &device,
        );
        Self {
            prompt_embeds: self.prompt_embeds.clone().select(0, ids.clone()),
            pooled_prompt_embeds: self.pooled_prompt_embeds.clone().select(0, ids),
            truncated: index
                .iter()
                .map(|&i| self.truncated.get(i).cloned().unwrap_or_default())
                .collect(),
        }
    }
}

/// A FLUX.1 pipeline in Burn.
#[derive(Debug)]
pub struct FluxPipeline<B: Backend> {
    /// The rectified-flow transformer (`transformer/`).
    pub transformer: FluxTransformer2DModel<B>,
    /// The 16-channel autoencoder (`vae/`).
    pub vae: AutoencoderKL<B>,
    /// CLIP-L (`text_encoder/`); `None` once freed ([`FluxPipeline::free_text_encoders`]).
    pub text_encoder: Option<ClipTextModel<B>>,
    /// T5 v1.1 (`text_encoder_2/`); `None` once freed.
    pub text_encoder_2: Option<T5EncoderModel<B>>,
    /// The CLIP tokenizer (`tokenizer/`, 77 positions).
    pub tokenizer: ClipTokenizer,
    /// The T5 tokenizer (`tokenizer_2/tokenizer.json`).
    pub tokenizer_2: T5Tokenizer,
    /// The scheduler configuration (`scheduler/scheduler_config.json`).
    pub scheduler_config: FlowMatchSchedulerConfig,
    /// The folder and options it was loaded with (to reload freed text encoders).
    source: (PathBuf, FluxLoadOptions),
    device: B::Device,
}

impl<B: Backend> FluxPipeline<B> {
    /// Loads a diffusers FLUX folder.
    ///
    /// # Errors
    /// [`TrainError::MissingFolder`] naming `model_index.json`, the missing sub-folder or
    /// `tokenizer_2/tokenizer.json`; [`TrainError::UnsupportedValue`] naming the component of
    /// `model_index.json` or the config key whose class or value is not implemented;
    /// [`TrainError::UnknownScheduler`] for a scheduler other than
    /// `FlowMatchEulerDiscreteScheduler`; the loaders' errors (missing or wrong-shaped tensors
    /// naming the key); [`TrainError::ShapeMismatch`] naming the config keys when the components
    /// disagree (`joint_attention_dim` vs T5's `d_model`, `pooled_projection_dim` vs CLIP's width,
    /// `in_channels` vs the VAE's latent channels).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        options: &FluxLoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        read_model_index(dir, &["FluxPipeline"], COMPONENTS)?;
        let folder = |name: &str| require(dir, name);
        let (tr_dir, te_dir, te2_dir) = (
            folder("transformer")?,
            folder("text_encoder")?,
            folder("text_encoder_2")?,
        );
        let (tok_dir, tok2_dir, vae_dir, sched_dir) = (
            folder("tokenizer")?,
            folder("tokenizer_2")?,
            folder("vae")?,
            folder("scheduler")?,
        );
        let scheduler_config =
            FlowMatchSchedulerConfig::from_file(require(&sched_dir, "scheduler_config.json")?)?;
        let tokenizer_2 = T5Tokenizer::from_dir(&tok2_dir)?;
        let te_config = ClipTextConfig::from_file(require(&te_dir, "config.json")?)?;
        let tokenizer =
            load_tokenizer(&tok_dir)?.with_context_length(te_config.max_position_embeddings)?;
        let transformer =
            FluxTransformer2DModel::from_pretrained(&tr_dir, options.transformer_dtype, device)?;
        let tc = transformer.config().clone();
        let text_encoder_2 = T5EncoderModel::from_pretrained_with_dtype(
            &te2_dir,
            options.text_encoder_2_dtype,
            device,
        )?;
        let text_encoder = ClipTextModel::from_pretrained_with_config(&te_config, &te_dir, device)?;
        let vae = AutoencoderKL::<B>::from_pretrained(&vae_dir, device)?;
        let mismatch = |key: &str, expected: usize, found: usize| TrainError::ShapeMismatch {
            key: key.into(),
            expected: vec![expected],
            found: vec![found],
        };
        let d_model = text_encoder_2.config().d_model;
        if tc.joint_attention_dim != d_model {
            return Err(mismatch(
                "transformer.joint_attention_dim (text_encoder_2.d_model)",
                d_model,
                tc.joint_attention_dim,
            ));
        }
        if tc.pooled_projection_dim != te_config.hidden_size {
            return Err(mismatch(
                "transformer.pooled_projection_dim (text_encoder.hidden_size)",
                te_config.hidden_size,
                tc.pooled_projection_dim,
            ));
        }
        let latent = vae.config().latent_channels;
        if tc.latent_channels() != latent || tc.out_channels() != tc.in_channels {
            return Err(TrainError::ShapeMismatch {
                key: "transformer.in_channels/out_channels (4 × vae.latent_channels)".into(),
                expected: vec![4 * latent, 4 * latent],
                found: vec![tc.in_channels, tc.out_channels()],
            });
        }
        if tokenizer_2.vocab_size() > text_encoder_2.config().vocab_size {
            return Err(mismatch(
                "tokenizer_2 vocabulary (text_encoder_2.vocab_size)",
                text_encoder_2.config().vocab_size,
                tokenizer_2.vocab_size(),
            ));
        }
        Ok(Self {
            transformer,
            vae,
            text_encoder: Some(text_encoder),
            text_encoder_2: Some(text_encoder_2),
            tokenizer,
            tokenizer_2,
            scheduler_config,
            source: (dir.to_path_buf(), *options),
            device: device.clone(),
        })
    }

    /// Loads the text encoders again after [`FluxPipeline::free_text_encoders`] (from the folder
    /// the pipeline was loaded from); a no-op for those still resident. With
    /// `free_text_encoders` after each encoding, peak memory is the larger of (text encoders +
    /// transformer + VAE weights, encoding activations) and (transformer + VAE weights, denoising
    /// activations) instead of their sum, at the cost of reading the encoders once per batch.
    ///
    /// # Errors
    /// As [`FluxPipeline::from_pretrained`] for `text_encoder/` and `text_encoder_2/`.
    pub fn load_text_encoders(&mut self) -> Result<()> {
        let (dir, options) = &self.source;
        if self.text_encoder_2.is_none() {
            let te2_dir = require(dir, "text_encoder_2")?;
            self.text_encoder_2 = Some(T5EncoderModel::from_pretrained_with_dtype(
                &te2_dir,
                options.text_encoder_2_dtype,
                &self.device,
            )?);
        }
        if self.text_encoder.is_none() {
            let te_dir = require(dir, "text_encoder")?;
            let te_config = ClipTextConfig::from_file(require(&te_dir, "config.json")?)?;
            self.text_encoder = Some(ClipTextModel::from_pretrained_with_config(
                &te_config,
                &te_dir,
                &self.device,
            )?);
        }
        Ok(())
    }

    /// Whether both text encoders are resident.
    pub fn has_text_encoders(&self) -> bool {
        self.text_encoder.is_some() && self.text_encoder_2.is_some()
    }

    /// The device the models live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The VAE's downscale factor (8).
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config().downscale_factor()
    }

    /// Image sides must be multiples of this (the VAE factor × the 2 × 2 packing: 16).
    pub fn size_multiple(&self) -> usize {
        2 * self.vae_scale_factor()
    }

    /// Drops both text encoders (their memory is released): after encoding the prompts, the
    /// transformer and the VAE are all generation needs. [`FluxPipeline::encode_prompts`] fails
    /// afterwards.
    pub fn free_text_encoders(&mut self) {
        self.text_encoder = None;
        self.text_encoder_2 = None;
    }

    /// The default T5 limit of this checkpoint: 256 without a guidance embedding (schnell), 512
    /// with one (dev), as the model cards recommend.
    pub fn default_max_sequence_length(&self) -> usize {
        if self.transformer.config().guidance_embeds {
            512
        } else {
            256
        }
    }

    /// Encodes prompts with both text encoders: CLIP's pooled output (77 tokens, truncated) and
    /// T5's last hidden state (padded and truncated to `max_sequence_length`, no mask), as
    /// diffusers' `encode_prompt`. Each distinct prompt is encoded once.
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] for no prompts, a limit of 0 or above 512, or freed text
    /// encoders; tokenizer and encoder errors.
    pub fn encode_prompts(
        &self,
        prompts: &[&str],
        max_sequence_length: usize,
    ) -> Result<FluxPromptEmbeds<B>> {
        if prompts.is_empty() {
            return Err(TrainError::InvalidArgument("no prompts to encode".into()));
        }
        if max_sequence_length == 0 || max_sequence_length > MAX_SEQUENCE_LENGTH {
            return Err(TrainError::InvalidArgument(format!(
                "max_sequence_length must be in 1..={MAX_SEQUENCE_LENGTH}, got {max_sequence_length}"
            )));
        }
        let (Some(clip), Some(t5)) = (&self.text_encoder, &self.text_encoder_2) else {
            return Err(TrainError::InvalidArgument(
                "the text encoders were freed; encode the prompts before free_text_encoders()"
                    .into(),
            ));
        };
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
        let clip_tokens = self.tokenizer.encode_batch(&distinct)?;
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(
                clip_tokens.input_ids,
                [clip_tokens.batch, clip_tokens.context_length],
            ),
            &self.device,
        );
        let pooled = clip.forward(ids, None)?.pooler_output;
        let t5_tokens = self
            .tokenizer_2
            .encode_batch(&distinct, max_sequence_length)?;
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(t5_tokens.input_ids, [t5_tokens.batch, t5_tokens.length]),
            &self.device,
        );
        let hidden = t5.forward(ids, None)?;
        let clip_limit = format!("clip ({} tokens)", clip_tokens.context_length);
        let t5_limit = format!("t5 ({max_sequence_length} tokens)");
        let truncated = clip_tokens
            .truncated
            .iter()
            .zip(&t5_tokens.truncated)
            .map(|(&c, t)| {
                let mut v = Vec::new();
                if t.is_some() {
                    v.push(t5_limit.clone());
                }
                if c {
                    v.push(clip_limit.clone());
                }
                v
            })
            .collect();
        let embeds = FluxPromptEmbeds {
            prompt_embeds: hidden.cast(DType::F32),
            pooled_prompt_embeds: pooled.cast(DType::F32),
            truncated,
        };
        Ok(if distinct.len() == prompts.len() {
            embeds
        } else {
            embeds.select(&index)
        })
    }

    /// Checks generation settings without generating (sizes, steps, batch, scales, the T5 limit,
    /// explicit latents).
    ///
    /// # Errors
    /// As [`FluxPipeline::generate`].
    pub fn check_params(&self, p: &FluxParams) -> Result<()> {
        if p.max_sequence_length == 0 || p.max_sequence_length > MAX_SEQUENCE_LENGTH {
            return Err(TrainError::InvalidArgument(format!(
                "max_sequence_length must be in 1..={MAX_SEQUENCE_LENGTH}, got {}",
                p.max_sequence_length
            )));
        }
        self.validate(p, p.batch).map(|_| ())
    }

    fn validate(&self, p: &FluxParams, batch: usize) -> Result<[usize; 3]> {
        let f = self.size_multiple();
        check_size_batch_steps(p.width, p.height, f, batch, p.steps)?;
        for (name, v) in [
            ("guidance_scale", p.guidance_scale),
            ("true_cfg_scale", p.true_cfg_scale),
        ] {
            if !v.is_finite() {
                return Err(TrainError::InvalidArgument(format!(
                    "{name} {v} is not finite"
                )));
            }
        }
        let tokens = (p.height / f) * (p.width / f);
        let shape = [batch, tokens, self.transformer.config().in_channels];
        check_latents(p.latents.as_deref(), &shape)?;
        Ok(shape)
    }

    /// Gaussian latents for `seeds` (one stream per image), drawn in the unpacked layout
    /// `[C, H/8, W/8]` as diffusers draws them, then packed.
    fn noise_latents(&self, seeds: &[u64], height: usize, width: usize) -> Tensor<B, 3> {
        let c = self.transformer.config().latent_channels();
        let f = self.vae_scale_factor();
        let (h, w) = (height / f, width / f);
        let values: Vec<f32> = seeds
            .iter()
            .flat_map(|&s| randn_host(&mut StdRng::seed_from_u64(s), c * h * w))
            .collect();
        pack_latents(Tensor::from_data(
            TensorData::new(values, [seeds.len(), c, h, w]),
            &self.device,
        ))
    }

    /// The denoising loop: final packed latents `[B, tokens, 4·C]` for `embeds` (one row per
    /// image), optional negative embeddings (true CFG when `p.true_cfg_scale > 1`), one seed per
    /// image (ignored with explicit `p.latents`). `p.prompt`, `p.seed` and `p.batch` are not
    /// used. `progress(done, total)` is called after every step.
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] for bad sizes, steps, scales, or `seeds` / negative
    /// embeddings that do not match the embeddings' batch; [`TrainError::ShapeMismatch`] for
    /// explicit latents of the wrong length.
    pub fn denoise(
        &self,
        embeds: &FluxPromptEmbeds<B>,
        negative: Option<&FluxPromptEmbeds<B>>,
        seeds: &[u64],
        p: &FluxParams,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor<B, 3>> {
        let batch = embeds.len();
        let shape = self.validate(p, batch)?;
        svgen_eval::gpu::note_first_step::<B>("denoising step");
        if seeds.len() != batch {
            return Err(TrainError::InvalidArgument(format!(
                "{} seeds for {batch} images",
                seeds.len()
            )));
        }
        let cfg = p.true_cfg_scale > 1.0;
        let negative = match negative {
            Some(n) if cfg && n.len() != batch => {
                return Err(TrainError::InvalidArgument(format!(
                    "{} negative embeddings for {batch} images",
                    n.len()
                )))
            }
            Some(n) if cfg => Some(n),
            _ => None,
        };
        let t_len = embeds.prompt_embeds.dims()[1];
        if let Some(n) = negative {
            if n.prompt_embeds.dims()[1] != t_len {
                return Err(TrainError::InvalidArgument(format!(
                    "the negative embeddings have {} tokens, the prompt's {t_len}",
                    n.prompt_embeds.dims()[1]
                )));
            }
        }
        let tc = self.transformer.config();
        let f = self.size_multiple();
        let (rows, cols) = (p.height / f, p.width / f);
        let mut latents = match &p.latents {
            Some(l) => Tensor::from_data(TensorData::new(l.clone(), shape), &self.device),
            None => self.noise_latents(seeds, p.height, p.width),
        };
        let mut config = self.scheduler_config.clone();
        if p.karras_sigmas {
            config.spacing = super::scheduler::SigmaSpacing::Karras;
        }
        let mut scheduler = FlowMatchEulerScheduler::new(config)?;
        let n = p.steps;
        let sigmas: Vec<f64> = (0..n)
            .map(|i| {
                if n == 1 {
                    1.0
                } else {
                    1.0 + (1.0 / n as f64 - 1.0) * i as f64 / (n - 1) as f64
                }
            })
            .collect();
        let mu = scheduler.config().mu(rows * cols);
        scheduler.set_timesteps(n, Some(&sigmas), Some(mu))?;

        let txt_ids = vec![[0.0; 3]; t_len];
        let img_ids: Vec<[f64; 3]> = (0..rows)
            .flat_map(|r| (0..cols).map(move |c| [0.0, r as f64, c as f64]))
            .collect();
        let rope = self.transformer.rope(&txt_ids, &img_ids, &self.device);
        let (context, pooled, passes) = match negative {
            Some(neg) => (
                Tensor::cat(
                    vec![embeds.prompt_embeds.clone(), neg.prompt_embeds.clone()],
                    0,
                ),
                Tensor::cat(
                    vec![
                        embeds.pooled_prompt_embeds.clone(),
                        neg.pooled_prompt_embeds.clone(),
                    ],
                    0,
                ),
                2 * batch,
            ),
            None => (
                embeds.prompt_embeds.clone(),
                embeds.pooled_prompt_embeds.clone(),
                batch,
            ),
        };
        let guidance = tc.guidance_embeds.then(|| {
            Tensor::<B, 1>::from_data(
                TensorData::new(vec![p.guidance_scale as f32; passes], [passes]),
                &self.device,
            )
        });
        let timesteps = scheduler.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            let input = if negative.is_some() {
                Tensor::cat(vec![latents.clone(), latents.clone()], 0)
            } else {
                latents.clone()
            };
            let timestep = Tensor::<B, 1>::from_data(
                TensorData::new(vec![t / 1000.0; passes], [passes]),
                &self.device,
            );
            let v = self.transformer.forward(
                input,
                context.clone(),
                pooled.clone(),
                timestep,
                &rope,
                guidance.clone(),
            )?;
            let v = if negative.is_some() {
                let cond = v.clone().narrow(0, 0, batch);
                let uncond = v.narrow(0, batch, batch);
                uncond.clone() + (cond - uncond).mul_scalar(p.true_cfg_scale as f32)
            } else {
                v
            };
            latents = scheduler.step(v, i, latents)?;
            progress(i + 1, timesteps.len());
        }
        Ok(latents)
    }

    /// Decodes packed latents to images `[B, 3, H, W]` in `[0, 1]`: unpacking,
    /// `latents / scaling_factor + shift_factor`, the VAE decoder, `clamp(x/2 + 0.5, 0, 1)`, one
    /// image at a time to bound memory.
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] when the latents do not fit `height × width`.
    pub fn decode_latents(
        &self,
        latents: Tensor<B, 3>,
        height: usize,
        width: usize,
    ) -> Result<Tensor<B, 4>> {
        let f = self.size_multiple();
        let [b, s, ch] = latents.dims();
        if !height.is_multiple_of(f)
            || !width.is_multiple_of(f)
            || s != (height / f) * (width / f)
            || !ch.is_multiple_of(4)
        {
            return Err(TrainError::InvalidArgument(format!(
                "packed latents [{b}, {s}, {ch}] do not fit a {width}x{height} image"
            )));
        }
        let unpacked = unpack_latents(latents, height / f, width / f);
        let vc = self.vae.config();
        let scale = vc.scaling_factor as f32;
        let shift = vc.shift_factor.unwrap_or(0.0) as f32;
        let images: Vec<Tensor<B, 4>> = (0..b)
            .map(|i| {
                let z = unpacked
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
        Ok(Tensor::cat(images, 0))
    }

    /// Generates one image per seed from prompt embeddings (one row per seed, or one row for
    /// every seed), e.g. after [`FluxPipeline::free_text_encoders`].
    ///
    /// # Errors
    /// As [`FluxPipeline::denoise`].
    pub fn generate_from_embeds(
        &self,
        embeds: &FluxPromptEmbeds<B>,
        negative: Option<&FluxPromptEmbeds<B>>,
        seeds: &[u64],
        p: &FluxParams,
    ) -> Result<Vec<RgbImage>> {
        let spread = |e: &FluxPromptEmbeds<B>| {
            if e.len() == 1 && seeds.len() > 1 {
                e.select(&vec![0; seeds.len()])
            } else {
                e.clone()
            }
        };
        let embeds = spread(embeds);
        let negative = negative.map(spread);
        let latents = self.denoise(&embeds, negative.as_ref(), seeds, p, &mut |_, _| {})?;
        to_rgb_images(self.decode_latents(latents, p.height, p.width)?)
    }

    /// Generates `p.batch` images of `p.prompt` (image `i` with seed `p.seed + i`) as a float
    /// tensor `[batch, 3, H, W]` in `[0, 1]`.
    ///
    /// # Errors
    /// As [`FluxPipeline::encode_prompts`] and [`FluxPipeline::denoise`].
    pub fn generate_float(&self, p: &FluxParams) -> Result<Tensor<B, 4>> {
        self.validate(p, p.batch)?;
        let seeds: Vec<u64> = (0..p.batch as u64)
            .map(|i| p.seed.wrapping_add(i))
            .collect();
        let embeds = self
            .encode_prompts(&[p.prompt.as_str()], p.max_sequence_length)?
            .select(&vec![0; p.batch]);
        let negative = match (&p.negative_prompt, p.true_cfg_scale > 1.0) {
            (Some(n), true) => Some(
                self.encode_prompts(&[n.as_str()], p.max_sequence_length)?
                    .select(&vec![0; p.batch]),
            ),
            _ => None,
        };
        let latents = self.denoise(&embeds, negative.as_ref(), &seeds, p, &mut |_, _| {})?;
        self.decode_latents(latents, p.height, p.width)
    }

    /// Generates `p.batch` RGB images of `p.prompt`.
    ///
    /// # Errors
    /// As [`FluxPipeline::generate_float`].
    pub fn generate(&self, p: &FluxParams) -> Result<Vec<RgbImage>> {
        to_rgb_images(self.generate_float(p)?)
    }

    /// Generates one image per item (its prompt, negative prompt and seed) in one batch, with
    /// `p`'s other settings; returns the images and, per item, the encoders that truncated its
    /// prompt. Image `i` equals the single-image run of item `i`.
    ///
    /// # Errors
    /// As [`FluxPipeline::generate_float`].
    pub fn generate_items(
        &self,
        items: &[PromptItem],
        p: &FluxParams,
    ) -> Result<(Vec<RgbImage>, Vec<Vec<String>>)> {
        let (embeds, negative) = self.encode_items(items, p)?;
        self.generate_items_from_embeds(items, &embeds, negative.as_ref(), p)
    }

    /// The prompt embeddings of `items` (and of their negative prompts when
    /// `p.true_cfg_scale > 1`), the first half of [`FluxPipeline::generate_items`].
    ///
    /// # Errors
    /// As [`FluxPipeline::encode_prompts`].
    #[allow(clippy::type_complexity)]
    pub fn encode_items(
        &self,
        items: &[PromptItem],
        p: &FluxParams,
    ) -> Result<(FluxPromptEmbeds<B>, Option<FluxPromptEmbeds<B>>)> {
        let prompts: Vec<&str> = items.iter().map(|i| i.prompt.as_str()).collect();
        let embeds = self.encode_prompts(&prompts, p.max_sequence_length)?;
        let negative = if p.true_cfg_scale > 1.0 {
            let negatives: Vec<&str> = items
                .iter()
                .map(|i| i.negative_prompt.as_deref().unwrap_or(""))
                .collect();
            Some(self.encode_prompts(&negatives, p.max_sequence_length)?)
        } else {
            None
        };
        Ok((embeds, negative))
    }

    /// The second half of [`FluxPipeline::generate_items`]: denoises and decodes one image per
    /// item (its seed) from embeddings made by [`FluxPipeline::encode_items`] (the text encoders
    /// may have been freed since).
    ///
    /// # Errors
    /// As [`FluxPipeline::denoise`]; [`TrainError::ShapeMismatch`] when the embeddings do not have
    /// one row per item.
    pub fn generate_items_from_embeds(
        &self,
        items: &[PromptItem],
        embeds: &FluxPromptEmbeds<B>,
        negative: Option<&FluxPromptEmbeds<B>>,
        p: &FluxParams,
    ) -> Result<(Vec<RgbImage>, Vec<Vec<String>>)> {
        if embeds.len() != items.len() || negative.is_some_and(|n| n.len() != items.len()) {
            return Err(TrainError::ShapeMismatch {
                key: "prompt_embeds".into(),
                expected: vec![items.len()],
                found: vec![embeds.len()],
            });
        }
        let seeds: Vec<u64> = items.iter().map(|i| i.seed).collect();
        let latents = self.denoise(embeds, negative, &seeds, p, &mut |_, _| {})?;
        let images = to_rgb_images(self.decode_latents(latents, p.height, p.width)?)?;
        Ok((images, embeds.truncated.clone()))
    }
}

/// diffusers' `_pack_latents`: `[B, C, H, W]` → `[B, (H/2)(W/2), 4C]` (2 × 2 patches, channels
/// outermost within a patch).
pub fn pack_latents<B: Backend>(latents: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, c, h, w] = latents.dims();
    latents
        .reshape([b, c, h / 2, 2, w / 2, 2])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([b, (h / 2) * (w / 2), c * 4])
}

/// diffusers' `_unpack_latents`: `[B, rows·cols, 4C]` → `[B, C, 2·rows, 2·cols]`.
pub fn unpack_latents<B: Backend>(latents: Tensor<B, 3>, rows: usize, cols: usize) -> Tensor<B, 4> {
    let [b, _, ch] = latents.dims();
    latents
        .reshape([b, rows, cols, ch / 4, 2, 2])
        .permute([0, 3, 1, 4, 2, 5])
        .reshape([b, ch / 4, rows * 2, cols * 2])
}

impl<B: Backend> GridModel for FluxPipeline<B> {
    fn generate_point(&self, spec: &GridSpec, point: &GridPoint) -> Result<RgbImage> {
        if point.scheduler != SchedulerKind::FlowMatchEuler {
            return Err(TrainError::UnsupportedValue {
                key: "scheduler".into(),
                value: format!(
                    "{} (FLUX runs FlowMatchEulerDiscreteScheduler: use {} or GridSpec::flux_schnell())",
                    point.scheduler.class_name(),
                    SchedulerKind::FlowMatchEuler.short_name()
                ),
            });
        }
        if spec.clip_skip.is_some_and(|n| n > 0) {
            return Err(TrainError::InvalidArgument(
                "clip_skip does not apply to FLUX (it uses CLIP's pooled output)".into(),
            ));
        }
        let dev = self.transformer.config().guidance_embeds;
        let params = FluxParams {
            prompt: point.prompt.clone(),
            negative_prompt: spec.negative_prompt.clone(),
            // Without a guidance embedding the guidance axis is true CFG with the negative prompt.
            true_cfg_scale: if dev {
                1.0
            } else {
                point.guidance_scale.max(1.0)
            },
            steps: point.steps,
            guidance_scale: point.guidance_scale,
            seed: point.seed,
            width: spec.width,
            height: spec.height,
            max_sequence_length: self.default_max_sequence_length(),
            batch: 1,
            latents: None,
            karras_sigmas: spec.karras_sigmas,
        };
        self.generate(&params)?
            .pop()
            .ok_or_else(|| TrainError::InvalidArgument("the pipeline returned no image".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn dtype_flag_sets_transformer_and_t5_and_is_checked_first() {
        let dev = Default::default();
        assert_eq!(
            FluxLoadOptions::from_flag::<Flex>("auto", &dev).expect("auto"),
            FluxLoadOptions::for_backend::<Flex>()
        );
        for (flag, dtype) in [
            ("f32", DType::F32),
            ("bf16", DType::BF16),
            ("f16", DType::F16),
        ] {
            let o = FluxLoadOptions::from_flag::<Flex>(flag, &dev).expect("known flag");
            assert_eq!(o.transformer_dtype, Some(dtype));
            assert_eq!(o.text_encoder_2_dtype, Some(dtype));
        }
        assert!(matches!(
            FluxLoadOptions::from_flag::<Flex>("fp8", &dev),
            Err(TrainError::InvalidArgument(_))
        ));
    }
}
