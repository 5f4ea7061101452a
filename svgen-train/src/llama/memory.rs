//! How much memory LoRA training of a Llama needs, predicted from its configuration alone (no
//! weights are read): [`estimate_train_memory`].
//!
//! The estimate follows what this crate's training step actually keeps, tensor by tensor, as
//! Burn's autodiff records it:
//!
//! - **weights**: the frozen base in its dtype;
//! - **adapter state**: `A`, `B`, their gradients and AdamW's two moments, all `f32`;
//! - **activations** the backward pass reads, per decoder layer and token (the attention op keeps
//!   only q, k, v, its output and one `f32` logsumexp per head; the LM head and cross-entropy
//!   keep only the hidden states of the labelled tokens and one logsumexp each);
//! - **working set**: the largest short-lived set on top of the activations (the first backward
//!   steps of the last layer's MLP, or one chunk of logits and its softmax).
//!
//! With activation checkpointing, the activations kept throughout are the layer inputs
//! (`layers × tokens × hidden` in the base dtype), and the working set is one recomputed
//! layer's activations with its backward buffers (or the LM head's backward, if larger).
//!
//! The per-token counts below are in elements; `e` is the size of the base dtype. Under a
//! half-precision base, each adapted linear reads an `f32` copy of its input (the LoRA branch
//! computes in `f32`) and RMSNorm keeps an `f32` copy of its input. `llama_perf train-memory`
//! prints this estimate next to the measured peak.

use std::collections::BTreeSet;

use burn::tensor::DType;

use crate::llama::config::LlamaConfig;
use crate::llama::lora::LoraTarget;
use crate::nn::loss::DEFAULT_CHUNK_TOKENS;

/// The training setting whose memory [`estimate_train_memory`] predicts.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainMemoryPlan {
    /// Tokens per row.
    pub seq: usize,
    /// Rows per micro-batch.
    pub batch: usize,
    /// LoRA rank.
    pub r: usize,
    /// The adapted linears.
    pub targets: BTreeSet<LoraTarget>,
    /// Dtype of the frozen base weights (adapters and optimiser state are `f32`).
    pub base_dtype: DType,
    /// Per-layer activation checkpointing.
    pub checkpointing: bool,
    /// Fraction of tokens with a label (the chunked loss keeps the hidden states of those).
    pub labelled_fraction: f64,
}

impl Default for TrainMemoryPlan {
    fn default() -> Self {
        Self {
            seq: 2048,
            batch: 1,
            r: 16,
            targets: LoraTarget::ALL.into_iter().collect(),
            base_dtype: DType::F32,
            checkpointing: false,
            labelled_fraction: 1.0,
        }
    }
}

/// Predicted memory of a LoRA training step, in bytes, by component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrainMemoryEstimate {
    /// Frozen base weights.
    pub weights: u64,
    /// Adapter parameters (`f32`).
    pub adapters: u64,
    /// Adapter gradients and AdamW moments (`f32`, three times the adapters).
    pub optimiser: u64,
    /// Activations kept through the whole backward pass: every layer's under a plain run, the
    /// saved layer inputs under checkpointing.
    pub activations: u64,
    /// The largest working set on top of them: without checkpointing, the short-lived buffers
    /// of the first backward steps (the last layer's SwiGLU gradients, or a chunk of logits
    /// and its softmax in the LM head); with checkpointing, the larger of the LM head's
    /// backward and one recomputed layer's activations with its backward buffers.
    pub working_set: u64,
}

impl TrainMemoryEstimate {
    /// The predicted peak.
    pub fn total(&self) -> u64 {
        self.weights + self.adapters + self.optimiser + self.activations + self.working_set
    }

    /// What training adds to a loaded model with its adapters: the peak minus weights and
    /// adapters.
    pub fn training_increment(&self) -> u64 {
        self.optimiser + self.activations + self.working_set
    }
}

/// Number of base parameters of `cfg` (embeddings, layers, final norm, untied LM head).
pub fn base_params(cfg: &LlamaConfig) -> u64 {
    let (h, i) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let q = (cfg.num_attention_heads * cfg.head_dim) as u64;
    let kv = (cfg.num_key_value_heads * cfg.head_dim) as u64;
    let per_layer = h * q * 2 + h * kv * 2 + 3 * h * i + 2 * h;
    let embed = cfg.vocab_size as u64 * h;
    embed * (1 + u64::from(!cfg.tie_word_embeddings)) + h + cfg.num_hidden_layers as u64 * per_layer
}

/// Number of adapter parameters (`A` and `B` of every targeted linear) for rank `r`.
pub fn lora_params(cfg: &LlamaConfig, r: usize, targets: &BTreeSet<LoraTarget>) -> u64 {
    let (h, i) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let q = (cfg.num_attention_heads * cfg.head_dim) as u64;
    let kv = (cfg.num_key_value_heads * cfg.head_dim) as u64;
    let per_layer: u64 = targets
        .iter()
        .map(|t| {
            let (fan_in, fan_out) = match t {
                LoraTarget::Q => (h, q),
                LoraTarget::K | LoraTarget::V => (h, kv),
                LoraTarget::O => (q, h),
                LoraTarget::Gate | LoraTarget::Up => (h, i),
                LoraTarget::Down => (i, h),
            };
            r as u64 * (fan_in + fan_out)
        })
        .sum();
    cfg.num_hidden_layers as u64 * per_layer
}

/// Bytes per token one decoder layer keeps for the backward pass. `tracked_input`: whether the
/// layer's input depends on the adapters (every layer but the first in a plain run; every
/// recomputed layer but the first under checkpointing).
fn layer_bytes_per_token(cfg: &LlamaConfig, plan: &TrainMemoryPlan, tracked_input: bool) -> u64 {
    let e = plan.base_dtype.size() as u64;
    let half = e != 4;
    let (h, i) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let q = (cfg.num_attention_heads * cfg.head_dim) as u64;
    let kv = (cfg.num_key_value_heads * cfg.head_dim) as u64;
    let heads = cfg.num_attention_heads as u64;
    let has = |t: LoraTarget| plan.targets.contains(&t);
    let n_targets = plan.targets.len() as u64;
    let r = plan.r as u64;
    // An adapted linear keeps its input: the input itself in f32, an f32 copy per linear
    // under a half-precision base.
    let lora_inputs = |adapted: u64, width: u64| -> u64 {
        if adapted == 0 {
            0
        } else if half {
            adapted * 4 * width
        } else {
            4 * width
        }
    };
    let attn_in = [LoraTarget::Q, LoraTarget::K, LoraTarget::V]
        .into_iter()
        .filter(|&t| has(t))
        .count() as u64;
    let mlp_in = [LoraTarget::Gate, LoraTarget::Up]
        .into_iter()
        .filter(|&t| has(t))
        .count() as u64;
    let mut bytes = 0;
    // input_layernorm keeps its (f32) input when it is tracked.
    if tracked_input {
        bytes += 4 * h;
    }
    bytes += lora_inputs(attn_in, h);
    // x·A of every adapted linear (read by the B product), f32.
    bytes += 4 * r * n_targets;
    // attention: q and k after RoPE, v, the output; f32 logsumexp per head.
    bytes += e * (2 * q + 2 * kv) + 4 * heads;
    // o_proj input (the output made contiguous).
    bytes += lora_inputs(u64::from(has(LoraTarget::O)), q);
    // post_attention_layernorm keeps its f32 input (the residual sum, always tracked).
    bytes += 4 * h;
    bytes += lora_inputs(mlp_in, h);
    // SwiGLU: gate, sigmoid(gate), silu(gate) and up (e each); down_proj's input, the
    // product (f32 either way: the product itself, or its f32 copy under a half base).
    bytes += 4 * e * i;
    if has(LoraTarget::Down) {
        bytes += 4 * i;
    }
    bytes
}

/// The largest short-lived working set of one layer's backward pass, per token: the gradients
/// of the SwiGLU (product, both factors, the sigmoid) while the layer's activations are still
/// alive.
fn layer_transient_per_token(cfg: &LlamaConfig, plan: &TrainMemoryPlan) -> u64 {
    let e = plan.base_dtype.size() as u64;
    let (h, i) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    3 * e * i + 2 * e * h
}

/// Predicts the peak memory of one LoRA training step (forward, backward and AdamW) of a model
/// of architecture `cfg` in the setting `plan`. See the module documentation for what is
/// counted; `llama_perf train-memory` checks it against measured peaks.
///
/// ```
/// use svgen_train::llama::memory::{estimate_train_memory, TrainMemoryPlan};
/// use svgen_train::LlamaConfig;
///
/// let cfg = LlamaConfig::from_json_str(r#"{"vocab_size": 128256, "hidden_size": 4096,
///     "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
///     "num_key_value_heads": 8}"#).unwrap();
/// let plan = TrainMemoryPlan {
///     seq: 8192,
///     base_dtype: burn::tensor::DType::BF16,
///     checkpointing: true,
///     ..TrainMemoryPlan::default()
/// };
/// let gb = estimate_train_memory(&cfg, &plan).total() as f64 / 1e9;
/// assert!(gb > 16.0 && gb < 40.0, "{gb}");
/// ```
pub fn estimate_train_memory(cfg: &LlamaConfig, plan: &TrainMemoryPlan) -> TrainMemoryEstimate {
    let e = plan.base_dtype.size() as u64;
    let tokens = (plan.seq * plan.batch) as u64;
    let labelled = (tokens as f64 * plan.labelled_fraction.clamp(0.0, 1.0)).ceil() as u64;
    let (h, layers) = (cfg.hidden_size as u64, cfg.num_hidden_layers as u64);
    let vocab = cfg.vocab_size as u64;
    let adapters = 4 * lora_params(cfg, plan.r, &plan.targets);
    // Head: the final norm's f32 input, the labelled hidden states and their logsumexp.
    let head = tokens * 4 * h + labelled * (e * h + 4);
    // Head backward: one chunk of f32 logits and its softmax, the hidden-state gradient.
    let head_transient = 2 * 4 * DEFAULT_CHUNK_TOKENS.min(labelled.max(1) as usize) as u64 * vocab
        + labelled * e * h
        + tokens * e * h;
    let layer_tracked = layer_bytes_per_token(cfg, plan, true) * tokens;
    let layer_transient = layer_transient_per_token(cfg, plan) * tokens;
    let (activations, working_set) = if plan.checkpointing {
        // Layer inputs, then the larger of the head's backward and one layer's.
        let inputs = layers * tokens * e * h;
        let head_phase = head + head_transient;
        // A recomputed layer: its activations, the incoming gradient and its copy.
        let layer_phase = layer_tracked + layer_transient + 2 * tokens * e * h;
        (inputs, head_phase.max(layer_phase))
    } else {
        let first = layer_bytes_per_token(cfg, plan, false) * tokens;
        let acts = first + layer_tracked * layers.saturating_sub(1) + head;
        (acts, head_transient.max(layer_transient))
    };
    TrainMemoryEstimate {
        weights: base_params(cfg) * e,
        adapters,
        optimiser: 3 * adapters,
        activations,
        working_set,
    }
}
