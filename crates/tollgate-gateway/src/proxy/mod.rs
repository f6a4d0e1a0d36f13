//! The proxy pipeline, one phase after another:
//!
//! 1. **accept** — read the body once, with a size limit (413);
//! 2. **identify** — the Tollgate key from the SDK's native header (401);
//! 3. **parse** — model, stream flag, output limit (400);
//! 4. **route** — model → provider and upstream name (404, 400 wrong API);
//! 5. **price** — the served model's price, or a refusal when unpriced;
//! 6. **reserve** — budgets ([2/10]) slot in here, after the final model is known;
//! 7. **forward** — rewrite only what must change, send with provider auth;
//! 8. **settle** — read usage from the body or the stream, exactly once;
//! 9. **record** — the usage record goes to the batch writer.
//!
//! Errors before forwarding write no record (nothing reached a provider);
//! from forwarding on, every request writes exactly one.

mod settle;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Limited};
use jiff::Timestamp;
use tollgate_core::{Flags, Usage};
use tollgate_providers::{Endpoint, ParsedRequest, StreamFilter, WireFormat, usage_from_body};

use crate::AppState;
use crate::error::GatewayError;
use crate::identity::{self, Caller};
use settle::Draft;

/// Largest non-streaming upstream body read for metering.
const MAX_UPSTREAM_BODY: usize = 256 << 20;

/// A request as it arrived on one of the provider routes.
pub struct Inbound {
    pub endpoint: Endpoint,
    /// Gemini's model, from the path.
    pub path_model: Option<String>,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Body,
}

/// Runs the pipeline; every error comes back in the caller's format.
pub async fn handle(state: AppState, inbound: Inbound) -> Response {
    let format = inbound.endpoint.format();
    let request_id = new_request_id();
    let mut resp = match pipeline(&state, inbound, &request_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%request_id, error = %e, "request refused");
            e.into_response(format)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-tollgate-request-id", v);
    }
    resp
}

fn new_request_id() -> String {
    format!("req_{}", uuid_like())
}

/// 128 random bits as 32 hex digits.
fn uuid_like() -> String {
    let v: u128 = rand::random();
    format!("{v:032x}")
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    let mut body = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| GatewayError::BodyRead(e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            // Read (and drop) a bounded rest of the body before answering, so
            // the client is still listening when the 413 arrives instead of
            // meeting a reset mid-upload.
            let drain = async {
                let mut seen = 0usize;
                while let Some(Ok(c)) = body.next().await {
                    seen += c.len();
                    if seen > limit.saturating_mul(4) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
            return Err(GatewayError::BodyTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn identify(
    state: &AppState,
    format: WireFormat,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Caller, GatewayError> {
    match identity::presented_key(format, headers, query) {
        Some(k) => {
            let rec = state.keys.resolve(k).await?;
            Ok(identity::caller_from_key(&rec, headers))
        }
        None if !state.config.require_auth => Ok(Caller::default()),
        None => Err(GatewayError::MissingKey(identity::native_key_header(
            format,
        ))),
    }
}

async fn pipeline(
    state: &AppState,
    inbound: Inbound,
    request_id: &str,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let time = Timestamp::now();
    let Inbound {
        endpoint,
        path_model,
        query,
        headers,
        body,
    } = inbound;
    let format = endpoint.format();

    // 1. accept — a declared length over the limit is refused before reading.
    let limit = state.config.max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    // 2. identify (before reading the body: unauthenticated callers cost nothing).
    let caller = identify(state, format, &headers, query.as_deref()).await?;
    let body = read_body(body, limit).await?;

    // 3. parse
    let req = ParsedRequest::parse(endpoint, path_model.as_deref(), body)?;
    if !caller.may_use(&req.model) {
        return Err(GatewayError::ModelNotAllowed(req.model));
    }

    // 4. route
    let route = state.router.route(&req.model, format)?;
    if !caller.may_use(&route.upstream_model) && route.upstream_model != req.model {
        return Err(GatewayError::ModelNotAllowed(route.upstream_model));
    }

    // 5. price — count_tokens is free at every provider, so it needs none.
    let price = if endpoint.is_billable() {
        Some(state.catalog().price_of(&route.upstream_model)?.clone())
    } else {
        None
    };

    // 6. reserve: budgets arrive in [2/10].

    // 7. forward
    let up = req.upstream_body(&route.upstream_model, None);
    let gemini_sse = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
    let upstream_req = upstream::build(upstream::UpstreamRequest {
        provider: &route.provider,
        path: endpoint.upstream_path(&route.upstream_model),
        query: upstream::forwarded_query(query.as_deref()),
        headers: &headers,
        body: up.body,
        request_id,
    })?;
    let req = Arc::new(req);
    let draft = Draft {
        request_id: request_id.to_string(),
        time,
        started,
        caller,
        provider: route.provider.name.clone(),
        model_requested: req.model.clone(),
        model_served: route.upstream_model.clone(),
        price,
        request: req.clone(),
        flags: Flags::default(),
        recorder: state.recorder.clone(),
    };
    let resp = match upstream::send(&state.client, &route.provider, upstream_req).await {
        Ok(r) => r,
        Err(e) => {
            // Nothing reached the model: recorded, at zero cost.
            let status = e.to_native().status;
            if endpoint.is_billable() {
                draft.finish(Usage::default(), status, None, Flags::default());
            }
            return Err(e);
        }
    };

    // 8. settle and 9. record
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let streaming = req.stream && status.is_success();
    let mut out = Response::builder().status(status);
    if let Some(h) = out.headers_mut() {
        for (name, value) in &parts.headers {
            if !upstream::is_stripped_response_header(name, streaming) {
                h.append(name.clone(), value.clone());
            }
        }
    }

    if streaming {
        let sse = format != WireFormat::Gemini || gemini_sse;
        let filter = StreamFilter::new(endpoint, up.drop_usage_chunk, sse);
        let stream = settle::metered_stream(
            body,
            filter,
            draft,
            status.as_u16(),
            route.provider.stream_idle_timeout,
        );
        return out
            .body(Body::from_stream(stream))
            .map_err(|e| GatewayError::Internal(e.to_string()));
    }

    // Whole bodies: errors and non-streaming responses.
    let first_byte = started.elapsed();
    let bytes = match tokio::time::timeout(
        route.provider.timeout.saturating_sub(first_byte),
        Limited::new(body, MAX_UPSTREAM_BODY).collect(),
    )
    .await
    {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            let err = GatewayError::UpstreamUnreachable {
                provider: route.provider.name.clone(),
                reason: format!("reading response body: {e}"),
            };
            if endpoint.is_billable() {
                let u = draft.estimate(None, "");
                let flags = Flags {
                    usage_estimated: true,
                    stream_interrupted: true,
                    ..Flags::default()
                };
                draft.finish(u, 502, Some(first_byte), flags);
            }
            return Err(err);
        }
        Err(_) => {
            let err = GatewayError::UpstreamTimeout {
                provider: route.provider.name.clone(),
                ms: route.provider.timeout.as_millis() as u64,
            };
            if endpoint.is_billable() {
                draft.finish(Usage::default(), 504, Some(first_byte), Flags::default());
            }
            return Err(err);
        }
    };
    if endpoint.is_billable() {
        if status.is_success() {
            let found = usage_from_body(endpoint, &bytes);
            match found.usage {
                Some(u) => {
                    draft.finish(u, status.as_u16(), Some(first_byte), Flags::default());
                }
                None => {
                    // A success without usage is still charged: counted, flagged.
                    tracing::warn!(%request_id, "upstream response without usage; counting tokens");
                    let text = String::from_utf8_lossy(&bytes);
                    let u = draft.estimate(None, &text);
                    let flags = Flags {
                        usage_estimated: true,
                        ..Flags::default()
                    };
                    draft.finish(u, status.as_u16(), Some(first_byte), flags);
                }
            }
        } else {
            // Providers do not bill failed requests.
            draft.finish(
                Usage::default(),
                status.as_u16(),
                Some(first_byte),
                Flags::default(),
            );
        }
    }
    out.body(Body::from(bytes))
        .map_err(|e| GatewayError::Internal(e.to_string()))
}

/// `GET /v1/models`: the models this caller may use, in OpenAI's list
/// shape, or Anthropic's when the caller sends `anthropic-version`.
pub async fn list_models(state: AppState, headers: HeaderMap) -> Response {
    let anthropic = headers.contains_key("anthropic-version");
    let format = if anthropic {
        WireFormat::Anthropic
    } else {
        WireFormat::OpenAi
    };
    let caller = match identify(&state, format, &headers, None).await {
        Ok(c) => c,
        Err(e) => return e.into_response(format),
    };
    let catalog = state.catalog();
    let mut names: Vec<(String, String)> = catalog
        .entries()
        .filter_map(|e| {
            let p = state.router.routes(&e.model)?;
            Some((e.model.clone(), p.name.clone()))
        })
        .chain(
            state
                .router
                .exact_names()
                .map(|(n, p)| (n.to_string(), p.name.clone())),
        )
        .filter(|(m, _)| caller.may_use(m))
        .filter(|(m, _)| {
            !anthropic
                || state
                    .router
                    .routes(m)
                    .is_some_and(|p| p.kind == WireFormat::Anthropic)
        })
        .collect();
    names.sort();
    names.dedup_by(|a, b| a.0 == b.0);
    let body = if anthropic {
        let data: Vec<_> = names
            .iter()
            .map(|(m, _)| serde_json::json!({"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}))
            .collect();
        serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": names.first().map(|n| &n.0),
            "last_id": names.last().map(|n| &n.0),
        })
    } else {
        let data: Vec<_> = names
            .iter()
            .map(|(m, p)| serde_json::json!({"id": m, "object": "model", "created": 0, "owned_by": p}))
            .collect();
        serde_json::json!({"object": "list", "data": data})
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}
