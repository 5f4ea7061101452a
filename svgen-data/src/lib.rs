//! # svgen-data
//!
//! The (text, image, SVG) triplet pipeline of the thesis as composable stages and a
//! streaming, sharded, resumable runner:
//!
//! caption ([`source::CaptionSource`]) → simplification ([`simplify::CaptionSimplifier`],
//! "NO" = rejected) → prompt ([`prompt::PromptTemplate`]) → image
//! ([`generate::ImageGenerator`]) → dark-background normalisation and tracing
//! ([`stages::Tracer`], svgen-trace) → token count and label ([`stages::LabelPolicy`]) →
//! optional CLIP / aesthetic filter ([`eval::EvalScorer`], svgen-eval) → Parquet shards
//! ([`storage`]).
//!
//! Every per-sample problem is recorded in `failures.jsonl` with its stage and reason;
//! the run continues ([`error::StageError`]). Run-level problems are a typed
//! [`error::DataError`].
//!
//! [`RunSummary`] and [`tools::DatasetStats`] print as the tables `build_dataset` shows
//! (`Display`).
//!
//! Readers of (description, SVG) [`Pair`]s for training and evaluation (our shards, MMSVG,
//! icon sets, JSON lines) live in [`pairs`]; `stats`, `merge` and the folder export in
//! [`tools`]. Runs of N workers (Slurm arrays, Kubernetes Indexed Jobs: [`shard`]) leave
//! completion markers ([`worker`]) and may write to object stores ([`store`]); `merge` checks
//! that every worker finished. The embedded default job (no network, no weights) is in [`default_job`];
//! `cargo run --release --example build_dataset` runs it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod default_job;
pub mod error;
pub mod eval;
pub mod generate;
pub mod http;
pub mod pairs;
pub mod pipeline;
pub mod prompt;
pub mod sample;
pub mod shard;
pub mod simplify;
pub mod source;
pub mod stages;
pub mod storage;
pub mod store;
pub mod tools;
pub mod worker;

pub use error::{DataError, FailureKind, Stage, StageError};
pub use pairs::{Pair, PairDataset};
pub use pipeline::{run, run_with_hook, PipelineConfig, RunSummary, Stages};
pub use sample::{Label, Triplet};
pub use shard::{resolve_shard_from_env, ShardArgs, ShardSpec};
pub use store::OutputLocation;
