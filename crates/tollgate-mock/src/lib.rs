//! The mock LLM provider: speaks the OpenAI, Anthropic and Gemini wire
//! formats exactly (bodies and SSE streams), so Tollgate can be tested and
//! demonstrated without a provider account.
//!
//! Knobs, per request as headers (defaults from [`MockConfig`]):
//! - `x-mock-output-tokens`: visible output tokens (capped by the request's limit)
//! - `x-mock-input-tokens`: report this many input tokens instead of counting the prompt
//! - `x-mock-cached-tokens`, `x-mock-cache-write-5m-tokens`,
//!   `x-mock-cache-write-1h-tokens`, `x-mock-reasoning-tokens`
//! - `x-mock-error: 503`: answer with that status and the format's error body
//! - `x-mock-ttfb-ms`, `x-mock-chunk-delay-ms`: latency before the first and between chunks
//! - `x-mock-omit-usage: 1`, `x-mock-garbage: 1`, `x-mock-drop-after: N`:
//!   hostile streams (no usage; junk lines and split chunks; cut after N pieces)
//! - `x-mock-unknown-input-tokens`: input billed for each part only a provider
//!   can size (a previous response, cached content, a file; default 1000)
//! - `x-mock-gzip: 1`: answer gzip-compressed whatever the request asked
//! - `x-mock-ignore-limit: 1`: a broken upstream that ignores output limits
//! - `x-mock-report-output-tokens: N`: report N output tokens in the usage
//!   fields (a lying upstream); the bill keeps the true count
//! - `x-mock-tool-call: NAME` (with `x-mock-tool-arguments: JSON`, default
//!   `{}`): the model calls that offered function tool instead of answering,
//!   as `tool_choice` forcing one also makes it; after the tool's result it
//!   answers in text (Chat Completions and Messages)
//!
//! Output bounds are honoured the way the providers document them, reading
//! the raw body itself (not Tollgate's parser), as the most generous
//! upstream would: the largest of every output-limit field present, and
//! `n` / `best_of` / `candidateCount` completions, each billed. Images are
//! billed by the providers' published formulas, token-id arrays by length.
//!
//! `GET /mock/billing` reports what the mock would have billed, per request
//! (keyed by the `x-tollgate-request-id` header the gateway sends), so tests
//! compare Tollgate's records with the provider's own numbers.

#[cfg(test)]
mod conformance;
pub mod honour;
pub mod render;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tollgate_core::{Usage, tokens::count_tokens};
use tollgate_providers::{Endpoint, ErrorKind, NativeError, ParsedRequest};

use render::Plan;

/// Defaults for requests that set no knobs.
#[derive(Clone, Debug)]
pub struct MockConfig {
    pub output_tokens: u64,
    pub ttfb: Duration,
    pub chunk_delay: Duration,
    /// When set, requests must carry this provider key in their format's
    /// header, or get a native 401 (proves the gateway swaps keys).
    pub expect_key: Option<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            output_tokens: 20,
            ttfb: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            expect_key: None,
        }
    }
}

/// One request as the mock would bill it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Billed {
    pub request_id: Option<String>,
    pub endpoint: String,
    pub model: String,
    pub stream: bool,
    /// Tokens billed: the full usage if completed, else the input side plus
    /// the output actually sent.
    pub usage: Usage,
    pub completed: bool,
    pub output_tokens_sent: u64,
    /// Names of the request headers the mock received, sorted.
    #[serde(default)]
    pub headers: Vec<String>,
    /// The system prompt the model was given, if any.
    #[serde(default)]
    pub system: Option<String>,
}

#[derive(Default)]
struct Ledger {
    billed: Vec<Billed>,
    seq: u64,
}

#[derive(Clone)]
pub struct MockState {
    config: Arc<MockConfig>,
    ledger: Arc<Mutex<Ledger>>,
}

impl MockState {
    pub fn new(config: MockConfig) -> Self {
        MockState {
            config: Arc::new(config),
            ledger: Arc::default(),
        }
    }

    pub fn billed(&self) -> Vec<Billed> {
        self.ledger
            .lock()
            .map(|l| l.billed.clone())
            .unwrap_or_default()
    }

    fn next_seq(&self) -> u64 {
        self.ledger
            .lock()
            .map(|mut l| {
                l.seq += 1;
                l.seq
            })
            .unwrap_or(0)
    }

    fn bill(&self, b: Billed) -> usize {
        let mut l = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        l.billed.push(b);
        l.billed.len() - 1
    }

    fn update(&self, idx: usize, f: impl FnOnce(&mut Billed)) {
        let mut l = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = l.billed.get_mut(idx) {
            f(b);
        }
    }
}

/// The mock's router: every provider route plus `/mock/billing`.
pub fn router(state: MockState) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(|s: State<MockState>, h: HeaderMap, b: Bytes| {
                handle(s, h, b, Endpoint::ChatCompletions, None, true)
            }),
        )
        .route(
            "/v1/completions",
            post(|s: State<MockState>, h: HeaderMap, b: Bytes| {
                handle(s, h, b, Endpoint::Completions, None, true)
            }),
        )
        .route(
            "/v1/embeddings",
            post(|s: State<MockState>, h: HeaderMap, b: Bytes| {
                handle(s, h, b, Endpoint::Embeddings, None, true)
            }),
        )
        .route(
            "/v1/responses",
            post(|s: State<MockState>, h: HeaderMap, b: Bytes| {
                handle(s, h, b, Endpoint::Responses, None, true)
            }),
        )
        .route(
            "/v1/messages",
            post(|s: State<MockState>, h: HeaderMap, b: Bytes| {
                handle(s, h, b, Endpoint::Messages, None, true)
            }),
        )
        .route(
            "/v1/messages/count_tokens",
            post(|s: State<MockState>, h: HeaderMap, b: Bytes| {
                handle(s, h, b, Endpoint::CountTokens, None, true)
            }),
        )
        .route("/v1beta/models/{call}", post(gemini))
        .route("/v1/models/{call}", post(gemini))
        .route("/mock/billing", get(billing))
        .route("/mock/reset", post(reset))
        .with_state(state)
}

#[derive(Deserialize)]
struct GeminiQuery {
    #[serde(default)]
    alt: Option<String>,
}

async fn gemini(
    s: State<MockState>,
    Path(call): Path<String>,
    Query(q): Query<GeminiQuery>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    let Some((model, method)) = call.rsplit_once(':') else {
        return error(
            Endpoint::GenerateContent,
            404,
            ErrorKind::NotFound,
            format!("unknown method {call:?}"),
        );
    };
    let endpoint = match method {
        "generateContent" => Endpoint::GenerateContent,
        "streamGenerateContent" => Endpoint::StreamGenerateContent,
        "countTokens" => Endpoint::GeminiCountTokens,
        _ => {
            return error(
                Endpoint::GenerateContent,
                404,
                ErrorKind::NotFound,
                format!("unknown method {method:?}"),
            );
        }
    };
    let sse = q.alt.as_deref() == Some("sse");
    handle(s, h, b, endpoint, Some(model.to_string()), sse).await
}

#[derive(Serialize)]
struct BillingReport {
    requests: Vec<Billed>,
    total: Usage,
}

async fn billing(State(s): State<MockState>) -> impl IntoResponse {
    let requests = s.billed();
    let total = requests
        .iter()
        .fold(Usage::default(), |a, b| a.add(&b.usage));
    axum::Json(BillingReport { requests, total })
}

async fn reset(State(s): State<MockState>) -> StatusCode {
    if let Ok(mut l) = s.ledger.lock() {
        l.billed.clear();
    }
    StatusCode::NO_CONTENT
}

fn knob(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn flag(h: &HeaderMap, name: &str) -> bool {
    h.get(name).is_some_and(|v| v != "0" && v != "false")
}

fn error(endpoint: Endpoint, status: u16, kind: ErrorKind, msg: String) -> Response {
    let e = NativeError::new(status, kind, msg);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        e.body_bytes(endpoint.format()),
    )
        .into_response()
}

fn key_ok(endpoint: Endpoint, h: &HeaderMap, expect: &str) -> bool {
    let got = match endpoint.format() {
        tollgate_providers::WireFormat::OpenAi => h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ")),
        tollgate_providers::WireFormat::Anthropic => {
            h.get("x-api-key").and_then(|v| v.to_str().ok())
        }
        tollgate_providers::WireFormat::Gemini => {
            h.get("x-goog-api-key").and_then(|v| v.to_str().ok())
        }
    };
    got == Some(expect)
}

async fn handle(
    State(s): State<MockState>,
    h: HeaderMap,
    body: Bytes,
    endpoint: Endpoint,
    path_model: Option<String>,
    sse: bool,
) -> Response {
    if let Some(expect) = &s.config.expect_key
        && !key_ok(endpoint, &h, expect)
    {
        return error(
            endpoint,
            401,
            ErrorKind::Authentication,
            "invalid provider api key".into(),
        );
    }
    let raw: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let req = match ParsedRequest::parse_lenient(endpoint, path_model.as_deref(), body) {
        Ok(r) => r,
        Err(e) => return error(endpoint, 400, ErrorKind::InvalidRequest, e.to_string()),
    };
    let honoured = honour::output(endpoint, &raw);
    if let Some(status) = knob(&h, "x-mock-error") {
        let kind = match status {
            400 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Authentication,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::RateLimited,
            529 | 503 => ErrorKind::Overloaded,
            _ => ErrorKind::Api,
        };
        return error(
            endpoint,
            status as u16,
            kind,
            format!("mock error {status}"),
        );
    }
    let ttfb = knob(&h, "x-mock-ttfb-ms").map_or(s.config.ttfb, Duration::from_millis);
    let delay =
        knob(&h, "x-mock-chunk-delay-ms").map_or(s.config.chunk_delay, Duration::from_millis);
    let input = knob(&h, "x-mock-input-tokens").unwrap_or_else(|| {
        let size = req.input_size(&req.model);
        let unknown = knob(&h, "x-mock-unknown-input-tokens").unwrap_or(1000);
        (count_tokens(&size.text) + size.fixed_tokens + size.unknown_parts * unknown).max(1)
    });
    let cached = knob(&h, "x-mock-cached-tokens").unwrap_or(0);
    let w5 = knob(&h, "x-mock-cache-write-5m-tokens").unwrap_or(0);
    let w1 = knob(&h, "x-mock-cache-write-1h-tokens").unwrap_or(0);
    let limit = if flag(&h, "x-mock-ignore-limit") {
        u64::MAX
    } else {
        honoured.limit.unwrap_or(u64::MAX)
    };
    let choices = honoured.choices;
    let reasoning = knob(&h, "x-mock-reasoning-tokens").unwrap_or(0).min(limit);
    let wanted = knob(&h, "x-mock-output-tokens").unwrap_or(s.config.output_tokens);
    let billable = endpoint.is_billable() && endpoint != Endpoint::Embeddings;
    let tool_call = billable
        .then(|| {
            let name = h.get("x-mock-tool-call").and_then(|v| v.to_str().ok());
            honour::tool_call(endpoint, &raw, name)
        })
        .flatten()
        .map(|name| {
            let arguments = h
                .get("x-mock-tool-arguments")
                .and_then(|v| v.to_str().ok())
                .filter(|a| {
                    serde_json::from_str::<serde_json::Value>(a).is_ok_and(|v| v.is_object())
                })
                .unwrap_or("{}")
                .to_string();
            let tokens = count_tokens(&arguments).max(1).min(limit - reasoning);
            render::ToolCall {
                name,
                arguments,
                tokens,
            }
        });
    let call_tokens = tool_call.as_ref().map_or(0, |t| t.tokens);
    // Per choice: visible words after the reasoning, within the limit.
    let words = if billable && tool_call.is_none() {
        wanted.min(limit - reasoning)
    } else {
        0
    };
    let reasoning = if billable { reasoning } else { 0 };
    let usage = Usage {
        input_tokens: input + cached + w5 + w1,
        output_tokens: (words + call_tokens + reasoning).saturating_mul(choices),
        cached_input_tokens: cached,
        cache_write_5m_tokens: w5,
        cache_write_1h_tokens: w1,
        reasoning_tokens: reasoning.saturating_mul(choices),
    };
    // What the answer says; the bill below keeps the truth.
    let reported = match knob(&h, "x-mock-report-output-tokens") {
        Some(n) => Usage {
            output_tokens: n,
            ..usage
        },
        None => usage,
    };
    let embedding_inputs = match req.body().get("input") {
        Some(serde_json::Value::Array(a)) => a.len(),
        _ => 1,
    };
    let seq = s.next_seq();
    let plan = Plan {
        endpoint,
        model: req.model.clone(),
        sse,
        usage: reported,
        output_words: words,
        choices,
        hit_limit: tool_call.is_none() && words < wanted,
        include_usage: req.client_wants_usage_chunk,
        omit_usage: flag(&h, "x-mock-omit-usage"),
        garbage: flag(&h, "x-mock-garbage"),
        embedding_inputs,
        embedding_base64: req.body().get("encoding_format").and_then(|v| v.as_str())
            == Some("base64"),
        id: format!("mock-{seq}"),
        created: 1_767_225_600,
        tool_call,
    };
    let request_id = h
        .get("x-tollgate-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut billed = Billed {
        request_id,
        endpoint: format!("{endpoint:?}"),
        model: req.model.clone(),
        stream: req.stream,
        usage: if endpoint.is_billable() {
            usage
        } else {
            Usage::default()
        },
        completed: true,
        output_tokens_sent: (words + call_tokens) * choices,
        headers: {
            let mut names: Vec<String> = h.keys().map(|k| k.as_str().to_string()).collect();
            names.sort();
            names.dedup();
            names
        },
        system: tollgate_providers::hint::system_text(endpoint, req.body()),
    };
    if !ttfb.is_zero() {
        tokio::time::sleep(ttfb).await;
    }
    let gzip = flag(&h, "x-mock-gzip");
    if !req.stream {
        s.bill(billed);
        let body = render::body(&plan).to_string();
        if gzip {
            return (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CONTENT_ENCODING, "gzip"),
                ],
                gzipped(body.as_bytes()),
            )
                .into_response();
        }
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    billed.completed = false;
    billed.output_tokens_sent = 0;
    billed.usage.output_tokens = reasoning * choices;
    let idx = s.bill(billed);
    let drop_after = knob(&h, "x-mock-drop-after");
    let pieces = render::stream(&plan);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let state = s.clone();
    tokio::spawn(async move {
        let mut sent = 0u64;
        let total = pieces.len();
        for (i, p) in pieces.into_iter().enumerate() {
            if drop_after.is_some_and(|n| i as u64 >= n) {
                let _ = tx
                    .send(Err(std::io::Error::other("mock: stream cut")))
                    .await;
                break;
            }
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Ok(p.bytes)).await.is_err() {
                break; // the client went away
            }
            sent += p.tokens;
            state.update(idx, |b| {
                b.output_tokens_sent = sent;
                b.usage.output_tokens = reasoning * choices + sent;
                b.completed = i + 1 == total;
            });
        }
    });
    let content_type = if endpoint.format() == tollgate_providers::WireFormat::Gemini && !sse {
        "application/json"
    } else {
        "text/event-stream"
    };
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache");
    if gzip {
        // Only the header: a client that meters must refuse or decode it.
        resp = resp.header(header::CONTENT_ENCODING, "gzip");
    }
    resp.body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn gzipped(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(b);
    e.finish().unwrap_or_default()
}

/// Serves the mock on `listener` until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, config: MockConfig) -> std::io::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(MockState::new(config))).await
}
