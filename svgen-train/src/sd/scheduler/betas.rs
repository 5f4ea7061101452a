//! The training noise schedule: betas and ᾱ (`alphas_cumprod`) in `f32`, in the same order of
//! operations as diffusers (which builds them with `torch.float32` tensors).

use super::config::{BetaSchedule, SchedulerConfig};

impl SchedulerConfig {
    /// The training betas, in `f32` exactly as diffusers builds them with torch (`torch.linspace` in
    /// `float32`, then squared for `scaled_linear`).
    pub fn betas(&self) -> Vec<f32> {
        let n = self.num_train_timesteps;
        let mut betas = if let Some(b) = &self.trained_betas {
            b.iter().map(|&x| x as f32).collect()
        } else {
            match self.beta_schedule {
                BetaSchedule::Linear => {
                    torch_linspace_f32(self.beta_start as f32, self.beta_end as f32, n)
                }
                BetaSchedule::ScaledLinear => torch_linspace_f32(
                    self.beta_start.sqrt() as f32,
                    self.beta_end.sqrt() as f32,
                    n,
                )
                .into_iter()
                .map(|b| b * b)
                .collect(),
                BetaSchedule::SquaredCosCapV2 => {
                    let alpha_bar = |t: f64| {
                        ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                            .cos()
                            .powi(2)
                    };
                    (0..n)
                        .map(|i| {
                            let t1 = i as f64 / n as f64;
                            let t2 = (i + 1) as f64 / n as f64;
                            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                        })
                        .collect()
                }
            }
        };
        if self.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        betas
    }

    /// ᾱ_t = ∏_{s≤t}(1 − β_s) for every training timestep, in `f32` (torch's `cumprod` accumulates in
    /// double and stores `float32`).
    pub fn alphas_cumprod(&self) -> Vec<f32> {
        let mut acc = 1.0f64;
        self.betas()
            .into_iter()
            .map(|b| {
                acc *= f64::from(1.0f32 - b);
                acc as f32
            })
            .collect()
    }
}

/// `torch.linspace(start, end, steps, dtype=float32)` on the CPU: the first half counts up from
/// `start`, the second half down from `end`, in `f32` with fused multiply-adds (bit-identical to torch's
/// kernel as compiled for x86-64).
fn torch_linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// Rescales betas to zero terminal SNR (Lin et al. 2023, algorithm 1), in `f32`.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    let mut sqrt_bar: Vec<f32> = betas
        .iter()
        .map(|&b| {
            acc *= f64::from(1.0 - b);
            (acc as f32).sqrt()
        })
        .collect();
    let first = sqrt_bar[0];
    let last = sqrt_bar[sqrt_bar.len() - 1];
    let scale = first / (first - last);
    for v in &mut sqrt_bar {
        *v = (*v - last) * scale;
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for w in bar.windows(2) {
        out.push(1.0 - w[1] / w[0]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_torch_endpoints() {
        let v = torch_linspace_f32(0.1, 0.2, 5);
        assert_eq!(v[0], 0.1);
        assert_eq!(v[4], 0.2);
    }
}
