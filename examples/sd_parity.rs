//! UNet / VAE parity of our Burn Stable Diffusion against reference outputs (e.g. from diffusers).
//!
//! ```text
//! cargo run --release --features train --example sd_parity -- --model DIR --reference FILE [--tol 1e-4]
//! ```
//! `DIR` holds `unet/` and `vae/` in diffusers layout. `FILE` is a safetensors file with
//! `sample` [B,4,h,w], `timestep` [B] (i64 or float), `encoder_hidden_states` [B,T,C] and the
//! expected `unet_out`; `latents` and the expected `vae_decoded`; `image` and the expected
//! `vae_latent_mean`. Prints each max abs difference; exits 1 when any exceeds `--tol`
//! (2 on bad input). `tools/fixtures/make_sd.py` writes such a file for the tiny test pipeline.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use svgen::core::compare;
use svgen::train::burn::tensor::{Tensor, TensorData};
use svgen::train::sd::unet::UNet2DConditionModel;
use svgen::train::sd::vae::AutoencoderKL;
use svgen::train::weights::read_safetensors;
use svgen::train::{CpuBackend, HostData, HostTensor};

type B = CpuBackend;
type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
struct Args {
    /// diffusers pipeline folder holding `unet/` and `vae/`.
    #[arg(long)]
    model: PathBuf,
    /// Safetensors file with the inputs and expected outputs.
    #[arg(long)]
    reference: PathBuf,
    /// Maximum allowed absolute difference.
    #[arg(long, default_value_t = 1e-4)]
    tol: f32,
}

/// Takes `key` as a float tensor of rank `D` (integer tensors, e.g. i64 timesteps, are converted).
fn take<const D: usize>(
    t: &mut BTreeMap<String, HostTensor>,
    key: &str,
) -> Result<Tensor<B, D>, Error> {
    let h = t
        .remove(key)
        .ok_or_else(|| format!("reference has no `{key}`"))?;
    let shape: [usize; D] = h
        .shape
        .clone()
        .try_into()
        .map_err(|_| format!("`{key}` has shape {:?}, expected rank {D}", h.shape))?;
    let data = match h.data {
        HostData::F32(v) => v,
        HostData::I64(v) => v.into_iter().map(|x| x as f32).collect(),
        other => other
            .into_f32()
            .ok_or_else(|| format!("`{key}` holds neither float nor integer data"))?,
    };
    Ok(Tensor::from_data(
        TensorData::new(data, shape),
        &Default::default(),
    ))
}

fn max_abs_diff<const D: usize>(
    got: Tensor<B, D>,
    want: Tensor<B, D>,
    name: &str,
) -> Result<f32, Error> {
    if got.dims() != want.dims() {
        return Err(format!(
            "{name}: shape {:?} != reference {:?}",
            got.dims(),
            want.dims()
        )
        .into());
    }
    let host = |t: Tensor<B, D>| -> Result<Vec<f32>, Error> {
        Ok(t.into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| format!("{e:?}"))?)
    };
    // NaN-safe: a non-finite value on either side is an error, not a pass.
    let d = compare::max_abs_diff(&host(got)?, &host(want)?).map_err(|e| format!("{name}: {e}"))?;
    Ok(d.value as f32)
}

fn run(args: &Args) -> Result<Vec<(&'static str, f32)>, Error> {
    let device = Default::default();
    let mut t = read_safetensors(&args.reference)?;
    let unet = UNet2DConditionModel::<B>::from_pretrained(args.model.join("unet"), &device)?;
    let vae = AutoencoderKL::<B>::from_pretrained(args.model.join("vae"), &device)?;

    let sample = take::<4>(&mut t, "sample")?;
    let timestep = take::<1>(&mut t, "timestep")?;
    let ehs = take::<3>(&mut t, "encoder_hidden_states")?;
    let unet_out = max_abs_diff(
        unet.forward(sample, timestep, ehs),
        take(&mut t, "unet_out")?,
        "unet_out",
    )?;
    let vae_decoded = max_abs_diff(
        vae.decode(take(&mut t, "latents")?),
        take(&mut t, "vae_decoded")?,
        "vae_decoded",
    )?;
    let vae_latent_mean = max_abs_diff(
        vae.encode(take(&mut t, "image")?).mean,
        take(&mut t, "vae_latent_mean")?,
        "vae_latent_mean",
    )?;
    Ok(vec![
        ("unet_out", unet_out),
        ("vae_decoded", vae_decoded),
        ("vae_latent_mean", vae_latent_mean),
    ])
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(diffs) => {
            let mut ok = true;
            for (name, d) in diffs {
                let pass = d <= args.tol;
                ok &= pass;
                println!(
                    "{name}: max abs diff {d:e} (tol {:e}) {}",
                    args.tol,
                    if pass { "ok" } else { "FAIL" }
                );
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
