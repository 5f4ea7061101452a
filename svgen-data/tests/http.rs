//! Network stages against a loopback server speaking the OpenAI wire format.

mod common;

use std::time::{Duration, Instant};

use common::*;
use svgen_data::generate::{GenerationRequest, ImageGenerator, OpenAiImages};
use svgen_data::http::{EndpointConfig, RetryPolicy};
use svgen_data::simplify::{
    AnswerCache, CachedSimplifier, CaptionSimplifier, ChatSimplifier, Simplification,
};
use svgen_data::{DataError, FailureKind};

fn endpoint(server: &Server, key_var: Option<&str>, retries: u32) -> EndpointConfig {
    EndpointConfig {
        base_url: server.base_url.clone(),
        api_key_env: key_var.map(str::to_string),
        timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_retries: retries,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        max_response_bytes: svgen_data::http::MAX_RESPONSE_BYTES,
    }
}

#[test]
fn chat_simplifier_speaks_the_openai_format() {
    let server = Server::start(|req, _| {
        let body = req.json();
        let last = body["messages"].as_array().unwrap().last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string();
        if last.contains("Potty Seat") {
            chat_completion("NO")
        } else {
            chat_completion("<simplified>\n\"a man riding a horse\"")
        }
    });
    std::env::set_var("SVGEN_TEST_KEY_CHAT", "sk-test-123");
    let s = ChatSimplifier::new(
        &endpoint(&server, Some("SVGEN_TEST_KEY_CHAT"), 0),
        "gpt-4o-mini",
    )
    .unwrap();
    assert_eq!(
        s.simplify("A man in a red coat riding a horse on a beach at sunset")
            .unwrap(),
        Simplification::Simplified("a man riding a horse".into())
    );
    assert_eq!(
        s.simplify("Paw Patrol Soft Potty Seat").unwrap(),
        Simplification::Rejected
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("authorization"), Some("Bearer sk-test-123"));
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let body = r.json();
    assert_eq!(body["model"], "gpt-4o-mini");
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "system");
    // system + 5 few-shot pairs + the caption
    assert_eq!(msgs.len(), 1 + 2 * svgen_data::simplify::FEW_SHOT.len() + 1);
    assert_eq!(msgs[2]["role"], "assistant");
    assert_eq!(msgs.last().unwrap()["role"], "user");
}

#[test]
fn retries_429_and_500_then_succeeds() {
    let server = Server::start(|_, n| match n {
        0 => api_error(
            429,
            "Rate limit reached for gpt-4o-mini",
            "rate_limit_exceeded",
        )
        .with_header("Retry-After", "0"),
        1 => api_error(
            500,
            "The server had an error while processing your request.",
            "server_error",
        ),
        2 => Reply::raw(503, "upstream unavailable"),
        _ => chat_completion("a lighthouse"),
    });
    let s = ChatSimplifier::new(&endpoint(&server, None, 5), "m").unwrap();
    assert_eq!(
        s.simplify("a tall lighthouse on a rocky coast").unwrap(),
        Simplification::Simplified("a lighthouse".into())
    );
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn gives_up_after_max_retries_with_the_reason() {
    let server = Server::start(|_, _| api_error(429, "Rate limit reached", "rate_limit_exceeded"));
    let s = ChatSimplifier::new(&endpoint(&server, None, 2), "m").unwrap();
    let err = s.simplify("x").unwrap_err();
    assert_eq!(err.kind, FailureKind::RateLimited);
    assert!(err.message.contains("HTTP 429"), "{}", err.message);
    assert!(
        err.message.contains("Rate limit reached"),
        "{}",
        err.message
    );
    assert!(err.message.contains("after 3 attempts"), "{}", err.message);
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn client_errors_are_not_retried() {
    let server = Server::start(|_, _| api_error(400, "Invalid model", "model_not_found"));
    let s = ChatSimplifier::new(&endpoint(&server, None, 5), "m").unwrap();
    let err = s.simplify("x").unwrap_err();
    assert_eq!(err.kind, FailureKind::Http);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn malformed_json_and_missing_fields_are_protocol_errors() {
    let server = Server::start(|_, n| match n {
        0 => Reply::raw(200, "{\"choices\": [ {\"message\": "),
        1 => Reply::json(200, serde_json::json!({"choices": []})),
        2 => chat_completion("   "),
        _ => Reply::json(
            200,
            serde_json::json!({"data": [{"url": "https://example.invalid/x.png"}]}),
        ),
    });
    let s = ChatSimplifier::new(&endpoint(&server, None, 3), "m").unwrap();
    for expected in ["malformed JSON", "choices[0]", "empty completion"] {
        let err = s.simplify("x").unwrap_err();
        assert_eq!(err.kind, FailureKind::Protocol);
        assert!(err.message.contains(expected), "{}", err.message);
    }
    // Protocol errors are not retried: one request each.
    assert_eq!(server.requests().len(), 3);
    let g = OpenAiImages::new(&endpoint(&server, None, 3), "dall-e-3", "1024x1024").unwrap();
    let req = GenerationRequest {
        id: "a",
        prompt: "p",
        negative_prompt: "",
        seed: 1,
        source_image: None,
    };
    let err = g.generate(&req).unwrap_err();
    assert_eq!(err.kind, FailureKind::Protocol);
    assert!(err.message.contains("b64_json"));
}

#[test]
fn timeouts_are_retried_then_recorded() {
    let server = Server::start(|_, _| chat_completion("late").delayed(Duration::from_millis(1500)));
    let mut cfg = endpoint(&server, None, 1);
    cfg.timeout = Duration::from_millis(200);
    let s = ChatSimplifier::new(&cfg, "m").unwrap();
    let t0 = Instant::now();
    let err = s.simplify("x").unwrap_err();
    assert_eq!(err.kind, FailureKind::Timeout, "{}", err.message);
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn dalle_b64_json_images_decode() {
    let png = disc_png(32, 10.0);
    let expected = png.clone();
    let server = Server::start(move |req, n| {
        if n == 0 {
            api_error(500, "boom", "server_error")
        } else {
            assert_eq!(req.path, "/v1/images/generations");
            image_response(&png)
        }
    });
    std::env::set_var("SVGEN_TEST_KEY_IMG", "sk-img");
    let g = OpenAiImages::new(
        &endpoint(&server, Some("SVGEN_TEST_KEY_IMG"), 2),
        "dall-e-3",
        "1024x1024",
    )
    .unwrap();
    let req = GenerationRequest {
        id: "coco:1",
        prompt: "A black silhouette of a cat",
        negative_prompt: "colour",
        seed: 7,
        source_image: None,
    };
    let img = g.generate(&req).unwrap();
    assert_eq!(img.bytes, expected);
    assert_eq!(img.seed, None);
    let body = server.requests()[1].json();
    assert_eq!(body["response_format"], "b64_json");
    assert_eq!(body["model"], "dall-e-3");
    assert_eq!(body["n"], 1);
    assert_eq!(body["size"], "1024x1024");
    assert_eq!(body["prompt"], "A black silhouette of a cat");
    assert_eq!(
        server.requests()[1].header("authorization"),
        Some("Bearer sk-img")
    );
}

#[test]
fn missing_api_key_is_a_clear_error() {
    let server = Server::start(|_, _| chat_completion("x"));
    let err = ChatSimplifier::new(&endpoint(&server, Some("SVGEN_TEST_KEY_NEVER_SET"), 0), "m")
        .unwrap_err();
    assert!(matches!(err, DataError::MissingApiKey(ref v) if v == "SVGEN_TEST_KEY_NEVER_SET"));
    assert!(err.to_string().contains("SVGEN_TEST_KEY_NEVER_SET"));
    let err = OpenAiImages::new(
        &endpoint(&server, Some("SVGEN_TEST_KEY_NEVER_SET"), 0),
        "dall-e-3",
        "1024x1024",
    )
    .unwrap_err();
    assert!(matches!(err, DataError::MissingApiKey(_)));
    assert!(server.requests().is_empty());
}

#[test]
fn cache_answers_without_calling_again() {
    let server = Server::start(|_, _| chat_completion("a bicycle"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("simplify-cache.jsonl");
    {
        let s = CachedSimplifier::new(
            ChatSimplifier::new(&endpoint(&server, None, 0), "m").unwrap(),
            AnswerCache::open(&path).unwrap(),
        );
        for _ in 0..3 {
            assert_eq!(
                s.simplify("an old bicycle by a wall").unwrap(),
                Simplification::Simplified("a bicycle".into())
            );
        }
    }
    assert_eq!(server.requests().len(), 1);
    // A new process (re-opened cache) does not call either.
    let s = CachedSimplifier::new(
        ChatSimplifier::new(&endpoint(&server, None, 0), "m").unwrap(),
        AnswerCache::open(&path).unwrap(),
    );
    s.simplify("an old bicycle by a wall").unwrap();
    assert_eq!(server.requests().len(), 1);
}

/// A chat answer whose body is `pad` bytes long (valid JSON, so only the size can fail it).
fn padded_chat(pad: usize) -> Reply {
    let mut r = chat_completion("a cat");
    let filler = "x".repeat(pad);
    r.body = r
        .body
        .replacen('{', &format!("{{\"padding\":\"{filler}\","), 1);
    r
}

#[test]
fn an_oversized_chat_answer_is_a_protocol_error() {
    // Below the simplifier's own 1 MiB cap: the endpoint limit applies. No Content-Length:
    // the limit is enforced while reading.
    let server = Server::start(|_, _| padded_chat(4096).without_length());
    let mut ep = endpoint(&server, None, 0);
    ep.max_response_bytes = 2048;
    let s = ChatSimplifier::new(&ep, "gpt-4o-mini").unwrap();
    let err = s.simplify("a photo of a cat").unwrap_err();
    assert_eq!(err.kind, FailureKind::Protocol, "{}", err.message);
    assert!(
        err.message.contains("larger than 2048 bytes"),
        "{}",
        err.message
    );
    // The same body under a large enough limit is accepted.
    ep.max_response_bytes = 1 << 20;
    let s = ChatSimplifier::new(&ep, "gpt-4o-mini").unwrap();
    assert_eq!(
        s.simplify("a photo of a cat").unwrap(),
        Simplification::Simplified("a cat".into())
    );
}

#[test]
fn the_simplifier_caps_answers_at_one_mebibyte_whatever_the_endpoint_says() {
    let big = svgen_data::http::MAX_CHAT_RESPONSE_BYTES as usize + 1024;
    let server = Server::start(move |_, _| padded_chat(big).without_length());
    let ep = endpoint(&server, None, 0); // endpoint limit: 64 MiB
    let s = ChatSimplifier::new(&ep, "gpt-4o-mini").unwrap();
    let err = s.simplify("a photo of a cat").unwrap_err();
    assert_eq!(err.kind, FailureKind::Protocol, "{}", err.message);
    assert!(
        err.message.contains("larger than 1048576 bytes"),
        "{}",
        err.message
    );
}

#[test]
fn an_oversized_image_response_is_a_protocol_error() {
    let png = disc_png(64, 20.0);
    let body_len = image_response(&png).body.len();
    // Once with a declared length (refused before reading), once without (cut while reading).
    let server = Server::start(move |_, n| {
        if n == 0 {
            image_response(&png)
        } else {
            image_response(&png).without_length()
        }
    });
    let mut ep = endpoint(&server, None, 0);
    ep.max_response_bytes = (body_len / 2) as u64;
    let g = OpenAiImages::new(&ep, "dall-e-3", "1024x1024").unwrap();
    let req = GenerationRequest {
        id: "coco:1",
        prompt: "A black silhouette of a cat",
        negative_prompt: "",
        seed: 1,
        source_image: None,
    };
    for _ in 0..2 {
        let err = g.generate(&req).unwrap_err();
        assert_eq!(err.kind, FailureKind::Protocol, "{}", err.message);
        assert!(err.message.contains("larger than"), "{}", err.message);
    }
    assert_eq!(server.requests().len(), 2);
    // Error bodies are capped too: an oversized 400 body is not read whole.
    let huge_error = "e".repeat(4096);
    let server = Server::start(move |_, _| Reply::raw(400, &huge_error).without_length());
    let mut ep = endpoint(&server, None, 0);
    ep.max_response_bytes = 1024;
    let g = OpenAiImages::new(&ep, "dall-e-3", "1024x1024").unwrap();
    let err = g.generate(&req).unwrap_err();
    assert_eq!(err.kind, FailureKind::Http, "{}", err.message);
    assert!(
        err.message.contains("larger than 1024 bytes"),
        "{}",
        err.message
    );
}
