//! The LoRA linear layer shared by both model families.
//!
//! A [`LoraLinear`] computes `x·W + s·dropout(x)·A·B` (with `s = α/r`, or `α/√r` for rsLoRA)
//! without ever forming `W + A·B`. Weights are held `[in, out]`; PEFT files hold
//! `lora_A.weight` `[r, in]` and `lora_B.weight` `[out, r]`, transposed at the boundary (see
//! [`crate::nn::peft`]).
//!
//! **Mixed precision.** The base weight stays in its stored dtype (`bf16`/`f16` on backends
//! that compute in it) and `x·W` is computed in it. The LoRA branch is computed in the
//! adapter's dtype, which the Llama constructors make `f32` whatever the base: `x` is cast in,
//! `s·dropout(x)·A·B` is computed in `f32` and cast out to the base dtype before the sum (the
//! "autocast" layout of PEFT under `torch.autocast`). The adapter gradients, and the AdamW
//! moments built from them, are therefore `f32`: in `bf16`, `0.999·v` rounds back to `v` and the
//! second moment would never decay. [`LoraLinear::merged`] casts `s·A·B` to the base dtype.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};

use crate::error::{Result, TrainError};
use crate::nn::tensor::check_dtypes;

/// The trainable low-rank pair of a [`LoraLinear`].
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `lora_A`, stored `[in, r]`.
    pub lora_a: Param<Tensor<B, 2>>,
    /// `lora_B`, stored `[r, out]`.
    pub lora_b: Param<Tensor<B, 2>>,
    /// `α/r` or `α/√r`.
    pub scale: f64,
    /// `lora_dropout` on the adapter input (active only on autodiff backends).
    pub dropout: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// Number of trainable parameters (`A` and `B`).
    pub(crate) fn num_params(&self) -> usize {
        self.lora_a.shape().num_elements() + self.lora_b.shape().num_elements()
    }
}

/// A linear layer (bias optional) with an optional LoRA adapter.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// Base weight, stored `[in, out]` (HF `weight` transposed); frozen.
    pub weight: Param<Tensor<B, 2>>,
    /// Base bias `[out]` (e.g. diffusers' `to_out.0`); `None` for bias-free layers; frozen.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// The adapter, if this module is targeted.
    pub adapter: Option<LoraAdapter<B>>,
}

impl<B: Backend> LoraLinear<B> {
    /// A plain bias-free linear from a `[in, out]` weight.
    pub fn new(weight: Param<Tensor<B, 2>>) -> Self {
        Self {
            weight,
            bias: None,
            adapter: None,
        }
    }

    /// A plain linear from a `[in, out]` weight and an `[out]` bias.
    pub fn with_bias(weight: Param<Tensor<B, 2>>, bias: Param<Tensor<B, 1>>) -> Self {
        Self {
            weight,
            bias: Some(bias),
            adapter: None,
        }
    }

    /// `in_features`.
    pub fn in_features(&self) -> usize {
        self.weight.val().dims()[0]
    }

    /// `out_features`.
    pub fn out_features(&self) -> usize {
        self.weight.val().dims()[1]
    }

    /// `x·W + s·dropout(x)·A·B` on `[batch, seq, in]`, with every dtype checked:
    /// [`TrainError::DtypeMismatch`] when `x` and the weight (or the bias) differ, or `A` and `B`
    /// do. The LoRA branch runs in the adapter's dtype (see the module documentation).
    pub fn try_forward(&self, x: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        let wd = self.weight.val().dtype();
        check_dtypes("linear", ("input", x.dtype()), ("weight", wd))?;
        if let Some(bias) = &self.bias {
            check_dtypes("linear", ("weight", wd), ("bias", bias.val().dtype()))?;
        }
        if let Some(a) = &self.adapter {
            let ad = a.lora_a.val().dtype();
            check_dtypes("LoRA", ("lora_A", ad), ("lora_B", a.lora_b.val().dtype()))?;
            if !ad.is_float() {
                return Err(TrainError::InvalidArgument(format!(
                    "LoRA adapters must be floating point, found {ad:?}"
                )));
            }
        }
        Ok(self.forward_checked(x))
    }

    /// `x·W + s·dropout(x)·A·B` on `[batch, seq, in]`. `x` is cast to the weight's dtype if it
    /// differs (the callers in this crate hold one dtype per model; [`Self::try_forward`]
    /// refuses a mismatch instead).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let wd = self.weight.val().dtype();
        let x = if x.dtype() != wd { x.cast(wd) } else { x };
        self.forward_checked(x)
    }

    fn forward_checked(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, i] = x.dims();
        let x = x.reshape([b * t, i]);
        let mut y = x.clone().matmul(self.weight.val());
        if let Some(bias) = &self.bias {
            y = y + bias.val().unsqueeze_dim(0);
        }
        if let Some(a) = &self.adapter {
            let (base, low) = (y.dtype(), a.lora_a.val().dtype());
            let x = if low != base { x.cast(low) } else { x };
            let mut delta = lora_dropout(x, a.dropout)
                .matmul(a.lora_a.val())
                .matmul(a.lora_b.val())
                .mul_scalar(a.scale);
            if low != base {
                delta = delta.cast(base);
            }
            y = y + delta;
        }
        let o = y.dims()[1];
        y.reshape([b, t, o])
    }

    /// `W + s·A·B` as a plain linear (the adapter is folded in).
    pub fn merged(mut self) -> Self {
        self.merge_adapter();
        self
    }

    /// Folds the adapter, if any, into the frozen base weight (`W + s·A·B`) and drops it;
    /// returns whether there was one.
    pub(crate) fn merge_adapter(&mut self) -> bool {
        let Some(a) = self.adapter.take() else {
            return false;
        };
        let w = self.weight.val();
        let mut delta = a.lora_a.val().matmul(a.lora_b.val()).mul_scalar(a.scale);
        if delta.dtype() != w.dtype() {
            delta = delta.cast(w.dtype());
        }
        let w = (w + delta).detach();
        self.weight = Param::from_tensor(w).set_require_grad(false);
        true
    }
}

thread_local! {
    static DROPOUT_RNG: std::cell::RefCell<rand::rngs::StdRng> =
        std::cell::RefCell::new(rand::rngs::StdRng::seed_from_u64(0));
}

/// Seeds this thread's LoRA dropout masks. The trainer calls it before every micro-batch
/// with a value derived from the data position, so an interrupted and resumed run draws the
/// same masks (the backend's global RNG is shared between threads and not resumable).
pub fn seed_lora_dropout(seed: u64) {
    DROPOUT_RNG.with(|r| *r.borrow_mut() = rand::rngs::StdRng::seed_from_u64(seed));
}

thread_local! {
    static DROPOUT_FORCED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The position of this thread's LoRA dropout stream, to draw the same masks again when a
/// checkpointed layer is recomputed.
#[derive(Debug, Clone)]
pub(crate) struct DropoutState(rand::rngs::StdRng);

impl DropoutState {
    /// The current position.
    pub(crate) fn save() -> Self {
        Self(DROPOUT_RNG.with(|r| r.borrow().clone()))
    }

    /// Rewinds (or forwards) the stream to this position.
    pub(crate) fn restore(&self) {
        DROPOUT_RNG.with(|r| *r.borrow_mut() = self.0.clone());
    }
}

/// Runs `f` with LoRA dropout active even on a backend without autodiff: the gradient-free
/// forward pass of a checkpointed layer draws the masks its recomputation will draw again.
pub(crate) fn with_dropout_forced<R>(f: impl FnOnce() -> R) -> R {
    let before = DROPOUT_FORCED.with(|c| c.replace(true));
    let out = f();
    DROPOUT_FORCED.with(|c| c.set(before));
    out
}

/// Inverted dropout with a host-drawn mask; identity when `p == 0`, and outside autodiff
/// unless forced ([`with_dropout_forced`]).
fn lora_dropout<B: Backend>(x: Tensor<B, 2>, p: f64) -> Tensor<B, 2> {
    if p <= 0.0 || !(B::ad_enabled(&x.device()) || DROPOUT_FORCED.with(|c| c.get())) {
        return x;
    }
    let [n, d] = x.dims();
    let keep = 1.0 - p;
    let mask: Vec<f32> = DROPOUT_RNG.with(|r| {
        let mut r = r.borrow_mut();
        (0..n * d)
            .map(|_| {
                if r.random::<f64>() < keep {
                    (1.0 / keep) as f32
                } else {
                    0.0
                }
            })
            .collect()
    });
    let m = Tensor::<B, 2>::from_data(TensorData::new(mask, [n, d]), (&x.device(), x.dtype()));
    x * m
}
