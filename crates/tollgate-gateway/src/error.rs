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
    #[error("{0}")]
    KeyUnusable(&'static str),
    #[error("this api key may not use model {0:?}")]
    ModelNotAllowed(String),
    #[error(transparent)]
    BadRequest(#[from] RequestError),
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
}

impl GatewayError {
    pub fn to_native(&self) -> NativeError {
        use GatewayError::*;
        let msg = self.to_string();
        match self {
            MissingKey(_) | InvalidKey | KeyUnusable(_) => {
                NativeError::new(401, ErrorKind::Authentication, msg)
            }
            ModelNotAllowed(_) => NativeError::new(403, ErrorKind::PermissionDenied, msg)
                .with_code("model_not_allowed")
                .with_param("model"),
            BadRequest(e) => e.to_native(),
            BodyTooLarge { .. } => NativeError::new(413, ErrorKind::RequestTooLarge, msg),
            BodyRead(_) => NativeError::new(400, ErrorKind::InvalidRequest, msg),
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
        }
    }

    pub fn into_response(self, format: WireFormat) -> Response {
        native_response(&self.to_native(), format)
    }
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
    ) || e.status == 502;
    if !retryable {
        resp.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    resp
}
