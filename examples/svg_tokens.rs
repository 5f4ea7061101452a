//! Counts the tokens of SVG (or any text) files.
//!
//! ```text
//! cargo run --release --example svg_tokens -- [--tokenizer cl100k|PATH/tokenizer.json] FILE...
//! ```
//!
//! Prints one line per file, `COUNT<TAB>PATH`, in the order given, then `TOTAL<TAB>COUNT`.
//! Files are counted in parallel on all cores. The count is of the file's text as it is, the
//! number the thesis filters SVGs by (e.g. under 8k cl100k tokens).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use svgen::core::{Cl100k, HfTokenizer, TokenCounter};

#[derive(Parser)]
#[command(about = "Count the tokens of SVG files with cl100k_base or a Hugging Face tokenizer")]
struct Args {
    /// `cl100k` (GPT-4's tokenizer) or the path of a Hugging Face `tokenizer.json`.
    #[arg(long, default_value = "cl100k")]
    tokenizer: String,
    /// Files to count.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let counter: Box<dyn TokenCounter> = match args.tokenizer.as_str() {
        "cl100k" | "cl100k_base" => Box::new(Cl100k::new()),
        path => match HfTokenizer::from_file(path) {
            Ok(t) => Box::new(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };

    let mut texts = Vec::with_capacity(args.files.len());
    for path in &args.files {
        match std::fs::read(path) {
            Ok(bytes) => texts.push(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let counts = counter.count_batch(&refs);

    let mut total: u64 = 0;
    for (path, count) in args.files.iter().zip(&counts) {
        println!("{count}\t{}", path.display());
        total += *count as u64;
    }
    println!("TOTAL\t{total}");
    ExitCode::SUCCESS
}
