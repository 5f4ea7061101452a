//! Training readers: our shards, OmniSVG MMSVG (Parquet and CSV), npm icon sets.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use svgen_data::pairs::{IconMetadata, PairDataset, TokenFilter};
use svgen_data::source::VecSource;
use svgen_data::stages::{Cl100k, TokenCounter};
use svgen_data::{run, PipelineConfig};

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
