//! Corrupt or mismatched checkpoints give typed errors naming the key.

mod common;
use common::*;
use svgen_train::weights::{read_safetensors, write_safetensors};
use svgen_train::{Llama, LoadOptions, StoreDtype, TrainError};

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    dir
}

fn try_load(dir: &std::path::Path) -> Result<Llama<B>, TrainError> {
    Llama::<B>::from_pretrained(dir, LoadOptions::default(), &Default::default())
}

#[test]
fn missing_and_mismatched_tensors_name_the_key() {
    let dir = copy_fixture("llama3-tied");
    let path = dir.path().join("model.safetensors");
    let mut t = read_safetensors(&path).unwrap();
    let k = "model.layers.1.mlp.up_proj.weight";
    let w = t.remove(k).unwrap();
    write_safetensors(&path, &t, StoreDtype::F32, None).unwrap();
    match try_load(dir.path()) {
        Err(TrainError::MissingTensor { key, .. }) => assert_eq!(key, k),
        other => panic!("{other:?}"),
    }
    let mut w2 = w.clone();
    w2.shape = vec![w.shape[1], w.shape[0]];
    t.insert(k.into(), w2);
    write_safetensors(&path, &t, StoreDtype::F32, None).unwrap();
    match try_load(dir.path()) {
        Err(TrainError::ShapeMismatch { key, .. }) => assert_eq!(key, k),
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupt_files_and_configs_are_typed_errors() {
    let dir = copy_fixture("llama3-tied");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        try_load(dir.path()),
        Err(TrainError::Safetensors { .. })
    ));
    std::fs::write(&path, b"garbage").unwrap();
    assert!(matches!(
        try_load(dir.path()),
        Err(TrainError::Safetensors { .. })
    ));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(try_load(dir.path()), Err(TrainError::Io { .. })));

    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, "{").unwrap();
    assert!(matches!(try_load(dir.path()), Err(TrainError::Json { .. })));
    std::fs::write(
        &cfg,
        r#"{"hidden_size": 64, "num_attention_heads": 3, "num_key_value_heads": 2}"#,
    )
    .unwrap();
    assert!(matches!(try_load(dir.path()), Err(TrainError::Config(_))));
}

#[test]
fn sharded_index_naming_a_key_absent_from_its_shard() {
    let dir = copy_fixture("llama3-untied-bf16-sharded");
    let idx = dir.path().join("model.safetensors.index.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
    let map = v["weight_map"].as_object_mut().unwrap();
    let first = map.values().next().unwrap().clone();
    map.insert("model.layers.0.extra.weight".into(), first);
    std::fs::write(&idx, v.to_string()).unwrap();
    match try_load(dir.path()) {
        Err(TrainError::MissingTensor { key, .. }) => {
            assert_eq!(key, "model.layers.0.extra.weight")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bf16_compute_dtype_is_selectable() {
    let model = Llama::<B>::from_pretrained(
        fixture("llama3-tied"),
        LoadOptions {
            dtype: burn::tensor::DType::BF16,
        },
        &Default::default(),
    )
    .unwrap();
    assert_eq!(model.dtype(), burn::tensor::DType::BF16);
    let (ids, _, expected) = reference(fixture("llama3-tied/reference.safetensors"));
    let d = max_abs_diff(&to_vec(model.forward(ids).unwrap()), &expected);
    // bf16 has 8 bits of mantissa: close, not exact.
    assert!(d < 0.1, "bf16 diff {d}");
}
