//! The sinusoidal timestep embedding and diffusers' `TimestepEmbedding` MLP.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::ops::PadMode;
use burn::tensor::{Tensor, TensorData};

use super::weights::{load_linear, WeightSource};
use crate::cpu;
use crate::error::Result;

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
            .forward(cpu::activation::silu(self.linear_1.forward(t)))
    }
}
