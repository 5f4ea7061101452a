//! It learns, end to end: the default dataset built through svgen-data (captions → rendered
//! icons → Potrace → shards), target SVGs kept short with `fit_to_budget` under the model's own
//! tokenizer, a tiny Llama 3-layout model (tokenizer length == vocab_size, so the thesis tokens
//! resize it) fine-tuned with LoRA and trainable token rows in the thesis' prompt format until it
//! memorises a handful of pairs, then greedy generation from a training caption that stops by
//! itself at `<|end_svg|>` and draws the target (ink IoU ≥ 0.9).
//!
//! Sized for CI on two cores with the test profile (our crates at opt-level 1): STEPS steps of
//! one batch of PAIRS ~130-token sequences on a 2-layer, 64-wide model (about 20 s on a loaded
//! two-core machine). Everything is seeded; the pairs are chosen in id order.

mod common;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use common::{fixture, B};
use svgen_core::{compare_svgs, fit_to_budget, Svg};
use svgen_data::pairs::PairDataset;
use svgen_data::{default_job, prompt::PromptTemplate, stages, PipelineConfig, Stages};
use svgen_train::llama::generate::StopReason;
use svgen_train::llama::sft::{tokenize_pairs, Pair, SftConfig, SftTrainer};
use svgen_train::llama::tokenizer::{LlamaTokenizer, PromptFormat, END_SVG};
use svgen_train::llama::trainable_tokens::TrainableTokenIndices;
use svgen_train::{GenerationConfig, Generator, Llama, LoadOptions, LoraConfig, LoraTarget};

type AB = Autodiff<B>;

/// Pairs memorised.
const PAIRS: usize = 4;
/// Token budget of a target SVG under the model's tokenizer.
const SVG_BUDGET: usize = 100;
/// Optimiser steps (one batch of all pairs each).
const STEPS: usize = 200;

#[test]
fn a_tiny_llama_learns_the_default_dataset_and_stops_at_end_svg() {
    let started = Instant::now();
    let mut tok = LlamaTokenizer::from_dir(fixture("llama3-layout/tokenizer")).unwrap();
    let report = tok.ensure_thesis_tokens().unwrap();
    assert_eq!(
        report.added.len(),
        3,
        "the real layout lacks the thesis tokens"
    );

    // 1. The default dataset, through the library.
    let data_dir = tempfile::tempdir().unwrap();
    let stages = Stages {
        simplifier: None,
        template: PromptTemplate::silhouette(),
        generator: Box::new(default_job::image_source(64, 4)),
        tracer: Box::new(stages::PotraceTracer::default()),
        counter: Box::new(stages::Cl100k::new()),
        clip: None,
        aesthetic: None,
    };
    let mut cfg = PipelineConfig::new(data_dir.path());
    cfg.cpu_workers = 2;
    cfg.network_workers = 1;
    cfg.limit = Some(12);
    let summary = svgen_data::run(&mut default_job::caption_source(), &stages, &cfg).unwrap();
    assert!(summary.written >= PAIRS, "{summary:?}");
    let mut rows = PairDataset::from_shards(data_dir.path(), None)
        .unwrap()
        .into_pairs();
    // Workers finish in any order: sort for a deterministic choice.
    rows.sort_by(|a, b| a.id.cmp(&b.id));

    // 2. Short targets: the most faithful compaction within the budget.
    let mut pairs: Vec<Pair> = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    for p in rows {
        let Ok(svg) = Svg::parse(p.svg.as_bytes()) else {
            continue;
        };
        // Icons that need more tokens than the budget are skipped, never truncated.
        let Ok(fitted) = fit_to_budget(&svg, &tok, SVG_BUDGET, 1.0) else {
            continue;
        };
        targets.push(fitted.svg.clone());
        pairs.push(Pair::new(p.description, fitted.svg));
        if pairs.len() == PAIRS {
            break;
        }
    }
    assert_eq!(
        pairs.len(),
        PAIRS,
        "not enough icons fit {SVG_BUDGET} tokens"
    );
    let format = PromptFormat::default();
    let (samples, dropped) = tokenize_pairs(&tok, &format, &pairs, 512).unwrap();
    assert_eq!((samples.len(), dropped), (PAIRS, 0));
    let prepared = started.elapsed();

    // 3. LoRA + trainable rows of the three new tokens on the resized model.
    let base = Llama::<AB>::from_pretrained(
        fixture("llama3-layout/tied"),
        LoadOptions::default(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(base.config().vocab_size, 768);
    let base = base.resize_token_embeddings(tok.len()).unwrap();
    let lora = LoraConfig {
        r: 16,
        lora_alpha: 32.0,
        lora_dropout: 0.0,
        target_modules: LoraTarget::ALL.into_iter().collect(),
        use_rslora: false,
    };
    let new_ids: Vec<u32> = ["<|ctx|>", "<|objs|>", END_SVG]
        .iter()
        .map(|t| tok.token_id(t).unwrap())
        .collect();
    let model = base
        .with_lora(&lora, 11)
        .unwrap()
        .with_trainable_tokens(&TrainableTokenIndices::new_tokens(&new_ids))
        .unwrap();
    let sft = SftConfig {
        batch_size: PAIRS,
        lr: 1e-2,
        warmup_steps: 10,
        total_steps: STEPS,
        max_grad_norm: 1.0,
        seed: 5,
        pad_id: tok.token_id("<|end_of_text|>").unwrap(),
        ..SftConfig::default()
    };
    let out = tempfile::tempdir().unwrap();
    let mut trainer = SftTrainer::new(model, lora, sft, out.path(), "llama3-layout/tied").unwrap();
    trainer.train(&samples, &[], None).unwrap();
    let log = &trainer.state().log;
    let (first, last) = (log[0].loss, log[log.len() - 1].loss);
    let trained = started.elapsed();

    // 4. Greedy generation from each training caption stops by itself at <|end_svg|>.
    let model = trainer.model().valid();
    let end_svg = tok.token_id(END_SVG).unwrap();
    let gen = GenerationConfig {
        max_new_tokens: SVG_BUDGET + 24,
        stop_strings: Vec::new(),
        ..GenerationConfig::default()
    }
    .with_default_stops(&model, Some(&tok));
    let prompts: Vec<Vec<u32>> = pairs
        .iter()
        .map(|p| tok.encode_prompt(&format, &p.description).unwrap())
        .collect();
    let outs = Generator::new(&model, Some(&tok))
        .generate(&prompts, &gen)
        .unwrap();
    let mut ious = Vec::new();
    for (o, target) in outs.iter().zip(&targets) {
        assert_eq!(o.stop_reason, StopReason::StopToken, "{:?}", o.text);
        assert_eq!(o.token_ids.last(), Some(&end_svg), "{:?}", o.text);
        let text = o.text.as_deref().unwrap();
        let svg = Svg::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"));
        println!("{text}");
        let want = Svg::parse(target.as_bytes()).unwrap();
        ious.push(compare_svgs(&want, &svg, 128).ink_iou);
    }
    println!(
        "loss {first:.3} -> {last:.3} in {STEPS} steps; ink IoU {ious:?}; data {:.1}s, \
         training {:.1}s, total {:.1}s",
        prepared.as_secs_f64(),
        (trained - prepared).as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // The fixture's frozen output rows are random and small (|h|·|e| ≲ 5), which bounds the
    // logit range: even with every greedy token right, the loss floors near
    // ln(1 + 770/e^5) ≈ 1.8 (the correct token holds ~15% of the mass, no other over 0.2%).
    assert!(first > 5.0 && last < 2.0, "loss {first} -> {last}");
    assert!(ious.iter().all(|&x| x >= 0.9), "ink IoU {ious:?}");
}
