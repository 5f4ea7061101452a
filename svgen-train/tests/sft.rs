//! SFT trainer: JSONL input, long samples filtered (never truncated), falling loss, exact
//! resume after an interruption, NaN stop keeping the last good checkpoint.

mod common;
use burn::backend::Autodiff;
use common::*;
use svgen_train::llama::sft::{read_jsonl, tokenize_pairs, SftConfig, SftTrainer};
use svgen_train::llama::sft::{SftSample, IGNORE_INDEX};
use svgen_train::llama::tokenizer::{LlamaTokenizer, PromptFormat, THESIS_SPECIAL_TOKENS};
use svgen_train::{Llama, LoadOptions, LoraConfig, LoraTarget, TrainError};

type AB = Autodiff<B>;

const PAIRS: &str = r#"{"description": "a red square", "svg": "<svg viewBox=\"0 0 4 4\"><rect width=\"4\" height=\"4\" fill=\"red\"/></svg>"}
{"description": "a blue circle", "svg": "<svg viewBox=\"0 0 8 8\"><circle cx=\"4\" cy=\"4\" r=\"3\" fill=\"blue\"/></svg>"}

{"description": "a green line", "svg": "<svg viewBox=\"0 0 9 9\"><path d=\"M0 0L9 9\" stroke=\"green\"/></svg>"}
{"description": "a black dot", "svg": "<svg viewBox=\"0 0 2 2\"><circle cx=\"1\" cy=\"1\" r=\"1\"/></svg>"}
{"description": "a huge drawing", "svg": "<svg viewBox=\"0 0 99 99\"><path d=\"M1 1L2 2L3 3L4 4L5 5L6 6L7 7L8 8L9 9L10 10L11 11L12 12L13 13L14 14L15 15L16 16L17 17L18 18L19 19L20 20L21 21L22 22L23 23L24 24\"/></svg>"}
"#;

fn data() -> (Vec<SftSample>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pairs.jsonl");
    std::fs::write(&p, PAIRS).unwrap();
    let pairs = read_jsonl(&p).unwrap();
    assert_eq!(pairs.len(), 5);
    let mut tok = LlamaTokenizer::from_dir(fixture("tokenizer")).unwrap();
    tok.add_special_tokens(&THESIS_SPECIAL_TOKENS).unwrap();
    tokenize_pairs(&tok, &PromptFormat::InstructionResponse, &pairs, 96).unwrap()
}

fn base() -> Llama<AB> {
    Llama::<AB>::from_pretrained(
        fixture("llama3-tied"),
        LoadOptions::default(),
        &Default::default(),
    )
    .unwrap()
}

fn lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.1,
        target_modules: [LoraTarget::Q, LoraTarget::V, LoraTarget::Down]
            .into_iter()
            .collect(),
        use_rslora: false,
    }
}

fn cfg() -> SftConfig {
    SftConfig {
        batch_size: 2,
        grad_accum: 2,
        lr: 1e-2,
        weight_decay: 0.01,
        warmup_steps: 2,
        total_steps: 6,
        max_grad_norm: 1.0,
        eval_every: 3,
        checkpoint_every: 3,
        seed: 7,
        ..Default::default()
    }
}

#[test]
fn samples_are_filtered_never_truncated_and_only_svg_counts() {
    let (samples, dropped) = data();
    assert_eq!(dropped, 1, "the long sample is dropped");
    assert_eq!(samples.len(), 4);
    for s in &samples {
        assert!(s.len() <= 96);
        let first = s.labels.iter().position(|&l| l != IGNORE_INDEX).unwrap();
        assert!(first > 0, "the prompt is masked");
        assert!(s.labels[first..].iter().all(|&l| l != IGNORE_INDEX));
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(&p, "{\"description\": \"x\", \"svg\": \"<svg/>\"}\n{oops\n").unwrap();
    match read_jsonl(&p) {
        Err(TrainError::Json { message, .. }) => assert!(message.contains("line 2")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn interrupted_run_resumes_exactly_and_loss_falls() {
    let (train, _) = data();
    let val = train[..2].to_vec();
    let a = tempfile::tempdir().unwrap();
    let model = base().with_lora(&lora(), 1).unwrap();
    let mut straight = SftTrainer::new(model, lora(), cfg(), a.path(), "tiny").unwrap();
    let s = straight.train(&train, &val, None).unwrap();
    assert_eq!(s.steps, 6);
    let log = &straight.state().log;
    assert!(log[5].loss < log[0].loss, "loss falls: {log:?}");
    assert!(log[2].val_loss.is_some() && log[5].val_loss.is_some());
    for f in ["loss_log.csv", "loss_log.json", "loss_curve.png"] {
        assert!(a.path().join(f).is_file(), "{f}");
    }
    assert!(a
        .path()
        .join("checkpoint-3/adapter_model.safetensors")
        .is_file());

    // Same run, "killed" after the step-3 checkpoint, then resumed in a new trainer.
    let b = tempfile::tempdir().unwrap();
    let model = base().with_lora(&lora(), 1).unwrap();
    let mut first = SftTrainer::new(model, lora(), cfg(), b.path(), "tiny").unwrap();
    first.train(&train, &val, Some(3)).unwrap();
    drop(first);
    let mut resumed = SftTrainer::resume(
        base(),
        b.path().join("checkpoint-3"),
        cfg(),
        b.path(),
        "tiny",
    )
    .unwrap();
    assert_eq!(resumed.state().step, 3);
    resumed.train(&train, &val, None).unwrap();
    assert_eq!(resumed.model().lora_state(), straight.model().lora_state());
    assert_eq!(resumed.state().log, {
        let mut l = straight.state().log.clone();
        // Throughput is wall-clock and differs run to run.
        for (x, y) in l.iter_mut().zip(&resumed.state().log) {
            x.tokens_per_s = y.tokens_per_s;
        }
        l
    });
}

#[test]
fn non_finite_loss_stops_with_the_last_good_checkpoint() {
    let (train, _) = data();
    let dir = tempfile::tempdir().unwrap();
    let model = base().with_lora(&lora(), 1).unwrap();
    let cfg = SftConfig {
        lr: 1e30,
        max_grad_norm: 0.0,
        warmup_steps: 0,
        checkpoint_every: 1,
        eval_every: 0,
        total_steps: 20,
        ..cfg()
    };
    let mut t = SftTrainer::new(model, lora(), cfg, dir.path(), "tiny").unwrap();
    match t.train(&train, &[], None) {
        Err(TrainError::NonFiniteLoss {
            step,
            last_checkpoint: Some(ck),
            ..
        }) => {
            assert!(step >= 2);
            assert!(ck.ends_with(format!("checkpoint-{}", step - 1)));
            assert!(ck.join("adapter_model.safetensors").is_file());
        }
        other => panic!("expected NonFiniteLoss, got {other:?}"),
    }
}
