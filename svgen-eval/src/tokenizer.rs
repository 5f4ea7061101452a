//! CLIP tokenization from a Hugging Face `tokenizer.json` (via the `tokenizers` crate).
//!
//! The normalisation (NFC, whitespace folding, lower-casing), the pre-tokenisation and the byte-level
//! BPE with `</w>` word ends all come from the file, exactly as transformers' `CLIPTokenizer` builds
//! them. This module adds what `tokenizer(prompts, padding="max_length", max_length=77,
//! truncation=True)` does on top: truncation to the context length keeping `<|startoftext|>` first and
//! `<|endoftext|>` last, and right padding.

use std::path::Path;

use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use crate::error::{EvalError, Result};

/// Token ids of a batch of prompts, padded to a fixed context length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipTokens {
    /// Row-major `[batch, context_length]` ids.
    pub input_ids: Vec<i64>,
    /// Row-major `[batch, context_length]`, 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Number of prompts.
    pub batch: usize,
    /// Context length (77 for CLIP).
    pub context_length: usize,
    /// Per prompt, whether it had to be truncated to fit the context.
    pub truncated: Vec<bool>,
}

/// CLIP's tokenizer.
///
/// ```
/// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenizer/tokenizer.json");
/// use svgen_eval::ClipTokenizer;
/// let tok = ClipTokenizer::from_file(path)?;
/// let t = tok.encode_batch(&["a photo of a cat", ""])?;
/// assert_eq!(t.input_ids.len(), 2 * 77);
/// assert_eq!(t.input_ids[0], tok.bos_token_id() as i64);
/// # Ok::<(), svgen_eval::EvalError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    context_length: usize,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
}

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

fn tok_err(e: impl std::fmt::Display) -> EvalError {
    EvalError::Tokenizer(e.to_string())
}

/// Reads `pad_token` from a sibling `tokenizer_config.json` / `special_tokens_map.json` when present.
fn configured_pad_token(dir: &Path) -> Option<String> {
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let Ok(text) = svgen_core::io::read_to_string_capped(
            dir.join(name),
            svgen_core::io::MAX_METADATA_BYTES,
        ) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        match v.get("pad_token") {
            Some(serde_json::Value::String(s)) => return Some(s.clone()),
            Some(serde_json::Value::Object(o)) => {
                if let Some(s) = o.get("content").and_then(|c| c.as_str()) {
                    return Some(s.to_string());
                }
            }
            _ => {}
        }
    }
    None
}

impl ClipTokenizer {
    /// Loads `tokenizer.json`. The padding token is the `pad_token` of a sibling
    /// `tokenizer_config.json` / `special_tokens_map.json` if there is one, else `<|endoftext|>`
    /// (OpenAI's convention).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = svgen_core::io::read_capped(path, svgen_core::io::MAX_METADATA_BYTES)?;
        let pad = path.parent().and_then(configured_pad_token);
        Self::from_bytes(&bytes, pad.as_deref())
    }

    /// Loads a tokenizer from a folder holding `tokenizer.json` (an HF checkpoint folder).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(dir.as_ref().join("tokenizer.json"))
    }

    /// Parses `tokenizer.json` bytes; `pad_token` defaults to `<|endoftext|>`.
    pub fn from_bytes(json: &[u8], pad_token: Option<&str>) -> Result<Self> {
        let inner = svgen_core::parse_tokenizer_json(json).map_err(tok_err)?;
        let id = |t: &str| {
            inner.token_to_id(t).ok_or_else(|| {
                EvalError::Tokenizer(format!("token `{t}` is not in the vocabulary"))
            })
        };
        let bos_id = id(BOS)?;
        let eos_id = id(EOS)?;
        let pad_id = id(pad_token.unwrap_or(EOS))?;
        let mut tok = ClipTokenizer {
            inner,
            context_length: 77,
            bos_id,
            eos_id,
            pad_id,
        };
        tok.configure()?;
        Ok(tok)
    }

    fn configure(&mut self) -> Result<()> {
        let pad_token = self
            .inner
            .id_to_token(self.pad_id)
            .unwrap_or_else(|| EOS.to_string());
        self.inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: self.context_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(tok_err)?;
        self.inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(self.context_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: self.pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        Ok(())
    }

    /// Sets the context length (the text model's `max_position_embeddings`, 77 for CLIP).
    pub fn with_context_length(mut self, n: usize) -> Result<Self> {
        if n < 2 {
            return Err(EvalError::Tokenizer(format!(
                "context length {n} leaves no room for BOS and EOS"
            )));
        }
        self.context_length = n;
        self.configure()?;
        Ok(self)
    }

    /// Context length.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// `<|startoftext|>` id.
    pub fn bos_token_id(&self) -> u32 {
        self.bos_id
    }

    /// `<|endoftext|>` id.
    pub fn eos_token_id(&self) -> u32 {
        self.eos_id
    }

    /// Padding id.
    pub fn pad_token_id(&self) -> u32 {
        self.pad_id
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Number of tokens of `prompt` without truncation, BOS and EOS included.
    pub fn count_tokens(&self, prompt: &str) -> Result<usize> {
        let mut plain = self.inner.clone();
        plain.with_truncation(None).map_err(tok_err)?;
        plain.with_padding(None);
        Ok(plain.encode(prompt, true).map_err(tok_err)?.len())
    }

    /// Tokenises a batch: `[BOS, tokens…, EOS, pad…]`, truncated to the context length with EOS kept
    /// last. Empty prompts give `[BOS, EOS, pad…]`.
    pub fn encode_batch<S: AsRef<str>>(&self, prompts: &[S]) -> Result<ClipTokens> {
        let inputs: Vec<&str> = prompts.iter().map(AsRef::as_ref).collect();
        let encs = self.inner.encode_batch(inputs, true).map_err(tok_err)?;
        let n = self.context_length;
        let mut input_ids = Vec::with_capacity(encs.len() * n);
        let mut attention_mask = Vec::with_capacity(encs.len() * n);
        let mut truncated = Vec::with_capacity(encs.len());
        for e in &encs {
            if e.get_ids().len() != n {
                return Err(EvalError::Tokenizer(format!(
                    "encoding has {} ids, expected {n}",
                    e.get_ids().len()
                )));
            }
            input_ids.extend(e.get_ids().iter().map(|&i| i as i64));
            attention_mask.extend(e.get_attention_mask().iter().map(|&i| i as i64));
            truncated.push(!e.get_overflowing().is_empty());
        }
        Ok(ClipTokens {
            input_ids,
            attention_mask,
            batch: encs.len(),
            context_length: n,
            truncated,
        })
    }
}
