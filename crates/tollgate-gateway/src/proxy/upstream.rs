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

use crate::error::GatewayError;
use crate::routing::Provider;

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
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

/// Request headers never forwarded: hop-by-hop, the caller's Tollgate
/// credentials, Tollgate's own controls, and `accept-encoding` (the meter
/// reads the body, so it must arrive uncompressed).
fn is_stripped_request_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "authorization"
            | "x-api-key"
            | "x-goog-api-key"
            | "connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "accept-encoding"
            | "cookie"
            | "x-session-id"
            | "x-budget-id"
    ) || name.as_str().starts_with("x-tollgate-")
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
        if !is_stripped_request_header(name) {
            headers.append(name.clone(), value.clone());
        }
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
    client: &HttpClient,
    provider: &Provider,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, GatewayError> {
    match tokio::time::timeout(provider.timeout, client.request(req)).await {
        Err(_) => Err(GatewayError::UpstreamTimeout {
            provider: provider.name.clone(),
            ms: provider.timeout.as_millis() as u64,
        }),
        Ok(Err(e)) => {
            // Walk to the root cause: "connection refused" beats "client error (Connect)".
            let mut reason = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                reason = s.to_string();
                src = s.source();
            }
            Err(GatewayError::UpstreamUnreachable {
                provider: provider.name.clone(),
                reason,
            })
        }
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// The caller's query string minus `key=` (a Tollgate key must not travel upstream).
pub fn forwarded_query(query: Option<&str>) -> Option<String> {
    let q: Vec<&str> = query?
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("key="))
        .collect();
    (!q.is_empty()).then(|| q.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tollgate_key_never_travels_upstream() {
        assert_eq!(
            forwarded_query(Some("alt=sse&key=tg-x")),
            Some("alt=sse".into())
        );
        assert_eq!(forwarded_query(Some("key=tg-x")), None);
        assert!(is_stripped_request_header(&HeaderName::from_static(
            "authorization"
        )));
        assert!(is_stripped_request_header(&HeaderName::from_static(
            "x-tollgate-user"
        )));
        assert!(!is_stripped_request_header(&HeaderName::from_static(
            "anthropic-beta"
        )));
    }
}
