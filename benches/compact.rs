//! Compaction time per icon (`svgen::core::compact`) on the committed real icons
//! (`svgen-core/tests/data/icons`, Tabler MIT + MDI Apache-2.0, and the regression sample in
//! `svgen-core/tests/data/compact_regression`), with the default rendering check and without
//! it (`verify: None`), and with a fixed precision.
//!
//! `cargo bench --no-default-features --bench compact`
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use svgen::core::compact::{compact, CompactOptions, Precision};
use svgen::core::Svg;

/// Every `*.svg` one level below `root`, named `set/stem`, sorted.
fn icons_under(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(sets) = std::fs::read_dir(root) else {
        return out;
    };
    let mut sets: Vec<PathBuf> = sets
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    for set in sets {
        let Ok(dir) = std::fs::read_dir(&set) else {
            continue;
        };
        let mut files: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "svg"))
            .collect();
        files.sort();
        let set_name = set
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for f in files {
            if let Ok(data) = std::fs::read(&f) {
                let name = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((format!("{set_name}/{name}"), data));
            }
        }
    }
    out
}

fn bench_compact(c: &mut Criterion) {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("svgen-core/tests/data");
    let mut icons = icons_under(&data.join("icons"));
    icons.extend(icons_under(&data.join("compact_regression")));
    assert!(
        !icons.is_empty(),
        "no icons under svgen-core/tests/data/{{icons,compact_regression}}"
    );
    let parsed: Vec<(String, Svg)> = icons
        .iter()
        .filter_map(|(n, d)| Svg::parse(d).ok().map(|s| (n.clone(), s)))
        .collect();
    let options = [
        ("default", CompactOptions::default()),
        (
            "no_verify",
            CompactOptions {
                verify: None,
                ..CompactOptions::default()
            },
        ),
        (
            "decimals_2",
            CompactOptions {
                precision: Precision::Decimals(2),
                ..CompactOptions::default()
            },
        ),
    ];

    let mut all = c.benchmark_group("compact_all_icons");
    all.throughput(Throughput::Elements(parsed.len() as u64));
    for (label, opts) in &options {
        all.bench_function(*label, |b| {
            b.iter(|| {
                for (_, s) in &parsed {
                    std::hint::black_box(compact(s, opts));
                }
            })
        });
    }
    all.bench_function("parse_and_compact", |b| {
        b.iter(|| {
            for (_, d) in &icons {
                if let Ok(s) = Svg::parse(d) {
                    std::hint::black_box(compact(&s, &options[0].1));
                }
            }
        })
    });
    all.finish();

    let mut per = c.benchmark_group("compact_per_icon");
    for (name, s) in parsed.iter().take(4) {
        per.bench_with_input(BenchmarkId::from_parameter(name), s, |b, s| {
            b.iter(|| compact(s, &options[0].1))
        });
    }
    per.finish();
}

criterion_group!(benches, bench_compact);
criterion_main!(benches);
