//! LoRA fine-tuning of a Stable Diffusion UNet on (image, caption) pairs.
//!
//! Tiny CPU run on the test fixtures (falling loss in well under a minute; fixtures from
//! `tools/fixtures/make_sd.py` and `tools/fixtures/make_sd_lora.py`):
//! ```text
//! cargo run --release --features train --example sd_lora_train -- \
//!   --model svgen-train/tests/fixtures/sd/tiny-sd \
//!   --data svgen-train/tests/fixtures/sd/lora_train_data \
//!   --out /tmp/sd-lora --steps 60 --rank 4 --lr 1e-2 --resolution 64
//! ```
//! `--data` is a folder of images with same-named `.txt` captions, or a folder of svgen-data
//! shards (positive rows: stored PNG + caption). The output folder gets `checkpoint-N/`
//! folders (adapter, AdamW moments, position), `loss_log.{csv,json}`, `loss_curve.png`, the final
//! adapter as `pytorch_lora_weights.safetensors` (diffusers' format: load it with
//! `pipe.load_lora_weights(out)`) and a PEFT adapter folder `peft/`.
//! `--resume OUT/checkpoint-N` continues an interrupted run exactly; `--init-lora FILE` starts
//! from an existing LoRA in any supported format.
//!
//! For SD1.5 (512 px) use `--features cuda`; on CPU it works but takes minutes per step.

use std::path::PathBuf;

use clap::Parser;
use svgen::train::sd::lora::{AttnProjection, UNetLoraConfig};
use svgen::train::sd::train::{
    ImageCaption, PredictionKind, SdLoraTrainConfig, SdLoraTrainer, SdTrainingModels,
};
use svgen::DefaultTrainBackend;

#[derive(Parser)]
struct Args {
    /// Weight dtype. Only `f32`: the Stable Diffusion loaders (UNet, VAE, CLIP text encoder) have no dtype option yet (adapters and AdamW moments are f32 anyway); `bf16` / `f16` are a typed error before loading.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Diffusers pipeline folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long)]
    model: PathBuf,
    /// Images + .txt captions, or svgen-data shards.
    #[arg(long)]
    data: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 4)]
    rank: usize,
    /// lora_alpha (defaults to the rank: scale 1).
    #[arg(long)]
    alpha: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    #[arg(long)]
    rslora: bool,
    /// Comma-separated targets among to_q,to_k,to_v,to_out.0.
    #[arg(long, default_value = "to_q,to_k,to_v,to_out.0")]
    targets: String,
    /// Only modules whose path contains one of these (comma-separated), e.g. `attn2`.
    #[arg(long)]
    filter: Option<String>,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    #[arg(long, default_value_t = 1e-2)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 1)]
    accum: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 512)]
    resolution: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// Sliced attention: process queries N at a time (bounds memory at 512 px).
    #[arg(long)]
    attention_slice: Option<usize>,
    /// Encode images and captions every step instead of once.
    #[arg(long)]
    no_cache: bool,
    /// Training target override: epsilon or v_prediction (default: the scheduler's).
    #[arg(long)]
    prediction_type: Option<String>,
    /// Continue from OUT/checkpoint-N.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Start from an existing LoRA (diffusers, PEFT or kohya file) instead of fresh adapters;
    /// --rank must match its rank.
    #[arg(long, conflicts_with = "resume")]
    init_lora: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    let args = Args::parse();
    let device = Default::default();
    let dtype = svgen::eval::dtype::dtype_for_backend::<DefaultTrainBackend>(&args.dtype, &device)?;
    svgen::eval::dtype::require_f32(dtype, "sd_lora_train (f32-only loaders)")?;
    let mut targets = std::collections::BTreeSet::new();
    for t in args
        .targets
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        targets.insert(
            AttnProjection::from_module_name(t)
                .ok_or_else(|| format!("unknown target `{t}` (to_q, to_k, to_v, to_out.0)"))?,
        );
    }
    let lora = UNetLoraConfig {
        r: args.rank,
        lora_alpha: args.alpha.unwrap_or(args.rank as f64),
        lora_dropout: args.dropout,
        use_rslora: args.rslora,
        target_modules: targets,
        module_filter: args
            .filter
            .as_deref()
            .map(|f| f.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default(),
        ..UNetLoraConfig::default()
    };
    let prediction_type = match args.prediction_type.as_deref() {
        None => None,
        Some("epsilon") => Some(PredictionKind::Epsilon),
        Some("v_prediction") => Some(PredictionKind::VPrediction),
        Some(other) => return Err(format!("unknown prediction type `{other}`").into()),
    };
    let cfg = SdLoraTrainConfig {
        resolution: args.resolution,
        batch_size: args.batch,
        grad_accum: args.accum,
        lr: args.lr,
        weight_decay: args.weight_decay,
        warmup_steps: args.warmup,
        total_steps: args.steps,
        max_grad_norm: args.max_grad_norm,
        checkpoint_every: args.checkpoint_every,
        seed: args.seed,
        cache: !args.no_cache,
        prediction_type,
        progress: true,
        ..SdLoraTrainConfig::default()
    };
    let data = ImageCaption::load(&args.data)?;
    eprintln!(
        "{} training images from {}",
        data.len(),
        args.data.display()
    );
    let mut models =
        SdTrainingModels::<DefaultTrainBackend>::from_pretrained(&args.model, &device)?;
    models.unet.set_attention_slice(args.attention_slice);
    let mut trainer = match (&args.resume, &args.init_lora) {
        (Some(ck), _) => SdLoraTrainer::resume(models, lora.clone(), ck, cfg, &args.out)?,
        (None, Some(init)) => {
            let report = models.unet.load_lora(init)?;
            eprintln!(
                "starting from {} ({:?}, {} modules)",
                init.display(),
                report.format,
                report.modules.len()
            );
            SdLoraTrainer::continue_adapters(models, lora.clone(), cfg, &args.out)?
        }
        (None, None) => SdLoraTrainer::new(models, lora.clone(), cfg, &args.out)?,
    };
    eprintln!(
        "{} LoRA parameters in {} modules",
        trainer.unet().num_lora_params(),
        trainer.unet().lora_state().len() / 2
    );
    let summary = trainer.train(&data, None)?;
    let log = &trainer.state().log;
    let k = (log.len() / 5).max(1);
    let mean = |s: &[svgen::train::sd::train::SdLogEntry]| {
        s.iter().map(|e| e.loss).sum::<f64>() / s.len().max(1) as f64
    };
    println!(
        "steps {}  mean loss first {k}: {:.4}  last {k}: {:.4}",
        summary.steps,
        mean(&log[..k.min(log.len())]),
        mean(&log[log.len().saturating_sub(k)..])
    );
    trainer.unet().save_lora_weights(&lora, &args.out)?;
    trainer.unet().save_peft_adapter(
        &lora,
        args.out.join("peft"),
        Some(&args.model.display().to_string()),
    )?;
    println!(
        "adapter: {}",
        args.out.join("pytorch_lora_weights.safetensors").display()
    );
    Ok(())
}
