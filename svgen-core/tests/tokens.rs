//! Token counts against Python references (fixtures written by
//! `tools/fixtures/make_core_token_fixtures.py`).

use svgen_core::{Cl100k, HfTokenizer, TokenCounter, TokenizerError};

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn cases(v: &serde_json::Value) -> Vec<(String, usize, Vec<u32>, Option<usize>)> {
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                c["count"].as_u64().unwrap() as usize,
                c["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_u64().unwrap() as u32)
                    .collect(),
                c.get("count_with_special")
                    .and_then(|n| n.as_u64())
                    .map(|n| n as usize),
            )
        })
        .collect()
}

#[test]
fn cl100k_matches_python_tiktoken() {
    let tok = Cl100k::new();
    assert_eq!(tok.name(), "cl100k_base");
    let cases = cases(&fixture("cl100k_counts.json"));
    assert!(cases.len() >= 10);
    for (text, count, ids, _) in &cases {
        assert_eq!(&tok.encode(text), ids, "{text:?}");
        assert_eq!(tok.count(text), *count, "{text:?}");
    }
    let texts: Vec<&str> = cases.iter().map(|c| c.0.as_str()).collect();
    let expected: Vec<usize> = cases.iter().map(|c| c.1).collect();
    assert_eq!(tok.count_batch(&texts), expected);
}

#[test]
fn cl100k_known_values() {
    // Hand-checkable: common words are single tokens.
    let tok = Cl100k::new();
    assert_eq!(tok.encode("hello world"), vec![15339, 1917]);
    assert_eq!(tok.count(""), 0);
    // Special-token text is counted as plain text, never as one special token.
    assert!(tok.count("<|endoftext|>") > 1);
}

#[test]
fn cl100k_survives_pathological_input() {
    let tok = Cl100k::new();
    // Long runs of one character and of whitespace (regex look-ahead and BPE worst cases).
    for text in [
        " ".repeat(20_000),
        "a".repeat(20_000),
        "\n \n".repeat(5_000),
    ] {
        let n = tok.count(&text);
        assert!(n > 0 && n <= text.len(), "{n}");
    }
}

#[test]
fn hf_tokenizer_matches_python_tokenizers() {
    let path = format!(
        "{}/tests/fixtures/tokenizer.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let tok = HfTokenizer::from_file(&path).unwrap();
    assert_eq!(tok.name(), "fixtures");
    let with_special = tok.clone().with_special_tokens(true);
    let cases = cases(&fixture("tokenizer_counts.json"));
    for (text, count, ids, special) in &cases {
        assert_eq!(tok.encode(text).as_ref(), Some(ids), "{text:?}");
        assert_eq!(tok.count(text), *count, "{text:?}");
        assert_eq!(Some(with_special.count(text)), *special, "{text:?}");
    }
    let texts: Vec<&str> = cases.iter().map(|c| c.0.as_str()).collect();
    let expected: Vec<usize> = cases.iter().map(|c| c.1).collect();
    assert_eq!(tok.count_batch(&texts), expected);
    // Through a trait object too.
    let dynamic: Box<dyn TokenCounter> = Box::new(tok);
    assert_eq!(dynamic.count_batch(&texts), expected);
}

#[test]
fn hf_tokenizer_errors_are_typed() {
    assert!(matches!(
        HfTokenizer::from_file("/nonexistent/tokenizer.json"),
        Err(TokenizerError::Io { .. })
    ));
    assert!(matches!(
        HfTokenizer::from_bytes(b"{\"not\": \"a tokenizer\"}", "x"),
        Err(TokenizerError::Invalid { .. })
    ));
    assert!(matches!(
        HfTokenizer::from_bytes(b"\xff\xfe garbage", "x"),
        Err(TokenizerError::Invalid { .. })
    ));
}

/// `tokenizer` fuzz target, 3 December 2026: a syntax error inside the `decoder` object made
/// the `tokenizers` crate panic; every svgen loader goes through `parse_tokenizer_json`, which
/// returns an error instead.
#[test]
fn tokenizer_json_that_panicked_the_tokenizers_crate_is_an_error() {
    let path = format!(
        "{}/tests/fixtures/fuzz/tokenizer-bad-decoder.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap();
    assert!(svgen_core::parse_tokenizer_json(&bytes).is_err());
    // The second finding: an invalid UTF-8 byte in the decoder's type name.
    let bad_utf8 = std::fs::read(format!(
        "{}/tests/fixtures/fuzz/tokenizer-invalid-utf8-decoder.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert!(matches!(
        HfTokenizer::from_bytes(&bad_utf8, "fuzz"),
        Err(TokenizerError::Invalid { path: None, .. })
    ));
    assert!(matches!(
        HfTokenizer::from_bytes(&bytes, "fuzz"),
        Err(TokenizerError::Invalid { path: None, .. })
    ));
    assert!(matches!(
        HfTokenizer::from_file(&path),
        Err(TokenizerError::Invalid { path: Some(_), .. })
    ));
    // A well-formed tokenizer still parses through the same function.
    let good = std::fs::read(format!(
        "{}/tests/fixtures/tokenizer.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert!(svgen_core::parse_tokenizer_json(&good).is_ok());
}
