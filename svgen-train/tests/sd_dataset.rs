//! `build_dataset --generator sd|flux` end to end on the committed tiny pipelines: the in-process
//! generator (built from the same `InProcessOptions` the example takes) inside svgen-data's
//! dataset pipeline, batched, with the thesis' prompt template; a run stopped after 4 samples and
//! resumed, a fresh run and a run in two shards make the same image for every id; a generator
//! failure on one sample goes to `failures.jsonl` and the run continues. FLUX runs the same way
//! with its thesis template, freeing its text encoders after each batch's encoding.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use svgen_data::generate::{GeneratedImage, GenerationRequest, ImageGenerator};
use svgen_data::prompt::PromptTemplate;
use svgen_data::sample::seed_for_id;
use svgen_data::source::VecSource;
use svgen_data::stages::{Cl100k, PotraceTracer};
use svgen_data::storage::{list_shards, read_json_lines, read_shard};
use svgen_data::{PipelineConfig, RunSummary, ShardSpec, Stage, StageError, Stages};
use svgen_train::diffusion::{InProcessOptions, SchedulerKind};
use svgen_train::flux::FluxImageGenerator;
use svgen_train::sd::SdImageGenerator;
use svgen_train::CpuBackend;

type B = CpuBackend;

const CAPTIONS: [(&str, &str); 6] = [
    ("c1", "a cat"),
    ("c2", "a house with a chimney"),
    ("c3", "a tree"),
    ("c4", "a bicycle"),
    ("c5", "a fish"),
    ("c6", "a star"),
];

fn tiny_sd() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/tiny-sd")
}

fn options() -> InProcessOptions {
    InProcessOptions {
        scheduler: Some(SchedulerKind::Ddim),
        steps: Some(2),
        width: Some(32),
        height: Some(32),
        batch: 2,
        ..InProcessOptions::new(tiny_sd())
    }
}

fn generator() -> SdImageGenerator<B> {
    SdImageGenerator::from_options(&options(), None, &Default::default()).expect("tiny-sd loads")
}

fn stages(generator: Box<dyn ImageGenerator>) -> Stages {
    stages_with(generator, PromptTemplate::thesis_sd())
}

fn stages_with(generator: Box<dyn ImageGenerator>, template: PromptTemplate) -> Stages {
    Stages {
        simplifier: None,
        template,
        generator,
        tracer: Box::new(PotraceTracer::default()),
        counter: Box::new(Cl100k::new()),
        clip: None,
        aesthetic: None,
    }
}

fn run(out: &Path, stages: &Stages, limit: Option<usize>, shard: ShardSpec) -> RunSummary {
    let mut cfg = PipelineConfig::new(out);
    cfg.network_workers = 2;
    cfg.cpu_workers = 1;
    cfg.limit = limit;
    cfg.shard = shard;
    let mut source = VecSource::from_pairs("captions", CAPTIONS);
    svgen_data::run(&mut source, stages, &cfg).expect("the run completes")
}

/// (prompt, negative prompt, seed, generator, stored image) of a triplet.
type Row = (String, Option<String>, Option<i64>, String, Vec<u8>);

/// id → [`Row`] of every triplet in `dir`.
fn triplets(dir: &Path) -> BTreeMap<String, Row> {
    let mut out = BTreeMap::new();
    for shard in list_shards(dir).unwrap() {
        for t in read_shard(shard).unwrap() {
            let prev = out.insert(
                t.id,
                (t.prompt, t.negative_prompt, t.seed, t.generator, t.image),
            );
            assert!(prev.is_none(), "an id written twice");
        }
    }
    out
}

#[test]
fn sd_generator_builds_a_dataset_through_resume_and_resharding() {
    let tmp = tempfile::tempdir().unwrap();
    let resumed = tmp.path().join("resumed");
    let gen = generator();
    let stats = gen.stats_handle();
    let st = stages(Box::new(gen));
    let first = run(&resumed, &st, Some(4), ShardSpec::default());
    assert_eq!(first.written, 4, "{first}");
    let second = run(&resumed, &st, None, ShardSpec::default());
    assert_eq!((second.already_done, second.written), (4, 2), "{second}");
    let s = stats.get();
    assert_eq!((s.images, s.failed), (6, 0));
    // Concurrent requests from the two workers were batched.
    assert!(s.batches < s.images, "{s}");

    let got = triplets(&resumed);
    assert_eq!(got.len(), 6);
    let template = PromptTemplate::thesis_sd();
    for (id, caption) in CAPTIONS {
        let (prompt, negative, seed, name, _) = &got[id];
        let want = template.render(caption);
        assert_eq!(prompt, &want.prompt);
        assert_eq!(negative.as_deref(), Some(want.negative_prompt.as_str()));
        assert_eq!(
            *seed,
            Some(seed_for_id(id) as i64),
            "one seed per sample id"
        );
        assert_eq!(name, "stable-diffusion");
    }

    // A fresh run, and two shard workers sharing a folder, make the same image for every id.
    let fresh = tmp.path().join("fresh");
    run(
        &fresh,
        &stages(Box::new(generator())),
        None,
        ShardSpec::default(),
    );
    let sharded = tmp.path().join("sharded");
    let st = stages(Box::new(generator()));
    for index in 0..2 {
        run(&sharded, &st, None, ShardSpec { index, count: 2 });
    }
    for other in [triplets(&fresh), triplets(&sharded)] {
        assert_eq!(other.len(), 6);
        for (id, t) in &got {
            assert_eq!(other[id].4, t.4, "{id}: same image");
        }
    }
}

/// The SD generator, failing for one sample id.
struct FailOn {
    inner: SdImageGenerator<B>,
    id: &'static str,
}

impl ImageGenerator for FailOn {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn generate(&self, request: &GenerationRequest<'_>) -> Result<GeneratedImage, StageError> {
        if request.id == self.id {
            return Err(StageError::internal("out of memory (simulated)"));
        }
        self.inner.generate(request)
    }
}

#[test]
fn a_failed_sample_goes_to_failures_jsonl_and_the_run_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let st = stages(Box::new(FailOn {
        inner: generator(),
        id: "c3",
    }));
    // Stopped after 4 inputs (c3 among them), then resumed.
    let summary = run(tmp.path(), &st, Some(4), ShardSpec::default());
    assert_eq!(summary.written, 3, "{summary}");
    assert_eq!(summary.failures(), 1);
    let failures: Vec<svgen_data::pipeline::FailureRecord> =
        read_json_lines(&summary.failures_path).unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].id, "c3");
    assert_eq!(failures[0].stage, Stage::Generate);
    assert!(failures[0].reason.contains("simulated"));
    // Resuming skips the failed id too and finishes the rest.
    let again = run(tmp.path(), &st, None, ShardSpec::default());
    assert_eq!((again.written, again.already_done), (2, 4), "{again}");
    assert_eq!(triplets(tmp.path()).len(), 5);
    let failures: Vec<svgen_data::pipeline::FailureRecord> =
        read_json_lines(&again.failures_path).unwrap();
    assert_eq!(failures.len(), 1, "c3 was not tried again");
    // A finished worker has nothing left to do.
    let done = run(tmp.path(), &st, None, ShardSpec::default());
    assert!(done.finished_before.is_some(), "{done}");
    assert_eq!(done.written, 0);
}

#[test]
fn options_stable_diffusion_does_not_take_are_refused_by_name() {
    for (options, name) in [
        (
            InProcessOptions {
                true_cfg_scale: Some(2.0),
                ..options()
            },
            "true_cfg_scale",
        ),
        (
            InProcessOptions {
                max_sequence_length: Some(77),
                ..options()
            },
            "max_sequence_length",
        ),
    ] {
        let err =
            SdImageGenerator::<B>::from_options(&options, None, &Default::default()).unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
    }
    // FLUX's sampler and impossible settings fail at construction, before any sample.
    for bad in [
        InProcessOptions {
            scheduler: Some(SchedulerKind::FlowMatchEuler),
            ..options()
        },
        InProcessOptions {
            width: Some(30),
            ..options()
        },
    ] {
        assert!(SdImageGenerator::<B>::from_options(&bad, None, &Default::default()).is_err());
    }
}

fn flux_generator() -> FluxImageGenerator<B> {
    let options = InProcessOptions {
        steps: Some(2),
        width: Some(32),
        height: Some(48),
        batch: 2,
        max_sequence_length: Some(12),
        free_text_encoders: true,
        ..InProcessOptions::new(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flux/tiny-flux"),
        )
    };
    FluxImageGenerator::from_options(&options, None, &Default::default()).expect("tiny-flux loads")
}

#[test]
fn flux_generator_builds_a_dataset_through_resume_with_freed_encoders() {
    let tmp = tempfile::tempdir().unwrap();
    let resumed = tmp.path().join("resumed");
    let gen = flux_generator();
    let stats = gen.stats_handle();
    let st = stages_with(Box::new(gen), PromptTemplate::thesis_flux());
    let first = run(&resumed, &st, Some(3), ShardSpec::default());
    assert_eq!(first.written, 3, "{first}");
    let second = run(&resumed, &st, None, ShardSpec::default());
    assert_eq!((second.already_done, second.written), (3, 3), "{second}");
    let s = stats.get();
    assert_eq!((s.images, s.failed), (6, 0), "{s}");
    // The thesis template is longer than 12 T5 tokens: every prompt was cut, and reported.
    assert_eq!(s.truncated, 6, "{s}");
    assert!(s.to_string().contains("t5 (12 tokens)"), "{s}");

    let got = triplets(&resumed);
    assert_eq!(got.len(), 6);
    let template = PromptTemplate::thesis_flux();
    for (id, caption) in CAPTIONS {
        let (prompt, negative, seed, name, image) = &got[id];
        let want = template.render(caption);
        assert_eq!(prompt, &want.prompt);
        assert_eq!(negative.as_deref(), Some(want.negative_prompt.as_str()));
        assert_eq!(*seed, Some(seed_for_id(id) as i64));
        assert_eq!(name, "flux");
        let png = image::load_from_memory(image).unwrap();
        assert_eq!((png.width(), png.height()), (32, 48));
    }
    // A fresh run with the encoders kept makes the same images.
    let fresh = tmp.path().join("fresh");
    let options = InProcessOptions {
        steps: Some(2),
        width: Some(32),
        height: Some(48),
        batch: 3,
        max_sequence_length: Some(12),
        ..InProcessOptions::new(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flux/tiny-flux"),
        )
    };
    let keep = FluxImageGenerator::<B>::from_options(&options, None, &Default::default()).unwrap();
    run(
        &fresh,
        &stages_with(Box::new(keep), PromptTemplate::thesis_flux()),
        None,
        ShardSpec::default(),
    );
    let other = triplets(&fresh);
    assert_eq!(other.len(), 6);
    for (id, t) in &got {
        assert_eq!(other[id].4, t.4, "{id}: same image");
    }
}
