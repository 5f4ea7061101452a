//! The host-memory KV cache and single-token attention kernel that `KvCache` uses on exactly
//! `Flex` with f32 models, against the generic tensor path (`Autodiff<Flex>` always takes it,
//! on the same kernels underneath): batched, left-padded decoding with GQA, rewinds into the
//! cache, and a multi-token chunk after a rewind give the same logits within 1e-5.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use common::fixture;
use svgen_train::{KvCache, Llama, LoadOptions};

/// Decodes the same tokens through one model and cache per backend, comparing logits.
struct Pair {
    fast: Llama<Flex>,
    generic: Llama<Autodiff<Flex>>,
    fast_cache: KvCache<Flex>,
    generic_cache: KvCache<Autodiff<Flex>>,
    name: &'static str,
}

fn ids<B: Backend>(rows: &[Vec<i64>]) -> Tensor<B, 2, Int> {
    let (b, t) = (rows.len(), rows[0].len());
    let flat: Vec<i64> = rows.concat();
    Tensor::from_data(TensorData::new(flat, [b, t]), &Default::default())
}

fn host<B: Backend>(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

impl Pair {
    fn new(name: &'static str, batch: usize) -> Self {
        let dir = fixture(name);
        let opts = LoadOptions::default(); // f32, whatever the checkpoint holds
        let fast = Llama::<Flex>::from_pretrained(&dir, opts, &Default::default()).unwrap();
        let generic =
            Llama::<Autodiff<Flex>>::from_pretrained(&dir, opts, &Default::default()).unwrap();
        let layers = fast.layers.len();
        Self {
            fast,
            generic,
            fast_cache: KvCache::new(layers, batch),
            generic_cache: KvCache::new(layers, batch),
            name,
        }
    }

    /// Runs `rows` (with `mask`) through both and returns the last position's logits of the
    /// fast path, after checking every position against the generic path.
    fn step(&mut self, rows: &[Vec<i64>], mask: &[Vec<bool>], what: &str) -> Vec<Vec<f32>> {
        let h = self
            .fast
            .forward_cached(ids(rows), mask, &mut self.fast_cache)
            .unwrap();
        let fast = host(self.fast.logits(h));
        let h = self
            .generic
            .forward_cached(ids(rows), mask, &mut self.generic_cache)
            .unwrap();
        let generic = host(self.generic.logits(h));
        assert_eq!(fast.len(), generic.len());
        let diff = common::max_abs_diff(&fast, &generic);
        assert!(
            diff <= 1e-5,
            "{}: {what}: max abs diff {diff} between the host cache and the generic path",
            self.name
        );
        assert_eq!(self.fast_cache.len(), self.generic_cache.len());
        let vocab = self.fast.config().vocab_size;
        let t = rows[0].len();
        fast.chunks_exact(t * vocab)
            .map(|row| row[(t - 1) * vocab..].to_vec())
            .collect()
    }

    fn truncate(&mut self, len: usize) {
        self.fast_cache.truncate(len);
        self.generic_cache.truncate(len);
        assert_eq!(self.fast_cache.len(), len);
    }
}

fn argmax(v: &[f32]) -> i64 {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0 as i64
}

#[test]
fn host_cache_matches_the_generic_path_batched_padded_rewound() {
    // GQA 4/2 (head_dim 16), GQA 4/1 (head_dim 24), MHA 4/4.
    for name in ["llama3-tied", "llama3-untied-bf16-sharded", "llama2-f16"] {
        let mut pair = Pair::new(name, 2);
        let vocab = pair.fast.config().vocab_size as i64;
        // Row 0 is left-padded by 3 positions.
        let prompt: Vec<Vec<i64>> = vec![
            vec![0, 0, 0, 11, 42, 7, 99, 3],
            vec![5, 17, 250, 8, 64, 1, 2, 300],
        ];
        let mask: Vec<Vec<bool>> = vec![(0..8).map(|i| i >= 3).collect(), vec![true; 8]];
        let mut last = pair.step(&prompt, &mask, "prompt");
        let ones = vec![vec![true]; 2];
        let mut fed = Vec::new();
        for i in 0..20 {
            // Greedy, shifted per step so the tokens vary even if the argmax repeats.
            let next: Vec<Vec<i64>> = last.iter().map(|l| vec![(argmax(l) + i) % vocab]).collect();
            fed.push(next.clone());
            last = pair.step(&next, &ones, &format!("decode step {i}"));
        }
        assert_eq!(pair.fast_cache.len(), 28);
        // Rewind into the decoded part and to the prompt, then decode again.
        for back in [20, 8] {
            pair.truncate(back);
            pair.step(&fed[back - 8], &ones, &format!("after rewind to {back}"));
        }
        // A multi-token chunk on top of the host cache, then single tokens again.
        let chunk: Vec<Vec<i64>> = vec![vec![12, 13, 14], vec![21, 22, 23]];
        pair.step(&chunk, &vec![vec![true; 3]; 2], "chunk after rewind");
        pair.step(&fed[0], &ones, "decode after chunk");
        assert_eq!(pair.fast_cache.len(), 13);
    }
}

#[test]
fn single_token_prompt_and_unpadded_batch_match() {
    let mut pair = Pair::new("llama3-tied", 1);
    pair.step(&[vec![7]], &[vec![true]], "one-token prompt");
    for tok in [3, 99, 250, 1] {
        pair.step(&[vec![tok]], &[vec![true]], "decode");
    }
    pair.truncate(0);
    pair.step(
        &[vec![7, 8]],
        &[vec![true; 2]],
        "prompt after rewind to empty",
    );
    pair.step(&[vec![9]], &[vec![true]], "decode after rewind to empty");
}
