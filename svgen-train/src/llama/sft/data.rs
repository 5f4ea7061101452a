//! The training data of supervised fine-tuning: (description, SVG) pairs from JSONL or
//! `svgen-data` datasets, and their tokenised samples with the prompt masked out of the loss.

use std::io::BufRead;
use std::path::Path;

use svgen_data::pairs::PairDataset;

use crate::error::{Result, TrainError};
use crate::llama::tokenizer::{LlamaTokenizer, PromptFormat, END_SVG};

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
/// let format = svgen_train::llama::tokenizer::PromptFormat::InstructionResponse;
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
    let mut kept = Vec::with_capacity(pairs.len());
    let mut dropped = 0;
    for p in pairs {
        let s = SftSample::encode(tokenizer, format, &p.description, &p.svg)?;
        if s.len() > max_len {
            dropped += 1;
        } else {
            kept.push(s);
        }
    }
    Ok((kept, dropped))
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
    /// Tokenises a pair: the prompt in `format`, then the SVG followed by `<|end_svg|>` (when
    /// the tokenizer has it) and `<|eot_id|>` for the chat format. Only the SVG and end tokens
    /// count in the loss.
    pub fn encode(
        tokenizer: &LlamaTokenizer,
        format: &PromptFormat,
        description: &str,
        svg: &str,
    ) -> Result<Self> {
        let prompt = tokenizer.encode_prompt(format, description)?;
        let mut target = tokenizer.encode(svg, false)?;
        if let Some(id) = tokenizer.token_id(END_SVG) {
            target.push(id);
        }
        if matches!(format, PromptFormat::Llama3Chat { .. }) {
            if let Some(id) = tokenizer.token_id("<|eot_id|>") {
                target.push(id);
            }
        }
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
