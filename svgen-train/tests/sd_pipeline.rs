//! The Stable Diffusion pipeline against diffusers on the tiny fixture folder (fixtures from
//! `tools/fixtures/make_sd_pipeline.py`): prompt embeddings, full images with explicit latents (DDIM with
//! a batch of 2, DPM-Solver++ 2M, Euler; guidance and negative prompts), plus seeds, batching, sliced
//! attention, the vocab.json + merges.txt tokenizer form and the typed errors for bad folders/params.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::Tensor;
use safetensors::SafeTensors;
use svgen_core::compare::max_abs_diff;
use svgen_train::sd::pipeline::{randn, GenerateParams, StableDiffusion};
use svgen_train::sd::scheduler::SchedulerKind;
use svgen_train::sd::tokenizer::load_tokenizer;
use svgen_train::weights::{read_safetensors, HostTensor};
use svgen_train::{CpuBackend, TrainError};

type B = CpuBackend;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
}

fn model() -> &'static StableDiffusion<B> {
    static MODEL: OnceLock<StableDiffusion<B>> = OnceLock::new();
    MODEL.get_or_init(|| {
        StableDiffusion::<B>::from_pretrained(fixtures().join("tiny-sd"), &Default::default())
            .expect("tiny-sd loads")
    })
}

struct Case {
    meta: HashMap<String, String>,
    tensors: BTreeMap<String, HostTensor>,
}

fn case(name: &str) -> Case {
    let path = fixtures().join(format!("pipeline_{name}.safetensors"));
    let bytes = std::fs::read(&path).expect("fixture readable");
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let meta = header.metadata().clone().expect("metadata");
    Case {
        meta,
        tensors: read_safetensors(&path).expect("fixture tensors"),
    }
}

impl Case {
    fn get(&self, key: &str) -> &str {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("metadata lacks {key}"))
    }
    fn num<T: std::str::FromStr>(&self, key: &str) -> T {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("bad {key}"))
    }
    fn floats(&self, key: &str) -> (Vec<usize>, Vec<f32>) {
        let t = self
            .tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture lacks {key}"));
        (t.shape.clone(), t.clone().into_f32(key).unwrap())
    }
    fn params(&self) -> GenerateParams {
        GenerateParams {
            prompt: self.get("prompt").into(),
            negative_prompt: Some(self.get("negative_prompt").into()),
            steps: self.num("steps"),
            guidance_scale: self.num("guidance_scale"),
            width: self.num("width"),
            height: self.num("height"),
            batch: self.num("batch"),
            scheduler: self.get("scheduler").parse().unwrap(),
            karras_sigmas: self.num("karras_sigmas"),
            latents: Some(self.floats("latents").1),
            ..GenerateParams::default()
        }
    }
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// Max |a − b|; panics on NaN, infinity or a length mismatch.
fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    max_abs_diff(a, b).unwrap_or_else(|e| panic!("{e}")).value as f32
}

#[test]
fn prompt_embeddings_match_diffusers() {
    let sd = model();
    for name in ["ddim", "dpmpp_2m", "euler"] {
        let c = case(name);
        let (shape, want) = c.floats("prompt_embeds");
        let got = sd.encode_prompt(&[c.get("prompt")]).unwrap();
        assert_eq!(got.dims().to_vec(), shape);
        let err = max_abs(&values(got), &want);
        println!("{name}: prompt embeddings max abs diff {err:.2e}");
        assert!(err <= 1e-4, "{name}: prompt embeddings differ by {err}");
        let (_, want) = c.floats("prompt_embeds_clip_skip_1");
        let got = values(sd.encode_prompt_skip(&[c.get("prompt")], 1).unwrap());
        let err = max_abs(&got, &want);
        assert!(
            err <= 1e-4,
            "{name}: clip_skip 1 embeddings differ by {err}"
        );
        let (_, want) = c.floats("negative_prompt_embeds");
        let got = values(sd.encode_prompt(&[c.get("negative_prompt")]).unwrap());
        let err = max_abs(&got, &want);
        assert!(
            err <= 1e-4,
            "{name}: negative prompt embeddings differ by {err}"
        );
    }
}

#[test]
fn images_match_diffusers() {
    let sd = model();
    for name in ["ddim", "dpmpp_2m", "euler", "dpmpp_2m_karras"] {
        let c = case(name);
        let p = c.params();
        let got = sd.generate_float(&p).unwrap();
        // diffusers' np output is [B, H, W, 3]; ours [B, 3, H, W].
        let got = values(got.permute([0, 2, 3, 1]));
        let (shape, want) = c.floats("image");
        assert_eq!(shape, vec![p.batch, p.height, p.width, 3]);
        let err = max_abs(&got, &want);
        println!("{name}: image max abs diff {err:.2e}");
        assert!(err <= 1e-3, "{name}: image differs by {err}");
        // The u8 images are the same pixels.
        let imgs = sd.generate(&p).unwrap();
        assert_eq!(imgs.len(), p.batch);
        let px = imgs[0].get_pixel(3, 5).0[1];
        let want_px = want[(5 * p.width + 3) * 3 + 1];
        assert!(
            (f32::from(px) - want_px * 255.0).abs() <= 1.0,
            "{name}: u8 pixel"
        );
    }
}

fn small(seed: u64, scheduler: SchedulerKind) -> GenerateParams {
    GenerateParams {
        prompt: "a star".into(),
        negative_prompt: Some("noise".into()),
        steps: 3,
        width: 32,
        height: 32,
        seed,
        scheduler,
        ..GenerateParams::default()
    }
}

#[test]
fn seeds_are_deterministic_and_batches_are_per_image_seeds() {
    let sd = model();
    for kind in [SchedulerKind::EulerAncestral, SchedulerKind::Ddim] {
        let a = values(sd.generate_float(&small(5, kind)).unwrap());
        let b = values(sd.generate_float(&small(5, kind)).unwrap());
        assert_eq!(a, b, "{kind}: same seed, same image");
        let other = values(sd.generate_float(&small(6, kind)).unwrap());
        assert!(
            max_abs(&a, &other) > 1e-3,
            "{kind}: another seed, another image"
        );
        let batch = sd
            .generate_float(&GenerateParams {
                batch: 2,
                ..small(5, kind)
            })
            .unwrap();
        let second = values(batch.narrow(0, 1, 1));
        let err = max_abs(&second, &other);
        assert!(err <= 1e-5, "{kind}: batch image 1 != seed 6 image ({err})");
    }
    // randn is a function of the seed only.
    let x = values(randn::<B, 2>(9, [3, 5], &Default::default()));
    let y = values(randn::<B, 2>(9, [3, 5], &Default::default()));
    assert_eq!(x, y);
}

#[test]
fn progress_is_reported_per_step_and_decode_matches_generate() {
    let sd = model();
    let p = small(4, SchedulerKind::Euler);
    let mut seen = Vec::new();
    let latents = sd
        .denoise_with_progress(&p, &mut |done, total| seen.push((done, total)))
        .unwrap();
    assert_eq!(seen, vec![(1, 3), (2, 3), (3, 3)]);
    let decoded = values(sd.decode_latents(latents));
    assert_eq!(decoded, values(sd.generate_float(&p).unwrap()));
    let empty = sd.decode_latents(Tensor::zeros([0, 4, 4, 4], &Default::default()));
    assert_eq!(empty.dims(), [0, 3, 32, 32]);
}

#[test]
fn sliced_attention_gives_the_same_image() {
    let mut sd =
        StableDiffusion::<B>::from_pretrained(fixtures().join("tiny-sd"), &Default::default())
            .unwrap();
    let p = small(1, SchedulerKind::DpmSolverMultistep);
    let full = values(sd.generate_float(&p).unwrap());
    sd.set_attention_slice(Some(3));
    let sliced = values(sd.generate_float(&p).unwrap());
    let err = max_abs(&full, &sliced);
    assert!(err <= 1e-4, "sliced attention differs by {err}");
}

#[test]
fn no_guidance_and_clip_skip_run() {
    let sd = model();
    let base = small(2, SchedulerKind::Euler);
    let plain = values(sd.generate_float(&base).unwrap());
    let unguided = values(
        sd.generate_float(&GenerateParams {
            guidance_scale: 1.0,
            ..base.clone()
        })
        .unwrap(),
    );
    assert!(max_abs(&plain, &unguided) > 1e-4, "guidance has an effect");
    let skipped = values(
        sd.generate_float(&GenerateParams {
            clip_skip: Some(1),
            ..base.clone()
        })
        .unwrap(),
    );
    assert!(max_abs(&plain, &skipped) > 1e-5, "clip skip has an effect");
    let err = sd
        .generate_float(&GenerateParams {
            clip_skip: Some(2),
            ..base
        })
        .unwrap_err();
    assert!(err.to_string().contains("skip_last_layers"), "{err}");
}

#[test]
fn bad_params_are_typed_errors() {
    let sd = model();
    let base = small(0, SchedulerKind::Ddim);
    for p in [
        GenerateParams {
            width: 30,
            ..base.clone()
        },
        GenerateParams {
            steps: 0,
            ..base.clone()
        },
        GenerateParams {
            batch: 0,
            ..base.clone()
        },
        GenerateParams {
            guidance_scale: f64::NAN,
            ..base.clone()
        },
    ] {
        let err = sd.generate(&p).unwrap_err();
        assert!(matches!(err, TrainError::InvalidArgument(_)), "{err}");
    }
    let err = sd
        .generate(&GenerateParams {
            latents: Some(vec![0.0; 7]),
            ..base
        })
        .unwrap_err();
    assert!(
        matches!(err, TrainError::ShapeMismatch { ref key, .. } if key == "latents"),
        "{err}"
    );
}

#[test]
fn missing_sub_folders_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Default::default();
    let err = StableDiffusion::<B>::from_pretrained(tmp.path(), &d).unwrap_err();
    assert!(
        matches!(err, TrainError::MissingFolder { ref name, .. } if name == "model_index.json"),
        "{err}"
    );
    std::fs::copy(
        fixtures().join("tiny-sd/model_index.json"),
        tmp.path().join("model_index.json"),
    )
    .unwrap();
    for sub in ["text_encoder", "tokenizer", "unet", "vae", "scheduler"] {
        let err = StableDiffusion::<B>::from_pretrained(tmp.path(), &d).unwrap_err();
        assert!(
            matches!(err, TrainError::MissingFolder { ref name, .. } if name == sub),
            "expected missing {sub}, got {err}"
        );
        assert!(err.to_string().contains(sub));
        std::fs::create_dir(tmp.path().join(sub)).unwrap();
    }
    // All folders present but empty: the first loader names its missing file.
    let err = StableDiffusion::<B>::from_pretrained(tmp.path(), &d).unwrap_err();
    assert!(matches!(err, TrainError::MissingFolder { .. }), "{err}");
}

/// Writes the slow-tokenizer form (vocab.json + merges.txt) of a tokenizer.json.
fn write_slow_tokenizer(fast: &Path, out: &Path) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fast).unwrap()).unwrap();
    std::fs::write(
        out.join("vocab.json"),
        serde_json::to_string(&v["model"]["vocab"]).unwrap(),
    )
    .unwrap();
    let mut merges = String::from("#version: 0.2\n");
    for m in v["model"]["merges"].as_array().unwrap() {
        let line = match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(p) => {
                format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap())
            }
            other => panic!("unexpected merge {other}"),
        };
        merges.push_str(&line);
        merges.push('\n');
    }
    std::fs::write(out.join("merges.txt"), merges).unwrap();
}

#[test]
fn vocab_and_merges_give_the_same_tokenizer() {
    let tok_dir = fixtures().join("tiny-sd/tokenizer");
    let fast = load_tokenizer(&tok_dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = load_tokenizer(tmp.path()).unwrap_err();
    assert!(matches!(err, TrainError::MissingFolder { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    write_slow_tokenizer(&tok_dir.join("tokenizer.json"), tmp.path());
    let slow = load_tokenizer(tmp.path()).unwrap();
    let prompts = [
        "a black cat silhouette, flat icon",
        "  Hello   WORLD!! it's 2024 — naïve café ",
        "",
        "<|startoftext|> x <|endoftext|>",
        &"very long prompt ".repeat(40),
    ];
    let a = fast.encode_batch(&prompts).unwrap();
    let b = slow.encode_batch(&prompts).unwrap();
    assert_eq!(a, b);
    std::fs::write(tmp.path().join("merges.txt"), "#version: 0.2\na b c\n").unwrap();
    let err = load_tokenizer(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("a b c"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Grid search and the ImageGenerator
// ---------------------------------------------------------------------------------------------

mod grid {
    use super::*;
    use image::DynamicImage;
    use svgen_data::generate::{GenerationRequest, ImageGenerator};
    use svgen_data::stages::{normalise_background, BackgroundOptions};
    use svgen_eval::{ClipImageProcessor, ClipModel, ClipScorer, ClipTokenizer};
    use svgen_train::sd::generator::SdImageGenerator;
    use svgen_train::sd::grid::{
        grid_search, GridPoint, GridSpec, ImageScorer, Score, TraceTokenScorer,
    };

    /// Mean brightness: a scorer whose ranking the test can recompute.
    struct Brightness;

    impl ImageScorer for Brightness {
        fn name(&self) -> &str {
            "brightness"
        }
        fn score(&self, _: &GridPoint, image: &DynamicImage) -> Result<Score, TrainError> {
            let rgb = image.to_rgb8();
            let mean =
                rgb.as_raw().iter().map(|&v| f64::from(v)).sum::<f64>() / rgb.as_raw().len() as f64;
            Ok(Score {
                value: mean,
                valid: true,
                metrics: vec![("mean".into(), mean)],
                svg: None,
            })
        }
    }

    fn spec() -> GridSpec {
        GridSpec {
            prompts: vec!["a cat, white background".into(), "black cat | icon".into()],
            subject: Some("a cat".into()),
            negative_prompt: Some("photo".into()),
            steps: vec![2, 3],
            seeds: vec![1, 2],
            guidance_scales: vec![1.0, 6.0],
            schedulers: vec![SchedulerKind::Ddim],
            width: 32,
            height: 32,
            ..GridSpec::default()
        }
    }

    #[test]
    fn grid_ranks_and_writes_csv_markdown_and_pngs() {
        let sd = model();
        let spec = spec();
        let tmp = tempfile::tempdir().unwrap();
        let mut calls = 0;
        let report = grid_search(
            sd,
            &spec,
            &Brightness,
            Some(tmp.path()),
            &mut |done, total| {
                calls += 1;
                assert_eq!((done, total), (calls, 16));
            },
        )
        .unwrap();
        assert_eq!(report.rows.len(), 16);
        assert_eq!(calls, 16);
        for (i, w) in report.rows.windows(2).enumerate() {
            assert!(w[0].score.value >= w[1].score.value, "row {i} out of order");
            assert_eq!(w[0].rank + 1, w[1].rank);
        }
        // Every combination appears once.
        let mut idx: Vec<usize> = report.rows.iter().map(|r| r.point.index).collect();
        idx.sort_unstable();
        assert_eq!(idx, (0..16).collect::<Vec<_>>());

        // The saved PNG is the background-normalised generation of that point; its score is ours.
        let best = report.best().unwrap();
        let saved = image::open(tmp.path().join(best.image_file.as_ref().unwrap())).unwrap();
        let p = &best.point;
        let raw = sd
            .generate(&GenerateParams {
                prompt: p.prompt.clone(),
                negative_prompt: spec.negative_prompt.clone(),
                steps: p.steps,
                seed: p.seed,
                guidance_scale: p.guidance_scale,
                scheduler: p.scheduler,
                width: 32,
                height: 32,
                ..GenerateParams::default()
            })
            .unwrap()
            .remove(0);
        let (normalised, inverted) =
            normalise_background(&DynamicImage::ImageRgb8(raw), &BackgroundOptions::default())
                .unwrap();
        assert_eq!(inverted, best.inverted);
        assert_eq!(saved.to_rgb8(), normalised.to_rgb8());
        assert_eq!(Brightness.score(p, &saved).unwrap().value, best.score.value);

        let csv = std::fs::read_to_string(tmp.path().join("results.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 17);
        assert!(lines[0].starts_with("rank,index,prompt,subject,scheduler,steps,seed"));
        assert!(lines[0].contains(",mean,"));
        assert!(lines[1].starts_with(&format!("1,{},", best.point.index)));
        let md = std::fs::read_to_string(tmp.path().join("results.md")).unwrap();
        assert!(
            md.contains("black cat \\| icon"),
            "pipes escaped in markdown"
        );
        assert_eq!(md.matches("![").count(), 16);
        assert_eq!(
            std::fs::read_dir(tmp.path().join("images"))
                .unwrap()
                .count(),
            16
        );
    }

    fn tiny_clip() -> ClipScorer<B> {
        let eval = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../svgen-eval/tests/fixtures");
        let cfg = svgen_eval::ClipConfig::from_file(eval.join("clip_gelu/config.json")).unwrap();
        let w = svgen_eval::Weights::from_file(eval.join("clip_gelu/model.safetensors")).unwrap();
        let model = ClipModel::<B>::load(&cfg, &w, &Default::default()).unwrap();
        let tok = ClipTokenizer::from_file(eval.join("tokenizer/tokenizer.json")).unwrap();
        let processor = ClipImageProcessor::square(cfg.vision.image_size as u32);
        ClipScorer::new(model, tok, processor, Default::default()).with_render_side(64)
    }

    #[test]
    fn trace_token_scorer_counts_tokens_and_clip_similarity() {
        // A black disc on white: one path, a handful of tokens.
        let disc = DynamicImage::ImageRgb8(image::RgbImage::from_fn(48, 48, |x, y| {
            let d = (x as i32 - 24).pow(2) + (y as i32 - 24).pow(2);
            image::Rgb(if d < 200 { [0, 0, 0] } else { [255, 255, 255] })
        }));
        let point = spec().points().unwrap().remove(0);
        let plain = TraceTokenScorer::new().score(&point, &disc).unwrap();
        assert!(plain.valid);
        let svg = plain.svg.clone().unwrap();
        let tokens = svgen_core::TokenCounter::count(&svgen_core::Cl100k, &svg) as f64;
        assert_eq!(plain.metrics[0], ("tokens".to_string(), tokens));
        assert_eq!(plain.metrics[1], ("paths".to_string(), 1.0));
        assert_eq!(plain.value, -tokens / 8000.0);

        let clip = tiny_clip();
        let scorer = TraceTokenScorer::new().with_clip(&clip);
        let s = scorer.score(&point, &disc).unwrap();
        let cos = s.metrics[2].1;
        let parsed = svgen_core::Svg::parse(svg.as_bytes()).unwrap();
        let want = clip
            .clip_similarity(&[svgen_eval::ScoreImage::Svg(&parsed)], &["a cat"])
            .unwrap()[0];
        assert!((cos - f64::from(want)).abs() < 1e-6);
        assert!((s.value - (10.0 * cos - tokens / 8000.0)).abs() < 1e-9);

        // A blank page traces to nothing: invalid, ranked last whatever its token count.
        let blank =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(32, 32, image::Rgb([255; 3])));
        let s = TraceTokenScorer::new().score(&point, &blank).unwrap();
        assert!(!s.valid);
    }

    #[test]
    fn grid_with_trace_scorer_saves_svgs() {
        let sd = model();
        let spec = GridSpec {
            prompts: vec!["a cat".into()],
            steps: vec![2],
            seeds: vec![3, 4],
            guidance_scales: vec![7.5],
            schedulers: vec![
                SchedulerKind::DpmSolverMultistep,
                SchedulerKind::EulerAncestral,
            ],
            width: 32,
            height: 32,
            ..GridSpec::default()
        };
        let tmp = tempfile::tempdir().unwrap();
        let report = grid_search(
            sd,
            &spec,
            &TraceTokenScorer::new(),
            Some(tmp.path()),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(report.rows.len(), 4);
        for r in &report.rows {
            let svg =
                std::fs::read_to_string(tmp.path().join(r.svg_file.as_ref().unwrap())).unwrap();
            assert_eq!(Some(svg), r.score.svg);
        }
        let err = grid_search(
            sd,
            &GridSpec {
                seeds: vec![],
                ..spec
            },
            &Brightness,
            None,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("seeds"), "{err}");
    }

    fn assert_send_sync<T: Send + Sync>(_: &T) {}

    #[test]
    fn sd_is_an_image_generator() {
        let sd =
            StableDiffusion::<B>::from_pretrained(fixtures().join("tiny-sd"), &Default::default())
                .unwrap();
        let template = GenerateParams {
            steps: 2,
            width: 32,
            height: 24,
            scheduler: SchedulerKind::Euler,
            ..GenerateParams::default()
        };
        let generator = SdImageGenerator::new(sd, template.clone()).with_name("sd-tiny");
        assert_send_sync(&generator);
        let dynamic: &dyn ImageGenerator = &generator;
        assert_eq!(dynamic.name(), "sd-tiny");
        let request = GenerationRequest {
            id: "x1",
            prompt: "a red star",
            negative_prompt: "",
            seed: 77,
            source_image: None,
        };
        let out = dynamic.generate(&request).unwrap();
        assert_eq!(out.seed, Some(77));
        let png = image::load_from_memory(&out.bytes).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (32, 24));
        let direct = model()
            .generate(&GenerateParams {
                prompt: "a red star".into(),
                seed: 77,
                ..template.clone()
            })
            .unwrap()
            .remove(0);
        assert_eq!(png, direct, "PNG is lossless and the seed is the request's");
        let negative = dynamic
            .generate(&GenerationRequest {
                negative_prompt: "blurry, photo",
                ..request
            })
            .unwrap();
        assert_ne!(negative.bytes, out.bytes, "the negative prompt is honoured");
        let err = dynamic
            .generate(&GenerationRequest {
                prompt: "  ",
                ..request
            })
            .unwrap_err();
        assert_eq!(err.kind, svgen_data::FailureKind::BadInput);
    }
}
