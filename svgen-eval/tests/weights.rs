//! The safetensors loader and writer: files written by torch / huggingface_hub
//! (`tools/fixtures/make_weights.py`), every dtype, sharded checkpoints, corrupt and hostile
//! files built here byte by byte, take-by-key semantics, renames, Burn helpers and the writer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::DType;
use half::{bf16, f16};
use serde_json::json;
use svgen_eval::weights::{
    diffusers_legacy_attention_key, safetensors_bytes, transpose, write_safetensors, Corruption,
    Dtype, HostData, HostTensor, IndexProblem, StoreDtype, WeightError, Weights, MAX_HEADER_BYTES,
    MAX_RANK,
};

type B = Flex;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/weights")
}

/// Bitwise equality that treats every NaN as equal to every NaN, and fails on length mismatch.
fn assert_same_f32(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits();
        assert!(
            same,
            "{what}[{i}]: {g:e} ({:#x}) vs {w:e} ({:#x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// A safetensors file from a raw header value and a data section.
fn file_bytes(header: serde_json::Value, data: &[u8]) -> Vec<u8> {
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

fn corruption(r: Result<Weights, WeightError>) -> Corruption {
    match r {
        Err(WeightError::Corrupt { problem, .. }) => problem,
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
}

fn index_problem(r: Result<Weights, WeightError>) -> IndexProblem {
    match r {
        Err(WeightError::BadIndex { problem, .. }) => problem,
        other => panic!("expected a bad-index error, got {other:?}"),
    }
}

#[test]
fn every_torch_dtype_decodes_exactly() {
    let w = Weights::open_file(fixtures().join("dtypes.safetensors")).unwrap();
    assert_eq!(w.metadata().get("format").map(String::as_str), Some("pt"));
    for (name, dtype) in [
        ("F16", Dtype::F16),
        ("BF16", Dtype::BF16),
        ("F32", Dtype::F32),
        ("F64", Dtype::F64),
        ("F8_E4M3", Dtype::F8E4M3),
        ("F8_E5M2", Dtype::F8E5M2),
    ] {
        assert_eq!(w.dtype(name), Some(dtype), "{name}");
        let t = w.take_any(name).unwrap();
        assert_eq!(t.dtype(), dtype, "{name} keeps its stored dtype");
        let (reference, shape) = w
            .f32_any(&format!("{name}.f64"))
            .unwrap_or_else(|e| panic!("{e}"));
        let exact = w.take_any(&format!("{name}.f64")).unwrap();
        let HostData::F64(exact) = exact.data else {
            panic!("{name}.f64 is not F64")
        };
        assert_eq!(t.shape, shape, "{name}");
        // torch's float64 conversion, rounded to f32 (exact for every format narrower than f32)
        let want: Vec<f32> = exact.iter().map(|&x| x as f32).collect();
        assert_same_f32(&reference, &want, name);
        let (got, _) = w.f32_any(name).unwrap();
        assert_same_f32(&got, &want, name);
    }
    // F8 tensors hold all 256 bit patterns: e4m3fn has 2 NaNs and no infinities, e5m2 has both.
    let (e4, _) = w.f32_any("F8_E4M3").unwrap();
    assert_eq!(e4.iter().filter(|x| x.is_nan()).count(), 2);
    assert_eq!(e4[0x7e], 448.0);
    assert_eq!(e4[0x01], 2f32.powi(-9));
    let (e5, _) = w.f32_any("F8_E5M2").unwrap();
    assert_eq!(e5[0x7c], f32::INFINITY);
    assert_eq!(e5.iter().filter(|x| x.is_nan()).count(), 6);

    let ints: [(&str, Dtype, Vec<i64>); 9] = [
        ("BOOL", Dtype::Bool, vec![1, 0, 1, 1]),
        ("U8", Dtype::U8, vec![0, 1, 127, 128, 255]),
        ("I8", Dtype::I8, vec![-128, -1, 0, 1, 127]),
        ("I16", Dtype::I16, vec![-32768, -1, 0, 1, 32767]),
        ("U16", Dtype::U16, vec![0, 1, 65535]),
        (
            "I32",
            Dtype::I32,
            vec![i32::MIN.into(), -1, 0, 1, i32::MAX.into()],
        ),
        ("U32", Dtype::U32, vec![0, 1, u32::MAX.into()]),
        ("I64", Dtype::I64, vec![i64::MIN, -1, 0, 1, i64::MAX]),
        ("U64", Dtype::U64, vec![0, 1, i64::MAX]),
    ];
    for (name, dtype, want) in ints {
        assert_eq!(w.dtype(name), Some(dtype), "{name}");
        let (got, shape) = w.i64_any(name).unwrap();
        assert_eq!(got, want, "{name}");
        assert_eq!(shape, vec![want.len()], "{name}");
        assert!(
            matches!(w.f32_any(name), Err(WeightError::UnsupportedDtype { key, .. }) if key == name),
            "{name} is not a float tensor"
        );
    }
    assert!(matches!(
        w.i64_any("F32"),
        Err(WeightError::UnsupportedDtype { .. })
    ));
    // a 0-d scalar matches a requested [1], and the reverse
    assert_eq!(w.shape("scalar"), Some(&[][..]));
    assert_eq!(w.f32("scalar", &[1]).unwrap(), vec![2.6592f32]);
    assert_eq!(w.take_any("empty").unwrap().shape, vec![0, 3]);
    assert!(w.f32("empty", &[0, 3]).unwrap().is_empty());
    w.finish().unwrap();
}

/// IEEE half from its fields, independently of the `half` crate.
fn f16_reference(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let man = f64::from(bits & 0x3ff);
    let v = match exp {
        0 => man * 2f64.powi(-24),
        31 if man == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + man / 1024.0) * 2f64.powi(e - 15),
    };
    (sign * v) as f32
}

#[test]
fn half_precision_widening_is_exact_for_every_bit_pattern() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    let mut t = BTreeMap::new();
    t.insert(
        "f16".to_string(),
        HostTensor::new(
            "f16",
            vec![256, 256],
            HostData::F16(bits.iter().map(|&b| f16::from_bits(b)).collect()),
        )
        .unwrap(),
    );
    t.insert(
        "bf16".to_string(),
        HostTensor::new(
            "bf16",
            vec![65536],
            HostData::BF16(bits.iter().map(|&b| bf16::from_bits(b)).collect()),
        )
        .unwrap(),
    );
    let w = Weights::from_memory(
        safetensors_bytes(&t, StoreDtype::Keep, None).unwrap(),
        "all",
    )
    .unwrap();
    let want_bf16: Vec<f32> = bits
        .iter()
        .map(|&b| f32::from_bits(u32::from(b) << 16))
        .collect();
    assert_same_f32(&w.f32("bf16", &[65536]).unwrap(), &want_bf16, "bf16");
    let want_f16: Vec<f32> = bits.iter().map(|&b| f16_reference(b)).collect();
    assert_same_f32(&w.f32("f16", &[256, 256]).unwrap(), &want_f16, "f16");
}

#[test]
fn writer_rounds_to_nearest_even() {
    // 1 + 2^-8 lies halfway between bf16 1.0 and 1.0078125: ties go to the even mantissa.
    let cases_bf16: [(u32, u16); 4] = [
        (0x3f80_8000, 0x3f80),
        (0x3f81_8000, 0x3f82),
        (0x3f80_8001, 0x3f81),
        (0xbf80_7fff, 0xbf80),
    ];
    let cases_f16: [(f32, u16); 3] = [
        (1.0 + 2f32.powi(-11), 0x3c00),
        (1.0 + 3.0 * 2f32.powi(-11), 0x3c02),
        (65520.0, 0x7c00), // rounds up past the largest finite half
    ];
    let mut t = BTreeMap::new();
    t.insert(
        "b".to_string(),
        HostTensor::f32(
            vec![4],
            cases_bf16.iter().map(|c| f32::from_bits(c.0)).collect(),
        ),
    );
    let bytes = safetensors_bytes(&t, StoreDtype::BF16, None).unwrap();
    let w = Weights::from_memory(bytes, "b").unwrap();
    let HostData::BF16(got) = w.take_any("b").unwrap().data else {
        panic!("not stored as BF16")
    };
    let got: Vec<u16> = got.iter().map(|x| x.to_bits()).collect();
    assert_eq!(got, cases_bf16.map(|c| c.1));
    let mut t = BTreeMap::new();
    t.insert(
        "h".to_string(),
        HostTensor::f32(vec![3], cases_f16.iter().map(|c| c.0).collect()),
    );
    let w =
        Weights::from_memory(safetensors_bytes(&t, StoreDtype::F16, None).unwrap(), "h").unwrap();
    let HostData::F16(got) = w.take_any("h").unwrap().data else {
        panic!("not stored as F16")
    };
    let got: Vec<u16> = got.iter().map(|x| x.to_bits()).collect();
    assert_eq!(got, cases_f16.map(|c| c.1));
}

#[test]
fn sharded_checkpoint_from_huggingface_hub_matches_the_single_file() {
    let sharded = Weights::open(fixtures().join("sharded"), "model").unwrap();
    let single = Weights::open_file(fixtures().join("single.safetensors")).unwrap();
    assert_eq!(sharded.shard_paths().count(), 4);
    assert!(sharded.path().ends_with("model.safetensors.index.json"));
    let keys: Vec<&str> = sharded.keys().collect();
    assert_eq!(keys, single.keys().collect::<Vec<_>>());
    assert_eq!(keys.len(), 7);
    for k in keys {
        let a = sharded.take_any(k).unwrap();
        let b = single.take_any(k).unwrap();
        assert_eq!(a, b, "{k}");
    }
    assert_eq!(
        sharded.dtype("model.layers.1.mlp.up_proj.weight"),
        Some(Dtype::BF16)
    );
    sharded.finish().unwrap();
    // the index itself may be given
    let by_index =
        Weights::open_file(fixtures().join("sharded/model.safetensors.index.json")).unwrap();
    assert_eq!(by_index.len(), 7);
}

fn tensors() -> BTreeMap<String, HostTensor> {
    let mut t = BTreeMap::new();
    t.insert(
        "a.weight".to_string(),
        HostTensor::f32(vec![2, 3], (0..6).map(|x| x as f32).collect()),
    );
    t.insert(
        "a.bias".to_string(),
        HostTensor::f32(vec![2], vec![0.5, -0.5]),
    );
    t.insert(
        "ids".to_string(),
        HostTensor::new("ids", vec![3], HostData::I64(vec![1, -2, 3])).unwrap(),
    );
    t.insert(
        "mask".to_string(),
        HostTensor::new("mask", vec![2], HostData::Bool(vec![true, false])).unwrap(),
    );
    t
}

/// Writes `shards` (file name -> tensors) and an index mapping `map` (key -> file name).
fn write_sharded(
    dir: &Path,
    shards: &[(&str, BTreeMap<String, HostTensor>)],
    map: serde_json::Value,
) {
    for (name, t) in shards {
        write_safetensors(dir.join(name), t, StoreDtype::Keep, None).unwrap();
    }
    let index = json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_round_trip_and_index_checks() {
    let dir = tempfile::tempdir().unwrap();
    let all = tensors();
    let (first, second): (BTreeMap<_, _>, BTreeMap<_, _>) = all
        .clone()
        .into_iter()
        .partition(|(k, _)| k.starts_with("a."));
    let map = json!({"a.weight": "s1.safetensors", "a.bias": "s1.safetensors",
                     "ids": "s2.safetensors", "mask": "s2.safetensors"});
    write_sharded(
        dir.path(),
        &[
            ("s1.safetensors", first.clone()),
            ("s2.safetensors", second.clone()),
        ],
        map,
    );
    let w = Weights::open(dir.path(), "model").unwrap();
    assert_eq!(w.read_all().unwrap(), all);

    // a key the index maps to a shard that lacks it
    let map = json!({"a.weight": "s1.safetensors", "a.bias": "s1.safetensors", "ids": "s2.safetensors",
                     "mask": "s2.safetensors", "ghost": "s2.safetensors"});
    write_sharded(dir.path(), &[], map);
    assert_eq!(
        index_problem(Weights::open(dir.path(), "model")),
        IndexProblem::NotInShard {
            key: "ghost".into(),
            shard: "s2.safetensors".into()
        }
    );
    // a shard tensor the index does not list (or lists in another shard)
    let map = json!({"a.weight": "s1.safetensors", "a.bias": "s1.safetensors", "ids": "s2.safetensors",
                     "mask": "s1.safetensors"});
    write_sharded(dir.path(), &[], map);
    assert!(matches!(
        index_problem(Weights::open(dir.path(), "model")),
        IndexProblem::Unlisted { key, .. } | IndexProblem::NotInShard { key, .. } if key == "mask"
    ));
    // shard names must be plain file names
    for bad in [
        "../s1.safetensors",
        "/etc/passwd",
        "sub/s1.safetensors",
        "..",
        "",
        "C:s1",
        "a\\b",
    ] {
        write_sharded(dir.path(), &[], json!({"a.weight": bad}));
        assert_eq!(
            index_problem(Weights::open(dir.path(), "model")),
            IndexProblem::ShardName {
                key: "a.weight".into(),
                shard: bad.into()
            },
            "{bad:?}"
        );
    }
    // syntax
    for text in [
        "not json",
        "{\"weight_map\": 3}",
        "{}",
        "{\"weight_map\": {\"a\": 1}}",
    ] {
        std::fs::write(dir.path().join("model.safetensors.index.json"), text).unwrap();
        assert!(
            matches!(
                index_problem(Weights::open(dir.path(), "model")),
                IndexProblem::Syntax(_)
            ),
            "{text}"
        );
    }
    // a shard that does not exist
    write_sharded(dir.path(), &[], json!({"a.weight": "nope.safetensors"}));
    assert!(
        matches!(Weights::open(dir.path(), "model"), Err(WeightError::Io { path, .. }) if path.ends_with("nope.safetensors"))
    );
    // neither layout
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        Weights::open(empty.path(), "diffusion_pytorch_model"),
        Err(WeightError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound
    ));
}

#[test]
fn hostile_headers_are_refused_before_any_allocation() {
    let open = |b: Vec<u8>| Weights::from_memory(b, "bad.safetensors");
    assert_eq!(
        corruption(open(vec![1, 2, 3])),
        Corruption::TooShort { len: 3 }
    );
    // a header length of 2^64 - 1 (or anything above the cap) is refused outright
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert_eq!(
        corruption(open(huge)),
        Corruption::HeaderTooLarge {
            len: u64::MAX,
            limit: MAX_HEADER_BYTES
        }
    );
    let mut past = 1000u64.to_le_bytes().to_vec();
    past.extend_from_slice(b"{}");
    assert_eq!(
        corruption(open(past)),
        Corruption::HeaderPastEnd {
            len: 1000,
            file_len: 10
        }
    );
    for header in ["not json", "[1, 2]", "{\"a\": "] {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        assert!(
            matches!(corruption(open(b)), Corruption::HeaderSyntax(_)),
            "{header}"
        );
    }
    let entry = |dtype: &str, shape: serde_json::Value, offsets: serde_json::Value| json!({"dtype": dtype, "shape": shape, "data_offsets": offsets});
    // shapes that lie about the data
    let lie = file_bytes(
        json!({"a": entry("F32", json!([2, 2]), json!([0, 8]))}),
        &[0; 8],
    );
    assert_eq!(
        corruption(open(lie)),
        Corruption::ByteLength {
            key: "a".into(),
            expected: 16,
            found: 8
        }
    );
    let giant = file_bytes(
        json!({"a": entry("F32", json!([1u64 << 40, 1u64 << 20]), json!([0, 8]))}),
        &[0; 8],
    );
    assert!(matches!(
        corruption(open(giant)),
        Corruption::ByteLength { .. }
    ));
    let overflow = file_bytes(
        json!({"a": entry("F64", json!([1u64 << 32, 1u64 << 32, 1u64 << 32]), json!([0, 8]))}),
        &[0; 8],
    );
    assert!(
        matches!(corruption(open(overflow)), Corruption::SizeOverflow { key, .. } if key == "a")
    );
    let overflow_bytes = file_bytes(
        json!({"a": entry("F64", json!([1u64 << 62]), json!([0, 8]))}),
        &[0; 8],
    );
    assert!(matches!(
        corruption(open(overflow_bytes)),
        Corruption::SizeOverflow { .. }
    ));
    let deep = file_bytes(
        json!({"a": entry("U8", json!(vec![1; MAX_RANK + 1]), json!([0, 1]))}),
        &[0; 1],
    );
    assert!(
        matches!(corruption(open(deep)), Corruption::RankTooLarge { rank, .. } if rank == MAX_RANK + 1)
    );
    // offsets that lie about the file
    let far = file_bytes(
        json!({"a": entry("U8", json!([1u64 << 50]), json!([0, 1u64 << 50]))}),
        &[0; 8],
    );
    assert!(
        matches!(corruption(open(far)), Corruption::OutOfBounds { end, data_len: 8, .. } if end == 1 << 50)
    );
    let reversed = file_bytes(
        json!({"a": entry("U8", json!([0]), json!([8, 0]))}),
        &[0; 8],
    );
    assert!(matches!(
        corruption(open(reversed)),
        Corruption::OutOfBounds { .. }
    ));
    let overlap = file_bytes(
        json!({"a": entry("F32", json!([2]), json!([0, 8])), "b": entry("F32", json!([2]), json!([4, 12]))}),
        &[0; 12],
    );
    assert_eq!(
        corruption(open(overlap)),
        Corruption::Overlap {
            first: "a".into(),
            second: "b".into()
        }
    );
    let aliased = file_bytes(
        json!({"a": entry("F32", json!([2]), json!([0, 8])), "b": entry("I64", json!([1]), json!([0, 8]))}),
        &[0; 8],
    );
    assert!(matches!(
        corruption(open(aliased)),
        Corruption::Overlap { .. }
    ));
    let hole = file_bytes(
        json!({"a": entry("F32", json!([1]), json!([0, 4])), "b": entry("F32", json!([1]), json!([8, 12]))}),
        &[0; 12],
    );
    assert_eq!(corruption(open(hole)), Corruption::Gap { begin: 4, end: 8 });
    let trailing = file_bytes(
        json!({"a": entry("F32", json!([1]), json!([0, 4]))}),
        &[0; 9],
    );
    assert_eq!(
        corruption(open(trailing)),
        Corruption::Gap { begin: 4, end: 9 }
    );
    // malformed entries and metadata
    let no_dtype = file_bytes(
        json!({"a": {"shape": [1], "data_offsets": [0, 4]}}),
        &[0; 4],
    );
    assert!(matches!(corruption(open(no_dtype)), Corruption::BadEntry { key, .. } if key == "a"));
    let negative = file_bytes(
        json!({"a": entry("F32", json!([-1]), json!([0, 4]))}),
        &[0; 4],
    );
    assert!(matches!(
        corruption(open(negative)),
        Corruption::BadEntry { .. }
    ));
    let three = file_bytes(
        json!({"a": entry("F32", json!([1]), json!([0, 4, 8]))}),
        &[0; 4],
    );
    assert!(matches!(
        corruption(open(three)),
        Corruption::BadEntry { .. }
    ));
    let meta = file_bytes(json!({"__metadata__": {"format": 1}}), &[]);
    assert!(matches!(corruption(open(meta)), Corruption::BadMetadata(_)));
    let unknown = file_bytes(
        json!({"a": entry("C64", json!([1]), json!([0, 8]))}),
        &[0; 8],
    );
    assert!(
        matches!(open(unknown), Err(WeightError::UnsupportedDtype { key, dtype }) if key == "a" && dtype == "C64")
    );
    // duplicate keys (serde_json would silently keep the last)
    let text = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    let mut dup = (text.len() as u64).to_le_bytes().to_vec();
    dup.extend_from_slice(text.as_bytes());
    dup.push(7);
    assert_eq!(corruption(open(dup)), Corruption::DuplicateKey("a".into()));
    // and a valid file with an empty data section is fine
    assert!(open(file_bytes(json!({"__metadata__": {"k": "v"}}), &[]))
        .unwrap()
        .is_empty());
}

#[test]
fn corrupt_files_on_disk_and_files_truncated_after_opening() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.safetensors");
    std::fs::write(
        &p,
        file_bytes(
            json!({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}),
            &[0; 8],
        ),
    )
    .unwrap();
    assert!(matches!(
        Weights::open_file(&p),
        Err(WeightError::Corrupt { path, problem: Corruption::ByteLength { .. } }) if path == p
    ));
    write_safetensors(&p, &tensors(), StoreDtype::F32, None).unwrap();
    let w = Weights::open_file(&p).unwrap();
    // the file shrinks under the open loader: a typed I/O error, not a panic or garbage
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let mut errors = 0;
    for k in w.keys() {
        match w.take_any(k) {
            Err(WeightError::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof);
                errors += 1;
            }
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(errors, 1, "exactly the last tensor lost its bytes");
}

#[test]
fn take_by_key_missing_wrong_and_unused() {
    let w = Weights::from_tensors(&tensors(), "t.safetensors").unwrap();
    match w.take("a.weight", &[3, 2]) {
        Err(WeightError::ShapeMismatch {
            key,
            expected,
            found,
        }) => {
            assert_eq!(
                (key.as_str(), expected, found),
                ("a.weight", vec![3, 2], vec![2, 3])
            );
        }
        other => panic!("{other:?}"),
    }
    match w.take("b.weight", &[4]) {
        Err(WeightError::MissingTensor {
            key,
            path,
            expected,
        }) => {
            assert_eq!(key, "b.weight");
            assert_eq!(path, Path::new("t.safetensors"));
            assert_eq!(expected, vec![4]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.f32("a.bias", &[2]).unwrap(), vec![0.5, -0.5]);
    // taking again reads again
    assert_eq!(w.f32("a.bias", &[2]).unwrap(), vec![0.5, -0.5]);
    assert_eq!(w.unused_keys(), vec!["a.weight", "ids", "mask"]);
    let e = w.finish().unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("3 tensor(s)") && msg.contains("`ids`"),
        "{msg}"
    );
    match e {
        WeightError::UnusedTensors { keys, .. } => {
            assert_eq!(keys, vec!["a.weight", "ids", "mask"])
        }
        other => panic!("{other:?}"),
    }
    w.ignore(|k| k == "mask");
    assert_eq!(w.i64("ids", &[3]).unwrap(), vec![1, -2, 3]);
    assert_eq!(w.unused_keys(), vec!["a.weight"]);
    w.take("a.weight", &[2, 3]).unwrap();
    w.finish().unwrap();
    // svgen-eval's error keeps its tensor-level variants
    let e: svgen_eval::EvalError = w.take("zz", &[1]).unwrap_err().into();
    assert!(
        matches!(e, svgen_eval::EvalError::MissingTensor { name, expected } if name == "zz" && expected == [1])
    );
}

#[test]
fn key_renames() {
    // transformers 5 CLIPTextModel -> transformers 4 layout
    let w = Weights::from_tensors(&tensors(), "t")
        .unwrap()
        .with_key_prefix("text_model.");
    assert!(w.contains("text_model.a.weight") && !w.contains("a.weight"));
    // errors name the new keys
    assert!(
        matches!(w.take("text_model.a.bias", &[3]), Err(WeightError::ShapeMismatch { key, .. }) if key == "text_model.a.bias")
    );

    // PEFT adapter folder keys
    let mut t = BTreeMap::new();
    t.insert(
        "base_model.model.model.layers.0.q_proj.lora_A.weight".to_string(),
        HostTensor::f32(vec![1], vec![1.0]),
    );
    t.insert("other".to_string(), HostTensor::f32(vec![1], vec![2.0]));
    let w = Weights::from_tensors(&t, "adapter_model.safetensors")
        .unwrap()
        .strip_key_prefix("base_model.model.")
        .unwrap();
    assert_eq!(
        w.keys().collect::<Vec<_>>(),
        vec!["model.layers.0.q_proj.lora_A.weight", "other"]
    );
    assert_eq!(
        w.f32("model.layers.0.q_proj.lora_A.weight", &[1]).unwrap(),
        vec![1.0]
    );
    // a rename that makes two keys collide is refused
    t.insert(
        "base_model.model.other".to_string(),
        HostTensor::f32(vec![1], vec![3.0]),
    );
    let collide = Weights::from_tensors(&t, "x")
        .unwrap()
        .strip_key_prefix("base_model.model.");
    assert!(matches!(collide, Err(WeightError::BadKey { key, .. }) if key == "other"));

    // diffusers' legacy VAE attention names
    let mut t = BTreeMap::new();
    for k in ["query", "key", "value", "proj_attn"] {
        t.insert(
            format!("encoder.mid_block.attentions.0.{k}.weight"),
            HostTensor::f32(vec![1], vec![0.0]),
        );
    }
    t.insert(
        "encoder.conv_in.weight".to_string(),
        HostTensor::f32(vec![1], vec![0.0]),
    );
    let w = Weights::from_tensors(&t, "vae")
        .unwrap()
        .rename(diffusers_legacy_attention_key)
        .unwrap();
    assert_eq!(
        w.keys().collect::<Vec<_>>(),
        vec![
            "encoder.conv_in.weight",
            "encoder.mid_block.attentions.0.to_k.weight",
            "encoder.mid_block.attentions.0.to_out.0.weight",
            "encoder.mid_block.attentions.0.to_q.weight",
            "encoder.mid_block.attentions.0.to_v.weight",
        ]
    );
}

#[test]
fn writer_round_trip_is_atomic_and_readable_by_the_reference_crate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/out/adapter_model.safetensors");
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let t = tensors();
    write_safetensors(&path, &t, StoreDtype::BF16, Some(&meta)).unwrap();
    // only the file itself: the temporary file was renamed
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("adapter_model.safetensors")]
    );

    let bytes = std::fs::read(&path).unwrap();
    let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("format"))
            .map(String::as_str),
        Some("pt")
    );
    let a = reference.tensor("a.weight").unwrap();
    assert_eq!(a.dtype(), safetensors::Dtype::BF16);
    assert_eq!(a.shape(), &[2, 3]);
    let ids = reference.tensor("ids").unwrap();
    assert_eq!(
        ids.dtype(),
        safetensors::Dtype::I64,
        "integers keep their dtype"
    );
    assert_eq!(
        reference.tensor("mask").unwrap().dtype(),
        safetensors::Dtype::BOOL
    );

    let w = Weights::open_file(&path).unwrap();
    assert_eq!(w.metadata(), &meta);
    assert_eq!(w.dtype("a.weight"), Some(Dtype::BF16));
    assert_eq!(
        w.f32("a.weight", &[2, 3]).unwrap(),
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    assert_eq!(w.i64("mask", &[2]).unwrap(), vec![1, 0]);

    // overwriting replaces the file; Keep writes every tensor as held
    write_safetensors(&path, &t, StoreDtype::Keep, None).unwrap();
    let w = Weights::open_file(&path).unwrap();
    assert_eq!(w.read_all().unwrap(), t);
    assert!(w.metadata().is_empty());

    // a file written by the reference crate reads back identically
    let data: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data).unwrap();
    let theirs = safetensors::serialize(vec![("x", view)], None).unwrap();
    assert_eq!(
        Weights::from_memory(theirs, "theirs")
            .unwrap()
            .f32("x", &[2])
            .unwrap(),
        vec![1.5, -2.0]
    );

    // invalid input creates no file
    let bad_path = dir.path().join("bad.safetensors");
    let mut bad = BTreeMap::new();
    bad.insert("x".to_string(), HostTensor::f32(vec![2, 2], vec![1.0; 3]));
    assert!(matches!(
        write_safetensors(&bad_path, &bad, StoreDtype::F32, None),
        Err(WeightError::ShapeMismatch { key, expected, found }) if key == "x" && expected == [2, 2] && found == [3]
    ));
    let mut reserved = BTreeMap::new();
    reserved.insert(
        "__metadata__".to_string(),
        HostTensor::f32(vec![1], vec![1.0]),
    );
    assert!(matches!(
        write_safetensors(&bad_path, &reserved, StoreDtype::F32, None),
        Err(WeightError::BadKey { .. })
    ));
    assert!(!bad_path.exists());
}

#[test]
fn burn_helpers_transpose_convert_and_freeze() {
    let device = Default::default();
    // HF linear [out=3, in=2] stored in bf16
    let mut t = BTreeMap::new();
    t.insert(
        "fc.weight".to_string(),
        HostTensor::f32(vec![3, 2], vec![1., 2., 3., 4., 5., 6.]),
    );
    t.insert(
        "fc.bias".to_string(),
        HostTensor::f32(vec![3], vec![0.5, 0.25, -1.0]),
    );
    t.insert(
        "emb.weight".to_string(),
        HostTensor::f32(vec![4, 2], (0..8).map(|x| x as f32).collect()),
    );
    let bytes = safetensors_bytes(&t, StoreDtype::BF16, None).unwrap();
    let w = Weights::from_memory(bytes.clone(), "fc").unwrap();
    let fc = w.linear::<B>("fc", 2, 3, true, &device).unwrap();
    assert_eq!(fc.weight.dims(), [2, 3]);
    let got: Vec<f32> = fc.weight.val().into_data().to_vec().unwrap();
    assert_eq!(got, vec![1., 3., 5., 2., 4., 6.]);
    let y: Vec<f32> = fc
        .forward(Tensor::<B, 2>::from_data([[1.0, 1.0]], &device))
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(y, vec![3.5, 7.25, 10.0]);
    let emb = w.embedding::<B>("emb", 4, 2, &device).unwrap();
    assert_eq!(emb.weight.dims(), [4, 2]);
    w.finish().unwrap();
    // wrong rank or dtype for a Burn tensor
    assert!(matches!(
        w.tensor::<B, 2>("fc.bias", [3, 1], &device),
        Err(WeightError::ShapeMismatch { .. })
    ));

    // dtype on creation
    let w = Weights::from_memory(bytes.clone(), "fc")
        .unwrap()
        .with_dtype(DType::F32);
    assert_eq!(
        w.tensor::<B, 1>("fc.bias", [3], &device).unwrap().dtype(),
        DType::F32
    );
    let w = Weights::from_memory(bytes.clone(), "fc").unwrap();
    let f64_t = w
        .tensor_as::<B, 1>("fc.bias", [3], &device, DType::F64)
        .unwrap();
    assert_eq!(f64_t.dtype(), DType::F64);
    assert_eq!(
        f64_t.into_data().to_vec::<f64>().unwrap(),
        vec![0.5, 0.25, -1.0]
    );

    // frozen parameters under autodiff
    type A = Autodiff<Flex>;
    let trainable = Weights::from_memory(bytes.clone(), "fc")
        .unwrap()
        .param::<A, 1>("fc.bias", [3], &device)
        .unwrap();
    assert!(trainable.val().is_require_grad());
    let frozen = Weights::from_memory(bytes, "fc").unwrap().frozen();
    let lin = frozen.linear::<A>("fc", 2, 3, true, &device).unwrap();
    assert!(!lin.weight.val().is_require_grad());
    assert!(!lin.bias.unwrap().val().is_require_grad());

    // integer tensors are not float parameters
    let w = Weights::from_tensors(&tensors(), "t").unwrap();
    assert!(
        matches!(w.tensor::<B, 1>("ids", [3], &device), Err(WeightError::UnsupportedDtype { key, .. }) if key == "ids")
    );
}

#[test]
fn transpose_matches_the_naive_loop() {
    for (rows, cols) in [(1, 1), (1, 70), (70, 1), (33, 65), (300, 257), (64, 2048)] {
        let src: Vec<u32> = (0..rows * cols).map(|x| x as u32).collect();
        let got = transpose(&src, rows, cols);
        let mut want = vec![0; src.len()];
        for r in 0..rows {
            for c in 0..cols {
                want[c * rows + r] = src[r * cols + c];
            }
        }
        assert_eq!(got, want, "{rows}x{cols}");
    }
    assert!(transpose::<f32>(&[], 0, 5).is_empty());
    // HostTensor::transposed keeps the dtype, F8 included
    let t = HostTensor::new("f8", vec![2, 2], HostData::F8E4M3(vec![1, 2, 3, 4])).unwrap();
    let tt = t.transposed("f8").unwrap();
    assert_eq!(
        (tt.shape, tt.data),
        (vec![2, 2], HostData::F8E4M3(vec![1, 3, 2, 4]))
    );
}

#[test]
fn concurrent_takes_read_the_same_data() {
    let mut t = BTreeMap::new();
    for i in 0..16 {
        t.insert(
            format!("t{i}"),
            HostTensor::f32(vec![1000], (0..1000).map(|x| (x * i) as f32).collect()),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    write_safetensors(&p, &t, StoreDtype::F16, None).unwrap();
    let w = Weights::open_file(&p).unwrap();
    std::thread::scope(|s| {
        for chunk in [0..8, 8..16] {
            let w = &w;
            let t = &t;
            s.spawn(move || {
                for i in chunk {
                    let k = format!("t{i}");
                    let want: Vec<f32> = t[&k]
                        .data
                        .to_f32()
                        .unwrap()
                        .iter()
                        .map(|&x| f16::from_f32(x).to_f32())
                        .collect();
                    assert_same_f32(&w.f32(&k, &[1000]).unwrap(), &want, &k);
                }
            });
        }
    });
    w.finish().unwrap();
}

/// Fuzz finding (`safetensors_load`, 3 December 2026): a `U64` tensor holding a value above
/// `i64::MAX` is read, and asking for it as i64 is a typed error naming the key, not a wrapped
/// negative number (the harness had expected every integer tensor to convert).
#[test]
fn u64_values_above_i64_max_are_a_typed_error() {
    let mut data = Vec::new();
    for v in [1u64, u64::MAX] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    let header = serde_json::json!({
        "F16.f64": {"dtype": "U64", "shape": [2, 1], "data_offsets": [0, 16]}
    });
    let w = Weights::from_memory(file_bytes(header, &data), "fuzz.safetensors").unwrap();
    let host = w.take_any("F16.f64").unwrap();
    assert_eq!(host.numel(), Some(2));
    assert!(
        matches!(host.into_i64("F16.f64"),
            Err(WeightError::UnsupportedDtype { key, .. }) if key == "F16.f64"),
        "a U64 above i64::MAX must not convert"
    );
    w.finish().unwrap();
}
