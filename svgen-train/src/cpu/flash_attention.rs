//! FlashAttention-2 forward and backward on host memory: the CPU implementation of
//! [`crate::nn::attention::flash_attention`] (used on `burn::backend::Flex` with `f32` tensors,
//! directly and as the inner backend of `Autodiff<Flex>`).
//!
//! **What it computes.** For query head `h` (kv head `h / groups`, as HF's `repeat_kv`), batch
//! row `b` and the key intervals of a resolved [`ResolvedMask`]:
//! `O = softmax(scale·Q·Kᵀ + mask)·V` and, per query row, `lse = log Σ exp(scale·q·kᵀ)` over its
//! visible keys (`+∞` for a row that sees no key: its output is `0`, and `exp(s − lse) = 0`
//! makes its gradients `0` too). The backward pass recomputes the probabilities tile by tile
//! from `lse` (FlashAttention-2, Dao 2023): `P = exp(S − lse)`, `dV = Pᵀ·dO`, `dP = dO·Vᵀ`,
//! `dS = P∘(dP − D)` with `D = rowsum(dO∘O)`, `dQ = scale·dS·K`, `dK = scale·dSᵀ·Q`. Nothing of
//! size `T × S` is ever stored: memory is `O((T + S)·d)` per head.
//!
//! **Work split.** The forward pass runs one rayon task per (batch row, head, block of
//! [`Q_BLOCK`] queries); inside, keys are visited in tiles of [`KV_TILE`] with an online softmax
//! (running maximum and sum, the accumulator rescaled when the maximum grows). Only the key
//! tiles inside the union of the block's key intervals are visited, so a causal mask halves the
//! work and packed samples cost the sum of their own squares. Masking is per element only on
//! tiles a row's interval does not cover (the diagonal, sample edges, padding holes).
//!
//! The backward pass runs one task per (batch row, kv head, split), a split owning every
//! `splits`-th key tile (interleaved, so causal work stays balanced); the task walks the query
//! rows of all `groups` heads that can see each tile, so the key and value tiles are read once
//! for the whole group and `dK`, `dV` come out summed over the group without atomics. `dQ` is
//! accumulated per split and the splits summed afterwards (one split when there are at least as
//! many (row, kv head) pairs as threads; memory then stays at one `dQ`).
//!
//! **Vectorisation.** Scores of one query against a tile are computed from `Kᵀ` (`[d, S]`),
//! one broadcast query channel times a row of `Kᵀ` per step, so the 64 scores stay in registers;
//! products with values and keys go over channel lanes with several rows per register block.
//! `exp` is [`exp_lane`], the vectorising polynomial shared with the other CPU kernels. Every
//! loop is compiled twice on x86-64: for AVX2+FMA (picked at run time when the CPU has it) and
//! for the baseline target.

use rayon::prelude::*;

use crate::cpu::tile::{lane_max, lane_sum, tile_scores, LANES};
use crate::cpu::{exp_lane, madd};
use crate::nn::attention::mask::{QueryRange, ResolvedMask};

/// Queries per block (rows of a score tile).
pub(crate) const Q_BLOCK: usize = 32;
pub(crate) use crate::cpu::tile::KV_TILE;
/// Rows whose accumulators share one pass over a tile in the row × tile products.
const ROW_GROUP: usize = 8;

/// Shapes of one attention call: `q` `[batch, heads, seq_q, head_dim]`, `k` and `v`
/// `[batch, kv_heads, seq_kv, head_dim]`, row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlashShape {
    /// Batch size.
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Queries per row.
    pub seq_q: usize,
    /// Keys per row.
    pub seq_kv: usize,
    /// Channels per head.
    pub head_dim: usize,
}

impl FlashShape {
    fn groups(&self) -> usize {
        self.heads / self.kv_heads
    }
    fn t_pad(&self) -> usize {
        self.seq_kv.div_ceil(KV_TILE) * KV_TILE
    }
    fn d_pad(&self) -> usize {
        self.head_dim.div_ceil(LANES) * LANES
    }
    fn check(&self, mask: &ResolvedMask, q: usize, kv: usize) {
        assert!(
            self.kv_heads > 0 && self.heads.is_multiple_of(self.kv_heads) && self.head_dim > 0,
            "flash attention: bad head counts"
        );
        assert_eq!(
            (mask.batch, mask.seq_q, mask.seq_kv),
            (self.batch, self.seq_q, self.seq_kv),
            "flash attention: mask resolved for other shapes"
        );
        assert_eq!(
            q,
            self.batch * self.heads * self.seq_q * self.head_dim,
            "flash attention: query length"
        );
        assert_eq!(
            kv,
            self.batch * self.kv_heads * self.seq_kv * self.head_dim,
            "flash attention: key/value length"
        );
    }
}

/// Forward pass: returns the output `[batch, heads, seq_q, head_dim]` and the per-row
/// logsumexp of the scaled scores `[batch, heads, seq_q]` (`+∞` for rows that see no key).
///
/// # Panics
/// If a slice length does not match `shape` or `mask` was resolved for other shapes (callers
/// pass the data of tensors whose dims they just checked).
pub(crate) fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: FlashShape,
    mask: &ResolvedMask,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    shape.check(mask, q.len(), k.len());
    assert_eq!(k.len(), v.len(), "flash attention: value length");
    let FlashShape {
        batch,
        heads,
        kv_heads,
        seq_q,
        seq_kv,
        head_dim: d,
    } = shape;
    let (t_pad, d_pad, groups) = (shape.t_pad(), shape.d_pad(), shape.groups());
    let kt = transposed(k, shape);
    let vr = padded_rows(v, shape);
    let segs = padded_segments(mask, shape);
    let blocks = seq_q.div_ceil(Q_BLOCK);
    let fma = has_fma();
    let results: Vec<(Vec<f32>, [f32; Q_BLOCK])> = (0..batch * heads * blocks)
        .into_par_iter()
        .map(|task| {
            let (bh, blk) = (task / blocks, task % blocks);
            let (b, h) = (bh / heads, bh % heads);
            let kvh = b * kv_heads + h / groups;
            let q0 = blk * Q_BLOCK;
            let rows = Q_BLOCK.min(seq_q - q0);
            let mut qs = vec![0.0f32; Q_BLOCK * d];
            for r in 0..rows {
                let src = (bh * seq_q + q0 + r) * d;
                for (x, &y) in qs[r * d..(r + 1) * d].iter_mut().zip(&q[src..src + d]) {
                    *x = y * scale;
                }
            }
            let mut ranges = [QueryRange::EMPTY; Q_BLOCK];
            for (r, range) in ranges.iter_mut().enumerate().take(rows) {
                *range = mask.row(b, q0 + r);
            }
            let head = Head {
                kt: &kt[kvh * d * t_pad..(kvh + 1) * d * t_pad],
                rows: &vr[kvh * t_pad * d_pad..(kvh + 1) * t_pad * d_pad],
                segs: &segs[b * t_pad..(b + 1) * t_pad],
                seq_kv,
                t_pad,
                d,
                d_pad,
            };
            let mut out = vec![0.0f32; Q_BLOCK * d_pad];
            let lse = forward_block(fma, &qs, &ranges, &head, &mut out);
            (out, lse)
        })
        .collect();

    let mut o = vec![0.0f32; batch * heads * seq_q * d];
    let mut lse = vec![0.0f32; batch * heads * seq_q];
    for (task, (out, l)) in results.into_iter().enumerate() {
        let (bh, blk) = (task / blocks, task % blocks);
        let q0 = blk * Q_BLOCK;
        let rows = Q_BLOCK.min(seq_q - q0);
        for r in 0..rows {
            let dst = (bh * seq_q + q0 + r) * d;
            o[dst..dst + d].copy_from_slice(&out[r * d_pad..r * d_pad + d]);
            lse[bh * seq_q + q0 + r] = l[r];
        }
    }
    (o, lse)
}

/// Backward pass: from the inputs, the forward output `o`, its `lse` and the output gradient
/// `d_o`, returns `(dq, dk, dv)` in the layouts of `q`, `k` and `v`.
///
/// # Panics
/// As [`forward`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    lse: &[f32],
    d_o: &[f32],
    shape: FlashShape,
    mask: &ResolvedMask,
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    shape.check(mask, q.len(), k.len());
    assert_eq!(k.len(), v.len(), "flash attention: value length");
    assert_eq!(o.len(), q.len(), "flash attention: output length");
    assert_eq!(
        d_o.len(),
        q.len(),
        "flash attention: output gradient length"
    );
    let FlashShape {
        batch,
        heads,
        kv_heads,
        seq_q,
        seq_kv,
        head_dim: d,
    } = shape;
    assert_eq!(
        lse.len(),
        batch * heads * seq_q,
        "flash attention: lse length"
    );
    let (t_pad, d_pad, groups) = (shape.t_pad(), shape.d_pad(), shape.groups());
    let tiles = t_pad / KV_TILE;
    let kt = transposed(k, shape);
    let vt = transposed(v, shape);
    let kr = padded_rows(k, shape);
    let segs = padded_segments(mask, shape);
    // Per query row: pre-scaled query and output gradient on padded rows, and D = rowsum(dO∘O).
    let q_shape = FlashShape {
        kv_heads: heads,
        seq_kv: seq_q,
        ..shape
    };
    let mut qs = padded_rows(q, q_shape);
    let dor = padded_rows(d_o, q_shape);
    let q_rows = q_shape.t_pad();
    qs.par_iter_mut().for_each(|x| *x *= scale);
    let delta: Vec<f32> = (0..batch * heads * seq_q)
        .into_par_iter()
        .map(|row| {
            let (a, b) = (&o[row * d..(row + 1) * d], &d_o[row * d..(row + 1) * d]);
            a.iter().zip(b).map(|(x, y)| x * y).sum()
        })
        .collect();
    // Per (batch row, key tile): the queries whose interval meets the tile.
    let spans: Vec<(usize, usize)> = (0..batch)
        .into_par_iter()
        .flat_map_iter(|b| {
            let mut span = vec![(usize::MAX, 0usize); tiles];
            for i in 0..seq_q {
                let r = mask.row(b, i);
                if r.is_empty() {
                    continue;
                }
                for s in &mut span[r.lo / KV_TILE..r.hi.div_ceil(KV_TILE)] {
                    s.0 = s.0.min(i);
                    s.1 = s.1.max(i + 1);
                }
            }
            span
        })
        .collect();

    let units = batch * kv_heads;
    let threads = rayon::current_num_threads();
    let splits = if units >= threads {
        1
    } else {
        (2 * threads).div_ceil(units).min(tiles).max(1)
    };
    let fma = has_fma();
    let results: Vec<SplitGrads> = (0..units * splits)
        .into_par_iter()
        .map(|task| {
            let (unit, split) = (task / splits, task % splits);
            let (b, kvh) = (unit / kv_heads, unit % kv_heads);
            let keys = BackwardKeys {
                kt: &kt[unit * d * t_pad..(unit + 1) * d * t_pad],
                vt: &vt[unit * d * t_pad..(unit + 1) * d * t_pad],
                kr: &kr[unit * t_pad * d_pad..(unit + 1) * t_pad * d_pad],
                segs: &segs[b * t_pad..(b + 1) * t_pad],
                spans: &spans[b * tiles..(b + 1) * tiles],
                seq_kv,
                t_pad,
                d,
                d_pad,
            };
            let first_head = b * heads + kvh * groups;
            let group = GroupRows {
                qs: &qs[first_head * q_rows * d_pad..(first_head + groups) * q_rows * d_pad],
                dor: &dor[first_head * q_rows * d_pad..(first_head + groups) * q_rows * d_pad],
                lse: &lse[first_head * seq_q..(first_head + groups) * seq_q],
                delta: &delta[first_head * seq_q..(first_head + groups) * seq_q],
                ranges: &mask.rows[b * seq_q..(b + 1) * seq_q],
                groups,
                seq_q,
                q_rows,
            };
            backward_split(fma, &keys, &group, split, splits)
        })
        .collect();

    let mut dq = vec![0.0f32; q.len()];
    let mut dk = vec![0.0f32; k.len()];
    let mut dv = vec![0.0f32; v.len()];
    for (task, grads) in results.into_iter().enumerate() {
        let unit = task / splits;
        let (b, kvh) = (unit / kv_heads, unit % kv_heads);
        for (tile, gk, gv) in grads.tiles {
            let t0 = tile * KV_TILE;
            for jj in 0..KV_TILE.min(seq_kv - t0) {
                let dst = (unit * seq_kv + t0 + jj) * d;
                dk[dst..dst + d].copy_from_slice(&gk[jj * d_pad..jj * d_pad + d]);
                dv[dst..dst + d].copy_from_slice(&gv[jj * d_pad..jj * d_pad + d]);
            }
        }
        for g in 0..groups {
            let h = b * heads + kvh * groups + g;
            for i in 0..seq_q {
                let src = (g * q_rows + i) * d_pad;
                let dst = (h * seq_q + i) * d;
                for (x, &y) in dq[dst..dst + d].iter_mut().zip(&grads.dq[src..src + d]) {
                    *x += y * scale;
                }
            }
        }
    }
    (dq, dk, dv)
}

/// `[B·H_kv, d, t_pad]`: every head's keys (or values) transposed, zero-padded to whole tiles.
fn transposed(x: &[f32], shape: FlashShape) -> Vec<f32> {
    let (d, s, t_pad) = (shape.head_dim, shape.seq_kv, shape.t_pad());
    let mut out = vec![0.0f32; shape.batch * shape.kv_heads * d * t_pad];
    out.par_chunks_mut(d * t_pad)
        .zip(x.par_chunks(s * d))
        .for_each(|(dst, src)| {
            for (j, row) in src.chunks_exact(d).enumerate() {
                for (c, &val) in row.iter().enumerate() {
                    dst[c * t_pad + j] = val;
                }
            }
        });
    out
}

/// `[B·H_kv, t_pad, d_pad]`: every head's rows with channels padded to whole lanes and rows to
/// whole tiles (zeros).
fn padded_rows(x: &[f32], shape: FlashShape) -> Vec<f32> {
    let (d, s, t_pad, d_pad) = (shape.head_dim, shape.seq_kv, shape.t_pad(), shape.d_pad());
    let mut out = vec![0.0f32; shape.batch * shape.kv_heads * t_pad * d_pad];
    out.par_chunks_mut(t_pad * d_pad)
        .zip(x.par_chunks(s * d))
        .for_each(|(dst, src)| {
            for (j, row) in src.chunks_exact(d).enumerate() {
                dst[j * d_pad..j * d_pad + d].copy_from_slice(row);
            }
        });
    out
}

/// `[B, t_pad]`: each key's sample id, `-2` on the padding beyond `seq_kv` (matches nothing).
fn padded_segments(mask: &ResolvedMask, shape: FlashShape) -> Vec<i32> {
    let t_pad = shape.t_pad();
    let mut out = vec![-2i32; shape.batch * t_pad];
    for b in 0..shape.batch {
        out[b * t_pad..b * t_pad + shape.seq_kv].copy_from_slice(mask.key_segments(b));
    }
    out
}

/// Whether the AVX2+FMA variants can run on this CPU.
fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One kv head's keys (`kt`, `[d, t_pad]`) and values (`rows`, `[t_pad, d_pad]`), with the
/// batch row's key sample ids.
struct Head<'a> {
    kt: &'a [f32],
    rows: &'a [f32],
    segs: &'a [i32],
    seq_kv: usize,
    t_pad: usize,
    d: usize,
    d_pad: usize,
}

/// Runs [`forward_kernel`] in the best variant for this CPU; returns the block's `lse`.
fn forward_block(
    fma: bool,
    q: &[f32],
    ranges: &[QueryRange; Q_BLOCK],
    head: &Head<'_>,
    out: &mut [f32],
) -> [f32; Q_BLOCK] {
    #[cfg(target_arch = "x86_64")]
    if fma {
        // SAFETY: `fma` is true only when the CPU has AVX2 and FMA (see `has_fma`).
        return unsafe { forward_kernel_avx2(q, ranges, head, out) };
    }
    let _ = fma;
    forward_kernel::<false>(q, ranges, head, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_kernel_avx2(
    q: &[f32],
    ranges: &[QueryRange; Q_BLOCK],
    head: &Head<'_>,
    out: &mut [f32],
) -> [f32; Q_BLOCK] {
    forward_kernel::<true>(q, ranges, head, out)
}

/// Online-softmax attention of [`Q_BLOCK`] pre-scaled queries (`q` `[Q_BLOCK, d]`, rows past
/// the end empty) over the key tiles their intervals meet; writes `[Q_BLOCK, d_pad]` into
/// `out` and returns each row's logsumexp.
#[inline(always)]
fn forward_kernel<const FMA: bool>(
    q: &[f32],
    ranges: &[QueryRange; Q_BLOCK],
    head: &Head<'_>,
    out: &mut [f32],
) -> [f32; Q_BLOCK] {
    let Head {
        kt,
        rows,
        segs,
        seq_kv,
        t_pad,
        d,
        d_pad,
    } = *head;
    let mut scores = [[0.0f32; KV_TILE]; Q_BLOCK];
    let mut row_max = [f32::NEG_INFINITY; Q_BLOCK];
    let mut row_sum = [0.0f32; Q_BLOCK];
    out.fill(0.0);
    let (lo, hi) = ranges
        .iter()
        .filter(|r| !r.is_empty())
        .fold((usize::MAX, 0), |(lo, hi), r| (lo.min(r.lo), hi.max(r.hi)));
    let start = if lo < hi { lo / KV_TILE * KV_TILE } else { hi };
    for t0 in (start..hi).step_by(KV_TILE) {
        let keys = t0..(t0 + KV_TILE).min(seq_kv);
        let mut live = [false; Q_BLOCK];
        for r in 0..Q_BLOCK {
            let range = ranges[r];
            if range.misses(&keys) {
                continue;
            }
            let s = &mut scores[r];
            *s = tile_scores::<FMA>(&q[r * d..(r + 1) * d], kt, t_pad, t0);
            if !(range.covers(&keys) && keys.len() == KV_TILE) {
                mask_tile(s, range, t0, &segs[t0..t0 + KV_TILE]);
            }
            let tile_max = lane_max(s);
            if tile_max == f32::NEG_INFINITY {
                continue;
            }
            let new_max = row_max[r].max(tile_max);
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
            live[r] = true;
        }
        for (s, &l) in scores.iter_mut().zip(&live) {
            if !l {
                *s = [0.0; KV_TILE];
            }
        }
        rows_times_tile::<FMA>(&scores, &rows[t0 * d_pad..], d_pad, out);
    }
    let mut lse = [f32::INFINITY; Q_BLOCK];
    for r in 0..Q_BLOCK {
        let sum = row_sum[r];
        if sum > 0.0 {
            let inv = 1.0 / sum;
            for x in &mut out[r * d_pad..(r + 1) * d_pad] {
                *x *= inv;
            }
            lse[r] = row_max[r] + sum.ln();
        }
    }
    lse
}

/// Sets the scores of keys `t0..t0 + KV_TILE` that `range` does not allow to `-∞` (`segs`:
/// the tile's key sample ids, `-2` past the last key).
#[inline(always)]
fn mask_tile(s: &mut [f32; KV_TILE], range: QueryRange, t0: usize, segs: &[i32]) {
    let QueryRange { lo, hi, seg, exact } = range;
    for (jj, (a, &ks)) in s.iter_mut().zip(segs).enumerate() {
        let j = t0 + jj;
        let ok = j >= lo && j < hi && (exact || ks == seg);
        if !ok {
            *a = f32::NEG_INFINITY;
        }
    }
}

/// `out[r] += Σ_j coef[r][j] · rows[j]` for the [`Q_BLOCK`] rows of `out` (`[Q_BLOCK, d_pad]`)
/// and the [`KV_TILE`] rows of `rows` (`[KV_TILE, d_pad]`, zero past the last key):
/// [`ROW_GROUP`] output rows × one lane-wide channel chunk held in registers.
#[inline(always)]
fn rows_times_tile<const FMA: bool>(
    coef: &[[f32; KV_TILE]; Q_BLOCK],
    rows: &[f32],
    d_pad: usize,
    out: &mut [f32],
) {
    let tile = &rows[..KV_TILE * d_pad];
    for rg in (0..Q_BLOCK).step_by(ROW_GROUP) {
        if coef[rg..rg + ROW_GROUP]
            .iter()
            .all(|c| c.iter().all(|&x| x == 0.0))
        {
            continue;
        }
        for c0 in (0..d_pad).step_by(LANES) {
            let mut acc = [[0.0f32; LANES]; ROW_GROUP];
            for (g, a) in acc.iter_mut().enumerate() {
                let o = (rg + g) * d_pad + c0;
                a.copy_from_slice(&out[o..o + LANES]);
            }
            for (j, row) in tile.chunks_exact(d_pad).enumerate() {
                let vv: &[f32; LANES] = row[c0..c0 + LANES].try_into().expect("whole lanes");
                for (g, a) in acc.iter_mut().enumerate() {
                    let p = coef[rg + g][j];
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

/// `out[j] += Σ_r coef[r][j] · rows[r]` for the [`KV_TILE`] rows of `out` (`[KV_TILE, d_pad]`)
/// and the first `n` rows of `rows` (`[n, d_pad]`): [`ROW_GROUP`] output rows × one lane-wide
/// channel chunk held in registers.
#[inline(always)]
fn tile_t_times_rows<const FMA: bool>(
    coef: &[[f32; KV_TILE]; Q_BLOCK],
    rows: &[f32],
    n: usize,
    d_pad: usize,
    out: &mut [f32],
) {
    let rows = &rows[..n * d_pad];
    for jg in (0..KV_TILE).step_by(ROW_GROUP) {
        if coef[..n]
            .iter()
            .all(|c| c[jg..jg + ROW_GROUP].iter().all(|&x| x == 0.0))
        {
            continue;
        }
        for c0 in (0..d_pad).step_by(LANES) {
            let mut acc = [[0.0f32; LANES]; ROW_GROUP];
            for (g, a) in acc.iter_mut().enumerate() {
                let o = (jg + g) * d_pad + c0;
                a.copy_from_slice(&out[o..o + LANES]);
            }
            for (r, row) in rows.chunks_exact(d_pad).enumerate() {
                let xx: &[f32; LANES] = row[c0..c0 + LANES].try_into().expect("whole lanes");
                let cr = &coef[r][jg..jg + ROW_GROUP];
                for (a, &p) in acc.iter_mut().zip(cr) {
                    for (x, &y) in a.iter_mut().zip(xx) {
                        *x = madd::<FMA>(p, y, *x);
                    }
                }
            }
            for (g, a) in acc.iter().enumerate() {
                let o = (jg + g) * d_pad + c0;
                out[o..o + LANES].copy_from_slice(a);
            }
        }
    }
}

/// One (batch row, kv head)'s keys and values for the backward pass.
struct BackwardKeys<'a> {
    /// `Kᵀ` `[d, t_pad]`.
    kt: &'a [f32],
    /// `Vᵀ` `[d, t_pad]`.
    vt: &'a [f32],
    /// `K` `[t_pad, d_pad]`.
    kr: &'a [f32],
    /// Key sample ids `[t_pad]`.
    segs: &'a [i32],
    /// Per key tile, the queries `lo..hi` whose interval meets it.
    spans: &'a [(usize, usize)],
    seq_kv: usize,
    t_pad: usize,
    d: usize,
    d_pad: usize,
}

/// The query-side rows of the `groups` heads sharing one kv head.
struct GroupRows<'a> {
    /// Pre-scaled queries `[groups, q_rows, d_pad]`.
    qs: &'a [f32],
    /// Output gradients `[groups, q_rows, d_pad]`.
    dor: &'a [f32],
    /// `[groups, seq_q]`.
    lse: &'a [f32],
    /// `rowsum(dO∘O)`, `[groups, seq_q]`.
    delta: &'a [f32],
    /// The batch row's query intervals `[seq_q]`.
    ranges: &'a [QueryRange],
    groups: usize,
    seq_q: usize,
    /// Padded query rows per head (a multiple of [`KV_TILE`], so of [`Q_BLOCK`]).
    q_rows: usize,
}

/// What one backward task produces: `(tile, dK, dV)` for each key tile it owns (`[KV_TILE,
/// d_pad]` each) and its share of `dQ` for the group (`[groups, q_rows, d_pad]`, unscaled).
struct SplitGrads {
    tiles: Vec<(usize, Vec<f32>, Vec<f32>)>,
    dq: Vec<f32>,
}

/// Runs [`backward_kernel`] in the best variant for this CPU.
fn backward_split(
    fma: bool,
    keys: &BackwardKeys<'_>,
    group: &GroupRows<'_>,
    split: usize,
    splits: usize,
) -> SplitGrads {
    #[cfg(target_arch = "x86_64")]
    if fma {
        // SAFETY: `fma` is true only when the CPU has AVX2 and FMA (see `has_fma`).
        return unsafe { backward_kernel_avx2(keys, group, split, splits) };
    }
    let _ = fma;
    backward_kernel::<false>(keys, group, split, splits)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn backward_kernel_avx2(
    keys: &BackwardKeys<'_>,
    group: &GroupRows<'_>,
    split: usize,
    splits: usize,
) -> SplitGrads {
    backward_kernel::<true>(keys, group, split, splits)
}

/// The backward pass over key tiles `split, split + splits, …` of one (batch row, kv head).
#[inline(always)]
fn backward_kernel<const FMA: bool>(
    keys: &BackwardKeys<'_>,
    group: &GroupRows<'_>,
    split: usize,
    splits: usize,
) -> SplitGrads {
    let BackwardKeys {
        kt,
        vt,
        kr,
        segs,
        spans,
        seq_kv,
        t_pad,
        d,
        d_pad,
    } = *keys;
    let GroupRows {
        qs,
        dor,
        lse,
        delta,
        ranges,
        groups,
        seq_q,
        q_rows,
    } = *group;
    let mut dq = vec![0.0f32; groups * q_rows * d_pad];
    let mut tiles = Vec::new();
    let mut p = [[0.0f32; KV_TILE]; Q_BLOCK];
    let mut ds = [[0.0f32; KV_TILE]; Q_BLOCK];
    for tile in (split..spans.len()).step_by(splits) {
        let t0 = tile * KV_TILE;
        let key_range = t0..(t0 + KV_TILE).min(seq_kv);
        let mut gk = vec![0.0f32; KV_TILE * d_pad];
        let mut gv = vec![0.0f32; KV_TILE * d_pad];
        let (qlo, qhi) = spans[tile];
        for g in 0..groups {
            let row_at = |i: usize| (g * q_rows + i) * d_pad;
            // blocks aligned to Q_BLOCK, so a block never runs past the padded rows
            for r0 in (qlo / Q_BLOCK * Q_BLOCK..qhi).step_by(Q_BLOCK) {
                let n = Q_BLOCK.min(qhi - r0);
                let mut any = false;
                for r in 0..Q_BLOCK {
                    let i = r0 + r;
                    let range = if r < n { ranges[i] } else { QueryRange::EMPTY };
                    if range.misses(&key_range) {
                        p[r] = [0.0; KV_TILE];
                        ds[r] = [0.0; KV_TILE];
                        continue;
                    }
                    any = true;
                    let qo = row_at(i);
                    let mut s = tile_scores::<FMA>(&qs[qo..qo + d], kt, t_pad, t0);
                    if !(range.covers(&key_range) && key_range.len() == KV_TILE) {
                        mask_tile(&mut s, range, t0, &segs[t0..t0 + KV_TILE]);
                    }
                    let l = lse[g * seq_q + i];
                    for a in s.iter_mut() {
                        *a = exp_lane::<FMA>(*a - l);
                    }
                    let dp = tile_scores::<FMA>(&dor[qo..qo + d], vt, t_pad, t0);
                    let dd = delta[g * seq_q + i];
                    let mut dsr = [0.0f32; KV_TILE];
                    for ((x, &pp), &dpp) in dsr.iter_mut().zip(&s).zip(&dp) {
                        *x = pp * (dpp - dd);
                    }
                    p[r] = s;
                    ds[r] = dsr;
                }
                if !any {
                    continue;
                }
                let base = row_at(r0);
                tile_t_times_rows::<FMA>(&p, &dor[base..], n, d_pad, &mut gv);
                tile_t_times_rows::<FMA>(&ds, &qs[base..], n, d_pad, &mut gk);
                rows_times_tile::<FMA>(&ds, &kr[t0 * d_pad..], d_pad, &mut dq[base..]);
            }
        }
        tiles.push((tile, gk, gv));
    }
    SplitGrads { tiles, dq }
}
