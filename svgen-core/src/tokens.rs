//! Exact token counting with the tokenizers of real language models.
//!
//! * [`Cl100k`]: GPT-4's `cl100k_base` BPE (what the thesis filters SVGs with), offline through
//!   `tiktoken-rs`; the BPE tables are built once per process and shared.
//! * [`HfTokenizer`]: any Hugging Face `tokenizer.json` (Llama 3, Qwen, ...) through `tokenizers`.
//!
//! Both count *text* tokens only: special-token strings such as `<|endoftext|>` are counted as
//! ordinary text and no BOS/EOS tokens are added (switch that on with
//! [`HfTokenizer::with_special_tokens`]).
//!
//! ```
//! use svgen_core::{Cl100k, TokenCounter};
//!
//! let tok = Cl100k::new();
//! assert_eq!(tok.count("hello world"), 2);
//! assert_eq!(tok.count_batch(&["hello world", ""]), vec![2, 0]);
//! ```

use std::path::Path;

use rayon::prelude::*;

/// Something that counts the tokens of a text.
///
/// Implementations must be cheap to share across threads; [`count_batch`](Self::count_batch)
/// counts in parallel on all cores (rayon's global pool).
pub trait TokenCounter: Send + Sync {
    /// Number of tokens in `text`.
    fn count(&self, text: &str) -> usize;

    /// A short name for reports, e.g. `"cl100k_base"`.
    fn name(&self) -> &str;

    /// Counts many texts in parallel; the result is in input order.
    fn count_batch(&self, texts: &[&str]) -> Vec<usize> {
        texts.par_iter().map(|t| self.count(t)).collect()
    }
}

impl<T: TokenCounter + ?Sized> TokenCounter for &T {
    fn count(&self, text: &str) -> usize {
        (**self).count(text)
    }
    fn name(&self) -> &str {
        (**self).name()
    }
    fn count_batch(&self, texts: &[&str]) -> Vec<usize> {
        (**self).count_batch(texts)
    }
}

impl<T: TokenCounter + ?Sized> TokenCounter for Box<T> {
    fn count(&self, text: &str) -> usize {
        (**self).count(text)
    }
    fn name(&self) -> &str {
        (**self).name()
    }
    fn count_batch(&self, texts: &[&str]) -> Vec<usize> {
        (**self).count_batch(texts)
    }
}

/// GPT-4's `cl100k_base` tokenizer (offline, via `tiktoken-rs`).
///
/// Construction is free: the BPE is built on first use (about a second) and shared by all
/// instances for the life of the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cl100k;

impl Cl100k {
    /// A handle to the shared `cl100k_base` tokenizer.
    pub fn new() -> Self {
        Cl100k
    }

    /// The token ids of `text` (special-token strings are encoded as ordinary text).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        tiktoken_rs::cl100k_base_singleton().encode_ordinary(text)
    }
}

impl TokenCounter for Cl100k {
    fn count(&self, text: &str) -> usize {
        self.encode(text).len()
    }

    fn name(&self) -> &str {
        "cl100k_base"
    }
}

/// An error loading a tokenizer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The file could not be read.
    #[error("cannot read tokenizer file {path}: {source}")]
    Io {
        /// The path given.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid `tokenizer.json`.
    #[error("invalid tokenizer.json{}: {message}", .path.as_deref().map(|p| format!(" {p}")).unwrap_or_default())]
    Invalid {
        /// The path, when loaded from a file.
        path: Option<String>,
        /// What the `tokenizers` crate reported.
        message: String,
    },
}

/// Any Hugging Face tokenizer, loaded from its `tokenizer.json`.
///
/// ```no_run
/// use svgen_core::{HfTokenizer, TokenCounter};
///
/// let tok = HfTokenizer::from_file("llama3/tokenizer.json")?;
/// println!("{} tokens", tok.count("<svg/>"));
/// # Ok::<(), svgen_core::TokenizerError>(())
/// ```
#[derive(Clone)]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    name: String,
    add_special_tokens: bool,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("name", &self.name)
            .field("add_special_tokens", &self.add_special_tokens)
            .finish_non_exhaustive()
    }
}

/// Parses a `tokenizer.json` with the `tokenizers` crate, defensively: the JSON syntax is checked
/// first (UTF-8, then syntax), and a panic inside the crate is caught and returned as an error.
/// `tokenizers` 0.22 deserialises its decoder through an untagged helper and `expect`s the
/// result, so a syntax error or an invalid UTF-8 byte inside the `decoder` object panicked
/// instead of failing (found by the `tokenizer` fuzz target). Every tokenizer svgen loads (CLIP, Llama, T5, token counting) goes through here.
///
/// # Errors
/// The parser's message, or the panic's.
pub fn parse_tokenizer_json(bytes: &[u8]) -> Result<tokenizers::Tokenizer, String> {
    // JSON is UTF-8; serde_json skips the strings of an ignored value without checking them.
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| e.to_string())?;
    match std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes)) {
        Ok(parsed) => parsed.map_err(|e| e.to_string()),
        Err(panic) => Err(format!(
            "the tokenizers crate failed on this file: {}",
            crate::error::panic_message(panic.as_ref())
        )),
    }
}

impl HfTokenizer {
    /// Loads a `tokenizer.json`. The counter's [`name`](TokenCounter::name) is the file's parent
    /// directory name (usually the model's name), else the file name.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let bytes =
            crate::io::read_capped(path, crate::io::MAX_METADATA_BYTES).map_err(|e| match e {
                crate::io::ReadError::Io { source, .. } => TokenizerError::Io {
                    path: shown.clone(),
                    source,
                },
                other => TokenizerError::Invalid {
                    path: Some(shown.clone()),
                    message: other.to_string(),
                },
            })?;
        let inner = parse_tokenizer_json(&bytes).map_err(|message| TokenizerError::Invalid {
            path: Some(shown.clone()),
            message,
        })?;
        let name = path
            .parent()
            .and_then(|p| p.file_name())
            .or_else(|| path.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(shown);
        Ok(HfTokenizer {
            inner,
            name,
            add_special_tokens: false,
        })
    }

    /// Parses a `tokenizer.json` from memory.
    pub fn from_bytes(bytes: &[u8], name: impl Into<String>) -> Result<Self, TokenizerError> {
        let inner = parse_tokenizer_json(bytes).map_err(|message| TokenizerError::Invalid {
            path: None,
            message,
        })?;
        Ok(HfTokenizer {
            inner,
            name: name.into(),
            add_special_tokens: false,
        })
    }

    /// Whether to count the special tokens the tokenizer's post-processor adds (BOS, EOS...).
    /// Default: false.
    pub fn with_special_tokens(mut self, add: bool) -> Self {
        self.add_special_tokens = add;
        self
    }

    /// The token ids of `text`, or `None` if the tokenizer failed on it.
    pub fn encode(&self, text: &str) -> Option<Vec<u32>> {
        self.inner
            .encode(text, self.add_special_tokens)
            .ok()
            .map(|e| e.get_ids().to_vec())
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

impl TokenCounter for HfTokenizer {
    /// The number of tokens. A tokenizer that fails on `text` (which `tokenizers` only does for
    /// inputs its truncation settings forbid) counts as `usize::MAX`, i.e. over any budget.
    fn count(&self, text: &str) -> usize {
        self.inner
            .encode(text, self.add_special_tokens)
            .map(|e| e.len())
            .unwrap_or(usize::MAX)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
