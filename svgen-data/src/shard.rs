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

use std::str::FromStr;

use serde::Serialize;

use crate::error::DataError;
use crate::sample::fnv1a64;

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
        if count == 0 || index >= count {
            return Err(DataError::Config(format!(
                "shard {index}/{count}: need 0 <= index < count"
            )));
        }
        Ok(ShardSpec { index, count })
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
        let bad = || DataError::Config(format!("shard must look like i/N, got {s:?}"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i: u32 = i.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        ShardSpec::new(i, n)
    }
}
