//! FLUX.1 in Burn against diffusers / transformers on the tiny fixtures of
//! `tools/fixtures/make_flux.py` (see `tests/fixtures/flux/README.md`): the transformer (with and
//! without guidance embedding, non-square packed latents, 13 text tokens), T5's last hidden state
//! and tokenizer, the VAE decoder, the flow-matching scheduler (static, dynamic, linear, Karras,
//! exponential, terminal, inverted) and full pipelines (batch of two with a truncated prompt, true
//! CFG, dynamic shifting); then seeds, batching, freeing the encoders, the grid, the dataset
//! generator and the typed errors for bad folders and parameters.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::{Int, Tensor, TensorData};
use svgen_core::compare::{assert_close, Tolerance};
use svgen_eval::weights::Weights;
use svgen_train::diffusion::AutoencoderKL;
use svgen_train::flux::scheduler::{FlowMatchEulerScheduler, FlowMatchSchedulerConfig};
use svgen_train::flux::{
    pack_latents, unpack_latents, FluxLoadOptions, FluxParams, FluxPipeline, FluxTransformer2DModel,
};
use svgen_train::t5::{T5EncoderModel, T5Tokenizer};
use svgen_train::{CpuBackend, TrainError};

type B = CpuBackend;

const COMPONENT_TOL: f64 = 1e-4;
const IMAGE_TOL: f64 = 1e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flux")
}

fn tiny() -> PathBuf {
    fixtures().join("tiny-flux")
}

fn reference() -> &'static Weights {
    static R: OnceLock<Weights> = OnceLock::new();
    R.get_or_init(|| Weights::open_file(fixtures().join("reference.safetensors")).unwrap())
}

fn values(w: &Weights, key: &str) -> (Vec<f32>, Vec<usize>) {
    w.f32_any(key).unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn tensor<const D: usize>(w: &Weights, key: &str) -> Tensor<B, D> {
    let (v, shape) = values(w, key);
    let shape: [usize; D] = shape.try_into().expect("rank");
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

fn ids(w: &Weights, key: &str) -> Vec<[f64; 3]> {
    let (v, shape) = values(w, key);
    assert_eq!(shape[1], 3);
    v.chunks_exact(3)
        .map(|c| [c[0].into(), c[1].into(), c[2].into()])
        .collect()
}

fn pipeline() -> &'static FluxPipeline<B> {
    static P: OnceLock<FluxPipeline<B>> = OnceLock::new();
    P.get_or_init(|| {
        FluxPipeline::from_pretrained(tiny(), &FluxLoadOptions::default(), &Default::default())
            .expect("tiny-flux loads")
    })
}

fn transformer_case(dir: &Path, prefix: &str, guidance: bool) {
    let r = reference();
    let device = Default::default();
    let model = FluxTransformer2DModel::<B>::from_pretrained(dir, None, &device).unwrap();
    let rope = model.rope(&ids(r, "tr_txt_ids"), &ids(r, "tr_img_ids"), &device);
    let out = model
        .forward(
            tensor(r, "tr_hidden"),
            tensor(r, "tr_encoder"),
            tensor(r, "tr_pooled"),
            tensor(r, "tr_timestep"),
            &rope,
            guidance.then(|| tensor(r, "trg_guidance")),
        )
        .unwrap();
    let d = assert_close(
        prefix,
        &host(out),
        &values(r, &format!("{prefix}_out")).0,
        Tolerance::absolute(COMPONENT_TOL),
    );
    println!("{prefix}: max abs diff {:.2e}", d.value);
}

#[test]
fn transformer_matches_diffusers() {
    // bf16 shards (five of them, with an index) upcast to f32; 3 × 5 packed latents, 13 tokens.
    transformer_case(&tiny().join("transformer"), "tr", false);
}

#[test]
fn guidance_transformer_matches_diffusers() {
    transformer_case(&fixtures().join("transformer-guidance"), "trg", true);
    let r = reference();
    let device = Default::default();
    let dev = FluxTransformer2DModel::<B>::from_pretrained(
        fixtures().join("transformer-guidance"),
        None,
        &device,
    )
    .unwrap();
    let rope = dev.rope(&ids(r, "tr_txt_ids"), &ids(r, "tr_img_ids"), &device);
    let call = |g: Option<Tensor<B, 1>>| {
        dev.forward(
            tensor(r, "tr_hidden"),
            tensor(r, "tr_encoder"),
            tensor(r, "tr_pooled"),
            tensor(r, "tr_timestep"),
            &rope,
            g,
        )
    };
    let err = call(None).unwrap_err();
    assert!(
        matches!(&err, TrainError::InvalidArgument(m) if m.contains("guidance")),
        "{err}"
    );
    let err = call(Some(Tensor::zeros([3], &device))).unwrap_err();
    assert!(matches!(err, TrainError::InvalidArgument(_)), "{err}");
}

#[test]
fn transformer_shapes_are_checked() {
    let r = reference();
    let device = Default::default();
    let model = &pipeline().transformer;
    let rope = model.rope(&ids(r, "tr_txt_ids"), &ids(r, "tr_img_ids"), &device);
    let cases: [([usize; 3], [usize; 3], &str); 3] = [
        ([2, 15, 60], [2, 13, 32], "`hidden_states`"),
        ([2, 15, 64], [1, 13, 32], "`encoder_hidden_states`"),
        ([2, 14, 64], [2, 13, 32], "rotary"),
    ];
    for (h, e, what) in cases {
        let err = model
            .forward(
                Tensor::zeros(h, &device),
                Tensor::zeros(e, &device),
                Tensor::zeros([2, 32], &device),
                Tensor::zeros([2], &device),
                &rope,
                None,
            )
            .unwrap_err();
        assert!(
            matches!(&err, TrainError::InvalidArgument(m) if m.contains(what)),
            "{what}: {err}"
        );
    }
}

#[test]
fn t5_and_its_tokenizer_match_transformers() {
    let r = reference();
    let device = Default::default();
    let t5 = T5EncoderModel::<B>::from_pretrained(tiny().join("text_encoder_2"), &device).unwrap();
    let tok = T5Tokenizer::from_dir(tiny().join("tokenizer_2")).unwrap();
    for (case, prompts, len) in [
        (
            "t5",
            vec![
                "a boy wearing headphones",
                "minimal icon of a cat with clean outlines, flat fills",
            ],
            13,
        ),
        (
            "t5_long",
            vec![
                "We fine tune Stable Diffusion with LoRA on the small dataset and then scale up with FLUX",
            ],
            37,
        ),
    ] {
        let (want_ids, shape) = r.i64_any(&format!("{case}_ids")).unwrap();
        let tokens = tok.encode_batch(&prompts, len).unwrap();
        assert_eq!(tokens.input_ids, want_ids, "{case}: token ids");
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(want_ids, [shape[0], shape[1]]),
            &device,
        );
        let out = t5.forward(ids, None).unwrap();
        let d = assert_close(
            case,
            &host(out),
            &values(r, &format!("{case}_out")).0,
            Tolerance::absolute(COMPONENT_TOL),
        );
        println!("{case}: last hidden state max abs diff {:.2e}", d.value);
    }
    // The second prompt is cut at 13 tokens: its first 12 and `</s>`.
    let tokens = tok
        .encode_batch(
            &["minimal icon of a cat with clean outlines, flat fills"],
            13,
        )
        .unwrap();
    let full = tok
        .encode("minimal icon of a cat with clean outlines, flat fills")
        .unwrap();
    assert_eq!(tokens.truncated, vec![Some(full.len())]);
    assert!(full.len() > 13);
    assert_eq!(tokens.input_ids[12], i64::from(tok.eos_token_id()));
    assert_eq!(
        &tokens.input_ids[..12],
        &full[..12].iter().map(|&i| i64::from(i)).collect::<Vec<_>>()[..]
    );
}

#[test]
fn vae_decode_matches_diffusers() {
    let r = reference();
    let vae = AutoencoderKL::<B>::from_pretrained(tiny().join("vae"), &Default::default()).unwrap();
    assert_eq!(vae.config().latent_channels, 16);
    assert_eq!(vae.config().shift_factor, Some(0.1159));
    let out = vae.decode(tensor(r, "vae_latents"));
    assert_eq!(out.dims(), [1, 3, 48, 80]);
    let d = assert_close(
        "vae_decoded",
        &host(out),
        &values(r, "vae_decoded").0,
        Tolerance::absolute(COMPONENT_TOL),
    );
    println!("vae decode: max abs diff {:.2e}", d.value);
}

#[test]
fn scheduler_matches_diffusers_with_and_without_dynamic_shifting() {
    let w = Weights::open_file(fixtures().join("schedulers.safetensors")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&w.metadata()["cases"]).unwrap();
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let cfg = FlowMatchSchedulerConfig::from_json(&case["config"]).unwrap();
        let mut s = FlowMatchEulerScheduler::new(cfg).unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let sigmas: Option<Vec<f64>> = case["sigmas"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_f64().unwrap()).collect());
        s.set_timesteps(steps, sigmas.as_deref(), case["mu"].as_f64())
            .unwrap();
        let tol = Tolerance::relative(1e-5);
        assert_close(
            &format!("{name} timesteps"),
            s.timesteps(),
            &values(&w, &format!("{name}_timesteps")).0,
            tol,
        );
        assert_close(
            &format!("{name} sigmas"),
            s.sigmas(),
            &values(&w, &format!("{name}_sigmas")).0,
            tol,
        );
        let mut x: Tensor<B, 3> = tensor(&w, &format!("{name}_sample"));
        let outputs: Tensor<B, 4> = tensor(&w, &format!("{name}_outputs"));
        let (prev, _) = values(&w, &format!("{name}_prev"));
        let per = prev.len() / steps;
        for i in 0..steps {
            let v = outputs.clone().narrow(0, i, 1).reshape([1, 6, 8]);
            x = s.step(v, i, x).unwrap();
            assert_close(
                &format!("{name} step {i}"),
                &host(x.clone()),
                &prev[i * per..(i + 1) * per],
                Tolerance::absolute(COMPONENT_TOL),
            );
        }
    }
    // Dynamic shifting needs `mu`; a step past the end is refused.
    let cfg = FlowMatchSchedulerConfig::from_json(&serde_json::json!({
        "use_dynamic_shifting": true
    }))
    .unwrap();
    let mut s = FlowMatchEulerScheduler::new(cfg).unwrap();
    assert!(matches!(
        s.set_timesteps(4, None, None),
        Err(TrainError::InvalidArgument(_))
    ));
    s.set_timesteps(4, None, Some(0.5)).unwrap();
    let x = Tensor::<B, 1>::zeros([2], &Default::default());
    assert!(s.step(x.clone(), 4, x).is_err());
    // Unknown class names and options are refused by name.
    let err = FlowMatchSchedulerConfig::from_json(&serde_json::json!({
        "_class_name": "EulerDiscreteScheduler"
    }))
    .unwrap_err();
    assert!(
        matches!(&err, TrainError::UnknownScheduler(n) if n == "EulerDiscreteScheduler"),
        "{err}"
    );
    let err = FlowMatchSchedulerConfig::from_json(&serde_json::json!({"use_beta_sigmas": true}))
        .unwrap_err();
    assert!(
        matches!(&err, TrainError::UnsupportedValue { key, .. } if key == "use_beta_sigmas"),
        "{err}"
    );
}

/// A pipeline case of `make_flux.py`.
struct Case {
    w: Weights,
    prompts: Vec<String>,
    negative: Option<String>,
    params: FluxParams,
    scheduler: serde_json::Value,
}

fn case(name: &str) -> Case {
    let w = Weights::open_file(fixtures().join(format!("pipeline_{name}.safetensors"))).unwrap();
    let m = w.metadata().clone();
    let num = |k: &str| m[k].parse::<f64>().unwrap();
    let prompts: Vec<String> = serde_json::from_str(&m["prompts"]).unwrap();
    let negative: Option<String> = serde_json::from_str(&m["negative_prompt"]).unwrap();
    let params = FluxParams {
        negative_prompt: negative.clone(),
        true_cfg_scale: num("true_cfg_scale"),
        steps: num("steps") as usize,
        height: num("height") as usize,
        width: num("width") as usize,
        max_sequence_length: num("max_sequence_length") as usize,
        latents: Some(values(&w, "latents").0),
        ..FluxParams::schnell()
    };
    let scheduler = serde_json::from_str(&m["scheduler"]).unwrap();
    Case {
        w,
        prompts,
        negative,
        params,
        scheduler,
    }
}

/// A copy of the tiny folder in a temp dir, with `edit` applied.
fn edited_folder(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    fn copy(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            let to = dst.join(e.file_name());
            if e.path().is_dir() {
                copy(&e.path(), &to);
            } else {
                std::fs::copy(e.path(), to).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&tiny(), dir.path());
    edit(dir.path());
    dir
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

fn run_case(name: &str) {
    let c = case(name);
    let overrides = c.scheduler.as_object().unwrap().clone();
    let owned;
    let flux: &FluxPipeline<B> = if overrides.is_empty() {
        pipeline()
    } else {
        let dir = edited_folder(|d| {
            edit_json(&d.join("scheduler/scheduler_config.json"), |v| {
                for (k, x) in &overrides {
                    v[k] = x.clone();
                }
            })
        });
        owned = FluxPipeline::from_pretrained(
            dir.path(),
            &FluxLoadOptions::default(),
            &Default::default(),
        )
        .unwrap();
        &owned
    };
    let prompts: Vec<&str> = c.prompts.iter().map(String::as_str).collect();
    let p = &c.params;
    let embeds = flux
        .encode_prompts(&prompts, p.max_sequence_length)
        .unwrap();
    assert_close(
        &format!("{name} prompt_embeds"),
        &host(embeds.prompt_embeds.clone()),
        &values(&c.w, "prompt_embeds").0,
        Tolerance::absolute(COMPONENT_TOL),
    );
    assert_close(
        &format!("{name} pooled_prompt_embeds"),
        &host(embeds.pooled_prompt_embeds.clone()),
        &values(&c.w, "pooled_prompt_embeds").0,
        Tolerance::absolute(COMPONENT_TOL),
    );
    let negative = c.negative.as_deref().map(|n| {
        flux.encode_prompts(&vec![n; prompts.len()], p.max_sequence_length)
            .unwrap()
    });
    let seeds = vec![0; prompts.len()];
    let latents = flux
        .denoise(&embeds, negative.as_ref(), &seeds, p, &mut |_, _| {})
        .unwrap();
    let images = flux.decode_latents(latents, p.height, p.width).unwrap();
    // diffusers returns NHWC.
    let ours = host(images.permute([0, 2, 3, 1]));
    let d = assert_close(
        &format!("{name} image"),
        &ours,
        &values(&c.w, "image").0,
        Tolerance::absolute(IMAGE_TOL),
    );
    println!("pipeline {name}: image max abs diff {:.2e}", d.value);
}

#[test]
fn pipeline_matches_diffusers_batch_of_two_with_a_truncated_prompt() {
    run_case("schnell");
    // The second prompt is longer than the case's 16 T5 tokens: truncated, and reported.
    let c = case("schnell");
    let prompts: Vec<&str> = c.prompts.iter().map(String::as_str).collect();
    let embeds = pipeline().encode_prompts(&prompts, 16).unwrap();
    let tok = &pipeline().tokenizer_2;
    assert!(tok.encode(prompts[1]).unwrap().len() > 16);
    for (i, p) in prompts.iter().enumerate() {
        let want = if tok.encode(p).unwrap().len() > 16 {
            vec!["t5 (16 tokens)".to_string()]
        } else {
            Vec::new()
        };
        assert_eq!(embeds.truncated[i], want, "{p}");
    }
    // Within the limit nothing is reported.
    let short = pipeline().encode_prompts(&prompts, 256).unwrap();
    assert!(short.truncated.iter().all(Vec::is_empty));
}

#[test]
fn pipeline_matches_diffusers_with_true_cfg() {
    run_case("true_cfg");
}

#[test]
fn pipeline_matches_diffusers_with_dynamic_shifting() {
    run_case("dynamic");
}

#[test]
fn packing_round_trips_and_matches_the_layout() {
    let device = Default::default();
    let x = Tensor::<B, 4>::from_data(
        TensorData::new((0..2 * 3 * 4 * 6).map(|v| v as f32).collect(), [2, 3, 4, 6]),
        &device,
    );
    let packed = pack_latents(x.clone());
    assert_eq!(packed.dims(), [2, 6, 12]);
    // Token (row 0, col 1), channel 1 of the patch: pixel (0, 2) then (0, 3), (1, 2), (1, 3).
    let v = host(packed.clone());
    let token = &v[12..24];
    let at = |c: usize, y: usize, xx: usize| (c * 24 + y * 6 + xx) as f32;
    assert_eq!(
        &token[4..8],
        &[at(1, 0, 2), at(1, 0, 3), at(1, 1, 2), at(1, 1, 3)]
    );
    assert_eq!(host(unpack_latents(packed, 2, 3)), host(x));
}

#[test]
fn seeds_batches_and_freed_encoders_give_the_same_images() {
    let flux = pipeline();
    let p = FluxParams {
        prompt: "a red star".into(),
        steps: 2,
        width: 32,
        height: 48,
        seed: 5,
        batch: 2,
        ..FluxParams::schnell()
    };
    let two = flux.generate(&p).unwrap();
    let second = flux
        .generate(&FluxParams {
            seed: 6,
            batch: 1,
            ..p.clone()
        })
        .unwrap();
    assert_eq!(
        two[1], second[0],
        "image i of a batch is the run with seed + i"
    );
    assert_ne!(two[0], two[1]);
    // Items with their own prompts and seeds: each image equals its single-item run, whatever
    // the batch holds (the dataset's resume guarantee).
    let item = |prompt: &str, seed| svgen_train::diffusion::PromptItem {
        prompt: prompt.into(),
        negative_prompt: None,
        seed,
    };
    let items = [item("a red star", 5), item("a blue square", 9)];
    let (batch, _) = flux.generate_items(&items, &p).unwrap();
    let (alone, _) = flux.generate_items(&items[1..], &p).unwrap();
    assert_eq!(batch[0], two[0]);
    assert_eq!(batch[1], alone[0]);

    let mut owned = FluxPipeline::<B>::from_pretrained(
        tiny(),
        &FluxLoadOptions::default(),
        &Default::default(),
    )
    .unwrap();
    let embeds = owned.encode_prompts(&["a red star"], 256).unwrap();
    owned.free_text_encoders();
    assert!(owned.text_encoder_2.is_none());
    let freed = owned
        .generate_from_embeds(&embeds, None, &[5, 6], &p)
        .unwrap();
    assert_eq!(freed, two);
    let err = owned.encode_prompts(&["a cat"], 256).unwrap_err();
    assert!(matches!(err, TrainError::InvalidArgument(_)), "{err}");
}

#[test]
fn bad_parameters_are_typed_errors() {
    let flux = pipeline();
    let base = FluxParams {
        prompt: "a cat".into(),
        steps: 1,
        width: 32,
        height: 32,
        ..FluxParams::schnell()
    };
    for p in [
        FluxParams {
            width: 40,
            ..base.clone()
        },
        FluxParams {
            steps: 0,
            ..base.clone()
        },
        FluxParams {
            batch: 0,
            ..base.clone()
        },
        FluxParams {
            max_sequence_length: 513,
            ..base.clone()
        },
        FluxParams {
            true_cfg_scale: f64::NAN,
            ..base.clone()
        },
    ] {
        let err = flux.generate(&p).unwrap_err();
        assert!(matches!(err, TrainError::InvalidArgument(_)), "{err}");
    }
    let err = flux
        .generate(&FluxParams {
            latents: Some(vec![0.0; 7]),
            ..base
        })
        .unwrap_err();
    assert!(
        matches!(&err, TrainError::ShapeMismatch { key, .. } if key == "latents"),
        "{err}"
    );
}

fn load_err(dir: &Path) -> TrainError {
    FluxPipeline::<B>::from_pretrained(dir, &FluxLoadOptions::default(), &Default::default())
        .expect_err("the folder is broken")
}

#[test]
fn bad_folders_are_typed_errors_naming_the_file_or_key() {
    for sub in [
        "transformer",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "vae",
        "scheduler",
    ] {
        let dir = edited_folder(|d| std::fs::remove_dir_all(d.join(sub)).unwrap());
        match load_err(dir.path()) {
            TrainError::MissingFolder { name, .. } => assert_eq!(name, sub),
            e => panic!("{sub}: {e}"),
        }
    }
    // model_index.json absent, or naming a class we do not implement.
    let dir = edited_folder(|d| std::fs::remove_file(d.join("model_index.json")).unwrap());
    assert!(matches!(
        load_err(dir.path()),
        TrainError::MissingFolder { name, .. } if name == "model_index.json"
    ));
    let dir = edited_folder(|d| {
        edit_json(&d.join("model_index.json"), |v| {
            v["transformer"] = serde_json::json!(["diffusers", "SD3Transformer2DModel"])
        })
    });
    match load_err(dir.path()) {
        TrainError::UnsupportedValue { key, value } => {
            assert_eq!(key, "transformer");
            assert!(value.contains("SD3Transformer2DModel"), "{value}");
        }
        e => panic!("{e}"),
    }
    let dir = edited_folder(|d| {
        edit_json(&d.join("transformer/config.json"), |v| {
            v["_class_name"] = serde_json::json!("SD3Transformer2DModel")
        })
    });
    assert!(matches!(
        load_err(dir.path()),
        TrainError::UnsupportedValue { key, .. } if key == "_class_name"
    ));
    // A scheduler other than flow matching.
    let dir = edited_folder(|d| {
        edit_json(&d.join("scheduler/scheduler_config.json"), |v| {
            v["_class_name"] = serde_json::json!("DDIMScheduler")
        })
    });
    assert!(matches!(
        load_err(dir.path()),
        TrainError::UnknownScheduler(n) if n == "DDIMScheduler"
    ));
    let dir = edited_folder(|d| {
        edit_json(&d.join("model_index.json"), |v| {
            v["scheduler"] = serde_json::json!(["diffusers", "PNDMScheduler"])
        })
    });
    assert!(matches!(
        load_err(dir.path()),
        TrainError::UnsupportedValue { key, .. } if key == "scheduler"
    ));
    // A config whose shapes disagree with the weights: the first wrong tensor is named.
    let dir = edited_folder(|d| {
        edit_json(&d.join("transformer/config.json"), |v| {
            v["joint_attention_dim"] = serde_json::json!(48)
        })
    });
    match load_err(dir.path()) {
        TrainError::ShapeMismatch {
            key,
            expected,
            found,
        } => {
            assert_eq!(key, "context_embedder.weight");
            assert_eq!((expected, found), (vec![32, 48], vec![32, 32]));
        }
        e => panic!("{e}"),
    }
    // T5's tokenizer.json absent (a folder with only spiece.model).
    let dir =
        edited_folder(|d| std::fs::remove_file(d.join("tokenizer_2/tokenizer.json")).unwrap());
    match load_err(dir.path()) {
        TrainError::MissingFolder { name, path } => {
            assert!(name.starts_with("tokenizer.json"), "{name}");
            assert!(path.ends_with("tokenizer_2"), "{}", path.display());
        }
        e => panic!("{e}"),
    }
    // A T5 shard missing from the folder is named.
    let dir = edited_folder(|d| {
        std::fs::remove_file(d.join("text_encoder_2/model-00002-of-00002.safetensors")).unwrap()
    });
    match load_err(dir.path()) {
        TrainError::Io { path, .. } => {
            assert!(path.ends_with("model-00002-of-00002.safetensors"))
        }
        e => panic!("{e}"),
    }
}

mod grid_and_generator {
    use super::*;
    use svgen_data::generate::{GenerationRequest, ImageGenerator};
    use svgen_train::diffusion::grid::{grid_search, GridSpec, ImageScorer};
    use svgen_train::diffusion::{InProcessOptions, SchedulerKind};
    use svgen_train::flux::FluxImageGenerator;

    #[test]
    fn the_grid_search_runs_flux() {
        let spec = GridSpec {
            prompts: vec!["a cat".into()],
            seeds: vec![1, 2],
            steps: vec![1],
            width: 32,
            height: 32,
            ..GridSpec::flux_schnell()
        };
        let scorer = svgen_train::diffusion::TraceTokenScorer::new();
        let report = grid_search(pipeline(), &spec, &scorer, None, &mut |_, _| {}).unwrap();
        assert_eq!(report.rows.len(), 2);
        let best = report.best().unwrap();
        let again = scorer
            .score(
                &best.point,
                &image::DynamicImage::ImageRgb8(
                    pipeline()
                        .generate(&FluxParams {
                            prompt: "a cat".into(),
                            steps: 1,
                            seed: best.point.seed,
                            width: 32,
                            height: 32,
                            ..FluxParams::schnell()
                        })
                        .unwrap()
                        .remove(0),
                ),
            )
            .unwrap();
        // Normalisation may invert the image; the score of the raw image equals the row's when
        // it did not.
        if !best.inverted {
            assert_eq!(again.value, best.score.value);
        }
        let err = grid_search(
            pipeline(),
            &GridSpec {
                schedulers: vec![SchedulerKind::DpmSolverMultistep],
                ..spec
            },
            &scorer,
            None,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(
            matches!(&err, TrainError::UnsupportedValue { key, .. } if key == "scheduler"),
            "{err}"
        );
    }

    #[test]
    fn flux_is_a_batched_image_generator_reporting_truncation() {
        let options = InProcessOptions {
            steps: Some(1),
            width: Some(32),
            height: Some(32),
            max_sequence_length: Some(8),
            batch: 2,
            ..InProcessOptions::new(tiny())
        };
        let g = FluxImageGenerator::<B>::from_options(&options, None, &Default::default())
            .unwrap()
            .with_name("flux-tiny");
        let dynamic: &dyn ImageGenerator = &g;
        assert_eq!(dynamic.name(), "flux-tiny");
        let request = GenerationRequest {
            id: "long",
            prompt: "minimal lighthouse on a rock with waves and clean outlines",
            negative_prompt: "",
            seed: 3,
            source_image: None,
        };
        let out = dynamic.generate(&request).unwrap();
        let png = image::load_from_memory(&out.bytes).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (32, 32));
        let direct = pipeline()
            .generate(&FluxParams {
                prompt: request.prompt.into(),
                seed: 3,
                steps: 1,
                width: 32,
                height: 32,
                max_sequence_length: 8,
                ..FluxParams::schnell()
            })
            .unwrap()
            .remove(0);
        assert_eq!(png, direct);
        let stats = g.stats();
        assert_eq!((stats.images, stats.truncated), (1, 1));
        assert_eq!(stats.truncated_ids, vec!["long".to_string()]);
        assert!(stats.to_string().contains("t5 (8 tokens)"), "{stats}");
        let err = dynamic
            .generate(&GenerationRequest {
                prompt: " ",
                ..request
            })
            .unwrap_err();
        assert_eq!(err.kind, svgen_data::FailureKind::BadInput);
        // Options FLUX does not take are refused by name.
        let err = FluxImageGenerator::<B>::from_options(
            &InProcessOptions {
                scheduler: Some(SchedulerKind::Ddim),
                ..InProcessOptions::new(tiny())
            },
            None,
            &Default::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TrainError::UnsupportedValue { key, .. } if key == "scheduler"),
            "{err}"
        );
    }
}
