//! Logit parity with transformers on tiny random checkpoints (fixtures written by
//! `tools/fixtures/make_llama.py`).

mod common;
use common::*;

fn check(name: &str) {
    let model = load(name);
    let (ids, shape, expected) = reference(fixture(name).join("reference.safetensors"));
    let logits = model.forward(ids).unwrap();
    assert_eq!(logits.dims().to_vec(), shape);
    let d = max_abs_diff(&to_vec(logits), &expected);
    println!("{name}: max abs diff {d:e}");
    assert!(d <= 1e-4, "{name}: max abs diff {d} > 1e-4");
}

#[test]
fn llama3_tied_f32_gqa_rope_parameters() {
    check("llama3-tied");
}

#[test]
fn llama3_untied_bf16_sharded_classic_config_head_dim() {
    check("llama3-untied-bf16-sharded");
}

#[test]
fn llama2_f16_mha_default_rope() {
    check("llama2-f16");
}
