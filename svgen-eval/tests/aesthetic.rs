//! LAION aesthetic heads: `.pth` (torch.save) and safetensors, MLP and v1 linear, vs torch outputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::prelude::*;
use svgen_core::compare::{assert_close, Tolerance};
use svgen_eval::{AestheticKind, AestheticPredictor, EvalError, Weights};

type B = Flex;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aesthetic")
}

fn scores(file: &str, expected_key: &str, kind: AestheticKind) {
    let device = Default::default();
    let head = AestheticPredictor::<B>::from_file(dir().join(file), &device).unwrap();
    assert_eq!(head.kind(), kind);
    let e = Weights::from_file(dir().join("expected.safetensors")).unwrap();
    let (emb, s) = e.f32_any("embeds").unwrap();
    let (exp, _) = e.f32_any(expected_key).unwrap();
    let x = Tensor::<B, 2>::from_data(TensorData::new(emb, [s[0], s[1]]), &device);
    let got: Vec<f32> = head.score(x).unwrap().to_data().to_vec().unwrap();
    assert_close(file, &got, &exp, Tolerance::absolute(1e-5));
}

#[test]
fn mlp_pth_matches_torch() {
    scores("mlp.pth", "mlp_scores", AestheticKind::Mlp);
}

#[test]
fn mlp_safetensors_matches_torch() {
    scores("mlp.safetensors", "mlp_scores", AestheticKind::Mlp);
}

#[test]
fn linear_v1_pth_matches_torch() {
    scores("linear_v1.pth", "linear_scores", AestheticKind::Linear);
}

#[test]
fn bad_heads_are_typed_errors() {
    let device = Default::default();
    let w = Weights::from_file(dir().join("mlp.safetensors")).unwrap();
    let mut raw: HashMap<String, (Vec<f32>, Vec<usize>)> = HashMap::new();
    for k in w.keys() {
        raw.insert(k.to_string(), w.f32_any(k).unwrap());
    }
    let mut missing = raw.clone();
    missing.remove("layers.4.bias");
    match AestheticPredictor::<B>::from_tensors(&missing, &device) {
        Err(EvalError::MissingTensor { name, expected }) => {
            assert_eq!(name, "layers.4.bias");
            assert_eq!(expected, vec![8]);
        }
        other => panic!("{other:?}"),
    }
    let mut wrong = raw.clone();
    wrong.insert("layers.2.weight".into(), (vec![0.0; 16 * 31], vec![16, 31]));
    match AestheticPredictor::<B>::from_tensors(&wrong, &device) {
        Err(EvalError::ShapeMismatch {
            name,
            expected,
            found,
        }) => {
            assert_eq!(name, "layers.2.weight");
            assert_eq!(expected, vec![16, 32]);
            assert_eq!(found, vec![16, 31]);
        }
        other => panic!("{other:?}"),
    }
    let head = AestheticPredictor::<B>::from_tensors(&raw, &device).unwrap();
    let x = Tensor::<B, 2>::zeros([2, 7], &device);
    assert!(matches!(
        head.forward(x),
        Err(EvalError::InvalidInput { .. })
    ));
    assert!(AestheticPredictor::<B>::from_file(dir().join("nope.pth"), &device).is_err());
    let garbage =
        std::env::temp_dir().join(format!("svgen-eval-garbage-{}.pth", std::process::id()));
    std::fs::write(&garbage, b"not a pickle").unwrap();
    let r = AestheticPredictor::<B>::from_file(&garbage, &device);
    std::fs::remove_file(&garbage).ok();
    assert!(matches!(r, Err(EvalError::WeightFile { .. })), "{r:?}");
}
