//! Predicted peak device memory of FLUX.1-schnell generation (the published shapes: 11.9B
//! transformer and 4.8B T5 in bf16, CLIP-L and the VAE in f32), from the component shapes alone
//! (`svgen::train::flux::memory`): weights, the activations of the three phases, and the peak with
//! the text encoders kept or freed after encoding.
//!
//! ```text
//! cargo run --release --example flux_memory                          # 512² and 1024², batch 1
//! cargo run --release --example flux_memory -- --size 768 --batch 4 --max-seq 512 --f32
//! ```

use clap::Parser;
use svgen::train::flux::memory::{predict_memory, FluxMemoryShapes};

#[derive(Parser)]
struct Args {
    /// Square image sides in pixels (default: 512 and 1024).
    #[arg(long, value_delimiter = ',')]
    size: Vec<u64>,
    /// Images per batch (true CFG doubles it).
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// T5 token limit.
    #[arg(long, default_value_t = 256)]
    max_seq: u64,
    /// Transformer and T5 in f32 instead of bf16.
    #[arg(long)]
    f32: bool,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

fn main() {
    let args = Args::parse();
    let mut shapes = FluxMemoryShapes::flux_1_schnell();
    if args.f32 {
        shapes.transformer_bytes = 4;
        shapes.t5_bytes = 4;
    }
    let sizes = if args.size.is_empty() {
        vec![512, 1024]
    } else {
        args.size.clone()
    };
    if !args.json {
        println!(
            "FLUX.1-schnell, {} transformer/T5, batch {}, T5 limit {} (GiB)",
            if args.f32 { "f32" } else { "bf16" },
            args.batch,
            args.max_seq
        );
        println!(
            "| size | attention | weights | encode act. | denoise act. | decode act. | peak (encoders kept) | peak (encoders freed) |"
        );
        println!("|---|---|---|---|---|---|---|---|");
    }
    for &side in &sizes {
        for fused in [true, false] {
            let m = predict_memory(&shapes, side, side, args.batch, args.max_seq, !fused);
            let weights = m.transformer_weights + m.t5_weights + m.clip_weights + m.vae_weights;
            let attention = if fused { "fused" } else { "materialised" };
            if args.json {
                println!(
                    "{{\"size\":{side},\"attention\":\"{attention}\",\"batch\":{},\"max_seq\":{},\"weights\":{weights},\"encode_activations\":{},\"denoise_activations\":{},\"decode_activations\":{},\"peak_keep_encoders\":{},\"peak_free_encoders\":{}}}",
                    args.batch,
                    args.max_seq,
                    m.encode_activations,
                    m.denoise_activations,
                    m.decode_activations,
                    m.peak_keep_encoders,
                    m.peak_free_encoders
                );
            } else {
                println!(
                    "| {side}² | {attention} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    gib(weights),
                    gib(m.encode_activations),
                    gib(m.denoise_activations),
                    gib(m.decode_activations),
                    gib(m.peak_keep_encoders),
                    gib(m.peak_free_encoders)
                );
            }
        }
    }
}
