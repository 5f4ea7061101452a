//! Shared test helpers: a loopback HTTP server speaking the OpenAI wire format, and test
//! doubles for the generator stage.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use svgen_data::generate::{GeneratedImage, GenerationRequest, ImageGenerator};
use svgen_data::StageError;

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("request body is JSON")
    }
}

/// A scripted reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
    /// Send no `Content-Length`: the body ends when the connection closes.
    pub omit_length: bool,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Reply {
            status,
            body: body.to_string(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            delay: Duration::ZERO,
            omit_length: false,
        }
    }
    pub fn raw(status: u16, body: &str) -> Self {
        Reply {
            status,
            body: body.to_string(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            delay: Duration::ZERO,
            omit_length: false,
        }
    }
    pub fn with_header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn without_length(mut self) -> Self {
        self.omit_length = true;
        self
    }
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// OpenAI's chat-completion response.
pub fn chat_completion(content: &str) -> Reply {
    Reply::json(
        200,
        serde_json::json!({
            "id": "chatcmpl-9xTest",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 182, "completion_tokens": 4, "total_tokens": 186},
            "system_fingerprint": "fp_test"
        }),
    )
}

/// OpenAI's Images API response with `b64_json`.
pub fn image_response(png: &[u8]) -> Reply {
    use base64::Engine as _;
    Reply::json(
        200,
        serde_json::json!({
            "created": 1_700_000_000,
            "data": [{
                "b64_json": base64::engine::general_purpose::STANDARD.encode(png),
                "revised_prompt": "a revised prompt"
            }]
        }),
    )
}

/// OpenAI's error body.
pub fn api_error(status: u16, message: &str, code: &str) -> Reply {
    Reply::json(
        status,
        serde_json::json!({"error": {"message": message, "type": "requests", "param": null, "code": code}}),
    )
}

pub type Handler = dyn Fn(&Request, usize) -> Reply + Send + Sync;

/// A loopback server on 127.0.0.1:0; `handler(request, n)` answers the n-th request (0-based).
pub struct Server {
    pub base_url: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    pub fn start(handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let counter = Arc::new(AtomicUsize::new(0));
        let reqs = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (handler, counter, reqs) = (
                    Arc::clone(&handler),
                    Arc::clone(&counter),
                    Arc::clone(&reqs),
                );
                std::thread::spawn(move || serve(stream, &*handler, &counter, &reqs));
            }
        });
        Server {
            base_url: format!("http://{addr}/v1"),
            requests,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, handler: &Handler, counter: &AtomicUsize, reqs: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let req = Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let n = counter.fetch_add(1, Ordering::SeqCst);
    reqs.lock().unwrap().push(req.clone());
    let reply = handler(&req, n);
    std::thread::sleep(reply.delay);
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if reply.omit_length {
        out.push_str("Connection: close\r\n\r\n");
    } else {
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            reply.body.len()
        ));
    }
    out.push_str(&reply.body);
    let mut stream = stream;
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
}

/// A PNG of a black disc (radius `r`) on white, `size`².
pub fn disc_png(size: u32, r: f32) -> Vec<u8> {
    let c = size as f32 / 2.0;
    let img = image::RgbImage::from_fn(size, size, |x, y| {
        let (dx, dy) = (x as f32 + 0.5 - c, y as f32 + 0.5 - c);
        if dx * dx + dy * dy < r * r {
            image::Rgb([0, 0, 0])
        } else {
            image::Rgb([255, 255, 255])
        }
    });
    svgen_data::sample::encode_png(&image::DynamicImage::ImageRgb8(img)).unwrap()
}

/// A generator double: a disc whose radius depends on the id; ids containing `bad-image`
/// yield undecodable bytes, ids containing `timeout` a timeout failure; optional delay.
pub struct DiscGenerator {
    pub size: u32,
    pub delay: Duration,
}

impl ImageGenerator for DiscGenerator {
    fn name(&self) -> &str {
        "disc-double"
    }
    fn generate(&self, req: &GenerationRequest<'_>) -> Result<GeneratedImage, StageError> {
        std::thread::sleep(self.delay);
        if req.id.contains("timeout") {
            return Err(StageError::new(
                svgen_data::FailureKind::Timeout,
                "generator timed out after 3 attempts",
            ));
        }
        if req.id.contains("bad-image") {
            return Ok(GeneratedImage {
                bytes: b"\x89PNG\r\n\x1a\nthis is not really a png".to_vec(),
                seed: Some(req.seed),
            });
        }
        let r = 4.0 + (req.seed % 20) as f32;
        Ok(GeneratedImage {
            bytes: disc_png(self.size, r),
            seed: Some(req.seed),
        })
    }
}

/// Stages with the disc generator, the real tracer and cl100k.
pub fn disc_stages(delay: Duration) -> svgen_data::Stages {
    svgen_data::Stages {
        simplifier: None,
        template: svgen_data::prompt::PromptTemplate::silhouette(),
        generator: Box::new(DiscGenerator { size: 48, delay }),
        tracer: Box::new(svgen_data::stages::PotraceTracer::default()),
        counter: Box::new(svgen_data::stages::Cl100k::new()),
        clip: None,
        aesthetic: None,
    }
}

/// Every id in the published shards of `dir` (with repetitions) and every failure id.
pub fn output_ids(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let mut rows = Vec::new();
    for shard in svgen_data::storage::list_shards(dir).unwrap() {
        for t in svgen_data::storage::read_shard(&shard).unwrap() {
            rows.push(t.id);
        }
    }
    let fails = svgen_data::pipeline::read_failures(dir)
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    (rows, fails)
}
