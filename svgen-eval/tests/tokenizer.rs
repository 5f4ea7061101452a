//! CLIP tokenizer vs transformers' `CLIPTokenizer` (fixture: real-format tokenizer.json built from the
//! first 4000 merges of OpenAI's BPE, ids from `tokenizer(..., padding="max_length", max_length=77,
//! truncation=True)`).

use std::path::Path;

use svgen_eval::ClipTokenizer;

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

#[test]
fn token_ids_match_transformers() {
    let tok = ClipTokenizer::from_dir(dir()).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("tokens.json")).unwrap()).unwrap();
    let prompts: Vec<String> = serde_json::from_value(v["prompts"].clone()).unwrap();
    let ids: Vec<Vec<i64>> = serde_json::from_value(v["input_ids"].clone()).unwrap();
    let mask: Vec<Vec<i64>> = serde_json::from_value(v["attention_mask"].clone()).unwrap();
    assert_eq!(
        tok.eos_token_id() as i64,
        v["eos_token_id"].as_i64().unwrap()
    );
    assert_eq!(
        tok.bos_token_id() as i64,
        v["bos_token_id"].as_i64().unwrap()
    );
    assert_eq!(
        tok.pad_token_id() as i64,
        v["pad_token_id"].as_i64().unwrap()
    );
    let out = tok.encode_batch(&prompts).unwrap();
    assert_eq!(out.batch, prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(
            &out.input_ids[i * 77..(i + 1) * 77],
            ids[i].as_slice(),
            "ids of {p:?}"
        );
        assert_eq!(
            &out.attention_mask[i * 77..(i + 1) * 77],
            mask[i].as_slice(),
            "mask of {p:?}"
        );
    }
}

#[test]
fn long_prompts_are_truncated_keeping_eos_and_empty_prompts_work() {
    let tok = ClipTokenizer::from_dir(dir()).unwrap();
    let long = "a very long prompt ".repeat(50);
    let out = tok.encode_batch(&[long.as_str(), ""]).unwrap();
    assert!(out.truncated[0]);
    assert!(!out.truncated[1]);
    assert_eq!(out.input_ids[0], tok.bos_token_id() as i64);
    assert_eq!(out.input_ids[76], tok.eos_token_id() as i64);
    assert!(out.attention_mask[..77].iter().all(|&m| m == 1));
    assert_eq!(
        &out.input_ids[77..79],
        &[tok.bos_token_id() as i64, tok.eos_token_id() as i64]
    );
    assert_eq!(out.attention_mask[77..].iter().sum::<i64>(), 2);
    assert!(tok.count_tokens(&long).unwrap() > 77);
    let short = tok.clone().with_context_length(8).unwrap();
    let s = short
        .encode_batch(&["one two three four five six seven eight"])
        .unwrap();
    assert_eq!(s.input_ids.len(), 8);
    assert_eq!(s.input_ids[7], tok.eos_token_id() as i64);
    assert!(tok.clone().with_context_length(1).is_err());
}

#[test]
fn bad_tokenizer_file_is_a_typed_error() {
    assert!(matches!(
        ClipTokenizer::from_bytes(b"{not json", None),
        Err(svgen_eval::EvalError::Tokenizer(_))
    ));
    assert!(ClipTokenizer::from_file("/nonexistent/tokenizer.json").is_err());
}
