//! What travels beside a body, per wire format: where a caller's key is,
//! how a provider is authenticated, which request headers and query
//! parameters may reach a provider, and which `anthropic-beta` values
//! Tollgate can price.

use http::{HeaderMap, HeaderName, HeaderValue};
use wildmatch::WildMatch;

use crate::WireFormat;

/// The key presented, from the caller's native header first, then any other
/// SDK's (clients mix them), then Gemini's `?key=`.
pub fn presented_key<'a>(
    format: WireFormat,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<&'a str> {
    let bearer = || {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let from_query = || query?.split('&').find_map(|kv| kv.strip_prefix("key="));
    let found = match format {
        WireFormat::OpenAi => bearer().or_else(|| header("x-api-key")),
        WireFormat::Anthropic => header("x-api-key").or_else(bearer),
        WireFormat::Gemini => header("x-goog-api-key").or_else(from_query).or_else(bearer),
    };
    found.filter(|k| !k.is_empty())
}

/// How a caller of `format` sends its key (for error messages).
pub fn native_key_header(format: WireFormat) -> &'static str {
    match format {
        WireFormat::OpenAi => "Authorization: Bearer <key>",
        WireFormat::Anthropic => "x-api-key: <key>",
        WireFormat::Gemini => "x-goog-api-key: <key>",
    }
}

/// Request headers a caller may send to a provider: what the providers'
/// APIs define as client-settable, per wire format. Everything else —
/// cookies, forwarding headers, billing headers (`OpenAI-Organization`,
/// `OpenAI-Project`, `x-goog-user-project`: those come only from the
/// provider's config), the caller's Tollgate credentials and Tollgate's
/// own controls — never travels upstream. `extra` are the provider's
/// `forward_headers` globs (e.g. a test provider's knobs).
pub fn is_forwarded_request_header(
    format: WireFormat,
    name: &HeaderName,
    extra: &[WildMatch],
) -> bool {
    let n = name.as_str();
    let common = matches!(
        n,
        "accept" | "user-agent" | "idempotency-key" | "x-client-request-id"
    ) || n.starts_with("x-stainless-");
    let native = match format {
        WireFormat::OpenAi => false,
        WireFormat::Anthropic => matches!(n, "anthropic-version" | "anthropic-beta"),
        WireFormat::Gemini => n == "x-goog-api-client",
    };
    // Credentials and Tollgate's own headers never travel, whatever `extra` says.
    let never = matches!(
        n,
        "authorization" | "x-api-key" | "x-goog-api-key" | "cookie" | "host" | "content-length"
    ) || n.starts_with("x-tollgate-");
    !never && (common || native || extra.iter().any(|g| g.matches(n)))
}

/// `anthropic-beta` values that change nothing Tollgate cannot meter and
/// price. `context-1m-*` (prompts past 200k tokens) is allowed only for
/// models whose price has a long-context tier. Others (code execution
/// billed per container hour, say) are refused unless the provider lists
/// them in `allow_betas`.
const PRICED_ANTHROPIC_BETAS: &[&str] = &[
    "interleaved-thinking-2025-05-14",
    "fine-grained-tool-streaming-2025-05-14",
    "token-efficient-tools-2025-02-19",
    "output-128k-2025-02-19",
    "extended-cache-ttl-2025-04-11",
    "prompt-caching-2024-07-31",
    "files-api-2025-04-14",
    "computer-use-2024-10-22",
    "computer-use-2025-01-24",
    "context-management-2025-06-27",
    "structured-outputs-2025-11-13",
    "effort-2025-11-24",
];

/// Checks the `anthropic-beta` values a caller sends: a beta that could
/// change billing in a way Tollgate does not price is refused (`Err` with
/// the reason), unless `allowed` lists it; `context-1m-*` only when the
/// model's price has a long-context tier.
pub fn check_anthropic_betas(
    headers: &HeaderMap,
    long_context_priced: bool,
    allowed: &[String],
) -> Result<(), String> {
    for v in headers.get_all("anthropic-beta") {
        let s = v.to_str().map_err(|_| "not valid text".to_string())?;
        for beta in s.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            let ok = PRICED_ANTHROPIC_BETAS.contains(&beta)
                || (beta.starts_with("context-1m-") && long_context_priced)
                || allowed.iter().any(|b| b == beta);
            if !ok {
                return Err(format!(
                    "beta {beta:?} is not allowed through this gateway (it may bill what Tollgate does not price; an operator can allow it in providers[].allow_betas)"
                ));
            }
        }
    }
    Ok(())
}

/// A provider key that cannot be sent as a header value.
#[derive(Debug, thiserror::Error)]
#[error("the provider key is not a valid header value")]
pub struct BadProviderKey;

/// The header a provider of `format` is authenticated with, carrying `key`
/// (marked sensitive: never logged).
pub fn provider_auth(
    format: WireFormat,
    key: &str,
) -> Result<(HeaderName, HeaderValue), BadProviderKey> {
    let (name, value) = match format {
        WireFormat::OpenAi => (
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| BadProviderKey)?,
        ),
        WireFormat::Anthropic => (
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_str(key).map_err(|_| BadProviderKey)?,
        ),
        WireFormat::Gemini => (
            HeaderName::from_static("x-goog-api-key"),
            HeaderValue::from_str(key).map_err(|_| BadProviderKey)?,
        ),
    };
    let mut value = value;
    value.set_sensitive(true);
    Ok((name, value))
}

/// Headers a provider of `format` requires that a caller may leave out:
/// Anthropic's API version.
pub fn provider_defaults(format: WireFormat) -> &'static [(&'static str, &'static str)] {
    match format {
        WireFormat::Anthropic => &[("anthropic-version", "2023-06-01")],
        WireFormat::OpenAi | WireFormat::Gemini => &[],
    }
}

/// The query parameters a caller may send upstream, per wire format:
/// Gemini's `alt` (`sse` or `json`, the first one: the meter reads the
/// same), Anthropic's
/// `beta`, and `api-version` for Azure-style OpenAI-compatible upstreams.
/// Nothing else — a Tollgate `key=` above all — is forwarded.
pub fn forwarded_query(format: WireFormat, query: Option<&str>) -> Option<String> {
    let allowed: &[&str] = match format {
        WireFormat::Gemini => &["alt"],
        WireFormat::Anthropic => &["beta"],
        WireFormat::OpenAi => &["api-version"],
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut out: Vec<&str> = Vec::new();
    for kv in query?.split('&') {
        let k = kv.split_once('=').map_or(kv, |(k, _)| k);
        // Gemini answers `alt=proto` in binary protobuf, which no meter
        // reads: only the SSE and JSON framings travel.
        if k == "alt" && !matches!(kv, "alt=sse" | "alt=json") {
            continue;
        }
        if allowed.contains(&k) && !seen.contains(&k) {
            seen.push(k);
            out.push(kv);
        }
    }
    (!out.is_empty()).then(|| out.join("&"))
}

/// The model list of `GET /v1/models` in `format`'s shape: OpenAI's
/// (`{"object":"list","data":[{"id","object","created","owned_by"}]}`) or
/// Anthropic's (`{"data":[{"type","id","display_name","created_at"}],
/// "has_more","first_id","last_id"}`). `models`: (model, provider), sorted.
pub fn model_list(format: WireFormat, models: &[(String, String)]) -> serde_json::Value {
    use serde_json::json;
    match format {
        WireFormat::Anthropic => {
            let data: Vec<_> = models
                .iter()
                .map(|(m, _)| json!({"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}))
                .collect();
            json!({
                "data": data,
                "has_more": false,
                "first_id": models.first().map(|n| &n.0),
                "last_id": models.last().map(|n| &n.0),
            })
        }
        _ => {
            let data: Vec<_> = models
                .iter()
                .map(|(m, p)| json!({"id": m, "object": "model", "created": 0, "owned_by": p}))
                .collect();
            json!({"object": "list", "data": data})
        }
    }
}

/// Whether the upstream is asked for SSE framing: Gemini streams as a JSON
/// array unless `alt=sse` travels (the forwarded query); other formats
/// always stream SSE.
pub fn streams_sse(format: WireFormat, forwarded_query: Option<&str>) -> bool {
    format != WireFormat::Gemini
        || forwarded_query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tollgate_key_never_travels_upstream() {
        assert_eq!(
            forwarded_query(WireFormat::Gemini, Some("alt=sse&key=tg-x")),
            Some("alt=sse".into())
        );
        assert_eq!(forwarded_query(WireFormat::Gemini, Some("key=tg-x")), None);
        // The first `alt` is the one the meter and the upstream both see.
        assert_eq!(
            forwarded_query(WireFormat::Gemini, Some("alt=sse&alt=json&$fields=x")),
            Some("alt=sse".into())
        );
        // A framing no meter reads, and field masks that drop usage, never travel.
        assert_eq!(
            forwarded_query(
                WireFormat::Gemini,
                Some("alt=proto&fields=candidates&$alt=proto")
            ),
            None
        );
        let h = |n: &'static str| HeaderName::from_static(n);
        for f in [
            WireFormat::OpenAi,
            WireFormat::Anthropic,
            WireFormat::Gemini,
        ] {
            for n in [
                "authorization",
                "x-api-key",
                "x-goog-api-key",
                "x-tollgate-user",
            ] {
                assert!(!is_forwarded_request_header(
                    f,
                    &h(n),
                    &[WildMatch::new("*")]
                ));
            }
        }
    }

    #[test]
    fn regression_billing_and_forwarding_headers_never_reach_a_provider() {
        let h = |n: &'static str| HeaderName::from_static(n);
        for n in [
            "openai-organization",
            "openai-project",
            "cookie",
            "x-forwarded-for",
            "forwarded",
            "x-real-ip",
            "x-goog-user-project",
            "x-goog-fieldmask",
            "x-mock-output-tokens",
        ] {
            for f in [
                WireFormat::OpenAi,
                WireFormat::Anthropic,
                WireFormat::Gemini,
            ] {
                assert!(!is_forwarded_request_header(f, &h(n), &[]), "{n} {f:?}");
            }
        }
        assert!(is_forwarded_request_header(
            WireFormat::Anthropic,
            &h("anthropic-version"),
            &[]
        ));
        assert!(!is_forwarded_request_header(
            WireFormat::OpenAi,
            &h("anthropic-version"),
            &[]
        ));
        assert!(is_forwarded_request_header(
            WireFormat::OpenAi,
            &h("x-mock-output-tokens"),
            &[WildMatch::new("x-mock-*")]
        ));
    }

    #[test]
    fn key_found_in_each_sdk_header() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer tg-a".parse().unwrap());
        assert_eq!(presented_key(WireFormat::OpenAi, &h, None), Some("tg-a"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "tg-b".parse().unwrap());
        assert_eq!(presented_key(WireFormat::Anthropic, &h, None), Some("tg-b"));
        let h = HeaderMap::new();
        assert_eq!(
            presented_key(WireFormat::Gemini, &h, Some("alt=sse&key=tg-c")),
            Some("tg-c")
        );
        assert_eq!(presented_key(WireFormat::OpenAi, &h, None), None);
    }
}
