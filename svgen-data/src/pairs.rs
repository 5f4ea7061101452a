//! Readers of (description, SVG) [`Pair`]s: training examples for a text-to-SVG model, and
//! inputs of svgen-eval's evaluation report (`Pair` implements `report::PromptSvg`).
//!
//! Sources:
//! - our shards, positive rows only ([`PairDataset::from_shards`]);
//! - OmniSVG's MMSVG-Icon / MMSVG-Illustration: Parquet with `id, svg, description`
//!   ([`PairDataset::from_mmsvg_parquet`]) or the CSV variant `id, desc_en, detail, keywords`
//!   beside an `svg/` folder ([`PairDataset::from_mmsvg_csv`]);
//! - a folder of icon SVGs plus the metadata file of a real npm icon set:
//!   `@tabler/icons` `icons.json` or `@mdi/svg` `meta.json` ([`PairDataset::from_icon_folder`]);
//! - JSON lines `{"description" or "prompt", "svg", "id"?}` ([`read_pairs_jsonl`]).
//!
//! Every loader applies an optional [`TokenFilter`] (keep SVGs with fewer tokens than a
//! limit, e.g. the model's context) and reports what it skipped and why.
//!
//! ```
//! use svgen_data::pairs::{IconMetadata, PairDataset};
//! let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tabler-icons");
//! let meta = IconMetadata::tabler(assets.join("icons.json")).unwrap();
//! let ds = PairDataset::from_icon_folder(assets.join("filled"), &meta, None).unwrap();
//! let heart = ds.iter().find(|p| p.id == "heart").unwrap();
//! assert!(heart.description.starts_with("heart icon"));
//! assert!(heart.svg.contains("<svg"));
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_array::{Array, ArrayRef, LargeStringArray, StringArray, StringViewArray};
use arrow_schema::DataType;
use serde::{Deserialize, Serialize};
use svgen_eval::report::PromptSvg;

use crate::error::DataError;
use crate::sample::Label;
use crate::stages::TokenCounter;
use crate::storage::{for_each_triplet, list_shards, read_string_columns};

/// Largest SVG file read by the loaders (bytes).
pub const MAX_SVG_BYTES: u64 = 16 << 20;

/// One (description, SVG) pair: a training example, or an input of an evaluation report.
///
/// In JSON (one object per line of a `PAIRS.jsonl`, see [`read_pairs_jsonl`]) it is
/// `{"id", "description", "svg", "n_tokens"}`; only `description` and `svg` are required,
/// `prompt` is accepted for `description`, and a missing or `null` id is the empty id.
///
/// ```
/// use svgen_data::pairs::Pair;
/// let p = Pair::new("a red circle", "<svg/>").with_id("r");
/// let line = r#"{"id": "r", "prompt": "a red circle", "svg": "<svg/>"}"#;
/// assert_eq!(serde_json::from_str::<Pair>(line).unwrap(), p);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// Id in its source (empty when the source has none).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub id: String,
    /// Text description (the model input, the prompt of an evaluation).
    #[serde(alias = "prompt")]
    pub description: String,
    /// SVG document (the target).
    pub svg: String,
    /// Token count of `svg`, when a filter counted it (or the shard stored it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_tokens: Option<usize>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

impl Pair {
    /// A pair without id or token count.
    pub fn new(description: impl Into<String>, svg: impl Into<String>) -> Self {
        Pair {
            id: String::new(),
            description: description.into(),
            svg: svg.into(),
            n_tokens: None,
        }
    }

    /// The same pair with id `id`.
    pub fn with_id(self, id: impl Into<String>) -> Self {
        Pair {
            id: id.into(),
            ..self
        }
    }
}

/// Scores a pair with `svgen_eval::report::evaluate`: the description is the prompt; an empty
/// id is reported as no id.
impl PromptSvg for Pair {
    fn id(&self) -> Option<&str> {
        Some(self.id.as_str()).filter(|id| !id.is_empty())
    }
    fn prompt(&self) -> &str {
        &self.description
    }
    fn svg(&self) -> &str {
        &self.svg
    }
}

/// Reads a JSON-lines file of [`Pair`]s (`{"prompt" or "description", "svg"}`, optionally
/// `"id"`), in file order; blank lines are skipped and nothing is filtered. A line that is not
/// a pair is a [`DataError::Parse`] naming its line number.
///
/// Training and evaluation inputs share this format (the `score_svgs` and `finetune_llm`
/// examples' `PAIRS.jsonl`).
pub fn read_pairs_jsonl(path: impl AsRef<Path>) -> Result<Vec<Pair>, DataError> {
    let path = path.as_ref();
    let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let pair = serde_json::from_str::<Pair>(&line).map_err(|e| DataError::Parse {
            path: path.to_path_buf(),
            message: format!("line {}: {e}", i + 1),
        })?;
        out.push(pair);
    }
    Ok(out)
}

/// Keeps pairs whose SVG has fewer than `max_tokens` tokens under `counter`.
pub struct TokenFilter<'a> {
    /// The tokenizer.
    pub counter: &'a dyn TokenCounter,
    /// Exclusive upper bound.
    pub max_tokens: usize,
}

/// A loaded pair dataset, plus what was skipped.
#[derive(Debug, Clone, Default)]
pub struct PairDataset {
    pairs: Vec<Pair>,
    /// `(id, reason)` of every record not loaded.
    pub skipped: Vec<(String, String)>,
}

/// Pushes a string-like Arrow column (Utf8, LargeUtf8, Utf8View, or an integer id) as strings.
pub(crate) fn push_strings(col: &ArrayRef, out: &mut Vec<Option<String>>) -> Result<(), String> {
    macro_rules! strings {
        ($t:ty) => {{
            let a = col
                .as_any()
                .downcast_ref::<$t>()
                .ok_or_else(|| "downcast failed".to_string())?;
            out.extend((0..a.len()).map(|i| (!a.is_null(i)).then(|| a.value(i).to_string())));
        }};
    }
    match col.data_type() {
        DataType::Utf8 => strings!(StringArray),
        DataType::LargeUtf8 => strings!(LargeStringArray),
        DataType::Utf8View => strings!(StringViewArray),
        DataType::Int64 => strings!(arrow_array::Int64Array),
        DataType::Int32 => strings!(arrow_array::Int32Array),
        DataType::UInt64 => strings!(arrow_array::UInt64Array),
        other => return Err(format!("unsupported type {other:?}")),
    }
    Ok(())
}

fn read_svg_file(path: &Path) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    // Refused from its size before anything is read; the bounded read covers a growing file.
    if f.metadata().is_ok_and(|m| m.len() > MAX_SVG_BYTES) {
        return Err(format!("larger than {MAX_SVG_BYTES} bytes"));
    }
    let mut bytes = Vec::new();
    f.take(MAX_SVG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_SVG_BYTES {
        return Err(format!("larger than {MAX_SVG_BYTES} bytes"));
    }
    String::from_utf8(bytes).map_err(|e| format!("invalid UTF-8: {e}"))
}

impl PairDataset {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there is no pair.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pair at `index`.
    pub fn get(&self, index: usize) -> Option<&Pair> {
        self.pairs.get(index)
    }

    /// Iterates the pairs.
    pub fn iter(&self) -> std::slice::Iter<'_, Pair> {
        self.pairs.iter()
    }

    /// The pairs as a slice (e.g. the inputs of `svgen_eval::report::evaluate`).
    pub fn as_slice(&self) -> &[Pair] {
        &self.pairs
    }

    /// The pairs.
    pub fn into_pairs(self) -> Vec<Pair> {
        self.pairs
    }

    /// Appends another dataset.
    pub fn extend(&mut self, other: PairDataset) {
        self.pairs.extend(other.pairs);
        self.skipped.extend(other.skipped);
    }

    /// Adds a pair if it passes the filter (else records it as skipped).
    fn offer(&mut self, mut pair: Pair, filter: Option<&TokenFilter<'_>>) {
        if pair.description.trim().is_empty() {
            self.skipped.push((pair.id, "empty description".into()));
            return;
        }
        if let Some(f) = filter {
            let n = match pair.n_tokens {
                Some(n) => n,
                None => f.counter.count(&pair.svg),
            };
            pair.n_tokens = Some(n);
            if n >= f.max_tokens {
                self.skipped
                    .push((pair.id, format!("{n} tokens, limit {}", f.max_tokens)));
                return;
            }
        }
        self.pairs.push(pair);
    }

    /// Positive rows of every shard in `dir`; the description is the simplified caption
    /// when present, else the caption. Stored token counts are reused when the filter's
    /// tokenizer is the one that counted them.
    pub fn from_shards(
        dir: impl AsRef<Path>,
        filter: Option<&TokenFilter<'_>>,
    ) -> Result<Self, DataError> {
        let mut ds = PairDataset::default();
        for shard in list_shards(dir.as_ref())? {
            for_each_triplet(&shard, |t| {
                if t.label != Label::Positive {
                    return Ok(());
                }
                let same_tokenizer = filter.is_none_or(|f| f.counter.name() == t.tokenizer);
                ds.offer(
                    Pair {
                        id: t.id,
                        description: t.simplified.unwrap_or(t.caption),
                        svg: t.svg,
                        n_tokens: same_tokenizer.then_some(t.n_tokens as usize),
                    },
                    filter,
                );
                Ok(())
            })?;
        }
        Ok(ds)
    }

    /// OmniSVG MMSVG Parquet (`id`, `svg`, `description` columns; one file or a folder of
    /// `*.parquet`).
    pub fn from_mmsvg_parquet(
        path: impl AsRef<Path>,
        filter: Option<&TokenFilter<'_>>,
    ) -> Result<Self, DataError> {
        let path = path.as_ref();
        let files: Vec<PathBuf> = if path.is_dir() {
            list_shards(path)?
        } else {
            vec![path.to_path_buf()]
        };
        let mut ds = PairDataset::default();
        for f in files {
            let mut cols = read_string_columns(&f, &["id", "svg", "description"])?.into_iter();
            let (ids, svgs, descs) = match (cols.next(), cols.next(), cols.next()) {
                (Some(a), Some(b), Some(c)) => (a, b, c),
                _ => {
                    return Err(DataError::Schema {
                        path: f,
                        message: "missing columns".into(),
                    })
                }
            };
            for (i, ((id, svg), desc)) in ids.into_iter().zip(svgs).zip(descs).enumerate() {
                let id = id.unwrap_or_else(|| format!("row{i}"));
                match svg {
                    None => ds.skipped.push((id, "null svg".into())),
                    Some(svg) => ds.offer(
                        Pair {
                            id,
                            description: desc.unwrap_or_default(),
                            svg,
                            n_tokens: None,
                        },
                        filter,
                    ),
                }
            }
        }
        Ok(ds)
    }

    /// OmniSVG's CSV variant: columns `id, desc_en, detail, keywords`, SVGs in
    /// `svg_dir/{id}.svg`. The description is `desc_en` (or `detail` when empty).
    pub fn from_mmsvg_csv(
        csv_path: impl AsRef<Path>,
        svg_dir: impl AsRef<Path>,
        filter: Option<&TokenFilter<'_>>,
    ) -> Result<Self, DataError> {
        let csv_path = csv_path.as_ref();
        let svg_dir = svg_dir.as_ref();
        let file = std::fs::File::open(csv_path).map_err(|e| DataError::io(csv_path, e))?;
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
        let parse_err = |m: String| DataError::Parse {
            path: csv_path.to_path_buf(),
            message: m,
        };
        let headers = reader
            .headers()
            .map_err(|e| parse_err(e.to_string()))?
            .clone();
        let col = |n: &str| headers.iter().position(|h| h.trim() == n);
        let id_col = col("id").ok_or_else(|| parse_err("no id column".into()))?;
        let desc_col = col("desc_en").ok_or_else(|| parse_err("no desc_en column".into()))?;
        let detail_col = col("detail");
        let mut ds = PairDataset::default();
        let mut record = csv::StringRecord::new();
        let mut row = 0usize;
        loop {
            row += 1;
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Err(e) => {
                    ds.skipped
                        .push((format!("row{row}"), format!("CSV error: {e}")));
                    if e.is_io_error() {
                        break;
                    }
                    continue;
                }
                Ok(true) => {}
            }
            let id = record.get(id_col).unwrap_or("").trim().to_string();
            if id.is_empty() {
                ds.skipped.push((format!("row{row}"), "empty id".into()));
                continue;
            }
            let mut desc = record.get(desc_col).unwrap_or("").trim().to_string();
            if desc.is_empty() {
                desc = detail_col
                    .and_then(|c| record.get(c))
                    .unwrap_or("")
                    .trim()
                    .to_string();
            }
            let stem = crate::generate::file_stem_for_id(&id);
            match read_svg_file(&svg_dir.join(format!("{stem}.svg"))) {
                Err(reason) => ds.skipped.push((id, reason)),
                Ok(svg) => ds.offer(
                    Pair {
                        id,
                        description: desc,
                        svg,
                        n_tokens: None,
                    },
                    filter,
                ),
            }
        }
        Ok(ds)
    }

    /// Every `*.svg` in `svg_dir` (sorted by name), described from an icon set's metadata.
    pub fn from_icon_folder(
        svg_dir: impl AsRef<Path>,
        metadata: &IconMetadata,
        filter: Option<&TokenFilter<'_>>,
    ) -> Result<Self, DataError> {
        let svg_dir = svg_dir.as_ref();
        let mut files: Vec<PathBuf> = std::fs::read_dir(svg_dir)
            .map_err(|e| DataError::io(svg_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "svg"))
            .collect();
        files.sort();
        let mut ds = PairDataset::default();
        for f in files {
            let name = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match read_svg_file(&f) {
                Err(reason) => ds.skipped.push((name, reason)),
                Ok(svg) => {
                    let description = metadata.describe(&name);
                    ds.offer(
                        Pair {
                            id: name,
                            description,
                            svg,
                            n_tokens: None,
                        },
                        filter,
                    );
                }
            }
        }
        Ok(ds)
    }
}

impl<'a> IntoIterator for &'a PairDataset {
    type Item = &'a Pair;
    type IntoIter = std::slice::Iter<'a, Pair>;
    fn into_iter(self) -> Self::IntoIter {
        self.pairs.iter()
    }
}

#[derive(Debug, Clone, Deserialize)]
struct TablerEntry {
    #[serde(default)]
    category: String,
    #[serde(default)]
    tags: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct MdiEntry {
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct IconInfo {
    category: Option<String>,
    aliases: Vec<String>,
    tags: Vec<String>,
}

/// Names, categories, aliases and tags of an icon set, keyed by icon (file) name.
#[derive(Debug, Clone, Default)]
pub struct IconMetadata {
    icons: HashMap<String, IconInfo>,
}

impl IconMetadata {
    /// `@tabler/icons` `icons.json`: `{ "name": {"name", "category", "tags": [...]}, ... }`.
    pub fn tabler(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let map: HashMap<String, TablerEntry> =
            serde_json::from_slice(&bytes).map_err(|e| DataError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let icons = map
            .into_iter()
            .map(|(k, v)| {
                let tags = v
                    .tags
                    .iter()
                    .filter_map(|t| match t {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect();
                let category = Some(v.category).filter(|c| !c.is_empty());
                (
                    k,
                    IconInfo {
                        category,
                        aliases: Vec::new(),
                        tags,
                    },
                )
            })
            .collect();
        Ok(IconMetadata { icons })
    }

    /// `@mdi/svg` `meta.json`: `[{"name", "aliases": [...], "tags": [...]}, ...]`.
    pub fn mdi(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let list: Vec<MdiEntry> = serde_json::from_slice(&bytes).map_err(|e| DataError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let icons = list
            .into_iter()
            .map(|e| {
                (
                    e.name,
                    IconInfo {
                        category: None,
                        aliases: e.aliases,
                        tags: e.tags,
                    },
                )
            })
            .collect();
        Ok(IconMetadata { icons })
    }

    /// Number of icons described.
    pub fn len(&self) -> usize {
        self.icons.len()
    }

    /// Whether no icon is described.
    pub fn is_empty(&self) -> bool {
        self.icons.is_empty()
    }

    /// The description of icon `name`: `"{name} icon"`, then aliases, category and tags
    /// when known (`"heart icon; category: Health; tags: love, like"`).
    pub fn describe(&self, name: &str) -> String {
        let words = name.replace(['-', '_'], " ");
        let mut d = format!("{words} icon");
        if let Some(info) = self.icons.get(name) {
            if !info.aliases.is_empty() {
                let a: Vec<String> = info.aliases.iter().map(|a| a.replace('-', " ")).collect();
                d.push_str(&format!("; also: {}", a.join(", ")));
            }
            if let Some(c) = &info.category {
                d.push_str(&format!("; category: {c}"));
            }
            if !info.tags.is_empty() {
                d.push_str(&format!("; tags: {}", info.tags.join(", ")));
            }
        }
        d
    }
}
