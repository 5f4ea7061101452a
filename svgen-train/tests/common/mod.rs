//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Int, Tensor, TensorData};
use svgen_train::weights::read_safetensors;
use svgen_train::{CpuBackend, Llama, LoadOptions};

pub type B = CpuBackend;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn load(name: &str) -> Llama<B> {
    Llama::<B>::from_pretrained(fixture(name), LoadOptions::default(), &Default::default())
        .expect("fixture loads")
}

/// `input_ids` [B,T] and `logits` [B,T,V] from a reference file.
pub fn reference(path: PathBuf) -> (Tensor<B, 2, Int>, Vec<usize>, Vec<f32>) {
    let mut t = read_safetensors(&path).expect("reference readable");
    let ids = t.remove("input_ids").expect("input_ids");
    let shape = ids.shape.clone();
    let ids = ids.into_i64("input_ids").unwrap();
    let logits = t.remove("logits").expect("logits");
    let lshape = logits.shape.clone();
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids, [shape[0], shape[1]]),
        &Default::default(),
    );
    (ids, lshape, logits.into_f32("logits").unwrap())
}

/// Max |a − b| ([`svgen_core::compare::max_abs_diff`]); panics on a length mismatch or a
/// non-finite value on either side, so a NaN can pass neither a "close" nor a "differs" check.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    svgen_core::compare::max_abs_diff(a, b)
        .unwrap_or_else(|e| panic!("{e}"))
        .value as f32
}

pub fn to_vec(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// [`max_abs_diff`] divided by the largest magnitude of `reference` (its "relative to the
/// tensor's scale" error); infinite for an all-zero reference with a nonzero difference, and
/// panics on a length mismatch or a non-finite value like [`max_abs_diff`].
pub fn max_rel_diff(a: &[f32], reference: &[f32]) -> f32 {
    let diff = max_abs_diff(a, reference);
    // Every value is finite here (checked by `max_abs_diff`).
    let scale = reference.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if scale == 0.0 {
        if diff == 0.0 {
            0.0
        } else {
            f32::INFINITY
        }
    } else {
        diff / scale
    }
}
