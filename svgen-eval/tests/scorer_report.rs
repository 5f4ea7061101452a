//! Scores and reports end to end on the tiny fixtures (tokenizer -> CLIP, SVG -> render -> CLIP).

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use svgen_core::compare::{assert_close, Tolerance};
use svgen_core::tokens::Cl100k;
use svgen_core::Svg;
use svgen_eval::report::{evaluate, EvalInput, Stats};
use svgen_eval::{
    AestheticPredictor, ClipImageProcessor, ClipModel, ClipScorer, ClipTokenizer, EvalError,
    ScoreImage, Weights,
};

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn scorer(model: &str, side: u32) -> ClipScorer<B> {
    let device = Default::default();
    let m = ClipModel::<B>::from_pretrained(fixture(model), &device).unwrap();
    let tok = ClipTokenizer::from_dir(fixture("tokenizer")).unwrap();
    ClipScorer::new(m, tok, ClipImageProcessor::square(side), device).with_batch_size(2)
}

const RED: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><circle cx="5" cy="5" r="4" fill="red"/></svg>"#;
const BLUE: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect x="1" y="2" width="8" height="5" fill="blue"/></svg>"#;

#[test]
fn tokenizer_feeds_the_text_model_like_transformers() {
    let s = scorer("clip_gelu", 32);
    let prompts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(fixture("clip_gelu/prompts.json")).unwrap())
            .unwrap();
    let r = Weights::from_file(fixture("clip_gelu/reference.safetensors")).unwrap();
    let (ids, _) = r.i64_any("input_ids").unwrap();
    let t = s.tokenizer.encode_batch(&prompts).unwrap();
    assert_eq!(t.input_ids, ids);
    let (exp, _) = r.f32_any("text_embeds").unwrap();
    let got: Vec<f32> = s
        .text_embeds(&prompts)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    assert_close(
        "text embeds via tokenizer",
        &got,
        &exp,
        Tolerance::absolute(1e-4),
    );
}

#[test]
fn similarity_score_and_matrix_agree() {
    let s = scorer("clip_gelu", 32);
    let red = Svg::parse(RED.as_bytes()).unwrap();
    let raster = s.rasterize(ScoreImage::Svg(&red));
    assert_eq!(raster.get_pixel(0, 0).0, [255, 255, 255]);
    let blue = Svg::parse(BLUE.as_bytes()).unwrap();
    let images = [
        ScoreImage::Svg(&red),
        ScoreImage::Svg(&blue),
        ScoreImage::Rgb(&raster),
    ];
    let prompts = ["a red circle", "a blue rectangle", ""];
    let sims = s.clip_similarity(&images, &prompts).unwrap();
    let scores = s.clip_score(&images, &prompts).unwrap();
    let m = s.similarity_matrix(&images, &prompts).unwrap();
    for i in 0..3 {
        assert!((-1.0..=1.0).contains(&sims[i]));
        assert!((m[i][i] - sims[i]).abs() < 1e-5);
        assert!((scores[i] - 100.0 * sims[i].max(0.0)).abs() < 1e-3);
    }
    // the SVG and its own rendering score the same
    assert!((m[0][1] - m[2][1]).abs() < 1e-5);
    assert!(matches!(
        s.clip_similarity(&images, &prompts[..2]),
        Err(EvalError::InvalidInput { .. })
    ));
    assert!(s.clip_similarity::<&str>(&[], &[]).unwrap().is_empty());
    assert!(s.aesthetic(&images).is_err()); // no head attached
}

#[test]
fn aesthetic_through_the_scorer() {
    let device = Default::default();
    let head = AestheticPredictor::<B>::from_file(fixture("aesthetic/mlp.pth"), &device).unwrap();
    // clip_gelu projects to 10-d, the head takes 12-d
    assert!(matches!(
        scorer("clip_gelu", 32).with_aesthetic(head.clone()),
        Err(EvalError::ConfigMismatch { .. })
    ));
    let s = scorer("clip_quick", 30)
        .with_aesthetic(head.clone())
        .unwrap();
    let red = Svg::parse(RED.as_bytes()).unwrap();
    let a = s
        .aesthetic(&[ScoreImage::Svg(&red), ScoreImage::Svg(&red)])
        .unwrap();
    assert_eq!(a.len(), 2);
    assert!(a[0].is_finite() && (a[0] - a[1]).abs() < 1e-6);
    let e = s.image_embeds(&[ScoreImage::Svg(&red)]).unwrap();
    let direct: Vec<f32> = head.score(e).unwrap().into_data().to_vec().unwrap();
    assert!((direct[0] - a[0]).abs() < 1e-6);
}

#[test]
fn report_writes_every_artifact() {
    let s = scorer("clip_gelu", 32);
    let pairs = vec![
        EvalInput {
            id: Some("r"),
            prompt: "a red circle",
            svg: RED,
        },
        EvalInput {
            id: None,
            prompt: "a blue rectangle, with a long, long caption that will be cut",
            svg: BLUE,
        },
        EvalInput {
            id: None,
            prompt: "broken",
            svg: "<svg",
        },
        EvalInput {
            id: None,
            prompt: "",
            svg: RED,
        },
    ];
    let rep = evaluate(&s, &pairs, &Cl100k).unwrap();
    assert_eq!(rep.summary.n, 4);
    assert_eq!(rep.summary.valid, 3);
    assert!(!rep.samples[2].valid && rep.samples[2].render_error.is_some());
    assert!(rep.samples[2].clip_similarity.is_none());
    assert_eq!(
        rep.samples[0].clip_similarity,
        rep.samples[3]
            .clip_similarity
            .map(|_| rep.samples[0].clip_similarity.unwrap())
    );
    assert!(rep.samples.iter().all(|x| x.tokens > 0));
    let sim = rep.summary.clip_similarity.as_ref().unwrap();
    assert_eq!(sim.n, 3);
    let csv = rep.to_csv().unwrap();
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.starts_with(
        "index,id,prompt,valid,render_error,tokens,clip_similarity,clip_score,aesthetic"
    ));
    assert!(rep.markdown().contains("| clip_similarity | 3 |"));
    let json: serde_json::Value = serde_json::from_str(&rep.to_json()).unwrap();
    assert_eq!(json["samples"].as_array().unwrap().len(), 4);
    let dir = tempfile::tempdir().unwrap();
    let files = rep.write_all(dir.path()).unwrap();
    for name in [
        "samples.csv",
        "report.json",
        "summary.md",
        "contact_sheet.png",
        "hist_clip_similarity.png",
        "hist_tokens.png",
    ] {
        assert!(files.iter().any(|f| f.ends_with(name)), "{name} missing");
    }
    let sheet = image::open(dir.path().join("contact_sheet.png"))
        .unwrap()
        .to_rgb8();
    // some caption text was drawn (dark pixels below the first tile)
    let dark = (8..170)
        .flat_map(|x| (170..220).map(move |y| (x, y)))
        .filter(|&(x, y)| sheet.get_pixel(x, y).0[0] < 100)
        .count();
    assert!(dark > 20, "no caption drawn ({dark})");
}

#[test]
fn stats_match_numpy() {
    let s = Stats::of([1.0, 2.0, 3.0, 4.0, f64::NAN]).unwrap();
    assert_eq!(s.n, 4);
    assert!((s.mean - 2.5).abs() < 1e-12);
    assert!((s.std - 1.118_033_988_749_895).abs() < 1e-12);
    assert!((s.p25 - 1.75).abs() < 1e-12 && (s.p95 - 3.85).abs() < 1e-12);
    assert!(Stats::of([]).is_none());
}
