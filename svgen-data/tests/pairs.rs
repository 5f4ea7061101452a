//! Pair readers: our shards, OmniSVG MMSVG (Parquet and CSV), npm icon sets, JSON lines; pairs
//! as evaluation inputs.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use svgen_data::pairs::{read_pairs_jsonl, IconMetadata, Pair, PairDataset, TokenFilter};
use svgen_data::source::VecSource;
use svgen_data::stages::{Cl100k, TokenCounter};
use svgen_data::{run, PipelineConfig};
use svgen_eval::burn::backend::Flex;
use svgen_eval::report::{evaluate, EvalInput};
use svgen_eval::{ClipImageProcessor, ClipModel, ClipScorer, ClipTokenizer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn shards_give_positive_pairs_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = PipelineConfig::new(dir.path());
    cfg.cpu_workers = 2;
    // The disc SVGs of the test generator are about 200-240 tokens: 218 splits them.
    cfg.label.max_tokens = 218;
    let items: Vec<(String, String)> = (0..12)
        .map(|i| (format!("p{i}"), format!("disc {i}")))
        .collect();
    let s = run(
        &mut VecSource::from_pairs("t", items),
        &common::disc_stages(Duration::ZERO),
        &cfg,
    )
    .unwrap();
    assert!(s.positive > 0 && s.negative > 0, "{s:?}");
    let ds = PairDataset::from_shards(dir.path(), None).unwrap();
    assert_eq!(ds.len(), s.positive);
    assert!(ds.iter().all(|p| p.n_tokens.unwrap() < 218));
    assert!(ds.iter().all(|p| p.description.starts_with("disc ")));
    // A stricter token filter keeps fewer, and says why it skipped the others.
    let counter = Cl100k::new();
    let limit = ds.iter().map(|p| p.n_tokens.unwrap()).max().unwrap();
    let f = TokenFilter {
        counter: &counter,
        max_tokens: limit,
    };
    let strict = PairDataset::from_shards(dir.path(), Some(&f)).unwrap();
    assert!(strict.len() < ds.len());
    assert!(strict.skipped.iter().all(|(_, r)| r.contains("tokens")));
}

#[test]
fn mmsvg_parquet_and_csv() {
    let dir = fixtures().join("mmsvg");
    let ds = PairDataset::from_mmsvg_parquet(dir.join("mmsvg-icon.parquet"), None).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.get(0).unwrap().id, "icon_000001");
    assert_eq!(ds.get(0).unwrap().description, "A solid black circle.");
    assert!(ds.get(0).unwrap().svg.contains("<circle"));
    assert_eq!(
        ds.skipped,
        vec![("icon_000004".to_string(), "empty description".to_string())]
    );

    let counter = Cl100k::new();
    let f = TokenFilter {
        counter: &counter,
        max_tokens: 500,
    };
    let ds = PairDataset::from_mmsvg_parquet(dir.join("mmsvg-icon.parquet"), Some(&f)).unwrap();
    assert_eq!(ds.len(), 2, "the dense dot grid is over 500 tokens");
    assert!(ds.iter().all(|p| p.n_tokens == Some(counter.count(&p.svg))));

    let large = PairDataset::from_mmsvg_parquet(dir.join("mmsvg-large.parquet"), None).unwrap();
    assert_eq!(large.len(), 2);

    let csv = PairDataset::from_mmsvg_csv(dir.join("mmsvg.csv"), dir.join("svg"), None).unwrap();
    assert_eq!(csv.len(), 4, "the empty desc_en falls back to detail");
    assert_eq!(csv.get(3).unwrap().description, "detail of icon_000004");
    assert_eq!(csv.skipped.len(), 1);
    assert_eq!(csv.skipped[0].0, "icon_missing");
}

#[test]
fn npm_icon_sets_with_their_metadata() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tabler-icons");
    let meta = IconMetadata::tabler(assets.join("icons.json")).unwrap();
    assert_eq!(meta.len(), 44);
    let ds = PairDataset::from_icon_folder(assets.join("filled"), &meta, None).unwrap();
    assert_eq!(ds.len(), 44);
    let heart = ds.iter().find(|p| p.id == "heart").unwrap();
    assert!(
        heart.description.contains("tags: "),
        "{}",
        heart.description
    );
    assert!(heart.description.contains("love"), "{}", heart.description);
    let tree = ds.iter().find(|p| p.id == "christmas-tree").unwrap();
    assert!(tree.description.starts_with("christmas tree icon"));

    let mdi_dir = fixtures().join("mdi");
    let meta = IconMetadata::mdi(mdi_dir.join("meta.json")).unwrap();
    let ds = PairDataset::from_icon_folder(mdi_dir.join("svg"), &meta, None).unwrap();
    assert_eq!(ds.len(), 8);
    let bike = ds.iter().find(|p| p.id == "bicycle").unwrap();
    assert_eq!(
        bike.description,
        "bicycle icon; also: bike, cycling; tags: Transportation + Other, Sport"
    );
    // Bad metadata is a clear error.
    assert!(matches!(
        IconMetadata::mdi(assets.join("icons.json")),
        Err(svgen_data::DataError::Parse { .. })
    ));
}

const RED: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><circle cx="5" cy="5" r="4" fill="red"/></svg>"#;
const BLUE: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect x="1" y="2" width="8" height="5" fill="blue"/></svg>"#;

/// The evaluation pairs of svgen-eval's report test, as svgen-data pairs.
fn eval_pairs() -> Vec<Pair> {
    vec![
        Pair::new("a red circle", RED).with_id("r"),
        Pair::new(
            "a blue rectangle, with a long, long caption that will be cut",
            BLUE,
        ),
        Pair::new("broken", "<svg"),
        Pair::new("", RED),
    ]
}

#[test]
fn jsonl_round_trip() {
    let pairs = eval_pairs();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pairs.jsonl");
    let lines: Vec<String> = pairs
        .iter()
        .map(|p| serde_json::to_string(p).unwrap())
        .collect();
    std::fs::write(&p, lines.join("\n\n")).unwrap();
    assert_eq!(read_pairs_jsonl(&p).unwrap(), pairs);
    std::fs::write(&p, "{\"prompt\": 1}").unwrap();
    assert!(matches!(
        read_pairs_jsonl(&p),
        Err(svgen_data::DataError::Parse { .. })
    ));
}

#[test]
fn jsonl_in_the_evaluation_format_still_loads() {
    // `score_svgs`' PAIRS.jsonl: `prompt` for the description, an optional (or null) id.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pairs.jsonl");
    let text = format!(
        "{}\r\n{}\n  \n{}\n",
        serde_json::json!({"prompt": "a red circle", "svg": RED, "id": "r"}),
        serde_json::json!({"prompt": "a blue rectangle", "svg": BLUE}),
        serde_json::json!({"id": null, "description": "training key", "svg": RED, "n_tokens": 7}),
    );
    std::fs::write(&p, text).unwrap();
    let got = read_pairs_jsonl(&p).unwrap();
    let mut counted = Pair::new("training key", RED);
    counted.n_tokens = Some(7);
    assert_eq!(
        got,
        vec![
            Pair::new("a red circle", RED).with_id("r"),
            Pair::new("a blue rectangle", BLUE),
            counted,
        ]
    );
    // The error names the line; a missing SVG is an error, not an empty pair.
    std::fs::write(
        &p,
        "\n{\"prompt\": \"x\", \"svg\": \"<svg/>\"}\n{\"prompt\": \"y\"}\n",
    )
    .unwrap();
    match read_pairs_jsonl(&p) {
        Err(svgen_data::DataError::Parse { message, .. }) => {
            assert!(message.starts_with("line 3:"), "{message}")
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert!(matches!(
        read_pairs_jsonl(dir.path().join("missing.jsonl")),
        Err(svgen_data::DataError::Io { .. })
    ));
}

#[test]
fn pairs_are_evaluation_inputs() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../svgen-eval/tests/fixtures");
    let device = Default::default();
    let model = ClipModel::<Flex>::from_pretrained(fixtures.join("clip_gelu"), &device).unwrap();
    let tok = ClipTokenizer::from_dir(fixtures.join("tokenizer")).unwrap();
    let scorer = ClipScorer::new(model, tok, ClipImageProcessor::square(32), device);
    let pairs = eval_pairs();
    let rep = evaluate(&scorer, &pairs, &Cl100k::new()).unwrap();
    // The same inputs as borrowed views give the same report.
    let views: Vec<EvalInput<'_>> = pairs
        .iter()
        .map(|p| EvalInput {
            id: (!p.id.is_empty()).then_some(p.id.as_str()),
            prompt: &p.description,
            svg: &p.svg,
        })
        .collect();
    let by_view = evaluate(&scorer, &views, &Cl100k::new()).unwrap();
    assert_eq!(rep.samples, by_view.samples);
    assert_eq!(rep.samples.len(), 4);
    assert_eq!(rep.samples[0].id.as_deref(), Some("r"));
    assert_eq!(rep.samples[1].id, None, "an empty id is no id");
    assert_eq!(rep.samples[1].prompt, pairs[1].description);
    assert_eq!(rep.summary.valid, 3);
    // References work too (e.g. a filtered view of a dataset).
    let refs: Vec<&Pair> = pairs.iter().filter(|p| p.id == "r").collect();
    let one = evaluate(&scorer, &refs, &Cl100k::new()).unwrap();
    assert_eq!(
        one.samples[0].clip_similarity,
        rep.samples[0].clip_similarity
    );
}
