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
use tollgate_providers::{WireFormat, headers};

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
    let long_context_priced = price.is_some_and(|p| p.long_context.is_some());
    headers::check_anthropic_betas(headers, long_context_priced, &provider.allow_betas).map_err(
        |reason| GatewayError::HeaderNotAllowed {
            name: "anthropic-beta".into(),
            reason,
        },
    )
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
    let out = b
        .headers_mut()
        .ok_or_else(|| GatewayError::Internal(format!("bad upstream uri {uri:?}")))?;
    for (name, value) in req.headers {
        if headers::is_forwarded_request_header(p.kind, name, &p.forward_headers) {
            out.append(name.clone(), value.clone());
        }
    }
    // Static headers from the provider's config (organization, project).
    for (name, value) in &p.headers {
        out.insert(name.clone(), value.clone());
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out.insert(
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
        let (name, value) = headers::provider_auth(p.kind, key).map_err(|_| {
            GatewayError::Internal(format!(
                "provider {:?} key is not a valid header value",
                p.name
            ))
        })?;
        out.insert(name, value);
    }
    for (name, value) in headers::provider_defaults(p.kind) {
        if !out.contains_key(*name) {
            out.insert(*name, HeaderValue::from_static(value));
        }
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
