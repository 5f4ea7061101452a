//! The shared HTTP layer of the network stages: an OpenAI-compatible JSON client with
//! timeouts, retries and exponential backoff.
//!
//! Retries happen on timeouts, transport errors, HTTP 429 and HTTP 5xx, up to
//! [`RetryPolicy::max_retries`] times, waiting `base_delay · 2^attempt` (capped at
//! [`RetryPolicy::max_delay`], with up to 25 % random jitter so that many workers do not retry
//! in lock-step). A `Retry-After: <seconds>` header from the server is honoured (also capped).
//! Other 4xx statuses and malformed bodies fail at once with a typed [`StageError`].
//!
//! Response bodies (answers and error bodies alike) are read through a limit,
//! [`EndpointConfig::max_response_bytes`]: a larger body is a `protocol` failure, never an
//! unbounded allocation. The chat simplifier caps it further at [`MAX_CHAT_RESPONSE_BYTES`].

use std::io::Read;
use std::time::Duration;

use crate::error::{DataError, FailureKind, StageError};

/// Default largest response body accepted (bytes). A base64 1024² PNG is a few MB.
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Largest chat-completion body the caption simplifier accepts, whatever the endpoint's
/// [`EndpointConfig::max_response_bytes`] (an answer is a few words).
pub const MAX_CHAT_RESPONSE_BYTES: u64 = 1 << 20;

/// Retry schedule for transient failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = try once).
    pub max_retries: u32,
    /// Delay before the first retry.
    pub base_delay: Duration,
    /// Upper bound of any single delay (including a server's `Retry-After`).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 retries, 1 s, 2 s, 4 s, 8 s, 16 s (capped at 60 s).
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Connection settings of an OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server,
/// Ollama's `/v1`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Base URL including the version prefix, e.g. `https://api.openai.com/v1` or
    /// `http://localhost:11434/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the API key (`OPENAI_API_KEY`), or `None`
    /// for servers that need no key.
    pub api_key_env: Option<String>,
    /// Per-request timeout (connect + read + write).
    pub timeout: Duration,
    /// Retry schedule.
    pub retry: RetryPolicy,
    /// Largest response body read, in bytes (default [`MAX_RESPONSE_BYTES`]).
    pub max_response_bytes: u64,
}

impl EndpointConfig {
    /// OpenAI's public API, key in `OPENAI_API_KEY`.
    pub fn openai() -> Self {
        EndpointConfig {
            base_url: "https://api.openai.com/v1".into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
    }

    /// A local server at `base_url` that needs no key.
    pub fn local(base_url: impl Into<String>) -> Self {
        EndpointConfig {
            base_url: base_url.into(),
            api_key_env: None,
            ..EndpointConfig::openai()
        }
    }
}

/// A blocking JSON-over-HTTP client with retries (one per stage; cheap to share by reference
/// across worker threads, connections are pooled).
#[derive(Debug)]
pub struct JsonClient {
    agent: ureq::Agent,
    base_url: String,
    api_key: Option<String>,
    retry: RetryPolicy,
    max_body: u64,
}

impl JsonClient {
    /// Builds a client. Fails with [`DataError::MissingApiKey`] when `api_key_env` names a
    /// variable that is not set (or is empty), so a run never starts without credentials.
    pub fn new(config: &EndpointConfig) -> Result<Self, DataError> {
        let api_key = match &config.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                _ => return Err(DataError::MissingApiKey(var.clone())),
            },
        };
        if !(config.base_url.starts_with("http://") || config.base_url.starts_with("https://")) {
            return Err(DataError::Config(format!(
                "base URL must start with http:// or https://, got {:?}",
                config.base_url
            )));
        }
        let agent = ureq::AgentBuilder::new()
            .timeout(config.timeout)
            .user_agent(concat!("svgen-data/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(JsonClient {
            agent,
            base_url: config.base_url.trim_end_matches('/').to_string(),
            api_key,
            retry: config.retry,
            max_body: config.max_response_bytes,
        })
    }

    /// Lowers the response-body limit to at most `max` bytes.
    pub fn cap_response_bytes(mut self, max: u64) -> Self {
        self.max_body = self.max_body.min(max);
        self
    }

    /// The response-body limit in bytes.
    pub fn max_response_bytes(&self) -> u64 {
        self.max_body
    }

    /// POSTs `body` to `{base_url}/{path}` and parses the JSON answer, retrying transient
    /// failures. Returns the parsed body and the number of attempts made.
    pub fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(serde_json::Value, u32), StageError> {
        let url = format!("{}/{}", self.base_url, path.trim_start_matches('/'));
        let payload = body.to_string();
        let mut attempt = 0u32;
        loop {
            let (err, retry_after) = match self.once(&url, &payload) {
                Ok(v) => return Ok((v, attempt + 1)),
                Err(e) => e,
            };
            if !err.is_transient() || attempt >= self.retry.max_retries {
                let mut err = err;
                if attempt > 0 {
                    err.message = format!("{} (after {} attempts)", err.message, attempt + 1);
                }
                return Err(err);
            }
            let base = retry_after
                .map(|d| d.min(self.retry.max_delay))
                .unwrap_or_else(|| self.retry.delay(attempt));
            std::thread::sleep(base + jitter(base));
            attempt += 1;
        }
    }

    fn once(
        &self,
        url: &str,
        payload: &str,
    ) -> Result<serde_json::Value, (StageError, Option<Duration>)> {
        let mut req = self
            .agent
            .post(url)
            .set("Content-Type", "application/json")
            .set("Accept", "application/json");
        if let Some(key) = &self.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        match req.send_string(payload) {
            Ok(resp) => read_json(resp, self.max_body).map_err(|e| (e, None)),
            Err(ureq::Error::Status(code, resp)) => {
                let retry_after = resp
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64);
                let detail = api_error_message(resp, self.max_body);
                let kind = match code {
                    429 => FailureKind::RateLimited,
                    500..=599 => FailureKind::Server,
                    _ => FailureKind::Http,
                };
                Err((
                    StageError::new(kind, format!("HTTP {code}: {detail}")),
                    retry_after,
                ))
            }
            Err(ureq::Error::Transport(t)) => {
                let text = t.to_string();
                let timed_out = is_timeout(&t);
                let kind = if timed_out {
                    FailureKind::Timeout
                } else {
                    FailureKind::Transport
                };
                Err((StageError::new(kind, text), None))
            }
        }
    }
}

fn is_timeout(t: &ureq::Transport) -> bool {
    use std::error::Error;
    let mut cur: Option<&(dyn Error + 'static)> = t.source();
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                return true;
            }
        }
        cur = e.source();
    }
    let s = t.to_string().to_ascii_lowercase();
    s.contains("timed out") || s.contains("timeout")
}

fn read_body(resp: ureq::Response, max: u64) -> Result<Vec<u8>, StageError> {
    let too_large = || {
        StageError::new(
            FailureKind::Protocol,
            format!("response body larger than {max} bytes"),
        )
    };
    // A declared length over the limit fails before anything is read.
    if resp
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > max)
    {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    resp.into_reader()
        .take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| {
            let kind = if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                FailureKind::Timeout
            } else {
                FailureKind::Transport
            };
            StageError::new(kind, format!("reading response body: {e}"))
        })?;
    if buf.len() as u64 > max {
        return Err(too_large());
    }
    Ok(buf)
}

fn read_json(resp: ureq::Response, max: u64) -> Result<serde_json::Value, StageError> {
    parse_json_body(&read_body(resp, max)?)
}

/// Parses a response body (already read within its size cap) as JSON; a malformed body is a
/// [`FailureKind::Protocol`] error. Pure, so that it is fuzzed without a server.
///
/// # Errors
/// [`FailureKind::Protocol`] for anything but one JSON value.
pub fn parse_json_body(body: &[u8]) -> Result<serde_json::Value, StageError> {
    serde_json::from_slice(body).map_err(|e| {
        StageError::new(
            FailureKind::Protocol,
            format!("malformed JSON response: {e}"),
        )
    })
}

/// The `error.message` of an OpenAI error body, else a short prefix of the body.
fn api_error_message(resp: ureq::Response, max: u64) -> String {
    match read_body(resp, max) {
        Ok(body) => error_message_from_body(&body),
        Err(e) => e.message,
    }
}

/// The `error.message` of an OpenAI error body, else its first 200 characters (lossy UTF-8).
pub fn error_message_from_body(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(m) = v.pointer("/error/message").and_then(|m| m.as_str()) {
            return m.to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    text.chars().take(200).collect()
}

/// Up to 25 % of `base`, from a cheap clock-seeded hash (no RNG dependency needed).
fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = u64::from(nanos).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40; // 24 bits
    base.mul_f64(0.25 * (mixed as f64 / f64::from(1u32 << 24)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        assert_eq!(p.delay(0), Duration::from_millis(100));
        assert_eq!(p.delay(1), Duration::from_millis(200));
        assert_eq!(p.delay(2), Duration::from_millis(400));
        assert_eq!(p.delay(3), Duration::from_millis(500));
        assert_eq!(p.delay(40), Duration::from_millis(500));
        assert!(jitter(Duration::from_secs(4)) <= Duration::from_secs(1));
    }

    #[test]
    fn missing_key_is_a_clear_error() {
        let cfg = EndpointConfig {
            api_key_env: Some("SVGEN_TEST_SURELY_UNSET_KEY".into()),
            ..EndpointConfig::local("http://127.0.0.1:9")
        };
        match JsonClient::new(&cfg) {
            Err(DataError::MissingApiKey(v)) => assert_eq!(v, "SVGEN_TEST_SURELY_UNSET_KEY"),
            other => panic!("expected MissingApiKey, got {other:?}"),
        }
    }
}
