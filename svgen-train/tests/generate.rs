//! Greedy generation parity with transformers' `generate` (batched, left padded).

mod common;
use common::*;
use svgen_train::weights::read_safetensors;
use svgen_train::{GenerationConfig, Generator, StopReason};

#[test]
fn greedy_matches_transformers_64_tokens_batched_left_padded() {
    let model = load("llama3-tied");
    let mut t = read_safetensors(fixture("llama3-tied/generate.safetensors")).unwrap();
    let ids = t.remove("input_ids").unwrap();
    let mask = t
        .remove("attention_mask")
        .unwrap()
        .into_i64("mask")
        .unwrap();
    let gen = t.remove("generated").unwrap();
    let [b, p] = [ids.shape[0], ids.shape[1]];
    let ids = ids.into_i64("ids").unwrap();
    let prompts: Vec<Vec<u32>> = (0..b)
        .map(|r| {
            (0..p)
                .filter(|&i| mask[r * p + i] == 1)
                .map(|i| ids[r * p + i] as u32)
                .collect()
        })
        .collect();
    assert_ne!(
        prompts[0].len(),
        prompts[1].len(),
        "fixture must exercise padding"
    );
    let expected = gen.into_i64("generated").unwrap();
    let cfg = GenerationConfig {
        max_new_tokens: 64,
        ..Default::default()
    };
    let out = Generator::new(&model, None)
        .generate(&prompts, &cfg)
        .unwrap();
    for (r, o) in out.iter().enumerate() {
        let want: Vec<u32> = expected[r * 64..(r + 1) * 64]
            .iter()
            .map(|&x| x as u32)
            .collect();
        assert_eq!(o.token_ids, want, "row {r}");
        assert_eq!(o.stop_reason, StopReason::MaxNewTokens);
    }
    // Each prompt alone gives the same ids as in the padded batch.
    let single = Generator::new(&model, None)
        .generate(&prompts[1..], &cfg)
        .unwrap();
    assert_eq!(single[0].token_ids, out[1].token_ids);
}

#[test]
fn stops_on_stop_token_and_validates_arguments() {
    let model = load("llama3-tied");
    let greedy = GenerationConfig {
        max_new_tokens: 8,
        ..Default::default()
    };
    let prompt = vec![vec![5u32, 6, 7]];
    let first = Generator::new(&model, None)
        .generate(&prompt, &greedy)
        .unwrap();
    let stop = first[0].token_ids[2];
    let cfg = GenerationConfig {
        stop_token_ids: vec![stop],
        ..greedy.clone()
    };
    let out = Generator::new(&model, None)
        .generate(&prompt, &cfg)
        .unwrap();
    let at = first[0].token_ids.iter().position(|&x| x == stop).unwrap();
    assert_eq!(out[0].token_ids, first[0].token_ids[..=at]);
    assert_eq!(out[0].stop_reason, StopReason::StopToken);

    let sampled = GenerationConfig {
        temperature: 0.8,
        top_k: 20,
        top_p: 0.9,
        repetition_penalty: 1.2,
        seed: 42,
        ..greedy.clone()
    };
    let a = Generator::new(&model, None)
        .generate(&prompt, &sampled)
        .unwrap();
    let b = Generator::new(&model, None)
        .generate(&prompt, &sampled)
        .unwrap();
    assert_eq!(a, b, "same seed, same tokens");

    assert!(Generator::new(&model, None)
        .generate(&[vec![100_000]], &greedy)
        .is_err());
    assert!(Generator::new(&model, None)
        .generate(&[vec![]], &greedy)
        .is_err());
    let bad = GenerationConfig {
        top_p: 0.0,
        ..greedy
    };
    assert!(Generator::new(&model, None)
        .generate(&prompt, &bad)
        .is_err());
}

/// The segmented cache: decoding token by token across several tail merges matches the
/// full forward at every step, and a cache rewound into the main segment, into the tail, or
/// to the prompt decodes the same token again to the same logits (up to summation order).
#[test]
fn kv_cache_merges_and_rewinds_matching_the_full_forward() {
    use burn::tensor::{Int, Tensor, TensorData};
    use svgen_train::KvCache;

    let model = load("llama3-tied");
    let vocab = model.config().vocab_size;
    let n = 20;
    let ids: Vec<i64> = (0..n as i64).map(|i| (i * 37 + 5) % vocab as i64).collect();
    let device = Default::default();
    let tensor = |v: &[i64]| {
        Tensor::<B, 2, Int>::from_data(TensorData::new(v.to_vec(), [1, v.len()]), &device)
    };
    let host = |t: Tensor<B, 3>| t.into_data().to_vec::<f32>().unwrap();
    let full = host(model.forward(tensor(&ids)).unwrap());
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };

    // A merge interval of 4 folds the tail into the main segment every few tokens.
    let mut cache = KvCache::<B>::with_merge_interval(model.layers.len(), 1, 4);
    assert!(cache.is_empty());
    let prompt = 5;
    model
        .forward_cached(tensor(&ids[..prompt]), &[vec![true; prompt]], &mut cache)
        .unwrap();
    let mut steps = Vec::new();
    for i in prompt..n {
        let h = model
            .forward_cached(tensor(&ids[i..=i]), &[vec![true]], &mut cache)
            .unwrap();
        let logits = host(model.logits(h));
        let diff = max_diff(&logits, &full[i * vocab..(i + 1) * vocab]);
        assert!(diff < 1e-4, "position {i}: max abs diff {diff}");
        steps.push(logits);
    }
    assert_eq!(cache.len(), n);

    // Rewind to positions inside the tail, inside the main segment and to the prompt; a
    // multi-token chunk after a rewind also matches.
    for back in [18, 12, 7, prompt] {
        cache.truncate(back);
        assert_eq!(cache.len(), back);
        let h = model
            .forward_cached(tensor(&ids[back..=back]), &[vec![true]], &mut cache)
            .unwrap();
        // The segments may be split elsewhere than on the first pass, which only changes
        // the summation order.
        let diff = max_diff(&host(model.logits(h)), &steps[back - prompt]);
        assert!(diff < 1e-5, "rewound to {back}: max abs diff {diff}");
    }
    let h = model
        .forward_cached(
            tensor(&ids[prompt + 1..n]),
            &[vec![true; n - prompt - 1]],
            &mut cache,
        )
        .unwrap();
    let logits = host(model.logits(h));
    let diff = max_diff(&logits, &full[(prompt + 1) * vocab..]);
    assert!(diff < 1e-4, "chunk after rewind: max abs diff {diff}");
    assert_eq!(cache.len(), n);
}
