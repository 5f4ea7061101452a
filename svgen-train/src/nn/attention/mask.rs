//! Which keys each query may attend to: causal masking, key padding and packed samples
//! (block-diagonal attention), described per batch row and resolved against the shapes of a call
//! into per-query key intervals that both implementations use to skip whole tiles.

use std::collections::HashMap;
use std::ops::Range;

use crate::error::{Result, TrainError};

/// Which keys each query may attend to.
///
/// A key `j` is visible to query `i` of batch row `b` when
/// - the key is not padding (see [`Self::with_key_padding`]),
/// - the query and the key belong to the same sample (see [`Self::with_cu_seqlens`],
///   [`Self::with_segment_ids`], [`Self::with_position_ids`]; without any, the whole row is one
///   sample), and
/// - with [`Self::causal`], `j <= i + (S - T)` (queries are the last `T` of the `S` key
///   positions, the bottom-right alignment of flash-attn and of a KV cache).
///
/// Queries take the sample of their own position, so packing and causal masking need
/// `T <= S`. A query that sees no key at all (a left-padding position under a causal mask, a
/// position outside every packed sample) gets a zero output and zero gradients, never NaN.
///
/// Padding only hides keys: a right-padded query still attends to the real keys before it, as
/// with HF's attention mask; its output is simply never used.
///
/// ```
/// use svgen_train::nn::attention::AttentionMask;
///
/// // two rows of 6: the first left-padded by 2, the second packing samples 0..2 and 2..6
/// let mask = AttentionMask::causal()
///     .with_key_padding(vec![
///         vec![false, false, true, true, true, true],
///         vec![true; 6],
///     ])
///     .with_cu_seqlens(vec![vec![0, 6], vec![0, 2, 6]]);
/// assert!(mask.is_causal());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttentionMask {
    causal: bool,
    key_padding: Option<Vec<Vec<bool>>>,
    segments: Option<Segments>,
}

/// How packed samples are described.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segments {
    /// Per row, an id per position; negative ids belong to no sample.
    Ids(Vec<Vec<i64>>),
    /// Per row, cumulative sample boundaries `[0, e1, …, en]` (flash_attn_varlen's
    /// `cu_seqlens`, per row); positions from `en` on belong to no sample.
    CuSeqlens(Vec<Vec<usize>>),
}

impl AttentionMask {
    /// Every query attends to every key (encoders, cross-attention); the default.
    pub fn bidirectional() -> Self {
        Self::default()
    }

    /// Causal self-attention: query `i` attends to keys `j <= i + (S - T)`.
    pub fn causal() -> Self {
        Self {
            causal: true,
            ..Self::default()
        }
    }

    /// Whether the mask is causal.
    pub fn is_causal(&self) -> bool {
        self.causal
    }

    /// Marks padding keys: `valid[row][j]` is `false` for a padding key (HF's
    /// `attention_mask == 0`), left, right or anywhere. One vector of `S` flags per batch row.
    pub fn with_key_padding(mut self, valid: Vec<Vec<bool>>) -> Self {
        self.key_padding = Some(valid);
        self
    }

    /// Packed samples given per batch row as cumulative boundaries `[0, e1, …, en]`, strictly
    /// increasing with `en <= S`: sample `k` covers positions `e_k..e_{k+1}`, and positions from
    /// `en` on (trailing padding) belong to no sample. This is flash_attn_varlen's `cu_seqlens`,
    /// one list per row. Replaces any earlier sample description.
    pub fn with_cu_seqlens(mut self, cu_seqlens: Vec<Vec<usize>>) -> Self {
        self.segments = Some(Segments::CuSeqlens(cu_seqlens));
        self
    }

    /// Packed samples given per batch row as one id per position: positions with equal ids
    /// attend to each other (they need not be contiguous); negative ids belong to no sample.
    /// Replaces any earlier sample description.
    pub fn with_segment_ids(mut self, ids: Vec<Vec<i64>>) -> Self {
        self.segments = Some(Segments::Ids(ids));
        self
    }

    /// Packed samples given by HF position ids, as `DataCollatorWithFlattening` produces
    /// them: a new sample starts at every position id `0`. Positions before the first `0`
    /// belong to no sample. Replaces any earlier sample description.
    pub fn with_position_ids(self, position_ids: &[Vec<i64>]) -> Self {
        let ids = position_ids
            .iter()
            .map(|row| {
                let mut seg = -1i64;
                row.iter()
                    .map(|&p| {
                        if p == 0 {
                            seg += 1;
                        }
                        seg
                    })
                    .collect()
            })
            .collect();
        self.with_segment_ids(ids)
    }

    /// Checks the description against a call with `batch` rows, `seq_q` queries and `seq_kv`
    /// keys and resolves it into per-query key intervals.
    pub(crate) fn resolve(
        &self,
        batch: usize,
        seq_q: usize,
        seq_kv: usize,
    ) -> Result<ResolvedMask> {
        let bad = |msg: String| Err(TrainError::InvalidArgument(msg));
        if (self.causal || self.segments.is_some()) && seq_q > seq_kv {
            return bad(format!(
                "attention mask: a causal or packed mask needs queries ({seq_q}) <= keys ({seq_kv})"
            ));
        }
        if let Some(pad) = &self.key_padding {
            if pad.len() != batch || pad.iter().any(|r| r.len() != seq_kv) {
                return bad(format!(
                    "attention mask: key padding must hold {batch} rows of {seq_kv} flags"
                ));
            }
        }
        let offset = seq_kv - seq_q.min(seq_kv);
        let mut key_seg = Vec::with_capacity(batch * seq_kv);
        let mut rows = Vec::with_capacity(batch * seq_q);
        let mut raw = vec![-1i32; seq_kv];
        for b in 0..batch {
            self.raw_segments(b, batch, seq_kv, &mut raw)?;
            let padding = self.key_padding.as_ref().map(|p| &p[b]);
            let row_keys: Vec<i32> = (0..seq_kv)
                .map(|j| {
                    if padding.is_some_and(|p| !p[j]) {
                        -1
                    } else {
                        raw[j]
                    }
                })
                .collect();
            // first key, last key + 1 and number of keys of every sample id
            let mut spans: HashMap<i32, (usize, usize, usize)> = HashMap::new();
            for (j, &s) in row_keys.iter().enumerate() {
                if s >= 0 {
                    let e = spans.entry(s).or_insert((j, j + 1, 0));
                    e.1 = j + 1;
                    e.2 += 1;
                }
            }
            for i in 0..seq_q {
                let pos = offset + i;
                let seg = if self.segments.is_some() { raw[pos] } else { 0 };
                let range = match spans.get(&seg) {
                    Some(&(lo, end, count)) if seg >= 0 => {
                        let hi = if self.causal { end.min(pos + 1) } else { end };
                        if hi > lo {
                            QueryRange {
                                lo,
                                hi,
                                seg,
                                // every key of the sample's span belongs to it
                                exact: count == end - lo,
                            }
                        } else {
                            QueryRange::EMPTY
                        }
                    }
                    _ => QueryRange::EMPTY,
                };
                rows.push(range);
            }
            key_seg.extend_from_slice(&row_keys);
        }
        let trivial = !self.causal && self.key_padding.is_none() && self.segments.is_none();
        Ok(ResolvedMask {
            batch,
            seq_q,
            seq_kv,
            key_seg,
            rows,
            trivial,
        })
    }

    /// Writes the sample id of every position of row `b` into `out` (`-1`: no sample), ids
    /// renumbered densely from 0.
    fn raw_segments(&self, b: usize, batch: usize, seq_kv: usize, out: &mut [i32]) -> Result<()> {
        let bad = |msg: String| Err(TrainError::InvalidArgument(msg));
        match &self.segments {
            None => out.fill(0),
            Some(Segments::Ids(ids)) => {
                if ids.len() != batch || ids[b].len() != seq_kv {
                    return bad(format!(
                        "attention mask: segment ids must hold {batch} rows of {seq_kv} ids"
                    ));
                }
                let mut dense: HashMap<i64, i32> = HashMap::new();
                for (o, &id) in out.iter_mut().zip(&ids[b]) {
                    *o = if id < 0 {
                        -1
                    } else {
                        let next = dense.len() as i32;
                        *dense.entry(id).or_insert(next)
                    };
                }
            }
            Some(Segments::CuSeqlens(cu)) => {
                if cu.len() != batch {
                    return bad(format!(
                        "attention mask: cu_seqlens must hold {batch} rows, found {}",
                        cu.len()
                    ));
                }
                let row = &cu[b];
                if row.first() != Some(&0)
                    || row.windows(2).any(|w| w[1] <= w[0])
                    || row.last().is_some_and(|&e| e > seq_kv)
                {
                    return bad(format!(
                        "attention mask: cu_seqlens of row {b} must start at 0, increase \
                         strictly and end at most at {seq_kv}: {row:?}"
                    ));
                }
                out.fill(-1);
                for (k, w) in row.windows(2).enumerate() {
                    out[w[0]..w[1]].fill(k as i32);
                }
            }
        }
        Ok(())
    }
}

/// The keys one query may attend to: keys in `lo..hi` whose sample id is `seg`; when `exact`,
/// every key of that interval qualifies (a contiguous sample without padding holes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueryRange {
    pub lo: usize,
    pub hi: usize,
    pub seg: i32,
    pub exact: bool,
}

impl QueryRange {
    /// A query that sees no key.
    pub const EMPTY: Self = Self {
        lo: 0,
        hi: 0,
        seg: -1,
        exact: true,
    };

    /// Whether the query sees no key at all.
    pub fn is_empty(&self) -> bool {
        self.hi <= self.lo
    }

    /// Whether no key of `keys` is visible.
    pub fn misses(&self, keys: &Range<usize>) -> bool {
        self.is_empty() || self.hi <= keys.start || self.lo >= keys.end
    }

    /// Whether every key of `keys` is visible.
    pub fn covers(&self, keys: &Range<usize>) -> bool {
        self.exact && !self.is_empty() && self.lo <= keys.start && keys.end <= self.hi
    }
}

/// How a tile of queries × keys is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TileMask {
    /// No query sees any key of the tile.
    Skip,
    /// Every query sees every key.
    Full,
    /// Some pairs are masked.
    Partial,
}

/// An [`AttentionMask`] resolved against the shapes of a call.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedMask {
    pub batch: usize,
    pub seq_q: usize,
    pub seq_kv: usize,
    /// `[batch, seq_kv]`: each key's sample id, `-1` for keys nobody attends to.
    pub key_seg: Vec<i32>,
    /// `[batch, seq_q]`: each query's key interval.
    pub rows: Vec<QueryRange>,
    /// Nothing is masked at all.
    pub trivial: bool,
}

impl ResolvedMask {
    /// The key interval of query `i` of row `b`.
    pub fn row(&self, b: usize, i: usize) -> QueryRange {
        self.rows[b * self.seq_q + i]
    }

    /// The sample ids of row `b`'s keys.
    pub fn key_segments(&self, b: usize) -> &[i32] {
        &self.key_seg[b * self.seq_kv..(b + 1) * self.seq_kv]
    }

    /// Whether query `i` of row `b` sees key `j`.
    pub fn allows(&self, b: usize, i: usize, j: usize) -> bool {
        let r = self.row(b, i);
        j >= r.lo && j < r.hi && (r.exact || self.key_segments(b)[j] == r.seg)
    }

    /// How the tile `queries × keys` of row `b` is masked.
    pub fn tile(&self, b: usize, queries: Range<usize>, keys: &Range<usize>) -> TileMask {
        if self.trivial {
            return TileMask::Full;
        }
        let (mut all_miss, mut all_cover) = (true, true);
        for i in queries {
            let r = self.row(b, i);
            all_miss &= r.misses(keys);
            all_cover &= r.covers(keys);
            if !all_miss && !all_cover {
                return TileMask::Partial;
            }
        }
        match (all_miss, all_cover) {
            (true, _) => TileMask::Skip,
            (_, true) => TileMask::Full,
            _ => TileMask::Partial,
        }
    }

    /// How the tile `queries × keys` is masked over the whole batch.
    pub fn batch_tile(&self, queries: Range<usize>, keys: &Range<usize>) -> TileMask {
        let mut kinds = (0..self.batch).map(|b| self.tile(b, queries.clone(), keys));
        let Some(first) = kinds.next() else {
            return TileMask::Skip;
        };
        kinds.fold(
            first,
            |acc, k| if acc == k { acc } else { TileMask::Partial },
        )
    }

    /// The keys any query of `queries` in row `b` may see (empty when none).
    pub fn key_span(&self, b: usize, queries: Range<usize>) -> Range<usize> {
        let (mut lo, mut hi) = (usize::MAX, 0);
        for i in queries {
            let r = self.row(b, i);
            if !r.is_empty() {
                lo = lo.min(r.lo);
                hi = hi.max(r.hi);
            }
        }
        if lo >= hi {
            0..0
        } else {
            lo..hi
        }
    }
}
