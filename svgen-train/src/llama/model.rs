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
use crate::llama::kv_cache::{KvCache, LayerKv};
use crate::llama::trainable_tokens::TokenAdapter;
use crate::nn::attention::AttentionMask;
use crate::nn::lora::LoraLinear;
use crate::nn::tensor::check_dtypes;

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
        let var = (x.clone() * x.clone()).mean_dim(2);
        let x = x * var.add_scalar(self.eps).sqrt().recip();
        let x = if dtype != DType::F32 {
            x.cast(dtype)
        } else {
            x
        };
        x * self.weight.val().unsqueeze::<3>()
    }

    /// [`Self::forward`] after checking that `x` and the weight share one dtype.
    pub fn try_forward(&self, x: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        let wd = self.weight.val().dtype();
        check_dtypes("RMSNorm", ("input", x.dtype()), ("weight", wd))?;
        Ok(self.forward(x))
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
    fn forward(&self, x: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        let gate = silu(self.gate_proj.try_forward(x.clone())?);
        self.down_proj
            .try_forward(gate * self.up_proj.try_forward(x)?)
    }
}

impl<B: Backend> DecoderLayer<B> {
    /// The seven linears of this layer, as layer `l`, with their HF module paths.
    pub(crate) fn linears(&self, l: usize) -> Vec<(String, &LoraLinear<B>)> {
        let a = &self.self_attn;
        let m = &self.mlp;
        [
            ("self_attn.q_proj", &a.q_proj),
            ("self_attn.k_proj", &a.k_proj),
            ("self_attn.v_proj", &a.v_proj),
            ("self_attn.o_proj", &a.o_proj),
            ("mlp.gate_proj", &m.gate_proj),
            ("mlp.up_proj", &m.up_proj),
            ("mlp.down_proj", &m.down_proj),
        ]
        .into_iter()
        .map(|(name, lin)| (format!("model.layers.{l}.{name}"), lin))
        .collect()
    }

    pub(crate) fn forward(
        &self,
        x: Tensor<B, 3>,
        inputs: &AttnInputs<'_, B>,
        cache: Option<&mut LayerKv<B>>,
    ) -> Result<Tensor<B, 3>> {
        let attn =
            self.self_attn
                .forward(self.input_layernorm.try_forward(x.clone())?, inputs, cache)?;
        let h = x + attn;
        let mlp = self
            .mlp
            .forward(self.post_attention_layernorm.try_forward(h.clone())?)?;
        Ok(h + mlp)
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
    /// A model of architecture `config` with random frozen weights drawn on the device (linears
    /// and embeddings `N(0, 0.02²)`, HF's `initializer_range`; norms at 1), held in `dtype`.
    /// For benchmarks and memory checks at the shapes of real models without their weights;
    /// the backend's RNG is seeded with `seed` first.
    pub fn random(
        config: LlamaConfig,
        dtype: DType,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        if !dtype.is_float() {
            return Err(TrainError::InvalidArgument(format!(
                "weights must be floating point, not {dtype:?}"
            )));
        }
        B::seed(device, seed);
        let dist = burn::tensor::Distribution::Normal(0.0, 0.02);
        let matrix = |rows: usize, cols: usize| {
            Param::from_tensor(Tensor::<B, 2>::random([rows, cols], dist, (device, dtype)))
                .set_require_grad(false)
        };
        let norm = || RmsNorm {
            weight: Param::from_tensor(Tensor::<B, 1>::ones([config.hidden_size], (device, dtype)))
                .set_require_grad(false),
            eps: config.rms_norm_eps,
        };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let q = config.num_attention_heads * config.head_dim;
        let kv = config.num_key_value_heads * config.head_dim;
        let lin = |rows, cols| LoraLinear::new(matrix(rows, cols));
        let layers = (0..config.num_hidden_layers)
            .map(|_| DecoderLayer {
                self_attn: Attention {
                    q_proj: lin(h, q),
                    k_proj: lin(h, kv),
                    v_proj: lin(h, kv),
                    o_proj: lin(q, h),
                    num_heads: config.num_attention_heads,
                    num_kv_heads: config.num_key_value_heads,
                    head_dim: config.head_dim,
                },
                mlp: Mlp {
                    gate_proj: lin(h, i),
                    up_proj: lin(h, i),
                    down_proj: lin(i, h),
                },
                input_layernorm: norm(),
                post_attention_layernorm: norm(),
            })
            .collect();
        Ok(Self {
            embed_tokens: matrix(config.vocab_size, h),
            layers,
            norm: norm(),
            lm_head: (!config.tie_word_embeddings).then(|| matrix(h, config.vocab_size)),
            token_adapter: None,
            config,
        })
    }

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

    /// Logits `[B, T, vocab]` for unpadded sequences starting at position 0 (parity checks,
    /// scoring). Training goes through [`Self::hidden_states`] and the chunked loss instead,
    /// which never forms the `[B, T, vocab]` logits.
    ///
    /// Fails with [`TrainError::SequenceTooLong`] beyond the model's position range
    /// ([`LlamaConfig::max_positions`]).
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>> {
        let [b, t] = input_ids.dims();
        let positions: Vec<i64> = (0..b).flat_map(|_| 0..t as i64).collect();
        let h = self.hidden_states(input_ids, &positions, &AttentionMask::causal())?;
        Ok(self.logits(h))
    }

    /// Final (normed) hidden states `[B, T, hidden]` of `input_ids` `[B, T]` with explicit
    /// position ids (`B·T`, row-major; they index the rotary tables) and attention mask: e.g.
    /// `AttentionMask::causal()` with positions `0..T` for plain rows, or packed samples
    /// (positions restarting at 0 per sample and
    /// [`AttentionMask::with_cu_seqlens`]).
    ///
    /// Attention runs through [`crate::nn::attention::flash_attention`], so training memory is
    /// linear in `T`. Fails with [`TrainError::SequenceTooLong`] when a position id is beyond
    /// the model's position range, [`TrainError::InvalidArgument`] on inconsistent shapes or
    /// mask, and [`TrainError::DtypeMismatch`] on mixed dtypes.
    pub fn hidden_states(
        &self,
        input_ids: Tensor<B, 2, Int>,
        positions: &[i64],
        attention: &AttentionMask,
    ) -> Result<Tensor<B, 3>> {
        let inputs = self.fresh_inputs(input_ids.dims(), positions, attention.clone())?;
        let mut x = self.embed(input_ids);
        for layer in &self.layers {
            x = layer.forward(x, &inputs, None)?;
        }
        self.norm.try_forward(x)
    }

    /// Rotary tables and mask of a call without cache, after checking the position ids.
    pub(crate) fn fresh_inputs(
        &self,
        [b, t]: [usize; 2],
        positions: &[i64],
        attention: AttentionMask,
    ) -> Result<AttnInputs<'static, B>> {
        if positions.len() != b * t || b == 0 || t == 0 {
            return Err(TrainError::InvalidArgument(format!(
                "{} position ids for a [{b}, {t}] batch",
                positions.len()
            )));
        }
        self.check_positions(positions)?;
        let (cos, sin) =
            rope_tables::<B>(self.config(), positions, b, t, self.dtype(), &self.device());
        Ok(AttnInputs::fresh(cos, sin, attention))
    }

    /// [`TrainError::SequenceTooLong`] when a position id is at or beyond the position range;
    /// [`TrainError::InvalidArgument`] for a negative one.
    fn check_positions(&self, positions: &[i64]) -> Result<()> {
        let limit = self.config().max_positions();
        let Some(&max) = positions.iter().max() else {
            return Ok(());
        };
        if positions.iter().any(|&p| p < 0) {
            return Err(TrainError::InvalidArgument(
                "position ids must not be negative".into(),
            ));
        }
        if max as u64 >= limit as u64 {
            return Err(TrainError::SequenceTooLong {
                positions: max as usize + 1,
                limit,
            });
        }
        Ok(())
    }

    /// Token embeddings `[B, T, hidden]` of `input_ids` `[B, T]`, with trainable token rows
    /// in place (see [`crate::llama::trainable_tokens`]).
    pub(crate) fn embed(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = input_ids.dims();
        self.embed_rows(input_ids.reshape([b * t]))
            .reshape([b, t, self.config().hidden_size])
    }

    /// Runs new tokens through the model, appending to `cache`. `attention_mask[row][i]` is
    /// false for (left) padding tokens. Returns the final hidden states `[B, T, hidden]`.
    ///
    /// A call of more than one token (a prompt, or a chunk after a rewind) attends through
    /// [`crate::nn::attention::flash_attention`] over the cache and the new keys; a padding
    /// query (it sees no key) gets zero attention output. Fails with
    /// [`TrainError::SequenceTooLong`] when the cache would outgrow the model's position range.
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
        let limit = self.config().max_positions();
        for (row, m) in attention_mask.iter().enumerate() {
            let need = cache.next_pos[row] as usize + m.iter().filter(|&&x| x).count();
            if need > limit {
                return Err(TrainError::SequenceTooLong {
                    positions: need,
                    limit,
                });
            }
        }
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
        let device = self.device();
        let s = cache.len();
        // Single-token steps on host caches mask padding from `valid` themselves.
        let host_step = t == 1 && cache.layers.iter().all(|l| matches!(l, LayerKv::Host(_)));
        let step_mask = (t == 1 && any_pad && !host_step).then(|| {
            let pad: Vec<bool> = cache.valid.iter().flatten().map(|&v| !v).collect();
            Tensor::<B, 4, Bool>::from_data(TensorData::new(pad, [b, 1, 1, s]), &device)
        });
        let mut attention = AttentionMask::causal();
        if any_pad {
            attention = attention.with_key_padding(cache.valid.clone());
        }
        let (cos, sin) = rope_tables::<B>(self.config(), &positions, b, t, self.dtype(), &device);
        let inputs = AttnInputs {
            cos,
            sin,
            attention,
            step_mask,
            valid: any_pad.then_some(cache.valid.as_slice()),
            merge_interval: cache.merge_interval,
        };
        let mut x = self.embed(input_ids);
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(x, &inputs, Some(slot))?;
        }
        self.norm.try_forward(x)
    }

    /// The effective LM-head weight `[hidden, vocab]`: `lm_head`, or the embeddings transposed
    /// when they are tied, with trainable token rows in place (in the base dtype; gradients
    /// flow to the trainable rows, and to the base matrix when it requires them). This is what
    /// the chunked loss multiplies by.
    pub fn lm_head_weight(&self) -> Tensor<B, 2> {
        self.output_weight()
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
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(l, layer)| layer.linears(l))
            .collect()
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
