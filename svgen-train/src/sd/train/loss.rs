//! The denoising objective: MSE between the UNet's prediction and the noise (or velocity).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{Result, TrainError};
use crate::sd::scheduler::{add_noise, velocity, PredictionType, SchedulerConfig};
use crate::sd::unet::UNet2DConditionModel;

/// The noise-prediction loss of one batch: `noisy = add_noise(latents, noise, t)`, target
/// `noise` (epsilon) or `velocity(latents, noise, t)` (v-prediction), MSE (mean over every
/// element) against the UNet's prediction. `latents` are already multiplied by the VAE's
/// `scaling_factor`.
pub fn diffusion_loss<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    scheduler: &SchedulerConfig,
    prediction: PredictionType,
    latents: Tensor<B, 4>,
    noise: Tensor<B, 4>,
    timesteps: &[usize],
    encoder_hidden_states: Tensor<B, 3>,
) -> Result<Tensor<B, 1>> {
    let device = latents.device();
    let target = match prediction {
        PredictionType::Epsilon => noise.clone(),
        PredictionType::VPrediction => {
            velocity(scheduler, latents.clone(), noise.clone(), timesteps)?
        }
        PredictionType::Sample => {
            return Err(TrainError::UnsupportedValue {
                key: "prediction_type".into(),
                value: "\"sample\"".into(),
            })
        }
    };
    let noisy = add_noise(scheduler, latents, noise, timesteps)?;
    let t: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
    let t = Tensor::<B, 1>::from_data(TensorData::new(t, [timesteps.len()]), &device);
    let pred = unet.forward(noisy, t, encoder_hidden_states);
    Ok((pred - target).powi_scalar(2).mean())
}
