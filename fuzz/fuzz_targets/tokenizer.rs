//! Fuzz target: a `tokenizer.json` and a text → the tokenizer paths of svgen: svgen-core's
//! `HfTokenizer` (token budgets), svgen-eval's `ClipTokenizer` (fixed-length CLIP batches) and
//! svgen-train's `LlamaTokenizer` (the thesis' special tokens, the prompt formats) and, with the
//! text as a template, its Jinja `ChatTemplate`.
//!
//! Input layout: `tokenizer.json bytes [0xFF text]` (0xFF never occurs in UTF-8, so the split is
//! unambiguous); without a 0xFF the text is a fixed SVG prompt.
//!
//! Every input must give a typed error or a result: no panic, no hang.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run tokenizer -- -max_len=65536
//! ```
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use svgen_core::{HfTokenizer, TokenCounter};
use svgen_eval::ClipTokenizer;
use svgen_train::llama::chat_template::{ChatOptions, ChatTemplate};
use svgen_train::llama::tokenizer::{ChatMessage, PromptFormat, THESIS_SPECIAL_TOKENS};
use svgen_train::LlamaTokenizer;

const DEFAULT_TEXT: &str =
    "a red apple icon <svg viewBox=\"0 0 24 24\"><path d=\"M12 2l3 7h7\"/></svg>";

/// A per-process scratch file (the Llama tokenizer loads from a path).
fn scratch_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("svgen-fuzz-tokenizer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir.join("tokenizer.json")
    })
}

/// svgen catches the panics the `tokenizers` crate raises on some corrupt inputs and returns a typed
/// error; libFuzzer's panic hook would abort on them before the catch. This hook only prints
/// the panic, so only a panic that escapes svgen (caught by libfuzzer-sys' own wrapper, which
/// aborts) counts as a crash, and its message is in the log.
fn quiet_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}"))));
}

fuzz_target!(|data: &[u8]| {
    quiet_caught_panics();
    let (json, text) = match data.iter().rposition(|&b| b == 0xFF) {
        Some(i) => (
            &data[..i],
            String::from_utf8_lossy(&data[i + 1..]).into_owned(),
        ),
        None => (data, DEFAULT_TEXT.to_string()),
    };

    // svgen-core: token counting for budgets.
    if let Ok(tok) = HfTokenizer::from_bytes(json, "fuzz") {
        let n = tok.count(&text);
        if let Some(ids) = tok.encode(&text) {
            assert_eq!(ids.len(), n, "count and encode disagree");
        }
        let with_special = tok.with_special_tokens(true);
        let _ = with_special.count(&text);
    }

    // svgen-eval: CLIP batches are exactly the context length.
    if let Ok(clip) = ClipTokenizer::from_bytes(json, None) {
        let _ = clip.count_tokens(&text);
        if let Ok(batch) = clip.encode_batch(&[text.as_str(), ""]) {
            assert_eq!(batch.input_ids.len(), 2 * clip.context_length());
        }
        if let Ok(short) = clip.with_context_length(4) {
            if let Ok(batch) = short.encode_batch(&[text.as_str()]) {
                assert_eq!(batch.input_ids.len(), 4);
            }
        }
    }

    // svgen-train: special tokens, chat format, round trip through decode.
    let path = scratch_file();
    std::fs::write(path, json).expect("write tokenizer.json");
    if let Ok(mut llama) = LlamaTokenizer::from_file(path) {
        if let Ok(ids) = llama.add_special_tokens(&THESIS_SPECIAL_TOKENS) {
            assert_eq!(ids.len(), THESIS_SPECIAL_TOKENS.len());
        }
        let chat = [
            ChatMessage::new("system", "Draw icons as SVG."),
            ChatMessage::new("user", &text),
        ];
        if let Ok(ids) = llama.encode_chat(&chat, true) {
            let _ = llama.decode(&ids, false);
            let _ = llama.decode(&ids, true);
        }
        let _ = llama.encode_prompt(&PromptFormat::InstructionResponse, &text);
        let _ = llama.encode_prompt(&PromptFormat::default(), &text);
        let _ = llama.encode_prompt(
            &PromptFormat::Chat {
                system: Some("s".into()),
            },
            &text,
        );
    }

    // svgen-train: the text as a checkpoint's chat template (Jinja, rendered with a fuel
    // budget), over a fixed conversation: a typed error or a bounded string, never a hang.
    if let Ok(template) = ChatTemplate::new(
        text.as_str(),
        [
            ("bos_token", "<|begin_of_text|>"),
            ("eos_token", "<|eot_id|>"),
        ],
    ) {
        let messages = [
            serde_json::json!({"role": "system", "content": "Draw icons as SVG."}),
            serde_json::json!({"role": "user", "content": "a red apple"}),
        ];
        let _ = template.render(&messages, &ChatOptions::generation());
    }
});
