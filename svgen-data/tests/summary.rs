//! The text of the run summary and of `stats`, as `build_dataset` prints them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use svgen_data::pipeline::TokenStats;
use svgen_data::shard::ShardSpec;
use svgen_data::stages::LabelPolicy;
use svgen_data::tools::{stats, DatasetStats};
use svgen_data::{run, PipelineConfig, RunSummary, Stages};

fn tokens() -> TokenStats {
    TokenStats {
        min: 12,
        median: 640,
        mean: 706.6,
        p95: 1500,
        max: 2013,
    }
}

fn written_summary() -> RunSummary {
    RunSummary {
        read: 50,
        other_shards: 30,
        already_done: 2,
        written: 16,
        positive: 12,
        negative: 4,
        dropped_negative: 3,
        inverted: 5,
        failed: BTreeMap::from([("generate".to_string(), 1), ("trace".to_string(), 2)]),
        shards: vec![
            PathBuf::from("out/part-00001-of-00004-000000.parquet"),
            PathBuf::from("out/part-00001-of-00004-000001.parquet"),
        ],
        tokens: tokens(),
        elapsed: Duration::from_millis(2_500),
        out_dir: PathBuf::from("out"),
        shard: ShardSpec::new(1, 4).unwrap(),
        label: LabelPolicy {
            max_tokens: 4_000,
            drop_negative: true,
        },
        failures_path: PathBuf::from("out/failures-00001-of-00004.jsonl"),
        input_exhausted: true,
        marker: None,
        finished_before: None,
    }
}

#[test]
fn run_summary_table() {
    let expected = "\
svgen-data run: out (shard 1/4)
| stage / outcome | count |
|---|---:|
| records read | 50 |
| other workers' records | 30 |
| already done (resumed) | 2 |
| triplets written | 16 |
| positive (< 4000 tokens) | 12 |
| negative | 4 |
| negative dropped | 3 |
| dark backgrounds inverted | 5 |
| failed at generate | 1 |
| failed at trace | 2 |
| shards published | 2 |
tokens (cl100k) of the written SVGs: min 12 / median 640 / mean 707 / p95 1500 / max 2013
2.5 s, 6.40 triplets/s
shard: out/part-00001-of-00004-000000.parquet
shard: out/part-00001-of-00004-000001.parquet
failures: out/failures-00001-of-00004.jsonl
";
    assert_eq!(written_summary().to_string(), expected);
}

#[test]
fn run_summary_of_a_finished_folder() {
    // Negatives kept: no "dropped" row; no failures: no failures line.
    let s = RunSummary {
        read: 44,
        already_done: 44,
        out_dir: PathBuf::from("target/svgen-dataset"),
        ..RunSummary::default()
    };
    let expected = "\
svgen-data run: target/svgen-dataset (shard 0/1)
| stage / outcome | count |
|---|---:|
| records read | 44 |
| other workers' records | 0 |
| already done (resumed) | 44 |
| triplets written | 0 |
| positive (< 8000 tokens) | 0 |
| negative | 0 |
| dark backgrounds inverted | 0 |
| shards published | 0 |
nothing left to do: every input is already in target/svgen-dataset (use --fresh to rebuild)
";
    assert_eq!(s.to_string(), expected);
    // An empty input neither counts tokens nor claims the folder is finished.
    let empty = RunSummary::default().to_string();
    assert!(empty.ends_with("| shards published | 0 |\n"), "{empty}");
}

#[test]
fn stats_table() {
    let mut s = DatasetStats {
        dir: PathBuf::from("target/svgen-dataset"),
        shards: 2,
        rows: 44,
        duplicate_ids: 0,
        positive: 40,
        negative: 4,
        by_source: BTreeMap::from([("tabler".to_string(), 44)]),
        by_generator: BTreeMap::from([("render".to_string(), 44)]),
        tokens: tokens(),
        mean_clip_similarity: Some(0.281_234),
        mean_aesthetic: Some(5.123_4),
        image_bytes: 123_456,
        svg_bytes: 7_890,
        failures: BTreeMap::from([("filter".to_string(), 3)]),
    };
    let expected = "\
| target/svgen-dataset | |
|---|---:|
| shards | 2 |
| rows | 44 |
| duplicate ids | 0 |
| positive | 40 |
| negative | 4 |
| tokens min / median / mean / p95 / max | 12 / 640 / 707 / 1500 / 2013 |
| mean CLIP similarity | 0.2812 |
| mean aesthetic | 5.123 |
| PNG bytes | 123456 |
| SVG bytes | 7890 |
| source tabler | 44 |
| generator render | 44 |
| failed at filter | 3 |
";
    assert_eq!(s.to_string(), expected);
    // Unscored rows: no CLIP or aesthetic rows.
    s.mean_clip_similarity = None;
    s.mean_aesthetic = None;
    let text = s.to_string();
    assert!(
        !text.contains("CLIP") && !text.contains("aesthetic"),
        "{text}"
    );
    assert_eq!(text.lines().count(), expected.lines().count() - 2);
    // The JSON form (`stats --json`) has the fields it always had, without the folder.
    let json = serde_json::to_value(&s).unwrap();
    assert!(json.get("dir").is_none());
    assert_eq!(json["rows"], 44);
    assert_eq!(json["tokens"]["p95"], 1500);
}

fn default_stages() -> Stages {
    Stages {
        simplifier: None,
        template: svgen_data::prompt::PromptTemplate::silhouette(),
        generator: Box::new(svgen_data::default_job::image_source(64, 4)),
        tracer: Box::new(svgen_data::stages::PotraceTracer::default()),
        counter: Box::new(svgen_data::stages::Cl100k::new()),
        clip: None,
        aesthetic: None,
    }
}

fn run_default(dir: &Path) -> RunSummary {
    let mut cfg = PipelineConfig::new(dir);
    cfg.cpu_workers = 2;
    run(
        &mut svgen_data::default_job::caption_source(),
        &default_stages(),
        &cfg,
    )
    .unwrap()
}

#[test]
fn summaries_of_a_real_run_and_its_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_default(dir.path());
    assert_eq!(first.out_dir, dir.path());
    assert_eq!(first.shard, ShardSpec::default());
    assert_eq!(first.label, LabelPolicy::default());
    assert_eq!(first.failures_path, dir.path().join("failures.jsonl"));
    let text = first.to_string();
    let head = format!(
        "svgen-data run: {} (shard 0/1)\n| stage / outcome | count |\n|---|---:|\n\
         | records read | 44 |\n| other workers' records | 0 |\n| already done (resumed) | 0 |\n\
         | triplets written | 44 |\n",
        dir.path().display()
    );
    assert!(text.starts_with(&head), "{text}");
    assert!(
        text.contains("\ntokens (cl100k) of the written SVGs: min "),
        "{text}"
    );
    assert!(text.contains(" triplets/s\nshard: "), "{text}");
    assert_eq!(text.matches("\nshard: ").count(), 1, "{text}");
    assert!(!text.contains("nothing left to do"), "{text}");

    assert!(
        text.ends_with("\nworker 0/1 finished: done-00000-of-00001.json\n"),
        "{text}"
    );

    // The rerun finds the completion marker and does nothing.
    let second = run_default(dir.path());
    assert_eq!((second.read, second.written), (0, 0));
    assert_eq!(
        second.to_string(),
        format!(
            "worker 0/1 already finished (done-00000-of-00001.json in {}): 44 rows in 1 shard, \
             0 failures; nothing to do\n",
            dir.path().display()
        )
    );

    let table = stats(dir.path()).unwrap().to_string();
    let head = format!(
        "| {} | |\n|---|---:|\n| shards | 1 |\n| rows | 44 |\n| duplicate ids | 0 |\n",
        dir.path().display()
    );
    assert!(table.starts_with(&head), "{table}");
}
