//! Mixed precision on Flex: a `bf16` base with `f32` LoRA adapters against an `f32` reference
//! holding the very same (bf16-representable) weights, so only the compute precision differs.
//! The base checkpoint `llama3-untied-bf16-sharded` is stored in bf16: loaded as f32 it is the
//! reference, loaded as bf16 it is the model under test.
//!
//! **Tolerances.** bf16 keeps 8 significant bits: rounding to nearest has a relative error of at
//! most `u = 2⁻⁹ ≈ 1.95e-3`, and about `u/√3 ≈ 1.1e-3` RMS for values spread over a binade.
//! Every stored activation of a decoder layer is rounded (norm output, q, k, v after RoPE,
//! attention output, o_proj, gate, up, their product, down_proj, both residual sums: ~12), and
//! the base matmuls accumulate in f32 but round their outputs. Independent roundings add like
//! a random walk, so after the fixture's 2 layers (~24 roundings) the hidden states carry an
//! RMS relative error of about `√24 · 1.1e-3 ≈ 5.5e-3`; the final norm and the LM head (one
//! more rounding) keep that scale. Each check bounds the RMS of the error and its largest
//! value, both relative to the reference's RMS (constants below, derived from that estimate;
//! the measured figures are printed: about 1e-2 RMS and 4e-2 largest for logits, 2.2e-2 and
//! 8.4e-2 for gradients).

mod common;

use burn::backend::Autodiff;
use burn::module::Param;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Int, Tensor, TensorData};
use common::*;
use svgen_core::compare::{self, assert_close, Tolerance};
use svgen_train::llama::sft::{loss_and_grads, SftBatch, SftConfig, SftSample, SftTrainer};
use svgen_train::weights::read_safetensors;
use svgen_train::{KvCache, Llama, LoadOptions, LoraConfig, LoraLinear, TrainError};

type AB = Autodiff<B>;

/// Logits: RMS error (≈ 3.6× the random-walk estimate of the module documentation).
const FWD_RMS: f64 = 2e-2;
/// Logits: largest error. The maximum of ~10⁴ near-Gaussian errors is about 4 of their RMS.
const FWD_MAX: f64 = 4.0 * FWD_RMS;
/// Gradients: the forward pass's roundings and the backward pass's own, twice the forward's.
const GRAD_RMS: f64 = 2.0 * FWD_RMS;
/// Gradients: largest error, 4 of their RMS as above.
const GRAD_MAX: f64 = 4.0 * GRAD_RMS;

const NAME: &str = "llama3-untied-bf16-sharded";

fn load_as<Bk: Backend>(dtype: DType) -> Llama<Bk> {
    Llama::<Bk>::from_pretrained(fixture(NAME), LoadOptions { dtype }, &Default::default()).unwrap()
}

fn ids<Bk: Backend>(rows: &[Vec<i64>]) -> Tensor<Bk, 2, Int> {
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_data(TensorData::new(rows.concat(), [b, t]), &Default::default())
}

fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// A bf16 result against its f32 reference: the RMS of the error and its maximum, both relative
/// to the reference's RMS. Fails (NaN-safe, length-checked) unless they are within `rms_tol` and
/// `max_tol`; returns them.
fn check_bf16(what: &str, got: &[f32], want: &[f32], rms_tol: f64, max_tol: f64) -> [f64; 2] {
    let max = assert_close(what, got, want, Tolerance::rms_relative(max_tol)).value;
    let diff: Vec<f64> = got
        .iter()
        .zip(want)
        .map(|(a, b)| *a as f64 - *b as f64)
        .collect(); // lengths and finiteness checked above
    let rms = compare::rms(&diff).unwrap() / compare::rms(want).unwrap();
    assert!(
        rms <= rms_tol,
        "{what}: RMS error {rms:.2e} of the reference's RMS > {rms_tol:e}"
    );
    [rms, max]
}

fn lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        ..LoraConfig::default()
    }
}

/// Adapters with a nonzero `B` (PEFT starts it at zero, which would make the LoRA branch and
/// every `A` gradient vanish), identical in both precisions.
fn with_adapters<Bk: Backend>(model: Llama<Bk>) -> Llama<Bk> {
    model
        .with_lora(&lora(), 9)
        .unwrap()
        .try_map_linears(|_, mut lin| {
            if let Some(a) = &mut lin.adapter {
                let [r, o] = a.lora_b.val().dims();
                let v: Vec<f32> = (0..r * o).map(|i| 0.05 * (i as f32 * 0.7).cos()).collect();
                let b = Tensor::<Bk, 2>::from_data(TensorData::new(v, [r, o]), &Default::default());
                a.lora_b = Param::from_tensor(b);
            }
            Ok(lin)
        })
        .unwrap()
}

#[test]
fn bf16_forward_with_f32_adapters_matches_the_f32_reference() {
    let reference = with_adapters(load_as::<B>(DType::F32));
    let model = with_adapters(load_as::<B>(DType::BF16));
    assert_eq!(model.dtype(), DType::BF16);
    for (_, lin) in model.linears() {
        let a = lin.adapter.as_ref().unwrap();
        assert_eq!(lin.weight.val().dtype(), DType::BF16, "base stays bf16");
        assert_eq!(a.lora_a.val().dtype(), DType::F32, "adapters are f32");
        assert_eq!(a.lora_b.val().dtype(), DType::F32);
    }
    let rows = vec![(0..40).map(|i| (i * 13 + 5) % 300).collect::<Vec<i64>>()];
    let want = host(reference.forward(ids(&rows)).unwrap());
    let got = model.forward(ids(&rows)).unwrap();
    assert_eq!(got.dtype(), DType::BF16);
    let [rms, max] = check_bf16("bf16 logits", &host(got), &want, FWD_RMS, FWD_MAX);
    println!("forward: bf16 vs f32 logits, error RMS {rms:.2e}, max {max:.2e} of the RMS");

    // Merging casts s·A·B to the base dtype; the merged model computes the same logits.
    let merged = model.clone().merge_lora();
    for (_, lin) in merged.linears() {
        assert_eq!(lin.weight.val().dtype(), DType::BF16);
        assert!(lin.adapter.is_none());
    }
    let got = host(merged.forward(ids(&rows)).unwrap());
    let [rms, max] = check_bf16("merged bf16 logits", &got, &want, FWD_RMS, FWD_MAX);
    println!("merged: bf16 vs f32 logits, error RMS {rms:.2e}, max {max:.2e} of the RMS");
}

#[test]
fn bf16_kv_cache_decoding_matches_the_f32_reference() {
    let reference = with_adapters(load_as::<B>(DType::F32));
    let model = with_adapters(load_as::<B>(DType::BF16));
    let layers = model.layers.len();
    // Two rows, the second left-padded by 3.
    let prompt = vec![
        (0..12).map(|i| (i * 7 + 3) % 300).collect::<Vec<i64>>(),
        (0..12).map(|i| (i * 11 + 1) % 300).collect(),
    ];
    let mask = vec![vec![true; 12], (0..12).map(|i| i >= 3).collect()];
    let mut cache_ref = KvCache::<B>::new(layers, 2);
    let mut cache = KvCache::<B>::new(layers, 2);
    let h_ref = reference
        .forward_cached(ids(&prompt), &mask, &mut cache_ref)
        .unwrap();
    let h = model
        .forward_cached(ids(&prompt), &mask, &mut cache)
        .unwrap();
    let mut step_ref = host(reference.logits(h_ref.narrow(1, 11, 1)));
    let mut step = host(model.logits(h.narrow(1, 11, 1)));
    let vocab = reference.config().vocab_size;
    let mut worst = [0.0f64; 2];
    let (mut agree, mut decisive) = (0, 0);
    for t in 0..20 {
        let what = format!("decode step {t}");
        let d = check_bf16(&what, &step, &step_ref, FWD_RMS, FWD_MAX);
        worst = [worst[0].max(d[0]), worst[1].max(d[1])];
        // Teacher-forced on the reference's greedy tokens; count agreements where the
        // reference's top-2 margin exceeds the tolerance.
        let mut next = Vec::new();
        for row in 0..2 {
            let r = &step_ref[row * vocab..(row + 1) * vocab];
            let b = &step[row * vocab..(row + 1) * vocab];
            let argmax = |v: &[f32]| {
                (0..v.len())
                    .max_by(|&i, &j| v[i].total_cmp(&v[j]))
                    .unwrap_or(0)
            };
            let best = argmax(r);
            let mut sorted = r.to_vec();
            sorted.sort_by(|x, y| y.total_cmp(x));
            let rms = (r.iter().map(|x| (x * x) as f64).sum::<f64>() / vocab as f64).sqrt();
            if (sorted[0] - sorted[1]) as f64 > 2.0 * FWD_MAX * rms {
                decisive += 1;
                agree += usize::from(argmax(b) == best);
            }
            next.push(vec![best as i64]);
        }
        let h_ref = reference
            .forward_cached(ids(&next), &[vec![true], vec![true]], &mut cache_ref)
            .unwrap();
        let h = model
            .forward_cached(ids(&next), &[vec![true], vec![true]], &mut cache)
            .unwrap();
        step_ref = host(reference.logits(h_ref));
        step = host(model.logits(h));
    }
    println!(
        "decode: 20 cached steps × 2 rows, error RMS {:.2e}, max {:.2e} of the RMS (worst \
         step); greedy tokens agree {agree}/{decisive} where the reference's margin is decisive",
        worst[0], worst[1]
    );
    assert_eq!(agree, decisive, "decisive greedy tokens must agree");
    assert!(
        decisive >= 10,
        "the check compares tokens: {decisive} of 40"
    );
}

fn sample(len: usize, seed: i64) -> SftSample {
    let input_ids: Vec<u32> = (0..len as i64)
        .map(|i| ((i * 29 + seed * 17 + 3) % 300) as u32)
        .collect();
    let labels = input_ids
        .iter()
        .enumerate()
        .map(|(i, &x)| if i < 4 { -100 } else { x as i64 })
        .collect();
    SftSample { input_ids, labels }
}

fn grads<Bk: AutodiffBackend>(model: &Llama<Bk>, batch: &SftBatch) -> Vec<(String, Vec<f32>)> {
    loss_and_grads(model, batch, 1.0, false)
        .unwrap()
        .grads
        .into_iter()
        .map(|(k, g)| {
            assert_eq!(g.dtype(), DType::F32, "{k}: gradients are f32");
            (k, host(g))
        })
        .collect()
}

#[test]
fn bf16_lora_adamw_step_keeps_f32_state_and_matches_the_f32_reference() {
    let reference = with_adapters(load_as::<AB>(DType::F32));
    let model = with_adapters(load_as::<AB>(DType::BF16));
    let samples = [sample(30, 1), sample(18, 2), sample(25, 3)];
    let refs: Vec<&SftSample> = samples.iter().collect();
    let batch = SftBatch::packed(&[vec![refs[0], refs[1]], vec![refs[2]]], 0).unwrap();
    let (want, got) = (grads(&reference, &batch), grads(&model, &batch));
    assert_eq!(want.len(), got.len());
    let mut worst = [0.0f64; 2];
    for ((key, w), (key2, g)) in want.iter().zip(&got) {
        assert_eq!(key, key2);
        let d = check_bf16(&format!("gradient {key}"), g, w, GRAD_RMS, GRAD_MAX);
        worst = [worst[0].max(d[0]), worst[1].max(d[1])];
    }
    println!(
        "step: bf16 vs f32 adapter gradients, error RMS {:.2e}, max {:.2e} of the RMS (worst \
         matrix)",
        worst[0], worst[1]
    );

    // Three AdamW steps through the trainer; the state stays f32 (the trainer's AdamW refuses
    // anything else with a typed error), and the moments match the reference's.
    let cfg = SftConfig {
        batch_size: 2,
        lr: 1e-3,
        total_steps: 3,
        max_grad_norm: 0.0,
        ..SftConfig::default()
    };
    let run = |model: Llama<AB>| {
        let dir = tempfile::tempdir().unwrap();
        let mut t = SftTrainer::new(model, lora(), cfg.clone(), dir.path(), "bf16").unwrap();
        t.train(&samples, &[], None).unwrap();
        for (_, lin) in t.model().linears() {
            let a = lin.adapter.as_ref().unwrap();
            assert_eq!(a.lora_a.val().dtype(), DType::F32);
            assert_eq!(a.lora_b.val().dtype(), DType::F32);
        }
        let opt = read_safetensors(dir.path().join("checkpoint-3/optimizer.safetensors")).unwrap();
        let losses: Vec<f64> = t.state().log.iter().map(|e| e.loss).collect();
        (opt, losses)
    };
    let (opt_ref, loss_ref) = run(reference);
    let (opt, loss) = run(model);
    let mut worst = [[0.0f64; 2]; 2];
    for (key, want) in &opt_ref {
        let which = usize::from(key.starts_with("exp_avg_sq."));
        // exp_avg_sq holds squared gradients: twice their relative error on average, and at
        // the largest gradients `2·g·e` against the RMS of `g²` (√3σ² for Gaussian `g`, with
        // `|g|` up to 4σ) is up to 4× the gradients' largest relative error.
        let [rms_scale, max_scale] = [[1.0, 1.0], [2.0, 4.0]][which];
        let got = opt[key].clone().into_f32(key).unwrap();
        let want = want.clone().into_f32(key).unwrap();
        let d = check_bf16(key, &got, &want, rms_scale * GRAD_RMS, max_scale * GRAD_MAX);
        worst[which] = [worst[which][0].max(d[0]), worst[which][1].max(d[1])];
    }
    assert_close("losses", &loss, &loss_ref, Tolerance::relative(2e-2));
    println!(
        "AdamW: exp_avg error RMS {:.2e} max {:.2e}, exp_avg_sq error RMS {:.2e} max {:.2e}; \
         losses {loss:?} vs {loss_ref:?}",
        worst[0][0], worst[0][1], worst[1][0], worst[1][1]
    );
}

#[test]
fn mixed_dtypes_are_typed_errors() {
    let dev = Default::default();
    let w = Tensor::<B, 2>::zeros([8, 4], (&dev, DType::F32));
    let lin = LoraLinear::new(Param::from_tensor(w));
    let x = Tensor::<B, 3>::zeros([1, 2, 8], (&dev, DType::BF16));
    match lin.try_forward(x) {
        Err(TrainError::DtypeMismatch {
            op,
            left_dtype,
            right_dtype,
            ..
        }) => {
            assert_eq!(op, "linear");
            assert!(left_dtype.contains("BF16") && right_dtype.contains("F32"));
        }
        other => panic!("{:?}", other.map(|t| t.dims())),
    }
    // A Llama whose final norm was left in f32 under a bf16 base.
    let mut model = load_as::<B>(DType::BF16);
    let norm = model.norm.weight.val().cast(DType::F32);
    model.norm.weight = Param::from_tensor(norm);
    let rows = vec![vec![1i64, 2, 3, 4]];
    assert!(matches!(
        model.forward(ids(&rows)),
        Err(TrainError::DtypeMismatch { op, .. }) if op == "RMSNorm"
    ));
}

#[test]
fn a_kv_cache_filled_in_one_dtype_refuses_keys_in_another() {
    let f32_model = load_as::<B>(DType::F32);
    let bf16_model = load_as::<B>(DType::BF16);
    let layers = f32_model.layers.len();
    let prompt = vec![vec![1i64, 2, 3, 4]];
    let next = vec![vec![5i64]];
    // Filled in f32 (the host-memory cache of Flex), then handed to the bf16 model; and the
    // other way round (a backend-tensor cache in bf16, then f32 keys).
    for (first, second) in [(&f32_model, &bf16_model), (&bf16_model, &f32_model)] {
        let mut cache = KvCache::<B>::new(layers, 1);
        first
            .forward_cached(ids(&prompt), &[vec![true; 4]], &mut cache)
            .unwrap();
        match second.forward_cached(ids(&next), &[vec![true]], &mut cache) {
            Err(TrainError::DtypeMismatch {
                op,
                left,
                left_dtype,
                right,
                right_dtype,
            }) => {
                assert_eq!(op, "KV cache append");
                assert_eq!((left.as_str(), right.as_str()), ("cached keys", "new keys"));
                assert_eq!(left_dtype, format!("{:?}", first.dtype()));
                assert_eq!(right_dtype, format!("{:?}", second.dtype()));
            }
            other => panic!("{:?}", other.map(|t| t.dims())),
        }
    }
}
