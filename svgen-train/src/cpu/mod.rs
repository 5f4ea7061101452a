//! The CPU fast paths: host-memory kernels that replace a few tensor ops of the models on
//! exactly `burn::backend::Flex` with `f32` data, where Burn's generic CPU ops spend their time
//! in strided iteration, scalar library calls or copies.
//!
//! | kernel | replaces | module |
//! |---|---|---|
//! | multi-head attention (online softmax, rayon) | Stable Diffusion `Attention` | [`attention`] |
//! | GroupNorm (two passes per group, rayon) | Stable Diffusion `GroupNorm` | [`group_norm`] |
//! | GEGLU product with a vectorising `erf` | Stable Diffusion `FeedForward` | [`geglu`] |
//! | SiLU and tanh GELU around one vectorising `exp` | ResNet blocks, FLUX and T5 feed-forwards | [`activation`] |
//! | interleaved rotary embedding in one pass | FLUX `Rope::apply` | [`rope`] |
//! | single-token attention over a host KV cache | the Llama decode step | `decode` |
//! | FlashAttention-2 forward and backward (blocked, rayon) | training attention ([`crate::nn::attention`]) | `flash_attention` |
//!
//! Model code reaches a kernel through its module's `forward`, which returns `None` (take the
//! generic tensor ops) unless the backend is exactly Flex and every input is `f32`; otherwise it
//! copies the inputs to the host, runs the kernel and rebuilds the tensor (`on_host`, the one
//! place that decides). `Autodiff<Flex>` (training needs the graph of the generic ops), CUDA and
//! half-precision models keep the generic ops.
//!
//! This is the only module of the crate with `unsafe` code: each `unsafe` block calls a kernel
//! variant compiled for a CPU feature (AVX2, FMA) that was detected at run time.
#![allow(unsafe_code)]

use core::any::TypeId;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

pub mod activation;
pub mod attention;
pub(crate) mod decode;
mod exp;
pub(crate) mod flash_attention;
pub mod geglu;
pub mod group_norm;
pub mod rope;
mod tile;

pub use exp::exp_f32;
pub(crate) use exp::{exp_lane, madd};

/// `true` when `B` is exactly `burn::backend::Flex` (f32 floats, i32 ints), the backend the fast
/// path is written for. `Autodiff<Flex>` and every GPU backend answer `false`.
pub fn is_flex<B: 'static>() -> bool {
    TypeId::of::<B>() == TypeId::of::<burn::backend::Flex>()
}

/// Whether the host kernels apply to data of `dtype` on backend `B`: exactly Flex, and `f32`.
pub(crate) fn applies<B: 'static>(dtype: DType) -> bool {
    is_flex::<B>() && dtype == DType::F32
}

/// A tensor of any rank whose values a host kernel reads.
pub(crate) trait HostInput<B: Backend> {
    /// The tensor's dtype.
    fn host_dtype(&self) -> DType;
    /// Its values, row-major, when it holds `f32`.
    fn host_values(&self) -> Option<Vec<f32>>;
}

impl<B: Backend, const D: usize> HostInput<B> for Tensor<B, D> {
    fn host_dtype(&self) -> DType {
        self.dtype()
    }

    fn host_values(&self) -> Option<Vec<f32>> {
        self.to_data().into_vec::<f32>().ok()
    }
}

/// The one dispatch of the fast paths: when they apply to every input ([`applies`]), copies the
/// inputs to the host, runs `kernel` on their values and returns its output as a tensor of
/// `shape` on `device`; otherwise `None`, before anything is copied, and the caller takes the
/// generic tensor ops.
pub(crate) fn on_host<B: Backend, const N: usize, const D: usize>(
    inputs: [&dyn HostInput<B>; N],
    shape: [usize; D],
    device: &B::Device,
    kernel: impl FnOnce([Vec<f32>; N]) -> Vec<f32>,
) -> Option<Tensor<B, D>> {
    if !inputs.iter().all(|t| applies::<B>(t.host_dtype())) {
        return None;
    }
    let mut values = Vec::with_capacity(N);
    for t in inputs {
        values.push(t.host_values()?);
    }
    let values: [Vec<f32>; N] = values.try_into().ok()?;
    Some(Tensor::from_data(
        TensorData::new(kernel(values), shape),
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    #[test]
    fn is_flex_only_for_plain_flex() {
        assert!(is_flex::<Flex>());
        assert!(!is_flex::<Autodiff<Flex>>());
    }
}
