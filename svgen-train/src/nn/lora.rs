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
#[cfg(test)]
use burn::tensor::TensorData;
use burn::tensor::{Distribution, Tensor};

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

/// The LoRA dropout stream of this thread: the micro-batch seed and how many masks have been
/// drawn since it was set. Each mask gets its own seed, `mix(seed, index)`, so a mask depends
/// only on the micro-batch seed and its place in the forward pass, never on what else used the
/// backend's random generator before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DropoutStream {
    seed: u64,
    drawn: u64,
}

thread_local! {
    static DROPOUT_STREAM: std::cell::Cell<DropoutStream> =
        const { std::cell::Cell::new(DropoutStream { seed: 0, drawn: 0 }) };
}

/// Seeds this thread's LoRA dropout masks. The trainer calls it before every micro-batch
/// with a value derived from the data position, so an interrupted and resumed run draws the
/// same masks (see [`lora_dropout`] for how each mask is drawn on the device).
pub fn seed_lora_dropout(seed: u64) {
    DROPOUT_STREAM.with(|c| c.set(DropoutStream { seed, drawn: 0 }));
}

thread_local! {
    static DROPOUT_FORCED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The position of this thread's LoRA dropout stream, to draw the same masks again when a
/// checkpointed layer is recomputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DropoutState(DropoutStream);

impl DropoutState {
    /// The current position.
    pub(crate) fn save() -> Self {
        Self(DROPOUT_STREAM.with(|c| c.get()))
    }

    /// Rewinds (or forwards) the stream to this position.
    pub(crate) fn restore(&self) {
        DROPOUT_STREAM.with(|c| c.set(self.0));
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

/// The seed of the next mask of this thread's stream (SplitMix64 of the micro-batch seed and
/// the mask's index), advancing the stream by one.
fn next_mask_seed() -> u64 {
    DROPOUT_STREAM.with(|c| {
        let s = c.get();
        c.set(DropoutStream {
            drawn: s.drawn.wrapping_add(1),
            ..s
        });
        splitmix64(s.seed ^ splitmix64(s.drawn))
    })
}

/// SplitMix64's output function.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Inverted dropout (`x·m/(1-p)`, `m ~ Bernoulli(1-p)`) with the mask drawn **on the device**
/// by the backend's own generator; identity when `p == 0`, and outside autodiff unless forced
/// ([`with_dropout_forced`]).
///
/// PEFT semantics: one `lora_dropout` module per adapted linear, applied once to that linear's
/// input before `lora_A`, so one mask of the input's shape per linear per forward pass (the
/// `q`, `k` and `v` projections of one layer each draw their own mask for the same input).
///
/// Determinism: Burn's generator is seeded per backend and process (`B::seed`), not per
/// tensor. Every mask therefore reseeds it with [`next_mask_seed`] and draws at once, both
/// under [`crate::nn::tensor::seeded_random`]'s lock, so a mask is a function of the
/// micro-batch seed and the mask's index only; a checkpointed layer replays its masks by
/// restoring the [`DropoutState`], and a resumed run replays a micro-batch by reseeding with
/// the same data position. Code outside this crate that draws from the same backend on another
/// thread without the lock could still interleave; the trainers draw from one thread.
fn lora_dropout<B: Backend>(x: Tensor<B, 2>, p: f64) -> Tensor<B, 2> {
    if p <= 0.0 || !(B::ad_enabled(&x.device()) || DROPOUT_FORCED.with(|c| c.get())) {
        return x;
    }
    let keep = 1.0 - p;
    let device = x.device();
    let mask = crate::nn::tensor::seeded_random::<B, 2>(
        next_mask_seed(),
        x.shape(),
        Distribution::Bernoulli(keep),
        &device,
        x.dtype(),
    );
    x * mask.mul_scalar(1.0 / keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use svgen_core::compare::{assert_close, Tolerance};

    fn input(n: usize, d: usize) -> Tensor<Flex, 2> {
        let v: Vec<f32> = (0..n * d).map(|i| 0.5 + (i % 7) as f32).collect();
        Tensor::from_data(TensorData::new(v, [n, d]), &Default::default())
    }

    fn forced(x: Tensor<Flex, 2>, p: f64) -> Vec<f32> {
        with_dropout_forced(|| lora_dropout(x, p))
            .into_data()
            .to_vec()
            .expect("f32 data")
    }

    #[test]
    fn masks_are_inverted_bernoulli_with_rate_p() {
        let (n, d, p) = (64, 128, 0.25);
        let x = input(n, d);
        let xs: Vec<f32> = x.clone().into_data().to_vec().expect("f32 data");
        seed_lora_dropout(11);
        let y = forced(x, p);
        let dropped = y.iter().filter(|v| **v == 0.0).count() as f64 / (n * d) as f64;
        // 8192 draws: the standard deviation of the rate is sqrt(p(1-p)/8192) ≈ 0.0048.
        assert!((dropped - p).abs() < 0.03, "dropped fraction {dropped}");
        let (kept_y, kept_x): (Vec<f32>, Vec<f32>) = y
            .iter()
            .zip(&xs)
            .filter(|(y, _)| **y != 0.0)
            .map(|(y, x)| (*y, *x / (1.0 - p) as f32))
            .unzip();
        assert_close("kept", &kept_y, &kept_x, Tolerance::relative(1e-6));
    }

    #[test]
    fn masks_depend_only_on_the_micro_batch_seed_and_index() {
        let x = input(16, 32);
        seed_lora_dropout(5);
        let first = forced(x.clone(), 0.5);
        let at_second = DropoutState::save();
        let second = forced(x.clone(), 0.5);
        assert_ne!(first, second, "two linears of one forward share no mask");
        // Unrelated seeded draws in between do not move the stream.
        let _ = seeded_random_noise();
        at_second.restore();
        assert_eq!(forced(x.clone(), 0.5), second, "a restored stream replays");
        seed_lora_dropout(5);
        assert_eq!(
            forced(x.clone(), 0.5),
            first,
            "a reseeded micro-batch replays"
        );
        seed_lora_dropout(6);
        assert_ne!(
            forced(x, 0.5),
            first,
            "another micro-batch draws other masks"
        );
    }

    fn seeded_random_noise() -> Tensor<Flex, 1> {
        crate::nn::tensor::seeded_random(
            99,
            [10].into(),
            Distribution::Default,
            &Default::default(),
            burn::tensor::DType::F32,
        )
    }

    #[test]
    fn dropout_is_identity_without_autodiff_or_at_zero_rate() {
        let x = input(4, 8);
        let xs: Vec<f32> = x.clone().into_data().to_vec().expect("f32 data");
        let plain: Vec<f32> = lora_dropout(x.clone(), 0.5)
            .into_data()
            .to_vec()
            .expect("f32");
        assert_eq!(plain, xs);
        assert_eq!(forced(x, 0.0), xs);
        let xa = Tensor::<Autodiff<Flex>, 2>::from_data(
            TensorData::new(xs.clone(), [4, 8]),
            &Default::default(),
        );
        seed_lora_dropout(1);
        let ya: Vec<f32> = lora_dropout(xa, 0.5).into_data().to_vec().expect("f32");
        assert!(ya.contains(&0.0), "autodiff forward drops");
    }
}
