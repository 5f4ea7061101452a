//! Building blocks of the diffusers UNet and VAE, with diffusers parameter names:
//! convolutions, GroupNorm / LayerNorm, the sinusoidal timestep embedding, `ResnetBlock2D`,
//! `Downsample2D` / `Upsample2D`, multi-head `Attention` (optionally query-sliced), the GEGLU
//! feed-forward, `BasicTransformerBlock`, `Transformer2DModel` and the VAE's spatial self-attention.
//!
//! Weights come from a [`WeightSource`]: a diffusers safetensors checkpoint ([`Weights`], svgen-eval's
//! shared loader, opened by [`open_diffusers_weights`]) or a seeded
//! random initialisation ([`RandomWeights`], for benchmarks at configurations with no checkpoint).
//! Every tensor is requested by its full diffusers key and expected shape, so a missing or
//! wrong-shaped tensor is a typed error naming the key.
//!
//! | module | blocks |
//! |---|---|
//! | `weights` | [`WeightSource`], [`open_diffusers_weights`], [`RandomWeights`] |
//! | `conv` | [`Conv2d`], [`Downsample2D`], [`Upsample2D`], [`upsample_nearest`] |
//! | `norm` | [`GroupNorm`], [`LayerNorm`] |
//! | `embedding` | [`timestep_embedding`], [`TimestepEmbedding`] |
//! | `resnet` | [`ResnetBlock2D`] |
//! | `attention` | [`Attention`], [`SpatialSelfAttention`] |
//! | `transformer` | [`FeedForward`], [`BasicTransformerBlock`], [`Transformer2DModel`] |

mod attention;
mod conv;
mod embedding;
mod norm;
mod resnet;
mod transformer;
mod weights;

pub use attention::{Attention, SpatialSelfAttention};
pub use conv::{upsample_nearest, Conv2d, Downsample2D, Upsample2D};
pub use embedding::{timestep_embedding, TimestepEmbedding};
pub use norm::{GroupNorm, LayerNorm};
pub use resnet::ResnetBlock2D;
pub(crate) use resnet::ResnetSpec;
pub use svgen_eval::weights::Weights;
pub(crate) use transformer::TransformerSpec;
pub use transformer::{BasicTransformerBlock, FeedForward, Transformer2DModel};
pub use weights::{open_diffusers_weights, RandomWeights, WeightSource};
