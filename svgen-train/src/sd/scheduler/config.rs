//! The scheduler configuration read from diffusers' `scheduler_config.json`, with diffusers'
//! defaults and the options we refuse by name.

use std::path::Path;

use serde_json::Value;
use svgen_eval::hf_config::HfConfig;

use crate::error::{Result, TrainError};

/// Largest `num_train_timesteps` accepted (diffusion models use 1000; the bound keeps a hostile config
/// from allocating unbounded schedules).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// How the training betas are laid out (`beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    /// `"linear"`: betas linear from `beta_start` to `beta_end`.
    Linear,
    /// `"scaled_linear"`: √betas linear (Stable Diffusion).
    ScaledLinear,
    /// `"squaredcos_cap_v2"`: the cosine schedule of Nichol & Dhariwal, betas capped at 0.999.
    SquaredCosCapV2,
}

/// What the UNet predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// `"epsilon"`: the added noise (SD 1.x).
    Epsilon,
    /// `"v_prediction"`: the velocity √ᾱ·ε − √(1−ᾱ)·x₀ (SD 2.x 768 px).
    VPrediction,
    /// `"sample"`: the clean sample x₀ (not supported by Euler ancestral, as in diffusers).
    Sample,
}

/// How inference timesteps are spread over the training range (`timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// `"leading"`: multiples of ⌊T/n⌋ plus `steps_offset`.
    Leading,
    /// `"trailing"`: counted down from T − 1 in steps of T/n.
    Trailing,
    /// `"linspace"`: evenly from 0 to T − 1.
    Linspace,
}

/// Scheduler configuration: the fields of diffusers' `scheduler_config.json` that our schedulers use.
///
/// `None` in the optional fields means "the default of the scheduler it drives" (they differ between
/// diffusers' scheduler classes). Keys we do not know are ignored, like diffusers' `from_config` does.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// `_class_name`, if the file had one.
    pub class_name: Option<String>,
    /// `num_train_timesteps` (1000).
    pub num_train_timesteps: usize,
    /// `beta_start` (0.0001; SD1.5 uses 0.00085).
    pub beta_start: f64,
    /// `beta_end` (0.02; SD1.5 uses 0.012).
    pub beta_end: f64,
    /// `beta_schedule` (`linear`; SD uses `scaled_linear`).
    pub beta_schedule: BetaSchedule,
    /// `trained_betas`: explicit betas overriding the schedule.
    pub trained_betas: Option<Vec<f64>>,
    /// `prediction_type` (`epsilon`).
    pub prediction_type: PredictionType,
    /// `timestep_spacing` (DDIM: `leading`; Euler, Euler a, DPM-Solver: `linspace`).
    pub timestep_spacing: Option<TimestepSpacing>,
    /// `steps_offset` (0; SD1.5 uses 1), added to "leading" timesteps.
    pub steps_offset: usize,
    /// `set_alpha_to_one` (DDIM only; default true): ᾱ before the first training step is 1, otherwise ᾱ₀.
    pub set_alpha_to_one: Option<bool>,
    /// `clip_sample` (DDIM only; default true): clamp the predicted x₀ to ±`clip_sample_range`.
    pub clip_sample: Option<bool>,
    /// `clip_sample_range` (1.0).
    pub clip_sample_range: f64,
    /// `rescale_betas_zero_snr` (false): rescale betas to zero terminal SNR (Lin et al. 2023).
    pub rescale_betas_zero_snr: bool,
    /// `interpolation_type` of Euler (`linear`; only `linear` is supported).
    pub interpolation_type: String,
    /// `final_sigmas_type` of Euler / DPM-Solver (`zero` or `sigma_min`).
    pub final_sigmas_type: String,
    /// `timestep_type` of Euler (`discrete`; only `discrete` is supported).
    pub timestep_type: String,
    /// `solver_order` of DPM-Solver (2; 1 and 2 are supported).
    pub solver_order: usize,
    /// `algorithm_type` of DPM-Solver (`dpmsolver++`; the only one supported).
    pub algorithm_type: String,
    /// `solver_type` of DPM-Solver (`midpoint` or `heun`).
    pub solver_type: String,
    /// `lower_order_final` of DPM-Solver (true): first/second-order last steps when fewer than 15 steps.
    pub lower_order_final: bool,
    /// `euler_at_final` of DPM-Solver (false).
    pub euler_at_final: bool,
    /// `lambda_min_clipped` of DPM-Solver (−∞).
    pub lambda_min_clipped: f64,
    /// `thresholding` (false; dynamic thresholding is not supported: it is meant for pixel-space models).
    pub thresholding: bool,
    /// `use_karras_sigmas` of Euler / DPM-Solver (false): noise levels spaced as in Karras et al.
    /// (2022), ρ = 7 ("DPM++ 2M Karras").
    pub use_karras_sigmas: bool,
    /// `sigma_min` of Euler (None = the schedule's smallest σ), used by Karras sigmas.
    pub sigma_min: Option<f64>,
    /// `sigma_max` of Euler (None = the schedule's largest σ), used by Karras sigmas.
    pub sigma_max: Option<f64>,
    /// Sigma-schedule options we do not implement that are switched on in the file
    /// (`use_exponential_sigmas`, `use_beta_sigmas`, `use_lu_lambdas`, `use_flow_sigmas`); Euler and
    /// DPM-Solver reject them.
    pub unsupported_sigma_options: Vec<String>,
    /// `variance_type` of DPM-Solver (None; `learned`/`learned_range` are not supported).
    pub variance_type: Option<String>,
}

impl Default for SchedulerConfig {
    /// diffusers' constructor defaults.
    fn default() -> Self {
        Self {
            class_name: None,
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: None,
            steps_offset: 0,
            set_alpha_to_one: None,
            clip_sample: None,
            clip_sample_range: 1.0,
            rescale_betas_zero_snr: false,
            interpolation_type: "linear".into(),
            final_sigmas_type: "zero".into(),
            timestep_type: "discrete".into(),
            solver_order: 2,
            algorithm_type: "dpmsolver++".into(),
            solver_type: "midpoint".into(),
            lower_order_final: true,
            euler_at_final: false,
            lambda_min_clipped: f64::NEG_INFINITY,
            thresholding: false,
            use_karras_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            unsupported_sigma_options: Vec::new(),
            variance_type: None,
        }
    }
}

impl SchedulerConfig {
    /// Stable Diffusion 1.5's scheduler config (`scaled_linear` 0.00085–0.012, 1000 steps,
    /// `steps_offset` 1, `set_alpha_to_one` false, `clip_sample` false, ε-prediction).
    pub fn stable_diffusion_v1_5() -> Self {
        Self {
            class_name: Some("PNDMScheduler".into()),
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            steps_offset: 1,
            set_alpha_to_one: Some(false),
            clip_sample: Some(false),
            ..Self::default()
        }
    }

    /// Reads a `scheduler_config.json`.
    ///
    /// # Errors
    /// I/O and JSON errors, and [`TrainError::UnsupportedValue`] naming a key whose value we cannot use
    /// (e.g. `beta_schedule: "sigmoid"`, `prediction_type: "flow"`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_config(&HfConfig::read(path)?)
    }

    /// Parses the JSON object of a `scheduler_config.json`.
    ///
    /// # Errors
    /// As [`SchedulerConfig::from_file`]; a non-object is a [`TrainError::Json`].
    pub fn from_json(value: &Value) -> Result<Self> {
        Self::from_config(&HfConfig::from_value(
            value.clone(),
            "scheduler_config.json",
        )?)
    }

    fn from_config(c: &HfConfig) -> Result<Self> {
        let d = Self::default();
        let beta_schedule = c.choice(
            "beta_schedule",
            BetaSchedule::Linear,
            &[
                ("linear", BetaSchedule::Linear),
                ("scaled_linear", BetaSchedule::ScaledLinear),
                ("squaredcos_cap_v2", BetaSchedule::SquaredCosCapV2),
            ],
        )?;
        let prediction_type = c.choice(
            "prediction_type",
            PredictionType::Epsilon,
            &[
                ("epsilon", PredictionType::Epsilon),
                ("v_prediction", PredictionType::VPrediction),
                ("sample", PredictionType::Sample),
            ],
        )?;
        let timestep_spacing = c.choice(
            "timestep_spacing",
            None,
            &[
                ("leading", Some(TimestepSpacing::Leading)),
                ("trailing", Some(TimestepSpacing::Trailing)),
                ("linspace", Some(TimestepSpacing::Linspace)),
            ],
        )?;
        let mut unsupported_sigma_options = Vec::new();
        for key in [
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_lu_lambdas",
            "use_flow_sigmas",
        ] {
            if c.get::<bool>(key)? == Some(true) {
                unsupported_sigma_options.push(key.to_string());
            }
        }
        let cfg = Self {
            class_name: c.get("_class_name")?,
            num_train_timesteps: c.get_or("num_train_timesteps", d.num_train_timesteps)?,
            beta_start: c.get_or("beta_start", d.beta_start)?,
            beta_end: c.get_or("beta_end", d.beta_end)?,
            beta_schedule,
            trained_betas: c.get("trained_betas")?,
            prediction_type,
            timestep_spacing,
            steps_offset: c.get_or("steps_offset", d.steps_offset)?,
            set_alpha_to_one: c.get("set_alpha_to_one")?,
            clip_sample: c.get("clip_sample")?,
            clip_sample_range: c.get_or("clip_sample_range", d.clip_sample_range)?,
            rescale_betas_zero_snr: c.get_or("rescale_betas_zero_snr", false)?,
            interpolation_type: c.get_or("interpolation_type", d.interpolation_type)?,
            final_sigmas_type: c.get_or("final_sigmas_type", d.final_sigmas_type)?,
            timestep_type: c.get_or("timestep_type", d.timestep_type)?,
            solver_order: c.get_or("solver_order", d.solver_order)?,
            algorithm_type: c.get_or("algorithm_type", d.algorithm_type)?,
            solver_type: c.get_or("solver_type", d.solver_type)?,
            lower_order_final: c.get_or("lower_order_final", d.lower_order_final)?,
            euler_at_final: c.get_or("euler_at_final", d.euler_at_final)?,
            lambda_min_clipped: c.get_or("lambda_min_clipped", d.lambda_min_clipped)?,
            thresholding: c.get_or("thresholding", false)?,
            use_karras_sigmas: c.get_or("use_karras_sigmas", false)?,
            sigma_min: c.get("sigma_min")?,
            sigma_max: c.get("sigma_max")?,
            unsupported_sigma_options,
            variance_type: c.get("variance_type")?,
        };
        cfg.validate_common()?;
        Ok(cfg)
    }

    /// The checks every scheduler and the forward process need: the training range, betas and
    /// `clip_sample_range`.
    pub(super) fn validate_common(&self) -> Result<()> {
        let bad = |key: &str, value: String| TrainError::UnsupportedValue {
            key: key.into(),
            value,
        };
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&self.num_train_timesteps) {
            return Err(bad(
                "num_train_timesteps",
                self.num_train_timesteps.to_string(),
            ));
        }
        if let Some(betas) = &self.trained_betas {
            if betas.len() != self.num_train_timesteps {
                return Err(TrainError::ShapeMismatch {
                    key: "trained_betas".into(),
                    expected: vec![self.num_train_timesteps],
                    found: vec![betas.len()],
                });
            }
            if let Some(b) = betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
                return Err(bad("trained_betas", b.to_string()));
            }
        } else {
            for (key, v) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
                if !(0.0..1.0).contains(&v) {
                    return Err(bad(key, v.to_string()));
                }
            }
        }
        if self.clip_sample_range.is_nan() || self.clip_sample_range <= 0.0 {
            return Err(bad("clip_sample_range", self.clip_sample_range.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd::scheduler::SchedulerKind;

    #[test]
    fn unknown_values_are_named() {
        let err = SchedulerConfig::from_json(&serde_json::json!({"beta_schedule": "sigmoid"}))
            .unwrap_err();
        assert!(err.to_string().contains("sigmoid"), "{err}");
        let err = SchedulerKind::from_class_name("PNDMScheduler").unwrap_err();
        assert!(err.to_string().contains("PNDMScheduler"), "{err}");
    }
}
