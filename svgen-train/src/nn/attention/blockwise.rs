//! FlashAttention-2 in Burn tensor ops, for any backend: the implementation behind
//! [`super::flash_attention`] on CUDA (and every backend without a kernel of its own).
//!
//! The queries of the `groups` heads sharing a kv head are stacked along the row axis
//! (`[B, kv_heads, groups·rows, d]`), so every product is a batched matmul against the kv head's
//! keys as they lie in memory and K/V are never repeated. The forward pass visits query blocks ×
//! key blocks with an online softmax (running maximum `m`, sum `l` and accumulator, all `f32`);
//! the backward pass recomputes `P = exp(S − lse)` per tile and accumulates `dQ`, `dK`, `dV`
//! in `f32`. Tiles the mask hides for every batch row are skipped, tiles it shows entirely are
//! not masked, and the others get a boolean mask built on the host (`[B, 1, 1, rows, keys]`,
//! broadcast over heads). Live memory is `O((T + S)·d)` plus one tile of
//! `B·heads·query_block·key_block` scores.
//!
//! Products run in the input dtype (`bf16`/`f16` inputs give `bf16`/`f16` matmuls, like HF's
//! eager attention) and are cast to `f32` before the softmax; probabilities and `dS` are cast
//! back to the input dtype for their products.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bool, DType, Tensor, TensorData};

use super::mask::TileMask;
use super::{prim, tensor, AttentionPlan};

/// `t` in `f32` (no copy when it already is).
fn f32_of<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(DType::F32)
    }
}

/// `t` in `dtype` (no copy when it already is).
fn to_dtype<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(dtype)
    }
}

/// Block boundaries `start..start + len` covering `range` in steps of `block`.
fn blocks(range: std::ops::Range<usize>, block: usize) -> Vec<(usize, usize)> {
    (range.start..range.end)
        .step_by(block)
        .map(|s| (s, block.min(range.end - s)))
        .collect()
}

/// The key span any query of `queries` may see over the whole batch (empty when none).
fn batch_key_span(plan: &AttentionPlan, queries: std::ops::Range<usize>) -> std::ops::Range<usize> {
    let mask = plan.mask();
    let (mut lo, mut hi) = (usize::MAX, 0);
    for b in 0..mask.batch {
        let s = mask.key_span(b, queries.clone());
        if !s.is_empty() {
            lo = lo.min(s.start);
            hi = hi.max(s.end);
        }
    }
    if lo >= hi {
        0..0
    } else {
        lo..hi
    }
}

/// Hides the masked pairs of a tile: scores `[B, kv_heads, groups·n, m]` for queries
/// `q0..q0 + n` and keys `k0..k0 + m`.
fn mask_scores<B: Backend>(
    scores: Tensor<B, 4>,
    plan: &AttentionPlan,
    (q0, n): (usize, usize),
    (k0, m): (usize, usize),
) -> Tensor<B, 4> {
    let mask = plan.mask();
    let d = plan.dims();
    let groups = d.heads / d.kv_heads;
    let mut hidden = Vec::with_capacity(d.batch * n * m);
    for b in 0..d.batch {
        for i in q0..q0 + n {
            for j in k0..k0 + m {
                hidden.push(!mask.allows(b, i, j));
            }
        }
    }
    let device = scores.device();
    let hidden =
        Tensor::<B, 5, Bool>::from_data(TensorData::new(hidden, [d.batch, 1, 1, n, m]), &device)
            .expand([d.batch, d.kv_heads, groups, n, m]);
    scores
        .reshape([d.batch, d.kv_heads, groups, n, m])
        .mask_fill(hidden, f32::NEG_INFINITY)
        .reshape([d.batch, d.kv_heads, groups * n, m])
}

/// Scaled `f32` scores of a query block against a key block, masked where the tile needs it.
fn tile_scores<B: Backend>(
    qi: Tensor<B, 4>,
    kj: Tensor<B, 4>,
    plan: &AttentionPlan,
    kind: TileMask,
    q: (usize, usize),
    k: (usize, usize),
) -> Tensor<B, 4> {
    let s = f32_of(qi.matmul(kj.swap_dims(2, 3))).mul_scalar(plan.scale());
    if kind == TileMask::Partial {
        mask_scores(s, plan, q, k)
    } else {
        s
    }
}

/// Forward pass: output `[B, heads, T, d]` in the dtype of `q`, logsumexp `[B, heads, T]` in
/// `f32` (`+∞` for a query that sees no key).
pub fn forward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    plan: &AttentionPlan,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let d = plan.dims();
    let (b, hkv, dd) = (d.batch, d.kv_heads, d.head_dim);
    let groups = d.heads / hkv;
    let (q, k, v) = (tensor::<B, 4>(q), tensor::<B, 4>(k), tensor::<B, 4>(v));
    let dtype = q.dtype();
    let device = q.device();
    let qg = q.reshape([b, hkv, groups, d.seq_q, dd]);
    let mut outs = Vec::new();
    let mut lses = Vec::new();
    for (q0, n) in blocks(0..d.seq_q, plan.options().query_block) {
        let rows = groups * n;
        let span = batch_key_span(plan, q0..q0 + n);
        let mut state: Option<(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)> = None;
        let mut qi: Option<Tensor<B, 4>> = None;
        for (k0, m) in blocks(span, plan.options().key_block) {
            let kind = plan.mask().batch_tile(q0..q0 + n, &(k0..k0 + m));
            if kind == TileMask::Skip {
                continue;
            }
            let qi = qi
                .get_or_insert_with(|| qg.clone().narrow(3, q0, n).reshape([b, hkv, rows, dd]))
                .clone();
            let kj = k.clone().narrow(2, k0, m);
            let vj = v.clone().narrow(2, k0, m);
            let s = tile_scores(qi, kj, plan, kind, (q0, n), (k0, m));
            let tile_max = s.clone().max_dim(3);
            let (m_old, l_old, acc_old) = match state.take() {
                Some(st) => st,
                None => (
                    Tensor::full([b, hkv, rows, 1], f32::NEG_INFINITY, (&device, DType::F32)),
                    Tensor::zeros([b, hkv, rows, 1], (&device, DType::F32)),
                    Tensor::zeros([b, hkv, rows, dd], (&device, DType::F32)),
                ),
            };
            let m_new = m_old.clone().max_pair(tile_max);
            // rows with nothing visible yet keep m = -inf; subtract 0 there instead (exp → 0)
            let m_safe = m_new
                .clone()
                .mask_fill(m_new.clone().equal_elem(f32::NEG_INFINITY), 0.0);
            let p = (s - m_safe.clone()).exp();
            let correction = (m_old - m_safe).exp();
            let l = l_old * correction.clone() + p.clone().sum_dim(3);
            let pv = f32_of(to_dtype(p, dtype).matmul(vj));
            let acc = acc_old * correction + pv;
            state = Some((m_new, l, acc));
        }
        match state {
            Some((m, l, acc)) => {
                let empty = l.clone().equal_elem(0.0);
                let l_safe = l.mask_fill(empty.clone(), 1.0);
                let m_safe = m.clone().mask_fill(m.equal_elem(f32::NEG_INFINITY), 0.0);
                let out = to_dtype(acc / l_safe.clone(), dtype);
                let lse = (m_safe + l_safe.log()).mask_fill(empty, f32::INFINITY);
                outs.push(out.reshape([b, hkv, groups, n, dd]));
                lses.push(lse.reshape([b, hkv, groups, n]));
            }
            None => {
                outs.push(Tensor::zeros([b, hkv, groups, n, dd], (&device, dtype)));
                lses.push(Tensor::full(
                    [b, hkv, groups, n],
                    f32::INFINITY,
                    (&device, DType::F32),
                ));
            }
        }
    }
    let out = cat_or_single(outs, 3).reshape([b, d.heads, d.seq_q, dd]);
    let lse = cat_or_single(lses, 3).reshape([b, d.heads, d.seq_q]);
    (prim(out), prim(lse))
}

/// Backward pass: `(dq, dk, dv)` in the dtypes of `q`, `k`, `v`.
pub fn backward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    grad_out: FloatTensor<B>,
    plan: &AttentionPlan,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let d = plan.dims();
    let (b, hkv, dd) = (d.batch, d.kv_heads, d.head_dim);
    let groups = d.heads / hkv;
    let (q, k, v) = (tensor::<B, 4>(q), tensor::<B, 4>(k), tensor::<B, 4>(v));
    let (out, grad_out) = (tensor::<B, 4>(out), tensor::<B, 4>(grad_out));
    let lse = f32_of(tensor::<B, 3>(lse));
    let (dtype, k_dtype, v_dtype) = (q.dtype(), k.dtype(), v.dtype());
    let device = q.device();
    let grad_out = to_dtype(grad_out, dtype);
    // D = rowsum(dO∘O), f32
    let delta = (f32_of(grad_out.clone()) * f32_of(out))
        .sum_dim(3)
        .reshape([b, hkv, groups, d.seq_q]);
    let lse = lse.reshape([b, hkv, groups, d.seq_q]);
    let qg = q.reshape([b, hkv, groups, d.seq_q, dd]);
    let dog = grad_out.reshape([b, hkv, groups, d.seq_q, dd]);
    let q_blocks = blocks(0..d.seq_q, plan.options().query_block);
    // Per query block: stacked queries, output gradients, lse and D, cut once.
    let rows_of = |x: &Tensor<B, 5>, q0: usize, n: usize| {
        x.clone().narrow(3, q0, n).reshape([b, hkv, groups * n, dd])
    };
    let stats_of = |x: &Tensor<B, 4>, q0: usize, n: usize| {
        x.clone().narrow(3, q0, n).reshape([b, hkv, groups * n, 1])
    };
    let cut: Vec<_> = q_blocks
        .iter()
        .map(|&(q0, n)| {
            (
                rows_of(&qg, q0, n),
                rows_of(&dog, q0, n),
                stats_of(&lse, q0, n),
                stats_of(&delta, q0, n),
            )
        })
        .collect();
    let mut dq: Vec<Option<Tensor<B, 4>>> = vec![None; q_blocks.len()];
    let mut dks = Vec::new();
    let mut dvs = Vec::new();
    let scale = plan.scale();
    for (k0, m) in blocks(0..d.seq_kv, plan.options().key_block) {
        let kj = k.clone().narrow(2, k0, m);
        let vj = v.clone().narrow(2, k0, m);
        let mut dk: Option<Tensor<B, 4>> = None;
        let mut dv: Option<Tensor<B, 4>> = None;
        for (bi, &(q0, n)) in q_blocks.iter().enumerate() {
            let kind = plan.mask().batch_tile(q0..q0 + n, &(k0..k0 + m));
            if kind == TileMask::Skip {
                continue;
            }
            let (qi, doi, lse_i, delta_i) = &cut[bi];
            let s = tile_scores(qi.clone(), kj.clone(), plan, kind, (q0, n), (k0, m));
            // masked scores are -inf and rows that see nothing have lse = +inf: both give 0
            let p = (s - lse_i.clone()).exp();
            let dv_t = f32_of(
                to_dtype(p.clone(), dtype)
                    .swap_dims(2, 3)
                    .matmul(doi.clone()),
            );
            let dp = f32_of(doi.clone().matmul(vj.clone().swap_dims(2, 3)));
            let ds = to_dtype((p * (dp - delta_i.clone())).mul_scalar(scale), dtype);
            let dq_t = f32_of(ds.clone().matmul(kj.clone()));
            let dk_t = f32_of(ds.swap_dims(2, 3).matmul(qi.clone()));
            dv = Some(match dv {
                Some(acc) => acc + dv_t,
                None => dv_t,
            });
            dk = Some(match dk {
                Some(acc) => acc + dk_t,
                None => dk_t,
            });
            dq[bi] = Some(match dq[bi].take() {
                Some(acc) => acc + dq_t,
                None => dq_t,
            });
        }
        let zeros = || Tensor::<B, 4>::zeros([b, hkv, m, dd], (&device, DType::F32));
        dks.push(dk.unwrap_or_else(zeros));
        dvs.push(dv.unwrap_or_else(zeros));
    }
    let dq: Vec<Tensor<B, 5>> = dq
        .into_iter()
        .zip(&q_blocks)
        .map(|(g, &(_, n))| match g {
            Some(g) => g.reshape([b, hkv, groups, n, dd]),
            None => Tensor::zeros([b, hkv, groups, n, dd], (&device, DType::F32)),
        })
        .collect();
    let dq = to_dtype(
        cat_or_single(dq, 3).reshape([b, d.heads, d.seq_q, dd]),
        dtype,
    );
    let dk = to_dtype(cat_or_single(dks, 2), k_dtype);
    let dv = to_dtype(cat_or_single(dvs, 2), v_dtype);
    (prim(dq), prim(dk), prim(dv))
}

/// `Tensor::cat` that skips the copy for a single part.
fn cat_or_single<B: Backend, const D: usize>(
    mut parts: Vec<Tensor<B, D>>,
    dim: usize,
) -> Tensor<B, D> {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        Tensor::cat(parts, dim)
    }
}
