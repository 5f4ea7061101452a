//! LoRA SFT of a HF Llama on (description, SVG) pairs, in the thesis' format by default:
//! `<|ctx|>Create a valid minimal SVG for: {description}<|objs|>` then the SVG and
//! `<|end_svg|>`. The three special tokens are added to the tokenizer when missing (the model is
//! resized) and their rows of `embed_tokens` / `lm_head` train with the LoRA adapter (PEFT's
//! `trainable_token_indices`; `--train-tokens full` trains the whole matrices instead).
//!
//! Tiny CPU run (falling loss in about a minute, fixtures from
//! `tools/fixtures/make_llama3_layout.py`):
//! ```text
//! cargo run --release --example finetune_llm -- \
//!   --model svgen-train/tests/fixtures/llama3-layout/tied \
//!   --tokenizer svgen-train/tests/fixtures/llama3-layout/tokenizer \
//!   --data svgen-train/tests/fixtures/pairs.jsonl --out /tmp/ft --steps 60
//! ```
//! MMSVG-Icon as in the thesis (descriptions and SVGs filtered by token count, never truncated):
//! ```text
//! cargo run --release --features cuda --example finetune_llm -- \
//!   --model Meta-Llama-3-8B-Instruct --bf16 --mmsvg MMSVG-Icon/ \
//!   --max-svg-tokens 2048 --max-description-tokens 128 --max-len 2304 \
//!   --batch 4 --accum 8 --steps 2000 --out runs/mmsvg
//! ```
//! Instead of `--data FILE.jsonl` or `--mmsvg FILE_OR_DIR`, `--shards DIR` reads svgen-data
//! shards. `--format chat` uses the checkpoint's chat template (`tokenizer_config.json` or
//! `chat_template.jinja`, e.g. Llama 3.1/3.2 Instruct with their system block, or Llama 2's
//! `[INST]`). `--resume DIR/checkpoint-N` continues an interrupted run exactly.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use svgen::data::pairs::PairDataset;
use svgen::train::llama::lora::check_adapter_tokens;
use svgen::train::llama::sft::{
    pairs_from_dataset, read_jsonl, tokenize_pairs_limited, LengthLimits, SftConfig, SftTrainer,
};
use svgen::train::llama::tokenizer::{
    LlamaTokenizer, PromptFormat, ThesisPrompt, THESIS_PROMPT, THESIS_SPECIAL_TOKENS,
};
use svgen::train::llama::trainable_tokens::TrainableTokenIndices;
use svgen::train::{Llama, LoadOptions, LoraConfig, LoraTarget};
use svgen::DefaultTrainBackend;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// `<|ctx|>… {description}<|objs|>` SVG `<|end_svg|>` (the thesis).
    Thesis,
    /// The checkpoint's chat template.
    Chat,
    /// `Instruction: {description}\nResponse: ` SVG `<|end_svg|>`.
    Instruction,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TrainTokens {
    /// The rows of the thesis' tokens (PEFT `trainable_token_indices`).
    Rows,
    /// `embed_tokens` and `lm_head` whole (PEFT `modules_to_save`).
    Full,
    /// Frozen (their logits stay equal: only for comparison).
    None,
}

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
    /// Prompt format.
    #[arg(long, value_enum, default_value_t = Format::Thesis)]
    format: Format,
    /// The thesis prompt, with `{description}` once.
    #[arg(long, default_value = THESIS_PROMPT)]
    prompt_template: String,
    /// System prompt of the chat format.
    #[arg(long)]
    system: Option<String>,
    /// How the embedding rows of the thesis' tokens train.
    #[arg(long, value_enum, default_value_t = TrainTokens::Rows)]
    train_tokens: TrainTokens,
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
    /// Pairs whose SVG has more tokens are dropped (the thesis' MMSVG filter).
    #[arg(long)]
    max_svg_tokens: Option<usize>,
    /// Pairs whose description has more tokens are dropped.
    #[arg(long)]
    max_description_tokens: Option<usize>,
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
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    let a = Args::parse();
    let device = Default::default();
    let mut tok = LlamaTokenizer::from_dir(a.tokenizer.as_ref().unwrap_or(&a.model))?;
    let added = tok.ensure_thesis_tokens()?;
    if let Some(message) = added.message() {
        println!("{message}");
    }
    let format = match a.format {
        Format::Thesis => PromptFormat::Thesis(ThesisPrompt::new(&a.prompt_template)?),
        Format::Chat => PromptFormat::Chat {
            system: a.system.clone(),
        },
        Format::Instruction => PromptFormat::InstructionResponse,
    };
    let options = match (a.dtype.as_deref(), a.bf16) {
        (None, true) => LoadOptions::from_flag("bf16")?,
        (flag, _) => LoadOptions::from_flag(flag.unwrap_or("f32"))?,
    };
    // Refused before the checkpoint is opened when the backend cannot compute in the dtype.
    options.check_backend::<DefaultTrainBackend>(&device)?;
    let mut base = Llama::<DefaultTrainBackend>::from_pretrained(&a.model, options, &device)?;
    if tok.len() > base.config().vocab_size {
        println!(
            "resizing the embeddings from {} to {} rows (mean of the existing rows)",
            base.config().vocab_size,
            tok.len()
        );
        base = base.resize_token_embeddings(tok.len())?;
    }
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
    let limits = LengthLimits {
        max_len: a.max_len,
        max_svg_tokens: a.max_svg_tokens.unwrap_or(usize::MAX),
        max_description_tokens: a.max_description_tokens.unwrap_or(usize::MAX),
    };
    let (samples, report) = tokenize_pairs_limited(&tok, &format, &pairs, &limits)?;
    println!("{} pairs: {report}", pairs.len());
    if samples.len() < 2 {
        return Err("fewer than two pairs left after filtering".into());
    }
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
    let trainer = match &a.resume {
        Some(ck) => {
            check_adapter_tokens(ck, &tok)?;
            SftTrainer::resume(base, ck, cfg, &a.out, &name)?
        }
        None => {
            let mut model = base.with_lora(&lora, a.seed)?;
            model = match a.train_tokens {
                TrainTokens::Rows => {
                    let ids: Vec<u32> = THESIS_SPECIAL_TOKENS
                        .iter()
                        .filter_map(|t| tok.token_id(t))
                        .collect();
                    model.with_trainable_tokens(&TrainableTokenIndices::new_tokens(&ids))?
                }
                TrainTokens::Full => model.with_modules_to_save()?,
                TrainTokens::None => model,
            };
            println!(
                "trainable: {} LoRA + {} embedding parameters",
                model.num_lora_params(),
                model.num_token_params()
            );
            SftTrainer::new(model, lora.clone(), cfg, &a.out, &name)?
        }
    };
    let mut trainer = trainer.with_tokenizer(tok.clone());
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
    let adapter = a.out.join("adapter");
    trainer.model().save_peft_adapter(&adapter, &lora, &name)?;
    tok.save_pretrained(&adapter)?;
    println!(
        "adapter: {}; log: {}",
        adapter.display(),
        a.out.join("loss_log.csv").display()
    );
    Ok(())
}
