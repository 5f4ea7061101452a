//! Fuzz target: arbitrary bytes → svgen-eval's safetensors loader (a corrupt header, lying
//! shapes, dtypes and offsets), opened three ways: from memory, from a file, and (when the input
//! starts with `{`) as a shard index over the committed four-shard fixture.
//!
//! Properties checked on every input:
//! * opening never panics, hangs or allocates more than the input justifies;
//! * memory and file sources agree (same keys, shapes, dtypes; same error kind);
//! * once a header is accepted, every tensor reads, converts to f32 / i64 as its dtype allows,
//!   uploads to Burn (rank 1 to 4, f32 and bf16), and a `[out, in]` tensor transposes to a linear
//!   weight; `finish` then reports nothing unused.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run safetensors_load -- -max_len=65536
//! ```
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use svgen_eval::burn::backend::Flex;
use svgen_eval::burn::tensor::DType;
use svgen_eval::weights::{WeightError, Weights};

const SHARDS: [(&str, &[u8]); 4] = [
    (
        "model-00001-of-00004.safetensors",
        include_bytes!("../../svgen-eval/tests/fixtures/weights/sharded/model-00001-of-00004.safetensors"),
    ),
    (
        "model-00002-of-00004.safetensors",
        include_bytes!("../../svgen-eval/tests/fixtures/weights/sharded/model-00002-of-00004.safetensors"),
    ),
    (
        "model-00003-of-00004.safetensors",
        include_bytes!("../../svgen-eval/tests/fixtures/weights/sharded/model-00003-of-00004.safetensors"),
    ),
    (
        "model-00004-of-00004.safetensors",
        include_bytes!("../../svgen-eval/tests/fixtures/weights/sharded/model-00004-of-00004.safetensors"),
    ),
];

/// A private scratch folder holding the fixture shards (one per fuzzing process).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("svgen-fuzz-safetensors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        for (name, bytes) in SHARDS {
            std::fs::write(dir.join(name), bytes).expect("fixture shard");
        }
        dir
    })
}

/// What a caller can observe of an opened checkpoint.
fn summary(w: &Weights) -> Vec<(String, Vec<usize>, String)> {
    w.keys()
        .map(|k| {
            let shape = w.shape(k).expect("listed key has a shape").to_vec();
            let dtype = w.dtype(k).expect("listed key has a dtype").to_string();
            (k.to_string(), shape, dtype)
        })
        .collect()
}

/// Error kinds compared between the memory and file sources (messages name different origins).
fn kind(e: &WeightError) -> String {
    match e {
        WeightError::Corrupt { problem, .. } => format!("corrupt: {problem}"),
        WeightError::UnsupportedDtype { key, dtype } => format!("dtype {key} {dtype}"),
        other => format!("other: {other}"),
    }
}

/// Reads every tensor of an accepted checkpoint in every way a model does.
fn exercise(w: &Weights) {
    let device = Default::default();
    let keys: Vec<String> = w.keys().map(str::to_string).collect();
    for key in &keys {
        let shape = w.shape(key).expect("listed key").to_vec();
        let dtype = w.dtype(key).expect("listed key");
        let host = w
            .take_any(key)
            .unwrap_or_else(|e| panic!("accepted header but `{key}` does not read: {e}"));
        assert_eq!(host.shape, shape);
        let numel: usize = shape.iter().product();
        assert_eq!(host.numel(), Some(numel), "`{key}`: data length disagrees with its shape");
        if dtype.is_float() {
            let v = host.into_f32(key).expect("float data converts to f32");
            assert_eq!(v.len(), numel);
            match shape.len() {
                1 => drop(w.tensor::<Flex, 1>(key, [shape[0]], &device).expect("rank-1 upload")),
                2 => {
                    let [o, i] = [shape[0], shape[1]];
                    let t = w.tensor::<Flex, 2>(key, [o, i], &device).expect("rank-2 upload");
                    assert_eq!(t.dims(), [o, i]);
                    let lw = w.linear_weight::<Flex>(key, i, o, &device).expect("linear weight");
                    assert_eq!(lw.dims(), [i, o]);
                    let bf = w
                        .tensor_as::<Flex, 2>(key, [o, i], &device, DType::BF16)
                        .expect("bf16 upload");
                    assert_eq!(bf.dims(), [o, i]);
                }
                3 => drop(
                    w.tensor::<Flex, 3>(key, [shape[0], shape[1], shape[2]], &device)
                        .expect("rank-3 upload"),
                ),
                4 => drop(
                    w.tensor::<Flex, 4>(key, [shape[0], shape[1], shape[2], shape[3]], &device)
                        .expect("rank-4 upload"),
                ),
                _ => {}
            }
        } else {
            // U64 values above i64::MAX are refused by name (a typed error, not a wrap-around).
            let unsigned = dtype.to_string() == "U64";
            match host.into_i64(key) {
                Ok(v) => assert_eq!(v.len(), numel),
                Err(WeightError::UnsupportedDtype { key: k, .. }) if unsigned => assert_eq!(&k, key),
                Err(e) => panic!("integer data of `{key}` does not convert to i64: {e}"),
            }
            assert!(w.tensor::<Flex, 1>(key, [numel], &device).is_err() || shape.len() != 1);
        }
    }
    w.finish().expect("every tensor was taken");
}

fuzz_target!(|data: &[u8]| {
    let from_memory = Weights::from_memory(data.to_vec(), "fuzz.safetensors");

    let dir = scratch();
    let file = dir.join("input.safetensors");
    std::fs::write(&file, data).expect("write input");
    let from_file = Weights::open_file(&file);

    match (&from_memory, &from_file) {
        (Ok(m), Ok(f)) => {
            assert_eq!(summary(m), summary(f), "memory and file sources disagree");
            assert_eq!(m.metadata(), f.metadata());
        }
        (Err(m), Err(f)) => assert_eq!(kind(m), kind(f), "memory and file errors disagree"),
        (m, f) => panic!("memory source {:?}, file source {:?}", m.is_ok(), f.is_ok()),
    }
    if let Ok(w) = from_memory {
        exercise(&w);
    }
    if let Ok(w) = from_file {
        exercise(&w.with_dtype(DType::BF16));
    }

    // A shard index over the fixture shards.
    if data.first() == Some(&b'{') {
        let index = dir.join("model.safetensors.index.json");
        std::fs::write(&index, data).expect("write index");
        if let Ok(w) = Weights::open_file(&index) {
            exercise(&w);
        }
    }
});
