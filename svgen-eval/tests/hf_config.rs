//! The HF JSON configuration reader: typed getters, defaults, errors naming file and key, nested
//! sections, refusals by name; and the readers built on it (CLIP, `preprocessor_config.json`).

use std::path::Path;

use serde::Deserialize;
use svgen_eval::hf_config::{read_json, ConfigError, HfConfig, OneOrMany, MAX_CONFIG_BYTES};
use svgen_eval::{ClipConfig, ClipImageProcessor, ClipTextConfig, EvalError};

const JSON: &str = r#"{
    "hidden_size": 64, "eps": 1e-6, "flag": true, "name": "llama", "missing_on_purpose": null,
    "eos_token_id": [128001, 128009], "bos_token_id": 1, "betas": [0.1, 0.2],
    "rope_parameters": {"rope_type": "llama3", "factor": 8.0},
    "class_embed_type": null, "dual_cross_attention": false, "use_dora": true
}"#;

fn cfg() -> HfConfig {
    HfConfig::parse(JSON, "config.json").unwrap()
}

#[test]
fn getters_defaults_and_types() {
    let c = cfg();
    assert_eq!(c.get_or::<usize>("hidden_size", 1).unwrap(), 64);
    assert_eq!(c.get_or::<usize>("absent", 7).unwrap(), 7);
    assert_eq!(
        c.get_or::<usize>("missing_on_purpose", 7).unwrap(),
        7,
        "null is absent"
    );
    assert_eq!(c.get::<f64>("eps").unwrap(), Some(1e-6));
    assert_eq!(
        c.get::<f64>("hidden_size").unwrap(),
        Some(64.0),
        "integers are numbers"
    );
    assert!(c.get_or("flag", false).unwrap());
    assert_eq!(c.require::<String>("name").unwrap(), "llama");
    assert_eq!(c.get::<Vec<f64>>("betas").unwrap(), Some(vec![0.1, 0.2]));
    assert_eq!(
        c.get::<OneOrMany<u32>>("eos_token_id").unwrap(),
        Some(OneOrMany(vec![128001, 128009]))
    );
    assert_eq!(
        c.get::<OneOrMany<u32>>("bos_token_id").unwrap(),
        Some(OneOrMany(vec![1]))
    );
    assert_eq!(c.positive("absent", 3).unwrap(), 3);
    assert!(c.contains("hidden_size") && !c.contains("missing_on_purpose"));
}

#[test]
fn errors_name_the_file_and_the_key() {
    let c = cfg();
    match c.get::<usize>("eps") {
        Err(ConfigError::WrongType {
            path,
            key,
            expected,
            found,
        }) => {
            assert_eq!(path, Path::new("config.json"));
            assert_eq!(key, "eps");
            assert_eq!(expected, "a non-negative integer");
            assert_eq!(found, "1e-6");
        }
        other => panic!("{other:?}"),
    }
    // out of the target type's range is a type error too
    assert!(matches!(c.get::<u8>("hidden_size").map(|_| ()), Ok(())));
    assert!(matches!(
        c.get::<u8>("eos_token_id"),
        Err(ConfigError::WrongType { .. })
    ));
    assert!(
        matches!(c.get::<Vec<u32>>("betas"), Err(ConfigError::WrongType { key, .. }) if key == "betas")
    );
    assert!(
        matches!(c.require::<usize>("absent"), Err(ConfigError::Missing { key, .. }) if key == "absent")
    );
    let zero = HfConfig::parse(r#"{"n": 0}"#, "x.json").unwrap();
    let e = zero.positive("n", 1).unwrap_err();
    assert!(matches!(e, ConfigError::Invalid { ref key, .. } if key == "n"));
    assert_eq!(e.to_string(), "x.json: `n` must be positive");
    // nested sections carry their path
    let rope = c.section("rope_parameters").unwrap();
    assert_eq!(rope.get::<f64>("factor").unwrap(), Some(8.0));
    let e = rope.get::<bool>("rope_type").unwrap_err();
    assert!(e.to_string().contains("`rope_parameters.rope_type`"), "{e}");
    assert!(c.section("absent").unwrap().as_map().is_empty());
    assert!(matches!(
        c.section("hidden_size"),
        Err(ConfigError::WrongType {
            expected: "an object",
            ..
        })
    ));
}

#[test]
fn unsupported_values_are_refused_by_name() {
    let c = cfg();
    let rope = c.section("rope_parameters").unwrap();
    #[derive(Clone, Debug, PartialEq)]
    enum Rope {
        Default,
        Linear,
    }
    let e = rope
        .choice(
            "rope_type",
            Rope::Default,
            &[("default", Rope::Default), ("linear", Rope::Linear)],
        )
        .unwrap_err();
    match &e {
        ConfigError::Unsupported {
            key, value, reason, ..
        } => {
            assert_eq!(key, "rope_parameters.rope_type");
            assert_eq!(value, "\"llama3\"");
            assert_eq!(reason, "supported: default, linear");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.choice("absent", Rope::Linear, &[]).unwrap(), Rope::Linear);
    c.require_null(&["class_embed_type", "absent"]).unwrap();
    c.require_false(&["dual_cross_attention", "class_embed_type"])
        .unwrap();
    assert!(matches!(
        c.require_false(&["use_dora"]),
        Err(ConfigError::Unsupported { key, value, .. }) if key == "use_dora" && value == "true"
    ));
    assert!(matches!(
        c.require_null(&["dual_cross_attention"]),
        Err(ConfigError::Unsupported { .. })
    ));
}

#[test]
fn files_io_size_and_serde() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("scheduler_config.json");
    assert!(matches!(HfConfig::read(&p), Err(ConfigError::Io { path, .. }) if path == p));
    std::fs::write(&p, "{\"num_train_timesteps\": 1000,}").unwrap();
    assert!(matches!(HfConfig::read(&p), Err(ConfigError::Json { path, .. }) if path == p));
    std::fs::write(&p, "[1, 2]").unwrap();
    assert!(matches!(HfConfig::read(&p), Err(ConfigError::Json { .. })));
    assert_eq!(read_json(&p).unwrap(), serde_json::json!([1, 2]));
    let big = vec![b' '; MAX_CONFIG_BYTES as usize + 2];
    std::fs::write(&p, big).unwrap();
    assert!(
        matches!(HfConfig::read(&p), Err(ConfigError::Json { message, .. }) if message.contains("larger"))
    );

    #[derive(Deserialize, Default, Debug, PartialEq)]
    #[serde(default)]
    struct Vae {
        latent_channels: usize,
        scaling_factor: f64,
    }
    let c = HfConfig::parse(
        r#"{"latent_channels": 4, "_class_name": "AutoencoderKL"}"#,
        "vae.json",
    )
    .unwrap();
    assert_eq!(
        c.deserialize::<Vae>().unwrap(),
        Vae {
            latent_channels: 4,
            scaling_factor: 0.0
        }
    );
    let bad = HfConfig::parse(r#"{"latent_channels": "four"}"#, "vae.json").unwrap();
    assert!(
        matches!(bad.deserialize::<Vae>(), Err(ConfigError::Json { path, .. }) if path == Path::new("vae.json"))
    );
}

#[test]
fn clip_configs_through_the_reader() {
    // text-only config (SD text_encoder), image_size as [h, w], token ids as lists
    let t = ClipTextConfig::from_json_str(
        r#"{"hidden_size": 32, "num_attention_heads": 4, "eos_token_id": [2]}"#,
    )
    .unwrap();
    assert_eq!(
        (t.hidden_size, t.eos_token_id, t.vocab_size),
        (32, 2, 49408)
    );
    let c = ClipConfig::from_json_str(
        r#"{"vision_config": {"image_size": [30, 30], "patch_size": 7}, "text_config_dict": {"hidden_size": 24, "num_attention_heads": 2}}"#,
    )
    .unwrap();
    assert_eq!(
        (c.vision.image_size, c.vision.patch_size, c.text.hidden_size),
        (30, 7, 24)
    );
    for (json, key) in [
        (
            r#"{"vision_config": {"image_size": [30, 31]}}"#,
            "vision_config.image_size",
        ),
        (
            r#"{"text_config": {"hidden_act": "tanhh"}}"#,
            "text_config.hidden_act",
        ),
        (
            r#"{"text_config": {"eos_token_id": []}}"#,
            "text_config.eos_token_id",
        ),
        (r#"{"projection_dim": 0}"#, "projection_dim"),
        (
            r#"{"vision_config": {"patch_size": 300}}"#,
            "vision_config.patch_size",
        ),
    ] {
        match ClipConfig::from_json_str(json) {
            Err(EvalError::Config(e)) => {
                assert!(e.to_string().contains(&format!("`{key}`")), "{e}")
            }
            other => panic!("{json}: {other:?}"),
        }
    }
    // I/O errors keep svgen-eval's Io variant
    assert!(matches!(
        ClipConfig::from_file("/nonexistent/config.json"),
        Err(EvalError::Io { .. })
    ));
}

#[test]
fn preprocessor_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("preprocessor_config.json");
    // transformers' CLIPImageProcessor file for ViT-L/14-336
    std::fs::write(
        &p,
        r#"{"crop_size": {"height": 336, "width": 336}, "do_center_crop": true, "do_convert_rgb": true,
            "do_normalize": true, "do_rescale": true, "do_resize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "CLIPImageProcessor",
            "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "rescale_factor": 0.00392156862745098,
            "size": {"shortest_edge": 336}}"#,
    )
    .unwrap();
    let pp = ClipImageProcessor::from_file(&p).unwrap();
    assert_eq!(
        (pp.shortest_edge, pp.crop_height, pp.crop_width),
        (336, 336, 336)
    );
    assert_eq!(pp.image_std, svgen_eval::OPENAI_CLIP_STD);
    // older files: plain integers
    std::fs::write(&p, r#"{"size": 224, "crop_size": 200, "image_mean": 0.5}"#).unwrap();
    let pp = ClipImageProcessor::from_file(&p).unwrap();
    assert_eq!(
        (
            pp.shortest_edge,
            pp.crop_height,
            pp.crop_width,
            pp.image_mean
        ),
        (224, 200, 200, [0.5; 3])
    );
    for (json, key) in [
        (r#"{"resample": 2}"#, "resample"),
        (r#"{"size": {"height": 224, "width": 224}}"#, "size"),
        (r#"{"crop_size": {"height": 224}}"#, "crop_size.width"),
        (r#"{"do_resize": "yes"}"#, "do_resize"),
        (r#"{"image_std": [1, 2]}"#, "image_std"),
        (r#"{"size": 0}"#, "size"),
    ] {
        std::fs::write(&p, json).unwrap();
        match ClipImageProcessor::from_file(&p) {
            Err(EvalError::Config(e)) => {
                assert!(e.to_string().contains(&format!("`{key}`")), "{json}: {e}")
            }
            other => panic!("{json}: {other:?}"),
        }
    }
}
