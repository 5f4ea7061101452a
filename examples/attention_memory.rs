//! Peak memory and time of training-mode attention (forward + backward) on `Autodiff<Flex>`:
//! `nn::attention::flash_attention` against Burn's own `attention` (the unfused fallback
//! autodiff runs: matmul → softmax → matmul, `[B, heads, T, T]` tensors kept for the backward
//! pass), and the chunked LM-head loss against the plain logits → `causal_lm_loss` path.
//!
//! Peak memory is the process's peak resident set (`VmHWM`), so every measurement runs in a
//! fresh child process; `delta` is the peak minus the resident set once the inputs exist.
//!
//! ```text
//! # one measurement
//! cargo run --release --example attention_memory -- one --op flash --seq 4096
//! # the table: T = 512 … 8192, both attention paths (children re-run this binary)
//! RAYON_NUM_THREADS=2 taskset -c 0,1 \
//!   cargo run --release --example attention_memory -- sweep --reps 5
//! ```
//!
//! Options: `--heads 8 --head-dim 64 --batch 1` (attention), `--hidden 512 --vocab 32000`
//! (loss), `--reps N` (timed repetitions after one warm-up; the median is printed),
//! `--seqs 512,1024,...`, `--ops flash,fallback,chunked-loss,logits-loss`,
//! `--max-fallback-seq T` (skip larger fallback runs, which need ~`7·B·heads·T²·4` bytes).

use std::process::Command;
use std::time::Instant;

use svgen::train::burn::backend::{Autodiff, Flex};
use svgen::train::burn::tensor::module::attention;
use svgen::train::burn::tensor::ops::AttentionModuleOptions;
use svgen::train::burn::tensor::{Distribution, Tensor};
use svgen::train::llama::sft::causal_lm_loss;
use svgen::train::nn::attention::{flash_attention, AttentionMask, AttentionOptions};
use svgen::train::nn::loss::{chunked_causal_lm_loss, ChunkedLossOptions};

type B = Autodiff<Flex>;

#[derive(Debug, Clone)]
struct Args {
    mode: String,
    op: String,
    ops: Vec<String>,
    seq: usize,
    seqs: Vec<usize>,
    heads: usize,
    head_dim: usize,
    batch: usize,
    hidden: usize,
    vocab: usize,
    reps: usize,
    max_fallback_seq: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        mode: "sweep".into(),
        op: "flash".into(),
        ops: vec!["flash".into(), "fallback".into()],
        seq: 1024,
        seqs: vec![512, 1024, 2048, 4096, 8192],
        heads: 8,
        head_dim: 64,
        batch: 1,
        hidden: 512,
        vocab: 32_000,
        reps: 1,
        max_fallback_seq: usize::MAX,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, name: &str| -> Result<usize, String> {
        v.ok_or(format!("{name} needs a value"))?
            .parse()
            .map_err(|e| format!("{name}: {e}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "one" | "sweep" => a.mode = arg,
            "--op" => a.op = it.next().ok_or("--op needs a value")?,
            "--ops" => {
                a.ops = it
                    .next()
                    .ok_or("--ops needs a value")?
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            "--seq" => a.seq = num(it.next(), "--seq")?,
            "--seqs" => {
                a.seqs = it
                    .next()
                    .ok_or("--seqs needs a value")?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--seqs: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--heads" => a.heads = num(it.next(), "--heads")?,
            "--head-dim" => a.head_dim = num(it.next(), "--head-dim")?,
            "--batch" => a.batch = num(it.next(), "--batch")?,
            "--hidden" => a.hidden = num(it.next(), "--hidden")?,
            "--vocab" => a.vocab = num(it.next(), "--vocab")?,
            "--reps" => a.reps = num(it.next(), "--reps")?.max(1),
            "--max-fallback-seq" => a.max_fallback_seq = num(it.next(), "--max-fallback-seq")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    const OPS: [&str; 4] = ["flash", "fallback", "chunked-loss", "logits-loss"];
    for op in a.ops.iter().chain([&a.op]) {
        if !OPS.contains(&op.as_str()) {
            return Err(format!("unknown op {op} (one of {OPS:?})"));
        }
    }
    if a.seq == 0 || a.seqs.contains(&0) || a.heads == 0 || a.head_dim == 0 || a.batch == 0 {
        return Err("sizes must be positive".into());
    }
    Ok(a)
}

/// A field of `/proc/self/status` in KiB (Linux only).
fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One forward + backward of `op`; returns after the gradients are read back.
fn step(a: &Args, inputs: &Inputs) {
    match inputs {
        Inputs::Attention(qkvg) => {
            let [q, k, v, go] = &**qkvg;
            let (q, k, v) = (
                q.clone().require_grad(),
                k.clone().require_grad(),
                v.clone().require_grad(),
            );
            let out = if a.op == "flash" {
                flash_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    &AttentionMask::causal(),
                    &AttentionOptions::default(),
                )
                .expect("valid shapes")
            } else {
                let opts = AttentionModuleOptions {
                    scale: None,
                    softcap: None,
                    is_causal: true,
                };
                attention(q.clone(), k.clone(), v.clone(), None, None, opts)
            };
            let grads = (out * go.clone()).sum().backward();
            for x in [&q, &k, &v] {
                let g = x.grad(&grads).expect("tracked");
                let _ = g.into_data();
            }
        }
        Inputs::Loss(hwl) => {
            let (h, w, labels) = &**hwl;
            let (h, w) = (h.clone().require_grad(), w.clone().require_grad());
            let (loss, _) = if a.op == "chunked-loss" {
                chunked_causal_lm_loss(h.clone(), w.clone(), labels, &ChunkedLossOptions::default())
                    .expect("valid")
            } else {
                let [b, t, hd] = h.dims();
                let logits = h
                    .clone()
                    .reshape([b * t, hd])
                    .matmul(w.clone())
                    .reshape([b, t, a.vocab]);
                causal_lm_loss(logits, labels).expect("valid")
            };
            let grads = loss.backward();
            let _ = h.grad(&grads).expect("tracked").into_data();
            let _ = w.grad(&grads).expect("tracked").into_data();
        }
    }
}

/// The inputs of one configuration.
enum Inputs {
    /// `q`, `k`, `v` and the output gradient, `[B, heads, T, head_dim]` each.
    Attention(Box<[Tensor<B, 4>; 4]>),
    /// Hidden states `[B, T, hidden]`, LM-head weight `[hidden, vocab]` and labels.
    Loss(Box<(Tensor<B, 3>, Tensor<B, 2>, Vec<i64>)>),
}

fn inputs(a: &Args) -> Inputs {
    let dev = Default::default();
    let n = Distribution::Normal(0.0, 1.0);
    if a.op.ends_with("loss") {
        let labels = (0..a.batch * a.seq)
            .map(|i| (i * 7919 % a.vocab) as i64)
            .collect();
        Inputs::Loss(Box::new((
            Tensor::random([a.batch, a.seq, a.hidden], n, &dev),
            Tensor::random([a.hidden, a.vocab], Distribution::Normal(0.0, 0.05), &dev),
            labels,
        )))
    } else {
        let shape = [a.batch, a.heads, a.seq, a.head_dim];
        Inputs::Attention(Box::new([
            Tensor::random(shape, n, &dev),
            Tensor::random(shape, n, &dev),
            Tensor::random(shape, n, &dev),
            Tensor::random(shape, n, &dev),
        ]))
    }
}

/// Runs one configuration in this process; prints `op seq peak_mib delta_mib median_ms`.
fn one(a: &Args) {
    let inputs = inputs(a);
    let base = status_kib("VmRSS:").unwrap_or(0);
    let mut times = Vec::with_capacity(a.reps);
    step(a, &inputs); // warm-up (and the peak)
    for _ in 0..a.reps {
        let t0 = Instant::now();
        step(a, &inputs);
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let peak = status_kib("VmHWM:").unwrap_or(0);
    println!(
        "{} {} {:.0} {:.0} {:.1}",
        a.op,
        a.seq,
        peak as f64 / 1024.0,
        peak.saturating_sub(base) as f64 / 1024.0,
        times[times.len() / 2]
    );
}

fn sweep(a: &Args) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    println!(
        "| op | T | peak RSS (MiB) | peak − inputs (MiB) | fwd+bwd median (ms, {} reps) |",
        a.reps
    );
    println!("|---|---|---|---|---|");
    for op in &a.ops {
        for &seq in &a.seqs {
            if (op == "fallback" || op == "logits-loss") && seq > a.max_fallback_seq {
                println!("| {op} | {seq} | skipped (--max-fallback-seq) | | |");
                continue;
            }
            let out = Command::new(&exe)
                .args([
                    "one",
                    "--op",
                    op,
                    "--seq",
                    &seq.to_string(),
                    "--heads",
                    &a.heads.to_string(),
                    "--head-dim",
                    &a.head_dim.to_string(),
                    "--batch",
                    &a.batch.to_string(),
                    "--hidden",
                    &a.hidden.to_string(),
                    "--vocab",
                    &a.vocab.to_string(),
                    "--reps",
                    &a.reps.to_string(),
                ])
                .output()
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout);
            let f: Vec<&str> = text.split_whitespace().collect();
            if !out.status.success() || f.len() != 5 {
                println!(
                    "| {op} | {seq} | failed ({}) | | |",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
                continue;
            }
            println!("| {op} | {seq} | {} | {} | {} |", f[2], f[3], f[4]);
        }
    }
    Ok(())
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("attention_memory: {e}");
            std::process::exit(2);
        }
    };
    if args.mode == "one" {
        one(&args);
    } else if let Err(e) = sweep(&args) {
        eprintln!("attention_memory: {e}");
        std::process::exit(1);
    }
}
