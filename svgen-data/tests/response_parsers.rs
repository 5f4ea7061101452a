//! The pure response parsers of the network stages (also the entry points of the
//! `http_response` fuzz target), without a server.

use serde_json::json;
use svgen_data::generate::parse_images_response;
use svgen_data::http::{error_message_from_body, parse_json_body};
use svgen_data::simplify::{parse_chat_response, Simplification};
use svgen_data::FailureKind;

#[test]
fn json_bodies_parse_and_garbage_is_a_protocol_error() {
    assert_eq!(
        parse_json_body(br#"{"a": [1]}"#).unwrap(),
        json!({"a": [1]})
    );
    for bad in [
        &b""[..],
        b"<html>502</html>",
        b"{\"a\": 1",
        b"{} {}",
        b"\xff\xfe",
    ] {
        let e = parse_json_body(bad).unwrap_err();
        assert_eq!(e.kind, FailureKind::Protocol, "{bad:?}");
        assert!(
            e.message.starts_with("malformed JSON response"),
            "{}",
            e.message
        );
    }
}

#[test]
fn error_messages_come_from_the_openai_error_or_a_short_prefix() {
    let body = br#"{"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}"#;
    assert_eq!(error_message_from_body(body), "Rate limit reached");
    let long = "é".repeat(500);
    let shown = error_message_from_body(long.as_bytes());
    assert_eq!(shown.chars().count(), 200);
    assert!(shown.chars().all(|c| c == 'é'));
    // Invalid UTF-8 is shown lossily, never a panic.
    assert_eq!(
        error_message_from_body(b"bad \xff gateway"),
        "bad \u{fffd} gateway"
    );
}

#[test]
fn chat_responses_give_the_answer_or_a_protocol_error() {
    let answer = |content: serde_json::Value| {
        parse_chat_response(&json!({"choices": [{"message": {"content": content}}]}))
    };
    assert_eq!(
        answer(json!(" <simplified>\"a red apple\"</simplified> ")).unwrap(),
        Simplification::Simplified("a red apple".into())
    );
    assert_eq!(answer(json!("No.")).unwrap(), Simplification::Rejected);
    for bad in [json!(""), json!("  \"\" "), json!(null), json!(3)] {
        assert_eq!(
            answer(bad.clone()).unwrap_err().kind,
            FailureKind::Protocol,
            "{bad}"
        );
    }
    for body in [json!({}), json!({"choices": []}), json!([1, 2])] {
        assert_eq!(
            parse_chat_response(&body).unwrap_err().kind,
            FailureKind::Protocol
        );
    }
}

#[test]
fn image_responses_decode_base64_or_fail_typed() {
    let ok = parse_images_response(&json!({"data": [{"b64_json": " aGVsbG8= \n"}]})).unwrap();
    assert_eq!(ok.bytes, b"hello");
    assert_eq!(ok.seed, None);
    for body in [
        json!({"data": [{"b64_json": "not base64!"}]}),
        json!({"data": [{"url": "https://example.com/a.png"}]}),
        json!({"data": []}),
        json!({"data": [{"b64_json": 7}]}),
    ] {
        let e = parse_images_response(&body).unwrap_err();
        assert_eq!(e.kind, FailureKind::Protocol, "{body}");
    }
}
