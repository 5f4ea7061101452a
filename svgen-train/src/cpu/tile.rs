//! Score-tile helpers shared by the attention kernels ([`super::attention`] and
//! `flash_attention`): one query row against a tile of `KV_TILE` keys, and the lane-wise
//! reductions of a score row.

use crate::cpu::madd;

/// Keys per tile of the online softmax.
pub const KV_TILE: usize = 64;
/// Lane width of the hand-shaped loops (8 f32 = one AVX2 register).
pub(crate) const LANES: usize = 8;

/// One query row (`[d]`, pre-scaled by the caller where needed) against keys `t0..t0 + KV_TILE` of `Kᵀ` (`[d, t_pad]`):
/// a broadcast query channel times one row of `Kᵀ` per step, the whole row in registers.
#[inline(always)]
pub(crate) fn tile_scores<const FMA: bool>(
    q: &[f32],
    kt: &[f32],
    t_pad: usize,
    t0: usize,
) -> [f32; KV_TILE] {
    let mut acc = [0.0f32; KV_TILE];
    for (c, &qc) in q.iter().enumerate() {
        let k_row: &[f32; KV_TILE] = kt[c * t_pad + t0..c * t_pad + t0 + KV_TILE]
            .try_into()
            .expect("whole tile");
        for (a, &kv) in acc.iter_mut().zip(k_row) {
            *a = madd::<FMA>(qc, kv, *a);
        }
    }
    acc
}

/// Maximum of a score row, reduced lane-wise.
#[inline(always)]
pub(crate) fn lane_max(s: &[f32; KV_TILE]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    for chunk in s.chunks_exact(LANES) {
        for (a, &x) in m.iter_mut().zip(chunk) {
            *a = if x > *a { x } else { *a };
        }
    }
    m.iter()
        .fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a })
}

/// Sum of a score row, reduced lane-wise.
#[inline(always)]
pub(crate) fn lane_sum(s: &[f32; KV_TILE]) -> f32 {
    let mut m = [0.0f32; LANES];
    for chunk in s.chunks_exact(LANES) {
        for (a, &x) in m.iter_mut().zip(chunk) {
            *a += x;
        }
    }
    m.iter().sum()
}
