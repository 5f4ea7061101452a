//! Scores (prompt, SVG) pairs and writes the evaluation report.
//!
//! ```text
//! cargo run --release --example score_svgs -- --clip DIR [--aesthetic FILE] [--dtype f32] PAIRS.jsonl OUT_DIR
//! ```
//! `DIR`: an HF CLIP folder (`config.json`, `model.safetensors`, `tokenizer.json`, optionally
//! `preprocessor_config.json`). `FILE`: a LAION aesthetic head (`.pth` or `.safetensors`; needs a
//! ViT-L/14 CLIP). `PAIRS.jsonl`: one `{"prompt": ..., "svg": ...}` (optional `"id"`; `"description"`
//! is accepted for `"prompt"`) per line. CPU by default, CUDA with `--features cuda`.
//! Writes samples.csv, report.json, summary.json, summary.md, contact_sheet.png and hist_*.png.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use svgen::core::tokens::Cl100k;
use svgen::data::pairs::read_pairs_jsonl;
use svgen::eval::report::evaluate;
use svgen::eval::{AestheticPredictor, ClipScorer};
use svgen::DefaultBackend;

#[derive(Parser)]
#[command(about = "CLIP / aesthetic evaluation report for generated SVGs")]
struct Args {
    /// Weight dtype. Only `f32`: the CLIP loader (svgen-eval) has no dtype option yet (nor the aesthetic head); `bf16` / `f16` are a typed error before loading.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// HF CLIP checkpoint folder.
    #[arg(long)]
    clip: PathBuf,
    /// LAION aesthetic head (.pth or .safetensors).
    #[arg(long)]
    aesthetic: Option<PathBuf>,
    /// Side in pixels SVGs are rendered at before CLIP preprocessing.
    #[arg(long, default_value_t = 448)]
    render_side: u32,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Input pairs, JSON lines.
    pairs: PathBuf,
    /// Output folder.
    out_dir: PathBuf,
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = Default::default();
    let dtype = svgen::eval::dtype::dtype_for_backend::<DefaultBackend>(&args.dtype, &device)?;
    svgen::eval::dtype::require_f32(dtype, "score_svgs (f32-only loaders)")?;
    let mut scorer = ClipScorer::<DefaultBackend>::from_pretrained(&args.clip, &device)?
        .with_render_side(args.render_side)
        .with_batch_size(args.batch_size);
    if let Some(a) = &args.aesthetic {
        scorer = scorer.with_aesthetic(AestheticPredictor::from_file(a, &device)?)?;
    }
    let pairs = read_pairs_jsonl(&args.pairs)?;
    let t0 = std::time::Instant::now();
    let report = evaluate(&scorer, &pairs, &Cl100k)?;
    let files = report.write_all(&args.out_dir)?;
    println!("{}", report.markdown());
    println!(
        "scored {} pairs in {:.1}s; wrote:",
        pairs.len(),
        t0.elapsed().as_secs_f64()
    );
    for f in files {
        println!("  {}", f.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
