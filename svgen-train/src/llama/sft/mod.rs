//! Supervised fine-tuning.

mod loss;
pub(crate) mod trainer;

pub use loss::{batch_loss, causal_lm_loss, SftSample, IGNORE_INDEX};
pub use trainer::{
    pairs_from_dataset, read_jsonl, tokenize_pairs, LogEntry, Pair, SftConfig, SftTrainer,
    TrainSummary, TrainerState,
};
