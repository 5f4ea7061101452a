//! Multi-head attention (diffusers `Attention`, with the CPU fast path) and the VAE's spatial
//! self-attention.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{s, Tensor};

use super::norm::GroupNorm;
use super::weights::{load_lora_linear, WeightSource};
use crate::cpu;
use crate::error::Result;
use crate::nn::lora::LoraLinear;

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

    use super::super::weights::RandomWeights;

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
}
