//! Errors in each caller's native JSON shape, produced in one place.

use serde_json::{Map, Value, json};

use crate::WireFormat;

/// What went wrong, independent of wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    RequestTooLarge,
    RateLimited,
    BudgetExceeded,
    /// The gateway or the upstream failed.
    Api,
    Overloaded,
    Timeout,
}

/// An error to render for the caller: status, kind, message, and optional
/// machine-readable extras merged into the error object.
#[derive(Clone, Debug, PartialEq)]
pub struct NativeError {
    pub status: u16,
    pub kind: ErrorKind,
    pub message: String,
    /// OpenAI's `code` (e.g. `invalid_api_key`, `model_not_found`).
    pub code: Option<String>,
    pub param: Option<String>,
    pub extra: Map<String, Value>,
}

impl NativeError {
    pub fn new(status: u16, kind: ErrorKind, message: impl Into<String>) -> Self {
        NativeError {
            status,
            kind,
            message: message.into(),
            code: None,
            param: None,
            extra: Map::new(),
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// The JSON body in `format`'s shape.
    pub fn body(&self, format: WireFormat) -> Value {
        let code = self
            .code
            .clone()
            .or_else(|| default_code(self.kind).map(str::to_string));
        let mut err = match format {
            WireFormat::OpenAi => json!({
                "message": self.message,
                "type": openai_type(self.kind),
                "param": self.param,
                "code": code,
            }),
            WireFormat::Anthropic => json!({
                "type": anthropic_type(self.kind),
                "message": self.message,
            }),
            WireFormat::Gemini => json!({
                "code": self.status,
                "message": self.message,
                "status": gemini_status(self.kind),
            }),
        };
        if let Some(obj) = err.as_object_mut() {
            match (format, &code) {
                // Anthropic's error object has no code; a extra field is harmless.
                (WireFormat::Anthropic, Some(code)) => {
                    obj.insert("code".into(), Value::String(code.clone()));
                }
                // Gemini's `code` is the HTTP status; the reason goes where
                // Google APIs put it, in an ErrorInfo detail.
                (WireFormat::Gemini, Some(code)) => {
                    obj.insert(
                        "details".into(),
                        json!([{
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": code,
                            "domain": "tollgate",
                        }]),
                    );
                }
                _ => {}
            }
            for (k, v) in &self.extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        match format {
            WireFormat::Anthropic => json!({"type": "error", "error": err}),
            _ => json!({ "error": err }),
        }
    }

    pub fn body_bytes(&self, format: WireFormat) -> Vec<u8> {
        // Serializing a Value built from strings and numbers cannot fail.
        serde_json::to_vec(&self.body(format)).unwrap_or_default()
    }
}

fn default_code(kind: ErrorKind) -> Option<&'static str> {
    match kind {
        ErrorKind::Authentication => Some("invalid_api_key"),
        ErrorKind::BudgetExceeded => Some("budget_exceeded"),
        ErrorKind::RateLimited => Some("rate_limit_exceeded"),
        ErrorKind::NotFound => Some("model_not_found"),
        ErrorKind::RequestTooLarge => Some("request_too_large"),
        _ => None,
    }
}

fn openai_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::NotFound | ErrorKind::RequestTooLarge => {
            "invalid_request_error"
        }
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::BudgetExceeded => "insufficient_quota",
        ErrorKind::Api | ErrorKind::Overloaded => "api_error",
        ErrorKind::Timeout => "timeout",
    }
}

fn anthropic_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::BudgetExceeded => "budget_exceeded",
        ErrorKind::Api => "api_error",
        ErrorKind::Overloaded => "overloaded_error",
        ErrorKind::Timeout => "timeout_error",
    }
}

fn gemini_status(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => "INVALID_ARGUMENT",
        ErrorKind::Authentication => "UNAUTHENTICATED",
        ErrorKind::PermissionDenied => "PERMISSION_DENIED",
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::RateLimited | ErrorKind::BudgetExceeded => "RESOURCE_EXHAUSTED",
        ErrorKind::Api => "INTERNAL",
        ErrorKind::Overloaded => "UNAVAILABLE",
        ErrorKind::Timeout => "DEADLINE_EXCEEDED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_has_its_shape() {
        let e = NativeError::new(401, ErrorKind::Authentication, "invalid api key \"tg-x…\"");
        let o = e.body(WireFormat::OpenAi);
        assert_eq!(o["error"]["type"], "authentication_error");
        assert_eq!(o["error"]["code"], "invalid_api_key");
        let a = e.body(WireFormat::Anthropic);
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "authentication_error");
        let g = e.body(WireFormat::Gemini);
        assert_eq!(g["error"]["code"], 401);
        assert_eq!(g["error"]["status"], "UNAUTHENTICATED");
    }

    #[test]
    fn extras_are_merged_into_the_error_object() {
        let e = NativeError::new(429, ErrorKind::BudgetExceeded, "budget exhausted")
            .with_extra("budget_id", json!("b1"));
        assert_eq!(e.body(WireFormat::OpenAi)["error"]["budget_id"], "b1");
        assert_eq!(e.body(WireFormat::Anthropic)["error"]["budget_id"], "b1");
        assert_eq!(
            e.body(WireFormat::Gemini)["error"]["details"][0]["reason"],
            "budget_exceeded"
        );
        assert_eq!(
            e.body(WireFormat::Anthropic)["error"]["code"],
            "budget_exceeded"
        );
    }
}
