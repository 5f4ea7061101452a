//! Caption simplification: long, photographic captions become short descriptions of one
//! drawable subject, or are rejected.
//!
//! The thesis asked GPT-4o mini, with a few examples, to make each COCO / text-to-image-2M
//! caption simpler (no background, no colours) and to answer `NO` when a caption cannot become
//! a simple drawing. [`ChatSimplifier`] does the same against any OpenAI-compatible
//! chat-completions endpoint; [`CachedSimplifier`] keeps every answer on disk so a resumed or
//! repeated run never pays twice.
//!
//! ```
//! use svgen_data::simplify::{parse_answer, Simplification};
//! assert_eq!(parse_answer("  \"a horse\" "), Some(Simplification::Simplified("a horse".into())));
//! assert_eq!(parse_answer("NO."), Some(Simplification::Rejected));
//! assert_eq!(parse_answer(""), None);
//! ```

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, FailureKind, StageError};
use crate::http::{EndpointConfig, JsonClient};

/// The outcome of simplifying one caption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Simplification {
    /// The simplified caption.
    Simplified(String),
    /// The model answered `NO`: the caption is unusable.
    Rejected,
}

/// A caption simplifier. Implementations must be shareable across worker threads.
pub trait CaptionSimplifier: Send + Sync {
    /// Name recorded in reports (e.g. the model name).
    fn name(&self) -> &str;
    /// Simplifies one caption.
    fn simplify(&self, caption: &str) -> Result<Simplification, StageError>;
}

impl<T: CaptionSimplifier + ?Sized> CaptionSimplifier for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn simplify(&self, caption: &str) -> Result<Simplification, StageError> {
        (**self).simplify(caption)
    }
}

/// Keeps captions as they are (trimmed): the "no simplification" choice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passthrough;

impl CaptionSimplifier for Passthrough {
    fn name(&self) -> &str {
        "none"
    }
    fn simplify(&self, caption: &str) -> Result<Simplification, StageError> {
        Ok(Simplification::Simplified(caption.trim().to_string()))
    }
}

/// Instructions given to the model (our own wording of the thesis' prompt).
pub const SYSTEM_PROMPT: &str = "You turn image captions into short prompts for simple \
black-and-white drawings. Keep the main subject and what it is doing; drop colours, lighting, \
backgrounds, camera and style words, brand and product names. Make the result concrete and \
specific, a few words long. If the caption cannot become a simple drawing of a recognisable \
subject (product listings, logos, text, screenshots, abstract ideas), answer exactly NO. \
Reply with the rewritten caption only, without quotes.";

/// Few-shot examples: (caption, answer). The first two are the thesis' own examples.
pub const FEW_SHOT: &[(&str, &str)] = &[
    ("pink photo of Tokyo", "buildings in Tokyo"),
    (
        "Nickelodeon Paw Patrol 'Calling All Pups' Soft Potty Seat",
        "NO",
    ),
    (
        "A man in a blue jacket riding a brown horse across a misty field at dawn",
        "a man riding a horse",
    ),
    (
        "Close-up studio shot of a vintage red telephone on a marble table, 85mm, bokeh",
        "a vintage telephone",
    ),
    ("50% OFF summer sale banner with bold typography", "NO"),
];

/// Parses a model answer: trims whitespace, quotes and `<simplified>` tags; `NO` (any case,
/// optional trailing punctuation) is a rejection; an empty answer is `None` (protocol error).
pub fn parse_answer(raw: &str) -> Option<Simplification> {
    let mut s = raw.trim();
    for tag in ["<simplified>", "</simplified>"] {
        s = s.trim_start_matches(tag).trim_end_matches(tag).trim();
    }
    let s = s
        .trim_matches(|c: char| c == '"' || c == '\'' || c == '`' || c == '“' || c == '”')
        .trim();
    if s.is_empty() {
        return None;
    }
    let bare = s.trim_end_matches(['.', '!']).trim();
    if bare.eq_ignore_ascii_case("no") {
        return Some(Simplification::Rejected);
    }
    Some(Simplification::Simplified(s.to_string()))
}

/// Chat-completions simplifier for OpenAI, vLLM, the llama.cpp server or Ollama (`/v1`).
///
/// Sends `POST {base_url}/chat/completions` with the system prompt, the few-shot examples as
/// user/assistant turns, then the caption; reads `choices[0].message.content`.
#[derive(Debug)]
pub struct ChatSimplifier {
    client: JsonClient,
    model: String,
    temperature: f32,
    max_tokens: u32,
}

impl ChatSimplifier {
    /// Builds the client (fails on a missing API key or a bad base URL).
    pub fn new(endpoint: &EndpointConfig, model: impl Into<String>) -> Result<Self, DataError> {
        Ok(ChatSimplifier {
            client: JsonClient::new(endpoint)?
                .cap_response_bytes(crate::http::MAX_CHAT_RESPONSE_BYTES),
            model: model.into(),
            temperature: 0.0,
            max_tokens: 64,
        })
    }

    /// The request body sent for `caption` (exposed for inspection and tests).
    pub fn request_body(&self, caption: &str) -> serde_json::Value {
        let mut messages = vec![serde_json::json!({"role": "system", "content": SYSTEM_PROMPT})];
        for (q, a) in FEW_SHOT {
            messages
                .push(serde_json::json!({"role": "user", "content": format!("Caption: \"{q}\"")}));
            messages.push(serde_json::json!({"role": "assistant", "content": a}));
        }
        messages.push(
            serde_json::json!({"role": "user", "content": format!("Caption: \"{caption}\"")}),
        );
        serde_json::json!({
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        })
    }
}

impl CaptionSimplifier for ChatSimplifier {
    fn name(&self) -> &str {
        &self.model
    }

    fn simplify(&self, caption: &str) -> Result<Simplification, StageError> {
        let (resp, _attempts) = self
            .client
            .post_json("chat/completions", &self.request_body(caption))?;
        parse_chat_response(&resp)
    }
}

/// Reads a chat-completions response: `choices[0].message.content`, through [`parse_answer`].
///
/// # Errors
/// [`FailureKind::Protocol`] when the content is missing, not a string, or empty.
pub fn parse_chat_response(resp: &serde_json::Value) -> Result<Simplification, StageError> {
    let content = resp
        .pointer("/choices/0/message/content")
        .and_then(|c| c.as_str())
        .ok_or_else(|| {
            StageError::new(
                FailureKind::Protocol,
                "response has no choices[0].message.content string",
            )
        })?;
    parse_answer(content).ok_or_else(|| StageError::new(FailureKind::Protocol, "empty completion"))
}

#[derive(Serialize, Deserialize)]
struct CacheLine {
    model: String,
    caption: String,
    answer: Simplification,
}

/// An append-only on-disk cache of simplifier answers (JSON Lines; key = model + caption).
///
/// Every new answer is appended and flushed at once, so a killed run loses nothing; a torn
/// last line (from a kill mid-write) is ignored on the next load. Failures are not cached.
#[derive(Debug)]
pub struct AnswerCache {
    path: PathBuf,
    map: Mutex<HashMap<(String, String), Simplification>>,
    file: Mutex<File>,
}

impl AnswerCache {
    /// Opens (or creates) the cache file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        }
        let mut map = HashMap::new();
        if path.exists() {
            let f = File::open(&path).map_err(|e| DataError::io(&path, e))?;
            for line in BufReader::new(f).split(b'\n') {
                let line = line.map_err(|e| DataError::io(&path, e))?;
                if let Ok(l) = serde_json::from_slice::<CacheLine>(&line) {
                    map.insert((l.model, l.caption), l.answer);
                }
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| DataError::io(&path, e))?;
        // Terminate a torn last line so the next append starts on a fresh line.
        if file.metadata().map(|m| m.len()).unwrap_or(0) > 0 {
            let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
            if bytes.last() != Some(&b'\n') {
                file.write_all(b"\n").map_err(|e| DataError::io(&path, e))?;
            }
        }
        Ok(AnswerCache {
            path,
            map: Mutex::new(map),
            file: Mutex::new(file),
        })
    }

    /// Number of cached answers.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached answer, if any.
    pub fn get(&self, model: &str, caption: &str) -> Option<Simplification> {
        let map = self.map.lock().ok()?;
        map.get(&(model.to_string(), caption.to_string())).cloned()
    }

    /// Stores an answer (memory + disk).
    pub fn put(
        &self,
        model: &str,
        caption: &str,
        answer: &Simplification,
    ) -> Result<(), DataError> {
        let line = serde_json::to_string(&CacheLine {
            model: model.to_string(),
            caption: caption.to_string(),
            answer: answer.clone(),
        })
        .map_err(|e| DataError::Config(e.to_string()))?;
        {
            let mut f = self
                .file
                .lock()
                .map_err(|_| DataError::Config("cache lock poisoned".into()))?;
            f.write_all(format!("{line}\n").as_bytes())
                .and_then(|_| f.flush())
                .map_err(|e| DataError::io(&self.path, e))?;
        }
        if let Ok(mut m) = self.map.lock() {
            m.insert((model.to_string(), caption.to_string()), answer.clone());
        }
        Ok(())
    }
}

/// Wraps a simplifier with an [`AnswerCache`].
#[derive(Debug)]
pub struct CachedSimplifier<S> {
    inner: S,
    cache: AnswerCache,
}

impl<S: CaptionSimplifier> CachedSimplifier<S> {
    /// Caches `inner`'s answers in `cache`.
    pub fn new(inner: S, cache: AnswerCache) -> Self {
        CachedSimplifier { inner, cache }
    }

    /// The cache.
    pub fn cache(&self) -> &AnswerCache {
        &self.cache
    }
}

impl<S: CaptionSimplifier> CaptionSimplifier for CachedSimplifier<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn simplify(&self, caption: &str) -> Result<Simplification, StageError> {
        if let Some(hit) = self.cache.get(self.inner.name(), caption) {
            return Ok(hit);
        }
        let answer = self.inner.simplify(caption)?;
        self.cache
            .put(self.inner.name(), caption, &answer)
            .map_err(|e| StageError::internal(format!("cache write failed: {e}")))?;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed() {
        let s = |t: &str| Some(Simplification::Simplified(t.to_string()));
        assert_eq!(parse_answer("<simplified>a dog</simplified>"), s("a dog"));
        assert_eq!(parse_answer("“a dog”"), s("a dog"));
        assert_eq!(parse_answer("no"), Some(Simplification::Rejected));
        assert_eq!(parse_answer("\"NO\""), Some(Simplification::Rejected));
        assert_eq!(parse_answer("North pole"), s("North pole"));
        assert_eq!(parse_answer("  \n"), None);
    }

    #[test]
    fn cache_survives_reopen_and_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.jsonl");
        {
            let c = AnswerCache::open(&path).unwrap();
            c.put(
                "m",
                "a red car",
                &Simplification::Simplified("a car".into()),
            )
            .unwrap();
            c.put("m", "brand stuff", &Simplification::Rejected)
                .unwrap();
        }
        // Simulate a kill in the middle of an append.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"model\":\"m\",\"capt").unwrap();
        drop(f);
        let c = AnswerCache::open(&path).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("m", "brand stuff"), Some(Simplification::Rejected));
        assert_eq!(c.get("other", "brand stuff"), None);
        c.put("m", "x", &Simplification::Rejected).unwrap();
        assert_eq!(AnswerCache::open(&path).unwrap().len(), 3);
    }
}
