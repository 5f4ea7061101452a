//! The Euler samplers (`EulerDiscreteScheduler`, `EulerAncestralDiscreteScheduler`): their
//! timesteps and sigmas (optionally Karras), and their updates.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::config::{PredictionType, TimestepSpacing};
use super::karras::{karras_sigmas, log_f32, sigma_to_t};
use super::timesteps::{interp_index, spaced_timesteps};
use super::{Sampler, Scheduler};

impl Scheduler {
    /// The timesteps and sigmas of the Euler samplers for `n` steps (`linspace` spacing keeps
    /// fractional timesteps, as float32); sets `self.sigmas` and returns the timesteps.
    pub(super) fn euler_timesteps(
        &mut self,
        spacing: TimestepSpacing,
        n: usize,
        t_train: usize,
        offset: f64,
    ) -> Vec<f64> {
        let ts = spaced_timesteps(spacing, n, t_train, offset, |x| f64::from(x as f32));
        let train = self.training_sigmas();
        let interpolated: Vec<f64> = ts.iter().map(|&t| interp_index(t, &train)).collect();
        let (ts, mut sigmas): (Vec<f64>, Vec<f32>) =
            if self.kind == Sampler::Euler && self.config.use_karras_sigmas {
                let log_sigmas = log_f32(&train);
                let lo = self
                    .config
                    .sigma_min
                    .unwrap_or(interpolated[interpolated.len() - 1]);
                let hi = self.config.sigma_max.unwrap_or(interpolated[0]);
                let karras = karras_sigmas(lo, hi, n);
                let ts = karras
                    .iter()
                    .map(|&s| f64::from(sigma_to_t(s, &log_sigmas) as f32))
                    .collect();
                (ts, karras.iter().map(|&s| s as f32).collect())
            } else {
                (ts, interpolated.iter().map(|&s| s as f32).collect())
            };
        let last = if self.kind == Sampler::Euler && self.config.final_sigmas_type == "sigma_min" {
            train[0]
        } else {
            0.0
        };
        sigmas.push(last);
        self.sigmas = sigmas;
        ts
    }

    /// x₀ predicted by an Euler sampler at noise level σ.
    fn euler_x0<B: Backend>(
        &self,
        model_output: Tensor<B, 4>,
        sample: Tensor<B, 4>,
        sigma: f32,
    ) -> Tensor<B, 4> {
        match self.config.prediction_type {
            PredictionType::Epsilon => sample - model_output.mul_scalar(sigma),
            PredictionType::VPrediction => {
                let s2 = sigma * sigma + 1.0;
                model_output.mul_scalar(-sigma / s2.sqrt()) + sample.div_scalar(s2)
            }
            PredictionType::Sample => model_output,
        }
    }

    /// One Euler step (`s_churn = 0`).
    pub(super) fn step_euler<B: Backend>(
        &self,
        model_output: Tensor<B, 4>,
        i: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        // s_churn = 0 (diffusers' default): σ̂ = σ.
        let sigma = self.sigmas[i];
        let x0 = self.euler_x0(model_output, sample.clone(), sigma);
        let derivative = (sample.clone() - x0).div_scalar(sigma);
        let dt = self.sigmas[i + 1] - sigma;
        sample + derivative.mul_scalar(dt)
    }

    /// One Euler ancestral step with the caller's `noise`.
    pub(super) fn step_euler_ancestral<B: Backend>(
        &self,
        model_output: Tensor<B, 4>,
        i: usize,
        sample: Tensor<B, 4>,
        noise: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let sigma = self.sigmas[i];
        let sigma_to = self.sigmas[i + 1];
        let x0 = self.euler_x0(model_output, sample.clone(), sigma);
        let (from2, to2) = (sigma * sigma, sigma_to * sigma_to);
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).max(0.0).sqrt();
        let derivative = (sample.clone() - x0).div_scalar(sigma);
        let dt = sigma_down - sigma;
        sample + derivative.mul_scalar(dt) + noise.mul_scalar(sigma_up)
    }
}
