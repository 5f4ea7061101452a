//! The UNet's transformer: the GEGLU `FeedForward` (with the CPU fast path),
//! `BasicTransformerBlock` and `Transformer2DModel`.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::attention::Attention;
use super::norm::{GroupNorm, LayerNorm};
use super::weights::{linear3, load_linear, WeightSource};
use crate::cpu;
use crate::error::Result;
use crate::nn::tensor::{frozen_param, transpose};

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
