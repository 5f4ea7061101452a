//! Compares `svgen::core::compact` with svgo's output on a directory of real icons: total
//! cl100k tokens (original / ours / svgo) and visual equality of every output (ink IoU against
//! the original, both rendered at `--size` px).
//!
//! `tools/bench_compact/run.sh` fetches the icons, runs svgo and then this example:
//!
//! ```text
//! cargo run --release --no-default-features --example compact_vs_svgo -- \
//!     --original ORIG_DIR --svgo SVGO_DIR [--size 256] [--min-iou 0.99]
//! ```
use std::path::{Path, PathBuf};

use clap::Parser;
use rayon::prelude::*;
use svgen::core::compact::{compact, CompactOptions};
use svgen::core::{compare_svgs, Cl100k, Svg, TokenCounter};

#[derive(Parser)]
#[command(about = "Token counts and visual equality: svgen compact vs svgo")]
struct Args {
    /// Directory tree of original SVG files.
    #[arg(long)]
    original: PathBuf,
    /// Directory tree with svgo's output under the same relative names.
    #[arg(long)]
    svgo: PathBuf,
    /// Render size for the visual check.
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Minimum ink IoU against the original for an output to count as visually equal.
    #[arg(long, default_value_t = 0.99)]
    min_iou: f64,
    /// Print one line per icon.
    #[arg(long)]
    verbose: bool,
}

struct Row {
    name: String,
    original: usize,
    ours: usize,
    svgo: Option<usize>,
    ours_iou: f64,
    svgo_iou: Option<f64>,
    secs: f64,
}

fn svg_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            svg_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "svg") {
            out.push(p);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut files = Vec::new();
    svg_files(&args.original, &mut files)?;
    files.sort();
    let counter = Cl100k::new();
    let opts = CompactOptions::default();
    let rows: Vec<Result<Row, String>> = files
        .par_iter()
        .map(|f| {
            let rel = f.strip_prefix(&args.original).map_err(|e| e.to_string())?;
            let name = rel.display().to_string();
            let src = std::fs::read(f).map_err(|e| format!("{name}: {e}"))?;
            let text = String::from_utf8_lossy(&src);
            let orig = Svg::parse(&src).map_err(|e| format!("{name}: {e}"))?;
            let t0 = std::time::Instant::now();
            let ours_text = compact(&orig, &opts);
            let secs = t0.elapsed().as_secs_f64();
            let ours_iou = match Svg::parse(ours_text.as_bytes()) {
                Ok(o) => compare_svgs(&orig, &o, args.size).ink_iou,
                Err(_) => 0.0,
            };
            let (svgo, svgo_iou) = match std::fs::read(args.svgo.join(rel)) {
                Ok(s) => {
                    let iou = match Svg::parse(&s) {
                        Ok(o) => compare_svgs(&orig, &o, args.size).ink_iou,
                        Err(_) => 0.0,
                    };
                    (Some(counter.count(&String::from_utf8_lossy(&s))), Some(iou))
                }
                Err(_) => (None, None),
            };
            Ok(Row {
                name,
                original: counter.count(&text),
                ours: counter.count(&ours_text),
                svgo,
                ours_iou,
                svgo_iou,
                secs,
            })
        })
        .collect();
    let (mut n, mut t_orig, mut t_ours, mut t_svgo) = (0usize, 0usize, 0usize, 0usize);
    let (mut ours_fail, mut svgo_fail, mut skipped) = (Vec::new(), Vec::new(), 0usize);
    let mut worst_ours = (f64::INFINITY, String::new());
    let mut secs = 0.0;
    for r in rows {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                eprintln!("skipped (original does not parse): {e}");
                skipped += 1;
                continue;
            }
        };
        let Some(svgo) = r.svgo else {
            eprintln!("skipped (no svgo output): {}", r.name);
            skipped += 1;
            continue;
        };
        n += 1;
        secs += r.secs;
        t_orig += r.original;
        t_ours += r.ours;
        t_svgo += svgo;
        if r.ours_iou < worst_ours.0 {
            worst_ours = (r.ours_iou, r.name.clone());
        }
        if r.ours_iou < args.min_iou {
            ours_fail.push((r.name.clone(), r.ours_iou));
        }
        if r.svgo_iou.unwrap_or(0.0) < args.min_iou {
            svgo_fail.push((r.name.clone(), r.svgo_iou.unwrap_or(0.0)));
        }
        if args.verbose {
            println!(
                "{}\t{}\t{}\t{}\t{:.4}\t{:.4}",
                r.name,
                r.original,
                r.ours,
                svgo,
                r.ours_iou,
                r.svgo_iou.unwrap_or(0.0)
            );
        }
    }
    println!("icons\t{n}\t(skipped {skipped})");
    println!("tokens original\t{t_orig}");
    println!(
        "tokens svgo\t{t_svgo}\t({:.3}x original)",
        t_svgo as f64 / t_orig.max(1) as f64
    );
    println!(
        "tokens ours\t{t_ours}\t({:.3}x original, {:.3}x svgo)",
        t_ours as f64 / t_orig.max(1) as f64,
        t_ours as f64 / t_svgo.max(1) as f64
    );
    println!(
        "visual failures (ink IoU < {} at {} px): ours {} / svgo {}",
        args.min_iou,
        args.size,
        ours_fail.len(),
        svgo_fail.len()
    );
    println!(
        "compact time\t{:.1} us/icon (sum over icons of single-threaded compact calls)",
        secs / n.max(1) as f64 * 1e6
    );
    println!("worst ours IoU\t{:.4}\t{}", worst_ours.0, worst_ours.1);
    for (name, iou) in &ours_fail {
        println!("ours failed\t{iou:.4}\t{name}");
    }
    for (name, iou) in svgo_fail.iter().take(20) {
        println!("svgo failed\t{iou:.4}\t{name}");
    }
    if !ours_fail.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
