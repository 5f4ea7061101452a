//! Decode latency, LoRA-training memory against the memory model, and LoRA-training speed of
//! Llama models on the CPU backend (Flex). Without `--config`, the small Llama of
//! `benches/llama.rs` (4 layers, hidden 512, 8 heads / 4 kv heads, intermediate 1408, vocab
//! 8192); with `--config PATH/config.json`, any HF Llama architecture with random weights.
//!
//! ```text
//! cargo run --release --example llama_perf -- decode [--positions 64,256,1024] [--rounds 200] [--run 128]
//! cargo run --release --example llama_perf -- train-memory [--config PATH/config.json] \
//!     --seq 512,1024,2048,4096,8192 [--r 16] [--checkpointing] [--dtype bf16] [--dry-run]
//! cargo run --release --example llama_perf -- train-speed --seq 512 [--steps 5] [--checkpointing]
//! ```
//!
//! `decode` times one token at each position, the positions taken in turn round after round
//! (so a change of machine load hits every position alike), then the mean per token of `--run`
//! consecutive tokens from each position (this includes the KV-cache tail merges). It prints
//! medians and the growth relative to the first position.
//!
//! `train-memory` prints the prediction of `svgen_train::llama::memory` for LoRA training
//! (r = 16 on all seven linears by default, AdamW, batch 1, every token labelled) — weights,
//! adapter and optimiser state, activations, working set — without loading any weights, so
//! `--config` may name an 8B model with `--dry-run`. Without `--dry-run` it also trains a
//! random-weight model of that architecture for `--steps` steps with the SFT trainer and
//! measures the peak resident set size (`VmHWM`, Linux; reset after the model is built), each
//! sequence length in a fresh child process; `increment` is the training peak minus the
//! resident set of the built model with its adapters, compared with the predicted increment.
//!
//! `train-speed` times LoRA steps (forward, backward, gradient clipping and AdamW through the
//! SFT trainer) and prints tokens/s, the process CPU time and the peak RSS, one line of
//! `key=value` pairs per run for `tools/llama_bench/compare.py`, which runs it against
//! PyTorch + peft in alternating runs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use clap::{Parser, Subcommand};
use svgen::train::burn::backend::{Autodiff, Flex};
use svgen::train::burn::tensor::backend::AutodiffBackend;
use svgen::train::burn::tensor::{DType, Int, Tensor, TensorData};
use svgen::train::llama::memory::{estimate_train_memory, TrainMemoryEstimate, TrainMemoryPlan};
use svgen::train::llama::sft::{SftConfig, SftSample, SftTrainer};
use svgen::train::{KvCache, Llama, LlamaConfig, LoadOptions, LoraConfig};

#[path = "../benches/support/llama_model.rs"]
mod llama_model;
use llama_model::{bench_config_json, token_ids, write_model, VOCAB};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command_,
}

#[derive(Subcommand)]
enum Command_ {
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
    /// Predicted (and, without --dry-run, measured) peak memory of LoRA training.
    TrainMemory {
        #[command(flatten)]
        setting: Setting,
        /// Only the prediction: no model is built.
        #[arg(long)]
        dry_run: bool,
        /// Optimiser steps per measurement (the peak of the second and later steps includes
        /// AdamW's moments).
        #[arg(long, default_value_t = 2)]
        steps: usize,
    },
    /// Tokens/s, CPU time and peak RSS of LoRA training steps.
    TrainSpeed {
        #[command(flatten)]
        setting: Setting,
        /// Timed optimiser steps (after one warm-up step).
        #[arg(long, default_value_t = 5)]
        steps: usize,
    },
}

/// The model and training setting of `train-memory` and `train-speed`.
#[derive(clap::Args, Clone)]
struct Setting {
    /// HF `config.json` (or its folder); default: the bench model.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Sequence lengths (one training row each; a list runs one child process per length).
    #[arg(long, value_delimiter = ',', default_values_t = [512usize])]
    seq: Vec<usize>,
    /// LoRA rank (all seven linears adapted).
    #[arg(long, default_value_t = 16)]
    r: usize,
    /// Per-layer activation checkpointing.
    #[arg(long)]
    checkpointing: bool,
    /// Base weight dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// `cpu` (Flex) or `default` (svgen's `DefaultTrainBackend`: CUDA when built with
    /// `--features cuda`); `train-speed` only.
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl Setting {
    fn config(&self) -> Result<LlamaConfig, Box<dyn std::error::Error>> {
        Ok(match &self.config {
            Some(path) => LlamaConfig::from_file(path)?,
            None => LlamaConfig::from_json_str(&bench_config_json())?,
        })
    }

    fn dtype(&self) -> Result<DType, Box<dyn std::error::Error>> {
        let options = svgen::train::llama::LoadOptions::from_flag(&self.dtype)?;
        Ok(options.dtype)
    }

    fn plan(&self, seq: usize) -> Result<TrainMemoryPlan, Box<dyn std::error::Error>> {
        Ok(TrainMemoryPlan {
            seq,
            batch: 1,
            r: self.r,
            base_dtype: self.dtype()?,
            checkpointing: self.checkpointing,
            ..TrainMemoryPlan::default()
        })
    }

    /// The arguments that reproduce this setting for one sequence length.
    fn child_args(&self, seq: usize) -> Vec<String> {
        let mut a = vec![
            "--seq".to_string(),
            seq.to_string(),
            "--r".into(),
            self.r.to_string(),
            "--dtype".into(),
            self.dtype.clone(),
        ];
        if let Some(c) = &self.config {
            a.push("--config".into());
            a.push(c.display().to_string());
        }
        if self.checkpointing {
            a.push("--checkpointing".into());
        }
        a
    }

    /// A random-weight model of the setting's architecture with fresh adapters.
    fn model<B: AutodiffBackend>(
        &self,
        device: &B::Device,
    ) -> Result<Llama<B>, Box<dyn std::error::Error>> {
        let lora = LoraConfig {
            r: self.r,
            lora_alpha: 2.0 * self.r as f64,
            lora_dropout: 0.0,
            ..LoraConfig::default()
        };
        let model =
            Llama::<B>::random(self.config()?, self.dtype()?, 0, device)?.with_lora(&lora, 0)?;
        Ok(model)
    }

    fn trainer_config(&self, seq: usize, steps: usize) -> SftConfig {
        SftConfig {
            batch_size: 1,
            grad_accum: 1,
            lr: 1e-4,
            total_steps: steps,
            max_grad_norm: 1.0,
            gradient_checkpointing: self.checkpointing,
            max_len: seq,
            ..SftConfig::default()
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    let args = Args::parse();
    match args.command {
        Command_::Decode {
            positions,
            rounds,
            run,
        } => {
            let dir = tempfile::tempdir()?;
            write_model(dir.path())?;
            decode(dir.path(), &positions, rounds, run)
        }
        Command_::TrainMemory {
            setting,
            dry_run,
            steps,
        } => train_memory(&setting, dry_run, steps),
        Command_::TrainSpeed { setting, steps } => match setting.device.as_str() {
            "cpu" => train_speed::<Autodiff<Flex>>(&setting, steps, &Default::default()),
            "default" => {
                train_speed::<svgen::DefaultTrainBackend>(&setting, steps, &Default::default())
            }
            other => Err(format!("--device {other}: expected cpu or default").into()),
        },
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

/// User + system CPU seconds of this process, from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_estimate(cfg: &LlamaConfig, plan: &TrainMemoryPlan, est: &TrainMemoryEstimate) {
    println!(
        "prediction: hidden {} × {} layers, {} heads / {} kv, intermediate {}, vocab {}; \
         T = {}, batch {}, r = {}, base {:?}, checkpointing {}",
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.intermediate_size,
        cfg.vocab_size,
        plan.seq,
        plan.batch,
        plan.r,
        plan.base_dtype,
        if plan.checkpointing { "on" } else { "off" }
    );
    for (what, b) in [
        ("base weights", est.weights),
        ("adapters (f32)", est.adapters),
        ("adapter grads + AdamW m, v (f32)", est.optimiser),
        ("activations kept for backward", est.activations),
        ("working set (transients / 1 layer)", est.working_set),
    ] {
        println!("  {what:<36}{:>12.1} MiB", mib(b));
    }
    println!(
        "  {:<36}{:>12.1} MiB  ({:.2} GB)",
        "total (predicted peak)",
        mib(est.total()),
        est.total() as f64 / 1e9
    );
    println!(
        "  {:<36}{:>12.1} MiB",
        "training increment",
        mib(est.training_increment())
    );
}

fn train_memory(
    setting: &Setting,
    dry_run: bool,
    steps: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    if steps == 0 || setting.seq.iter().any(|&t| t < 2) {
        return Err("need steps >= 1 and every seq >= 2".into());
    }
    let cfg = setting.config()?;
    if dry_run {
        for &seq in &setting.seq {
            let plan = setting.plan(seq)?;
            print_estimate(&cfg, &plan, &estimate_train_memory(&cfg, &plan));
        }
        return Ok(());
    }
    if setting.seq.len() > 1 {
        // One child per length: the peak resident set of a process only grows.
        let exe = std::env::current_exe()?;
        let mut rows = Vec::new();
        for &seq in &setting.seq {
            let mut cmd = Command::new(&exe);
            cmd.arg("train-memory")
                .args(setting.child_args(seq))
                .args(["--steps", &steps.to_string()]);
            let out = cmd.output()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            print!("{text}");
            if !out.status.success() {
                return Err(
                    format!("T = {seq} failed: {}", String::from_utf8_lossy(&out.stderr)).into(),
                );
            }
            let row = text
                .lines()
                .find_map(|l| l.strip_prefix("RESULT "))
                .ok_or("child printed no RESULT line")?
                .to_string();
            rows.push(row);
        }
        println!("\n|  T | measured increment MiB | predicted MiB | predicted / measured | measured peak MiB | predicted peak MiB | s/step |");
        println!("|---|---|---|---|---|---|---|");
        for row in rows {
            let kv: std::collections::HashMap<&str, &str> = row
                .split_whitespace()
                .filter_map(|p| p.split_once('='))
                .collect();
            let get = |k: &str| kv.get(k).copied().unwrap_or("?");
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                get("seq"),
                get("measured_inc_mib"),
                get("predicted_inc_mib"),
                get("ratio"),
                get("measured_peak_mib"),
                get("predicted_peak_mib"),
                get("s_per_step")
            );
        }
        return Ok(());
    }
    let seq = setting.seq[0];
    let plan = setting.plan(seq)?;
    let est = estimate_train_memory(&cfg, &plan);
    print_estimate(&cfg, &plan, &est);
    let model = setting.model::<Autodiff<Flex>>(&Default::default())?;
    let loaded = rss();
    // Reset the peak to the current RSS (Linux >= 4.0), so the training peak is not the
    // construction's transient one.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let out = tempfile::tempdir()?;
    let ids: Vec<i64> = (0..seq as i64)
        .map(|i| (i * 7919) % cfg.vocab_size as i64)
        .collect();
    let sample = SftSample {
        input_ids: ids.iter().map(|&x| x as u32).collect(),
        labels: ids,
    };
    let samples = vec![sample; steps];
    let mut trainer = SftTrainer::new(
        model,
        LoraConfig::default(),
        setting.trainer_config(seq, steps),
        out.path(),
        "llama_perf",
    )?;
    let t0 = Instant::now();
    trainer.train(&samples, &[], None)?;
    let secs = t0.elapsed().as_secs_f64();
    let (Some((_, rss_loaded)), Some((peak, _))) = (loaded, rss()) else {
        println!("measured: /proc/self/status unavailable (not Linux)");
        return Ok(());
    };
    let inc = peak.saturating_sub(rss_loaded);
    let pred_inc = est.training_increment();
    println!(
        "measured: RSS after building {:.1} MiB, peak while training{} {:.1} MiB, increment \
         {:.1} MiB (predicted {:.1} MiB, ratio {:.3}); {:.1} s/step, load {}",
        mib(rss_loaded),
        if reset { "" } else { " (or building)" },
        mib(peak),
        mib(inc),
        mib(pred_inc),
        pred_inc as f64 / inc.max(1) as f64,
        secs / steps as f64,
        load_average()
    );
    println!(
        "RESULT seq={seq} measured_inc_mib={:.1} predicted_inc_mib={:.1} ratio={:.3} \
         measured_peak_mib={:.1} predicted_peak_mib={:.1} s_per_step={:.1}",
        mib(inc),
        mib(pred_inc),
        pred_inc as f64 / inc.max(1) as f64,
        mib(peak),
        mib(est.total()),
        secs / steps as f64
    );
    Ok(())
}

fn train_speed<B: AutodiffBackend>(
    setting: &Setting,
    steps: usize,
    device: &B::Device,
) -> Result<(), Box<dyn std::error::Error>> {
    if steps == 0 || setting.seq.len() != 1 || setting.seq[0] < 2 {
        return Err("train-speed takes one --seq >= 2 and --steps >= 1".into());
    }
    let seq = setting.seq[0];
    let cfg = setting.config()?;
    let ids: Vec<i64> = (0..seq as i64)
        .map(|i| (i * 7919) % cfg.vocab_size as i64)
        .collect();
    let sample = SftSample {
        input_ids: ids.iter().map(|&x| x as u32).collect(),
        labels: ids,
    };
    let samples = vec![sample; steps + 1];
    let out = tempfile::tempdir()?;
    let mut trainer = SftTrainer::new(
        setting.model::<B>(device)?,
        LoraConfig::default(),
        setting.trainer_config(seq, steps + 1),
        out.path(),
        "llama_perf",
    )?;
    // One warm-up step, then the timed ones.
    trainer.train(&samples, &[], Some(1))?;
    let cpu0 = cpu_seconds().unwrap_or(f64::NAN);
    let t0 = Instant::now();
    trainer.train(&samples, &[], Some(steps + 1))?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds().unwrap_or(f64::NAN) - cpu0;
    let per_step: Vec<f64> = trainer.state().log[1..]
        .iter()
        .map(|e| e.tokens as f64 / e.tokens_per_s)
        .collect();
    let mut sorted = per_step.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let peak = rss().map_or(0, |(p, _)| p);
    println!(
        "RESULT side=burn device={} seq={seq} steps={steps} tokens_per_s={:.1} median_step_s={median:.4} \
         min_step_s={:.4} max_step_s={:.4} wall_s={wall:.2} cpu_s={cpu:.2} peak_rss_mib={:.1} \
         threads={} load={}",
        setting.device,
        seq as f64 / median,
        sorted[0],
        sorted[sorted.len() - 1],
        mib(peak),
        rayon_threads(),
        load_average()
    );
    Ok(())
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
}
