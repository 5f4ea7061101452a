//! The CLIP-similarity filter and aesthetic stage, backed by svgen-eval's `ClipScorer` on the
//! tiny real-format fixtures of svgen-eval (HF `CLIPModel` safetensors, a CLIP tokenizer and a
//! LAION-layout aesthetic head).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use svgen_data::eval::EvalScorer;
use svgen_data::pipeline::read_failures;
use svgen_data::source::{CaptionSource, VecSource};
use svgen_data::storage::{self, ShardOptions};
use svgen_data::{run, FailureKind, PipelineConfig, Stage, Stages, Triplet};
use svgen_eval::burn::backend::Flex;
use svgen_eval::{
    AestheticPredictor, ClipImageProcessor, ClipModel, ClipScorer, ClipTokenizer, EvalError,
    ScoreImage,
};

type B = Flex;

/// Inputs taken from the embedded default job.
const INPUTS: usize = 12;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../svgen-eval/tests/fixtures")
        .join(name)
}

/// A scorer assembled piece by piece, independently of [`EvalScorer::from_pretrained`].
fn direct_scorer(model: &str, image_size: u32) -> ClipScorer<B> {
    let device = Default::default();
    let m = ClipModel::<B>::from_pretrained(fixture(model), &device).unwrap();
    let tok = ClipTokenizer::from_dir(fixture("tokenizer")).unwrap();
    ClipScorer::new(m, tok, ClipImageProcessor::square(image_size), device)
}

/// `clip_gelu` laid out as an HF CLIP folder: config, weights and tokenizer side by side.
fn clip_gelu_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (from, name) in [
        ("clip_gelu", "config.json"),
        ("clip_gelu", "model.safetensors"),
        ("tokenizer", "tokenizer.json"),
        ("tokenizer", "tokenizer_config.json"),
    ] {
        std::fs::copy(fixture(from).join(name), dir.path().join(name)).unwrap();
    }
    dir
}

fn stages(clip: &EvalScorer<B>, aesthetic: &EvalScorer<B>, min: Option<f32>) -> Stages {
    Stages {
        simplifier: None,
        template: svgen_data::prompt::PromptTemplate::silhouette(),
        // 48 px rasters of the committed icons, every fourth one light-on-dark.
        generator: Box::new(svgen_data::default_job::image_source(48, 4)),
        tracer: Box::new(svgen_data::stages::PotraceTracer::default()),
        counter: Box::new(svgen_data::stages::Cl100k::new()),
        clip: Some(clip.clip_filter(min)),
        aesthetic: aesthetic.aesthetic_scorer(),
    }
}

fn config(dir: &Path) -> PipelineConfig {
    let mut c = PipelineConfig::new(dir);
    c.shard_options = ShardOptions {
        rows_per_shard: 5,
        rows_per_row_group: 2,
        ..ShardOptions::default()
    };
    c.cpu_workers = 2;
    c.network_workers = 1;
    c.channel_capacity = 4;
    c
}

/// The first [`INPUTS`] captions of the embedded default job.
fn source() -> VecSource {
    let mut all = svgen_data::default_job::caption_source();
    let records: Vec<_> = std::iter::from_fn(|| all.next_record())
        .take(INPUTS)
        .collect();
    VecSource::new("default-prompts", records)
}

fn rows(shards: &[PathBuf]) -> Vec<Triplet> {
    shards
        .iter()
        .flat_map(|p| storage::read_shard(p).unwrap())
        .collect()
}

#[test]
fn clip_and_aesthetic_columns_match_clip_scorer_and_clip_min_rejects() {
    let folder = clip_gelu_folder();
    let device = Default::default();
    let clip = EvalScorer::<B>::from_pretrained(folder.path(), None, &device).unwrap();
    assert!(!clip.has_aesthetic());
    assert!(clip.aesthetic_scorer().is_none());
    // The LAION-layout fixture head takes 12-d embeddings: clip_quick's projection width.
    let head = AestheticPredictor::<B>::from_file(fixture("aesthetic/mlp.pth"), &device).unwrap();
    let aes = EvalScorer::new(
        direct_scorer("clip_quick", 30)
            .with_aesthetic(head)
            .unwrap(),
    );
    assert!(aes.has_aesthetic());

    // 1. Scoring only: every row carries both columns.
    let out = tempfile::tempdir().unwrap();
    let s = run(
        &mut source(),
        &stages(&clip, &aes, None),
        &config(out.path()),
    )
    .unwrap();
    assert_eq!(s.written, INPUTS);
    assert_eq!(s.failures(), 0, "{:?}", s.failed);
    assert!(
        s.inverted > 0,
        "some dark-background images were normalised"
    );
    let scored = rows(&s.shards);
    assert_eq!(scored.len(), INPUTS);

    // The same numbers as ClipScorer on the stored image and the text the filter saw.
    let ref_clip = direct_scorer("clip_gelu", 32);
    let ref_aes = direct_scorer("clip_quick", 30)
        .with_aesthetic(
            AestheticPredictor::<B>::from_file(fixture("aesthetic/mlp.pth"), &device).unwrap(),
        )
        .unwrap();
    let mut sims = BTreeMap::new();
    for t in &scored {
        let img = image::load_from_memory(&t.image).unwrap();
        let text = t.simplified.as_deref().unwrap_or(&t.caption);
        let want = ref_clip
            .clip_similarity(&[ScoreImage::Dynamic(&img)], &[text])
            .unwrap()[0];
        let got = t.clip_similarity.expect("clip_similarity filled");
        assert!((got - want).abs() <= 1e-5, "{}: {got} vs {want}", t.id);
        assert!((-1.0..=1.0).contains(&got));
        let want = ref_aes.aesthetic(&[ScoreImage::Dynamic(&img)]).unwrap()[0];
        let got = t.aesthetic.expect("aesthetic filled");
        assert!((got - want).abs() <= 1e-5, "{}: {got} vs {want}", t.id);
        sims.insert(t.id.clone(), t.clip_similarity.unwrap());
    }
    let st = svgen_data::tools::stats(out.path()).unwrap();
    let mean = sims.values().map(|&v| f64::from(v)).sum::<f64>() / INPUTS as f64;
    assert!((st.mean_clip_similarity.unwrap() - mean).abs() < 1e-6);
    assert!(st.mean_aesthetic.is_some());

    // 2. --clip-min half-way between two middle scores: the samples below it are recorded as
    //    rejected at the filter stage, the others written with the same scores.
    let mut sorted: Vec<f32> = sims.values().copied().collect();
    sorted.sort_by(f32::total_cmp);
    let k = (1..sorted.len())
        .min_by_key(|&k| k.abs_diff(sorted.len() / 2) * 2 + usize::from(sorted[k] == sorted[k - 1]))
        .unwrap();
    assert!(sorted[k] > sorted[k - 1], "fixture scores must differ");
    let min = (sorted[k] + sorted[k - 1]) / 2.0;
    let keep: BTreeSet<String> = sims
        .iter()
        .filter(|(_, &v)| v >= min)
        .map(|(id, _)| id.clone())
        .collect();
    let reject: BTreeSet<String> = sims
        .iter()
        .filter(|(_, &v)| v < min)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!keep.is_empty() && !reject.is_empty());

    let out = tempfile::tempdir().unwrap();
    let s = run(
        &mut source(),
        &stages(&clip, &aes, Some(min)),
        &config(out.path()),
    )
    .unwrap();
    assert_eq!(s.written, keep.len());
    assert_eq!(s.failed.get("filter").copied(), Some(reject.len()));
    assert_eq!(s.failures(), reject.len());
    let kept = rows(&s.shards);
    assert_eq!(
        kept.iter().map(|t| t.id.clone()).collect::<BTreeSet<_>>(),
        keep
    );
    for t in &kept {
        assert_eq!(t.clip_similarity, Some(sims[&t.id]), "{}", t.id);
        assert!(t.clip_similarity.unwrap() >= min);
        assert!(t.aesthetic.is_some());
    }
    let failures = read_failures(out.path()).unwrap();
    assert_eq!(
        failures
            .iter()
            .map(|f| f.id.clone())
            .collect::<BTreeSet<_>>(),
        reject
    );
    for f in &failures {
        assert_eq!((f.stage, f.kind), (Stage::Filter, FailureKind::Rejected));
        assert!(
            f.reason.contains("CLIP similarity") && f.reason.contains("below"),
            "{}",
            f.reason
        );
    }
    // Rejections are final: a rerun resumes with nothing left to do.
    let again = run(
        &mut source(),
        &stages(&clip, &aes, Some(min)),
        &config(out.path()),
    )
    .unwrap();
    assert_eq!((again.written, again.failures()), (0, 0));
}

#[test]
fn a_head_that_does_not_fit_the_clip_model_is_a_typed_error() {
    let folder = clip_gelu_folder();
    // clip_gelu projects to 10-d, the fixture head takes 12-d.
    let err = EvalScorer::<B>::from_pretrained(
        folder.path(),
        Some(&fixture("aesthetic/mlp.pth")),
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(err, EvalError::ConfigMismatch { .. }), "{err}");
    let missing =
        EvalScorer::<B>::from_pretrained(folder.path().join("absent"), None, &Default::default());
    assert!(missing.is_err());
}
