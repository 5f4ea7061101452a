//! `T5EncoderModel` (transformers' `modeling_t5`): token embeddings, pre-norm blocks of
//! self-attention with relative position buckets (the bias is computed by the first block and
//! shared by all) and a (gated-)GELU feed-forward, RMS norms without mean or bias, no scaling of
//! the attention scores, a final RMS norm. Key names as in the checkpoint (`shared.weight`,
//! `encoder.block.N.layer.0.SelfAttention.q.weight`, ...).

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};
use svgen_eval::weights::{Weights, TRANSFORMERS_STEM};

use super::config::{T5Config, T5FeedForward};
use crate::cpu;
use crate::error::{Result, TrainError};

/// Largest sequence an encoder call accepts (T5 has no position table; this bounds the
/// `L × L` bias).
pub const MAX_T5_SEQUENCE: usize = 4096;

/// T5's RMS norm (`T5LayerNorm`): `weight · x / sqrt(mean(x²) + eps)`, computed in f32.
#[derive(Module, Debug)]
pub struct T5LayerNorm<B: Backend> {
    /// `weight`.
    pub weight: Param<Tensor<B, 1>>,
    /// `eps`.
    pub eps: f64,
}

impl<B: Backend> T5LayerNorm<B> {
    fn load(w: &Weights, key: &str, d: usize, eps: f64, device: &B::Device) -> Result<Self> {
        Ok(Self {
            weight: w.param(key, [d], device)?,
            eps,
        })
    }

    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let x32 = x.cast(DType::F32);
        let var = (x32.clone() * x32.clone()).mean_dim(D - 1);
        let normed = (x32 * var.add_scalar(self.eps).sqrt().recip()).cast(dtype);
        let weight = self.weight.val();
        let mut shape = [1usize; D];
        shape[D - 1] = weight.dims()[0];
        normed * weight.reshape(shape)
    }
}

/// `T5Attention` of the encoder (`layer.0.SelfAttention`), with its pre-norm.
#[derive(Module, Debug)]
pub struct T5SelfAttention<B: Backend> {
    /// `q`.
    pub q: Linear<B>,
    /// `k`.
    pub k: Linear<B>,
    /// `v`.
    pub v: Linear<B>,
    /// `o`.
    pub o: Linear<B>,
    /// `layer.0.layer_norm`.
    pub layer_norm: T5LayerNorm<B>,
    /// Number of heads.
    pub heads: usize,
}

/// The feed-forward of a block (`layer.1.DenseReluDense`), with its pre-norm.
#[derive(Module, Debug)]
pub struct T5DenseFeedForward<B: Backend> {
    /// `wi_0` (gated) or `wi` (ReLU).
    pub wi_0: Linear<B>,
    /// `wi_1` (gated only).
    pub wi_1: Option<Linear<B>>,
    /// `wo`.
    pub wo: Linear<B>,
    /// `layer.1.layer_norm`.
    pub layer_norm: T5LayerNorm<B>,
}

/// One encoder block (`encoder.block.N`).
#[derive(Module, Debug)]
pub struct T5Block<B: Backend> {
    /// `layer.0`.
    pub attention: T5SelfAttention<B>,
    /// `layer.1`.
    pub feed_forward: T5DenseFeedForward<B>,
}

/// The T5 encoder, generic over the backend.
///
/// ```no_run
/// use svgen_train::t5::T5EncoderModel;
/// use svgen_train::burn::tensor::{Int, Tensor};
/// type B = svgen_train::CpuBackend;
/// let device = Default::default();
/// let t5 = T5EncoderModel::<B>::from_pretrained("flux-schnell/text_encoder_2", &device)?;
/// let ids = Tensor::<B, 2, Int>::from_ints([[37, 1, 0, 0]], &device);
/// let hidden = t5.forward(ids, None)?; // [1, 4, 4096]
/// # Ok::<(), svgen_train::TrainError>(())
/// ```
#[derive(Module, Debug)]
pub struct T5EncoderModel<B: Backend> {
    /// `shared` (the token embedding, tied with `encoder.embed_tokens`).
    pub shared: Embedding<B>,
    /// `encoder.block.0.layer.0.SelfAttention.relative_attention_bias`: `[buckets, heads]`.
    pub relative_attention_bias: Param<Tensor<B, 2>>,
    /// `encoder.block`.
    pub block: Vec<T5Block<B>>,
    /// `encoder.final_layer_norm`.
    pub final_layer_norm: T5LayerNorm<B>,
    #[module(skip)]
    config: T5Config,
}

/// transformers' `_relative_position_bucket` for the (bidirectional) encoder, in f32 like
/// PyTorch: half the buckets per direction, exact buckets for distances below a quarter of them,
/// logarithmic ones up to `max_distance`, the last bucket beyond.
pub fn relative_position_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> usize {
    let n = (num_buckets / 2) as i64;
    let mut bucket = if relative > 0 { n } else { 0 };
    let distance = relative.abs();
    let max_exact = n / 2;
    if distance < max_exact {
        return (bucket + distance) as usize;
    }
    let ratio = (distance as f32 / max_exact as f32).ln()
        / ((max_distance as f64 / max_exact as f64).ln() as f32)
        * (n - max_exact) as f32;
    // `.to(torch.long)` truncates toward zero.
    let large = (max_exact + ratio as i64).min(n - 1);
    bucket += large;
    bucket as usize
}

impl<B: Backend> T5EncoderModel<B> {
    /// Loads `config.json` and `model.safetensors` (or its shard index) from a transformers
    /// folder, e.g. a FLUX folder's `text_encoder_2/`, in the device's default float dtype.
    ///
    /// # Errors
    /// As [`T5EncoderModel::from_pretrained_with_dtype`].
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        Self::from_pretrained_with_dtype(dir, None, device)
    }

    /// [`T5EncoderModel::from_pretrained`] with the weights held in `dtype` (e.g. bf16 on GPU;
    /// `None`: the device's default float type). A full T5 checkpoint's decoder and LM head are
    /// skipped.
    ///
    /// # Errors
    /// [`TrainError::MissingFolder`] naming the folder; config errors naming the key; missing,
    /// wrong-shaped or unused tensors naming the key and file.
    pub fn from_pretrained_with_dtype(
        dir: impl AsRef<Path>,
        dtype: Option<DType>,
        device: &B::Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(crate::diffusion::folder::missing_folder(dir));
        }
        let config = T5Config::from_file(crate::diffusion::folder::require(dir, "config.json")?)?;
        let mut w = Weights::open(dir, TRANSFORMERS_STEM)?.frozen();
        if let Some(d) = dtype {
            w = w.with_dtype(d);
        }
        let model = Self::load(config, &w, device)?;
        w.ignore(|k| k.starts_with("decoder.") || k == "lm_head.weight");
        w.finish()?;
        Ok(model)
    }

    /// Builds the encoder from `config`, taking every tensor from `w` by checkpoint key. The token
    /// embedding is `shared.weight`, or `encoder.embed_tokens.weight` when only that is stored
    /// (the other copy of a tied pair is skipped).
    ///
    /// # Errors
    /// Missing or wrong-shaped tensors, naming the key.
    pub fn load(config: T5Config, w: &Weights, device: &B::Device) -> Result<Self> {
        let d = config.d_model;
        let inner = config.inner_dim();
        let eps = config.layer_norm_epsilon;
        let embed_key = if w.contains("shared.weight") || !w.contains("encoder.embed_tokens.weight")
        {
            w.ignore(|k| k == "encoder.embed_tokens.weight");
            "shared"
        } else {
            "encoder.embed_tokens"
        };
        let shared = w.embedding(embed_key, config.vocab_size, d, device)?;
        let bias_key = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";
        let relative_attention_bias = w.param(
            bias_key,
            [config.relative_attention_num_buckets, config.num_heads],
            device,
        )?;
        let mut block = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("encoder.block.{i}.layer");
            let a = format!("{p}.0.SelfAttention");
            let f = format!("{p}.1.DenseReluDense");
            let lin = |name: &str, i: usize, o: usize| w.linear(name, i, o, false, device);
            let (wi_0, wi_1) = match config.feed_forward {
                T5FeedForward::GatedGelu => (
                    lin(&format!("{f}.wi_0"), d, config.d_ff)?,
                    Some(lin(&format!("{f}.wi_1"), d, config.d_ff)?),
                ),
                T5FeedForward::Relu => (lin(&format!("{f}.wi"), d, config.d_ff)?, None),
            };
            block.push(T5Block {
                attention: T5SelfAttention {
                    q: lin(&format!("{a}.q"), d, inner)?,
                    k: lin(&format!("{a}.k"), d, inner)?,
                    v: lin(&format!("{a}.v"), d, inner)?,
                    o: lin(&format!("{a}.o"), inner, d)?,
                    layer_norm: T5LayerNorm::load(
                        w,
                        &format!("{p}.0.layer_norm.weight"),
                        d,
                        eps,
                        device,
                    )?,
                    heads: config.num_heads,
                },
                feed_forward: T5DenseFeedForward {
                    wi_0,
                    wi_1,
                    wo: lin(&format!("{f}.wo"), config.d_ff, d)?,
                    layer_norm: T5LayerNorm::load(
                        w,
                        &format!("{p}.1.layer_norm.weight"),
                        d,
                        eps,
                        device,
                    )?,
                },
            });
        }
        let final_layer_norm =
            T5LayerNorm::load(w, "encoder.final_layer_norm.weight", d, eps, device)?;
        Ok(Self {
            shared,
            relative_attention_bias,
            block,
            final_layer_norm,
            config,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// The position bias `[1, heads, L, L]` shared by every layer.
    fn position_bias(&self, len: usize, device: &B::Device) -> Tensor<B, 4> {
        let c = &self.config;
        let mut buckets = Vec::with_capacity(len * len);
        for q in 0..len as i64 {
            for k in 0..len as i64 {
                buckets.push(relative_position_bucket(
                    k - q,
                    c.relative_attention_num_buckets,
                    c.relative_attention_max_distance,
                ) as i64);
            }
        }
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(buckets, [len * len]), device);
        let table = self.relative_attention_bias.val();
        let heads = table.dims()[1];
        table
            .select(0, ids)
            .reshape([len, len, heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }

    /// The last hidden state `[B, L, d_model]` of `input_ids` `[B, L]`. `attention_mask` `[B, L]`
    /// (1 = token, 0 = padding) hides padded keys; FLUX passes none, so its padding tokens take
    /// part in attention, as in diffusers.
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] for an empty batch, a sequence longer than
    /// [`MAX_T5_SEQUENCE`] or a mask of another shape.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
    ) -> Result<Tensor<B, 3>> {
        let [b, len] = input_ids.dims();
        if b == 0 || len == 0 || len > MAX_T5_SEQUENCE {
            return Err(TrainError::InvalidArgument(format!(
                "T5 input_ids have shape [{b}, {len}], expected [B > 0, 1..={MAX_T5_SEQUENCE}]"
            )));
        }
        let mask: Option<Tensor<B, 4, Bool>> = match attention_mask {
            None => None,
            Some(m) if m.dims() == [b, len] => {
                Some(m.equal_elem(0).reshape([b, 1, 1, len]).expand([
                    b,
                    self.config.num_heads,
                    len,
                    len,
                ]))
            }
            Some(m) => {
                return Err(TrainError::InvalidArgument(format!(
                    "T5 attention_mask has shape {:?}, expected [{b}, {len}]",
                    m.dims()
                )))
            }
        };
        let device = input_ids.device();
        let mut x = self.shared.forward(input_ids);
        let dtype = x.dtype();
        let bias = self.position_bias(len, &device).cast(dtype).expand([
            b,
            self.config.num_heads,
            len,
            len,
        ]);
        let (h, dk) = (self.config.num_heads, self.config.d_kv);
        for blk in &self.block {
            let a = &blk.attention;
            let normed = a.layer_norm.forward(x.clone());
            let split = |t: Tensor<B, 3>| t.reshape([b, len, h, dk]).swap_dims(1, 2);
            let q = split(a.q.forward(normed.clone()));
            let k = split(a.k.forward(normed.clone()));
            let v = split(a.v.forward(normed));
            let opts = AttentionModuleOptions {
                scale: Some(1.0),
                softcap: None,
                is_causal: false,
            };
            let o = attention(q, k, v, mask.clone(), Some(bias.clone()), opts)
                .swap_dims(1, 2)
                .reshape([b, len, h * dk]);
            x = x + a.o.forward(o);
            let f = &blk.feed_forward;
            let normed = f.layer_norm.forward(x.clone());
            let hidden = match &f.wi_1 {
                Some(wi_1) => {
                    cpu::activation::gelu_tanh(f.wi_0.forward(normed.clone()))
                        * wi_1.forward(normed)
                }
                None => activation::relu(f.wi_0.forward(normed)),
            };
            x = x + f.wo.forward(hidden);
        }
        Ok(self.final_layer_norm.forward(x))
    }
}
