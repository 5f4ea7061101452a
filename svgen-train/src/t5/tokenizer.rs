//! T5's SentencePiece tokenizer from a `tokenizer.json` (what `T5TokenizerFast` saves: a Unigram
//! model, the Precompiled normaliser of the SentencePiece file, Metaspace pre-tokenisation and
//! `</s>` appended), padded and truncated as diffusers' FLUX pipeline calls it
//! (`padding="max_length", max_length=max_sequence_length, truncation=True`): a prompt longer than
//! the limit keeps its first `max_length − 1` tokens and `</s>`.

use std::path::Path;

use svgen_eval::hf_config::HfConfig;
use tokenizers::Tokenizer;

use crate::error::{Result, TrainError};

/// Largest `tokenizer.json` read (bytes). T5's is about 2.4 MB.
pub const MAX_TOKENIZER_BYTES: u64 = svgen_core::io::MAX_METADATA_BYTES;

/// Largest `max_length` accepted.
pub const MAX_T5_LENGTH: usize = 4096;

/// Token ids of a batch of prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct T5Tokens {
    /// `[batch, length]` ids, row-major.
    pub input_ids: Vec<i64>,
    /// `[batch, length]` 1 for tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Number of prompts.
    pub batch: usize,
    /// The padded length.
    pub length: usize,
    /// Per prompt: its untruncated token count (with `</s>`), when it exceeded `length`.
    pub truncated: Vec<Option<usize>>,
}

/// The T5 tokenizer of a FLUX folder's `tokenizer_2/`.
#[derive(Debug, Clone)]
pub struct T5Tokenizer {
    inner: Tokenizer,
    pad_id: u32,
    eos_id: u32,
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Tokenizer(format!("{}: {e}", path.display()))
}

impl T5Tokenizer {
    /// Reads `dir/tokenizer.json`; the padding and end tokens are the ones
    /// `tokenizer_config.json` names (`<pad>` and `</s>` by default).
    ///
    /// # Errors
    /// [`TrainError::MissingFolder`] naming `tokenizer.json` when it is absent (a folder holding
    /// only `spiece.model` must be converted with transformers first); [`TrainError::Tokenizer`]
    /// naming the file when it is unreadable, too large or lacks the padding / end token.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(TrainError::MissingFolder {
                name: "tokenizer.json (T5's fast tokenizer; convert spiece.model with \
                       transformers' T5TokenizerFast if the folder has only that)"
                    .into(),
                path: dir.to_path_buf(),
            });
        }
        let bytes = TrainError::read_capped(&path, MAX_TOKENIZER_BYTES)?;
        let (mut pad, mut eos) = ("<pad>".to_string(), "</s>".to_string());
        let cfg_path = dir.join("tokenizer_config.json");
        if cfg_path.is_file() {
            let c = HfConfig::read(&cfg_path)?;
            // Either a string or `{"content": ...}` (older files).
            for (key, slot) in [("pad_token", &mut pad), ("eos_token", &mut eos)] {
                match c.raw(key) {
                    Some(serde_json::Value::String(s)) => *slot = s.clone(),
                    Some(serde_json::Value::Object(o)) => {
                        if let Some(s) = o.get("content").and_then(serde_json::Value::as_str) {
                            *slot = s.to_string();
                        }
                    }
                    _ => {}
                }
            }
        }
        Self::from_bytes(&bytes, &pad, &eos).map_err(|e| match e {
            TrainError::Tokenizer(m) => tok_err(&path, m),
            other => other,
        })
    }

    /// Parses a `tokenizer.json` held in memory with the given padding and end tokens.
    ///
    /// # Errors
    /// [`TrainError::Tokenizer`] when it does not parse or lacks one of the tokens.
    pub fn from_bytes(json: &[u8], pad_token: &str, eos_token: &str) -> Result<Self> {
        let mut inner = svgen_core::parse_tokenizer_json(json).map_err(TrainError::Tokenizer)?;
        // Our own truncation and padding below.
        inner
            .with_truncation(None)
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        let id = |t: &str| {
            inner.token_to_id(t).ok_or_else(|| {
                TrainError::Tokenizer(format!("the vocabulary lacks the token `{t}`"))
            })
        };
        let (pad_id, eos_id) = (id(pad_token)?, id(eos_token)?);
        Ok(Self {
            inner,
            pad_id,
            eos_id,
        })
    }

    /// The padding token id.
    pub fn pad_token_id(&self) -> u32 {
        self.pad_id
    }

    /// The end-of-sequence token id.
    pub fn eos_token_id(&self) -> u32 {
        self.eos_id
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The ids of one prompt with `</s>`, untruncated.
    ///
    /// # Errors
    /// [`TrainError::Tokenizer`] when encoding fails.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(prompt, true)
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// Ids padded with `<pad>` to `length` and truncated as transformers does (the first
    /// `length − 1` tokens and `</s>`); [`T5Tokens::truncated`] records which prompts were cut.
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] for `length` 0 or above [`MAX_T5_LENGTH`];
    /// [`TrainError::Tokenizer`] when encoding fails.
    pub fn encode_batch<S: AsRef<str>>(&self, prompts: &[S], length: usize) -> Result<T5Tokens> {
        if length == 0 || length > MAX_T5_LENGTH {
            return Err(TrainError::InvalidArgument(format!(
                "T5 max_sequence_length must be in 1..={MAX_T5_LENGTH}, got {length}"
            )));
        }
        let mut input_ids = Vec::with_capacity(prompts.len() * length);
        let mut attention_mask = Vec::with_capacity(prompts.len() * length);
        let mut truncated = Vec::with_capacity(prompts.len());
        for p in prompts {
            let mut ids = self.encode(p.as_ref())?;
            if ids.len() > length {
                truncated.push(Some(ids.len()));
                // The post-processor's `</s>` survives truncation, as in transformers.
                if ids.last() == Some(&self.eos_id) {
                    ids.truncate(length - 1);
                    ids.push(self.eos_id);
                } else {
                    ids.truncate(length);
                }
            } else {
                truncated.push(None);
            }
            let n = ids.len();
            input_ids.extend(ids.iter().map(|&i| i64::from(i)));
            input_ids.extend(std::iter::repeat_n(i64::from(self.pad_id), length - n));
            attention_mask.extend(std::iter::repeat_n(1, n));
            attention_mask.extend(std::iter::repeat_n(0, length - n));
        }
        Ok(T5Tokens {
            input_ids,
            attention_mask,
            batch: prompts.len(),
            length,
            truncated,
        })
    }
}
