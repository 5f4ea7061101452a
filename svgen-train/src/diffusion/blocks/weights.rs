//! Where the blocks' weights come from: a diffusers safetensors checkpoint read by svgen-eval's
//! shared loader ([`Weights`]) or a seeded random initialisation ([`RandomWeights`]), and the
//! loaders of parameters and linears.

use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use rand::{Rng, SeedableRng};

use svgen_eval::weights::{Weights, DIFFUSERS_STEM};

use crate::error::Result;
use crate::nn::lora::LoraLinear;
use crate::nn::tensor::{frozen_param, transpose};

/// Where model weights come from: each tensor is asked for once, by diffusers key and shape
/// (PyTorch layout: linears `[out, in]`, convolutions `[out, in, kh, kw]`).
pub trait WeightSource {
    /// The row-major f32 data of `key`; typed errors for a missing key or a wrong shape.
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

/// A diffusers checkpoint read through svgen-eval's shared loader: each tensor is read from the
/// file when the model asks for it, widened to f32 (f16/bf16 exactly).
impl WeightSource for Weights {
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(self.f32(key, shape)?)
    }
}

/// Opens the diffusers checkpoint of a model folder: `diffusion_pytorch_model.safetensors` or its
/// shard index.
///
/// # Errors
/// [`TrainError::Io`] when neither file exists, [`TrainError::Safetensors`] for a malformed file.
pub fn open_diffusers_weights(dir: &Path) -> Result<Weights> {
    Ok(Weights::open(dir, DIFFUSERS_STEM)?)
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
