//! Karras et al. (2022) noise levels (`use_karras_sigmas`) and the map from a noise level back
//! to a (fractional) training timestep.

use super::timesteps::np_linspace;

/// `ln` of every σ, in `f32` (numpy's `np.log` of a `float32` array).
pub(super) fn log_f32(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|s| s.ln()).collect()
}

/// Karras et al. (2022) noise levels: `n` values from `sigma_max` down to `sigma_min`, evenly spaced in
/// σ^(1/ρ) with ρ = 7.
pub(super) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / RHO), sigma_max.powf(1.0 / RHO));
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(RHO))
        .collect()
}

/// The (fractional) training timestep of noise level `sigma`: linear interpolation in log σ between
/// the two neighbouring training steps (diffusers' `_sigma_to_t`; `log_sigmas` ascending).
pub(super) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let last_at_or_below = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - f64::from(l) >= 0.0)
        .unwrap_or(0);
    let low = last_at_or_below.min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((f64::from(lo) - log_sigma) / f64::from(lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}
