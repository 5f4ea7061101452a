//! Text-to-image wall time of a diffusers folder (Stable Diffusion or FLUX.1, read from
//! `model_index.json`) in Burn: the svgen side of `tools/diffusion_bench/compare.py`, which runs it
//! alternately with the diffusers side (`bench_diffusers.py`) on the same threads.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release --example diffusion_speed -- \
//!     --model svgen-train/tests/fixtures/flux/tiny-flux --steps 4 --width 64 --height 64 --runs 5
//! ```
//! Each run is the whole call a user makes: prompt encoding, denoising and VAE decoding to RGB
//! (loading excluded), after `--warmup` untimed runs. Stable Diffusion runs DDIM with guidance 7.5
//! (classifier-free guidance, so the UNet sees twice the batch); FLUX its schnell settings with
//! T5 limit `--max-sequence-length`. Prints one JSON line: `{"side":"svgen","family",…,"times":[s…]}`.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use svgen::train::flux::{FluxLoadOptions, FluxParams, FluxPipeline};
use svgen::train::sd::pipeline::{GenerateParams, StableDiffusion};
use svgen::train::sd::scheduler::SchedulerKind;
use svgen::DefaultBackend;

type B = DefaultBackend;

/// One timed generation: seed → images made.
type RunFn = Box<dyn FnMut(u64) -> Result<usize, Box<dyn std::error::Error>>>;

#[derive(Parser)]
struct Args {
    /// diffusers folder (Stable Diffusion or FLUX).
    #[arg(long)]
    model: PathBuf,
    /// Prompt.
    #[arg(
        long,
        default_value = "minimal a lighthouse with clean outlines, flat fills"
    )]
    prompt: String,
    /// Inference steps.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Width in pixels.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Height in pixels.
    #[arg(long, default_value_t = 64)]
    height: usize,
    /// Images per call.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// FLUX T5 token limit.
    #[arg(long, default_value_t = 64)]
    max_sequence_length: usize,
    /// Stable Diffusion guidance scale.
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Untimed runs first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    let a = Args::parse();
    let index = a.model.join("model_index.json");
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&index).map_err(|e| format!("cannot read {}: {e}", index.display()))?,
    )?;
    let device = Default::default();
    let (family, mut run): (&str, RunFn) = if v["_class_name"].as_str() == Some("FluxPipeline") {
        let flux = FluxPipeline::<B>::from_pretrained(
            &a.model,
            &FluxLoadOptions::for_backend::<B>(),
            &device,
        )?;
        let p = FluxParams {
            prompt: a.prompt.clone(),
            steps: a.steps,
            width: a.width,
            height: a.height,
            batch: a.batch,
            max_sequence_length: a.max_sequence_length,
            ..FluxParams::schnell()
        };
        flux.check_params(&p)?;
        (
            "flux",
            Box::new(move |seed| {
                let p = FluxParams { seed, ..p.clone() };
                Ok(flux.generate(&p)?.len())
            }),
        )
    } else {
        let sd = StableDiffusion::<B>::from_pretrained(&a.model, &device)?;
        let p = GenerateParams {
            prompt: a.prompt.clone(),
            steps: a.steps,
            guidance_scale: a.guidance,
            width: a.width,
            height: a.height,
            batch: a.batch,
            scheduler: SchedulerKind::Ddim,
            ..GenerateParams::default()
        };
        sd.check_params(&p)?;
        (
            "sd",
            Box::new(move |seed| {
                let p = GenerateParams { seed, ..p.clone() };
                Ok(sd.generate(&p)?.len())
            }),
        )
    };
    for i in 0..a.warmup {
        run(i as u64)?;
    }
    let mut times = Vec::with_capacity(a.runs);
    for i in 0..a.runs {
        let t = Instant::now();
        let n = run(1000 + i as u64)?;
        times.push(t.elapsed().as_secs_f64());
        if n != a.batch {
            return Err(format!("{n} images for a batch of {}", a.batch).into());
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "side": "svgen",
            "family": family,
            "steps": a.steps,
            "width": a.width,
            "height": a.height,
            "batch": a.batch,
            "threads": std::env::var("RAYON_NUM_THREADS").ok(),
            "times": times,
        })
    );
    Ok(())
}
