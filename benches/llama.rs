//! Llama speed on the CPU backend (Flex): LoRA training step and KV-cache decode latency.
//!
//! ```text
//! cargo bench --bench llama
//! /work/venv/bin/python tools/llama_bench/bench_torch.py   # PyTorch CPU, same config
//! ```
//! `examples/llama_perf.rs` measures the decode-latency growth with positions interleaved
//! (robust to machine-load drift) and the peak RSS of LoRA training.
//! Config: 4 layers, hidden 512, 8 heads / 4 kv heads, intermediate 1408, vocab 8192,
//! LoRA r = 16 on q,k,v,o,gate,up,down; training sequence 512, batch 1.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use svgen::train::burn::backend::{Autodiff, Flex};
use svgen::train::burn::tensor::{Int, Tensor, TensorData};
use svgen::train::llama::sft::causal_lm_loss;
use svgen::train::{KvCache, Llama, LoadOptions, LoraConfig};

#[path = "support/llama_model.rs"]
mod llama_model;
use llama_model::{token_ids, write_model};

const SEQ: usize = 512;

fn ids<Bk: svgen::train::burn::tensor::backend::Backend>(
    n: usize,
    d: &Bk::Device,
) -> Tensor<Bk, 2, Int> {
    Tensor::from_data(TensorData::new(token_ids(n), [1, n]), d)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path()).unwrap();
    let device = Default::default();
    let lora = LoraConfig {
        r: 16,
        lora_alpha: 32.0,
        lora_dropout: 0.0,
        ..Default::default()
    };

    let mut g = c.benchmark_group("llama_train");
    g.sample_size(10);
    g.throughput(Throughput::Elements(SEQ as u64));
    let model =
        Llama::<Autodiff<Flex>>::from_pretrained(dir.path(), LoadOptions::default(), &device)
            .unwrap()
            .with_lora(&lora, 0)
            .unwrap();
    let labels = token_ids(SEQ);
    g.bench_function("lora_step_seq512", |b| {
        b.iter(|| {
            let (loss, _) =
                causal_lm_loss(model.forward(ids(SEQ, &device)).unwrap(), &labels).unwrap();
            let grads = loss.backward();
            std::hint::black_box(grads);
        })
    });
    g.finish();

    let model =
        Llama::<Flex>::from_pretrained(dir.path(), LoadOptions::default(), &device).unwrap();
    let mut g = c.benchmark_group("llama_decode");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    for pos in [64usize, 256, 1024] {
        // Each iteration decodes the token at `pos` and rewinds the cache to the prompt.
        let mut cache = KvCache::<Flex>::new(4, 1);
        model
            .forward_cached(ids(pos, &device), &[vec![true; pos]], &mut cache)
            .unwrap();
        g.bench_function(format!("token_at_pos_{pos}"), |b| {
            b.iter(|| {
                let h = model
                    .forward_cached(ids(1, &device), &[vec![true]], &mut cache)
                    .unwrap();
                let logits = model.logits(h).into_data();
                cache.truncate(pos);
                std::hint::black_box(logits);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
