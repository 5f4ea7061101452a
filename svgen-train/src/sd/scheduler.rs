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

use std::any::Any;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde_json::{Map, Value};

use crate::error::{Result, TrainError};

/// Largest `num_train_timesteps` accepted (diffusion models use 1000; the bound keeps a hostile config
/// from allocating unbounded schedules).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// Which sampler a [`Scheduler`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `DDIMScheduler` (deterministic, η = 0).
    Ddim,
    /// `EulerDiscreteScheduler` (Karras et al. Euler method on σ).
    Euler,
    /// `EulerAncestralDiscreteScheduler` (Euler with fresh noise each step; needs `noise` in
    /// [`Scheduler::step`]).
    EulerAncestral,
    /// `DPMSolverMultistepScheduler`, DPM-Solver++ of order 2 ("DPM++ 2M").
    DpmSolverMultistep,
}

impl SchedulerKind {
    /// All kinds, in a stable order.
    pub const ALL: [SchedulerKind; 4] = [
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmSolverMultistep,
    ];

    /// The kind named by a diffusers `_class_name`.
    ///
    /// # Errors
    /// [`TrainError::UnknownScheduler`] naming the class for anything but the four implemented ones.
    pub fn from_class_name(name: &str) -> Result<Self> {
        match name {
            "DDIMScheduler" => Ok(Self::Ddim),
            "EulerDiscreteScheduler" => Ok(Self::Euler),
            "EulerAncestralDiscreteScheduler" => Ok(Self::EulerAncestral),
            "DPMSolverMultistepScheduler" => Ok(Self::DpmSolverMultistep),
            other => Err(TrainError::UnknownScheduler(other.to_string())),
        }
    }

    /// The diffusers class name.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Ddim => "DDIMScheduler",
            Self::Euler => "EulerDiscreteScheduler",
            Self::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Self::DpmSolverMultistep => "DPMSolverMultistepScheduler",
        }
    }

    /// The short command-line name: `ddim`, `euler`, `euler-a`, `dpmpp-2m`.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Euler => "euler",
            Self::EulerAncestral => "euler-a",
            Self::DpmSolverMultistep => "dpmpp-2m",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

impl FromStr for SchedulerKind {
    type Err = TrainError;

    /// Accepts the short names (`ddim`, `euler`, `euler-a`/`euler_a`, `dpmpp-2m`/`dpm++2m`/`dpmpp_2m`)
    /// and the diffusers class names.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ddim" => Ok(Self::Ddim),
            "euler" => Ok(Self::Euler),
            "euler-a" | "euler_a" | "euler-ancestral" | "euler_ancestral" => {
                Ok(Self::EulerAncestral)
            }
            "dpmpp-2m" | "dpmpp_2m" | "dpm++2m" | "dpm++-2m" | "dpm-solver++" | "dpmsolver++" => {
                Ok(Self::DpmSolverMultistep)
            }
            _ => Self::from_class_name(s),
        }
    }
}

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

fn unsupported(key: &str, value: &Value) -> TrainError {
    TrainError::UnsupportedValue {
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn get_f64(map: &Map<String, Value>, key: &str, default: f64) -> Result<f64> {
    match field(map, key) {
        None => Ok(default),
        Some(v) => v.as_f64().ok_or_else(|| unsupported(key, v)),
    }
}

fn get_usize(map: &Map<String, Value>, key: &str, default: usize) -> Result<usize> {
    match field(map, key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| unsupported(key, v)),
    }
}

fn get_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match field(map, key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| unsupported(key, v)),
    }
}

fn get_str<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match field(map, key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| unsupported(key, v)),
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
        Self::from_json(&crate::nn::json::read_json(path.as_ref())?)
    }

    /// Parses the JSON object of a `scheduler_config.json`.
    ///
    /// # Errors
    /// As [`SchedulerConfig::from_file`]; a non-object is a [`TrainError::Config`].
    pub fn from_json(value: &Value) -> Result<Self> {
        let map = value
            .as_object()
            .ok_or_else(|| TrainError::Config("scheduler config is not a JSON object".into()))?;
        let d = Self::default();
        let beta_schedule = match get_str(map, "beta_schedule")? {
            None | Some("linear") => BetaSchedule::Linear,
            Some("scaled_linear") => BetaSchedule::ScaledLinear,
            Some("squaredcos_cap_v2") => BetaSchedule::SquaredCosCapV2,
            Some(_) => return Err(unsupported("beta_schedule", &map["beta_schedule"])),
        };
        let prediction_type = match get_str(map, "prediction_type")? {
            None | Some("epsilon") => PredictionType::Epsilon,
            Some("v_prediction") => PredictionType::VPrediction,
            Some("sample") => PredictionType::Sample,
            Some(_) => return Err(unsupported("prediction_type", &map["prediction_type"])),
        };
        let timestep_spacing = match get_str(map, "timestep_spacing")? {
            None => None,
            Some("leading") => Some(TimestepSpacing::Leading),
            Some("trailing") => Some(TimestepSpacing::Trailing),
            Some("linspace") => Some(TimestepSpacing::Linspace),
            Some(_) => return Err(unsupported("timestep_spacing", &map["timestep_spacing"])),
        };
        let trained_betas = match field(map, "trained_betas") {
            None => None,
            Some(v) => {
                let arr = v
                    .as_array()
                    .ok_or_else(|| unsupported("trained_betas", v))?;
                let betas = arr
                    .iter()
                    .map(|b| b.as_f64().ok_or_else(|| unsupported("trained_betas", b)))
                    .collect::<Result<Vec<_>>>()?;
                Some(betas)
            }
        };
        let string = |key: &str, default: &str| -> Result<String> {
            Ok(get_str(map, key)?.unwrap_or(default).to_string())
        };
        let mut unsupported_sigma_options = Vec::new();
        for key in [
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_lu_lambdas",
            "use_flow_sigmas",
        ] {
            if get_bool(map, key)? == Some(true) {
                unsupported_sigma_options.push(key.to_string());
            }
        }
        let cfg = Self {
            class_name: get_str(map, "_class_name")?.map(str::to_string),
            num_train_timesteps: get_usize(map, "num_train_timesteps", d.num_train_timesteps)?,
            beta_start: get_f64(map, "beta_start", d.beta_start)?,
            beta_end: get_f64(map, "beta_end", d.beta_end)?,
            beta_schedule,
            trained_betas,
            prediction_type,
            timestep_spacing,
            steps_offset: get_usize(map, "steps_offset", d.steps_offset)?,
            set_alpha_to_one: get_bool(map, "set_alpha_to_one")?,
            clip_sample: get_bool(map, "clip_sample")?,
            clip_sample_range: get_f64(map, "clip_sample_range", d.clip_sample_range)?,
            rescale_betas_zero_snr: get_bool(map, "rescale_betas_zero_snr")?.unwrap_or(false),
            interpolation_type: string("interpolation_type", &d.interpolation_type)?,
            final_sigmas_type: string("final_sigmas_type", &d.final_sigmas_type)?,
            timestep_type: string("timestep_type", &d.timestep_type)?,
            solver_order: get_usize(map, "solver_order", d.solver_order)?,
            algorithm_type: string("algorithm_type", &d.algorithm_type)?,
            solver_type: string("solver_type", &d.solver_type)?,
            lower_order_final: get_bool(map, "lower_order_final")?.unwrap_or(d.lower_order_final),
            euler_at_final: get_bool(map, "euler_at_final")?.unwrap_or(d.euler_at_final),
            lambda_min_clipped: get_f64(map, "lambda_min_clipped", d.lambda_min_clipped)?,
            thresholding: get_bool(map, "thresholding")?.unwrap_or(false),
            use_karras_sigmas: get_bool(map, "use_karras_sigmas")?.unwrap_or(false),
            sigma_min: match field(map, "sigma_min") {
                None => None,
                Some(v) => Some(v.as_f64().ok_or_else(|| unsupported("sigma_min", v))?),
            },
            sigma_max: match field(map, "sigma_max") {
                None => None,
                Some(v) => Some(v.as_f64().ok_or_else(|| unsupported("sigma_max", v))?),
            },
            unsupported_sigma_options,
            variance_type: get_str(map, "variance_type")?.map(str::to_string),
        };
        cfg.validate_common()?;
        Ok(cfg)
    }

    fn validate_common(&self) -> Result<()> {
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

/// `np.round`: round half to even.
fn round_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// `np.arange(start, stop, step)` for a negative float step.
fn np_arange_down(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    (0..len).map(|i| start + i as f64 * step).collect()
}

/// `np.linspace(start, stop, num)` (float64; the last value is exactly `stop`).
fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut v: Vec<f64> = (0..num).map(|i| start + i as f64 * step).collect();
            v[num - 1] = stop;
            v
        }
    }
}

/// `np.interp(x, arange(len(fp)), fp)`.
fn interp_index(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return f64::from(fp[0]);
    }
    if x >= last as f64 {
        return f64::from(fp[last]);
    }
    let lo = x.floor() as usize;
    let frac = x - lo as f64;
    let (a, b) = (f64::from(fp[lo]), f64::from(fp[lo + 1]));
    if frac == 0.0 {
        a
    } else {
        a + (b - a) * frac
    }
}

/// `ln` of every σ, in `f32` (numpy's `np.log` of a `float32` array).
fn log_f32(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|s| s.ln()).collect()
}

/// Karras et al. (2022) noise levels: `n` values from `sigma_max` down to `sigma_min`, evenly spaced in
/// σ^(1/ρ) with ρ = 7.
fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / RHO), sigma_max.powf(1.0 / RHO));
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(RHO))
        .collect()
}

/// The (fractional) training timestep of noise level `sigma`: linear interpolation in log σ between
/// the two neighbouring training steps (diffusers' `_sigma_to_t`; `log_sigmas` ascending).
fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
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

/// A configured noise scheduler: timesteps, noise levels and the denoising update of one sampler.
///
/// Call [`Scheduler::set_timesteps`] first, then for `i in 0..timesteps().len()`: run the UNet on
/// `scale_model_input(latents, i)` at timestep `timesteps()[i]` and feed its output to
/// [`Scheduler::step`]. DPM-Solver++ 2M keeps the previous step's prediction, so its steps must be run in
/// order (step 0 restarts it).
pub struct Scheduler {
    kind: SchedulerKind,
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
        cfg.validate_common()?;
        let bad = |key: &str, value: &str| TrainError::UnsupportedValue {
            key: key.into(),
            value: format!("\"{value}\""),
        };
        if cfg.thresholding
            && matches!(
                kind,
                SchedulerKind::Ddim | SchedulerKind::DpmSolverMultistep
            )
        {
            return Err(TrainError::UnsupportedValue {
                key: "thresholding".into(),
                value: "true".into(),
            });
        }
        if matches!(
            kind,
            SchedulerKind::Euler | SchedulerKind::DpmSolverMultistep
        ) {
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
            SchedulerKind::Euler => {
                if cfg.interpolation_type != "linear" {
                    return Err(bad("interpolation_type", &cfg.interpolation_type));
                }
                if cfg.timestep_type != "discrete" {
                    return Err(bad("timestep_type", &cfg.timestep_type));
                }
            }
            SchedulerKind::EulerAncestral => {
                if cfg.prediction_type == PredictionType::Sample {
                    return Err(bad("prediction_type", "sample"));
                }
            }
            SchedulerKind::DpmSolverMultistep => {
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
            SchedulerKind::Ddim => {}
        }
        let mut alphas_cumprod = cfg.alphas_cumprod();
        if cfg.rescale_betas_zero_snr && kind != SchedulerKind::Ddim {
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
        if kind != SchedulerKind::Ddim {
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
        self.kind
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
            SchedulerKind::Ddim => TimestepSpacing::Leading,
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
            SchedulerKind::Ddim => spaced_timesteps(spacing, n, t_train, offset, round_even),
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => {
                let ts = spaced_timesteps(spacing, n, t_train, offset, |x| f64::from(x as f32));
                let train = self.training_sigmas();
                let interpolated: Vec<f64> = ts.iter().map(|&t| interp_index(t, &train)).collect();
                let (ts, mut sigmas): (Vec<f64>, Vec<f32>) =
                    if self.kind == SchedulerKind::Euler && self.config.use_karras_sigmas {
                        let log_sigmas = log_f32(&train);
                        let lo = self
                            .config
                            .sigma_min
                            .unwrap_or(interpolated[interpolated.len() - 1]);
                        let hi = self.config.sigma_max.unwrap_or(interpolated[0]);
                        let karras = karras_sigmas(lo, hi, n);
                        let ts = karras
                            .iter()
                            .map(|&s| f64::from(sigma_to_t(s, &log_sigmas) as f32))
                            .collect();
                        (ts, karras.iter().map(|&s| s as f32).collect())
                    } else {
                        (ts, interpolated.iter().map(|&s| s as f32).collect())
                    };
                let last = if self.kind == SchedulerKind::Euler
                    && self.config.final_sigmas_type == "sigma_min"
                {
                    train[0]
                } else {
                    0.0
                };
                sigmas.push(last);
                self.sigmas = sigmas;
                ts
            }
            SchedulerKind::DpmSolverMultistep => {
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
                    TimestepSpacing::Trailing => {
                        np_arange_down(last_t as f64, 0.0, -(tf / n as f64))
                            .into_iter()
                            .map(|x| round_even(x) - 1.0)
                            .collect()
                    }
                };
                if ts.is_empty() || ts.iter().any(|&t| t < 0.0 || t >= tf) {
                    return Err(TrainError::InvalidArgument(format!(
                        "{n} inference steps leave no valid timesteps with lambda_min_clipped = {}",
                        self.config.lambda_min_clipped
                    )));
                }
                let (ts, mut sigmas): (Vec<f64>, Vec<f32>) = if self.config.use_karras_sigmas {
                    let log_sigmas = log_f32(&train);
                    let karras =
                        karras_sigmas(f64::from(train[0]), f64::from(train[train.len() - 1]), n);
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
                ts
            }
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
            SchedulerKind::Ddim | SchedulerKind::DpmSolverMultistep => 1.0,
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => {
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
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => {
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
            SchedulerKind::Ddim => Ok(self.step_ddim(model_output, step_index, sample)),
            SchedulerKind::Euler => Ok(self.step_euler(model_output, step_index, sample)),
            SchedulerKind::EulerAncestral => {
                let noise = noise.ok_or_else(|| {
                    TrainError::InvalidArgument(
                        "the Euler ancestral sampler needs `noise` at every step".into(),
                    )
                })?;
                Ok(self.step_euler_ancestral(model_output, step_index, sample, noise))
            }
            SchedulerKind::DpmSolverMultistep => {
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

    fn step_ddim<B: Backend>(
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

    /// x₀ predicted by an Euler sampler at noise level σ.
    fn euler_x0<B: Backend>(
        &self,
        model_output: Tensor<B, 4>,
        sample: Tensor<B, 4>,
        sigma: f32,
    ) -> Tensor<B, 4> {
        match self.config.prediction_type {
            PredictionType::Epsilon => sample - model_output.mul_scalar(sigma),
            PredictionType::VPrediction => {
                let s2 = sigma * sigma + 1.0;
                model_output.mul_scalar(-sigma / s2.sqrt()) + sample.div_scalar(s2)
            }
            PredictionType::Sample => model_output,
        }
    }

    fn step_euler<B: Backend>(
        &self,
        model_output: Tensor<B, 4>,
        i: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        // s_churn = 0 (diffusers' default): σ̂ = σ.
        let sigma = self.sigmas[i];
        let x0 = self.euler_x0(model_output, sample.clone(), sigma);
        let derivative = (sample.clone() - x0).div_scalar(sigma);
        let dt = self.sigmas[i + 1] - sigma;
        sample + derivative.mul_scalar(dt)
    }

    fn step_euler_ancestral<B: Backend>(
        &self,
        model_output: Tensor<B, 4>,
        i: usize,
        sample: Tensor<B, 4>,
        noise: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let sigma = self.sigmas[i];
        let sigma_to = self.sigmas[i + 1];
        let x0 = self.euler_x0(model_output, sample.clone(), sigma);
        let (from2, to2) = (sigma * sigma, sigma_to * sigma_to);
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).max(0.0).sqrt();
        let derivative = (sample.clone() - x0).div_scalar(sigma);
        let dt = sigma_down - sigma;
        sample + derivative.mul_scalar(dt) + noise.mul_scalar(sigma_up)
    }

    fn step_dpm<B: Backend>(
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

/// The `n` descending inference timesteps of DDIM and the Euler samplers for `spacing`
/// (`t_train` training timesteps, `steps_offset` `offset`); `linspace` maps the values of the
/// `linspace` spacing.
fn spaced_timesteps(
    spacing: TimestepSpacing,
    n: usize,
    t_train: usize,
    offset: f64,
    linspace: impl Fn(f64) -> f64,
) -> Vec<f64> {
    let tf = t_train as f64;
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, tf - 1.0, n)
            .into_iter()
            .rev()
            .map(linspace)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = t_train / n;
            (0..n).rev().map(|i| (i * ratio) as f64 + offset).collect()
        }
        TimestepSpacing::Trailing => np_arange_down(tf, 0.0, -(tf / n as f64))
            .into_iter()
            .map(|x| round_even(x) - 1.0)
            .collect(),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_torch_endpoints() {
        let v = torch_linspace_f32(0.1, 0.2, 5);
        assert_eq!(v[0], 0.1);
        assert_eq!(v[4], 0.2);
    }

    #[test]
    fn unknown_values_are_named() {
        let err = SchedulerConfig::from_json(&serde_json::json!({"beta_schedule": "sigmoid"}))
            .unwrap_err();
        assert!(err.to_string().contains("sigmoid"), "{err}");
        let err = SchedulerKind::from_class_name("PNDMScheduler").unwrap_err();
        assert!(err.to_string().contains("PNDMScheduler"), "{err}");
    }
}
