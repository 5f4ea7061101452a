//! Pieces of the training loop shared by both trainers: the progress bar, the finite-loss
//! checks and backend scalars as `f64`.

use std::path::PathBuf;

use crate::error::{Result, TrainError};

/// A micro-batch loss `value` of (1-based) `step` that is not finite abandons the progress bar
/// and is [`TrainError::NonFiniteLoss`] naming the last good checkpoint.
pub(crate) fn check_finite_loss(
    value: f64,
    step: usize,
    last_checkpoint: &Option<PathBuf>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<()> {
    if value.is_finite() {
        return Ok(());
    }
    if let Some(pb) = bar {
        pb.abandon();
    }
    Err(non_finite_loss(step, value, last_checkpoint))
}

/// [`TrainError::NonFiniteLoss`] for (1-based) `step` with its `loss` and the last good
/// checkpoint.
pub(crate) fn non_finite_loss(
    step: usize,
    loss: f64,
    last_checkpoint: &Option<PathBuf>,
) -> TrainError {
    TrainError::NonFiniteLoss {
        step,
        loss: loss as f32,
        last_checkpoint: last_checkpoint.clone(),
    }
}

/// The steps progress bar on stderr (when `enabled`), at `position` of `total` steps.
pub(crate) fn progress_bar(
    enabled: bool,
    total: usize,
    position: usize,
) -> Option<indicatif::ProgressBar> {
    enabled.then(|| {
        let pb = indicatif::ProgressBar::new(total as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}<{eta_precise}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_position(position as u64);
        pb
    })
}

/// A backend scalar as `f64`.
pub(crate) trait ToF64 {
    /// The value converted to `f64`.
    fn to_f64_lossy(self) -> f64;
}

impl<E: burn::tensor::ElementConversion> ToF64 for E {
    fn to_f64_lossy(self) -> f64 {
        self.elem::<f64>()
    }
}
