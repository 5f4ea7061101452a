//! Bad checkpoints and inputs give typed errors naming the tensor and the expected/found shapes.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::prelude::*;
use svgen_eval::{ClipConfig, ClipModel, EvalError, Weights};

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn config_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("clip_quick/config.json")).unwrap())
        .unwrap()
}

fn load(cfg: &serde_json::Value, w: &Weights) -> Result<ClipModel<B>, EvalError> {
    let cfg = ClipConfig::from_json_str(&cfg.to_string())?;
    ClipModel::<B>::load(&cfg, w, &Default::default())
}

#[test]
fn missing_key_names_the_tensor() {
    let bytes = std::fs::read(fixture("clip_quick/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| k != "vision_model.post_layernorm.bias")
        .collect();
    let out = safetensors::serialize(kept, None).unwrap();
    let w = Weights::from_bytes(out, "pruned.safetensors").unwrap();
    match load(&config_json(), &w) {
        Err(EvalError::MissingTensor { name, expected }) => {
            assert_eq!(name, "vision_model.post_layernorm.bias");
            assert_eq!(expected, vec![20]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_disagreeing_with_weights_is_a_shape_error() {
    let w = Weights::from_file(fixture("clip_quick/model.safetensors")).unwrap();
    let mut cfg = config_json();
    cfg["text_config"]["intermediate_size"] = 40.into();
    match load(&cfg, &w) {
        Err(e @ EvalError::ShapeMismatch { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("text_model.encoder.layers.0.mlp.fc1.weight"),
                "{msg}"
            );
            assert!(
                msg.contains("[40, 24]") && msg.contains("[37, 24]"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    let mut cfg = config_json();
    cfg["projection_dim"] = 16.into();
    assert!(
        matches!(load(&cfg, &w), Err(EvalError::ShapeMismatch { name, .. }) if name == "text_projection.weight")
    );
    let mut cfg = config_json();
    cfg["vision_config"]["patch_size"] = 6.into();
    assert!(matches!(
        load(&cfg, &w),
        Err(EvalError::ShapeMismatch { .. })
    ));
}

#[test]
fn fewer_layers_in_config_than_in_file_is_detected() {
    let w = Weights::from_file(fixture("clip_quick/model.safetensors")).unwrap();
    let mut cfg = config_json();
    cfg["vision_config"]["num_hidden_layers"] = 1.into();
    match load(&cfg, &w) {
        Err(EvalError::ConfigMismatch { name, .. }) => {
            assert!(name.starts_with("vision_model.encoder.layers.1."), "{name}")
        }
        other => panic!("{other:?}"),
    }
    let mut cfg = config_json();
    cfg["text_config"]["num_hidden_layers"] = 3.into();
    assert!(
        matches!(load(&cfg, &w), Err(EvalError::MissingTensor { name, .. }) if name.starts_with("text_model.encoder.layers.2."))
    );
}

#[test]
fn malformed_files_and_configs() {
    assert!(matches!(
        Weights::from_bytes(b"garbage".to_vec(), "x.safetensors"),
        Err(EvalError::WeightFile { .. })
    ));
    assert!(matches!(
        ClipConfig::from_json_str("[1]"),
        Err(EvalError::Config { .. })
    ));
    assert!(matches!(
        ClipConfig::from_json_str(r#"{"text_config": {"hidden_act": "tanhh"}}"#),
        Err(EvalError::Config { .. })
    ));
    assert!(matches!(
        ClipConfig::from_json_str(
            r#"{"vision_config": {"hidden_size": 10, "num_attention_heads": 3}}"#
        ),
        Err(EvalError::Config { .. })
    ));
    assert!(matches!(
        ClipModel::<B>::from_pretrained("/nonexistent", &Default::default()),
        Err(EvalError::Io { .. })
    ));
    // defaults are transformers' (ViT-B/32)
    let d = ClipConfig::from_json_str("{}").unwrap();
    assert_eq!(
        (d.vision.image_size, d.vision.patch_size, d.projection_dim),
        (224, 32, 512)
    );
    assert_eq!(d.text.eos_token_id, 49407);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let device = Default::default();
    let model = ClipModel::<B>::from_pretrained(fixture("clip_quick"), &device).unwrap();
    let px = Tensor::<B, 4>::zeros([1, 3, 32, 32], &device);
    assert!(
        matches!(model.get_image_features(px), Err(EvalError::InvalidInput { name, .. }) if name == "pixel_values")
    );
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i64, 5, 99], [1, 3]), &device);
    assert!(
        matches!(model.get_text_features(ids, None), Err(EvalError::InvalidInput { name, .. }) if name == "input_ids")
    );
    let ids = Tensor::<B, 2, Int>::zeros([1, 17], &device);
    assert!(matches!(
        model.get_text_features(ids, None),
        Err(EvalError::InvalidInput { .. })
    ));
    let ids = Tensor::<B, 2, Int>::zeros([2, 5], &device);
    let mask = Tensor::<B, 2, Int>::ones([2, 4], &device);
    assert!(
        matches!(model.get_text_features(ids, Some(mask)), Err(EvalError::InvalidInput { name, .. }) if name == "attention_mask")
    );
}

/// A tokenizer file over `svgen_core::io::MAX_METADATA_BYTES` is refused from its size, before
/// it is read (the file is sparse: `set_len` allocates nothing).
#[test]
fn oversized_tokenizer_file_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(svgen_core::io::MAX_METADATA_BYTES + 1)
        .unwrap();
    let err = svgen_eval::ClipTokenizer::from_file(&path).unwrap_err();
    assert!(
        matches!(&err, EvalError::FileTooLarge { path: p, limit }
            if *p == path && *limit == svgen_core::io::MAX_METADATA_BYTES),
        "{err}"
    );
}
