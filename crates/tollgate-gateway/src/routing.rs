//! Model → provider routing from the `models:` list: first match wins.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use tollgate_providers::{ChatLimitField, WireFormat};
use wildmatch::WildMatch;

use crate::config::{Config, ProviderConfig};
use crate::error::GatewayError;

/// A configured upstream, with its key resolved from the environment.
pub struct Provider {
    pub name: String,
    pub kind: WireFormat,
    /// Without a trailing slash.
    pub base_url: String,
    pub api_key: Option<String>,
    pub api_key_env: Option<String>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub chat_limit_field: ChatLimitField,
    /// Static headers from config (sensitive: never logged).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// This provider's connection pool (built with its connect timeout).
    pub client: crate::proxy::upstream::HttpClient,
    /// Caller headers forwarded besides the format's allow-list.
    pub forward_headers: Vec<WildMatch>,
    pub allow_betas: Vec<String>,
    /// Per-use tools callers may turn on (globs).
    pub allow_tools: Vec<WildMatch>,
}

impl std::fmt::Debug for Provider {
    // Hand-written so the provider key can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Provider {
    fn from_config(p: &ProviderConfig, env: &dyn Fn(&str) -> Option<String>) -> Provider {
        Provider {
            name: p.name.clone(),
            kind: WireFormat::parse(&p.kind).unwrap_or(WireFormat::OpenAi),
            base_url: p.base_url.trim_end_matches('/').to_string(),
            api_key: p
                .api_key_env
                .as_deref()
                .and_then(env)
                .filter(|k| !k.is_empty()),
            api_key_env: p.api_key_env.clone(),
            connect_timeout: Duration::from_millis(p.connect_timeout_ms),
            client: crate::proxy::upstream::client(Duration::from_millis(p.connect_timeout_ms)),
            timeout: Duration::from_millis(p.timeout_ms),
            stream_idle_timeout: Duration::from_millis(p.stream_idle_timeout_ms),
            chat_limit_field: p
                .chat_limit_field
                .as_deref()
                .and_then(ChatLimitField::parse)
                .unwrap_or_default(),
            // Validated with the config; an invalid pair cannot reach here.
            headers: p
                .headers
                .iter()
                .filter_map(|(n, v)| {
                    let mut v = HeaderValue::from_str(v).ok()?;
                    v.set_sensitive(true);
                    Some((HeaderName::from_bytes(n.as_bytes()).ok()?, v))
                })
                .collect(),
            forward_headers: p
                .forward_headers
                .iter()
                .map(|g| WildMatch::new(&g.to_ascii_lowercase()))
                .collect(),
            allow_betas: p.allow_betas.clone(),
            allow_tools: p.allow_tools.iter().map(|g| WildMatch::new(g)).collect(),
        }
    }
}

struct Rule {
    pattern: String,
    matcher: WildMatch,
    provider: Arc<Provider>,
    upstream_model: Option<String>,
}

/// Where a model goes.
#[derive(Clone, Debug)]
pub struct Route {
    pub provider: Arc<Provider>,
    /// The name sent upstream, priced and recorded as `model_served`.
    pub upstream_model: String,
}

pub struct ModelRouter {
    rules: Vec<Rule>,
    providers: HashMap<String, Arc<Provider>>,
}

impl ModelRouter {
    /// `env` resolves `api_key_env` names (the process environment in production).
    pub fn new(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> ModelRouter {
        let providers: HashMap<String, Arc<Provider>> = config
            .providers
            .iter()
            .map(|p| (p.name.clone(), Arc::new(Provider::from_config(p, env))))
            .collect();
        let rules = config
            .models
            .iter()
            .filter_map(|m| {
                Some(Rule {
                    pattern: m.pattern.clone(),
                    matcher: WildMatch::new(&m.pattern),
                    provider: providers.get(&m.provider)?.clone(),
                    upstream_model: m.upstream_model.clone(),
                })
            })
            .collect();
        ModelRouter { rules, providers }
    }

    pub fn route(&self, model: &str, format: WireFormat) -> Result<Route, GatewayError> {
        let rule = self
            .rules
            .iter()
            .find(|r| r.matcher.matches(model))
            .ok_or_else(|| GatewayError::UnknownModel(model.to_string()))?;
        if rule.provider.kind != format {
            return Err(GatewayError::WrongFormat {
                model: model.to_string(),
                provider: rule.provider.name.clone(),
                kind: rule.provider.kind.as_str(),
                hint: match rule.provider.kind {
                    WireFormat::OpenAi => "/v1/chat/completions",
                    WireFormat::Anthropic => "/v1/messages",
                    WireFormat::Gemini => "/v1beta/models/{model}:generateContent",
                },
            });
        }
        Ok(Route {
            provider: rule.provider.clone(),
            upstream_model: rule
                .upstream_model
                .clone()
                .unwrap_or_else(|| model.to_string()),
        })
    }

    /// Whether `model` has a route (of any format).
    pub fn routes(&self, model: &str) -> Option<&Provider> {
        self.rules
            .iter()
            .find(|r| r.matcher.matches(model))
            .map(|r| r.provider.as_ref())
    }

    /// Model names that are not globs (aliases and exact routes).
    pub fn exact_names(&self) -> impl Iterator<Item = (&str, &Provider)> {
        self.rules
            .iter()
            .filter(|r| !r.pattern.contains(['*', '?']))
            .map(|r| (r.pattern.as_str(), r.provider.as_ref()))
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelRoute;

    fn config() -> Config {
        Config {
            providers: vec![
                ProviderConfig {
                    name: "oai".into(),
                    kind: "openai".into(),
                    base_url: "http://x/v1/".into(),
                    api_key_env: Some("K".into()),
                    connect_timeout_ms: 1,
                    timeout_ms: 1,
                    stream_idle_timeout_ms: 1,
                    ..ProviderConfig::default()
                },
                ProviderConfig {
                    name: "ant".into(),
                    kind: "anthropic".into(),
                    base_url: "http://y".into(),
                    api_key_env: None,
                    connect_timeout_ms: 1,
                    timeout_ms: 1,
                    stream_idle_timeout_ms: 1,
                    ..ProviderConfig::default()
                },
            ],
            models: vec![
                ModelRoute {
                    pattern: "fast".into(),
                    provider: "oai".into(),
                    upstream_model: Some("gpt-4o-mini".into()),
                },
                ModelRoute {
                    pattern: "gpt-*".into(),
                    provider: "oai".into(),
                    upstream_model: None,
                },
                ModelRoute {
                    pattern: "claude-*".into(),
                    provider: "ant".into(),
                    upstream_model: None,
                },
            ],
            ..Config::default()
        }
    }

    #[test]
    fn routes_by_glob_and_alias() {
        let r = ModelRouter::new(&config(), &|_| Some("sk".into()));
        let a = r.route("fast", WireFormat::OpenAi).unwrap();
        assert_eq!(a.upstream_model, "gpt-4o-mini");
        assert_eq!(a.provider.base_url, "http://x/v1");
        assert_eq!(
            r.route("gpt-4o", WireFormat::OpenAi)
                .unwrap()
                .upstream_model,
            "gpt-4o"
        );
        assert!(matches!(
            r.route("llama", WireFormat::OpenAi),
            Err(GatewayError::UnknownModel(_))
        ));
        assert!(matches!(
            r.route("claude-sonnet-4-5", WireFormat::OpenAi),
            Err(GatewayError::WrongFormat { .. })
        ));
    }

    #[test]
    fn provider_key_is_redacted_in_debug() {
        let r = ModelRouter::new(&config(), &|_| Some("sk-secret".into()));
        let p = r.route("gpt-4o", WireFormat::OpenAi).unwrap().provider;
        assert!(!format!("{p:?}").contains("sk-secret"));
    }
}

#[cfg(test)]
mod connect_timeout_tests {
    use super::*;
    use crate::proxy::upstream;

    /// A listener whose accept queue is full: further connects hang (the
    /// kernel drops their SYNs) until the client gives up.
    fn stuck_listener() -> (
        std::net::SocketAddr,
        Vec<std::net::TcpStream>,
        tokio::net::TcpListener,
    ) {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = sock.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
        (addr, held, listener)
    }

    #[tokio::test]
    async fn regression_connect_timeout_ms_is_honoured() {
        let (addr, _held, _listener) = stuck_listener();
        // The overall timeout is far longer than the connect timeout: a
        // client that ignored `connect_timeout_ms` would answer 504 from it.
        let p = Provider::from_config(
            &ProviderConfig {
                name: "stuck".into(),
                kind: "openai".into(),
                base_url: format!("http://{addr}/v1"),
                connect_timeout_ms: 200,
                timeout_ms: 5_000,
                stream_idle_timeout_ms: 5_000,
                ..ProviderConfig::default()
            },
            &|_| None,
        );
        let headers = axum::http::HeaderMap::new();
        let req = upstream::build(upstream::UpstreamRequest {
            provider: &p,
            path: "/chat/completions".into(),
            query: None,
            headers: &headers,
            body: bytes::Bytes::from_static(b"{}"),
            request_id: "r1",
        })
        .unwrap();
        match upstream::send(&p, req).await {
            Err(GatewayError::UpstreamUnreachable { reason, .. }) => {
                assert!(reason.contains("200 ms"), "{reason}")
            }
            Err(e) => panic!("expected a connect timeout, got {e:?}"),
            Ok(_) => panic!("the stuck listener answered"),
        }
    }
}
