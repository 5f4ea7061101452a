//! Memory-efficient scaled dot-product attention with its own backward pass
//! (FlashAttention-2): [`flash_attention`].
//!
//! Burn 0.21's autodiff computes `attention` as matmul → softmax → matmul and keeps several
//! `[B, heads, T, S]` tensors per layer for the backward pass, so training memory grows with
//! `T²`. This op keeps only its output and one `f32` logsumexp per query row; the backward pass
//! recomputes the scores block by block. Training memory is then linear in `T`.
//!
//! **One function, two implementations.**
//! - On `burn::backend::Flex` with `f32` tensors (and as the inner backend of `Autodiff<Flex>`):
//!   the multi-threaded blocked CPU kernel of `svgen-train/src/cpu/flash_attention.rs`, forward and
//!   backward.
//! - On every other backend (CUDA included), and on Flex with half-precision tensors: a blockwise
//!   version in Burn tensor ops (`nn/attention/blockwise.rs`): query blocks × key blocks with an online softmax
//!   in the forward pass and recomputation in the backward pass, so CUDA training gets the same
//!   memory bound without a hand-written GPU kernel. `bf16`/`f16` inputs are multiplied in their
//!   own dtype (as HF's eager attention does) while the softmax statistics, the accumulators and
//!   the gradients' sums are `f32`.
//!
//! **Dispatch.** [`FlashAttentionBackend`] is a backend extension trait (the pattern of the Burn
//! book's custom-kernel chapter): its provided methods are the blockwise version; `Flex`
//! overrides them with the CPU kernel; `Autodiff<B, C>` implements the op for any inner
//! `B: FlashAttentionBackend` by recording a backward node (burn-autodiff's `Backward`,
//! `OpsKind`, `prepare`) whose backward calls `B`'s; `Cuda` (feature `cuda`) uses the provided
//! methods. [`flash_attention`] itself only needs `B: Backend`, so model code stays as generic as
//! it is: it routes to the trait implementation of `Flex`, `Autodiff<Flex>`,
//! `Autodiff<Flex, BalancedCheckpointing>` and, with `cuda`, `Cuda`, `Autodiff<Cuda>` and
//! `Autodiff<Cuda, BalancedCheckpointing>` by comparing type ids. Any other backend gets the
//! blockwise version in its own tensor ops: exact, memory-bounded without autodiff, but under an
//! autodiff backend not listed here Burn records every tile, so training memory is quadratic
//! again; implement [`FlashAttentionBackend`] for that backend (an empty `impl` gives the
//! blockwise version) and call the trait's [`FlashAttentionBackend::flash_attention`] with an
//! [`AttentionPlan`] from [`AttentionPlan::new`].

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

use crate::cpu::flash_attention::{self as kernel, FlashShape};
use crate::error::{Result, TrainError};
use crate::nn::tensor::check_dtypes;
use crate::nn::{cast_float, same_backend};

mod blockwise;
pub(crate) mod mask;

pub use mask::AttentionMask;
use mask::ResolvedMask;

/// Which implementation [`flash_attention`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionKernel {
    /// The backend's own: the CPU kernel on `Flex` with `f32` tensors, the blockwise tensor-op
    /// version elsewhere.
    #[default]
    Auto,
    /// The blockwise tensor-op version on every backend (memory-bounded as well; for tests and
    /// comparisons).
    TensorOps,
}

/// Options of [`flash_attention`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionOptions {
    /// Score scale; `None` is `1/√head_dim`.
    pub scale: Option<f64>,
    /// Queries per block of the blockwise tensor-op version (the CPU kernel uses its own
    /// 32-query blocks). Larger blocks mean fewer kernel launches on a GPU and more
    /// transient memory: `B·heads·query_block·key_block` f32 per tile.
    pub query_block: usize,
    /// Keys per block of the blockwise tensor-op version (the CPU kernel uses its own
    /// 64-key tiles).
    pub key_block: usize,
    /// Which implementation runs.
    pub kernel: AttentionKernel,
}

impl Default for AttentionOptions {
    fn default() -> Self {
        Self {
            scale: None,
            query_block: 512,
            key_block: 512,
            kernel: AttentionKernel::Auto,
        }
    }
}

/// Head counts and lengths of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    /// Batch size.
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`; query head `h` reads kv head `h / (heads / kv_heads)`).
    pub kv_heads: usize,
    /// Queries per row.
    pub seq_q: usize,
    /// Keys per row.
    pub seq_kv: usize,
    /// Channels per head.
    pub head_dim: usize,
}

/// Everything an implementation needs besides the tensors: the checked shapes, the resolved
/// mask, the scale and the options. Built by [`AttentionPlan::new`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct AttentionPlan {
    dims: AttentionDims,
    mask: Arc<ResolvedMask>,
    scale: f64,
    options: AttentionOptions,
}

impl AttentionPlan {
    /// Checks the shapes and the mask of a call with queries `[B, heads, T, head_dim]` and
    /// keys/values `[B, kv_heads, S, head_dim]`.
    pub fn new(
        q_dims: [usize; 4],
        kv_dims: [usize; 4],
        mask: &AttentionMask,
        options: &AttentionOptions,
    ) -> Result<Self> {
        let [batch, heads, seq_q, head_dim] = q_dims;
        let [kb, kv_heads, seq_kv, kd] = kv_dims;
        let bad = |msg: String| Err(TrainError::InvalidArgument(msg));
        if kb != batch || kd != head_dim {
            return bad(format!(
                "attention: queries {q_dims:?} and keys/values {kv_dims:?} disagree on batch or \
                 head_dim"
            ));
        }
        if batch == 0 || heads == 0 || kv_heads == 0 || seq_q == 0 || seq_kv == 0 || head_dim == 0 {
            return bad(format!(
                "attention: empty queries {q_dims:?} or keys/values {kv_dims:?}"
            ));
        }
        if !heads.is_multiple_of(kv_heads) {
            return bad(format!(
                "attention: {heads} query heads are not a multiple of {kv_heads} kv heads"
            ));
        }
        if options.query_block == 0 || options.key_block == 0 {
            return bad("attention: query_block and key_block must be positive".into());
        }
        let scale = options.scale.unwrap_or(1.0 / (head_dim as f64).sqrt());
        if !scale.is_finite() {
            return bad(format!("attention: scale {scale} is not finite"));
        }
        Ok(Self {
            dims: AttentionDims {
                batch,
                heads,
                kv_heads,
                seq_q,
                seq_kv,
                head_dim,
            },
            mask: Arc::new(mask.resolve(batch, seq_q, seq_kv)?),
            scale,
            options: *options,
        })
    }

    /// The shapes of the call.
    pub fn dims(&self) -> AttentionDims {
        self.dims
    }

    /// The score scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The options of the call.
    pub fn options(&self) -> &AttentionOptions {
        &self.options
    }

    pub(crate) fn mask(&self) -> &ResolvedMask {
        &self.mask
    }

    fn flash_shape(&self) -> FlashShape {
        let d = self.dims;
        FlashShape {
            batch: d.batch,
            heads: d.heads,
            kv_heads: d.kv_heads,
            seq_q: d.seq_q,
            seq_kv: d.seq_kv,
            head_dim: d.head_dim,
        }
    }
}

/// Scaled dot-product attention with grouped-query heads, causal / padding / packed-sample
/// masks, `O(T)` memory in training, and a zero output (and zero gradients) for a query that
/// sees no key.
///
/// - `q` `[B, heads, T, head_dim]`, `k` and `v` `[B, kv_heads, S, head_dim]`, one float dtype;
///   query head `h` attends with kv head `h / (heads / kv_heads)` (HF's `repeat_kv` order) and
///   K/V are never repeated in memory.
/// - `mask`: which keys each query may attend to ([`AttentionMask`]).
/// - Returns `[B, heads, T, head_dim]` in the dtype of `q`.
///
/// Fails with [`TrainError::InvalidArgument`] on inconsistent shapes, dtypes, options or mask.
///
/// ```
/// use burn::backend::{Autodiff, Flex};
/// use burn::tensor::{Distribution, Tensor};
/// use svgen_train::nn::attention::{flash_attention, AttentionMask, AttentionOptions};
///
/// type B = Autodiff<Flex>;
/// let dev = Default::default();
/// let q = Tensor::<B, 4>::random([1, 4, 10, 8], Distribution::Normal(0.0, 1.0), &dev).require_grad();
/// let k = Tensor::<B, 4>::random([1, 2, 10, 8], Distribution::Normal(0.0, 1.0), &dev).require_grad();
/// let v = Tensor::<B, 4>::random([1, 2, 10, 8], Distribution::Normal(0.0, 1.0), &dev).require_grad();
/// let out = flash_attention(q.clone(), k, v, &AttentionMask::causal(), &AttentionOptions::default())
///     .expect("valid shapes");
/// assert_eq!(out.dims(), [1, 4, 10, 8]);
/// let grads = out.sum().backward();
/// assert_eq!(q.grad(&grads).expect("tracked").dims(), [1, 4, 10, 8]);
/// ```
pub fn flash_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &AttentionMask,
    options: &AttentionOptions,
) -> Result<Tensor<B, 4>> {
    let (dq, dk, dv) = (q.dtype(), k.dtype(), v.dtype());
    check_dtypes("attention", ("q", dq), ("k", dk))?;
    check_dtypes("attention", ("q", dq), ("v", dv))?;
    if !dq.is_float() {
        return Err(TrainError::InvalidArgument(format!(
            "attention: q, k and v must be floating point, found {dq:?}"
        )));
    }
    if v.dims() != k.dims() {
        return Err(TrainError::InvalidArgument(format!(
            "attention: keys {:?} and values {:?} differ in shape",
            k.dims(),
            v.dims()
        )));
    }
    let plan = AttentionPlan::new(q.dims(), k.dims(), mask, options)?;
    let (q, k, v) = (prim(q), prim(k), prim(v));
    Ok(tensor(dispatch::<B>(q, k, v, &plan)))
}

/// Routes to the [`FlashAttentionBackend`] implementation of the backends the crate ships, and
/// to the blockwise version in `B`'s own ops for any other backend.
fn dispatch<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    plan: &AttentionPlan,
) -> FloatTensor<B> {
    macro_rules! route {
        ($($backend:ty),+ $(,)?) => {$(
            if same_backend::<B, $backend>() {
                let out = <$backend as FlashAttentionBackend>::flash_attention(
                    cast_float::<B, $backend>(q),
                    cast_float::<B, $backend>(k),
                    cast_float::<B, $backend>(v),
                    plan,
                );
                return cast_float::<$backend, B>(out);
            }
        )+};
    }
    route!(Flex, Autodiff<Flex>, Autodiff<Flex, BalancedCheckpointing>);
    #[cfg(feature = "cuda")]
    {
        use burn::backend::Cuda;
        route!(Cuda, Autodiff<Cuda>, Autodiff<Cuda, BalancedCheckpointing>);
    }
    blockwise::forward::<B>(q, k, v, plan).0
}

/// A backend that can run [`flash_attention`]: the forward pass returning the per-row
/// logsumexp, the backward pass from it, and the op itself (which autodiff backends override to
/// record the backward pass). The provided methods are the blockwise tensor-op version, so an
/// empty `impl` is a complete one.
pub trait FlashAttentionBackend: Backend {
    /// Output `[B, heads, T, head_dim]` (dtype of `q`) and logsumexp of the scaled scores
    /// `[B, heads, T]` (`f32`, `+∞` for a query that sees no key).
    fn flash_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        plan: &AttentionPlan,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        blockwise::forward::<Self>(q, k, v, plan)
    }

    /// `(dq, dk, dv)` from the inputs, the forward output `out`, its `lse` and the output
    /// gradient.
    #[allow(clippy::too_many_arguments)]
    fn flash_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        plan: &AttentionPlan,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        blockwise::backward::<Self>(q, k, v, out, lse, grad_out, plan)
    }

    /// The op: the output of [`Self::flash_attention_forward`].
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        plan: &AttentionPlan,
    ) -> FloatTensor<Self> {
        Self::flash_attention_forward(q, k, v, plan).0
    }
}

/// The CPU kernel for `f32` tensors under [`AttentionKernel::Auto`]; the blockwise version
/// otherwise.
impl FlashAttentionBackend for Flex {
    fn flash_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        plan: &AttentionPlan,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !uses_cpu_kernel::<Self>(&[&q, &k, &v], plan) {
            return blockwise::forward::<Self>(q, k, v, plan);
        }
        let shape = plan.flash_shape();
        let device = tensor::<Self, 4>(q.clone()).device();
        let (out, lse) = kernel::forward(
            &host::<4>(q),
            &host::<4>(k),
            &host::<4>(v),
            shape,
            plan.mask(),
            plan.scale as f32,
        );
        let d = plan.dims;
        (
            from_host::<4>(out, [d.batch, d.heads, d.seq_q, d.head_dim], &device),
            from_host::<3>(lse, [d.batch, d.heads, d.seq_q], &device),
        )
    }

    fn flash_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        plan: &AttentionPlan,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !uses_cpu_kernel::<Self>(&[&q, &k, &v, &out, &grad_out], plan) {
            return blockwise::backward::<Self>(q, k, v, out, lse, grad_out, plan);
        }
        let shape = plan.flash_shape();
        let device = tensor::<Self, 4>(q.clone()).device();
        let (dq, dk, dv) = kernel::backward(
            &host::<4>(q),
            &host::<4>(k),
            &host::<4>(v),
            &host::<4>(out),
            &host::<3>(lse),
            &host::<4>(grad_out),
            shape,
            plan.mask(),
            plan.scale as f32,
        );
        let d = plan.dims;
        let q_shape = [d.batch, d.heads, d.seq_q, d.head_dim];
        let kv_shape = [d.batch, d.kv_heads, d.seq_kv, d.head_dim];
        (
            from_host::<4>(dq, q_shape, &device),
            from_host::<4>(dk, kv_shape, &device),
            from_host::<4>(dv, kv_shape, &device),
        )
    }
}

#[cfg(feature = "cuda")]
impl FlashAttentionBackend for burn::backend::Cuda {}

/// Records the op with its own backward node: the forward pass of the inner backend, keeping
/// the output and the `f32` logsumexp; the inputs are checkpointed the way burn-autodiff's own
/// ops do (kept, or recomputed under a checkpointing strategy that recomputes them).
impl<B: FlashAttentionBackend, C: CheckpointStrategy> FlashAttentionBackend for Autodiff<B, C> {
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        plan: &AttentionPlan,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct FlashAttentionBackward;

        impl<B: FlashAttentionBackend> Backward<B, 3> for FlashAttentionBackward {
            /// Checkpointed q, k, v; the output; the logsumexp; the plan.
            type State = ([NodeId; 3], FloatTensor<B>, FloatTensor<B>, AttentionPlan);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let ([qi, ki, vi], out, lse, plan) = ops.state;
                let q = checkpointer.retrieve_node_output::<FloatTensor<B>>(qi);
                let k = checkpointer.retrieve_node_output::<FloatTensor<B>>(ki);
                let v = checkpointer.retrieve_node_output::<FloatTensor<B>>(vi);
                let grad = grads.consume::<B>(&ops.node);
                let (dq, dk, dv) = B::flash_attention_backward(q, k, v, out, lse, grad, &plan);
                for (parent, g) in ops.parents.into_iter().zip([dq, dk, dv]) {
                    if let Some(node) = parent {
                        grads.register::<B>(node.id, g);
                    }
                }
            }
        }

        match FlashAttentionBackward
            .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let ids = [
                    prep.checkpoint(&q),
                    prep.checkpoint(&k),
                    prep.checkpoint(&v),
                ];
                let (out, lse) =
                    B::flash_attention_forward(q.primitive, k.primitive, v.primitive, plan);
                prep.finish((ids, out.clone(), lse, plan.clone()), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::flash_attention(
                q.primitive,
                k.primitive,
                v.primitive,
                plan,
            )),
        }
    }
}

/// Whether the CPU kernel handles these `Flex` tensors: all `f32`, kernel not overridden.
fn uses_cpu_kernel<B: Backend>(tensors: &[&FloatTensor<B>], plan: &AttentionPlan) -> bool {
    use burn::tensor::TensorMetadata;
    plan.options.kernel == AttentionKernel::Auto && tensors.iter().all(|t| t.dtype() == DType::F32)
}

pub(crate) fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

pub(crate) fn tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The values of an `f32` Flex tensor of rank `D`, row-major.
fn host<const D: usize>(t: FloatTensor<Flex>) -> Vec<f32> {
    tensor::<Flex, D>(t)
        .into_data()
        .into_vec::<f32>()
        .expect("checked f32 tensor reads back as f32")
}

fn from_host<const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    device: &burn::tensor::Device<Flex>,
) -> FloatTensor<Flex> {
    prim(Tensor::<Flex, D>::from_data(
        TensorData::new(data, shape),
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use burn::tensor::Distribution;

    /// `f64` attention of one (row, head) from the dense rule, for checking the kernel alone.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        g_out: &[f32],
        mask: &ResolvedMask,
        b: usize,
        (t, s, d): (usize, usize, usize),
        scale: f64,
    ) -> [Vec<f64>; 4] {
        let (mut o, mut dq, mut dk, mut dv) = (
            vec![0.0; t * d],
            vec![0.0; t * d],
            vec![0.0; s * d],
            vec![0.0; s * d],
        );
        for i in 0..t {
            let dot = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| *x as f64 * *y as f64)
                    .sum::<f64>()
            };
            let scores: Vec<Option<f64>> = (0..s)
                .map(|j| {
                    mask.allows(b, i, j)
                        .then(|| scale * dot(&q[i * d..(i + 1) * d], &k[j * d..(j + 1) * d]))
                })
                .collect();
            let m = scores
                .iter()
                .flatten()
                .fold(f64::NEG_INFINITY, |a, &x| a.max(x));
            let z: f64 = scores.iter().flatten().map(|x| (x - m).exp()).sum();
            if z == 0.0 {
                continue;
            }
            let p: Vec<f64> = scores
                .iter()
                .map(|x| x.map_or(0.0, |x| (x - m).exp() / z))
                .collect();
            for j in 0..s {
                for c in 0..d {
                    o[i * d + c] += p[j] * v[j * d + c] as f64;
                }
            }
            let dp: Vec<f64> = (0..s)
                .map(|j| dot(&g_out[i * d..(i + 1) * d], &v[j * d..(j + 1) * d]))
                .collect();
            let delta: f64 = (0..s).map(|j| p[j] * dp[j]).sum();
            for j in 0..s {
                let ds = p[j] * (dp[j] - delta);
                for c in 0..d {
                    dq[i * d + c] += scale * ds * k[j * d + c] as f64;
                    dk[j * d + c] += scale * ds * q[i * d + c] as f64;
                    dv[j * d + c] += p[j] * g_out[i * d + c] as f64;
                }
            }
        }
        [o, dq, dk, dv]
    }

    #[test]
    fn cpu_kernel_matches_a_naive_f64_reference() {
        let (t, s, d) = (45, 45, 5);
        let ids: Vec<i64> = (0..s as i64)
            .map(|j| {
                if j < 20 {
                    0
                } else if j < 40 {
                    1
                } else {
                    -1
                }
            })
            .collect();
        let mask = AttentionMask::causal()
            .with_segment_ids(vec![ids])
            .with_key_padding(vec![(0..s).map(|j| j != 25).collect()]);
        let resolved = mask.resolve(1, t, s).expect("valid");
        let shape = FlashShape {
            batch: 1,
            heads: 1,
            kv_heads: 1,
            seq_q: t,
            seq_kv: s,
            head_dim: d,
        };
        let rnd = |n: usize, seed: u64| -> Vec<f32> {
            (0..n as u64)
                .map(|i| ((((i + 1) * 2_654_435_761) ^ seed) % 2000) as f32 / 1000.0 - 1.0)
                .collect()
        };
        let (q, k, v, go) = (rnd(t * d, 1), rnd(s * d, 2), rnd(s * d, 3), rnd(t * d, 4));
        let scale = 0.4;
        let (o, lse) = kernel::forward(&q, &k, &v, shape, &resolved, scale);
        let (dq, dk, dv) = kernel::backward(&q, &k, &v, &o, &lse, &go, shape, &resolved, scale);
        let want = naive(&q, &k, &v, &go, &resolved, 0, (t, s, d), scale as f64);
        for (name, got, want) in [
            ("out", &o, &want[0]),
            ("dq", &dq, &want[1]),
            ("dk", &dk, &want[2]),
            ("dv", &dv, &want[3]),
        ] {
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(want) {
                assert!((*a as f64 - b).abs() <= 1e-5, "{name}: {a} vs {b}");
            }
        }
        // position 40.. belong to no sample: zero output, infinite lse
        assert!(lse[40..].iter().all(|&l| l == f32::INFINITY));
        assert!(o[40 * d..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn flex_f32_runs_the_cpu_kernel() {
        let dev = Default::default();
        let n = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<Flex, 4>::random([1, 2, 40, 8], n, &dev);
        let kv = Tensor::<Flex, 4>::random([1, 1, 40, 8], n, &dev);
        let mask = AttentionMask::causal();
        let opts = AttentionOptions::default();
        let got = flash_attention(q.clone(), kv.clone(), kv.clone(), &mask, &opts).expect("valid");
        let plan = AttentionPlan::new(q.dims(), kv.dims(), &mask, &opts).expect("valid");
        let data = |t: Tensor<Flex, 4>| t.into_data().into_vec::<f32>().expect("f32");
        let (want, _) = kernel::forward(
            &data(q),
            &data(kv.clone()),
            &data(kv),
            plan.flash_shape(),
            plan.mask(),
            plan.scale() as f32,
        );
        assert_eq!(data(got), want, "bit-identical to the kernel");
    }
}
