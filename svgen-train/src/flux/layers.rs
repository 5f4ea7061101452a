//! The layers of the FLUX transformer, with diffusers' names: the 3-axis rotary position
//! embedding (`FluxPosEmbed`), the combined timestep / guidance / pooled-text embedding, the
//! adaptive norms (`AdaLayerNormZero`, `AdaLayerNormZeroSingle`, `AdaLayerNormContinuous`), the
//! QK-normalised joint attention (`FluxAttention`) and the tanh-GELU feed-forward.
//!
//! Norms and the rotary embedding are computed in f32 whatever the weights' dtype (as diffusers'
//! `apply_rotary_emb` does; its norms upcast internally); linears and attention run in the
//! weights' dtype (bf16 on GPU, f32 on the CPU).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor, TensorData};
use svgen_eval::weights::Weights;

use crate::cpu;
use crate::diffusion::blocks::timestep_embedding;
use crate::error::Result;

/// Normalises the last dimension to zero mean and unit variance (`LayerNorm` without affine
/// parameters), in f32.
pub(crate) fn layer_norm<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let dtype = x.dtype();
    let x = x.cast(DType::F32);
    let mean = x.clone().mean_dim(D - 1);
    let centered = x - mean;
    let var = (centered.clone() * centered.clone()).mean_dim(D - 1);
    (centered / var.add_scalar(eps).sqrt()).cast(dtype)
}

/// `x · (1 + scale) + shift` with per-sample `scale`, `shift` `[B, d]` broadcast over the
/// sequence of `x` `[B, N, d]`.
pub(crate) fn modulate<B: Backend>(
    x: Tensor<B, 3>,
    shift: Tensor<B, 2>,
    scale: Tensor<B, 2>,
) -> Tensor<B, 3> {
    x * scale.add_scalar(1.0).unsqueeze_dim(1) + shift.unsqueeze_dim(1)
}

/// The rotary embedding of a token sequence: `cos` and signed `sin` tables `[1, N, 1, head_dim]`
/// in f32 (diffusers' `FluxPosEmbed` computes the frequencies in f64).
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 4>,
    /// `sin` with the sign of the rotation folded in: `-sin` at even channels, `+sin` at odd ones.
    sin: Tensor<B, 4>,
}

impl<B: Backend> Rope<B> {
    /// The tables for position ids `[N][3]` (text tokens first, then image tokens), with
    /// `axes_dims` channels per axis and base `theta` (10000 in FLUX).
    pub fn new(ids: &[[f64; 3]], axes_dims: &[usize], theta: f64, device: &B::Device) -> Self {
        let head_dim: usize = axes_dims.iter().sum();
        let n = ids.len();
        let mut cos = Vec::with_capacity(n * head_dim);
        let mut sin = Vec::with_capacity(n * head_dim);
        for pos in ids {
            for (axis, &dim) in axes_dims.iter().enumerate() {
                for i in 0..dim / 2 {
                    let freq = 1.0 / theta.powf((2 * i) as f64 / dim as f64);
                    let angle = pos[axis] * freq;
                    let (s, c) = angle.sin_cos();
                    let (s, c) = (s as f32, c as f32);
                    // `repeat_interleave(2)`, and the rotation (-x₁, x₀) folded into the sign.
                    cos.extend([c, c]);
                    sin.extend([-s, s]);
                }
            }
        }
        let shape = [1, n, 1, head_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }

    /// Number of positions.
    pub fn len(&self) -> usize {
        self.cos.dims()[1]
    }

    /// Whether there are no positions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rotates `x` `[B, N, heads, head_dim]` (channel pairs `(2i, 2i+1)` as complex numbers), in
    /// f32, back to `x`'s dtype.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if let Some(y) = cpu::rope::forward(&x, &self.cos, &self.sin) {
            return y;
        }
        let dtype = x.dtype();
        let [b, n, h, d] = x.dims();
        let x = x.cast(DType::F32);
        let swapped = x
            .clone()
            .reshape([b, n, h, d / 2, 2])
            .flip([4])
            .reshape([b, n, h, d]);
        (x * self.cos.clone() + swapped * self.sin.clone()).cast(dtype)
    }
}

/// `torch.nn.RMSNorm` over the head dimension (`norm_q`, `norm_k`, ...), weights kept in f32.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `weight`.
    pub weight: Param<Tensor<B, 1>>,
    /// `eps`.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    pub(crate) fn load(
        w: &Weights,
        key: &str,
        d: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<Self> {
        let t = w.tensor_as::<B, 1>(key, [d], device, DType::F32)?;
        Ok(Self {
            weight: w.make_param(t),
            eps,
        })
    }

    /// Normalises the last dimension of `[B, N, heads, d]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let ms = (x.clone() * x.clone()).mean_dim(3);
        let d = self.weight.dims()[0];
        (x / ms.add_scalar(self.eps).sqrt() * self.weight.val().reshape([1, 1, 1, d])).cast(dtype)
    }
}

/// diffusers' `TimestepEmbedding` / `PixArtAlphaTextProjection` (SiLU): `linear_2(silu(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct Mlp2<B: Backend> {
    /// `linear_1`.
    pub linear_1: Linear<B>,
    /// `linear_2`.
    pub linear_2: Linear<B>,
}

impl<B: Backend> Mlp2<B> {
    fn load(w: &Weights, prefix: &str, d_in: usize, d: usize, device: &B::Device) -> Result<Self> {
        Ok(Self {
            linear_1: w.linear(&format!("{prefix}.linear_1"), d_in, d, true, device)?,
            linear_2: w.linear(&format!("{prefix}.linear_2"), d, d, true, device)?,
        })
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2
            .forward(cpu::activation::silu(self.linear_1.forward(x)))
    }
}

/// `CombinedTimestepTextProjEmbeddings` (schnell) or `CombinedTimestepGuidanceTextProjEmbeddings`
/// (dev): `timestep_embedder(sinusoid(1000·t)) [+ guidance_embedder(sinusoid(1000·g))] +
/// text_embedder(pooled)`.
#[derive(Module, Debug)]
pub struct TimeTextEmbed<B: Backend> {
    /// `time_text_embed.timestep_embedder`.
    pub timestep_embedder: Mlp2<B>,
    /// `time_text_embed.guidance_embedder` (guidance-distilled models only).
    pub guidance_embedder: Option<Mlp2<B>>,
    /// `time_text_embed.text_embedder`.
    pub text_embedder: Mlp2<B>,
}

/// Channels of the sinusoidal timestep projection (`Timesteps(num_channels=256)`).
pub const TIME_PROJ_DIM: usize = 256;

impl<B: Backend> TimeTextEmbed<B> {
    pub(crate) fn load(
        w: &Weights,
        d: usize,
        pooled_dim: usize,
        guidance: bool,
        device: &B::Device,
    ) -> Result<Self> {
        let p = "time_text_embed";
        Ok(Self {
            timestep_embedder: Mlp2::load(
                w,
                &format!("{p}.timestep_embedder"),
                TIME_PROJ_DIM,
                d,
                device,
            )?,
            guidance_embedder: if guidance {
                Some(Mlp2::load(
                    w,
                    &format!("{p}.guidance_embedder"),
                    TIME_PROJ_DIM,
                    d,
                    device,
                )?)
            } else {
                None
            },
            text_embedder: Mlp2::load(w, &format!("{p}.text_embedder"), pooled_dim, d, device)?,
        })
    }

    /// The sinusoidal projection of `1000 · t` as the model computes it: `t` rounded to the
    /// model's dtype first (diffusers' `timestep.to(hidden_states.dtype) * 1000`), the sinusoid in
    /// f32, then the model's dtype.
    fn project(t: Tensor<B, 1>, dtype: DType) -> Tensor<B, 2> {
        let t = t.cast(dtype).cast(DType::F32).mul_scalar(1000.0);
        timestep_embedding(t, TIME_PROJ_DIM, true, 0.0).cast(dtype)
    }

    /// The conditioning vector `[B, d]`.
    pub fn forward(
        &self,
        timestep: Tensor<B, 1>,
        guidance: Option<Tensor<B, 1>>,
        pooled: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let dtype = pooled.dtype();
        let mut emb = self
            .timestep_embedder
            .forward(Self::project(timestep, dtype));
        if let (Some(g), Some(embedder)) = (guidance, &self.guidance_embedder) {
            emb = emb + embedder.forward(Self::project(g, dtype));
        }
        emb + self.text_embedder.forward(pooled)
    }
}

/// `AdaLayerNormZero` / `AdaLayerNormZeroSingle` / `AdaLayerNormContinuous`: a linear of
/// `silu(temb)` giving `chunks` modulation vectors.
#[derive(Module, Debug)]
pub struct AdaNorm<B: Backend> {
    /// `linear`.
    pub linear: Linear<B>,
    /// Number of `[B, d]` vectors it produces (6, 3 or 2).
    pub chunks: usize,
}

impl<B: Backend> AdaNorm<B> {
    pub(crate) fn load(
        w: &Weights,
        prefix: &str,
        d: usize,
        chunks: usize,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            linear: w.linear(&format!("{prefix}.linear"), d, chunks * d, true, device)?,
            chunks,
        })
    }

    /// The modulation vectors (in diffusers' chunk order) for `silu(temb)`.
    pub fn vectors(&self, silu_temb: Tensor<B, 2>) -> Vec<Tensor<B, 2>> {
        self.linear.forward(silu_temb).chunk(self.chunks, 1)
    }
}

/// diffusers' `FeedForward(activation_fn="gelu-approximate")`: `net.2(gelu_tanh(net.0.proj(x)))`.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// `net.0.proj`.
    pub proj: Linear<B>,
    /// `net.2`.
    pub out: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    pub(crate) fn load(w: &Weights, prefix: &str, d: usize, device: &B::Device) -> Result<Self> {
        Ok(Self {
            proj: w.linear(&format!("{prefix}.net.0.proj"), d, 4 * d, true, device)?,
            out: w.linear(&format!("{prefix}.net.2"), 4 * d, d, true, device)?,
        })
    }

    /// `[B, N, d]` → `[B, N, d]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.out
            .forward(cpu::activation::gelu_tanh(self.proj.forward(x)))
    }
}

/// Query, key and value projections of one stream with their QK RMS norms.
#[derive(Module, Debug)]
pub struct QkvProjection<B: Backend> {
    /// `to_q` / `add_q_proj`.
    pub q: Linear<B>,
    /// `to_k` / `add_k_proj`.
    pub k: Linear<B>,
    /// `to_v` / `add_v_proj`.
    pub v: Linear<B>,
    /// `norm_q` / `norm_added_q`.
    pub norm_q: RmsNorm<B>,
    /// `norm_k` / `norm_added_k`.
    pub norm_k: RmsNorm<B>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> QkvProjection<B> {
    /// `names`: the q, k, v linears and the q, k norms under `prefix`.
    pub(crate) fn load(
        w: &Weights,
        prefix: &str,
        names: [&str; 5],
        d: usize,
        heads: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let head_dim = d / heads;
        let lin = |n: &str| w.linear(&format!("{prefix}.{n}"), d, d, true, device);
        let norm =
            |n: &str| RmsNorm::load(w, &format!("{prefix}.{n}.weight"), head_dim, 1e-6, device);
        Ok(Self {
            q: lin(names[0])?,
            k: lin(names[1])?,
            v: lin(names[2])?,
            norm_q: norm(names[3])?,
            norm_k: norm(names[4])?,
            heads,
        })
    }

    /// `[B, N, d]` → normalised q, k and v `[B, N, heads, head_dim]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> [Tensor<B, 4>; 3] {
        let [b, n, d] = x.dims();
        let split = |t: Tensor<B, 3>| t.reshape([b, n, self.heads, d / self.heads]);
        [
            self.norm_q.forward(split(self.q.forward(x.clone()))),
            self.norm_k.forward(split(self.k.forward(x.clone()))),
            split(self.v.forward(x)),
        ]
    }
}

/// Scaled dot-product attention without mask over `[B, N, heads, head_dim]` inputs, returning
/// `[B, N, heads·head_dim]`: the multi-threaded host kernel on `Flex` with f32 data, Burn's
/// attention op elsewhere (CUDA, bf16).
pub fn joint_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 3> {
    let [b, n, h, d] = q.dims();
    let packed = |t: Tensor<B, 4>| t.reshape([b, n, h * d]);
    let (qp, kp, vp) = (packed(q.clone()), packed(k.clone()), packed(v.clone()));
    if let Some(o) = cpu::attention::forward(&qp, &kp, &vp, h) {
        return o;
    }
    let opts = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: false,
    };
    attention(
        q.swap_dims(1, 2),
        k.swap_dims(1, 2),
        v.swap_dims(1, 2),
        None,
        None,
        opts,
    )
    .swap_dims(1, 2)
    .reshape([b, n, h * d])
}
