//! A run of N workers: the run manifest (`run.json`) and per-worker completion markers
//! (`done-iiiii-of-nnnnn.json`), after datatrove's per-task completion files.
//!
//! - `run.json` is written (put-if-absent) by the first worker to start and fixes the worker
//!   count and the configuration fingerprint of the run. A worker launched with another count
//!   ([`DataError::ShardCountMismatch`]) or another configuration
//!   ([`DataError::ConfigMismatch`]) refuses to start, so a relaunch cannot silently re-split
//!   the input or mix settings.
//! - A worker that has read its whole input writes its marker last, atomically: the shards it
//!   published (name, rows), its row and failure counts, the fingerprint. A relaunched
//!   finished worker sees its marker and exits at once; an unfinished one resumes from its
//!   manifest and failure log (nothing lost, nothing repeated).
//! - `merge` ([`crate::tools::merge`]) requires a marker for every worker `0..N`, exactly one
//!   each, and reads exactly the shards they list.
//!
//! ```json
//! {"format":"svgen-worker-done/1","index":3,"count":16,"config_fingerprint":"9f0c…",
//!  "shards":[{"name":"part-00003-of-00016-000000.parquet","rows":1000}],"rows":1000,
//!  "failures":12,"failures_file":"failures-00003-of-00016.jsonl",
//!  "finished_at":1767225600000000,"svgen_data_version":"0.1.0"}
//! ```

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::sample::now_micros;
use crate::shard::ShardSpec;
use crate::store::{RunStore, WriteMode};

/// Name of the run manifest.
pub const RUN_MANIFEST: &str = "run.json";
/// `format` of [`RunManifest`].
pub const RUN_FORMAT: &str = "svgen-run/1";
/// `format` of [`WorkerMarker`].
pub const MARKER_FORMAT: &str = "svgen-worker-done/1";

/// `run.json`: what every worker of the run must agree on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// [`RUN_FORMAT`].
    pub format: String,
    /// Number of workers.
    pub shard_count: u32,
    /// Fingerprint of the configuration ([`crate::PipelineConfig::fingerprint`]).
    pub config_fingerprint: String,
    /// When the first worker started (µs since the epoch).
    pub created_at: i64,
    /// svgen-data version of the first worker.
    pub svgen_data_version: String,
}

/// One published shard in a [`WorkerMarker`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerShard {
    /// File name in the run folder.
    pub name: String,
    /// Rows.
    pub rows: usize,
}

/// A finished worker's completion marker (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerMarker {
    /// [`MARKER_FORMAT`].
    pub format: String,
    /// Worker index.
    pub index: u32,
    /// Worker count.
    pub count: u32,
    /// Fingerprint of the configuration.
    pub config_fingerprint: String,
    /// Every shard the worker published (all its runs), in order.
    pub shards: Vec<MarkerShard>,
    /// Total rows over `shards`.
    pub rows: usize,
    /// Failure records of the worker.
    pub failures: usize,
    /// The worker's failure log (absent when it has no failure).
    pub failures_file: Option<String>,
    /// When it finished (µs since the epoch).
    pub finished_at: i64,
    /// svgen-data version that finished it.
    pub svgen_data_version: String,
}

impl WorkerMarker {
    /// The worker this marker is for.
    pub fn spec(&self) -> Result<ShardSpec, DataError> {
        ShardSpec::new(self.index, self.count)
    }
}

/// The marker name of worker `spec`: `done-00003-of-00016.json`.
pub fn marker_name(spec: ShardSpec) -> String {
    format!("done-{:05}-of-{:05}.json", spec.index, spec.count)
}

/// Whether `name` is a marker name (and of which worker).
pub fn parse_marker_name(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("done-")?.strip_suffix(".json")?;
    let (i, n) = rest.split_once("-of-")?;
    Some((i.parse().ok()?, n.parse().ok()?))
}

fn parse_json<T: for<'de> Deserialize<'de>>(
    store: &dyn RunStore,
    name: &str,
    bytes: &[u8],
) -> Result<T, DataError> {
    serde_json::from_slice(bytes).map_err(|e| DataError::Parse {
        path: format!("{}/{name}", store.location()).into(),
        message: e.to_string(),
    })
}

/// Reads `run.json` (`None` for a folder from before run manifests).
pub fn read_run_manifest(store: &dyn RunStore) -> Result<Option<RunManifest>, DataError> {
    store
        .get(RUN_MANIFEST)?
        .map(|b| parse_json(store, RUN_MANIFEST, &b))
        .transpose()
}

fn check_manifest(
    store: &dyn RunStore,
    m: &RunManifest,
    spec: ShardSpec,
    fingerprint: &str,
) -> Result<(), DataError> {
    if m.shard_count != spec.count {
        return Err(DataError::ShardCountMismatch {
            location: store.location(),
            run: m.shard_count,
            worker: spec.count,
        });
    }
    if m.config_fingerprint != fingerprint {
        return Err(DataError::ConfigMismatch {
            location: store.location(),
            run: m.config_fingerprint.clone(),
            worker: fingerprint.to_string(),
        });
    }
    Ok(())
}

/// Checks this worker against `run.json`, creating it (put-if-absent) when this is the first
/// worker of the run.
pub fn ensure_run_manifest(
    store: &dyn RunStore,
    spec: ShardSpec,
    fingerprint: &str,
) -> Result<RunManifest, DataError> {
    if let Some(m) = read_run_manifest(store)? {
        check_manifest(store, &m, spec, fingerprint)?;
        return Ok(m);
    }
    let m = RunManifest {
        format: RUN_FORMAT.into(),
        shard_count: spec.count,
        config_fingerprint: fingerprint.to_string(),
        created_at: now_micros(),
        svgen_data_version: env!("CARGO_PKG_VERSION").into(),
    };
    let bytes = serde_json::to_vec_pretty(&m).map_err(|e| DataError::Config(e.to_string()))?;
    if store.put(RUN_MANIFEST, &bytes, WriteMode::CreateNew)? {
        return Ok(m);
    }
    // Another worker created it first: agree with it.
    let theirs = read_run_manifest(store)?.ok_or_else(|| DataError::Store {
        location: store.location(),
        message: "run.json vanished right after being created".into(),
    })?;
    check_manifest(store, &theirs, spec, fingerprint)?;
    Ok(theirs)
}

/// This worker's completion marker, if it finished before.
pub fn read_marker(
    store: &dyn RunStore,
    spec: ShardSpec,
) -> Result<Option<WorkerMarker>, DataError> {
    let name = marker_name(spec);
    store
        .get(&name)?
        .map(|b| parse_json(store, &name, &b))
        .transpose()
}

/// Writes a completion marker, atomically (replacing an older one of the same worker).
pub fn write_marker(store: &dyn RunStore, marker: &WorkerMarker) -> Result<String, DataError> {
    let name = marker_name(marker.spec()?);
    let bytes = serde_json::to_vec_pretty(marker).map_err(|e| DataError::Config(e.to_string()))?;
    store.put(&name, &bytes, WriteMode::Overwrite)?;
    Ok(name)
}

/// Every completion marker in `store`, with its name.
pub fn read_markers(store: &dyn RunStore) -> Result<Vec<(String, WorkerMarker)>, DataError> {
    let mut out = Vec::new();
    for name in store.list()? {
        if parse_marker_name(&name).is_none() {
            continue;
        }
        if let Some(bytes) = store.get(&name)? {
            let m: WorkerMarker = parse_json(store, &name, &bytes)?;
            out.push((name, m));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalDir;

    #[test]
    fn marker_names_round_trip() {
        let spec = ShardSpec::new(3, 16).unwrap();
        assert_eq!(marker_name(spec), "done-00003-of-00016.json");
        assert_eq!(parse_marker_name("done-00003-of-00016.json"), Some((3, 16)));
        assert_eq!(parse_marker_name("done-x-of-2.json"), None);
        assert_eq!(parse_marker_name("run.json"), None);
    }

    #[test]
    fn run_manifest_is_created_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path());
        let a = ensure_run_manifest(&store, ShardSpec::new(0, 4).unwrap(), "f1").unwrap();
        let b = ensure_run_manifest(&store, ShardSpec::new(3, 4).unwrap(), "f1").unwrap();
        assert_eq!(a, b);
        match ensure_run_manifest(&store, ShardSpec::new(1, 5).unwrap(), "f1") {
            Err(DataError::ShardCountMismatch {
                run: 4, worker: 5, ..
            }) => {}
            other => panic!("expected ShardCountMismatch, got {other:?}"),
        }
        match ensure_run_manifest(&store, ShardSpec::new(1, 4).unwrap(), "f2") {
            Err(DataError::ConfigMismatch { run, worker, .. }) => {
                assert_eq!((run.as_str(), worker.as_str()), ("f1", "f2"))
            }
            other => panic!("expected ConfigMismatch, got {other:?}"),
        }
        // No temporary files are left behind.
        let names = store.list().unwrap();
        assert_eq!(names, vec![RUN_MANIFEST.to_string()]);
    }
}
