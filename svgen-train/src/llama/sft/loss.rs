//! The masked causal-LM loss of supervised fine-tuning: micro-batches of padded or packed
//! samples ([`SftBatch`]), the loss over the chunked LM head ([`sft_loss`]), and one
//! micro-batch's loss and adapter gradients with or without activation checkpointing
//! ([`loss_and_grads`]).

use std::collections::BTreeMap;

use burn::module::AutodiffModule;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::error::{Result, TrainError};
use crate::llama::attention::AttnInputs;
use crate::llama::sft::data::{SftSample, IGNORE_INDEX};
use crate::llama::Llama;
use crate::nn::attention::AttentionMask;
use crate::nn::lora::{with_dropout_forced, DropoutState};
use crate::nn::loss::{chunked_causal_lm_loss, ChunkedLossOptions};
use crate::train::{adapter_grads, ToF64};

/// Next-token cross-entropy as HF's `ForCausalLMLoss`: logits at `t` predict `labels[t + 1]`;
/// labels equal to [`IGNORE_INDEX`] are skipped; the mean is over counted tokens.
///
/// Returns the scalar loss and the number of counted tokens. Fails if no token counts or a
/// label is outside the vocabulary. This is the reference path over full `[B, T, vocab]`
/// logits; training uses [`sft_loss`], which never forms them.
pub fn causal_lm_loss<B: Backend>(
    logits: Tensor<B, 3>,
    labels: &[i64],
) -> Result<(Tensor<B, 1>, usize)> {
    let [b, t, v] = logits.dims();
    if labels.len() != b * t {
        return Err(TrainError::InvalidArgument(format!(
            "labels hold {} values for a [{b}, {t}] batch",
            labels.len()
        )));
    }
    let device = logits.device();
    let mut targets = Vec::with_capacity(b * (t - 1).max(1));
    let mut weights = Vec::with_capacity(b * t);
    let mut count = 0usize;
    for row in 0..b {
        for i in 0..t.saturating_sub(1) {
            let y = labels[row * t + i + 1];
            if y == IGNORE_INDEX {
                targets.push(0i64);
                weights.push(0.0f32);
            } else if y < 0 || y as usize >= v {
                return Err(TrainError::InvalidArgument(format!(
                    "label {y} outside the vocabulary ({v})"
                )));
            } else {
                targets.push(y);
                weights.push(1.0);
                count += 1;
            }
        }
    }
    if count == 0 {
        return Err(TrainError::InvalidArgument(
            "no label counts in the loss (all ignored)".into(),
        ));
    }
    let n = b * (t - 1);
    let logits = logits.narrow(1, 0, t - 1).reshape([n, v]);
    let logits = if logits.dtype() != DType::F32 {
        logits.cast(DType::F32)
    } else {
        logits
    };
    let logp = log_softmax(logits, 1);
    let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let picked = logp.gather(1, idx).reshape([n]);
    let w = Tensor::<B, 1>::from_data(TensorData::new(weights, [n]), &device);
    let loss = (picked * w).sum().neg().div_scalar(count as f64);
    Ok((loss, count))
}

/// One micro-batch as the model sees it: `batch` rows of `seq` tokens, each row holding one
/// sample (right-padded) or several packed samples.
///
/// Packing follows HF's `DataCollatorWithFlattening`: the samples of a row are concatenated,
/// position ids restart at 0 with every sample, attention is block-diagonal causal (a token
/// attends only to the earlier tokens of its own sample), and the first label of every sample
/// is [`IGNORE_INDEX`], so no target crosses a boundary. The loss over a packed row is therefore
/// the loss of its samples in separate rows. Trailing padding belongs to no sample and carries
/// no label.
#[derive(Debug, Clone, PartialEq)]
pub struct SftBatch {
    /// Rows.
    pub batch: usize,
    /// Positions per row.
    pub seq: usize,
    /// `batch × seq` token ids, row-major.
    pub input_ids: Vec<i64>,
    /// `batch × seq` labels ([`IGNORE_INDEX`]: no loss).
    pub labels: Vec<i64>,
    /// `batch × seq` position ids (restarting at 0 with every sample).
    pub position_ids: Vec<i64>,
    /// Per row, the sample boundaries `[0, e1, …, en]` (flash-attn's `cu_seqlens`).
    pub cu_seqlens: Vec<Vec<usize>>,
    /// Real (non-padding) tokens.
    pub tokens: usize,
}

impl SftBatch {
    /// One sample per row, right-padded with `pad_id` to the longest (padding labels
    /// ignored). Right padding is exact for a causal model: real tokens never attend to later
    /// padding.
    pub fn padded(samples: &[&SftSample], pad_id: u32) -> Result<Self> {
        let rows: Vec<Vec<&SftSample>> = samples.iter().map(|s| vec![*s]).collect();
        Self::packed(&rows, pad_id)
    }

    /// Several samples per row (see the type's documentation), rows right-padded with
    /// `pad_id` to the longest.
    pub fn packed(rows: &[Vec<&SftSample>], pad_id: u32) -> Result<Self> {
        let lens: Vec<usize> = rows
            .iter()
            .map(|r| r.iter().map(|s| s.len()).sum())
            .collect();
        let seq = lens.iter().copied().max().unwrap_or(0);
        if rows.is_empty() || seq < 2 || rows.iter().any(|r| r.iter().any(|s| s.is_empty())) {
            return Err(TrainError::InvalidArgument(
                "empty batch (or an empty sample)".into(),
            ));
        }
        let batch = rows.len();
        let n = batch * seq;
        let mut input_ids = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        let mut position_ids = Vec::with_capacity(n);
        let mut cu_seqlens = Vec::with_capacity(batch);
        for (row, &len) in rows.iter().zip(&lens) {
            let mut cu = vec![0];
            for s in row {
                if s.labels.len() != s.len() {
                    return Err(TrainError::InvalidArgument(format!(
                        "a sample has {} tokens and {} labels",
                        s.len(),
                        s.labels.len()
                    )));
                }
                input_ids.extend(s.input_ids.iter().map(|&x| x as i64));
                labels.push(IGNORE_INDEX);
                labels.extend_from_slice(&s.labels[1..]);
                position_ids.extend(0..s.len() as i64);
                cu.push(cu.last().copied().unwrap_or(0) + s.len());
            }
            input_ids.extend(std::iter::repeat_n(pad_id as i64, seq - len));
            labels.extend(std::iter::repeat_n(IGNORE_INDEX, seq - len));
            position_ids.extend(std::iter::repeat_n(0, seq - len));
            cu_seqlens.push(cu);
        }
        Ok(Self {
            batch,
            seq,
            input_ids,
            labels,
            position_ids,
            cu_seqlens,
            tokens: lens.iter().sum(),
        })
    }

    /// Labels that count in the loss (targets of the next-token prediction).
    pub fn counted(&self) -> usize {
        (0..self.batch)
            .map(|r| {
                self.labels[r * self.seq + 1..(r + 1) * self.seq]
                    .iter()
                    .filter(|&&l| l != IGNORE_INDEX)
                    .count()
            })
            .sum()
    }

    /// Which keys each query attends to: causal within each sample.
    pub fn attention(&self) -> AttentionMask {
        AttentionMask::causal().with_cu_seqlens(self.cu_seqlens.clone())
    }

    fn ids<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2, Int> {
        Tensor::from_data(
            TensorData::new(self.input_ids.clone(), [self.batch, self.seq]),
            device,
        )
    }
}

/// The loss of a micro-batch: the final hidden states of [`Llama::hidden_states`] through the
/// chunked LM head and cross-entropy ([`chunked_causal_lm_loss`]), so no `[T, vocab]` logits
/// live for the whole sequence. Returns the mean loss over counted tokens and their number.
pub fn sft_loss<B: Backend>(model: &Llama<B>, batch: &SftBatch) -> Result<(Tensor<B, 1>, usize)> {
    let h = model.hidden_states(
        batch.ids(&model.device()),
        &batch.position_ids,
        &batch.attention(),
    )?;
    chunked_causal_lm_loss(
        h,
        model.lm_head_weight(),
        &batch.labels,
        &ChunkedLossOptions::default(),
    )
}

/// Loss of one batch of samples, right-padded with `pad_id` (padding labels ignored).
/// Right padding is exact for a causal model: real tokens never attend to later padding.
pub fn batch_loss<B: Backend>(
    model: &Llama<B>,
    samples: &[&SftSample],
    pad_id: u32,
) -> Result<(Tensor<B, 1>, usize)> {
    sft_loss(model, &SftBatch::padded(samples, pad_id)?)
}

/// One micro-batch's loss and the gradients of its adapter matrices ([`loss_and_grads`]).
#[derive(Debug)]
pub struct MicroBatchGrads<B: Backend> {
    /// The loss times the weight it was given, `[1]`, still on the device: the trainer reads
    /// all of a step's micro-batch losses in one transfer after the backward passes.
    pub loss: Tensor<B, 1>,
    /// Counted tokens.
    pub count: usize,
    /// Gradient of the weighted loss for every adapter matrix that has one, keyed
    /// `<module path>.lora_A` / `.lora_B`, in our layout (`[in, r]`, `[r, out]`), and for the
    /// trainable token rows, keyed `trainable_tokens.embed_tokens` / `trainable_tokens.lm_head`
    /// (`[k, hidden]`). When the loss is not finite these are too (the backward pass runs
    /// without reading the loss first; the trainer refuses the step after reading it).
    pub grads: BTreeMap<String, Tensor<B, 2>>,
}

impl<B: Backend> MicroBatchGrads<B> {
    /// The weighted loss as a host value (one device sync).
    pub fn loss_value(&self) -> f64 {
        self.loss.clone().into_scalar().to_f64_lossy()
    }
}

/// The loss of `batch` times `weight` (the share of the optimiser step's tokens it holds) and
/// its gradients with respect to the adapters and the trainable token rows.
///
/// With `checkpointing`, activations are recomputed per decoder layer: the forward pass runs
/// without autodiff and keeps only each layer's input; the backward pass first
/// differentiates the final norm and the chunked loss, then, from the last layer to the first,
/// re-runs one layer under autodiff from its saved input and back-propagates the gradient of
/// its output through it (`Σ y·g` has gradient `g` with respect to `y`), which yields that
/// layer's adapter gradients and the gradient of its input. LoRA dropout draws the same masks
/// in the recomputation as in the forward pass. Memory is then the layer inputs
/// (`layers × B × T × hidden`) plus one layer's activations, instead of every layer's.
///
/// Burn 0.21's autodiff cannot run a backward pass inside another one (its graph lock is
/// held during the outer pass), so the recomputation is driven here, layer by layer, rather
/// than from a node of one graph; the result is the same gradient.
pub fn loss_and_grads<B: AutodiffBackend>(
    model: &Llama<B>,
    batch: &SftBatch,
    weight: f64,
    checkpointing: bool,
) -> Result<MicroBatchGrads<B::InnerBackend>> {
    if !checkpointing {
        let (loss, count) = sft_loss(model, batch)?;
        let scaled = loss.mul_scalar(weight);
        let value = scaled.clone().detach().inner();
        let grads = scaled.backward();
        let mut out = adapter_grads(model.linears(), &grads);
        out.extend(model.token_grads(&grads));
        return Ok(MicroBatchGrads {
            loss: value,
            count,
            grads: out,
        });
    }
    checkpointed(model, batch, weight)
}

/// [`loss_and_grads`] with per-layer recomputation.
fn checkpointed<B: AutodiffBackend>(
    model: &Llama<B>,
    batch: &SftBatch,
    weight: f64,
) -> Result<MicroBatchGrads<B::InnerBackend>> {
    let device = model.device();
    let dims = [batch.batch, batch.seq];
    let inputs = model.fresh_inputs(dims, &batch.position_ids, batch.attention())?;
    let inner_inputs = AttnInputs::<B::InnerBackend>::fresh(
        inputs.cos.clone().inner(),
        inputs.sin.clone().inner(),
        inputs.attention.clone(),
    );

    // Forward without autodiff, keeping each layer's input and dropout position.
    let mut x = model.embed(batch.ids(&device)).inner();
    let mut saved = Vec::with_capacity(model.layers.len());
    for layer in &model.layers {
        let rng = DropoutState::save();
        saved.push((x.clone(), rng));
        let inner = layer.valid();
        x = with_dropout_forced(|| inner.forward(x, &inner_inputs, None))?;
    }
    let after_forward = DropoutState::save();

    // The head: final norm and chunked loss, differentiated with respect to its input.
    let top = Tensor::<B, 3>::from_inner(x).require_grad();
    let h = model.norm.try_forward(top.clone())?;
    let (loss, count) = chunked_causal_lm_loss(
        h,
        model.lm_head_weight(),
        &batch.labels,
        &ChunkedLossOptions::default(),
    )?;
    let scaled = loss.mul_scalar(weight);
    let value = scaled.clone().detach().inner();
    let grads = scaled.backward();
    let mut g = top.grad(&grads).ok_or_else(|| {
        TrainError::InvalidArgument("the loss does not depend on the model".into())
    })?;
    // Trainable output rows (`lm_head`'s, or a tied model's shared rows) get theirs here.
    let mut out = model.token_grads(&grads);
    drop(grads);

    // Layers from the last to the first: recompute, then back-propagate `g`. The first layer
    // re-runs the embedding lookup under autodiff when the embedding has trainable rows, so
    // they get the gradient of their input use (added to that of their output use when tied).
    let embed_grads = model.has_trainable_embedding();
    for (l, (layer, (x, rng))) in model.layers.iter().zip(saved).enumerate().rev() {
        rng.restore();
        let x = if l == 0 && embed_grads {
            model.embed(batch.ids(&device))
        } else {
            Tensor::<B, 3>::from_inner(x)
        };
        let x = if l > 0 { x.require_grad() } else { x };
        let y = layer.forward(x.clone(), &inputs, None)?;
        let grads = (y * Tensor::from_inner(g.clone())).sum().backward();
        out.extend(adapter_grads(layer.linears(l), &grads));
        if l == 0 {
            for (key, grad) in model.token_grads(&grads) {
                let grad = match out.remove(&key) {
                    Some(prev) => prev + grad,
                    None => grad,
                };
                out.insert(key, grad);
            }
        }
        if l > 0 {
            g = x.grad(&grads).ok_or_else(|| {
                TrainError::InvalidArgument("a layer's output does not depend on its input".into())
            })?;
        }
    }
    after_forward.restore();
    Ok(MicroBatchGrads {
        loss: value,
        count,
        grads: out,
    })
}
