//! The streaming pipeline: caption → simplify → prompt → generate → decode → normalise →
//! trace → count → label → (CLIP / aesthetic) → Parquet shard.
//!
//! # Threads and memory
//!
//! One reader thread, `network_workers` threads for the network stages (simplification and
//! generation: this is the bound on concurrent HTTP requests), `cpu_workers` threads for
//! decoding, normalisation, tracing and counting, and the calling thread as the single writer.
//! They are joined by bounded channels of `channel_capacity` items, so at most
//! `3 × channel_capacity + workers` samples are in flight whatever the input size, plus one
//! row group buffered by the shard writer.
//!
//! # Exactly once, resumable
//!
//! Every input id ends in exactly one place: a row of a published shard, or a line of
//! `failures.jsonl` (`{id, stage, kind, reason}`). On start the pipeline reads the manifests
//! and failure files of the output folder and skips every id already there; a shard that was
//! renamed but not yet listed in the manifest (a kill in between) is read back and listed.
//! Half-written shards are `.tmp` files, deleted on start. So a run can be killed at any
//! moment and restarted with the same arguments.
//!
//! With `--shard i/N` ([`ShardSpec`]) each worker only takes its ids and names its files
//! `part-i-of-N-*`, `manifest-i-of-N.jsonl`, `failures-i-of-N.jsonl`, so N workers may share
//! one output folder.
//!
//! # Runs of N workers
//!
//! Every worker checks itself against the run's `run.json` (worker count and configuration
//! fingerprint) before doing anything, and a worker that has read its whole input leaves a
//! completion marker `done-i-of-N.json` ([`crate::worker`]). A relaunched finished worker
//! returns at once ([`RunSummary::finished_before`]).
//!
//! # Object-store outputs
//!
//! With [`PipelineConfig::mirror`] set, `out_dir` is a local staging folder and the object
//! store is the run's home: on start the worker rebuilds its manifest and failure log from
//! the store (so it may resume on another machine), after each shard is published locally it
//! is put-if-absent into the store with the new log lines as numbered chunks, the local copy
//! is deleted, and the marker goes to the store ([`crate::store`]).

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::DynamicImage;
use serde::{Deserialize, Serialize};
use svgen_trace::preprocess::{decode_image, BackgroundOptions, DecodeLimits};

use crate::error::{DataError, FailureKind, Stage, StageError};
use crate::generate::{GenerationRequest, ImageGenerator};
use crate::prompt::PromptTemplate;
use crate::sample::{encode_png, is_png, now_micros, seed_for_id, Label, Triplet};
use crate::shard::ShardSpec;
use crate::simplify::{CaptionSimplifier, Simplification};
use crate::source::{Caption, CaptionSource};
use crate::stages::{AestheticScorer, ClipFilter, LabelPolicy, TokenCounter, Tracer};
use crate::storage::{
    append_line, append_manifest, published_ids, read_json_lines, ManifestEntry, ShardOptions,
    ShardWriter,
};
use crate::store::{LocalDir, ObjectOutput, RunStore, WriteMode};
use crate::worker::{
    ensure_run_manifest, marker_name, read_marker, write_marker, MarkerShard, WorkerMarker,
    MARKER_FORMAT,
};

/// The pluggable stages of a run.
pub struct Stages {
    /// Caption simplifier (`None`: captions are used as they are).
    pub simplifier: Option<Box<dyn CaptionSimplifier>>,
    /// Prompt template.
    pub template: PromptTemplate,
    /// Image generator.
    pub generator: Box<dyn ImageGenerator>,
    /// Tracer.
    pub tracer: Box<dyn Tracer>,
    /// Token counter (cl100k by default).
    pub counter: Box<dyn TokenCounter>,
    /// Optional CLIP-similarity scoring / filter.
    pub clip: Option<ClipFilter>,
    /// Optional aesthetic scorer.
    pub aesthetic: Option<Box<dyn AestheticScorer>>,
}

/// Run settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Output folder (shards, manifests, failures).
    pub out_dir: PathBuf,
    /// Which part of the input this worker takes.
    pub shard: ShardSpec,
    /// Shard writer settings.
    pub shard_options: ShardOptions,
    /// Threads for the network stages (= bound on concurrent requests).
    pub network_workers: usize,
    /// Threads for the CPU stages.
    pub cpu_workers: usize,
    /// Capacity of each channel between stages.
    pub channel_capacity: usize,
    /// Labelling threshold.
    pub label: LabelPolicy,
    /// Background normalisation (`None`: off).
    pub background: Option<BackgroundOptions>,
    /// Limits when decoding generated images.
    pub decode_limits: DecodeLimits,
    /// Stop after this many new input records (after sharding and resume skips).
    pub limit: Option<usize>,
    /// Show a progress bar on stderr (only drawn on a terminal).
    pub progress: bool,
    /// A description of the stages' settings (generator, template, simplifier, captions ...),
    /// part of the run's configuration [`fingerprint`](PipelineConfig::fingerprint): workers
    /// of one run must agree on it.
    pub run_tag: String,
    /// Object store that is the run's home; `out_dir` is then a local staging folder (see the
    /// module docs). `None`: `out_dir` is the output.
    pub mirror: Option<Arc<ObjectOutput>>,
}

impl PipelineConfig {
    /// Defaults writing to `out_dir`: all CPU cores, 4 network workers, 8k threshold,
    /// normalisation on.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        PipelineConfig {
            out_dir: out_dir.into(),
            shard: ShardSpec::default(),
            shard_options: ShardOptions::default(),
            network_workers: 4,
            cpu_workers: cores,
            channel_capacity: 16,
            label: LabelPolicy::default(),
            background: Some(BackgroundOptions::default()),
            decode_limits: DecodeLimits::default(),
            limit: None,
            progress: false,
            run_tag: String::new(),
            mirror: None,
        }
    }

    /// Fingerprint of what decides the content of the run's rows: the worker count, the
    /// labelling threshold, background normalisation, decode limits and
    /// [`run_tag`](PipelineConfig::run_tag). Shard sizes, thread counts and limits are not
    /// part of it.
    pub fn fingerprint(&self) -> String {
        let canonical = format!(
            "svgen-run/1|workers={}|label={:?}|background={:?}|decode={:?}|tag={}",
            self.shard.count, self.label, self.background, self.decode_limits, self.run_tag
        );
        format!("{:016x}", crate::sample::fnv1a64(canonical.as_bytes()))
    }

    /// Where the run's files live: the mirror, or `out_dir`.
    pub fn run_store(&self) -> Arc<dyn RunStore> {
        match &self.mirror {
            Some(m) => m.clone(),
            None => Arc::new(LocalDir::new(&self.out_dir)),
        }
    }

    /// This worker's completion marker name.
    pub fn marker_name(&self) -> String {
        marker_name(self.shard)
    }

    fn file_tag(&self) -> String {
        if self.shard.count <= 1 {
            String::new()
        } else {
            format!("-{:05}-of-{:05}", self.shard.index, self.shard.count)
        }
    }

    /// This worker's manifest file.
    pub fn manifest_path(&self) -> PathBuf {
        self.out_dir
            .join(format!("manifest{}.jsonl", self.file_tag()))
    }

    /// This worker's failures file.
    pub fn failures_path(&self) -> PathBuf {
        self.out_dir
            .join(format!("failures{}.jsonl", self.file_tag()))
    }

    fn shard_prefix(&self) -> String {
        format!(
            "part-{:05}-of-{:05}-",
            self.shard.index,
            self.shard.count.max(1)
        )
    }
}

/// One line of `failures.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Input id.
    pub id: String,
    /// Caption source.
    pub source: String,
    /// Stage that failed.
    pub stage: Stage,
    /// Failure class.
    pub kind: FailureKind,
    /// Reason.
    pub reason: String,
    /// When (µs since the epoch).
    pub at: i64,
}

/// Progress events passed to a run hook.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A triplet was appended to the current shard (`total` so far in this run).
    Written {
        /// Triplets written in this run.
        total: usize,
    },
    /// A failure was recorded.
    Failed(FailureRecord),
    /// A shard was published.
    Published(PathBuf),
}

/// Token-count summary.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct TokenStats {
    /// Smallest.
    pub min: usize,
    /// Median.
    pub median: usize,
    /// Mean.
    pub mean: f64,
    /// 95th percentile.
    pub p95: usize,
    /// Largest.
    pub max: usize,
}

impl TokenStats {
    /// Statistics of `counts` (all zero when empty).
    pub fn of(counts: &mut [usize]) -> Self {
        if counts.is_empty() {
            return TokenStats::default();
        }
        counts.sort_unstable();
        let n = counts.len();
        let pct = |p: f64| counts[((n as f64 - 1.0) * p).round() as usize];
        TokenStats {
            min: counts[0],
            median: pct(0.5),
            mean: counts.iter().sum::<usize>() as f64 / n as f64,
            p95: pct(0.95),
            max: counts[n - 1],
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    /// Records read from the source (all shards).
    pub read: usize,
    /// Records owned by other workers (`--shard`).
    pub other_shards: usize,
    /// Records skipped because an earlier run finished them.
    pub already_done: usize,
    /// Triplets written in this run.
    pub written: usize,
    /// Of which positive.
    pub positive: usize,
    /// Of which negative.
    pub negative: usize,
    /// Negatives dropped by `drop_negative`.
    pub dropped_negative: usize,
    /// Images whose dark background was inverted.
    pub inverted: usize,
    /// Failures recorded in this run, by stage.
    pub failed: BTreeMap<String, usize>,
    /// Shards published in this run (for an object-store run: their URLs).
    pub shards: Vec<PathBuf>,
    /// Token statistics of the triplets written in this run.
    pub tokens: TokenStats,
    /// Wall time.
    pub elapsed: Duration,
    /// Output folder of the run ([`PipelineConfig::out_dir`]).
    pub out_dir: PathBuf,
    /// This worker's part of the input ([`PipelineConfig::shard`]).
    pub shard: ShardSpec,
    /// The labelling threshold of the run ([`PipelineConfig::label`]).
    pub label: LabelPolicy,
    /// This worker's failures file ([`PipelineConfig::failures_path`]).
    pub failures_path: PathBuf,
    /// Whether the whole input was read (not cut short by [`PipelineConfig::limit`]).
    pub input_exhausted: bool,
    /// The completion marker written by this run (`None`: the worker has not finished).
    pub marker: Option<String>,
    /// Set when the worker had finished in an earlier run: its marker. Nothing else was done.
    pub finished_before: Option<WorkerMarker>,
}

impl RunSummary {
    /// Total failures.
    pub fn failures(&self) -> usize {
        self.failed.values().sum()
    }
}

/// The summary `build_dataset` prints: a markdown table of counts by stage and outcome, then
/// the token statistics and throughput (or "nothing left to do" on a finished folder), the
/// shards published and the failures file.
///
/// ```text
/// svgen-data run: target/svgen-dataset (shard 0/1)
/// | stage / outcome | count |
/// |---|---:|
/// | records read | 44 |
/// | other workers' records | 0 |
/// | already done (resumed) | 0 |
/// | triplets written | 44 |
/// | positive (< 8000 tokens) | 44 |
/// | negative | 0 |
/// | dark backgrounds inverted | 11 |
/// | shards published | 1 |
/// tokens (cl100k) of the written SVGs: min 311 / median 563 / mean 578 / p95 910 / max 1167
/// 0.2 s, 222.94 triplets/s
/// shard: target/svgen-dataset/part-00000-of-00001-000000.parquet
/// ```
impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(m) = &self.finished_before {
            let plural =
                |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
            return writeln!(
                f,
                "worker {} already finished ({} in {}): {} in {}, {}; nothing to do",
                self.shard,
                marker_name(self.shard),
                self.out_dir.display(),
                plural(m.rows, "row"),
                plural(m.shards.len(), "shard"),
                plural(m.failures, "failure")
            );
        }
        writeln!(
            f,
            "svgen-data run: {} (shard {})",
            self.out_dir.display(),
            self.shard
        )?;
        writeln!(f, "| stage / outcome | count |")?;
        writeln!(f, "|---|---:|")?;
        writeln!(f, "| records read | {} |", self.read)?;
        writeln!(f, "| other workers' records | {} |", self.other_shards)?;
        writeln!(f, "| already done (resumed) | {} |", self.already_done)?;
        writeln!(f, "| triplets written | {} |", self.written)?;
        writeln!(
            f,
            "| positive (< {} tokens) | {} |",
            self.label.max_tokens, self.positive
        )?;
        writeln!(f, "| negative | {} |", self.negative)?;
        if self.label.drop_negative {
            writeln!(f, "| negative dropped | {} |", self.dropped_negative)?;
        }
        writeln!(f, "| dark backgrounds inverted | {} |", self.inverted)?;
        for (stage, n) in &self.failed {
            writeln!(f, "| failed at {stage} | {n} |")?;
        }
        writeln!(f, "| shards published | {} |", self.shards.len())?;
        if self.written > 0 {
            let t = self.tokens;
            writeln!(
                f,
                "tokens (cl100k) of the written SVGs: min {} / median {} / mean {:.0} / p95 {} / max {}",
                t.min, t.median, t.mean, t.p95, t.max
            )?;
            writeln!(
                f,
                "{:.1} s, {:.2} triplets/s",
                self.elapsed.as_secs_f64(),
                self.written as f64 / self.elapsed.as_secs_f64().max(1e-9)
            )?;
        } else if self.already_done > 0 {
            writeln!(
                f,
                "nothing left to do: every input is already in {} (use --fresh to rebuild)",
                self.out_dir.display()
            )?;
        }
        for p in &self.shards {
            writeln!(f, "shard: {}", p.display())?;
        }
        if self.failures() > 0 {
            writeln!(f, "failures: {}", self.failures_path.display())?;
        }
        if let Some(m) = &self.marker {
            writeln!(f, "worker {} finished: {m}", self.shard)?;
        }
        Ok(())
    }
}

struct Job {
    caption: Caption,
}

struct CpuJob {
    caption: Caption,
    simplified: Option<String>,
    prompt: String,
    negative_prompt: String,
    generator: String,
    seed: Option<u64>,
    bytes: Vec<u8>,
}

struct Processed {
    triplet: Triplet,
    inverted: bool,
}

enum Outcome {
    Done(Box<Processed>),
    Failed(FailureRecord),
}

fn failure(c: &Caption, stage: Stage, e: StageError) -> Outcome {
    Outcome::Failed(FailureRecord {
        id: c.id.clone(),
        source: c.source.clone(),
        stage,
        kind: e.kind,
        reason: e.message,
        at: now_micros(),
    })
}

fn recv_shared<T>(rx: &Mutex<Receiver<T>>) -> Option<T> {
    rx.lock().ok()?.recv().ok()
}

fn network_stage(job: Job, stages: &Stages) -> Result<CpuJob, Outcome> {
    let c = job.caption;
    let simplified = match &stages.simplifier {
        None => None,
        Some(s) => match s.simplify(&c.text) {
            Ok(Simplification::Simplified(t)) => Some(t),
            Ok(Simplification::Rejected) => {
                return Err(failure(
                    &c,
                    Stage::Simplify,
                    StageError::rejected("simplifier answered NO"),
                ))
            }
            Err(e) => return Err(failure(&c, Stage::Simplify, e)),
        },
    };
    let object = simplified.as_deref().unwrap_or(&c.text);
    let prompt = stages.template.render(object);
    let request = GenerationRequest {
        id: &c.id,
        prompt: &prompt.prompt,
        negative_prompt: &prompt.negative_prompt,
        seed: seed_for_id(&c.id),
        source_image: c.image.as_deref(),
    };
    match stages.generator.generate(&request) {
        Err(e) => Err(failure(&c, Stage::Generate, e)),
        Ok(img) => Ok(CpuJob {
            simplified,
            prompt: prompt.prompt,
            negative_prompt: prompt.negative_prompt,
            generator: stages.generator.name().to_string(),
            seed: img.seed,
            bytes: img.bytes,
            caption: Caption {
                image: None, // not needed any more: free it early
                ..c
            },
        }),
    }
}

fn cpu_stage(job: CpuJob, stages: &Stages, config: &PipelineConfig) -> Outcome {
    let c = &job.caption;
    let decoded = match decode_image(&job.bytes, &config.decode_limits) {
        Ok(img) => img,
        Err(e) => {
            return failure(
                c,
                Stage::Decode,
                StageError::bad_input(format!("unreadable image: {e}")),
            )
        }
    };
    if decoded.width() == 0 || decoded.height() == 0 {
        return failure(
            c,
            Stage::Decode,
            StageError::bad_input("image has no pixels"),
        );
    }
    let (image, inverted) = match &config.background {
        None => (decoded, false),
        Some(opts) => match crate::stages::normalise_background(&decoded, opts) {
            Ok(r) => r,
            Err(e) => return failure(c, Stage::Normalise, e),
        },
    };
    let svg = match stages.tracer.trace(&image) {
        Ok(s) => s,
        Err(e) => return failure(c, Stage::Trace, e),
    };
    let n_tokens = stages.counter.count(&svg);
    let label = config.label.label(n_tokens);
    let text = job.simplified.as_deref().unwrap_or(&c.text);
    let clip_similarity = match &stages.clip {
        None => None,
        Some(f) => match f.scorer.similarity(&image, text) {
            Err(e) => return failure(c, Stage::Filter, e),
            Ok(s) => {
                if let Some(min) = f.min_similarity {
                    if s < min {
                        return failure(
                            c,
                            Stage::Filter,
                            StageError::rejected(format!("CLIP similarity {s:.4} below {min:.4}")),
                        );
                    }
                }
                Some(s)
            }
        },
    };
    let aesthetic = match &stages.aesthetic {
        None => None,
        Some(a) => match a.aesthetic(&image) {
            Ok(s) => Some(s),
            Err(e) => return failure(c, Stage::Filter, e),
        },
    };
    // Store exactly what was traced, as PNG; reuse the generator's bytes when possible.
    let png = if !inverted && is_png(&job.bytes) {
        job.bytes
    } else {
        match encode_png(&DynamicImage::ImageRgb8(image.to_rgb8())) {
            Ok(b) => b,
            Err(m) => return failure(c, Stage::Normalise, StageError::internal(m)),
        }
    };
    Outcome::Done(Box::new(Processed {
        triplet: Triplet {
            id: c.id.clone(),
            source: c.source.clone(),
            caption: c.text.clone(),
            simplified: job.simplified,
            prompt: job.prompt,
            negative_prompt: Some(job.negative_prompt).filter(|n| !n.is_empty()),
            generator: job.generator,
            seed: job.seed.and_then(|s| i64::try_from(s).ok()),
            image: png,
            width: image.width(),
            height: image.height(),
            svg,
            n_tokens: u32::try_from(n_tokens).unwrap_or(u32::MAX),
            tokenizer: stages.counter.name().to_string(),
            label,
            clip_similarity,
            aesthetic,
            created_at: now_micros(),
        },
        inverted,
    }))
}

/// Ids already finished in `config.out_dir`: published rows and recorded failures (except
/// duplicate-id records), plus the ids that already have a duplicate record.
struct DoneSets {
    done: HashSet<String>,
    dedup_recorded: HashSet<String>,
}

fn load_done(config: &PipelineConfig) -> Result<DoneSets, DataError> {
    let dir = &config.out_dir;
    let mut done = published_ids(dir, &config.manifest_path())?;
    let mut dedup_recorded = HashSet::new();
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let e = e.map_err(|e| DataError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("failures") && name.ends_with(".jsonl") {
            for f in read_json_lines::<FailureRecord>(&e.path())? {
                if f.stage == Stage::Dedup {
                    dedup_recorded.insert(f.id);
                } else {
                    done.insert(f.id);
                }
            }
        }
    }
    Ok(DoneSets {
        done,
        dedup_recorded,
    })
}

/// The sequence number of a shard file name of this worker (`part-…-000012.parquet` → 12).
fn shard_seq(prefix: &str, name: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_suffix(".parquet")?
        .parse::<u64>()
        .ok()
}

/// One past the largest shard sequence number this worker's manifest lists.
fn next_seq_from_manifest(config: &PipelineConfig) -> Result<u64, DataError> {
    let prefix = config.shard_prefix();
    Ok(read_json_lines::<ManifestEntry>(&config.manifest_path())?
        .iter()
        .filter_map(|m| shard_seq(&prefix, &m.shard))
        .map(|s| s + 1)
        .max()
        .unwrap_or(0))
}

/// The marker of a worker that has just read its whole input: every shard its manifest
/// lists and the size of its failure log.
fn build_marker(config: &PipelineConfig, fingerprint: &str) -> Result<WorkerMarker, DataError> {
    let entries = read_json_lines::<ManifestEntry>(&config.manifest_path())?;
    let failures = read_json_lines::<FailureRecord>(&config.failures_path())?.len();
    let shards: Vec<MarkerShard> = entries
        .into_iter()
        .map(|m| MarkerShard {
            name: m.shard,
            rows: m.rows,
        })
        .collect();
    let file_name = |p: PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Ok(WorkerMarker {
        format: MARKER_FORMAT.into(),
        index: config.shard.index,
        count: config.shard.count,
        config_fingerprint: fingerprint.to_string(),
        rows: shards.iter().map(|s| s.rows).sum(),
        shards,
        failures,
        failures_file: (failures > 0).then(|| file_name(config.failures_path())),
        finished_at: now_micros(),
        svgen_data_version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// An append-only local log mirrored to the store as numbered immutable chunks.
struct LogMirror {
    local: PathBuf,
    stem: String,
    uploaded: u64,
    next_chunk: u32,
}

fn chunk_index(stem: &str, name: &str) -> Option<u32> {
    name.strip_prefix(stem)?
        .strip_prefix('.')?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// The object-store side of a run with [`PipelineConfig::mirror`] (see the module docs).
struct RemoteSync {
    out: Arc<ObjectOutput>,
    logs: Vec<LogMirror>,
    next_seq: u64,
    /// Shards found in the store but not in its manifest, downloaded for their ids.
    orphans: Vec<PathBuf>,
}

impl RemoteSync {
    /// Rebuilds this worker's manifest and failure log in the staging folder from the store
    /// (the store is the truth: local leftovers of this worker are deleted first).
    fn restore(out: &Arc<ObjectOutput>, config: &PipelineConfig) -> Result<Self, DataError> {
        let dir = &config.out_dir;
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let prefix = config.shard_prefix();
        let own_logs = [config.manifest_path(), config.failures_path()];
        for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
            let e = e.map_err(|e| DataError::io(dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) || own_logs.iter().any(|p| *p == e.path()) {
                std::fs::remove_file(e.path()).map_err(|err| DataError::io(e.path(), err))?;
            }
        }
        let names = out.list()?;
        let mut logs = Vec::new();
        for local in own_logs {
            let stem = local
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut chunks: Vec<(u32, &String)> = names
                .iter()
                .filter_map(|n| chunk_index(&stem, n).map(|k| (k, n)))
                .collect();
            chunks.sort();
            let mut content = Vec::new();
            for (_, name) in &chunks {
                if let Some(bytes) = out.get(name)? {
                    content.extend_from_slice(&bytes);
                    if content.last().is_some_and(|&b| b != b'\n') {
                        content.push(b'\n');
                    }
                }
            }
            if !content.is_empty() {
                std::fs::write(&local, &content).map_err(|e| DataError::io(&local, e))?;
            }
            logs.push(LogMirror {
                local,
                stem,
                uploaded: content.len() as u64,
                next_chunk: chunks.last().map(|(k, _)| k + 1).unwrap_or(0),
            });
        }
        let listed: HashSet<String> = read_json_lines::<ManifestEntry>(&config.manifest_path())?
            .into_iter()
            .map(|m| m.shard)
            .collect();
        let mut orphans = Vec::new();
        let mut next_seq = 0;
        for name in &names {
            let Some(seq) = shard_seq(&prefix, name) else {
                continue;
            };
            next_seq = next_seq.max(seq + 1);
            if !listed.contains(name) {
                // Published but not yet listed (a kill in between): read its ids back.
                let fetched = out.fetch(name, dir)?;
                let dest = dir.join(name);
                std::fs::rename(fetched.path(), &dest).map_err(|e| DataError::io(&dest, e))?;
                orphans.push(dest);
            }
        }
        Ok(RemoteSync {
            out: out.clone(),
            logs,
            next_seq,
            orphans,
        })
    }

    /// Puts the complete lines appended to the logs since the last call, one chunk each.
    fn sync_logs(&mut self) -> Result<(), DataError> {
        for log in &mut self.logs {
            let bytes = match std::fs::read(&log.local) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(DataError::io(&log.local, e)),
            };
            let start = usize::try_from(log.uploaded).unwrap_or(usize::MAX);
            let Some(new) = bytes.get(start..) else {
                continue;
            };
            let Some(end) = new.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let chunk = &new[..=end];
            let name = format!("{}.{:06}.jsonl", log.stem, log.next_chunk);
            if !self.out.put(&name, chunk, WriteMode::CreateNew)? {
                return Err(DataError::AlreadyPublished {
                    location: self.out.location(),
                    name,
                });
            }
            log.uploaded += chunk.len() as u64;
            log.next_chunk += 1;
        }
        Ok(())
    }

    /// After a local publish: the shard, then its manifest line (and new failures), then the
    /// local copy is dropped.
    fn publish_shard(&mut self, local: &Path) -> Result<(), DataError> {
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.out.publish_file(local, &name)?;
        self.sync_logs()?;
        std::fs::remove_file(local).map_err(|e| DataError::io(local, e))
    }

    /// Lists the downloaded orphans (their manifest lines were appended by `load_done`) and
    /// drops the local copies.
    fn settle_orphans(&mut self) -> Result<(), DataError> {
        self.sync_logs()?;
        for p in self.orphans.drain(..) {
            std::fs::remove_file(&p).map_err(|e| DataError::io(&p, e))?;
        }
        Ok(())
    }
}

/// Deletes this worker's stale `.tmp` shards and returns the next shard sequence number.
fn prepare_out_dir(config: &PipelineConfig) -> Result<u64, DataError> {
    let dir = &config.out_dir;
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let prefix = config.shard_prefix();
    let mut next = 0u64;
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let e = e.map_err(|e| DataError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{prefix}")) && name.ends_with(".tmp") {
            std::fs::remove_file(e.path()).map_err(|err| DataError::io(e.path(), err))?;
        } else if let Some(seq) = shard_seq(&prefix, &name) {
            next = next.max(seq + 1);
        }
    }
    Ok(next)
}

struct Writer<'a> {
    config: &'a PipelineConfig,
    remote: Option<RemoteSync>,
    current: Option<ShardWriter>,
    next_seq: u64,
    summary: RunSummary,
    token_counts: Vec<usize>,
}

impl Writer<'_> {
    fn shard_path(&self) -> PathBuf {
        self.config.out_dir.join(format!(
            "{}{:06}.parquet",
            self.config.shard_prefix(),
            self.next_seq
        ))
    }

    fn write(&mut self, p: Processed) -> Result<bool, DataError> {
        let t = p.triplet;
        let n = t.n_tokens as usize;
        match t.label {
            Label::Negative if self.config.label.drop_negative => {
                self.summary.dropped_negative += 1;
                return Ok(false);
            }
            Label::Negative => self.summary.negative += 1,
            Label::Positive => self.summary.positive += 1,
        }
        self.summary.inverted += usize::from(p.inverted);
        self.token_counts.push(n);
        if self.current.is_none() {
            let path = self.shard_path();
            self.next_seq += 1;
            self.current = Some(ShardWriter::create(path, &self.config.shard_options)?);
        }
        if let Some(w) = self.current.as_mut() {
            w.write(t)?;
        }
        self.summary.written += 1;
        Ok(true)
    }

    fn maybe_publish(&mut self, force: bool) -> Result<Option<PathBuf>, DataError> {
        let full = self
            .current
            .as_ref()
            .is_some_and(|w| w.len() >= self.config.shard_options.rows_per_shard);
        if !(full || force) {
            return Ok(None);
        }
        let Some(w) = self.current.take() else {
            return Ok(None);
        };
        if w.is_empty() {
            w.abort();
            return Ok(None);
        }
        let published = w.finish()?;
        let name = published
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name_for_summary = name.clone();
        append_manifest(
            &self.config.manifest_path(),
            &ManifestEntry {
                shard: name,
                rows: published.ids.len(),
                ids: published.ids,
            },
        )?;
        match self.remote.as_mut() {
            Some(remote) => {
                remote.publish_shard(&published.path)?;
                let url = format!("{}/{name_for_summary}", remote.out.url());
                self.summary.shards.push(PathBuf::from(url));
            }
            None => self.summary.shards.push(published.path.clone()),
        }
        Ok(Some(published.path))
    }
}

/// Runs the pipeline over `source` (see the module docs).
pub fn run(
    source: &mut dyn CaptionSource,
    stages: &Stages,
    config: &PipelineConfig,
) -> Result<RunSummary, DataError> {
    run_with_hook(source, stages, config, &mut |_| ControlFlow::Continue(()))
}

/// [`run`] with a hook called on every event; returning `Break` stops the run at once
/// *without* publishing the current shard (exactly what a kill does; used by tests) and
/// yields [`DataError::Interrupted`].
pub fn run_with_hook(
    source: &mut dyn CaptionSource,
    stages: &Stages,
    config: &PipelineConfig,
    hook: &mut dyn FnMut(&Event) -> ControlFlow<()>,
) -> Result<RunSummary, DataError> {
    if config.network_workers == 0 || config.cpu_workers == 0 || config.channel_capacity == 0 {
        return Err(DataError::Config(
            "worker counts and channel capacity must be positive".into(),
        ));
    }
    let start = Instant::now();
    let store = config.run_store();
    let fingerprint = config.fingerprint();
    ensure_run_manifest(store.as_ref(), config.shard, &fingerprint)?;
    if let Some(marker) = read_marker(store.as_ref(), config.shard)? {
        if marker.config_fingerprint != fingerprint {
            return Err(DataError::ConfigMismatch {
                location: format!("{}/{}", store.location(), config.marker_name()),
                run: marker.config_fingerprint,
                worker: fingerprint,
            });
        }
        return Ok(RunSummary {
            elapsed: start.elapsed(),
            out_dir: config.out_dir.clone(),
            shard: config.shard,
            label: config.label,
            failures_path: config.failures_path(),
            input_exhausted: true,
            finished_before: Some(marker),
            ..RunSummary::default()
        });
    }
    let mut remote = match &config.mirror {
        Some(out) => Some(RemoteSync::restore(out, config)?),
        None => None,
    };
    let mut next_seq = prepare_out_dir(config)?;
    let DoneSets {
        mut done,
        mut dedup_recorded,
    } = load_done(config)?;
    next_seq = next_seq.max(next_seq_from_manifest(config)?);
    if let Some(r) = remote.as_mut() {
        next_seq = next_seq.max(r.next_seq);
        r.settle_orphans()?;
    }

    let cancel = AtomicBool::new(false);
    let (net_tx, net_rx) = sync_channel::<Job>(config.channel_capacity);
    let (cpu_tx, cpu_rx) = sync_channel::<CpuJob>(config.channel_capacity);
    let (out_tx, out_rx) = sync_channel::<Outcome>(config.channel_capacity);
    let net_rx = Arc::new(Mutex::new(net_rx));
    let cpu_rx = Arc::new(Mutex::new(cpu_rx));

    let progress = if config.progress {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {pos} written ({per_sec}) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };

    let mut writer = Writer {
        config,
        remote,
        current: None,
        next_seq,
        summary: RunSummary::default(),
        token_counts: Vec::new(),
    };

    let reader_counts =
        std::thread::scope(|scope| -> Result<(usize, usize, usize, bool), DataError> {
            // Reader.
            let reader_out = out_tx.clone();
            let cancel_ref = &cancel;
            let done_ref = &mut done;
            let dedup_ref = &mut dedup_recorded;
            let reader = scope.spawn(move || {
                let (mut read, mut other, mut already, mut taken) =
                    (0usize, 0usize, 0usize, 0usize);
                let mut exhausted = false;
                let mut seen: HashSet<String> = HashSet::new();
                while !cancel_ref.load(Ordering::Relaxed) {
                    if config.limit.is_some_and(|l| taken >= l) {
                        break;
                    }
                    let Some(record) = source.next_record() else {
                        exhausted = true;
                        break;
                    };
                    read += 1;
                    let id = match &record {
                        Ok(c) => c.id.clone(),
                        Err(f) => f.id.clone(),
                    };
                    if !config.shard.contains(&id) {
                        other += 1;
                        continue;
                    }
                    let first_time = seen.insert(id.clone());
                    if !first_time {
                        if dedup_ref.insert(id.clone()) {
                            taken += 1;
                            let c = match &record {
                                Ok(c) => c.source.clone(),
                                Err(_) => source.name().to_string(),
                            };
                            let rec = FailureRecord {
                                id,
                                source: c,
                                stage: Stage::Dedup,
                                kind: FailureKind::BadInput,
                                reason: "duplicate id: an earlier record with this id is kept"
                                    .into(),
                                at: now_micros(),
                            };
                            if reader_out.send(Outcome::Failed(rec)).is_err() {
                                break;
                            }
                        }
                        continue;
                    }
                    if done_ref.contains(&id) {
                        already += 1;
                        continue;
                    }
                    taken += 1;
                    let sent = match record {
                        Ok(caption) => net_tx.send(Job { caption }).is_ok(),
                        Err(f) => reader_out
                            .send(Outcome::Failed(FailureRecord {
                                id: f.id,
                                source: source.name().to_string(),
                                stage: Stage::Source,
                                kind: FailureKind::BadInput,
                                reason: f.reason,
                                at: now_micros(),
                            }))
                            .is_ok(),
                    };
                    if !sent {
                        break;
                    }
                }
                drop(net_tx);
                (read, other, already, exhausted)
            });

            // Network workers.
            for _ in 0..config.network_workers {
                let rx = Arc::clone(&net_rx);
                let cpu_tx = cpu_tx.clone();
                let out_tx = out_tx.clone();
                let cancel_ref = &cancel;
                scope.spawn(move || {
                    while let Some(job) = recv_shared(&rx) {
                        if cancel_ref.load(Ordering::Relaxed) {
                            break;
                        }
                        let sent = match network_stage(job, stages) {
                            Ok(cpu_job) => cpu_tx.send(cpu_job).is_ok(),
                            Err(outcome) => out_tx.send(outcome).is_ok(),
                        };
                        if !sent {
                            break;
                        }
                    }
                });
            }
            drop(cpu_tx);

            // CPU workers.
            for _ in 0..config.cpu_workers {
                let rx = Arc::clone(&cpu_rx);
                let out_tx = out_tx.clone();
                let cancel_ref = &cancel;
                scope.spawn(move || {
                    while let Some(job) = recv_shared(&rx) {
                        if cancel_ref.load(Ordering::Relaxed) {
                            break;
                        }
                        if out_tx.send(cpu_stage(job, stages, config)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(out_tx);
            // Only the workers may hold the receivers: when they stop (normally or on
            // cancellation) the channels close and every blocked sender upstream wakes up.
            drop(net_rx);
            drop(cpu_rx);

            // Writer (this thread).
            let result = (|| -> Result<(), DataError> {
                let failures_path = config.failures_path();
                for outcome in out_rx.iter() {
                    match outcome {
                        Outcome::Done(p) => {
                            if writer.write(*p)? {
                                progress.inc(1);
                                let ev = Event::Written {
                                    total: writer.summary.written,
                                };
                                if hook(&ev).is_break() {
                                    return Err(DataError::Interrupted(writer.summary.written));
                                }
                            }
                            if let Some(path) = writer.maybe_publish(false)? {
                                if hook(&Event::Published(path)).is_break() {
                                    return Err(DataError::Interrupted(writer.summary.written));
                                }
                            }
                        }
                        Outcome::Failed(rec) => {
                            let line = serde_json::to_string(&rec)
                                .map_err(|e| DataError::Config(e.to_string()))?;
                            append_line(&failures_path, &line)?;
                            *writer
                                .summary
                                .failed
                                .entry(rec.stage.as_str().to_string())
                                .or_default() += 1;
                            progress.set_message(format!("{} failed", writer.summary.failures()));
                            if hook(&Event::Failed(rec)).is_break() {
                                return Err(DataError::Interrupted(writer.summary.written));
                            }
                        }
                    }
                }
                if let Some(path) = writer.maybe_publish(true)? {
                    if hook(&Event::Published(path)).is_break() {
                        return Err(DataError::Interrupted(writer.summary.written));
                    }
                }
                Ok(())
            })();
            if result.is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
            // Dropping the receiver unblocks every sender; the scope then joins all threads.
            drop(out_rx);
            let counts = reader
                .join()
                .map_err(|_| DataError::Config("reader thread panicked".into()))?;
            result.map(|_| counts)
        });
    progress.finish_and_clear();
    let (read, other, already, exhausted) = match reader_counts {
        Ok(c) => c,
        Err(e) => {
            // An interrupted run leaves its temporary shard on disk, as a kill would; any other
            // error removes it so nothing partial is ever left behind.
            if !matches!(e, DataError::Interrupted(_)) {
                if let Some(w) = writer.current.take() {
                    w.abort();
                }
            }
            return Err(e);
        }
    };
    let mut marker = None;
    if exhausted {
        if let Some(r) = writer.remote.as_mut() {
            r.sync_logs()?;
        }
        marker = Some(write_marker(
            store.as_ref(),
            &build_marker(config, &fingerprint)?,
        )?);
    }
    let mut summary = writer.summary;
    summary.input_exhausted = exhausted;
    summary.marker = marker;
    summary.read = read;
    summary.other_shards = other;
    summary.already_done = already;
    summary.tokens = TokenStats::of(&mut writer.token_counts);
    summary.elapsed = start.elapsed();
    summary.out_dir = config.out_dir.clone();
    summary.shard = config.shard;
    summary.label = config.label;
    summary.failures_path = config.failures_path();
    Ok(summary)
}

/// Reads every `failures*.jsonl` in `dir`.
pub fn read_failures(dir: &Path) -> Result<Vec<FailureRecord>, DataError> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with("failures") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    for f in files {
        out.extend(read_json_lines::<FailureRecord>(&f)?);
    }
    Ok(out)
}
