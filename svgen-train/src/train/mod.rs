//! Training pieces shared by the Llama SFT and Stable Diffusion LoRA trainers: AdamW over the
//! adapter matrices, the learning-rate schedule, checkpoints with exact resume, loss logs and
//! plots, and the pieces of the run loop.

mod checkpoint;
mod log;
mod optim;
pub mod plot;
mod run;
mod schedule;

pub use checkpoint::TrainSummary;
pub(crate) use checkpoint::{
    impl_checkpointed_run, read_run_state, write_run_state, CheckpointedRun,
};
pub(crate) use log::{write_loss_logs, LoggedStep};
pub(crate) use optim::{
    accumulate_grads, adapter_grads, adapter_params, clip_grad_norm, read_step, LoraOptimizer,
};
pub(crate) use run::{check_finite_loss, progress_bar, ToF64};
pub(crate) use schedule::warmup_cosine_lr;
