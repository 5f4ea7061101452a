//! The Llama 2/3/3.1/3.2 decoder in Burn, generic over the backend.
//!
//! Weights are kept in HF naming; linear weights are stored `[in, out]` (HF's `[out, in]`
//! transposed once at load time). RoPE follows HF's rotate-half convention, so HF q/k weights
//! are used as they are.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};

use crate::cpu::decode::HostKv;
use crate::error::{Result, TrainError};
use crate::llama::config::LlamaConfig;
use crate::nn::lora::LoraLinear;
use crate::nn::tensor::{frozen_param, host_f32, transpose};
use crate::weights::Checkpoint;

/// How to load a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadOptions {
    /// Compute (and storage) dtype of the weights on the device, whatever the file holds.
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dtype: DType::F32 }
    }
}

/// RMSNorm: `weight * x / sqrt(mean(x^2) + eps)`, computed in f32 as HF does.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `weight` `[hidden]`.
    pub weight: Param<Tensor<B, 1>>,
    /// `rms_norm_eps`.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Normalises the last dimension.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let dtype = x.dtype();
        let x = if dtype != DType::F32 {
            x.cast(DType::F32)
        } else {
            x
        };
        let var = x.clone().powi_scalar(2).mean_dim(2);
        let x = x * var.add_scalar(self.eps).sqrt().recip();
        let x = if dtype != DType::F32 {
            x.cast(dtype)
        } else {
            x
        };
        x * self.weight.val().unsqueeze::<3>()
    }
}

/// Grouped-query self-attention with rotate-half RoPE.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `q_proj`.
    pub q_proj: LoraLinear<B>,
    /// `k_proj`.
    pub k_proj: LoraLinear<B>,
    /// `v_proj`.
    pub v_proj: LoraLinear<B>,
    /// `o_proj`.
    pub o_proj: LoraLinear<B>,
    /// `num_attention_heads`.
    pub num_heads: usize,
    /// `num_key_value_heads`.
    pub num_kv_heads: usize,
    /// `head_dim`.
    pub head_dim: usize,
}

/// The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `gate_proj`.
    pub gate_proj: LoraLinear<B>,
    /// `up_proj`.
    pub up_proj: LoraLinear<B>,
    /// `down_proj`.
    pub down_proj: LoraLinear<B>,
}

/// One decoder layer (`model.layers.N`).
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// `self_attn`.
    pub self_attn: Attention<B>,
    /// `mlp`.
    pub mlp: Mlp<B>,
    /// `input_layernorm`.
    pub input_layernorm: RmsNorm<B>,
    /// `post_attention_layernorm`.
    pub post_attention_layernorm: RmsNorm<B>,
}

/// Positions a layer's tail segment takes before it is merged into the main segment (see
/// [`KvCache`]).
pub const DEFAULT_KV_MERGE_INTERVAL: usize = 128;

/// A run of cached keys and values, `[B, kv_heads, 1, 1, S, head_dim]` each. The `groups`
/// query heads sharing a kv head broadcast over the first singleton axis, so every
/// single-token product is a matrix-vector product on the cache as it lies in memory, and the
/// products of one kv head run back to back (its keys are still in cache for the second).
/// The second singleton keeps Burn from folding `[.., G, 1, k] × [.., 1, k, n]` into one
/// `[G, k] × [k, n]` product, which Flex computes by packing (copying) the whole cache.
#[derive(Debug, Clone)]
struct KvSegment<B: Backend> {
    k: Tensor<B, 6>,
    v: Tensor<B, 6>,
}

impl<B: Backend> KvSegment<B> {
    fn len(&self) -> usize {
        self.k.dims()[4]
    }

    fn narrow(self, len: usize) -> Self {
        Self {
            k: self.k.narrow(4, 0, len),
            v: self.v.narrow(4, 0, len),
        }
    }

    fn cat(parts: Vec<Self>) -> Self {
        let (k, v): (Vec<_>, Vec<_>) = parts.into_iter().map(|s| (s.k, s.v)).unzip();
        Self {
            k: Tensor::cat(k, 4),
            v: Tensor::cat(v, 4),
        }
    }
}

/// The cached keys and values of one layer in two segments: a long `main` one and a short
/// `tail` that new positions are appended to. Appending copies only the tail; when it would
/// outgrow the merge interval, `main`, `tail` and the new positions are concatenated once. A
/// step thus costs O(interval) copies plus an amortised O(S / interval), instead of
/// the O(S) per step of growing one buffer by concatenation, or of `slice_assign` into a
/// preallocated buffer on backends (Flex among them) whose `slice_assign` copies the
/// destination. Attention reads both segments where they lie.
#[derive(Debug, Clone)]
struct SegmentKv<B: Backend> {
    main: Option<KvSegment<B>>,
    tail: Option<KvSegment<B>>,
}

impl<B: Backend> SegmentKv<B> {
    fn is_empty(&self) -> bool {
        self.main.is_none() && self.tail.is_none()
    }

    fn main_len(&self) -> usize {
        self.main.as_ref().map_or(0, KvSegment::len)
    }

    /// Appends `new` (`[B, kv_heads, 1, 1, T, head_dim]`) and returns the segments to attend
    /// over, oldest first.
    fn append(&mut self, new: KvSegment<B>, merge_interval: usize) -> Vec<KvSegment<B>> {
        let tail_len = self.tail.as_ref().map_or(0, KvSegment::len);
        if self.main.is_none() && self.tail.is_none() {
            self.main = Some(new);
        } else if tail_len + new.len() <= merge_interval {
            self.tail = Some(match self.tail.take() {
                Some(tail) => KvSegment::cat(vec![tail, new]),
                None => new,
            });
        } else {
            let parts: Vec<_> = [self.main.take(), self.tail.take(), Some(new)]
                .into_iter()
                .flatten()
                .collect();
            self.main = Some(KvSegment::cat(parts));
        }
        [&self.main, &self.tail]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Keeps the first `len` positions.
    fn truncate(&mut self, len: usize) {
        let main_len = self.main_len();
        if len >= main_len {
            let keep = len - main_len;
            self.tail = self.tail.take().filter(|_| keep > 0).map(|t| {
                if t.len() > keep {
                    t.narrow(keep)
                } else {
                    t
                }
            });
        } else {
            self.tail = None;
            self.main = self.main.take().filter(|_| len > 0).map(|m| m.narrow(len));
        }
    }
}

/// The cache of one layer: backend tensors in two segments (every backend), or host memory
/// for the single-token fast path of exactly `burn::backend::Flex` in f32 (see
/// [`crate::cpu::decode`]). The choice is made when the first positions are appended.
#[derive(Debug, Clone)]
enum LayerKv<B: Backend> {
    Segments(SegmentKv<B>),
    Host(HostKv),
}

impl<B: Backend> Default for LayerKv<B> {
    fn default() -> Self {
        Self::Segments(SegmentKv {
            main: None,
            tail: None,
        })
    }
}

impl<B: Backend> LayerKv<B> {
    /// Keeps the first `len` positions.
    fn truncate(&mut self, len: usize) {
        match self {
            Self::Segments(s) => s.truncate(len),
            Self::Host(h) => h.truncate(len),
        }
    }
}

/// What a cached call hands to the layers.
struct CachedCall<'a, B: Backend> {
    layers: &'a mut [LayerKv<B>],
    merge_interval: usize,
    /// Per row, whether each cached key is a real token; `None` when none is padding.
    valid: Option<&'a [Vec<bool>]>,
}

/// Per-call attention inputs built on the host: rotary tables and the attention mask.
struct AttnInputs<'a, B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
    /// `true` where attention is forbidden, `[B, 1, T, S]` (broadcast over heads); `None`
    /// when nothing is masked, and for single-token steps on host caches (they read `valid`).
    mask: Option<Tensor<B, 4, Bool>>,
    /// Per row, whether each cached key is a real token; `None` when none is padding (cached
    /// calls only).
    valid: Option<&'a [Vec<bool>]>,
    /// Positions a layer's cache tail takes before it is merged (cached calls only).
    merge_interval: usize,
}

/// Key/value cache for incremental decoding, with per-row positions and key padding.
///
/// Each layer keeps its keys and values in a long segment and a short tail that new tokens
/// are appended to; the tail is folded into the long segment every `merge_interval`
/// positions. Per-token decode cost therefore stays flat as the context grows (no copy of
/// the whole cache per step), on every backend.
///
/// On exactly `burn::backend::Flex` with an f32 model, the layers' keys and values live in
/// host memory instead, appended in place, and single-token steps attend over them with a
/// vectorised kernel (the merge interval is then unused); prompts and multi-token chunks
/// keep the generic attention. `Autodiff<Flex>`, CUDA and half-precision models use the
/// segments.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerKv<B>>,
    merge_interval: usize,
    /// Per row, whether each cached key is a real token (false: left padding).
    valid: Vec<Vec<bool>>,
    /// Per row, the position id the next real token gets.
    next_pos: Vec<i64>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `batch` rows and a model with `num_layers` layers, merging its
    /// tails every [`DEFAULT_KV_MERGE_INTERVAL`] positions.
    ///
    /// ```
    /// use burn::backend::Flex;
    /// use svgen_train::KvCache;
    ///
    /// let cache = KvCache::<Flex>::new(4, 2);
    /// assert!(cache.is_empty());
    /// ```
    pub fn new(num_layers: usize, batch: usize) -> Self {
        Self::with_merge_interval(num_layers, batch, DEFAULT_KV_MERGE_INTERVAL)
    }

    /// An empty cache whose tail segments are merged into the main ones once they would
    /// hold more than `merge_interval` positions (at least 1). A step copies up to
    /// `merge_interval` positions, a merge the whole cache.
    pub fn with_merge_interval(num_layers: usize, batch: usize, merge_interval: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); num_layers],
            merge_interval: merge_interval.max(1),
            valid: vec![Vec::new(); batch],
            next_pos: vec![0; batch],
        }
    }

    /// Forgets every position from `len` on (no-op when `len >= self.len()`): e.g. to decode
    /// again from a shared prompt. Nothing is copied.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len() {
            return;
        }
        for layer in &mut self.layers {
            layer.truncate(len);
        }
        for (valid, next) in self.valid.iter_mut().zip(&mut self.next_pos) {
            valid.truncate(len);
            *next = valid.iter().filter(|&&real| real).count() as i64;
        }
    }

    /// Number of cached positions (including padding).
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> Attention<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        inputs: &AttnInputs<'_, B>,
        cache: Option<&mut LayerKv<B>>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self
            .q_proj
            .forward(x.clone())
            .reshape([b, t, nh, hd])
            .swap_dims(1, 2);
        let k = self
            .k_proj
            .forward(x.clone())
            .reshape([b, t, nkv, hd])
            .swap_dims(1, 2);
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, t, nkv, hd])
            .swap_dims(1, 2);
        let q = apply_rope(q, &inputs.cos, &inputs.sin);
        let k = apply_rope(k, &inputs.cos, &inputs.sin);
        let out = match cache {
            Some(layer) => {
                if matches!(layer, LayerKv::Segments(s) if s.is_empty()) {
                    if let Some(host) = HostKv::for_backend::<B>(q.dtype(), b, nkv, hd) {
                        *layer = LayerKv::Host(host);
                    }
                }
                match layer {
                    LayerKv::Segments(layer) => {
                        let new = KvSegment {
                            k: k.reshape([b, nkv, 1, 1, t, hd]),
                            v: v.reshape([b, nkv, 1, 1, t, hd]),
                        };
                        let segments = layer.append(new, inputs.merge_interval);
                        self.attend_segments(q, &segments, inputs.mask.as_ref())
                    }
                    LayerKv::Host(host) => self.attend_host(q, k, v, host, inputs),
                }
            }
            None => self.attend(q, k, v, inputs.mask.as_ref()),
        };
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b, t, nh * hd]))
    }

    /// Attention over fresh keys/values `[B, kv_heads, S, head_dim]` (training, parity):
    /// the queries of the `groups` heads sharing a kv head are stacked along the row axis,
    /// so K/V are never repeated in memory. Returns `[B, heads, T, head_dim]`.
    fn attend(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: Option<&Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 4> {
        let [b, nh, t, hd] = q.dims();
        let nkv = self.num_kv_heads;
        let s = k.dims()[2];
        let groups = nh / nkv;
        let q = q.reshape([b, nkv, groups * t, hd]);
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar(1.0 / (hd as f64).sqrt());
        let mut scores = scores.reshape([b, nh, t, s]);
        let dtype = scores.dtype();
        if dtype != DType::F32 {
            scores = scores.cast(DType::F32);
        }
        if let Some(mask) = mask {
            scores = scores.mask_fill(mask.clone().expand([b, nh, t, s]), f32::MIN);
        }
        let mut probs = softmax(scores, 3);
        if dtype != DType::F32 {
            probs = probs.cast(dtype);
        }
        probs
            .reshape([b, nkv, groups * t, s])
            .matmul(v)
            .reshape([b, nh, t, hd])
    }

    /// Attention with a host-memory cache (Flex, f32): appends the new keys/values (after
    /// RoPE) in place; a single new token attends in [`crate::cpu::decode`], a longer chunk with
    /// [`Self::attend_segments`] over the cache so far and the chunk. Returns
    /// `[B, heads, T, head_dim]`.
    fn attend_host(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        host: &mut HostKv,
        inputs: &AttnInputs<'_, B>,
    ) -> Tensor<B, 4> {
        let [b, _, t, hd] = q.dims();
        let nkv = self.num_kv_heads;
        let device = q.device();
        if t == 1 {
            // `step` declines only data the host cache was not made for (not Flex f32).
            if let Some(out) = host.step(&q, &k, &v, inputs.valid) {
                return out;
            }
        }
        let mut segments = Vec::with_capacity(2);
        let past = host.len();
        if past > 0 {
            let (pk, pv) = host.dense();
            let shape = [b, nkv, 1, 1, past, hd];
            segments.push(KvSegment {
                k: Tensor::from_data(TensorData::new(pk, shape), &device),
                v: Tensor::from_data(TensorData::new(pv, shape), &device),
            });
        }
        host.append(&host_f32(k.clone()), &host_f32(v.clone()), t);
        segments.push(KvSegment {
            k: k.reshape([b, nkv, 1, 1, t, hd]),
            v: v.reshape([b, nkv, 1, 1, t, hd]),
        });
        self.attend_segments(q, &segments, inputs.mask.as_ref())
    }

    /// Attention over cached segments (decoding): scores of every segment side by side,
    /// one softmax, then the probabilities of each segment times its values, summed. Each
    /// query row is its own product (the kv head broadcast over its `groups` query heads),
    /// which makes single-token decoding matrix-vector products over the cache in place.
    /// Returns `[B, heads, T, head_dim]`.
    fn attend_segments(
        &self,
        q: Tensor<B, 4>,
        segments: &[KvSegment<B>],
        mask: Option<&Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 4> {
        let [b, nh, t, hd] = q.dims();
        let nkv = self.num_kv_heads;
        let groups = nh / nkv;
        // Scaling the queries is cheaper than scaling [T, S] scores. Query head
        // `kv * groups + j` is [b, kv, j].
        let q = q
            .mul_scalar(1.0 / (hd as f64).sqrt())
            .reshape([b, nkv, groups, 1, t, hd]);
        let lens: Vec<usize> = segments.iter().map(KvSegment::len).collect();
        let s: usize = lens.iter().sum();
        let mut parts: Vec<Tensor<B, 6>> = segments
            .iter()
            .map(|seg| q.clone().matmul(seg.k.clone().swap_dims(4, 5)))
            .collect();
        let mut scores = if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(parts, 5)
        };
        let dtype = scores.dtype();
        if dtype != DType::F32 {
            scores = scores.cast(DType::F32);
        }
        if let Some(mask) = mask {
            let mask = mask
                .clone()
                .reshape([b, 1, 1, 1, t, s])
                .expand([b, nkv, groups, 1, t, s]);
            scores = scores.mask_fill(mask, f32::MIN);
        }
        let mut probs = softmax(scores, 5);
        if dtype != DType::F32 {
            probs = probs.cast(dtype);
        }
        let mut out: Option<Tensor<B, 6>> = None;
        let mut start = 0;
        for (seg, &len) in segments.iter().zip(&lens) {
            let p = if len == s {
                probs.clone()
            } else {
                probs.clone().narrow(5, start, len)
            };
            let o = p.matmul(seg.v.clone());
            out = Some(match out {
                Some(acc) => acc + o,
                None => o,
            });
            start += len;
        }
        out.map_or_else(
            || Tensor::zeros([b, nh, t, hd], (&q.device(), q.dtype())),
            |o| o.reshape([b, nh, t, hd]),
        )
    }
}

fn rotate_half<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

fn apply_rope<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
    x.clone() * cos.clone() + rotate_half(x) * sin.clone()
}

impl<B: Backend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

impl<B: Backend> DecoderLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        inputs: &AttnInputs<'_, B>,
        cache: Option<&mut LayerKv<B>>,
    ) -> Tensor<B, 3> {
        let h = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), inputs, cache);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

/// `LlamaForCausalLM`: embeddings, decoder layers, final norm and LM head.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// `model.embed_tokens.weight` `[vocab, hidden]`.
    pub embed_tokens: Param<Tensor<B, 2>>,
    /// `model.layers`.
    pub layers: Vec<DecoderLayer<B>>,
    /// `model.norm`.
    pub norm: RmsNorm<B>,
    /// `lm_head.weight`, stored `[hidden, vocab]`; `None` with tied embeddings.
    pub lm_head: Option<Param<Tensor<B, 2>>>,
    /// The architecture.
    #[module(skip)]
    pub config: LlamaConfig,
}

/// The HF `[out, in]` shape of every linear of one layer, by module path suffix.
pub(crate) fn linear_shapes(cfg: &LlamaConfig) -> [(&'static str, [usize; 2]); 7] {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let q = cfg.num_attention_heads * cfg.head_dim;
    let kv = cfg.num_key_value_heads * cfg.head_dim;
    [
        ("self_attn.q_proj", [q, h]),
        ("self_attn.k_proj", [kv, h]),
        ("self_attn.v_proj", [kv, h]),
        ("self_attn.o_proj", [h, q]),
        ("mlp.gate_proj", [i, h]),
        ("mlp.up_proj", [i, h]),
        ("mlp.down_proj", [h, i]),
    ]
}

impl<B: Backend> Llama<B> {
    /// Loads a HF Llama folder (`config.json` + single or sharded safetensors, f32/bf16/f16).
    ///
    /// Missing or mis-shaped tensors give a typed error naming the HF key. The base weights are
    /// frozen (no gradients).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        options: LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let config = LlamaConfig::from_file(dir)?;
        let ckpt = Checkpoint::open(dir)?;
        Self::from_checkpoint(config, &ckpt, options, device)
    }

    /// Loads weights from an opened checkpoint with an explicit configuration.
    pub fn from_checkpoint(
        config: LlamaConfig,
        ckpt: &Checkpoint,
        options: LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let cfg = &config;
        let mut expected: HashMap<String, Vec<usize>> = HashMap::new();
        expected.insert(
            "model.embed_tokens.weight".into(),
            vec![cfg.vocab_size, cfg.hidden_size],
        );
        expected.insert("model.norm.weight".into(), vec![cfg.hidden_size]);
        if !cfg.tie_word_embeddings {
            expected.insert(
                "lm_head.weight".into(),
                vec![cfg.vocab_size, cfg.hidden_size],
            );
        }
        for l in 0..cfg.num_hidden_layers {
            for (name, shape) in linear_shapes(cfg) {
                expected.insert(format!("model.layers.{l}.{name}.weight"), shape.to_vec());
            }
            for norm in ["input_layernorm", "post_attention_layernorm"] {
                expected.insert(
                    format!("model.layers.{l}.{norm}.weight"),
                    vec![cfg.hidden_size],
                );
            }
        }
        let mut p1: HashMap<String, Param<Tensor<B, 1>>> = HashMap::new();
        let mut p2: HashMap<String, Param<Tensor<B, 2>>> = HashMap::new();
        ckpt.for_each_tensor(|key, t| {
            let Some(shape) = expected.get(key) else {
                return Ok(()); // e.g. rotary inv_freq buffers, or lm_head with tied embeddings
            };
            if &t.shape != shape {
                return Err(TrainError::ShapeMismatch {
                    key: key.into(),
                    expected: shape.clone(),
                    found: t.shape,
                });
            }
            let data = t.into_f32(key)?;
            if shape.len() == 1 {
                p1.insert(
                    key.into(),
                    frozen_param(data, [shape[0]], options.dtype, device),
                );
            } else if key.ends_with("_proj.weight") || key == "lm_head.weight" {
                let (rows, cols) = (shape[0], shape[1]);
                p2.insert(
                    key.into(),
                    frozen_param(
                        transpose(&data, rows, cols),
                        [cols, rows],
                        options.dtype,
                        device,
                    ),
                );
            } else {
                p2.insert(
                    key.into(),
                    frozen_param(data, [shape[0], shape[1]], options.dtype, device),
                );
            }
            Ok(())
        })?;
        let dir = ckpt.dir().to_path_buf();
        let mut take2 = |key: String| {
            p2.remove(&key).ok_or_else(|| TrainError::MissingTensor {
                key,
                path: dir.clone(),
            })
        };
        let embed_tokens = take2("model.embed_tokens.weight".into())?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(take2("lm_head.weight".into())?)
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let mut lin = |name: &str| -> Result<LoraLinear<B>> {
                Ok(LoraLinear::new(take2(format!(
                    "model.layers.{l}.{name}.weight"
                ))?))
            };
            let self_attn = Attention {
                q_proj: lin("self_attn.q_proj")?,
                k_proj: lin("self_attn.k_proj")?,
                v_proj: lin("self_attn.v_proj")?,
                o_proj: lin("self_attn.o_proj")?,
                num_heads: cfg.num_attention_heads,
                num_kv_heads: cfg.num_key_value_heads,
                head_dim: cfg.head_dim,
            };
            let mlp = Mlp {
                gate_proj: lin("mlp.gate_proj")?,
                up_proj: lin("mlp.up_proj")?,
                down_proj: lin("mlp.down_proj")?,
            };
            let mut norm = |name: &str| -> Result<RmsNorm<B>> {
                let key = format!("model.layers.{l}.{name}.weight");
                let weight = p1.remove(&key).ok_or_else(|| TrainError::MissingTensor {
                    key,
                    path: ckpt.dir().to_path_buf(),
                })?;
                Ok(RmsNorm {
                    weight,
                    eps: cfg.rms_norm_eps,
                })
            };
            layers.push(DecoderLayer {
                self_attn,
                mlp,
                input_layernorm: norm("input_layernorm")?,
                post_attention_layernorm: norm("post_attention_layernorm")?,
            });
        }
        let norm_w = p1
            .remove("model.norm.weight")
            .ok_or_else(|| TrainError::MissingTensor {
                key: "model.norm.weight".into(),
                path: ckpt.dir().to_path_buf(),
            })?;
        Ok(Self {
            embed_tokens,
            layers,
            norm: RmsNorm {
                weight: norm_w,
                eps: cfg.rms_norm_eps,
            },
            lm_head,
            config,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The dtype the weights are held in.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.val().dtype()
    }

    /// The device the model lives on.
    pub fn device(&self) -> B::Device {
        self.embed_tokens.val().device()
    }

    /// Logits `[B, T, vocab]` for unpadded sequences starting at position 0 (training and
    /// parity checks).
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = input_ids.dims();
        let positions: Vec<i64> = (0..b).flat_map(|_| 0..t as i64).collect();
        let mask = if t > 1 {
            Some(causal_mask(b, t, 0, None))
        } else {
            None
        };
        let h = self.hidden(input_ids, &positions, mask, None);
        self.logits(h)
    }

    /// Runs new tokens through the model, appending to `cache`. `attention_mask[row][i]` is
    /// false for (left) padding tokens. Returns the final hidden states `[B, T, hidden]`.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: &[Vec<bool>],
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 3>> {
        let [b, t] = input_ids.dims();
        if attention_mask.len() != b
            || attention_mask.iter().any(|m| m.len() != t)
            || cache.valid.len() != b
            || cache.layers.len() != self.layers.len()
        {
            return Err(TrainError::InvalidArgument(
                "input_ids, attention mask and cache disagree on batch/sequence size".into(),
            ));
        }
        let past = cache.len();
        let mut positions = Vec::with_capacity(b * t);
        for (row, m) in attention_mask.iter().enumerate() {
            for &real in m {
                if real {
                    positions.push(cache.next_pos[row]);
                    cache.next_pos[row] += 1;
                } else {
                    positions.push(1); // HF fills padded position ids with 1
                }
            }
            cache.valid[row].extend_from_slice(m);
        }
        let any_pad = cache.valid.iter().any(|v| v.iter().any(|x| !x));
        // Single-token steps on host caches mask padding from `valid` themselves.
        let host_step = t == 1 && cache.layers.iter().all(|l| matches!(l, LayerKv::Host(_)));
        let mask = if (t > 1 || any_pad) && !host_step {
            Some(causal_mask(b, t, past, Some(&cache.valid)))
        } else {
            None
        };
        let call = CachedCall {
            layers: &mut cache.layers,
            merge_interval: cache.merge_interval,
            valid: any_pad.then_some(cache.valid.as_slice()),
        };
        let h = self.hidden(input_ids, &positions, mask, Some(call));
        Ok(h)
    }

    fn hidden(
        &self,
        input_ids: Tensor<B, 2, Int>,
        positions: &[i64],
        mask: Option<Vec<bool>>,
        cache: Option<CachedCall<'_, B>>,
    ) -> Tensor<B, 3> {
        let [b, t] = input_ids.dims();
        let cfg = self.config();
        let device = self.device();
        let dtype = self.dtype();
        let hidden = cfg.hidden_size;
        let x = self
            .embed_tokens
            .val()
            .select(0, input_ids.reshape([b * t]))
            .reshape([b, t, hidden]);
        let (cos, sin) = rope_tables::<B>(cfg, positions, b, t, dtype, &device);
        let s_total = mask.as_ref().map(|m| m.len() / (b * t)).unwrap_or(0);
        let mask = mask.map(|m| {
            Tensor::<B, 4, Bool>::from_data(TensorData::new(m, [b, 1, t, s_total]), &device)
        });
        let (mut slots, merge_interval, valid) = match cache {
            Some(c) => (Some(c.layers), c.merge_interval, c.valid),
            None => (None, 0, None),
        };
        let inputs = AttnInputs {
            cos,
            sin,
            mask,
            valid,
            merge_interval,
        };
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = slots.as_mut().map(|c| &mut c[i]);
            x = layer.forward(x, &inputs, slot);
        }
        self.norm.forward(x)
    }

    /// Projects hidden states `[B, T, hidden]` to logits `[B, T, vocab]`.
    pub fn logits(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, hidden] = h.dims();
        let h = h.reshape([b * t, hidden]);
        let w = match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed_tokens.val().transpose(),
        };
        let v = w.dims()[1];
        h.matmul(w).reshape([b, t, v])
    }

    /// Visits every linear with its HF module path (`model.layers.N.self_attn.q_proj`).
    pub fn linears(&self) -> Vec<(String, &LoraLinear<B>)> {
        let mut out = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let a = &layer.self_attn;
            let m = &layer.mlp;
            for (name, lin) in [
                ("self_attn.q_proj", &a.q_proj),
                ("self_attn.k_proj", &a.k_proj),
                ("self_attn.v_proj", &a.v_proj),
                ("self_attn.o_proj", &a.o_proj),
                ("mlp.gate_proj", &m.gate_proj),
                ("mlp.up_proj", &m.up_proj),
                ("mlp.down_proj", &m.down_proj),
            ] {
                out.push((format!("model.layers.{l}.{name}"), lin));
            }
        }
        out
    }

    /// Rebuilds every linear through `f(hf_path, linear)`.
    pub fn try_map_linears(
        mut self,
        mut f: impl FnMut(&str, LoraLinear<B>) -> Result<LoraLinear<B>>,
    ) -> Result<Self> {
        let layers = std::mem::take(&mut self.layers);
        for (l, mut layer) in layers.into_iter().enumerate() {
            let p = format!("model.layers.{l}.");
            let a = layer.self_attn;
            let m = layer.mlp;
            layer.self_attn = Attention {
                q_proj: f(&format!("{p}self_attn.q_proj"), a.q_proj)?,
                k_proj: f(&format!("{p}self_attn.k_proj"), a.k_proj)?,
                v_proj: f(&format!("{p}self_attn.v_proj"), a.v_proj)?,
                o_proj: f(&format!("{p}self_attn.o_proj"), a.o_proj)?,
                ..a
            };
            layer.mlp = Mlp {
                gate_proj: f(&format!("{p}mlp.gate_proj"), m.gate_proj)?,
                up_proj: f(&format!("{p}mlp.up_proj"), m.up_proj)?,
                down_proj: f(&format!("{p}mlp.down_proj"), m.down_proj)?,
            };
            self.layers.push(layer);
        }
        Ok(self)
    }
}

/// Host-side `[B*T*S]` mask, `true` = forbidden: key `j` is visible to query `i` of this chunk
/// when `j <= past + i` and key `j` is not padding.
fn causal_mask(b: usize, t: usize, past: usize, valid: Option<&[Vec<bool>]>) -> Vec<bool> {
    let s = past + t;
    let mut m = Vec::with_capacity(b * t * s);
    for row in 0..b {
        for i in 0..t {
            for j in 0..s {
                let pad = valid.is_some_and(|v| !v[row][j]);
                m.push(j > past + i || pad);
            }
        }
    }
    m
}

/// cos/sin tables `[B, 1, T, head_dim]` for the given position ids (HF layout: the half
/// frequencies repeated twice).
fn rope_tables<B: Backend>(
    cfg: &LlamaConfig,
    positions: &[i64],
    b: usize,
    t: usize,
    dtype: DType,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let inv: Vec<f32> = cfg.inv_freq().into_iter().map(|f| f as f32).collect();
    let hd = cfg.head_dim;
    let mut cos = Vec::with_capacity(b * t * hd);
    let mut sin = Vec::with_capacity(b * t * hd);
    for &p in positions {
        for _ in 0..2 {
            for &f in &inv {
                // f32 product as in HF (inv_freq @ position_ids in float32).
                let angle = (p as f32) * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    let mk =
        |v: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(v, [b, 1, t, hd]), (device, dtype));
    (mk(cos), mk(sin))
}
