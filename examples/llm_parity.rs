//! Logit parity of our Burn Llama against reference logits (e.g. from transformers).
//!
//! ```text
//! cargo run --release --example llm_parity -- --model DIR --reference FILE [--tol 1e-4]
//! ```
//! `DIR` is a HF Llama folder; `FILE` a safetensors file with `input_ids` [B,T] (i64) and the
//! expected `logits` [B,T,V] (f32). Prints the max abs difference; exits 1 above `--tol`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use svgen::train::burn::tensor::{Int, Tensor, TensorData};
use svgen::train::weights::read_safetensors;
use svgen::train::{CpuBackend, Llama, LoadOptions};

#[derive(Parser)]
struct Args {
    /// HF Llama folder (config.json + safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Safetensors file with `input_ids` and `logits`.
    #[arg(long)]
    reference: PathBuf,
    /// Maximum allowed absolute difference.
    #[arg(long, default_value_t = 1e-4)]
    tol: f32,
}

fn run(args: &Args) -> Result<f32, Box<dyn std::error::Error>> {
    let device = Default::default();
    let model = Llama::<CpuBackend>::from_pretrained(&args.model, LoadOptions::default(), &device)?;
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
    let ids = Tensor::<CpuBackend, 2, Int>::from_data(
        TensorData::new(ids.into_i64("input_ids")?, [b, s]),
        &device,
    );
    let want = logits.into_f32("logits")?;
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
    Ok(got
        .iter()
        .zip(&want)
        .map(|(a, b)| {
            if (a - b).is_nan() {
                f32::INFINITY
            } else {
                (a - b).abs()
            }
        })
        .fold(0.0, f32::max))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(d) => {
            println!("max abs diff: {d:e} (tol {:e})", args.tol);
            if d <= args.tol {
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
