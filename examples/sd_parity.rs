//! UNet / VAE parity of our Burn Stable Diffusion against reference outputs (e.g. from diffusers).
//!
//! ```text
//! cargo run --release --features train --example sd_parity -- --model DIR --reference FILE \
//!     [--tol 1e-4] [--tf32 on|off] [--dtype f32]
//! ```
//! `DIR` holds `unet/` and `vae/` in diffusers layout. `FILE` is a safetensors file with
//! `sample` [B,4,h,w], `timestep` [B] (i64 or float), `encoder_hidden_states` [B,T,C] and the
//! expected `unet_out`; `latents` and the expected `vae_decoded`; `image` and the expected
//! `vae_latent_mean`. Prints each max abs difference; exits 1 when any exceeds `--tol`
//! (2 on bad input). `tools/fixtures/make_sd.py` writes such a file for the tiny test pipeline.
//! Runs on `svgen::DefaultBackend` (Flex; CUDA with `--features cuda`).
//!
//! Tolerance of each output (unless `--tol`): 1e-4 on Flex (`--tf32` has no effect there). On
//! CUDA, cubecl 0.10 runs f32 matmuls and convolutions on tensor cores in TF32 (~1e-3 relative
//! per op) with no switch, so `--tf32 off` is a typed error and `--tf32 on` (the default) allows
//! `1e-4 + 4e-3 · max|reference|` per output (`svgen::eval::gpu::Tf32::parity_tolerance`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use svgen::core::compare;
use svgen::eval::gpu::Tf32;
use svgen::train::burn::tensor::{Tensor, TensorData};
use svgen::train::sd::unet::UNet2DConditionModel;
use svgen::train::sd::vae::AutoencoderKL;
use svgen::train::weights::read_safetensors;
use svgen::train::{HostData, HostTensor};
use svgen::DefaultBackend as B;

type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
struct Args {
    /// Weight dtype. Only `f32`: the Stable Diffusion loaders (UNet, VAE, CLIP text encoder) have no dtype option yet; `bf16` / `f16` are a typed error before loading.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// diffusers pipeline folder holding `unet/` and `vae/`.
    #[arg(long)]
    model: PathBuf,
    /// Safetensors file with the inputs and expected outputs.
    #[arg(long)]
    reference: PathBuf,
    /// Maximum allowed absolute difference (default: 1e-4 on Flex; with TF32 on a GPU,
    /// 1e-4 + 4e-3 · max|reference| per output).
    #[arg(long)]
    tol: Option<f64>,
    /// Matmul precision on GPU backends: `on` (TF32, the only mode cubecl 0.10 offers on CUDA
    /// sm_80+) or `off` (f32; a typed error on CUDA). On Flex the flag is accepted and has no
    /// effect (Flex computes in f32).
    #[arg(long, default_value = "on")]
    tf32: Tf32,
}

/// CPU (f32 against PyTorch f32) tolerance.
const CPU_TOL: f64 = 1e-4;

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
    args: &Args,
) -> Result<(f32, f32), Error> {
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
    let want = host(want)?;
    let tol = args
        .tf32
        .parity_tolerance::<B>(args.tol, CPU_TOL, &want)
        .map_err(|e| format!("{name}: {e}"))?;
    let d = compare::max_abs_diff(&host(got)?, &want).map_err(|e| format!("{name}: {e}"))?;
    Ok((d.value as f32, tol as f32))
}

/// Each output's name, max abs difference and tolerance.
type Diffs = Vec<(&'static str, (f32, f32))>;

fn run(args: &Args) -> Result<Diffs, Error> {
    args.tf32.check::<B>()?;
    let device = Default::default();
    let dtype = svgen::eval::dtype::dtype_for_backend::<B>(&args.dtype, &device)?;
    svgen::eval::dtype::require_f32(dtype, "sd_parity (f32-only loaders)")?;
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
        args,
    )?;
    let vae_decoded = max_abs_diff(
        vae.decode(take(&mut t, "latents")?),
        take(&mut t, "vae_decoded")?,
        "vae_decoded",
        args,
    )?;
    let vae_latent_mean = max_abs_diff(
        vae.encode(take(&mut t, "image")?).mean,
        take(&mut t, "vae_latent_mean")?,
        "vae_latent_mean",
        args,
    )?;
    Ok(vec![
        ("unet_out", unet_out),
        ("vae_decoded", vae_decoded),
        ("vae_latent_mean", vae_latent_mean),
    ])
}

fn main() -> ExitCode {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    let args = Args::parse();
    match run(&args) {
        Ok(diffs) => {
            let mut ok = true;
            for (name, (d, tol)) in diffs {
                let pass = d <= tol;
                ok &= pass;
                println!(
                    "{name}: max abs diff {d:e} (tol {tol:e}, tf32 {}) {}",
                    args.tf32,
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
