//! The DDIM update (`DDIMScheduler`, deterministic, η = 0).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::config::PredictionType;
use super::Scheduler;

impl Scheduler {
    /// One DDIM step (η = 0).
    pub(super) fn step_ddim<B: Backend>(
        &self,
        model_output: Tensor<B, 4>,
        i: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let t = self.timesteps[i] as usize;
        let a_t = self.alphas_cumprod[t];
        let a_prev = match t.checked_sub(self.ddim_step) {
            Some(p) => self.alphas_cumprod[p],
            None => self.final_alpha_cumprod,
        };
        let b_t = 1.0 - a_t;
        let (x0, eps) = match self.config.prediction_type {
            PredictionType::Epsilon => (
                (sample - model_output.clone().mul_scalar(b_t.sqrt())).div_scalar(a_t.sqrt()),
                model_output,
            ),
            PredictionType::Sample => {
                let eps =
                    (sample - model_output.clone().mul_scalar(a_t.sqrt())).div_scalar(b_t.sqrt());
                (model_output, eps)
            }
            PredictionType::VPrediction => (
                sample.clone().mul_scalar(a_t.sqrt()) - model_output.clone().mul_scalar(b_t.sqrt()),
                model_output.mul_scalar(a_t.sqrt()) + sample.mul_scalar(b_t.sqrt()),
            ),
        };
        let x0 = if self.config.clip_sample.unwrap_or(true) {
            let r = self.config.clip_sample_range as f32;
            x0.clamp(-r, r)
        } else {
            x0
        };
        let direction = eps.mul_scalar((1.0 - a_prev).sqrt());
        x0.mul_scalar(a_prev.sqrt()) + direction
    }
}
