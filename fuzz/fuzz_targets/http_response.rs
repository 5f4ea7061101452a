//! Fuzz target: arbitrary bytes as the body of an OpenAI-compatible HTTP response → the parsers
//! of svgen-data's network stages: the JSON body, an error body's message, a chat-completions
//! answer (caption simplifier) and an Images API answer (base64 image), then the image through
//! the bounded decoder the pipeline uses.
//!
//! Every input must give a typed error or a value: no panic, no hang, no unbounded allocation.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run http_response -- -max_len=65536
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;
use svgen_data::generate::parse_images_response;
use svgen_data::http::{error_message_from_body, parse_json_body};
use svgen_data::simplify::{parse_answer, parse_chat_response, Simplification};
use svgen_trace::preprocess::{decode_image, DecodeLimits};

fuzz_target!(|data: &[u8]| {
    let message = error_message_from_body(data);
    assert!(message.chars().count() <= 200 || parse_json_body(data).is_ok());

    if let Ok(text) = std::str::from_utf8(data) {
        // The answer parser on raw text: never an empty simplification.
        if let Some(Simplification::Simplified(s)) = parse_answer(text) {
            assert!(!s.trim().is_empty());
        }
    }

    let Ok(value) = parse_json_body(data) else {
        return;
    };
    if let Ok(Simplification::Simplified(s)) = parse_chat_response(&value) {
        assert!(!s.is_empty());
    }
    if let Ok(image) = parse_images_response(&value) {
        assert!(image.bytes.len() <= data.len());
        let limits = DecodeLimits {
            max_pixels: 1 << 20,
            max_alloc: 64 << 20,
        };
        let _ = decode_image(&image.bytes, &limits);
    }
});
