//! The upstream HTTP client: pooled keep-alive connections (HTTP/1.1, and
//! HTTP/2 where TLS negotiates it), provider auth, and header hygiene.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate_providers::WireFormat;
use wildmatch::WildMatch;

use crate::error::GatewayError;
use crate::routing::Provider;

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled client whose TCP connects give up after `connect_timeout`
/// (one per provider: each has its own `connect_timeout_ms`).
pub fn client(connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .unwrap_or_else(|_| {
            // Only fails if the provider supports no TLS versions; ring supports both.
            unreachable!("ring supports TLS 1.2 and 1.3")
        })
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(https)
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

/// Checks the caller's headers before anything is reserved: an
/// `anthropic-beta` value that could change billing in a way Tollgate does
/// not price is refused (400) instead of forwarded.
pub fn check_request_headers(
    provider: &Provider,
    headers: &HeaderMap,
    price: Option<&tollgate_core::ModelPrice>,
) -> Result<(), GatewayError> {
    if provider.kind != WireFormat::Anthropic {
        return Ok(());
    }
    for v in headers.get_all("anthropic-beta") {
        let s = v.to_str().map_err(|_| GatewayError::HeaderNotAllowed {
            name: "anthropic-beta".into(),
            reason: "not valid text".into(),
        })?;
        for beta in s.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            let long_context_priced = price.is_some_and(|p| p.long_context.is_some());
            let ok = PRICED_ANTHROPIC_BETAS.contains(&beta)
                || (beta.starts_with("context-1m-") && long_context_priced)
                || provider.allow_betas.iter().any(|b| b == beta);
            if !ok {
                return Err(GatewayError::HeaderNotAllowed {
                    name: "anthropic-beta".into(),
                    reason: format!(
                        "beta {beta:?} is not allowed through this gateway (it may bill what Tollgate does not price; an operator can allow it in providers[].allow_betas)"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Response headers not passed back: hop-by-hop ones, and the length when
/// the body may be changed in flight.
pub fn is_stripped_response_header(name: &HeaderName, streaming: bool) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    ) || (streaming && name == header::CONTENT_LENGTH)
}

/// The response's `content-encoding` unless it is `identity` (or absent).
/// Tollgate asks for none (`accept-encoding` is never forwarded), but an
/// upstream may compress anyway.
pub fn content_encoding(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(header::CONTENT_ENCODING)?
        .to_str()
        .unwrap_or("unreadable");
    let v = v.trim();
    (!v.is_empty() && !v.eq_ignore_ascii_case("identity")).then_some(v)
}

/// Decompresses a whole body for metering, holding at most `limit` bytes:
/// gzip and deflate; anything else is refused (it cannot be metered).
pub fn decompress(encoding: &str, body: &[u8], limit: usize) -> Result<Bytes, String> {
    use std::io::Read;
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let read = match encoding.to_ascii_lowercase().as_str() {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(body)
            .take(cap)
            .read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(body)
            .take(cap)
            .read_to_end(&mut out),
        other => {
            return Err(format!(
                "answered with content-encoding {other:?}, which Tollgate cannot meter"
            ));
        }
    };
    read.map_err(|e| format!("answered with a corrupt {encoding} body: {e}"))?;
    if out.len() > limit {
        return Err(format!(
            "answered with a {encoding} body larger than {limit} bytes once decompressed"
        ));
    }
    Ok(Bytes::from(out))
}

pub struct UpstreamRequest<'a> {
    pub provider: &'a Provider,
    pub path: String,
    /// The caller's query string, `key=` removed.
    pub query: Option<String>,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    pub request_id: &'a str,
}

pub fn build(req: UpstreamRequest<'_>) -> Result<Request<Full<Bytes>>, GatewayError> {
    let p = req.provider;
    let mut uri = format!("{}{}", p.base_url, req.path);
    if let Some(q) = req.query.filter(|q| !q.is_empty()) {
        uri.push('?');
        uri.push_str(&q);
    }
    let mut b = Request::builder().method(Method::POST).uri(&uri);
    let headers = b
        .headers_mut()
        .ok_or_else(|| GatewayError::Internal(format!("bad upstream uri {uri:?}")))?;
    for (name, value) in req.headers {
        if is_forwarded_request_header(p.kind, name, &p.forward_headers) {
            headers.append(name.clone(), value.clone());
        }
    }
    // Static headers from the provider's config (organization, project).
    for (name, value) in &p.headers {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-tollgate-request-id",
        HeaderValue::from_str(req.request_id).map_err(|e| GatewayError::Internal(e.to_string()))?,
    );
    let key = match (&p.api_key, &p.api_key_env) {
        (Some(k), _) => Some(k.as_str()),
        (None, Some(var)) => {
            return Err(GatewayError::ProviderKeyMissing {
                provider: p.name.clone(),
                var: var.clone(),
            });
        }
        (None, None) => None,
    };
    if let Some(key) = key {
        let bad = |_| {
            GatewayError::Internal(format!(
                "provider {:?} key is not a valid header value",
                p.name
            ))
        };
        match p.kind {
            WireFormat::OpenAi => {
                let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(bad)?;
                v.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, v);
            }
            WireFormat::Anthropic => {
                let mut v = HeaderValue::from_str(key).map_err(bad)?;
                v.set_sensitive(true);
                headers.insert("x-api-key", v);
            }
            WireFormat::Gemini => {
                let mut v = HeaderValue::from_str(key).map_err(bad)?;
                v.set_sensitive(true);
                headers.insert("x-goog-api-key", v);
            }
        }
    }
    if p.kind == WireFormat::Anthropic && !headers.contains_key("anthropic-version") {
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }
    b.body(Full::new(req.body))
        .map_err(|e| GatewayError::Internal(format!("building upstream request: {e}")))
}

/// Sends the request; errors become native 502/504.
pub async fn send(
    provider: &Provider,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, GatewayError> {
    match tokio::time::timeout(provider.timeout, provider.client.request(req)).await {
        Err(_) => Err(GatewayError::UpstreamTimeout {
            provider: provider.name.clone(),
            ms: provider.timeout.as_millis() as u64,
        }),
        Ok(Err(e)) => {
            // Walk to the root cause: "connection refused" beats "client error (Connect)".
            let mut reason = e.to_string();
            let mut timed_out = false;
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                reason = s.to_string();
                timed_out |= s
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
                src = s.source();
            }
            if e.is_connect() && timed_out {
                reason = format!(
                    "no connection within {} ms (connect_timeout_ms)",
                    provider.connect_timeout.as_millis()
                );
            }
            Err(GatewayError::UpstreamUnreachable {
                provider: provider.name.clone(),
                reason,
            })
        }
        Ok(Ok(resp)) => Ok(resp),
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
}
