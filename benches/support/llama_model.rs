#![allow(dead_code)]
//! The small Llama both `benches/llama.rs` and `examples/llama_perf.rs` measure: 4 layers,
//! hidden 512, 8 heads / 4 kv heads, intermediate 1408, vocab 8192, tied embeddings, random
//! weights (seeded), written as a HF folder so the real loader is used.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use svgen::train::weights::write_safetensors;
use svgen::train::{HostTensor, StoreDtype};

pub const VOCAB: usize = 8192;
pub const HIDDEN: usize = 512;
pub const INTERMEDIATE: usize = 1408;
pub const LAYERS: usize = 4;
pub const HEADS: usize = 8;
pub const KV_HEADS: usize = 4;

/// The bench model's `config.json` (positions up to 32768, for the long-context measurements).
pub fn bench_config_json() -> String {
    serde_json::json!({
        "model_type": "llama", "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 32768,
        "tie_word_embeddings": true
    })
    .to_string()
}

/// Writes `config.json` and `model.safetensors` (f32) into `dir`.
pub fn write_model(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("config.json"), bench_config_json())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut t = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, rng: &mut rand::rngs::StdRng| {
        let n = shape.iter().product();
        let v = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
        t.insert(name, HostTensor::f32(shape, v));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![VOCAB, HIDDEN],
        0.05,
        &mut rng,
    );
    add("model.norm.weight".into(), vec![HIDDEN], 1.0, &mut rng);
    let (q, kv) = (HIDDEN, HIDDEN / HEADS * KV_HEADS);
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}.");
        for (n, s) in [
            ("self_attn.q_proj", [q, HIDDEN]),
            ("self_attn.k_proj", [kv, HIDDEN]),
            ("self_attn.v_proj", [kv, HIDDEN]),
            ("self_attn.o_proj", [HIDDEN, q]),
            ("mlp.gate_proj", [INTERMEDIATE, HIDDEN]),
            ("mlp.up_proj", [INTERMEDIATE, HIDDEN]),
            ("mlp.down_proj", [HIDDEN, INTERMEDIATE]),
        ] {
            add(format!("{p}{n}.weight"), s.to_vec(), 0.04, &mut rng);
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            add(format!("{p}{norm}.weight"), vec![HIDDEN], 1.0, &mut rng);
        }
    }
    write_safetensors(dir.join("model.safetensors"), &t, StoreDtype::F32, None)
        .map_err(std::io::Error::other)
}

/// Deterministic token ids `0..n` spread over the vocabulary.
pub fn token_ids(n: usize) -> Vec<i64> {
    (0..n as i64).map(|i| (i * 7919) % VOCAB as i64).collect()
}
