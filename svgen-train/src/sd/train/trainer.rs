//! The LoRA trainer: seeded batches and noise, optional caching of the frozen encoders' outputs,
//! gradient accumulation, clipping, AdamW with warmup + cosine, checkpoints with exact resume and
//! loss logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::data::{preprocess, ImageCaption};
use super::loss::diffusion_loss;
use super::models::SdTrainingModels;
use super::optim::{lora_gradients, LoraAdamW};
use crate::diffusion::noise::randn_host;
use crate::error::{Result, TrainError};
use crate::nn::lora::seed_lora_dropout;
use crate::sd::lora::{apply_lora, check_savable, LoraFile, UNetLoraConfig, LORA_WEIGHT_NAME};
use crate::sd::scheduler::PredictionType;
use crate::sd::unet::UNet2DConditionModel;
use crate::train::{
    accumulate_grads, check_finite_loss, clip_grad_norm, impl_checkpointed_run, progress_bar,
    read_run_state, read_step, warmup_cosine_lr, write_loss_logs, write_run_state, CheckpointedRun,
    LoggedStep, TrainSummary,
};

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

fn mix(seed: u64, a: u64, salt: u64) -> u64 {
    // SplitMix64 finaliser over the combined words.
    let mut z = seed
        .wrapping_add(a.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a finished (or stopped) run reports (the same as the Llama trainer's).
pub type SdTrainSummary = TrainSummary;

/// LoRA fine-tuning of the UNet (see the [module docs](crate::sd::train)).
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
        check_savable(&linears, &lora)?;
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
        apply_lora(models.unet.attention_linears_mut(), &file)?;
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
        let sample_noise = randn_host(&mut rng, n);
        let noise = randn_host(&mut rng, n);
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
        svgen_eval::gpu::note_first_step::<B>("training step");
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
            let mut losses = Vec::with_capacity(self.cfg.grad_accum);
            let mut images = 0;
            for k in 0..self.cfg.grad_accum {
                let pos = self.state.micro_batches + k;
                let idx = self.micro_batch(data.len(), pos);
                images += idx.len();
                seed_lora_dropout(mix(self.cfg.seed, pos as u64, 3));
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
                losses.push(loss.clone().detach().inner());
                let grads = loss.backward();
                accumulate_grads(&mut acc, lora_gradients(&self.models.unet, &grads));
            }
            // The step's one device sync: every micro-batch loss and the gradient norm.
            let read = read_step(losses, &acc);
            let mut loss_sum = 0.0f64;
            for &value in &read.losses {
                check_finite_loss(
                    value,
                    self.state.step + 1,
                    &self.last_checkpoint,
                    bar.as_ref(),
                )?;
                loss_sum += value;
            }
            let (grad_norm, clip) = clip_grad_norm(
                &read.grad_squares,
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
