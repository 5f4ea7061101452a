//! `potrace -s` as an in-process Rust command, plus preprocessing and colour tracing.
//!
//! ```text
//! cargo run --release --example trace -- IN OUT.svg [potrace flags]
//! cargo run --release --example trace -- drawing.png out.svg -t 10 -a 0 -n -z white
//! cargo run --release --example trace -- photo.jpg out.svg --normalise-background --mkbitmap
//! cargo run --release --example trace -- icon.png out.svg --color 6
//! ```
//!
//! Inputs: PNG, JPEG, BMP, PBM/PGM/PPM (format detected from the content). `OUT` may be `-` for
//! standard output. Flags follow potrace 1.16 where they exist there.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use svgen::trace::color::{trace_color, ColorParams, ColorSvgOptions, LayerMode, Palette};
use svgen::trace::preprocess::{
    despeckle, normalise_background, open_image, BackgroundOptions, DecodeLimits, MkbitmapParams,
    Threshold,
};
use svgen::trace::svg::Grouping;
use svgen::trace::{trace, Bitmap, SvgOptions, TraceError, TraceParams, TurnPolicy};

#[derive(Parser, Debug)]
#[command(
    name = "trace",
    about = "Trace a raster image to SVG with svgen-trace (potrace-compatible flags)"
)]
struct Args {
    /// Input image: PNG, JPEG, BMP or PBM/PGM/PPM.
    input: PathBuf,
    /// Output SVG file, or `-` for standard output.
    output: PathBuf,

    /// Suppress speckles of up to this many pixels (potrace `-t`).
    #[arg(short = 't', long = "turdsize", default_value_t = 2)]
    turdsize: u32,
    /// Corner threshold (potrace `-a`).
    #[arg(short = 'a', long = "alphamax", default_value_t = 1.0)]
    alphamax: f64,
    /// Curve optimisation tolerance (potrace `-O`).
    #[arg(short = 'O', long = "opttolerance", default_value_t = 0.2)]
    opttolerance: f64,
    /// Turn off curve optimisation (potrace `-n` / `--longcurve`).
    #[arg(short = 'n', long = "longcurve")]
    longcurve: bool,
    /// Turn policy: black, white, left, right, minority, majority, random (potrace `-z`).
    #[arg(short = 'z', long = "turnpolicy", default_value = "minority")]
    turnpolicy: String,
    /// Invert the bitmap (potrace `-i`).
    #[arg(short = 'i', long = "invert")]
    invert: bool,
    /// Black/white cutoff (potrace `-k`): black when brightness <= blacklevel.
    #[arg(short = 'k', long = "blacklevel", default_value_t = 0.5)]
    blacklevel: f64,
    /// Quantise output to 1/unit pixels (potrace `-u`).
    #[arg(short = 'u', long = "unit", default_value_t = 10.0)]
    unit: f64,
    /// Foreground colour (potrace `-C`).
    #[arg(short = 'C', long = "color-fg", default_value = "#000000")]
    fill: String,
    /// Group related paths (potrace `--group`).
    #[arg(long)]
    group: bool,
    /// Whole image as a single path (potrace `--flat`).
    #[arg(long)]
    flat: bool,
    /// Remove whitespace around the drawing (potrace `--tight`).
    #[arg(long)]
    tight: bool,

    /// Trace in colour with this many colours (k-means; background dropped).
    #[arg(long = "color", value_name = "K")]
    color: Option<usize>,
    /// Colour mode: cut-out layers instead of stacked ones.
    #[arg(long)]
    cutout: bool,
    /// Detect a dark background from the border and invert the image first.
    #[arg(long = "normalise-background")]
    normalise_background: bool,
    /// Threshold with the mkbitmap pipeline (high-pass 4, scale 2, cubic, threshold 0.45)
    /// instead of `-k`.
    #[arg(long)]
    mkbitmap: bool,
    /// Threshold with Otsu's method instead of `-k`.
    #[arg(long)]
    otsu: bool,
    /// Remove black and white components smaller than this many pixels before tracing.
    #[arg(long, value_name = "PIXELS")]
    despeckle: Option<u32>,
    /// Refuse images with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = 1 << 26)]
    max_pixels: u64,
    /// Print timings and counts to standard error.
    #[arg(short = 'v', long)]
    verbose: bool,
}

fn run(args: &Args) -> Result<String, TraceError> {
    let t0 = std::time::Instant::now();
    let params = TraceParams {
        turdsize: args.turdsize,
        turnpolicy: args.turnpolicy.parse::<TurnPolicy>()?,
        alphamax: args.alphamax,
        opticurve: !args.longcurve,
        opttolerance: args.opttolerance,
    };
    params.validate()?;
    let limits = DecodeLimits {
        max_pixels: args.max_pixels,
        ..Default::default()
    };
    let mut image = open_image(&args.input, &limits)?;
    if args.normalise_background {
        let (img, decision) = normalise_background(&image, &BackgroundOptions::default())?;
        if args.verbose {
            eprintln!(
                "background: median border brightness {:.3}, {:.0}% dark -> {}",
                decision.border_median,
                100.0 * decision.dark_fraction,
                if decision.inverted {
                    "inverted"
                } else {
                    "kept"
                }
            );
        }
        image = img;
    }
    let t_decode = t0.elapsed();

    if let Some(k) = args.color {
        let cp = ColorParams {
            palette: Palette::KMeans { k, seed: 0 },
            mode: if args.cutout {
                LayerMode::CutOut
            } else {
                LayerMode::Stacked
            },
            trace: params,
            max_pixels: args.max_pixels,
            ..Default::default()
        };
        let traced = trace_color(&image, &cp)?;
        if args.verbose {
            eprintln!(
                "{} layers, {} paths; decode {:?}, total {:?}",
                traced.layers.len(),
                traced
                    .layers
                    .iter()
                    .map(|l| l.paths.path_count())
                    .sum::<usize>(),
                t_decode,
                t0.elapsed()
            );
        }
        return Ok(traced.to_svg(&ColorSvgOptions::default()));
    }

    let threshold = if args.mkbitmap {
        Threshold::Mkbitmap(MkbitmapParams::default())
    } else if args.otsu {
        Threshold::Otsu
    } else {
        Threshold::BlackLevel(args.blacklevel)
    };
    let mut bitmap = Bitmap::from_image_with_limit(&image, &threshold, args.max_pixels)?;
    if args.invert {
        bitmap.invert();
    }
    if let Some(n) = args.despeckle {
        despeckle(&mut bitmap, n);
    }
    let t_bitmap = t0.elapsed();
    let paths = trace(&bitmap, &params)?;
    let t_trace = t0.elapsed();
    let svg = paths.to_svg(&SvgOptions {
        fill: args.fill.clone(),
        unit: args.unit,
        grouping: if args.flat {
            Grouping::Flat
        } else if args.group {
            Grouping::Group
        } else {
            Grouping::Paths
        },
        tight: args.tight,
    });
    if args.verbose {
        eprintln!(
            "{}x{} bitmap, {} outlines (holes included), {} segments; decode {:?}, threshold {:?}, trace {:?}, svg {:?}",
            bitmap.width(),
            bitmap.height(),
            paths.path_count(),
            paths.segment_count(),
            t_decode,
            t_bitmap - t_decode,
            t_trace - t_bitmap,
            t0.elapsed() - t_trace
        );
    }
    Ok(svg)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let svg = match run(&args) {
        Ok(svg) => svg,
        Err(e) => {
            eprintln!("trace: {}: {e}", args.input.display());
            return ExitCode::from(2);
        }
    };
    let written = if args.output.as_os_str() == "-" {
        std::io::stdout().lock().write_all(svg.as_bytes())
    } else {
        std::fs::write(&args.output, svg)
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trace: {}: {e}", args.output.display());
            ExitCode::from(2)
        }
    }
}
