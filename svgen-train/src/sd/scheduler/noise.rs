//! The DDPM forward process used for training ([`add_noise`]) and the v-prediction target
//! ([`velocity`]).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::config::SchedulerConfig;
use crate::error::{Result, TrainError};

/// The DDPM forward process used for training: `√ᾱ_t · x₀ + √(1 − ᾱ_t) · ε`, with one timestep per
/// sample of the batch (diffusers' `DDPMScheduler.add_noise`).
///
/// ```
/// use svgen_train::sd::scheduler::{add_noise, SchedulerConfig};
/// use svgen_train::{burn::tensor::Tensor, CpuBackend};
///
/// let device = Default::default();
/// let x0 = Tensor::<CpuBackend, 4>::ones([2, 4, 8, 8], &device);
/// let noise = Tensor::<CpuBackend, 4>::zeros([2, 4, 8, 8], &device);
/// let noisy = add_noise(&SchedulerConfig::stable_diffusion_v1_5(), x0, noise, &[0, 999])?;
/// assert_eq!(noisy.dims(), [2, 4, 8, 8]);
/// # Ok::<(), svgen_train::TrainError>(())
/// ```
///
/// # Errors
/// [`TrainError::ShapeMismatch`] when `noise` differs in shape from `original` or `timesteps` does not
/// hold one entry per sample; [`TrainError::InvalidArgument`] for a timestep ≥ `num_train_timesteps`.
pub fn add_noise<B: Backend>(
    cfg: &SchedulerConfig,
    original: Tensor<B, 4>,
    noise: Tensor<B, 4>,
    timesteps: &[usize],
) -> Result<Tensor<B, 4>> {
    let (a, b) = forward_coefficients(cfg, &original, &noise, timesteps)?;
    Ok(original * a + noise * b)
}

/// The v-prediction training target `√ᾱ_t · ε − √(1 − ᾱ_t) · x₀` (diffusers' `get_velocity`), per-sample
/// timesteps as in [`add_noise`].
///
/// # Errors
/// As [`add_noise`].
pub fn velocity<B: Backend>(
    cfg: &SchedulerConfig,
    original: Tensor<B, 4>,
    noise: Tensor<B, 4>,
    timesteps: &[usize],
) -> Result<Tensor<B, 4>> {
    let (a, b) = forward_coefficients(cfg, &original, &noise, timesteps)?;
    Ok(noise * a - original * b)
}

/// Per-sample √ᾱ_t and √(1 − ᾱ_t) as `[batch, 1, 1, 1]` tensors on `original`'s device, after
/// validating shapes and timesteps.
fn forward_coefficients<B: Backend>(
    cfg: &SchedulerConfig,
    original: &Tensor<B, 4>,
    noise: &Tensor<B, 4>,
    timesteps: &[usize],
) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
    let (original_dims, device) = (original.dims(), original.device());
    let (a, b) = forward_coefficients_host(cfg, original_dims, noise.dims(), timesteps)?;
    let shape = [timesteps.len(), 1, 1, 1];
    Ok((
        Tensor::from_data(TensorData::new(a, shape), &device),
        Tensor::from_data(TensorData::new(b, shape), &device),
    ))
}

/// Per-sample (√ᾱ_t, √(1 − ᾱ_t)) after validating shapes and timesteps.
fn forward_coefficients_host(
    cfg: &SchedulerConfig,
    original: [usize; 4],
    noise: [usize; 4],
    timesteps: &[usize],
) -> Result<(Vec<f32>, Vec<f32>)> {
    if noise != original {
        return Err(TrainError::ShapeMismatch {
            key: "noise".into(),
            expected: original.to_vec(),
            found: noise.to_vec(),
        });
    }
    if timesteps.len() != original[0] {
        return Err(TrainError::ShapeMismatch {
            key: "timesteps".into(),
            expected: vec![original[0]],
            found: vec![timesteps.len()],
        });
    }
    cfg.validate_common()?;
    if let Some(&t) = timesteps.iter().find(|&&t| t >= cfg.num_train_timesteps) {
        return Err(TrainError::InvalidArgument(format!(
            "timestep {t} out of the training range 0..{}",
            cfg.num_train_timesteps
        )));
    }
    let ac = cfg.alphas_cumprod();
    Ok(timesteps
        .iter()
        .map(|&t| (ac[t].sqrt(), (1.0 - ac[t]).sqrt()))
        .unzip())
}
