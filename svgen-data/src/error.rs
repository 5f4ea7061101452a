//! Error types of the dataset pipeline.
//!
//! Two levels exist on purpose:
//! - [`DataError`] stops a run (bad configuration, unreadable input file, I/O failure while
//!   publishing a shard, a full disk, ...);
//! - [`StageError`] concerns one sample only. The pipeline records it in `failures.jsonl`
//!   (id + stage + reason) and carries on with the next sample.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A run-stopping error.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O operation on `path` failed (this includes `ENOSPC`, a full disk).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading a Parquet shard failed.
    #[error("parquet error on {path}: {message}")]
    Parquet {
        /// The shard involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An input file could not be parsed at all (a per-record problem is a [`StageError`]).
    #[error("cannot parse {path}: {message}")]
    Parse {
        /// The input file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A shard's schema does not match the documented one.
    #[error("shard {path} does not have the svgen schema: {message}")]
    Schema {
        /// The shard involved.
        path: PathBuf,
        /// The mismatch.
        message: String,
    },
    /// The API-key environment variable named in the configuration is not set.
    #[error("environment variable {0} (API key) is not set")]
    MissingApiKey(String),
    /// An invalid configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The run was interrupted on purpose (e.g. by a test hook); nothing half-written was published.
    #[error("run interrupted after {0} samples")]
    Interrupted(usize),
    /// This worker's shard index and count could not be determined, or are out of range.
    #[error(transparent)]
    Shard(#[from] crate::shard::ShardError),
    /// The worker count of this worker disagrees with the run's `run.json`.
    #[error(
        "{location}: the run was started with {run} workers but this worker was launched as one \
         of {worker}; relaunch with the original count (--shard-count {run}), or use a new output"
    )]
    ShardCountMismatch {
        /// The run's location.
        location: String,
        /// Workers recorded in `run.json`.
        run: u32,
        /// Workers this worker was told about.
        worker: u32,
    },
    /// The configuration of this worker (thresholds, generator, captions ...) differs from the
    /// one the run was started with, so its output could not be mixed with the run's.
    #[error(
        "{location}: this worker's configuration (fingerprint {worker}) differs from the run's \
         ({run}); relaunch with the run's settings, or use a new output"
    )]
    ConfigMismatch {
        /// The run's location.
        location: String,
        /// Fingerprint recorded by the run (`run.json` or a completion marker).
        run: String,
        /// Fingerprint of this worker's configuration.
        worker: String,
    },
    /// `merge`: some workers of the run have no completion marker, or have several.
    #[error("{}", workers_message(*count, missing, duplicated))]
    WorkersIncomplete {
        /// Workers of the run.
        count: u32,
        /// Worker indices without a completion marker (unfinished or never started).
        missing: Vec<u32>,
        /// Worker indices with a marker in more than one input, and those inputs.
        duplicated: Vec<(u32, Vec<String>)>,
    },
    /// `merge`: ids that appear in more than one row of the run's shards.
    #[error("{count} ids appear more than once in the shards, e.g. {}", examples.join(", "))]
    DuplicateIds {
        /// Rows whose id was already seen.
        count: usize,
        /// The first few such ids.
        examples: Vec<String>,
    },
    /// `merge`: inputs without `run.json` and completion markers (written before they existed).
    #[error(
        "{} predate completion markers (no run.json / done-*.json), so merge cannot check that \
         every worker finished; pass --allow-unmarked to merge them as before (de-duplicated, \
         unchecked)",
        locations.join(", ")
    )]
    Unmarked {
        /// The inputs concerned.
        locations: Vec<String>,
    },
    /// A completion marker lists shards that are not in its output.
    #[error("{location}: shards listed in completion markers are missing: {}", shards.join(", "))]
    MissingShards {
        /// The input concerned.
        location: String,
        /// Missing shard names.
        shards: Vec<String>,
    },
    /// An object-store operation failed (or the store is not available in this build).
    #[error("object store {location}: {message}")]
    Store {
        /// URL or path of the store location.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// A put-if-absent found the object already there: another process with the same worker
    /// index is writing to the same output.
    #[error(
        "{location}: {name} already exists; is another worker with the same index running on this output?"
    )]
    AlreadyPublished {
        /// The output.
        location: String,
        /// The object name.
        name: String,
    },
}

fn workers_message(count: u32, missing: &[u32], duplicated: &[(u32, Vec<String>)]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(u32::to_string).collect();
        parts.push(format!(
            "{} of {count} workers have not finished (no completion marker): {}",
            missing.len(),
            list.join(", ")
        ));
    }
    if !duplicated.is_empty() {
        let list: Vec<String> = duplicated
            .iter()
            .map(|(i, at)| format!("{i} (in {})", at.join(" and ")))
            .collect();
        parts.push(format!(
            "workers with more than one completion marker: {}",
            list.join(", ")
        ));
    }
    parts.join("; ")
}

impl DataError {
    /// Wraps an [`std::io::Error`] with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The pipeline stage a per-sample failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the caption (bad UTF-8, bad JSON line, missing field).
    Source,
    /// A second record with an id that was already seen.
    Dedup,
    /// Caption simplification (LLM call).
    Simplify,
    /// Image generation or lookup.
    Generate,
    /// Decoding the image bytes.
    Decode,
    /// Background normalisation.
    Normalise,
    /// Bitmap tracing.
    Trace,
    /// Token counting / labelling.
    Count,
    /// CLIP-similarity or aesthetic filter.
    Filter,
}

impl Stage {
    /// The stage's stable, snake_case name (as written to `failures.jsonl`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Dedup => "dedup",
            Stage::Simplify => "simplify",
            Stage::Generate => "generate",
            Stage::Decode => "decode",
            Stage::Normalise => "normalise",
            Stage::Trace => "trace",
            Stage::Count => "count",
            Stage::Filter => "filter",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A per-sample failure: recorded, never silently dropped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct StageError {
    /// What kind of failure it is (decides whether a retry may help).
    pub kind: FailureKind,
    /// Human-readable reason.
    pub message: String,
}

/// Classification of a [`StageError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Network timeout.
    Timeout,
    /// HTTP 429 (rate limited), after all retries.
    RateLimited,
    /// HTTP 5xx, after all retries.
    Server,
    /// Other HTTP status (4xx): retrying will not help.
    Http,
    /// The server answered but the body is not what the wire format says.
    Protocol,
    /// Connection refused, DNS, TLS ...
    Transport,
    /// The input record itself is bad (bad UTF-8, unreadable image, missing field).
    BadInput,
    /// The sample was rejected on purpose (LLM said "NO", below the CLIP threshold, ...).
    Rejected,
    /// A local stage (trace, count, scorer) failed.
    Internal,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            FailureKind::Timeout => "timeout",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Server => "server",
            FailureKind::Http => "http",
            FailureKind::Protocol => "protocol",
            FailureKind::Transport => "transport",
            FailureKind::BadInput => "bad_input",
            FailureKind::Rejected => "rejected",
            FailureKind::Internal => "internal",
        };
        f.write_str(s)
    }
}

impl StageError {
    /// Builds a failure of the given kind.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        StageError {
            kind,
            message: message.into(),
        }
    }

    /// A bad-input failure.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(FailureKind::BadInput, message)
    }

    /// A deliberate rejection.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Rejected, message)
    }

    /// A failure of a local computation.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Internal, message)
    }

    /// Whether another attempt may succeed (timeouts, 429, 5xx, transport errors).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Timeout
                | FailureKind::RateLimited
                | FailureKind::Server
                | FailureKind::Transport
        )
    }
}
