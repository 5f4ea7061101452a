//! Grouped-query self-attention with rotate-half RoPE: over fresh keys and values (training,
//! parity), over the cached segments of a [`KvCache`](crate::llama::KvCache), or over a host
//! cache on the CPU fast path. Every call of more than one query goes through
//! [`flash_attention`] (linear memory in the sequence length, its own backward pass); single-token
//! decoding steps attend over the cache in place.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor, TensorData};

use crate::cpu::decode::HostKv;
use crate::error::Result;
use crate::llama::config::LlamaConfig;
use crate::llama::kv_cache::{KvSegment, LayerKv};
use crate::nn::attention::{flash_attention, AttentionMask, AttentionOptions};
use crate::nn::lora::LoraLinear;
use crate::nn::tensor::{check_dtypes, host_f32};

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

/// Per-call attention inputs built on the host: rotary tables and the attention mask.
#[derive(Clone)]
pub(crate) struct AttnInputs<'a, B: Backend> {
    /// `[B, 1, T, head_dim]` rotary tables in the model's dtype.
    pub(crate) cos: Tensor<B, 4>,
    pub(crate) sin: Tensor<B, 4>,
    /// Which keys each query attends to, for every call of more than one token (fresh keys,
    /// prompts and chunks over a cache).
    pub(crate) attention: AttentionMask,
    /// Single-token steps over cached segments with padding: `true` where a key is padding,
    /// `[B, 1, 1, S]` (linear in the cache length); `None` otherwise.
    pub(crate) step_mask: Option<Tensor<B, 4, Bool>>,
    /// Per row, whether each cached key is a real token; `None` when none is padding (cached
    /// calls only).
    pub(crate) valid: Option<&'a [Vec<bool>]>,
    /// Positions a layer's cache tail takes before it is merged (cached calls only).
    pub(crate) merge_interval: usize,
}

impl<B: Backend> AttnInputs<'_, B> {
    /// Inputs of a call without cache: rotary tables and the mask.
    pub(crate) fn fresh(cos: Tensor<B, 4>, sin: Tensor<B, 4>, attention: AttentionMask) -> Self {
        AttnInputs {
            cos,
            sin,
            attention,
            step_mask: None,
            valid: None,
            merge_interval: 0,
        }
    }
}

impl<B: Backend> Attention<B> {
    /// Attends `x` `[B, T, hidden]` to itself (and to the cached positions of `cache`).
    pub(crate) fn forward(
        &self,
        x: Tensor<B, 3>,
        inputs: &AttnInputs<'_, B>,
        cache: Option<&mut LayerKv<B>>,
    ) -> Result<Tensor<B, 3>> {
        let [b, t, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self
            .q_proj
            .try_forward(x.clone())?
            .reshape([b, t, nh, hd])
            .swap_dims(1, 2);
        let k = self
            .k_proj
            .try_forward(x.clone())?
            .reshape([b, t, nkv, hd])
            .swap_dims(1, 2);
        let v = self
            .v_proj
            .try_forward(x)?
            .reshape([b, t, nkv, hd])
            .swap_dims(1, 2);
        check_dtypes(
            "rotary embedding",
            ("q", q.dtype()),
            ("cos", inputs.cos.dtype()),
        )?;
        let q = apply_rope(q, &inputs.cos, &inputs.sin);
        let k = apply_rope(k, &inputs.cos, &inputs.sin);
        let opts = AttentionOptions::default();
        let out = match cache {
            Some(layer) => {
                if matches!(layer, LayerKv::Segments(s) if s.is_empty()) {
                    if let Some(host) = HostKv::for_backend::<B>(q.dtype(), b, nkv, hd) {
                        *layer = LayerKv::Host(host);
                    }
                }
                // The cache may have been filled by another model (one `KvCache` handed to
                // two): appending keys of another dtype would concatenate mixed buffers.
                let cached = match layer {
                    LayerKv::Segments(s) => s.dtype(),
                    LayerKv::Host(_) => Some(DType::F32),
                };
                if let Some(cached) = cached {
                    check_dtypes(
                        "KV cache append",
                        ("cached keys", cached),
                        ("new keys", k.dtype()),
                    )?;
                }
                match layer {
                    LayerKv::Segments(layer) => {
                        let new = KvSegment {
                            k: k.reshape([b, nkv, 1, 1, t, hd]),
                            v: v.reshape([b, nkv, 1, 1, t, hd]),
                        };
                        let segments = layer.append(new, inputs.merge_interval);
                        if t == 1 {
                            self.attend_segments(q, &segments, inputs.step_mask.as_ref())
                        } else {
                            let (k, v) = dense_kv(&segments);
                            flash_attention(q, k, v, &inputs.attention, &opts)?
                        }
                    }
                    LayerKv::Host(host) => self.attend_host(q, k, v, host, inputs)?,
                }
            }
            None => flash_attention(q, k, v, &inputs.attention, &opts)?,
        };
        self.o_proj
            .try_forward(out.swap_dims(1, 2).reshape([b, t, nh * hd]))
    }

    /// Attention with a host-memory cache (Flex, f32): appends the new keys/values (after
    /// RoPE) in place; a single new token attends in [`crate::cpu::decode`], a longer chunk
    /// through [`flash_attention`] over the cache so far and the chunk. Returns
    /// `[B, heads, T, head_dim]`.
    fn attend_host(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        host: &mut HostKv,
        inputs: &AttnInputs<'_, B>,
    ) -> Result<Tensor<B, 4>> {
        let [b, _, t, hd] = q.dims();
        let nkv = self.num_kv_heads;
        let device = q.device();
        if t == 1 {
            // `step` declines only data the host cache was not made for (not Flex f32).
            if let Some(out) = host.step(&q, &k, &v, inputs.valid) {
                return Ok(out);
            }
        }
        let past = host.len();
        let (k_all, v_all) = if past > 0 {
            let (pk, pv) = host.dense();
            let shape = [b, nkv, past, hd];
            let pk = Tensor::<B, 4>::from_data(TensorData::new(pk, shape), &device);
            let pv = Tensor::<B, 4>::from_data(TensorData::new(pv, shape), &device);
            (
                Tensor::cat(vec![pk, k.clone()], 2),
                Tensor::cat(vec![pv, v.clone()], 2),
            )
        } else {
            (k.clone(), v.clone())
        };
        host.append(&host_f32(k), &host_f32(v), t);
        flash_attention(
            q,
            k_all,
            v_all,
            &inputs.attention,
            &AttentionOptions::default(),
        )
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

/// The segments' keys and values side by side, `[B, kv_heads, S, head_dim]` each.
fn dense_kv<B: Backend>(segments: &[KvSegment<B>]) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let flat = |t: &Tensor<B, 6>| {
        let [b, kv, _, _, s, hd] = t.dims();
        t.clone().reshape([b, kv, s, hd])
    };
    let (mut ks, mut vs): (Vec<_>, Vec<_>) =
        segments.iter().map(|s| (flat(&s.k), flat(&s.v))).unzip();
    if ks.len() == 1 {
        (ks.remove(0), vs.remove(0))
    } else {
        (Tensor::cat(ks, 2), Tensor::cat(vs, 2))
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

/// cos/sin tables `[B, 1, T, head_dim]` for the given position ids (HF layout: the half
/// frequencies repeated twice).
pub(crate) fn rope_tables<B: Backend>(
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
