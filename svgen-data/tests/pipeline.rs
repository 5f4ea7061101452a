//! End-to-end pipeline tests: default job, schema, sharding, kill-and-resume, bad input,
//! full disk, network stages inside a run.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use common::*;
use svgen_data::pipeline::{read_failures, run_with_hook, Event};
use svgen_data::shard::ShardSpec;
use svgen_data::source::{Caption, SourceFailure, VecSource};
use svgen_data::storage::{self, ShardOptions};
use svgen_data::{run, DataError, Label, PipelineConfig, Stage};

fn config(dir: &Path, rows_per_shard: usize) -> PipelineConfig {
    let mut c = PipelineConfig::new(dir);
    c.shard_options = ShardOptions {
        rows_per_shard,
        rows_per_row_group: 3,
        ..ShardOptions::default()
    };
    c.cpu_workers = 2;
    c.network_workers = 2;
    c.channel_capacity = 4;
    c
}

fn numbered(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("item-{i:03}"), format!("a round object number {i}")))
        .collect()
}

/// Asserts every input record is in exactly one place: a shard row or a failure line (a
/// repeated id: one row or failure for the first record, one `dedup` failure for the rest).
fn assert_exactly_once(dir: &Path, expected: &BTreeSet<String>) {
    assert_exactly_once_counted(dir, &expected.iter().map(|i| (i.clone(), 1)).collect());
}

fn assert_exactly_once_counted(dir: &Path, expected: &HashMap<String, usize>) {
    let (rows, fails) = output_ids(dir);
    let mut count: HashMap<String, usize> = HashMap::new();
    for id in rows.iter().chain(fails.iter()) {
        *count.entry(id.clone()).or_default() += 1;
    }
    for (id, n) in expected {
        assert_eq!(
            count.get(id).copied().unwrap_or(0),
            (*n).min(2),
            "id {id}: rows {rows:?} failures {fails:?}"
        );
    }
    assert_eq!(count.len(), expected.len(), "unexpected ids in output");
    // No half-written shard is left behind.
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "leftover {name}");
    }
}

#[test]
fn default_job_writes_a_readable_shard() {
    let dir = tempfile::tempdir().unwrap();
    let stages = svgen_data::Stages {
        simplifier: None,
        template: svgen_data::prompt::PromptTemplate::silhouette(),
        generator: Box::new(svgen_data::default_job::image_source(96, 4)),
        tracer: Box::new(svgen_data::stages::PotraceTracer::default()),
        counter: Box::new(svgen_data::stages::Cl100k::new()),
        clip: None,
        aesthetic: None,
    };
    let mut cfg = config(dir.path(), 20);
    cfg.label.max_tokens = 1_000;
    let mut src = svgen_data::default_job::caption_source();
    let s = run(&mut src, &stages, &cfg).unwrap();
    assert_eq!(s.written, 44);
    assert_eq!(s.failures(), 0, "{:?}", s.failed);
    assert_eq!(s.shards.len(), 3);
    assert_eq!(s.inverted, 11, "every 4th icon is on a dark background");
    assert_eq!(s.positive + s.negative, 44);
    assert!(s.tokens.min > 20 && s.tokens.max < 20_000, "{:?}", s.tokens);

    // Read back through arrow/parquet directly: schema and values.
    let rows: Vec<_> = s
        .shards
        .iter()
        .flat_map(|p| storage::read_shard(p).unwrap())
        .collect();
    let file = std::fs::File::open(&s.shards[0]).unwrap();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let file_schema = builder.schema().clone();
    let names: Vec<&str> = file_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, storage::COLUMNS.to_vec());
    for (found, expected) in file_schema.fields().iter().zip(storage::schema().fields()) {
        assert_eq!(found.data_type(), expected.data_type(), "{}", found.name());
        assert_eq!(
            found.is_nullable(),
            expected.is_nullable(),
            "{}",
            found.name()
        );
    }
    let batch = builder.build().unwrap().next().unwrap().unwrap();
    assert_eq!(batch.num_rows(), 20);
    let apple = rows.iter().find(|t| t.id == "tabler-apple").unwrap();
    assert_eq!(apple.source, "default-prompts");
    assert!(apple.caption.starts_with("A shiny red apple"));
    assert!(apple
        .prompt
        .starts_with("A black silhouette of A shiny red apple"));
    assert!(apple
        .negative_prompt
        .as_deref()
        .unwrap()
        .contains("photorealistic"));
    assert_eq!(apple.generator, "svg-render");
    assert_eq!((apple.width, apple.height), (96, 96));
    assert!(svgen_data::sample::is_png(&apple.image));
    let decoded = image::load_from_memory(&apple.image).unwrap();
    assert_eq!(decoded.width(), 96);
    assert!(apple.svg.starts_with("<svg") || apple.svg.starts_with("<?xml"));
    svgen_core::Svg::parse(apple.svg.as_bytes()).unwrap();
    assert_eq!(apple.tokenizer, "cl100k_base");
    assert_eq!(
        apple.n_tokens as usize,
        svgen_core::TokenCounter::count(&svgen_core::Cl100k::new(), &apple.svg)
    );
    assert_eq!(
        apple.label,
        if apple.n_tokens < 1000 {
            Label::Positive
        } else {
            Label::Negative
        }
    );
    assert!(apple.created_at > 1_600_000_000_000_000);
    // A dark-background sample was normalised: its stored image has a light border.
    let dark = rows.iter().find(|t| t.id == "tabler-bone").unwrap();
    let img = image::load_from_memory(&dark.image).unwrap().to_rgb8();
    assert!(
        img.get_pixel(0, 0).0.iter().all(|&c| c > 200),
        "{:?}",
        img.get_pixel(0, 0)
    );

    // stats agrees; export writes png + svg + jsonl.
    let st = svgen_data::tools::stats(dir.path()).unwrap();
    assert_eq!((st.rows, st.shards, st.duplicate_ids), (44, 3, 0));
    assert_eq!(st.positive, s.positive);
    let out = tempfile::tempdir().unwrap();
    assert_eq!(
        svgen_data::tools::export_folder(dir.path(), out.path()).unwrap(),
        44
    );
    assert!(out.path().join("tabler-apple.png").is_file());
    let svg = std::fs::read_to_string(out.path().join("tabler-apple.svg")).unwrap();
    assert_eq!(svg, apple.svg);
    let meta = std::fs::read_to_string(out.path().join("metadata.jsonl")).unwrap();
    assert_eq!(meta.lines().count(), 44);
    let first: serde_json::Value = serde_json::from_str(meta.lines().next().unwrap()).unwrap();
    assert!(first["svg_file"].as_str().unwrap().ends_with(".svg"));
    assert!(first.get("svg").is_none());
}

#[test]
fn sharding_covers_every_input_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let items = numbered(30);
    let expected: BTreeSet<String> = items.iter().map(|(i, _)| i.clone()).collect();
    let stages = disc_stages(Duration::ZERO);
    let mut per_worker = Vec::new();
    for i in 0..3 {
        let mut cfg = config(dir.path(), 4);
        cfg.shard = ShardSpec::new(i, 3).unwrap();
        let mut src = VecSource::from_pairs("numbers", items.clone());
        let s = run(&mut src, &stages, &cfg).unwrap();
        assert_eq!(s.read, 30);
        assert_eq!(s.other_shards + s.written + s.failures(), 30);
        per_worker.push(s.written);
    }
    assert_eq!(per_worker.iter().sum::<usize>(), 30);
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "degenerate split {per_worker:?}"
    );
    assert_exactly_once(dir.path(), &expected);
    // Each worker wrote its own manifest; merge gives one de-duplicated set.
    for i in 0..3 {
        assert!(dir
            .path()
            .join(format!("manifest-{i:05}-of-00003.jsonl"))
            .is_file());
    }
    let merged = tempfile::tempdir().unwrap();
    let m = svgen_data::tools::merge(
        &[dir.path().to_path_buf()],
        merged.path().join("m"),
        &svgen_data::tools::MergeOptions::default(),
    )
    .unwrap();
    assert_eq!((m.read, m.written, m.duplicates), (30, 30, 0));
    assert_exactly_once(&merged.path().join("m"), &expected);
}

fn mixed_source(n: usize) -> VecSource {
    let mut records: Vec<Result<Caption, SourceFailure>> = Vec::new();
    for i in 0..n {
        let id = match i % 7 {
            3 => format!("bad-image-{i}"),
            5 => format!("timeout-{i}"),
            _ => format!("item-{i:03}"),
        };
        records.push(Ok(Caption {
            id,
            source: "mixed".into(),
            text: format!("thing {i}"),
            image: None,
        }));
        if i % 9 == 4 {
            records.push(Err(SourceFailure {
                id: format!("mixed:line{i}"),
                reason: "invalid UTF-8".into(),
            }));
        }
    }
    // A duplicate id.
    records.push(Ok(Caption {
        id: "item-000".into(),
        source: "mixed".into(),
        text: "again".into(),
        image: None,
    }));
    VecSource::new("mixed", records)
}

/// Input ids with their multiplicity.
fn mixed_ids(n: usize) -> HashMap<String, usize> {
    let mut src = mixed_source(n);
    let mut ids = HashMap::new();
    use svgen_data::source::CaptionSource;
    while let Some(r) = src.next_record() {
        *ids.entry(match r {
            Ok(c) => c.id,
            Err(f) => f.id,
        })
        .or_default() += 1;
    }
    ids
}

#[test]
fn bad_inputs_are_recorded_and_the_run_continues() {
    let dir = tempfile::tempdir().unwrap();
    let stages = disc_stages(Duration::ZERO);
    let cfg = config(dir.path(), 8);
    let s = run(&mut mixed_source(20), &stages, &cfg).unwrap();
    let fails = read_failures(dir.path()).unwrap();
    let by = |stage: Stage| fails.iter().filter(|f| f.stage == stage).count();
    assert_eq!(by(Stage::Decode), 3, "{fails:?}"); // bad-image-3, -10, -17
    assert_eq!(by(Stage::Generate), 3); // timeout-5, -12, -19
    assert_eq!(by(Stage::Source), 2); // lines 4, 13
    assert_eq!(by(Stage::Dedup), 1);
    assert!(fails
        .iter()
        .any(|f| f.stage == Stage::Decode && f.reason.contains("unreadable image")));
    assert!(fails
        .iter()
        .any(|f| f.stage == Stage::Generate && f.kind == svgen_data::FailureKind::Timeout));
    assert_eq!(s.written, 14);
    assert_eq!(s.failures(), 9);
    // The kept copy of the duplicated id is the first one.
    let rows: Vec<_> = storage::list_shards(dir.path())
        .unwrap()
        .iter()
        .flat_map(|p| storage::read_shard(p).unwrap())
        .collect();
    assert_eq!(
        rows.iter().find(|t| t.id == "item-000").unwrap().caption,
        "thing 0"
    );
    // A second run with the same input finds the completion marker and does nothing.
    let again = run(&mut mixed_source(20), &stages, &cfg).unwrap();
    let marker = again.finished_before.as_ref().expect("completion marker");
    assert_eq!((marker.rows, marker.failures), (14, 9));
    assert_eq!((again.read, again.written, again.failures()), (0, 0, 0));
    // Without the marker (a folder from before markers) the resume logic skips everything.
    std::fs::remove_file(dir.path().join(cfg.marker_name())).unwrap();
    let again = run(&mut mixed_source(20), &stages, &cfg).unwrap();
    assert_eq!((again.written, again.failures()), (0, 0));
    assert_eq!(again.already_done, 14 + 8);
    assert!(again.marker.is_some());
    assert_exactly_once_counted(dir.path(), &mixed_ids(20));
}

#[test]
fn invalid_utf8_in_a_text_file_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("captions.txt");
    std::fs::write(&input, b"a red kite\na \xff\xfe broken line\na lamp post\n").unwrap();
    let mut src = svgen_data::source::TextLines::open(&input).unwrap();
    let out = dir.path().join("out");
    let s = run(&mut src, &disc_stages(Duration::ZERO), &config(&out, 8)).unwrap();
    assert_eq!(s.written, 2);
    let fails = read_failures(&out).unwrap();
    assert_eq!(fails.len(), 1);
    assert_eq!(fails[0].id, "captions:2");
    assert_eq!(fails[0].stage, Stage::Source);
    assert!(fails[0].reason.contains("invalid UTF-8"));
}

#[test]
fn interrupted_runs_resume_exactly_once() {
    let expected = mixed_ids(25);
    for stop_after in [1usize, 4, 5, 9, 13] {
        let dir = tempfile::tempdir().unwrap();
        let stages = disc_stages(Duration::ZERO);
        let cfg = config(dir.path(), 4);
        let mut hook = |e: &Event| match e {
            Event::Written { total } if *total >= stop_after => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        };
        let err = run_with_hook(&mut mixed_source(25), &stages, &cfg, &mut hook).unwrap_err();
        assert!(matches!(err, DataError::Interrupted(_)));
        // Like a kill: the open shard is left as a .tmp file, never published.
        let published_rows: usize = output_ids(dir.path()).0.len();
        assert!(published_rows <= stop_after);
        run(&mut mixed_source(25), &stages, &cfg).unwrap();
        assert_exactly_once_counted(dir.path(), &expected);
    }
}

#[test]
fn a_shard_published_but_missing_from_the_manifest_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let stages = disc_stages(Duration::ZERO);
    let cfg = config(dir.path(), 4);
    let items = numbered(10);
    let expected: BTreeSet<String> = items.iter().map(|(i, _)| i.clone()).collect();
    // Stop right after the first shard is renamed into place, then drop its manifest line,
    // as if the process died between the rename and the manifest append.
    let mut hook = |e: &Event| match e {
        Event::Published(_) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    };
    run_with_hook(
        &mut VecSource::from_pairs("n", items.clone()),
        &stages,
        &cfg,
        &mut hook,
    )
    .unwrap_err();
    std::fs::remove_file(cfg.manifest_path()).unwrap();
    let s = run(&mut VecSource::from_pairs("n", items), &stages, &cfg).unwrap();
    assert_eq!(s.already_done, 4);
    assert_exactly_once(dir.path(), &expected);
}

/// A writer sink that fails with "No space left on device" after `budget` bytes.
struct FullDisk {
    inner: std::fs::File,
    budget: usize,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.budget {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.budget -= buf.len();
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl storage::ShardSink for FullDisk {
    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync_all()
    }
}

#[test]
fn a_full_disk_is_an_error_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let final_path = dir.path().join("part-x.parquet");
    let tmp = storage::tmp_path_for(&final_path);
    let opts = ShardOptions {
        rows_per_shard: 100,
        rows_per_row_group: 2,
        ..ShardOptions::default()
    };
    let sink = FullDisk {
        inner: std::fs::File::create(&tmp).unwrap(),
        budget: 3_000,
    };
    let mut w =
        storage::ShardWriter::with_sink(sink, tmp.clone(), final_path.clone(), &opts).unwrap();
    let mut err = None;
    for i in 0..50 {
        let t = svgen_data::Triplet {
            id: format!("r{i}"),
            source: "s".into(),
            caption: "c".into(),
            simplified: None,
            prompt: "p".into(),
            negative_prompt: None,
            generator: "g".into(),
            seed: Some(i),
            image: disc_png(32, 8.0),
            width: 32,
            height: 32,
            svg: "<svg/>".repeat(50),
            n_tokens: 5,
            tokenizer: "cl100k_base".into(),
            label: Label::Positive,
            clip_similarity: None,
            aesthetic: None,
            created_at: 0,
        };
        if let Err(e) = w.write(t) {
            err = Some(e);
            break;
        }
    }
    let err = match err {
        Some(e) => e,
        None => w.finish().unwrap_err(),
    };
    assert!(
        err.to_string().contains("No space left on device")
            || err.to_string().contains("os error 28"),
        "{err}"
    );
    assert!(!final_path.exists(), "a partial shard was published");
    assert!(!tmp.exists(), "the temporary file was not removed");
}

#[test]
fn network_stages_inside_a_run() {
    let png = disc_png(48, 12.0);
    let server = Server::start(move |req, _| {
        let body = req.json();
        if req.path.ends_with("/chat/completions") {
            let caption = body["messages"].as_array().unwrap().last().unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string();
            if caption.contains("brand") {
                chat_completion("NO")
            } else if caption.contains("garbled") {
                Reply::raw(200, "{not json")
            } else {
                chat_completion("a simple shape")
            }
        } else {
            image_response(&png)
        }
    });
    let ep = svgen_data::http::EndpointConfig {
        base_url: server.base_url.clone(),
        api_key_env: None,
        timeout: Duration::from_secs(5),
        retry: svgen_data::http::RetryPolicy {
            max_retries: 1,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
        max_response_bytes: svgen_data::http::MAX_RESPONSE_BYTES,
    };
    let stages = svgen_data::Stages {
        simplifier: Some(Box::new(
            svgen_data::simplify::ChatSimplifier::new(&ep, "gpt-4o-mini").unwrap(),
        )),
        template: svgen_data::prompt::PromptTemplate::flat_vector(),
        generator: Box::new(
            svgen_data::generate::OpenAiImages::new(&ep, "dall-e-3", "1024x1024").unwrap(),
        ),
        tracer: Box::new(svgen_data::stages::PotraceTracer::default()),
        counter: Box::new(svgen_data::stages::Cl100k::new()),
        clip: None,
        aesthetic: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let items = vec![
        ("a", "A big round red ball on the grass"),
        ("b", "brand new Acme(TM) sneakers 2-pack"),
        ("c", "garbled caption"),
        ("d", "A coin lying on a wooden desk"),
    ];
    let s = run(
        &mut VecSource::from_pairs("t", items),
        &stages,
        &config(dir.path(), 10),
    )
    .unwrap();
    assert_eq!(s.written, 2);
    let fails = read_failures(dir.path()).unwrap();
    let f = |id: &str| fails.iter().find(|f| f.id == id).unwrap();
    assert_eq!(f("b").kind, svgen_data::FailureKind::Rejected);
    assert_eq!(f("b").stage, Stage::Simplify);
    assert_eq!(f("c").kind, svgen_data::FailureKind::Protocol);
    let rows = storage::read_shard(&s.shards[0]).unwrap();
    assert!(rows
        .iter()
        .all(|t| t.simplified.as_deref() == Some("a simple shape")));
    assert!(rows
        .iter()
        .all(|t| t.prompt.starts_with("Minimal a simple shape")));
    assert!(rows
        .iter()
        .all(|t| t.generator == "dall-e-3" && t.seed.is_none()));
}

/// Not a test by itself: the body of the child process killed by
/// `a_killed_process_resumes_exactly_once` (run with `--ignored`).
#[test]
#[ignore = "child process of a_killed_process_resumes_exactly_once"]
fn child_worker() {
    let Ok(out) = std::env::var("SVGEN_DATA_CHILD_OUT") else {
        return;
    };
    let stages = disc_stages(Duration::from_millis(15));
    let cfg = config(Path::new(&out), 3);
    run(&mut mixed_source(60), &stages, &cfg).unwrap();
}

#[test]
fn a_killed_process_resumes_exactly_once() {
    let exe = std::env::current_exe().unwrap();
    for min_shards in [1usize, 3] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "child_worker",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("SVGEN_DATA_CHILD_OUT", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        loop {
            let n = storage::list_shards(dir.path()).unwrap().len();
            if n >= min_shards || t0.elapsed() > Duration::from_secs(60) {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("child ended before the kill: {status}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL: no destructor, no flush
        child.wait().unwrap();
        let (rows_before, _) = output_ids(dir.path());
        assert!(
            rows_before.len() < 46,
            "the child finished before it was killed"
        );
        let s = run(
            &mut mixed_source(60),
            &disc_stages(Duration::ZERO),
            &config(dir.path(), 3),
        )
        .unwrap();
        assert!(s.already_done > 0);
        assert_exactly_once_counted(dir.path(), &mixed_ids(60));
    }
}

/// CRC-32 (IEEE) of `bytes`, for patching PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid small PNG whose header claims `side`² pixels (a decompression bomb's header).
fn png_claiming(side: u32) -> Vec<u8> {
    let mut png = disc_png(16, 4.0);
    // Signature (8), IHDR length (4), "IHDR" (4), width (4), height (4), ... CRC after 13 bytes.
    png[16..20].copy_from_slice(&side.to_be_bytes());
    png[20..24].copy_from_slice(&side.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

struct BombGenerator;

impl svgen_data::generate::ImageGenerator for BombGenerator {
    fn name(&self) -> &str {
        "bomb-double"
    }
    fn generate(
        &self,
        req: &svgen_data::generate::GenerationRequest<'_>,
    ) -> Result<svgen_data::generate::GeneratedImage, svgen_data::StageError> {
        let bytes = if req.id.contains("bomb") {
            png_claiming(100_000)
        } else {
            disc_png(48, 10.0)
        };
        Ok(svgen_data::generate::GeneratedImage { bytes, seed: None })
    }
}

#[test]
fn oversized_images_fail_at_decode_and_the_run_continues() {
    assert_eq!(
        image::load_from_memory(&png_claiming(16)).unwrap().width(),
        16,
        "the patched header is a valid PNG"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut stages = disc_stages(Duration::ZERO);
    stages.generator = Box::new(BombGenerator);
    let mut cfg = config(dir.path(), 8);
    let items = vec![
        ("ok-1".to_string(), "a disc".to_string()),
        ("bomb-1".to_string(), "a huge disc".to_string()),
        ("ok-2".to_string(), "another disc".to_string()),
    ];
    let s = run(
        &mut VecSource::from_pairs("n", items.clone()),
        &stages,
        &cfg,
    )
    .unwrap();
    assert_eq!(s.written, 2);
    let fails = read_failures(dir.path()).unwrap();
    assert_eq!(fails.len(), 1, "{fails:?}");
    assert_eq!(
        (fails[0].id.as_str(), fails[0].stage),
        ("bomb-1", Stage::Decode)
    );
    assert!(fails[0].reason.contains("unreadable image"), "{fails:?}");
    // The pixel limit is the configured one: below 48² every image is refused.
    let dir2 = tempfile::tempdir().unwrap();
    cfg = config(dir2.path(), 8);
    cfg.decode_limits.max_pixels = 48 * 48 - 1;
    let s = run(&mut VecSource::from_pairs("n", items), &stages, &cfg).unwrap();
    assert_eq!((s.written, s.failures()), (0, 3));
}
