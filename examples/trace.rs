//! `potrace -s` as a Rust command, plus preprocessing and colour tracing.
//!
//! ```text
//! cargo run --release --example trace -- IN OUT.svg [potrace flags]
//! cargo run --release --example trace -- drawing.pbm out.svg -t 10 -a 0 -n -z white --threads 1
//! cargo run --release --example trace -- photo.jpg out.svg --normalise-background --mkbitmap
//! cargo run --release --example trace -- icon.png out.svg --color 6
//! cat drawing.pbm | cargo run --release --example trace -- - - > out.svg
//! ```
//!
//! Inputs: PBM, PNG, JPEG, BMP, PGM/PPM (format detected from the content); `IN` and `OUT` may
//! be `-` for standard input/output. A PBM (`P1`/`P4`) file is read bit-packed straight into
//! the tracer's bitmap, as potrace reads it; every other format (and a PBM that a colour or
//! preprocessing flag needs as an image) is decoded through `image` under a pixel limit checked
//! before decoding. Flags follow potrace 1.16 where they exist there.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use svgen::trace::color::{trace_color, ColorParams, ColorSvgOptions, LayerMode, Palette};
use svgen::trace::preprocess::{
    decode_image, despeckle, normalise_background, open_image, BackgroundOptions, DecodeLimits,
    MkbitmapParams, Threshold,
};
use svgen::trace::svg::Grouping;
use svgen::trace::{trace, Bitmap, SvgOptions, TraceError, TraceParams, TurnPolicy};

#[derive(Parser, Debug)]
#[command(
    name = "trace",
    about = "Trace a raster image to SVG with svgen-trace (potrace-compatible flags)",
    allow_negative_numbers = true
)]
struct Args {
    /// Input image: PBM, PNG, JPEG, BMP or PGM/PPM, or `-` for standard input.
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
    /// Black/white cutoff for grey and colour input (potrace `-k`): black when brightness <=
    /// blacklevel. Like potrace, a PBM's own black and white are kept.
    #[arg(short = 'k', long = "blacklevel", default_value_t = 0.5)]
    blacklevel: f64,
    /// Quantise output to 1/unit pixels (potrace `-u`).
    #[arg(short = 'u', long = "unit", default_value_t = 10.0)]
    unit: f64,
    /// Foreground colour (potrace `-C`).
    #[arg(short = 'C', long = "color-fg", default_value = "#000000")]
    fill: String,
    /// Group each outline with everything inside it (potrace `--group`).
    #[arg(long, conflicts_with = "flat")]
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
    /// Threads for curve fitting and SVG writing, the main thread included (default: all
    /// cores; potrace uses one).
    #[arg(long)]
    threads: Option<usize>,
    /// Refuse images with more pixels than this, checked before decoding [default: 2^28 for
    /// PBM, which is stored 1 bit a pixel; 2^26 for other formats, decoded at 1-8 bytes a pixel].
    #[arg(long)]
    max_pixels: Option<u64>,
    /// Print timings and counts to standard error.
    #[arg(short = 'v', long)]
    verbose: bool,
}

impl Args {
    /// Whether the input must be decoded as an image even when it is a PBM: colour tracing and
    /// preprocessing work on images. (`-k` does not apply to a PBM, whose bits are used as they
    /// are, as potrace does.)
    fn needs_image(&self) -> bool {
        self.color.is_some() || self.normalise_background || self.mkbitmap || self.otsu
    }

    fn is_stdin(&self) -> bool {
        self.input.as_os_str() == "-"
    }
}

/// The input, read as far as needed to tell a PBM from anything else.
enum Input {
    /// A `P1`/`P4` file, positioned at its start.
    PbmFile(BufReader<File>),
    /// Standard input, read whole.
    Bytes(Vec<u8>),
    /// Any other file, decoded by path.
    ImageFile,
}

fn is_pbm(head: &[u8]) -> bool {
    matches!(head.get(..2), Some(b"P1" | b"P4"))
}

fn open_input(args: &Args) -> Result<Input, TraceError> {
    if args.is_stdin() {
        let mut data = Vec::new();
        std::io::stdin().lock().read_to_end(&mut data)?;
        return Ok(Input::Bytes(data));
    }
    let mut reader = BufReader::with_capacity(1 << 16, File::open(&args.input)?);
    if is_pbm(reader.fill_buf()?) {
        Ok(Input::PbmFile(reader))
    } else {
        Ok(Input::ImageFile)
    }
}

/// Times of the stages, for `--verbose`.
struct Timings {
    t0: Instant,
    marks: Vec<(&'static str, Duration)>,
}

impl Timings {
    fn mark(&mut self, stage: &'static str) {
        let so_far: Duration = self.marks.iter().map(|m| m.1).sum();
        self.marks.push((stage, self.t0.elapsed() - so_far));
    }

    fn report(&self) -> String {
        self.marks
            .iter()
            .map(|(s, d)| format!("{s} {d:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn run(args: &Args) -> Result<String, TraceError> {
    let mut times = Timings {
        t0: Instant::now(),
        marks: Vec::new(),
    };
    // The main thread is one of the pool's workers, so `--threads 1` runs everything on it
    // (no thread is started) and N threads start N - 1.
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .use_current_thread()
        .build_global()
        .map_err(|e| TraceError::InvalidParam {
            name: "threads",
            reason: e.to_string(),
        })?;
    let params = TraceParams {
        turdsize: args.turdsize,
        turnpolicy: args.turnpolicy.parse::<TurnPolicy>()?,
        alphamax: args.alphamax,
        opticurve: !args.longcurve,
        opttolerance: args.opttolerance,
    };
    params.validate()?;
    let input = open_input(args)?;

    let mut bitmap = match input {
        Input::PbmFile(reader) if !args.needs_image() => {
            let limit = args.max_pixels.unwrap_or(svgen::trace::DEFAULT_PIXEL_LIMIT);
            let bitmap = Bitmap::read_pbm(reader, limit)?;
            times.mark("read PBM");
            bitmap
        }
        Input::Bytes(data) if is_pbm(&data) && !args.needs_image() => {
            let limit = args.max_pixels.unwrap_or(svgen::trace::DEFAULT_PIXEL_LIMIT);
            let bitmap = Bitmap::from_pbm(&data, limit)?;
            times.mark("read PBM");
            bitmap
        }
        input => {
            let limits = DecodeLimits {
                max_pixels: args
                    .max_pixels
                    .unwrap_or(DecodeLimits::default().max_pixels),
                ..Default::default()
            };
            let image = match input {
                Input::Bytes(data) => decode_image(&data, &limits)?,
                Input::PbmFile(_) | Input::ImageFile => open_image(&args.input, &limits)?,
            };
            times.mark("decode");
            match image_to_bitmap(args, image, &params, limits.max_pixels, &mut times)? {
                Ok(bitmap) => bitmap,
                Err(colour_svg) => return Ok(colour_svg),
            }
        }
    };
    if args.invert {
        bitmap.invert();
    }
    if let Some(n) = args.despeckle {
        despeckle(&mut bitmap, n);
        times.mark("despeckle");
    }
    let paths = trace(&bitmap, &params)?;
    times.mark("trace");
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
    times.mark("svg");
    if args.verbose {
        eprintln!(
            "{}x{} bitmap, {} outlines (holes included), {} segments; {}",
            bitmap.width(),
            bitmap.height(),
            paths.path_count(),
            paths.segment_count(),
            times.report()
        );
    }
    // The process ends once the SVG is written: returning these pages to the system one by one
    // would be wasted work.
    std::mem::forget(bitmap);
    std::mem::forget(paths);
    Ok(svg)
}

/// The image path: background normalisation, then either colour tracing (its SVG is returned
/// as `Err`) or a threshold to a bitmap.
fn image_to_bitmap(
    args: &Args,
    mut image: image::DynamicImage,
    params: &TraceParams,
    max_pixels: u64,
    times: &mut Timings,
) -> Result<Result<Bitmap, String>, TraceError> {
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
        times.mark("normalise background");
    }
    if let Some(k) = args.color {
        let cp = ColorParams {
            palette: Palette::KMeans { k, seed: 0 },
            mode: if args.cutout {
                LayerMode::CutOut
            } else {
                LayerMode::Stacked
            },
            trace: *params,
            max_pixels,
            ..Default::default()
        };
        let traced = trace_color(&image, &cp)?;
        times.mark("colour trace");
        if args.verbose {
            eprintln!(
                "{} layers, {} paths; {}",
                traced.layers.len(),
                traced
                    .layers
                    .iter()
                    .map(|l| l.paths.path_count())
                    .sum::<usize>(),
                times.report()
            );
        }
        return Ok(Err(traced.to_svg(&ColorSvgOptions::default())));
    }
    let threshold = if args.mkbitmap {
        Threshold::Mkbitmap(MkbitmapParams::default())
    } else if args.otsu {
        Threshold::Otsu
    } else {
        Threshold::BlackLevel(args.blacklevel)
    };
    let bitmap = Bitmap::from_image_with_limit(&image, &threshold, max_pixels)?;
    times.mark("threshold");
    Ok(Ok(bitmap))
}

fn write_output(path: &Path, svg: &str) -> std::io::Result<()> {
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(svg.as_bytes())?;
        out.flush()
    } else {
        std::fs::write(path, svg)
    }
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
    match write_output(&args.output, &svg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trace: {}: {e}", args.output.display());
            ExitCode::from(2)
        }
    }
}
