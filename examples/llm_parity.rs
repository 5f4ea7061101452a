//! Logit parity of our Burn Llama against reference logits (e.g. from transformers).
//!
//! ```text
//! cargo run --release --example llm_parity -- --model DIR --reference FILE [--tol 1e-4] [--tf32 on|off] \
//!     [--dtype f32|bf16|f16]
//! ```
//! `DIR` is a HF Llama folder; `FILE` a safetensors file with `input_ids` [B,T] (i64) and the
//! expected `logits` [B,T,V] (f32). Prints the max abs difference; exits 1 above the tolerance,
//! 2 on bad input. Runs on `svgen::DefaultBackend` (Flex; CUDA with `--features cuda`).
//!
//! Tolerance (unless `--tol`): 1e-4 on Flex (f32 throughout; `--tf32` has no effect there). On
//! CUDA, cubecl 0.10 runs f32 matmuls in TF32 (10-bit mantissa, ~1e-3 relative per matmul) with
//! no way to turn that off, so `--tf32 off` is a typed error and `--tf32 on` (the default)
//! allows `1e-4 + 4e-3 · max|reference logit|` (`svgen::eval::gpu::Tf32::parity_tolerance`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use svgen::core::compare::max_abs_diff;
use svgen::eval::gpu::Tf32;
use svgen::train::burn::tensor::{Int, Tensor, TensorData};
use svgen::train::weights::read_safetensors;
use svgen::train::{Llama, LoadOptions};
use svgen::DefaultBackend as B;

#[derive(Parser)]
struct Args {
    /// HF Llama folder (config.json + safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Safetensors file with `input_ids` and `logits`.
    #[arg(long)]
    reference: PathBuf,
    /// Maximum allowed absolute difference (default: 1e-4 on Flex; with TF32 on a GPU,
    /// 1e-4 + 4e-3 · max|reference logit|).
    #[arg(long)]
    tol: Option<f64>,
    /// Matmul precision on GPU backends: `on` (TF32, the only mode cubecl 0.10 offers on CUDA
    /// sm_80+) or `off` (f32; a typed error on CUDA). On Flex the flag is accepted and has no
    /// effect (Flex multiplies in f32).
    #[arg(long, default_value = "on")]
    tf32: Tf32,
    /// Weight and compute dtype: f32 (the default, what the default tolerance is for), bf16 or
    /// f16; checked against the backend before loading (typed error). Half precision rounds each
    /// weight and activation (bf16: relative 2^-9), so give it a wider `--tol`.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// CPU (f32 against PyTorch f32) tolerance.
const CPU_TOL: f64 = 1e-4;

/// The max abs difference and the tolerance it is held to.
fn run(args: &Args) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    args.tf32.check::<B>()?;
    let device = Default::default();
    let options = LoadOptions::from_flag(&args.dtype)?;
    options.check_backend::<B>(&device)?;
    let model = Llama::<B>::from_pretrained(&args.model, options, &device)?;
    let mut t = read_safetensors(&args.reference)?;
    let ids = t
        .remove("input_ids")
        .ok_or("reference has no `input_ids`")?;
    let logits = t.remove("logits").ok_or("reference has no `logits`")?;
    if ids.shape.len() != 2 || logits.shape.len() != 3 {
        return Err("expected input_ids [B,T] and logits [B,T,V]".into());
    }
    let (b, s) = (ids.shape[0], ids.shape[1]);
    let want_shape = logits.shape.clone();
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.into_i64("input_ids")?, [b, s]),
        &device,
    );
    let want = logits.into_f32("logits")?;
    let tol = args.tf32.parity_tolerance::<B>(args.tol, CPU_TOL, &want)?;
    let got = model.forward(ids)?;
    if got.dims().to_vec() != want_shape {
        return Err(format!(
            "logits shape {:?} != reference {:?}",
            got.dims(),
            want_shape
        )
        .into());
    }
    let got: Vec<f32> = got
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| format!("{e:?}"))?;
    // NaN-safe and length-checked: a NaN logit or a missing value is an error, not a pass.
    Ok((max_abs_diff(&got, &want)?.value, tol))
}

fn main() -> ExitCode {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    let args = Args::parse();
    match run(&args) {
        Ok((d, tol)) => {
            println!("max abs diff: {d:e} (tol {tol:e}, tf32 {})", args.tf32);
            if d <= tol {
                ExitCode::SUCCESS
            } else {
                eprintln!("FAIL: above tolerance");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
