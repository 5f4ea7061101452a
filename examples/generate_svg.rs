//! Generates SVG for descriptions with a HF Llama (optionally with a PEFT LoRA adapter),
//! validates it through svgen-core and writes it out.
//!
//! The prompt is the thesis' format by default (`<|ctx|>Create a valid minimal SVG for:
//! {description}<|objs|>`), and generation stops when the model writes `<|end_svg|>`; `--format
//! chat` uses the checkpoint's chat template. The tokenizer is read from `--tokenizer`, else from
//! the adapter folder when it holds one (as finetune_llm writes it), else from `--model`; the
//! adapter's trainable token ids are checked against it.
//!
//! ```text
//! cargo run --release --example generate_svg -- --model DIR [--adapter DIR] "a red apple icon"
//! ```

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use svgen::train::llama::generate::validate_svgs;
use svgen::train::llama::lora::check_adapter_tokens;
use svgen::train::llama::tokenizer::{LlamaTokenizer, PromptFormat, ThesisPrompt, THESIS_PROMPT};
use svgen::train::{GenerationConfig, Generator, Llama, LoadOptions};
use svgen::DefaultBackend;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// `<|ctx|>… {description}<|objs|>` (the thesis).
    Thesis,
    /// The checkpoint's chat template.
    Chat,
    /// `Instruction: {description}\nResponse: `.
    Instruction,
}

#[derive(Parser)]
struct Args {
    /// HF Llama folder.
    #[arg(long)]
    model: PathBuf,
    /// PEFT adapter folder.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Folder with tokenizer.json (defaults to the adapter's, then --model).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Descriptions (each one a prompt of the batch).
    #[arg(required = true)]
    prompts: Vec<String>,
    /// Prompt format.
    #[arg(long, value_enum, default_value_t = Format::Thesis)]
    format: Format,
    /// The thesis prompt, with `{description}` once.
    #[arg(long, default_value = THESIS_PROMPT)]
    prompt_template: String,
    /// System prompt of the chat format.
    #[arg(long)]
    system: Option<String>,
    /// Also stop at the text `</svg>` (for models not trained to write `<|end_svg|>`).
    #[arg(long)]
    stop_at_svg_close: bool,
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Close an unclosed SVG tail instead of counting it invalid.
    #[arg(long)]
    repair: bool,
    /// Write the valid SVGs as out-N.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Dtype of the weights on the device: f32, bf16 or f16 (refused before loading when the
    /// backend cannot compute in it). Default: f32 on the CPU, the checkpoint's `torch_dtype`
    /// on GPU backends.
    #[arg(long)]
    dtype: Option<String>,
    /// Keep the adapter as a separate branch instead of folding it into the base weights
    /// (`W + s·A·B`, the default: no extra kernels per linear and token).
    #[arg(long)]
    no_merge: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    let a = Args::parse();
    let device = Default::default();
    let tok_dir = match (&a.tokenizer, &a.adapter) {
        (Some(t), _) => t.clone(),
        (None, Some(ad)) if ad.join("tokenizer.json").is_file() => ad.clone(),
        _ => a.model.clone(),
    };
    let mut tok = LlamaTokenizer::from_dir(&tok_dir)?;
    if tok.chat_template().is_none() {
        // An adapter's tokenizer may come without the template: take the model's.
        if let Some(t) = svgen::train::llama::chat_template::ChatTemplate::from_dir(&a.model)? {
            tok = tok.with_chat_template(t);
        }
    }
    if let Some(message) = tok.ensure_thesis_tokens()?.message() {
        println!("{message}");
    }
    // `--dtype` when given; else f32 on the CPU and the checkpoint's `torch_dtype` (bf16 for
    // Llama 3) on GPU backends. Refused before loading when the backend cannot compute in it.
    let options = match &a.dtype {
        Some(flag) => LoadOptions::from_flag(flag)?,
        None => LoadOptions::for_checkpoint::<DefaultBackend>(&a.model)?,
    };
    options.check_backend::<DefaultBackend>(&device)?;
    let mut model = Llama::<DefaultBackend>::from_pretrained(&a.model, options, &device)?;
    if tok.len() > model.config().vocab_size {
        model = model.resize_token_embeddings(tok.len())?;
    }
    if let Some(dir) = &a.adapter {
        check_adapter_tokens(dir, &tok)?;
        model = model.with_peft_adapter(dir)?.0;
        if !a.no_merge {
            model = model.merge_lora();
        }
    }
    let format = match a.format {
        Format::Thesis => PromptFormat::Thesis(ThesisPrompt::new(&a.prompt_template)?),
        Format::Chat => PromptFormat::Chat {
            system: a.system.clone(),
        },
        Format::Instruction => PromptFormat::InstructionResponse,
    };
    let prompts = a
        .prompts
        .iter()
        .map(|p| tok.encode_prompt(&format, p))
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = GenerationConfig {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
        seed: a.seed,
        pad_token_id: tok.token_id("<|end_of_text|>").unwrap_or(0),
        stop_strings: if a.stop_at_svg_close {
            vec!["</svg>".into()]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
    .with_default_stops(&model, Some(&tok));
    let started = std::time::Instant::now();
    let outs = Generator::new(&model, Some(&tok)).generate(&prompts, &cfg)?;
    let secs = started.elapsed().as_secs_f64();
    let new_tokens: usize = outs.iter().map(|o| o.token_ids.len()).sum();
    let texts: Vec<String> = outs
        .iter()
        .map(|o| o.text.clone().unwrap_or_default())
        .collect();
    let (svgs, report) = validate_svgs(&texts, a.repair);
    for (i, (o, svg)) in outs.iter().zip(&svgs).enumerate() {
        println!(
            "--- {} ({:?}, {} tokens)",
            a.prompts[i],
            o.stop_reason,
            o.token_ids.len()
        );
        println!("{}", texts[i]);
        if let (Some(dir), Some(svg)) = (&a.out, svg) {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join(format!("out-{i}.svg")), svg)?;
        }
    }
    println!(
        "valid {} repaired {} invalid {}; {new_tokens} tokens in {secs:.2}s ({:.1} tokens/s)",
        report.valid,
        report.repaired,
        report.invalid,
        new_tokens as f64 / secs.max(1e-9)
    );
    Ok(())
}
