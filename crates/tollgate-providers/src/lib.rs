//! The edge that knows wire formats: one module per provider API.
//!
//! For each format this crate parses the caller's request (model, stream flag,
//! output limit, end-user fields), rewrites it for the upstream, reads usage
//! from response bodies and from streams event by event, and renders errors
//! in the caller's native shape. Everything is pure: bytes in, values out.
//! The gateway does the I/O; the mock provider builds its responses from the
//! same wire types ([`openai::WireUsage`], ...), so the two cannot drift.

pub mod anthropic;
pub mod bounds;
pub mod error;
pub mod footer;
#[cfg(test)]
mod fuzz;
pub mod gemini;
pub mod headers;
pub mod hint;
pub mod input;
mod json;
pub mod openai;
pub mod request;
pub mod sse;
pub mod stream;
pub mod tools;

pub use bounds::ChatLimitField;
pub use error::{ErrorKind, NativeError};
pub use request::{ParsedRequest, RequestError};
pub use stream::{StreamError, StreamFilter};

use tollgate_core::Usage;

/// A provider API's wire format. OpenAI-compatible upstreams (Mistral, vLLM,
/// Ollama, Gemini's compatibility endpoint) all speak [`WireFormat::OpenAi`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireFormat {
    OpenAi,
    Anthropic,
    Gemini,
}

impl WireFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WireFormat::OpenAi => "openai",
            WireFormat::Anthropic => "anthropic",
            WireFormat::Gemini => "gemini",
        }
    }

    /// The wire format a caller of `path` speaks, for paths on the
    /// providers' API prefixes (`None` elsewhere: admin, health, usage).
    pub fn for_path(path: &str) -> Option<WireFormat> {
        if path.starts_with("/v1beta/") || (path.starts_with("/v1/models/") && path.contains(':')) {
            Some(WireFormat::Gemini)
        } else if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Some(WireFormat::Anthropic)
        } else if path == "/v1" || path.starts_with("/v1/") {
            Some(WireFormat::OpenAi)
        } else {
            None
        }
    }

    pub fn parse(s: &str) -> Option<WireFormat> {
        match s {
            "openai" => Some(WireFormat::OpenAi),
            "anthropic" => Some(WireFormat::Anthropic),
            "gemini" => Some(WireFormat::Gemini),
            _ => None,
        }
    }
}

/// Every route that reaches a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Messages,
    /// Anthropic's `count_tokens`.
    CountTokens,
    GenerateContent,
    StreamGenerateContent,
    /// Gemini's `:countTokens` (free, like Anthropic's).
    GeminiCountTokens,
}

impl Endpoint {
    pub fn format(self) -> WireFormat {
        match self {
            Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Responses => WireFormat::OpenAi,
            Endpoint::Messages | Endpoint::CountTokens => WireFormat::Anthropic,
            Endpoint::GenerateContent
            | Endpoint::StreamGenerateContent
            | Endpoint::GeminiCountTokens => WireFormat::Gemini,
        }
    }

    /// Whether the endpoint consumes billable tokens (counting tokens is free).
    pub fn is_billable(self) -> bool {
        !matches!(self, Endpoint::CountTokens | Endpoint::GeminiCountTokens)
    }

    /// The path to append to the provider's `base_url`.
    /// OpenAI's base includes `/v1`; Anthropic's is the host; Gemini's
    /// includes the API version (`.../v1beta`). A Gemini model is put in its
    /// path segment percent-encoded unless it is a plain model id, so no
    /// name can end, escape or extend the segment (names are validated
    /// before this; the encoding keeps the builder safe on its own).
    pub fn upstream_path(self, upstream_model: &str) -> String {
        match self {
            Endpoint::ChatCompletions => "/chat/completions".into(),
            Endpoint::Completions => "/completions".into(),
            Endpoint::Embeddings => "/embeddings".into(),
            Endpoint::Responses => "/responses".into(),
            Endpoint::Messages => "/v1/messages".into(),
            Endpoint::CountTokens => "/v1/messages/count_tokens".into(),
            Endpoint::GenerateContent => {
                format!("/models/{}:generateContent", path_segment(upstream_model))
            }
            Endpoint::StreamGenerateContent => {
                format!(
                    "/models/{}:streamGenerateContent",
                    path_segment(upstream_model)
                )
            }
            Endpoint::GeminiCountTokens => {
                format!("/models/{}:countTokens", path_segment(upstream_model))
            }
        }
    }
}

/// `s` as one URL path segment: unreserved characters as they are, every
/// other byte percent-encoded (`.` and `..` too).
fn path_segment(s: &str) -> String {
    if request::is_model_id(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Usage and the served model read from a complete (non-streaming) body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BodyUsage {
    pub usage: Option<Usage>,
    pub model: Option<String>,
}

/// Reads usage from a complete response body. Never fails: a body without
/// usage (or not JSON) yields `usage: None` and the caller decides.
pub fn usage_from_body(endpoint: Endpoint, body: &[u8]) -> BodyUsage {
    match endpoint.format() {
        WireFormat::OpenAi => openai::usage_from_body(endpoint, body),
        WireFormat::Anthropic => anthropic::usage_from_body(body),
        WireFormat::Gemini => gemini::usage_from_body(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_for_path() {
        for (p, f) in [
            ("/v1/chat/completions", Some(WireFormat::OpenAi)),
            ("/v1/nope", Some(WireFormat::OpenAi)),
            ("/v1/messages", Some(WireFormat::Anthropic)),
            ("/v1/messages/batches", Some(WireFormat::Anthropic)),
            ("/v1beta/models/x:embedContent", Some(WireFormat::Gemini)),
            (
                "/v1/models/gemini-2.5-pro:generateContent",
                Some(WireFormat::Gemini),
            ),
            ("/v1/models/gpt-4o", Some(WireFormat::OpenAi)),
            ("/admin/keys", None),
            ("/", None),
        ] {
            assert_eq!(WireFormat::for_path(p), f, "{p}");
        }
    }

    #[test]
    fn regression_gemini_path_model_cannot_reach_other_upstream_paths() {
        assert_eq!(
            Endpoint::GenerateContent.upstream_path("gemini-2.5-pro"),
            "/models/gemini-2.5-pro:generateContent"
        );
        assert_eq!(
            Endpoint::GenerateContent.upstream_path("../tunedModels/x#/y"),
            "/models/%2E%2E%2FtunedModels%2Fx%23%2Fy:generateContent"
        );
        assert_eq!(
            Endpoint::StreamGenerateContent.upstream_path(".."),
            "/models/%2E%2E:streamGenerateContent"
        );
    }
}
