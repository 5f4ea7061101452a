//! Parquet shards: the documented schema, an atomically published shard writer, readers,
//! and the manifest of completed ids.
//!
//! # Schema
//!
//! | column | Arrow type | null | meaning |
//! |---|---|---|---|
//! | `id` | Utf8 | no | stable unique id of the input record |
//! | `source` | Utf8 | no | caption source (`coco`, a file stem, ...) |
//! | `caption` | Utf8 | no | original caption |
//! | `simplified` | Utf8 | yes | simplified caption (null: no simplifier) |
//! | `prompt` | Utf8 | no | prompt sent to the generator |
//! | `negative_prompt` | Utf8 | yes | negative prompt |
//! | `generator` | Utf8 | no | generator name (`dall-e-3`, `folder`, ...) |
//! | `seed` | Int64 | yes | generation seed when seedable |
//! | `image` | Binary | no | the traced raster, PNG bytes |
//! | `width`, `height` | Int32 | no | raster size in pixels |
//! | `svg` | Utf8 | no | traced SVG document |
//! | `n_tokens` | Int32 | no | tokens of `svg` |
//! | `tokenizer` | Utf8 | no | tokenizer name (`cl100k_base`) |
//! | `label` | Utf8 | no | `positive` (< threshold) or `negative` |
//! | `clip_similarity` | Float32 | yes | CLIP cosine(image, caption) |
//! | `aesthetic` | Float32 | yes | LAION aesthetic score |
//! | `created_at` | Timestamp(µs, UTC) | no | creation time |
//!
//! Plain types only, so pyarrow, pandas and Hugging Face `datasets` read the shards as they
//! are (`tools/fixtures/check_shard.py` checks this).
//!
//! # Atomic publication
//!
//! A shard is written to a hidden `.{name}.tmp` file in the output folder; [`ShardWriter::finish`]
//! closes the Parquet footer, `fsync`s the file, renames it to its final name and `fsync`s
//! the folder. Any error (a full disk included) removes the temporary file and publishes
//! nothing. A killed process leaves at most a `.tmp` file, which the next run deletes.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Float32Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::sample::{Label, Triplet};

/// The column names, in schema order.
pub const COLUMNS: [&str; 18] = [
    "id",
    "source",
    "caption",
    "simplified",
    "prompt",
    "negative_prompt",
    "generator",
    "seed",
    "image",
    "width",
    "height",
    "svg",
    "n_tokens",
    "tokenizer",
    "label",
    "clip_similarity",
    "aesthetic",
    "created_at",
];

/// The shard schema (see the module docs).
pub fn schema() -> SchemaRef {
    let utf8 = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let fields = vec![
        utf8("id", false),
        utf8("source", false),
        utf8("caption", false),
        utf8("simplified", true),
        utf8("prompt", false),
        utf8("negative_prompt", true),
        utf8("generator", false),
        Field::new("seed", DataType::Int64, true),
        Field::new("image", DataType::Binary, false),
        Field::new("width", DataType::Int32, false),
        Field::new("height", DataType::Int32, false),
        utf8("svg", false),
        Field::new("n_tokens", DataType::Int32, false),
        utf8("tokenizer", false),
        utf8("label", false),
        Field::new("clip_similarity", DataType::Float32, true),
        Field::new("aesthetic", DataType::Float32, true),
        Field::new(
            "created_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    let mut meta = std::collections::HashMap::new();
    meta.insert(
        "svgen.schema".to_string(),
        "svgen-data triplets v1".to_string(),
    );
    Arc::new(Schema::new_with_metadata(fields, meta))
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Builds one record batch from triplets.
pub fn to_record_batch(rows: &[Triplet]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = rows.len();
    let mut id = StringBuilder::with_capacity(n, n * 16);
    let mut source = StringBuilder::new();
    let mut caption = StringBuilder::new();
    let mut simplified = StringBuilder::new();
    let mut prompt = StringBuilder::new();
    let mut negative = StringBuilder::new();
    let mut generator = StringBuilder::new();
    let mut seed = Int64Builder::with_capacity(n);
    let mut image = BinaryBuilder::with_capacity(n, rows.iter().map(|r| r.image.len()).sum());
    let mut width = Int32Builder::with_capacity(n);
    let mut height = Int32Builder::with_capacity(n);
    let mut svg = StringBuilder::with_capacity(n, rows.iter().map(|r| r.svg.len()).sum());
    let mut n_tokens = Int32Builder::with_capacity(n);
    let mut tokenizer = StringBuilder::new();
    let mut label = StringBuilder::new();
    let mut clip = Float32Builder::with_capacity(n);
    let mut aesthetic = Float32Builder::with_capacity(n);
    let mut created = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for r in rows {
        id.append_value(&r.id);
        source.append_value(&r.source);
        caption.append_value(&r.caption);
        simplified.append_option(r.simplified.as_deref());
        prompt.append_value(&r.prompt);
        negative.append_option(r.negative_prompt.as_deref());
        generator.append_value(&r.generator);
        seed.append_option(r.seed);
        image.append_value(&r.image);
        width.append_value(to_i32(r.width));
        height.append_value(to_i32(r.height));
        svg.append_value(&r.svg);
        n_tokens.append_value(to_i32(r.n_tokens));
        tokenizer.append_value(&r.tokenizer);
        label.append_value(r.label.as_str());
        clip.append_option(r.clip_similarity);
        aesthetic.append_option(r.aesthetic);
        created.append_value(r.created_at);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(source.finish()),
        Arc::new(caption.finish()),
        Arc::new(simplified.finish()),
        Arc::new(prompt.finish()),
        Arc::new(negative.finish()),
        Arc::new(generator.finish()),
        Arc::new(seed.finish()),
        Arc::new(image.finish()),
        Arc::new(width.finish()),
        Arc::new(height.finish()),
        Arc::new(svg.finish()),
        Arc::new(n_tokens.finish()),
        Arc::new(tokenizer.finish()),
        Arc::new(label.finish()),
        Arc::new(clip.finish()),
        Arc::new(aesthetic.finish()),
        Arc::new(created.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, String> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format!("missing column {name}"))?
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| {
            format!(
                "column {name} has type {:?}",
                batch.column_by_name(name).map(|c| c.data_type().clone())
            )
        })
}

fn opt_str(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

/// Converts a record batch with the svgen schema back to triplets.
pub fn from_record_batch(batch: &RecordBatch) -> Result<Vec<Triplet>, String> {
    let s = |n| column::<StringArray>(batch, n);
    let (id, source, caption, simplified, prompt, negative, generator) = (
        s("id")?,
        s("source")?,
        s("caption")?,
        s("simplified")?,
        s("prompt")?,
        s("negative_prompt")?,
        s("generator")?,
    );
    let seed = column::<Int64Array>(batch, "seed")?;
    let image = column::<BinaryArray>(batch, "image")?;
    let width = column::<Int32Array>(batch, "width")?;
    let height = column::<Int32Array>(batch, "height")?;
    let svg = s("svg")?;
    let n_tokens = column::<Int32Array>(batch, "n_tokens")?;
    let tokenizer = s("tokenizer")?;
    let label = s("label")?;
    let clip = column::<Float32Array>(batch, "clip_similarity")?;
    let aesthetic = column::<Float32Array>(batch, "aesthetic")?;
    let created = column::<TimestampMicrosecondArray>(batch, "created_at")?;
    (0..batch.num_rows())
        .map(|i| {
            Ok(Triplet {
                id: id.value(i).to_string(),
                source: source.value(i).to_string(),
                caption: caption.value(i).to_string(),
                simplified: opt_str(simplified, i),
                prompt: prompt.value(i).to_string(),
                negative_prompt: opt_str(negative, i),
                generator: generator.value(i).to_string(),
                seed: (!seed.is_null(i)).then(|| seed.value(i)),
                image: image.value(i).to_vec(),
                width: u32::try_from(width.value(i)).unwrap_or(0),
                height: u32::try_from(height.value(i)).unwrap_or(0),
                svg: svg.value(i).to_string(),
                n_tokens: u32::try_from(n_tokens.value(i)).unwrap_or(0),
                tokenizer: tokenizer.value(i).to_string(),
                label: Label::parse(label.value(i))
                    .ok_or_else(|| format!("row {i}: bad label {:?}", label.value(i)))?,
                clip_similarity: (!clip.is_null(i)).then(|| clip.value(i)),
                aesthetic: (!aesthetic.is_null(i)).then(|| aesthetic.value(i)),
                created_at: created.value(i),
            })
        })
        .collect()
}

/// Compression codec of the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardCompression {
    /// Zstandard (level 3): best for the SVG text. Default.
    #[default]
    Zstd,
    /// Snappy: fastest.
    Snappy,
    /// None.
    None,
}

/// Writer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardOptions {
    /// Rows per published shard.
    pub rows_per_shard: usize,
    /// Rows per Parquet row group (bounds the writer's memory: one row group of images + SVGs).
    pub rows_per_row_group: usize,
    /// Codec.
    pub compression: ShardCompression,
}

impl Default for ShardOptions {
    /// 1000 rows per shard, 100 per row group, zstd.
    fn default() -> Self {
        ShardOptions {
            rows_per_shard: 1000,
            rows_per_row_group: 100,
            compression: ShardCompression::Zstd,
        }
    }
}

impl ShardOptions {
    fn writer_properties(&self) -> Result<WriterProperties, DataError> {
        if self.rows_per_shard == 0 || self.rows_per_row_group == 0 {
            return Err(DataError::Config(
                "rows per shard and per row group must be positive".into(),
            ));
        }
        let compression = match self.compression {
            ShardCompression::Zstd => Compression::ZSTD(
                ZstdLevel::try_new(3).map_err(|e| DataError::Config(e.to_string()))?,
            ),
            ShardCompression::Snappy => Compression::SNAPPY,
            ShardCompression::None => Compression::UNCOMPRESSED,
        };
        Ok(WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(self.rows_per_row_group))
            .set_created_by(concat!("svgen-data ", env!("CARGO_PKG_VERSION")).to_string())
            // PNG bytes are already deflated: compressing them again only costs CPU.
            .set_column_compression("image".into(), Compression::UNCOMPRESSED)
            // Min/max statistics of PNG bytes and whole SVG documents are useless and costly.
            .set_column_statistics_enabled("image".into(), EnabledStatistics::None)
            .set_column_statistics_enabled("svg".into(), EnabledStatistics::None)
            .build())
    }
}

/// Where a shard's bytes go: a [`Write`] that can also be made durable.
pub trait ShardSink: Write + Send {
    /// Makes everything written so far durable (`fsync`).
    fn sync(&mut self) -> std::io::Result<()>;
}

impl ShardSink for File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_all()
    }
}

impl ShardSink for BufWriter<File> {
    fn sync(&mut self) -> std::io::Result<()> {
        self.flush()?;
        self.get_ref().sync_all()
    }
}

/// A published shard.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedShard {
    /// Final path.
    pub path: PathBuf,
    /// Ids it holds, in row order.
    pub ids: Vec<String>,
}

/// Writes one shard to a temporary file and publishes it atomically (see the module docs).
pub struct ShardWriter<W: ShardSink = BufWriter<File>> {
    writer: Option<ArrowWriter<W>>,
    tmp_path: PathBuf,
    final_path: PathBuf,
    pending: Vec<Triplet>,
    rows_per_row_group: usize,
    ids: Vec<String>,
}

impl ShardWriter<BufWriter<File>> {
    /// Creates `.{file name}.tmp` beside `final_path`.
    pub fn create(
        final_path: impl Into<PathBuf>,
        options: &ShardOptions,
    ) -> Result<Self, DataError> {
        let final_path = final_path.into();
        let tmp_path = tmp_path_for(&final_path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .map_err(|e| DataError::io(&tmp_path, e))?;
        ShardWriter::with_sink(
            BufWriter::with_capacity(1 << 20, file),
            tmp_path,
            final_path,
            options,
        )
    }
}

/// The temporary path used while writing `final_path`.
pub fn tmp_path_for(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    final_path.with_file_name(format!(".{name}.tmp"))
}

impl<W: ShardSink> ShardWriter<W> {
    /// A writer over any sink already open at `tmp_path` (which is renamed on success and
    /// removed on failure).
    pub fn with_sink(
        sink: W,
        tmp_path: PathBuf,
        final_path: PathBuf,
        options: &ShardOptions,
    ) -> Result<Self, DataError> {
        let props = options.writer_properties()?;
        let writer = ArrowWriter::try_new(sink, schema(), Some(props)).map_err(|e| {
            let _ = std::fs::remove_file(&tmp_path);
            DataError::Parquet {
                path: tmp_path.clone(),
                message: e.to_string(),
            }
        })?;
        Ok(ShardWriter {
            writer: Some(writer),
            tmp_path,
            final_path,
            pending: Vec::new(),
            rows_per_row_group: options.rows_per_row_group,
            ids: Vec::new(),
        })
    }

    /// Rows written so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no row was written.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The path the shard will have once published.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    fn fail(&mut self, message: String) -> DataError {
        self.writer = None;
        let _ = std::fs::remove_file(&self.tmp_path);
        DataError::Parquet {
            path: self.tmp_path.clone(),
            message,
        }
    }

    fn flush_pending(&mut self) -> Result<(), DataError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = to_record_batch(&self.pending).map_err(|e| self.fail(e.to_string()))?;
        self.pending.clear();
        let res = match self.writer.as_mut() {
            Some(w) => w.write(&batch).and_then(|_| w.flush()),
            None => return Err(self.fail("writer already failed".into())),
        };
        res.map_err(|e| self.fail(e.to_string()))
    }

    /// Appends a row (buffered up to one row group, then encoded and written).
    pub fn write(&mut self, row: Triplet) -> Result<(), DataError> {
        self.ids.push(row.id.clone());
        self.pending.push(row);
        if self.pending.len() >= self.rows_per_row_group {
            self.flush_pending()?;
        }
        Ok(())
    }

    /// Writes the footer, syncs, renames to the final name and syncs the folder. On any
    /// error the temporary file is removed and nothing is published.
    pub fn finish(mut self) -> Result<PublishedShard, DataError> {
        self.flush_pending()?;
        let writer = match self.writer.take() {
            Some(w) => w,
            None => return Err(self.fail("writer already failed".into())),
        };
        let mut sink = match writer.into_inner() {
            Ok(s) => s,
            Err(e) => return Err(self.fail(e.to_string())),
        };
        if let Err(e) = sink.sync() {
            let _ = std::fs::remove_file(&self.tmp_path);
            return Err(DataError::io(&self.tmp_path, e));
        }
        drop(sink);
        if let Err(e) = std::fs::rename(&self.tmp_path, &self.final_path) {
            let _ = std::fs::remove_file(&self.tmp_path);
            return Err(DataError::io(&self.final_path, e));
        }
        sync_dir(&self.final_path)?;
        Ok(PublishedShard {
            path: self.final_path.clone(),
            ids: std::mem::take(&mut self.ids),
        })
    }

    /// Abandons the shard and removes the temporary file.
    pub fn abort(mut self) {
        self.writer = None;
        let _ = std::fs::remove_file(&self.tmp_path);
    }
}

/// `fsync`s the folder holding `path` so a rename in it is durable.
pub fn sync_dir(path: &Path) -> Result<(), DataError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match File::open(dir) {
        Ok(d) => d.sync_all().map_err(|e| DataError::io(dir, e)),
        Err(e) => Err(DataError::io(dir, e)),
    }
}

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Runs one call into the `parquet` / `arrow` readers, turning a panic into
/// [`DataError::Parquet`]. Those crates assert on some corrupt inputs instead of returning an
/// error (a division by zero in the byte-array decoder, found by the `parquet_shard` fuzz
/// target); a shard is outside data, so a corrupt one must be a typed error. (With
/// `panic = "abort"` nothing can be caught; svgen builds with unwinding.)
fn guarded<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, DataError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let what = svgen_core::error::panic_message(panic.as_ref());
        parquet_err(
            path,
            format!("the parquet reader failed on this file: {what}"),
        )
    })
}

/// Opens a Parquet file for reading and checks its footer's column-chunk byte ranges before
/// any reader uses them: every offset and size non-negative and every chunk inside the file.
/// The `parquet` crate asserts on a negative offset or size (a panic, found by the
/// `parquet_shard` fuzz target); here that is a typed error naming the file.
fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let builder = guarded(path, || ParquetRecordBatchReaderBuilder::try_new(file))?
        .map_err(|e| parquet_err(path, e))?;
    for (g, group) in builder.metadata().row_groups().iter().enumerate() {
        for (c, col) in group.columns().iter().enumerate() {
            let start = col
                .dictionary_page_offset()
                .unwrap_or(col.data_page_offset());
            let size = col.compressed_size();
            let inside = u64::try_from(start)
                .ok()
                .zip(u64::try_from(size).ok())
                .and_then(|(a, b)| a.checked_add(b))
                .is_some_and(|end| end <= len)
                && col.data_page_offset() >= 0;
            if !inside {
                return Err(parquet_err(
                    path,
                    format!(
                        "row group {g}, column {c}: byte range {start} + {size} is not inside \
                         the {len}-byte file"
                    ),
                ));
            }
        }
    }
    Ok(builder)
}

/// Checks a file schema against [`schema`] (names, types; nullability may be stricter).
pub fn check_schema(path: &Path, found: &Schema) -> Result<(), DataError> {
    let expected = schema();
    for f in expected.fields() {
        match found.field_with_name(f.name()) {
            Err(_) => {
                return Err(DataError::Schema {
                    path: path.to_path_buf(),
                    message: format!("missing column {}", f.name()),
                })
            }
            Ok(g) if g.data_type() != f.data_type() => {
                return Err(DataError::Schema {
                    path: path.to_path_buf(),
                    message: format!(
                        "column {} is {:?}, expected {:?}",
                        f.name(),
                        g.data_type(),
                        f.data_type()
                    ),
                })
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Calls `f` on every triplet of a shard, one record batch at a time (bounded memory).
pub fn for_each_triplet(
    path: impl AsRef<Path>,
    mut f: impl FnMut(Triplet) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let path = path.as_ref();
    let builder = open_parquet(path)?;
    check_schema(path, builder.schema())?;
    let mut reader =
        guarded(path, || builder.with_batch_size(64).build())?.map_err(|e| parquet_err(path, e))?;
    while let Some(batch) = guarded(path, || reader.next())? {
        let batch = batch.map_err(|e| parquet_err(path, e))?;
        for t in from_record_batch(&batch).map_err(|m| DataError::Schema {
            path: path.to_path_buf(),
            message: m,
        })? {
            f(t)?;
        }
    }
    Ok(())
}

/// Reads a whole shard (tests and small shards; prefer [`for_each_triplet`]).
pub fn read_shard(path: impl AsRef<Path>) -> Result<Vec<Triplet>, DataError> {
    let mut out = Vec::new();
    for_each_triplet(path, |t| {
        out.push(t);
        Ok(())
    })?;
    Ok(out)
}

/// Reads selected string columns of a Parquet file (any schema), e.g. only `id`.
pub fn read_string_columns(
    path: impl AsRef<Path>,
    names: &[&str],
) -> Result<Vec<Vec<Option<String>>>, DataError> {
    let path = path.as_ref();
    let builder = open_parquet(path)?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), names.iter().copied());
    let mut reader = guarded(path, || {
        builder.with_projection(mask).with_batch_size(1024).build()
    })?
    .map_err(|e| parquet_err(path, e))?;
    let mut out: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
    while let Some(batch) = guarded(path, || reader.next())? {
        let batch = batch.map_err(|e| parquet_err(path, e))?;
        for (k, name) in names.iter().enumerate() {
            let col = batch
                .column_by_name(name)
                .ok_or_else(|| DataError::Schema {
                    path: path.to_path_buf(),
                    message: format!("missing column {name}"),
                })?;
            crate::pairs::push_strings(col, &mut out[k]).map_err(|m| DataError::Schema {
                path: path.to_path_buf(),
                message: format!("column {name}: {m}"),
            })?;
        }
    }
    Ok(out)
}

/// One manifest line: a published shard and the ids it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Shard file name (relative to the output folder).
    pub shard: String,
    /// Rows.
    pub rows: usize,
    /// Ids, in row order.
    pub ids: Vec<String>,
}

/// Appends `entry` to a manifest file and `fsync`s it.
pub fn append_manifest(path: &Path, entry: &ManifestEntry) -> Result<(), DataError> {
    let line = serde_json::to_string(entry).map_err(|e| DataError::Config(e.to_string()))?;
    append_line(path, &line)
}

/// Appends one line to a file (creating it) and `fsync`s it; a torn previous line (from a
/// kill mid-write) is terminated first so it cannot swallow this one.
pub fn append_line(path: &Path, line: &str) -> Result<(), DataError> {
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| DataError::io(path, e))?;
    let len = f.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut prefix = "";
    if len > 0 {
        use std::io::{Read, Seek, SeekFrom};
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))
            .and_then(|_| f.read_exact(&mut last))
            .map_err(|e| DataError::io(path, e))?;
        if last[0] != b'\n' {
            prefix = "\n";
        }
    }
    f.write_all(format!("{prefix}{line}\n").as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(|e| DataError::io(path, e))
}

/// Reads the JSON lines of `path` that parse as `T`, skipping torn or foreign lines.
pub fn read_json_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, DataError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).split(b'\n') {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if let Ok(v) = serde_json::from_slice::<T>(&line) {
            out.push(v);
        }
    }
    Ok(out)
}

/// The lines of `bytes` that parse as `T` (torn or foreign lines are skipped, as in
/// [`read_json_lines`]).
pub fn json_lines_from_slice<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Vec<T> {
    bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<T>(line).ok())
        .collect()
}

/// Lists published shards (`*.parquet`, not hidden) in `dir`, sorted by name.
pub fn list_shards(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let e = e.map_err(|e| DataError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".parquet") && !name.starts_with('.') && e.path().is_file() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The ids already published in `dir`: from the manifests (`manifest*.jsonl`), plus any
/// shard the manifests do not list (a kill between rename and manifest append), whose ids are
/// read from the file and added to `repair_manifest`.
pub fn published_ids(dir: &Path, repair_manifest: &Path) -> Result<HashSet<String>, DataError> {
    let mut ids = HashSet::new();
    let mut listed = HashSet::new();
    if dir.exists() {
        for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
            let e = e.map_err(|e| DataError::io(dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("manifest") && name.ends_with(".jsonl") {
                for m in read_json_lines::<ManifestEntry>(&e.path())? {
                    listed.insert(m.shard);
                    ids.extend(m.ids);
                }
            }
        }
    }
    for shard in list_shards(dir)? {
        let name = shard
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if listed.contains(&name) {
            continue;
        }
        let cols = read_string_columns(&shard, &["id"])?;
        let shard_ids: Vec<String> = cols
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect();
        append_manifest(
            repair_manifest,
            &ManifestEntry {
                shard: name,
                rows: shard_ids.len(),
                ids: shard_ids.clone(),
            },
        )?;
        ids.extend(shard_ids);
    }
    Ok(ids)
}
