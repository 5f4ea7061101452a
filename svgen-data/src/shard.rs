//! Deterministic work splitting across independent workers (`--shard i/N`).
//!
//! Worker `i` of `N` takes exactly the ids whose stable hash ([`fnv1a64`]) is `i` modulo `N`.
//! The rule depends only on the id, so N workers started as a Slurm array or a Kubernetes
//! Indexed Job (`JOB_COMPLETION_INDEX`) cover every input exactly once, in any order, without
//! talking to each other, and a restarted worker takes the same ids again.
//!
//! ```
//! use svgen_data::shard::ShardSpec;
//! let specs: Vec<ShardSpec> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
//! for id in ["coco:1", "coco:2", "t2i:0007"] {
//!     assert_eq!(specs.iter().filter(|s| s.contains(id)).count(), 1);
//! }
//! assert!("3/3".parse::<ShardSpec>().is_err());
//! ```
//!
//! # Which worker am I? ([`resolve_shard`])
//!
//! Schedulers start N copies of one command and tell each its number through the environment.
//! In order of precedence:
//!
//! 1. An explicit `--shard i/N` wins over everything below.
//! 2. **Slurm job arrays** (`sbatch --array=A-B`): the index is
//!    `(SLURM_ARRAY_TASK_ID − base) / step`, where `base` is `--shard-base` /
//!    `SVGEN_SHARD_BASE` if given, else `SLURM_ARRAY_TASK_MIN` (arrays may start at 1 or any
//!    number), and `step` is `SLURM_ARRAY_TASK_STEP` (1 when unset). The count is
//!    `--shard-count` / `SVGEN_SHARD_COUNT` if given, else `SLURM_ARRAY_TASK_COUNT`.
//!    Relaunching a *subset* of the array (`--array=3,7`) changes `SLURM_ARRAY_TASK_MIN` and
//!    `SLURM_ARRAY_TASK_COUNT`, so pass the original base and count then (the shipped
//!    `examples/deploy/build_dataset.sbatch` always does). A wrong count is caught by the run's
//!    `run.json`, see [`crate::worker`].
//! 3. **Kubernetes Indexed Jobs** (`completionMode: Indexed`): the index is
//!    `JOB_COMPLETION_INDEX`; Kubernetes does not expose the Job's `completions` to the pod, so
//!    the count comes from `--shard-count` or `SVGEN_SHARD_COUNT` (set it to `completions`, as
//!    `examples/deploy/build_dataset.yaml` does); without it the worker refuses to start.
//! 4. None of these: `0/1`, the whole input. A count without an index is an error.
//!
//! Both a Slurm array id and `JOB_COMPLETION_INDEX` at once is ambiguous and refused.

use std::str::FromStr;

use serde::Serialize;

use crate::error::DataError;
use crate::sample::fnv1a64;

/// Why a worker's shard could not be determined (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// `--shard` is not of the form `i/N`.
    #[error("shard must look like i/N, got {0:?}")]
    Syntax(String),
    /// The index is not below the count (or the count is 0).
    #[error("worker index {index} is out of range for {count} workers (need 0 <= index < count)")]
    IndexOutOfRange {
        /// 0-based index.
        index: u64,
        /// Worker count.
        count: u64,
    },
    /// An environment variable or flag that should hold a non-negative integer does not.
    #[error("{name}={value:?} is not a non-negative integer")]
    NotANumber {
        /// The variable or flag.
        name: String,
        /// Its value.
        value: String,
    },
    /// The array task id lies below the base (or off the step grid).
    #[error(
        "SLURM_ARRAY_TASK_ID={id} does not map to a worker with base {base} and step {step}; \
         pass --shard-base with the first id of the array (or --shard i/N)"
    )]
    NotOnGrid {
        /// `SLURM_ARRAY_TASK_ID`.
        id: u64,
        /// The base in use.
        base: u64,
        /// `SLURM_ARRAY_TASK_STEP`.
        step: u64,
    },
    /// An index is known but no worker count.
    #[error(
        "{origin} gives this worker's index but not the worker count: pass --shard-count N or \
         set SVGEN_SHARD_COUNT (for a Kubernetes Indexed Job: the Job's completions)"
    )]
    MissingCount {
        /// Where the index came from.
        origin: ShardOrigin,
    },
    /// A worker count was given without any index.
    #[error(
        "a worker count ({count}) was given but no index: pass --shard i/N, or run inside a \
         Slurm array (SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)"
    )]
    CountWithoutIndex {
        /// The count given.
        count: u64,
    },
    /// Both a Slurm array id and a Kubernetes completion index are set.
    #[error(
        "both SLURM_ARRAY_TASK_ID ({slurm}) and JOB_COMPLETION_INDEX ({kubernetes}) are set; \
         pass --shard i/N"
    )]
    Ambiguous {
        /// `SLURM_ARRAY_TASK_ID`.
        slurm: String,
        /// `JOB_COMPLETION_INDEX`.
        kubernetes: String,
    },
}

/// Where a worker's [`ShardSpec`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardOrigin {
    /// `--shard i/N`.
    Explicit,
    /// A Slurm job array (`SLURM_ARRAY_TASK_ID`).
    Slurm,
    /// A Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`).
    Kubernetes,
    /// Nothing set: the whole input (`0/1`).
    Default,
}

impl std::fmt::Display for ShardOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShardOrigin::Explicit => "--shard",
            ShardOrigin::Slurm => "the Slurm array (SLURM_ARRAY_TASK_ID)",
            ShardOrigin::Kubernetes => "the Kubernetes Indexed Job (JOB_COMPLETION_INDEX)",
            ShardOrigin::Default => "the default (0/1)",
        })
    }
}

/// What the command line says about sharding; the rest comes from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardArgs {
    /// `--shard i/N`.
    pub explicit: Option<ShardSpec>,
    /// `--shard-count N` (else `SVGEN_SHARD_COUNT`).
    pub count: Option<u32>,
    /// `--shard-base B`: the Slurm array id of worker 0 (else `SVGEN_SHARD_BASE`, else
    /// `SLURM_ARRAY_TASK_MIN`).
    pub base: Option<u64>,
}

/// A resolved shard and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResolvedShard {
    /// This worker's part of the input.
    pub spec: ShardSpec,
    /// Where it came from.
    pub origin: ShardOrigin,
}

fn parse_env_u64(name: &str, value: &str) -> Result<u64, ShardError> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| ShardError::NotANumber {
            name: name.to_string(),
            value: value.to_string(),
        })
}

fn checked_spec(index: u64, count: u64) -> Result<ShardSpec, ShardError> {
    let out_of_range = || ShardError::IndexOutOfRange { index, count };
    let i = u32::try_from(index).map_err(|_| out_of_range())?;
    let n = u32::try_from(count).map_err(|_| out_of_range())?;
    if n == 0 || i >= n {
        return Err(out_of_range());
    }
    Ok(ShardSpec { index: i, count: n })
}

/// Resolves this worker's shard from the flags and an environment lookup (see the module
/// docs for the rules). `env` is `|name| std::env::var(name).ok()` in a real worker
/// ([`resolve_shard_from_env`]); tests pass a map.
///
/// ```
/// use svgen_data::shard::{resolve_shard, ShardArgs, ShardOrigin};
/// let env = |k: &str| match k {
///     "SLURM_ARRAY_TASK_ID" => Some("5".to_string()),
///     "SLURM_ARRAY_TASK_MIN" => Some("1".to_string()),
///     "SLURM_ARRAY_TASK_COUNT" => Some("16".to_string()),
///     _ => None,
/// };
/// let r = resolve_shard(&ShardArgs::default(), env).unwrap();
/// assert_eq!((r.spec.index, r.spec.count, r.origin), (4, 16, ShardOrigin::Slurm));
/// ```
pub fn resolve_shard(
    args: &ShardArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ResolvedShard, ShardError> {
    if let Some(spec) = args.explicit {
        let spec = checked_spec(u64::from(spec.index), u64::from(spec.count))?;
        return Ok(ResolvedShard {
            spec,
            origin: ShardOrigin::Explicit,
        });
    }
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let count_override = match args.count {
        Some(n) => Some(u64::from(n)),
        None => var("SVGEN_SHARD_COUNT")
            .map(|v| parse_env_u64("SVGEN_SHARD_COUNT", &v))
            .transpose()?,
    };
    let base_override = match args.base {
        Some(b) => Some(b),
        None => var("SVGEN_SHARD_BASE")
            .map(|v| parse_env_u64("SVGEN_SHARD_BASE", &v))
            .transpose()?,
    };
    let slurm = var("SLURM_ARRAY_TASK_ID");
    let kubernetes = var("JOB_COMPLETION_INDEX");
    match (slurm, kubernetes) {
        (Some(s), Some(k)) => Err(ShardError::Ambiguous {
            slurm: s,
            kubernetes: k,
        }),
        (Some(id), None) => {
            let id = parse_env_u64("SLURM_ARRAY_TASK_ID", &id)?;
            let base = match base_override {
                Some(b) => b,
                None => var("SLURM_ARRAY_TASK_MIN")
                    .map(|v| parse_env_u64("SLURM_ARRAY_TASK_MIN", &v))
                    .transpose()?
                    .unwrap_or(0),
            };
            let step = var("SLURM_ARRAY_TASK_STEP")
                .map(|v| parse_env_u64("SLURM_ARRAY_TASK_STEP", &v))
                .transpose()?
                .unwrap_or(1)
                .max(1);
            let offset = id
                .checked_sub(base)
                .filter(|o| o % step == 0)
                .ok_or(ShardError::NotOnGrid { id, base, step })?;
            let count = match count_override {
                Some(n) => n,
                None => var("SLURM_ARRAY_TASK_COUNT")
                    .map(|v| parse_env_u64("SLURM_ARRAY_TASK_COUNT", &v))
                    .transpose()?
                    .ok_or(ShardError::MissingCount {
                        origin: ShardOrigin::Slurm,
                    })?,
            };
            Ok(ResolvedShard {
                spec: checked_spec(offset / step, count)?,
                origin: ShardOrigin::Slurm,
            })
        }
        (None, Some(index)) => {
            let index = parse_env_u64("JOB_COMPLETION_INDEX", &index)?;
            let count = count_override.ok_or(ShardError::MissingCount {
                origin: ShardOrigin::Kubernetes,
            })?;
            Ok(ResolvedShard {
                spec: checked_spec(index, count)?,
                origin: ShardOrigin::Kubernetes,
            })
        }
        (None, None) => match count_override {
            Some(count) => Err(ShardError::CountWithoutIndex { count }),
            None => Ok(ResolvedShard {
                spec: ShardSpec::default(),
                origin: ShardOrigin::Default,
            }),
        },
    }
}

/// [`resolve_shard`] with the process environment.
pub fn resolve_shard_from_env(args: &ShardArgs) -> Result<ResolvedShard, ShardError> {
    resolve_shard(args, |name| std::env::var(name).ok())
}

/// Worker `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShardSpec {
    /// 0-based worker index.
    pub index: u32,
    /// Number of workers (≥ 1).
    pub count: u32,
}

impl Default for ShardSpec {
    /// `0/1`: everything.
    fn default() -> Self {
        ShardSpec { index: 0, count: 1 }
    }
}

impl ShardSpec {
    /// Worker `index` of `count`; fails unless `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Self, DataError> {
        Ok(checked_spec(u64::from(index), u64::from(count))?)
    }

    /// Whether this worker owns `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.count <= 1 || fnv1a64(id.as_bytes()) % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for ShardSpec {
    type Err = DataError;

    /// Parses `i/N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DataError::Shard(ShardError::Syntax(s.to_string()));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i: u32 = i.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        ShardSpec::new(i, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(args: ShardArgs, vars: &[(&str, &str)]) -> Result<ResolvedShard, ShardError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve_shard(&args, |k| map.get(k).cloned())
    }

    fn spec(r: Result<ResolvedShard, ShardError>) -> (u32, u32, ShardOrigin) {
        let r = r.unwrap();
        (r.spec.index, r.spec.count, r.origin)
    }

    #[test]
    fn nothing_set_is_the_whole_input() {
        assert_eq!(
            spec(resolve(ShardArgs::default(), &[])),
            (0, 1, ShardOrigin::Default)
        );
    }

    #[test]
    fn slurm_arrays_subtract_the_minimum() {
        let zero = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ];
        assert_eq!(
            spec(resolve(ShardArgs::default(), &zero)),
            (3, 8, ShardOrigin::Slurm)
        );
        let one_based = [
            ("SLURM_ARRAY_TASK_ID", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ];
        assert_eq!(
            spec(resolve(ShardArgs::default(), &one_based)),
            (7, 8, ShardOrigin::Slurm)
        );
        // --array=10-24:2 → ids 10, 12, ..., 24: 8 tasks.
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "14"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ];
        assert_eq!(
            spec(resolve(ShardArgs::default(), &stepped)),
            (2, 8, ShardOrigin::Slurm)
        );
        let off_grid = [
            ("SLURM_ARRAY_TASK_ID", "15"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ];
        assert!(matches!(
            resolve(ShardArgs::default(), &off_grid),
            Err(ShardError::NotOnGrid {
                id: 15,
                base: 10,
                step: 2
            })
        ));
    }

    #[test]
    fn a_partial_relaunch_uses_the_given_base_and_count() {
        // The original array was --array=0-15; only tasks 3 and 7 are relaunched.
        let relaunch = [
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
            ("SVGEN_SHARD_BASE", "0"),
            ("SVGEN_SHARD_COUNT", "16"),
        ];
        assert_eq!(
            spec(resolve(ShardArgs::default(), &relaunch)),
            (7, 16, ShardOrigin::Slurm)
        );
        let flags = ShardArgs {
            count: Some(16),
            base: Some(0),
            ..ShardArgs::default()
        };
        assert_eq!(
            spec(resolve(flags, &relaunch[..3])),
            (7, 16, ShardOrigin::Slurm)
        );
        // Without them the id maps to index 4 of 2: refused, not silently wrong.
        assert!(matches!(
            resolve(ShardArgs::default(), &relaunch[..3]),
            Err(ShardError::IndexOutOfRange { index: 4, count: 2 })
        ));
    }

    #[test]
    fn kubernetes_needs_a_count() {
        assert_eq!(
            spec(resolve(
                ShardArgs::default(),
                &[("JOB_COMPLETION_INDEX", "5"), ("SVGEN_SHARD_COUNT", "6")]
            )),
            (5, 6, ShardOrigin::Kubernetes)
        );
        let flags = ShardArgs {
            count: Some(6),
            ..ShardArgs::default()
        };
        assert_eq!(
            spec(resolve(flags, &[("JOB_COMPLETION_INDEX", "0")])),
            (0, 6, ShardOrigin::Kubernetes)
        );
        assert_eq!(
            resolve(ShardArgs::default(), &[("JOB_COMPLETION_INDEX", "5")]),
            Err(ShardError::MissingCount {
                origin: ShardOrigin::Kubernetes
            })
        );
        assert_eq!(
            resolve(
                ShardArgs::default(),
                &[("JOB_COMPLETION_INDEX", "6"), ("SVGEN_SHARD_COUNT", "6")]
            ),
            Err(ShardError::IndexOutOfRange { index: 6, count: 6 })
        );
    }

    #[test]
    fn explicit_shard_wins_and_bad_values_are_typed_errors() {
        let flags = ShardArgs {
            explicit: Some(ShardSpec { index: 1, count: 2 }),
            ..ShardArgs::default()
        };
        let env = [
            ("SLURM_ARRAY_TASK_ID", "9"),
            ("SLURM_ARRAY_TASK_COUNT", "10"),
        ];
        assert_eq!(spec(resolve(flags, &env)), (1, 2, ShardOrigin::Explicit));
        let bad_explicit = ShardArgs {
            explicit: Some(ShardSpec { index: 2, count: 2 }),
            ..ShardArgs::default()
        };
        assert_eq!(
            resolve(bad_explicit, &[]),
            Err(ShardError::IndexOutOfRange { index: 2, count: 2 })
        );
        assert!(matches!(
            resolve(
                ShardArgs::default(),
                &[
                    ("SLURM_ARRAY_TASK_ID", "x"),
                    ("SLURM_ARRAY_TASK_COUNT", "4")
                ]
            ),
            Err(ShardError::NotANumber { .. })
        ));
        assert_eq!(
            resolve(ShardArgs::default(), &[("SLURM_ARRAY_TASK_ID", "1")]),
            Err(ShardError::MissingCount {
                origin: ShardOrigin::Slurm
            })
        );
        assert!(matches!(
            resolve(
                ShardArgs::default(),
                &[("SLURM_ARRAY_TASK_ID", "1"), ("JOB_COMPLETION_INDEX", "1")]
            ),
            Err(ShardError::Ambiguous { .. })
        ));
        assert_eq!(
            resolve(ShardArgs::default(), &[("SVGEN_SHARD_COUNT", "4")]),
            Err(ShardError::CountWithoutIndex { count: 4 })
        );
        assert!(matches!(
            "4/4".parse::<ShardSpec>(),
            Err(DataError::Shard(ShardError::IndexOutOfRange {
                index: 4,
                count: 4
            }))
        ));
        assert!(matches!(
            "a/b".parse::<ShardSpec>(),
            Err(DataError::Shard(ShardError::Syntax(_)))
        ));
    }
}
