//! Caption sources: where the text of every triplet comes from.
//!
//! A [`CaptionSource`] yields records one at a time, so a pipeline never holds a whole
//! corpus in memory (the one exception is COCO's single JSON file, which is parsed whole;
//! the 2017 train captions file is about 90 MB).
//!
//! Records that cannot be read (invalid UTF-8, a broken JSON line, a missing field) are
//! yielded as [`SourceFailure`]s so the pipeline can record them and continue.
//!
//! ```
//! use svgen_data::source::{CaptionSource, TextLines};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("captions.txt");
//! std::fs::write(&path, "a red apple\n\na cat on a mat\n").unwrap();
//! let mut src = TextLines::open(&path).unwrap();
//! let first = src.next_record().unwrap().unwrap();
//! assert_eq!(first.id, "captions:1");
//! assert_eq!(first.text, "a red apple");
//! assert_eq!(src.next_record().unwrap().unwrap().id, "captions:3");
//! assert!(src.next_record().is_none());
//! ```

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use serde::Deserialize;

use crate::error::DataError;

/// Longest caption line accepted (bytes); longer lines are recorded as failures.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// One caption record, with an id that is stable across runs (needed for sharding and resume).
#[derive(Debug, Clone, PartialEq)]
pub struct Caption {
    /// Stable, unique id (e.g. `coco:48`, `captions:12`, the webdataset key).
    pub id: String,
    /// Name of the source (written to the `source` column).
    pub source: String,
    /// The caption text.
    pub text: String,
    /// Image bytes that came with the caption (webdataset shards), if any.
    pub image: Option<Vec<u8>>,
}

/// A record that could not be read; the pipeline records it in `failures.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFailure {
    /// The record's id, or its position (`file:line`) when the id itself is unreadable.
    pub id: String,
    /// Why it failed.
    pub reason: String,
}

/// What a source yields per record.
pub type SourceRecord = Result<Caption, SourceFailure>;

/// A stream of captions. Implement it to plug in your own corpus.
pub trait CaptionSource: Send {
    /// Name written to the `source` column.
    fn name(&self) -> &str;
    /// The next record, or `None` at the end of the stream.
    fn next_record(&mut self) -> Option<SourceRecord>;
}

impl<S: CaptionSource + ?Sized> CaptionSource for Box<S> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn next_record(&mut self) -> Option<SourceRecord> {
        (**self).next_record()
    }
}

/// An in-memory source (tests, small embedded lists).
#[derive(Debug, Clone)]
pub struct VecSource {
    name: String,
    records: VecDeque<SourceRecord>,
}

impl VecSource {
    /// A source yielding `records` in order.
    pub fn new(name: impl Into<String>, records: Vec<SourceRecord>) -> Self {
        VecSource {
            name: name.into(),
            records: records.into(),
        }
    }

    /// A source of `(id, caption)` pairs.
    pub fn from_pairs<I, A, B>(name: &str, pairs: I) -> Self
    where
        I: IntoIterator<Item = (A, B)>,
        A: Into<String>,
        B: Into<String>,
    {
        let records = pairs
            .into_iter()
            .map(|(id, text)| {
                Ok(Caption {
                    id: id.into(),
                    source: name.to_string(),
                    text: text.into(),
                    image: None,
                })
            })
            .collect();
        VecSource::new(name, records)
    }
}

impl CaptionSource for VecSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn next_record(&mut self) -> Option<SourceRecord> {
        self.records.pop_front()
    }
}

fn stem_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".to_string())
}

fn open_file(path: &Path) -> Result<File, DataError> {
    File::open(path).map_err(|e| DataError::io(path, e))
}

/// Reads one line of at most [`MAX_LINE_BYTES`]; `Ok(None)` at end of file.
/// Returns `Err(reason)` for over-long lines (the rest of the line is skipped).
fn read_line_bounded<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Result<(), String>>> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                None
            } else if too_long {
                Some(Err(format!("line longer than {MAX_LINE_BYTES} bytes")))
            } else {
                Some(Ok(()))
            });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > MAX_LINE_BYTES {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(available.len());
        reader.consume(consumed);
        if done.is_some() {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(if too_long {
                Err(format!("line longer than {MAX_LINE_BYTES} bytes"))
            } else {
                Ok(())
            }));
        }
    }
}

/// Plain text, one caption per line; blank lines are skipped. Ids are `{file stem}:{line}`
/// (1-based), so they stay stable when the file is re-read.
pub struct TextLines {
    name: String,
    stem: String,
    reader: BufReader<File>,
    line: usize,
    buf: Vec<u8>,
    done: bool,
}

impl TextLines {
    /// Opens a text file; the source name is the file stem.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        let stem = stem_of(path);
        Ok(TextLines {
            name: stem.clone(),
            stem,
            reader: BufReader::new(open_file(path)?),
            line: 0,
            buf: Vec::new(),
            done: false,
        })
    }

    /// Overrides the source name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl CaptionSource for TextLines {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_record(&mut self) -> Option<SourceRecord> {
        while !self.done {
            self.line += 1;
            let id = format!("{}:{}", self.stem, self.line);
            match read_line_bounded(&mut self.reader, &mut self.buf) {
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(SourceFailure {
                        id,
                        reason: format!("read error: {e}"),
                    }));
                }
                Ok(Some(Err(reason))) => return Some(Err(SourceFailure { id, reason })),
                Ok(Some(Ok(()))) => match std::str::from_utf8(&self.buf) {
                    Err(e) => {
                        return Some(Err(SourceFailure {
                            id,
                            reason: format!("invalid UTF-8: {e}"),
                        }))
                    }
                    Ok(text) => {
                        let text = text.trim();
                        if text.is_empty() {
                            continue;
                        }
                        return Some(Ok(Caption {
                            id,
                            source: self.name.clone(),
                            text: text.to_string(),
                            image: None,
                        }));
                    }
                },
            }
        }
        None
    }
}

/// Turns a JSON id (string or number) into our string id.
fn json_id(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The caption keys tried, in order, when none is configured.
pub const DEFAULT_CAPTION_KEYS: &[&str] = &["caption", "prompt", "text", "txt", "description"];

fn json_caption(obj: &serde_json::Value, keys: &[String]) -> Option<String> {
    keys.iter()
        .find_map(|k| obj.get(k).and_then(|v| v.as_str()).map(str::to_string))
}

fn default_keys() -> Vec<String> {
    DEFAULT_CAPTION_KEYS.iter().map(|s| s.to_string()).collect()
}

/// JSON Lines: one object per line, caption in `caption` (or the first of
/// [`DEFAULT_CAPTION_KEYS`] present, or a configured key); id from `id` when present,
/// else `{file stem}:{line}`.
pub struct JsonLines {
    inner: TextLines,
    caption_keys: Vec<String>,
    id_key: String,
}

impl JsonLines {
    /// Opens a JSONL file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        Ok(JsonLines {
            inner: TextLines::open(path)?,
            caption_keys: default_keys(),
            id_key: "id".to_string(),
        })
    }

    /// Uses only `key` for the caption.
    pub fn with_caption_key(mut self, key: impl Into<String>) -> Self {
        self.caption_keys = vec![key.into()];
        self
    }

    /// Uses `key` for the id.
    pub fn with_id_key(mut self, key: impl Into<String>) -> Self {
        self.id_key = key.into();
        self
    }

    /// Overrides the source name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.inner = self.inner.with_name(name);
        self
    }
}

impl CaptionSource for JsonLines {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn next_record(&mut self) -> Option<SourceRecord> {
        let line = self.inner.next_record()?;
        Some(line.and_then(|c| {
            let obj: serde_json::Value =
                serde_json::from_str(&c.text).map_err(|e| SourceFailure {
                    id: c.id.clone(),
                    reason: format!("invalid JSON: {e}"),
                })?;
            let id = obj
                .get(&self.id_key)
                .and_then(json_id)
                .unwrap_or(c.id.clone());
            let text = json_caption(&obj, &self.caption_keys).ok_or_else(|| SourceFailure {
                id: id.clone(),
                reason: format!("no caption field (tried {:?})", self.caption_keys),
            })?;
            Ok(Caption {
                id,
                source: c.source,
                text,
                image: None,
            })
        }))
    }
}

/// CSV with a header row: caption from a named column (default `caption`), id from a named
/// column (default `id`; when absent the id is `{file stem}:{record number}`).
pub struct CsvCaptions {
    name: String,
    stem: String,
    reader: csv::Reader<File>,
    caption_col: usize,
    id_col: Option<usize>,
    record: csv::ByteRecord,
    index: usize,
    done: bool,
}

impl CsvCaptions {
    /// Opens a CSV file with the default column names (`caption`, `id`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        Self::open_with(path, "caption", Some("id"))
    }

    /// Opens a CSV file naming its caption and (optional) id columns.
    pub fn open_with(
        path: impl AsRef<Path>,
        caption_column: &str,
        id_column: Option<&str>,
    ) -> Result<Self, DataError> {
        let path = path.as_ref();
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(open_file(path)?);
        let headers = reader
            .byte_headers()
            .map_err(|e| DataError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
            .clone();
        let find = |name: &str| headers.iter().position(|h| h == name.as_bytes());
        let caption_col = find(caption_column).ok_or_else(|| DataError::Parse {
            path: path.to_path_buf(),
            message: format!("no column named {caption_column:?}"),
        })?;
        let id_col = id_column.and_then(find);
        let stem = stem_of(path);
        Ok(CsvCaptions {
            name: stem.clone(),
            stem,
            reader,
            caption_col,
            id_col,
            record: csv::ByteRecord::new(),
            index: 0,
            done: false,
        })
    }

    /// Overrides the source name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl CaptionSource for CsvCaptions {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_record(&mut self) -> Option<SourceRecord> {
        if self.done {
            return None;
        }
        self.index += 1;
        let fallback_id = format!("{}:{}", self.stem, self.index);
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => {
                self.done = true;
                None
            }
            Err(e) => {
                // A CSV syntax error desynchronises the reader: record it and stop this file.
                self.done = true;
                Some(Err(SourceFailure {
                    id: fallback_id,
                    reason: format!("CSV error: {e}"),
                }))
            }
            Ok(true) => {
                let id = match self.id_col.and_then(|c| self.record.get(c)) {
                    Some(raw) if !raw.is_empty() => match std::str::from_utf8(raw) {
                        Ok(s) => s.to_string(),
                        Err(e) => {
                            return Some(Err(SourceFailure {
                                id: fallback_id,
                                reason: format!("invalid UTF-8 in id: {e}"),
                            }))
                        }
                    },
                    _ => fallback_id,
                };
                let Some(raw) = self.record.get(self.caption_col) else {
                    return Some(Err(SourceFailure {
                        id,
                        reason: "record has no caption column".into(),
                    }));
                };
                Some(match std::str::from_utf8(raw) {
                    Err(e) => Err(SourceFailure {
                        id,
                        reason: format!("invalid UTF-8: {e}"),
                    }),
                    Ok(text) if text.trim().is_empty() => Err(SourceFailure {
                        id,
                        reason: "empty caption".into(),
                    }),
                    Ok(text) => Ok(Caption {
                        id,
                        source: self.name.clone(),
                        text: text.trim().to_string(),
                        image: None,
                    }),
                })
            }
        }
    }
}

#[derive(Deserialize)]
struct CocoFile {
    annotations: Vec<CocoAnnotation>,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    id: serde_json::Value,
    caption: String,
}

/// COCO captions (`captions_train2017.json`): every `annotations[].caption`, id
/// `coco:{annotation id}`.
pub struct CocoCaptions {
    name: String,
    annotations: std::vec::IntoIter<CocoAnnotation>,
}

impl CocoCaptions {
    /// Parses a COCO captions file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        let file: CocoFile =
            serde_json::from_reader(BufReader::new(open_file(path)?)).map_err(|e| {
                DataError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                }
            })?;
        Ok(CocoCaptions {
            name: "coco".into(),
            annotations: file.annotations.into_iter(),
        })
    }

    /// Overrides the source name (default `coco`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl CaptionSource for CocoCaptions {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_record(&mut self) -> Option<SourceRecord> {
        let a = self.annotations.next()?;
        Some(match json_id(&a.id) {
            None => Err(SourceFailure {
                id: format!("coco:{}", a.id),
                reason: "annotation id is neither a string nor a number".into(),
            }),
            Some(id) => Ok(Caption {
                id: format!("coco:{id}"),
                source: self.name.clone(),
                text: a.caption.trim().to_string(),
                image: None,
            }),
        })
    }
}

/// Image extensions recognised inside webdataset shards.
const IMAGE_EXTS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp"];

/// Largest member read from a webdataset tar (bytes); larger members are recorded as failures.
pub const MAX_TAR_MEMBER_BYTES: u64 = 64 << 20;

/// A webdataset `.tar` shard (as text-to-image-2M ships): members sharing a key
/// (`00001.json`, `00001.jpg`) form one sample; the caption comes from the JSON member
/// (`prompt`/`caption`/... key) or a `.txt` member. The image bytes are kept when
/// [`WebDatasetTar::with_images`] is set.
///
/// The archive is read by a background thread through a small bounded channel, so memory
/// stays bounded however large the shard is.
pub struct WebDatasetTar {
    name: String,
    rx: Receiver<SourceRecord>,
    handle: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct TarSample {
    key: String,
    json: Option<Vec<u8>>,
    txt: Option<Vec<u8>>,
    image: Option<Vec<u8>>,
    error: Option<String>,
}

impl WebDatasetTar {
    /// Opens a shard; captions only (image members are skipped).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        Self::open_with(path, false, default_keys())
    }

    /// Opens a shard, optionally keeping image bytes, with the caption keys to try.
    pub fn open_with(
        path: impl AsRef<Path>,
        keep_images: bool,
        caption_keys: Vec<String>,
    ) -> Result<Self, DataError> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let file = open_file(&path)?;
        let name = stem_of(&path);
        let source_name = name.clone();
        let (tx, rx) = sync_channel::<SourceRecord>(4);
        let handle = std::thread::Builder::new()
            .name("svgen-wds-reader".into())
            .spawn(move || {
                let mut archive = tar::Archive::new(BufReader::new(file));
                let emit = |s: TarSample| -> bool {
                    tx.send(finish_tar_sample(s, &source_name, &caption_keys))
                        .is_ok()
                };
                let entries = match archive.entries() {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Err(SourceFailure {
                            id: source_name.clone(),
                            reason: format!("not a tar archive: {e}"),
                        }));
                        return;
                    }
                };
                let mut current: Option<TarSample> = None;
                for entry in entries {
                    let mut entry = match entry {
                        Ok(e) => e,
                        Err(e) => {
                            if let Some(s) = current.take() {
                                emit(s);
                            }
                            let _ = tx.send(Err(SourceFailure {
                                id: source_name.clone(),
                                reason: format!("corrupt tar archive: {e}"),
                            }));
                            return;
                        }
                    };
                    if !entry.header().entry_type().is_file() {
                        continue;
                    }
                    let member = match entry.path() {
                        Ok(p) => p.to_string_lossy().into_owned(),
                        Err(_) => continue,
                    };
                    // webdataset: key = path up to the first dot of the file name.
                    let (dir, file_name) = match member.rfind('/') {
                        Some(i) => (&member[..=i], &member[i + 1..]),
                        None => ("", member.as_str()),
                    };
                    let Some(dot) = file_name.find('.') else {
                        continue;
                    };
                    let key = format!("{dir}{}", &file_name[..dot]);
                    let ext = file_name[dot + 1..].to_ascii_lowercase();
                    if current.as_ref().is_some_and(|c| c.key != key) {
                        if let Some(s) = current.take() {
                            if !emit(s) {
                                return;
                            }
                        }
                    }
                    let sample = current.get_or_insert_with(|| TarSample {
                        key: key.clone(),
                        ..TarSample::default()
                    });
                    let wanted = ext == "json"
                        || ext == "txt"
                        || (keep_images && IMAGE_EXTS.contains(&ext.as_str()));
                    if !wanted {
                        continue;
                    }
                    if entry.size() > MAX_TAR_MEMBER_BYTES {
                        sample.error = Some(format!(
                            "member {member} is {} bytes (limit {MAX_TAR_MEMBER_BYTES})",
                            entry.size()
                        ));
                        continue;
                    }
                    let mut bytes = Vec::with_capacity(entry.size() as usize);
                    if let Err(e) = entry.read_to_end(&mut bytes) {
                        sample.error = Some(format!("cannot read member {member}: {e}"));
                        continue;
                    }
                    match ext.as_str() {
                        "json" => sample.json = Some(bytes),
                        "txt" => sample.txt = Some(bytes),
                        _ => sample.image = Some(bytes),
                    }
                }
                if let Some(s) = current.take() {
                    emit(s);
                }
            })
            .map_err(|e| DataError::io(path.clone(), e))?;
        Ok(WebDatasetTar {
            name,
            rx,
            handle: Some(handle),
        })
    }

    /// Overrides the source name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

fn finish_tar_sample(s: TarSample, source: &str, keys: &[String]) -> SourceRecord {
    let id = s.key;
    if let Some(reason) = s.error {
        return Err(SourceFailure { id, reason });
    }
    let text = if let Some(json) = s.json {
        let obj: serde_json::Value = serde_json::from_slice(&json).map_err(|e| SourceFailure {
            id: id.clone(),
            reason: format!("invalid JSON member: {e}"),
        })?;
        json_caption(&obj, keys)
    } else {
        None
    };
    let text = match (text, s.txt) {
        (Some(t), _) => t,
        (None, Some(txt)) => String::from_utf8(txt).map_err(|e| SourceFailure {
            id: id.clone(),
            reason: format!("invalid UTF-8 in .txt member: {e}"),
        })?,
        (None, None) => {
            return Err(SourceFailure {
                id,
                reason: "sample has no caption (.json key or .txt member)".into(),
            })
        }
    };
    Ok(Caption {
        id,
        source: source.to_string(),
        text: text.trim().to_string(),
        image: s.image,
    })
}

impl CaptionSource for WebDatasetTar {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_record(&mut self) -> Option<SourceRecord> {
        match self.rx.recv() {
            Ok(mut r) => {
                if let Ok(c) = &mut r {
                    c.source = self.name.clone();
                }
                Some(r)
            }
            Err(_) => {
                if let Some(h) = self.handle.take() {
                    if h.join().is_err() {
                        return Some(Err(SourceFailure {
                            id: self.name.clone(),
                            reason: "tar reader thread panicked".into(),
                        }));
                    }
                }
                None
            }
        }
    }
}

/// Opens a source by file extension: `.json` → COCO, `.tar` → webdataset, `.jsonl`,
/// `.csv`, anything else → plain text lines.
pub fn open_source(path: impl AsRef<Path>) -> Result<Box<dyn CaptionSource>, DataError> {
    let path = path.as_ref();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    Ok(match ext.as_str() {
        "json" => Box::new(CocoCaptions::open(path)?),
        "tar" => Box::new(WebDatasetTar::open_with(path, true, default_keys())?),
        "jsonl" | "ndjson" => Box::new(JsonLines::open(path)?),
        "csv" => Box::new(CsvCaptions::open(path)?),
        _ => Box::new(TextLines::open(path)?),
    })
}

/// Several sources read one after the other.
pub struct ChainSource {
    sources: VecDeque<Box<dyn CaptionSource>>,
    name: String,
}

impl ChainSource {
    /// Chains `sources` in order.
    pub fn new(sources: Vec<Box<dyn CaptionSource>>) -> Self {
        let name = sources
            .iter()
            .map(|s| s.name().to_string())
            .collect::<Vec<_>>()
            .join("+");
        ChainSource {
            sources: sources.into(),
            name,
        }
    }
}

impl CaptionSource for ChainSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_record(&mut self) -> Option<SourceRecord> {
        loop {
            let front = self.sources.front_mut()?;
            if let Some(r) = front.next_record() {
                return Some(r);
            }
            self.sources.pop_front();
        }
    }
}
