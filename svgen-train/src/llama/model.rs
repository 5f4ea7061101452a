//! The Llama 2/3/3.1/3.2 decoder in Burn, generic over the backend.
//!
//! Weights are kept in HF naming; linear weights are stored `[in, out]` (HF's `[out, in]`
//! transposed once at load time). RoPE follows HF's rotate-half convention, so HF q/k weights
//! are used as they are.

use burn::module::{Module, Param};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};

use crate::error::{Result, TrainError};
use crate::llama::attention::{rope_tables, Attention, AttnInputs};
use crate::llama::config::LlamaConfig;
use crate::llama::kv_cache::{CachedCall, KvCache, LayerKv};
use crate::llama::trainable_tokens::TokenAdapter;
use crate::nn::lora::LoraLinear;

/// RMSNorm: `weight * x / sqrt(mean(x^2) + eps)`, computed in f32 as HF does.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `weight` `[hidden]`.
    pub weight: Param<Tensor<B, 1>>,
    /// `rms_norm_eps`.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Normalises the last dimension.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let dtype = x.dtype();
        let x = if dtype != DType::F32 {
            x.cast(DType::F32)
        } else {
            x
        };
        let var = x.clone().powi_scalar(2).mean_dim(2);
        let x = x * var.add_scalar(self.eps).sqrt().recip();
        let x = if dtype != DType::F32 {
            x.cast(dtype)
        } else {
            x
        };
        x * self.weight.val().unsqueeze::<3>()
    }
}

/// The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `gate_proj`.
    pub gate_proj: LoraLinear<B>,
    /// `up_proj`.
    pub up_proj: LoraLinear<B>,
    /// `down_proj`.
    pub down_proj: LoraLinear<B>,
}

/// One decoder layer (`model.layers.N`).
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// `self_attn`.
    pub self_attn: Attention<B>,
    /// `mlp`.
    pub mlp: Mlp<B>,
    /// `input_layernorm`.
    pub input_layernorm: RmsNorm<B>,
    /// `post_attention_layernorm`.
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: Backend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

impl<B: Backend> DecoderLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        inputs: &AttnInputs<'_, B>,
        cache: Option<&mut LayerKv<B>>,
    ) -> Tensor<B, 3> {
        let h = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), inputs, cache);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

/// `LlamaForCausalLM`: embeddings, decoder layers, final norm and LM head.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// `model.embed_tokens.weight` `[vocab, hidden]`.
    pub embed_tokens: Param<Tensor<B, 2>>,
    /// `model.layers`.
    pub layers: Vec<DecoderLayer<B>>,
    /// `model.norm`.
    pub norm: RmsNorm<B>,
    /// `lm_head.weight`, stored `[hidden, vocab]`; `None` with tied embeddings.
    pub lm_head: Option<Param<Tensor<B, 2>>>,
    /// Trainable rows of `embed_tokens` / `lm_head` (added tokens, or the whole matrices).
    pub token_adapter: Option<TokenAdapter<B>>,
    /// The architecture.
    #[module(skip)]
    pub config: LlamaConfig,
}

impl<B: Backend> Llama<B> {
    /// The architecture.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The dtype the weights are held in.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.val().dtype()
    }

    /// The device the model lives on.
    pub fn device(&self) -> B::Device {
        self.embed_tokens.val().device()
    }

    /// Logits `[B, T, vocab]` for unpadded sequences starting at position 0 (training and
    /// parity checks).
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = input_ids.dims();
        let positions: Vec<i64> = (0..b).flat_map(|_| 0..t as i64).collect();
        let mask = if t > 1 {
            Some(causal_mask(b, t, 0, None))
        } else {
            None
        };
        let h = self.hidden(input_ids, &positions, mask, None);
        self.logits(h)
    }

    /// Runs new tokens through the model, appending to `cache`. `attention_mask[row][i]` is
    /// false for (left) padding tokens. Returns the final hidden states `[B, T, hidden]`.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: &[Vec<bool>],
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 3>> {
        let [b, t] = input_ids.dims();
        if attention_mask.len() != b
            || attention_mask.iter().any(|m| m.len() != t)
            || cache.valid.len() != b
            || cache.layers.len() != self.layers.len()
        {
            return Err(TrainError::InvalidArgument(
                "input_ids, attention mask and cache disagree on batch/sequence size".into(),
            ));
        }
        let past = cache.len();
        let mut positions = Vec::with_capacity(b * t);
        for (row, m) in attention_mask.iter().enumerate() {
            for &real in m {
                if real {
                    positions.push(cache.next_pos[row]);
                    cache.next_pos[row] += 1;
                } else {
                    positions.push(1); // HF fills padded position ids with 1
                }
            }
            cache.valid[row].extend_from_slice(m);
        }
        let any_pad = cache.valid.iter().any(|v| v.iter().any(|x| !x));
        // Single-token steps on host caches mask padding from `valid` themselves.
        let host_step = t == 1 && cache.layers.iter().all(|l| matches!(l, LayerKv::Host(_)));
        let mask = if (t > 1 || any_pad) && !host_step {
            Some(causal_mask(b, t, past, Some(&cache.valid)))
        } else {
            None
        };
        let call = CachedCall {
            layers: &mut cache.layers,
            merge_interval: cache.merge_interval,
            valid: any_pad.then_some(cache.valid.as_slice()),
        };
        let h = self.hidden(input_ids, &positions, mask, Some(call));
        Ok(h)
    }

    fn hidden(
        &self,
        input_ids: Tensor<B, 2, Int>,
        positions: &[i64],
        mask: Option<Vec<bool>>,
        cache: Option<CachedCall<'_, B>>,
    ) -> Tensor<B, 3> {
        let [b, t] = input_ids.dims();
        let cfg = self.config();
        let device = self.device();
        let dtype = self.dtype();
        let hidden = cfg.hidden_size;
        let x = self
            .embed(input_ids.reshape([b * t]))
            .reshape([b, t, hidden]);
        let (cos, sin) = rope_tables::<B>(cfg, positions, b, t, dtype, &device);
        let s_total = mask.as_ref().map(|m| m.len() / (b * t)).unwrap_or(0);
        let mask = mask.map(|m| {
            Tensor::<B, 4, Bool>::from_data(TensorData::new(m, [b, 1, t, s_total]), &device)
        });
        let (mut slots, merge_interval, valid) = match cache {
            Some(c) => (Some(c.layers), c.merge_interval, c.valid),
            None => (None, 0, None),
        };
        let inputs = AttnInputs {
            cos,
            sin,
            mask,
            valid,
            merge_interval,
        };
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = slots.as_mut().map(|c| &mut c[i]);
            x = layer.forward(x, &inputs, slot);
        }
        self.norm.forward(x)
    }

    /// Projects hidden states `[B, T, hidden]` to logits `[B, T, vocab]`.
    pub fn logits(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, hidden] = h.dims();
        let logits = self.lm_head_logits(h.reshape([b * t, hidden]));
        let v = logits.dims()[1];
        logits.reshape([b, t, v])
    }

    /// Visits every linear with its HF module path (`model.layers.N.self_attn.q_proj`).
    pub fn linears(&self) -> Vec<(String, &LoraLinear<B>)> {
        let mut out = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let a = &layer.self_attn;
            let m = &layer.mlp;
            for (name, lin) in [
                ("self_attn.q_proj", &a.q_proj),
                ("self_attn.k_proj", &a.k_proj),
                ("self_attn.v_proj", &a.v_proj),
                ("self_attn.o_proj", &a.o_proj),
                ("mlp.gate_proj", &m.gate_proj),
                ("mlp.up_proj", &m.up_proj),
                ("mlp.down_proj", &m.down_proj),
            ] {
                out.push((format!("model.layers.{l}.{name}"), lin));
            }
        }
        out
    }

    /// Rebuilds every linear through `f(hf_path, linear)`.
    pub fn try_map_linears(
        mut self,
        mut f: impl FnMut(&str, LoraLinear<B>) -> Result<LoraLinear<B>>,
    ) -> Result<Self> {
        let layers = std::mem::take(&mut self.layers);
        for (l, mut layer) in layers.into_iter().enumerate() {
            let p = format!("model.layers.{l}.");
            let a = layer.self_attn;
            let m = layer.mlp;
            layer.self_attn = Attention {
                q_proj: f(&format!("{p}self_attn.q_proj"), a.q_proj)?,
                k_proj: f(&format!("{p}self_attn.k_proj"), a.k_proj)?,
                v_proj: f(&format!("{p}self_attn.v_proj"), a.v_proj)?,
                o_proj: f(&format!("{p}self_attn.o_proj"), a.o_proj)?,
                ..a
            };
            layer.mlp = Mlp {
                gate_proj: f(&format!("{p}mlp.gate_proj"), m.gate_proj)?,
                up_proj: f(&format!("{p}mlp.up_proj"), m.up_proj)?,
                down_proj: f(&format!("{p}mlp.down_proj"), m.down_proj)?,
            };
            self.layers.push(layer);
        }
        Ok(self)
    }
}

/// Host-side `[B*T*S]` mask, `true` = forbidden: key `j` is visible to query `i` of this chunk
/// when `j <= past + i` and key `j` is not padding.
fn causal_mask(b: usize, t: usize, past: usize, valid: Option<&[Vec<bool>]>) -> Vec<bool> {
    let s = past + t;
    let mut m = Vec::with_capacity(b * t * s);
    for row in 0..b {
        for i in 0..t {
            for j in 0..s {
                let pad = valid.is_some_and(|v| !v[row][j]);
                m.push(j > past + i || pad);
            }
        }
    }
    m
}
