//! Supervised fine-tuning of LoRA adapters on a frozen Llama: (description, SVG) pairs, their
//! tokenised samples, padded or packed micro-batches, the masked causal-LM loss (with optional
//! activation checkpointing) and the trainer.

mod data;
mod loss;
mod trainer;

pub use data::{pairs_from_dataset, read_jsonl, tokenize_pairs, Pair, SftSample, IGNORE_INDEX};
pub use loss::{batch_loss, causal_lm_loss, loss_and_grads, sft_loss, MicroBatchGrads, SftBatch};
pub use trainer::{LogEntry, SftConfig, SftTrainer, TrainerState};
