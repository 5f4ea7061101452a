//! Verifies a CLIP checkpoint against reference outputs (e.g. from transformers).
//!
//! ```text
//! cargo run --release --example clip_parity -- --model DIR --reference FILE [--tol 1e-4]
//! ```
//! `DIR`: an HF CLIP folder (`config.json` + `model.safetensors`). `FILE`: safetensors with
//! `pixel_values` [B,3,H,W] f32, `input_ids` [B,T] i64 (optionally `attention_mask` [B,T]) and the
//! expected `image_embeds`, `text_embeds`, `logits_per_image`. Prints the max abs difference of each
//! and exits with status 1 when one is above `--tol`. Build with `--features cuda` to run on CUDA.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use svgen::core::compare::max_abs_diff;
use svgen::eval::burn::prelude::*;
use svgen::eval::{ClipModel, Weights};
use svgen::DefaultBackend as B;

#[derive(Parser)]
#[command(about = "Compare svgen-eval's CLIP with reference outputs")]
struct Args {
    /// HF CLIP checkpoint folder (config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// safetensors file with inputs and expected outputs.
    #[arg(long)]
    reference: PathBuf,
    /// Largest accepted max abs difference.
    #[arg(long, default_value_t = 1e-4)]
    tol: f32,
}

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let device = Default::default();
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
        match max_abs_diff(&got, &exp) {
            Ok(d) => {
                let pass = d.value <= f64::from(args.tol);
                let verdict = if pass { "ok" } else { "ABOVE TOL" };
                println!("{name:<17} max abs diff {:.3e}  {verdict}", d.value);
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
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("parity FAILED (tol {:e})", args.tol);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
