//! The LM head and the cross-entropy fused and chunked over tokens: no `[tokens, vocab]` tensor
//! lives for the whole sequence, in the forward pass or the backward pass.
//!
//! With Llama 3's 128,256-token vocabulary, the logits of an 8k-token sequence are 4.2 GB in
//! `f32`; the plain path (`lm_head` matmul → `log_softmax` → gather) keeps them, and their
//! softmax, for the backward pass. [`chunked_causal_lm_loss`] instead gathers the hidden states
//! of the labelled positions, and [`linear_cross_entropy`] computes their logits
//! `chunk_tokens` rows at a time, keeping one `f32` logsumexp per row. Its backward pass
//! recomputes each chunk's logits, forms `softmax − onehot` and produces the gradients with
//! respect to the hidden states and to the LM-head weight (for tied embeddings, trainable token
//! rows, `modules_to_save`). Live memory is one chunk of logits, `chunk_tokens × vocab` `f32`.
//!
//! Dispatch is the one of [`crate::nn`]: the op is a custom autodiff node on `Autodiff<Flex>`
//! and `Autodiff<Cuda>` (both checkpoint strategies) through [`LinearCrossEntropyBackend`], and
//! plain chunked tensor ops on any backend without autodiff. Under an autodiff backend not
//! listed there the chunks are recorded by Burn's autodiff, so its memory is that of the plain
//! path.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, IndexingUpdateOp, Int, Tensor, TensorData, TensorPrimitive};

use crate::error::{Result, TrainError};
use crate::nn::{cast_float, same_backend};

/// The label of positions that carry no loss (PyTorch's and HF's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Tokens per chunk by default: 256 rows of a 128,256-token vocabulary are 131 MB of `f32`
/// logits.
pub const DEFAULT_CHUNK_TOKENS: usize = 256;

/// Options of the chunked loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedLossOptions {
    /// Rows of logits computed at once (at least 1).
    pub chunk_tokens: usize,
}

impl Default for ChunkedLossOptions {
    fn default() -> Self {
        Self {
            chunk_tokens: DEFAULT_CHUNK_TOKENS,
        }
    }
}

/// Next-token cross-entropy from the final hidden states, as
/// [`causal_lm_loss`](crate::llama::sft::causal_lm_loss) computes it from the logits: the hidden state
/// at `t` predicts `labels[t + 1]`, labels equal to [`IGNORE_INDEX`] are skipped and the mean is
/// over counted tokens (HF's `ForCausalLMLoss`). `hidden` is `[B, T, hidden]`, `lm_head` the
/// LM-head weight `[hidden, vocab]` (the layout of [`Llama::lm_head`](crate::Llama), or the
/// transposed embeddings when they are tied), `labels` `B·T` values.
///
/// Returns the scalar loss (`f32`) and the number of counted tokens. Fails, as
/// `causal_lm_loss` does, when no token counts or a label is outside the vocabulary, and on
/// inconsistent shapes.
///
/// ```
/// use burn::backend::{Autodiff, Flex};
/// use burn::tensor::{Distribution, Tensor};
/// use svgen_train::nn::loss::{chunked_causal_lm_loss, ChunkedLossOptions};
///
/// type B = Autodiff<Flex>;
/// let dev = Default::default();
/// let h = Tensor::<B, 3>::random([1, 5, 8], Distribution::Normal(0.0, 1.0), &dev).require_grad();
/// let w = Tensor::<B, 2>::random([8, 11], Distribution::Normal(0.0, 1.0), &dev).require_grad();
/// let labels = [-100, -100, 3, 7, 10];
/// let opts = ChunkedLossOptions { chunk_tokens: 2 };
/// let (loss, count) = chunked_causal_lm_loss(h.clone(), w.clone(), &labels, &opts).expect("valid");
/// assert_eq!(count, 3);
/// let grads = loss.backward();
/// assert_eq!(w.grad(&grads).expect("tracked").dims(), [8, 11]);
/// ```
pub fn chunked_causal_lm_loss<B: Backend>(
    hidden: Tensor<B, 3>,
    lm_head: Tensor<B, 2>,
    labels: &[i64],
    options: &ChunkedLossOptions,
) -> Result<(Tensor<B, 1>, usize)> {
    let [b, t, h] = hidden.dims();
    let vocab = lm_head.dims()[1];
    if labels.len() != b * t {
        return Err(TrainError::InvalidArgument(format!(
            "labels hold {} values for a [{b}, {t}] batch",
            labels.len()
        )));
    }
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for row in 0..b {
        for i in 0..t.saturating_sub(1) {
            let y = labels[row * t + i + 1];
            if y == IGNORE_INDEX {
                continue;
            }
            if y < 0 || y as usize >= vocab {
                return Err(TrainError::InvalidArgument(format!(
                    "label {y} outside the vocabulary ({vocab})"
                )));
            }
            rows.push((row * t + i) as i64);
            targets.push(y);
        }
    }
    if targets.is_empty() {
        return Err(TrainError::InvalidArgument(
            "no label counts in the loss (all ignored)".into(),
        ));
    }
    let count = targets.len();
    let device = hidden.device();
    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [count]), &device);
    let picked = hidden.reshape([b * t, h]).select(0, idx);
    let loss = linear_cross_entropy(picked, lm_head, &targets, options)?;
    Ok((loss, count))
}

/// Mean cross-entropy of `hidden · weight` (`[N, hidden] × [hidden, vocab]`) against
/// `targets` (`N` token ids), computed in chunks of `chunk_tokens` rows with its own backward
/// pass (see the module documentation). The logits are cast to `f32` before the softmax, as
/// [`causal_lm_loss`](crate::llama::sft::causal_lm_loss) does. Returns a one-element `f32` tensor.
///
/// Fails on inconsistent shapes, an empty batch, a target outside the vocabulary or a zero
/// chunk size.
pub fn linear_cross_entropy<B: Backend>(
    hidden: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    targets: &[i64],
    options: &ChunkedLossOptions,
) -> Result<Tensor<B, 1>> {
    let plan = LossPlan::new(hidden.dims(), weight.dims(), targets, options)?;
    crate::nn::tensor::check_dtypes(
        "cross-entropy",
        ("hidden states", hidden.dtype()),
        ("LM head weight", weight.dtype()),
    )?;
    if !hidden.dtype().is_float() {
        return Err(TrainError::InvalidArgument(format!(
            "cross-entropy: hidden states must be floating point, found {:?}",
            hidden.dtype()
        )));
    }
    let (h, w) = (prim(hidden), prim(weight));
    Ok(tensor(dispatch::<B>(h, w, &plan)))
}

/// Targets, shapes and chunk size of one [`linear_cross_entropy`] call; cheap to clone.
#[derive(Debug, Clone)]
pub struct LossPlan {
    targets: Arc<Vec<i64>>,
    rows: usize,
    hidden: usize,
    vocab: usize,
    chunk: usize,
}

impl LossPlan {
    /// Checks a call with hidden states `[N, hidden]`, weight `[hidden, vocab]` and `N` targets.
    pub fn new(
        hidden_dims: [usize; 2],
        weight_dims: [usize; 2],
        targets: &[i64],
        options: &ChunkedLossOptions,
    ) -> Result<Self> {
        let [rows, hidden] = hidden_dims;
        let [wh, vocab] = weight_dims;
        let bad = |msg: String| Err(TrainError::InvalidArgument(msg));
        if wh != hidden || rows != targets.len() || rows == 0 || vocab == 0 || hidden == 0 {
            return bad(format!(
                "cross-entropy: hidden states {hidden_dims:?}, weight {weight_dims:?} and {} \
                 targets disagree (or are empty)",
                targets.len()
            ));
        }
        if let Some(&y) = targets.iter().find(|&&y| y < 0 || y as usize >= vocab) {
            return bad(format!("label {y} outside the vocabulary ({vocab})"));
        }
        if options.chunk_tokens == 0 {
            return bad("cross-entropy: chunk_tokens must be positive".into());
        }
        Ok(Self {
            targets: Arc::new(targets.to_vec()),
            rows,
            hidden,
            vocab,
            chunk: options.chunk_tokens,
        })
    }

    /// Row chunks `(start, len)`.
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.rows)
            .step_by(self.chunk)
            .map(|s| (s, self.chunk.min(self.rows - s)))
    }

    /// The targets of rows `start..start + len` as `[len, 1]` indices.
    fn target_chunk<B: Backend>(
        &self,
        start: usize,
        len: usize,
        device: &B::Device,
    ) -> Tensor<B, 2, Int> {
        let t = self.targets[start..start + len].to_vec();
        Tensor::from_data(TensorData::new(t, [len, 1]), device)
    }
}

fn dispatch<B: Backend>(h: FloatTensor<B>, w: FloatTensor<B>, plan: &LossPlan) -> FloatTensor<B> {
    macro_rules! route {
        ($($backend:ty),+ $(,)?) => {$(
            if same_backend::<B, $backend>() {
                let out = <$backend as LinearCrossEntropyBackend>::linear_cross_entropy(
                    cast_float::<B, $backend>(h),
                    cast_float::<B, $backend>(w),
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
    chunked_forward::<B>(h, w, plan).0
}

/// A backend that can run [`linear_cross_entropy`]. The provided methods are chunked tensor
/// ops, so an empty `impl` is a complete one; autodiff backends override
/// [`Self::linear_cross_entropy`] to record the backward pass.
pub trait LinearCrossEntropyBackend: Backend {
    /// The mean loss (`[1]`, `f32`) and each row's logsumexp (`[N]`, `f32`).
    fn linear_cross_entropy_forward(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        plan: &LossPlan,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        chunked_forward::<Self>(hidden, weight, plan)
    }

    /// Gradients with respect to the hidden states and the weight, each only when asked for,
    /// from the loss gradient `grad` (`[1]`).
    fn linear_cross_entropy_backward(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        plan: &LossPlan,
        wanted: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        chunked_backward::<Self>(hidden, weight, lse, grad, plan, wanted)
    }

    /// The op: the loss of [`Self::linear_cross_entropy_forward`].
    fn linear_cross_entropy(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        plan: &LossPlan,
    ) -> FloatTensor<Self> {
        Self::linear_cross_entropy_forward(hidden, weight, plan).0
    }
}

impl LinearCrossEntropyBackend for Flex {}

#[cfg(feature = "cuda")]
impl LinearCrossEntropyBackend for burn::backend::Cuda {}

impl<B: LinearCrossEntropyBackend, C: CheckpointStrategy> LinearCrossEntropyBackend
    for Autodiff<B, C>
{
    fn linear_cross_entropy(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        plan: &LossPlan,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LinearCrossEntropyBackward;

        impl<B: LinearCrossEntropyBackend> Backward<B, 2> for LinearCrossEntropyBackward {
            /// Checkpointed hidden states and weight, the logsumexp, the plan.
            type State = ([NodeId; 2], FloatTensor<B>, LossPlan);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let ([hi, wi], lse, plan) = ops.state;
                let h = checkpointer.retrieve_node_output::<FloatTensor<B>>(hi);
                let w = checkpointer.retrieve_node_output::<FloatTensor<B>>(wi);
                let grad = grads.consume::<B>(&ops.node);
                let wanted = [ops.parents[0].is_some(), ops.parents[1].is_some()];
                let out = B::linear_cross_entropy_backward(h, w, lse, grad, &plan, wanted);
                for (parent, g) in ops.parents.into_iter().zip(out) {
                    if let (Some(node), Some(g)) = (parent, g) {
                        grads.register::<B>(node.id, g);
                    }
                }
            }
        }

        match LinearCrossEntropyBackward
            .prepare::<C>([hidden.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let ids = [prep.checkpoint(&hidden), prep.checkpoint(&weight)];
                let (loss, lse) =
                    B::linear_cross_entropy_forward(hidden.primitive, weight.primitive, plan);
                prep.finish((ids, lse, plan.clone()), loss)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::linear_cross_entropy(
                hidden.primitive,
                weight.primitive,
                plan,
            )),
        }
    }
}

/// `t` in `f32` (no copy when it already is).
fn f32_of<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(DType::F32)
    }
}

/// `f32` logits of rows `start..start + len`.
fn chunk_logits<B: Backend>(
    h: &Tensor<B, 2>,
    w: &Tensor<B, 2>,
    start: usize,
    len: usize,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let hc = h.clone().narrow(0, start, len);
    (f32_of(hc.clone().matmul(w.clone())), hc)
}

/// Chunked forward pass in `B`'s tensor ops.
fn chunked_forward<B: Backend>(
    h: FloatTensor<B>,
    w: FloatTensor<B>,
    plan: &LossPlan,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (h, w) = (tensor::<B, 2>(h), tensor::<B, 2>(w));
    let device = h.device();
    let mut total: Option<Tensor<B, 1>> = None;
    let mut lses = Vec::new();
    for (start, len) in plan.chunks() {
        let (logits, _) = chunk_logits(&h, &w, start, len);
        let max = logits.clone().max_dim(1);
        let lse = max.clone() + (logits.clone() - max).exp().sum_dim(1).log();
        let picked = logits.gather(1, plan.target_chunk::<B>(start, len, &device));
        let part = (lse.clone() - picked).sum();
        total = Some(match total {
            Some(t) => t + part,
            None => part,
        });
        lses.push(lse.reshape([len]));
    }
    let loss = total
        .expect("a plan has at least one row")
        .div_scalar(plan.rows as f64);
    let lse = if lses.len() == 1 {
        lses.remove(0)
    } else {
        Tensor::cat(lses, 0)
    };
    (prim(loss), prim(lse))
}

/// Chunked backward pass in `B`'s tensor ops: per chunk, `g = (softmax − onehot)·grad/N`,
/// `dH = g·Wᵀ`, `dW += Hᵀ·g` (accumulated in `f32`).
fn chunked_backward<B: Backend>(
    h: FloatTensor<B>,
    w: FloatTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
    plan: &LossPlan,
    [want_h, want_w]: [bool; 2],
) -> [Option<FloatTensor<B>>; 2] {
    let (h, w) = (tensor::<B, 2>(h), tensor::<B, 2>(w));
    let lse = f32_of(tensor::<B, 1>(lse));
    let coef = f32_of(tensor::<B, 1>(grad))
        .div_scalar(plan.rows as f64)
        .reshape([1, 1]);
    let (h_dtype, w_dtype) = (h.dtype(), w.dtype());
    let device = h.device();
    let wt = w.clone().transpose();
    let mut dhs = Vec::new();
    let mut dw: Option<Tensor<B, 2>> = None;
    for (start, len) in plan.chunks() {
        let (logits, hc) = chunk_logits(&h, &w, start, len);
        let lse_c = lse.clone().narrow(0, start, len).reshape([len, 1]);
        let p = (logits - lse_c).exp();
        let minus_one = Tensor::<B, 2>::full([len, 1], -1.0, (&device, DType::F32));
        let p = p.scatter(
            1,
            plan.target_chunk::<B>(start, len, &device),
            minus_one,
            IndexingUpdateOp::Add,
        );
        let g = p * coef.clone();
        let g = if h_dtype == DType::F32 {
            g
        } else {
            g.cast(h_dtype)
        };
        if want_h {
            dhs.push(g.clone().matmul(wt.clone()));
        }
        if want_w {
            let part = f32_of(hc.transpose().matmul(g));
            dw = Some(match dw {
                Some(acc) => acc + part,
                None => part,
            });
        }
    }
    let dh = want_h.then(|| {
        let dh = if dhs.len() == 1 {
            dhs.remove(0)
        } else {
            Tensor::cat(dhs, 0)
        };
        prim(dh)
    });
    let dw = dw.map(|dw| {
        let dw = if w_dtype == DType::F32 {
            dw
        } else {
            dw.cast(w_dtype)
        };
        debug_assert_eq!(dw.dims(), [plan.hidden, plan.vocab]);
        prim(dw)
    });
    [dh, dw]
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}
