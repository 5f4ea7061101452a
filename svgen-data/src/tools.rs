//! Whole-dataset commands: `stats`, `merge` (checked against the run's completion markers),
//! and the plain-folder export.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::error::DataError;
use crate::generate::file_stem_for_id;
use crate::pipeline::{read_failures, FailureRecord, TokenStats};
use crate::sample::Label;
use crate::shard::ShardSpec;
use crate::storage::{
    append_manifest, for_each_triplet, json_lines_from_slice, list_shards, read_json_lines,
    ManifestEntry, ShardOptions, ShardWriter,
};
use crate::store::{LocalDir, RunStore};
use crate::worker::{read_markers, read_run_manifest, MarkerShard, RunManifest, WorkerMarker};

/// Statistics of an output folder.
///
/// `Display` writes the markdown table of `build_dataset stats`; the JSON form (`--json`) is
/// the serde serialisation, which leaves out [`DatasetStats::dir`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct DatasetStats {
    /// The folder these statistics describe (the table's title; not serialised).
    #[serde(skip)]
    pub dir: PathBuf,
    /// Published shards.
    pub shards: usize,
    /// Rows.
    pub rows: usize,
    /// Rows whose id was already seen in an earlier row (should be 0).
    pub duplicate_ids: usize,
    /// Positive rows.
    pub positive: usize,
    /// Negative rows.
    pub negative: usize,
    /// Rows per source.
    pub by_source: BTreeMap<String, usize>,
    /// Rows per generator.
    pub by_generator: BTreeMap<String, usize>,
    /// Token statistics over all rows.
    pub tokens: TokenStats,
    /// Mean CLIP similarity over scored rows.
    pub mean_clip_similarity: Option<f64>,
    /// Mean aesthetic score over scored rows.
    pub mean_aesthetic: Option<f64>,
    /// Bytes of PNG and SVG data.
    pub image_bytes: u64,
    /// Bytes of SVG text.
    pub svg_bytes: u64,
    /// Recorded failures by stage.
    pub failures: BTreeMap<String, usize>,
}

/// Reads every shard of `dir` (one batch at a time) and its failure files.
pub fn stats(dir: impl AsRef<Path>) -> Result<DatasetStats, DataError> {
    let dir = dir.as_ref();
    let mut s = DatasetStats {
        dir: dir.to_path_buf(),
        ..DatasetStats::default()
    };
    let mut seen = HashSet::new();
    let mut tokens = Vec::new();
    let (mut clip_sum, mut clip_n, mut aes_sum, mut aes_n) = (0f64, 0usize, 0f64, 0usize);
    let shards = list_shards(dir)?;
    s.shards = shards.len();
    for shard in &shards {
        for_each_triplet(shard, |t| {
            s.rows += 1;
            if !seen.insert(t.id.clone()) {
                s.duplicate_ids += 1;
            }
            match t.label {
                Label::Positive => s.positive += 1,
                Label::Negative => s.negative += 1,
            }
            *s.by_source.entry(t.source).or_default() += 1;
            *s.by_generator.entry(t.generator).or_default() += 1;
            tokens.push(t.n_tokens as usize);
            if let Some(c) = t.clip_similarity {
                clip_sum += f64::from(c);
                clip_n += 1;
            }
            if let Some(a) = t.aesthetic {
                aes_sum += f64::from(a);
                aes_n += 1;
            }
            s.image_bytes += t.image.len() as u64;
            s.svg_bytes += t.svg.len() as u64;
            Ok(())
        })?;
    }
    s.tokens = TokenStats::of(&mut tokens);
    s.mean_clip_similarity = (clip_n > 0).then(|| clip_sum / clip_n as f64);
    s.mean_aesthetic = (aes_n > 0).then(|| aes_sum / aes_n as f64);
    for f in read_failures(dir)? {
        *s.failures.entry(f.stage.as_str().to_string()).or_default() += 1;
    }
    Ok(s)
}

/// The table `build_dataset stats` prints: one `| what | value |` row per count, the mean
/// CLIP similarity and aesthetic score only when rows were scored, then the rows per source,
/// per generator and the failures per stage.
impl std::fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "| {} | |", self.dir.display())?;
        writeln!(f, "|---|---:|")?;
        writeln!(f, "| shards | {} |", self.shards)?;
        writeln!(f, "| rows | {} |", self.rows)?;
        writeln!(f, "| duplicate ids | {} |", self.duplicate_ids)?;
        writeln!(f, "| positive | {} |", self.positive)?;
        writeln!(f, "| negative | {} |", self.negative)?;
        let t = &self.tokens;
        writeln!(
            f,
            "| tokens min / median / mean / p95 / max | {} / {} / {:.0} / {} / {} |",
            t.min, t.median, t.mean, t.p95, t.max
        )?;
        if let Some(c) = self.mean_clip_similarity {
            writeln!(f, "| mean CLIP similarity | {c:.4} |")?;
        }
        if let Some(a) = self.mean_aesthetic {
            writeln!(f, "| mean aesthetic | {a:.3} |")?;
        }
        writeln!(f, "| PNG bytes | {} |", self.image_bytes)?;
        writeln!(f, "| SVG bytes | {} |", self.svg_bytes)?;
        for (k, v) in &self.by_source {
            writeln!(f, "| source {k} | {v} |")?;
        }
        for (k, v) in &self.by_generator {
            writeln!(f, "| generator {k} | {v} |")?;
        }
        for (k, v) in &self.failures {
            writeln!(f, "| failed at {k} | {v} |")?;
        }
        Ok(())
    }
}

/// What [`merge`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MergeSummary {
    /// Rows read.
    pub read: usize,
    /// Rows written.
    pub written: usize,
    /// Rows dropped because their id was already written (only with
    /// [`MergeOptions::allow_unmarked`] on folders without markers; a checked merge refuses
    /// duplicates instead).
    pub duplicates: usize,
    /// Shards written.
    pub shards: Vec<PathBuf>,
    /// Workers of the merged run (`None`: an unchecked merge of unmarked folders).
    pub workers: Option<u32>,
}

/// Settings of [`merge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MergeOptions {
    /// Shard writer settings of the merged output.
    pub shard_options: ShardOptions,
    /// Merge inputs without `run.json` and completion markers (written before they existed)
    /// as before: every shard of every input, de-duplicated by id (first row kept), with no
    /// check that every worker finished.
    pub allow_unmarked: bool,
}

struct MergeInput {
    store: Arc<dyn RunStore>,
    names: Vec<String>,
    manifest: Option<RunManifest>,
    markers: Vec<(String, WorkerMarker)>,
}

/// Merges the output folders of a run (the N workers of a `--shard` run sharing a folder, or
/// spread over several folders) into the folder `out`, re-cut to `rows_per_shard` rows.
/// See [`merge_stores`].
pub fn merge(
    inputs: &[PathBuf],
    out: impl AsRef<Path>,
    options: &MergeOptions,
) -> Result<MergeSummary, DataError> {
    let stores: Vec<Arc<dyn RunStore>> = inputs
        .iter()
        .map(|p| Arc::new(LocalDir::new(p)) as Arc<dyn RunStore>)
        .collect();
    merge_stores(&stores, out, options)
}

/// Merges runs in local folders or object stores into the local folder `out`.
///
/// Checks first, writes after: all inputs belong to one run (same `run.json` worker count
/// and fingerprint, else [`DataError::ShardCountMismatch`] / [`DataError::ConfigMismatch`]);
/// every worker `0..N` has exactly one completion marker ([`DataError::WorkersIncomplete`]
/// lists the missing and duplicated ones); every shard a marker lists exists
/// ([`DataError::MissingShards`]). Then exactly the listed shards are copied; an id seen twice
/// is [`DataError::DuplicateIds`] (listing them; nothing is left in `out`). Failures of the
/// run are carried over, except for ids that have a row.
///
/// The output is itself a finished one-worker run (`run.json`, `done-00000-of-00001.json`,
/// `manifest.jsonl`, `failures.jsonl`), published atomically shard by shard.
///
/// Inputs without markers are refused ([`DataError::Unmarked`]) unless
/// [`MergeOptions::allow_unmarked`].
pub fn merge_stores(
    inputs: &[Arc<dyn RunStore>],
    out: impl AsRef<Path>,
    options: &MergeOptions,
) -> Result<MergeSummary, DataError> {
    let out = out.as_ref();
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    if !list_shards(out)?.is_empty() {
        return Err(DataError::Config(format!(
            "merge output {} already holds shards",
            out.display()
        )));
    }
    let mut gathered = Vec::new();
    for store in inputs {
        gathered.push(MergeInput {
            names: store.list()?,
            manifest: read_run_manifest(store.as_ref())?,
            markers: read_markers(store.as_ref())?,
            store: store.clone(),
        });
    }
    let unmarked: Vec<String> = gathered
        .iter()
        .filter(|i| i.manifest.is_none() && i.markers.is_empty())
        .map(|i| i.store.location())
        .collect();
    if !unmarked.is_empty() {
        if options.allow_unmarked {
            return merge_unchecked(&gathered, out, &options.shard_options);
        }
        return Err(DataError::Unmarked {
            locations: unmarked,
        });
    }
    let (count, fingerprint) = run_identity(&gathered)?;

    // Every worker exactly once.
    let mut by_index: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for input in &gathered {
        for (_, m) in &input.markers {
            by_index
                .entry(m.index)
                .or_default()
                .push(input.store.location());
        }
    }
    let missing: Vec<u32> = (0..count).filter(|i| !by_index.contains_key(i)).collect();
    let duplicated: Vec<(u32, Vec<String>)> = by_index
        .into_iter()
        .filter(|(_, at)| at.len() > 1)
        .collect();
    if !missing.is_empty() || !duplicated.is_empty() {
        return Err(DataError::WorkersIncomplete {
            count,
            missing,
            duplicated,
        });
    }
    // Every listed shard present.
    for input in &gathered {
        let present: HashSet<&str> = input.names.iter().map(String::as_str).collect();
        let absent: Vec<String> = input
            .markers
            .iter()
            .flat_map(|(_, m)| m.shards.iter())
            .filter(|s| !present.contains(s.name.as_str()))
            .map(|s| s.name.clone())
            .collect();
        if !absent.is_empty() {
            return Err(DataError::MissingShards {
                location: input.store.location(),
                shards: absent,
            });
        }
    }

    let mut writer = MergeWriter::new(out, options.shard_options);
    let mut seen = HashSet::new();
    let (mut dup_count, mut dup_examples) = (0usize, Vec::new());
    let mut failure_lines = Vec::new();
    let result = (|| -> Result<(), DataError> {
        for input in &gathered {
            let mut markers: Vec<&WorkerMarker> = input.markers.iter().map(|(_, m)| m).collect();
            markers.sort_by_key(|m| m.index);
            for m in markers {
                for shard in &m.shards {
                    let file = input.store.fetch(&shard.name, out)?;
                    let mut rows = 0usize;
                    for_each_triplet(file.path(), |t| {
                        rows += 1;
                        writer.summary.read += 1;
                        if !seen.insert(t.id.clone()) {
                            dup_count += 1;
                            if dup_examples.len() < 20 {
                                dup_examples.push(t.id);
                            }
                            return Ok(());
                        }
                        writer.write(t)
                    })?;
                    if rows != shard.rows {
                        return Err(DataError::Schema {
                            path: format!("{}/{}", input.store.location(), shard.name).into(),
                            message: format!(
                                "its completion marker says {} rows, the shard has {rows}",
                                shard.rows
                            ),
                        });
                    }
                }
                failure_lines.extend(worker_failures(input, m)?);
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        writer.discard();
        return Err(e);
    }
    if dup_count > 0 {
        writer.discard();
        return Err(DataError::DuplicateIds {
            count: dup_count,
            examples: dup_examples,
        });
    }
    let mut summary = writer.finish()?;
    write_failures(out, failure_lines, &seen)?;
    // The merged output is a finished one-worker run.
    let local = LocalDir::new(out);
    let one = ShardSpec::default();
    crate::worker::ensure_run_manifest(&local, one, &fingerprint)?;
    let entries = read_json_lines::<ManifestEntry>(&out.join("manifest.jsonl"))?;
    let failures = read_json_lines::<FailureRecord>(&out.join("failures.jsonl"))?.len();
    let shards: Vec<MarkerShard> = entries
        .into_iter()
        .map(|e| MarkerShard {
            name: e.shard,
            rows: e.rows,
        })
        .collect();
    crate::worker::write_marker(
        &local,
        &WorkerMarker {
            format: crate::worker::MARKER_FORMAT.into(),
            index: 0,
            count: 1,
            config_fingerprint: fingerprint,
            rows: shards.iter().map(|s| s.rows).sum(),
            shards,
            failures,
            failures_file: (failures > 0).then(|| "failures.jsonl".to_string()),
            finished_at: crate::sample::now_micros(),
            svgen_data_version: env!("CARGO_PKG_VERSION").into(),
        },
    )?;
    summary.workers = Some(count);
    Ok(summary)
}

/// The worker count and fingerprint all inputs agree on.
fn run_identity(inputs: &[MergeInput]) -> Result<(u32, String), DataError> {
    let reference = inputs
        .iter()
        .find_map(|i| {
            i.manifest
                .as_ref()
                .map(|m| (m.shard_count, m.config_fingerprint.clone()))
        })
        .or_else(|| {
            inputs.iter().find_map(|i| {
                i.markers
                    .first()
                    .map(|(_, m)| (m.count, m.config_fingerprint.clone()))
            })
        })
        .ok_or_else(|| DataError::Config("no run to merge".into()))?;
    let (count, fingerprint) = reference;
    let check = |location: String, n: u32, f: &str| -> Result<(), DataError> {
        if n != count {
            return Err(DataError::ShardCountMismatch {
                location,
                run: count,
                worker: n,
            });
        }
        if f != fingerprint {
            return Err(DataError::ConfigMismatch {
                location,
                run: fingerprint.clone(),
                worker: f.to_string(),
            });
        }
        Ok(())
    };
    for i in inputs {
        if let Some(m) = &i.manifest {
            check(
                format!("{}/{}", i.store.location(), crate::worker::RUN_MANIFEST),
                m.shard_count,
                &m.config_fingerprint,
            )?;
        }
        for (name, m) in &i.markers {
            check(
                format!("{}/{name}", i.store.location()),
                m.count,
                &m.config_fingerprint,
            )?;
        }
    }
    Ok((count, fingerprint))
}

/// The failure records of worker `m` in `input`: its failure file, or the numbered chunks of
/// it in an object store.
fn worker_failures(input: &MergeInput, m: &WorkerMarker) -> Result<Vec<FailureRecord>, DataError> {
    let Some(file) = &m.failures_file else {
        return Ok(Vec::new());
    };
    let stem = file.strip_suffix(".jsonl").unwrap_or(file);
    let mut chunks: Vec<(u32, &String)> = input
        .names
        .iter()
        .filter_map(|n| {
            if n == file {
                Some((0, n))
            } else {
                n.strip_prefix(stem)?
                    .strip_prefix('.')?
                    .strip_suffix(".jsonl")?
                    .parse::<u32>()
                    .ok()
                    .map(|k| (k, n))
            }
        })
        .collect();
    chunks.sort();
    let mut out = Vec::new();
    for (_, name) in chunks {
        if let Some(bytes) = input.store.get(name)? {
            out.extend(json_lines_from_slice::<FailureRecord>(&bytes));
        }
    }
    Ok(out)
}

/// Writes the failures of ids without a row, once per (id, stage).
fn write_failures(
    out: &Path,
    failure_lines: Vec<FailureRecord>,
    seen: &HashSet<String>,
) -> Result<(), DataError> {
    let failures_path = out.join("failures.jsonl");
    let mut recorded = HashSet::new();
    for f in failure_lines {
        if !seen.contains(&f.id) && recorded.insert((f.id.clone(), f.stage)) {
            let line = serde_json::to_string(&f).map_err(|e| DataError::Config(e.to_string()))?;
            crate::storage::append_line(&failures_path, &line)?;
        }
    }
    Ok(())
}

/// Writes merged rows into `part-merged-*.parquet` shards with a manifest.
struct MergeWriter {
    out: PathBuf,
    options: ShardOptions,
    current: Option<ShardWriter>,
    seq: usize,
    summary: MergeSummary,
}

impl MergeWriter {
    fn new(out: &Path, options: ShardOptions) -> Self {
        MergeWriter {
            out: out.to_path_buf(),
            options,
            current: None,
            seq: 0,
            summary: MergeSummary::default(),
        }
    }

    fn publish(&mut self, w: ShardWriter) -> Result<(), DataError> {
        let p = w.finish()?;
        let name = p
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        append_manifest(
            &self.out.join("manifest.jsonl"),
            &ManifestEntry {
                shard: name,
                rows: p.ids.len(),
                ids: p.ids,
            },
        )?;
        self.summary.shards.push(p.path);
        Ok(())
    }

    fn write(&mut self, t: crate::sample::Triplet) -> Result<(), DataError> {
        if self.current.is_none() {
            let path = self
                .out
                .join(format!("part-merged-{:06}.parquet", self.seq));
            self.seq += 1;
            self.current = Some(ShardWriter::create(path, &self.options)?);
        }
        if let Some(w) = self.current.as_mut() {
            w.write(t)?;
            self.summary.written += 1;
            if w.len() >= self.options.rows_per_shard {
                if let Some(w) = self.current.take() {
                    self.publish(w)?;
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<MergeSummary, DataError> {
        if let Some(w) = self.current.take() {
            if w.is_empty() {
                w.abort();
            } else {
                self.publish(w)?;
            }
        }
        Ok(self.summary)
    }

    /// Removes everything written (a merge that fails leaves no partial output).
    fn discard(mut self) {
        if let Some(w) = self.current.take() {
            w.abort();
        }
        for p in &self.summary.shards {
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_file(self.out.join("manifest.jsonl"));
    }
}

/// The merge of folders without markers: every shard of every input, first row of each id.
fn merge_unchecked(
    inputs: &[MergeInput],
    out: &Path,
    options: &ShardOptions,
) -> Result<MergeSummary, DataError> {
    let mut writer = MergeWriter::new(out, *options);
    let mut seen = HashSet::new();
    let mut failure_lines = Vec::new();
    for input in inputs {
        for name in input
            .names
            .iter()
            .filter(|n| n.ends_with(".parquet") && !n.starts_with('.'))
        {
            let file = input.store.fetch(name, out)?;
            for_each_triplet(file.path(), |t| {
                writer.summary.read += 1;
                if !seen.insert(t.id.clone()) {
                    writer.summary.duplicates += 1;
                    return Ok(());
                }
                writer.write(t)
            })?;
        }
        for name in input
            .names
            .iter()
            .filter(|n| n.starts_with("failures") && n.ends_with(".jsonl"))
        {
            if let Some(bytes) = input.store.get(name)? {
                failure_lines.extend(json_lines_from_slice::<FailureRecord>(&bytes));
            }
        }
    }
    let summary = writer.finish()?;
    write_failures(out, failure_lines, &seen)?;
    Ok(summary)
}

/// Writes every row of the shards in `dir` as `{id}.png`, `{id}.svg` and a line of
/// `metadata.jsonl` (all columns but the image and SVG, plus their file names) in `out`.
/// Idempotent: rerunning overwrites the same files. Returns the number of rows exported.
pub fn export_folder(dir: impl AsRef<Path>, out: impl AsRef<Path>) -> Result<usize, DataError> {
    let out = out.as_ref();
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    let meta_path = out.join("metadata.jsonl");
    let tmp = out.join(".metadata.jsonl.tmp");
    let mut meta =
        std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?);
    let mut n = 0usize;
    let mut used = HashSet::new();
    for shard in list_shards(dir.as_ref())? {
        for_each_triplet(&shard, |t| {
            let mut stem = file_stem_for_id(&t.id);
            if !used.insert(stem.clone()) {
                stem = format!("{stem}-{:016x}", crate::sample::fnv1a64(t.id.as_bytes()));
                used.insert(stem.clone());
            }
            let png = out.join(format!("{stem}.png"));
            let svg = out.join(format!("{stem}.svg"));
            std::fs::write(&png, &t.image).map_err(|e| DataError::io(&png, e))?;
            std::fs::write(&svg, &t.svg).map_err(|e| DataError::io(&svg, e))?;
            let mut v = serde_json::to_value(&t).map_err(|e| DataError::Config(e.to_string()))?;
            if let Some(o) = v.as_object_mut() {
                o.remove("svg");
                o.insert("image_file".into(), format!("{stem}.png").into());
                o.insert("svg_file".into(), format!("{stem}.svg").into());
            }
            writeln!(meta, "{v}").map_err(|e| DataError::io(&tmp, e))?;
            n += 1;
            Ok(())
        })?;
    }
    let f = meta
        .into_inner()
        .map_err(|e| DataError::io(&tmp, e.into_error()))?;
    f.sync_all().map_err(|e| DataError::io(&tmp, e))?;
    std::fs::rename(&tmp, &meta_path).map_err(|e| DataError::io(&meta_path, e))?;
    Ok(n)
}
