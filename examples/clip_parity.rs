//! Verifies a CLIP checkpoint against reference outputs (e.g. from transformers).
//!
//! ```text
//! cargo run --release --example clip_parity -- --model DIR --reference FILE [--tol 1e-4] [--tf32 on|off] \
//!     [--dtype f32]
//! ```
//! `DIR`: an HF CLIP folder (`config.json` + `model.safetensors`). `FILE`: safetensors with
//! `pixel_values` [B,3,H,W] f32, `input_ids` [B,T] i64 (optionally `attention_mask` [B,T]) and the
//! expected `image_embeds`, `text_embeds`, `logits_per_image`. Prints the max abs difference of each
//! and exits with status 1 when one is above its tolerance. Build with `--features cuda` to run on
//! CUDA.
//!
//! Tolerance of each output (unless `--tol`): 1e-4 on Flex (`--tf32` has no effect there). On
//! CUDA, cubecl 0.10 runs f32 matmuls in TF32 (~1e-3 relative per matmul) with no switch, so
//! `--tf32 off` is a typed error and `--tf32 on` (the default) allows
//! `1e-4 + 4e-3 · max|reference|` per output (`svgen::eval::gpu::Tf32::parity_tolerance`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use svgen::core::compare::max_abs_diff;
use svgen::eval::burn::prelude::*;
use svgen::eval::gpu::Tf32;
use svgen::eval::{ClipModel, Weights};
use svgen::DefaultBackend as B;

#[derive(Parser)]
#[command(about = "Compare svgen-eval's CLIP with reference outputs")]
struct Args {
    /// Weight dtype. Only `f32`: the CLIP loader (svgen-eval) has no dtype option yet; `bf16` / `f16` are a typed error before loading.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// HF CLIP checkpoint folder (config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// safetensors file with inputs and expected outputs.
    #[arg(long)]
    reference: PathBuf,
    /// Largest accepted max abs difference (default: 1e-4 on Flex; with TF32 on a GPU,
    /// 1e-4 + 4e-3 · max|reference| per output).
    #[arg(long)]
    tol: Option<f64>,
    /// Matmul precision on GPU backends: `on` (TF32, the only mode cubecl 0.10 offers on CUDA
    /// sm_80+) or `off` (f32; a typed error on CUDA). On Flex the flag is accepted and has no
    /// effect (Flex multiplies in f32).
    #[arg(long, default_value = "on")]
    tf32: Tf32,
}

/// CPU (f32 against PyTorch f32) tolerance.
const CPU_TOL: f64 = 1e-4;

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    args.tf32.check::<B>()?;
    let device = Default::default();
    let dtype = svgen::eval::dtype::dtype_for_backend::<B>(&args.dtype, &device)?;
    svgen::eval::dtype::require_f32(dtype, "clip_parity (f32-only loaders)")?;
    let model = ClipModel::<B>::from_pretrained(&args.model, &device)?;
    let r = Weights::from_file(&args.reference)?;
    let (pix, ps) = r.f32_any("pixel_values")?;
    let (ids, is) = r.i64_any("input_ids")?;
    if ps.len() != 4 || is.len() != 2 {
        return Err(format!(
            "pixel_values must be [B,3,H,W] (got {ps:?}), input_ids [B,T] (got {is:?})"
        )
        .into());
    }
    let pixels =
        Tensor::<B, 4>::from_data(TensorData::new(pix, [ps[0], ps[1], ps[2], ps[3]]), &device);
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [is[0], is[1]]), &device);
    let mask = if r.contains("attention_mask") {
        let (m, ms) = r.i64_any("attention_mask")?;
        if ms != is {
            return Err(
                format!("attention_mask {ms:?} must have the shape of input_ids {is:?}").into(),
            );
        }
        Some(Tensor::<B, 2, Int>::from_data(
            TensorData::new(m, [is[0], is[1]]),
            &device,
        ))
    } else {
        None
    };
    let out = model.forward(ids, mask, pixels)?;
    let mut ok = true;
    for (name, got) in [
        ("image_embeds", out.image_embeds),
        ("text_embeds", out.text_embeds),
        ("logits_per_image", out.logits_per_image),
    ] {
        let (exp, es) = r.f32_any(name)?;
        if got.dims().to_vec() != es {
            return Err(
                format!("{name}: model gives {:?}, reference has {es:?}", got.dims()).into(),
            );
        }
        let got: Vec<f32> = got
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| format!("{e:?}"))?;
        // NaN-safe and length-checked: a NaN or a missing value fails.
        let tol = args
            .tf32
            .parity_tolerance::<B>(args.tol, CPU_TOL, &exp)
            .map_err(|e| format!("{name}: {e}"))?;
        match max_abs_diff(&got, &exp) {
            Ok(d) => {
                let pass = d.value <= tol;
                let verdict = if pass { "ok" } else { "ABOVE TOL" };
                println!(
                    "{name:<17} max abs diff {:.3e}  (tol {tol:.3e}, tf32 {})  {verdict}",
                    d.value, args.tf32
                );
                ok &= pass;
            }
            Err(e) => {
                println!("{name:<17} {e}");
                ok = false;
            }
        }
    }
    Ok(ok)
}

fn main() -> ExitCode {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("parity FAILED");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
