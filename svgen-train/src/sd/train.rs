//! LoRA fine-tuning of the Stable Diffusion UNet on (image, caption) pairs.
//!
//! Each micro-batch: images resized (shorter side to the resolution) and center-cropped,
//! mapped to `[-1, 1]`; the frozen VAE encodes them and a latent is sampled and multiplied by
//! `scaling_factor`; per sample a random timestep and Gaussian noise are drawn; the latents are
//! noised with the DDPM forward process ([`add_noise`]); the frozen CLIP text encoder embeds the
//! captions; the UNet (with trainable LoRA adapters on its attention projections) predicts the
//! noise (or `v` for `prediction_type: v_prediction`) and the loss is the mean squared error.
//! Gradients are accumulated over micro-batches, clipped by global norm, and AdamW (shared with
//! the Llama trainer) with warmup + cosine updates the adapters.
//!
//! All randomness (batch order, VAE sampling noise, timesteps, diffusion noise, LoRA dropout)
//! is drawn from host RNGs seeded by `seed` and the data position, so a run resumed from a
//! checkpoint (`checkpoint-N/`: adapter in diffusers format, AdamW moments, position and log)
//! continues bit for bit as if it had never stopped.
//!
//! Data: a folder of images with same-named `.txt` captions ([`ImageCaption::from_folder`]) or
//! `svgen-data` shards, whose positive rows store the PNG and the caption
//! ([`ImageCaption::from_shards`]).
//!
//! ```no_run
//! use svgen_train::sd::lora::UNetLoraConfig;
//! use svgen_train::sd::train::{ImageCaption, SdLoraTrainConfig, SdLoraTrainer, SdTrainingModels};
//! # fn main() -> svgen_train::Result<()> {
//! type B = svgen_train::CpuTrainBackend;
//! let models = SdTrainingModels::<B>::from_pretrained("sd15", &Default::default())?;
//! let lora = UNetLoraConfig { r: 8, lora_alpha: 8.0, ..UNetLoraConfig::default() };
//! let cfg = SdLoraTrainConfig { total_steps: 500, checkpoint_every: 100, ..Default::default() };
//! let data = ImageCaption::load("silhouettes/")?; // images + .txt captions, or shards
//! let mut trainer = SdLoraTrainer::new(models, lora.clone(), cfg, "out")?;
//! trainer.train(&data, None)?; // out/checkpoint-N/pytorch_lora_weights.safetensors, loss_log.csv
//! trainer.unet().save_lora_weights(&lora, "out")?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use svgen_eval::clip::ClipTextModel;
use svgen_eval::{ClipTextConfig, ClipTokenizer};

use crate::error::{Result, TrainError};
use crate::sd::lora::{normal, LoraFile, UNetLoraConfig, LORA_WEIGHT_NAME};
use crate::sd::pipeline::require;
use crate::sd::scheduler::{add_noise, velocity, PredictionType, SchedulerConfig};
use crate::sd::tokenizer::load_tokenizer;
use crate::sd::unet::UNet2DConditionModel;
use crate::sd::vae::AutoencoderKL;
use crate::train::{
    accumulate_grads, adapter_grads, adapter_params, check_finite_loss, clip_grad_norm,
    impl_checkpointed_run, progress_bar, read_run_state, warmup_cosine_lr, write_loss_logs,
    write_run_state, CheckpointedRun, LoggedStep, LoraOptimizer, ToF64, TrainSummary,
};
use crate::weights::HostTensor;

/// One training example. The image is held encoded (as read from the file or shard) and decoded
/// when it is used, so a dataset costs its size on disk in memory, not its pixel count.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageCaption {
    /// Where it came from (file stem or shard row id).
    pub id: String,
    /// The encoded image (PNG, JPEG, BMP or PNM bytes).
    pub encoded: Vec<u8>,
    /// Its caption (the prompt the model learns to associate with it).
    pub caption: String,
}

/// Files [`ImageCaption::from_folder`] treats as images. Formats the build cannot decode (WebP,
/// GIF) are listed so that they fail with a typed error instead of being skipped silently.
const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "pnm", "ppm", "webp", "gif"];

/// Checks that `bytes` hold a decodable image header; the error names `what`.
fn check_image(bytes: &[u8], what: &str) -> Result<()> {
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| TrainError::InvalidArgument(format!("image {what}: {e}")))?
        .into_dimensions()
        .map(|_| ())
        .map_err(|e| TrainError::InvalidArgument(format!("image {what}: {e}")))
}

impl ImageCaption {
    /// Decodes the image to RGB; a corrupt image is a typed error naming the example.
    pub fn image(&self) -> Result<image::RgbImage> {
        image::load_from_memory(&self.encoded)
            .map(|i| i.to_rgb8())
            .map_err(|e| TrainError::InvalidArgument(format!("image {}: {e}", self.id)))
    }
}

impl ImageCaption {
    /// Every image in `dir` (png, jpg, bmp, pnm; sorted by name) with the caption in the
    /// same-named `.txt` file. An image without caption file, or one that cannot be decoded
    /// (WebP and GIF are not built in), is a typed error naming it.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Vec<Self>> {
        let dir = dir.as_ref();
        let rd = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in rd {
            let p = entry.map_err(|e| TrainError::io(dir, e))?.path();
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if p.is_file() && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
                files.push(p);
            }
        }
        files.sort();
        let mut out = Vec::with_capacity(files.len());
        for p in files {
            let txt = p.with_extension("txt");
            let caption = std::fs::read_to_string(&txt).map_err(|e| TrainError::io(&txt, e))?;
            let bytes = std::fs::read(&p).map_err(|e| TrainError::io(&p, e))?;
            check_image(&bytes, &p.display().to_string())?;
            out.push(Self {
                id: p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                encoded: bytes,
                caption: caption.trim().to_string(),
            });
        }
        Ok(out)
    }

    /// The positive rows of every `svgen-data` shard in `dir`: the stored PNG and the caption
    /// (the simplified caption when the shard has one, as `svgen_data::pairs` does).
    pub fn from_shards(dir: impl AsRef<Path>) -> Result<Vec<Self>> {
        let dir = dir.as_ref();
        let data_err = |e: svgen_data::DataError| TrainError::InvalidArgument(e.to_string());
        let mut out = Vec::new();
        for shard in svgen_data::storage::list_shards(dir).map_err(data_err)? {
            let mut err = None;
            svgen_data::storage::for_each_triplet(&shard, |t| {
                if t.label != svgen_data::Label::Positive {
                    return Ok(());
                }
                match check_image(&t.image, &format!("{} in {}", t.id, shard.display())) {
                    Ok(()) => out.push(Self {
                        id: t.id,
                        encoded: t.image,
                        caption: t.simplified.unwrap_or(t.caption),
                    }),
                    Err(e) => {
                        if err.is_none() {
                            err = Some(e);
                        }
                    }
                }
                Ok(())
            })
            .map_err(data_err)?;
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Shards when `path` holds `*.parquet` shards, else a folder of images and captions.
    pub fn load(path: impl AsRef<Path>) -> Result<Vec<Self>> {
        let path = path.as_ref();
        let has_shards = svgen_data::storage::list_shards(path).is_ok_and(|s| !s.is_empty());
        if has_shards {
            Self::from_shards(path)
        } else {
            Self::from_folder(path)
        }
    }
}

/// Resizes `img` so its shorter side is `resolution` (bilinear, like torchvision's `Resize`),
/// center-crops it to `resolution²` and returns `[3, resolution, resolution]` values in
/// `[-1, 1]`, row-major.
pub fn preprocess(img: &image::RgbImage, resolution: usize) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let res = resolution as u32;
    let scale = res as f64 / w.min(h).max(1) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(res),
        ((h as f64 * scale).round() as u32).max(res),
    );
    let resized = if (nw, nh) == (w, h) {
        img.clone()
    } else {
        image::imageops::resize(img, nw, nh, image::imageops::FilterType::Triangle)
    };
    let (x0, y0) = ((nw - res) / 2, (nh - res) / 2);
    let n = resolution * resolution;
    let mut out = vec![0f32; 3 * n];
    for y in 0..res {
        for x in 0..res {
            let p = resized.get_pixel(x0 + x, y0 + y);
            let i = (y * res + x) as usize;
            for c in 0..3 {
                out[c * n + i] = p[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    out
}

/// Trainer settings (diffusers' `train_text_to_image_lora.py` names where they exist).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SdLoraTrainConfig {
    /// Image side in pixels (a multiple of the VAE's downscale factor).
    pub resolution: usize,
    /// Images per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// AdamW betas.
    pub betas: (f64, f64),
    /// AdamW epsilon.
    pub eps: f64,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// Total optimiser steps (the cosine reaches 0 here).
    pub total_steps: usize,
    /// Global gradient-norm clip (`0`: off).
    pub max_grad_norm: f64,
    /// Checkpoint every N steps (`0`: only at the end).
    pub checkpoint_every: usize,
    /// Seed of batch order, timesteps, noise and dropout.
    pub seed: u64,
    /// Encode every image and caption once up front (VAE mean/log-variance, text embeddings)
    /// instead of per step; the results are identical, the memory use is not.
    pub cache: bool,
    /// Override of the scheduler's `prediction_type` (the training target).
    pub prediction_type: Option<PredictionKind>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// Training target (serialisable mirror of [`PredictionType`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PredictionKind {
    /// The added noise.
    Epsilon,
    /// The velocity `√ᾱ·ε − √(1−ᾱ)·x₀`.
    VPrediction,
}

impl Default for SdLoraTrainConfig {
    fn default() -> Self {
        Self {
            resolution: 512,
            batch_size: 1,
            grad_accum: 1,
            lr: 1e-4,
            weight_decay: 1e-2,
            betas: (0.9, 0.999),
            eps: 1e-8,
            warmup_steps: 0,
            total_steps: 100,
            max_grad_norm: 1.0,
            checkpoint_every: 0,
            seed: 0,
            cache: true,
            prediction_type: None,
            progress: false,
        }
    }
}

/// One logged optimiser step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SdLogEntry {
    /// 1-based optimiser step.
    pub step: usize,
    /// Mean loss over the step's micro-batches.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training throughput.
    pub images_per_s: f64,
}

impl LoggedStep for SdLogEntry {
    fn step(&self) -> usize {
        self.step
    }

    fn loss(&self) -> f64 {
        self.loss
    }
}

/// The resumable position of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SdTrainerState {
    /// Optimiser steps done.
    pub step: usize,
    /// Micro-batches consumed (the data and RNG position).
    pub micro_batches: usize,
    /// The log so far.
    pub log: Vec<SdLogEntry>,
}

/// The noise-prediction loss of one batch: `noisy = add_noise(latents, noise, t)`, target
/// `noise` (epsilon) or `velocity(latents, noise, t)` (v-prediction), MSE (mean over every
/// element) against the UNet's prediction. `latents` are already multiplied by the VAE's
/// `scaling_factor`.
pub fn diffusion_loss<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    scheduler: &SchedulerConfig,
    prediction: PredictionType,
    latents: Tensor<B, 4>,
    noise: Tensor<B, 4>,
    timesteps: &[usize],
    encoder_hidden_states: Tensor<B, 3>,
) -> Result<Tensor<B, 1>> {
    let device = latents.device();
    let target = match prediction {
        PredictionType::Epsilon => noise.clone(),
        PredictionType::VPrediction => {
            velocity(scheduler, latents.clone(), noise.clone(), timesteps)?
        }
        PredictionType::Sample => {
            return Err(TrainError::UnsupportedValue {
                key: "prediction_type".into(),
                value: "\"sample\"".into(),
            })
        }
    };
    let noisy = add_noise(scheduler, latents, noise, timesteps)?;
    let t: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
    let t = Tensor::<B, 1>::from_data(TensorData::new(t, [timesteps.len()]), &device);
    let pred = unet.forward(noisy, t, encoder_hidden_states);
    Ok((pred - target).powi_scalar(2).mean())
}

/// The gradients of every LoRA matrix, keyed `<path>.lora_A` / `<path>.lora_B`, in our layout
/// (`lora_A` `[in, r]`, `lora_B` `[r, out]`).
pub fn lora_gradients<B: AutodiffBackend>(
    unet: &UNet2DConditionModel<B>,
    grads: &B::Gradients,
) -> BTreeMap<String, Tensor<B::InnerBackend, 2>> {
    let mut m = unet.clone();
    let linears = m.attention_linears_mut();
    adapter_grads(linears.into_iter().map(|(p, l)| (p, &*l)), grads)
}

/// AdamW over the UNet's LoRA matrices, with its moments (the Llama trainer's optimiser).
#[derive(Debug, Clone)]
pub struct LoraAdamW<B: Backend> {
    inner: LoraOptimizer<B>,
}

impl<B: Backend> LoraAdamW<B> {
    /// Fresh moments.
    pub fn new(betas: (f64, f64), eps: f64, weight_decay: f64) -> Self {
        Self {
            inner: LoraOptimizer::new(betas, eps, weight_decay),
        }
    }

    /// Applies one update (1-based `step`) with gradients scaled by `clip` to every adapter
    /// matrix that has a gradient in `grads` (keys as [`lora_gradients`]).
    pub fn step<AB: AutodiffBackend<InnerBackend = B>>(
        &mut self,
        unet: &mut UNet2DConditionModel<AB>,
        grads: &BTreeMap<String, Tensor<B, 2>>,
        lr: f64,
        clip: f64,
        step: usize,
    ) {
        for (path, lin) in unet.attention_linears_mut() {
            let Some(a) = &mut lin.adapter else { continue };
            for (half, p) in [("lora_A", &mut a.lora_a), ("lora_B", &mut a.lora_b)] {
                let key = format!("{path}.{half}");
                let Some(g) = grads.get(&key) else { continue };
                let w = self.inner.update(key, p.val().inner(), g, lr, clip, step);
                *p = Param::from_tensor(Tensor::from_inner(w).require_grad());
            }
        }
    }

    /// The moments as `exp_avg.<key>` / `exp_avg_sq.<key>` host tensors.
    pub fn state(&self) -> BTreeMap<String, HostTensor> {
        self.inner.state()
    }

    /// Restores moments written by [`LoraAdamW::state`]; every adapter matrix of `unet` must
    /// have both, with its shape.
    pub fn load_state<AB: AutodiffBackend<InnerBackend = B>>(
        &mut self,
        unet: &UNet2DConditionModel<AB>,
        state: &BTreeMap<String, HostTensor>,
        origin: &Path,
    ) -> Result<()> {
        let mut m = unet.clone();
        let linears = m.attention_linears_mut();
        let matrices = adapter_params(linears.iter().map(|(p, l)| (p.clone(), &**l)))
            .into_iter()
            .map(|(key, p)| (key, p.val().inner()));
        self.inner.load_state(matrices, state, origin)
    }
}

fn mix(seed: u64, a: u64, salt: u64) -> u64 {
    // SplitMix64 finaliser over the combined words.
    let mut z = seed
        .wrapping_add(a.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The frozen parts of the pipeline the trainer needs.
pub struct SdTrainingModels<B: AutodiffBackend> {
    /// The UNet (adapters are added or loaded by the trainer).
    pub unet: UNet2DConditionModel<B>,
    /// The VAE (encoder used), on the inner backend: no graph is recorded through it.
    pub vae: AutoencoderKL<B::InnerBackend>,
    /// The CLIP text encoder, on the inner backend.
    pub text_encoder: ClipTextModel<B::InnerBackend>,
    /// Its tokenizer.
    pub tokenizer: ClipTokenizer,
    /// `scheduler/scheduler_config.json` (the DDPM forward process and `prediction_type`).
    pub scheduler: SchedulerConfig,
}

impl<B: AutodiffBackend> SdTrainingModels<B> {
    /// Loads `unet/`, `vae/`, `text_encoder/`, `tokenizer/` and `scheduler/` from a diffusers
    /// pipeline folder; a missing sub-folder is a typed error naming it.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        let unet = require(dir, "unet")?;
        let vae = require(dir, "vae")?;
        let text_encoder = require(dir, "text_encoder")?;
        let tokenizer = require(dir, "tokenizer")?;
        let scheduler = require(dir, "scheduler")?;
        let (text_encoder, te_config) = load_text_encoder(&text_encoder, device)?;
        Ok(Self {
            unet: UNet2DConditionModel::from_pretrained(unet, device)?,
            vae: AutoencoderKL::from_pretrained(vae, device)?,
            text_encoder,
            tokenizer: load_tokenizer(tokenizer)?
                .with_context_length(te_config.max_position_embeddings)?,
            scheduler: SchedulerConfig::from_file(scheduler.join("scheduler_config.json"))?,
        })
    }
}

/// Loads a diffusers `text_encoder/` folder (`config.json` + `model.safetensors`) into
/// svgen-eval's CLIP text model, with its configuration; keys with the `text_model.` prefix
/// (transformers ≤ 4) or without it (transformers 5) are both accepted.
pub fn load_text_encoder<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(ClipTextModel<B>, ClipTextConfig)> {
    let cfg = ClipTextConfig::from_file(dir.join("config.json"))?;
    let model = ClipTextModel::from_pretrained_with_config(&cfg, dir, device)?;
    Ok((model, cfg))
}

/// What a finished (or stopped) run reports (the same as the Llama trainer's).
pub type SdTrainSummary = TrainSummary;

/// LoRA fine-tuning of the UNet (see the [module docs](self)).
pub struct SdLoraTrainer<B: AutodiffBackend> {
    models: SdTrainingModels<B>,
    lora: UNetLoraConfig,
    cfg: SdLoraTrainConfig,
    prediction: PredictionType,
    out_dir: PathBuf,
    optim: LoraAdamW<B::InnerBackend>,
    state: SdTrainerState,
    last_checkpoint: Option<PathBuf>,
    /// Per sample: latent mean, log-variance (`[C, h, w]` each) and text embedding.
    cache: Option<Vec<CachedSample<B::InnerBackend>>>,
}

#[derive(Clone)]
struct CachedSample<B: Backend> {
    mean: Tensor<B, 3>,
    logvar: Tensor<B, 3>,
    text: Tensor<B, 2>,
}

impl<B: AutodiffBackend> SdLoraTrainer<B> {
    /// A fresh run: freezes the base weights and adds adapters per `lora` (seeded with
    /// `cfg.seed`).
    pub fn new(
        mut models: SdTrainingModels<B>,
        lora: UNetLoraConfig,
        cfg: SdLoraTrainConfig,
        out_dir: impl Into<PathBuf>,
    ) -> Result<Self> {
        models.unet = models.unet.no_grad();
        models.unet.add_lora(&lora, cfg.seed)?;
        Self::with_adapters(models, lora, cfg, out_dir.into())
    }

    /// A fresh run that continues training the adapters the UNet already carries (e.g. after
    /// `models.unet.load_lora("downloaded.safetensors")`); the base stays frozen. `lora` is the
    /// configuration checkpoints are saved with: its rank and targets must cover every adapter
    /// (adapters whose scale differs have the ratio folded into `lora_B` when saved).
    pub fn continue_adapters(
        mut models: SdTrainingModels<B>,
        lora: UNetLoraConfig,
        cfg: SdLoraTrainConfig,
        out_dir: impl Into<PathBuf>,
    ) -> Result<Self> {
        models.unet = models.unet.no_grad();
        let mut linears = models.unet.attention_linears_mut();
        crate::sd::lora::check_savable(&linears, &lora)?;
        for (_, lin) in linears.iter_mut() {
            if let Some(a) = &mut lin.adapter {
                a.lora_a = a.lora_a.clone().set_require_grad(true);
                a.lora_b = a.lora_b.clone().set_require_grad(true);
                a.dropout = lora.lora_dropout;
            }
        }
        drop(linears);
        Self::with_adapters(models, lora, cfg, out_dir.into())
    }

    fn with_adapters(
        models: SdTrainingModels<B>,
        lora: UNetLoraConfig,
        cfg: SdLoraTrainConfig,
        out_dir: PathBuf,
    ) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.grad_accum == 0 || cfg.total_steps == 0 {
            return Err(TrainError::InvalidArgument(
                "batch_size, grad_accum and total_steps must be positive".into(),
            ));
        }
        let factor = models.vae_scale_factor();
        if cfg.resolution == 0 || !cfg.resolution.is_multiple_of(factor) {
            return Err(TrainError::InvalidArgument(format!(
                "resolution {} must be a positive multiple of the VAE's downscale factor {factor}",
                cfg.resolution
            )));
        }
        let prediction = match cfg.prediction_type {
            Some(PredictionKind::Epsilon) => PredictionType::Epsilon,
            Some(PredictionKind::VPrediction) => PredictionType::VPrediction,
            None => models.scheduler.prediction_type,
        };
        let optim = LoraAdamW::new(cfg.betas, cfg.eps, cfg.weight_decay);
        Ok(Self {
            models,
            lora,
            cfg,
            prediction,
            out_dir,
            optim,
            state: SdTrainerState::default(),
            last_checkpoint: None,
            cache: None,
        })
    }

    /// Resumes from a `checkpoint-N/` folder written by this trainer: loads its adapter into the
    /// adapter-free `models`, the AdamW moments and the position. `lora` must be the run's
    /// configuration (its `r` and `lora_alpha` are checked against the checkpoint).
    pub fn resume(
        mut models: SdTrainingModels<B>,
        lora: UNetLoraConfig,
        checkpoint: impl AsRef<Path>,
        cfg: SdLoraTrainConfig,
        out_dir: impl Into<PathBuf>,
    ) -> Result<Self> {
        let ck = checkpoint.as_ref();
        let file = LoraFile::read(ck.join(LORA_WEIGHT_NAME))?;
        if let Some(s) = file.scaling {
            if s.r != lora.r || s.scale() != lora.scale() {
                return Err(TrainError::Config(format!(
                    "checkpoint {} has r = {}, lora_alpha = {}; the run's configuration has r = \
                     {}, lora_alpha = {}",
                    ck.display(),
                    s.r,
                    s.lora_alpha,
                    lora.r,
                    lora.lora_alpha
                )));
            }
        }
        models.unet = models.unet.no_grad();
        crate::sd::lora::apply_lora(models.unet.attention_linears_mut(), &file)?;
        // The dropout of the run, not the one recorded in the file.
        for (_, lin) in models.unet.attention_linears_mut() {
            if let Some(a) = &mut lin.adapter {
                a.dropout = lora.lora_dropout;
            }
        }
        let mut t = Self::with_adapters(models, lora, cfg, out_dir.into())?;
        let (state, opt, opt_path) = read_run_state(ck)?;
        t.state = state;
        t.optim.load_state(&t.models.unet, &opt, &opt_path)?;
        t.last_checkpoint = Some(ck.to_path_buf());
        Ok(t)
    }

    /// The UNet being trained.
    pub fn unet(&self) -> &UNet2DConditionModel<B> {
        &self.models.unet
    }

    /// The LoRA configuration.
    pub fn lora_config(&self) -> &UNetLoraConfig {
        &self.lora
    }

    /// The position and log.
    pub fn state(&self) -> &SdTrainerState {
        &self.state
    }

    /// Writes `checkpoint-{step}/` (adapter as `pytorch_lora_weights.safetensors`, AdamW
    /// moments, position and log) and returns it.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let dir = self.out_dir.join(format!("checkpoint-{}", self.state.step));
        self.models.unet.save_lora_weights(&self.lora, &dir)?;
        write_run_state(&dir, &self.optim.state(), &self.state)?;
        self.last_checkpoint = Some(dir.clone());
        Ok(dir)
    }

    /// Pixels `[n, 3, res, res]` of the given samples.
    fn pixels(&self, data: &[ImageCaption], idx: &[usize]) -> Result<Tensor<B::InnerBackend, 4>> {
        let res = self.cfg.resolution;
        let mut v = Vec::with_capacity(idx.len() * 3 * res * res);
        for &i in idx {
            v.extend(preprocess(&data[i].image()?, res));
        }
        let device = self.models.unet.devices()[0].clone();
        Ok(Tensor::from_data(
            TensorData::new(v, [idx.len(), 3, res, res]),
            &device,
        ))
    }

    fn encode_text(&self, captions: &[&str]) -> Result<Tensor<B::InnerBackend, 3>> {
        let tok = self.models.tokenizer.encode_batch(captions)?;
        let device = self.models.unet.devices()[0].clone();
        let ids = Tensor::<B::InnerBackend, 2, Int>::from_data(
            TensorData::new(tok.input_ids, [tok.batch, tok.context_length]),
            &device,
        );
        let out = self.models.text_encoder.forward(ids, None)?;
        Ok(out.last_hidden_state)
    }

    fn build_cache(&mut self, data: &[ImageCaption]) -> Result<()> {
        let mut cache = Vec::with_capacity(data.len());
        for chunk in (0..data.len())
            .collect::<Vec<_>>()
            .chunks(self.cfg.batch_size)
        {
            let dist = self.models.vae.encode(self.pixels(data, chunk)?);
            let caps: Vec<&str> = chunk.iter().map(|&i| data[i].caption.as_str()).collect();
            let text = self.encode_text(&caps)?;
            for k in 0..chunk.len() {
                let one = |t: Tensor<B::InnerBackend, 4>| {
                    let [_, c, h, w] = t.dims();
                    t.slice(k..k + 1).reshape([c, h, w])
                };
                let [_, tl, td] = text.dims();
                cache.push(CachedSample {
                    mean: one(dist.mean.clone()),
                    logvar: one(dist.logvar.clone()),
                    text: text.clone().slice(k..k + 1).reshape([tl, td]),
                });
            }
        }
        self.cache = Some(cache);
        Ok(())
    }

    /// The micro-batch at data position `pos`: per-epoch shuffles seeded by `seed + epoch`.
    fn micro_batch(&self, n: usize, pos: usize) -> Vec<usize> {
        let bs = self.cfg.batch_size.min(n);
        let per_epoch = n.div_ceil(bs);
        let (epoch, i) = (pos / per_epoch, pos % per_epoch);
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(mix(self.cfg.seed, epoch as u64, 1));
        order.shuffle(&mut rng);
        order[i * bs..((i + 1) * bs).min(n)].to_vec()
    }

    /// Latents (scaled), noise, timesteps and text embeddings of micro-batch `pos`.
    #[allow(clippy::type_complexity)]
    fn batch_inputs(
        &self,
        data: &[ImageCaption],
        idx: &[usize],
        pos: usize,
    ) -> Result<(
        Tensor<B::InnerBackend, 4>,
        Tensor<B::InnerBackend, 4>,
        Vec<usize>,
        Tensor<B::InnerBackend, 3>,
    )> {
        let (mean, logvar, text) = match &self.cache {
            Some(c) => {
                let pick =
                    |f: &dyn Fn(&CachedSample<B::InnerBackend>) -> Tensor<B::InnerBackend, 3>| {
                        Tensor::stack(idx.iter().map(|&i| f(&c[i])).collect(), 0)
                    };
                let text: Tensor<B::InnerBackend, 3> = Tensor::stack(
                    idx.iter().map(|&i| c[i].text.clone()).collect::<Vec<_>>(),
                    0,
                );
                (pick(&|s| s.mean.clone()), pick(&|s| s.logvar.clone()), text)
            }
            None => {
                let dist = self.models.vae.encode(self.pixels(data, idx)?);
                let caps: Vec<&str> = idx.iter().map(|&i| data[i].caption.as_str()).collect();
                (dist.mean, dist.logvar, self.encode_text(&caps)?)
            }
        };
        let dims = mean.dims();
        let n: usize = dims.iter().product();
        let device = mean.device();
        let mut rng = rand::rngs::StdRng::seed_from_u64(mix(self.cfg.seed, pos as u64, 2));
        let sample_noise = normal(&mut rng, n);
        let noise = normal(&mut rng, n);
        let t_max = self.models.scheduler.num_train_timesteps;
        let timesteps: Vec<usize> = (0..idx.len()).map(|_| rng.random_range(0..t_max)).collect();
        let eps =
            Tensor::<B::InnerBackend, 4>::from_data(TensorData::new(sample_noise, dims), &device);
        let latents = (mean + logvar.mul_scalar(0.5).exp() * eps)
            .mul_scalar(self.models.vae.config().scaling_factor);
        let noise = Tensor::from_data(TensorData::new(noise, dims), &device);
        Ok((latents, noise, timesteps, text))
    }

    /// Trains until `total_steps`, or until `stop_after` steps in total when given (used to
    /// simulate an interrupted run). A non-finite loss or gradient stops with
    /// [`TrainError::NonFiniteLoss`], leaving the last good checkpoint untouched.
    pub fn train(
        &mut self,
        data: &[ImageCaption],
        stop_after: Option<usize>,
    ) -> Result<SdTrainSummary> {
        if data.is_empty() {
            return Err(TrainError::InvalidArgument("no training images".into()));
        }
        std::fs::create_dir_all(&self.out_dir).map_err(|e| TrainError::io(&self.out_dir, e))?;
        if self.cfg.cache && self.cache.is_none() {
            self.build_cache(data)?;
        }
        let end = stop_after
            .unwrap_or(self.cfg.total_steps)
            .min(self.cfg.total_steps);
        let bar = progress_bar(self.cfg.progress, self.cfg.total_steps, self.state.step);
        while self.state.step < end {
            let started = Instant::now();
            let mut acc: BTreeMap<String, Tensor<B::InnerBackend, 2>> = BTreeMap::new();
            let mut loss_sum = 0.0;
            let mut images = 0;
            for k in 0..self.cfg.grad_accum {
                let pos = self.state.micro_batches + k;
                let idx = self.micro_batch(data.len(), pos);
                images += idx.len();
                crate::nn::lora::seed_lora_dropout(mix(self.cfg.seed, pos as u64, 3));
                let (latents, noise, timesteps, text) = self.batch_inputs(data, &idx, pos)?;
                let loss = diffusion_loss(
                    &self.models.unet,
                    &self.models.scheduler,
                    self.prediction,
                    Tensor::from_inner(latents),
                    Tensor::from_inner(noise),
                    &timesteps,
                    Tensor::from_inner(text),
                )?
                .div_scalar(self.cfg.grad_accum as f64);
                let value: f64 = loss.clone().into_scalar().to_f64_lossy();
                check_finite_loss(
                    value,
                    self.state.step + 1,
                    &self.last_checkpoint,
                    bar.as_ref(),
                )?;
                loss_sum += value;
                let grads = loss.backward();
                accumulate_grads(&mut acc, lora_gradients(&self.models.unet, &grads));
            }
            let (grad_norm, clip) = clip_grad_norm(
                &acc,
                self.cfg.max_grad_norm,
                self.state.step + 1,
                loss_sum,
                &self.last_checkpoint,
            )?;
            let lr = warmup_cosine_lr(
                self.cfg.lr,
                self.cfg.warmup_steps,
                self.cfg.total_steps,
                self.state.step,
            );
            self.optim
                .step(&mut self.models.unet, &acc, lr, clip, self.state.step + 1);
            self.state.step += 1;
            self.state.micro_batches += self.cfg.grad_accum;
            let entry = SdLogEntry {
                step: self.state.step,
                loss: loss_sum,
                lr,
                grad_norm,
                images_per_s: images as f64 / started.elapsed().as_secs_f64().max(1e-9),
            };
            if let Some(pb) = &bar {
                pb.set_position(self.state.step as u64);
                pb.set_message(format!("loss {:.4}", entry.loss));
            }
            self.state.log.push(entry);
            self.periodic_checkpoint()?;
        }
        self.finish_run(bar.as_ref())
    }

    /// Writes `loss_log.csv`, `loss_log.json` and `loss_curve.png` into the output folder.
    pub fn write_logs(&self) -> Result<()> {
        let mut text = String::from("step,loss,lr,grad_norm,images_per_s\n");
        for e in &self.state.log {
            text.push_str(&format!(
                "{},{},{},{},{:.3}\n",
                e.step, e.loss, e.lr, e.grad_norm, e.images_per_s
            ));
        }
        write_loss_logs(&self.out_dir, &text, &self.state.log)
    }

    /// The trained UNet without autodiff (for inference).
    pub fn into_inference_unet(self) -> UNet2DConditionModel<B::InnerBackend> {
        self.models.unet.valid()
    }
}

impl_checkpointed_run!(SdLoraTrainer);

impl<B: AutodiffBackend> SdTrainingModels<B> {
    /// `2^(len(vae.block_out_channels) − 1)`: pixels per latent.
    pub fn vae_scale_factor(&self) -> usize {
        1 << self.vae.config().block_out_channels.len().saturating_sub(1)
    }
}
