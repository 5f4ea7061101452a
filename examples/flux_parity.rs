//! FLUX.1 parity of our Burn components and pipeline against reference outputs (e.g. from
//! diffusers / transformers).
//!
//! ```text
//! cargo run --release --example flux_parity -- --model DIR [--reference FILE] \
//!     [--pipeline FILE ...] [--tol 1e-4] [--image-tol 1e-3] [--tf32 on|off] [--dtype f32|bf16|f16|auto]
//! ```
//! `DIR` is a diffusers `FluxPipeline` folder. `--reference` is a safetensors file with the
//! transformer case (`tr_hidden`, `tr_encoder`, `tr_pooled`, `tr_timestep`, `tr_txt_ids`,
//! `tr_img_ids` → `tr_out`), T5 cases (`t5_ids` → `t5_out`, `t5_long_ids` → `t5_long_out`) and a
//! VAE decode (`vae_latents` → `vae_decoded`). Each `--pipeline` file is a full run from explicit
//! packed `latents` (metadata `prompts`, `negative_prompt`, `true_cfg_scale`, `steps`, `height`,
//! `width`, `max_sequence_length`, `scheduler` overrides) → `prompt_embeds`,
//! `pooled_prompt_embeds` and the NHWC `image`. `tools/fixtures/make_flux.py` writes such files for
//! the tiny test pipeline (`svgen-train/tests/fixtures/flux/`). Prints each max abs difference;
//! exits 1 when one exceeds its tolerance (`--tol` for components, `--image-tol` for images), 2 on
//! bad input. Runs on `svgen::DefaultBackend` (Flex; CUDA with `--features cuda`).
//!
//! Tolerances (unless given): 1e-4 for components and 1e-3 for images on Flex (`--tf32` has no
//! effect there). On CUDA, cubecl 0.10 runs f32 matmuls in TF32 (~1e-3 relative per matmul) with
//! no switch, so `--tf32 off` is a typed error and `--tf32 on` (the default) adds
//! `4e-3 · max|reference|` to each (`svgen::eval::gpu::Tf32::parity_tolerance`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use svgen::eval::gpu::Tf32;
use svgen::eval::weights::Weights;
use svgen::train::burn::tensor::{Int, Tensor, TensorData};
use svgen::train::flux::scheduler::FlowMatchSchedulerConfig;
use svgen::train::flux::{FluxLoadOptions, FluxParams, FluxPipeline};
use svgen::DefaultBackend as B;

type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
struct Args {
    /// Transformer and T5 dtype: f32 (the default, what the default tolerances are for), bf16,
    /// f16 or auto (bf16 on CUDA, f32 on CPU); checked against the backend before loading (typed
    /// error). CLIP-L and the VAE stay f32. Half precision needs wider `--tol` / `--image-tol`.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// diffusers FLUX pipeline folder.
    #[arg(long)]
    model: PathBuf,
    /// Component reference file (transformer, T5, VAE).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Full-pipeline reference files.
    #[arg(long)]
    pipeline: Vec<PathBuf>,
    /// Largest allowed absolute difference of a component output (default: 1e-4 on Flex;
    /// with TF32 on a GPU, 1e-4 + 4e-3 · max|reference|).
    #[arg(long)]
    tol: Option<f32>,
    /// Largest allowed absolute difference of a pipeline image in [0, 1] (default: 1e-3 on Flex;
    /// with TF32 on a GPU, 1e-3 + 4e-3 · max|reference|).
    #[arg(long)]
    image_tol: Option<f32>,
    /// Matmul precision on GPU backends: `on` (TF32, the only mode cubecl 0.10 offers on CUDA
    /// sm_80+) or `off` (f32; a typed error on CUDA). On Flex the flag is accepted and has no
    /// effect (Flex multiplies in f32).
    #[arg(long, default_value = "on")]
    tf32: Tf32,
}

/// CPU (f32 against PyTorch f32) tolerances of components and images.
const CPU_TOL: f32 = 1e-4;
const CPU_IMAGE_TOL: f32 = 1e-3;

/// The tolerance of one comparison against `want` (see the module docs).
fn tolerance(args: &Args, image: bool, want: &[f32]) -> Result<f32, Error> {
    let (cli, cpu) = if image {
        (args.image_tol, CPU_IMAGE_TOL)
    } else {
        (args.tol, CPU_TOL)
    };
    Ok(args
        .tf32
        .parity_tolerance::<B>(cli.map(f64::from), f64::from(cpu), want)? as f32)
}

fn values(w: &Weights, key: &str) -> Result<(Vec<f32>, Vec<usize>), Error> {
    w.f32_any(key).map_err(|e| format!("`{key}`: {e}").into())
}

fn tensor<const D: usize>(w: &Weights, key: &str) -> Result<Tensor<B, D>, Error> {
    let (v, shape) = values(w, key)?;
    let shape: [usize; D] = shape
        .clone()
        .try_into()
        .map_err(|_| format!("`{key}` has shape {shape:?}, expected rank {D}"))?;
    Ok(Tensor::from_data(
        TensorData::new(v, shape),
        &Default::default(),
    ))
}

fn ids(w: &Weights, key: &str) -> Result<Vec<[f64; 3]>, Error> {
    let (v, shape) = values(w, key)?;
    if shape.len() != 2 || shape[1] != 3 {
        return Err(format!("`{key}` has shape {shape:?}, expected [N, 3]").into());
    }
    Ok(v.chunks_exact(3)
        .map(|c| [c[0].into(), c[1].into(), c[2].into()])
        .collect())
}

/// Max abs difference and its tolerance; NaN counts as infinite, a length mismatch is an error.
fn max_abs_diff(
    name: &str,
    got: &[f32],
    want: &[f32],
    args: &Args,
    image: bool,
) -> Result<(f32, f32), Error> {
    if got.len() != want.len() {
        return Err(format!("{name}: {} values, reference has {}", got.len(), want.len()).into());
    }
    let d = got.iter().zip(want).fold(0.0f32, |m, (a, b)| {
        let d = (a - b).abs();
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    });
    let tol = tolerance(args, image, want).map_err(|e| format!("{name}: {e}"))?;
    Ok((d, tol))
}

fn host<const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, Error> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| format!("{e:?}").into())
}

type Diffs = Vec<(String, f32, f32)>;

fn components(
    flux: &FluxPipeline<B>,
    file: &PathBuf,
    args: &Args,
    out: &mut Diffs,
) -> Result<(), Error> {
    let r = Weights::open_file(file)?;
    let device = Default::default();
    let tr = &flux.transformer;
    let rope = tr.rope(&ids(&r, "tr_txt_ids")?, &ids(&r, "tr_img_ids")?, &device);
    let got = tr.forward(
        tensor(&r, "tr_hidden")?,
        tensor(&r, "tr_encoder")?,
        tensor(&r, "tr_pooled")?,
        tensor(&r, "tr_timestep")?,
        &rope,
        None,
    )?;
    let (d, tol) = max_abs_diff(
        "transformer",
        &host(got)?,
        &values(&r, "tr_out")?.0,
        args,
        false,
    )?;
    out.push(("transformer".into(), d, tol));
    let t5 = flux
        .text_encoder_2
        .as_ref()
        .ok_or("the T5 encoder is not loaded")?;
    for case in ["t5", "t5_long"] {
        let key = format!("{case}_ids");
        if !r.contains(&key) {
            continue;
        }
        let (v, shape) = r.i64_any(&key)?;
        let [b, n] = shape[..] else {
            return Err(format!("`{key}` has shape {shape:?}, expected [B, N]").into());
        };
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(v, [b, n]), &device);
        let got = t5.forward(ids, None)?;
        let want = values(&r, &format!("{case}_out"))?.0;
        let (d, tol) = max_abs_diff(case, &host(got)?, &want, args, false)?;
        out.push((format!("{case} last hidden state"), d, tol));
    }
    let got = flux.vae.decode(tensor(&r, "vae_latents")?);
    let (d, tol) = max_abs_diff(
        "vae",
        &host(got)?,
        &values(&r, "vae_decoded")?.0,
        args,
        false,
    )?;
    out.push(("vae decode".into(), d, tol));
    Ok(())
}

fn pipeline_case(
    flux: &mut FluxPipeline<B>,
    model: &std::path::Path,
    file: &PathBuf,
    args: &Args,
    out: &mut Diffs,
) -> Result<(), Error> {
    let w = Weights::open_file(file)?;
    let m = w.metadata().clone();
    let meta = |k: &str| -> Result<&String, Error> {
        m.get(k)
            .ok_or_else(|| format!("{}: no `{k}` in the metadata", file.display()).into())
    };
    let num = |k: &str| -> Result<f64, Error> {
        meta(k)?
            .parse::<f64>()
            .map_err(|e| format!("`{k}`: {e}").into())
    };
    let prompts: Vec<String> = serde_json::from_str(meta("prompts")?)?;
    let negative: Option<String> = serde_json::from_str(meta("negative_prompt")?)?;
    let overrides: serde_json::Value = serde_json::from_str(meta("scheduler")?)?;
    let p = FluxParams {
        negative_prompt: negative.clone(),
        true_cfg_scale: num("true_cfg_scale")?,
        steps: num("steps")? as usize,
        height: num("height")? as usize,
        width: num("width")? as usize,
        max_sequence_length: num("max_sequence_length")? as usize,
        latents: Some(values(&w, "latents")?.0),
        batch: prompts.len(),
        ..FluxParams::schnell()
    };
    // The folder's scheduler with the case's overrides.
    let path = model.join("scheduler/scheduler_config.json");
    let mut config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?,
    )?;
    if let (Some(c), Some(o)) = (config.as_object_mut(), overrides.as_object()) {
        for (k, v) in o {
            c.insert(k.clone(), v.clone());
        }
    }
    let saved = std::mem::replace(
        &mut flux.scheduler_config,
        FlowMatchSchedulerConfig::from_json(&config)?,
    );
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = (|| -> Result<(), Error> {
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let embeds = flux.encode_prompts(&refs, p.max_sequence_length)?;
        let d = max_abs_diff(
            "prompt_embeds",
            &host(embeds.prompt_embeds.clone())?,
            &values(&w, "prompt_embeds")?.0,
            args,
            false,
        )?;
        out.push((format!("{name} prompt_embeds"), d.0, d.1));
        let d = max_abs_diff(
            "pooled_prompt_embeds",
            &host(embeds.pooled_prompt_embeds.clone())?,
            &values(&w, "pooled_prompt_embeds")?.0,
            args,
            false,
        )?;
        out.push((format!("{name} pooled_prompt_embeds"), d.0, d.1));
        let negative = match negative.as_deref() {
            Some(n) => Some(flux.encode_prompts(&vec![n; refs.len()], p.max_sequence_length)?),
            None => None,
        };
        let seeds = vec![0; refs.len()];
        let latents = flux.denoise(&embeds, negative.as_ref(), &seeds, &p, &mut |_, _| {})?;
        let images = flux.decode_latents(latents, p.height, p.width)?;
        // diffusers returns NHWC.
        let d = max_abs_diff(
            "image",
            &host(images.permute([0, 2, 3, 1]))?,
            &values(&w, "image")?.0,
            args,
            true,
        )?;
        out.push((format!("{name} image"), d.0, d.1));
        Ok(())
    })();
    flux.scheduler_config = saved;
    result
}

fn run(args: &Args) -> Result<Diffs, Error> {
    if args.reference.is_none() && args.pipeline.is_empty() {
        return Err("give --reference FILE and/or --pipeline FILE".into());
    }
    args.tf32.check::<B>()?;
    let device = Default::default();
    let load = FluxLoadOptions::from_flag::<B>(&args.dtype, &device)?;
    let mut flux = FluxPipeline::<B>::from_pretrained(&args.model, &load, &device)?;
    let mut out = Vec::new();
    if let Some(file) = &args.reference {
        components(&flux, file, args, &mut out)?;
    }
    for file in &args.pipeline {
        pipeline_case(&mut flux, &args.model, file, args, &mut out)?;
    }
    Ok(out)
}

fn main() -> ExitCode {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    let args = Args::parse();
    match run(&args) {
        Ok(diffs) => {
            let mut ok = true;
            for (name, d, tol) in diffs {
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
