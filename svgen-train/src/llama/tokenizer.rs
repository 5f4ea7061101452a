//! Llama tokenizers (HF `tokenizer.json` + `tokenizer_config.json`), their chat templates, the
//! thesis' special tokens and prompt formats.
//!
//! Loading follows transformers 5:
//! - a `tokenizer_config.json` with `tokenizer_class` `PreTrainedTokenizerFast` (Llama 3.x)
//!   uses `tokenizer.json` as it is: the split regex, byte-level BPE with `ignore_merges`, the
//!   `<|begin_of_text|>` post-processor and the 256 reserved special tokens of Meta's release;
//! - `LlamaTokenizer` / `LlamaTokenizerFast` (Llama 2) rebuilds the pipeline around the file's
//!   vocabulary and merges as transformers' `LlamaTokenizer` does: no normaliser, a `Metaspace`
//!   pre-tokenizer (`prepend_scheme` `first` unless `legacy: true`, `always` then, `never` with
//!   `add_prefix_space: false`), byte fallback with fused unknowns, and a `<s>`-prefixing
//!   post-processor when `add_bos_token` / `add_eos_token` are set. Text after a special token is
//!   therefore not given a leading `▁` (`<s>[INST]`), where the file's own `Prepend` normaliser
//!   would add one; token ids equal `apply_chat_template`'s.
//!
//! The chat template (see [`crate::llama::chat_template`]) is read from the same folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Result, TrainError};
use crate::llama::chat_template::{special_tokens_of, ChatOptions, ChatTemplate};
use crate::nn::json::read_json;

/// The special tokens the thesis adds: context start, object list start, end of SVG.
pub const THESIS_SPECIAL_TOKENS: [&str; 3] = ["<|ctx|>", "<|objs|>", "<|end_svg|>"];
/// The end-of-SVG token generation stops on.
pub const END_SVG: &str = "<|end_svg|>";
/// The thesis' prompt: the description between `<|ctx|>` and `<|objs|>`, after the
/// instruction of section 6.1. The SVG follows, then `<|end_svg|>`.
pub const THESIS_PROMPT: &str = "<|ctx|>Create a valid minimal SVG for: {description}<|objs|>";
/// The placeholder a [`ThesisPrompt`] template must hold.
pub const DESCRIPTION_PLACEHOLDER: &str = "{description}";

/// One chat message (`role` is `system`, `user` or `assistant`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// The message as the JSON object a chat template reads.
    pub fn to_json(&self) -> Json {
        json!({"role": self.role, "content": self.content})
    }
}

/// The thesis' prompt template: text with exactly one `{description}`; the default is
/// [`THESIS_PROMPT`].
///
/// ```
/// use svgen_train::llama::tokenizer::ThesisPrompt;
/// let p = ThesisPrompt::default();
/// assert_eq!(p.fill("a red apple"), "<|ctx|>Create a valid minimal SVG for: a red apple<|objs|>");
/// assert!(ThesisPrompt::new("no placeholder").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThesisPrompt {
    template: String,
}

impl Default for ThesisPrompt {
    fn default() -> Self {
        Self {
            template: THESIS_PROMPT.to_string(),
        }
    }
}

impl ThesisPrompt {
    /// A template; it must hold `{description}` exactly once
    /// ([`TrainError::InvalidArgument`] otherwise).
    pub fn new(template: impl Into<String>) -> Result<Self> {
        let template = template.into();
        let n = template.matches(DESCRIPTION_PLACEHOLDER).count();
        if n != 1 {
            return Err(TrainError::InvalidArgument(format!(
                "the prompt template must contain `{DESCRIPTION_PLACEHOLDER}` exactly once, \
                 found {n} in {template:?}"
            )));
        }
        Ok(Self { template })
    }

    /// The template text.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The prompt for a description (trimmed).
    pub fn fill(&self, description: &str) -> String {
        self.template
            .replacen(DESCRIPTION_PLACEHOLDER, description.trim(), 1)
    }
}

/// How a (description, SVG) pair is laid out as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptFormat {
    /// The thesis' format (the default): `<|begin_of_text|>` (the tokenizer's BOS), the filled
    /// [`ThesisPrompt`], then the SVG and `<|end_svg|>`.
    Thesis(ThesisPrompt),
    /// The checkpoint's chat template (`apply_chat_template`): optional system message, the
    /// description as the user turn (with `add_generation_prompt`), the SVG followed by
    /// `<|end_svg|>` as the assistant turn.
    Chat {
        /// The system prompt, if any.
        system: Option<String>,
    },
    /// A plain format: `Instruction: {description}\nResponse: ` then the SVG and `<|end_svg|>`.
    InstructionResponse,
}

impl Default for PromptFormat {
    fn default() -> Self {
        Self::Thesis(ThesisPrompt::default())
    }
}

/// What [`LlamaTokenizer::ensure_special_tokens`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokensReport {
    /// Tokens that were missing and were added, with their new ids.
    pub added: Vec<(String, u32)>,
    /// Tokens the tokenizer already had, with their ids.
    pub present: Vec<(String, u32)>,
    /// Tokenizer length before adding.
    pub len_before: usize,
    /// Tokenizer length after adding.
    pub len_after: usize,
}

impl SpecialTokensReport {
    /// A message for the user when tokens were added, `None` when nothing changed.
    pub fn message(&self) -> Option<String> {
        if self.added.is_empty() {
            return None;
        }
        let list: Vec<String> = self
            .added
            .iter()
            .map(|(t, id)| format!("{t} = {id}"))
            .collect();
        Some(format!(
            "the tokenizer lacked {} special token(s); added {} (its length grows from {} to {}, \
             so the model's embeddings are resized and the new rows should be trained)",
            self.added.len(),
            list.join(", "),
            self.len_before,
            self.len_after
        ))
    }
}

/// A HF tokenizer with its `tokenizer_config.json` and chat template.
///
/// ```no_run
/// use svgen_train::llama::tokenizer::{ChatMessage, LlamaTokenizer};
/// let tok = LlamaTokenizer::from_dir("Llama-3.2-1B-Instruct").unwrap();
/// let ids = tok.encode_chat(&[ChatMessage::new("user", "a red apple icon")], true).unwrap();
/// assert!(!ids.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct LlamaTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    config: Option<Json>,
    chat_template: Option<ChatTemplate>,
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Tokenizer(format!("{}: {e}", path.display()))
}

/// Whether `tokenizer_config.json` asks for transformers' `LlamaTokenizer` class.
fn is_llama_class(config: &Json) -> bool {
    matches!(
        config.get("tokenizer_class").and_then(Json::as_str),
        Some("LlamaTokenizer" | "LlamaTokenizerFast")
    )
}

/// transformers 5's `LlamaTokenizer.__init__` applied to a `tokenizer.json`: the same
/// vocabulary, merges and added tokens in its own pipeline (see the module documentation).
fn llama_class_pipeline(mut file: Json, config: &Json, path: &Path) -> Result<Json> {
    if file.pointer("/model/type").and_then(Json::as_str) != Some("BPE") {
        return Err(tok_err(
            path,
            "tokenizer_class LlamaTokenizer needs a BPE tokenizer.json",
        ));
    }
    let flag = |k: &str| config.get(k).and_then(Json::as_bool);
    let add_prefix_space = flag("add_prefix_space").unwrap_or(true);
    let legacy = flag("legacy").unwrap_or(false);
    let scheme = match (add_prefix_space, legacy) {
        (false, _) => "never",
        (true, true) => "always",
        (true, false) => "first",
    };
    file["normalizer"] = Json::Null;
    file["pre_tokenizer"] =
        json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": false});
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_prefix_space {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    file["decoder"] = json!({"type": "Sequence", "decoders": decoders});
    let model = &mut file["model"];
    model["fuse_unk"] = json!(true);
    model["byte_fallback"] = json!(true);
    model["unk_token"] = Json::Null;
    model["dropout"] = Json::Null;
    model["ignore_merges"] = json!(false);
    model["continuing_subword_prefix"] = Json::Null;
    model["end_of_word_suffix"] = Json::Null;
    if config.get("add_bos_token").is_some() || config.get("add_eos_token").is_some() {
        file["post_processor"] = bos_eos_processor(&file, config, path)?;
    }
    Ok(file)
}

/// transformers' `update_post_processor`: `[bos] $A [eos]` as `add_bos_token` /
/// `add_eos_token` say.
fn bos_eos_processor(file: &Json, config: &Json, path: &Path) -> Result<Json> {
    let specials = special_tokens_of(config);
    let id_of = |token: &str| -> Result<u64> {
        let added = file
            .get("added_tokens")
            .and_then(Json::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|t| t.get("content").and_then(Json::as_str) == Some(token))
            })
            .and_then(|t| t.get("id"))
            .and_then(Json::as_u64);
        added
            .or_else(|| {
                file.pointer("/model/vocab")
                    .and_then(|v| v.get(token))
                    .and_then(Json::as_u64)
            })
            .ok_or_else(|| {
                tok_err(
                    path,
                    format!("special token `{token}` is not in the vocabulary"),
                )
            })
    };
    let mut single = Vec::new();
    let mut pair_tail = Vec::new();
    let mut special = serde_json::Map::new();
    let bos = specials.get("bos_token").filter(|_| {
        config
            .get("add_bos_token")
            .and_then(Json::as_bool)
            .unwrap_or(false)
    });
    let eos = specials.get("eos_token").filter(|_| {
        config
            .get("add_eos_token")
            .and_then(Json::as_bool)
            .unwrap_or(false)
    });
    if let Some(b) = bos {
        single.push(json!({"SpecialToken": {"id": b, "type_id": 0}}));
        pair_tail.push(json!({"SpecialToken": {"id": b, "type_id": 1}}));
        special.insert(
            b.clone(),
            json!({"id": b, "ids": [id_of(b)?], "tokens": [b]}),
        );
    }
    single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    pair_tail.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
    if let Some(e) = eos {
        single.push(json!({"SpecialToken": {"id": e, "type_id": 0}}));
        pair_tail.push(json!({"SpecialToken": {"id": e, "type_id": 1}}));
        special.insert(
            e.clone(),
            json!({"id": e, "ids": [id_of(e)?], "tokens": [e]}),
        );
    }
    let mut pair = single.clone();
    pair.extend(pair_tail);
    Ok(
        json!({"type": "TemplateProcessing", "single": single, "pair": pair,
              "special_tokens": special}),
    )
}

impl LlamaTokenizer {
    /// Loads a tokenizer folder: `tokenizer.json`, and when present `tokenizer_config.json`
    /// (class, special tokens) and the chat template (`chat_template.jinja` or the config's
    /// `chat_template`).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            Some(read_json(&config_path)?)
        } else {
            None
        };
        let mut tok = Self::load(path, config)?;
        tok.chat_template = ChatTemplate::from_dir(dir)?;
        Ok(tok)
    }

    /// Loads a `tokenizer.json` file as it is (no configuration, no chat template).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(path.as_ref().to_path_buf(), None)
    }

    fn load(path: PathBuf, config: Option<Json>) -> Result<Self> {
        if !path.is_file() {
            return Err(TrainError::Tokenizer(format!(
                "{}: tokenizer file not found",
                path.display()
            )));
        }
        let inner = match config.as_ref().filter(|c| is_llama_class(c)) {
            Some(c) => {
                let text = TrainError::read_text_capped(&path, svgen_core::io::MAX_METADATA_BYTES)?;
                let file: Json = serde_json::from_str(&text).map_err(|e| tok_err(&path, e))?;
                let rebuilt = llama_class_pipeline(file, c, &path)?;
                let text = serde_json::to_string(&rebuilt).map_err(|e| tok_err(&path, e))?;
                svgen_core::parse_tokenizer_json(text.as_bytes()).map_err(|e| tok_err(&path, e))?
            }
            None => {
                let bytes = TrainError::read_capped(&path, svgen_core::io::MAX_METADATA_BYTES)?;
                svgen_core::parse_tokenizer_json(&bytes).map_err(|e| tok_err(&path, e))?
            }
        };
        Ok(Self {
            inner,
            path,
            config,
            chat_template: None,
        })
    }

    /// The `tokenizer.json` this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The chat template, if the folder has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// Replaces the chat template (e.g. one read from another folder with
    /// [`ChatTemplate::from_dir`]).
    pub fn with_chat_template(mut self, template: ChatTemplate) -> Self {
        self.chat_template = Some(template);
        self
    }

    /// Vocabulary size including added tokens (`len(tokenizer)`: the embedding rows the model
    /// needs).
    pub fn len(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token id of a token string.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token string of an id.
    pub fn id_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Encodes text; `add_special_tokens` applies the post-processor (Llama 3: prepends
    /// `<|begin_of_text|>`). Special tokens written in the text are matched.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| tok_err(&self.path, e))
    }

    /// Decodes ids to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| tok_err(&self.path, e))
    }

    /// Adds special tokens (those already present are kept) and returns their ids.
    pub fn add_special_tokens(&mut self, tokens: &[&str]) -> Result<Vec<u32>> {
        self.ensure_special_tokens(tokens)?;
        tokens
            .iter()
            .map(|t| {
                self.inner
                    .token_to_id(t)
                    .ok_or_else(|| TrainError::Tokenizer(format!("could not add `{t}`")))
            })
            .collect()
    }

    /// Adds those of `tokens` the tokenizer lacks as special tokens (transformers'
    /// `add_special_tokens`: new ids after the current length) and says which ones it added
    /// ([`SpecialTokensReport::message`]).
    pub fn ensure_special_tokens(&mut self, tokens: &[&str]) -> Result<SpecialTokensReport> {
        let len_before = self.len();
        let mut present = Vec::new();
        let mut missing = Vec::new();
        for t in tokens {
            if t.is_empty() {
                return Err(TrainError::InvalidArgument("an empty special token".into()));
            }
            match self.inner.token_to_id(t) {
                Some(id) => present.push((t.to_string(), id)),
                None if !missing.contains(t) => missing.push(*t),
                None => {}
            }
        }
        let added: Vec<AddedToken> = missing
            .iter()
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        self.inner.add_special_tokens(&added);
        let added = missing
            .iter()
            .map(|t| {
                self.inner
                    .token_to_id(t)
                    .map(|id| (t.to_string(), id))
                    .ok_or_else(|| TrainError::Tokenizer(format!("could not add `{t}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SpecialTokensReport {
            added,
            present,
            len_before,
            len_after: self.len(),
        })
    }

    /// Adds the thesis' `<|ctx|>`, `<|objs|>` and `<|end_svg|>` when missing.
    pub fn ensure_thesis_tokens(&mut self) -> Result<SpecialTokensReport> {
        self.ensure_special_tokens(&THESIS_SPECIAL_TOKENS)
    }

    /// Saves the tokenizer (with added tokens) as a `tokenizer.json` file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.inner.save(path, false).map_err(|e| tok_err(path, e))
    }

    /// Saves `tokenizer.json` and `tokenizer_config.json` (the loaded configuration, with the
    /// chat template inline) into `dir`, as transformers' `save_pretrained` writes a tokenizer
    /// next to an adapter.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        self.save(dir.join("tokenizer.json"))?;
        let mut config = self.config.clone().unwrap_or_else(|| json!({}));
        if let (Some(t), Some(map)) = (&self.chat_template, config.as_object_mut()) {
            if let [name] = t.names() {
                if let Some(src) = t.source(name) {
                    map.insert("chat_template".into(), json!(src));
                }
            }
        }
        let path = dir.join("tokenizer_config.json");
        let text = serde_json::to_string_pretty(&config).map_err(|e| TrainError::json(&path, e))?;
        std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))
    }

    fn template(&self) -> Result<&ChatTemplate> {
        self.chat_template.as_ref().ok_or_else(|| {
            TrainError::Tokenizer(format!(
                "{}: no chat template (neither chat_template.jinja nor tokenizer_config.json's \
                 chat_template)",
                self.path.display()
            ))
        })
    }

    /// The chat text of `apply_chat_template(messages, tokenize=False, ...)`.
    pub fn render_chat(&self, messages: &[Json], options: &ChatOptions) -> Result<String> {
        self.template()?.render(messages, options)
    }

    /// The token ids of `apply_chat_template(messages, tokenize=True, ...)`: the rendered text
    /// encoded without adding special tokens (the template writes them).
    pub fn apply_chat_template(
        &self,
        messages: &[Json],
        options: &ChatOptions,
    ) -> Result<Vec<u32>> {
        let text = self.render_chat(messages, options)?;
        self.encode(&text, false)
    }

    /// [`LlamaTokenizer::apply_chat_template`] for plain role/content messages.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let msgs: Vec<Json> = messages.iter().map(ChatMessage::to_json).collect();
        let options = ChatOptions {
            add_generation_prompt,
            ..ChatOptions::default()
        };
        self.apply_chat_template(&msgs, &options)
    }

    fn chat_messages(system: &Option<String>, description: &str) -> Vec<Json> {
        let mut msgs = Vec::new();
        if let Some(s) = system {
            msgs.push(ChatMessage::new("system", s).to_json());
        }
        msgs.push(ChatMessage::new("user", description.trim()).to_json());
        msgs
    }

    /// The prompt ids for a description in the given format (ends where the SVG starts).
    pub fn encode_prompt(&self, format: &PromptFormat, description: &str) -> Result<Vec<u32>> {
        match format {
            PromptFormat::Thesis(p) => self.encode(&p.fill(description), true),
            PromptFormat::Chat { system } => {
                let msgs = Self::chat_messages(system, description);
                self.apply_chat_template(&msgs, &ChatOptions::generation())
            }
            PromptFormat::InstructionResponse => {
                let text = format!("Instruction: {}\nResponse: ", description.trim());
                self.encode(&text, true)
            }
        }
    }

    /// The ids of the answer that follows [`LlamaTokenizer::encode_prompt`]: the SVG, then
    /// `<|end_svg|>` (and, in the chat format, what the template writes after the assistant's
    /// turn, e.g. `<|eot_id|>`). The thesis format needs `<|end_svg|>` in the tokenizer (see
    /// [`LlamaTokenizer::ensure_thesis_tokens`]).
    pub fn encode_completion(
        &self,
        format: &PromptFormat,
        description: &str,
        svg: &str,
    ) -> Result<Vec<u32>> {
        let end = self.token_id(END_SVG);
        match format {
            PromptFormat::Thesis(_) | PromptFormat::InstructionResponse => {
                let end = end.ok_or_else(|| {
                    TrainError::Tokenizer(format!(
                        "{}: `{END_SVG}` is not in the tokenizer; add the thesis tokens first \
                         (LlamaTokenizer::ensure_thesis_tokens)",
                        self.path.display()
                    ))
                })?;
                let mut ids = self.encode(svg, false)?;
                ids.push(end);
                Ok(ids)
            }
            PromptFormat::Chat { system } => {
                let mut msgs = Self::chat_messages(system, description);
                let prompt = self.render_chat(&msgs, &ChatOptions::generation())?;
                let answer = match end {
                    Some(_) => format!("{svg}{END_SVG}"),
                    None => svg.to_string(),
                };
                msgs.push(ChatMessage::new("assistant", &answer).to_json());
                let full = self.render_chat(&msgs, &ChatOptions::default())?;
                let rest = full.strip_prefix(prompt.as_str()).ok_or_else(|| {
                    TrainError::ChatTemplate(
                        "the rendered conversation does not start with the rendered prompt \
                         (add_generation_prompt=True); this template cannot separate the answer"
                            .into(),
                    )
                })?;
                self.encode(rest, false)
            }
        }
    }

    /// The special tokens of `tokenizer_config.json` (`bos_token`, `eos_token`, …).
    pub fn special_tokens(&self) -> BTreeMap<String, String> {
        self.config
            .as_ref()
            .map(special_tokens_of)
            .unwrap_or_default()
    }
}

/// Token counts under this tokenizer (no special tokens added), e.g. for
/// [`svgen_core::fit_to_budget`] to keep target SVGs within the model's budget. A text the
/// tokenizer cannot encode counts as `usize::MAX` (over any budget).
impl svgen_core::TokenCounter for LlamaTokenizer {
    fn count(&self, text: &str) -> usize {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().len())
            .unwrap_or(usize::MAX)
    }

    fn name(&self) -> &str {
        self.path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("llama")
    }
}
