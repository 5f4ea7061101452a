//! The LoRA SFT trainer: packed (or length-bucketed) micro-batches, optional activation
//! checkpointing, gradient accumulation, AdamW with warmup + cosine, gradient-norm clipping,
//! validation loss, checkpoints with exact resume, CSV/JSON loss logs, a PNG loss curve and a
//! progress bar.
//!
//! **Packing** (on by default) follows TRL's `packing=True` with best-fit-decreasing bins and
//! HF's `DataCollatorWithFlattening` layout: samples are placed whole into rows of at most
//! `max_len` tokens, a micro-batch is `batch_size` such rows, and attention and positions are
//! per sample (see [`SftBatch`]), so the loss is the loss of the same samples unpacked. Samples
//! longer than `max_len` are dropped and counted ([`SftTrainer::dropped`]), never truncated.
//!
//! The optimiser is a plain AdamW (PyTorch `torch.optim.AdamW` semantics) over the LoRA
//! parameters only ([`crate::train`], shared with the Stable Diffusion trainer); its state is
//! saved with each checkpoint, so a resumed run continues bit-for-bit where the checkpoint left it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::llama::lora::LoraConfig;
use crate::llama::sft::data::SftSample;
use crate::llama::sft::loss::{batch_loss, loss_and_grads, SftBatch};
use crate::llama::tokenizer::LlamaTokenizer;
use crate::llama::Llama;
use crate::nn::lora::{seed_lora_dropout, LoraLinear};
use crate::train::{
    accumulate_grads, adapter_params, check_finite_loss, clip_grad_norm, impl_checkpointed_run,
    progress_bar, read_run_state, read_step, warmup_cosine_lr, write_loss_logs, write_run_state,
    CheckpointedRun, LoggedStep, LoraOptimizer, ToF64, TrainSummary,
};

/// Trainer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftConfig {
    /// Samples per micro-batch.
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
    /// Validation every N steps (`0`: off).
    pub eval_every: usize,
    /// Checkpoint every N steps (`0`: only at the end).
    pub checkpoint_every: usize,
    /// Seed of batch order and dropout.
    pub seed: u64,
    /// Padding id for batches.
    pub pad_id: u32,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Recompute each decoder layer's activations in the backward pass (HF's
    /// `gradient_checkpointing`): memory holds the layer inputs and one layer's activations
    /// instead of every layer's, for about one more forward pass of compute.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Pack several samples per row, up to `max_len` tokens (see the module documentation);
    /// `false`: one sample per row, rows of similar length batched together.
    #[serde(default = "default_packing")]
    pub packing: bool,
    /// The longest sample, and packed row, in tokens. Longer samples are dropped and counted,
    /// never truncated.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
}

fn default_packing() -> bool {
    true
}

fn default_max_len() -> usize {
    4096
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            batch_size: 4,
            grad_accum: 1,
            lr: 2e-4,
            weight_decay: 0.0,
            betas: (0.9, 0.999),
            eps: 1e-8,
            warmup_steps: 0,
            total_steps: 100,
            max_grad_norm: 1.0,
            eval_every: 0,
            checkpoint_every: 0,
            seed: 0,
            pad_id: 0,
            progress: false,
            gradient_checkpointing: false,
            packing: default_packing(),
            max_len: default_max_len(),
        }
    }
}

impl SftConfig {
    /// HF `get_cosine_schedule_with_warmup` learning rate at (0-based) `step`.
    pub fn lr_at(&self, step: usize) -> f64 {
        warmup_cosine_lr(self.lr, self.warmup_steps, self.total_steps, step)
    }
}

/// One logged optimiser step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// 1-based optimiser step.
    pub step: usize,
    /// Mean training loss over the step's tokens.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens in the step.
    pub tokens: usize,
    /// Training throughput of the step.
    pub tokens_per_s: f64,
    /// Validation loss, when evaluated at this step.
    pub val_loss: Option<f64>,
}

impl LoggedStep for LogEntry {
    fn step(&self) -> usize {
        self.step
    }

    fn loss(&self) -> f64 {
        self.loss
    }

    fn val_loss(&self) -> Option<f64> {
        self.val_loss
    }
}

/// The trainer's resumable position.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser steps done.
    pub step: usize,
    /// Micro-batches consumed in total (the data position).
    pub micro_batches: usize,
    /// The log so far.
    pub log: Vec<LogEntry>,
}

/// The rows of one epoch's micro-batches (each row: indices of the samples it holds), in a
/// seeded order. Unpacked: the `kept` samples sorted by length, cut into micro-batches of
/// `batch` rows of one sample, whose order is shuffled with `seed + epoch`. Packed: the `bins`
/// (fixed for the run) shuffled with `seed + epoch` and cut into micro-batches of `batch` rows.
fn epoch_plan(
    lengths: &[usize],
    kept: &[usize],
    bins: Option<&[Vec<usize>]>,
    batch: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<Vec<usize>>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(epoch as u64));
    match bins {
        Some(bins) => {
            let mut order: Vec<&Vec<usize>> = bins.iter().collect();
            order.shuffle(&mut rng);
            order
                .chunks(batch)
                .map(|c| c.iter().map(|r| r.to_vec()).collect())
                .collect()
        }
        None => {
            let mut idx = kept.to_vec();
            idx.sort_by_key(|&i| (lengths[i], i));
            let mut batches: Vec<Vec<Vec<usize>>> = idx
                .chunks(batch)
                .map(|c| c.iter().map(|&i| vec![i]).collect())
                .collect();
            batches.shuffle(&mut rng);
            batches
        }
    }
}

/// Best-fit-decreasing packing of the `kept` samples (lengths at most `capacity`) into rows of
/// at most `capacity` tokens: longest first, each into the fullest row it fits in. Returns the
/// rows as sample indices.
pub(crate) fn pack_best_fit(lengths: &[usize], kept: &[usize], capacity: usize) -> Vec<Vec<usize>> {
    let mut order = kept.to_vec();
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
    let mut rows: Vec<Vec<usize>> = Vec::new();
    // free space → rows with exactly that much free space
    let mut free: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in order {
        let len = lengths[i];
        let slot = free
            .range_mut(len..)
            .next()
            .and_then(|(&space, rows)| rows.pop().map(|r| (space, r)));
        let (space, row) = match slot {
            Some((space, row)) => {
                if free.get(&space).is_some_and(Vec::is_empty) {
                    free.remove(&space);
                }
                (space, row)
            }
            None => {
                rows.push(Vec::new());
                (capacity, rows.len() - 1)
            }
        };
        rows[row].push(i);
        free.entry(space - len).or_default().push(row);
    }
    rows
}

/// Supervised fine-tuning of LoRA adapters on a frozen Llama.
pub struct SftTrainer<B: AutodiffBackend> {
    model: Llama<B>,
    lora: LoraConfig,
    cfg: SftConfig,
    out_dir: PathBuf,
    optim: LoraOptimizer<B::InnerBackend>,
    state: TrainerState,
    last_checkpoint: Option<PathBuf>,
    base_name: String,
    tokenizer: Option<LlamaTokenizer>,
    dropped: usize,
}

impl<B: AutodiffBackend> SftTrainer<B> {
    /// A fresh run. `model` must already carry adapters (see [`Llama::with_lora`]), and may
    /// carry trainable token rows ([`Llama::with_trainable_tokens`],
    /// [`Llama::with_modules_to_save`]), which train with the same optimiser.
    pub fn new(
        model: Llama<B>,
        lora: LoraConfig,
        cfg: SftConfig,
        out_dir: impl Into<PathBuf>,
        base_name: &str,
    ) -> Result<Self> {
        if model.num_lora_params() == 0 {
            return Err(TrainError::InvalidArgument(
                "the model has no LoRA adapters to train".into(),
            ));
        }
        if cfg.batch_size == 0 || cfg.grad_accum == 0 || cfg.total_steps == 0 || cfg.max_len < 2 {
            return Err(TrainError::InvalidArgument(
                "batch_size, grad_accum and total_steps must be positive, max_len at least 2"
                    .into(),
            ));
        }
        let optim = LoraOptimizer::new(cfg.betas, cfg.eps, cfg.weight_decay);
        Ok(Self {
            model,
            lora,
            cfg,
            out_dir: out_dir.into(),
            optim,
            state: TrainerState::default(),
            last_checkpoint: None,
            base_name: base_name.into(),
            tokenizer: None,
            dropped: 0,
        })
    }

    /// Saves `tokenizer` (`tokenizer.json`, `tokenizer_config.json`) into every checkpoint, as
    /// transformers' Trainer does, so that the adapter's token ids can be checked against the
    /// tokenizer it is later used with.
    pub fn with_tokenizer(mut self, tokenizer: LlamaTokenizer) -> Self {
        self.tokenizer = Some(tokenizer);
        self
    }

    /// Resumes from a checkpoint folder written by this trainer: loads the adapter (with its
    /// trainable token rows) into the (adapter-free, already resized) base, the optimiser moments
    /// and the data position.
    pub fn resume(
        base: Llama<B>,
        checkpoint: impl AsRef<Path>,
        cfg: SftConfig,
        out_dir: impl Into<PathBuf>,
        base_name: &str,
    ) -> Result<Self> {
        let ck = checkpoint.as_ref();
        let (model, lora) = base.with_peft_adapter(ck)?;
        let mut t = Self::new(model, lora, cfg, out_dir, base_name)?;
        let (state, opt, opt_path) = read_run_state(ck)?;
        t.state = state;
        let matrices = adapter_params(t.model.linears())
            .into_iter()
            .chain(t.model.token_params())
            .map(|(key, p)| (key, p.val().inner()));
        t.optim.load_state(matrices, &opt, &opt_path)?;
        t.last_checkpoint = Some(ck.to_path_buf());
        Ok(t)
    }

    /// The model being trained.
    pub fn model(&self) -> &Llama<B> {
        &self.model
    }

    /// The position and log.
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// Training samples of the last [`Self::train`] call dropped as longer than `max_len`.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Writes `checkpoint-{step}/` (adapter, optimiser moments, trainer state) and returns it.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let dir = self.out_dir.join(format!("checkpoint-{}", self.state.step));
        self.model
            .save_peft_adapter(&dir, &self.lora, &self.base_name)?;
        if let Some(tok) = &self.tokenizer {
            tok.save_pretrained(&dir)?;
        }
        write_run_state(&dir, &self.optim.state(), &self.state)?;
        self.last_checkpoint = Some(dir.clone());
        Ok(dir)
    }

    fn val_loss(&self, val: &[SftSample]) -> Result<f64> {
        let inner = self.model.valid();
        let mut total = 0.0;
        let mut count = 0usize;
        for chunk in val.chunks(self.cfg.batch_size) {
            let refs: Vec<&SftSample> = chunk.iter().collect();
            let (loss, n) = batch_loss(&inner, &refs, self.cfg.pad_id)?;
            total += loss.into_scalar().to_f64_lossy() * n as f64;
            count += n;
        }
        Ok(if count == 0 {
            f64::NAN
        } else {
            total / count as f64
        })
    }

    /// Trains until `total_steps`, or until `stop_after` steps in total when given (used to
    /// simulate an interrupted run). NaN/inf loss stops with [`TrainError::NonFiniteLoss`]
    /// and leaves the last good checkpoint untouched.
    pub fn train(
        &mut self,
        train: &[SftSample],
        val: &[SftSample],
        stop_after: Option<usize>,
    ) -> Result<TrainSummary> {
        if train.is_empty() {
            return Err(TrainError::InvalidArgument("no training samples".into()));
        }
        svgen_eval::gpu::note_first_step::<B>("training step");
        std::fs::create_dir_all(&self.out_dir).map_err(|e| TrainError::io(&self.out_dir, e))?;
        let lengths: Vec<usize> = train.iter().map(SftSample::len).collect();
        let kept: Vec<usize> = (0..train.len())
            .filter(|&i| lengths[i] <= self.cfg.max_len)
            .collect();
        self.dropped = train.len() - kept.len();
        if kept.is_empty() {
            return Err(TrainError::InvalidArgument(format!(
                "no training sample fits max_len = {} tokens ({} dropped)",
                self.cfg.max_len, self.dropped
            )));
        }
        let bins = self
            .cfg
            .packing
            .then(|| pack_best_fit(&lengths, &kept, self.cfg.max_len));
        let rows_per_epoch = bins.as_ref().map_or(kept.len(), Vec::len);
        let per_epoch = rows_per_epoch.div_ceil(self.cfg.batch_size);
        let end = stop_after
            .unwrap_or(self.cfg.total_steps)
            .min(self.cfg.total_steps);
        let bar = progress_bar(self.cfg.progress, self.cfg.total_steps, self.state.step);
        let mut plan_epoch = usize::MAX;
        let mut plan = Vec::new();
        while self.state.step < end {
            let started = Instant::now();
            // Gather this step's micro-batches (data position = micro_batches consumed).
            let mut micro: Vec<SftBatch> = Vec::with_capacity(self.cfg.grad_accum);
            for k in 0..self.cfg.grad_accum {
                let pos = self.state.micro_batches + k;
                let (epoch, i) = (pos / per_epoch, pos % per_epoch);
                if epoch != plan_epoch {
                    plan = epoch_plan(
                        &lengths,
                        &kept,
                        bins.as_deref(),
                        self.cfg.batch_size,
                        self.cfg.seed,
                        epoch,
                    );
                    plan_epoch = epoch;
                }
                let rows: Vec<Vec<&SftSample>> = plan[i]
                    .iter()
                    .map(|row| row.iter().map(|&j| &train[j]).collect())
                    .collect();
                micro.push(SftBatch::packed(&rows, self.cfg.pad_id)?);
            }
            let counted: Vec<usize> = micro.iter().map(SftBatch::counted).collect();
            let total: usize = counted.iter().sum();
            if total == 0 {
                return Err(TrainError::InvalidArgument(
                    "a step has no supervised tokens".into(),
                ));
            }
            let mut grads_acc: BTreeMap<String, Tensor<B::InnerBackend, 2>> = BTreeMap::new();
            let mut losses = Vec::with_capacity(micro.len());
            let mut tokens = 0usize;
            for (k, (batch, &n)) in micro.iter().zip(&counted).enumerate() {
                // Dropout masks depend only on the data position: resume is exact.
                seed_lora_dropout(
                    self.cfg
                        .seed
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .wrapping_add((self.state.micro_batches + k) as u64),
                );
                tokens += batch.tokens;
                let weight = n as f64 / total as f64;
                let out =
                    loss_and_grads(&self.model, batch, weight, self.cfg.gradient_checkpointing)?;
                losses.push(out.loss);
                accumulate_grads(&mut grads_acc, out.grads);
            }
            // The step's one device sync: every micro-batch loss and the gradient norm.
            let read = read_step(losses, &grads_acc);
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
            let lr = self.cfg.lr_at(self.state.step);
            self.adamw_step(grads_acc, clip, lr)?;
            self.state.step += 1;
            self.state.micro_batches += self.cfg.grad_accum;
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let val_loss = if self.cfg.eval_every > 0
                && !val.is_empty()
                && (self.state.step.is_multiple_of(self.cfg.eval_every) || self.state.step == end)
            {
                Some(self.val_loss(val)?)
            } else {
                None
            };
            let entry = LogEntry {
                step: self.state.step,
                loss: loss_sum,
                lr,
                grad_norm,
                tokens,
                tokens_per_s: tokens as f64 / secs,
                val_loss,
            };
            if let Some(pb) = &bar {
                pb.set_position(self.state.step as u64);
                pb.set_message(format!(
                    "loss {:.4}  {:.0} tok/s",
                    entry.loss, entry.tokens_per_s
                ));
            }
            self.state.log.push(entry);
            self.periodic_checkpoint()?;
        }
        self.finish_run(bar.as_ref())
    }

    fn adamw_step(
        &mut self,
        grads: BTreeMap<String, Tensor<B::InnerBackend, 2>>,
        clip: f64,
        lr: f64,
    ) -> Result<()> {
        let step = self.state.step + 1;
        let optim = &mut self.optim;
        // Cloning a module only clones tensor handles.
        let model = self.model.clone();
        let mut update = |key: String, p: Param<Tensor<B, 2>>| -> Result<Param<Tensor<B, 2>>> {
            let Some(g) = grads.get(&key) else {
                return Ok(p);
            };
            let w = optim.try_update(key, p.val().inner(), g, lr, clip, step)?;
            Ok(Param::from_tensor(Tensor::from_inner(w).require_grad()))
        };
        self.model = model
            .try_map_linears(|path, lin| {
                let LoraLinear {
                    weight,
                    bias,
                    adapter,
                } = lin;
                let adapter = match adapter {
                    Some(mut a) => {
                        a.lora_a = update(format!("{path}.lora_A"), a.lora_a)?;
                        a.lora_b = update(format!("{path}.lora_B"), a.lora_b)?;
                        Some(a)
                    }
                    None => None,
                };
                Ok(LoraLinear {
                    weight,
                    bias,
                    adapter,
                })
            })?
            .try_map_token_params(|key, p| update(key.to_string(), p))?;
        Ok(())
    }

    /// Writes `loss_log.csv`, `loss_log.json` and `loss_curve.png` into the output folder.
    pub fn write_logs(&self) -> Result<()> {
        let mut text = String::from("step,loss,lr,grad_norm,tokens,tokens_per_s,val_loss\n");
        for e in &self.state.log {
            text.push_str(&format!(
                "{},{},{},{},{},{:.1},{}\n",
                e.step,
                e.loss,
                e.lr,
                e.grad_norm,
                e.tokens,
                e.tokens_per_s,
                e.val_loss.map(|v| v.to_string()).unwrap_or_default()
            ));
        }
        write_loss_logs(&self.out_dir, &text, &self.state.log)
    }
}

impl_checkpointed_run!(SftTrainer);
