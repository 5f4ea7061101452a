//! Writes an SVG with fewer cl100k tokens.
//!
//! ```text
//! cargo run --release --no-default-features --example svg_compact -- IN OUT \
//!     [--precision N] [--max-tokens N] [--max-error E]
//! ```
//!
//! Without `--max-tokens` the document is written with `compact` (at `--precision` decimals
//! when given). With `--max-tokens`, `fit_to_budget` searches precision and simplification for
//! the lowest raster error under the budget (`--max-error` bounds that error; default 0.01).
use std::path::PathBuf;

use clap::Parser;
use svgen::core::budget::fit_to_budget;
use svgen::core::compact::{compact, CompactOptions, Precision};
use svgen::core::{Cl100k, Svg, TokenCounter};

#[derive(Parser)]
#[command(about = "Write an SVG with fewer cl100k tokens")]
struct Args {
    /// Input SVG.
    input: PathBuf,
    /// Output SVG.
    output: PathBuf,
    /// Decimals kept in coordinates (default: relative to the viewBox, 1/1000 of its size).
    #[arg(long)]
    precision: Option<u8>,
    /// Token budget (cl100k); the output is the lowest-error one that fits.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Largest accepted raster error (mean absolute error over white at 256 px, 0..1).
    #[arg(long, default_value_t = 0.01)]
    max_error: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let data = std::fs::read(&args.input)?;
    let svg = Svg::parse(&data)?;
    let counter = Cl100k::new();
    let before = counter.count(&String::from_utf8_lossy(&data));
    let out = match args.max_tokens {
        Some(max) => {
            let fitted = fit_to_budget(&svg, &counter, max, args.max_error)?;
            eprintln!(
                "fitted: raster error {:.5}, options {:?}",
                fitted.error, fitted.options
            );
            fitted.svg
        }
        None => {
            let mut opts = CompactOptions::default();
            if let Some(p) = args.precision {
                opts.precision = Precision::Decimals(p);
            }
            compact(&svg, &opts)
        }
    };
    let after = counter.count(&out);
    std::fs::write(&args.output, &out)?;
    println!("{before}\t{after}\t{}", args.output.display());
    Ok(())
}
