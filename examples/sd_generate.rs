//! Text-to-image with Stable Diffusion in Burn (classifier-free guidance, negative prompt, four
//! schedulers, deterministic seeds).
//!
//! ```text
//! cargo run --release --example sd_generate -- --model DIR --prompt "a cat, black silhouette" \
//!     [--negative "photo, text"] [--steps 25] [--guidance 7.5] [--seed 0] \
//!     [--scheduler ddim|euler|euler-a|dpmpp-2m] [--karras] [--width 512 --height 512] [--batch 1] \
//!     [--attention-slice N] [--clip-skip N] [--out sd.png] [--dtype f32]
//! ```
//!
//! `--model` is a diffusers Stable Diffusion folder (`model_index.json`, `text_encoder/`, `tokenizer/`,
//! `unet/`, `vae/`, `scheduler/`), e.g. a local copy of `stable-diffusion-v1-5/stable-diffusion-v1-5`.
//! The tiny test folder `svgen-train/tests/fixtures/sd/tiny-sd` works too (random weights, 64 px).
//! Image `i` of a batch uses seed `seed + i`; with `--batch > 1` the files are `<out>-<i>.png`.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use svgen::train::sd::pipeline::{to_rgb_images, GenerateParams, StableDiffusion};
use svgen::train::sd::scheduler::SchedulerKind;
use svgen::DefaultBackend;

#[derive(Parser)]
struct Args {
    /// Weight dtype. Only `f32`: the Stable Diffusion loaders (UNet, VAE, CLIP text encoder) have no dtype option yet; `bf16` / `f16` are a typed error before loading.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// diffusers Stable Diffusion folder.
    #[arg(long)]
    model: PathBuf,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// The negative prompt.
    #[arg(long)]
    negative: Option<String>,
    /// Inference steps.
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// Classifier-free guidance scale (≤ 1 disables guidance).
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// ddim, euler, euler-a or dpmpp-2m.
    #[arg(long, default_value = "dpmpp-2m")]
    scheduler: SchedulerKind,
    /// Karras noise levels (Euler, DPM-Solver): `--scheduler dpmpp-2m --karras` is "DPM++ 2M Karras".
    #[arg(long)]
    karras: bool,
    /// Width in pixels (default: the UNet's sample_size × 8).
    #[arg(long)]
    width: Option<usize>,
    /// Height in pixels (default: the UNet's sample_size × 8).
    #[arg(long)]
    height: Option<usize>,
    /// Images to generate.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Sliced attention: queries per chunk (bounds memory at large sizes).
    #[arg(long)]
    attention_slice: Option<usize>,
    /// CLIP skip (layers before the last).
    #[arg(long)]
    clip_skip: Option<usize>,
    /// Output PNG.
    #[arg(long, default_value = "sd.png")]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    let args = Args::parse();
    let device = Default::default();
    let dtype = svgen::eval::dtype::dtype_for_backend::<DefaultBackend>(&args.dtype, &device)?;
    svgen::eval::dtype::require_f32(dtype, "sd_generate (f32-only loaders)")?;
    let t0 = Instant::now();
    let mut sd = StableDiffusion::<DefaultBackend>::from_pretrained(&args.model, &device)?;
    sd.set_attention_slice(args.attention_slice);
    eprintln!(
        "loaded {} in {:.2}s",
        args.model.display(),
        t0.elapsed().as_secs_f64()
    );
    let side = sd.default_image_size().unwrap_or(512);
    let params = GenerateParams {
        prompt: args.prompt,
        negative_prompt: args.negative,
        steps: args.steps,
        guidance_scale: args.guidance,
        seed: args.seed,
        width: args.width.unwrap_or(side),
        height: args.height.unwrap_or(side),
        scheduler: args.scheduler,
        karras_sigmas: args.karras,
        latents: None,
        batch: args.batch,
        clip_skip: args.clip_skip,
    };
    let t1 = Instant::now();
    let latents = sd.denoise_with_progress(&params, &mut |done, total| {
        eprint!("\rstep {done}/{total} ({:.1}s)", t1.elapsed().as_secs_f64());
    })?;
    eprintln!();
    let images = to_rgb_images(sd.decode_latents(latents))?;
    let secs = t1.elapsed().as_secs_f64();
    eprintln!(
        "{} image(s) {}x{}, {} {} steps, guidance {}: {:.2}s ({:.3}s/step)",
        images.len(),
        params.width,
        params.height,
        params.scheduler,
        params.steps,
        params.guidance_scale,
        secs,
        secs / params.steps as f64
    );
    for (i, img) in images.iter().enumerate() {
        let path = if images.len() == 1 {
            args.out.clone()
        } else {
            let stem = args.out.file_stem().unwrap_or_default().to_string_lossy();
            args.out.with_file_name(format!("{stem}-{i}.png"))
        };
        img.save(&path)?;
        println!("{}", path.display());
    }
    Ok(())
}
