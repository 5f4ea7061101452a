//! AdamW over LoRA adapter matrices (PyTorch `torch.optim.AdamW` semantics), the adapter
//! gradients it reads, gradient accumulation and global-norm clipping, shared by the Llama and
//! Stable Diffusion trainers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};

use crate::error::{Result, TrainError};
use crate::nn::lora::LoraLinear;
use crate::nn::tensor::{check_dtypes, host_f32};
use crate::train::run::non_finite_loss;
use crate::weights::HostTensor;

/// AdamW hyper-parameters (PyTorch `torch.optim.AdamW` semantics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AdamW {
    pub(crate) betas: (f64, f64),
    pub(crate) eps: f64,
    pub(crate) weight_decay: f64,
}

impl AdamW {
    /// One update of `w` with gradient `g` (already clipped) at 1-based `step`; `moments` are
    /// the previous `(exp_avg, exp_avg_sq)` (zeros when `None`). Returns the new weight and
    /// moments.
    pub(crate) fn update<B: Backend>(
        &self,
        w: Tensor<B, 2>,
        g: Tensor<B, 2>,
        moments: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
        lr: f64,
        step: usize,
    ) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
        let (b1, b2) = self.betas;
        let t = step as i32;
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        let (m, v) = moments.unwrap_or_else(|| (g.zeros_like(), g.zeros_like()));
        let m = m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
        let v = v.mul_scalar(b2) + g.powi_scalar(2).mul_scalar(1.0 - b2);
        let denom = v.clone().div_scalar(bc2).sqrt().add_scalar(self.eps);
        let w = w.mul_scalar(1.0 - lr * self.weight_decay)
            - m.clone().div_scalar(bc1).div(denom).mul_scalar(lr);
        (w, m, v)
    }
}

/// AdamW over LoRA matrices keyed `<path>.lora_A` / `<path>.lora_B`, with their moments
/// `(exp_avg, exp_avg_sq)` (shared by the Llama and Stable Diffusion trainers). Checkpoints hold
/// the moments as f32 tensors `exp_avg.<key>` / `exp_avg_sq.<key>`.
#[derive(Debug, Clone)]
pub(crate) struct LoraOptimizer<B: Backend> {
    adamw: AdamW,
    moments: BTreeMap<String, (Tensor<B, 2>, Tensor<B, 2>)>,
}

impl<B: Backend> LoraOptimizer<B> {
    /// Fresh (zero) moments.
    pub(crate) fn new(betas: (f64, f64), eps: f64, weight_decay: f64) -> Self {
        Self {
            adamw: AdamW {
                betas,
                eps,
                weight_decay,
            },
            moments: BTreeMap::new(),
        }
    }

    /// The AdamW update (1-based `step`) of matrix `key` with weight `w` and gradient `g` scaled
    /// by the clip factor `clip`; returns the new weight and keeps the new moments.
    pub(crate) fn update(
        &mut self,
        key: String,
        w: Tensor<B, 2>,
        g: &Tensor<B, 2>,
        lr: f64,
        clip: f64,
        step: usize,
    ) -> Tensor<B, 2> {
        let g = if clip == 1.0 {
            g.clone()
        } else {
            g.clone().mul_scalar(clip)
        };
        let prev = self.moments.remove(&key);
        let (w, m, v) = self.adamw.update(w, g, prev, lr, step);
        self.moments.insert(key, (m, v));
        w
    }

    /// [`Self::update`] after checking that the weight, the gradient and the moments are all
    /// `f32`: [`TrainError::DtypeMismatch`] naming the matrix otherwise. In `bf16`,
    /// `0.999·v` rounds back to `v` (8 mantissa bits), so AdamW's second moment would never
    /// decay; adapters and their optimiser state are `f32` whatever the base model's dtype.
    pub(crate) fn try_update(
        &mut self,
        key: String,
        w: Tensor<B, 2>,
        g: &Tensor<B, 2>,
        lr: f64,
        clip: f64,
        step: usize,
    ) -> Result<Tensor<B, 2>> {
        let op = format!("AdamW update of `{key}`");
        check_dtypes(&op, ("weight", w.dtype()), ("f32", DType::F32))?;
        check_dtypes(&op, ("weight", w.dtype()), ("gradient", g.dtype()))?;
        if let Some((m, v)) = self.moments.get(&key) {
            check_dtypes(&op, ("weight", w.dtype()), ("exp_avg", m.dtype()))?;
            check_dtypes(&op, ("weight", w.dtype()), ("exp_avg_sq", v.dtype()))?;
        }
        Ok(self.update(key, w, g, lr, clip, step))
    }

    /// The moments as `exp_avg.<key>` / `exp_avg_sq.<key>` host tensors.
    pub(crate) fn state(&self) -> BTreeMap<String, HostTensor> {
        let mut out = BTreeMap::new();
        for (key, (m, v)) in &self.moments {
            let shape = m.dims().to_vec();
            out.insert(
                format!("exp_avg.{key}"),
                HostTensor::f32(shape.clone(), host_f32(m.clone())),
            );
            out.insert(
                format!("exp_avg_sq.{key}"),
                HostTensor::f32(shape, host_f32(v.clone())),
            );
        }
        out
    }

    /// Restores the moments in `state` (written by [`LoraOptimizer::state`], read from
    /// `origin`) of every `(key, weight)` in `matrices`, with the weight's shape, dtype and
    /// device. Both moments of every key must be there with that shape; on error the moments
    /// are left unchanged.
    pub(crate) fn load_state(
        &mut self,
        matrices: impl IntoIterator<Item = (String, Tensor<B, 2>)>,
        state: &BTreeMap<String, HostTensor>,
        origin: &Path,
    ) -> Result<()> {
        let mut moments = BTreeMap::new();
        for (key, w) in matrices {
            let shape: [usize; 2] = w.dims();
            let (device, dtype) = (w.device(), w.dtype());
            let get = |which: &str| -> Result<Tensor<B, 2>> {
                let k = format!("{which}.{key}");
                let t = state.get(&k).ok_or_else(|| TrainError::MissingTensor {
                    key: k.clone(),
                    path: origin.to_path_buf(),
                })?;
                if t.shape != shape {
                    return Err(TrainError::ShapeMismatch {
                        key: k,
                        expected: shape.to_vec(),
                        found: t.shape.clone(),
                    });
                }
                let data = t.clone().into_f32(&k)?;
                Ok(Tensor::from_data(
                    TensorData::new(data, shape),
                    (&device, dtype),
                ))
            };
            let m = get("exp_avg")?;
            let v = get("exp_avg_sq")?;
            moments.insert(key, (m, v));
        }
        self.moments = moments;
        Ok(())
    }
}

/// Every adapter matrix of `linears`, keyed `<path>.lora_A` / `<path>.lora_B`.
pub(crate) fn adapter_params<'a, B: Backend>(
    linears: impl IntoIterator<Item = (String, &'a LoraLinear<B>)>,
) -> Vec<(String, &'a Param<Tensor<B, 2>>)> {
    let mut out = Vec::new();
    for (path, lin) in linears {
        if let Some(a) = &lin.adapter {
            out.push((format!("{path}.lora_A"), &a.lora_a));
            out.push((format!("{path}.lora_B"), &a.lora_b));
        }
    }
    out
}

/// The gradients in `grads` of every adapter matrix of `linears` (keys as [`adapter_params`]),
/// in our layout (`lora_A` `[in, r]`, `lora_B` `[r, out]`).
pub(crate) fn adapter_grads<'a, B: AutodiffBackend>(
    linears: impl IntoIterator<Item = (String, &'a LoraLinear<B>)>,
    grads: &B::Gradients,
) -> BTreeMap<String, Tensor<B::InnerBackend, 2>> {
    adapter_params(linears)
        .into_iter()
        .filter_map(|(key, p)| p.grad(grads).map(|g| (key, g)))
        .collect()
}

/// Adds each `(key, gradient)` to the sum held under its key (gradient accumulation over the
/// micro-batches of one optimiser step).
pub(crate) fn accumulate_grads<B: Backend>(
    acc: &mut BTreeMap<String, Tensor<B, 2>>,
    grads: impl IntoIterator<Item = (String, Tensor<B, 2>)>,
) {
    for (key, g) in grads {
        let g = match acc.remove(&key) {
            Some(prev) => prev + g,
            None => g,
        };
        acc.insert(key, g);
    }
}

/// What an optimiser step reads back from the device, in **one** transfer: the weighted loss
/// of every micro-batch, and the sum of squares of every gradient (one device reduction per
/// gradient, stacked on the device). The host then adds them in `f64` in a fixed order, so the
/// logged loss and gradient norm are the values the per-tensor reads gave.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepReadout {
    /// The micro-batch losses, in order.
    pub losses: Vec<f64>,
    /// `Σ g²` of each gradient, in the map's (sorted) order.
    pub grad_squares: Vec<f64>,
}

/// Reads `losses` (each `[1]`) and the sums of squares of `grads` with one device sync.
pub(crate) fn read_step<B: Backend>(
    losses: Vec<Tensor<B, 1>>,
    grads: &BTreeMap<String, Tensor<B, 2>>,
) -> StepReadout {
    let n = losses.len();
    let mut parts: Vec<Tensor<B, 1>> = losses;
    parts.extend(grads.values().map(|g| g.clone().powi_scalar(2).sum()));
    if parts.is_empty() {
        return StepReadout {
            losses: Vec::new(),
            grad_squares: Vec::new(),
        };
    }
    // One dtype to stack in: f64 if any part is f64, else f32 (exact for bf16/f16 values).
    let dtype = if parts.iter().any(|p| p.dtype() == DType::F64) {
        DType::F64
    } else {
        DType::F32
    };
    let parts: Vec<Tensor<B, 1>> = parts
        .into_iter()
        .map(|p| if p.dtype() != dtype { p.cast(dtype) } else { p })
        .collect();
    let values: Vec<f64> = Tensor::cat(parts, 0).into_data().iter::<f64>().collect();
    let (losses, grad_squares) = values.split_at(n);
    StepReadout {
        losses: losses.to_vec(),
        grad_squares: grad_squares.to_vec(),
    }
}

/// The global L2 norm of the gradients whose sums of squares are `grad_squares`
/// ([`read_step`]) and the factor `torch.nn.utils.clip_grad_norm_` scales them by
/// (`max_norm / (norm + 1e-6)` above `max_norm`, else `1`; `max_norm = 0`: no clipping). A
/// non-finite norm is [`TrainError::NonFiniteLoss`] for (1-based) `step`, reporting the step's
/// `loss` and the last good checkpoint.
pub(crate) fn clip_grad_norm(
    grad_squares: &[f64],
    max_norm: f64,
    step: usize,
    loss: f64,
    last_checkpoint: &Option<PathBuf>,
) -> Result<(f64, f64)> {
    let sq: f64 = grad_squares.iter().sum();
    let norm = sq.sqrt();
    if !norm.is_finite() {
        return Err(non_finite_loss(step, loss, last_checkpoint));
    }
    let clip = if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    };
    Ok((norm, clip))
}
