//! Criterion benches for svgen-trace, one group per Potrace stage, on a 1000×1000 smooth
//! silhouette with holes and a 600×600 thresholded noise field (many small paths).
//!
//! ```text
//! cargo bench --bench trace
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use svgen::trace::decompose::{decompose, RawPath};
use svgen::trace::{curve, polygon, trace, Bitmap, SvgOptions, TraceParams, TurnPolicy};

fn silhouette(side: u32) -> Bitmap {
    let s = f64::from(side);
    let blobs = [
        (0.35, 0.40, 0.22),
        (0.62, 0.55, 0.25),
        (0.45, 0.72, 0.15),
        (0.70, 0.28, 0.12),
    ];
    Bitmap::from_fn(side, side, |x, y| {
        let (px, py) = ((f64::from(x) + 0.5) / s, (f64::from(y) + 0.5) / s);
        let f: f64 = blobs
            .iter()
            .map(|&(cx, cy, r)| (-((px - cx).powi(2) + (py - cy).powi(2)) / (r * r)).exp())
            .sum();
        let hole = ((px - 0.62).powi(2) + (py - 0.55).powi(2)).sqrt();
        f > 0.6 && !(0.05..0.1).contains(&hole)
    })
    .expect("bitmap")
}

fn noise(side: u32) -> Bitmap {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut cells = vec![false; (side / 4 * (side / 4)) as usize + side as usize];
    for c in cells.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *c = state & 1 == 0;
    }
    let w = side / 4;
    Bitmap::from_fn(side, side, |x, y| cells[(y / 4 * w + x / 4) as usize]).expect("bitmap")
}

/// The fitting stages on every path of a decomposition.
fn polygons(paths: &[RawPath]) -> Vec<Vec<polygon::P2>> {
    paths
        .iter()
        .map(|p| {
            let sums = polygon::Sums::new(&p.points);
            let lon = polygon::calc_lon(&p.points);
            let po = polygon::best_polygon(&p.points, &sums, &lon);
            polygon::adjust_vertices(&p.points, &sums, &po)
        })
        .collect()
}

fn stages(c: &mut Criterion) {
    let params = TraceParams::default();
    for (name, bm) in [
        ("silhouette-1000", silhouette(1000)),
        ("noise-600", noise(600)),
    ] {
        let mut g = c.benchmark_group(format!("trace/{name}"));
        g.sample_size(20);
        let raw = decompose(&bm, params.turdsize, TurnPolicy::Minority);
        let verts = polygons(&raw);
        let smoothed: Vec<curve::Curve> = verts.iter().map(|v| curve::smooth(v, 1.0)).collect();
        g.bench_function(BenchmarkId::new("decompose", name), |b| {
            b.iter(|| decompose(&bm, params.turdsize, TurnPolicy::Minority))
        });
        g.bench_function(BenchmarkId::new("polygon+adjust", name), |b| {
            b.iter(|| polygons(&raw))
        });
        g.bench_function(BenchmarkId::new("smooth", name), |b| {
            b.iter(|| {
                verts
                    .iter()
                    .map(|v| curve::smooth(v, 1.0))
                    .collect::<Vec<_>>()
            })
        });
        g.bench_function(BenchmarkId::new("opticurve", name), |b| {
            b.iter(|| {
                smoothed
                    .iter()
                    .map(|c| curve::optimize(c, 0.2))
                    .collect::<Vec<_>>()
            })
        });
        let list = trace(&bm, &params).expect("trace");
        g.bench_function(BenchmarkId::new("to_svg", name), |b| {
            b.iter(|| list.to_svg(&SvgOptions::default()))
        });
        g.bench_function(BenchmarkId::new("trace (all stages)", name), |b| {
            b.iter(|| trace(&bm, &params).expect("trace"))
        });
        g.finish();
    }
}

criterion_group!(benches, stages);
criterion_main!(benches);
