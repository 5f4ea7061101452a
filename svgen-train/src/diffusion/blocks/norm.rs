//! Normalisation layers: `torch.nn.GroupNorm` (with the CPU fast path) and `torch.nn.LayerNorm`.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::weights::{param, WeightSource};
use crate::cpu;
use crate::error::Result;

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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

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
