//! Batch-tracing throughput on real rasterised icons, 1 thread versus N threads.
//!
//! ```text
//! tools/vtracer_bench/fetch.sh            # prints the tabler outline icon directory
//! cargo run --release --example trace_batch --no-default-features --features trace -- \
//!     target/trace-bench-data/tabler/package/icons/outline --count 1000 --size 256
//! ```
//!
//! The icons (sorted by name, the first `--count`) are rendered with svgen-core at
//! `--size`² pixels and encoded as PNG once, up front. Each timed run then calls
//! [`trace_batch`] on the PNG bytes: decode → potrace threshold → trace → SVG text, on a rayon
//! pool of 1 and of `--threads` threads. Runs alternate between the thread counts; the median
//! of `--runs` is reported, with the process CPU time per run (on a busy shared machine the
//! wall-clock ratio reflects the other load; the CPU-time ratio shows the parallel overhead).

use std::io::Cursor;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use svgen::core::render::{render, RenderOptions};
use svgen::core::Svg;
use svgen::trace::batch::{trace_batch_with, BatchOptions};
use svgen::trace::{trace, SvgOptions};

#[derive(Parser)]
struct Args {
    /// Directory of SVG icons.
    dir: PathBuf,
    /// Number of icons.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Raster side in pixels.
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Thread count compared with 1.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed runs per thread count.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat` (Linux;
/// `None` elsewhere). On a shared machine the wall-clock scaling depends on the other load,
/// but equal CPU time for 1 and N threads shows the batch adds no parallel overhead.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        .collect();
    files.sort();
    files.truncate(args.count);
    let opts = RenderOptions::square(args.size);
    let pngs: Vec<Vec<u8>> = files
        .iter()
        .map(|f| -> Result<Vec<u8>, Box<dyn std::error::Error>> {
            let svg = Svg::parse(&std::fs::read(f)?)?;
            let img = render(&svg, &opts);
            let mut out = Cursor::new(Vec::new());
            image::DynamicImage::ImageRgba8(img).write_to(&mut out, image::ImageFormat::Png)?;
            Ok(out.into_inner())
        })
        .collect::<Result<_, _>>()?;
    println!(
        "{} icons from {}, {}x{} px",
        pngs.len(),
        args.dir.display(),
        args.size,
        args.size
    );
    let run = |threads: usize| -> Result<(f64, f64, usize), Box<dyn std::error::Error>> {
        let o = BatchOptions {
            threads,
            ..Default::default()
        };
        let c = cpu_seconds();
        let t = Instant::now();
        let out = trace_batch_with(&pngs, &o, |bm, p| {
            Ok(trace(bm, p)?.to_svg(&SvgOptions::default()).len())
        })?;
        let secs = t.elapsed().as_secs_f64();
        let cpu = match (c, cpu_seconds()) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        let bytes = out.into_iter().collect::<Result<Vec<_>, _>>()?.iter().sum();
        Ok((secs, cpu, bytes))
    };
    run(args.threads)?; // warm-up
    let (mut t1, mut tn, mut c1, mut cn) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut check = None;
    for _ in 0..args.runs {
        let (s, c, b1) = run(1)?;
        t1.push(s);
        c1.push(c);
        let (s, c, bn) = run(args.threads)?;
        tn.push(s);
        cn.push(c);
        assert_eq!(b1, bn, "results differ between thread counts");
        check = Some(b1);
    }
    let (m1, mn) = (median(t1), median(tn));
    let (cpu1, cpun) = (median(c1), median(cn));
    let n = pngs.len() as f64;
    println!("SVG output: {} bytes in total", check.unwrap_or(0));
    println!("1 thread:  median {:.3} s = {:.0} icons/s", m1, n / m1);
    println!(
        "{} threads: median {:.3} s = {:.0} icons/s",
        args.threads,
        mn,
        n / mn
    );
    println!("scaling {}→1: {:.2}x", args.threads, m1 / mn);
    println!(
        "CPU time per run: 1 thread {cpu1:.2} s, {} threads {cpun:.2} s (parallel efficiency {:.2})",
        args.threads,
        cpu1 / cpun
    );
    Ok(())
}
