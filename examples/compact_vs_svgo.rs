//! Compares `svgen::core::compact` with svgo's output on directories of real icons, per icon
//! set: total cl100k tokens (original / ours / svgo), the ratio ours/svgo, and the visual
//! equality of EVERY output against the original, both rendered at `--size` px: ink IoU (at
//! least `--min-iou`) and colour (largest per-channel mean absolute error at most
//! `--max-colour-mae`).
//!
//! `tools/bench_compact/run.sh` fetches the icon sets, runs svgo and then this example:
//!
//! ```text
//! cargo run --release --no-default-features --example compact_vs_svgo -- \
//!     --original ORIG_DIR --svgo SVGO_DIR [--size 256] [--min-iou 0.99] [--max-colour-mae 0.01]
//! ```
//!
//! Every first-level directory of `ORIG_DIR` is one set (files directly in `ORIG_DIR` form the
//! set `.`). The exit status is 1 when any of our outputs is not visually equal to its original,
//! or when `--max-ratio R` is given and a set's ratio ours/svgo exceeds it.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use rayon::prelude::*;
use svgen::core::compact::{compact, CompactOptions};
use svgen::core::{compare_svgs, Cl100k, Svg, TokenCounter};

#[derive(Parser)]
#[command(about = "Token counts and visual equality per icon set: svgen compact vs svgo")]
struct Args {
    /// Directory tree of original SVG files, one subdirectory per set.
    #[arg(long)]
    original: PathBuf,
    /// Directory tree with svgo's output under the same relative names.
    #[arg(long)]
    svgo: PathBuf,
    /// Render size of the visual check.
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Minimum ink IoU against the original for an output to count as visually equal.
    #[arg(long, default_value_t = 0.99)]
    min_iou: f64,
    /// Maximum colour error (largest per-channel mean absolute error, in [0, 1]).
    #[arg(long, default_value_t = 0.01)]
    max_colour_mae: f64,
    /// Fail when a set's ratio of tokens ours/svgo exceeds this.
    #[arg(long)]
    max_ratio: Option<f64>,
    /// Write our outputs under this directory (same relative names).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also print, per set, where the tokens of ours and svgo go: path data, other attribute
    /// values, markup (tags, attribute names, quotes).
    #[arg(long)]
    breakdown: bool,
    /// Print one line per icon: set/name, tokens original/ours/svgo, IoU and colour MAE of
    /// ours and svgo.
    #[arg(long)]
    verbose: bool,
}

struct Row {
    set: String,
    name: String,
    original: usize,
    ours: usize,
    svgo: Option<usize>,
    ours_iou: f64,
    ours_colour: f64,
    svgo_iou: f64,
    svgo_colour: f64,
    secs: f64,
    ours_parts: [usize; 3],
    svgo_parts: [usize; 3],
}

/// Tokens of path data, of other attribute values and of the rest (markup), counted piece by
/// piece (the pieces' sum differs slightly from the whole's count).
fn breakdown(counter: &Cl100k, text: &str) -> [usize; 3] {
    let (mut d, mut values) = (0, 0);
    let mut rest = String::with_capacity(text.len());
    // Odd pieces are attribute values (the writers quote every value with `"`).
    let mut prev = "";
    for (i, piece) in text.split('"').enumerate() {
        if i % 2 == 1 {
            if prev.ends_with(" d=") {
                d += counter.count(piece);
            } else {
                values += counter.count(piece);
            }
            rest.push_str("\"\"");
        } else {
            rest.push_str(piece);
        }
        prev = piece;
    }
    [d, values, counter.count(&rest)]
}

#[derive(Default)]
struct Totals {
    icons: usize,
    original: usize,
    ours: usize,
    svgo: usize,
    ours_fail: usize,
    svgo_fail: usize,
    ours_max_colour: f64,
    svgo_max_colour: f64,
    ours_min_iou: f64,
    svgo_min_iou: f64,
    secs: f64,
    ours_parts: [usize; 3],
    svgo_parts: [usize; 3],
}

impl Totals {
    fn add(&mut self, r: &Row, svgo: usize, ok: impl Fn(f64, f64) -> bool) {
        if self.icons == 0 {
            self.ours_min_iou = f64::INFINITY;
            self.svgo_min_iou = f64::INFINITY;
        }
        self.icons += 1;
        self.original += r.original;
        self.ours += r.ours;
        self.svgo += svgo;
        self.ours_fail += usize::from(!ok(r.ours_iou, r.ours_colour));
        self.svgo_fail += usize::from(!ok(r.svgo_iou, r.svgo_colour));
        // NaN propagates: a NaN metric shows as NaN, never as a small error.
        self.ours_max_colour = nan_max(self.ours_max_colour, r.ours_colour);
        self.svgo_max_colour = nan_max(self.svgo_max_colour, r.svgo_colour);
        self.ours_min_iou = nan_min(self.ours_min_iou, r.ours_iou);
        self.svgo_min_iou = nan_min(self.svgo_min_iou, r.svgo_iou);
        self.secs += r.secs;
        for i in 0..3 {
            self.ours_parts[i] += r.ours_parts[i];
            self.svgo_parts[i] += r.svgo_parts[i];
        }
    }

    fn ratio(&self) -> f64 {
        self.ours as f64 / self.svgo.max(1) as f64
    }

    fn line(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {} | {} | {} | {:.3} | {} / {} | {:.4} / {:.4} | {:.4} / {:.4} |",
            self.icons,
            self.original,
            self.ours,
            self.svgo,
            self.ratio(),
            self.ours_fail,
            self.svgo_fail,
            self.ours_min_iou,
            self.svgo_min_iou,
            self.ours_max_colour,
            self.svgo_max_colour,
        )
    }
}

fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
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

/// Ink IoU and colour MAE of `text` against `orig`; an output that does not parse scores
/// IoU 0 and colour error 1.
fn check(orig: &Svg, text: &[u8], size: u32) -> (f64, f64) {
    match Svg::parse(text) {
        Ok(o) => {
            let d = compare_svgs(orig, &o, size);
            (d.ink_iou, d.colour_mae())
        }
        Err(_) => (0.0, 1.0),
    }
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
            let set = match rel.components().count() {
                0 | 1 => ".".to_string(),
                _ => rel
                    .components()
                    .next()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            let src = std::fs::read(f).map_err(|e| format!("{name}: {e}"))?;
            let text = String::from_utf8_lossy(&src);
            let orig = Svg::parse(&src).map_err(|e| format!("{name}: {e}"))?;
            let t0 = std::time::Instant::now();
            let ours_text = compact(&orig, &opts);
            let secs = t0.elapsed().as_secs_f64();
            if let Some(dir) = &args.out {
                let p = dir.join(rel);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| format!("{name}: {e}"))?;
                }
                std::fs::write(&p, &ours_text).map_err(|e| format!("{name}: {e}"))?;
            }
            let (ours_iou, ours_colour) = check(&orig, ours_text.as_bytes(), args.size);
            let (svgo, (svgo_iou, svgo_colour)) = match std::fs::read(args.svgo.join(rel)) {
                Ok(s) => (
                    Some(counter.count(&String::from_utf8_lossy(&s))),
                    check(&orig, &s, args.size),
                ),
                Err(_) => (None, (0.0, 1.0)),
            };
            let svgo_text = std::fs::read(args.svgo.join(rel)).unwrap_or_default();
            let (ours_parts, svgo_parts) = if args.breakdown {
                (
                    breakdown(&counter, &ours_text),
                    breakdown(&counter, &String::from_utf8_lossy(&svgo_text)),
                )
            } else {
                ([0; 3], [0; 3])
            };
            Ok(Row {
                ours_parts,
                svgo_parts,
                set,
                name,
                original: counter.count(&text),
                ours: counter.count(&ours_text),
                svgo,
                ours_iou,
                ours_colour,
                svgo_iou,
                svgo_colour,
                secs,
            })
        })
        .collect();
    let ok = |iou: f64, colour: f64| iou >= args.min_iou && colour <= args.max_colour_mae;
    let mut sets: BTreeMap<String, Totals> = BTreeMap::new();
    let mut all = Totals::default();
    let (mut ours_fail, mut svgo_fail, mut skipped) = (Vec::new(), Vec::new(), 0usize);
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
        sets.entry(r.set.clone()).or_default().add(&r, svgo, ok);
        all.add(&r, svgo, ok);
        if !ok(r.ours_iou, r.ours_colour) {
            ours_fail.push((r.name.clone(), r.ours_iou, r.ours_colour));
        }
        if !ok(r.svgo_iou, r.svgo_colour) {
            svgo_fail.push((r.name.clone(), r.svgo_iou, r.svgo_colour));
        }
        if args.verbose {
            println!(
                "{}\t{}\t{}\t{}\t{:.4}\t{:.5}\t{:.4}\t{:.5}",
                r.name,
                r.original,
                r.ours,
                svgo,
                r.ours_iou,
                r.ours_colour,
                r.svgo_iou,
                r.svgo_colour
            );
        }
    }
    println!(
        "visual check at {} px: ink IoU >= {} and colour MAE <= {}; {skipped} skipped",
        args.size, args.min_iou, args.max_colour_mae
    );
    println!(
        "| set | icons | tokens original | ours | svgo | ours/svgo | failures ours / svgo | min IoU ours / svgo | max colour MAE ours / svgo |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, t) in &sets {
        println!("{}", t.line(name));
    }
    println!("{}", all.line("all"));
    if args.breakdown {
        println!("tokens by part (path data / other values / markup), ours vs svgo:");
        for (name, t) in sets.iter().chain([(&"all".to_string(), &all)]) {
            let [a, b, c] = t.ours_parts;
            let [x, y, z] = t.svgo_parts;
            println!("  {name}: ours {a} / {b} / {c}, svgo {x} / {y} / {z}");
        }
    }
    println!(
        "compact time\t{:.1} us/icon (sum over icons of single-threaded compact calls)",
        all.secs / all.icons.max(1) as f64 * 1e6
    );
    for (name, iou, colour) in &ours_fail {
        println!("ours failed\tIoU {iou:.4}\tcolour {colour:.4}\t{name}");
    }
    for (name, iou, colour) in svgo_fail.iter().take(20) {
        println!("svgo failed\tIoU {iou:.4}\tcolour {colour:.4}\t{name}");
    }
    let mut status = 0;
    if !ours_fail.is_empty() {
        status = 1;
    }
    if let Some(max) = args.max_ratio {
        for (name, t) in &sets {
            if t.ratio() > max {
                println!("set {name}: ratio {:.3} above {max}", t.ratio());
                status = 1;
            }
        }
    }
    if status != 0 {
        std::process::exit(status);
    }
    Ok(())
}
