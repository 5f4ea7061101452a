//! Noise schedulers for Stable Diffusion, configured from diffusers' `scheduler_config.json`:
//! DDIM, Euler (`EulerDiscreteScheduler`), Euler ancestral (`EulerAncestralDiscreteScheduler`) and
//! DPM-Solver++ 2M (`DPMSolverMultistepScheduler` with `algorithm_type = "dpmsolver++"`,
//! `solver_order = 2`), plus the DDPM forward process ([`add_noise`]) used for training.
//!
//! The noise schedule (betas, ᾱ = `alphas_cumprod`, sigmas) is computed on the host in `f32` in the same
//! order of operations as diffusers (which builds it with `torch.float32` tensors), so that timesteps and
//! step outputs agree with diffusers to `f32` rounding. The per-step coefficients are host scalars; the
//! tensor work is a handful of element-wise ops on the backend.
//!
//! All SD 1.x/2.x scheduler configs share the beta fields, so any of them (PNDM, LMS, DDPM, ...) can drive
//! any of our schedulers with an explicit [`SchedulerKind`], as diffusers' `Scheduler.from_config` does.
//! Keys missing from the file take the defaults of the *chosen* scheduler (e.g. `timestep_spacing` is
//! `"leading"` for DDIM but `"linspace"` for Euler and DPM-Solver).
//!
//! ```
//! use svgen_train::sd::scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
//!
//! let cfg = SchedulerConfig::stable_diffusion_v1_5();
//! let mut ddim = Scheduler::from_config(SchedulerKind::Ddim, cfg)?;
//! ddim.set_timesteps(10)?;
//! assert_eq!(ddim.timesteps()[0], 901.0); // "leading" spacing + steps_offset 1
//! # Ok::<(), svgen_train::TrainError>(())
//! ```
//!
//! | module | contents |
//! |---|---|
//! | `config` | [`SchedulerConfig`] (`scheduler_config.json`); [`SchedulerKind`] is shared with FLUX |
//! | `betas` | the training betas and ᾱ |
//! | `timesteps`, `karras` | inference timestep spacings, Karras sigmas |
//! | `ddim`, `euler`, `dpm_solver` | the samplers' updates |
//! | `noise` | [`add_noise`], [`velocity`] (training) |

use std::any::Any;
use std::fmt;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::{Result, TrainError};

mod betas;
mod config;
mod ddim;
mod dpm_solver;
mod euler;
mod karras;
mod noise;
mod timesteps;

pub use crate::diffusion::scheduler_kind::SchedulerKind;
pub use config::{
    BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing, MAX_TRAIN_TIMESTEPS,
};
pub use noise::{add_noise, velocity};
use timesteps::{round_even, spaced_timesteps};

/// The Stable Diffusion samplers (the [`SchedulerKind`]s this module runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sampler {
    Ddim,
    Euler,
    EulerAncestral,
    DpmSolverMultistep,
}

impl Sampler {
    /// The sampler of `kind`; FLUX's flow-matching Euler is refused by name.
    fn of(kind: SchedulerKind) -> Result<Self> {
        match kind {
            SchedulerKind::Ddim => Ok(Self::Ddim),
            SchedulerKind::Euler => Ok(Self::Euler),
            SchedulerKind::EulerAncestral => Ok(Self::EulerAncestral),
            SchedulerKind::DpmSolverMultistep => Ok(Self::DpmSolverMultistep),
            SchedulerKind::FlowMatchEuler => Err(TrainError::UnsupportedValue {
                key: "scheduler".into(),
                value: format!(
                    "{} (a flow-matching scheduler for FLUX; Stable Diffusion runs DDIM, Euler, \
                     Euler ancestral or DPM-Solver++ 2M)",
                    kind.class_name()
                ),
            }),
        }
    }

    fn kind(self) -> SchedulerKind {
        match self {
            Self::Ddim => SchedulerKind::Ddim,
            Self::Euler => SchedulerKind::Euler,
            Self::EulerAncestral => SchedulerKind::EulerAncestral,
            Self::DpmSolverMultistep => SchedulerKind::DpmSolverMultistep,
        }
    }
}

/// A configured noise scheduler: timesteps, noise levels and the denoising update of one sampler.
///
/// Call [`Scheduler::set_timesteps`] first, then for `i in 0..timesteps().len()`: run the UNet on
/// `scale_model_input(latents, i)` at timestep `timesteps()[i]` and feed its output to
/// [`Scheduler::step`]. DPM-Solver++ 2M keeps the previous step's prediction, so its steps must be run in
/// order (step 0 restarts it).
pub struct Scheduler {
    kind: Sampler,
    config: SchedulerConfig,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    timesteps: Vec<f64>,
    /// σ per inference step plus the final σ (Euler, Euler a, DPM-Solver); empty for DDIM.
    sigmas: Vec<f32>,
    num_inference_steps: Option<usize>,
    /// DDIM: the distance to the previous timestep, `num_train_timesteps / requested steps`.
    ddim_step: usize,
    /// DPM-Solver: the previous step's x₀ prediction (a `Tensor<B, 4>` of the caller's backend).
    previous_x0: Option<Box<dyn Any + Send>>,
    lower_order_nums: usize,
    next_step: usize,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("kind", &self.kind)
            .field("timesteps", &self.timesteps)
            .field("sigmas", &self.sigmas)
            .field("num_inference_steps", &self.num_inference_steps)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Builds a scheduler of `kind` from `cfg`.
    ///
    /// # Errors
    /// [`TrainError::UnsupportedValue`] naming an option the chosen sampler does not implement
    /// (e.g. `algorithm_type: "sde-dpmsolver++"`, `solver_order: 3`, `use_exponential_sigmas: true`,
    /// `thresholding: true`, `prediction_type: "sample"` with Euler ancestral).
    pub fn from_config(kind: SchedulerKind, cfg: SchedulerConfig) -> Result<Self> {
        let kind = Sampler::of(kind)?;
        cfg.validate_common()?;
        let bad = |key: &str, value: &str| TrainError::UnsupportedValue {
            key: key.into(),
            value: format!("\"{value}\""),
        };
        if cfg.thresholding && matches!(kind, Sampler::Ddim | Sampler::DpmSolverMultistep) {
            return Err(TrainError::UnsupportedValue {
                key: "thresholding".into(),
                value: "true".into(),
            });
        }
        if matches!(kind, Sampler::Euler | Sampler::DpmSolverMultistep) {
            if let Some(opt) = cfg.unsupported_sigma_options.first() {
                return Err(TrainError::UnsupportedValue {
                    key: opt.clone(),
                    value: "true".into(),
                });
            }
            if !matches!(cfg.final_sigmas_type.as_str(), "zero" | "sigma_min") {
                return Err(bad("final_sigmas_type", &cfg.final_sigmas_type));
            }
        }
        match kind {
            Sampler::Euler => {
                if cfg.interpolation_type != "linear" {
                    return Err(bad("interpolation_type", &cfg.interpolation_type));
                }
                if cfg.timestep_type != "discrete" {
                    return Err(bad("timestep_type", &cfg.timestep_type));
                }
            }
            Sampler::EulerAncestral => {
                if cfg.prediction_type == PredictionType::Sample {
                    return Err(bad("prediction_type", "sample"));
                }
            }
            Sampler::DpmSolverMultistep => {
                if cfg.algorithm_type != "dpmsolver++" {
                    return Err(bad("algorithm_type", &cfg.algorithm_type));
                }
                if !matches!(cfg.solver_type.as_str(), "midpoint" | "heun") {
                    return Err(bad("solver_type", &cfg.solver_type));
                }
                if !(1..=2).contains(&cfg.solver_order) {
                    return Err(TrainError::UnsupportedValue {
                        key: "solver_order".into(),
                        value: cfg.solver_order.to_string(),
                    });
                }
                if let Some(v) = cfg.variance_type.as_deref() {
                    if v == "learned" || v == "learned_range" {
                        return Err(bad("variance_type", v));
                    }
                }
            }
            Sampler::Ddim => {}
        }
        let mut alphas_cumprod = cfg.alphas_cumprod();
        if cfg.rescale_betas_zero_snr && kind != Sampler::Ddim {
            // diffusers' sigma schedulers avoid an infinite σ at the last training step.
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        let set_alpha_to_one = cfg.set_alpha_to_one.unwrap_or(true);
        let final_alpha_cumprod = if set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let t = cfg.num_train_timesteps;
        let mut s = Self {
            kind,
            config: cfg,
            final_alpha_cumprod,
            timesteps: (0..t).rev().map(|x| x as f64).collect(),
            sigmas: Vec::new(),
            alphas_cumprod,
            num_inference_steps: None,
            ddim_step: 1,
            previous_x0: None,
            lower_order_nums: 0,
            next_step: 0,
        };
        if kind != Sampler::Ddim {
            let mut sigmas: Vec<f32> = s.training_sigmas().into_iter().rev().collect();
            sigmas.push(0.0);
            s.sigmas = sigmas;
        }
        Ok(s)
    }

    /// Reads `scheduler_dir/scheduler_config.json`. With `kind_override` the file's `_class_name` only
    /// supplies the schedule (any SD scheduler config works); without it the class must be one of the
    /// four implemented ones.
    ///
    /// # Errors
    /// [`TrainError::MissingFolder`] when the folder or its config is absent,
    /// [`TrainError::UnknownScheduler`] naming an unimplemented `_class_name` (without override), and
    /// the errors of [`SchedulerConfig::from_file`] and [`Scheduler::from_config`].
    pub fn from_pretrained(
        scheduler_dir: impl AsRef<Path>,
        kind_override: Option<SchedulerKind>,
    ) -> Result<Self> {
        let dir = scheduler_dir.as_ref();
        let file = dir.join("scheduler_config.json");
        if !file.is_file() {
            return Err(TrainError::MissingFolder {
                name: "scheduler_config.json".into(),
                path: dir.to_path_buf(),
            });
        }
        let cfg = SchedulerConfig::from_file(&file)?;
        let kind = match kind_override {
            Some(k) => k,
            None => match cfg.class_name.as_deref() {
                Some(name) => SchedulerKind::from_class_name(name)?,
                None => return Err(TrainError::UnknownScheduler("(no _class_name)".into())),
            },
        };
        Self::from_config(kind, cfg)
    }

    /// The sampler.
    pub fn kind(&self) -> SchedulerKind {
        self.kind.kind()
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// ᾱ for every training timestep (`f32`, as diffusers).
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// The number of inference steps set by [`Scheduler::set_timesteps`].
    pub fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    /// The UNet timestep of every inference step, from noisiest to cleanest (fractional for Euler with
    /// `linspace` spacing).
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// σ of every inference step followed by the final σ (Euler, Euler a, DPM-Solver); empty for DDIM.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn training_sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect()
    }

    fn spacing(&self) -> TimestepSpacing {
        self.config.timestep_spacing.unwrap_or(match self.kind {
            Sampler::Ddim => TimestepSpacing::Leading,
            _ => TimestepSpacing::Linspace,
        })
    }

    /// Chooses `n` inference steps: computes the timesteps (and sigmas) and resets the sampler state.
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] when `n` is 0 or above `num_train_timesteps`.
    pub fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let t_train = self.config.num_train_timesteps;
        if n == 0 || n > t_train {
            return Err(TrainError::InvalidArgument(format!(
                "num_inference_steps must be in 1..={t_train}, got {n}"
            )));
        }
        let offset = self.config.steps_offset as f64;
        let spacing = self.spacing();
        let tf = t_train as f64;
        self.timesteps = match self.kind {
            // DDIM rounds the linspace timesteps; Euler keeps them (as float32).
            Sampler::Ddim => spaced_timesteps(spacing, n, t_train, offset, round_even),
            Sampler::Euler | Sampler::EulerAncestral => {
                self.euler_timesteps(spacing, n, t_train, offset)
            }
            Sampler::DpmSolverMultistep => self.dpm_timesteps(spacing, n, t_train, offset)?,
        };
        if let Some(bad) = self.timesteps.iter().find(|&&t| t < 0.0 || t >= tf) {
            return Err(TrainError::InvalidArgument(format!(
                "timestep {bad} out of the training range 0..{t_train} (steps_offset {} with {n} steps)",
                self.config.steps_offset
            )));
        }
        self.num_inference_steps = Some(self.timesteps.len());
        self.ddim_step = t_train / n;
        self.previous_x0 = None;
        self.lower_order_nums = 0;
        self.next_step = 0;
        Ok(())
    }

    /// The standard deviation of the initial latent noise: 1 for DDIM and DPM-Solver, σ_max (or
    /// √(σ_max² + 1) with `leading` spacing) for the Euler samplers.
    pub fn init_noise_sigma(&self) -> f64 {
        match self.kind {
            Sampler::Ddim | Sampler::DpmSolverMultistep => 1.0,
            Sampler::Euler | Sampler::EulerAncestral => {
                let max = self.sigmas.iter().copied().fold(0.0f32, f32::max);
                match self.spacing() {
                    TimestepSpacing::Linspace | TimestepSpacing::Trailing => f64::from(max),
                    TimestepSpacing::Leading => f64::from((max * max + 1.0).sqrt()),
                }
            }
        }
    }

    fn check_index(&self, step_index: usize) -> Result<usize> {
        let n = self.num_inference_steps.ok_or_else(|| {
            TrainError::InvalidArgument("call Scheduler::set_timesteps before stepping".into())
        })?;
        if step_index >= n {
            return Err(TrainError::InvalidArgument(format!(
                "step index {step_index} out of range for {n} inference steps"
            )));
        }
        Ok(n)
    }

    /// Scales the latents before the UNet call of step `step_index`: `x / √(σ² + 1)` for the Euler
    /// samplers, the identity for DDIM and DPM-Solver.
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] before [`Scheduler::set_timesteps`] or for an index out of range.
    pub fn scale_model_input<B: Backend>(
        &self,
        sample: Tensor<B, 4>,
        step_index: usize,
    ) -> Result<Tensor<B, 4>> {
        self.check_index(step_index)?;
        Ok(match self.kind {
            Sampler::Euler | Sampler::EulerAncestral => {
                let sigma = self.sigmas[step_index];
                sample.div_scalar((sigma * sigma + 1.0).sqrt())
            }
            _ => sample,
        })
    }

    /// One denoising step: from the UNet output at step `step_index` and the current latents, the
    /// latents of the next (less noisy) step. `noise` (standard normal, the latents' shape) is required
    /// by Euler ancestral and ignored by the others.
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] before [`Scheduler::set_timesteps`], for an index out of range, for
    /// DPM-Solver steps out of order, or for Euler ancestral without noise;
    /// [`TrainError::ShapeMismatch`] when `model_output`/`noise` do not have the sample's shape.
    pub fn step<B: Backend>(
        &mut self,
        model_output: Tensor<B, 4>,
        step_index: usize,
        sample: Tensor<B, 4>,
        noise: Option<Tensor<B, 4>>,
    ) -> Result<Tensor<B, 4>> {
        let n = self.check_index(step_index)?;
        let shape = sample.dims();
        let same = |key: &str, dims: [usize; 4]| {
            if dims == shape {
                Ok(())
            } else {
                Err(TrainError::ShapeMismatch {
                    key: key.into(),
                    expected: shape.to_vec(),
                    found: dims.to_vec(),
                })
            }
        };
        same("model_output", model_output.dims())?;
        if let Some(noise) = &noise {
            same("noise", noise.dims())?;
        }
        match self.kind {
            Sampler::Ddim => Ok(self.step_ddim(model_output, step_index, sample)),
            Sampler::Euler => Ok(self.step_euler(model_output, step_index, sample)),
            Sampler::EulerAncestral => {
                let noise = noise.ok_or_else(|| {
                    TrainError::InvalidArgument(
                        "the Euler ancestral sampler needs `noise` at every step".into(),
                    )
                })?;
                Ok(self.step_euler_ancestral(model_output, step_index, sample, noise))
            }
            Sampler::DpmSolverMultistep => {
                if step_index == 0 {
                    self.previous_x0 = None;
                    self.lower_order_nums = 0;
                } else if step_index != self.next_step {
                    return Err(TrainError::InvalidArgument(format!(
                        "DPM-Solver multistep steps must run in order: expected step {}, got {step_index}",
                        self.next_step
                    )));
                }
                let out = self.step_dpm(model_output, step_index, sample, n)?;
                self.next_step = step_index + 1;
                Ok(out)
            }
        }
    }
}
