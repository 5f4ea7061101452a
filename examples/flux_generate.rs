//! Text-to-image with FLUX.1 (schnell or dev) in Burn: CLIP-L pooled + T5 prompt embeddings, the
//! rectified-flow transformer, `FlowMatchEulerDiscreteScheduler`, the 16-channel VAE.
//!
//! ```text
//! cargo run --release --features cuda --example flux_generate -- --model FLUX.1-schnell \
//!     --prompt "minimal a lighthouse with clean outlines, flat fills, high contrast" \
//!     [--steps 4] [--width 1024 --height 1024] [--seed 0] [--batch 1] [--guidance 3.5] \
//!     [--negative TEXT --true-cfg 1.5] [--max-sequence-length 256] [--dtype auto|f32|bf16|f16] \
//!     [--free-text-encoders] [--out flux.png]
//! ```
//!
//! `--model` is a diffusers `FluxPipeline` folder (`model_index.json`, `transformer/`,
//! `text_encoder/`, `text_encoder_2/`, `tokenizer/`, `tokenizer_2/`, `vae/`, `scheduler/`), e.g. a
//! local copy of `black-forest-labs/FLUX.1-schnell`; the defaults are the checkpoint's (schnell: 4
//! steps, 1024², T5 limit 256; dev: 28 steps, guidance 3.5, limit 512). The tiny test folder
//! `svgen-train/tests/fixtures/flux/tiny-flux` works too (random weights). `--free-text-encoders`
//! drops CLIP and T5 once the prompt is encoded (see `flux_memory` for the predicted peaks). Image
//! `i` of a batch uses seed `seed + i`; with `--batch > 1` the files are `<out>-<i>.png`.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use svgen::train::diffusion::image::to_rgb_images;
use svgen::train::flux::{FluxLoadOptions, FluxParams, FluxPipeline};
use svgen::DefaultBackend;

#[derive(Parser)]
struct Args {
    /// diffusers FLUX folder.
    #[arg(long)]
    model: PathBuf,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Negative prompt (used with --true-cfg > 1 only, as diffusers).
    #[arg(long)]
    negative: Option<String>,
    /// True classifier-free guidance scale (off at <= 1).
    #[arg(long)]
    true_cfg: Option<f64>,
    /// Inference steps (default: the checkpoint's).
    #[arg(long)]
    steps: Option<usize>,
    /// Distilled guidance of guidance-embedding checkpoints (FLUX.1-dev).
    #[arg(long)]
    guidance: Option<f64>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Width in pixels (a multiple of 16; default 1024).
    #[arg(long)]
    width: Option<usize>,
    /// Height in pixels (a multiple of 16; default 1024).
    #[arg(long)]
    height: Option<usize>,
    /// Images to generate.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// T5 token limit (default: schnell 256, dev 512); longer prompts are truncated.
    #[arg(long)]
    max_sequence_length: Option<usize>,
    /// Transformer and T5 dtype: auto (bf16 on CUDA, f32 on CPU), f32, bf16 or f16; checked
    /// against the backend before loading (typed error). CLIP-L and the VAE stay f32.
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// Free the text encoders once the prompt is encoded.
    #[arg(long)]
    free_text_encoders: bool,
    /// Output PNG.
    #[arg(long, default_value = "flux.png")]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    let args = Args::parse();
    let device = Default::default();
    let load = FluxLoadOptions::from_flag::<DefaultBackend>(&args.dtype, &device)?;
    let t0 = Instant::now();
    let mut flux = FluxPipeline::<DefaultBackend>::from_pretrained(&args.model, &load, &device)?;
    eprintln!(
        "loaded {} in {:.2}s",
        args.model.display(),
        t0.elapsed().as_secs_f64()
    );
    let d = if flux.transformer.config().guidance_embeds {
        FluxParams::dev()
    } else {
        FluxParams::schnell()
    };
    let p = FluxParams {
        prompt: args.prompt,
        negative_prompt: args.negative,
        true_cfg_scale: args.true_cfg.unwrap_or(d.true_cfg_scale),
        steps: args.steps.unwrap_or(d.steps),
        guidance_scale: args.guidance.unwrap_or(d.guidance_scale),
        seed: args.seed,
        width: args.width.unwrap_or(d.width),
        height: args.height.unwrap_or(d.height),
        max_sequence_length: args
            .max_sequence_length
            .unwrap_or_else(|| flux.default_max_sequence_length()),
        batch: args.batch,
        ..d
    };
    flux.check_params(&p)?;
    let t1 = Instant::now();
    let embeds = flux.encode_prompts(&[p.prompt.as_str()], p.max_sequence_length)?;
    for cut in embeds.truncated.iter().flatten() {
        eprintln!("prompt truncated by {cut} (as diffusers does)");
    }
    let negative = match (&p.negative_prompt, p.true_cfg_scale > 1.0) {
        (Some(n), true) => Some(flux.encode_prompts(&[n.as_str()], p.max_sequence_length)?),
        _ => None,
    };
    if args.free_text_encoders {
        flux.free_text_encoders();
    }
    let seeds: Vec<u64> = (0..p.batch as u64)
        .map(|i| p.seed.wrapping_add(i))
        .collect();
    let one = |e: &svgen::train::flux::FluxPromptEmbeds<DefaultBackend>| {
        let mut e = e.clone();
        if p.batch > 1 {
            e.prompt_embeds = e.prompt_embeds.repeat_dim(0, p.batch);
            e.pooled_prompt_embeds = e.pooled_prompt_embeds.repeat_dim(0, p.batch);
            e.truncated = vec![e.truncated.first().cloned().unwrap_or_default(); p.batch];
        }
        e
    };
    let (embeds, negative) = (one(&embeds), negative.as_ref().map(one));
    let encode_secs = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let latents = flux.denoise(
        &embeds,
        negative.as_ref(),
        &seeds,
        &p,
        &mut |done, total| {
            eprint!("\rstep {done}/{total} ({:.1}s)", t2.elapsed().as_secs_f64());
        },
    )?;
    eprintln!();
    let images = to_rgb_images(flux.decode_latents(latents, p.height, p.width)?)?;
    let secs = t2.elapsed().as_secs_f64();
    eprintln!(
        "{} image(s) {}x{}, {} steps: encode {:.2}s, denoise + decode {:.2}s ({:.3}s/step)",
        images.len(),
        p.width,
        p.height,
        p.steps,
        encode_secs,
        secs,
        secs / p.steps as f64
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
