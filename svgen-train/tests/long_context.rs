//! Long-context training: the model's loss through the flash-attention op and the chunked LM
//! head equals the loss over full logits; per-layer activation checkpointing gives the plain
//! run's gradients; packed rows give the loss and gradients of the same samples unpacked; the
//! trainer packs, drops samples longer than `max_len` (counting them) and trains identically
//! with checkpointing; sequences beyond the position range are typed errors.

mod common;

use std::collections::BTreeMap;

use burn::backend::Autodiff;
use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use svgen_core::compare::{assert_close, Tolerance};
use svgen_train::llama::sft::{
    causal_lm_loss, loss_and_grads, sft_loss, SftBatch, SftConfig, SftSample, SftTrainer,
    IGNORE_INDEX,
};
use svgen_train::nn::attention::AttentionMask;
use svgen_train::{KvCache, Llama, LoadOptions, LoraConfig, TrainError};

type AB = Autodiff<B>;

fn model(name: &str, dropout: f64) -> Llama<AB> {
    let lora = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: dropout,
        ..LoraConfig::default()
    };
    Llama::<AB>::from_pretrained(fixture(name), LoadOptions::default(), &Default::default())
        .unwrap()
        .with_lora(&lora, 5)
        .unwrap()
        .try_map_linears(|_, mut lin| {
            // PEFT starts `B` at zero, which makes every `A` gradient zero: start elsewhere so
            // that both halves are compared.
            if let Some(a) = &mut lin.adapter {
                let [r, o] = a.lora_b.val().dims();
                let values: Vec<f32> = (0..r * o)
                    .map(|i| 0.05 * ((i as f32) * 0.618_034).sin())
                    .collect();
                let noise = Tensor::<AB, 2>::from_data(
                    TensorData::new(values, [r, o]),
                    &Default::default(),
                );
                a.lora_b = Param::from_tensor(noise.require_grad());
            }
            Ok(lin)
        })
        .unwrap()
}

/// A sample of `len` tokens whose first `prompt` labels are ignored.
fn sample(len: usize, prompt: usize, seed: i64, vocab: i64) -> SftSample {
    let input_ids: Vec<u32> = (0..len as i64)
        .map(|i| ((i * 37 + seed * 101 + 7) % vocab) as u32)
        .collect();
    let labels = input_ids
        .iter()
        .enumerate()
        .map(|(i, &x)| if i < prompt { IGNORE_INDEX } else { x as i64 })
        .collect();
    SftSample { input_ids, labels }
}

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

type Grads = BTreeMap<String, Vec<f32>>;

fn grads_of(model: &Llama<AB>, batch: &SftBatch, checkpointing: bool) -> (f64, Grads) {
    grads_seeded(model, batch, checkpointing, 11)
}

fn grads_seeded(
    model: &Llama<AB>,
    batch: &SftBatch,
    checkpointing: bool,
    seed: u64,
) -> (f64, Grads) {
    svgen_train::nn::seed_lora_dropout(seed);
    let out = loss_and_grads(model, batch, 1.0, checkpointing).unwrap();
    let loss = out.loss_value();
    let grads = out.grads.into_iter().map(|(k, g)| (k, host(g))).collect();
    (loss, grads)
}

/// Every gradient of `got` against `want` (same keys), relative to each reference's RMS.
fn compare_grads(label: &str, got: &Grads, want: &Grads, tol: f64) -> f64 {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{label}: gradient keys"
    );
    let mut worst = 0.0f64;
    for (key, g) in got {
        let d = assert_close(
            &format!("{label}: {key}"),
            g,
            &want[key],
            Tolerance::rms_relative(tol),
        );
        worst = worst.max(d.value);
    }
    worst
}

#[test]
fn chunked_loss_through_flash_attention_equals_the_full_logits_loss() {
    for name in ["llama3-tied", "llama3-untied-bf16-sharded"] {
        let model = model(name, 0.0);
        let vocab = model.config().vocab_size as i64;
        let samples = [sample(23, 5, 1, vocab), sample(40, 9, 2, vocab)];
        let refs: Vec<&SftSample> = samples.iter().collect();
        let batch = SftBatch::padded(&refs, 0).unwrap();
        // Reference: full logits, log-softmax, gather.
        let ids = Tensor::<AB, 2, Int>::from_data(
            TensorData::new(batch.input_ids.clone(), [batch.batch, batch.seq]),
            &Default::default(),
        );
        let (want, n_want) = causal_lm_loss(model.forward(ids).unwrap(), &batch.labels).unwrap();
        let want_grads = want.clone().backward();
        let (got, n_got) = sft_loss(&model, &batch).unwrap();
        assert_eq!(n_got, n_want);
        assert_eq!(n_got, batch.counted());
        let got_grads = got.clone().backward();
        let (got, want) = (host(got.inner()), host(want.inner()));
        assert_close(
            &format!("{name} loss"),
            &got,
            &want,
            Tolerance::relative(1e-6),
        );
        let collect = |g: &<AB as burn::tensor::backend::AutodiffBackend>::Gradients| -> Grads {
            model
                .linears()
                .into_iter()
                .flat_map(|(path, lin)| {
                    let a = lin.adapter.as_ref().unwrap();
                    [("lora_A", &a.lora_a), ("lora_B", &a.lora_b)]
                        .map(|(half, p)| (format!("{path}.{half}"), host(p.grad(g).unwrap())))
                })
                .collect()
        };
        let worst = compare_grads(name, &collect(&got_grads), &collect(&want_grads), 1e-5);
        println!("{name}: chunked vs full logits: loss {got:?} vs {want:?}, grads {worst:.2e}");
    }
}

#[test]
fn checkpointing_gives_the_plain_gradients() {
    for (name, dropout) in [("llama3-tied", 0.0), ("llama3-untied-bf16-sharded", 0.1)] {
        let model = model(name, dropout);
        let vocab = model.config().vocab_size as i64;
        let samples = [
            sample(31, 4, 3, vocab),
            sample(12, 3, 4, vocab),
            sample(20, 6, 5, vocab),
        ];
        let refs: Vec<&SftSample> = samples.iter().collect();
        for (what, batch) in [
            ("padded", SftBatch::padded(&refs, 0).unwrap()),
            (
                "packed",
                SftBatch::packed(&[vec![refs[0], refs[1]], vec![refs[2]]], 0).unwrap(),
            ),
        ] {
            let (plain_loss, plain) = grads_of(&model, &batch, false);
            let (ck_loss, ck) = grads_of(&model, &batch, true);
            assert_eq!(plain.len(), model.linears().len() * 2, "every adapter");
            assert!((plain_loss - ck_loss).abs() <= 1e-6 * plain_loss.abs());
            let worst = compare_grads(&format!("{name} {what}"), &ck, &plain, 1e-6);
            if dropout > 0.0 {
                // The masks matter: other masks give other gradients, so the agreement above
                // comes from the recomputation replaying the forward pass's masks.
                let (_, other) = grads_seeded(&model, &batch, true, 12);
                let key = plain.keys().find(|k| k.ends_with("lora_B")).unwrap();
                assert!(Tolerance::rms_relative(1e-3)
                    .check("other masks", &other[key], &plain[key])
                    .is_err());
            }
            println!("{name} {what} (dropout {dropout}): checkpointed vs plain grads {worst:.2e}");
        }
    }
}

#[test]
fn packed_rows_give_the_unpacked_loss_and_gradients() {
    let model = model("llama3-tied", 0.0);
    let vocab = model.config().vocab_size as i64;
    let samples: Vec<SftSample> = [(17, 4), (9, 2), (30, 8), (5, 1), (22, 6)]
        .iter()
        .enumerate()
        .map(|(i, &(len, prompt))| sample(len, prompt, i as i64 + 10, vocab))
        .collect();
    let refs: Vec<&SftSample> = samples.iter().collect();
    let unpacked = SftBatch::padded(&refs, 0).unwrap();
    let packed = SftBatch::packed(
        &[vec![refs[0], refs[1], refs[3]], vec![refs[2], refs[4]]],
        3,
    )
    .unwrap();
    assert_eq!(packed.batch, 2);
    assert_eq!(packed.seq, 52);
    assert_eq!(
        packed.cu_seqlens,
        vec![vec![0, 17, 26, 31], vec![0, 30, 52]]
    );
    assert_eq!(&packed.position_ids[17..20], &[0, 1, 2]);
    assert_eq!(
        packed.labels[17], IGNORE_INDEX,
        "no target crosses a sample boundary"
    );
    assert_eq!(packed.counted(), unpacked.counted());
    assert_eq!(packed.tokens, unpacked.tokens);
    let (loss_u, grads_u) = grads_of(&model, &unpacked, false);
    let (loss_p, grads_p) = grads_of(&model, &packed, false);
    assert!(
        (loss_u - loss_p).abs() <= 1e-5 * loss_u.abs(),
        "packed {loss_p} vs unpacked {loss_u}"
    );
    let worst = compare_grads("packed vs unpacked", &grads_p, &grads_u, 1e-5);
    println!("packed {loss_p} vs unpacked {loss_u}; grads {worst:.2e}");
}

fn trainer_cfg(checkpointing: bool, packing: bool, max_len: usize) -> SftConfig {
    SftConfig {
        batch_size: 2,
        grad_accum: 2,
        lr: 1e-2,
        total_steps: 3,
        seed: 3,
        gradient_checkpointing: checkpointing,
        packing,
        max_len,
        ..SftConfig::default()
    }
}

#[test]
fn trainer_packs_drops_long_samples_and_checkpointing_changes_nothing() {
    let vocab = 320;
    let train: Vec<SftSample> = (0..10)
        .map(|i| sample(10 + 7 * i, 3, i as i64, vocab))
        .collect();
    // max_len 60: the samples of 66 and 73 tokens are dropped, never truncated.
    let run = |checkpointing: bool, packing: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut t = SftTrainer::new(
            model("llama3-tied", 0.1),
            LoraConfig::default(),
            trainer_cfg(checkpointing, packing, 60),
            dir.path(),
            "tiny",
        )
        .unwrap();
        t.train(&train, &[], None).unwrap();
        assert_eq!(t.dropped(), 2);
        t.state().log.clone()
    };
    let plain = run(false, true);
    let ck = run(true, true);
    assert_eq!(plain.len(), 3);
    assert_eq!(ck.len(), plain.len());
    for (a, b) in plain.iter().zip(&ck) {
        assert!((a.loss - b.loss).abs() <= 1e-6 * a.loss, "{a:?} vs {b:?}");
        assert!((a.grad_norm - b.grad_norm).abs() <= 1e-5 * a.grad_norm);
        assert_eq!(a.tokens, b.tokens);
    }
    // Packed micro-batches hold more tokens than two unpacked samples.
    let unpacked = run(false, false);
    let packed_tokens: usize = plain.iter().map(|e| e.tokens).sum();
    let unpacked_tokens: usize = unpacked.iter().map(|e| e.tokens).sum();
    assert!(
        packed_tokens > unpacked_tokens,
        "{packed_tokens} <= {unpacked_tokens}"
    );
    // Every sample too long: a typed error, not an empty run.
    let dir = tempfile::tempdir().unwrap();
    let mut t = SftTrainer::new(
        model("llama3-tied", 0.0),
        LoraConfig::default(),
        trainer_cfg(false, true, 8),
        dir.path(),
        "tiny",
    )
    .unwrap();
    assert!(matches!(
        t.train(&train, &[], None),
        Err(TrainError::InvalidArgument(_))
    ));
}

#[test]
fn positions_beyond_the_range_are_typed_errors() {
    // llama3-tied: max_position_embeddings 256 (= 8 × 32 original positions).
    let model = load("llama3-tied");
    assert_eq!(model.config().max_positions(), 256);
    let ids = |n: usize| {
        Tensor::<B, 2, Int>::from_data(
            TensorData::new((0..n as i64).map(|i| i % 300).collect::<Vec<_>>(), [1, n]),
            &Default::default(),
        )
    };
    assert!(model.forward(ids(256)).is_ok());
    match model.forward(ids(257)) {
        Err(TrainError::SequenceTooLong { positions, limit }) => {
            assert_eq!((positions, limit), (257, 256))
        }
        other => panic!("{:?}", other.map(|t| t.dims())),
    }
    // Packed rows may be longer than the range: positions restart per sample.
    let positions: Vec<i64> = (0..300).map(|i| i % 150).collect();
    let mask = AttentionMask::causal().with_cu_seqlens(vec![vec![0, 150, 300]]);
    assert!(model.hidden_states(ids(300), &positions, &mask).is_ok());
    // A KV cache that would outgrow the range.
    let mut cache = KvCache::<B>::new(model.layers.len(), 1);
    model
        .forward_cached(ids(250), &[vec![true; 250]], &mut cache)
        .unwrap();
    assert!(matches!(
        model.forward_cached(ids(7), &[vec![true; 7]], &mut cache),
        Err(TrainError::SequenceTooLong {
            positions: 257,
            limit: 256
        })
    ));
    // The trainer refuses such a sample with the same error.
    let dir = tempfile::tempdir().unwrap();
    let long = vec![sample(300, 10, 1, 320)];
    let mut t = SftTrainer::new(
        self::model("llama3-tied", 0.0),
        LoraConfig::default(),
        trainer_cfg(false, true, 512),
        dir.path(),
        "tiny",
    )
    .unwrap();
    assert!(matches!(
        t.train(&long, &[], None),
        Err(TrainError::SequenceTooLong { .. })
    ));
}
