//! Tensor helpers shared by both model families: parameters built from host data (frozen base
//! weights, trainable adapters), host copies of tensors and the row-major transpose used at the
//! checkpoint boundary (PyTorch `[out, in]` linears are held `[in, out]`).

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Shape, Tensor, TensorData};

use crate::error::{Result, TrainError};

/// A tensor's name and dtype, for [`check_dtypes`].
pub(crate) type Named = (&'static str, DType);

/// Checks that two tensors meeting in `op` share one dtype; [`TrainError::DtypeMismatch`]
/// naming both otherwise. Runs in release builds too: backends that bind both operands of a
/// binary op with the left one's dtype (cubecl) would otherwise read reinterpreted memory.
pub(crate) fn check_dtypes(op: &str, (left, ld): Named, (right, rd): Named) -> Result<()> {
    if ld == rd {
        return Ok(());
    }
    Err(TrainError::DtypeMismatch {
        op: op.to_string(),
        left: left.to_string(),
        left_dtype: format!("{ld:?}"),
        right: right.to_string(),
        right_dtype: format!("{rd:?}"),
    })
}

/// Transposes a row-major `[rows, cols]` matrix (svgen-eval's tiled, multi-threaded
/// [`svgen_eval::weights::transpose`]; the SD loaders and the HF/PEFT writers go through here).
///
/// # Panics
/// When `data.len() != rows * cols` (callers pass checked shapes).
pub(crate) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    svgen_eval::weights::transpose(data, rows, cols)
}

/// A frozen (gradient-free) parameter from row-major host data, stored in `dtype` on `device`.
pub(crate) fn frozen_param<B: Backend, const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    dtype: DType,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let t = Tensor::<B, D>::from_data(TensorData::new(data, shape), (device, dtype));
    Param::from_tensor(t).set_require_grad(false)
}

/// A trainable parameter (gradients required) from row-major host data, stored in `dtype` on
/// `device`.
pub(crate) fn trainable_param<B: Backend, const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    dtype: DType,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(
        TensorData::new(data, shape),
        (device, dtype),
    ))
}

/// The values of a float tensor as row-major `f32` (converted from half precision if needed).
pub(crate) fn host_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    let data = t.into_data();
    let data = if data.dtype != DType::F32 {
        data.convert::<f32>()
    } else {
        data
    };
    // Conversion to f32 above makes this infallible for float tensors.
    data.into_vec::<f32>().unwrap_or_default()
}

/// Serialises [`seeded_random`]: Burn's generator is one per backend and process.
static SEEDED_DRAW: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `Tensor::random` drawn on the device right after `B::seed(device, seed)`, the two under one
/// process-wide lock so that no other seeded draw of this crate runs between them: the result
/// depends only on `seed` (and the backend), whatever other threads of this crate draw.
pub(crate) fn seeded_random<B: Backend, const D: usize>(
    seed: u64,
    shape: Shape,
    dist: Distribution,
    device: &B::Device,
    dtype: DType,
) -> Tensor<B, D> {
    // A poisoned lock only means another draw panicked; the guard protects no data.
    let _guard = SEEDED_DRAW
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    B::seed(device, seed);
    Tensor::random(shape, dist, (device, dtype))
}
