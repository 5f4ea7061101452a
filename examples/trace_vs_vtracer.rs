//! Colour tracing, svgen-trace versus the `vtracer` crate: tokens against pixel error on real
//! colour images, both measured in the same run.
//!
//! ```text
//! tools/vtracer_bench/fetch.sh            # prints the twemoji directory
//! cargo run --release --example trace_vs_vtracer --no-default-features --features trace -- \
//!     target/trace-bench-data/twemoji/package --count 200 --size 256
//! ```
//!
//! Every `(total / count)`-th SVG of the directory (sorted by name) is rendered with svgen-core
//! at `--size`² over white; that raster is the input of both tracers. Each output SVG is
//! rendered back the same way and compared with the input:
//! * **tokens**: cl100k tokens of the SVG text (svgen-core's `Cl100k`);
//! * **MAE**: mean absolute RGB error over white, in `[0, 1]`;
//! * **ink IoU**: intersection over union of the non-white masks;
//! * **colour ok**: fraction of pixels whose rendered colour is within 32 of the input on
//!   every channel.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use image::RgbaImage;
use svgen::core::metrics::{ink_iou, mean_abs_error};
use svgen::core::render::{render, RenderOptions};
use svgen::core::{Cl100k, Svg, TokenCounter};
use svgen::trace::color::{trace_color, ColorParams, ColorSvgOptions, LayerMode, Palette};

#[derive(Parser)]
struct Args {
    /// Directory of colour SVGs (e.g. twemoji).
    dir: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Raster side in pixels.
    #[arg(long, default_value_t = 256)]
    size: u32,
}

#[derive(Default)]
struct Stats {
    tokens: Vec<f64>,
    mae: Vec<f64>,
    iou: Vec<f64>,
    ok: Vec<f64>,
    secs: Vec<f64>,
    failures: usize,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn colour_ok(a: &RgbaImage, b: &RgbaImage) -> f64 {
    let ok = a
        .pixels()
        .zip(b.pixels())
        .filter(|(p, q)| (0..3).all(|c| p.0[c].abs_diff(q.0[c]) <= 32))
        .count();
    ok as f64 / f64::from(a.width() * a.height())
}

type Tracer = Box<dyn Fn(&RgbaImage) -> Result<String, String>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        .collect();
    files.sort();
    let step = (files.len() / args.count.max(1)).max(1);
    let files: Vec<PathBuf> = files.into_iter().step_by(step).take(args.count).collect();
    let opts = RenderOptions::square(args.size);
    let inputs: Vec<RgbaImage> = files
        .iter()
        .map(|f| Ok(render(&Svg::parse(&std::fs::read(f)?)?, &opts)))
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;

    let ours = |k: usize, precision: u8, mode: LayerMode| -> Tracer {
        Box::new(move |img: &RgbaImage| {
            let p = ColorParams {
                palette: Palette::KMeans { k, seed: 0 },
                mode,
                ..Default::default()
            };
            let t = trace_color(&image::DynamicImage::ImageRgba8(img.clone()), &p)
                .map_err(|e| e.to_string())?;
            Ok(t.to_svg(&ColorSvgOptions {
                precision,
                ..Default::default()
            }))
        })
    };
    let vt = |cfg: vtracer::Config| -> Tracer {
        Box::new(move |img: &RgbaImage| {
            let ci = vtracer::ColorImage {
                pixels: img.as_raw().clone(),
                width: img.width() as usize,
                height: img.height() as usize,
            };
            cfg.build()
                .and_then(|p| p.to_svg(&ci))
                .map_err(|e| e.to_string())
        })
    };
    let tracers: Vec<(&str, Tracer)> = vec![
        ("svgen-trace k=8", ours(8, 1, LayerMode::Stacked)),
        (
            "svgen-trace k=8, integer coordinates",
            ours(8, 0, LayerMode::Stacked),
        ),
        ("svgen-trace k=8, cut-out", ours(8, 1, LayerMode::CutOut)),
        ("svgen-trace k=16", ours(16, 1, LayerMode::Stacked)),
        ("vtracer default", vt(vtracer::Config::default())),
        (
            "vtracer max_colors=8",
            vt(vtracer::Config {
                max_colors: Some(8),
                ..Default::default()
            }),
        ),
    ];
    let counter = Cl100k::new();
    let mut stats: Vec<Stats> = tracers.iter().map(|_| Stats::default()).collect();
    for img in &inputs {
        for ((_, tracer), st) in tracers.iter().zip(&mut stats) {
            let t = Instant::now();
            let out = tracer(img);
            st.secs.push(t.elapsed().as_secs_f64());
            let Ok(svg) = out else {
                st.failures += 1;
                continue;
            };
            let Ok(parsed) = Svg::parse(svg.as_bytes()) else {
                st.failures += 1;
                continue;
            };
            let back = render(&parsed, &opts);
            st.tokens.push(counter.count(&svg) as f64);
            st.mae.push(mean_abs_error(img, &back)?);
            st.iou.push(ink_iou(img, &back)?);
            st.ok.push(colour_ok(img, &back));
        }
    }
    println!(
        "{} images from {} at {}x{} px\n",
        inputs.len(),
        args.dir.display(),
        args.size,
        args.size
    );
    println!("| tracer | tokens mean | tokens median | MAE mean | ink IoU mean | colour ok mean | ms/image median | failures |");
    println!("|---|---|---|---|---|---|---|---|");
    for ((name, _), st) in tracers.iter().zip(&stats) {
        println!(
            "| {name} | {:.0} | {:.0} | {:.4} | {:.4} | {:.4} | {:.1} | {} |",
            mean(&st.tokens),
            median(&st.tokens),
            mean(&st.mae),
            mean(&st.iou),
            mean(&st.ok),
            1e3 * median(&st.secs),
            st.failures
        );
    }
    Ok(())
}
