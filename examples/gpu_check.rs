//! The model checks of `tools/gpu_check.sh` (issue 19 item 8), each against an f32 reference on
//! Flex, with timings and the process's peak host memory (the script samples the GPU's):
//!
//! ```text
//! cargo run --release --features cuda --example gpu_check -- --device default llm
//! cargo run --release --example gpu_check -- llm      # --device cpu (default): Flex against Flex
//! ```
//!
//! - `llm`: the small bench Llama (`benches/support/llama_model.rs`: 4 layers, hidden 512, vocab
//!   8192, seeded weights written as a HF folder) loaded in bf16 on the device: a full forward of
//!   a 32-token prompt plus 20 continuation tokens, then the prompt through the KV cache and the
//!   20 tokens decoded one at a time (teacher-forced, so every step is comparable). Both sets of
//!   logits are held to the f32 model on Flex.
//! - `lora`: one LoRA step (r = 16 on all seven linears, AdamW, no dropout) of that model in
//!   bf16 through the SFT trainer on the autodiff backend (`Autodiff<Cuda>` with `--device
//!   default` and `--features cuda`); loss and gradient norm against the f32 step on
//!   `Autodiff<Flex>`.
//! - `sd`: one UNet step at 256 px (32×32 latents, batch 2, 77 text tokens) of an SD1.5-shaped
//!   UNet at one fifth of its widths (the `benches/sd.rs` shape; seeded host weights, f32) against
//!   the same UNet on Flex. `--unet-config` takes any diffusers `unet/config.json` (e.g. SD1.5's).
//!
//! Tolerances (`svgen::core::compare::Tolerance`, max |a − b| over the reference's RMS for
//! tensors, relative for scalars):
//! - bf16 (`llm`, `lora`): bf16 keeps 8 mantissa bits (unit roundoff 2⁻⁹ ≈ 2e-3). Weights and
//!   activations are rounded at every one of the ~30 matmul / norm boundaries of the 4 layers;
//!   independent roundings add like a random walk, √30 · 2e-3 ≈ 1.1e-2 relative, and the worst of
//!   8192 · 53 logits sits ≈ 4 RMS out: 5e-2 of the RMS for logits. The loss (a mean over 52
//!   tokens) averages those errors: 1e-2 relative; the gradient norm (a backward pass through
//!   the same bf16 weights, adapters in f32): 5e-2 relative.
//! - f32 on a GPU (`sd`): TF32 matmuls and convolutions (`svgen::eval::gpu::TF32_MATMUL_RELATIVE`,
//!   1e-3 per op) compound over the UNet's ~20 residual blocks, 1e-3 · 4 = 4e-3 of the RMS
//!   ([`TF32_PARITY_DEPTH`](svgen::eval::gpu::TF32_PARITY_DEPTH)), plus 1e-4; on Flex the two
//!   runs are the same computation and must agree to 1e-4 of the RMS.
//!
//! Prints one `RESULT check=… parity=ok|FAIL …` line per check; exits 1 on a parity failure, 2 on
//! an error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use svgen::core::compare::{Diff, Tolerance};
use svgen::eval::gpu::{self, TF32_MATMUL_RELATIVE, TF32_PARITY_DEPTH};
use svgen::train::burn::backend::{Autodiff, Flex};
use svgen::train::burn::tensor::backend::{AutodiffBackend, Backend};
use svgen::train::burn::tensor::{DType, Int, Tensor, TensorData};
use svgen::train::llama::sft::{SftConfig, SftSample, SftTrainer};
use svgen::train::sd::blocks::RandomWeights;
use svgen::train::sd::{UNet2DConditionConfig, UNet2DConditionModel};
use svgen::train::{KvCache, Llama, LoadOptions, LoraConfig};

#[path = "../benches/support/llama_model.rs"]
mod llama_model;
use llama_model::{token_ids, write_model};

type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
struct Args {
    /// `cpu` (Flex against Flex) or `default` (`svgen::DefaultBackend`: CUDA when built with
    /// `--features cuda`, against Flex).
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    /// diffusers UNet `config.json` for `sd` (default: SD1.5 at one fifth of its widths).
    #[arg(long)]
    unet_config: Option<PathBuf>,
    /// The checks to run, in order.
    #[arg(value_enum, required = true)]
    checks: Vec<Check>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeviceKind {
    Cpu,
    Default,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Check {
    /// bf16 forward and 20 cached decode tokens of the bench Llama.
    Llm,
    /// One bf16-base LoRA step on the autodiff backend.
    Lora,
    /// One SD UNet step at 256 px.
    Sd,
}

const PROMPT: usize = 32;
const DECODE: usize = 20;
/// Tokens of the full forward: the prompt, the decoded tokens and the one they predict.
const SEQ: usize = PROMPT + DECODE + 1;
/// Logits of the bf16 model: max |diff| / RMS (see the module docs).
const BF16_LOGITS: f64 = 5e-2;
const BF16_LOSS: f64 = 1e-2;
const BF16_GRAD_NORM: f64 = 5e-2;
const F32_TOL: f64 = 1e-4;

const UNET_CONFIG: &str = r#"{
    "sample_size": 32, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [64, 128, 256, 256], "layers_per_block": 2, "attention_head_dim": 8,
    "cross_attention_dim": 768, "norm_num_groups": 32
}"#;

/// One comparison of a check.
struct Outcome {
    what: String,
    result: Result<Diff, svgen::core::compare::CompareError>,
}

impl Outcome {
    fn new(what: &str, tol: Tolerance, got: &[f32], want: &[f32]) -> Self {
        Self {
            what: format!("{what} ({tol})"),
            result: tol.check(what, got, want),
        }
    }
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, Error> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| format!("{e:?}").into())
}

fn ids<B: Backend>(v: &[i64], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), device)
}

/// Peak resident set of this process in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// f32 reference logits `[PROMPT + DECODE, vocab]` (flattened) of the bench model on Flex.
fn reference_logits(dir: &std::path::Path, seq: &[i64]) -> Result<Vec<f32>, Error> {
    let device = Default::default();
    let model = Llama::<Flex>::from_pretrained(dir, LoadOptions::default(), &device)?;
    host(model.forward(ids::<Flex>(seq, &device))?)
}

fn llm<B: Backend>(
    dir: &std::path::Path,
    timings: &mut Vec<(String, f64)>,
) -> Result<Vec<Outcome>, Error> {
    let seq = token_ids(SEQ);
    let want = reference_logits(dir, &seq)?;
    let device = Default::default();
    let t0 = Instant::now();
    let options = LoadOptions { dtype: DType::BF16 };
    let model = Llama::<B>::from_pretrained(dir, options, &device)?;
    timings.push(("load_s".into(), t0.elapsed().as_secs_f64()));
    gpu::note_first_step::<B>("forward");
    let t0 = Instant::now();
    let full = host(model.forward(ids::<B>(&seq, &device))?)?;
    timings.push(("forward_cold_s".into(), t0.elapsed().as_secs_f64()));
    let t0 = Instant::now();
    let again = host(model.forward(ids::<B>(&seq, &device))?)?;
    timings.push(("forward_warm_s".into(), t0.elapsed().as_secs_f64()));
    // Cached: the prompt, then one token at a time; row i predicts token i + 1.
    let mut cache = KvCache::<B>::new(model.layers.len(), 1);
    let t0 = Instant::now();
    let h = model.forward_cached(
        ids::<B>(&seq[..PROMPT], &device),
        &[vec![true; PROMPT]],
        &mut cache,
    )?;
    let mut cached = host(model.logits(h))?;
    timings.push(("prefill_s".into(), t0.elapsed().as_secs_f64()));
    let t0 = Instant::now();
    for &token in &seq[PROMPT..PROMPT + DECODE] {
        let h = model.forward_cached(ids::<B>(&[token], &device), &[vec![true]], &mut cache)?;
        cached.extend(host(model.logits(h))?);
    }
    timings.push((
        format!("decode_{DECODE}_tokens_ms_per_token"),
        t0.elapsed().as_secs_f64() * 1e3 / DECODE as f64,
    ));
    let tol = Tolerance::rms_relative(BF16_LOGITS);
    Ok(vec![
        Outcome::new("bf16 forward logits vs f32", tol, &full, &want),
        Outcome::new(
            "bf16 repeat forward vs first",
            Tolerance::absolute(0.0),
            &again,
            &full,
        ),
        Outcome::new(
            "bf16 cached decode logits vs f32",
            tol,
            &cached,
            &want[..cached.len().min(want.len())],
        ),
        Outcome::new(
            "bf16 cached decode vs full forward (rows)",
            tol,
            &cached,
            &full[..cached.len().min(full.len())],
        ),
    ])
}

/// One LoRA step; returns (loss, grad norm, seconds).
fn lora_step<B: AutodiffBackend>(
    dir: &std::path::Path,
    dtype: DType,
) -> Result<(f64, f64, f64), Error> {
    let device = Default::default();
    let lora = LoraConfig {
        r: 16,
        lora_alpha: 32.0,
        lora_dropout: 0.0,
        ..LoraConfig::default()
    };
    let model =
        Llama::<B>::from_pretrained(dir, LoadOptions { dtype }, &device)?.with_lora(&lora, 0)?;
    let seq = token_ids(SEQ);
    let sample = SftSample {
        input_ids: seq.iter().map(|&x| x as u32).collect(),
        labels: seq.clone(),
    };
    let cfg = SftConfig {
        batch_size: 1,
        grad_accum: 1,
        lr: 1e-4,
        total_steps: 1,
        max_grad_norm: 1.0,
        max_len: seq.len(),
        ..SftConfig::default()
    };
    let out = tempfile::tempdir()?;
    let mut trainer = SftTrainer::new(model, lora, cfg, out.path(), "gpu_check")?;
    let t0 = Instant::now();
    trainer.train(&[sample], &[], None)?;
    let secs = t0.elapsed().as_secs_f64();
    let entry = trainer
        .state()
        .log
        .first()
        .ok_or("the trainer logged no step")?;
    Ok((entry.loss, entry.grad_norm, secs))
}

fn lora<AB: AutodiffBackend>(
    dir: &std::path::Path,
    timings: &mut Vec<(String, f64)>,
) -> Result<Vec<Outcome>, Error> {
    let (ref_loss, ref_norm, _) = lora_step::<Autodiff<Flex>>(dir, DType::F32)?;
    let (loss, norm, secs) = lora_step::<AB>(dir, DType::BF16)?;
    timings.push(("step_s".into(), secs));
    Ok(vec![
        Outcome::new(
            "bf16 LoRA step loss vs f32",
            Tolerance::relative(BF16_LOSS),
            &[loss as f32],
            &[ref_loss as f32],
        ),
        Outcome::new(
            "bf16 LoRA step grad norm vs f32",
            Tolerance::rms_relative(BF16_GRAD_NORM),
            &[norm as f32],
            &[ref_norm as f32],
        ),
    ])
}

/// Deterministic host inputs: a smooth pattern in [-1, 1].
fn pattern(n: usize, phase: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37 + phase).sin()).collect()
}

fn unet_out<B: Backend>(
    cfg: &UNet2DConditionConfig,
    cross: usize,
) -> Result<(Vec<f32>, f64), Error> {
    let device = Default::default();
    let unet = UNet2DConditionModel::<B>::load(cfg.clone(), &mut RandomWeights::new(0), &device)?;
    let (batch, latent, tokens) = (2, 32, 77);
    let sample = Tensor::<B, 4>::from_data(
        TensorData::new(
            pattern(batch * 4 * latent * latent, 0.0),
            [batch, 4, latent, latent],
        ),
        &device,
    );
    let ehs = Tensor::<B, 3>::from_data(
        TensorData::new(pattern(batch * tokens * cross, 1.0), [batch, tokens, cross]),
        &device,
    );
    let t = Tensor::<B, 1>::from_floats([999.0, 500.0], &device);
    gpu::note_first_step::<B>("UNet step");
    let t0 = Instant::now();
    let out = host(unet.forward(sample, t, ehs))?;
    Ok((out, t0.elapsed().as_secs_f64()))
}

fn sd<B: Backend>(
    config: Option<&PathBuf>,
    timings: &mut Vec<(String, f64)>,
) -> Result<Vec<Outcome>, Error> {
    let cfg = match config {
        Some(path) => UNet2DConditionConfig::from_json_str(&std::fs::read_to_string(path)?)?,
        None => UNet2DConditionConfig::from_json_str(UNET_CONFIG)?,
    };
    let cross = cfg
        .cross_attention_dim
        .resolve("cross_attention_dim", cfg.down_block_types.len())?
        .first()
        .copied()
        .ok_or("the UNet has no down blocks")?;
    let (want, _) = unet_out::<Flex>(&cfg, cross)?;
    let (got, cold) = unet_out::<B>(&cfg, cross)?;
    timings.push(("unet_step_s".into(), cold));
    let rel = F32_TOL + TF32_MATMUL_RELATIVE * TF32_PARITY_DEPTH;
    let tol = Tolerance::rms_relative(if gpu::is_flex::<B>() { F32_TOL } else { rel });
    Ok(vec![Outcome::new(
        "f32 UNet step at 256 px vs Flex",
        tol,
        &got,
        &want,
    )])
}

fn run_check(args: &Args, check: Check, dir: &std::path::Path) -> Result<bool, Error> {
    let mut timings = Vec::new();
    let t0 = Instant::now();
    let outcomes = match (check, args.device) {
        (Check::Llm, DeviceKind::Cpu) => llm::<Flex>(dir, &mut timings)?,
        (Check::Llm, DeviceKind::Default) => llm::<svgen::DefaultBackend>(dir, &mut timings)?,
        (Check::Lora, DeviceKind::Cpu) => lora::<Autodiff<Flex>>(dir, &mut timings)?,
        (Check::Lora, DeviceKind::Default) => {
            lora::<svgen::DefaultTrainBackend>(dir, &mut timings)?
        }
        (Check::Sd, DeviceKind::Cpu) => sd::<Flex>(args.unet_config.as_ref(), &mut timings)?,
        (Check::Sd, DeviceKind::Default) => {
            sd::<svgen::DefaultBackend>(args.unet_config.as_ref(), &mut timings)?
        }
    };
    let mut ok = true;
    for o in &outcomes {
        match &o.result {
            Ok(d) => println!("{:?}: {}: ok, {d}", check, o.what),
            Err(e) => {
                ok = false;
                println!("{:?}: {}: FAIL: {e}", check, o.what);
            }
        }
    }
    let times: Vec<String> = timings.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
    println!(
        "RESULT check={check:?} parity={} {} wall_s={:.2} peak_rss_mib={}",
        if ok { "ok" } else { "FAIL" },
        times.join(" "),
        t0.elapsed().as_secs_f64(),
        peak_rss_mib().map_or_else(|| "?".into(), |m| format!("{m:.1}"))
    );
    Ok(ok)
}

fn main() -> ExitCode {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    gpu::configure_cubecl();
    let args = Args::parse();
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = write_model(dir.path()) {
        eprintln!("error: writing the bench model: {e}");
        return ExitCode::from(2);
    }
    let mut ok = true;
    for &check in &args.checks {
        match run_check(&args, check, dir.path()) {
            Ok(pass) => ok &= pass,
            Err(e) => {
                eprintln!("error in {check:?}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
