//! diffusers' `FlowMatchEulerDiscreteScheduler`: Euler steps of a rectified-flow velocity from
//! noise (σ = 1) to the image (σ = 0), with a static `shift` or resolution-dependent dynamic
//! shifting (`mu`, exponential or linear time shift), `shift_terminal`, Karras or exponential σ
//! spacing and inverted sigmas. The schedule is computed on the host in f64 and stored in f32,
//! as diffusers stores it.
//!
//! ```
//! use svgen_train::flux::scheduler::{FlowMatchEulerScheduler, FlowMatchSchedulerConfig};
//!
//! // FLUX.1-schnell: 4 steps, σ = 1, 0.75, 0.5, 0.25, then 0.
//! let mut s = FlowMatchEulerScheduler::new(FlowMatchSchedulerConfig::default())?;
//! s.set_timesteps(4, Some(&[1.0, 0.75, 0.5, 0.25]), None)?;
//! assert_eq!(s.sigmas(), &[1.0, 0.75, 0.5, 0.25, 0.0]);
//! assert_eq!(s.timesteps()[1], 750.0);
//! # Ok::<(), svgen_train::TrainError>(())
//! ```

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use svgen_eval::hf_config::HfConfig;

use crate::error::{Result, TrainError};

/// Largest `num_train_timesteps` accepted.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;
/// Largest number of inference steps.
pub const MAX_STEPS: usize = 10_000;

/// How dynamic shifting maps σ (`time_shift_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeShift {
    /// `e^μ / (e^μ + (1/σ − 1))`.
    Exponential,
    /// `μ / (μ + (1/σ − 1))`.
    Linear,
}

/// σ spacing after shifting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigmaSpacing {
    /// As shifted.
    Shifted,
    /// `use_karras_sigmas`: Karras et al. (ρ = 7) between the shifted extremes.
    Karras,
    /// `use_exponential_sigmas`: log-uniform between the shifted extremes.
    Exponential,
}

/// `scheduler_config.json` of a FLUX folder (diffusers' defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMatchSchedulerConfig {
    /// `num_train_timesteps` (1000).
    pub num_train_timesteps: usize,
    /// `shift` (1.0; FLUX.1-dev 3.0), used without dynamic shifting.
    pub shift: f64,
    /// `use_dynamic_shifting` (false; FLUX.1-dev true): shift by `mu` from the image size.
    pub use_dynamic_shifting: bool,
    /// `base_shift` (0.5): `mu` at `base_image_seq_len`.
    pub base_shift: f64,
    /// `max_shift` (1.15): `mu` at `max_image_seq_len`.
    pub max_shift: f64,
    /// `base_image_seq_len` (256).
    pub base_image_seq_len: usize,
    /// `max_image_seq_len` (4096).
    pub max_image_seq_len: usize,
    /// `invert_sigmas` (false).
    pub invert_sigmas: bool,
    /// `shift_terminal` (None): stretch the schedule to end at this σ.
    pub shift_terminal: Option<f64>,
    /// `use_karras_sigmas` / `use_exponential_sigmas`.
    pub spacing: SigmaSpacing,
    /// `time_shift_type` (`exponential`).
    pub time_shift: TimeShift,
}

impl Default for FlowMatchSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            shift: 1.0,
            use_dynamic_shifting: false,
            base_shift: 0.5,
            max_shift: 1.15,
            base_image_seq_len: 256,
            max_image_seq_len: 4096,
            invert_sigmas: false,
            shift_terminal: None,
            spacing: SigmaSpacing::Shifted,
            time_shift: TimeShift::Exponential,
        }
    }
}

impl FlowMatchSchedulerConfig {
    /// Reads a `scheduler_config.json`.
    ///
    /// # Errors
    /// I/O and JSON errors; [`TrainError::UnsupportedValue`] naming `_class_name` (anything but
    /// `FlowMatchEulerDiscreteScheduler`) or an option we do not implement
    /// (`use_beta_sigmas`, `stochastic_sampling`, two σ spacings at once, ...).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_hf(&HfConfig::read(path)?)
    }

    /// Parses the JSON object of a `scheduler_config.json`.
    ///
    /// # Errors
    /// As [`FlowMatchSchedulerConfig::from_file`].
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        Self::from_hf(&HfConfig::from_value(
            value.clone(),
            "scheduler_config.json",
        )?)
    }

    fn from_hf(c: &HfConfig) -> Result<Self> {
        if let Some(name) = c.get::<String>("_class_name")? {
            if name != "FlowMatchEulerDiscreteScheduler" {
                return Err(TrainError::UnknownScheduler(name));
            }
        }
        c.require_false(&["use_beta_sigmas", "stochastic_sampling"])?;
        let d = Self::default();
        let karras = c.get_or("use_karras_sigmas", false)?;
        let exponential = c.get_or("use_exponential_sigmas", false)?;
        let spacing = match (karras, exponential) {
            (false, false) => SigmaSpacing::Shifted,
            (true, false) => SigmaSpacing::Karras,
            (false, true) => SigmaSpacing::Exponential,
            (true, true) => {
                return Err(c
                    .unsupported(
                        "use_exponential_sigmas",
                        "only one of use_karras_sigmas and use_exponential_sigmas",
                    )
                    .into())
            }
        };
        let cfg = Self {
            num_train_timesteps: c.get_or("num_train_timesteps", d.num_train_timesteps)?,
            shift: c.get_or("shift", d.shift)?,
            use_dynamic_shifting: c.get_or("use_dynamic_shifting", false)?,
            base_shift: c.get_or("base_shift", d.base_shift)?,
            max_shift: c.get_or("max_shift", d.max_shift)?,
            base_image_seq_len: c.get_or("base_image_seq_len", d.base_image_seq_len)?,
            max_image_seq_len: c.get_or("max_image_seq_len", d.max_image_seq_len)?,
            invert_sigmas: c.get_or("invert_sigmas", false)?,
            shift_terminal: c.get("shift_terminal")?,
            spacing,
            time_shift: c.choice(
                "time_shift_type",
                TimeShift::Exponential,
                &[
                    ("exponential", TimeShift::Exponential),
                    ("linear", TimeShift::Linear),
                ],
            )?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`TrainError::UnsupportedValue`] naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, value: String| {
            Err(TrainError::UnsupportedValue {
                key: key.into(),
                value,
            })
        };
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&self.num_train_timesteps) {
            return bad("num_train_timesteps", self.num_train_timesteps.to_string());
        }
        if !(self.shift.is_finite() && self.shift > 0.0) {
            return bad("shift", self.shift.to_string());
        }
        if self.base_image_seq_len >= self.max_image_seq_len {
            return bad(
                "max_image_seq_len",
                format!(
                    "{} (must exceed base_image_seq_len {})",
                    self.max_image_seq_len, self.base_image_seq_len
                ),
            );
        }
        for (key, v) in [
            ("base_shift", self.base_shift),
            ("max_shift", self.max_shift),
        ] {
            if !v.is_finite() {
                return bad(key, v.to_string());
            }
        }
        if let Some(t) = self.shift_terminal {
            if !(0.0..1.0).contains(&t) || t == 0.0 {
                return bad("shift_terminal", t.to_string());
            }
        }
        Ok(())
    }

    /// diffusers' `calculate_shift`: `mu` linear in the image sequence length (packed latent
    /// tokens) between `(base_image_seq_len, base_shift)` and `(max_image_seq_len, max_shift)`.
    pub fn mu(&self, image_seq_len: usize) -> f64 {
        let m = (self.max_shift - self.base_shift)
            / (self.max_image_seq_len as f64 - self.base_image_seq_len as f64);
        let b = self.base_shift - m * self.base_image_seq_len as f64;
        image_seq_len as f64 * m + b
    }
}

/// A configured `FlowMatchEulerDiscreteScheduler`.
#[derive(Debug, Clone)]
pub struct FlowMatchEulerScheduler {
    config: FlowMatchSchedulerConfig,
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    sigma_min: f64,
    sigma_max: f64,
}

impl FlowMatchEulerScheduler {
    /// A scheduler over the training range (call [`FlowMatchEulerScheduler::set_timesteps`]).
    ///
    /// # Errors
    /// As [`FlowMatchSchedulerConfig::validate`].
    pub fn new(config: FlowMatchSchedulerConfig) -> Result<Self> {
        config.validate()?;
        let n = config.num_train_timesteps;
        // linspace(1, N, N) reversed, in f32 like diffusers.
        let mut sigmas: Vec<f32> = (0..n).map(|i| (n - i) as f32 / n as f32).collect();
        if !config.use_dynamic_shifting {
            let s = config.shift as f32;
            for x in &mut sigmas {
                *x = s * *x / (1.0 + (s - 1.0) * *x);
            }
        }
        let sigma_max = f64::from(sigmas[0]);
        let sigma_min = f64::from(sigmas[n - 1]);
        Ok(Self {
            timesteps: sigmas.iter().map(|s| s * n as f32).collect(),
            sigmas,
            sigma_min,
            sigma_max,
            config,
        })
    }

    /// Reads `scheduler_dir/scheduler_config.json`.
    ///
    /// # Errors
    /// [`TrainError::MissingFolder`] naming the file; as [`FlowMatchSchedulerConfig::from_file`].
    pub fn from_pretrained(scheduler_dir: impl AsRef<Path>) -> Result<Self> {
        let path =
            crate::diffusion::folder::require(scheduler_dir.as_ref(), "scheduler_config.json")?;
        Self::new(FlowMatchSchedulerConfig::from_file(path)?)
    }

    /// The configuration.
    pub fn config(&self) -> &FlowMatchSchedulerConfig {
        &self.config
    }

    /// The timesteps of the inference schedule (`σ · num_train_timesteps`).
    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    /// The noise levels, one per step plus the final one (0, or 1 with inverted sigmas).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// diffusers' `set_timesteps(num_inference_steps, sigmas=..., mu=...)`: `sigmas` are the
    /// pipeline's σ before shifting (FLUX passes `linspace(1, 1/n, n)`); without them σ spans the
    /// training range. `mu` is required with dynamic shifting (see [`FlowMatchSchedulerConfig::mu`]).
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] for 0 or too many steps, `sigmas` of another length or
    /// outside `(0, 1]`, a missing or non-finite `mu`.
    pub fn set_timesteps(
        &mut self,
        steps: usize,
        sigmas: Option<&[f64]>,
        mu: Option<f64>,
    ) -> Result<()> {
        let bad = |m: String| Err(TrainError::InvalidArgument(m));
        if steps == 0 || steps > MAX_STEPS {
            return bad(format!("steps must be in 1..={MAX_STEPS}, got {steps}"));
        }
        let c = &self.config;
        let n_train = c.num_train_timesteps as f64;
        let mut s: Vec<f64> = match sigmas {
            Some(given) => {
                if given.len() != steps {
                    return bad(format!("{} sigmas for {steps} steps", given.len()));
                }
                if let Some(x) = given.iter().find(|x| !(**x > 0.0 && **x <= 1.0)) {
                    return bad(format!("sigma {x} outside (0, 1]"));
                }
                // diffusers casts them to f32.
                given.iter().map(|&x| f64::from(x as f32)).collect()
            }
            None => {
                let (hi, lo) = (self.sigma_max * n_train, self.sigma_min * n_train);
                linspace(hi, lo, steps)
                    .into_iter()
                    .map(|t| t / n_train)
                    .collect()
            }
        };
        if c.use_dynamic_shifting {
            let mu = match mu {
                Some(m) if m.is_finite() => m,
                Some(m) => return bad(format!("mu {m} is not finite")),
                None => return bad(
                    "`mu` is required with use_dynamic_shifting (see FlowMatchSchedulerConfig::mu)"
                        .into(),
                ),
            };
            let k = match c.time_shift {
                TimeShift::Exponential => mu.exp(),
                TimeShift::Linear => mu,
            };
            for x in &mut s {
                *x = k / (k + (1.0 / *x - 1.0));
            }
        } else {
            let sh = c.shift;
            for x in &mut s {
                *x = sh * *x / (1.0 + (sh - 1.0) * *x);
            }
        }
        if let Some(terminal) = c.shift_terminal {
            let last = 1.0 - s[steps - 1];
            let scale = last / (1.0 - terminal);
            for x in &mut s {
                *x = 1.0 - (1.0 - *x) / scale;
            }
        }
        let (lo, hi) = (s[steps - 1], s[0]);
        match c.spacing {
            SigmaSpacing::Shifted => {}
            SigmaSpacing::Karras => {
                let rho = 7.0;
                let (a, b) = (hi.powf(1.0 / rho), lo.powf(1.0 / rho));
                s = linspace(0.0, 1.0, steps)
                    .into_iter()
                    .map(|r| (a + r * (b - a)).powf(rho))
                    .collect();
            }
            SigmaSpacing::Exponential => {
                s = linspace(hi.ln(), lo.ln(), steps)
                    .into_iter()
                    .map(f64::exp)
                    .collect();
            }
        }
        let mut sigmas: Vec<f32> = s.iter().map(|&x| x as f32).collect();
        if c.invert_sigmas {
            for x in &mut sigmas {
                *x = 1.0 - *x;
            }
        }
        self.timesteps = sigmas.iter().map(|&x| x * n_train as f32).collect();
        sigmas.push(if c.invert_sigmas { 1.0 } else { 0.0 });
        self.sigmas = sigmas;
        Ok(())
    }

    /// One Euler step from step `i`: `sample + (σ_{i+1} − σ_i) · velocity`, in f32.
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] for a step outside the schedule or shapes that differ.
    pub fn step<B: Backend, const D: usize>(
        &self,
        velocity: Tensor<B, D>,
        i: usize,
        sample: Tensor<B, D>,
    ) -> Result<Tensor<B, D>> {
        if i + 1 >= self.sigmas.len() {
            return Err(TrainError::InvalidArgument(format!(
                "step {i} is outside the {}-step schedule",
                self.timesteps.len()
            )));
        }
        if velocity.dims() != sample.dims() {
            return Err(TrainError::InvalidArgument(format!(
                "velocity {:?} and sample {:?} differ in shape",
                velocity.dims(),
                sample.dims()
            )));
        }
        let dt = self.sigmas[i + 1] - self.sigmas[i];
        Ok(sample.cast(DType::F32) + velocity.cast(DType::F32).mul_scalar(dt))
    }

    /// The flow-matching forward process at step `i` (`scale_noise`): `σ_i · noise + (1 − σ_i) · sample`.
    ///
    /// # Errors
    /// As [`FlowMatchEulerScheduler::step`].
    pub fn scale_noise<B: Backend, const D: usize>(
        &self,
        sample: Tensor<B, D>,
        i: usize,
        noise: Tensor<B, D>,
    ) -> Result<Tensor<B, D>> {
        let Some(&sigma) = self.sigmas.get(i) else {
            return Err(TrainError::InvalidArgument(format!(
                "step {i} is outside the schedule"
            )));
        };
        if noise.dims() != sample.dims() {
            return Err(TrainError::InvalidArgument(format!(
                "noise {:?} and sample {:?} differ in shape",
                noise.dims(),
                sample.dims()
            )));
        }
        Ok(noise.mul_scalar(sigma) + sample.mul_scalar(1.0 - sigma))
    }
}

/// `np.linspace(a, b, n)`.
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f64;
    (0..n)
        .map(|i| if i == n - 1 { b } else { a + step * i as f64 })
        .collect()
}
