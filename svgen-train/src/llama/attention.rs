//! Grouped-query self-attention with rotate-half RoPE: over fresh keys and values (training,
//! parity), over the cached segments of a [`KvCache`](crate::llama::KvCache), or over a host
//! cache on the CPU fast path.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor, TensorData};

use crate::cpu::decode::HostKv;
use crate::llama::config::LlamaConfig;
use crate::llama::kv_cache::{KvSegment, LayerKv};
use crate::nn::lora::LoraLinear;
use crate::nn::tensor::host_f32;

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
pub(super) struct AttnInputs<'a, B: Backend> {
    pub(super) cos: Tensor<B, 4>,
    pub(super) sin: Tensor<B, 4>,
    /// `true` where attention is forbidden, `[B, 1, T, S]` (broadcast over heads); `None`
    /// when nothing is masked, and for single-token steps on host caches (they read `valid`).
    pub(super) mask: Option<Tensor<B, 4, Bool>>,
    /// Per row, whether each cached key is a real token; `None` when none is padding (cached
    /// calls only).
    pub(super) valid: Option<&'a [Vec<bool>]>,
    /// Positions a layer's cache tail takes before it is merged (cached calls only).
    pub(super) merge_interval: usize,
}

impl<B: Backend> Attention<B> {
    /// Attends `x` `[B, T, hidden]` to itself (and to the cached positions of `cache`).
    pub(super) fn forward(
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

/// cos/sin tables `[B, 1, T, head_dim]` for the given position ids (HF layout: the half
/// frequencies repeated twice).
pub(super) fn rope_tables<B: Backend>(
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
