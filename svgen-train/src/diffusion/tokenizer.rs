//! The CLIP tokenizer of a Stable Diffusion or FLUX folder (`tokenizer/`).
//!
//! Folders saved by recent transformers hold a `tokenizer.json`; the original SD 1.x hub folders hold
//! only the slow tokenizer's `vocab.json` + `merges.txt`. Both give the same [`ClipTokenizer`] (from
//! svgen-eval): for the latter we assemble the fast-tokenizer description transformers' converter
//! produces for `CLIPTokenizer` (NFC + whitespace folding + lower-casing, CLIP's split regex, byte-level
//! BPE with `</w>` word ends, `<|startoftext|>`/`<|endoftext|>` around every prompt) and load it with the
//! `tokenizers` crate.
//!
//! ```
//! # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sd/tiny-sd/tokenizer");
//! use svgen_train::diffusion::tokenizer::load_tokenizer;
//! let tok = load_tokenizer(dir)?;
//! let ids = tok.encode_batch(&["a red circle"])?;
//! assert_eq!(ids.input_ids.len(), 77);
//! # Ok::<(), svgen_train::TrainError>(())
//! ```

use std::path::Path;

use serde_json::{json, Map, Value};
use svgen_eval::tokenizer::ClipTokenizer;

use crate::error::{Result, TrainError};

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
/// CLIP's pre-tokenisation pattern (special tokens, English contractions, letters, single digits,
/// punctuation runs).
const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The `pad_token` named by `tokenizer_config.json` or `special_tokens_map.json`, if any.
fn configured_pad_token(dir: &Path) -> Option<String> {
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let Ok(text) = svgen_core::io::read_to_string_capped(
            dir.join(name),
            svgen_core::io::MAX_METADATA_BYTES,
        ) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match v.get("pad_token") {
            Some(Value::String(s)) => return Some(s.clone()),
            Some(Value::Object(o)) => {
                if let Some(s) = o.get("content").and_then(Value::as_str) {
                    return Some(s.to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// Loads the CLIP tokenizer of a diffusers `tokenizer/` folder: `tokenizer.json` when present,
/// otherwise `vocab.json` + `merges.txt`. The padding token comes from `tokenizer_config.json` /
/// `special_tokens_map.json` (SD 1.x pads with `<|endoftext|>`, SD 2.x with `!`).
///
/// # Errors
/// [`TrainError::MissingFolder`] naming `tokenizer.json` or `vocab.json`/`merges.txt` when neither form
/// is complete; [`TrainError::Eval`] / [`TrainError::Json`] for unreadable files.
pub fn load_tokenizer(dir: impl AsRef<Path>) -> Result<ClipTokenizer> {
    let dir = dir.as_ref();
    let pad = configured_pad_token(dir);
    let fast = dir.join("tokenizer.json");
    if fast.is_file() {
        let bytes = TrainError::read_capped(&fast, svgen_core::io::MAX_METADATA_BYTES)?;
        return Ok(ClipTokenizer::from_bytes(&bytes, pad.as_deref())?);
    }
    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    for (path, name) in [(&vocab, "vocab.json"), (&merges, "merges.txt")] {
        if !path.is_file() {
            return Err(TrainError::MissingFolder {
                name: format!("tokenizer.json (or {name})"),
                path: dir.to_path_buf(),
            });
        }
    }
    let vocab_text = TrainError::read_text_capped(&vocab, svgen_core::io::MAX_METADATA_BYTES)?;
    let vocab_json: Value =
        serde_json::from_str(&vocab_text).map_err(|e| TrainError::json(&vocab, e))?;
    let merges_text = TrainError::read_text_capped(&merges, svgen_core::io::MAX_METADATA_BYTES)?;
    clip_tokenizer_from_vocab_merges(&vocab_json, &merges_text, pad.as_deref())
}

/// Builds the CLIP tokenizer from the slow tokenizer's files: `vocab` is the parsed `vocab.json`
/// (token → id), `merges` the text of `merges.txt` (a `#version` header line, then one `left right`
/// pair per line).
///
/// # Errors
/// [`TrainError::Tokenizer`] when the vocabulary is not a token → id map, lacks `<|startoftext|>` /
/// `<|endoftext|>`, or a merge line is not a pair.
pub fn clip_tokenizer_from_vocab_merges(
    vocab: &Value,
    merges: &str,
    pad_token: Option<&str>,
) -> Result<ClipTokenizer> {
    let map: &Map<String, Value> = vocab
        .as_object()
        .ok_or_else(|| TrainError::Tokenizer("vocab.json is not a token -> id object".into()))?;
    let id_of = |token: &str| -> Result<u64> {
        map.get(token).and_then(Value::as_u64).ok_or_else(|| {
            TrainError::Tokenizer(format!("vocab.json lacks the special token `{token}`"))
        })
    };
    let (bos, eos) = (id_of(BOS)?, id_of(EOS)?);
    if let Some((k, v)) = map.iter().find(|(_, v)| v.as_u64().is_none()) {
        return Err(TrainError::Tokenizer(format!(
            "vocab.json maps `{k}` to {v}, not an id"
        )));
    }
    let mut pairs = Vec::new();
    for (n, line) in merges.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || (n == 0 && line.starts_with("#version")) {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                pairs.push(json!([a, b]));
            }
            _ => {
                return Err(TrainError::Tokenizer(format!(
                    "merges.txt line {}: `{line}` is not a `left right` pair",
                    n + 1
                )))
            }
        }
    }
    let special = |id: u64, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let description = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(bos, BOS), special(eos, EOS)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_SPLIT}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [EOS, eos], "cls": [BOS, bos],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": EOS, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": pairs}
    });
    let bytes = serde_json::to_vec(&description)
        .map_err(|e| TrainError::Tokenizer(format!("cannot serialise the tokenizer: {e}")))?;
    Ok(ClipTokenizer::from_bytes(&bytes, pad_token)?)
}
