//! SFT input from svgen-data: a `PairDataset` (here an icon folder with `@tabler/icons`
//! metadata) becomes training samples, and the trainer runs on them.

mod common;
use burn::backend::Autodiff;
use common::*;
use svgen_data::pairs::{IconMetadata, PairDataset};
use svgen_train::llama::sft::{pairs_from_dataset, tokenize_pairs, Pair, SftConfig, SftTrainer};
use svgen_train::llama::tokenizer::{LlamaTokenizer, PromptFormat, THESIS_SPECIAL_TOKENS};
use svgen_train::{Llama, LoadOptions, LoraConfig, LoraTarget};

type AB = Autodiff<B>;

const ICONS_JSON: &str = r#"{
  "square": {"name": "square", "category": "Shapes", "tags": ["box", "block"]},
  "circle": {"name": "circle", "category": "Shapes", "tags": ["round"]},
  "dot": {"name": "dot", "category": "Shapes", "tags": ["point"]}
}"#;

const ICONS: [(&str, &str); 4] = [
    (
        "square",
        r#"<svg viewBox="0 0 4 4"><rect width="4" height="4" fill="red"/></svg>"#,
    ),
    (
        "circle",
        r#"<svg viewBox="0 0 8 8"><circle cx="4" cy="4" r="3" fill="blue"/></svg>"#,
    ),
    (
        "dot",
        r#"<svg viewBox="0 0 2 2"><circle cx="1" cy="1" r="1"/></svg>"#,
    ),
    (
        "zigzag",
        r#"<svg viewBox="0 0 9 9"><path d="M0 0L3 9L6 0L9 9" stroke="green"/></svg>"#,
    ),
];

/// An icon folder plus metadata in a temp dir, loaded through svgen-data.
fn icon_dataset() -> PairDataset {
    let dir = tempfile::tempdir().unwrap();
    let svg_dir = dir.path().join("filled");
    std::fs::create_dir(&svg_dir).unwrap();
    for (name, svg) in ICONS {
        std::fs::write(svg_dir.join(format!("{name}.svg")), svg).unwrap();
    }
    std::fs::write(svg_dir.join("notes.txt"), "not an icon").unwrap();
    let meta_path = dir.path().join("icons.json");
    std::fs::write(&meta_path, ICONS_JSON).unwrap();
    let meta = IconMetadata::tabler(&meta_path).unwrap();
    PairDataset::from_icon_folder(&svg_dir, &meta, None).unwrap()
}

#[test]
fn pair_dataset_converts_in_order_with_descriptions() {
    let ds = icon_dataset();
    let expected: Vec<Pair> = ds.iter().cloned().collect();
    let pairs = pairs_from_dataset(ds);
    assert_eq!(pairs, expected);
    // Sorted by file name, described from the metadata (zigzag has none: name only).
    let names: Vec<&str> = pairs
        .iter()
        .map(|p| p.description.split(" icon").next().unwrap())
        .collect();
    assert_eq!(names, ["circle", "dot", "square", "zigzag"]);
    assert!(pairs[2].description.contains("category: Shapes"));
    assert!(pairs[2].description.contains("box"));
    assert_eq!(pairs[3].description, "zigzag icon");
    assert_eq!(pairs[2].svg, ICONS[0].1);
}

#[test]
fn trainer_runs_on_a_pair_dataset() {
    let pairs = pairs_from_dataset(icon_dataset());
    let mut tok = LlamaTokenizer::from_dir(fixture("tokenizer")).unwrap();
    tok.add_special_tokens(&THESIS_SPECIAL_TOKENS).unwrap();
    let (samples, dropped) =
        tokenize_pairs(&tok, &PromptFormat::InstructionResponse, &pairs, 128).unwrap();
    assert_eq!((samples.len(), dropped), (4, 0));

    let lora = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        target_modules: [LoraTarget::Q, LoraTarget::V].into_iter().collect(),
        use_rslora: false,
    };
    let cfg = SftConfig {
        batch_size: 2,
        grad_accum: 1,
        lr: 1e-2,
        warmup_steps: 0,
        total_steps: 2,
        eval_every: 2,
        checkpoint_every: 2,
        seed: 3,
        ..Default::default()
    };
    let base = Llama::<AB>::from_pretrained(
        fixture("llama3-tied"),
        LoadOptions::default(),
        &Default::default(),
    )
    .unwrap();
    let before = base.clone().with_lora(&lora, 1).unwrap().lora_state();
    let model = base.with_lora(&lora, 1).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut trainer = SftTrainer::new(model, lora, cfg, out.path(), "tiny").unwrap();
    let summary = trainer.train(&samples, &samples[..1], None).unwrap();
    assert_eq!(summary.steps, 2);
    let log = &trainer.state().log;
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|e| e.loss.is_finite() && e.loss > 0.0));
    assert!(log[1].val_loss.is_some_and(f64::is_finite));
    assert_ne!(trainer.model().lora_state(), before, "the adapters moved");
    assert!(out
        .path()
        .join("checkpoint-2/adapter_model.safetensors")
        .is_file());
}

/// MMSVG-Icon as in the thesis: the Parquet rows through svgen-data, the thesis' prompt format
/// on the real Llama 3 tokenizer layout, pairs filtered by SVG (and description) token count —
/// dropped, never truncated — and every kept sample holding its whole SVG and `<|end_svg|>`.
#[test]
fn mmsvg_icon_pairs_in_the_thesis_format_are_filtered_by_token_count_never_truncated() {
    use svgen_train::llama::sft::{tokenize_pairs_limited, LengthLimits, IGNORE_INDEX};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../svgen-data/tests/fixtures/mmsvg/mmsvg-icon.parquet");
    let ds = PairDataset::from_mmsvg_parquet(&path, None).unwrap();
    assert_eq!(ds.skipped.len(), 1, "the row without a description");
    let pairs = pairs_from_dataset(ds);
    assert_eq!(pairs.len(), 3);
    let mut tok = LlamaTokenizer::from_dir(fixture("llama3-layout/tokenizer")).unwrap();
    tok.ensure_thesis_tokens().unwrap();
    let limits = LengthLimits {
        max_svg_tokens: 400,
        max_description_tokens: 32,
        max_len: 512,
    };
    let format = PromptFormat::default();
    let (samples, report) = tokenize_pairs_limited(&tok, &format, &pairs, &limits).unwrap();
    assert_eq!((report.kept, report.long_svg, report.dropped()), (2, 1, 1));
    assert!(report.to_string().contains("1 long SVGs"), "{report}");
    let end_svg = tok.token_id("<|end_svg|>").unwrap();
    let kept: Vec<&Pair> = pairs.iter().filter(|p| p.svg.len() < 2000).collect();
    for (s, p) in samples.iter().zip(kept) {
        let first = s.labels.iter().position(|&l| l != IGNORE_INDEX).unwrap();
        assert_eq!(
            &s.input_ids[..first],
            tok.encode_prompt(&format, &p.description)
                .unwrap()
                .as_slice()
        );
        assert_eq!(*s.input_ids.last().unwrap(), end_svg);
        // The whole SVG, nothing cut.
        let svg = tok.decode(&s.input_ids[first..s.len() - 1], false).unwrap();
        assert_eq!(svg, p.svg);
    }
    // A tighter description limit drops by description first.
    let strict = LengthLimits {
        max_description_tokens: 3,
        ..limits
    };
    let (_, r) = tokenize_pairs_limited(&tok, &format, &pairs, &strict).unwrap();
    assert_eq!(r.kept + r.long_description + r.long_svg, 3);
    assert!(r.long_description >= 2, "{r}");
}
