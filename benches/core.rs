//! Criterion benches for svgen-core: token counting, parsing and rendering, on the 44 real
//! Tabler icons committed under `svgen-data/assets/tabler-icons` (MIT).
//!
//! ```text
//! cargo bench --bench core
//! ```
//!
//! * `tokens/cl100k_count` counts every icon on one thread; `tokens/cl100k_count_batch` uses all
//!   cores. Throughput is in cl100k tokens ("elements"/s).
//! * `parse/icons` and `render/icons_256px` process all icons; throughput is in icons/s, so the
//!   time per icon is the reciprocal.

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use svgen::core::{render, Cl100k, RenderOptions, Svg, TokenCounter};

fn icons() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "svg") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("svgen-data/assets/tabler-icons");
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    paths.sort();
    assert!(!paths.is_empty(), "no icons under {}", root.display());
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("icon is UTF-8");
            (p, text)
        })
        .collect()
}

fn bench_tokens(c: &mut Criterion) {
    let icons = icons();
    let texts: Vec<&str> = icons.iter().map(|(_, t)| t.as_str()).collect();
    let tok = Cl100k::new();
    let total: usize = texts.iter().map(|t| tok.count(t)).sum();
    let mut g = c.benchmark_group("tokens");
    g.throughput(Throughput::Elements(total as u64));
    g.bench_function("cl100k_count", |b| {
        b.iter(|| texts.iter().map(|t| tok.count(t)).sum::<usize>())
    });
    g.bench_function("cl100k_count_batch", |b| {
        b.iter(|| tok.count_batch(&texts).into_iter().sum::<usize>())
    });
    g.finish();
}

fn bench_parse_render(c: &mut Criterion) {
    let icons = icons();
    let svgs: Vec<Svg> = icons
        .iter()
        .map(|(p, t)| Svg::parse(t.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(icons.len() as u64));
    g.bench_function("icons", |b| {
        b.iter(|| {
            icons
                .iter()
                .map(|(_, t)| {
                    Svg::parse(t.as_bytes())
                        .map(|s| s.stats().paths)
                        .unwrap_or(0)
                })
                .sum::<usize>()
        })
    });
    g.finish();

    let opts = RenderOptions::square(256);
    let mut g = c.benchmark_group("render");
    g.throughput(Throughput::Elements(svgs.len() as u64));
    g.bench_function("icons_256px", |b| {
        b.iter(|| svgs.iter().map(|s| render(s, &opts).len()).sum::<usize>())
    });
    g.finish();
}

criterion_group!(benches, bench_tokens, bench_parse_render);
criterion_main!(benches);
