//! The LoRA SFT trainer: JSONL or `svgen-data` pairs ([`pairs_from_dataset`]),
//! length-bucketed batches, gradient accumulation, AdamW with warmup + cosine, gradient-norm
//! clipping, validation loss, checkpoints with exact resume, CSV/JSON loss logs, a PNG loss
//! curve and a progress bar.
//!
//! The optimiser is a plain AdamW (PyTorch `torch.optim.AdamW` semantics) over the LoRA
//! parameters only; its state is saved with each checkpoint, so a resumed run continues
//! bit-for-bit where the checkpoint left it.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use svgen_data::pairs::PairDataset;

use crate::error::{Result, TrainError};
use crate::llama::sft::{batch_loss, SftSample};
use crate::llama::tokenizer::{LlamaTokenizer, PromptFormat};
use crate::llama::Llama;
use crate::nn::lora::{host_f32, LoraConfig, LoraLinear};
use crate::weights::{read_safetensors, write_safetensors, HostTensor, StoreDtype};

/// One training pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The text description.
    pub description: String,
    /// The SVG document.
    pub svg: String,
}

impl From<svgen_data::pairs::Pair> for Pair {
    /// Keeps the description and SVG of a `svgen-data` pair (its id and token count are not
    /// needed for training).
    fn from(p: svgen_data::pairs::Pair) -> Self {
        Self {
            description: p.description,
            svg: p.svg,
        }
    }
}

/// The training pairs of a `svgen-data` [`PairDataset`] (our shards, MMSVG Parquet or CSV,
/// an icon folder with its metadata), in dataset order. Records the loader skipped are in
/// `dataset.skipped`; report them before the dataset is consumed.
///
/// ```no_run
/// use svgen_data::pairs::PairDataset;
/// use svgen_train::llama::sft::{pairs_from_dataset, tokenize_pairs};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let tokenizer = svgen_train::LlamaTokenizer::from_dir("model")?;
/// let dataset = PairDataset::from_mmsvg_parquet("MMSVG-Icon/train.parquet", None)?;
/// eprintln!("{} records skipped", dataset.skipped.len());
/// let pairs = pairs_from_dataset(dataset);
/// let format = svgen_train::llama::tokenizer::PromptFormat::InstructionResponse;
/// let (samples, dropped) = tokenize_pairs(&tokenizer, &format, &pairs, 4096)?;
/// # Ok(())
/// # }
/// ```
pub fn pairs_from_dataset(dataset: PairDataset) -> Vec<Pair> {
    dataset.into_pairs().into_iter().map(Pair::from).collect()
}

/// Reads `{"description", "svg"}` lines (blank lines skipped). A bad line is a typed error
/// with its line number.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<Pair>> {
    let path = path.as_ref();
    let f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let p: Pair = serde_json::from_str(&line)
            .map_err(|e| TrainError::json(path, format!("line {}: {e}", i + 1)))?;
        out.push(p);
    }
    Ok(out)
}

/// Tokenises pairs; samples longer than `max_len` are dropped (never truncated). Returns the
/// kept samples and the number dropped.
pub fn tokenize_pairs(
    tokenizer: &LlamaTokenizer,
    format: &PromptFormat,
    pairs: &[Pair],
    max_len: usize,
) -> Result<(Vec<SftSample>, usize)> {
    let mut kept = Vec::with_capacity(pairs.len());
    let mut dropped = 0;
    for p in pairs {
        let s = SftSample::encode(tokenizer, format, &p.description, &p.svg)?;
        if s.len() > max_len {
            dropped += 1;
        } else {
            kept.push(s);
        }
    }
    Ok((kept, dropped))
}

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
        }
    }
}

impl SftConfig {
    /// HF `get_cosine_schedule_with_warmup` learning rate at (0-based) `step`.
    pub fn lr_at(&self, step: usize) -> f64 {
        warmup_cosine_lr(self.lr, self.warmup_steps, self.total_steps, step)
    }
}

/// HF `get_cosine_schedule_with_warmup`: the learning rate at (0-based) `step` for peak `lr`
/// (shared by the Llama and Stable Diffusion trainers).
pub(crate) fn warmup_cosine_lr(
    lr: f64,
    warmup_steps: usize,
    total_steps: usize,
    step: usize,
) -> f64 {
    if step < warmup_steps {
        return lr * step as f64 / warmup_steps.max(1) as f64;
    }
    let span = total_steps.saturating_sub(warmup_steps).max(1);
    let progress = (step - warmup_steps) as f64 / span as f64;
    lr * (0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())).max(0.0)
}

/// AdamW hyper-parameters (PyTorch `torch.optim.AdamW` semantics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AdamW {
    pub(crate) betas: (f64, f64),
    pub(crate) eps: f64,
    pub(crate) weight_decay: f64,
}

impl AdamW {
    /// One update of `w` with gradient `g` (already clipped) at 1-based `step`; `moments` are
    /// the previous `(exp_avg, exp_avg_sq)` (zeros when `None`). Returns the new weight and
    /// moments.
    pub(crate) fn update<B: Backend>(
        &self,
        w: Tensor<B, 2>,
        g: Tensor<B, 2>,
        moments: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
        lr: f64,
        step: usize,
    ) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
        let (b1, b2) = self.betas;
        let t = step as i32;
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        let (m, v) = moments.unwrap_or_else(|| (g.zeros_like(), g.zeros_like()));
        let m = m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
        let v = v.mul_scalar(b2) + g.powi_scalar(2).mul_scalar(1.0 - b2);
        let denom = v.clone().div_scalar(bc2).sqrt().add_scalar(self.eps);
        let w = w.mul_scalar(1.0 - lr * self.weight_decay)
            - m.clone().div_scalar(bc1).div(denom).mul_scalar(lr);
        (w, m, v)
    }
}

/// AdamW over LoRA matrices keyed `<path>.lora_A` / `<path>.lora_B`, with their moments
/// `(exp_avg, exp_avg_sq)` (shared by the Llama and Stable Diffusion trainers). Checkpoints hold
/// the moments as f32 tensors `exp_avg.<key>` / `exp_avg_sq.<key>`.
#[derive(Debug, Clone)]
pub(crate) struct LoraOptimizer<B: Backend> {
    adamw: AdamW,
    moments: BTreeMap<String, (Tensor<B, 2>, Tensor<B, 2>)>,
}

impl<B: Backend> LoraOptimizer<B> {
    /// Fresh (zero) moments.
    pub(crate) fn new(betas: (f64, f64), eps: f64, weight_decay: f64) -> Self {
        Self {
            adamw: AdamW {
                betas,
                eps,
                weight_decay,
            },
            moments: BTreeMap::new(),
        }
    }

    /// The AdamW update (1-based `step`) of matrix `key` with weight `w` and gradient `g` scaled
    /// by the clip factor `clip`; returns the new weight and keeps the new moments.
    pub(crate) fn update(
        &mut self,
        key: String,
        w: Tensor<B, 2>,
        g: &Tensor<B, 2>,
        lr: f64,
        clip: f64,
        step: usize,
    ) -> Tensor<B, 2> {
        let g = if clip == 1.0 {
            g.clone()
        } else {
            g.clone().mul_scalar(clip)
        };
        let prev = self.moments.remove(&key);
        let (w, m, v) = self.adamw.update(w, g, prev, lr, step);
        self.moments.insert(key, (m, v));
        w
    }

    /// The moments as `exp_avg.<key>` / `exp_avg_sq.<key>` host tensors.
    pub(crate) fn state(&self) -> BTreeMap<String, HostTensor> {
        let mut out = BTreeMap::new();
        for (key, (m, v)) in &self.moments {
            let shape = m.dims().to_vec();
            out.insert(
                format!("exp_avg.{key}"),
                HostTensor::f32(shape.clone(), host_f32(m.clone())),
            );
            out.insert(
                format!("exp_avg_sq.{key}"),
                HostTensor::f32(shape, host_f32(v.clone())),
            );
        }
        out
    }

    /// Restores the moments in `state` (written by [`LoraOptimizer::state`], read from
    /// `origin`) of every `(key, weight)` in `matrices`, with the weight's shape, dtype and
    /// device. Both moments of every key must be there with that shape; on error the moments
    /// are left unchanged.
    pub(crate) fn load_state(
        &mut self,
        matrices: impl IntoIterator<Item = (String, Tensor<B, 2>)>,
        state: &BTreeMap<String, HostTensor>,
        origin: &Path,
    ) -> Result<()> {
        let mut moments = BTreeMap::new();
        for (key, w) in matrices {
            let shape: [usize; 2] = w.dims();
            let (device, dtype) = (w.device(), w.dtype());
            let get = |which: &str| -> Result<Tensor<B, 2>> {
                let k = format!("{which}.{key}");
                let t = state.get(&k).ok_or_else(|| TrainError::MissingTensor {
                    key: k.clone(),
                    path: origin.to_path_buf(),
                })?;
                if t.shape != shape {
                    return Err(TrainError::ShapeMismatch {
                        key: k,
                        expected: shape.to_vec(),
                        found: t.shape.clone(),
                    });
                }
                let data = t.clone().into_f32(&k)?;
                Ok(Tensor::from_data(
                    TensorData::new(data, shape),
                    (&device, dtype),
                ))
            };
            let m = get("exp_avg")?;
            let v = get("exp_avg_sq")?;
            moments.insert(key, (m, v));
        }
        self.moments = moments;
        Ok(())
    }
}

/// Every adapter matrix of `linears`, keyed `<path>.lora_A` / `<path>.lora_B`.
pub(crate) fn adapter_params<'a, B: Backend>(
    linears: impl IntoIterator<Item = (String, &'a LoraLinear<B>)>,
) -> Vec<(String, &'a Param<Tensor<B, 2>>)> {
    let mut out = Vec::new();
    for (path, lin) in linears {
        if let Some(a) = &lin.adapter {
            out.push((format!("{path}.lora_A"), &a.lora_a));
            out.push((format!("{path}.lora_B"), &a.lora_b));
        }
    }
    out
}

/// The gradients in `grads` of every adapter matrix of `linears` (keys as [`adapter_params`]),
/// in our layout (`lora_A` `[in, r]`, `lora_B` `[r, out]`).
pub(crate) fn adapter_grads<'a, B: AutodiffBackend>(
    linears: impl IntoIterator<Item = (String, &'a LoraLinear<B>)>,
    grads: &B::Gradients,
) -> BTreeMap<String, Tensor<B::InnerBackend, 2>> {
    adapter_params(linears)
        .into_iter()
        .filter_map(|(key, p)| p.grad(grads).map(|g| (key, g)))
        .collect()
}

/// Adds each `(key, gradient)` to the sum held under its key (gradient accumulation over the
/// micro-batches of one optimiser step).
pub(crate) fn accumulate_grads<B: Backend>(
    acc: &mut BTreeMap<String, Tensor<B, 2>>,
    grads: impl IntoIterator<Item = (String, Tensor<B, 2>)>,
) {
    for (key, g) in grads {
        let g = match acc.remove(&key) {
            Some(prev) => prev + g,
            None => g,
        };
        acc.insert(key, g);
    }
}

/// The global L2 norm of `grads` and the factor `torch.nn.utils.clip_grad_norm_` scales them by
/// (`max_norm / (norm + 1e-6)` above `max_norm`, else `1`; `max_norm = 0`: no clipping). A
/// non-finite norm is [`TrainError::NonFiniteLoss`] for (1-based) `step`, reporting the step's
/// `loss` and the last good checkpoint.
pub(crate) fn clip_grad_norm<B: Backend>(
    grads: &BTreeMap<String, Tensor<B, 2>>,
    max_norm: f64,
    step: usize,
    loss: f64,
    last_checkpoint: &Option<PathBuf>,
) -> Result<(f64, f64)> {
    let sq: f64 = grads
        .values()
        .map(|g| g.clone().powi_scalar(2).sum().into_scalar().to_f64_lossy())
        .sum();
    let norm = sq.sqrt();
    if !norm.is_finite() {
        return Err(non_finite_loss(step, loss, last_checkpoint));
    }
    let clip = if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    };
    Ok((norm, clip))
}

/// A micro-batch loss `value` of (1-based) `step` that is not finite abandons the progress bar
/// and is [`TrainError::NonFiniteLoss`] naming the last good checkpoint.
pub(crate) fn check_finite_loss(
    value: f64,
    step: usize,
    last_checkpoint: &Option<PathBuf>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<()> {
    if value.is_finite() {
        return Ok(());
    }
    if let Some(pb) = bar {
        pb.abandon();
    }
    Err(non_finite_loss(step, value, last_checkpoint))
}

fn non_finite_loss(step: usize, loss: f64, last_checkpoint: &Option<PathBuf>) -> TrainError {
    TrainError::NonFiniteLoss {
        step,
        loss: loss as f32,
        last_checkpoint: last_checkpoint.clone(),
    }
}

/// The steps progress bar on stderr (when `enabled`), at `position` of `total` steps.
pub(crate) fn progress_bar(
    enabled: bool,
    total: usize,
    position: usize,
) -> Option<indicatif::ProgressBar> {
    enabled.then(|| {
        let pb = indicatif::ProgressBar::new(total as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}<{eta_precise}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_position(position as u64);
        pb
    })
}

/// The checkpoint and log handling the Llama and Stable Diffusion LoRA trainers share.
pub(crate) trait CheckpointedRun {
    /// Optimiser steps done.
    fn steps_done(&self) -> usize;
    /// `(total_steps, checkpoint_every)` of the configuration (`checkpoint_every = 0`: only at
    /// the end).
    fn checkpoint_plan(&self) -> (usize, usize);
    /// The last checkpoint written (or resumed from).
    fn last_checkpoint(&self) -> &Option<PathBuf>;
    /// The last logged training loss.
    fn last_loss(&self) -> Option<f64>;
    /// Writes `checkpoint-{step}/` and returns it.
    fn write_checkpoint(&mut self) -> Result<PathBuf>;
    /// Writes the loss logs into the output folder.
    fn write_run_logs(&self) -> Result<()>;

    /// After an optimiser step: the checkpoint every `checkpoint_every` steps.
    fn periodic_checkpoint(&mut self) -> Result<()> {
        let step = self.steps_done();
        let (_, every) = self.checkpoint_plan();
        if every > 0 && step.is_multiple_of(every) {
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// The end of a (possibly stopped) run: finishes the progress bar, writes the final
    /// checkpoint when the run reached `total_steps` and `checkpoint-{step}` was not written yet,
    /// writes the logs and returns the summary.
    fn finish_run(&mut self, bar: Option<&indicatif::ProgressBar>) -> Result<TrainSummary> {
        if let Some(pb) = bar {
            pb.finish();
        }
        let step = self.steps_done();
        let (total_steps, _) = self.checkpoint_plan();
        if step == total_steps
            && self
                .last_checkpoint()
                .as_ref()
                .is_none_or(|p| !p.ends_with(format!("checkpoint-{step}")))
        {
            self.write_checkpoint()?;
        }
        self.write_run_logs()?;
        Ok(TrainSummary {
            steps: step,
            last_checkpoint: self.last_checkpoint().clone(),
            final_loss: self.last_loss(),
        })
    }
}

/// Implements [`CheckpointedRun`] for a trainer `$trainer<B: AutodiffBackend>` with fields
/// `state` (`step`, `log` of entries with `loss`), `cfg` (`total_steps`, `checkpoint_every`) and
/// `last_checkpoint`, and methods `save_checkpoint` and `write_logs`.
macro_rules! impl_checkpointed_run {
    ($trainer:ident) => {
        impl<B: burn::tensor::backend::AutodiffBackend> $crate::llama::sft::trainer::CheckpointedRun
            for $trainer<B>
        {
            fn steps_done(&self) -> usize {
                self.state.step
            }

            fn checkpoint_plan(&self) -> (usize, usize) {
                (self.cfg.total_steps, self.cfg.checkpoint_every)
            }

            fn last_checkpoint(&self) -> &Option<std::path::PathBuf> {
                &self.last_checkpoint
            }

            fn last_loss(&self) -> Option<f64> {
                self.state.log.last().map(|e| e.loss)
            }

            fn write_checkpoint(&mut self) -> $crate::error::Result<std::path::PathBuf> {
                self.save_checkpoint()
            }

            fn write_run_logs(&self) -> $crate::error::Result<()> {
                self.write_logs()
            }
        }
    };
}
pub(crate) use impl_checkpointed_run;

/// Writes the resumable part of a checkpoint into `dir`: the optimiser moments
/// (`optimizer.safetensors`, f32) and the position and log (`trainer_state.json`).
pub(crate) fn write_run_state(
    dir: &Path,
    optimizer: &BTreeMap<String, HostTensor>,
    state: &impl Serialize,
) -> Result<()> {
    write_safetensors(
        dir.join("optimizer.safetensors"),
        optimizer,
        StoreDtype::F32,
        None,
    )?;
    let p = dir.join("trainer_state.json");
    let text = serde_json::to_string_pretty(state).map_err(|e| TrainError::json(&p, e))?;
    std::fs::write(&p, text).map_err(|e| TrainError::io(&p, e))
}

/// Reads what [`write_run_state`] wrote into checkpoint `dir`: the position and log, the
/// optimiser moments and the path they were read from.
pub(crate) fn read_run_state<S: DeserializeOwned>(
    dir: &Path,
) -> Result<(S, BTreeMap<String, HostTensor>, PathBuf)> {
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state = serde_json::from_str(&text).map_err(|e| TrainError::json(&state_path, e))?;
    let opt_path = dir.join("optimizer.safetensors");
    let opt = read_safetensors(&opt_path)?;
    Ok((state, opt, opt_path))
}

/// One logged optimiser step of a trainer's loss log.
pub(crate) trait LoggedStep: Serialize {
    /// The 1-based optimiser step.
    fn step(&self) -> usize;
    /// The training loss.
    fn loss(&self) -> f64;
    /// The validation loss, when evaluated at this step.
    fn val_loss(&self) -> Option<f64> {
        None
    }
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

/// Writes `loss_log.csv` (the given text), `loss_log.json` (`log`) and `loss_curve.png` (the
/// training and validation losses of `log` by step) into `out_dir`.
pub(crate) fn write_loss_logs<E: LoggedStep>(
    out_dir: &Path,
    csv_text: &str,
    log: &[E],
) -> Result<()> {
    let csv = out_dir.join("loss_log.csv");
    let mut f = std::fs::File::create(&csv).map_err(|e| TrainError::io(&csv, e))?;
    f.write_all(csv_text.as_bytes())
        .map_err(|e| TrainError::io(&csv, e))?;
    let json = out_dir.join("loss_log.json");
    let s = serde_json::to_string_pretty(log).map_err(|e| TrainError::json(&json, e))?;
    std::fs::write(&json, s).map_err(|e| TrainError::io(&json, e))?;
    let train: Vec<(f64, f64)> = log.iter().map(|e| (e.step() as f64, e.loss())).collect();
    let val: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|e| e.val_loss().map(|v| (e.step() as f64, v)))
        .collect();
    crate::train::plot::loss_curve_png(out_dir.join("loss_curve.png"), &train, &val)
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

/// Length-bucketed, seeded micro-batch plan: for epoch `e`, samples sorted by length are cut
/// into micro-batches whose order is shuffled with `seed + e`.
fn epoch_plan(lengths: &[usize], batch: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    idx.sort_by_key(|&i| (lengths[i], i));
    let mut batches: Vec<Vec<usize>> = idx.chunks(batch).map(<[usize]>::to_vec).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(epoch as u64));
    batches.shuffle(&mut rng);
    batches
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
}

/// What a finished (or interrupted) run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Optimiser steps done in total.
    pub steps: usize,
    /// The last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
    /// Final logged training loss.
    pub final_loss: Option<f64>,
}

impl<B: AutodiffBackend> SftTrainer<B> {
    /// A fresh run. `model` must already carry adapters (see [`Llama::with_lora`]).
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
        if cfg.batch_size == 0 || cfg.grad_accum == 0 || cfg.total_steps == 0 {
            return Err(TrainError::InvalidArgument(
                "batch_size, grad_accum and total_steps must be positive".into(),
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
        })
    }

    /// Resumes from a checkpoint folder written by this trainer: loads the adapter into the
    /// (adapter-free) base, the optimiser moments and the data position.
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

    /// Writes `checkpoint-{step}/` (adapter, optimiser moments, trainer state) and returns it.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let dir = self.out_dir.join(format!("checkpoint-{}", self.state.step));
        self.model
            .save_peft_adapter(&dir, &self.lora, &self.base_name)?;
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
        std::fs::create_dir_all(&self.out_dir).map_err(|e| TrainError::io(&self.out_dir, e))?;
        let lengths: Vec<usize> = train.iter().map(SftSample::len).collect();
        let per_epoch = train.len().div_ceil(self.cfg.batch_size);
        let end = stop_after
            .unwrap_or(self.cfg.total_steps)
            .min(self.cfg.total_steps);
        let bar = progress_bar(self.cfg.progress, self.cfg.total_steps, self.state.step);
        let mut plan_epoch = usize::MAX;
        let mut plan = Vec::new();
        while self.state.step < end {
            let started = Instant::now();
            // Gather this step's micro-batches (data position = micro_batches consumed).
            let mut micro: Vec<Vec<usize>> = Vec::with_capacity(self.cfg.grad_accum);
            for k in 0..self.cfg.grad_accum {
                let pos = self.state.micro_batches + k;
                let (epoch, i) = (pos / per_epoch, pos % per_epoch);
                if epoch != plan_epoch {
                    plan = epoch_plan(&lengths, self.cfg.batch_size, self.cfg.seed, epoch);
                    plan_epoch = epoch;
                }
                micro.push(plan[i].clone());
            }
            let counted: Vec<usize> = micro
                .iter()
                .map(|b| {
                    b.iter()
                        .map(|&i| train[i].labels[1..].iter().filter(|&&l| l >= 0).count())
                        .sum()
                })
                .collect();
            let total: usize = counted.iter().sum();
            if total == 0 {
                return Err(TrainError::InvalidArgument(
                    "a step has no supervised tokens".into(),
                ));
            }
            let mut grads_acc: BTreeMap<String, Tensor<B::InnerBackend, 2>> = BTreeMap::new();
            let mut loss_sum = 0.0f64;
            let mut tokens = 0usize;
            for (k, batch) in micro.iter().enumerate() {
                // Dropout masks depend only on the data position: resume is exact.
                crate::nn::lora::seed_lora_dropout(
                    self.cfg
                        .seed
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .wrapping_add((self.state.micro_batches + k) as u64),
                );
                let refs: Vec<&SftSample> = batch.iter().map(|&i| &train[i]).collect();
                tokens += refs.iter().map(|s| s.len()).sum::<usize>();
                let (loss, n) = batch_loss(&self.model, &refs, self.cfg.pad_id)?;
                let weight = n as f64 / total as f64;
                let scaled = loss.mul_scalar(weight);
                let value = scaled.clone().into_scalar().to_f64_lossy();
                check_finite_loss(
                    value,
                    self.state.step + 1,
                    &self.last_checkpoint,
                    bar.as_ref(),
                )?;
                loss_sum += value;
                let grads = scaled.backward();
                accumulate_grads(&mut grads_acc, adapter_grads(self.model.linears(), &grads));
            }
            let (grad_norm, clip) = clip_grad_norm(
                &grads_acc,
                self.cfg.max_grad_norm,
                self.state.step + 1,
                loss_sum,
                &self.last_checkpoint,
            )?;
            let lr = self.cfg.lr_at(self.state.step);
            self.adamw_step(grads_acc, clip, lr);
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
    ) {
        let step = self.state.step + 1;
        let optim = &mut self.optim;
        // Cloning a module only clones tensor handles.
        let model = self.model.clone();
        let mut update = |key: String, p: Param<Tensor<B, 2>>| -> Param<Tensor<B, 2>> {
            let Some(g) = grads.get(&key) else { return p };
            let w = optim.update(key, p.val().inner(), g, lr, clip, step);
            Param::from_tensor(Tensor::from_inner(w).require_grad())
        };
        let model = model
            .try_map_linears(|path, lin| {
                let LoraLinear {
                    weight,
                    bias,
                    adapter,
                } = lin;
                let adapter = adapter.map(|mut a| {
                    a.lora_a = update(format!("{path}.lora_A"), a.lora_a);
                    a.lora_b = update(format!("{path}.lora_B"), a.lora_b);
                    a
                });
                Ok(LoraLinear {
                    weight,
                    bias,
                    adapter,
                })
            })
            .unwrap_or_else(|_| unreachable!("the update closure cannot fail"));
        self.model = model;
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

/// A backend scalar as `f64`.
pub(crate) trait ToF64 {
    /// The value converted to `f64`.
    fn to_f64_lossy(self) -> f64;
}

impl<E: burn::tensor::ElementConversion> ToF64 for E {
    fn to_f64_lossy(self) -> f64 {
        self.elem::<f64>()
    }
}
