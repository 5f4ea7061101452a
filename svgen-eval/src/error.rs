//! Typed errors of svgen-eval.

use std::path::PathBuf;

use crate::hf_config::ConfigError;
use crate::weights::WeightError;

/// Everything that can go wrong while loading or running the scorers.
///
/// Weight errors always name the tensor, and shape errors give the expected and the found shape, so
/// a converted checkpoint that disagrees with its `config.json` is easy to diagnose.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file of outside data (a tokenizer file) is over its cap ([`svgen_core::io`]); refused
    /// before it is read.
    #[error("{path} is larger than {limit} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        limit: u64,
    },
    /// A JSON configuration file is malformed or holds an unsupported value (its I/O errors are
    /// [`EvalError::Io`]).
    #[error(transparent)]
    Config(ConfigError),
    /// A weight file is not a valid safetensors / PyTorch file, or a shard index is wrong. Missing
    /// tensors, wrong shapes, unsupported dtypes, unused tensors and I/O errors have their own
    /// variants.
    #[error(transparent)]
    WeightFile(WeightError),
    /// A tensor the model needs is absent from the weight file.
    #[error("missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        /// HF key of the tensor.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
    },
    /// A tensor has another shape than the configuration implies.
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// HF key of the tensor.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a dtype that cannot be converted to floats.
    #[error("tensor `{name}`: unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// HF key of the tensor.
        name: String,
        /// The dtype in the file.
        dtype: String,
    },
    /// The configuration and the weight file disagree in a way a single shape does not show
    /// (for example more encoder layers in the file than `num_hidden_layers`).
    #[error("config disagrees with weights: tensor `{name}` {message}")]
    ConfigMismatch {
        /// HF key of the offending tensor.
        name: String,
        /// What disagrees.
        message: String,
    },
    /// An input tensor handed to a model has the wrong shape or content.
    #[error("invalid input `{name}`: expected {expected}, found {found}")]
    InvalidInput {
        /// The input's name (`pixel_values`, `input_ids`, ...).
        name: String,
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },
    /// The tokenizer could not be loaded or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An image could not be decoded or encoded.
    #[error("image {path}: {message}")]
    Image {
        /// The file, or a description of the in-memory image.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Drawing a report figure failed.
    #[error("drawing {what}: {message}")]
    Plot {
        /// The figure.
        what: String,
        /// What went wrong.
        message: String,
    },
}

impl EvalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EvalError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<ConfigError> for EvalError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Io { path, source } => EvalError::Io { path, source },
            other => EvalError::Config(other),
        }
    }
}

impl From<WeightError> for EvalError {
    /// Keeps svgen-eval's tensor-level variants: I/O, missing tensors, shape and dtype errors map to
    /// [`EvalError::Io`], [`EvalError::MissingTensor`], [`EvalError::ShapeMismatch`],
    /// [`EvalError::UnsupportedDtype`]; unused tensors to [`EvalError::ConfigMismatch`] (the config
    /// describes less than the file holds); the rest is [`EvalError::WeightFile`].
    fn from(e: WeightError) -> Self {
        match e {
            WeightError::Io { path, source } => EvalError::Io { path, source },
            WeightError::MissingTensor { key, expected, .. } => EvalError::MissingTensor {
                name: key,
                expected,
            },
            WeightError::ShapeMismatch {
                key,
                expected,
                found,
            } => EvalError::ShapeMismatch {
                name: key,
                expected,
                found,
            },
            WeightError::UnsupportedDtype { key, dtype } => {
                EvalError::UnsupportedDtype { name: key, dtype }
            }
            WeightError::UnusedTensors { path, keys } => EvalError::ConfigMismatch {
                name: keys.first().cloned().unwrap_or_default(),
                message: format!(
                    "is not used by the model ({})",
                    WeightError::UnusedTensors { path, keys }
                ),
            },
            other => EvalError::WeightFile(other),
        }
    }
}

/// Result alias of svgen-eval.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

impl From<svgen_core::io::ReadError> for EvalError {
    fn from(e: svgen_core::io::ReadError) -> Self {
        use svgen_core::io::ReadError;
        match e {
            ReadError::Io { path, source } => Self::Io { path, source },
            ReadError::TooLarge { path, limit } => Self::FileTooLarge { path, limit },
            ReadError::NotUtf8 { path } => Self::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
            },
        }
    }
}
