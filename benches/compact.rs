//! Compaction time per icon (`svgen::core::compact`) on the committed real icons
//! (`svgen-core/tests/data/icons`, Tabler MIT + MDI Apache-2.0).
//!
//! `cargo bench --no-default-features --bench compact`
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use svgen::core::compact::{compact, CompactOptions};
use svgen::core::Svg;

fn icons() -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("svgen-core/tests/data/icons");
    let mut out = Vec::new();
    for set in ["tabler", "mdi"] {
        let Ok(dir) = std::fs::read_dir(root.join(set)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "svg"))
            .collect();
        files.sort();
        for f in files {
            if let Ok(data) = std::fs::read(&f) {
                let name = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((format!("{set}/{name}"), data));
            }
        }
    }
    out
}

fn bench_compact(c: &mut Criterion) {
    let icons = icons();
    assert!(
        !icons.is_empty(),
        "no icons under svgen-core/tests/data/icons"
    );
    let parsed: Vec<(String, Svg)> = icons
        .iter()
        .filter_map(|(n, d)| Svg::parse(d).ok().map(|s| (n.clone(), s)))
        .collect();
    let opts = CompactOptions::default();

    let mut all = c.benchmark_group("compact_all_icons");
    all.throughput(Throughput::Elements(parsed.len() as u64));
    all.bench_function("compact", |b| {
        b.iter(|| {
            for (_, s) in &parsed {
                std::hint::black_box(compact(s, &opts));
            }
        })
    });
    all.bench_function("parse_and_compact", |b| {
        b.iter(|| {
            for (_, d) in &icons {
                if let Ok(s) = Svg::parse(d) {
                    std::hint::black_box(compact(&s, &opts));
                }
            }
        })
    });
    all.finish();

    let mut per = c.benchmark_group("compact_per_icon");
    for (name, s) in parsed.iter().take(4) {
        per.bench_with_input(BenchmarkId::from_parameter(name), s, |b, s| {
            b.iter(|| compact(s, &opts))
        });
    }
    per.finish();
}

criterion_group!(benches, bench_compact);
criterion_main!(benches);
