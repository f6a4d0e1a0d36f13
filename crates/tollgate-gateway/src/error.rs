//! The gateway's errors, each mapped once to a status and a native error
//! body in the caller's wire format.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tollgate_providers::{ErrorKind, NativeError, RequestError, WireFormat};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("missing api key (send it as {0})")]
    MissingKey(&'static str),
    #[error("invalid api key")]
    InvalidKey,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("{0}")]
    KeyUnusable(&'static str),
    #[error("this api key may not use model {0:?}")]
    ModelNotAllowed(String),
    #[error("{0}")]
    IdentityNotAllowed(String),
    #[error(transparent)]
    BadRequest(#[from] RequestError),
    #[error("header {name}: {reason}")]
    HeaderNotAllowed { name: String, reason: String },
    #[error(
        "tool {0:?} is billed per use by the provider, which Tollgate does not price (an operator can allow it in providers[].allow_tools)"
    )]
    ToolNotPriced(String),
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("unknown model {0:?} (no entry in models: matches it)")]
    UnknownModel(String),
    #[error(
        "model {model:?} is served by provider {provider:?} ({kind} API); call it through {hint}"
    )]
    WrongFormat {
        model: String,
        provider: String,
        kind: &'static str,
        hint: &'static str,
    },
    #[error(transparent)]
    Unpriced(#[from] tollgate_core::pricing::catalog::Unpriced),
    #[error("provider {provider:?} has no api key: environment variable {var} is not set")]
    ProviderKeyMissing { provider: String, var: String },
    #[error("upstream {provider:?} did not answer within {ms} ms")]
    UpstreamTimeout { provider: String, ms: u64 },
    #[error("upstream {provider:?} unreachable: {reason}")]
    UpstreamUnreachable { provider: String, reason: String },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{}", .0.message)]
    BudgetExceeded(Box<BudgetRefusal>),
    #[error("{}", rate_message(.0))]
    RateLimited(Box<tollgate_budgets::rates::Limited>),
    #[error("the budget ledger is unavailable ({0}); refusing rather than spending unaccounted")]
    LedgerUnavailable(String),
}

/// A budget refusal, with everything the caller needs to act on it.
#[derive(Debug, Clone)]
pub struct BudgetRefusal {
    pub status: u16,
    pub message: String,
    pub budget_id: String,
    pub scope: String,
    pub subject: String,
    pub name: Option<String>,
    pub remaining_usd: Option<String>,
    pub remaining_tokens: Option<u64>,
    pub limit_usd: Option<String>,
    pub limit_tokens: Option<u64>,
    pub reset_at: Option<jiff::Timestamp>,
    /// Seconds until the reset, by the budgets' clock.
    pub retry_after_secs: Option<i64>,
    pub headers: Vec<(&'static str, String)>,
}

impl BudgetRefusal {
    pub fn new(
        r: &crate::budgets::Refusal,
        st: &crate::budgets::State,
        now: jiff::Timestamp,
    ) -> BudgetRefusal {
        let b = &r.applied.budget;
        let left = match (r.headroom.money, r.headroom.tokens) {
            (Some(m), Some(t)) => format!("${m} and {t} tokens left"),
            (Some(m), None) => format!("${m} left"),
            (None, Some(t)) => format!("{t} tokens left"),
            (None, None) => "nothing left".into(),
        };
        let when = match r.applied.resets_at {
            Some(t) => format!("; resets at {t}"),
            None => "; it does not reset".into(),
        };
        let who = if b.scope == tollgate_core::budget::Scope::Global {
            "global".to_string()
        } else {
            format!("{} {:?}", b.scope, r.applied.subject)
        };
        let message = match &b.refusal_message {
            Some(t) => tollgate_budgets::messages::render(t, &r.applied, st),
            None => format!(
                "budget exceeded: {} budget {:?}{} ({who}) cannot afford this request — {left}{when}",
                b.period,
                b.id,
                b.name
                    .as_deref()
                    .map(|n| format!(" {n:?}"))
                    .unwrap_or_default()
            ),
        };
        BudgetRefusal {
            status: b.refusal_status,
            message,
            budget_id: b.id.clone(),
            scope: b.scope.as_str().into(),
            subject: r.applied.subject.clone(),
            name: b.name.clone(),
            remaining_usd: r.headroom.money.map(|m| m.to_string()),
            remaining_tokens: r.headroom.tokens,
            limit_usd: r.applied.line.limit.money.map(|m| m.to_string()),
            limit_tokens: r.applied.line.limit.tokens,
            reset_at: r.applied.resets_at,
            retry_after_secs: r
                .applied
                .resets_at
                .map(|t| t.duration_since(now).as_secs().max(1)),
            headers: crate::budgets::header_values(&r.applied, st),
        }
    }
}

impl GatewayError {
    pub fn to_native(&self) -> NativeError {
        use GatewayError::*;
        let msg = self.to_string();
        match self {
            MissingKey(_) | InvalidKey | InvalidToken(_) | KeyUnusable(_) => {
                NativeError::new(401, ErrorKind::Authentication, msg)
            }
            ModelNotAllowed(_) => NativeError::new(403, ErrorKind::PermissionDenied, msg)
                .with_code("model_not_allowed")
                .with_param("model"),
            IdentityNotAllowed(_) => NativeError::new(403, ErrorKind::PermissionDenied, msg)
                .with_code("identity_not_allowed"),
            BadRequest(e) => e.to_native(),
            BodyTooLarge { .. } => NativeError::new(413, ErrorKind::RequestTooLarge, msg),
            BodyRead(_) => NativeError::new(400, ErrorKind::InvalidRequest, msg),
            HeaderNotAllowed { .. } => NativeError::new(400, ErrorKind::InvalidRequest, msg)
                .with_code("header_not_allowed"),
            ToolNotPriced(_) => NativeError::new(400, ErrorKind::InvalidRequest, msg)
                .with_code("tool_not_priced")
                .with_param("tools"),
            UnknownModel(_) => NativeError::new(404, ErrorKind::NotFound, msg).with_param("model"),
            WrongFormat { .. } => NativeError::new(400, ErrorKind::InvalidRequest, msg)
                .with_code("wrong_api_format")
                .with_param("model"),
            Unpriced(_) => NativeError::new(400, ErrorKind::InvalidRequest, msg)
                .with_code("model_not_priced")
                .with_param("model"),
            ProviderKeyMissing { .. } | Internal(_) => NativeError::new(500, ErrorKind::Api, msg),
            UpstreamTimeout { .. } => NativeError::new(504, ErrorKind::Timeout, msg),
            UpstreamUnreachable { .. } => NativeError::new(502, ErrorKind::Api, msg),
            LedgerUnavailable(_) => NativeError::new(503, ErrorKind::Api, msg),
            RateLimited(l) => NativeError::new(429, ErrorKind::RateLimited, msg)
                .with_code("rate_limit_exceeded")
                .with_extra(
                    "rate_limit",
                    serde_json::json!({"id": l.line.limit.id, "scope": l.line.limit.scope.as_str(), "subject": l.line.subject, "unit": l.unit}),
                ),
            BudgetExceeded(r) => {
                let mut e = NativeError::new(r.status, ErrorKind::BudgetExceeded, msg)
                    .with_code("budget_exceeded")
                    .with_extra(
                        "budget",
                        serde_json::json!({"id": r.budget_id, "scope": r.scope, "subject": r.subject, "name": r.name}),
                    )
                    .with_extra("remaining_usd", serde_json::json!(r.remaining_usd))
                    .with_extra("remaining_tokens", serde_json::json!(r.remaining_tokens))
                    .with_extra("limit_usd", serde_json::json!(r.limit_usd))
                    .with_extra("limit_tokens", serde_json::json!(r.limit_tokens))
                    .with_extra("reset_at", serde_json::json!(r.reset_at.map(|t| t.to_string())));
                e.param = None;
                e
            }
        }
    }

    pub fn into_response(self, format: WireFormat) -> Response {
        let mut resp = native_response(&self.to_native(), format);
        if let GatewayError::RateLimited(l) = &self {
            let h = resp.headers_mut();
            for (name, value) in rate_headers(l.requests, l.tokens) {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(name, v);
                }
            }
            match l.retry_after_ns {
                Some(ns) => {
                    let secs = (ns + 999_999_999) / 1_000_000_000;
                    h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1) as u64));
                }
                // More than a minute's tokens: waiting never helps.
                None => {
                    h.insert("x-should-retry", HeaderValue::from_static("false"));
                }
            }
        }
        if let GatewayError::BudgetExceeded(r) = &self {
            let h = resp.headers_mut();
            for (name, value) in &r.headers {
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(*name, v);
                }
            }
            // Retry-After at the reset: waiting less changes nothing.
            if let Some(secs) = r.retry_after_secs {
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
        }
        resp
    }
}

fn rate_message(l: &tollgate_budgets::rates::Limited) -> String {
    let limit = &l.line.limit;
    let per = match l.unit {
        "requests" => limit.requests_per_minute,
        _ => limit.tokens_per_minute,
    }
    .unwrap_or(0);
    let who = if limit.scope == tollgate_core::budget::Scope::Global {
        "all traffic".to_string()
    } else {
        format!("{} {:?}", limit.scope, l.line.subject)
    };
    match l.retry_after_ns {
        Some(ns) => format!(
            "rate limit exceeded: {who} may send {per} {} per minute (rate limit {:?}); retry in {}",
            l.unit,
            limit.id,
            tollgate_core::rate::openai_duration(ns)
        ),
        None => format!(
            "rate limit exceeded: this request needs more {} than {who} may send in a minute ({per}, rate limit {:?})",
            l.unit, limit.id
        ),
    }
}

/// OpenAI's `x-ratelimit-*` headers for a limit's standing.
pub fn rate_headers(
    requests: Option<tollgate_core::rate::Standing>,
    tokens: Option<tollgate_core::rate::Standing>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(s) = requests {
        out.push(("x-ratelimit-limit-requests", s.limit.to_string()));
        out.push(("x-ratelimit-remaining-requests", s.remaining.to_string()));
        out.push((
            "x-ratelimit-reset-requests",
            tollgate_core::rate::openai_duration(s.reset_ns),
        ));
    }
    if let Some(s) = tokens {
        out.push(("x-ratelimit-limit-tokens", s.limit.to_string()));
        out.push(("x-ratelimit-remaining-tokens", s.remaining.to_string()));
        out.push((
            "x-ratelimit-reset-tokens",
            tollgate_core::rate::openai_duration(s.reset_ns),
        ));
    }
    out
}

/// Renders a native error with its status. Errors Tollgate decides itself
/// carry `x-should-retry: false` unless retrying can help (timeouts,
/// unreachable upstreams, rate limits).
pub fn native_response(e: &NativeError, format: WireFormat) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        e.body_bytes(format),
    )
        .into_response();
    let retryable = matches!(
        e.kind,
        ErrorKind::Timeout | ErrorKind::Overloaded | ErrorKind::RateLimited
    ) || e.status == 502
        || e.status == 503;
    if !retryable {
        resp.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    resp
}

/// Gives every error response a JSON body: axum's own rejections (no route,
/// wrong method, a query string or body its extractors refuse) answer
/// `text/plain` or nothing. On provider paths the body is the caller's
/// wire format; elsewhere it is the admin error shape
/// `{"error":{"message","type"}}`.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // Rejection texts are short; anything longer is cut, not buffered whole.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (status, text.is_empty()) {
        (StatusCode::NOT_FOUND, true) => format!("no route for {method} {path}"),
        (StatusCode::METHOD_NOT_ALLOWED, true) => {
            format!("method {method} is not allowed on {path}")
        }
        (_, true) => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
        (_, false) => text,
    };
    let kind = match status.as_u16() {
        401 => ErrorKind::Authentication,
        403 => ErrorKind::PermissionDenied,
        404 | 405 => ErrorKind::NotFound,
        413 => ErrorKind::RequestTooLarge,
        429 => ErrorKind::RateLimited,
        s if s < 500 => ErrorKind::InvalidRequest,
        _ => ErrorKind::Api,
    };
    let e = NativeError::new(status.as_u16(), kind, message);
    let mut out = match WireFormat::for_path(&path) {
        Some(format) => native_response(&e, format),
        None => crate::admin::AdminError::new(status, e.message).into_response(),
    };
    // Keep what the framework said about the error (`Allow` on a 405).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
