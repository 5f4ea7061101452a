//! LoRA: PEFT adapters give transformers+peft logits; our saved adapters have PEFT's exact
//! format; merging; the base is frozen; one SFT step matches PyTorch's loss and LoRA grads.

mod common;
use burn::backend::Autodiff;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use serde_json::Value;
use svgen_train::llama::sft::causal_lm_loss;
use svgen_train::weights::read_safetensors;
use svgen_train::{Llama, LoadOptions, LoraConfig, LoraTarget, StoreDtype, TrainError};

fn adapter_logits(name: &str) -> (f32, Llama<B>) {
    let (model, cfg) = load("llama3-tied")
        .with_peft_adapter(fixture(&format!("llama3-tied/adapter-{name}")))
        .unwrap();
    assert_eq!(cfg.r, 4);
    let (ids, _, expected) = reference(fixture(&format!(
        "llama3-tied/reference_{name}.safetensors"
    )));
    let d = max_abs_diff(&to_vec(model.forward(ids).unwrap()), &expected);
    (d, model)
}

#[test]
fn peft_adapters_give_peft_logits() {
    for name in ["lora", "rslora"] {
        let (d, _) = adapter_logits(name);
        println!("{name}: max abs diff {d:e}");
        assert!(d <= 1e-4, "{name}: {d}");
    }
    // The adapter really changes the output (guards against a silently ignored adapter).
    let base = load("llama3-tied");
    let (ids, _, expected) = reference(fixture("llama3-tied/reference_rslora.safetensors"));
    assert!(max_abs_diff(&to_vec(base.forward(ids).unwrap()), &expected) > 1e-2);
}

#[test]
fn saved_adapter_has_exactly_peft_keys_shapes_and_config() {
    let (_, model) = adapter_logits("rslora");
    let dir = tempfile::tempdir().unwrap();
    let cfg = LoraConfig {
        r: 4,
        lora_alpha: 16.0,
        lora_dropout: 0.0,
        use_rslora: true,
        target_modules: LoraTarget::ALL.into_iter().collect(),
    };
    model
        .save_peft_adapter(dir.path(), &cfg, "llama3-tied")
        .unwrap();
    let ours = read_safetensors(dir.path().join("adapter_model.safetensors")).unwrap();
    let peft = read_safetensors(fixture(
        "llama3-tied/adapter-rslora/adapter_model.safetensors",
    ))
    .unwrap();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        peft.keys().collect::<Vec<_>>()
    );
    for (k, t) in &peft {
        assert_eq!(ours[k].shape, t.shape, "{k}");
        // Round trip: exactly the values we loaded.
        assert_eq!(ours[k], *t, "{k}");
    }
    let read = |p: std::path::PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let ours_cfg = read(dir.path().join("adapter_config.json"));
    let peft_cfg = read(fixture("llama3-tied/adapter-rslora/adapter_config.json"));
    for (k, v) in ours_cfg.as_object().unwrap() {
        let theirs = peft_cfg
            .get(k)
            .unwrap_or_else(|| panic!("PEFT has no config field `{k}`"));
        if k == "target_modules" {
            let mut a: Vec<_> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.to_string())
                .collect();
            let mut b: Vec<_> = theirs
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.to_string())
                .collect();
            a.sort();
            b.sort();
            assert_eq!(a, b);
        } else if !matches!(
            k.as_str(),
            "base_model_name_or_path" | "init_lora_weights" | "lora_alpha"
        ) {
            assert_eq!(v, theirs, "config field `{k}`");
        }
    }
    assert_eq!(
        ours_cfg["lora_alpha"].as_f64(),
        peft_cfg["lora_alpha"].as_f64()
    );
    // And we load what we saved.
    let (again, cfg2) = load("llama3-tied").with_peft_adapter(dir.path()).unwrap();
    assert_eq!(cfg2, cfg);
    assert_eq!(again.lora_state(), model.lora_state());
}

#[test]
fn merged_checkpoint_reloads_with_adapter_logits() {
    let (_, model) = adapter_logits("rslora");
    let dir = tempfile::tempdir().unwrap();
    model.save_pretrained(dir.path(), StoreDtype::F32).unwrap();
    let merged =
        Llama::<B>::from_pretrained(dir.path(), LoadOptions::default(), &Default::default())
            .unwrap();
    assert!(merged.linears().iter().all(|(_, l)| l.adapter.is_none()));
    let (ids, _, expected) = reference(fixture("llama3-tied/reference_rslora.safetensors"));
    let d = max_abs_diff(&to_vec(merged.forward(ids).unwrap()), &expected);
    assert!(d <= 1e-4, "merged: {d}");
}

#[test]
fn adapter_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("llama3-tied/adapter-lora");
    std::fs::copy(
        src.join("adapter_config.json"),
        dir.path().join("adapter_config.json"),
    )
    .unwrap();
    // An adapter for a model with more layers than the base.
    let mut t = read_safetensors(src.join("adapter_model.safetensors")).unwrap();
    let a = t["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].clone();
    t.insert(
        "base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight".into(),
        a,
    );
    svgen_train::weights::write_safetensors(
        dir.path().join("adapter_model.safetensors"),
        &t,
        StoreDtype::F32,
        None,
    )
    .unwrap();
    match load("llama3-tied").with_peft_adapter(dir.path()) {
        Err(TrainError::UnexpectedAdapterKey { key }) => assert!(key.contains("layers.9")),
        other => panic!("expected UnexpectedAdapterKey, got {other:?}"),
    }
    // A missing half.
    t.remove("base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight");
    t.remove("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    svgen_train::weights::write_safetensors(
        dir.path().join("adapter_model.safetensors"),
        &t,
        StoreDtype::F32,
        None,
    )
    .unwrap();
    match load("llama3-tied").with_peft_adapter(dir.path()) {
        Err(TrainError::MissingTensor { key, .. }) => {
            assert_eq!(
                key,
                "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
            )
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}

type AB = Autodiff<B>;

#[test]
fn one_sft_step_matches_pytorch_loss_and_lora_grads() {
    let device = Default::default();
    let base =
        Llama::<AB>::from_pretrained(fixture("llama3-tied"), LoadOptions::default(), &device)
            .unwrap();
    let (model, _) = base
        .with_peft_adapter(fixture("llama3-tied/adapter-rslora"))
        .unwrap();
    let mut t = read_safetensors(fixture("llama3-tied/sft_step.safetensors")).unwrap();
    let ids = t.remove("input_ids").unwrap();
    let [b, s] = [ids.shape[0], ids.shape[1]];
    let labels = t.remove("labels").unwrap().into_i64("labels").unwrap();
    let want_loss = t.remove("loss").unwrap().into_f32("loss").unwrap()[0];
    let ids = Tensor::<AB, 2, Int>::from_data(
        TensorData::new(ids.into_i64("ids").unwrap(), [b, s]),
        &device,
    );
    let (loss, n) = causal_lm_loss(model.forward(ids).unwrap(), &labels).unwrap();
    let counted: usize = (0..b)
        .map(|r| {
            labels[r * s + 1..(r + 1) * s]
                .iter()
                .filter(|&&l| l != -100)
                .count()
        })
        .sum();
    assert_eq!(n, counted);
    let got_loss = loss.clone().into_scalar();
    assert!(
        (got_loss - want_loss).abs() <= 1e-4,
        "{got_loss} vs {want_loss}"
    );
    let grads = loss.backward();
    // Base weights are frozen: no gradient at all.
    assert!(model.embed_tokens.grad(&grads).is_none());
    for (_, lin) in model.linears() {
        assert!(lin.weight.grad(&grads).is_none());
    }
    let mut worst = 0.0f32;
    for (path, lin) in model.linears() {
        let a = lin.adapter.as_ref().unwrap();
        for (half, p) in [("lora_A", &a.lora_a), ("lora_B", &a.lora_b)] {
            let g = p.grad(&grads).expect("LoRA params get gradients");
            let [r0, c0] = g.dims();
            let g: Vec<f32> = g.into_data().convert::<f32>().into_vec().unwrap();
            let key = format!("grad.base_model.model.{path}.{half}.weight");
            let want = t[&key].clone();
            assert_eq!(want.shape, vec![c0, r0], "{key}");
            let want = want.into_f32(&key).unwrap();
            let mut ours = vec![0.0; g.len()];
            // Ours are stored transposed relative to PEFT.
            for r in 0..r0 {
                for c in 0..c0 {
                    ours[c * r0 + r] = g[r * c0 + c];
                }
            }
            worst = worst.max(max_abs_diff(&ours, &want));
        }
    }
    println!("loss {got_loss} vs {want_loss}; max grad diff {worst:e}");
    assert!(worst <= 1e-4, "grad diff {worst}");
}
