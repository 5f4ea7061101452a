//! Grid search over prompt wordings × steps × seeds × guidance scales (× schedulers) with Stable
//! Diffusion or FLUX.1 in Burn (the family read from `model_index.json`), ranked by the traced SVG: few `cl100k_base` tokens and, with `--clip`, high CLIP
//! similarity to the subject. Writes `images/*.png` (background-normalised), `svgs/*.svg`,
//! `results.csv` and `results.md` to `--out`.
//!
//! ```text
//! cargo run --release --example sd_grid_search -- --model DIR \
//!     (--prompts FILE | --prompt "..." [--prompt "..."]) [--subject "a cat"] [--negative "..."] \
//!     --steps 10,20 --seeds 1,2 --guidance 5,7.5 [--schedulers dpmpp-2m,euler-a] [--karras] \
//!     [--width 512 --height 512] [--clip CLIP_DIR] [--clip-weight 10] [--token-budget 8000] \
//!     [--dtype auto|f32|bf16|f16] --out DIR
//! ```
//!
//! `--model` is a diffusers Stable Diffusion folder (real use: SD1.5) or a FLUX folder
//! (FLUX.1-schnell: defaults 4 steps, guidance 0, `flow-euler`, 1024²; for schnell the guidance
//! axis is true CFG with the negative prompt, for dev the distilled guidance); the tiny test
//! folders `svgen-train/tests/fixtures/sd/tiny-sd` and `.../flux/tiny-flux` work too. `--prompts FILE` holds one wording per
//! line (blank lines and `#` comments skipped). `--clip` is an HF CLIP folder (`config.json`,
//! `model.safetensors`, `tokenizer.json`), e.g. `openai/clip-vit-base-patch32` as in the thesis.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use svgen::eval::ClipScorer;
use svgen::train::diffusion::GridModel;
use svgen::train::flux::{FluxLoadOptions, FluxPipeline};
use svgen::train::sd::grid::{grid_search, GridSpec, TraceTokenScorer};
use svgen::train::sd::pipeline::StableDiffusion;
use svgen::train::sd::scheduler::SchedulerKind;
use svgen::DefaultBackend;

#[derive(Parser)]
struct Args {
    /// Model dtype: `auto` (FLUX: bf16 on CUDA, f32 on CPU; SD: f32), f32, bf16 or f16; checked
    /// against the backend before loading (typed error). FLUX applies it to the transformer and
    /// T5; Stable Diffusion loads in f32 only, so bf16/f16 with an SD folder is a typed error.
    /// The `--clip` scorer stays f32.
    #[arg(long, default_value = "auto")]
    dtype: String,
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
    /// Inference step counts (default: sd 25, flux 4).
    #[arg(long, value_delimiter = ',')]
    steps: Vec<usize>,
    /// Seeds.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    seeds: Vec<u64>,
    /// Guidance scales (default: sd 7.5, flux 0).
    #[arg(long, value_delimiter = ',')]
    guidance: Vec<f64>,
    /// Schedulers (sd: ddim, euler, euler-a, dpmpp-2m, default dpmpp-2m; flux: flow-euler).
    #[arg(long, value_delimiter = ',')]
    schedulers: Vec<SchedulerKind>,
    /// Karras noise levels for Euler and DPM-Solver.
    #[arg(long)]
    karras: bool,
    /// Width in pixels (default: sd the UNet's sample_size × 8, flux 1024).
    #[arg(long)]
    width: Option<usize>,
    /// Height in pixels (default: sd the UNet's sample_size × 8, flux 1024).
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
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
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
    let index = args.model.join("model_index.json");
    let class: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&index).map_err(|e| format!("cannot read {}: {e}", index.display()))?,
    )?;
    let is_flux = class["_class_name"].as_str() == Some("FluxPipeline");
    let (model, d): (Box<dyn GridModel>, GridSpec) = if is_flux {
        let flux = FluxPipeline::<DefaultBackend>::from_pretrained(
            &args.model,
            &FluxLoadOptions::from_flag::<DefaultBackend>(&args.dtype, &device)?,
            &device,
        )?;
        (Box::new(flux), GridSpec::flux_schnell())
    } else {
        if args.dtype != "auto" {
            let dtype =
                svgen::eval::dtype::dtype_for_backend::<DefaultBackend>(&args.dtype, &device)?;
            svgen::eval::dtype::require_f32(dtype, "sd_grid_search with Stable Diffusion")?;
        }
        let sd = StableDiffusion::<DefaultBackend>::from_pretrained(&args.model, &device)?;
        let side = sd.default_image_size().unwrap_or(512);
        let d = GridSpec {
            width: side,
            height: side,
            ..GridSpec::default()
        };
        (Box::new(sd), d)
    };
    let or = |v: Vec<_>, d: Vec<_>| if v.is_empty() { d } else { v };
    let spec = GridSpec {
        prompts,
        subject: args.subject,
        negative_prompt: args.negative,
        steps: or(args.steps, d.steps.clone()),
        seeds: args.seeds,
        guidance_scales: if args.guidance.is_empty() {
            d.guidance_scales.clone()
        } else {
            args.guidance
        },
        schedulers: if args.schedulers.is_empty() {
            d.schedulers.clone()
        } else {
            args.schedulers
        },
        karras_sigmas: args.karras,
        width: args.width.unwrap_or(d.width),
        height: args.height.unwrap_or(d.height),
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
    let report = grid_search(
        model.as_ref(),
        &spec,
        &scorer,
        Some(&args.out),
        &mut |done, total| {
            eprint!(
                "\r{done}/{total} images, {:.1}s",
                t0.elapsed().as_secs_f64()
            );
        },
    )?;
    eprintln!();
    let md = report.to_markdown();
    for line in md.lines().take(12) {
        println!("{line}");
    }
    println!("\nfull table: {}", args.out.join("results.md").display());
    Ok(())
}
