//! The key/value cache of incremental decoding: per layer, backend tensors in a long and a
//! short segment (every backend) or host memory (the CPU fast path), with per-row positions
//! and key padding.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::cpu::decode::HostKv;

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
pub(crate) struct KvSegment<B: Backend> {
    pub(super) k: Tensor<B, 6>,
    pub(super) v: Tensor<B, 6>,
}

impl<B: Backend> KvSegment<B> {
    pub(super) fn len(&self) -> usize {
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
pub(crate) struct SegmentKv<B: Backend> {
    main: Option<KvSegment<B>>,
    tail: Option<KvSegment<B>>,
}

impl<B: Backend> SegmentKv<B> {
    pub(super) fn is_empty(&self) -> bool {
        self.main.is_none() && self.tail.is_none()
    }

    /// The dtype of the cached keys and values, `None` while empty.
    pub(super) fn dtype(&self) -> Option<burn::tensor::DType> {
        self.main
            .as_ref()
            .or(self.tail.as_ref())
            .map(|s| s.k.dtype())
    }

    fn main_len(&self) -> usize {
        self.main.as_ref().map_or(0, KvSegment::len)
    }

    /// Appends `new` (`[B, kv_heads, 1, 1, T, head_dim]`) and returns the segments to attend
    /// over, oldest first.
    pub(super) fn append(&mut self, new: KvSegment<B>, merge_interval: usize) -> Vec<KvSegment<B>> {
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
pub(crate) enum LayerKv<B: Backend> {
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
    pub(super) layers: Vec<LayerKv<B>>,
    pub(super) merge_interval: usize,
    /// Per row, whether each cached key is a real token (false: left padding).
    pub(super) valid: Vec<Vec<bool>>,
    /// Per row, the position id the next real token gets.
    pub(super) next_pos: Vec<i64>,
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
