//! Grid search over prompt wordings × steps × seeds × guidance scales (× schedulers) with Stable
//! Diffusion in Burn, ranked by the traced SVG: few `cl100k_base` tokens and, with `--clip`, high CLIP
//! similarity to the subject. Writes `images/*.png` (background-normalised), `svgs/*.svg`,
//! `results.csv` and `results.md` to `--out`.
//!
//! ```text
//! cargo run --release --example sd_grid_search -- --model DIR \
//!     (--prompts FILE | --prompt "..." [--prompt "..."]) [--subject "a cat"] [--negative "..."] \
//!     --steps 10,20 --seeds 1,2 --guidance 5,7.5 [--schedulers dpmpp-2m,euler-a] [--karras] \
//!     [--width 512 --height 512] [--clip CLIP_DIR] [--clip-weight 10] [--token-budget 8000] --out DIR
//! ```
//!
//! `--model` is a diffusers Stable Diffusion folder (real use: SD1.5); the tiny test folder
//! `svgen-train/tests/fixtures/sd/tiny-sd` works too. `--prompts FILE` holds one wording per
//! line (blank lines and `#` comments skipped). `--clip` is an HF CLIP folder (`config.json`,
//! `model.safetensors`, `tokenizer.json`), e.g. `openai/clip-vit-base-patch32` as in the thesis.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use svgen::eval::ClipScorer;
use svgen::train::sd::grid::{grid_search, GridSpec, TraceTokenScorer};
use svgen::train::sd::pipeline::StableDiffusion;
use svgen::train::sd::scheduler::SchedulerKind;
use svgen::DefaultBackend;

#[derive(Parser)]
struct Args {
    /// diffusers Stable Diffusion folder.
    #[arg(long)]
    model: PathBuf,
    /// File with one prompt wording per line.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// A prompt wording (repeatable).
    #[arg(long)]
    prompt: Vec<String>,
    /// What the image should show (text for CLIP similarity; default: each prompt).
    #[arg(long)]
    subject: Option<String>,
    /// Negative prompt.
    #[arg(long)]
    negative: Option<String>,
    /// Inference step counts.
    #[arg(long, value_delimiter = ',', default_value = "25")]
    steps: Vec<usize>,
    /// Seeds.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    seeds: Vec<u64>,
    /// Guidance scales.
    #[arg(long, value_delimiter = ',', default_value = "7.5")]
    guidance: Vec<f64>,
    /// Schedulers (ddim, euler, euler-a, dpmpp-2m).
    #[arg(long, value_delimiter = ',', default_value = "dpmpp-2m")]
    schedulers: Vec<SchedulerKind>,
    /// Karras noise levels for Euler and DPM-Solver.
    #[arg(long)]
    karras: bool,
    /// Width in pixels (default: the UNet's sample_size × 8).
    #[arg(long)]
    width: Option<usize>,
    /// Height in pixels (default: the UNet's sample_size × 8).
    #[arg(long)]
    height: Option<usize>,
    /// HF CLIP folder for similarity scoring.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Weight of the CLIP cosine in the score.
    #[arg(long, default_value_t = 10.0)]
    clip_weight: f64,
    /// Tokens costing one unit of score.
    #[arg(long, default_value_t = 8000.0)]
    token_budget: f64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut prompts = args.prompt.clone();
    if let Some(file) = &args.prompts {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        prompts.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    if prompts.is_empty() {
        return Err("give --prompts FILE or at least one --prompt".into());
    }
    let device = Default::default();
    let sd = StableDiffusion::<DefaultBackend>::from_pretrained(&args.model, &device)?;
    let side = sd.default_image_size().unwrap_or(512);
    let spec = GridSpec {
        prompts,
        subject: args.subject,
        negative_prompt: args.negative,
        steps: args.steps,
        seeds: args.seeds,
        guidance_scales: args.guidance,
        schedulers: args.schedulers,
        karras_sigmas: args.karras,
        width: args.width.unwrap_or(side),
        height: args.height.unwrap_or(side),
        ..GridSpec::default()
    };
    let clip = match &args.clip {
        Some(dir) => Some(ClipScorer::<DefaultBackend>::from_pretrained(dir, &device)?),
        None => None,
    };
    let mut scorer = TraceTokenScorer::new();
    scorer.clip_weight = args.clip_weight;
    scorer.token_budget = args.token_budget;
    if let Some(clip) = &clip {
        scorer = scorer.with_clip(clip);
    }
    let t0 = Instant::now();
    let report = grid_search(&sd, &spec, &scorer, Some(&args.out), &mut |done, total| {
        eprint!(
            "\r{done}/{total} images, {:.1}s",
            t0.elapsed().as_secs_f64()
        );
    })?;
    eprintln!();
    let md = report.to_markdown();
    for line in md.lines().take(12) {
        println!("{line}");
    }
    println!("\nfull table: {}", args.out.join("results.md").display());
    Ok(())
}
