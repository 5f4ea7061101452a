//! Loss logs shared by both trainers: CSV, JSON and a PNG loss curve.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::{Result, TrainError};

/// One logged optimiser step of a trainer's loss log.
pub(crate) trait LoggedStep: Serialize {
    /// The 1-based optimiser step.
    fn step(&self) -> usize;
    /// The training loss.
    fn loss(&self) -> f64;
    /// The validation loss, when evaluated at this step.
    fn val_loss(&self) -> Option<f64> {
        None
    }
}

/// Writes `loss_log.csv` (the given text), `loss_log.json` (`log`) and `loss_curve.png` (the
/// training and validation losses of `log` by step) into `out_dir`.
pub(crate) fn write_loss_logs<E: LoggedStep>(
    out_dir: &Path,
    csv_text: &str,
    log: &[E],
) -> Result<()> {
    let csv = out_dir.join("loss_log.csv");
    let mut f = std::fs::File::create(&csv).map_err(|e| TrainError::io(&csv, e))?;
    f.write_all(csv_text.as_bytes())
        .map_err(|e| TrainError::io(&csv, e))?;
    let json = out_dir.join("loss_log.json");
    let s = serde_json::to_string_pretty(log).map_err(|e| TrainError::json(&json, e))?;
    std::fs::write(&json, s).map_err(|e| TrainError::io(&json, e))?;
    let train: Vec<(f64, f64)> = log.iter().map(|e| (e.step() as f64, e.loss())).collect();
    let val: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|e| e.val_loss().map(|v| (e.step() as f64, v)))
        .collect();
    super::plot::loss_curve_png(out_dir.join("loss_curve.png"), &train, &val)
}
