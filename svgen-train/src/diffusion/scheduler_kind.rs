//! Which sampler a pipeline runs, by diffusers class or short name: the four Stable Diffusion
//! samplers of [`crate::sd::scheduler`] and FLUX's flow-matching Euler
//! ([`crate::flux::scheduler`]). Shared so that the grid search and the dataset generators name
//! samplers the same way for every pipeline.

use std::fmt;
use std::str::FromStr;

use crate::error::{Result, TrainError};

/// Which sampler a pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `DDIMScheduler` (deterministic, η = 0).
    Ddim,
    /// `EulerDiscreteScheduler` (Karras et al. Euler method on σ).
    Euler,
    /// `EulerAncestralDiscreteScheduler` (Euler with fresh noise each step; needs `noise` in
    /// [`Scheduler::step`](super::Scheduler::step)).
    EulerAncestral,
    /// `DPMSolverMultistepScheduler`, DPM-Solver++ of order 2 ("DPM++ 2M").
    DpmSolverMultistep,
    /// `FlowMatchEulerDiscreteScheduler`: Euler steps of a rectified-flow velocity (FLUX).
    FlowMatchEuler,
}

impl SchedulerKind {
    /// The Stable Diffusion samplers, in a stable order.
    pub const ALL: [SchedulerKind; 4] = [
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmSolverMultistep,
    ];

    /// The kind named by a diffusers `_class_name`.
    ///
    /// # Errors
    /// [`TrainError::UnknownScheduler`] naming the class for anything but the implemented ones.
    pub fn from_class_name(name: &str) -> Result<Self> {
        match name {
            "FlowMatchEulerDiscreteScheduler" => Ok(Self::FlowMatchEuler),
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
            Self::FlowMatchEuler => "FlowMatchEulerDiscreteScheduler",
        }
    }

    /// The short command-line name: `ddim`, `euler`, `euler-a`, `dpmpp-2m`, `flow-euler`.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Euler => "euler",
            Self::EulerAncestral => "euler-a",
            Self::DpmSolverMultistep => "dpmpp-2m",
            Self::FlowMatchEuler => "flow-euler",
        }
    }

    /// Whether Stable Diffusion pipelines run this sampler (all but [`SchedulerKind::FlowMatchEuler`]).
    pub fn is_stable_diffusion(self) -> bool {
        self != Self::FlowMatchEuler
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

impl FromStr for SchedulerKind {
    type Err = TrainError;

    /// Accepts the short names (`ddim`, `euler`, `euler-a`/`euler_a`, `dpmpp-2m`/`dpm++2m`/`dpmpp_2m`,
    /// `flow-euler`/`flow-match-euler`) and the diffusers class names.
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
            "flow-euler" | "flow_euler" | "flow-match-euler" | "flow_match_euler" => {
                Ok(Self::FlowMatchEuler)
            }
            _ => Self::from_class_name(s),
        }
    }
}
