//! DPM-Solver++ multistep (`DPMSolverMultistepScheduler` with `algorithm_type = "dpmsolver++"`,
//! `solver_order` 1 or 2): its timesteps and sigmas (optionally Karras) and its update.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::config::{BetaSchedule, PredictionType, TimestepSpacing};
use super::karras::{karras_sigmas, log_f32, sigma_to_t};
use super::timesteps::{interp_index, np_arange_down, np_linspace, round_even};
use super::Scheduler;
use crate::error::{Result, TrainError};

impl Scheduler {
    /// The timesteps and sigmas of DPM-Solver for `n` steps; sets `self.sigmas` and returns the
    /// timesteps.
    pub(super) fn dpm_timesteps(
        &mut self,
        spacing: TimestepSpacing,
        n: usize,
        t_train: usize,
        offset: f64,
    ) -> Result<Vec<f64>> {
        let tf = t_train as f64;
        let train = self.training_sigmas();
        // searchsorted(flip(lambda_t), lambda_min_clipped): how many λ lie below the clip.
        let clipped = self
            .alphas_cumprod
            .iter()
            .filter(|&&a| {
                let lambda = f64::from(a.sqrt().ln() - (1.0 - a).sqrt().ln());
                lambda < self.config.lambda_min_clipped
            })
            .count();
        let last_t = t_train - clipped;
        let ts: Vec<f64> = match spacing {
            TimestepSpacing::Linspace => {
                let mut v: Vec<f64> = np_linspace(0.0, last_t as f64 - 1.0, n + 1)
                    .into_iter()
                    .map(round_even)
                    .rev()
                    .collect();
                v.pop();
                v
            }
            TimestepSpacing::Leading => {
                let ratio = last_t / (n + 1);
                (1..=n).rev().map(|i| (i * ratio) as f64 + offset).collect()
            }
            TimestepSpacing::Trailing => np_arange_down(last_t as f64, 0.0, -(tf / n as f64))
                .into_iter()
                .map(|x| round_even(x) - 1.0)
                .collect(),
        };
        if ts.is_empty() || ts.iter().any(|&t| t < 0.0 || t >= tf) {
            return Err(TrainError::InvalidArgument(format!(
                "{n} inference steps leave no valid timesteps with lambda_min_clipped = {}",
                self.config.lambda_min_clipped
            )));
        }
        let (ts, mut sigmas): (Vec<f64>, Vec<f32>) = if self.config.use_karras_sigmas {
            let log_sigmas = log_f32(&train);
            let karras = karras_sigmas(f64::from(train[0]), f64::from(train[train.len() - 1]), n);
            let ts = karras
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    if self.config.beta_schedule == BetaSchedule::SquaredCosCapV2 {
                        t.trunc()
                    } else {
                        round_even(t)
                    }
                })
                .collect();
            (ts, karras.iter().map(|&s| s as f32).collect())
        } else {
            let sigmas = ts.iter().map(|&t| interp_index(t, &train) as f32).collect();
            (ts, sigmas)
        };
        sigmas.push(if self.config.final_sigmas_type == "sigma_min" {
            train[0]
        } else {
            0.0
        });
        self.sigmas = sigmas;
        Ok(ts)
    }

    /// One DPM-Solver++ step (first or second order), keeping this step's x₀ for the next.
    pub(super) fn step_dpm<B: Backend>(
        &mut self,
        model_output: Tensor<B, 4>,
        i: usize,
        sample: Tensor<B, 4>,
        n: usize,
    ) -> Result<Tensor<B, 4>> {
        let cfg = &self.config;
        let lower_order_final = i == n - 1
            && (cfg.euler_at_final
                || (cfg.lower_order_final && n < 15)
                || cfg.final_sigmas_type == "zero");
        // (α_t, σ_t) of the VP process from σ = σ_t/α_t.
        let alpha_sigma = |s: f32| {
            let alpha = 1.0 / (s * s + 1.0).sqrt();
            (alpha, s * alpha)
        };
        let lambda = |(alpha, sigma): (f32, f32)| alpha.ln() - sigma.ln();
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let x0 = match cfg.prediction_type {
            PredictionType::Epsilon => {
                (sample.clone() - model_output.mul_scalar(sigma_s0)).div_scalar(alpha_s0)
            }
            PredictionType::VPrediction => {
                sample.clone().mul_scalar(alpha_s0) - model_output.mul_scalar(sigma_s0)
            }
            PredictionType::Sample => model_output,
        };
        let previous = match self.previous_x0.take() {
            Some(b) => Some(*b.downcast::<Tensor<B, 4>>().map_err(|_| {
                TrainError::InvalidArgument(
                    "DPM-Solver state holds a tensor of another backend; restart at step 0".into(),
                )
            })?),
            None => None,
        };
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let lambda_t = lambda((alpha_t, sigma_t));
        let lambda_s0 = lambda((alpha_s0, sigma_s0));
        let h = lambda_t - lambda_s0;
        let first_order = cfg.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final;
        let out = match previous {
            Some(m1) if !first_order => {
                // The second-order multistep update (diffusers' `lower_order_second` only matters for
                // third order, which is not implemented).
                let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
                let lambda_s1 = lambda((alpha_s1, sigma_s1));
                let h0 = lambda_s0 - lambda_s1;
                let r0 = h0 / h;
                let d1 = (x0.clone() - m1).mul_scalar(1.0 / r0);
                let em1 = (-h).exp() - 1.0;
                let base =
                    sample.mul_scalar(sigma_t / sigma_s0) - x0.clone().mul_scalar(alpha_t * em1);
                if cfg.solver_type == "heun" {
                    base + d1.mul_scalar(alpha_t * (em1 / h + 1.0))
                } else {
                    base - d1.mul_scalar(0.5 * (alpha_t * em1))
                }
            }
            _ => {
                let ratio = if sigma_t == 0.0 {
                    0.0
                } else {
                    sigma_t / sigma_s0
                };
                let em1 = (-h).exp() - 1.0;
                sample.mul_scalar(ratio) - x0.clone().mul_scalar(alpha_t * em1)
            }
        };
        if self.lower_order_nums < cfg.solver_order {
            self.lower_order_nums += 1;
        }
        self.previous_x0 = Some(Box::new(x0));
        Ok(out)
    }
}
