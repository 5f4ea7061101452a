//! svgen-data throughput: decode + normalise + trace + count + write of 512 px images.
//!
//! `cargo bench --bench data` runs the CPU part of the pipeline (the generator hands out
//! pre-encoded 512×512 PNGs of the 44 embedded icons, six copies each, a quarter light-on-dark)
//! with 1 and 2 CPU workers; criterion reports elements/s = triplets/s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use svgen::data::generate::{GeneratedImage, GenerationRequest, ImageGenerator};
use svgen::data::source::VecSource;
use svgen::data::stages::{Cl100k, PotraceTracer};
use svgen::data::{PipelineConfig, StageError, Stages};

/// Images generated beforehand, handed out by id (so only the CPU stages are measured).
struct Pregenerated(HashMap<String, Vec<u8>>);

impl ImageGenerator for Pregenerated {
    fn name(&self) -> &str {
        "pregenerated"
    }
    fn generate(&self, r: &GenerationRequest<'_>) -> Result<GeneratedImage, StageError> {
        self.0
            .get(r.id)
            .map(|b| GeneratedImage {
                bytes: b.clone(),
                seed: None,
            })
            .ok_or_else(|| StageError::bad_input("unknown id"))
    }
}

/// Copies of each default-job image in one pipeline run.
const COPIES: usize = 6;

fn images(side: u32) -> (Vec<(String, String)>, Pregenerated) {
    let render = svgen::data::default_job::image_source(side, 4);
    let mut src = svgen::data::default_job::caption_source();
    let mut captions = Vec::new();
    let mut map = HashMap::new();
    use svgen::data::source::CaptionSource;
    while let Some(Ok(c)) = src.next_record() {
        let req = GenerationRequest {
            id: &c.id,
            prompt: "",
            negative_prompt: "",
            seed: 0,
            source_image: None,
        };
        let img = render.generate(&req).expect("render");
        // Several copies of the 44 images (distinct ids), so that the per-run fixed costs
        // (threads, directories, fsync of shard and manifest) do not dominate the measurement.
        for rep in 0..COPIES {
            let id = format!("{}-{rep}", c.id);
            map.insert(id.clone(), img.bytes.clone());
            captions.push((id, c.text.clone()));
        }
    }
    (captions, Pregenerated(map))
}

fn bench(c: &mut Criterion) {
    let (captions, generator) = images(512);
    let stages = Stages {
        simplifier: None,
        template: svgen::data::prompt::PromptTemplate::silhouette(),
        generator: Box::new(generator),
        tracer: Box::new(PotraceTracer::default()),
        counter: Box::new(Cl100k::new()),
        clip: None,
        aesthetic: None,
    };
    let root: PathBuf =
        std::env::temp_dir().join(format!("svgen-data-bench-{}", std::process::id()));
    let mut group = c.benchmark_group("pipeline_512px");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(captions.len() as u64));
    for threads in [1usize, 2] {
        group.bench_with_input(
            BenchmarkId::new("cpu_workers", threads),
            &threads,
            |b, &threads| {
                b.iter(|| {
                    let _ = std::fs::remove_dir_all(&root);
                    let mut cfg = PipelineConfig::new(&root);
                    cfg.cpu_workers = threads;
                    cfg.network_workers = 1;
                    let mut src = VecSource::from_pairs("bench", captions.clone());
                    let s = svgen::data::run(&mut src, &stages, &cfg).expect("run");
                    assert_eq!(s.written, captions.len());
                })
            },
        );
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&root);
}

criterion_group!(benches, bench);
criterion_main!(benches);
