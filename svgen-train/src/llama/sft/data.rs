//! The training data of supervised fine-tuning: (description, SVG) pairs from JSONL or
//! `svgen-data` datasets, and their tokenised samples with the prompt masked out of the loss.

use std::io::BufRead;
use std::path::Path;

use svgen_data::pairs::PairDataset;

use crate::error::{Result, TrainError};
use crate::llama::tokenizer::{LlamaTokenizer, PromptFormat};

pub use crate::nn::loss::IGNORE_INDEX;

/// One training pair: svgen-data's [`svgen_data::Pair`] (training reads its `description` and
/// `svg`; JSONL lines need only those two keys, `prompt` is accepted for `description`).
pub use svgen_data::Pair;

/// The training pairs of a `svgen-data` [`PairDataset`] (our shards, MMSVG Parquet or CSV,
/// an icon folder with its metadata), in dataset order. Records the loader skipped are in
/// `dataset.skipped`; report them before the dataset is consumed.
///
/// ```no_run
/// use svgen_data::pairs::PairDataset;
/// use svgen_train::llama::sft::{pairs_from_dataset, tokenize_pairs};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let tokenizer = svgen_train::LlamaTokenizer::from_dir("model")?;
/// let dataset = PairDataset::from_mmsvg_parquet("MMSVG-Icon/train.parquet", None)?;
/// eprintln!("{} records skipped", dataset.skipped.len());
/// let pairs = pairs_from_dataset(dataset);
/// let format = svgen_train::llama::tokenizer::PromptFormat::default(); // the thesis' format
/// let (samples, dropped) = tokenize_pairs(&tokenizer, &format, &pairs, 4096)?;
/// # Ok(())
/// # }
/// ```
pub fn pairs_from_dataset(dataset: PairDataset) -> Vec<Pair> {
    dataset.into_pairs()
}

/// Reads `{"description", "svg"}` lines (blank lines skipped). A bad line is a typed error
/// with its line number.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<Pair>> {
    let path = path.as_ref();
    let f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let p: Pair = serde_json::from_str(&line)
            .map_err(|e| TrainError::json(path, format!("line {}: {e}", i + 1)))?;
        out.push(p);
    }
    Ok(out)
}

/// Tokenises pairs; samples longer than `max_len` are dropped (never truncated). Returns the
/// kept samples and the number dropped.
pub fn tokenize_pairs(
    tokenizer: &LlamaTokenizer,
    format: &PromptFormat,
    pairs: &[Pair],
    max_len: usize,
) -> Result<(Vec<SftSample>, usize)> {
    let limits = LengthLimits {
        max_len,
        ..LengthLimits::default()
    };
    let (kept, report) = tokenize_pairs_limited(tokenizer, format, pairs, &limits)?;
    Ok((kept, report.dropped()))
}

/// Token-count limits of [`tokenize_pairs_limited`]: a pair over any of them is dropped, never
/// truncated (the thesis filtered MMSVG-Icon by SVG token count; a truncated SVG teaches
/// broken documents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthLimits {
    /// Whole sample (prompt + SVG + end tokens).
    pub max_len: usize,
    /// Description tokens (`usize::MAX`: no limit).
    pub max_description_tokens: usize,
    /// SVG tokens, without the end tokens (`usize::MAX`: no limit).
    pub max_svg_tokens: usize,
}

impl Default for LengthLimits {
    fn default() -> Self {
        Self {
            max_len: usize::MAX,
            max_description_tokens: usize::MAX,
            max_svg_tokens: usize::MAX,
        }
    }
}

/// How many pairs [`tokenize_pairs_limited`] kept and why it dropped the others (a pair is
/// counted under the first limit it breaks, in the order description, SVG, whole sample).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LengthReport {
    /// Pairs kept.
    pub kept: usize,
    /// Dropped for a long description.
    pub long_description: usize,
    /// Dropped for a long SVG.
    pub long_svg: usize,
    /// Dropped for a long sample.
    pub long_sample: usize,
    /// Dropped for an empty description or SVG.
    pub empty: usize,
}

impl LengthReport {
    /// Pairs dropped in total.
    pub fn dropped(&self) -> usize {
        self.long_description + self.long_svg + self.long_sample + self.empty
    }
}

impl std::fmt::Display for LengthReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} kept, {} dropped ({} long descriptions, {} long SVGs, {} long samples, {} empty)",
            self.kept,
            self.dropped(),
            self.long_description,
            self.long_svg,
            self.long_sample,
            self.empty
        )
    }
}

/// Tokenises pairs, dropping (never truncating) those over `limits` and those with an empty
/// description or SVG.
pub fn tokenize_pairs_limited(
    tokenizer: &LlamaTokenizer,
    format: &PromptFormat,
    pairs: &[Pair],
    limits: &LengthLimits,
) -> Result<(Vec<SftSample>, LengthReport)> {
    let mut kept = Vec::with_capacity(pairs.len());
    let mut report = LengthReport::default();
    for p in pairs {
        if p.description.trim().is_empty() || p.svg.trim().is_empty() {
            report.empty += 1;
            continue;
        }
        if limits.max_description_tokens != usize::MAX
            && tokenizer.encode(p.description.trim(), false)?.len() > limits.max_description_tokens
        {
            report.long_description += 1;
            continue;
        }
        if limits.max_svg_tokens != usize::MAX
            && tokenizer.encode(&p.svg, false)?.len() > limits.max_svg_tokens
        {
            report.long_svg += 1;
            continue;
        }
        let s = SftSample::encode(tokenizer, format, &p.description, &p.svg)?;
        if s.len() > limits.max_len {
            report.long_sample += 1;
        } else {
            report.kept += 1;
            kept.push(s);
        }
    }
    Ok((kept, report))
}

/// One tokenised (description, SVG) pair: prompt tokens are masked out of the loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftSample {
    /// Prompt + SVG + end tokens.
    pub input_ids: Vec<u32>,
    /// `IGNORE_INDEX` on prompt positions, the token id on SVG positions.
    pub labels: Vec<i64>,
}

impl SftSample {
    /// Tokenises a pair: the prompt in `format` ([`LlamaTokenizer::encode_prompt`]), then the
    /// SVG followed by `<|end_svg|>` (and whatever the chat template writes after the
    /// assistant's turn, e.g. `<|eot_id|>`; [`LlamaTokenizer::encode_completion`]). Only the SVG
    /// and end tokens count in the loss.
    pub fn encode(
        tokenizer: &LlamaTokenizer,
        format: &PromptFormat,
        description: &str,
        svg: &str,
    ) -> Result<Self> {
        let prompt = tokenizer.encode_prompt(format, description)?;
        let target = tokenizer.encode_completion(format, description, svg)?;
        let mut labels = vec![IGNORE_INDEX; prompt.len()];
        labels.extend(target.iter().map(|&x| x as i64));
        let mut input_ids = prompt;
        input_ids.extend(target);
        Ok(Self { input_ids, labels })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether the sample is empty.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}
