//! Load time of a Llama checkpoint on the CPU backend (Flex), linear weights transposed on the
//! host (tiled, multi-threaded) against uploaded as stored and transposed on the device (a
//! strided view), the two taken in alternation so that a change of machine load hits both.
//!
//! ```text
//! cargo run --release --example llama_load -- write --out /tmp/llama-1b-shape
//! cargo run --release --example llama_load -- time --model /tmp/llama-1b-shape [--runs 5]
//! ```
//!
//! `write` writes a random-weight checkpoint (`config.json` + one bf16 `model.safetensors`) with
//! the shapes of Llama 3.2 1B (hidden 2048, 16 layers, intermediate 8192, 32 heads, 8 kv heads,
//! vocab 128256, tied embeddings): 1.24 B parameters, 2.5 GB. The tensors are streamed to the
//! file one at a time. `time` loads it once to warm the page cache, then `--runs` times each way
//! (f32, as `LoadOptions::default()` on the CPU) and prints every run and the medians.
//! `speed` times a prefill and cached decode steps with each way's weights (the device way
//! leaves the matmuls a strided right-hand side).
//!
//! ```text
//! cargo run --release --example llama_load -- speed --model /tmp/llama-1b-shape [--runs 3]
//! ```

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand};
use svgen::train::burn::backend::Flex;
use svgen::train::burn::tensor::{Int, Tensor, TensorData};
use svgen::train::weights::{TransposeOn, Weights, TRANSFORMERS_STEM};
use svgen::train::{KvCache, Llama, LlamaConfig, LoadOptions};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes the random 1B-shaped checkpoint.
    Write {
        /// Output folder (created).
        #[arg(long)]
        out: PathBuf,
    },
    /// Times loads, host and device transposes alternating.
    Time {
        /// The checkpoint folder.
        #[arg(long)]
        model: PathBuf,
        /// Loads per way.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Times a prefill and cached decode steps with the weights of each way (does the
    /// strided view slow the Flex matmuls?), alternating.
    Speed {
        /// The checkpoint folder.
        #[arg(long)]
        model: PathBuf,
        /// Rounds per way.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Prompt tokens.
        #[arg(long, default_value_t = 32)]
        prompt: usize,
        /// Decoded tokens after the prompt.
        #[arg(long, default_value_t = 8)]
        decode: usize,
    },
}

const VOCAB: usize = 128_256;
const HIDDEN: usize = 2048;
const INTERMEDIATE: usize = 8192;
const LAYERS: usize = 16;
const HEADS: usize = 32;
const KV_HEADS: usize = 8;

fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HIDDEN / HEADS, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "max_position_embeddings": 131072,
        "tie_word_embeddings": true, "torch_dtype": "bfloat16"
    })
}

/// Every tensor of the checkpoint with its shape, in file order.
fn tensors() -> Vec<(String, Vec<usize>)> {
    let (h, i) = (HIDDEN, INTERMEDIATE);
    let kv = KV_HEADS * (HIDDEN / HEADS);
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, h])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj.weight", vec![h, h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.o_proj.weight", vec![h, h]),
            ("mlp.gate_proj.weight", vec![i, h]),
            ("mlp.up_proj.weight", vec![i, h]),
            ("mlp.down_proj.weight", vec![h, i]),
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
        ] {
            t.push((format!("{p}.{name}"), shape));
        }
    }
    t.push(("model.norm.weight".to_string(), vec![h]));
    t
}

/// Writes the safetensors file tensor by tensor: a header, then bf16 values from a xorshift
/// stream (uniform in ±0.02; norms at 1).
fn write(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&config_json())?,
    )?;
    let list = tensors();
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in &list {
        let bytes = 2 * shape.iter().product::<usize>();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut text = serde_json::to_string(&header)?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut f = BufWriter::with_capacity(
        1 << 22,
        std::fs::File::create(out.join("model.safetensors"))?,
    );
    f.write_all(&(text.len() as u64).to_le_bytes())?;
    f.write_all(text.as_bytes())?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for (name, shape) in &list {
        let n: usize = shape.iter().product();
        let mut buf = Vec::with_capacity(2 * n);
        let norm = shape.len() == 1;
        for _ in 0..n {
            let v = if norm {
                1.0f32
            } else {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 0.02
            };
            // bf16: the top half of the f32 bits, rounded to nearest even.
            let bits = v.to_bits();
            let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
            buf.extend_from_slice(&(rounded as u16).to_le_bytes());
        }
        f.write_all(&buf)?;
        eprintln!("wrote {name} {shape:?}");
    }
    f.flush()?;
    Ok(())
}

/// One load with linears transposed `on` the host or the device; seconds.
fn load(dir: &Path, on: TransposeOn) -> Result<f64, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let config = LlamaConfig::from_file(dir)?;
    let weights = Weights::open(dir, TRANSFORMERS_STEM)?.with_transpose_on(on);
    let model =
        Llama::<Flex>::from_weights(config, weights, LoadOptions::default(), &Default::default())?;
    let secs = start.elapsed().as_secs_f64();
    drop(model);
    Ok(secs)
}

/// Prefill seconds and mean seconds per decoded token with the model loaded `on`.
fn speed(
    dir: &Path,
    on: TransposeOn,
    prompt: usize,
    decode: usize,
) -> Result<[f64; 2], Box<dyn std::error::Error>> {
    let config = LlamaConfig::from_file(dir)?;
    let weights = Weights::open(dir, TRANSFORMERS_STEM)?.with_transpose_on(on);
    let device = Default::default();
    let model = Llama::<Flex>::from_weights(config, weights, LoadOptions::default(), &device)?;
    let ids: Vec<i64> = (0..prompt as i64)
        .map(|i| (i * 7919) % VOCAB as i64)
        .collect();
    let mut cache = KvCache::<Flex>::new(LAYERS, 1);
    let start = Instant::now();
    let h = model.forward_cached(
        Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids, [1, prompt]), &device),
        &[vec![true; prompt]],
        &mut cache,
    )?;
    let _ = model.logits(h.narrow(1, prompt - 1, 1)).into_data();
    let prefill = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for i in 0..decode {
        let id =
            Tensor::<Flex, 2, Int>::from_data(TensorData::new(vec![i as i64 + 1], [1, 1]), &device);
        let h = model.forward_cached(id, &[vec![true]], &mut cache)?;
        let _ = model.logits(h).into_data();
    }
    Ok([
        prefill,
        start.elapsed().as_secs_f64() / decode.max(1) as f64,
    ])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Args::parse().command {
        Cmd::Write { out } => write(&out),
        Cmd::Time { model, runs } => {
            let warm = load(&model, TransposeOn::Host)?;
            println!("warm-up (page cache) load: {warm:.2} s");
            let (mut host, mut device) = (Vec::new(), Vec::new());
            for run in 0..runs.max(1) {
                // Alternate which way goes first.
                let ways = if run % 2 == 0 {
                    [TransposeOn::Host, TransposeOn::Device]
                } else {
                    [TransposeOn::Device, TransposeOn::Host]
                };
                for on in ways {
                    let s = load(&model, on)?;
                    println!("run {run} {on:?}: {s:.2} s");
                    match on {
                        TransposeOn::Host => host.push(s),
                        TransposeOn::Device => device.push(s),
                    }
                }
            }
            println!(
                "median of {} runs: host transpose {:.2} s, device transpose {:.2} s",
                host.len(),
                median(host),
                median(device)
            );
            Ok(())
        }
        Cmd::Speed {
            model,
            runs,
            prompt,
            decode,
        } => {
            let (mut host, mut device) = (Vec::new(), Vec::new());
            for run in 0..runs.max(1) {
                let ways = if run % 2 == 0 {
                    [TransposeOn::Host, TransposeOn::Device]
                } else {
                    [TransposeOn::Device, TransposeOn::Host]
                };
                for on in ways {
                    let [p, d] = speed(&model, on, prompt.max(1), decode)?;
                    println!(
                        "run {run} {on:?}: prefill {prompt} tokens {p:.2} s, decode {d:.3} s/token"
                    );
                    match on {
                        TransposeOn::Host => host.push([p, d]),
                        TransposeOn::Device => device.push([p, d]),
                    }
                }
            }
            for (name, v) in [("host", host), ("device", device)] {
                println!(
                    "median {name} transpose: prefill {:.2} s, decode {:.3} s/token",
                    median(v.iter().map(|x| x[0]).collect()),
                    median(v.iter().map(|x| x[1]).collect())
                );
            }
            Ok(())
        }
    }
}
