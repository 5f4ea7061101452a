//! Parity of the Burn CLIP with transformers' `CLIPModel` on tiny random checkpoints written by
//! `tools/fixtures/make_clip.py` (gelu and quick_gelu, image 30 / patch 7, several EOS positions).

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::prelude::*;
use svgen_core::compare::{assert_close, Tolerance};
use svgen_eval::{ClipModel, Weights};

type B = Flex;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Panics unless `a` is within 1e-4 of `expected` everywhere (NaN and length checked).
fn assert_matches(name: &str, a: &Tensor<B, 2>, expected: &[f32]) {
    let v: Vec<f32> = a.to_data().to_vec().unwrap();
    let d = assert_close(name, &v, expected, Tolerance::absolute(1e-4));
    eprintln!("{name}: max abs diff {:e}", d.value);
}

fn check(name: &str) {
    let dir = fixtures().join(name);
    let device = Default::default();
    let model = ClipModel::<B>::from_pretrained(&dir, &device).unwrap();
    let r = Weights::from_file(dir.join("reference.safetensors")).unwrap();
    let (pix, ps) = r.f32_any("pixel_values").unwrap();
    let (ids, is) = r.i64_any("input_ids").unwrap();
    let (mask, _) = r.i64_any("attention_mask").unwrap();
    let pixels =
        Tensor::<B, 4>::from_data(TensorData::new(pix, [ps[0], ps[1], ps[2], ps[3]]), &device);
    let ids_t = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [is[0], is[1]]), &device);
    let mask_t = Tensor::<B, 2, Int>::from_data(TensorData::new(mask, [is[0], is[1]]), &device);
    let out = model
        .forward(ids_t.clone(), Some(mask_t.clone()), pixels)
        .unwrap();
    for (got, key) in [
        (&out.image_embeds, "image_embeds"),
        (&out.text_embeds, "text_embeds"),
        (&out.logits_per_image, "logits_per_image"),
    ] {
        let (exp, _) = r.f32_any(key).unwrap();
        assert_matches(&format!("{name}: {key}"), got, &exp);
    }
    let text = model
        .text_model
        .forward(ids_t.clone(), Some(mask_t.clone()))
        .unwrap();
    let feats = model.get_text_features(ids_t, Some(mask_t)).unwrap();
    let (exp, _) = r.f32_any("text_features").unwrap();
    assert_matches(&format!("{name}: text features"), &feats, &exp);
    let (exp, s) = r.f32_any("text_last_hidden_state").unwrap();
    let h = text.last_hidden_state.reshape([s[0] * s[1], s[2]]);
    assert_matches(&format!("{name}: text last_hidden_state"), &h, &exp);
}

#[test]
fn quick_gelu_odd_sizes_legacy_eos_matches_transformers() {
    check("clip_quick");
}

#[test]
fn gelu_first_eos_matches_transformers() {
    check("clip_gelu");
}

#[test]
fn clip_skip_runs_fewer_layers() {
    let device = Default::default();
    let model = ClipModel::<B>::from_pretrained(fixtures().join("clip_quick"), &device).unwrap();
    let ids =
        Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i64, 5, 7, 98], [1, 4]), &device);
    let full = model.text_model.forward(ids.clone(), None).unwrap();
    let skip0 = model.text_model.forward_skip(ids.clone(), None, 0).unwrap();
    let skip1 = model.text_model.forward_skip(ids.clone(), None, 1).unwrap();
    let a: Vec<f32> = full.last_hidden_state.to_data().to_vec().unwrap();
    let b: Vec<f32> = skip0.last_hidden_state.to_data().to_vec().unwrap();
    let c: Vec<f32> = skip1.last_hidden_state.to_data().to_vec().unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), c.len());
    assert!(a.iter().zip(&c).any(|(x, y)| (x - y).abs() > 1e-3));
    assert!(model.text_model.forward_skip(ids, None, 2).is_err());
}
