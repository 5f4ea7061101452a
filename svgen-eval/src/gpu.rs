//! GPU backend setup shared by every svgen model (issue 19 items 1 and 7).
//!
//! - [`configure_cubecl`]: makes sure cubecl (the compiler behind Burn's `Cuda` backend) keeps
//!   its compilation cache (NVRTC → PTX) and autotune cache on disk, so a second process does not
//!   compile every kernel again. cubecl 0.10 reads `cubecl.toml` / `CubeCL.toml` (or the
//!   `[cubecl]` section of `burn.toml`) from the working directory or its parents; the repository
//!   ships a `cubecl.toml` at its root. Outside the repository (no such file found), this sets
//!   the same configuration programmatically. It must run before the first use of a CUDA device;
//!   the examples call it first thing. Without the `cuda` feature it does nothing.
//! - [`note_first_step`]: one line on stderr before the first forward of a process on a backend
//!   other than Flex, saying that kernels are being compiled (tens of seconds with no output
//!   otherwise look like a hang).
//! - [`Tf32`]: the `--tf32 off|on` switch of the parity examples and the tolerances each mode
//!   meets. cubecl 0.10 (cubek-matmul 0.2, `adjust_dtypes`) runs every tensor-core matmul with
//!   f32 operands in TF32 on any CUDA device that supports TF32 (sm_80+), with no configuration,
//!   environment variable or strategy argument reachable through Burn's tensor API to keep them
//!   in f32. [`Tf32::check`] therefore refuses `off` on CUDA with a typed error
//!   ([`GpuError::Tf32Unavailable`]); on Flex both modes are accepted and change nothing (Flex
//!   multiplies in f32).

use std::any::TypeId;
use std::str::FromStr;
use std::sync::Once;

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;

/// Errors of the GPU setup.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GpuError {
    /// The reference values a tolerance is scaled by are not all finite.
    #[error("reference values: {0}")]
    Reference(#[from] svgen_core::compare::CompareError),
    /// `--tf32` got another value than `on` or `off`.
    #[error("--tf32 {0}: expected `on` or `off`")]
    InvalidTf32(String),
    /// `--tf32 off` on a backend whose matmuls cannot be kept out of TF32.
    #[error(
        "--tf32 off is not available on {backend}: cubecl 0.10 runs f32 tensor-core matmuls in \
         TF32 on sm_80+ with no switch to keep them in f32; use --tf32 on (the default) and its \
         tolerance"
    )]
    Tf32Unavailable {
        /// The backend (Rust type name).
        backend: &'static str,
    },
}

/// Where the cubecl configuration of this process comes from ([`configure_cubecl`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CubeclConfigSource {
    /// Built without the `cuda` feature: no cubecl runtime to configure.
    NotApplicable,
    /// A configuration file found in the working directory or a parent (cubecl's own search).
    File(std::path::PathBuf),
    /// No file found: svgen's configuration (both caches under the `target` folder of the nearest
    /// Cargo workspace, or the user's cache directory `…/cubecl` outside one) was set.
    Builtin,
    /// Something (another library, an earlier call) configured cubecl first; left as it is.
    AlreadySet,
}

/// Configures cubecl's compilation and autotune caches before the first CUDA device use (see
/// the module documentation). Idempotent; returns where the configuration comes from.
pub fn configure_cubecl() -> CubeclConfigSource {
    #[cfg(feature = "cuda")]
    {
        cuda_config::configure()
    }
    #[cfg(not(feature = "cuda"))]
    {
        CubeclConfigSource::NotApplicable
    }
}

#[cfg(feature = "cuda")]
mod cuda_config {
    use super::CubeclConfigSource;
    use burn::cubecl::config::cache::CacheConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};

    /// svgen's configuration: what the shipped `cubecl.toml` holds.
    pub(super) fn builtin() -> CubeClRuntimeConfig {
        let mut config = CubeClRuntimeConfig::default();
        config.compilation.cache = Some(CacheConfig::Target);
        config.autotune.cache = CacheConfig::Target;
        config
    }

    /// The first configuration file cubecl's own search would pick.
    fn find_file() -> Option<std::path::PathBuf> {
        let mut dir = std::env::current_dir().ok()?;
        loop {
            let names = CubeClRuntimeConfig::file_names().iter().chain(
                CubeClRuntimeConfig::section_file_names()
                    .iter()
                    .map(|(n, _)| n),
            );
            for name in names {
                let path = dir.join(name);
                if path.is_file() {
                    return Some(path);
                }
            }
            if !dir.pop() {
                return None;
            }
        }
    }

    pub(super) fn configure() -> CubeclConfigSource {
        let mut state = CubeClRuntimeConfig::storage().lock();
        if state.is_some() {
            return CubeclConfigSource::AlreadySet;
        }
        drop(state);
        if let Some(path) = find_file() {
            // cubecl loads it (and applies its environment overrides) on first use.
            return CubeclConfigSource::File(path);
        }
        let config = builtin().override_from_env();
        state = CubeClRuntimeConfig::storage().lock();
        if state.is_some() {
            return CubeclConfigSource::AlreadySet;
        }
        *state = Some(std::sync::Arc::new(config));
        CubeclConfigSource::Builtin
    }
}

/// True for Burn's CPU backend `Flex` and its autodiff wrappers (no kernel compilation).
pub fn is_flex<B: Backend>() -> bool {
    let id = TypeId::of::<B>();
    id == TypeId::of::<Flex>()
        || id == TypeId::of::<Autodiff<Flex>>()
        || id == TypeId::of::<Autodiff<Flex, BalancedCheckpointing>>()
}

static FIRST_STEP: Once = Once::new();

/// The line [`note_first_step`] prints, or `None` on Flex.
pub fn first_step_message<B: Backend>(what: &str) -> Option<String> {
    (!is_flex::<B>()).then(|| {
        format!(
            "svgen: first {what} on {}: compiling GPU kernels (NVRTC and autotune), which can \
             take tens of seconds to minutes; later runs reuse cubecl's compilation and autotune \
             caches (see cubecl.toml)",
            short_type_name::<B>()
        )
    })
}

/// Prints [`first_step_message`] on stderr once per process, before the first training step or
/// generation on a backend other than Flex.
pub fn note_first_step<B: Backend>(what: &str) {
    if let Some(line) = first_step_message::<B>(what) {
        FIRST_STEP.call_once(|| eprintln!("{line}"));
    }
}

fn short_type_name<B>() -> &'static str {
    let full = std::any::type_name::<B>();
    let head = full.split('<').next().unwrap_or(full);
    let start = head.rfind("::").map_or(0, |i| i + 2);
    &full[start..]
}

/// Matmul precision of the parity examples' `--tf32 off|on` (default `on`, what the GPU does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tf32 {
    /// f32 matmuls in f32 (Flex always; not available on CUDA with cubecl 0.10).
    Off,
    /// f32 tensor-core matmuls in TF32 (10-bit mantissa) on sm_80+ CUDA devices.
    #[default]
    On,
}

impl FromStr for Tf32 {
    type Err = GpuError;
    fn from_str(s: &str) -> Result<Self, GpuError> {
        match s {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(GpuError::InvalidTf32(other.to_string())),
        }
    }
}

impl std::fmt::Display for Tf32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
        })
    }
}

/// Relative error of one TF32 matmul output against f32: operands rounded to a 10-bit mantissa
/// (unit roundoff 2⁻¹¹ ≈ 4.9e-4 each, so ≈ 1e-3 on a product), accumulated in f32.
pub const TF32_MATMUL_RELATIVE: f64 = 1e-3;

impl Tf32 {
    /// `Ok` where backend `B` can run in this mode: everything on Flex (the flag has no effect
    /// there), only `on` elsewhere ([`GpuError::Tf32Unavailable`]).
    pub fn check<B: Backend>(self) -> Result<(), GpuError> {
        match self {
            Self::Off if !is_flex::<B>() => Err(GpuError::Tf32Unavailable {
                backend: short_type_name::<B>(),
            }),
            _ => Ok(()),
        }
    }

    /// The default max-abs tolerance of a parity comparison on backend `B`: `cpu` (the
    /// f32-against-PyTorch tolerance) on Flex or with TF32 off; with TF32 on, `cpu` plus
    /// [`TF32_MATMUL_RELATIVE`] × `magnitude` × `depth_factor`, where `magnitude` is the typical
    /// size of the compared outputs and `depth_factor` how many matmul errors compound on the way
    /// (one per layer is a fair bound for residual networks, which add rather than multiply
    /// per-layer errors).
    pub fn tolerance<B: Backend>(self, cpu: f64, magnitude: f64, depth_factor: f64) -> f64 {
        if is_flex::<B>() || self == Self::Off {
            cpu
        } else {
            cpu + TF32_MATMUL_RELATIVE * magnitude * depth_factor
        }
    }
}

/// Depth factor of [`Tf32::parity_tolerance`]: how many per-matmul TF32 errors (relative
/// [`TF32_MATMUL_RELATIVE`]) the parity tolerances allow to compound on the way to an output.
pub const TF32_PARITY_DEPTH: f64 = 4.0;

impl Tf32 {
    /// The max-abs tolerance of one parity comparison: `cli` when the user gave `--tol`,
    /// otherwise [`Tf32::tolerance`] with the largest `|reference|` as the magnitude and
    /// [`TF32_PARITY_DEPTH`] as the depth factor (so `cpu` on Flex; `cpu + 4e-3 · max|reference|`
    /// on CUDA with TF32). Fails on a non-finite or empty reference.
    pub fn parity_tolerance<B: Backend>(
        self,
        cli: Option<f64>,
        cpu: f64,
        reference: &[f32],
    ) -> Result<f64, GpuError> {
        if let Some(tol) = cli {
            return Ok(tol);
        }
        let zeros = vec![0.0f32; reference.len()];
        let magnitude = svgen_core::compare::max_abs_diff(reference, &zeros)?.value;
        Ok(self.tolerance::<B>(cpu, magnitude, TF32_PARITY_DEPTH))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_parses_and_rejects() {
        assert_eq!("on".parse::<Tf32>(), Ok(Tf32::On));
        assert_eq!("off".parse::<Tf32>(), Ok(Tf32::Off));
        assert_eq!(
            "maybe".parse::<Tf32>(),
            Err(GpuError::InvalidTf32("maybe".into()))
        );
        assert_eq!(Tf32::default(), Tf32::On);
    }

    #[test]
    fn flex_accepts_both_modes_and_keeps_the_cpu_tolerance() {
        assert!(is_flex::<Flex>());
        assert!(is_flex::<Autodiff<Flex>>());
        assert_eq!(Tf32::Off.check::<Flex>(), Ok(()));
        assert_eq!(Tf32::On.check::<Autodiff<Flex>>(), Ok(()));
        assert_eq!(Tf32::On.tolerance::<Flex>(1e-4, 10.0, 4.0), 1e-4);
        assert_eq!(Tf32::Off.tolerance::<Flex>(1e-4, 10.0, 4.0), 1e-4);
        assert_eq!(first_step_message::<Flex>("step"), None);
        assert_eq!(
            Tf32::On.parity_tolerance::<Flex>(None, 1e-4, &[3.0, -20.0]),
            Ok(1e-4)
        );
        assert_eq!(
            Tf32::On.parity_tolerance::<Flex>(Some(0.5), 1e-4, &[3.0]),
            Ok(0.5)
        );
        assert!(matches!(
            Tf32::On.parity_tolerance::<Flex>(None, 1e-4, &[f32::NAN]),
            Err(GpuError::Reference(_))
        ));
    }

    #[test]
    fn configure_without_cuda_is_a_no_op() {
        #[cfg(not(feature = "cuda"))]
        assert_eq!(configure_cubecl(), CubeclConfigSource::NotApplicable);
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_refuses_tf32_off_and_widens_the_tolerance() {
        type C = burn::backend::Cuda;
        assert!(!is_flex::<C>());
        assert!(matches!(
            Tf32::Off.check::<C>(),
            Err(GpuError::Tf32Unavailable { .. })
        ));
        assert_eq!(Tf32::On.check::<C>(), Ok(()));
        let tol = Tf32::On.tolerance::<C>(1e-4, 10.0, 4.0);
        assert!((tol - (1e-4 + 4e-2)).abs() < 1e-12, "{tol}");
        let tol = Tf32::On.parity_tolerance::<C>(None, 1e-4, &[3.0, -20.0]);
        assert!(
            matches!(tol, Ok(t) if (t - (1e-4 + 8e-2)).abs() < 1e-12),
            "{tol:?}"
        );
        assert_eq!(Tf32::Off.tolerance::<C>(1e-4, 10.0, 4.0), 1e-4);
        let line = first_step_message::<C>("training step").unwrap_or_default();
        assert!(line.contains("compiling GPU kernels"), "{line}");
    }
}
