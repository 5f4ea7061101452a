//! The CUDA backend against transformers and against Flex (`--features cuda`; run by
//! `tools/gpu_check.sh` on a machine with an NVIDIA GPU): logits of the three fixtures, the
//! flash-attention op (blockwise tensor-op version on CUDA) against the CPU kernel, LoRA
//! gradients through the chunked loss with and without checkpointing, and a bf16 base with f32
//! adapters.
//!
//! **Tolerances.** cubek runs `f32` matmuls in TF32 on sm_80 and newer: inputs rounded to 10
//! mantissa bits (`u = 2⁻¹¹ ≈ 4.9e-4`) with f32 accumulation. A value that went through `k`
//! such products carries an RMS relative error of about `√k · u/√3`; the fixtures' 2 layers
//! have ~10 products on the path to the logits (≈ 9e-4), the gradients twice as many. The
//! checks bound the largest error relative to the reference's RMS at 1e-2 for values and 2e-2
//! for gradients (≈ 10× the RMS estimate, for the maximum of thousands of errors), and pass
//! with margin when TF32 is off. bf16 bases keep the tolerances of `tests/mixed_precision.rs`.
#![cfg(feature = "cuda")]

mod common;

use std::collections::BTreeMap;

use burn::backend::{Autodiff, Cuda, Flex};
use burn::module::Param;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Distribution, Int, Tensor, TensorData};
use common::fixture;
use svgen_core::compare::{assert_close, Tolerance};
use svgen_train::llama::sft::{loss_and_grads, SftBatch, SftConfig, SftSample, SftTrainer};
use svgen_train::nn::attention::{flash_attention, AttentionMask, AttentionOptions};
use svgen_train::weights::read_safetensors;
use svgen_train::{Llama, LoadOptions, LoraConfig};

type G = Cuda;
type AG = Autodiff<Cuda>;
type AF = Autodiff<Flex>;

const VALUE_TOL: f64 = 1e-2;
const GRAD_TOL: f64 = 2e-2;

fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

fn load<Bk: Backend>(name: &str, dtype: DType) -> Llama<Bk> {
    Llama::<Bk>::from_pretrained(fixture(name), LoadOptions { dtype }, &Default::default()).unwrap()
}

fn lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        ..LoraConfig::default()
    }
}

/// Fresh adapters with a deterministic nonzero `B`, identical on every backend.
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
fn logits_match_transformers() {
    for name in ["llama3-tied", "llama3-untied-bf16-sharded", "llama2-f16"] {
        let model = load::<G>(name, DType::F32);
        let mut t = read_safetensors(fixture(name).join("reference.safetensors")).unwrap();
        let ids = t.remove("input_ids").unwrap();
        let [b, s] = [ids.shape[0], ids.shape[1]];
        let ids = Tensor::<G, 2, Int>::from_data(
            TensorData::new(ids.into_i64("input_ids").unwrap(), [b, s]),
            &Default::default(),
        );
        let want = t.remove("logits").unwrap().into_f32("logits").unwrap();
        let got = host(model.forward(ids).unwrap());
        let d = assert_close(name, &got, &want, Tolerance::rms_relative(VALUE_TOL));
        println!(
            "{name}: CUDA vs transformers logits, worst {:.2e} of the RMS",
            d.value
        );
    }
}

/// Output and input gradients of one attention call on backend `Bk`.
fn attention_run<Bk: AutodiffBackend>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    go: &[f32],
    (qs, ks): ([usize; 4], [usize; 4]),
    mask: &AttentionMask,
) -> [Vec<f32>; 4] {
    let dev = Default::default();
    let t = |x: &[f32], s: [usize; 4]| {
        Tensor::<Bk, 4>::from_data(TensorData::new(x.to_vec(), s), &dev).require_grad()
    };
    let (q, k, v) = (t(q, qs), t(k, ks), t(v, ks));
    let out = flash_attention(
        q.clone(),
        k.clone(),
        v.clone(),
        mask,
        &AttentionOptions::default(),
    )
    .unwrap();
    let g = Tensor::<Bk, 4>::from_data(TensorData::new(go.to_vec(), qs), &dev);
    let grads = (out.clone() * g).sum().backward();
    [
        host(out.inner()),
        host(q.grad(&grads).unwrap()),
        host(k.grad(&grads).unwrap()),
        host(v.grad(&grads).unwrap()),
    ]
}

#[test]
fn flash_attention_matches_the_cpu_kernel() {
    let (b, h, kvh, t, d) = (2, 6, 2, 700, 64);
    let qs = [b, h, t, d];
    let ks = [b, kvh, t, d];
    let rnd = |n: usize| {
        host(Tensor::<Flex, 1>::random(
            [n],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        ))
    };
    let (q, k, v, go) = (
        rnd(b * h * t * d),
        rnd(b * kvh * t * d),
        rnd(b * kvh * t * d),
        rnd(b * h * t * d),
    );
    let masks = [
        ("causal", AttentionMask::causal()),
        (
            "causal + left padding",
            AttentionMask::causal()
                .with_key_padding(vec![(0..t).map(|j| j >= 37).collect(), vec![true; t]]),
        ),
        (
            "packed",
            AttentionMask::causal().with_cu_seqlens(vec![vec![0, 300, 650], vec![0, 700]]),
        ),
    ];
    for (label, mask) in masks {
        let want = attention_run::<AF>(&q, &k, &v, &go, (qs, ks), &mask);
        let got = attention_run::<AG>(&q, &k, &v, &go, (qs, ks), &mask);
        for (name, g, w, tol) in [
            ("out", &got[0], &want[0], VALUE_TOL),
            ("dq", &got[1], &want[1], GRAD_TOL),
            ("dk", &got[2], &want[2], GRAD_TOL),
            ("dv", &got[3], &want[3], GRAD_TOL),
        ] {
            let d = assert_close(
                &format!("{label} {name}"),
                g,
                w,
                Tolerance::rms_relative(tol),
            );
            println!("attention {label} {name}: worst {:.2e} of the RMS", d.value);
        }
    }
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

fn grads<Bk: AutodiffBackend>(
    model: &Llama<Bk>,
    batch: &SftBatch,
    checkpointing: bool,
) -> (f64, BTreeMap<String, Vec<f32>>) {
    let out = loss_and_grads(model, batch, 1.0, checkpointing).unwrap();
    let loss = out.loss_value();
    let g = out.grads.into_iter().map(|(k, g)| (k, host(g))).collect();
    (loss, g)
}

#[test]
fn lora_gradients_match_flex_with_and_without_checkpointing() {
    let samples = [sample(60, 1), sample(35, 2), sample(48, 3)];
    let refs: Vec<&SftSample> = samples.iter().collect();
    let batch = SftBatch::packed(&[vec![refs[0], refs[1]], vec![refs[2]]], 0).unwrap();
    for name in ["llama3-tied", "llama3-untied-bf16-sharded"] {
        let cpu = with_adapters(load::<AF>(name, DType::F32));
        let gpu = with_adapters(load::<AG>(name, DType::F32));
        let (loss_cpu, want) = grads(&cpu, &batch, false);
        for checkpointing in [false, true] {
            let (loss, got) = grads(&gpu, &batch, checkpointing);
            assert!(
                (loss - loss_cpu).abs() <= VALUE_TOL * loss_cpu.abs(),
                "{loss} vs {loss_cpu}"
            );
            assert_eq!(got.len(), want.len());
            let mut worst = 0.0f64;
            for (key, w) in &want {
                let d = assert_close(key, &got[key], w, Tolerance::rms_relative(GRAD_TOL));
                worst = worst.max(d.value);
            }
            println!(
                "{name} checkpointing {checkpointing}: CUDA vs Flex loss {loss} vs {loss_cpu}, \
                 gradients worst {worst:.2e} of the RMS"
            );
        }
    }
}

#[test]
fn bf16_base_with_f32_adapters_matches_the_f32_reference() {
    let name = "llama3-untied-bf16-sharded";
    let reference = with_adapters(load::<Flex>(name, DType::F32));
    let model = with_adapters(load::<G>(name, DType::BF16));
    let ids: Vec<i64> = (0..40).map(|i| (i * 13 + 5) % 300).collect();
    let want = host(
        reference
            .forward(Tensor::from_data(
                TensorData::new(ids.clone(), [1, 40]),
                &Default::default(),
            ))
            .unwrap(),
    );
    let got = host(
        model
            .forward(Tensor::from_data(
                TensorData::new(ids, [1, 40]),
                &Default::default(),
            ))
            .unwrap(),
    );
    // tests/mixed_precision.rs: bf16 logits within 8e-2 of the reference's RMS at worst.
    let d = assert_close("bf16 logits", &got, &want, Tolerance::rms_relative(8e-2));
    println!(
        "bf16 on CUDA vs f32 on Flex: worst {:.2e} of the RMS",
        d.value
    );

    // LoRA + AdamW steps in bf16: adapters stay f32 (the trainer's AdamW refuses anything
    // else with a typed error) and the losses follow the f32 reference.
    let samples = [sample(30, 1), sample(18, 2), sample(25, 3)];
    let cfg = SftConfig {
        batch_size: 2,
        lr: 1e-3,
        total_steps: 3,
        max_grad_norm: 0.0,
        gradient_checkpointing: true,
        ..SftConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut t = SftTrainer::new(
        with_adapters(load::<AG>(name, DType::BF16)),
        lora(),
        cfg.clone(),
        dir.path(),
        "bf16",
    )
    .unwrap();
    t.train(&samples, &[], None).unwrap();
    for (_, lin) in t.model().linears() {
        assert_eq!(lin.weight.val().dtype(), DType::BF16);
        assert_eq!(
            lin.adapter.as_ref().unwrap().lora_a.val().dtype(),
            DType::F32
        );
    }
    let dir_ref = tempfile::tempdir().unwrap();
    let mut r = SftTrainer::new(
        with_adapters(load::<AF>(name, DType::F32)),
        lora(),
        cfg,
        dir_ref.path(),
        "f32",
    )
    .unwrap();
    r.train(&samples, &[], None).unwrap();
    let got: Vec<f64> = t.state().log.iter().map(|e| e.loss).collect();
    let want: Vec<f64> = r.state().log.iter().map(|e| e.loss).collect();
    assert_close("losses", &got, &want, Tolerance::relative(2e-2));
    println!("bf16 LoRA steps on CUDA: losses {got:?} vs f32 Flex {want:?}");
}
