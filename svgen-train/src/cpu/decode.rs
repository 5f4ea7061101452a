//! Single-token attention over a KV cache held in host memory: the decode fast path of
//! [`Llama::forward_cached`](crate::Llama::forward_cached) on the CPU backend.
//!
//! **When it is used:** only when the backend is exactly [`burn::backend::Flex`] (checked with
//! [`core::any::TypeId`], see [`is_flex`](crate::cpu::is_flex)) and the model computes in `f32`
//! ([`HostKv::for_backend`] gives `None` otherwise). `Autodiff<Flex>`,
//! CUDA and Flex with a half-precision dtype keep the generic two-segment tensor cache of
//! [`KvCache`](crate::KvCache).
//!
//! **Layout:** per layer, every (batch row, kv head) owns two growable `Vec<f32>`: the keys
//! (after RoPE) in blocks of [`BLOCK`] positions stored transposed, `[head_dim, BLOCK]` per
//! block, so scores are computed [`BLOCK`] keys at a time with no horizontal sums; and the
//! values `[len, head_dim]`. A step writes its new key/value rows in place (the vectors grow
//! geometrically, so nothing is copied per step beyond the new rows), and a rewind only
//! shortens them. The queries of the `heads / kv_heads` heads sharing a kv head are computed
//! together, so each key block and value row is fetched from memory once per step.
//!
//! **What it computes:** for each query head `h` (kv head `h / groups`),
//! `softmax(q·Kᵀ)·V` over the cached positions with `q` already scaled by `1/√head_dim`; keys
//! marked as padding are left out (probability 0), and a row with no real key at all gets the
//! uniform average of its values, as a softmax over identical masked scores does in the generic
//! path. The softmax subtracts the row maximum; `exp` is
//! [`exp_f32`](crate::cpu::exp_f32), the vectorising polynomial shared with the
//! Stable Diffusion attention. The kernel is compiled twice on x86-64, for AVX2 (chosen at run
//! time when the CPU has it) and for the baseline target.
//!
//! **Single-threaded on purpose:** a step reads the whole cache once (f32 keys and values of
//! every layer, 8 MiB at 1024 positions for the 4-layer benchmark model), which the weight
//! stream has evicted from the caches, so the kernel runs at one core's memory bandwidth. Spreading
//! (row, kv head) pairs over rayon's threads measured slower on the 2-core benchmark box
//! whenever anything else ran on it (the step then waits for a worker that is not scheduled),
//! and the rest of the decode step is single-threaded anyway.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::cpu::{applies, exp_f32, on_host};

/// Width of the hand-shaped accumulator arrays (two AVX2 registers of f32).
const LANES: usize = 16;
/// Positions per transposed key block (one accumulator array of scores).
const BLOCK: usize = LANES;

/// The keys and values of one layer in host memory (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct HostKv {
    kv_heads: usize,
    head_dim: usize,
    len: usize,
    /// Per (row, kv head) in row-major order: keys in blocks `[len / BLOCK, head_dim, BLOCK]`
    /// (the last block padded).
    keys: Vec<Vec<f32>>,
    /// Per (row, kv head): values `[len, head_dim]`.
    values: Vec<Vec<f32>>,
}

impl HostKv {
    /// An empty cache for `batch` rows.
    pub(crate) fn new(batch: usize, kv_heads: usize, head_dim: usize) -> Self {
        Self {
            kv_heads,
            head_dim,
            len: 0,
            keys: vec![Vec::new(); batch * kv_heads],
            values: vec![Vec::new(); batch * kv_heads],
        }
    }

    /// An empty cache for `batch` rows when the fast path applies to a model computing in
    /// `dtype` on backend `B` (exactly Flex, `f32`); `None` keeps the generic tensor cache.
    pub(crate) fn for_backend<B: Backend>(
        dtype: DType,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Option<Self> {
        applies::<B>(dtype).then(|| Self::new(batch, kv_heads, head_dim))
    }

    /// One decode step: appends the new keys and values `k`, `v` (`[batch, kv_heads, 1,
    /// head_dim]`, after RoPE) and attends the queries `q` (`[batch, heads, 1, head_dim]`,
    /// unscaled) over the cache; `valid` as in [`HostKv::attend`]. Returns
    /// `[batch, heads, 1, head_dim]`, or `None` (nothing appended) unless the tensors are Flex
    /// `f32` data.
    pub(crate) fn step<B: Backend>(
        &mut self,
        q: &Tensor<B, 4>,
        k: &Tensor<B, 4>,
        v: &Tensor<B, 4>,
        valid: Option<&[Vec<bool>]>,
    ) -> Option<Tensor<B, 4>> {
        let [b, nh, _, hd] = q.dims();
        on_host([q, k, v], [b, nh, 1, hd], &q.device(), |[mut q, k, v]| {
            self.append(&k, &v, 1);
            // The same f32 product as the generic path's `mul_scalar`.
            let scale = (1.0 / (hd as f64).sqrt()) as f32;
            for x in &mut q {
                *x *= scale;
            }
            self.attend(&q, nh, valid)
        })
    }

    /// Cached positions.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `t` positions of keys and values laid out `[batch, kv_heads, t, head_dim]`.
    pub(crate) fn append(&mut self, k: &[f32], v: &[f32], t: usize) {
        let hd = self.head_dim;
        let run = t * hd;
        debug_assert_eq!(k.len(), self.keys.len() * run);
        debug_assert_eq!(v.len(), self.values.len() * run);
        if run == 0 {
            self.len += t;
            return;
        }
        let blocks = (self.len + t).div_ceil(BLOCK);
        for ((dst_k, dst_v), (src_k, src_v)) in self
            .keys
            .iter_mut()
            .zip(&mut self.values)
            .zip(k.chunks_exact(run).zip(v.chunks_exact(run)))
        {
            dst_k.resize(blocks * hd * BLOCK, 0.0);
            for (i, row) in src_k.chunks_exact(hd).enumerate() {
                let pos = self.len + i;
                let block = &mut dst_k[(pos / BLOCK) * hd * BLOCK..][..hd * BLOCK];
                for (c, &x) in row.iter().enumerate() {
                    block[c * BLOCK + pos % BLOCK] = x;
                }
            }
            dst_v.extend_from_slice(src_v);
        }
        self.len += t;
    }

    /// Keeps the first `len` positions (capacity is kept for the positions decoded next).
    pub(crate) fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let hd = self.head_dim;
        for (k, v) in self.keys.iter_mut().zip(&mut self.values) {
            k.truncate(len.div_ceil(BLOCK) * hd * BLOCK);
            v.truncate(len * hd);
        }
        self.len = len;
    }

    /// Keys and values as dense `[batch, kv_heads, len, head_dim]` arrays (multi-token chunks
    /// after the prompt, which take the generic path).
    pub(crate) fn dense(&self) -> (Vec<f32>, Vec<f32>) {
        let hd = self.head_dim;
        let mut keys = Vec::with_capacity(self.keys.len() * self.len * hd);
        for blocks in &self.keys {
            for pos in 0..self.len {
                let block = &blocks[(pos / BLOCK) * hd * BLOCK..][..hd * BLOCK];
                keys.extend((0..hd).map(|c| block[c * BLOCK + pos % BLOCK]));
            }
        }
        (keys, self.values.concat())
    }

    /// Attention of one new token per row: `q` `[batch, heads, head_dim]`, already scaled by
    /// `1/√head_dim`; `valid[row][pos]` is false for padding keys (`None`: no padding).
    /// Returns `[batch, heads, head_dim]`.
    pub(crate) fn attend(&self, q: &[f32], heads: usize, valid: Option<&[Vec<bool>]>) -> Vec<f32> {
        let hd = self.head_dim;
        let group = (heads / self.kv_heads) * hd;
        debug_assert_eq!(q.len(), self.keys.len() * group);
        let mut out = vec![0.0f32; q.len()];
        if self.len == 0 || hd == 0 {
            return out;
        }
        for (i, out) in out.chunks_mut(group).enumerate() {
            let row = i / self.kv_heads;
            let head = GroupData {
                q: &q[i * group..(i + 1) * group],
                keys: &self.keys[i],
                len: self.len,
                values: &self.values[i],
                valid: valid.map(|v| &v[row][..self.len]),
                head_dim: hd,
            };
            attend_group(&head, out);
        }
        out
    }
}

/// The queries of the heads sharing one kv head, with that kv head's cache.
struct GroupData<'a> {
    /// `[groups, head_dim]`, scaled.
    q: &'a [f32],
    /// `[len / BLOCK, head_dim, BLOCK]` (last block padded).
    keys: &'a [f32],
    /// `[len, head_dim]`.
    values: &'a [f32],
    /// `[len]`, false for padding.
    valid: Option<&'a [bool]>,
    len: usize,
    head_dim: usize,
}

/// Dispatches to the best compiled variant of [`group_kernel`] for this CPU.
fn attend_group(g: &GroupData<'_>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports the feature `group_kernel_avx2` is compiled for.
            unsafe { group_kernel_avx2(g, out) };
            return;
        }
    }
    group_kernel(g, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn group_kernel_avx2(g: &GroupData<'_>, out: &mut [f32]) {
    group_kernel(g, out);
}

/// Softmax attention of the group's queries over its keys and values, written into `out`
/// (`[groups, head_dim]`). Inlined into each target-feature variant.
#[inline(always)]
fn group_kernel(g: &GroupData<'_>, out: &mut [f32]) {
    let (hd, len) = (g.head_dim, g.len);
    let groups = g.q.len() / hd;
    // Scores `[groups, len]`, BLOCK keys at a time: lane `l` accumulates key `l` of the block,
    // in two partial sums (even and odd channels) to halve the dependency chains.
    let padded = len.div_ceil(BLOCK) * BLOCK;
    let mut scores = vec![0.0f32; groups * padded];
    for (b, block) in g.keys.chunks_exact(hd * BLOCK).enumerate() {
        for (j, q) in g.q.chunks_exact(hd).enumerate() {
            let (mut even, mut odd) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
            let mut pairs = block.chunks_exact(2 * BLOCK);
            let mut qs = q.chunks_exact(2);
            for (kk, qq) in (&mut pairs).zip(&mut qs) {
                let (q0, q1) = (qq[0], qq[1]);
                for l in 0..BLOCK {
                    even[l] += q0 * kk[l];
                    odd[l] += q1 * kk[BLOCK + l];
                }
            }
            if let (Some(&qc), Some(kk)) = (qs.remainder().first(), pairs.remainder().get(..BLOCK))
            {
                for l in 0..BLOCK {
                    even[l] += qc * kk[l];
                }
            }
            let dst = &mut scores[j * padded + b * BLOCK..][..BLOCK];
            for l in 0..BLOCK {
                dst[l] = even[l] + odd[l];
            }
        }
    }
    // From here on, row `j` is `scores[j * padded..][..len]` (the padding lanes are unused).
    let any_valid = match g.valid {
        Some(valid) => {
            for s in scores.chunks_exact_mut(padded) {
                for (x, &real) in s[..len].iter_mut().zip(valid) {
                    if !real {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            valid.contains(&true)
        }
        None => true,
    };
    // Unnormalised probabilities in place, and the reciprocal of each row's sum.
    let mut inv_sum = vec![0.0f32; groups];
    for (s, inv) in scores.chunks_exact_mut(padded).zip(&mut inv_sum) {
        let s = &mut s[..len];
        if any_valid {
            let max = lane_max(s);
            *inv = 1.0 / exp_in_place(s, max);
        } else {
            s.fill(1.0);
            *inv = 1.0 / len as f32;
        }
    }
    out.fill(0.0);
    for (i, value) in g.values.chunks_exact(hd).enumerate() {
        for (j, o) in out.chunks_exact_mut(hd).enumerate() {
            let p = scores[j * padded + i];
            for (x, &v) in o.iter_mut().zip(value) {
                *x += p * v;
            }
        }
    }
    for (o, &inv) in out.chunks_exact_mut(hd).zip(&inv_sum) {
        for x in o {
            *x *= inv;
        }
    }
}

/// Sum of the lanes by pairwise halving.
#[inline(always)]
fn tree_sum(acc: &[f32; LANES]) -> f32 {
    let mut v = *acc;
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            v[l] += v[l + w];
        }
        w /= 2;
    }
    v[0]
}

/// Maximum of a slice (`-∞` when empty or all `-∞`).
#[inline(always)]
fn lane_max(s: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = s.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a });
    for c in chunks {
        for l in 0..LANES {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    m.iter().fold(tail, |a, &x| if x > a { x } else { a })
}

/// Replaces `x` by `e^(x - max)` (masked `-∞` become 0) and returns the sum.
#[inline(always)]
fn exp_in_place(s: &mut [f32], max: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = s.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let e = exp_f32(c[l] - max);
            c[l] = e;
            acc[l] += e;
        }
    }
    let mut tail = 0.0;
    for x in chunks.into_remainder() {
        *x = exp_f32(*x - max);
        tail += *x;
    }
    tree_sum(&acc) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use svgen_core::compare::{assert_close, Tolerance};

    /// Straightforward f64 attention for one token per row (the definition).
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: (usize, usize, usize, usize, usize),
        valid: Option<&[Vec<bool>]>,
    ) -> Vec<f32> {
        let (batch, heads, kv_heads, len, hd) = shape;
        let groups = heads / kv_heads;
        let mut out = vec![0.0f32; batch * heads * hd];
        for b in 0..batch {
            for h in 0..heads {
                let kvh = h / groups;
                let base = (b * kv_heads + kvh) * len * hd;
                let qh = &q[(b * heads + h) * hd..(b * heads + h + 1) * hd];
                let real = |i: usize| valid.is_none_or(|v| v[b][i]);
                let any = (0..len).any(real);
                let scores: Vec<f64> = (0..len)
                    .map(|i| {
                        (0..hd)
                            .map(|c| qh[c] as f64 * k[base + i * hd + c] as f64)
                            .sum()
                    })
                    .collect();
                let max = (0..len)
                    .filter(|&i| real(i))
                    .map(|i| scores[i])
                    // A NaN score is skipped here but still reaches the output through exp.
                    .fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = (0..len)
                    .map(|i| match (any, real(i)) {
                        (false, _) => 1.0,
                        (true, true) => (scores[i] - max).exp(),
                        (true, false) => 0.0,
                    })
                    .collect();
                let sum: f64 = w.iter().sum();
                for c in 0..hd {
                    let o: f64 = (0..len).map(|i| w[i] * v[base + i * hd + c] as f64).sum();
                    out[(b * heads + h) * hd + c] = (o / sum) as f32;
                }
            }
        }
        out
    }

    fn random(n: usize, rng: &mut rand::rngs::StdRng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0..2.0)).collect()
    }

    #[test]
    fn matches_the_definition_with_gqa_padding_and_rewinds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // head_dim 20 exercises the odd-channel remainder, lengths that are not whole blocks
        // the padded lanes.
        for (batch, heads, kv_heads, hd, len) in [
            (2, 4, 2, 20, 37),
            (1, 8, 4, 64, 300),
            (2, 6, 2, 64, 300),
            (1, 2, 2, 16, 1),
        ] {
            let mut cache = HostKv::new(batch, kv_heads, hd);
            // Filled in three chunks (layout [batch, kv_heads, t, hd] per chunk).
            let mut k_all = vec![Vec::new(); batch * kv_heads];
            let mut v_all = vec![Vec::new(); batch * kv_heads];
            for t in [len / 2, len - len / 2 - len / 4, len / 4] {
                let k = random(batch * kv_heads * t * hd, &mut rng);
                let v = random(batch * kv_heads * t * hd, &mut rng);
                cache.append(&k, &v, t);
                for i in 0..batch * kv_heads {
                    k_all[i].extend_from_slice(&k[i * t * hd..(i + 1) * t * hd]);
                    v_all[i].extend_from_slice(&v[i * t * hd..(i + 1) * t * hd]);
                }
            }
            assert_eq!(cache.len(), len);
            let (k, v) = cache.dense();
            assert_eq!((k.clone(), v.clone()), (k_all.concat(), v_all.concat()));
            let q = random(batch * heads * hd, &mut rng);
            let shape = (batch, heads, kv_heads, len, hd);
            // Row 0 left-padded by 3 positions; the last row unpadded.
            let valid: Vec<Vec<bool>> = (0..batch)
                .map(|b| (0..len).map(|i| b + 1 == batch || i >= 3).collect())
                .collect();
            for mask in [None, Some(valid.as_slice())] {
                let got = cache.attend(&q, heads, mask);
                let want = reference(&q, &k, &v, shape, mask);
                assert_close(
                    &format!("{shape:?} mask {}", mask.is_some()),
                    &got,
                    &want,
                    Tolerance::absolute(1e-5),
                );
            }
            // Rewind: the same as a cache that never held the dropped positions.
            let keep = len / 3 + 1;
            let mut short = cache.clone();
            short.truncate(keep);
            assert_eq!(short.len(), keep);
            let (ks, vs) = short.dense();
            let cut = |all: &[Vec<f32>]| -> Vec<f32> {
                all.iter().flat_map(|x| x[..keep * hd].to_vec()).collect()
            };
            assert_eq!((ks.clone(), vs.clone()), (cut(&k_all), cut(&v_all)));
            let got = short.attend(&q, heads, None);
            let want = reference(&q, &ks, &vs, (batch, heads, kv_heads, keep, hd), None);
            assert_close(
                &format!("rewound {shape:?}"),
                &got,
                &want,
                Tolerance::absolute(1e-5),
            );
        }
    }

    #[test]
    fn all_padding_row_averages_values_and_empty_cache_gives_zeros() {
        let mut cache = HostKv::new(1, 1, 2);
        assert_eq!(cache.attend(&[1.0, 1.0], 1, None), vec![0.0, 0.0]);
        cache.append(&[1.0, 0.0, 0.0, 1.0], &[2.0, 0.0, 4.0, 8.0], 2);
        let none = vec![vec![false, false]];
        assert_eq!(cache.attend(&[5.0, -5.0], 1, Some(&none)), vec![3.0, 4.0]);
        // One real key: all the weight on it, whatever the scores.
        let one = vec![vec![false, true]];
        assert_eq!(cache.attend(&[50.0, -50.0], 1, Some(&one)), vec![4.0, 8.0]);
    }
}
