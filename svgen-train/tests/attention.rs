//! Parity of `nn::attention::flash_attention` (the CPU kernel on Flex and the blockwise
//! tensor-op version) with the unfused path (matmul → mask → softmax → matmul under
//! `Autodiff<Flex>`, Burn's `attention_fallback`) and with PyTorch's
//! `scaled_dot_product_attention` (fixtures from `tools/fixtures/make_attention.py`): outputs
//! and dQ/dK/dV, on odd sizes, GQA, padding, packed samples, causal and bidirectional masks.

mod common;

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use svgen_train::nn::attention::{
    flash_attention, AttentionKernel, AttentionMask, AttentionOptions,
};
use svgen_train::weights::read_safetensors;
use svgen_train::TrainError;

use common::{fixture, max_abs_diff, max_rel_diff};

type AD = Autodiff<Flex>;

/// Output and gradients of one run, row-major f32.
#[derive(Debug)]
struct Run {
    out: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

/// One test problem: shapes, the mask as the op takes it, and the same mask as per-position
/// sample ids / key flags for the reference (`seg`: `None` = no sample description).
struct Case {
    name: &'static str,
    b: usize,
    h: usize,
    hkv: usize,
    t: usize,
    s: usize,
    d: usize,
    causal: bool,
    seg: Option<Vec<Vec<i64>>>,
    valid: Option<Vec<Vec<bool>>>,
    mask: AttentionMask,
}

impl Case {
    /// `[b, 1, t, s]`, true where the reference must hide the key: written from the rule on
    /// `AttentionMask`, independently of the crate's resolution.
    fn hidden(&self) -> Vec<bool> {
        let off = self.s as i64 - self.t as i64;
        let mut m = Vec::with_capacity(self.b * self.t * self.s);
        for r in 0..self.b {
            for i in 0..self.t {
                let pos = off + i as i64;
                for j in 0..self.s {
                    let key_real = self.valid.as_ref().is_none_or(|v| v[r][j]);
                    let same = match &self.seg {
                        None => true,
                        Some(seg) => seg[r][j] >= 0 && seg[r][pos as usize] == seg[r][j],
                    };
                    let before = !self.causal || j as i64 <= pos;
                    m.push(!(key_real && same && before));
                }
            }
        }
        m
    }

    fn inputs(&self, seed: u64) -> [Vec<f32>; 4] {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut rnd =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect() };
        let (nq, nkv) = (
            self.b * self.h * self.t * self.d,
            self.b * self.hkv * self.s * self.d,
        );
        [rnd(nq), rnd(nkv), rnd(nkv), rnd(nq)]
    }
}

fn tensor<B: Backend>(data: &[f32], shape: [usize; 4], dtype: DType) -> Tensor<B, 4> {
    Tensor::<B, 4>::from_data(
        TensorData::new(data.to_vec(), shape),
        (&Default::default(), dtype),
    )
}

fn host<B: Backend>(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}

/// Output and gradients with `f` computing the attention, `loss = Σ out ∘ grad_out`.
fn run_with<B: burn::tensor::backend::AutodiffBackend>(
    c: &Case,
    data: &[Vec<f32>; 4],
    dtype: DType,
    f: impl FnOnce(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>,
) -> Run {
    let q_shape = [c.b, c.h, c.t, c.d];
    let kv_shape = [c.b, c.hkv, c.s, c.d];
    let q = tensor::<B>(&data[0], q_shape, dtype).require_grad();
    let k = tensor::<B>(&data[1], kv_shape, dtype).require_grad();
    let v = tensor::<B>(&data[2], kv_shape, dtype).require_grad();
    let go = tensor::<B>(&data[3], q_shape, dtype);
    let out = f(q.clone(), k.clone(), v.clone());
    assert_eq!(out.dims(), q_shape);
    assert_eq!(out.dtype(), dtype);
    let grads = (out.clone() * go).sum().backward();
    let g = |x: &Tensor<B, 4>| host(x.grad(&grads).expect("tracked input has a gradient"));
    Run {
        dq: g(&q),
        dk: g(&k),
        dv: g(&v),
        out: host(out),
    }
}

/// The unfused path: K/V repeated per query head, a dense mask, Burn's `attention` (matmul,
/// mask, NaN-safe softmax, matmul) under `Autodiff<Flex>`.
fn reference(c: &Case, data: &[Vec<f32>; 4]) -> Run {
    run_with::<AD>(c, data, DType::F32, |q, k, v| {
        let g = c.h / c.hkv;
        let rep = |x: Tensor<AD, 4>| {
            x.reshape([c.b, c.hkv, 1, c.s, c.d])
                .expand([c.b, c.hkv, g, c.s, c.d])
                .reshape([c.b, c.h, c.s, c.d])
        };
        let mask = Tensor::<AD, 4, Bool>::from_data(
            TensorData::new(c.hidden(), [c.b, 1, c.t, c.s]),
            &Default::default(),
        )
        .expand([c.b, c.h, c.t, c.s]);
        let opts = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        attention(q, rep(k), rep(v), Some(mask), None, opts)
    })
}

fn flash<B: burn::tensor::backend::AutodiffBackend>(
    c: &Case,
    data: &[Vec<f32>; 4],
    dtype: DType,
    options: &AttentionOptions,
) -> Run {
    run_with::<B>(c, data, dtype, |q, k, v| {
        flash_attention(q, k, v, &c.mask, options).expect("valid call")
    })
}

/// `(max abs, max rel)` over output and the three gradients, printed per tensor.
fn compare(label: &str, got: &Run, want: &Run) -> (f32, f32) {
    let mut worst = (0.0f32, 0.0f32);
    let mut line = format!("{label:<44}");
    for (name, a, b) in [
        ("out", &got.out, &want.out),
        ("dq", &got.dq, &want.dq),
        ("dk", &got.dk, &want.dk),
        ("dv", &got.dv, &want.dv),
    ] {
        let (abs, rel) = (max_abs_diff(a, b), max_rel_diff(a, b));
        line += &format!(" {name} {abs:.1e}/{rel:.1e}");
        worst = (
            if abs > worst.0 || abs.is_nan() {
                abs
            } else {
                worst.0
            },
            if rel > worst.1 || rel.is_nan() {
                rel
            } else {
                worst.1
            },
        );
    }
    println!("{line}");
    worst
}

fn options(kernel: AttentionKernel, blocks: Option<(usize, usize)>) -> AttentionOptions {
    let mut o = AttentionOptions {
        kernel,
        ..AttentionOptions::default()
    };
    if let Some((qb, kb)) = blocks {
        o.query_block = qb;
        o.key_block = kb;
    }
    o
}

/// The three ways the op runs on Flex: the CPU kernel, the tensor-op version with small blocks
/// (partial tiles everywhere) and with its default blocks.
fn implementations() -> [(&'static str, AttentionOptions); 3] {
    [
        ("cpu kernel", options(AttentionKernel::Auto, None)),
        (
            "tensor ops 16x24",
            options(AttentionKernel::TensorOps, Some((16, 24))),
        ),
        (
            "tensor ops default",
            options(AttentionKernel::TensorOps, None),
        ),
    ]
}

fn pad_row(s: usize, pad: std::ops::Range<usize>) -> Vec<bool> {
    (0..s).map(|j| !pad.contains(&j)).collect()
}

fn cu_to_ids(cu: &[usize], s: usize) -> Vec<i64> {
    let mut ids = vec![-1i64; s];
    for (k, w) in cu.windows(2).enumerate() {
        ids[w[0]..w[1]].fill(k as i64);
    }
    ids
}

#[allow(clippy::too_many_arguments)]
fn case(
    name: &'static str,
    (b, h, hkv, t, s, d): (usize, usize, usize, usize, usize, usize),
    causal: bool,
    seg: Option<Vec<Vec<i64>>>,
    valid: Option<Vec<Vec<bool>>>,
    mask: AttentionMask,
) -> Case {
    Case {
        name,
        b,
        h,
        hkv,
        t,
        s,
        d,
        causal,
        seg,
        valid,
        mask,
    }
}

fn cases() -> Vec<Case> {
    let base = |causal: bool| {
        if causal {
            AttentionMask::causal()
        } else {
            AttentionMask::bidirectional()
        }
    };
    let mut v = Vec::new();
    v.push(case(
        "causal, GQA 3:1, T=77, d=24",
        (2, 6, 2, 77, 77, 24),
        true,
        None,
        None,
        base(true),
    ));
    let valid = vec![pad_row(77, 0..9), pad_row(77, 0..0)];
    v.push(case(
        "causal, GQA 3:1, left padding",
        (2, 6, 2, 77, 77, 24),
        true,
        None,
        Some(valid.clone()),
        base(true).with_key_padding(valid),
    ));
    let valid = vec![pad_row(70, 50..70), pad_row(70, 0..0)];
    v.push(case(
        "causal, GQA 3:1, right padding",
        (2, 3, 1, 70, 70, 24),
        true,
        None,
        Some(valid.clone()),
        base(true).with_key_padding(valid),
    ));
    let valid = vec![pad_row(45, 0..3), vec![false; 45]];
    let mut valid = valid;
    valid[0][40..45].fill(false);
    v.push(case(
        "bidirectional, key padding, blind row",
        (2, 4, 2, 45, 45, 24),
        false,
        None,
        Some(valid.clone()),
        base(false).with_key_padding(valid),
    ));
    let cu = vec![vec![0, 40, 41, 100, 140], vec![0, 150]];
    let ids = cu.iter().map(|c| cu_to_ids(c, 150)).collect();
    v.push(case(
        "causal, packed (cu_seqlens), GQA 3:1, T=150",
        (2, 6, 2, 150, 150, 24),
        true,
        Some(ids),
        None,
        base(true).with_cu_seqlens(cu),
    ));
    let ids: Vec<i64> = [vec![0; 20], vec![1; 30], vec![0; 25], vec![-1; 15]].concat();
    for causal in [true, false] {
        v.push(case(
            if causal {
                "causal, packed ids in two runs"
            } else {
                "bidirectional, packed ids in two runs"
            },
            (1, 3, 1, 90, 90, 24),
            causal,
            Some(vec![ids.clone()]),
            None,
            base(causal).with_segment_ids(vec![ids.clone()]),
        ));
    }
    let pos: Vec<i64> = (0..25).chain(0..20).chain(0..15).collect();
    let ids = [vec![0; 25], vec![1; 20], vec![2; 15]].concat();
    let valid = vec![pad_row(60, 55..60)];
    v.push(case(
        "causal, packed (position ids) + padding",
        (1, 2, 1, 60, 60, 24),
        true,
        Some(vec![ids]),
        Some(valid.clone()),
        base(true).with_position_ids(&[pos]).with_key_padding(valid),
    ));
    let valid = vec![pad_row(77, 0..6), pad_row(77, 0..0)];
    v.push(case(
        "causal chunk T=20 after 57 keys, left pad",
        (2, 4, 2, 20, 77, 24),
        true,
        None,
        Some(valid.clone()),
        base(true).with_key_padding(valid),
    ));
    let valid = vec![pad_row(33, 30..33)];
    v.push(case(
        "cross-attention T=100 > S=33, key padding",
        (1, 2, 2, 100, 33, 24),
        false,
        None,
        Some(valid.clone()),
        base(false).with_key_padding(valid),
    ));
    v.push(case(
        "causal, head_dim 3",
        (1, 2, 1, 67, 67, 3),
        true,
        None,
        None,
        base(true),
    ));
    v.push(case(
        "causal, MHA, d=64, T=200",
        (1, 4, 4, 200, 200, 64),
        true,
        None,
        None,
        base(true),
    ));
    v
}

#[test]
fn matches_the_unfused_path_on_every_mask() {
    let mut worst = 0.0f32;
    for (n, c) in cases().iter().enumerate() {
        let data = c.inputs(100 + n as u64);
        let want = reference(c, &data);
        for (label, opts) in implementations() {
            let got = flash::<AD>(c, &data, DType::F32, &opts);
            let (abs, _) = compare(&format!("{} [{label}]", c.name), &got, &want);
            assert!(abs <= 1e-5, "{} [{label}]: max abs diff {abs}", c.name);
            worst = worst.max(abs);
        }
    }
    println!("worst max abs diff over all cases: {worst:.2e}");
}

#[test]
fn queries_that_see_no_key_give_zero_output_and_gradients() {
    // row 1 has only padding keys; row 0's first 4 queries see nothing under the causal mask
    let valid = vec![pad_row(40, 0..4), vec![false; 40]];
    let c = case(
        "blind",
        (2, 2, 1, 40, 40, 8),
        true,
        None,
        Some(valid.clone()),
        AttentionMask::causal().with_key_padding(valid),
    );
    let data = c.inputs(7);
    for (label, opts) in implementations() {
        let got = flash::<AD>(&c, &data, DType::F32, &opts);
        for x in got.out.iter().chain(&got.dq).chain(&got.dk).chain(&got.dv) {
            assert!(x.is_finite(), "{label}: non-finite value");
        }
        let row = |x: &[f32], b: usize, h: usize, i: usize| {
            let start = ((b * 2 + h) * 40 + i) * 8;
            x[start..start + 8].to_vec()
        };
        for h in 0..2 {
            for i in 0..40 {
                if i < 4 {
                    assert_eq!(row(&got.out, 0, h, i), vec![0.0; 8], "{label}");
                    assert_eq!(row(&got.dq, 0, h, i), vec![0.0; 8], "{label}");
                }
                assert_eq!(row(&got.out, 1, h, i), vec![0.0; 8], "{label}");
                assert_eq!(row(&got.dq, 1, h, i), vec![0.0; 8], "{label}");
            }
        }
        // padding keys get no gradient
        assert!(got.dk[40 * 8..].iter().all(|&x| x == 0.0), "{label}");
        assert!(got.dv[..4 * 8].iter().all(|&x| x == 0.0), "{label}");
        assert!(
            got.dq.iter().any(|&x| x != 0.0),
            "{label}: all-zero gradient"
        );
    }
    // a batch in which no query sees anything (whole blocks skipped on every row)
    let c = case(
        "all blind",
        (1, 2, 2, 70, 70, 8),
        false,
        None,
        Some(vec![vec![false; 70]]),
        AttentionMask::bidirectional().with_key_padding(vec![vec![false; 70]]),
    );
    let data = c.inputs(8);
    for (label, opts) in implementations() {
        let got = flash::<AD>(&c, &data, DType::F32, &opts);
        for (name, x) in [
            ("out", &got.out),
            ("dq", &got.dq),
            ("dk", &got.dk),
            ("dv", &got.dv),
        ] {
            assert!(x.iter().all(|&x| x == 0.0), "{label}: {name} not all zero");
        }
    }
}

#[test]
fn inference_and_checkpointed_training_agree_with_autodiff() {
    let c = &cases()[4];
    let data = c.inputs(5);
    for (label, opts) in implementations() {
        let trained = flash::<AD>(c, &data, DType::F32, &opts);
        let q = tensor::<Flex>(&data[0], [c.b, c.h, c.t, c.d], DType::F32);
        let k = tensor::<Flex>(&data[1], [c.b, c.hkv, c.s, c.d], DType::F32);
        let v = tensor::<Flex>(&data[2], [c.b, c.hkv, c.s, c.d], DType::F32);
        let plain = host(flash_attention(q, k, v, &c.mask, &opts).expect("valid"));
        assert_eq!(
            max_abs_diff(&plain, &trained.out),
            0.0,
            "{label}: Flex vs Autodiff<Flex>"
        );
        let balanced = flash::<Autodiff<Flex, BalancedCheckpointing>>(c, &data, DType::F32, &opts);
        assert_eq!(
            compare(&format!("balanced [{label}]"), &balanced, &trained).0,
            0.0
        );
        // untracked inputs under autodiff: same output, no graph needed
        let q = tensor::<AD>(&data[0], [c.b, c.h, c.t, c.d], DType::F32);
        let k = tensor::<AD>(&data[1], [c.b, c.hkv, c.s, c.d], DType::F32);
        let v = tensor::<AD>(&data[2], [c.b, c.hkv, c.s, c.d], DType::F32);
        let untracked = host(flash_attention(q, k, v, &c.mask, &opts).expect("valid"));
        assert_eq!(
            max_abs_diff(&untracked, &trained.out),
            0.0,
            "{label}: untracked"
        );
    }
}

#[test]
fn half_precision_inputs_keep_f32_statistics() {
    let c = &cases()[1];
    let data = c.inputs(9);
    let want = reference(c, &data);
    let opts = options(AttentionKernel::Auto, Some((32, 48)));
    for (dtype, tol) in [(DType::BF16, 0.03f32), (DType::F16, 0.005)] {
        // rounding the inputs is part of the error: compare with the f32 reference of the
        // rounded inputs
        let rounded: [Vec<f32>; 4] = data.clone().map(|x| {
            Tensor::<Flex, 1>::from_data(
                TensorData::new(x.clone(), [x.len()]),
                (&Default::default(), dtype),
            )
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32")
        });
        let want_rounded = reference(c, &rounded);
        let got = flash::<AD>(c, &data, dtype, &opts);
        let (_, rel) = compare(
            &format!("{dtype:?} vs f32 of rounded inputs"),
            &got,
            &want_rounded,
        );
        assert!(rel <= tol, "{dtype:?}: relative error {rel}");
        compare(&format!("{dtype:?} vs f32"), &got, &want);
    }
}

#[test]
fn bad_calls_are_typed_errors() {
    let dev = Default::default();
    let z = |shape: [usize; 4]| Tensor::<Flex, 4>::zeros(shape, &dev);
    let opts = AttentionOptions::default();
    let err = |r: svgen_train::Result<Tensor<Flex, 4>>| match r {
        Err(TrainError::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    let causal = AttentionMask::causal();
    err(flash_attention(
        z([1, 4, 8, 8]),
        z([1, 3, 8, 8]),
        z([1, 3, 8, 8]),
        &causal,
        &opts,
    ));
    err(flash_attention(
        z([1, 4, 8, 8]),
        z([2, 2, 8, 8]),
        z([2, 2, 8, 8]),
        &causal,
        &opts,
    ));
    err(flash_attention(
        z([1, 4, 8, 8]),
        z([1, 2, 8, 4]),
        z([1, 2, 8, 4]),
        &causal,
        &opts,
    ));
    err(flash_attention(
        z([1, 4, 8, 8]),
        z([1, 2, 8, 8]),
        z([1, 2, 9, 8]),
        &causal,
        &opts,
    ));
    // causal with more queries than keys
    err(flash_attention(
        z([1, 2, 9, 8]),
        z([1, 2, 8, 8]),
        z([1, 2, 8, 8]),
        &causal,
        &opts,
    ));
    let bad_masks = [
        causal.clone().with_key_padding(vec![vec![true; 7]]),
        causal.clone().with_key_padding(vec![vec![true; 8]; 2]),
        causal.clone().with_cu_seqlens(vec![vec![0, 5, 5, 8]]),
        causal.clone().with_cu_seqlens(vec![vec![1, 8]]),
        causal.clone().with_cu_seqlens(vec![vec![0, 9]]),
        causal.clone().with_segment_ids(vec![vec![0; 7]]),
    ];
    for m in &bad_masks {
        err(flash_attention(
            z([1, 2, 8, 8]),
            z([1, 2, 8, 8]),
            z([1, 2, 8, 8]),
            m,
            &opts,
        ));
    }
    let zero_block = AttentionOptions {
        query_block: 0,
        ..opts
    };
    err(flash_attention(
        z([1, 2, 8, 8]),
        z([1, 2, 8, 8]),
        z([1, 2, 8, 8]),
        &causal,
        &zero_block,
    ));
    let nan_scale = AttentionOptions {
        scale: Some(f64::NAN),
        ..opts
    };
    err(flash_attention(
        z([1, 2, 8, 8]),
        z([1, 2, 8, 8]),
        z([1, 2, 8, 8]),
        &causal,
        &nan_scale,
    ));
    // Mixed dtypes: the typed mismatch error naming both tensors.
    let half = Tensor::<Flex, 4>::zeros([1, 2, 8, 8], (&dev, DType::F16));
    match flash_attention(z([1, 2, 8, 8]), half.clone(), half, &causal, &opts) {
        Err(TrainError::DtypeMismatch {
            left,
            right,
            right_dtype,
            ..
        }) => assert_eq!(
            (left.as_str(), right.as_str(), right_dtype.as_str()),
            ("q", "k", "F16")
        ),
        other => panic!("expected DtypeMismatch, got {other:?}"),
    }
}

/// PyTorch fixture `name` as a case and its inputs/outputs.
fn pytorch_case(name: &'static str) -> (Case, [Vec<f32>; 4], Run) {
    let path = fixture("attention").join(format!("{name}.safetensors"));
    let mut t = read_safetensors(&path).expect("fixture readable");
    let mut take = |key: &str| t.remove(key).unwrap_or_else(|| panic!("{name}: {key}"));
    let q = take("q");
    let [b, h, tq, d] = <[usize; 4]>::try_from(q.shape.clone()).expect("4-d q");
    let k = take("k");
    let [_, hkv, s, _] = <[usize; 4]>::try_from(k.shape.clone()).expect("4-d k");
    let f = |x: svgen_train::HostTensor| x.into_f32("fixture").expect("f32");
    let i = |x: svgen_train::HostTensor| x.into_i64("fixture").expect("i64");
    let data = [f(q), f(k), f(take("v")), f(take("grad_out"))];
    let want = Run {
        out: f(take("out")),
        dq: f(take("dq")),
        dk: f(take("dk")),
        dv: f(take("dv")),
    };
    let seg: Vec<Vec<i64>> = i(take("segment_ids"))
        .chunks(s)
        .map(<[i64]>::to_vec)
        .collect();
    let valid: Vec<Vec<bool>> = i(take("key_valid"))
        .chunks(s)
        .map(|r| r.iter().map(|&x| x != 0).collect())
        .collect();
    let causal = i(take("causal")) == [1];
    let mask = if causal {
        AttentionMask::causal()
    } else {
        AttentionMask::bidirectional()
    }
    .with_segment_ids(seg.clone())
    .with_key_padding(valid.clone());
    let c = case(
        name,
        (b, h, hkv, tq, s, d),
        causal,
        Some(seg),
        Some(valid),
        mask,
    );
    (c, data, want)
}

#[test]
fn matches_pytorch_sdpa_forward_and_backward() {
    for name in [
        "gqa_causal_left_pad",
        "packed_causal",
        "bidirectional_right_pad",
        "causal_chunk",
    ] {
        let (c, data, want) = pytorch_case(name);
        // the fixture's mask description reproduces PyTorch through the unfused path too
        let unfused = reference(&c, &data);
        let (abs, _) = compare(&format!("{name} [unfused vs torch]"), &unfused, &want);
        assert!(abs <= 1e-5, "{name}: unfused path vs PyTorch {abs}");
        for (label, opts) in implementations() {
            let got = flash::<AD>(&c, &data, DType::F32, &opts);
            let (abs, _) = compare(&format!("{name} [{label} vs torch]"), &got, &want);
            assert!(abs <= 1e-5, "{name} [{label}]: max abs diff {abs}");
        }
    }
}

/// q, k and v computed from tracked parameters (as projections and RoPE do in a model): the
/// parameters' gradients match the unfused path, under both checkpointing strategies (the
/// balanced one recomputes the memory-bound parents of the op in the backward pass).
fn projected_grads<B: burn::tensor::backend::AutodiffBackend>(use_flash: bool) -> Vec<Vec<f32>> {
    let (b, t, width, h, hkv, d) = (2, 50, 16, 4, 2, 8);
    let mut rng = StdRng::seed_from_u64(77);
    let mut rnd =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
    let dev = Default::default();
    let x = Tensor::<B, 3>::from_data(TensorData::new(rnd(b * t * width), [b, t, width]), &dev);
    let param = |cols: usize, data: Vec<f32>| {
        Tensor::<B, 2>::from_data(TensorData::new(data, [width, cols]), &dev).require_grad()
    };
    let wq = param(h * d, rnd(width * h * d));
    let wk = param(hkv * d, rnd(width * hkv * d));
    let wv = param(hkv * d, rnd(width * hkv * d));
    let go = Tensor::<B, 4>::from_data(TensorData::new(rnd(b * h * t * d), [b, h, t, d]), &dev);
    let heads = |w: &Tensor<B, 2>, n: usize| {
        // a memory-bound tail (scale, then a sine) after the projection, like RoPE
        let y = x.clone().matmul(w.clone().unsqueeze::<3>()).mul_scalar(0.5);
        (y.clone() + y.sin()).reshape([b, t, n, d]).swap_dims(1, 2)
    };
    let (q, k, v) = (heads(&wq, h), heads(&wk, hkv), heads(&wv, hkv));
    let valid = vec![pad_row(t, 0..7), pad_row(t, 44..50)];
    let out = if use_flash {
        let mask = AttentionMask::causal().with_key_padding(valid);
        flash_attention(q, k, v, &mask, &AttentionOptions::default()).expect("valid")
    } else {
        let c = case(
            "projected",
            (b, h, hkv, t, t, d),
            true,
            None,
            Some(valid),
            AttentionMask::causal(),
        );
        let g = h / hkv;
        let rep = |y: Tensor<B, 4>| {
            y.reshape([b, hkv, 1, t, d])
                .expand([b, hkv, g, t, d])
                .reshape([b, h, t, d])
        };
        let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(c.hidden(), [b, 1, t, t]), &dev)
            .expand([b, h, t, t]);
        let opts = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        attention(q, rep(k), rep(v), Some(mask), None, opts)
    };
    let grads = (out * go).sum().backward();
    [&wq, &wk, &wv]
        .iter()
        .map(|w| {
            w.grad(&grads)
                .expect("tracked")
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32")
        })
        .collect()
}

#[test]
fn gradients_reach_the_projections_under_both_checkpointing_strategies() {
    let want = projected_grads::<AD>(false);
    for (label, got) in [
        ("no checkpointing", projected_grads::<AD>(true)),
        (
            "balanced checkpointing",
            projected_grads::<Autodiff<Flex, BalancedCheckpointing>>(true),
        ),
    ] {
        for (name, (a, b)) in ["wq", "wk", "wv"].iter().zip(got.iter().zip(&want)) {
            let (abs, rel) = (max_abs_diff(a, b), max_rel_diff(a, b));
            println!("{label}: d{name} {abs:.1e}/{rel:.1e}");
            assert!(rel <= 1e-5, "{label}: d{name} relative diff {rel}");
        }
    }
}
