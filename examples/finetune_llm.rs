//! LoRA SFT of a HF Llama on (description, SVG) pairs.
//!
//! Tiny CPU run (falling loss in about a minute, fixtures from `tools/fixtures/make_llama.py`):
//! ```text
//! cargo run --release --example finetune_llm -- \
//!   --model svgen-train/tests/fixtures/llama3-tied \
//!   --tokenizer svgen-train/tests/fixtures/tokenizer \
//!   --data svgen-train/tests/fixtures/pairs.jsonl --out /tmp/ft --steps 60
//! ```
//! Instead of `--data FILE.jsonl`, `--mmsvg FILE.parquet` (OmniSVG MMSVG) or `--shards DIR`
//! (svgen-data shards) read the pairs through svgen-data.
//!
//! With `--features cuda` the same command trains on the GPU (e.g. Llama 3 8B Instruct in
//! bf16 with `--bf16`). `--resume DIR/checkpoint-N` continues an interrupted run exactly.

use std::path::PathBuf;

use clap::Parser;
use svgen::data::pairs::PairDataset;
use svgen::train::burn::tensor::DType;
use svgen::train::llama::sft::{
    pairs_from_dataset, read_jsonl, tokenize_pairs, SftConfig, SftTrainer,
};
use svgen::train::llama::tokenizer::{LlamaTokenizer, PromptFormat, THESIS_SPECIAL_TOKENS};
use svgen::train::{Llama, LoadOptions, LoraConfig, LoraTarget};
use svgen::DefaultTrainBackend;

#[derive(Parser)]
#[command(group(clap::ArgGroup::new("source").required(true)))]
struct Args {
    /// HF Llama folder.
    #[arg(long)]
    model: PathBuf,
    /// Folder with tokenizer.json (defaults to --model).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// JSONL of {"description", "svg"}.
    #[arg(long, group = "source")]
    data: Option<PathBuf>,
    /// OmniSVG MMSVG Parquet (`id, svg, description`): one file or a folder of `*.parquet`.
    #[arg(long, group = "source")]
    mmsvg: Option<PathBuf>,
    /// Folder of svgen-data shards (positive rows, simplified captions).
    #[arg(long, group = "source")]
    shards: Option<PathBuf>,
    /// Output folder (checkpoints, logs, loss curve, final adapter).
    #[arg(long)]
    out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 60)]
    steps: usize,
    #[arg(long, default_value_t = 5e-3)]
    lr: f64,
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[arg(long, default_value_t = 1)]
    accum: usize,
    /// Longer samples are dropped (and counted), never truncated; packed rows hold at most this
    /// many tokens.
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// One sample per row instead of packing several into rows of up to --max-len tokens.
    #[arg(long)]
    no_pack: bool,
    /// Recompute each decoder layer's activations in the backward pass (less memory, about
    /// one more forward pass of compute).
    #[arg(long)]
    checkpointing: bool,
    /// Dtype of the frozen base weights: f32, bf16 or f16 (adapters and optimiser state stay
    /// f32).
    #[arg(long, conflicts_with = "bf16")]
    dtype: Option<String>,
    #[arg(long, default_value_t = 8)]
    r: usize,
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    #[arg(long, default_value_t = 0.05)]
    dropout: f64,
    #[arg(long)]
    rslora: bool,
    /// Use the Llama 3 chat format instead of "Instruction: … Response: …".
    #[arg(long)]
    chat: bool,
    /// Hold out this fraction of pairs for validation loss.
    #[arg(long, default_value_t = 0.125)]
    val_fraction: f64,
    #[arg(long, default_value_t = 20)]
    checkpoint_every: usize,
    /// Resume from a checkpoint folder.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Load the weights in bf16.
    #[arg(long)]
    bf16: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let device = Default::default();
    let mut tok = LlamaTokenizer::from_dir(a.tokenizer.as_ref().unwrap_or(&a.model))?;
    tok.add_special_tokens(&THESIS_SPECIAL_TOKENS)?;
    let dtype = match (a.dtype.as_deref(), a.bf16) {
        (Some("f32") | None, false) => DType::F32,
        (Some("bf16"), _) | (None, true) => DType::BF16,
        (Some("f16"), _) => DType::F16,
        (Some(other), _) => {
            return Err(format!("--dtype {other}: expected f32, bf16 or f16").into())
        }
    };
    let mut base =
        Llama::<DefaultTrainBackend>::from_pretrained(&a.model, LoadOptions { dtype }, &device)?;
    if tok.len() > base.config().vocab_size {
        base = base.resize_token_embeddings(tok.len())?;
    }
    let format = if a.chat {
        PromptFormat::Llama3Chat { system: None }
    } else {
        PromptFormat::InstructionResponse
    };
    let pairs = if let Some(path) = &a.data {
        read_jsonl(path)?
    } else {
        let dataset = match (&a.mmsvg, &a.shards) {
            (Some(path), _) => PairDataset::from_mmsvg_parquet(path, None)?,
            (None, Some(dir)) => PairDataset::from_shards(dir, None)?,
            (None, None) => return Err("one of --data, --mmsvg, --shards is required".into()),
        };
        if !dataset.skipped.is_empty() {
            println!("{} records skipped while loading", dataset.skipped.len());
        }
        pairs_from_dataset(dataset)
    };
    let (samples, dropped) = tokenize_pairs(&tok, &format, &pairs, a.max_len)?;
    println!(
        "{} pairs, {} kept, {dropped} dropped as longer than {} tokens",
        pairs.len(),
        samples.len(),
        a.max_len
    );
    let n_val = ((samples.len() as f64) * a.val_fraction).round() as usize;
    let (val, train) = samples.split_at(n_val.min(samples.len().saturating_sub(1)));
    let cfg = SftConfig {
        batch_size: a.batch,
        grad_accum: a.accum,
        lr: a.lr,
        warmup_steps: a.steps / 10,
        total_steps: a.steps,
        eval_every: (a.steps / 10).max(1),
        checkpoint_every: a.checkpoint_every,
        seed: a.seed,
        pad_id: tok.token_id("<|end_of_text|>").unwrap_or(0),
        progress: true,
        gradient_checkpointing: a.checkpointing,
        packing: !a.no_pack,
        max_len: a.max_len,
        ..Default::default()
    };
    let lora = LoraConfig {
        r: a.r,
        lora_alpha: a.alpha,
        lora_dropout: a.dropout,
        target_modules: LoraTarget::ALL.into_iter().collect(),
        use_rslora: a.rslora,
    };
    let name = a.model.display().to_string();
    let mut trainer = match &a.resume {
        Some(ck) => SftTrainer::resume(base, ck, cfg, &a.out, &name)?,
        None => SftTrainer::new(
            base.with_lora(&lora, a.seed)?,
            lora.clone(),
            cfg,
            &a.out,
            &name,
        )?,
    };
    let summary = trainer.train(train, val, None)?;
    let log = &trainer.state().log;
    if let (Some(first), Some(last)) = (log.first(), log.last()) {
        println!(
            "loss {:.4} -> {:.4} over {} steps; last val loss {:?}; {:.0} tokens/s",
            first.loss,
            last.loss,
            summary.steps,
            log.iter().rev().find_map(|e| e.val_loss),
            log.iter().map(|e| e.tokens_per_s).sum::<f64>() / log.len() as f64
        );
    }
    trainer
        .model()
        .save_peft_adapter(a.out.join("adapter"), &lora, &name)?;
    println!(
        "adapter: {}; log: {}",
        a.out.join("adapter").display(),
        a.out.join("loss_log.csv").display()
    );
    Ok(())
}
