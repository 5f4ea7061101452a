//! CLIP (text and vision transformers, projections, logit scale) in Burn, with the module and
//! parameter names of transformers' `CLIPModel`, so that HF `model.safetensors` files load as they are.
//!
//! Layout of the keys (`pre_layrnorm` is spelled as in the real checkpoints):
//! `text_model.embeddings.{token,position}_embedding.weight`,
//! `text_model.encoder.layers.N.{self_attn.{q,k,v,out}_proj,layer_norm1,mlp.fc1,mlp.fc2,layer_norm2}.*`,
//! `text_model.final_layer_norm.*`, `vision_model.embeddings.{class_embedding,patch_embedding.weight,
//! position_embedding.weight}`, `vision_model.{pre_layrnorm,post_layernorm}.*`, `vision_model.encoder...`,
//! `text_projection.weight`, `visual_projection.weight`, `logit_scale`.

use std::path::Path;

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::module::{attention, embedding};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::TensorPrimitive;

use crate::config::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig};
use crate::error::{EvalError, Result};
use crate::weights::{HostTensor, Weights, TRANSFORMERS_STEM};

/// LayerNorm with HF parameter names (`weight`, `bias`).
#[derive(Module, Debug)]
pub struct ClipLayerNorm<B: Backend> {
    /// Scale (`*.weight`).
    pub weight: Param<Tensor<B, 1>>,
    /// Shift (`*.bias`).
    pub bias: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> ClipLayerNorm<B> {
    fn load(w: &Weights, prefix: &str, d: usize, eps: f64, device: &B::Device) -> Result<Self> {
        Ok(ClipLayerNorm {
            weight: w.param(&format!("{prefix}.weight"), [d], device)?,
            bias: w.param(&format!("{prefix}.bias"), [d], device)?,
            eps,
        })
    }

    /// Normalises over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
            x.into_primitive().tensor(),
            self.weight.val().into_primitive().tensor(),
            Some(self.bias.val().into_primitive().tensor()),
            self.eps,
        )))
    }
}

fn act<B: Backend, const D: usize>(kind: Activation, x: Tensor<B, D>) -> Tensor<B, D> {
    match kind {
        Activation::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
        Activation::Gelu => activation::gelu(x),
        Activation::GeluTanh => activation::gelu_approximate(x),
        Activation::Relu => activation::relu(x),
        Activation::Silu => activation::silu(x),
    }
}

/// Multi-head self-attention (`self_attn`).
///
/// The HF `q_proj`, `k_proj` and `v_proj` are stored fused as one `qkv_proj` (weights
/// concatenated along the output dimension at load time, so one matmul computes all three), and
/// the attention scale `1/sqrt(head_dim)` is folded into the query part of that weight and bias.
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    /// `[q_proj * scale | k_proj | v_proj]`, Burn layout `[hidden, 3 * hidden]`.
    pub qkv_proj: Linear<B>,
    /// `out_proj`.
    pub out_proj: Linear<B>,
    num_heads: usize,
}

impl<B: Backend> ClipAttention<B> {
    /// Builds the fused projection from the HF tensors `{prefix}.{q,k,v,out}_proj.{weight,bias}`.
    fn load(w: &Weights, prefix: &str, d: usize, heads: usize, device: &B::Device) -> Result<Self> {
        if heads == 0 || !d.is_multiple_of(heads) {
            return Err(EvalError::ConfigMismatch {
                name: format!("{prefix}.q_proj.weight"),
                message: format!(
                    "hidden_size {d} is not a multiple of num_attention_heads {heads}"
                ),
            });
        }
        let scale = 1.0 / ((d / heads) as f64).sqrt();
        let n = 3 * d;
        // Burn layout [d_in, 3 * d_out]: row i holds input feature i's weights for q, k, v.
        let mut weight = vec![0f32; d * n];
        let mut bias = vec![0f32; n];
        for (j, (name, s)) in [("q_proj", scale), ("k_proj", 1.0), ("v_proj", 1.0)]
            .into_iter()
            .enumerate()
        {
            let hf = w.f32(&format!("{prefix}.{name}.weight"), &[d, d])?;
            let b = w.f32(&format!("{prefix}.{name}.bias"), &[d])?;
            for o in 0..d {
                for i in 0..d {
                    weight[i * n + j * d + o] = (hf[o * d + i] as f64 * s) as f32;
                }
                bias[j * d + o] = (b[o] as f64 * s) as f32;
            }
        }
        let fused = format!("{prefix}.qkv_proj");
        let weight = w.make_tensor(&fused, HostTensor::f32(vec![d, n], weight), device)?;
        let bias = w.make_tensor(&fused, HostTensor::f32(vec![n], bias), device)?;
        Ok(ClipAttention {
            qkv_proj: Linear {
                weight: w.make_param(weight),
                bias: Some(w.make_param(bias)),
            },
            out_proj: w.linear(&format!("{prefix}.out_proj"), d, d, true, device)?,
            num_heads: heads,
        })
    }

    /// `x`: `[B*T, C]` (the `B` sequences of `T` tokens, flattened); `bias`: additive attention
    /// bias broadcastable to `[B, H, T, T]` (padding mask); `causal`: text tower. Returns `[B*T, C]`.
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        b: usize,
        t: usize,
        bias: Option<Tensor<B, 4>>,
        causal: bool,
    ) -> Tensor<B, 2> {
        let c = x.dims()[1];
        let h = self.num_heads;
        let d = c / h;
        // [B*T, 3C] -> [B, T, 3, H, D] -> [3, B, H, T, D]: q, k, v are views into one buffer.
        let qkv = self
            .qkv_proj
            .forward(x)
            .reshape([b, t, 3, h, d])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().slice(s![i..i + 1]).reshape([b, h, t, d]);
        let o = attention(
            part(0),
            part(1),
            part(2),
            None,
            bias,
            AttentionModuleOptions {
                // already folded into the query projection
                scale: Some(1.0),
                softcap: None,
                is_causal: causal,
            },
        );
        self.out_proj.forward(o.swap_dims(1, 2).reshape([b * t, c]))
    }
}

/// Feed-forward block (`mlp`): `fc2(act(fc1(x)))`.
#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    /// `fc1`.
    pub fc1: Linear<B>,
    /// `fc2`.
    pub fc2: Linear<B>,
    #[module(skip)]
    act: Activation,
}

impl<B: Backend> ClipMlp<B> {
    /// Applies the block to token rows `[N, C]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc2.forward(act(self.act, self.fc1.forward(x)))
    }
}

/// One pre-norm transformer layer (`encoder.layers.N`).
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    /// `self_attn`.
    pub self_attn: ClipAttention<B>,
    /// `layer_norm1`.
    pub layer_norm1: ClipLayerNorm<B>,
    /// `mlp`.
    pub mlp: ClipMlp<B>,
    /// `layer_norm2`.
    pub layer_norm2: ClipLayerNorm<B>,
}

impl<B: Backend> ClipEncoderLayer<B> {
    /// Applies the layer to `x`, `[B*T, C]` (`B` sequences of `T` tokens, flattened).
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        b: usize,
        t: usize,
        bias: Option<Tensor<B, 4>>,
        causal: bool,
    ) -> Tensor<B, 2> {
        let h = self
            .self_attn
            .forward(self.layer_norm1.forward(x.clone()), b, t, bias, causal);
        let x = x + h;
        let h = self.mlp.forward(self.layer_norm2.forward(x.clone()));
        x + h
    }
}

/// The stack of layers (`encoder`).
#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    /// `layers`.
    pub layers: Vec<ClipEncoderLayer<B>>,
}

#[allow(clippy::too_many_arguments)]
fn load_encoder<B: Backend>(
    w: &Weights,
    prefix: &str,
    d: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    act: Activation,
    eps: f64,
    device: &B::Device,
) -> Result<ClipEncoder<B>> {
    let mut out = Vec::with_capacity(layers);
    for i in 0..layers {
        let p = format!("{prefix}.layers.{i}");
        let lin = |name: &str, a: usize, b: usize| {
            w.linear::<B>(&format!("{p}.{name}"), a, b, true, device)
        };
        out.push(ClipEncoderLayer {
            self_attn: ClipAttention::load(w, &format!("{p}.self_attn"), d, heads, device)?,
            layer_norm1: ClipLayerNorm::load(w, &format!("{p}.layer_norm1"), d, eps, device)?,
            mlp: ClipMlp {
                fc1: lin("mlp.fc1", d, inter)?,
                fc2: lin("mlp.fc2", inter, d)?,
                act,
            },
            layer_norm2: ClipLayerNorm::load(w, &format!("{p}.layer_norm2"), d, eps, device)?,
        });
    }
    // More layers in the file than in the config means the config is wrong, not that the extra
    // layers may be silently dropped.
    let layer_prefix = format!("{prefix}.layers.");
    for key in w.keys() {
        if let Some(rest) = key.strip_prefix(&layer_prefix) {
            let idx = rest.split('.').next().and_then(|s| s.parse::<usize>().ok());
            if let Some(n) = idx {
                if n >= layers {
                    return Err(EvalError::ConfigMismatch {
                        name: key.to_string(),
                        message: format!("belongs to layer {n} but num_hidden_layers is {layers}"),
                    });
                }
            }
        }
    }
    Ok(ClipEncoder { layers: out })
}

impl<B: Backend> ClipEncoder<B> {
    /// Applies every layer to `x`, `[B, T, C]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        bias: Option<Tensor<B, 4>>,
        causal: bool,
    ) -> Tensor<B, 3> {
        self.forward_layers(x, bias, causal, self.layers.len())
    }

    /// Applies the first `n` layers to `x`, `[B, T, C]`.
    fn forward_layers(
        &self,
        x: Tensor<B, 3>,
        bias: Option<Tensor<B, 4>>,
        causal: bool,
        n: usize,
    ) -> Tensor<B, 3> {
        // The layers work on the tokens flattened to `[B*T, C]`: Burn's `Linear` on a 3-D input runs
        // `B` small matmuls (re-packing the weight for each), on a 2-D one a single large GEMM.
        let [b, t, c] = x.dims();
        let mut x = x.reshape([b * t, c]);
        for layer in &self.layers[..n.min(self.layers.len())] {
            x = layer.forward(x, b, t, bias.clone(), causal);
        }
        x.reshape([b, t, c])
    }
}

/// Token and position embeddings of the text tower (`text_model.embeddings`).
#[derive(Module, Debug)]
pub struct ClipTextEmbeddings<B: Backend> {
    /// `token_embedding`, `[vocab_size, hidden_size]`.
    pub token_embedding: Embedding<B>,
    /// `position_embedding`, `[max_position_embeddings, hidden_size]`.
    pub position_embedding: Embedding<B>,
}

/// Output of [`ClipTextModel::forward`].
#[derive(Debug, Clone)]
pub struct ClipTextOutput<B: Backend> {
    /// Final-LayerNorm hidden states, `[B, T, hidden_size]` (what Stable Diffusion conditions on).
    pub last_hidden_state: Tensor<B, 3>,
    /// Hidden state at the EOS position, `[B, hidden_size]` (before `text_projection`).
    pub pooler_output: Tensor<B, 2>,
}

/// The CLIP text transformer (transformers' `CLIPTextTransformer`, keys `text_model.*`).
///
/// Causal self-attention, optional padding mask, learned absolute positions; the pooled output is
/// the hidden state at the EOS token: with the legacy `eos_token_id == 2` at `argmax(input_ids)`,
/// otherwise at the first position holding `eos_token_id` (as transformers 5 does).
#[derive(Module, Debug)]
pub struct ClipTextModel<B: Backend> {
    /// `embeddings`.
    pub embeddings: ClipTextEmbeddings<B>,
    /// `encoder`.
    pub encoder: ClipEncoder<B>,
    /// `final_layer_norm`.
    pub final_layer_norm: ClipLayerNorm<B>,
    eos_token_id: i64,
    vocab_size: usize,
    max_positions: usize,
}

impl<B: Backend> ClipTextModel<B> {
    /// Loads the text tower from `weights` under `prefix` (`"text_model"` for both `CLIPModel` and
    /// `CLIPTextModel` files).
    pub fn load(
        cfg: &ClipTextConfig,
        w: &Weights,
        prefix: &str,
        device: &B::Device,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(ClipTextModel {
            embeddings: ClipTextEmbeddings {
                token_embedding: w.embedding(
                    &format!("{prefix}.embeddings.token_embedding"),
                    cfg.vocab_size,
                    d,
                    device,
                )?,
                position_embedding: w.embedding(
                    &format!("{prefix}.embeddings.position_embedding"),
                    cfg.max_position_embeddings,
                    d,
                    device,
                )?,
            },
            encoder: load_encoder(
                w,
                &format!("{prefix}.encoder"),
                d,
                cfg.intermediate_size,
                cfg.num_hidden_layers,
                cfg.num_attention_heads,
                cfg.hidden_act,
                cfg.layer_norm_eps,
                device,
            )?,
            final_layer_norm: ClipLayerNorm::load(
                w,
                &format!("{prefix}.final_layer_norm"),
                d,
                cfg.layer_norm_eps,
                device,
            )?,
            eos_token_id: cfg.eos_token_id,
            vocab_size: cfg.vocab_size,
            max_positions: cfg.max_position_embeddings,
        })
    }

    /// Loads a text-only checkpoint folder (`config.json` + `model.safetensors`, e.g. Stable
    /// Diffusion's `text_encoder/`). A full `CLIPModel` folder works too (its `text_config` is used).
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg = ClipTextConfig::from_file(dir.join("config.json"))?;
        Self::from_pretrained_with_config(&cfg, dir, device)
    }

    /// [`ClipTextModel::from_pretrained`] with the configuration already read. The tensors may
    /// carry the `text_model.` prefix (transformers 4, `CLIPModel`) or not (a `CLIPTextModel`
    /// saved by transformers 5).
    pub fn from_pretrained_with_config(
        cfg: &ClipTextConfig,
        dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Self> {
        let w = text_weights(Weights::open(dir, TRANSFORMERS_STEM)?);
        let model = Self::load(cfg, &w, "text_model", device)?;
        // A full `CLIPModel` file also holds the vision tower and the projections.
        w.ignore(|k| !k.starts_with("text_model.") || is_buffer(k));
        w.finish()?;
        Ok(model)
    }

    /// EOS position of each row of `ids` (`[B, T]`, row-major), as transformers picks it.
    pub fn eos_positions(&self, ids: &[i64], t: usize) -> Vec<usize> {
        ids.chunks(t.max(1))
            .map(|row| {
                if self.eos_token_id == 2 {
                    // legacy: argmax of the ids (first maximum)
                    let mut best = 0;
                    for (i, &v) in row.iter().enumerate() {
                        if v > row[best] {
                            best = i;
                        }
                    }
                    best
                } else {
                    row.iter()
                        .position(|&v| v == self.eos_token_id)
                        .unwrap_or(0)
                }
            })
            .collect()
    }

    /// Runs the text tower.
    ///
    /// `input_ids`: `[B, T]` with `T <= max_position_embeddings`; `attention_mask`: optional
    /// `[B, T]` of 1 (attend) / 0 (padding). Position ids are `0..T`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
    ) -> Result<ClipTextOutput<B>> {
        self.forward_skip(input_ids, attention_mask, 0)
    }

    /// Like [`ClipTextModel::forward`] but stops `skip_last_layers` layers early ("CLIP skip";
    /// Stable Diffusion 2 conditions on the penultimate layer, `skip_last_layers = 1`). The final
    /// LayerNorm is applied to that hidden state, as diffusers does.
    pub fn forward_skip(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        skip_last_layers: usize,
    ) -> Result<ClipTextOutput<B>> {
        let n_layers = self.encoder.layers.len();
        if skip_last_layers >= n_layers.max(1) {
            return Err(EvalError::InvalidInput {
                name: "skip_last_layers".into(),
                expected: format!("< {n_layers} (the number of layers)"),
                found: skip_last_layers.to_string(),
            });
        }
        let [b, t] = input_ids.dims();
        if t == 0 || t > self.max_positions {
            return Err(EvalError::InvalidInput {
                name: "input_ids".into(),
                expected: format!("[B, T] with 1 <= T <= {}", self.max_positions),
                found: format!("[{b}, {t}]"),
            });
        }
        let ids: Vec<i64> =
            input_ids
                .to_data()
                .convert::<i64>()
                .to_vec()
                .map_err(|e| EvalError::InvalidInput {
                    name: "input_ids".into(),
                    expected: "integer ids".into(),
                    found: format!("{e:?}"),
                })?;
        if let Some(bad) = ids
            .iter()
            .find(|&&v| v < 0 || v as usize >= self.vocab_size)
        {
            return Err(EvalError::InvalidInput {
                name: "input_ids".into(),
                expected: format!("ids in 0..{}", self.vocab_size),
                found: bad.to_string(),
            });
        }
        let device = input_ids.device();
        let d = self.final_layer_norm.weight.dims()[0];
        let tok = embedding(self.embeddings.token_embedding.weight.val(), input_ids);
        let pos = self
            .embeddings
            .position_embedding
            .weight
            .val()
            .slice([0..t, 0..d])
            .unsqueeze::<3>();
        let x = tok + pos;
        let bias = match attention_mask {
            Some(mask) => {
                let [mb, mt] = mask.dims();
                if mb != b || mt != t {
                    return Err(EvalError::InvalidInput {
                        name: "attention_mask".into(),
                        expected: format!("[{b}, {t}]"),
                        found: format!("[{mb}, {mt}]"),
                    });
                }
                // [B, 1, T, T], built once and shared by every head and layer
                let keep = mask.equal_elem(0).float() * f32::MIN;
                Some(keep.reshape([b, 1, 1, t]).repeat_dim(2, t))
            }
            None => None,
        };
        let x = self
            .encoder
            .forward_layers(x, bias, true, n_layers - skip_last_layers);
        let x = self.final_layer_norm.forward(x);
        let pos = self.eos_positions(&ids, t);
        let flat: Vec<i64> = pos
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * t + p) as i64)
            .collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(flat, [b]), &device);
        let pooled = x.clone().reshape([b * t, d]).select(0, index);
        Ok(ClipTextOutput {
            last_hidden_state: x,
            pooler_output: pooled,
        })
    }
}

/// Gives the keys of a `CLIPTextModel` saved by transformers 5 (`embeddings.…`, `encoder.…`) the
/// `text_model.` prefix that transformers 4 and `CLIPModel` files carry.
pub fn text_weights(w: Weights) -> Weights {
    if !w.contains("text_model.embeddings.token_embedding.weight")
        && w.contains("embeddings.token_embedding.weight")
    {
        w.with_key_prefix("text_model.")
    } else {
        w
    }
}

/// Buffers older transformers versions saved with the weights (`*.position_ids`); not parameters.
fn is_buffer(key: &str) -> bool {
    key.ends_with(".position_ids")
}

/// Patch, class and position embeddings of the vision tower (`vision_model.embeddings`).
#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings<B: Backend> {
    /// `class_embedding`, `[hidden_size]`.
    pub class_embedding: Param<Tensor<B, 1>>,
    /// `patch_embedding.weight`, a bias-free convolution `[hidden_size, channels, patch, patch]`
    /// with stride = patch.
    pub patch_embedding: Param<Tensor<B, 4>>,
    /// `position_embedding`, `[num_patches + 1, hidden_size]`.
    pub position_embedding: Embedding<B>,
    image_size: usize,
    patch_size: usize,
}

/// Output of [`ClipVisionModel::forward`].
#[derive(Debug, Clone)]
pub struct ClipVisionOutput<B: Backend> {
    /// Hidden states `[B, patches + 1, hidden_size]` (before `post_layernorm`, as in transformers).
    pub last_hidden_state: Tensor<B, 3>,
    /// `post_layernorm` of the class token, `[B, hidden_size]`.
    pub pooler_output: Tensor<B, 2>,
}

/// The CLIP vision transformer (transformers' `CLIPVisionTransformer`, keys `vision_model.*`).
#[derive(Module, Debug)]
pub struct ClipVisionModel<B: Backend> {
    /// `embeddings`.
    pub embeddings: ClipVisionEmbeddings<B>,
    /// `pre_layrnorm` (sic).
    pub pre_layrnorm: ClipLayerNorm<B>,
    /// `encoder`.
    pub encoder: ClipEncoder<B>,
    /// `post_layernorm`.
    pub post_layernorm: ClipLayerNorm<B>,
}

impl<B: Backend> ClipVisionModel<B> {
    /// Loads the vision tower from `weights` under `prefix` (`"vision_model"`).
    pub fn load(
        cfg: &ClipVisionConfig,
        w: &Weights,
        prefix: &str,
        device: &B::Device,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        Ok(ClipVisionModel {
            embeddings: ClipVisionEmbeddings {
                class_embedding: w.param(
                    &format!("{prefix}.embeddings.class_embedding"),
                    [d],
                    device,
                )?,
                patch_embedding: w.param(
                    &format!("{prefix}.embeddings.patch_embedding.weight"),
                    [d, cfg.num_channels, p, p],
                    device,
                )?,
                position_embedding: w.embedding(
                    &format!("{prefix}.embeddings.position_embedding"),
                    cfg.num_positions(),
                    d,
                    device,
                )?,
                image_size: cfg.image_size,
                patch_size: p,
            },
            pre_layrnorm: ClipLayerNorm::load(
                w,
                &format!("{prefix}.pre_layrnorm"),
                d,
                cfg.layer_norm_eps,
                device,
            )?,
            encoder: load_encoder(
                w,
                &format!("{prefix}.encoder"),
                d,
                cfg.intermediate_size,
                cfg.num_hidden_layers,
                cfg.num_attention_heads,
                cfg.hidden_act,
                cfg.layer_norm_eps,
                device,
            )?,
            post_layernorm: ClipLayerNorm::load(
                w,
                &format!("{prefix}.post_layernorm"),
                d,
                cfg.layer_norm_eps,
                device,
            )?,
        })
    }

    /// Square input side the model expects.
    pub fn image_size(&self) -> usize {
        self.embeddings.image_size
    }

    /// Runs the vision tower on normalised `pixel_values` `[B, C, S, S]` (S = `image_size`).
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> Result<ClipVisionOutput<B>> {
        let [b, c, h, w] = pixel_values.dims();
        let e = &self.embeddings;
        let [d, ch, p, _] = e.patch_embedding.dims();
        if c != ch || h != e.image_size || w != e.image_size || b == 0 {
            return Err(EvalError::InvalidInput {
                name: "pixel_values".into(),
                expected: format!("[B>=1, {ch}, {}, {}]", e.image_size, e.image_size),
                found: format!("[{b}, {c}, {h}, {w}]"),
            });
        }
        let g = e.image_size / e.patch_size;
        let x = if g * p != h {
            pixel_values.slice([0..b, 0..c, 0..g * p, 0..g * p])
        } else {
            pixel_values
        };
        // stride = kernel convolution as one matmul over unfolded patches
        let patches = x
            .reshape([b, c, g, p, g, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b * g * g, c * p * p]);
        let kernel = e.patch_embedding.val().reshape([d, c * p * p]).transpose();
        let patches = patches.matmul(kernel).reshape([b, g * g, d]);
        let cls = e.class_embedding.val().reshape([1, 1, d]).expand([b, 1, d]);
        let x =
            Tensor::cat(vec![cls, patches], 1) + e.position_embedding.weight.val().unsqueeze::<3>();
        let x = self.pre_layrnorm.forward(x);
        let x = self.encoder.forward(x, None, false);
        let cls = x.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
        Ok(ClipVisionOutput {
            pooler_output: self.post_layernorm.forward(cls),
            last_hidden_state: x,
        })
    }
}

/// Output of [`ClipModel::forward`] (the fields of transformers' `CLIPOutput`).
#[derive(Debug, Clone)]
pub struct ClipOutput<B: Backend> {
    /// L2-normalised projected image embeddings `[N_img, projection_dim]`.
    pub image_embeds: Tensor<B, 2>,
    /// L2-normalised projected text embeddings `[N_txt, projection_dim]`.
    pub text_embeds: Tensor<B, 2>,
    /// `exp(logit_scale) * image_embeds · text_embedsᵀ`, `[N_img, N_txt]`.
    pub logits_per_image: Tensor<B, 2>,
    /// Transpose of `logits_per_image`.
    pub logits_per_text: Tensor<B, 2>,
}

/// A full CLIP model (transformers' `CLIPModel`).
///
/// ```no_run
/// use burn::backend::Flex;
/// use svgen_eval::ClipModel;
/// let device = Default::default();
/// let model = ClipModel::<Flex>::from_pretrained("clip-vit-base-patch32", &device)?;
/// # Ok::<(), svgen_eval::EvalError>(())
/// ```
#[derive(Module, Debug)]
pub struct ClipModel<B: Backend> {
    /// `text_model`.
    pub text_model: ClipTextModel<B>,
    /// `vision_model`.
    pub vision_model: ClipVisionModel<B>,
    /// `text_projection` (no bias), Burn layout `[text hidden, projection_dim]`.
    pub text_projection: Linear<B>,
    /// `visual_projection` (no bias), Burn layout `[vision hidden, projection_dim]`.
    pub visual_projection: Linear<B>,
    /// `logit_scale` (log of the temperature), `[1]`.
    pub logit_scale: Param<Tensor<B, 1>>,
}

fn l2_normalise<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let n = x.clone().powi_scalar(2).sum_dim(1).sqrt();
    x / n
}

impl<B: Backend> ClipModel<B> {
    /// Builds the model from a configuration and a `CLIPModel` weight file.
    pub fn load(cfg: &ClipConfig, w: &Weights, device: &B::Device) -> Result<Self> {
        let text_model = ClipTextModel::load(&cfg.text, w, "text_model", device)?;
        let vision_model = ClipVisionModel::load(&cfg.vision, w, "vision_model", device)?;
        Ok(ClipModel {
            text_model,
            vision_model,
            text_projection: w.linear(
                "text_projection",
                cfg.text.hidden_size,
                cfg.projection_dim,
                false,
                device,
            )?,
            visual_projection: w.linear(
                "visual_projection",
                cfg.vision.hidden_size,
                cfg.projection_dim,
                false,
                device,
            )?,
            logit_scale: w.param("logit_scale", [1], device)?,
        })
    }

    /// Loads an HF checkpoint folder: `config.json` + `model.safetensors` (or shards listed by
    /// `model.safetensors.index.json`).
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg = ClipConfig::from_file(dir.join("config.json"))?;
        Self::from_pretrained_with_config(&cfg, dir, device)
    }

    /// [`ClipModel::from_pretrained`] with the configuration already read. Every tensor of the
    /// checkpoint must be used ([`EvalError::ConfigMismatch`] names one that is not).
    pub fn from_pretrained_with_config(
        cfg: &ClipConfig,
        dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Self> {
        let w = Weights::open(dir, TRANSFORMERS_STEM)?;
        let model = Self::load(cfg, &w, device)?;
        w.ignore(is_buffer);
        w.finish()?;
        Ok(model)
    }

    /// Square input side the vision tower expects.
    pub fn image_size(&self) -> usize {
        self.vision_model.image_size()
    }

    /// Projected (not normalised) text features `[B, projection_dim]` (`get_text_features`).
    pub fn get_text_features(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
    ) -> Result<Tensor<B, 2>> {
        let out = self.text_model.forward(input_ids, attention_mask)?;
        Ok(self.text_projection.forward(out.pooler_output))
    }

    /// Projected (not normalised) image features `[B, projection_dim]` (`get_image_features`).
    pub fn get_image_features(&self, pixel_values: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let out = self.vision_model.forward(pixel_values)?;
        Ok(self.visual_projection.forward(out.pooler_output))
    }

    /// L2-normalised image embeddings.
    pub fn image_embeds(&self, pixel_values: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        Ok(l2_normalise(self.get_image_features(pixel_values)?))
    }

    /// L2-normalised text embeddings.
    pub fn text_embeds(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
    ) -> Result<Tensor<B, 2>> {
        Ok(l2_normalise(
            self.get_text_features(input_ids, attention_mask)?,
        ))
    }

    /// The full forward pass of `CLIPModel`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        pixel_values: Tensor<B, 4>,
    ) -> Result<ClipOutput<B>> {
        let image_embeds = self.image_embeds(pixel_values)?;
        let text_embeds = self.text_embeds(input_ids, attention_mask)?;
        let scale = self.logit_scale.val().exp().reshape([1, 1]);
        let logits_per_text = text_embeds.clone().matmul(image_embeds.clone().transpose()) * scale;
        Ok(ClipOutput {
            logits_per_image: logits_per_text.clone().transpose(),
            logits_per_text,
            image_embeds,
            text_embeds,
        })
    }
}
