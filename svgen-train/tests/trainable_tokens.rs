//! Trainable rows for the thesis' added tokens on the real Llama 3 layout (tokenizer length ==
//! `vocab_size`, so adding `<|ctx|>`, `<|objs|>`, `<|end_svg|>` resizes the model), with PEFT's
//! `trainable_token_indices` format, on tied (Llama 3.2 1B-like) and untied (8B-like) models.
//!
//! Fixtures: `tools/fixtures/make_llama3_layout.py` (models, tokenizer, peft-written adapters
//! and their logits); `adapter-ours/` was written by our trainer (`finetune_llm`) and
//! `reference_ours.safetensors` holds the logits `peft.PeftModel.from_pretrained` computes with
//! it (`tools/fixtures/check_peft_trainable_tokens.py`).

mod common;
use std::path::Path;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use common::{fixture, reference, to_vec, B};
use svgen_core::compare::{assert_close, max_abs_diff, Tolerance};
use svgen_train::llama::lora::check_adapter_tokens;
use svgen_train::llama::sft::{
    causal_lm_loss, loss_and_grads, read_jsonl, tokenize_pairs, MicroBatchGrads, SftBatch,
    SftConfig, SftSample, SftTrainer,
};
use svgen_train::llama::tokenizer::{LlamaTokenizer, PromptFormat};
use svgen_train::llama::trainable_tokens::{TokenTraining, TrainableTokenIndices};
use svgen_train::weights::{read_safetensors, write_safetensors, StoreDtype};
use svgen_train::{Llama, LoadOptions, LoraConfig, LoraTarget, TrainError};

type AB = Autodiff<B>;

const NEW: [u32; 3] = [768, 769, 770];

fn model_dir(tied: bool) -> std::path::PathBuf {
    fixture(if tied {
        "llama3-layout/tied"
    } else {
        "llama3-layout/untied"
    })
}

fn tokenizer() -> LlamaTokenizer {
    LlamaTokenizer::from_dir(fixture("llama3-layout/tokenizer")).unwrap()
}

fn grown_tokenizer() -> LlamaTokenizer {
    let mut tok = tokenizer();
    tok.ensure_thesis_tokens().unwrap();
    tok
}

/// The fixture model with the vocabulary grown to the thesis tokens (as `finetune_llm` does).
fn resized<BB: Backend>(tied: bool) -> Llama<BB> {
    let m =
        Llama::<BB>::from_pretrained(model_dir(tied), LoadOptions::default(), &Default::default())
            .unwrap();
    assert_eq!(m.config().vocab_size, tokenizer().len(), "the real layout");
    m.resize_token_embeddings(771).unwrap()
}

fn lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        target_modules: [LoraTarget::Q, LoraTarget::V, LoraTarget::Down]
            .into_iter()
            .collect(),
        use_rslora: false,
    }
}

fn samples() -> Vec<SftSample> {
    let pairs = read_jsonl(fixture("pairs.jsonl")).unwrap();
    let (s, _) = tokenize_pairs(&grown_tokenizer(), &PromptFormat::default(), &pairs, 256).unwrap();
    assert!(s.len() >= 8);
    s
}

fn train(model: Llama<AB>, steps: usize, out: &Path) -> Llama<B> {
    let cfg = SftConfig {
        batch_size: 4,
        lr: 2e-2,
        total_steps: steps,
        seed: 3,
        ..SftConfig::default()
    };
    let mut t = SftTrainer::new(model, lora(), cfg, out, "llama3-layout").unwrap();
    t.train(&samples(), &[], None).unwrap();
    t.model().valid()
}

fn ids(v: Vec<i64>) -> Tensor<B, 2, Int> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [1, n]), &Default::default())
}

/// The logits of the three new tokens at every position of a prompt, one column each.
fn new_token_columns(model: &Llama<B>) -> [Vec<f32>; 3] {
    let tok = grown_tokenizer();
    let prompt = tok
        .encode_prompt(&PromptFormat::default(), "a red apple icon")
        .unwrap();
    let logits = to_vec(
        model
            .forward(ids(prompt.iter().map(|&x| x as i64).collect()))
            .unwrap(),
    );
    let v = model.config().vocab_size;
    let col = |c: usize| logits.chunks(v).map(|row| row[c]).collect::<Vec<f32>>();
    [col(768), col(769), col(770)]
}

fn rows(model: &Llama<B>, tied_output: bool) -> Vec<Vec<f32>> {
    let w: Vec<f32> = if tied_output {
        model
            .output_weight()
            .transpose()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap()
    } else {
        model
            .input_weight()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap()
    };
    let h = model.config().hidden_size;
    NEW.iter()
        .map(|&i| w[i as usize * h..(i as usize + 1) * h].to_vec())
        .collect()
}

#[test]
fn added_tokens_resize_the_model_and_only_trained_rows_tell_them_apart() {
    for tied in [true, false] {
        let grown: Llama<B> = resized(tied);
        assert_eq!(grown.config().vocab_size, 771);
        // The bug: three identical rows, three identical logits.
        let [a, b, c] = new_token_columns(&grown);
        assert_close("mean rows", &a, &b, Tolerance::absolute(1e-6));
        assert_close("mean rows", &a, &c, Tolerance::absolute(1e-6));

        // LoRA alone cannot separate them.
        let tmp = tempfile::tempdir().unwrap();
        let frozen = train(
            resized::<AB>(tied).with_lora(&lora(), 1).unwrap(),
            4,
            tmp.path(),
        );
        let [a, _, c] = new_token_columns(&frozen);
        assert_close("frozen rows", &a, &c, Tolerance::absolute(1e-5));

        // With trainable rows they part after a few steps, in the embedding and the output.
        let model = resized::<AB>(tied)
            .with_lora(&lora(), 1)
            .unwrap()
            .with_trainable_tokens(&TrainableTokenIndices::new_tokens(&NEW))
            .unwrap();
        assert_eq!(model.num_token_params(), if tied { 3 } else { 6 } * 64);
        let trained = train(model, 4, tmp.path());
        let [a, b, c] = new_token_columns(&trained);
        // `<|end_svg|>` is a target: its logit parts from the two prompt tokens'.
        for (x, y) in [(&a, &c), (&b, &c)] {
            let d = max_abs_diff(x, y).unwrap();
            assert!(d.value > 1e-3, "tied={tied}: logits still equal ({d})");
        }
        let ctx_objs = max_abs_diff(&a, &b).unwrap();
        if tied {
            // Their input rows differ (they sit at different places), so do their logits.
            assert!(ctx_objs.value > 1e-3, "tied: {ctx_objs}");
        } else {
            // Untied, `<|ctx|>` and `<|objs|>` are never predicted: their lm_head rows get
            // identical gradients (softmax mass only) and stay equal, as in PEFT. Harmless:
            // generation never needs to choose between them.
            assert!(ctx_objs.value < 1e-5, "untied: {ctx_objs}");
        }
        let input = rows(&trained, false);
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            let d = max_abs_diff(&input[i], &input[j]).unwrap();
            assert!(d.value > 1e-3, "tied={tied}: embedding rows {i} {j} equal");
        }
        let output = rows(&trained, true);
        let d = max_abs_diff(&output[0], &output[2]).unwrap();
        assert!(d.value > 1e-3, "tied={tied}: output rows equal");
        // Old rows are untouched.
        let before: Llama<B> = resized(tied);
        let h = 64;
        let e0 = to_vec(trained.input_weight().unsqueeze::<3>());
        let e1 = to_vec(before.input_weight().unsqueeze::<3>());
        assert_close(
            "old rows",
            &e0[..768 * h],
            &e1[..768 * h],
            Tolerance::absolute(0.0),
        );
    }
}

#[test]
fn peft_written_adapters_with_trainable_token_indices_load() {
    for tied in [true, false] {
        let dir = model_dir(tied);
        let (model, cfg) = resized::<B>(tied)
            .with_peft_adapter(dir.join("adapter-peft"))
            .unwrap();
        assert_eq!(cfg.r, 4);
        assert_eq!(
            model.trainable_token_indices().unwrap(),
            TrainableTokenIndices::new_tokens(&NEW)
        );
        let (input, shape, expected) = reference(dir.join("reference_peft.safetensors"));
        assert_eq!(shape, vec![1, 16, 771]);
        let ours = to_vec(model.forward(input.clone()).unwrap());
        let d = assert_close("peft logits", &ours, &expected, Tolerance::absolute(1e-4));
        println!("tied={tied}: max abs diff against peft {:.2e}", d.value);
        let base = to_vec(resized::<B>(tied).forward(input).unwrap());
        assert!(max_abs_diff(&base, &expected).unwrap().value > 1e-2);
    }
}

#[test]
fn peft_loads_the_adapters_our_trainer_saved() {
    for tied in [true, false] {
        let dir = model_dir(tied);
        let adapter = dir.join("adapter-ours");
        check_adapter_tokens(&adapter, &grown_tokenizer()).unwrap();
        let (model, _) = resized::<B>(tied).with_peft_adapter(&adapter).unwrap();
        let (input, _, expected) = reference(dir.join("reference_ours.safetensors"));
        let ours = to_vec(model.forward(input.clone()).unwrap());
        let d = assert_close("peft logits", &ours, &expected, Tolerance::absolute(1e-4));
        println!(
            "tied={tied}: our adapter, max abs diff against peft {:.2e}",
            d.value
        );
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        let expected_indices = if tied {
            serde_json::json!(NEW)
        } else {
            serde_json::json!({"embed_tokens": NEW, "lm_head": NEW})
        };
        assert_eq!(json["trainable_token_indices"], expected_indices);
    }
}

fn logits(model: &Llama<B>) -> Vec<f32> {
    let input: Vec<i64> = (0..20).map(|i| (i * 37 + 5) % 771).collect();
    to_vec(model.forward(ids(input)).unwrap())
}

#[test]
fn rows_and_whole_matrices_save_load_and_merge() {
    for tied in [true, false] {
        for full in [false, true] {
            let label = format!("tied={tied} full={full}");
            let tmp = tempfile::tempdir().unwrap();
            let m = resized::<AB>(tied).with_lora(&lora(), 2).unwrap();
            let m = if full {
                m.with_modules_to_save().unwrap()
            } else {
                m.with_trainable_tokens(&TrainableTokenIndices::new_tokens(&NEW))
                    .unwrap()
            };
            let trained = train(m, 2, &tmp.path().join("run"));
            assert_eq!(
                trained.token_training(),
                Some(if full {
                    TokenTraining::Full
                } else {
                    TokenTraining::Rows
                })
            );
            let want = logits(&trained);
            let dir = tmp.path().join("adapter");
            trained.save_peft_adapter(&dir, &lora(), "base").unwrap();
            let json: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
            )
            .unwrap();
            let keys: Vec<String> = read_safetensors(dir.join("adapter_model.safetensors"))
                .unwrap()
                .into_keys()
                .filter(|k| !k.contains("lora_"))
                .collect();
            if full {
                assert_eq!(
                    json["modules_to_save"],
                    serde_json::json!(["embed_tokens", "lm_head"])
                );
                assert_eq!(json["ensure_weight_tying"], serde_json::json!(tied));
                assert_eq!(
                    keys,
                    [
                        "base_model.model.lm_head.weight",
                        "base_model.model.model.embed_tokens.weight"
                    ]
                );
            } else {
                let n = if tied { 1 } else { 2 };
                assert_eq!(keys.len(), n, "{label}: {keys:?}");
                assert!(keys.iter().all(|k| k.ends_with("trainable_tokens_delta")));
            }
            let (loaded, _) = resized::<B>(tied).with_peft_adapter(&dir).unwrap();
            assert_close(&label, &logits(&loaded), &want, Tolerance::absolute(1e-6));
            // Merging writes the rows into the matrices; the saved checkpoint has them.
            let merged = loaded.merge_lora();
            assert!(merged.token_adapter.is_none());
            assert_eq!(merged.config().tie_word_embeddings, tied);
            assert_close(&label, &logits(&merged), &want, Tolerance::absolute(1e-4));
            let out = tmp.path().join("merged");
            merged.save_pretrained(&out, StoreDtype::F32).unwrap();
            let back =
                Llama::<B>::from_pretrained(&out, LoadOptions::default(), &Default::default())
                    .unwrap();
            assert_eq!(back.config().vocab_size, 771);
            assert_close(&label, &logits(&back), &want, Tolerance::absolute(1e-4));
        }
    }
}

#[test]
fn resume_continues_the_token_rows_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SftConfig {
        batch_size: 4,
        lr: 2e-2,
        total_steps: 4,
        checkpoint_every: 2,
        seed: 5,
        ..SftConfig::default()
    };
    let fresh = || {
        resized::<AB>(false)
            .with_lora(&lora(), 2)
            .unwrap()
            .with_trainable_tokens(&TrainableTokenIndices::new_tokens(&NEW))
            .unwrap()
    };
    let data = samples();
    let mut straight =
        SftTrainer::new(fresh(), lora(), cfg.clone(), tmp.path().join("a"), "x").unwrap();
    straight.train(&data, &[], None).unwrap();
    let mut first = SftTrainer::new(fresh(), lora(), cfg.clone(), tmp.path().join("b"), "x")
        .unwrap()
        .with_tokenizer(grown_tokenizer());
    first.train(&data, &[], Some(2)).unwrap();
    let ck = tmp.path().join("b/checkpoint-2");
    assert!(ck.join("tokenizer.json").is_file());
    check_adapter_tokens(&ck, &grown_tokenizer()).unwrap();
    let mut second =
        SftTrainer::resume(resized::<AB>(false), &ck, cfg, tmp.path().join("b"), "x").unwrap();
    second.train(&data, &[], None).unwrap();
    let a = logits(&straight.model().valid());
    let b = logits(&second.model().valid());
    assert_close("resumed", &b, &a, Tolerance::absolute(1e-6));
}

#[test]
fn adapters_that_do_not_fit_the_tokenizer_or_model_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = model_dir(false).join("adapter-peft");
    let copy = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(src.join(f), d.join(f)).unwrap();
        }
        d
    };
    // Trained with the tokens added in another order: named with both sides.
    let other = copy("other-order");
    let mut shuffled = tokenizer();
    shuffled
        .add_special_tokens(&["<|end_svg|>", "<|ctx|>", "<|objs|>"])
        .unwrap();
    shuffled.save(other.join("tokenizer.json")).unwrap();
    match check_adapter_tokens(&other, &grown_tokenizer()) {
        Err(e @ TrainError::TokenMismatch { .. }) => {
            let m = e.to_string();
            assert!(m.contains("other-order"), "{m}");
            assert!(m.contains("llama3-layout/tokenizer"), "{m}");
            assert!(
                m.contains("`<|end_svg|>`") && m.contains("`<|ctx|>`"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The tokenizer lacks the trained ids.
    assert!(matches!(
        check_adapter_tokens(&src, &tokenizer()),
        Err(TrainError::TokenMismatch { .. })
    ));
    // The model was not resized: the ids are outside its vocabulary.
    let small = Llama::<B>::from_pretrained(
        model_dir(false),
        LoadOptions::default(),
        &Default::default(),
    )
    .unwrap();
    assert!(small.with_peft_adapter(&src).is_err());
    // Wrong row count, missing rows, unknown module.
    let bad = copy("bad-shape");
    let mut t = read_safetensors(bad.join("adapter_model.safetensors")).unwrap();
    let key = "base_model.model.lm_head.token_adapter.trainable_tokens_delta";
    let delta = t.remove(key).unwrap();
    let mut data = delta.clone().into_f32(key).unwrap();
    data.truncate(2 * 64);
    t.insert(key.into(), svgen_train::HostTensor::f32(vec![2, 64], data));
    write_safetensors(
        bad.join("adapter_model.safetensors"),
        &t,
        StoreDtype::F32,
        None,
    )
    .unwrap();
    assert!(matches!(
        resized::<B>(false).with_peft_adapter(&bad),
        Err(TrainError::ShapeMismatch { .. })
    ));
    t.remove(key);
    write_safetensors(
        bad.join("adapter_model.safetensors"),
        &t,
        StoreDtype::F32,
        None,
    )
    .unwrap();
    assert!(matches!(
        resized::<B>(false).with_peft_adapter(&bad),
        Err(TrainError::MissingTensor { .. })
    ));
    let cfg_path = bad.join("adapter_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["trainable_token_indices"] = serde_json::json!({"wte": [1, 2]});
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    assert!(matches!(
        resized::<B>(false).with_peft_adapter(&bad),
        Err(TrainError::Config(_))
    ));
    // Ids outside the vocabulary, and twice the same id, are refused when adding rows too.
    for bad in [vec![771u32], vec![768, 768]] {
        assert!(matches!(
            resized::<B>(true).with_trainable_tokens(&TrainableTokenIndices::new_tokens(&bad)),
            Err(TrainError::InvalidArgument(_))
        ));
    }
}

#[test]
fn both_ways_of_applying_the_output_rows_agree() {
    // Short inputs patch the logits; long ones (more positions than hidden units) patch the
    // weight once. Causal attention makes a prefix's logits independent of what follows.
    for tied in [true, false] {
        let (model, _) = resized::<B>(tied)
            .with_peft_adapter(model_dir(tied).join("adapter-peft"))
            .unwrap();
        let long: Vec<i64> = (0..100).map(|i| (i * 53 + 11) % 771).collect();
        let short = to_vec(model.forward(ids(long[..20].to_vec())).unwrap());
        let full = to_vec(model.forward(ids(long)).unwrap());
        assert_close(
            "prefix",
            &full[..short.len()],
            &short,
            Tolerance::absolute(1e-5),
        );
    }
}

/// The gradients of the token rows of `model` (keys `trainable_tokens.*`) from the reference
/// path: full logits through [`Llama::forward`] (which patches the logits of short inputs) and
/// [`causal_lm_loss`], one sample per right-padded row.
fn reference_token_grads(model: &Llama<AB>, samples: &[&SftSample]) -> Vec<(String, Vec<f32>)> {
    let batch = SftBatch::padded(samples, 0).unwrap();
    let input = Tensor::<AB, 2, Int>::from_data(
        TensorData::new(batch.input_ids.clone(), [batch.batch, batch.seq]),
        &Default::default(),
    );
    let (loss, _) = causal_lm_loss(model.forward(input).unwrap(), &batch.labels).unwrap();
    let grads = loss.backward();
    let a = model.token_adapter.as_ref().unwrap();
    [
        ("trainable_tokens.embed_tokens", &a.embed_tokens),
        ("trainable_tokens.lm_head", &a.lm_head),
    ]
    .into_iter()
    .filter_map(|(k, r)| {
        let g = r.as_ref()?.rows.grad(&grads)?;
        Some((
            k.to_string(),
            g.into_data().convert::<f32>().into_vec().unwrap(),
        ))
    })
    .collect()
}

fn row_dtypes<BB: Backend>(model: &Llama<BB>) -> Vec<(&'static str, DType)> {
    let a = model.token_adapter.as_ref().unwrap();
    [("embed_tokens", &a.embed_tokens), ("lm_head", &a.lm_head)]
        .into_iter()
        .filter_map(|(k, r)| Some((k, r.as_ref()?.rows.val().dtype())))
        .collect()
}

fn token_grads(out: &MicroBatchGrads<B>) -> Vec<(String, Vec<f32>)> {
    out.grads
        .iter()
        .filter(|(k, _)| k.starts_with("trainable_tokens."))
        .map(|(k, g)| {
            assert_eq!(g.dtype(), DType::F32, "{k}: token-row gradients are f32");
            (
                k.clone(),
                g.clone().into_data().convert::<f32>().into_vec().unwrap(),
            )
        })
        .collect()
}

fn check_grads(what: &str, got: &[(String, Vec<f32>)], want: &[(String, Vec<f32>)], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for ((k, g), (k2, w)) in got.iter().zip(want) {
        assert_eq!(k, k2, "{what}");
        assert!(
            w.iter().any(|x| x.abs() > 1e-6),
            "{what}: {k} has no gradient"
        );
        let d = assert_close(&format!("{what}: {k}"), g, w, Tolerance::rms_relative(tol));
        println!("{what}: {k} max error {:.2e} of the RMS", d.value);
    }
}

#[test]
fn token_rows_get_their_gradients_through_packing_checkpointing_and_bf16() {
    let all = samples();
    let s: Vec<&SftSample> = all[..4].iter().collect();
    let packed = SftBatch::packed(&[vec![s[0], s[1]], vec![s[2], s[3]]], 0).unwrap();
    for tied in [true, false] {
        let with_rows = |m: Llama<AB>| {
            m.with_lora(&lora(), 1)
                .unwrap()
                .with_trainable_tokens(&TrainableTokenIndices::new_tokens(&NEW))
                .unwrap()
        };
        let model = with_rows(resized::<AB>(tied));
        let want = reference_token_grads(&model, &s);
        assert_eq!(want.len(), if tied { 1 } else { 2 }, "tied={tied}");
        // Packed rows through the chunked LM head, with and without checkpointing: the same
        // gradient as separate rows through the full logits (a tied model's shared rows sum
        // their input and output uses in both).
        for checkpointing in [false, true] {
            let out = loss_and_grads(&model, &packed, 1.0, checkpointing).unwrap();
            check_grads(
                &format!("tied={tied} checkpointing={checkpointing}"),
                &token_grads(&out),
                &want,
                1e-4,
            );
        }

        // A bf16 base: the rows stay f32 (as the adapters), their gradients are f32 and match
        // the f32 reference within bf16's rounding (see tests/mixed_precision.rs).
        let half = Llama::<AB>::from_pretrained(
            model_dir(tied),
            LoadOptions { dtype: DType::BF16 },
            &Default::default(),
        )
        .unwrap()
        .resize_token_embeddings(771)
        .unwrap();
        let half = with_rows(half);
        assert_eq!(half.dtype(), DType::BF16);
        for (k, p) in row_dtypes(&half) {
            assert_eq!(p, DType::F32, "{k}: rows are f32 over a bf16 base");
        }
        for checkpointing in [false, true] {
            let out = loss_and_grads(&half, &packed, 1.0, checkpointing).unwrap();
            check_grads(
                &format!("bf16 tied={tied} checkpointing={checkpointing}"),
                &token_grads(&out),
                &want,
                // GRAD_MAX of tests/mixed_precision.rs (measured: up to 4.6e-2).
                0.16,
            );
        }
        // One AdamW step through the trainer keeps them f32 and moves them.
        let before = rows(&half.valid(), true);
        let tmp = tempfile::tempdir().unwrap();
        let cfg = SftConfig {
            batch_size: 2,
            lr: 1e-2,
            total_steps: 1,
            gradient_checkpointing: true,
            ..SftConfig::default()
        };
        let mut t = SftTrainer::new(half, lora(), cfg, tmp.path(), "bf16").unwrap();
        t.train(&all[..4], &[], None).unwrap();
        for (k, p) in row_dtypes(t.model()) {
            assert_eq!(p, DType::F32, "{k}: rows stay f32 after a step");
        }
        let after = rows(&t.model().valid(), true);
        let moved = max_abs_diff(&after.concat(), &before.concat()).unwrap();
        assert!(
            moved.value > 1e-4,
            "tied={tied}: rows did not move ({moved})"
        );
    }
}
