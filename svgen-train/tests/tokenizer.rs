//! Tokenizer: HF tokenizer.json parity, Llama 3 chat format, thesis tokens and resizing.

mod common;
use common::*;
use serde_json::Value;
use svgen_train::llama::tokenizer::{
    ChatMessage, LlamaTokenizer, PromptFormat, THESIS_SPECIAL_TOKENS,
};
use svgen_train::TrainError;

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer/reference.json")).unwrap())
        .unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn encodes_like_transformers_and_applies_the_chat_template() {
    let tok = LlamaTokenizer::from_dir(fixture("tokenizer")).unwrap();
    let r = reference();
    let text = r["plain_text"].as_str().unwrap();
    assert_eq!(
        tok.encode(text, true).unwrap(),
        ids(&r["plain_ids_with_bos"])
    );
    assert_eq!(tok.encode(text, false).unwrap(), ids(&r["plain_ids"]));
    assert_eq!(tok.decode(&ids(&r["plain_ids"]), true).unwrap(), text);
    let msgs: Vec<ChatMessage> = r["chat_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        LlamaTokenizer::chat_text(&msgs, true),
        r["chat_text"].as_str().unwrap()
    );
    assert_eq!(tok.encode_chat(&msgs, true).unwrap(), ids(&r["chat_ids"]));
    let fmt = PromptFormat::Llama3Chat {
        system: Some("You are an SVG generator.".into()),
    };
    assert_eq!(
        tok.encode_prompt(&fmt, "a red apple icon").unwrap(),
        ids(&r["chat_ids"])
    );
    assert_eq!(tok.len(), r["len"].as_u64().unwrap() as usize);
}

#[test]
fn thesis_tokens_are_single_ids_and_embeddings_grow_with_the_mean_row() {
    let mut tok = LlamaTokenizer::from_dir(fixture("tokenizer")).unwrap();
    let before = tok.len();
    let new = tok.add_special_tokens(&THESIS_SPECIAL_TOKENS).unwrap();
    assert_eq!(
        new,
        vec![before as u32, before as u32 + 1, before as u32 + 2]
    );
    // Adding again is idempotent.
    assert_eq!(tok.add_special_tokens(&THESIS_SPECIAL_TOKENS).unwrap(), new);
    let enc = tok.encode("<svg><|end_svg|>", false).unwrap();
    assert_eq!(*enc.last().unwrap(), new[2]);

    for name in ["llama3-tied", "llama3-untied-bf16-sharded"] {
        let model = load(name);
        let old_vocab = model.config().vocab_size;
        let grown = model.resize_token_embeddings(old_vocab + 3).unwrap();
        assert_eq!(grown.config().vocab_size, old_vocab + 3);
        let e: Vec<f32> = grown
            .embed_tokens
            .val()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap();
        let h = grown.config().hidden_size;
        for c in 0..h {
            let mean: f32 = (0..old_vocab).map(|r| e[r * h + c]).sum::<f32>() / old_vocab as f32;
            for r in old_vocab..old_vocab + 3 {
                assert!((e[r * h + c] - mean).abs() < 1e-6);
            }
        }
        let logits = grown
            .forward(burn::tensor::Tensor::from_data(
                burn::tensor::TensorData::new(vec![1i64, 2, 3], [1, 3]),
                &Default::default(),
            ))
            .unwrap();
        assert_eq!(logits.dims(), [1, 3, old_vocab + 3]);
        assert!(load(name).resize_token_embeddings(old_vocab - 1).is_err());
    }
}

#[test]
fn missing_tokenizer_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        LlamaTokenizer::from_dir(dir.path()),
        Err(TrainError::Tokenizer(_))
    ));
    std::fs::write(dir.path().join("tokenizer.json"), "{not json").unwrap();
    assert!(matches!(
        LlamaTokenizer::from_dir(dir.path()),
        Err(TrainError::Tokenizer(_))
    ));
}
