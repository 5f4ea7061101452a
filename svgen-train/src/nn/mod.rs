//! Burn plumbing shared by the Llama and Stable Diffusion families: tensor helpers, the LoRA
//! linear layer, PEFT adapter I/O, the JSON reader of configuration files, and the
//! memory-bounded building blocks of long-context training: fused attention with its own
//! backward ([`attention`]) and the chunked LM-head cross-entropy ([`loss`]).
//!
//! The last two are custom autodiff operations: Burn 0.21's autodiff would otherwise keep every
//! `[B, heads, T, T]` attention tensor and the whole `[T, vocab]` logits for the backward pass.
//!
//! **Dispatch.** Each op is one function generic over `B: Backend`, so model code keeps its
//! plain `B: Backend` bound. Burn 0.21 has no specialisation; the per-backend implementations are
//! backend extension traits ([`attention::FlashAttentionBackend`],
//! [`loss::LinearCrossEntropyBackend`]) implemented for `Flex`, for `Autodiff<B, C>` (which
//! records the op's own backward node) and, with the `cuda` feature, for `Cuda`. The public
//! functions route to those implementations by comparing [`TypeId`]s with the backends the crate
//! ships (the same test as [`crate::cpu::is_flex`]) and moving the tensor primitives across with
//! a checked [`Any`] downcast, so no `unsafe` is involved; see [`attention`] for the list and for
//! what other backends get.

use core::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

pub mod attention;
pub(crate) mod json;
pub mod lora;
pub mod loss;
pub mod peft;
pub(crate) mod tensor;

pub use lora::{seed_lora_dropout, LoraAdapter, LoraLinear};
pub use peft::{PeftScaling, PEFT_PREFIX};

/// `true` when `A` and `E` are the same backend type.
pub(crate) fn same_backend<A: Backend, E: Backend>() -> bool {
    TypeId::of::<A>() == TypeId::of::<E>()
}

/// Moves a float primitive of backend `A` to backend `E`, which must be the same type (checked
/// by the caller with [`same_backend`]); the downcast is checked again here.
///
/// # Panics
/// If `A` and `E` are different types (a caller bug, never an input error).
pub(crate) fn cast_float<A: Backend, E: Backend>(t: FloatTensor<A>) -> FloatTensor<E> {
    let boxed: Box<dyn Any> = Box::new(t);
    match boxed.downcast::<FloatTensor<E>>() {
        Ok(t) => *t,
        Err(_) => panic!("cast_float called with two different backends"),
    }
}
