//! Checkpoints shared by both trainers: the resumable run state (optimiser moments, position and
//! log) written next to the adapter, periodic and final checkpoints, and the run summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, TrainError};
use crate::weights::{read_safetensors, write_safetensors, HostTensor, StoreDtype};

/// What a finished (or interrupted) run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Optimiser steps done in total.
    pub steps: usize,
    /// The last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
    /// Final logged training loss.
    pub final_loss: Option<f64>,
}

/// The checkpoint and log handling the Llama and Stable Diffusion LoRA trainers share.
pub(crate) trait CheckpointedRun {
    /// Optimiser steps done.
    fn steps_done(&self) -> usize;
    /// `(total_steps, checkpoint_every)` of the configuration (`checkpoint_every = 0`: only at
    /// the end).
    fn checkpoint_plan(&self) -> (usize, usize);
    /// The last checkpoint written (or resumed from).
    fn last_checkpoint(&self) -> &Option<PathBuf>;
    /// The last logged training loss.
    fn last_loss(&self) -> Option<f64>;
    /// Writes `checkpoint-{step}/` and returns it.
    fn write_checkpoint(&mut self) -> Result<PathBuf>;
    /// Writes the loss logs into the output folder.
    fn write_run_logs(&self) -> Result<()>;

    /// After an optimiser step: the checkpoint every `checkpoint_every` steps.
    fn periodic_checkpoint(&mut self) -> Result<()> {
        let step = self.steps_done();
        let (_, every) = self.checkpoint_plan();
        if every > 0 && step.is_multiple_of(every) {
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// The end of a (possibly stopped) run: finishes the progress bar, writes the final
    /// checkpoint when the run reached `total_steps` and `checkpoint-{step}` was not written yet,
    /// writes the logs and returns the summary.
    fn finish_run(&mut self, bar: Option<&indicatif::ProgressBar>) -> Result<TrainSummary> {
        if let Some(pb) = bar {
            pb.finish();
        }
        let step = self.steps_done();
        let (total_steps, _) = self.checkpoint_plan();
        if step == total_steps
            && self
                .last_checkpoint()
                .as_ref()
                .is_none_or(|p| !p.ends_with(format!("checkpoint-{step}")))
        {
            self.write_checkpoint()?;
        }
        self.write_run_logs()?;
        Ok(TrainSummary {
            steps: step,
            last_checkpoint: self.last_checkpoint().clone(),
            final_loss: self.last_loss(),
        })
    }
}

/// Implements [`CheckpointedRun`] for a trainer `$trainer<B: AutodiffBackend>` with fields
/// `state` (`step`, `log` of entries with `loss`), `cfg` (`total_steps`, `checkpoint_every`) and
/// `last_checkpoint`, and methods `save_checkpoint` and `write_logs`.
macro_rules! impl_checkpointed_run {
    ($trainer:ident) => {
        impl<B: burn::tensor::backend::AutodiffBackend> $crate::train::CheckpointedRun
            for $trainer<B>
        {
            fn steps_done(&self) -> usize {
                self.state.step
            }

            fn checkpoint_plan(&self) -> (usize, usize) {
                (self.cfg.total_steps, self.cfg.checkpoint_every)
            }

            fn last_checkpoint(&self) -> &Option<std::path::PathBuf> {
                &self.last_checkpoint
            }

            fn last_loss(&self) -> Option<f64> {
                self.state.log.last().map(|e| e.loss)
            }

            fn write_checkpoint(&mut self) -> $crate::error::Result<std::path::PathBuf> {
                self.save_checkpoint()
            }

            fn write_run_logs(&self) -> $crate::error::Result<()> {
                self.write_logs()
            }
        }
    };
}
pub(crate) use impl_checkpointed_run;

/// Writes the resumable part of a checkpoint into `dir`: the optimiser moments
/// (`optimizer.safetensors`, f32) and the position and log (`trainer_state.json`).
pub(crate) fn write_run_state(
    dir: &Path,
    optimizer: &BTreeMap<String, HostTensor>,
    state: &impl Serialize,
) -> Result<()> {
    write_safetensors(
        dir.join("optimizer.safetensors"),
        optimizer,
        StoreDtype::F32,
        None,
    )?;
    let p = dir.join("trainer_state.json");
    let text = serde_json::to_string_pretty(state).map_err(|e| TrainError::json(&p, e))?;
    std::fs::write(&p, text).map_err(|e| TrainError::io(&p, e))
}

/// Reads what [`write_run_state`] wrote into checkpoint `dir`: the position and log, the
/// optimiser moments and the path they were read from.
pub(crate) fn read_run_state<S: DeserializeOwned>(
    dir: &Path,
) -> Result<(S, BTreeMap<String, HostTensor>, PathBuf)> {
    let state_path = dir.join("trainer_state.json");
    let text = TrainError::read_text_capped(&state_path, svgen_core::io::MAX_METADATA_BYTES)?;
    let state = serde_json::from_str(&text).map_err(|e| TrainError::json(&state_path, e))?;
    let opt_path = dir.join("optimizer.safetensors");
    let opt = read_safetensors(&opt_path)?;
    Ok((state, opt, opt_path))
}
