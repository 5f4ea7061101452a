//! Typed errors of the weight loader and writer.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing safetensors checkpoints.
///
/// File-level errors name the file (a shard, an index, or the origin of in-memory bytes); tensor
/// errors name the key as the model asked for it.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// A file could not be opened, read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file is malformed; nothing beyond its header was read.
    #[error("corrupt safetensors file {path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: Corruption,
    },
    /// A shard index (`*.safetensors.index.json`) is malformed or disagrees with its shards.
    #[error("invalid shard index {path}: {problem}")]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        problem: IndexProblem,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("missing tensor `{key}` in {path} (expected shape {expected:?})")]
    MissingTensor {
        /// The key the model asked for.
        key: String,
        /// The checkpoint (file, index or origin).
        path: PathBuf,
        /// The shape the model expects (empty when the caller gave none).
        expected: Vec<usize>,
    },
    /// A tensor has another shape than the model expects.
    #[error("tensor `{key}`: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The key.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape in the file (for the writer: the number of values held).
        found: Vec<usize>,
    },
    /// A tensor's dtype is not one this loader reads, or cannot become what was asked for
    /// (integers where floats are needed, and the reverse).
    #[error("tensor `{key}`: unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The key.
        key: String,
        /// The dtype, and what was asked for.
        dtype: String,
    },
    /// After a model was built, the checkpoint still holds tensors nobody took: the configuration
    /// describes a smaller architecture than the weights (see [`crate::weights::Weights::finish`]).
    #[error("{} tensor(s) in {path} not used by the model: {}", .keys.len(), list(.keys))]
    UnusedTensors {
        /// The checkpoint.
        path: PathBuf,
        /// Every unused key, sorted.
        keys: Vec<String>,
    },
    /// A key rename gave two tensors the same name, or a tensor name cannot be written.
    #[error("invalid tensor name `{key}` in {path}: {reason}")]
    BadKey {
        /// The (new) key.
        key: String,
        /// The checkpoint or the file written.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A PyTorch pickle (`.pth`, `.bin`) could not be read (burn-store's reader).
    #[error("invalid PyTorch file {path}: {message}")]
    Pytorch {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        message: String,
    },
}

fn list(keys: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(", ... ({} more)", keys.len() - SHOWN));
    }
    s
}

impl WeightError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, problem: Corruption) -> Self {
        Self::Corrupt {
            path: path.into(),
            problem,
        }
    }

    pub(crate) fn index(path: impl Into<PathBuf>, problem: IndexProblem) -> Self {
        Self::BadIndex {
            path: path.into(),
            problem,
        }
    }
}

/// How a safetensors file is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// Shorter than the 8-byte header length.
    #[error("{len} bytes, shorter than the 8-byte header length")]
    TooShort {
        /// The file length.
        len: u64,
    },
    /// The declared header length exceeds the loader's limit.
    #[error("header of {len} bytes exceeds the limit of {limit}")]
    HeaderTooLarge {
        /// The declared length.
        len: u64,
        /// [`crate::weights::MAX_HEADER_BYTES`].
        limit: u64,
    },
    /// The declared header runs past the end of the file.
    #[error("header of {len} bytes runs past the end of the {file_len}-byte file")]
    HeaderPastEnd {
        /// The declared length.
        len: u64,
        /// The file length.
        file_len: u64,
    },
    /// The header is not a UTF-8 JSON object.
    #[error("header is not a JSON object: {0}")]
    HeaderSyntax(String),
    /// The same key appears twice in the header.
    #[error("tensor `{0}` is listed twice")]
    DuplicateKey(String),
    /// An entry lacks `dtype`, `shape` or `data_offsets`, or holds values of the wrong type.
    #[error("tensor `{key}`: {message}")]
    BadEntry {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// `__metadata__` is not an object of strings.
    #[error("`__metadata__` must map strings to strings: {0}")]
    BadMetadata(String),
    /// More dimensions than [`crate::weights::MAX_RANK`].
    #[error("tensor `{key}` has {rank} dimensions (limit {limit})")]
    RankTooLarge {
        /// The key.
        key: String,
        /// The declared rank.
        rank: usize,
        /// The limit.
        limit: usize,
    },
    /// The shape's element count or byte size does not fit in 64 bits.
    #[error("tensor `{key}`: shape {shape:?} overflows")]
    SizeOverflow {
        /// The key.
        key: String,
        /// The declared shape.
        shape: Vec<u64>,
    },
    /// `data_offsets` disagree with dtype size × element count.
    #[error("tensor `{key}`: {expected} bytes by dtype and shape, {found} by data_offsets")]
    ByteLength {
        /// The key.
        key: String,
        /// Bytes implied by the dtype and shape.
        expected: u64,
        /// Bytes between the data offsets.
        found: u64,
    },
    /// `data_offsets` are reversed or lie outside the data section.
    #[error(
        "tensor `{key}`: data_offsets [{begin}, {end}] outside the {data_len}-byte data section"
    )]
    OutOfBounds {
        /// The key.
        key: String,
        /// First offset.
        begin: u64,
        /// Second offset.
        end: u64,
        /// Length of the data section.
        data_len: u64,
    },
    /// Two tensors share bytes.
    #[error("tensors `{first}` and `{second}` overlap")]
    Overlap {
        /// The tensor that starts first.
        first: String,
        /// The tensor that starts inside it.
        second: String,
    },
    /// Bytes of the data section belong to no tensor (the format forbids holes and trailing data).
    #[error("bytes {begin}..{end} of the data section belong to no tensor")]
    Gap {
        /// First unclaimed byte (relative to the data section).
        begin: u64,
        /// End of the unclaimed bytes.
        end: u64,
    },
}

/// How a shard index is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexProblem {
    /// The index file exceeds the loader's limit.
    #[error("{len} bytes, larger than the limit of {limit}")]
    TooLarge {
        /// The file length.
        len: u64,
        /// [`crate::weights::MAX_INDEX_BYTES`].
        limit: u64,
    },
    /// Not JSON, or no `weight_map` object of strings.
    #[error("{0}")]
    Syntax(String),
    /// A shard name is not a plain file name (path separators, `..`, empty).
    #[error("shard `{shard}` of tensor `{key}` is not a plain file name")]
    ShardName {
        /// A key mapped to it.
        key: String,
        /// The shard name.
        shard: String,
    },
    /// The index maps a key to a shard that does not hold it.
    #[error("tensor `{key}` is not in its shard `{shard}`")]
    NotInShard {
        /// The key.
        key: String,
        /// The shard the index names.
        shard: String,
    },
    /// A shard holds a tensor the index does not map to it.
    #[error("shard `{shard}` holds tensor `{key}`, which the index does not map to it")]
    Unlisted {
        /// The key.
        key: String,
        /// The shard.
        shard: String,
    },
}
