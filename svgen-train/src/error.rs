//! Typed errors of svgen-train.

use std::path::PathBuf;

/// Everything that can go wrong while loading, training or generating with a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file of outside data (tokenizer, chat template, caption, training image, run state) is
    /// over its cap ([`svgen_core::io`]); refused before it is read.
    #[error("{path} is larger than {limit} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        limit: u64,
    },
    /// A JSON file (config, index, adapter config, JSONL line) is malformed.
    #[error("invalid JSON in {path}: {message}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A configuration value is missing or unsupported.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A safetensors file is corrupt (bad header, truncated data).
    #[error("corrupt safetensors file {path}: {message}")]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("missing tensor `{key}` in {path}")]
    MissingTensor {
        /// HF / PEFT key name.
        key: String,
        /// The checkpoint folder or file.
        path: PathBuf,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// HF / PEFT key name.
        key: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a dtype we cannot load.
    #[error("tensor `{key}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// HF / PEFT key name.
        key: String,
        /// The dtype in the file.
        dtype: String,
    },
    /// An adapter tensor does not belong to any module of the base model.
    #[error("adapter key `{key}` does not match any module of the base model")]
    UnexpectedAdapterKey {
        /// The PEFT key name.
        key: String,
    },
    /// Tokenizer problems (missing file, unknown token, encode/decode failure).
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// A chat template does not compile or fails while rendering (syntax, unknown filter, a
    /// value of the wrong type, the rendering budget exhausted).
    #[error("chat template error: {0}")]
    ChatTemplate(String),
    /// A chat template called `raise_exception(message)` (e.g. roles that do not alternate).
    #[error("chat template raised: {0}")]
    ChatTemplateException(String),
    /// An adapter's trainable token rows do not match the tokenizer it is used with.
    #[error("adapter {adapter} does not match tokenizer {tokenizer}: {detail}")]
    TokenMismatch {
        /// The adapter folder.
        adapter: PathBuf,
        /// The tokenizer file or folder.
        tokenizer: PathBuf,
        /// Which index disagrees, with the token each side has there.
        detail: String,
    },
    /// Invalid arguments to generation or training.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The training loss became NaN or infinite.
    #[error("non-finite loss {loss} at step {step}; last good checkpoint: {last_checkpoint:?}")]
    NonFiniteLoss {
        /// The optimiser step at which it happened.
        step: usize,
        /// The loss value.
        loss: f32,
        /// The last checkpoint written before the failure, if any.
        last_checkpoint: Option<PathBuf>,
    },
    /// A model folder lacks a sub-folder (or file) the pipeline needs, e.g. `unet/` or `tokenizer/`.
    #[error("missing sub-folder `{name}` in {path}")]
    MissingFolder {
        /// The sub-folder (or file) name, e.g. `vae`.
        name: String,
        /// The model folder that should contain it.
        path: PathBuf,
    },
    /// A LoRA file holds a tensor we recognise but cannot load (text-encoder LoRA, DoRA, a
    /// format mixed with another in one file, ...).
    #[error("LoRA key `{key}`: {reason}")]
    UnsupportedLora {
        /// The key in the LoRA file.
        key: String,
        /// Why it cannot be loaded.
        reason: String,
    },
    /// A `scheduler_config.json` names a scheduler class we do not implement.
    #[error(
        "unknown scheduler `{0}` (supported: DDIMScheduler, EulerDiscreteScheduler, \
         EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler for Stable Diffusion, \
         FlowMatchEulerDiscreteScheduler for FLUX; other SD configs can be used with an explicit \
         scheduler kind)"
    )]
    UnknownScheduler(String),
    /// An error of svgen-eval (CLIP text encoder, tokenizer, scorer) used by the SD pipeline.
    #[error(transparent)]
    Eval(#[from] svgen_eval::EvalError),
    /// A grid-search scorer could not score an image (tracing, token counting, CLIP).
    #[error("scorer `{scorer}` failed: {message}")]
    Scorer {
        /// The scorer's name.
        scorer: String,
        /// What went wrong.
        message: String,
    },
    /// A checkpoint holds a tensor the configured architecture has no place for (the config
    /// and the weights disagree, e.g. more layers in the file than `layers_per_block` says).
    #[error(
        "unexpected tensor `{key}` in {path} (not part of the configured architecture){}",
        if *.more > 0 { format!("; {} more unused tensor(s)", .more) } else { String::new() }
    )]
    UnexpectedTensor {
        /// The (first, in key order) key in the file.
        key: String,
        /// The checkpoint file.
        path: PathBuf,
        /// How many other tensors were left unused.
        more: usize,
    },
    /// A configuration key holds a value we do not support (e.g. `beta_schedule: "sigmoid"`).
    #[error("unsupported value {value} for `{key}`")]
    UnsupportedValue {
        /// The configuration key, as spelled in the diffusers / HF file.
        key: String,
        /// The value found (JSON text).
        value: String,
    },
    /// A sequence needs more positions than the model's position range (its
    /// `max_position_embeddings`, as far as its RoPE scaling extends it).
    #[error(
        "a sequence needs {positions} positions, beyond the model's range of {limit} \
         (max_position_embeddings, extended by rope scaling where the config has it)"
    )]
    SequenceTooLong {
        /// Positions the sequence needs (its largest position id + 1).
        positions: usize,
        /// The model's position range.
        limit: usize,
    },
    /// Two tensors meet in an operation with dtypes that cannot be combined (e.g. a `bf16`
    /// activation against an `f32` weight): refused rather than computed on reinterpreted
    /// memory.
    #[error("dtype mismatch in {op}: `{left}` is {left_dtype}, `{right}` is {right_dtype}")]
    DtypeMismatch {
        /// The operation (e.g. `linear`, `RMSNorm`, `AdamW`).
        op: String,
        /// The first tensor's name.
        left: String,
        /// Its dtype.
        left_dtype: String,
        /// The second tensor's name.
        right: String,
        /// Its dtype.
        right_dtype: String,
    },
    /// The backend cannot compute in the requested weight dtype (e.g. `bf16` on a backend
    /// without it); raised before any weight is read.
    #[error("backend `{backend}` cannot compute in {dtype}")]
    DtypeNotSupported {
        /// The requested dtype.
        dtype: String,
        /// The backend's name.
        backend: String,
    },
}

impl TrainError {
    /// A bounded read of `path` ([`svgen_core::io::read_capped`]) with the crate's errors.
    pub(crate) fn read_capped(
        path: impl AsRef<std::path::Path>,
        limit: u64,
    ) -> Result<Vec<u8>, Self> {
        svgen_core::io::read_capped(path, limit).map_err(Self::from)
    }

    /// [`TrainError::read_capped`] for UTF-8 text.
    pub(crate) fn read_text_capped(
        path: impl AsRef<std::path::Path>,
        limit: u64,
    ) -> Result<String, Self> {
        svgen_core::io::read_to_string_capped(path, limit).map_err(Self::from)
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        Self::Json {
            path: path.into(),
            message: err.to_string(),
        }
    }
}

impl From<svgen_eval::DtypeError> for TrainError {
    /// A backend that cannot compute in the dtype keeps its own variant
    /// ([`TrainError::DtypeNotSupported`]); a bad flag value or an f32-only model is an invalid
    /// argument.
    fn from(e: svgen_eval::DtypeError) -> Self {
        match e {
            svgen_eval::DtypeError::NotSupported { dtype, backend } => {
                TrainError::DtypeNotSupported { dtype, backend }
            }
            other => TrainError::InvalidArgument(other.to_string()),
        }
    }
}

impl From<svgen_eval::WeightError> for TrainError {
    /// The shared loader's errors, mapped onto this crate's variants (which callers match on):
    /// a file that cannot be parsed (corrupt header, bad shard index, unusable key, PyTorch pickle)
    /// becomes [`TrainError::Safetensors`] naming the file (but a key the shard index names and its
    /// shard lacks is [`TrainError::MissingTensor`]); tensors left unused by the model become
    /// [`TrainError::UnexpectedTensor`] naming the first of them.
    fn from(e: svgen_eval::WeightError) -> Self {
        use svgen_eval::WeightError as W;
        match e {
            W::Io { path, source } => Self::Io { path, source },
            W::MissingTensor { key, path, .. } => Self::MissingTensor { key, path },
            W::ShapeMismatch {
                key,
                expected,
                found,
            } => Self::ShapeMismatch {
                key,
                expected,
                found,
            },
            W::UnsupportedDtype { key, dtype } => Self::UnsupportedDtype { key, dtype },
            W::UnusedTensors { path, mut keys } => {
                let more = keys.len().saturating_sub(1);
                let key = if keys.is_empty() {
                    String::new()
                } else {
                    keys.swap_remove(0)
                };
                Self::UnexpectedTensor { key, path, more }
            }
            W::Corrupt { path, problem } => Self::Safetensors {
                path,
                message: problem.to_string(),
            },
            // A tensor the index names but its shard lacks is missing (from that shard).
            W::BadIndex {
                path,
                problem: svgen_eval::weights::IndexProblem::NotInShard { key, shard },
            } => Self::MissingTensor {
                key,
                path: path.with_file_name(shard),
            },
            W::BadIndex { path, problem } => Self::Safetensors {
                path,
                message: format!("shard index: {problem}"),
            },
            W::BadKey { key, path, reason } => Self::Safetensors {
                path,
                message: format!("tensor `{key}`: {reason}"),
            },
            W::Pytorch { path, message } => Self::Safetensors { path, message },
        }
    }
}

impl From<svgen_eval::ConfigError> for TrainError {
    /// The shared config reader's errors, mapped onto this crate's variants: unreadable files
    /// [`TrainError::Io`] / [`TrainError::Json`], values of the wrong type or unsupported values
    /// [`TrainError::UnsupportedValue`] naming the key (with its section), missing or invalid
    /// values [`TrainError::Config`] with the reader's message (file and key).
    fn from(e: svgen_eval::ConfigError) -> Self {
        use svgen_eval::ConfigError as C;
        match e {
            C::Io { path, source } => Self::Io { path, source },
            C::Json { path, message } => Self::Json { path, message },
            C::WrongType {
                key,
                expected,
                found,
                ..
            } => Self::UnsupportedValue {
                key,
                value: format!("{found} (must be {expected})"),
            },
            C::Unsupported {
                key, value, reason, ..
            } => Self::UnsupportedValue {
                key,
                value: if reason.is_empty() {
                    value
                } else {
                    format!("{value} ({reason})")
                },
            },
            e @ (C::Missing { .. } | C::Invalid { .. }) => Self::Config(e.to_string()),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl From<svgen_core::io::ReadError> for TrainError {
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
