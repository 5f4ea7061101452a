//! The UNet's adapter gradients and AdamW over them (the optimiser of [`crate::train`]).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

use crate::error::Result;
use crate::sd::unet::UNet2DConditionModel;
use crate::train::{adapter_grads, adapter_params, LoraOptimizer};
use crate::weights::HostTensor;

/// The gradients of every LoRA matrix, keyed `<path>.lora_A` / `<path>.lora_B`, in our layout
/// (`lora_A` `[in, r]`, `lora_B` `[r, out]`).
pub fn lora_gradients<B: AutodiffBackend>(
    unet: &UNet2DConditionModel<B>,
    grads: &B::Gradients,
) -> BTreeMap<String, Tensor<B::InnerBackend, 2>> {
    let mut m = unet.clone();
    let linears = m.attention_linears_mut();
    adapter_grads(linears.into_iter().map(|(p, l)| (p, &*l)), grads)
}

/// AdamW over the UNet's LoRA matrices, with its moments (the Llama trainer's optimiser).
#[derive(Debug, Clone)]
pub struct LoraAdamW<B: Backend> {
    inner: LoraOptimizer<B>,
}

impl<B: Backend> LoraAdamW<B> {
    /// Fresh moments.
    pub fn new(betas: (f64, f64), eps: f64, weight_decay: f64) -> Self {
        Self {
            inner: LoraOptimizer::new(betas, eps, weight_decay),
        }
    }

    /// Applies one update (1-based `step`) with gradients scaled by `clip` to every adapter
    /// matrix that has a gradient in `grads` (keys as [`lora_gradients`]).
    pub fn step<AB: AutodiffBackend<InnerBackend = B>>(
        &mut self,
        unet: &mut UNet2DConditionModel<AB>,
        grads: &BTreeMap<String, Tensor<B, 2>>,
        lr: f64,
        clip: f64,
        step: usize,
    ) {
        for (path, lin) in unet.attention_linears_mut() {
            let Some(a) = &mut lin.adapter else { continue };
            for (half, p) in [("lora_A", &mut a.lora_a), ("lora_B", &mut a.lora_b)] {
                let key = format!("{path}.{half}");
                let Some(g) = grads.get(&key) else { continue };
                let w = self.inner.update(key, p.val().inner(), g, lr, clip, step);
                *p = Param::from_tensor(Tensor::from_inner(w).require_grad());
            }
        }
    }

    /// The moments as `exp_avg.<key>` / `exp_avg_sq.<key>` host tensors.
    pub fn state(&self) -> BTreeMap<String, HostTensor> {
        self.inner.state()
    }

    /// Restores moments written by [`LoraAdamW::state`]; every adapter matrix of `unet` must
    /// have both, with its shape.
    pub fn load_state<AB: AutodiffBackend<InnerBackend = B>>(
        &mut self,
        unet: &UNet2DConditionModel<AB>,
        state: &BTreeMap<String, HostTensor>,
        origin: &Path,
    ) -> Result<()> {
        let mut m = unet.clone();
        let linears = m.attention_linears_mut();
        let matrices = adapter_params(linears.iter().map(|(p, l)| (p.clone(), &**l)))
            .into_iter()
            .map(|(key, p)| (key, p.val().inner()));
        self.inner.load_state(matrices, state, origin)
    }
}
