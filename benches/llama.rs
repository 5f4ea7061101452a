//! Llama speed on the CPU backend (Flex): LoRA training step and KV-cache decode latency.
//!
//! ```text
//! cargo bench --bench llama
//! /work/venv/bin/python tools/llama_bench/bench_torch.py   # PyTorch CPU, same config
//! ```
//! Config: 4 layers, hidden 512, 8 heads / 4 kv heads, intermediate 1408, vocab 8192,
//! LoRA r = 16 on q,k,v,o,gate,up,down; training sequence 512, batch 1.

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use svgen::train::burn::backend::{Autodiff, Flex};
use svgen::train::burn::tensor::{Int, Tensor, TensorData};
use svgen::train::sft::causal_lm_loss;
use svgen::train::weights::write_safetensors;
use svgen::train::{HostTensor, KvCache, Llama, LoadOptions, LoraConfig, StoreDtype};

const SEQ: usize = 512;

fn write_model(dir: &std::path::Path) {
    let cfg = serde_json::json!({
        "model_type": "llama", "vocab_size": 8192, "hidden_size": 512, "intermediate_size": 1408,
        "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 4096,
        "tie_word_embeddings": true
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut t = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, rng: &mut rand::rngs::StdRng| {
        let n = shape.iter().product();
        let v = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
        t.insert(name, HostTensor::f32(shape, v));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![8192, 512],
        0.05,
        &mut rng,
    );
    add("model.norm.weight".into(), vec![512], 1.0, &mut rng);
    for l in 0..4 {
        let p = format!("model.layers.{l}.");
        for (n, s) in [
            ("self_attn.q_proj", [512, 512]),
            ("self_attn.k_proj", [256, 512]),
            ("self_attn.v_proj", [256, 512]),
            ("self_attn.o_proj", [512, 512]),
            ("mlp.gate_proj", [1408, 512]),
            ("mlp.up_proj", [1408, 512]),
            ("mlp.down_proj", [512, 1408]),
        ] {
            add(format!("{p}{n}.weight"), s.to_vec(), 0.04, &mut rng);
        }
        add(
            format!("{p}input_layernorm.weight"),
            vec![512],
            1.0,
            &mut rng,
        );
        add(
            format!("{p}post_attention_layernorm.weight"),
            vec![512],
            1.0,
            &mut rng,
        );
    }
    write_safetensors(dir.join("model.safetensors"), &t, StoreDtype::F32, None).unwrap();
}

fn ids<Bk: svgen::train::burn::tensor::backend::Backend>(
    n: usize,
    d: &Bk::Device,
) -> Tensor<Bk, 2, Int> {
    let v: Vec<i64> = (0..n as i64).map(|i| (i * 7919) % 8192).collect();
    Tensor::from_data(TensorData::new(v, [1, n]), d)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path());
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
    let labels: Vec<i64> = (0..SEQ as i64).map(|i| (i * 7919) % 8192).collect();
    g.bench_function("lora_step_seq512", |b| {
        b.iter(|| {
            let (loss, _) = causal_lm_loss(model.forward(ids(SEQ, &device)), &labels).unwrap();
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
        // The buffers are preallocated and written in place; each iteration decodes the
        // token at `pos` and rewinds the cache to the prompt.
        let mut cache = KvCache::<Flex>::with_capacity(4, 1, pos + 1);
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
