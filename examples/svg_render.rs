//! Renders an SVG file to PNG.
//!
//! ```text
//! cargo run --release --example svg_render -- IN.svg OUT.png [--size N] [--transparent]
//! ```
//!
//! Without `--size` the image has the document's intrinsic size; with it, the longer side is `N`
//! pixels. The background is white unless `--transparent` is given. Parsing uses the safe
//! defaults of `svgen::core::ParseOptions` (no file or network access, bounded resources).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use svgen::core::{render, RenderOptions, RenderSize, Svg};

#[derive(Parser)]
#[command(about = "Render an SVG file to PNG (resvg)")]
struct Args {
    /// Input SVG file.
    input: PathBuf,
    /// Output PNG file.
    output: PathBuf,
    /// Longer side of the output in pixels (default: the document's own size).
    #[arg(long)]
    size: Option<u32>,
    /// Keep the background transparent instead of white.
    #[arg(long)]
    transparent: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let data = match std::fs::read(&args.input) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {}: {e}", args.input.display());
            return ExitCode::FAILURE;
        }
    };
    let svg = match Svg::parse(&data) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {e}", args.input.display());
            return ExitCode::FAILURE;
        }
    };
    let mut opts = RenderOptions::default();
    if let Some(n) = args.size {
        opts = opts.with_size(RenderSize::MaxSide(n));
    }
    if args.transparent {
        opts = opts.with_background(None);
    }
    let img = render(&svg, &opts);
    if let Err(e) = img.save_with_format(&args.output, image::ImageFormat::Png) {
        eprintln!("error: {}: {e}", args.output.display());
        return ExitCode::FAILURE;
    }
    println!(
        "{}x{}\t{}",
        img.width(),
        img.height(),
        args.output.display()
    );
    ExitCode::SUCCESS
}
