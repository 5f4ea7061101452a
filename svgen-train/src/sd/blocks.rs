//! Building blocks shared by the Stable Diffusion UNet and VAE, with diffusers parameter names:
//! convolutions, GroupNorm / LayerNorm, the sinusoidal timestep embedding, `ResnetBlock2D`,
//! `Downsample2D` / `Upsample2D`, multi-head `Attention` (optionally query-sliced), the GEGLU
//! feed-forward, `BasicTransformerBlock`, `Transformer2DModel` and the VAE's spatial self-attention.
//!
//! Weights come from a [`WeightSource`]: a diffusers safetensors file ([`TensorMap`]) or a seeded
//! random initialisation ([`RandomWeights`], for benchmarks at configurations with no checkpoint).
//! Every tensor is requested by its full diffusers key and expected shape, so a missing or
//! wrong-shaped tensor is a typed error naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::{attention, conv2d};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions, PadMode};
use burn::tensor::{s, DType, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};

use crate::cpu;
use crate::error::{Result, TrainError};
use crate::nn::lora::LoraLinear;
use crate::nn::tensor::{frozen_param, transpose};
use crate::weights::{read_safetensors, HostTensor};

/// Where model weights come from: each tensor is asked for once, by diffusers key and shape
/// (PyTorch layout: linears `[out, in]`, convolutions `[out, in, kh, kw]`).
pub trait WeightSource {
    /// The row-major f32 data of `key`; typed errors for a missing key or a wrong shape.
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

/// Tensors read from a diffusers safetensors file (single, or shards listed by an index).
#[derive(Debug, Clone, Default)]
pub struct TensorMap {
    /// The file (or index) the tensors came from, for error messages.
    pub path: PathBuf,
    /// Key -> tensor; taken tensors are removed, so host memory shrinks while a model loads.
    pub tensors: BTreeMap<String, HostTensor>,
}

impl TensorMap {
    /// Reads `{stem}.safetensors` from `dir`, or every shard named by `{stem}.safetensors.index.json`
    /// (diffusers uses the stem `diffusion_pytorch_model`).
    pub fn open(dir: &Path, stem: &str) -> Result<Self> {
        let single = dir.join(format!("{stem}.safetensors"));
        if single.is_file() {
            return Ok(Self {
                tensors: read_safetensors(&single)?,
                path: single,
            });
        }
        let index = dir.join(format!("{stem}.safetensors.index.json"));
        if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| TrainError::io(&index, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| TrainError::json(&index, e))?;
            let map = v
                .get("weight_map")
                .and_then(serde_json::Value::as_object)
                .ok_or_else(|| TrainError::json(&index, "no `weight_map` object"))?;
            let mut files: Vec<&str> = Vec::new();
            for (key, f) in map {
                let f = f
                    .as_str()
                    .ok_or_else(|| TrainError::json(&index, format!("`{key}`: not a string")))?;
                if f.contains("..") || f.contains('/') || f.contains('\\') {
                    return Err(TrainError::json(
                        &index,
                        format!("shard name `{f}` must be a plain file name"),
                    ));
                }
                if !files.contains(&f) {
                    files.push(f);
                }
            }
            let mut tensors = BTreeMap::new();
            for f in files {
                tensors.extend(read_safetensors(dir.join(f))?);
            }
            for key in map.keys() {
                if !tensors.contains_key(key) {
                    return Err(TrainError::MissingTensor {
                        key: key.clone(),
                        path: index.clone(),
                    });
                }
            }
            return Ok(Self {
                path: index,
                tensors,
            });
        }
        Err(TrainError::io(
            &single,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no {stem}.safetensors or {stem}.safetensors.index.json"),
            ),
        ))
    }
}

impl TensorMap {
    /// Renames the VAE attention keys of older diffusers checkpoints (`query`, `key`, `value`,
    /// `proj_attn`) to the current names (`to_q`, `to_k`, `to_v`, `to_out.0`), as diffusers does
    /// when it loads them.
    pub fn rename_legacy_attention(&mut self) {
        const RENAMES: [(&str, &str); 4] = [
            (".query.", ".to_q."),
            (".key.", ".to_k."),
            (".value.", ".to_v."),
            (".proj_attn.", ".to_out.0."),
        ];
        let legacy: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| k.contains(".attentions.") && RENAMES.iter().any(|(o, _)| k.contains(o)))
            .cloned()
            .collect();
        for key in legacy {
            if let Some(t) = self.tensors.remove(&key) {
                let mut new = key.clone();
                for (o, n) in RENAMES {
                    new = new.replace(o, n);
                }
                self.tensors.insert(new, t);
            }
        }
    }

    /// After a model has taken its tensors: a typed error naming the first tensor left over
    /// (the file holds parts the configuration does not describe).
    pub fn finish(self) -> Result<()> {
        match self.tensors.into_keys().next() {
            Some(key) => Err(TrainError::UnexpectedTensor {
                key,
                path: self.path,
            }),
            None => Ok(()),
        }
    }
}

impl WeightSource for TensorMap {
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self
            .tensors
            .remove(key)
            .ok_or_else(|| TrainError::MissingTensor {
                key: key.into(),
                path: self.path.clone(),
            })?;
        if t.shape != shape {
            return Err(TrainError::ShapeMismatch {
                key: key.into(),
                expected: shape.to_vec(),
                found: t.shape,
            });
        }
        t.into_f32(key)
    }
}

/// Seeded random weights: norm scales 1, biases 0, other tensors uniform with standard deviation
/// `1/sqrt(fan_in)` (activations stay O(1) through the network). For benchmarks and tests at
/// configurations that have no checkpoint; never for generation.
#[derive(Debug, Clone)]
pub struct RandomWeights {
    rng: rand::rngs::StdRng,
}

impl RandomWeights {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }
}

impl WeightSource for RandomWeights {
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let n: usize = shape.iter().product();
        if shape.len() == 1 {
            let is_scale = key.ends_with(".weight") && key.contains("norm");
            return Ok(vec![if is_scale { 1.0 } else { 0.0 }; n]);
        }
        let fan_in: usize = shape[1..].iter().product();
        let a = (3.0 / fan_in.max(1) as f32).sqrt();
        Ok((0..n).map(|_| self.rng.random_range(-a..a)).collect())
    }
}

pub(crate) fn param<B: Backend, const D: usize>(
    src: &mut dyn WeightSource,
    key: &str,
    shape: [usize; D],
    device: &B::Device,
) -> Result<Param<Tensor<B, D>>> {
    let data = src.take(key, &shape)?;
    Ok(frozen_param(data, shape, DType::F32, device))
}

/// A linear `{prefix}.weight` `[out, in]` (stored `[in, out]`) with optional `{prefix}.bias`.
pub(crate) fn load_lora_linear<B: Backend>(
    src: &mut dyn WeightSource,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Result<LoraLinear<B>> {
    let w = src.take(&format!("{prefix}.weight"), &[d_out, d_in])?;
    let weight = frozen_param(
        transpose(&w, d_out, d_in),
        [d_in, d_out],
        DType::F32,
        device,
    );
    Ok(if bias {
        LoraLinear::with_bias(
            weight,
            param(src, &format!("{prefix}.bias"), [d_out], device)?,
        )
    } else {
        LoraLinear::new(weight)
    })
}

/// A Burn `Linear` from `{prefix}.weight` `[out, in]` and `{prefix}.bias`. With `conv1x1`, the
/// file holds a 1×1 convolution `[out, in, 1, 1]` (same numbers, applied on channels-last data).
pub(crate) fn load_linear<B: Backend>(
    src: &mut dyn WeightSource,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    conv1x1: bool,
    device: &B::Device,
) -> Result<Linear<B>> {
    let key = format!("{prefix}.weight");
    let w = if conv1x1 {
        src.take(&key, &[d_out, d_in, 1, 1])?
    } else {
        src.take(&key, &[d_out, d_in])?
    };
    Ok(Linear {
        weight: frozen_param(
            transpose(&w, d_out, d_in),
            [d_in, d_out],
            DType::F32,
            device,
        ),
        bias: Some(param(src, &format!("{prefix}.bias"), [d_out], device)?),
    })
}

/// Applies a Burn `Linear` to `[B, N, in]` as one 2-D GEMM.
pub(crate) fn linear3<B: Backend>(lin: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, n, c] = x.dims();
    let y = lin.forward(x.reshape([b * n, c]));
    let o = y.dims()[1];
    y.reshape([b, n, o])
}

/// A 2-D convolution (`torch.nn.Conv2d`, weight `[out, in, k, k]`, bias `[out]`).
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    /// `weight`, `[out, in, k, k]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `bias`, `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride (both axes).
    pub stride: usize,
    /// Symmetric zero padding (both axes).
    pub padding: usize,
    /// diffusers' `Downsample2D` with `padding=0` pads right and bottom by one first.
    pub pad_right_bottom: bool,
}

impl<B: Backend> Conv2d<B> {
    /// Loads `{prefix}.weight` and `{prefix}.bias`.
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        [c_in, c_out, k]: [usize; 3],
        stride: usize,
        padding: usize,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: param(
                src,
                &format!("{prefix}.weight"),
                [c_out, c_in, k, k],
                device,
            )?,
            bias: Some(param(src, &format!("{prefix}.bias"), [c_out], device)?),
            stride,
            padding,
            pad_right_bottom: false,
        })
    }

    /// `[B, in, H, W]` -> `[B, out, H', W']`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = if self.pad_right_bottom {
            x.pad((0, 1, 0, 1), PadMode::Constant(0.0))
        } else {
            x
        };
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            ConvOptions::new(
                [self.stride, self.stride],
                [self.padding, self.padding],
                [1, 1],
                1,
            ),
        )
    }
}

/// `torch.nn.GroupNorm` on `[B, C, H, W]` (biased variance, affine).
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// `weight`, `[C]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// `bias`, `[C]`.
    pub beta: Param<Tensor<B, 1>>,
    /// Number of groups.
    pub groups: usize,
    /// Epsilon.
    pub eps: f64,
}

impl<B: Backend> GroupNorm<B> {
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        groups: usize,
        channels: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            gamma: param(src, &format!("{prefix}.weight"), [channels], device)?,
            beta: param(src, &format!("{prefix}.bias"), [channels], device)?,
            groups,
            eps,
        })
    }

    /// Normalises each group of `C/groups` channels over channels and space.
    ///
    /// On exactly `burn::backend::Flex` with f32 data this runs in [`cpu::group_norm`] (two
    /// passes per group on host memory); every other backend (`Autodiff<Flex>` for training,
    /// CUDA) uses the tensor ops below.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let (gamma, beta) = (self.gamma.val(), self.beta.val());
        cpu::group_norm::forward(&x, &gamma, &beta, self.groups, self.eps)
            .unwrap_or_else(|| self.forward_generic(x))
    }

    /// The tensor-op version of [`GroupNorm::forward`].
    fn forward_generic(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let g = self.groups;
        // Two-pass statistics per (sample, group); the affine transform is folded into one
        // per-(sample, channel) scale so the big tensor is touched by one multiply-add.
        let xg = x.reshape([b, g, (c / g) * h * w]);
        let mean = xg.clone().mean_dim(2);
        let xc = xg - mean;
        let var = xc.clone().square().mean_dim(2);
        let rstd = var.add_scalar(self.eps).sqrt().recip(); // [b, g, 1]
        let rstd = rstd.expand([b, g, c / g]).reshape([b, c]);
        let scale = rstd * self.gamma.val().reshape([1, c]);
        let y = xc.reshape([b, c, h * w]) * scale.reshape([b, c, 1])
            + self.beta.val().reshape([1, c, 1]);
        y.reshape([b, c, h, w])
    }
}

/// `torch.nn.LayerNorm` over the last axis of `[N, C]` rows.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// `weight`, `[C]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// `bias`, `[C]`.
    pub beta: Param<Tensor<B, 1>>,
    /// Epsilon.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        channels: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            gamma: param(src, &format!("{prefix}.weight"), [channels], device)?,
            beta: param(src, &format!("{prefix}.bias"), [channels], device)?,
            eps,
        })
    }

    /// Normalises each row of `[B, N, C]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let mean = x.clone().mean_dim(2);
        let xc = x - mean;
        let var = xc.clone().square().mean_dim(2);
        let y = xc * var.add_scalar(self.eps).sqrt().recip();
        y * self.gamma.val().unsqueeze::<3>() + self.beta.val().unsqueeze::<3>()
    }
}

/// diffusers' `get_timestep_embedding` (`Timesteps`): `[B]` float timesteps -> `[B, dim]`
/// sinusoids with frequencies `exp(-ln(10000)·i / (dim/2 - freq_shift))`, `[sin, cos]` or, with
/// `flip_sin_to_cos`, `[cos, sin]`. The frequencies are computed in f32 like diffusers does.
pub fn timestep_embedding<B: Backend>(
    timesteps: Tensor<B, 1>,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Tensor<B, 2> {
    let half = dim / 2;
    let device = timesteps.device();
    let ln = -(10000f64.ln() as f32);
    let denom = (half as f64 - freq_shift) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| ((ln * i as f32) / denom).exp()).collect();
    let n = timesteps.dims()[0];
    let freqs = Tensor::<B, 1>::from_data(TensorData::new(freqs, [half]), &device);
    let args = timesteps.reshape([n, 1]) * freqs.reshape([1, half]);
    let (sin, cos) = (args.clone().sin(), args.cos());
    let emb = if flip_sin_to_cos {
        Tensor::cat(vec![cos, sin], 1)
    } else {
        Tensor::cat(vec![sin, cos], 1)
    };
    if dim % 2 == 1 {
        emb.pad((0, 1, 0, 0), PadMode::Constant(0.0))
    } else {
        emb
    }
}

/// `TimestepEmbedding`: `linear_2(silu(linear_1(t)))`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    /// `linear_1`.
    pub linear_1: Linear<B>,
    /// `linear_2`.
    pub linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        d_in: usize,
        d_emb: usize,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            linear_1: load_linear(
                src,
                &format!("{prefix}.linear_1"),
                d_in,
                d_emb,
                false,
                device,
            )?,
            linear_2: load_linear(
                src,
                &format!("{prefix}.linear_2"),
                d_emb,
                d_emb,
                false,
                device,
            )?,
        })
    }

    /// `[B, d_in]` -> `[B, d_emb]`.
    pub fn forward(&self, t: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2
            .forward(activation::silu(self.linear_1.forward(t)))
    }
}

/// `ResnetBlock2D` (`resnet_time_scale_shift = "default"`, SiLU):
/// `(shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + proj(silu(temb)))))) / scale`.
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    /// `norm1`.
    pub norm1: GroupNorm<B>,
    /// `conv1` (3×3).
    pub conv1: Conv2d<B>,
    /// `time_emb_proj` (absent in the VAE).
    pub time_emb_proj: Option<Linear<B>>,
    /// `norm2`.
    pub norm2: GroupNorm<B>,
    /// `conv2` (3×3).
    pub conv2: Conv2d<B>,
    /// `conv_shortcut` (1×1) when the channel count changes.
    pub conv_shortcut: Option<Conv2d<B>>,
    /// `output_scale_factor`.
    pub output_scale_factor: f64,
}

/// Shape parameters of one [`ResnetBlock2D`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResnetSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub temb: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub output_scale_factor: f64,
}

impl<B: Backend> ResnetBlock2D<B> {
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        spec: ResnetSpec,
        device: &B::Device,
    ) -> Result<Self> {
        let ResnetSpec {
            c_in,
            c_out,
            temb,
            groups,
            eps,
            output_scale_factor,
        } = spec;
        let p = |n: &str| format!("{prefix}.{n}");
        Ok(Self {
            norm1: GroupNorm::load(src, &p("norm1"), groups, c_in, eps, device)?,
            conv1: Conv2d::load(src, &p("conv1"), [c_in, c_out, 3], 1, 1, device)?,
            time_emb_proj: match temb {
                Some(t) => Some(load_linear(
                    src,
                    &p("time_emb_proj"),
                    t,
                    c_out,
                    false,
                    device,
                )?),
                None => None,
            },
            norm2: GroupNorm::load(src, &p("norm2"), groups, c_out, eps, device)?,
            conv2: Conv2d::load(src, &p("conv2"), [c_out, c_out, 3], 1, 1, device)?,
            conv_shortcut: if c_in != c_out {
                Some(Conv2d::load(
                    src,
                    &p("conv_shortcut"),
                    [c_in, c_out, 1],
                    1,
                    0,
                    device,
                )?)
            } else {
                None
            },
            output_scale_factor,
        })
    }

    /// `x` `[B, C_in, H, W]`, `temb` `[B, T]` (already `silu`-activated by the caller, as the
    /// block applies `silu` before `time_emb_proj` and the UNet shares that activation).
    pub fn forward(&self, x: Tensor<B, 4>, temb_act: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let h = self
            .conv1
            .forward(activation::silu(self.norm1.forward(x.clone())));
        let h = match (&self.time_emb_proj, temb_act) {
            (Some(proj), Some(t)) => {
                let t = proj.forward(t.clone());
                let [b, c] = t.dims();
                h + t.reshape([b, c, 1, 1])
            }
            _ => h,
        };
        let h = self.conv2.forward(activation::silu(self.norm2.forward(h)));
        let x = match &self.conv_shortcut {
            Some(c) => c.forward(x),
            None => x,
        };
        let out = x + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out.div_scalar(self.output_scale_factor)
        }
    }
}

/// `Downsample2D` with a convolution: 3×3, stride 2.
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    /// `conv`.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Downsample2D<B> {
    /// `padding` is diffusers' `downsample_padding`: 1 in the UNet; 0 in the VAE, where the
    /// input is padded by one on the right and bottom first.
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        channels: usize,
        padding: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let mut conv = Conv2d::load(
            src,
            &format!("{prefix}.conv"),
            [channels, channels, 3],
            2,
            padding,
            device,
        )?;
        conv.pad_right_bottom = padding == 0;
        Ok(Self { conv })
    }

    /// `[B, C, H, W]` -> `[B, C, ceil(H/2), ceil(W/2)]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(x)
    }
}

/// Nearest-neighbour resize of `[B, C, H, W]` to `[B, C, oh, ow]` (PyTorch's `nearest`: source
/// index `floor(dst · in / out)`); the common 2× case is a broadcast copy.
pub fn upsample_nearest<B: Backend>(x: Tensor<B, 4>, oh: usize, ow: usize) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    if oh == 2 * h && ow == 2 * w {
        return x
            .reshape([b, c, h, 1, w, 1])
            .expand([b, c, h, 2, w, 2])
            .reshape([b, c, oh, ow]);
    }
    let device = x.device();
    let index = |n_in: usize, n_out: usize| {
        let scale = n_in as f32 / n_out as f32;
        let idx: Vec<i64> = (0..n_out)
            .map(|i| ((i as f32 * scale).floor() as usize).min(n_in - 1) as i64)
            .collect();
        Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [n_out]), &device)
    };
    x.select(2, index(h, oh)).select(3, index(w, ow))
}

/// `Upsample2D` with a convolution: nearest 2× (or to an explicit size) then 3×3 conv.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    /// `conv`.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        channels: usize,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(
                src,
                &format!("{prefix}.conv"),
                [channels, channels, 3],
                1,
                1,
                device,
            )?,
        })
    }

    /// Upsamples to `size` (the skip connection's spatial size) or 2×.
    pub fn forward(&self, x: Tensor<B, 4>, size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let [oh, ow] = size.unwrap_or([2 * h, 2 * w]);
        self.conv.forward(upsample_nearest(x, oh, ow))
    }
}

/// Multi-head scaled dot-product attention (diffusers `Attention`, processor `AttnProcessor2_0`).
///
/// The projections are [`LoraLinear`]s (`to_q`, `to_k`, `to_v` bias-free in the UNet, biased in
/// the VAE; `to_out.0` biased) so LoRA adapters can be attached. With `slice_size = Some(n)`,
/// queries are processed `n` at a time, bounding the score buffer to `B·heads·n·T_kv` floats.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `to_q`.
    pub to_q: LoraLinear<B>,
    /// `to_k`.
    pub to_k: LoraLinear<B>,
    /// `to_v`.
    pub to_v: LoraLinear<B>,
    /// `to_out.0`.
    pub to_out: LoraLinear<B>,
    /// Number of heads.
    pub heads: usize,
    /// Query chunk size (`None`: all queries at once).
    pub slice_size: Option<usize>,
}

impl<B: Backend> Attention<B> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        qkv_bias: bool,
        device: &B::Device,
    ) -> Result<Self> {
        let p = |n: &str| format!("{prefix}.{n}");
        Ok(Self {
            to_q: load_lora_linear(src, &p("to_q"), query_dim, query_dim, qkv_bias, device)?,
            to_k: load_lora_linear(src, &p("to_k"), context_dim, query_dim, qkv_bias, device)?,
            to_v: load_lora_linear(src, &p("to_v"), context_dim, query_dim, qkv_bias, device)?,
            to_out: load_lora_linear(src, &p("to_out.0"), query_dim, query_dim, true, device)?,
            heads,
            slice_size: None,
        })
    }

    /// `x` `[B, N, C]` attends to `context` `[B, T, C_ctx]` (self-attention when `None`).
    ///
    /// On exactly `burn::backend::Flex` with f32 data, the attention core runs in
    /// [`cpu::attention`] (multi-threaded, online softmax, bounded memory whatever
    /// `slice_size`); every other backend (`Autodiff<Flex>` for training, CUDA) uses Burn's
    /// generic `attention` op, query-sliced when `slice_size` is set.
    pub fn forward(&self, x: Tensor<B, 3>, context: Option<&Tensor<B, 3>>) -> Tensor<B, 3> {
        let ctx = context.cloned().unwrap_or_else(|| x.clone());
        let q = self.to_q.forward(x);
        let k = self.to_k.forward(ctx.clone());
        let v = self.to_v.forward(ctx);
        let o = cpu::attention::forward(&q, &k, &v, self.heads)
            .unwrap_or_else(|| self.attend_generic(q, k, v));
        self.to_out.forward(o)
    }

    /// The attention core with Burn's generic op: packed heads `q` `[B, N, inner]`, `k` and `v`
    /// `[B, T, inner]` in, `[B, N, inner]` out.
    fn attend_generic(&self, q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, inner] = q.dims();
        let t = k.dims()[1];
        let (h, d) = (self.heads, inner / self.heads);
        let split = |y: Tensor<B, 3>, len: usize| y.reshape([b, len, h, d]).swap_dims(1, 2);
        let (q, k, v) = (split(q, n), split(k, t), split(v, t));
        let opts = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        let o = match self.slice_size {
            Some(sz) if sz > 0 && sz < n => {
                let parts: Vec<Tensor<B, 4>> = (0..n)
                    .step_by(sz)
                    .map(|a| {
                        let e = (a + sz).min(n);
                        attention(
                            q.clone().slice(s![.., .., a..e, ..]),
                            k.clone(),
                            v.clone(),
                            None,
                            None,
                            opts,
                        )
                    })
                    .collect();
                Tensor::cat(parts, 2)
            }
            _ => attention(q, k, v, None, None, opts),
        };
        o.swap_dims(1, 2).reshape([b, n, inner])
    }
}

/// diffusers `FeedForward` with GEGLU: `net.2(h · gelu(g))` where `[h | g] = net.0.proj(x)`.
///
/// `net.0.proj` is held as two linears (its first and second halves of output rows), so `h` and
/// `g` come out as separate contiguous tensors instead of strided halves of one.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// `net.0.proj`, output rows `0..inner` (the value half), `dim -> inner`.
    pub proj_hidden: Linear<B>,
    /// `net.0.proj`, output rows `inner..2·inner` (the gate half), `dim -> inner`.
    pub proj_gate: Linear<B>,
    /// `net.2`, `inner -> dim`.
    pub out: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        dim: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let inner = 4 * dim;
        let key = format!("{prefix}.net.0.proj");
        let w = src.take(&format!("{key}.weight"), &[2 * inner, dim])?;
        let b = src.take(&format!("{key}.bias"), &[2 * inner])?;
        let half = |i: usize| Linear {
            weight: frozen_param(
                transpose(&w[i * inner * dim..(i + 1) * inner * dim], inner, dim),
                [dim, inner],
                DType::F32,
                device,
            ),
            bias: Some(frozen_param(
                b[i * inner..(i + 1) * inner].to_vec(),
                [inner],
                DType::F32,
                device,
            )),
        };
        Ok(Self {
            proj_hidden: half(0),
            proj_gate: half(1),
            out: load_linear(src, &format!("{prefix}.net.2"), inner, dim, false, device)?,
        })
    }

    /// `[B, N, dim]` -> `[B, N, dim]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, c] = x.dims();
        let x = x.reshape([b * n, c]);
        let hidden = self.proj_hidden.forward(x.clone());
        let gate = self.proj_gate.forward(x);
        // on exactly Flex (f32): the fused host GEGLU of `cpu::geglu`; elsewhere Burn's ops
        let prod =
            cpu::geglu::forward(&hidden, &gate).unwrap_or_else(|| hidden * activation::gelu(gate));
        self.out.forward(prod).reshape([b, n, c])
    }
}

/// `BasicTransformerBlock`: self-attention, cross-attention and GEGLU feed-forward, each
/// pre-LayerNorm with a residual.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    /// `norm1`.
    pub norm1: LayerNorm<B>,
    /// `attn1` (self-attention).
    pub attn1: Attention<B>,
    /// `norm2`.
    pub norm2: LayerNorm<B>,
    /// `attn2` (cross-attention to the text states).
    pub attn2: Attention<B>,
    /// `norm3`.
    pub norm3: LayerNorm<B>,
    /// `ff`.
    pub ff: FeedForward<B>,
}

impl<B: Backend> BasicTransformerBlock<B> {
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        dim: usize,
        heads: usize,
        cross_dim: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let p = |n: &str| format!("{prefix}.{n}");
        Ok(Self {
            norm1: LayerNorm::load(src, &p("norm1"), dim, 1e-5, device)?,
            attn1: Attention::load(src, &p("attn1"), dim, dim, heads, false, device)?,
            norm2: LayerNorm::load(src, &p("norm2"), dim, 1e-5, device)?,
            attn2: Attention::load(src, &p("attn2"), dim, cross_dim, heads, false, device)?,
            norm3: LayerNorm::load(src, &p("norm3"), dim, 1e-5, device)?,
            ff: FeedForward::load(src, &p("ff"), dim, device)?,
        })
    }

    /// `x` `[B, N, dim]`, `context` `[B, T, cross_dim]`.
    pub fn forward(&self, x: Tensor<B, 3>, context: &Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None) + x;
        let x = self
            .attn2
            .forward(self.norm2.forward(x.clone()), Some(context))
            + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

/// `Transformer2DModel` (continuous input): GroupNorm (eps 1e-6), `proj_in`, transformer blocks,
/// `proj_out`, residual. SD1.x's 1×1-conv projections are held as linears over channels (the same
/// numbers), so both `use_linear_projection` layouts share one code path.
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    /// `norm`.
    pub norm: GroupNorm<B>,
    /// `proj_in` (1×1 conv or linear).
    pub proj_in: Linear<B>,
    /// `transformer_blocks`.
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    /// `proj_out` (1×1 conv or linear).
    pub proj_out: Linear<B>,
}

/// Shape parameters of one [`Transformer2DModel`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub cross_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
}

impl<B: Backend> Transformer2DModel<B> {
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        spec: TransformerSpec,
        device: &B::Device,
    ) -> Result<Self> {
        let c = spec.channels;
        let conv = !spec.linear_projection;
        let p = |n: &str| format!("{prefix}.{n}");
        let norm = GroupNorm::load(src, &p("norm"), spec.groups, c, 1e-6, device)?;
        let proj_in = load_linear(src, &p("proj_in"), c, c, conv, device)?;
        let transformer_blocks = (0..spec.layers)
            .map(|i| {
                BasicTransformerBlock::load(
                    src,
                    &p(&format!("transformer_blocks.{i}")),
                    c,
                    spec.heads,
                    spec.cross_dim,
                    device,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let proj_out = load_linear(src, &p("proj_out"), c, c, conv, device)?;
        Ok(Self {
            norm,
            proj_in,
            transformer_blocks,
            proj_out,
        })
    }

    /// `x` `[B, C, H, W]`, `context` `[B, T, cross_dim]`.
    pub fn forward(&self, x: Tensor<B, 4>, context: &Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let hs = self
            .norm
            .forward(x.clone())
            .permute([0, 2, 3, 1])
            .reshape([b, h * w, c]);
        let mut hs = linear3(&self.proj_in, hs);
        for block in &self.transformer_blocks {
            hs = block.forward(hs, context);
        }
        let hs = linear3(&self.proj_out, hs)
            .reshape([b, h, w, c])
            .permute([0, 3, 1, 2]);
        hs + x
    }

    /// The attention modules with their paths relative to this model.
    pub(crate) fn attentions_mut(&mut self) -> Vec<(String, &mut Attention<B>)> {
        let mut out = Vec::new();
        for (i, blk) in self.transformer_blocks.iter_mut().enumerate() {
            out.push((format!("transformer_blocks.{i}.attn1"), &mut blk.attn1));
            out.push((format!("transformer_blocks.{i}.attn2"), &mut blk.attn2));
        }
        out
    }
}

/// The VAE's single-head spatial self-attention (`mid_block.attentions.0`): GroupNorm, attention
/// over the `H·W` positions, residual.
#[derive(Module, Debug)]
pub struct SpatialSelfAttention<B: Backend> {
    /// `group_norm`.
    pub group_norm: GroupNorm<B>,
    /// `to_q`, `to_k`, `to_v`, `to_out.0`.
    pub attn: Attention<B>,
}

impl<B: Backend> SpatialSelfAttention<B> {
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        channels: usize,
        groups: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            group_norm: GroupNorm::load(
                src,
                &format!("{prefix}.group_norm"),
                groups,
                channels,
                eps,
                device,
            )?,
            attn: Attention::load(src, prefix, channels, channels, 1, true, device)?,
        })
    }

    /// `[B, C, H, W]` -> `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let hs = self
            .group_norm
            .forward(x.clone())
            .permute([0, 2, 3, 1])
            .reshape([b, h * w, c]);
        let hs = self
            .attn
            .forward(hs, None)
            .reshape([b, h, w, c])
            .permute([0, 3, 1, 2]);
        hs + x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;
    use rand::rngs::StdRng;

    #[test]
    fn attention_module_on_flex_matches_autodiff_flex() {
        // same seed -> same weights; Flex takes the fast path, Autodiff<Flex> the generic op
        let dev = Default::default();
        let x = Tensor::<Flex, 3>::random([2, 37, 40], Distribution::Normal(0.0, 1.0), &dev);
        let ctx = Tensor::<Flex, 3>::random([2, 77, 24], Distribution::Normal(0.0, 1.0), &dev);
        let to_ad = |y: &Tensor<Flex, 3>| Tensor::<Autodiff<Flex>, 3>::from_data(y.to_data(), &dev);
        for (context, context_dim) in [(None, 40), (Some(&ctx), 24)] {
            let load = |seed| RandomWeights::new(seed);
            let fast = Attention::<Flex>::load(&mut load(3), "a", 40, context_dim, 5, false, &dev)
                .expect("random attention");
            let generic = Attention::<Autodiff<Flex>>::load(
                &mut load(3),
                "a",
                40,
                context_dim,
                5,
                false,
                &dev,
            )
            .expect("random attention");
            let a: Vec<f32> = fast
                .forward(x.clone(), context)
                .into_data()
                .into_vec()
                .expect("f32");
            let ctx_ad = context.map(to_ad);
            let g: Vec<f32> = generic
                .forward(to_ad(&x), ctx_ad.as_ref())
                .into_data()
                .into_vec()
                .expect("f32");
            assert_eq!(a.len(), g.len());
            let diff = a
                .iter()
                .zip(&g)
                .map(|(a, g)| (a - g).abs())
                .fold(0.0, f32::max);
            assert!(
                diff <= 1e-5,
                "cross={}: max abs diff {diff}",
                context.is_some()
            );
        }
    }

    #[test]
    fn group_norm_module_on_flex_matches_autodiff_flex() {
        // Flex takes the host path, Autodiff<Flex> the generic tensor ops; odd spatial sizes,
        // one channel per group, and a shifted input (large mean) included
        let dev = Default::default();
        let mut rng = StdRng::seed_from_u64(7);
        for (b, c, h, w, groups, offset) in [
            (2, 64, 5, 7, 32, 0.0f32),
            (1, 6, 3, 3, 6, 10.0),
            (2, 12, 9, 1, 3, -3.0),
        ] {
            let mut gamma_beta =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.5f32..1.5)).collect() };
            let (gamma, beta) = (gamma_beta(c), gamma_beta(c));
            let x: Vec<f32> = (0..b * c * h * w)
                .map(|_| rng.random_range(-2.0f32..2.0) + offset)
                .collect();
            let fast = GroupNorm::<Flex> {
                gamma: burn::module::Param::from_tensor(Tensor::from_data(
                    TensorData::new(gamma.clone(), [c]),
                    &dev,
                )),
                beta: burn::module::Param::from_tensor(Tensor::from_data(
                    TensorData::new(beta.clone(), [c]),
                    &dev,
                )),
                groups,
                eps: 1e-5,
            };
            let generic = GroupNorm::<Autodiff<Flex>> {
                gamma: burn::module::Param::from_tensor(Tensor::from_data(
                    TensorData::new(gamma, [c]),
                    &dev,
                )),
                beta: burn::module::Param::from_tensor(Tensor::from_data(
                    TensorData::new(beta, [c]),
                    &dev,
                )),
                groups,
                eps: 1e-5,
            };
            let data = TensorData::new(x, [b, c, h, w]);
            let a: Vec<f32> = fast
                .forward(Tensor::from_data(data.clone(), &dev))
                .into_data()
                .into_vec()
                .expect("f32");
            let g: Vec<f32> = generic
                .forward(Tensor::from_data(data, &dev))
                .into_data()
                .into_vec()
                .expect("f32");
            let diff = a
                .iter()
                .zip(&g)
                .map(|(a, g)| (a - g).abs())
                .fold(0.0, f32::max);
            assert!(
                diff <= 1e-5,
                "{b}x{c}x{h}x{w}/{groups}: max abs diff {diff}"
            );
        }
    }
}
