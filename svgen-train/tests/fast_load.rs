//! Loading: linears transposed on the host or on the device (a strided view of the stored
//! `[out, in]` bytes) give the same model, and `LoadOptions::for_checkpoint` picks the dtype
//! from `config.json` (f32 on the CPU backend whatever the checkpoint holds).

mod common;

use burn::backend::Autodiff;
use burn::tensor::{DType, Int, Tensor, TensorData};
use common::*;
use svgen_core::compare::{assert_close, Tolerance};
use svgen_train::weights::{TransposeOn, Weights, TRANSFORMERS_STEM};
use svgen_train::{Llama, LlamaConfig, LoadOptions, TrainError};

fn load_with(name: &str, on: TransposeOn, dtype: DType) -> Llama<B> {
    let dir = fixture(name);
    let config = LlamaConfig::from_file(&dir).unwrap();
    let weights = Weights::open(&dir, TRANSFORMERS_STEM)
        .unwrap()
        .with_transpose_on(on);
    Llama::<B>::from_weights(config, weights, LoadOptions { dtype }, &Default::default()).unwrap()
}

fn logits(model: &Llama<B>) -> Vec<f32> {
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(vec![1i64, 5, 9, 42, 7, 3], [1, 6]),
        &Default::default(),
    );
    // `forward` returns the logits `[B, T, vocab]`.
    model
        .forward(ids)
        .unwrap()
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap()
}

#[test]
fn device_transpose_loads_the_same_model_as_the_host_transpose() {
    for name in ["llama3-untied-bf16-sharded", "llama2-f16", "llama3-tied"] {
        let host = load_with(name, TransposeOn::Host, DType::F32);
        let device = load_with(name, TransposeOn::Device, DType::F32);
        // The weights are the same numbers (only their layout differs): exact.
        let (hs, ds) = (host.hf_state(), device.hf_state());
        assert_eq!(hs.keys().collect::<Vec<_>>(), ds.keys().collect::<Vec<_>>());
        for (key, h) in &hs {
            let d = &ds[key];
            assert_eq!(h.shape, d.shape, "{name} {key}");
            let (h, d) = (
                h.clone().into_f32(key).unwrap(),
                d.clone().into_f32(key).unwrap(),
            );
            assert_close(&format!("{name} {key}"), &d, &h, Tolerance::absolute(0.0));
        }
        // The matmul reads the transposed view with other strides; the sums may be
        // associated differently, so f32 rounding (2^-24 relative per operation, a few hundred
        // terms per dot product) bounds the difference well below 1e-5 of the logits' RMS.
        assert_close(
            &format!("{name} logits"),
            &logits(&device),
            &logits(&host),
            Tolerance::rms_relative(1e-5),
        );
    }
}

#[test]
fn device_transpose_works_in_bf16_and_under_autodiff() {
    let name = "llama3-untied-bf16-sharded";
    let host = load_with(name, TransposeOn::Host, DType::BF16);
    let device = load_with(name, TransposeOn::Device, DType::BF16);
    for ((path, a), (_, b)) in host.linears().into_iter().zip(device.linears()) {
        assert_eq!(a.weight.val().dtype(), DType::BF16, "{path}");
        assert_eq!(b.weight.val().dtype(), DType::BF16, "{path}");
        let (a, b) = (
            a.weight
                .val()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap(),
            b.weight
                .val()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap(),
        );
        assert_close(&path, &b, &a, Tolerance::absolute(0.0));
    }
    // Frozen base weights stay frozen when the transposed view is wrapped as a parameter.
    let dir = fixture(name);
    let weights = Weights::open(&dir, TRANSFORMERS_STEM)
        .unwrap()
        .with_transpose_on(TransposeOn::Device);
    let model = Llama::<Autodiff<B>>::from_weights(
        LlamaConfig::from_file(&dir).unwrap(),
        weights,
        LoadOptions::default(),
        &Default::default(),
    )
    .unwrap();
    assert!(model
        .linears()
        .iter()
        .all(|(_, l)| !l.weight.val().is_require_grad()));
}

#[test]
fn transpose_defaults_to_the_host_on_flex_only() {
    assert_eq!(TransposeOn::for_backend::<B>(), TransposeOn::Host);
    assert_eq!(TransposeOn::for_backend::<Autodiff<B>>(), TransposeOn::Host);
}

#[test]
fn load_options_follow_the_checkpoint_dtype_except_on_the_cpu() {
    let dir = fixture("llama3-untied-bf16-sharded");
    assert_eq!(LoadOptions::checkpoint_dtype(&dir).unwrap(), DType::BF16);
    assert_eq!(
        LoadOptions::checkpoint_dtype(fixture("llama2-f16")).unwrap(),
        DType::F16
    );
    // Flex computes in f32 on the host: the bf16 checkpoint loads widened.
    assert_eq!(
        LoadOptions::for_checkpoint::<B>(&dir).unwrap().dtype,
        DType::F32
    );
    assert_eq!(
        LoadOptions::for_checkpoint::<Autodiff<B>>(&dir)
            .unwrap()
            .dtype,
        DType::F32
    );
    // A dtype transformers does not write is a typed error, and so is a missing config.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        r#"{"model_type": "llama", "torch_dtype": "int8"}"#,
    )
    .unwrap();
    assert!(matches!(
        LoadOptions::checkpoint_dtype(tmp.path()),
        Err(TrainError::InvalidArgument(m)) if m.contains("int8")
    ));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        LoadOptions::checkpoint_dtype(empty.path()),
        Err(TrainError::Io { .. })
    ));
}
