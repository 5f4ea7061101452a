//! Decode latency and LoRA-training memory of the small Llama of `benches/llama.rs` (4 layers,
//! hidden 512, 8 heads / 4 kv heads, intermediate 1408, vocab 8192, random weights) on the
//! CPU backend (Flex).
//!
//! ```text
//! cargo run --release --example llama_perf -- decode [--positions 64,256,1024] [--rounds 200] [--run 128]
//! cargo run --release --example llama_perf -- train-memory [--steps 3] [--seq 512]
//! ```
//!
//! `decode` times one token at each position, the positions taken in turn round after round
//! (so a change of machine load hits every position alike), then the mean per token of `--run`
//! consecutive tokens from each position (this includes the KV-cache tail merges). It prints
//! medians and the growth relative to the first position.
//!
//! `train-memory` trains LoRA (r = 16 on all seven linears, AdamW) with the SFT trainer for a
//! few steps at batch 1 and prints the peak resident set size (`VmHWM`, Linux) next to an
//! estimate: base weights + adapters, their gradients and AdamW moments + the activations
//! the backward pass needs.

use std::time::Instant;

use clap::{Parser, Subcommand};
use svgen::train::burn::backend::{Autodiff, Flex};
use svgen::train::burn::tensor::{Int, Tensor, TensorData};
use svgen::train::llama::sft::SftSample;
use svgen::train::llama::sft::{SftConfig, SftTrainer};
use svgen::train::{KvCache, Llama, LoadOptions, LoraConfig};

#[path = "../benches/support/llama_model.rs"]
mod llama_model;
use llama_model::{token_ids, write_model, HEADS, HIDDEN, INTERMEDIATE, KV_HEADS, LAYERS, VOCAB};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// KV-cache decode latency per position.
    Decode {
        /// Cache lengths to decode at.
        #[arg(long, value_delimiter = ',', default_values_t = [64usize, 256, 1024])]
        positions: Vec<usize>,
        /// Rounds of single-token timings.
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        /// Tokens per run for the amortised figure (0: skip).
        #[arg(long, default_value_t = 128)]
        run: usize,
    },
    /// Peak RSS of LoRA training against the weights-plus-activations estimate.
    TrainMemory {
        /// Optimiser steps (one sequence each).
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Sequence length.
        #[arg(long, default_value_t = 512)]
        seq: usize,
    },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    write_model(dir.path())?;
    match args.command {
        Command::Decode {
            positions,
            rounds,
            run,
        } => decode(dir.path(), &positions, rounds, run),
        Command::TrainMemory { steps, seq } => train_memory(dir.path(), steps, seq),
    }
}

fn ids(v: Vec<i64>) -> Tensor<Flex, 2, Int> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [1, n]), &Default::default())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &[f64], p: f64) -> f64 {
    // `v` is sorted by `median`.
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn decode(
    dir: &std::path::Path,
    positions: &[usize],
    rounds: usize,
    run: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    if positions.is_empty() || rounds == 0 || positions.contains(&0) {
        return Err("need at least one position > 0 and one round".into());
    }
    let model = Llama::<Flex>::from_pretrained(dir, LoadOptions::default(), &Default::default())?;
    let mut caches = Vec::new();
    for &pos in positions {
        let mut cache = KvCache::<Flex>::new(model.layers.len(), 1);
        model.forward_cached(ids(token_ids(pos)), &[vec![true; pos]], &mut cache)?;
        caches.push(cache);
    }
    let step = |cache: &mut KvCache<Flex>, token: i64| -> Result<(), svgen::train::TrainError> {
        let h = model.forward_cached(ids(vec![token]), &[vec![true]], cache)?;
        std::hint::black_box(model.logits(h).into_data());
        Ok(())
    };
    // Warm-up.
    for (cache, &pos) in caches.iter_mut().zip(positions) {
        for _ in 0..3 {
            step(cache, 1)?;
            cache.truncate(pos);
        }
    }
    let mut single: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); positions.len()];
    for _ in 0..rounds {
        for ((cache, &pos), times) in caches.iter_mut().zip(positions).zip(&mut single) {
            let t0 = Instant::now();
            step(cache, 1)?;
            times.push(t0.elapsed().as_secs_f64());
            cache.truncate(pos);
        }
    }
    let run_rounds = (rounds / 20).max(3);
    let mut amortised: Vec<Vec<f64>> = vec![Vec::new(); positions.len()];
    if run > 0 {
        for _ in 0..run_rounds {
            for ((cache, &pos), times) in caches.iter_mut().zip(positions).zip(&mut amortised) {
                let t0 = Instant::now();
                for i in 0..run {
                    step(cache, ((pos + i) * 7919 % VOCAB) as i64)?;
                }
                times.push(t0.elapsed().as_secs_f64() / run as f64);
                cache.truncate(pos);
            }
        }
    }
    println!(
        "decode, 1 token at each position ({rounds} rounds, positions in turn); \
         then mean per token over {run} tokens ({run_rounds} rounds)"
    );
    println!("position  median ms  p10 ms  p90 ms  vs first  | run median ms/token  vs first");
    let mut first = None;
    let mut first_run = None;
    for ((&pos, times), runs) in positions.iter().zip(&mut single).zip(&mut amortised) {
        let m = median(times);
        let base = *first.get_or_insert(m);
        let (p10, p90) = (percentile(times, 0.1), percentile(times, 0.9));
        let run_col = if runs.is_empty() {
            String::from("-")
        } else {
            let r = median(runs);
            let base_r = *first_run.get_or_insert(r);
            format!("{:.3}  {:+.1}%", r * 1e3, (r / base_r - 1.0) * 100.0)
        };
        println!(
            "{pos:8}  {:9.3}  {:6.3}  {:6.3}  {:+7.1}%  | {run_col}",
            m * 1e3,
            p10 * 1e3,
            p90 * 1e3,
            (m / base - 1.0) * 100.0
        );
    }
    Ok(())
}

/// `VmHWM` (peak RSS) and `VmRSS` of this process in bytes, from `/proc/self/status`.
fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

fn mib(bytes: f64) -> String {
    format!("{:8.1} MiB", bytes / (1024.0 * 1024.0))
}

fn train_memory(
    dir: &std::path::Path,
    steps: usize,
    seq: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    if steps == 0 || seq < 2 {
        return Err("need steps >= 1 and seq >= 2".into());
    }
    let before = rss();
    let lora = LoraConfig {
        r: 16,
        lora_alpha: 32.0,
        lora_dropout: 0.0,
        ..LoraConfig::default()
    };
    let model =
        Llama::<Autodiff<Flex>>::from_pretrained(dir, LoadOptions::default(), &Default::default())?
            .with_lora(&lora, 0)?;
    let base_params = {
        let cfg = model.config();
        let per_layer = cfg.hidden_size * (2 * cfg.hidden_size + 2 * KV_HEADS * cfg.head_dim)
            + 3 * cfg.hidden_size * cfg.intermediate_size
            + 2 * cfg.hidden_size;
        cfg.vocab_size * cfg.hidden_size + cfg.hidden_size + cfg.num_hidden_layers * per_layer
    };
    let lora_params = model.num_lora_params();
    let loaded = rss();
    // Reset the peak to the current RSS (Linux >= 4.0), so the training peak is not the
    // loader's transient one.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let out = tempfile::tempdir()?;
    let cfg = SftConfig {
        batch_size: 1,
        grad_accum: 1,
        lr: 1e-4,
        total_steps: steps,
        max_grad_norm: 1.0,
        ..SftConfig::default()
    };
    let sample = SftSample {
        input_ids: token_ids(seq).into_iter().map(|x| x as u32).collect(),
        labels: token_ids(seq),
    };
    let samples = vec![sample; steps];
    let mut trainer = SftTrainer::new(model, lora.clone(), cfg, out.path(), "llama_perf")?;
    let t0 = Instant::now();
    let summary = trainer.train(&samples, &[], None)?;
    let secs = t0.elapsed().as_secs_f64();
    let after = rss();

    // Estimate, f32 everywhere. Activations: what the backward pass has to keep per layer
    // (norm inputs, the attention input shared by q/k/v, x·A of the 7 adapters, q and k after
    // RoPE and v, the softmax probabilities [heads, T, T], the o_proj input, gate, up and
    // the down_proj input), plus the final norm input, the logits and their log-softmax.
    let (t, h, i) = (seq, HIDDEN, INTERMEDIATE);
    let hd = HIDDEN / HEADS;
    let per_layer =
        t * (3 * h + (2 * HEADS + 2 * KV_HEADS) * hd + 3 * i + 7 * lora.r) + HEADS * t * t;
    let activations = LAYERS * per_layer + t * h + 2 * t * VOCAB;
    let f = 4.0;
    let weights = base_params as f64 * f;
    let adapters = lora_params as f64 * f * 4.0; // params, grads, AdamW m and v
    let acts = activations as f64 * f;
    println!(
        "LoRA training, seq {seq}, batch 1, {steps} steps in {secs:.1} s (final loss {:.4})",
        summary.final_loss.unwrap_or(f64::NAN)
    );
    println!("estimate:");
    println!(
        "  base weights ({base_params} params)           {}",
        mib(weights)
    );
    println!(
        "  adapters + grads + AdamW m, v ({lora_params} params) {}",
        mib(adapters)
    );
    println!("  activations kept for backward           {}", mib(acts));
    println!(
        "  total                                   {}",
        mib(weights + adapters + acts)
    );
    let dense = LAYERS * (h * (2 * h + 2 * KV_HEADS * hd) + 3 * h * i);
    println!(
        "  (a dense ΔW per adapted linear would add {} more)",
        mib(dense as f64 * f)
    );
    match (before, loaded, after) {
        (Some((_, rss_before)), Some((load_peak, rss_loaded)), Some((peak, _))) => {
            let line = |what: &str, bytes: f64| println!("  {what:<40}{}", mib(bytes));
            println!("measured:");
            line("RSS before loading", rss_before as f64);
            line("peak RSS while loading", load_peak as f64);
            line("RSS after loading (+ adapters)", rss_loaded as f64);
            if reset {
                line("peak RSS while training", peak as f64);
            } else {
                line("peak RSS (loading or training)", peak as f64);
            }
            line(
                "training peak - RSS after loading",
                peak.saturating_sub(rss_loaded) as f64,
            );
            line("estimate without base weights", adapters + acts);
        }
        _ => println!("measured: /proc/self/status unavailable (not Linux)"),
    }
    Ok(())
}
