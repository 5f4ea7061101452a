//! A lean `potrace -s` replacement for PBM input: reads a P1/P4 bitmap straight into the packed
//! bitmap (no image decoding), traces it and writes potrace-compatible SVG. Used by
//! `tools/trace_bench/run.sh` to time svgen-trace against potrace as whole processes.
//!
//! ```text
//! cargo run --release --example trace_pbm -- IN.pbm OUT.svg [-t N] [-a X] [-O X] [-n] [-z POLICY]
//!     [-u UNIT] [--tight] [--group | --flat] [--threads N] [--max-pixels N]
//! ```
//! `IN` and `OUT` may be `-` for standard input/output.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;
use svgen::trace::svg::Grouping;
use svgen::trace::{trace, Bitmap, SvgOptions, TraceError, TraceParams, TurnPolicy};

#[derive(Parser, Debug)]
#[command(
    name = "trace_pbm",
    about = "Trace a PBM bitmap to SVG like `potrace -s`"
)]
struct Args {
    /// Input PBM file (P1 or P4), or `-` for standard input.
    input: String,
    /// Output SVG file, or `-` for standard output.
    output: String,
    /// Suppress speckles of up to this many pixels.
    #[arg(short = 't', long, default_value_t = 2)]
    turdsize: u32,
    /// Corner threshold.
    #[arg(short = 'a', long, default_value_t = 1.0)]
    alphamax: f64,
    /// Curve optimisation tolerance.
    #[arg(short = 'O', long, default_value_t = 0.2)]
    opttolerance: f64,
    /// Turn off curve optimisation.
    #[arg(short = 'n', long)]
    longcurve: bool,
    /// Turn policy (black, white, left, right, minority, majority, random).
    #[arg(short = 'z', long, default_value = "minority")]
    turnpolicy: String,
    /// Quantise output to 1/unit pixels.
    #[arg(short = 'u', long, default_value_t = 10.0)]
    unit: f64,
    /// Crop to the bounding box of the curves.
    #[arg(long)]
    tight: bool,
    /// Group each outline with everything inside it.
    #[arg(long, conflicts_with = "flat")]
    group: bool,
    /// Write the whole image as a single path.
    #[arg(long)]
    flat: bool,
    /// Worker threads for curve fitting (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Refuse bitmaps with more pixels than this.
    #[arg(long, default_value_t = svgen::trace::DEFAULT_PIXEL_LIMIT)]
    max_pixels: u64,
}

fn run(args: &Args) -> Result<(), TraceError> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| TraceError::InvalidParam {
                name: "threads",
                reason: e.to_string(),
            })?;
    }
    let data = if args.input == "-" {
        let mut v = Vec::new();
        std::io::stdin().read_to_end(&mut v)?;
        v
    } else {
        std::fs::read(&args.input)?
    };
    let bitmap = Bitmap::from_pbm(&data, args.max_pixels)?;
    drop(data);
    let params = TraceParams {
        turdsize: args.turdsize,
        turnpolicy: args.turnpolicy.parse::<TurnPolicy>()?,
        alphamax: args.alphamax,
        opticurve: !args.longcurve,
        opttolerance: args.opttolerance,
    };
    let paths = trace(&bitmap, &params)?;
    drop(bitmap);
    let svg = paths.to_svg(&SvgOptions {
        unit: args.unit,
        tight: args.tight,
        grouping: if args.group {
            Grouping::Group
        } else if args.flat {
            Grouping::Flat
        } else {
            Grouping::Paths
        },
        ..SvgOptions::default()
    });
    if args.output == "-" {
        std::io::stdout().lock().write_all(svg.as_bytes())?;
    } else {
        std::fs::write(&args.output, svg)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trace_pbm: {e}");
            ExitCode::FAILURE
        }
    }
}
