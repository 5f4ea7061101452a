//! The Llama 3 tokenizer (HF `tokenizer.json`), its Instruct chat format and the thesis'
//! special tokens.

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Result, TrainError};
use crate::llama::Llama;

/// The special tokens the thesis adds: context start, object list start, end of SVG.
pub const THESIS_SPECIAL_TOKENS: [&str; 3] = ["<|ctx|>", "<|objs|>", "<|end_svg|>"];
/// The end-of-SVG token generation stops on.
pub const END_SVG: &str = "<|end_svg|>";

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
}

/// How a (description, SVG) pair is laid out as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptFormat {
    /// Llama 3 Instruct chat: optional system message, the description as the user turn, the
    /// SVG as the assistant turn.
    Llama3Chat {
        /// The system prompt, if any.
        system: Option<String>,
    },
    /// The thesis' plain format: `Instruction: {description}\nResponse: ` then the SVG.
    InstructionResponse,
}

/// A HF `tokenizer.json` tokenizer with Llama 3 conventions.
///
/// ```no_run
/// use svgen_train::llama::tokenizer::{LlamaTokenizer, ChatMessage};
/// let tok = LlamaTokenizer::from_dir("Meta-Llama-3-8B-Instruct").unwrap();
/// let ids = tok.encode_chat(&[ChatMessage::new("user", "a red apple icon")], true).unwrap();
/// assert!(!ids.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct LlamaTokenizer {
    inner: Tokenizer,
    path: PathBuf,
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Tokenizer(format!("{}: {e}", path.display()))
}

impl LlamaTokenizer {
    /// Loads `tokenizer.json` from a model folder.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(dir.as_ref().join("tokenizer.json"))
    }

    /// Loads a `tokenizer.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(TrainError::Tokenizer(format!(
                "{}: tokenizer file not found",
                path.display()
            )));
        }
        let inner = Tokenizer::from_file(&path).map_err(|e| tok_err(&path, e))?;
        Ok(Self { inner, path })
    }

    /// Vocabulary size including added tokens (the embedding rows the model needs).
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

    /// Encodes text; `add_special_tokens` applies the post-processor (Llama 3: prepends
    /// `<|begin_of_text|>`).
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
        let added: Vec<AddedToken> = tokens
            .iter()
            .filter(|t| self.inner.token_to_id(t).is_none())
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        self.inner.add_special_tokens(&added);
        tokens
            .iter()
            .map(|t| {
                self.inner
                    .token_to_id(t)
                    .ok_or_else(|| TrainError::Tokenizer(format!("could not add `{t}`")))
            })
            .collect()
    }

    /// Saves the tokenizer (with added tokens) as `tokenizer.json`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.inner.save(path, false).map_err(|e| tok_err(path, e))
    }

    /// The Llama 3 Instruct chat text (Meta's template): `<|begin_of_text|>` then, per message,
    /// `<|start_header_id|>{role}<|end_header_id|>\n\n{content.trim()}<|eot_id|>`, then the
    /// assistant header when `add_generation_prompt`.
    pub fn chat_text(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut s = String::from("<|begin_of_text|>");
        for m in messages {
            s.push_str("<|start_header_id|>");
            s.push_str(&m.role);
            s.push_str("<|end_header_id|>\n\n");
            s.push_str(m.content.trim());
            s.push_str("<|eot_id|>");
        }
        if add_generation_prompt {
            s.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
        }
        s
    }

    /// Encodes a chat as transformers' `apply_chat_template(..., tokenize=True)` does.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        self.encode(&Self::chat_text(messages, add_generation_prompt), false)
    }

    /// The prompt ids for a description in the given format (ends where the SVG starts).
    pub fn encode_prompt(&self, format: &PromptFormat, description: &str) -> Result<Vec<u32>> {
        match format {
            PromptFormat::Llama3Chat { system } => {
                let mut msgs = Vec::new();
                if let Some(s) = system {
                    msgs.push(ChatMessage::new("system", s));
                }
                msgs.push(ChatMessage::new("user", description));
                self.encode_chat(&msgs, true)
            }
            PromptFormat::InstructionResponse => {
                let text = format!("Instruction: {}\nResponse: ", description.trim());
                self.encode(&text, true)
            }
        }
    }
}

impl<B: Backend> Llama<B> {
    /// Grows the vocabulary to `new_vocab` rows (for added tokens). New rows of
    /// `embed_tokens` (and of `lm_head` when untied) are the mean of the existing rows.
    /// Shrinking is refused.
    pub fn resize_token_embeddings(mut self, new_vocab: usize) -> Result<Self> {
        let old = self.config.vocab_size;
        if new_vocab < old {
            return Err(TrainError::InvalidArgument(format!(
                "cannot shrink the vocabulary from {old} to {new_vocab}"
            )));
        }
        if new_vocab == old {
            return Ok(self);
        }
        let extra = new_vocab - old;
        let grow_rows = |w: Tensor<B, 2>| -> Tensor<B, 2> {
            let [_, h] = w.dims();
            let mean = w.clone().mean_dim(0).expand([extra, h]);
            Tensor::cat(vec![w, mean], 0).detach()
        };
        let e = grow_rows(self.embed_tokens.val());
        self.embed_tokens = Param::from_tensor(e).set_require_grad(false);
        if let Some(w) = self.lm_head.take() {
            // Stored [hidden, vocab]: new columns are the mean column.
            let w = grow_rows(w.val().transpose()).transpose();
            self.lm_head = Some(Param::from_tensor(w).set_require_grad(false));
        }
        self.config.vocab_size = new_vocab;
        Ok(self)
    }
}
