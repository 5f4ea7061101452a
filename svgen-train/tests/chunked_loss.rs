//! Parity of the chunked LM-head cross-entropy (`nn::loss`) with the unchunked path
//! (`Llama::logits`-style matmul → `sft::causal_lm_loss`) under `Autodiff<Flex>`: the loss and
//! the gradients with respect to the hidden states and the LM-head weight.

mod common;

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use svgen_train::llama::sft::{causal_lm_loss, IGNORE_INDEX};
use svgen_train::nn::loss::{chunked_causal_lm_loss, linear_cross_entropy, ChunkedLossOptions};
use svgen_train::TrainError;

use common::{max_abs_diff, max_rel_diff};

type AD = Autodiff<Flex>;

struct Problem {
    b: usize,
    t: usize,
    hidden: usize,
    vocab: usize,
    h: Vec<f32>,
    w: Vec<f32>,
    labels: Vec<i64>,
}

/// Random hidden states and weight; labels ignored on a prompt prefix of each row and on the
/// right padding of the last row (as `batch_loss` builds them).
fn problem(seed: u64, b: usize, t: usize, hidden: usize, vocab: usize) -> Problem {
    let mut rng = StdRng::seed_from_u64(seed);
    let h = (0..b * t * hidden)
        .map(|_| rng.random_range(-1.5f32..1.5))
        .collect();
    let w = (0..hidden * vocab)
        .map(|_| rng.random_range(-0.5f32..0.5))
        .collect();
    let mut labels = Vec::with_capacity(b * t);
    for row in 0..b {
        let prompt = 3 + row * 4;
        let pad = if row + 1 == b { 5 } else { 0 };
        for i in 0..t {
            labels.push(if i < prompt || i >= t - pad {
                IGNORE_INDEX
            } else {
                rng.random_range(0..vocab as i64)
            });
        }
    }
    Problem {
        b,
        t,
        hidden,
        vocab,
        h,
        w,
        labels,
    }
}

struct Grads {
    loss: f32,
    count: usize,
    dh: Option<Vec<f32>>,
    dw: Option<Vec<f32>>,
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}

/// Loss and gradients with `f(hidden, weight) -> (loss, count)`; `track` says which of the two
/// require gradients.
fn run<B: AutodiffBackend>(
    p: &Problem,
    dtype: DType,
    track: [bool; 2],
    f: impl FnOnce(Tensor<B, 3>, Tensor<B, 2>) -> (Tensor<B, 1>, usize),
) -> Grads {
    let dev = Default::default();
    let mut h = Tensor::<B, 3>::from_data(
        TensorData::new(p.h.clone(), [p.b, p.t, p.hidden]),
        (&dev, dtype),
    );
    let mut w = Tensor::<B, 2>::from_data(
        TensorData::new(p.w.clone(), [p.hidden, p.vocab]),
        (&dev, dtype),
    );
    if track[0] {
        h = h.require_grad();
    }
    if track[1] {
        w = w.require_grad();
    }
    let (loss, count) = f(h.clone(), w.clone());
    assert_eq!(loss.dims(), [1]);
    let grads = loss.backward();
    let loss = host(loss)[0];
    Grads {
        loss,
        count,
        dh: h.grad(&grads).map(host),
        dw: w.grad(&grads).map(host),
    }
}

/// The unchunked path: `[B·T, hidden] × [hidden, vocab]` logits, then `causal_lm_loss`.
fn unchunked<B: AutodiffBackend>(p: &Problem, dtype: DType, track: [bool; 2]) -> Grads {
    run::<B>(p, dtype, track, |h, w| {
        let logits = h
            .reshape([p.b * p.t, p.hidden])
            .matmul(w)
            .reshape([p.b, p.t, p.vocab]);
        causal_lm_loss(logits, &p.labels).expect("labels count")
    })
}

fn chunked<B: AutodiffBackend>(
    p: &Problem,
    dtype: DType,
    track: [bool; 2],
    chunk_tokens: usize,
) -> Grads {
    run::<B>(p, dtype, track, |h, w| {
        chunked_causal_lm_loss(h, w, &p.labels, &ChunkedLossOptions { chunk_tokens })
            .expect("labels count")
    })
}

/// `(loss rel diff, dh abs/rel, dw abs/rel)`, printed.
fn compare(label: &str, got: &Grads, want: &Grads) -> [f32; 3] {
    assert_eq!(got.count, want.count, "{label}: counted tokens");
    assert!(got.loss.is_finite(), "{label}: loss {}", got.loss);
    let loss_rel = ((got.loss - want.loss) / want.loss).abs();
    let pair = |a: &Option<Vec<f32>>, b: &Option<Vec<f32>>| match (a, b) {
        (Some(a), Some(b)) => (max_abs_diff(a, b), max_rel_diff(a, b)),
        (None, None) => (0.0, 0.0),
        _ => panic!("{label}: one path has a gradient the other lacks"),
    };
    let (dh, dw) = (pair(&got.dh, &want.dh), pair(&got.dw, &want.dw));
    println!(
        "{label:<40} loss {:.6} rel {loss_rel:.1e}  dh {:.1e}/{:.1e}  dw {:.1e}/{:.1e}",
        got.loss, dh.0, dh.1, dw.0, dw.1
    );
    [loss_rel, dh.1, dw.1]
}

#[test]
fn matches_the_unchunked_loss_and_gradients() {
    let p = problem(1, 3, 37, 24, 101);
    let want = unchunked::<AD>(&p, DType::F32, [true, true]);
    assert!(want.count > 50);
    for chunk in [1, 7, 16, 64, 10_000] {
        let got = chunked::<AD>(&p, DType::F32, [true, true], chunk);
        let [loss, dh, dw] = compare(&format!("chunk {chunk}"), &got, &want);
        assert!(loss <= 1e-6, "chunk {chunk}: loss relative diff {loss}");
        assert!(dh <= 1e-6, "chunk {chunk}: dh relative diff {dh}");
        assert!(dw <= 1e-6, "chunk {chunk}: dw relative diff {dw}");
    }
}

#[test]
fn gradients_only_for_what_is_tracked() {
    let p = problem(2, 2, 20, 16, 50);
    for track in [[true, false], [false, true]] {
        let want = unchunked::<AD>(&p, DType::F32, track);
        let got = chunked::<AD>(&p, DType::F32, track, 5);
        assert_eq!(got.dh.is_some(), track[0]);
        assert_eq!(got.dw.is_some(), track[1]);
        let [loss, dh, dw] = compare(&format!("tracked {track:?}"), &got, &want);
        assert!(loss <= 1e-6 && dh <= 1e-6 && dw <= 1e-6);
    }
}

#[test]
fn tied_embeddings_get_their_gradient_through_the_transpose() {
    let p = problem(3, 2, 25, 16, 40);
    let dev = Default::default();
    let embed = |data: &[f32]| {
        // the problem's weight is [hidden, vocab]: store it as embeddings [vocab, hidden]
        let mut e = vec![0.0f32; data.len()];
        for r in 0..p.hidden {
            for c in 0..p.vocab {
                e[c * p.hidden + r] = data[r * p.vocab + c];
            }
        }
        Tensor::<AD, 2>::from_data(TensorData::new(e, [p.vocab, p.hidden]), &dev).require_grad()
    };
    let h = || Tensor::<AD, 3>::from_data(TensorData::new(p.h.clone(), [p.b, p.t, p.hidden]), &dev);
    let e1 = embed(&p.w);
    let logits = h()
        .reshape([p.b * p.t, p.hidden])
        .matmul(e1.clone().transpose())
        .reshape([p.b, p.t, p.vocab]);
    let (l1, _) = causal_lm_loss(logits, &p.labels).expect("counts");
    let g1 = host(e1.grad(&l1.backward()).expect("tracked"));
    let e2 = embed(&p.w);
    let (l2, _) = chunked_causal_lm_loss(
        h(),
        e2.clone().transpose(),
        &p.labels,
        &ChunkedLossOptions { chunk_tokens: 6 },
    )
    .expect("counts");
    let g2 = host(e2.grad(&l2.backward()).expect("tracked"));
    let rel = max_rel_diff(&g2, &g1);
    println!("tied embeddings: d(embed) rel {rel:.1e}");
    assert!(rel <= 1e-6, "embedding gradient relative diff {rel}");
}

#[test]
fn inference_and_checkpointing_give_the_same_loss() {
    let p = problem(4, 2, 30, 16, 64);
    let want = chunked::<AD>(&p, DType::F32, [true, true], 8);
    let balanced =
        chunked::<Autodiff<Flex, BalancedCheckpointing>>(&p, DType::F32, [true, true], 8);
    assert_eq!(
        compare("balanced checkpointing", &balanced, &want),
        [0.0; 3]
    );
    let dev = Default::default();
    let h = Tensor::<Flex, 3>::from_data(TensorData::new(p.h.clone(), [p.b, p.t, p.hidden]), &dev);
    let w = Tensor::<Flex, 2>::from_data(TensorData::new(p.w.clone(), [p.hidden, p.vocab]), &dev);
    let (loss, count) =
        chunked_causal_lm_loss(h, w, &p.labels, &ChunkedLossOptions { chunk_tokens: 8 })
            .expect("counts");
    assert_eq!(count, want.count);
    assert_eq!(host(loss)[0], want.loss);
}

#[test]
fn half_precision_matches_the_unchunked_half_precision_path() {
    let p = problem(5, 2, 33, 32, 90);
    for dtype in [DType::BF16, DType::F16] {
        let want = unchunked::<AD>(&p, dtype, [true, true]);
        let got = chunked::<AD>(&p, dtype, [true, true], 9);
        let [loss, dh, dw] = compare(&format!("{dtype:?}"), &got, &want);
        // both compute the logits in the half dtype and the softmax in f32; the gradients are
        // rounded to the half dtype on different paths
        assert!(loss <= 1e-3, "{dtype:?}: loss {loss}");
        assert!(dh <= 2e-2 && dw <= 2e-2, "{dtype:?}: gradients {dh} {dw}");
    }
}

#[test]
fn bad_inputs_are_typed_errors_like_causal_lm_loss() {
    let dev = Default::default();
    let h = || Tensor::<Flex, 3>::zeros([1, 4, 8], &dev);
    let w = || Tensor::<Flex, 2>::zeros([8, 10], &dev);
    let opts = ChunkedLossOptions::default();
    let expect_err = |r: svgen_train::Result<(Tensor<Flex, 1>, usize)>| match r {
        Err(TrainError::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    let all_ignored = [IGNORE_INDEX; 4];
    let ours = expect_err(chunked_causal_lm_loss(h(), w(), &all_ignored, &opts));
    let logits = Tensor::<Flex, 3>::zeros([1, 4, 10], &dev);
    let theirs = expect_err(causal_lm_loss(logits, &all_ignored));
    assert_eq!(
        ours, theirs,
        "same error as causal_lm_loss for an all-ignored batch"
    );
    expect_err(chunked_causal_lm_loss(h(), w(), &[1, 2, 3], &opts));
    expect_err(chunked_causal_lm_loss(h(), w(), &[0, 1, 10, 2], &opts));
    expect_err(chunked_causal_lm_loss(h(), w(), &[0, 1, -5, 2], &opts));
    expect_err(chunked_causal_lm_loss(
        h(),
        Tensor::<Flex, 2>::zeros([7, 10], &dev),
        &[0, 1, 2, 3],
        &opts,
    ));
    expect_err(chunked_causal_lm_loss(
        h(),
        w(),
        &[0, 1, 2, 3],
        &ChunkedLossOptions { chunk_tokens: 0 },
    ));
    let r = linear_cross_entropy(Tensor::<Flex, 2>::zeros([3, 8], &dev), w(), &[1, 2], &opts);
    assert!(matches!(r, Err(TrainError::InvalidArgument(_))));
}
