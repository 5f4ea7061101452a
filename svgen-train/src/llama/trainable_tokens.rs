//! Trainable embedding rows for added tokens, as PEFT's `trainable_token_indices` (and the full
//! `modules_to_save = ["embed_tokens", "lm_head"]` alternative), and vocabulary resizing as
//! transformers' `resize_token_embeddings`.
//!
//! # Why
//! Adding `<|ctx|>`, `<|objs|>` and `<|end_svg|>` to a Llama 3 tokenizer (128,256 tokens, equal
//! to `vocab_size`) resizes the model. The new rows of `embed_tokens` and `lm_head` start equal
//! (the mean row), so while they stay frozen the three tokens have identical logits and the model
//! can never prefer `<|end_svg|>` to `<|ctx|>`. Under LoRA these rows must train.
//!
//! # PEFT semantics, matched
//! - **Trainable tokens** (`TrainableTokensLayer`): for each wrapped matrix, the rows of the
//!   chosen ids are replaced by trainable values (`trainable_tokens_delta`, initialised from the
//!   base rows; despite its name it holds the new rows, not a difference). The base rows are
//!   never used for those ids, so an adapter is exact whatever the resized rows were initialised
//!   to. Saved as `base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta`
//!   `[k, hidden]` and `base_model.model.lm_head.token_adapter.trainable_tokens_delta`.
//! - **Tied embeddings** (Llama 3.2 1B/3B): `lm_head` is `embed_tokens`; PEFT wraps the output
//!   layer with an adapter tied to the embedding's, so one set of rows serves both and gets the
//!   gradient of both uses. `adapter_config.json` holds the list form
//!   `trainable_token_indices: [ids]`.
//! - **Untied** (8B): the list form would train the embedding rows only, and the three logits
//!   would stay equal; so the rows of both are trained and saved with the dict form
//!   `{"embed_tokens": [ids], "lm_head": [ids]}`.
//! - **Full matrices** (`modules_to_save`): `embed_tokens` (and `lm_head` when untied) train
//!   whole; saved as `base_model.model.model.embed_tokens.weight` / `base_model.model.lm_head.weight`.
//!   On a tied model the two stay one matrix (PEFT's `ensure_weight_tying: true`, written to the
//!   config); a PEFT adapter saved without it, whose two copies differ, unties the model.
//! - **Merging** (`merge_and_unload`) writes the rows into the matrices (`index_copy`).
//! - **Whole resized matrices in an adapter** (PEFT's `save_embedding_layers="auto"` after a
//!   resize, under `….embed_tokens.weight`, or `….embed_tokens.token_adapter.base_layer.weight`
//!   when trainable tokens wrap it): loaded as the new base matrices. Our adapters do not write them: the trained rows
//!   define the new tokens fully, and the file stays small (2 × 128,259 × 4,096 floats on 8B).
//!
//! # Resizing
//! [`Llama::resize_token_embeddings`] appends rows equal to the mean of the existing rows
//! (computed in f32), for `embed_tokens` and, when untied, `lm_head`. transformers'
//! `mean_resizing=True` draws them from `N(mean, 1e-9·Σ)`, i.e. the mean plus noise about
//! 3·10⁻⁵ of the rows' spread; ours is that mean exactly (deterministic).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, IndexingUpdateOp, Int, Tensor, TensorData};
use serde_json::{json, Value as Json};

use crate::error::{Result, TrainError};
use crate::llama::Llama;
use crate::nn::tensor::{host_f32, trainable_param};
use crate::weights::HostTensor;

/// PEFT key of the trainable `embed_tokens` rows.
pub const EMBED_DELTA_KEY: &str =
    "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta";
/// PEFT key of the trainable `lm_head` rows.
pub const LM_HEAD_DELTA_KEY: &str = "base_model.model.lm_head.token_adapter.trainable_tokens_delta";
/// PEFT key of a whole `embed_tokens` (`modules_to_save`, or a resized embedding).
pub const EMBED_WEIGHT_KEY: &str = "base_model.model.model.embed_tokens.weight";
/// PEFT key of a whole `lm_head` (`modules_to_save`, or a resized output layer).
pub const LM_HEAD_WEIGHT_KEY: &str = "base_model.model.lm_head.weight";
/// PEFT key of a resized `embed_tokens` saved while it is wrapped by trainable tokens.
pub const EMBED_BASE_KEY: &str =
    "base_model.model.model.embed_tokens.token_adapter.base_layer.weight";
/// PEFT key of a resized `lm_head` saved while it is wrapped by trainable tokens.
pub const LM_HEAD_BASE_KEY: &str = "base_model.model.lm_head.token_adapter.base_layer.weight";
/// Optimiser-state and gradient key of the trainable `embed_tokens` rows.
pub const EMBED_PARAM_KEY: &str = "trainable_tokens.embed_tokens";
/// Optimiser-state and gradient key of the trainable `lm_head` rows.
pub const LM_HEAD_PARAM_KEY: &str = "trainable_tokens.lm_head";

/// Which token ids train, per matrix (PEFT `trainable_token_indices`).
///
/// ```
/// use svgen_train::llama::trainable_tokens::TrainableTokenIndices;
/// let t = TrainableTokenIndices::new_tokens(&[768, 769, 770]);
/// // Tied model: the list form; untied: both matrices, by name.
/// assert_eq!(t.to_peft_json(true), serde_json::json!([768, 769, 770]));
/// assert_eq!(
///     t.to_peft_json(false),
///     serde_json::json!({"embed_tokens": [768, 769, 770], "lm_head": [768, 769, 770]})
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrainableTokenIndices {
    /// Rows of `embed_tokens`.
    pub embed_tokens: Vec<u32>,
    /// Rows of `lm_head` (on a tied model equal to `embed_tokens` means one shared set).
    pub lm_head: Vec<u32>,
}

impl TrainableTokenIndices {
    /// The same ids in both matrices: what new tokens need.
    pub fn new_tokens(ids: &[u32]) -> Self {
        Self {
            embed_tokens: ids.to_vec(),
            lm_head: ids.to_vec(),
        }
    }

    /// The `trainable_token_indices` value PEFT reads back into these rows: the list form when
    /// it means exactly this (tied and equal, or untied with no `lm_head` rows), else the dict.
    pub fn to_peft_json(&self, tied: bool) -> Json {
        if (tied && self.lm_head == self.embed_tokens) || (!tied && self.lm_head.is_empty()) {
            return json!(self.embed_tokens);
        }
        let mut m = serde_json::Map::new();
        if !self.embed_tokens.is_empty() {
            m.insert("embed_tokens".into(), json!(self.embed_tokens));
        }
        if !self.lm_head.is_empty() {
            m.insert("lm_head".into(), json!(self.lm_head));
        }
        Json::Object(m)
    }

    /// Reads `trainable_token_indices` as PEFT applies it to a Llama with (`tied`) or without
    /// tied embeddings: a list wraps `embed_tokens` (and the tied `lm_head`); a dict names the
    /// modules (`embed_tokens`, `model.embed_tokens`, `lm_head`). `Ok(None)` for `null`/absent.
    pub fn from_peft_json(v: Option<&Json>, tied: bool) -> Result<Option<Self>> {
        let bad = |m: String| TrainError::Config(format!("adapter_config.json: {m}"));
        let ids = |v: &Json, what: &str| -> Result<Vec<u32>> {
            v.as_array()
                .ok_or_else(|| bad(format!("{what} must be a list of token ids")))?
                .iter()
                .map(|x| {
                    x.as_u64()
                        .and_then(|i| u32::try_from(i).ok())
                        .ok_or_else(|| bad(format!("{what}: `{x}` is not a token id")))
                })
                .collect()
        };
        match v {
            None | Some(Json::Null) => Ok(None),
            Some(list @ Json::Array(_)) => {
                let e = ids(list, "trainable_token_indices")?;
                Ok(Some(Self {
                    lm_head: if tied { e.clone() } else { Vec::new() },
                    embed_tokens: e,
                }))
            }
            Some(Json::Object(map)) => {
                let mut out = Self::default();
                for (name, list) in map {
                    match name.as_str() {
                        "embed_tokens" | "model.embed_tokens" => {
                            out.embed_tokens = ids(list, name)?
                        }
                        "lm_head" => out.lm_head = ids(list, name)?,
                        other => {
                            return Err(bad(format!(
                                "trainable_token_indices names `{other}`; only embed_tokens and \
                                 lm_head are supported"
                            )))
                        }
                    }
                }
                if tied && out.lm_head.is_empty() {
                    out.lm_head = out.embed_tokens.clone();
                }
                Ok(Some(out))
            }
            Some(other) => Err(bad(format!(
                "trainable_token_indices must be a list or a dict, found {other}"
            ))),
        }
    }

    /// Every id named, once.
    pub fn all(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .embed_tokens
            .iter()
            .chain(&self.lm_head)
            .copied()
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// How the embedding matrices train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenTraining {
    /// Chosen rows ([`TrainableTokenIndices`]).
    #[default]
    Rows,
    /// Whole matrices (`modules_to_save`).
    Full,
}

/// Trainable rows of one matrix, in HF `[vocab, hidden]` row layout.
#[derive(Module, Debug)]
pub struct TokenRows<B: Backend> {
    /// The rows `[k, hidden]` (the values used for those ids, PEFT's `trainable_tokens_delta`).
    pub rows: Param<Tensor<B, 2>>,
    /// The token id of each row; `0..vocab` in order for a whole matrix.
    #[module(skip)]
    pub indices: Vec<u32>,
    /// Whether the rows are the whole matrix (`modules_to_save`).
    #[module(skip)]
    pub full: bool,
}

impl<B: Backend> TokenRows<B> {
    fn index_tensor(&self, device: &B::Device) -> Tensor<B, 1, Int> {
        let ids: Vec<i64> = self.indices.iter().map(|&i| i as i64).collect();
        let n = ids.len();
        Tensor::from_data(TensorData::new(ids, [n]), device)
    }
}

/// The trainable embedding rows of a [`Llama`] (see the module documentation).
#[derive(Module, Debug)]
pub struct TokenAdapter<B: Backend> {
    /// Rows of `model.embed_tokens` (and of the output layer of a tied model, unless `lm_head`
    /// has its own).
    pub embed_tokens: Option<TokenRows<B>>,
    /// Rows of `lm_head` of their own.
    pub lm_head: Option<TokenRows<B>>,
}

fn check_indices(ids: &[u32], vocab: usize, what: &str) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for &i in ids {
        if i as usize >= vocab {
            return Err(TrainError::InvalidArgument(format!(
                "{what}: token id {i} is outside the vocabulary ({vocab} rows); resize the \
                 embeddings to the tokenizer's length first"
            )));
        }
        if !seen.insert(i) {
            return Err(TrainError::InvalidArgument(format!(
                "{what}: token id {i} is listed twice"
            )));
        }
    }
    Ok(())
}

fn ids_tensor<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

impl<B: Backend> Llama<B> {
    /// Grows the vocabulary to `new_vocab` rows (for added tokens) as transformers'
    /// `resize_token_embeddings(new_vocab, mean_resizing=True)` does, with the exact mean for
    /// the new rows of `embed_tokens` (and of `lm_head` when untied). Shrinking, and resizing a
    /// model that already has trainable rows, are refused.
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
        if self.token_adapter.is_some() {
            return Err(TrainError::InvalidArgument(
                "resize the embeddings before adding trainable token rows".into(),
            ));
        }
        let extra = new_vocab - old;
        let grow_rows = |w: Tensor<B, 2>| -> Tensor<B, 2> {
            let [_, h] = w.dims();
            let dtype = w.dtype();
            let mean = w
                .clone()
                .cast(DType::F32)
                .mean_dim(0)
                .cast(dtype)
                .expand([extra, h]);
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

    /// Makes the rows of `indices` trainable (PEFT `trainable_token_indices`, initialised from
    /// the current rows). On a tied model equal `embed_tokens` and `lm_head` ids share one set of
    /// rows. Ids must be inside the vocabulary, unique, and the model must have no token rows yet.
    pub fn with_trainable_tokens(mut self, indices: &TrainableTokenIndices) -> Result<Self> {
        if self.token_adapter.is_some() {
            return Err(TrainError::InvalidArgument(
                "the model already has trainable token rows".into(),
            ));
        }
        if indices.embed_tokens.is_empty() && indices.lm_head.is_empty() {
            return Err(TrainError::InvalidArgument(
                "no trainable token ids given".into(),
            ));
        }
        let vocab = self.config.vocab_size;
        check_indices(&indices.embed_tokens, vocab, "embed_tokens")?;
        check_indices(&indices.lm_head, vocab, "lm_head")?;
        let tied = self.lm_head.is_none();
        let device = self.device();
        let embed = (!indices.embed_tokens.is_empty()).then(|| {
            let rows = self
                .embed_tokens
                .val()
                .select(0, ids_tensor::<B>(&indices.embed_tokens, &device))
                .cast(DType::F32)
                .detach();
            TokenRows {
                rows: Param::from_tensor(rows),
                indices: indices.embed_tokens.clone(),
                full: false,
            }
        });
        let shared = tied && indices.lm_head == indices.embed_tokens;
        let lm_head = (!indices.lm_head.is_empty() && !shared).then(|| {
            let w = self.output_base();
            let rows = w
                .select(1, ids_tensor::<B>(&indices.lm_head, &device))
                .transpose()
                .cast(DType::F32)
                .detach();
            TokenRows {
                rows: Param::from_tensor(rows),
                indices: indices.lm_head.clone(),
                full: false,
            }
        });
        self.token_adapter = Some(TokenAdapter {
            embed_tokens: embed,
            lm_head,
        });
        Ok(self)
    }

    /// Trains `embed_tokens` and `lm_head` whole (PEFT `modules_to_save = ["embed_tokens",
    /// "lm_head"]`); on a tied model they stay one matrix.
    pub fn with_modules_to_save(mut self) -> Result<Self> {
        if self.token_adapter.is_some() {
            return Err(TrainError::InvalidArgument(
                "the model already has trainable token rows".into(),
            ));
        }
        let vocab = self.config.vocab_size as u32;
        let all: Vec<u32> = (0..vocab).collect();
        let embed = TokenRows {
            rows: Param::from_tensor(self.embed_tokens.val().cast(DType::F32).detach()),
            indices: all.clone(),
            full: true,
        };
        let lm_head = self.lm_head.as_ref().map(|w| TokenRows {
            rows: Param::from_tensor(w.val().transpose().cast(DType::F32).detach()),
            indices: all,
            full: true,
        });
        self.token_adapter = Some(TokenAdapter {
            embed_tokens: Some(embed),
            lm_head,
        });
        Ok(self)
    }

    /// The trainable token ids of the model, if any.
    pub fn trainable_token_indices(&self) -> Option<TrainableTokenIndices> {
        let a = self.token_adapter.as_ref()?;
        let embed = a
            .embed_tokens
            .as_ref()
            .map(|r| r.indices.clone())
            .unwrap_or_default();
        let lm_head = match (&a.lm_head, self.lm_head.is_none()) {
            (Some(r), _) => r.indices.clone(),
            (None, true) => embed.clone(),
            (None, false) => Vec::new(),
        };
        Some(TrainableTokenIndices {
            embed_tokens: embed,
            lm_head,
        })
    }

    /// How the embedding matrices train, if they do.
    pub fn token_training(&self) -> Option<TokenTraining> {
        let a = self.token_adapter.as_ref()?;
        let full = a.embed_tokens.as_ref().is_some_and(|r| r.full)
            || a.lm_head.as_ref().is_some_and(|r| r.full);
        Some(if full {
            TokenTraining::Full
        } else {
            TokenTraining::Rows
        })
    }

    /// The output matrix of the base `[hidden, vocab]` (`lm_head`, or the transposed
    /// embedding when tied).
    fn output_base(&self) -> Tensor<B, 2> {
        match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed_tokens.val().transpose(),
        }
    }

    /// The rows that replace columns of the output matrix: `lm_head`'s own, or on a tied model
    /// the embedding's.
    fn output_rows(&self) -> Option<&TokenRows<B>> {
        let a = self.token_adapter.as_ref()?;
        a.lm_head.as_ref().or(if self.lm_head.is_none() {
            a.embed_tokens.as_ref()
        } else {
            None
        })
    }

    /// The input embeddings `[n, hidden]` of token ids `[n]`, with trainable rows in place,
    /// in the base dtype (the rows are `f32`, cast in as LoRA's branch is).
    pub(crate) fn embed_rows(&self, ids: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        let base = self.embed_tokens.val();
        let dtype = base.dtype();
        let Some(r) = self
            .token_adapter
            .as_ref()
            .and_then(|a| a.embed_tokens.as_ref())
        else {
            return base.select(0, ids);
        };
        if r.full {
            return to_dtype(r.rows.val().select(0, ids), dtype);
        }
        let device = base.device();
        let idx = r.index_tensor(&device);
        let k = r.indices.len();
        let n = ids.dims()[0];
        // delta = rows - base rows (in f32); one-hot(ids, indices) · delta adds it where ids
        // match.
        let base_rows = to_dtype(base.clone().select(0, idx.clone()).detach(), DType::F32);
        let delta = r.rows.val() - base_rows;
        let hits = ids
            .clone()
            .reshape([n, 1])
            .expand([n, k])
            .equal(idx.reshape([1, k]).expand([n, k]))
            .float()
            .cast(DType::F32);
        base.select(0, ids) + to_dtype(hits.matmul(delta), dtype)
    }

    /// The effective input embedding `[vocab, hidden]` (base with trainable rows in place, in
    /// the base dtype).
    pub fn input_weight(&self) -> Tensor<B, 2> {
        let base = self.embed_tokens.val();
        let dtype = base.dtype();
        let Some(r) = self
            .token_adapter
            .as_ref()
            .and_then(|a| a.embed_tokens.as_ref())
        else {
            return base;
        };
        if r.full {
            return to_dtype(r.rows.val(), dtype);
        }
        let idx = r.index_tensor(&base.device());
        let base_rows = base.clone().select(0, idx.clone()).detach();
        let delta = to_dtype(r.rows.val(), dtype) - base_rows;
        base.select_assign(0, idx, delta, IndexingUpdateOp::Add)
    }

    /// Logits `[n, vocab]` of final hidden states `[n, hidden]`, with trainable rows in place.
    ///
    /// Generation and [`Llama::logits`] go through here; the chunked training loss takes
    /// [`Llama::output_weight`] (as [`Llama::lm_head_weight`]) instead, whose gradient reaches
    /// the rows the same way.
    pub fn lm_head_logits(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        let Some(r) = self.output_rows() else {
            return h.matmul(self.output_base());
        };
        let dtype = h.dtype();
        if r.full {
            return h.matmul(to_dtype(r.rows.val(), dtype).transpose());
        }
        let [n, hidden] = h.dims();
        if n > hidden {
            // Many positions: patching the [hidden, vocab] weight once is cheaper than
            // patching the [n, vocab] logits.
            return h.matmul(self.output_weight());
        }
        let w = self.output_base();
        let idx = r.index_tensor(&w.device());
        // logits[:, i] = h · rows_i for the trainable ids: add h · (rows - base rows)ᵀ there.
        let base_rows = w.clone().select(1, idx.clone()).transpose().detach();
        let delta = to_dtype(r.rows.val(), dtype) - base_rows;
        let logits = h.clone().matmul(w);
        let extra = h.matmul(delta.transpose());
        logits.select_assign(1, idx, extra, IndexingUpdateOp::Add)
    }

    /// The effective output matrix `[hidden, vocab]` (base with trainable rows in place, in
    /// the base dtype), differentiable in the rows: for losses that take the weight instead of
    /// the logits.
    pub fn output_weight(&self) -> Tensor<B, 2> {
        let Some(r) = self.output_rows() else {
            return self.output_base();
        };
        let w = self.output_base();
        let dtype = w.dtype();
        if r.full {
            return to_dtype(r.rows.val(), dtype).transpose();
        }
        let idx = r.index_tensor(&w.device());
        let base_rows = w.clone().select(1, idx.clone()).detach();
        let delta = to_dtype(r.rows.val(), dtype).transpose() - base_rows;
        w.select_assign(1, idx, delta, IndexingUpdateOp::Add)
    }

    /// The trainable token matrices keyed `trainable_tokens.embed_tokens` /
    /// `trainable_tokens.lm_head` (optimiser state keys).
    pub(crate) fn token_params(&self) -> Vec<(String, &Param<Tensor<B, 2>>)> {
        let mut out = Vec::new();
        if let Some(a) = &self.token_adapter {
            if let Some(r) = &a.embed_tokens {
                out.push((EMBED_PARAM_KEY.to_string(), &r.rows));
            }
            if let Some(r) = &a.lm_head {
                out.push((LM_HEAD_PARAM_KEY.to_string(), &r.rows));
            }
        }
        out
    }

    /// Whether the input embedding has trainable rows (their gradient needs the embedding
    /// lookup under autodiff).
    pub(crate) fn has_trainable_embedding(&self) -> bool {
        self.token_adapter
            .as_ref()
            .is_some_and(|a| a.embed_tokens.is_some())
    }

    /// Rebuilds the trainable token matrices through `f(key, param)` (keys as
    /// [`Llama::token_params`]).
    pub(crate) fn try_map_token_params(
        mut self,
        mut f: impl FnMut(&str, Param<Tensor<B, 2>>) -> Result<Param<Tensor<B, 2>>>,
    ) -> Result<Self> {
        if let Some(a) = self.token_adapter.take() {
            let embed_tokens = match a.embed_tokens {
                Some(r) => Some(TokenRows {
                    rows: f(EMBED_PARAM_KEY, r.rows)?,
                    ..r
                }),
                None => None,
            };
            let lm_head = match a.lm_head {
                Some(r) => Some(TokenRows {
                    rows: f(LM_HEAD_PARAM_KEY, r.rows)?,
                    ..r
                }),
                None => None,
            };
            self.token_adapter = Some(TokenAdapter {
                embed_tokens,
                lm_head,
            });
        }
        Ok(self)
    }

    /// Number of trainable embedding parameters (rows × hidden).
    pub fn num_token_params(&self) -> usize {
        self.token_params()
            .iter()
            .map(|(_, p)| p.shape().num_elements())
            .sum()
    }

    /// The token rows under PEFT key names (f32 `[k, hidden]`; whole matrices `[vocab,
    /// hidden]` under the `.weight` keys).
    pub(crate) fn token_state(&self) -> BTreeMap<String, HostTensor> {
        let mut out = BTreeMap::new();
        let Some(a) = &self.token_adapter else {
            return out;
        };
        let h = self.config.hidden_size;
        let mut put = |r: &TokenRows<B>, delta_key: &str, weight_key: &str| {
            let k = r.indices.len();
            let key = if r.full { weight_key } else { delta_key };
            out.insert(
                key.to_string(),
                HostTensor::f32(vec![k, h], host_f32(r.rows.val())),
            );
        };
        if let Some(r) = &a.embed_tokens {
            put(r, EMBED_DELTA_KEY, EMBED_WEIGHT_KEY);
        }
        if let Some(r) = &a.lm_head {
            put(r, LM_HEAD_DELTA_KEY, LM_HEAD_WEIGHT_KEY);
        } else if let (Some(r), true) = (&a.embed_tokens, self.lm_head.is_none()) {
            // A tied model's shared matrix is written under both names, as PEFT with
            // `ensure_weight_tying` does.
            if r.full {
                out.insert(
                    LM_HEAD_WEIGHT_KEY.to_string(),
                    HostTensor::f32(vec![r.indices.len(), h], host_f32(r.rows.val())),
                );
            }
        }
        out
    }

    /// The `adapter_config.json` fields of the token rows: `trainable_token_indices`,
    /// `modules_to_save` and `ensure_weight_tying`.
    pub(crate) fn token_config_fields(&self) -> Vec<(&'static str, Json)> {
        let tied = self.lm_head.is_none();
        match (self.token_training(), self.trainable_token_indices()) {
            (Some(TokenTraining::Full), _) => {
                let shared = tied
                    && self
                        .token_adapter
                        .as_ref()
                        .is_some_and(|a| a.lm_head.is_none());
                vec![
                    ("modules_to_save", json!(["embed_tokens", "lm_head"])),
                    ("trainable_token_indices", Json::Null),
                    ("ensure_weight_tying", json!(shared)),
                ]
            }
            (Some(TokenTraining::Rows), Some(t)) => vec![
                ("modules_to_save", Json::Null),
                ("trainable_token_indices", t.to_peft_json(tied)),
            ],
            _ => Vec::new(),
        }
    }

    /// Reads the embedding part of a PEFT adapter into the model: `trainable_token_indices` with
    /// their `trainable_tokens_delta` rows, whole `embed_tokens` / `lm_head` matrices
    /// (`modules_to_save`, or the resized matrices PEFT saves after a resize). The tensors used
    /// are removed from `tensors`; missing or mis-shaped ones are typed errors naming the key.
    pub(crate) fn load_token_state(
        mut self,
        config: &Json,
        tensors: &mut BTreeMap<String, HostTensor>,
        weights_path: &Path,
    ) -> Result<Self> {
        let tied = self.lm_head.is_none();
        let vocab = self.config.vocab_size;
        let h = self.config.hidden_size;
        let device = self.device();
        let dtype = self.dtype();
        let bad = |m: String| TrainError::Config(format!("adapter_config.json: {m}"));
        let modules: Vec<String> = match config.get("modules_to_save") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("modules_to_save must be strings".into()))
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(bad(format!(
                    "modules_to_save must be a list, found {other}"
                )))
            }
        };
        let mut save_embed = false;
        let mut save_lm_head = false;
        for m in &modules {
            match m.as_str() {
                "embed_tokens" | "model.embed_tokens" => save_embed = true,
                "lm_head" => save_lm_head = true,
                other => {
                    return Err(bad(format!(
                        "modules_to_save `{other}` is not supported (embed_tokens, lm_head)"
                    )))
                }
            }
        }
        let indices =
            TrainableTokenIndices::from_peft_json(config.get("trainable_token_indices"), tied)?;
        if indices.is_some() && !modules.is_empty() {
            return Err(bad(
                "trainable_token_indices and modules_to_save both name the embeddings".into(),
            ));
        }
        let mut take_matrix = |key: &str, rows: usize| -> Result<Option<Vec<f32>>> {
            let Some(t) = tensors.remove(key) else {
                return Ok(None);
            };
            if t.shape != [rows, h] {
                return Err(TrainError::ShapeMismatch {
                    key: key.to_string(),
                    expected: vec![rows, h],
                    found: t.shape,
                });
            }
            Ok(Some(t.into_f32(key)?))
        };
        // Whole matrices first (they become the base or the full trainable rows). A resized
        // matrix wrapped by trainable tokens is saved under `token_adapter.base_layer`.
        let embed_w = match take_matrix(EMBED_WEIGHT_KEY, vocab)? {
            Some(w) => Some(w),
            None => take_matrix(EMBED_BASE_KEY, vocab)?,
        };
        let lm_w = match take_matrix(LM_HEAD_WEIGHT_KEY, vocab)? {
            Some(w) => Some(w),
            None => take_matrix(LM_HEAD_BASE_KEY, vocab)?,
        };
        let missing = |key: &str| TrainError::MissingTensor {
            key: key.to_string(),
            path: weights_path.to_path_buf(),
        };
        if save_embed || save_lm_head {
            let embed_w = embed_w.ok_or_else(|| missing(EMBED_WEIGHT_KEY))?;
            let all: Vec<u32> = (0..vocab as u32).collect();
            let lm_rows = if tied {
                // Tied: one matrix unless the adapter holds a different lm_head copy (PEFT
                // without ensure_weight_tying trains two copies).
                match lm_w {
                    Some(l) if l != embed_w => Some(l),
                    _ => None,
                }
            } else if save_lm_head {
                Some(lm_w.ok_or_else(|| missing(LM_HEAD_WEIGHT_KEY))?)
            } else {
                if let Some(l) = lm_w {
                    self.lm_head = Some(frozen(
                        transpose_rows(&l, vocab, h),
                        [h, vocab],
                        dtype,
                        &device,
                    ));
                }
                None
            };
            self.token_adapter = Some(TokenAdapter {
                embed_tokens: Some(TokenRows {
                    rows: trainable_param(embed_w, [vocab, h], DType::F32, &device),
                    indices: all.clone(),
                    full: true,
                }),
                lm_head: lm_rows.map(|l| TokenRows {
                    rows: trainable_param(l, [vocab, h], DType::F32, &device),
                    indices: all,
                    full: true,
                }),
            });
            return Ok(self);
        }
        // A resized embedding saved by PEFT (`save_embedding_layers`): the new base matrices.
        if let Some(e) = embed_w {
            self.embed_tokens = frozen(e.clone(), [vocab, h], dtype, &device);
            if let Some(l) = lm_w {
                if tied {
                    if l != e {
                        return Err(TrainError::InvalidArgument(format!(
                            "{}: the model has tied embeddings but the adapter's lm_head.weight \
                             differs from its embed_tokens.weight",
                            weights_path.display()
                        )));
                    }
                } else {
                    self.lm_head = Some(frozen(
                        transpose_rows(&l, vocab, h),
                        [h, vocab],
                        dtype,
                        &device,
                    ));
                }
            }
        } else if let Some(l) = lm_w {
            if tied {
                return Err(TrainError::InvalidArgument(format!(
                    "{}: lm_head.weight without embed_tokens.weight for a tied model",
                    weights_path.display()
                )));
            }
            self.lm_head = Some(frozen(
                transpose_rows(&l, vocab, h),
                [h, vocab],
                dtype,
                &device,
            ));
        }
        let Some(indices) = indices else {
            for key in [EMBED_DELTA_KEY, LM_HEAD_DELTA_KEY] {
                if tensors.contains_key(key) {
                    return Err(TrainError::UnexpectedAdapterKey {
                        key: key.to_string(),
                    });
                }
            }
            return Ok(self);
        };
        check_indices(
            &indices.embed_tokens,
            vocab,
            "trainable_token_indices (embed_tokens)",
        )?;
        check_indices(&indices.lm_head, vocab, "trainable_token_indices (lm_head)")?;
        let shared = tied && indices.lm_head == indices.embed_tokens;
        let mut take_rows = |key: &str, ids: &[u32]| -> Result<Option<TokenRows<B>>> {
            if ids.is_empty() {
                if tensors.contains_key(key) {
                    return Err(TrainError::UnexpectedAdapterKey {
                        key: key.to_string(),
                    });
                }
                return Ok(None);
            }
            let t = tensors.remove(key).ok_or_else(|| missing(key))?;
            if t.shape != [ids.len(), h] {
                return Err(TrainError::ShapeMismatch {
                    key: key.to_string(),
                    expected: vec![ids.len(), h],
                    found: t.shape,
                });
            }
            Ok(Some(TokenRows {
                rows: trainable_param(t.into_f32(key)?, [ids.len(), h], DType::F32, &device),
                indices: ids.to_vec(),
                full: false,
            }))
        };
        let embed = take_rows(EMBED_DELTA_KEY, &indices.embed_tokens)?;
        let lm_head = if shared {
            if tensors.contains_key(LM_HEAD_DELTA_KEY) {
                return Err(TrainError::UnexpectedAdapterKey {
                    key: LM_HEAD_DELTA_KEY.to_string(),
                });
            }
            None
        } else {
            take_rows(LM_HEAD_DELTA_KEY, &indices.lm_head)?
        };
        self.token_adapter = Some(TokenAdapter {
            embed_tokens: embed,
            lm_head,
        });
        Ok(self)
    }

    /// Writes the trainable rows into the matrices (PEFT's merge: `index_copy`) and drops them.
    /// A tied model whose output rows differ from its input rows becomes untied.
    pub(crate) fn merge_token_rows(mut self) -> Self {
        let Some(a) = self.token_adapter.take() else {
            return self;
        };
        let device = self.device();
        let dtype = self.dtype();
        let write = |w: Tensor<B, 2>, r: &TokenRows<B>| -> Tensor<B, 2> {
            // `w` in [vocab, hidden] row layout; the rows are cast to the base dtype.
            let rows = to_dtype(r.rows.val().detach(), dtype);
            if r.full {
                return rows;
            }
            let idx = r.index_tensor(&device);
            let old = w.clone().select(0, idx.clone());
            w.select_assign(0, idx, rows - old, IndexingUpdateOp::Add)
                .detach()
        };
        let base_embed = self.embed_tokens.val();
        if let Some(r) = &a.lm_head {
            let out = match self.lm_head.take() {
                Some(w) => write(w.val().transpose(), r),
                // Separate output rows on a tied model: the output matrix becomes its own.
                None => {
                    self.config.tie_word_embeddings = false;
                    write(base_embed.clone(), r)
                }
            };
            self.lm_head =
                Some(Param::from_tensor(out.transpose().detach()).set_require_grad(false));
        }
        if let Some(r) = &a.embed_tokens {
            let e = write(base_embed, r);
            self.embed_tokens = Param::from_tensor(e).set_require_grad(false);
        }
        self
    }
}

impl<B: AutodiffBackend> Llama<B> {
    /// The gradients in `grads` of the trainable token matrices (keys as
    /// [`Llama::token_params`]).
    pub(crate) fn token_grads(
        &self,
        grads: &B::Gradients,
    ) -> BTreeMap<String, Tensor<B::InnerBackend, 2>> {
        self.token_params()
            .into_iter()
            .filter_map(|(key, p)| p.grad(grads).map(|g| (key, g)))
            .collect()
    }
}

/// `t` in `dtype` (cast only when it differs).
fn to_dtype<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(dtype)
    }
}

fn frozen<B: Backend>(
    data: Vec<f32>,
    shape: [usize; 2],
    dtype: DType,
    device: &B::Device,
) -> Param<Tensor<B, 2>> {
    crate::nn::tensor::frozen_param(data, shape, dtype, device)
}

/// `[rows, cols]` → `[cols, rows]` (HF `[vocab, hidden]` lm_head to our `[hidden, vocab]`).
fn transpose_rows(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    crate::nn::tensor::transpose(data, rows, cols)
}
