//! Multi-threaded, cache-blocked scaled dot-product attention on host memory: the inference fast
//! path of Stable Diffusion's [`Attention::forward`](crate::sd::blocks::Attention::forward) on the
//! CPU backend.
//!
//! **When it is used:** only when the backend is exactly [`burn::backend::Flex`] (checked with
//! [`core::any::TypeId`], see [`is_flex`](crate::cpu::is_flex)) and the projected tensors are
//! `f32` (`forward` returns `None` otherwise). Every other backend, including `Autodiff<Flex>` (training needs the graph of the generic op) and CUDA,
//! keeps Burn's generic [`burn::tensor::module::attention`]. On Flex, reading a tensor's data and
//! building one from a `Vec` are plain copies, so leaving the lazy tensor world here costs little.
//!
//! **What it computes:** `softmax(Q·Kᵀ / √d)·V` per (batch, head), with the heads packed the way
//! the projections produce them (`[B, N, heads·d]`, head `h` in columns `h·d..(h+1)·d`), so no
//! head split/merge copies are needed. The work is split over rayon tasks of
//! (batch, head, block of [`Q_BLOCK`] queries). Inside a task the keys are visited in tiles of
//! [`KV_TILE`] with an online ("flash") softmax: a running row maximum and sum, the accumulator
//! rescaled when the maximum grows. The score buffer is `Q_BLOCK·KV_TILE` floats per task, so
//! memory stays bounded whatever the sequence lengths (query slicing is implicit).
//!
//! The inner loops are written over fixed-width lane arrays so the compiler vectorises them, and
//! the kernel is compiled twice on x86-64: once for AVX2+FMA (picked at run time when the CPU
//! has it) and once for the baseline target. `exp` is [`exp_f32`](crate::cpu::exp_f32), a range-reduced polynomial
//! that vectorises (unlike a call to `f32::exp`), within 3e-7 relative of `f32::exp`.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::cpu::tile::{lane_max, lane_sum, tile_scores, LANES};
use crate::cpu::{exp_lane, madd, on_host};

/// Queries per rayon task (and per register/cache block).
pub const Q_BLOCK: usize = 32;
pub use crate::cpu::tile::KV_TILE;
/// Query rows whose output chunks are accumulated together in the `P·V` product.
const ROW_GROUP: usize = 8;

/// Shapes of one attention call over packed heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Batch size.
    pub batch: usize,
    /// Query length `N`.
    pub seq_q: usize,
    /// Key/value length `T`.
    pub seq_kv: usize,
    /// Number of heads.
    pub heads: usize,
    /// Channels per head `d` (the packed width is `heads·d`).
    pub head_dim: usize,
}

/// `softmax(Q·Kᵀ / √d)·V` over packed heads: `q` `[batch, seq_q, heads·d]`, `k` and `v`
/// `[batch, seq_kv, heads·d]`, row-major; returns `[batch, seq_q, heads·d]`.
///
/// # Panics
/// If a slice length does not match `shape` (callers pass the data of tensors whose dims they
/// just read), or if `seq_kv` or `head_dim` is zero.
///
/// ```
/// use svgen_train::cpu::attention::{attention_packed, AttentionShape};
/// // one query, two keys, one head of width 1: equal scores -> the mean of the values
/// let shape = AttentionShape { batch: 1, seq_q: 1, seq_kv: 2, heads: 1, head_dim: 1 };
/// let out = attention_packed(&[1.0], &[0.5, 0.5], &[2.0, 4.0], shape);
/// assert!((out[0] - 3.0).abs() < 1e-6);
/// ```
pub fn attention_packed(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape) -> Vec<f32> {
    let AttentionShape {
        batch,
        seq_q,
        seq_kv,
        heads,
        head_dim: d,
    } = shape;
    let width = heads * d;
    assert!(seq_kv > 0 && d > 0, "attention: empty keys or heads");
    assert_eq!(q.len(), batch * seq_q * width, "attention: query length");
    assert_eq!(k.len(), batch * seq_kv * width, "attention: key length");
    assert_eq!(v.len(), batch * seq_kv * width, "attention: value length");

    // Per (batch, head), zero-padded so every tile is whole: Kᵀ as [d, T_pad] (scores
    // vectorise over keys) and V as [T, d_pad] (outputs vectorise over channels).
    let t_pad = seq_kv.div_ceil(KV_TILE) * KV_TILE;
    let d_pad = d.div_ceil(LANES) * LANES;
    let bh = batch * heads;
    let mut kt = vec![0.0f32; bh * d * t_pad];
    let mut vh = vec![0.0f32; bh * seq_kv * d_pad];
    kt.par_chunks_mut(d * t_pad)
        .zip(vh.par_chunks_mut(seq_kv * d_pad))
        .enumerate()
        .for_each(|(i, (kt, vh))| {
            let (b, h) = (i / heads, i % heads);
            for t in 0..seq_kv {
                let row = (b * seq_kv + t) * width + h * d;
                for c in 0..d {
                    kt[c * t_pad + t] = k[row + c];
                }
                vh[t * d_pad..t * d_pad + d].copy_from_slice(&v[row..row + d]);
            }
        });

    let blocks = seq_q.div_ceil(Q_BLOCK);
    let scale = 1.0 / (d as f32).sqrt();
    // Each task produces `rows × d` values that land at a stride of `width`: they come back as
    // owned blocks and are scattered afterwards, which keeps the parallel part free of aliasing.
    let results: Vec<(usize, Vec<f32>)> = (0..bh * blocks)
        .into_par_iter()
        .map(|task| {
            let (bh_i, blk) = (task / blocks, task % blocks);
            let (b, h) = (bh_i / heads, bh_i % heads);
            let q0 = blk * Q_BLOCK;
            let rows = Q_BLOCK.min(seq_q - q0);
            // padded query rows stay zero; their results are dropped
            let mut qb = vec![0.0f32; Q_BLOCK * d];
            for r in 0..rows {
                let src = (b * seq_q + q0 + r) * width + h * d;
                for c in 0..d {
                    qb[r * d + c] = q[src + c] * scale;
                }
            }
            let head = HeadData {
                kt: &kt[bh_i * d * t_pad..(bh_i + 1) * d * t_pad],
                v: &vh[bh_i * seq_kv * d_pad..(bh_i + 1) * seq_kv * d_pad],
                seq_kv,
                t_pad,
                d,
                d_pad,
            };
            let mut out = vec![0.0f32; Q_BLOCK * d_pad];
            block_attention(&qb, &head, &mut out);
            (task, out)
        })
        .collect();

    let mut o = vec![0.0f32; batch * seq_q * width];
    for (task, out) in results {
        let (bh_i, blk) = (task / blocks, task % blocks);
        let (b, h) = (bh_i / heads, bh_i % heads);
        let q0 = blk * Q_BLOCK;
        let rows = Q_BLOCK.min(seq_q - q0);
        for (r, row) in out.chunks_exact(d_pad).take(rows).enumerate() {
            let dst = (b * seq_q + q0 + r) * width + h * d;
            o[dst..dst + d].copy_from_slice(&row[..d]);
        }
    }
    o
}

/// [`attention_packed`] on tensors: `q` `[batch, seq_q, heads·d]`, `k` and `v`
/// `[batch, seq_kv, heads·d]`; returns `[batch, seq_q, heads·d]`. `None` (take the generic op)
/// unless the backend is exactly Flex with `f32` data and there are keys and head channels.
pub(crate) fn forward<B: Backend>(
    q: &Tensor<B, 3>,
    k: &Tensor<B, 3>,
    v: &Tensor<B, 3>,
    heads: usize,
) -> Option<Tensor<B, 3>> {
    let [batch, seq_q, width] = q.dims();
    let shape = AttentionShape {
        batch,
        seq_q,
        seq_kv: k.dims()[1],
        heads,
        head_dim: width / heads,
    };
    if shape.seq_kv == 0 || shape.head_dim == 0 {
        return None;
    }
    on_host([q, k, v], [batch, seq_q, width], &q.device(), |[q, k, v]| {
        attention_packed(&q, &k, &v, shape)
    })
}

/// One head's keys (transposed, `[d, t_pad]`) and values (`[seq_kv, d_pad]`), zero-padded.
struct HeadData<'a> {
    kt: &'a [f32],
    v: &'a [f32],
    seq_kv: usize,
    t_pad: usize,
    d: usize,
    d_pad: usize,
}

/// Dispatches to the best compiled variant of [`block_kernel`] for this CPU.
fn block_attention(q: &[f32], head: &HeadData<'_>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `block_kernel_avx2` is compiled for.
            unsafe { block_kernel_avx2(q, head, out) };
            return;
        }
    }
    block_kernel::<false>(q, head, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_kernel_avx2(q: &[f32], head: &HeadData<'_>, out: &mut [f32]) {
    block_kernel::<true>(q, head, out);
}

/// Online-softmax attention of [`Q_BLOCK`] pre-scaled queries (`q` `[Q_BLOCK, d]`) over one
/// head; writes `[Q_BLOCK, d_pad]` into `out`. Inlined into each target-feature variant; the
/// fixed tile sizes let the compiler keep score rows and output accumulators in registers.
#[inline(always)]
fn block_kernel<const FMA: bool>(q: &[f32], head: &HeadData<'_>, out: &mut [f32]) {
    let HeadData {
        kt,
        v,
        seq_kv,
        t_pad,
        d,
        d_pad,
    } = *head;
    let mut scores = [[0.0f32; KV_TILE]; Q_BLOCK];
    let mut row_max = [f32::NEG_INFINITY; Q_BLOCK];
    let mut row_sum = [0.0f32; Q_BLOCK];
    out.fill(0.0);

    for t0 in (0..seq_kv).step_by(KV_TILE) {
        let tile = KV_TILE.min(seq_kv - t0);
        for (r, s) in scores.iter_mut().enumerate() {
            *s = tile_scores::<FMA>(&q[r * d..(r + 1) * d], kt, t_pad, t0);
            for a in &mut s[tile..] {
                *a = f32::NEG_INFINITY;
            }
            let new_max = row_max[r].max(lane_max(s));
            let correction = exp_lane::<FMA>(row_max[r] - new_max);
            for a in s.iter_mut() {
                *a = exp_lane::<FMA>(*a - new_max);
            }
            row_sum[r] = row_sum[r] * correction + lane_sum(s);
            row_max[r] = new_max;
            if correction != 1.0 {
                for x in &mut out[r * d_pad..(r + 1) * d_pad] {
                    *x *= correction;
                }
            }
        }
        // out += P·V, ROW_GROUP query rows × one lane-wide channel chunk held in registers
        for rg in (0..Q_BLOCK).step_by(ROW_GROUP) {
            for c0 in (0..d_pad).step_by(LANES) {
                let mut acc = [[0.0f32; LANES]; ROW_GROUP];
                for (g, a) in acc.iter_mut().enumerate() {
                    let o = (rg + g) * d_pad + c0;
                    a.copy_from_slice(&out[o..o + LANES]);
                }
                let v_tile = &v[t0 * d_pad..(t0 + tile) * d_pad];
                for (j, v_row) in v_tile.chunks_exact(d_pad).enumerate() {
                    let vv: &[f32; LANES] = v_row[c0..c0 + LANES].try_into().expect("whole lanes");
                    for (g, a) in acc.iter_mut().enumerate() {
                        let p = scores[rg + g][j];
                        for (x, &y) in a.iter_mut().zip(vv) {
                            *x = madd::<FMA>(p, y, *x);
                        }
                    }
                }
                for (g, a) in acc.iter().enumerate() {
                    let o = (rg + g) * d_pad + c0;
                    out[o..o + LANES].copy_from_slice(a);
                }
            }
        }
    }
    for (r, &sum) in row_sum.iter().enumerate() {
        let inv = 1.0 / sum;
        for x in &mut out[r * d_pad..(r + 1) * d_pad] {
            *x *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use burn::backend::Flex;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::{Tensor, TensorData};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use svgen_core::compare::{assert_close, Tolerance};

    /// Panics unless the fast path agrees with Burn's generic op on `shape` within 1e-5.
    fn assert_fast_matches_generic(shape: AttentionShape) {
        let AttentionShape {
            batch: b,
            seq_q: n,
            seq_kv: t,
            heads: h,
            head_dim: d,
        } = shape;
        let dev = Default::default();
        let mut rng = StdRng::seed_from_u64((b * 31 + n * 7 + t * 5 + h * 3 + d) as u64);
        let mut rnd = |len: usize| {
            let data: Vec<f32> = (0..b * len * h * d)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            Tensor::<Flex, 3>::from_data(TensorData::new(data, [b, len, h * d]), &dev)
        };
        let (q, k, v) = (rnd(n), rnd(t), rnd(t));
        let host = |y: &Tensor<Flex, 3>| y.to_data().into_vec::<f32>().expect("f32 data");
        let fast = attention_packed(&host(&q), &host(&k), &host(&v), shape);
        let split = |y: Tensor<Flex, 3>, len: usize| y.reshape([b, len, h, d]).swap_dims(1, 2);
        let opts = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        let generic = attention(split(q, n), split(k, t), split(v, t), None, None, opts)
            .swap_dims(1, 2)
            .reshape([b, n, h * d]);
        let generic = host(&generic);
        assert_close(
            &format!("{shape:?}"),
            &fast,
            &generic,
            Tolerance::absolute(1e-5),
        );
    }

    #[test]
    fn fast_path_matches_generic_op_on_odd_shapes() {
        let shapes = [
            // cross-attention to 77 text tokens, one head, head_dim 8, N not a block multiple
            (2, 70, 77, 1, 8),
            (1, 33, 77, 2, 40),
            (2, 100, 130, 3, 64),
            // single query / single key
            (1, 1, 1, 1, 8),
            (1, 5, 1, 2, 40),
            // self-attention longer than one key tile and one query block
            (1, 257, 257, 8, 8),
            (2, 64, 77, 1, 3),
        ];
        for (batch, seq_q, seq_kv, heads, head_dim) in shapes {
            let shape = AttentionShape {
                batch,
                seq_q,
                seq_kv,
                heads,
                head_dim,
            };
            assert_fast_matches_generic(shape);
        }
    }
}
