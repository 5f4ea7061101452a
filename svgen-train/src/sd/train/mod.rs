//! LoRA fine-tuning of the Stable Diffusion UNet on (image, caption) pairs.
//!
//! Each micro-batch: images resized (shorter side to the resolution) and center-cropped,
//! mapped to `[-1, 1]`; the frozen VAE encodes them and a latent is sampled and multiplied by
//! `scaling_factor`; per sample a random timestep and Gaussian noise are drawn; the latents are
//! noised with the DDPM forward process ([`add_noise`](crate::sd::scheduler::add_noise)); the frozen CLIP text encoder embeds the
//! captions; the UNet (with trainable LoRA adapters on its attention projections) predicts the
//! noise (or `v` for `prediction_type: v_prediction`) and the loss is the mean squared error.
//! Gradients are accumulated over micro-batches, clipped by global norm, and AdamW (shared with
//! the Llama trainer) with warmup + cosine updates the adapters.
//!
//! All randomness (batch order, VAE sampling noise, timesteps, diffusion noise, LoRA dropout)
//! is drawn from host RNGs seeded by `seed` and the data position, so a run resumed from a
//! checkpoint (`checkpoint-N/`: adapter in diffusers format, AdamW moments, position and log)
//! continues bit for bit as if it had never stopped.
//!
//! Data: a folder of images with same-named `.txt` captions ([`ImageCaption::from_folder`]) or
//! `svgen-data` shards, whose positive rows store the PNG and the caption
//! ([`ImageCaption::from_shards`]).
//!
//! ```no_run
//! use svgen_train::sd::lora::UNetLoraConfig;
//! use svgen_train::sd::train::{ImageCaption, SdLoraTrainConfig, SdLoraTrainer, SdTrainingModels};
//! # fn main() -> svgen_train::Result<()> {
//! type B = svgen_train::CpuTrainBackend;
//! let models = SdTrainingModels::<B>::from_pretrained("sd15", &Default::default())?;
//! let lora = UNetLoraConfig { r: 8, lora_alpha: 8.0, ..UNetLoraConfig::default() };
//! let cfg = SdLoraTrainConfig { total_steps: 500, checkpoint_every: 100, ..Default::default() };
//! let data = ImageCaption::load("silhouettes/")?; // images + .txt captions, or shards
//! let mut trainer = SdLoraTrainer::new(models, lora.clone(), cfg, "out")?;
//! trainer.train(&data, None)?; // out/checkpoint-N/pytorch_lora_weights.safetensors, loss_log.csv
//! trainer.unet().save_lora_weights(&lora, "out")?;
//! # Ok(())
//! # }
//! ```

mod data;
mod loss;
mod models;
mod optim;
mod trainer;

pub use data::{preprocess, ImageCaption};
pub use loss::diffusion_loss;
pub use models::{load_text_encoder, SdTrainingModels};
pub use optim::{lora_gradients, LoraAdamW};
pub use trainer::{
    PredictionKind, SdLogEntry, SdLoraTrainConfig, SdLoraTrainer, SdTrainSummary, SdTrainerState,
};
