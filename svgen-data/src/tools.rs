//! Whole-dataset commands: `stats`, `merge`, and the plain-folder export.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::DataError;
use crate::generate::file_stem_for_id;
use crate::pipeline::{read_failures, TokenStats};
use crate::sample::Label;
use crate::storage::{
    append_manifest, for_each_triplet, list_shards, ManifestEntry, ShardOptions, ShardWriter,
};

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
    /// Rows dropped because their id was already written.
    pub duplicates: usize,
    /// Shards written.
    pub shards: Vec<PathBuf>,
}

/// Merges the shards of several output folders (e.g. the N workers of a `--shard` run, or
/// runs on different machines) into `out`, re-cut to `options.rows_per_shard`, keeping the
/// first row of every id. Shards are published atomically with a manifest, like a run.
pub fn merge(
    inputs: &[PathBuf],
    out: impl AsRef<Path>,
    options: &ShardOptions,
) -> Result<MergeSummary, DataError> {
    let out = out.as_ref();
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    if !list_shards(out)?.is_empty() {
        return Err(DataError::Config(format!(
            "merge output {} already holds shards",
            out.display()
        )));
    }
    let manifest = out.join("manifest.jsonl");
    let mut summary = MergeSummary::default();
    let mut seen = HashSet::new();
    let mut current: Option<ShardWriter> = None;
    let mut seq = 0usize;
    let publish = |w: ShardWriter, summary: &mut MergeSummary| -> Result<(), DataError> {
        let p = w.finish()?;
        let name = p
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        append_manifest(
            &manifest,
            &ManifestEntry {
                shard: name,
                rows: p.ids.len(),
                ids: p.ids,
            },
        )?;
        summary.shards.push(p.path);
        Ok(())
    };
    let mut failure_lines = Vec::new();
    for input in inputs {
        for shard in list_shards(input)? {
            for_each_triplet(&shard, |t| {
                summary.read += 1;
                if !seen.insert(t.id.clone()) {
                    summary.duplicates += 1;
                    return Ok(());
                }
                if current.is_none() {
                    let path = out.join(format!("part-merged-{seq:06}.parquet"));
                    seq += 1;
                    current = Some(ShardWriter::create(path, options)?);
                }
                if let Some(w) = current.as_mut() {
                    w.write(t)?;
                    summary.written += 1;
                    if w.len() >= options.rows_per_shard {
                        if let Some(w) = current.take() {
                            publish(w, &mut summary)?;
                        }
                    }
                }
                Ok(())
            })?;
        }
        for f in read_failures(input)? {
            failure_lines.push(f);
        }
    }
    if let Some(w) = current.take() {
        if w.is_empty() {
            w.abort();
        } else {
            publish(w, &mut summary)?;
        }
    }
    // Failures of ids that made it into a shard elsewhere are superseded.
    let failures_path = out.join("failures.jsonl");
    let mut recorded = HashSet::new();
    for f in failure_lines {
        if !seen.contains(&f.id) && recorded.insert((f.id.clone(), f.stage)) {
            let line = serde_json::to_string(&f).map_err(|e| DataError::Config(e.to_string()))?;
            crate::storage::append_line(&failures_path, &line)?;
        }
    }
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
