//! The configuration schema (`tollgate.yaml`) and its validation.
//!
//! Loading (file, `${ENV}` interpolation, `TOLLGATE_*` overrides) is the
//! binary's job; this module owns the shape and what makes it valid, with
//! errors that name the field and the bad value.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tollgate_core::budget::{Budget, BudgetError, BudgetInput, Scope, Tier};
use tollgate_core::pricing::{Fallback, ModelPrice};
use tollgate_core::rate::{RateLimit, RateLimitInput};
use tollgate_providers::WireFormat;

fn default_listen() -> String {
    "127.0.0.1:4747".into()
}
fn default_database() -> String {
    "sqlite://tollgate.db".into()
}
fn default_true() -> bool {
    true
}
fn default_max_body() -> usize {
    32 << 20
}
fn default_max_upstream_body() -> usize {
    16 << 20
}
fn default_shutdown_grace() -> u64 {
    30
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_database")]
    pub database: String,
    /// Cluster mode's shared ledger (not available in this version: refused).
    #[serde(default)]
    pub redis: Option<String>,
    #[serde(default)]
    pub admin_keys: Vec<String>,
    /// `false` only for local setups: every request is anonymous and allowed.
    #[serde(default = "default_true")]
    pub require_auth: bool,
    /// Largest request body accepted, in bytes (413 above it).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest non-streaming upstream answer held in memory for metering
    /// (decompressed); a larger one is a 502, charged its worst case.
    #[serde(default = "default_max_upstream_body")]
    pub max_upstream_body_bytes: usize,
    /// On SIGTERM, how long requests and streams may still finish before
    /// open streams are ended (charged for what passed).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_seconds: u64,
    /// Limits on client connections (timeouts, how many at once).
    #[serde(default)]
    pub connections: crate::server::ConnectionLimits,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub models: Vec<ModelRoute>,
    #[serde(default)]
    pub pricing: PricingConfig,
    #[serde(default)]
    pub budgets: BudgetsConfig,
    /// Requests and tokens per minute, per key / user / tenant / global.
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    /// JWT callers, besides virtual keys.
    #[serde(default)]
    pub jwt: Option<crate::jwt::JwtConfig>,
    /// Trust `X-Tollgate-*` identity headers from every key, not only keys
    /// marked trusted (never do this on a gateway clients reach directly).
    #[serde(default)]
    pub trust_all_identity_headers: bool,
    /// Alert targets, the hosts they may be on, delivery settings.
    #[serde(default)]
    pub alerts: tollgate_alerts::AlertsConfig,
    /// How long raw usage records are kept (rollups are kept).
    #[serde(default)]
    pub retention: crate::retention::RetentionConfig,
    /// Where `/metrics` is served besides the main listener.
    #[serde(default)]
    pub metrics: crate::metrics::MetricsConfig,
    /// The Cycles API: tool costs.
    #[serde(default)]
    pub cycles: tollgate_cycles::CyclesConfig,
}

fn default_min_output() -> u64 {
    16
}
fn default_max_output() -> u64 {
    4096
}

/// `budgets:` — declarative budgets and how reservations size
/// requests.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// A budget over all traffic.
    #[serde(default)]
    pub global: Option<BudgetInput>,
    /// Per scope (`user`, `session`, `tenant`, `key`): every subject gets its
    /// own. One budget or a list (a daily and a monthly one, say).
    #[serde(default)]
    pub defaults: BTreeMap<String, OneOrMany>,
    /// Per role: every user with the role gets its own (scope `user` unless
    /// set). One budget or a list.
    #[serde(default)]
    pub roles: BTreeMap<String, OneOrMany>,
    /// Budgets for one subject (`{scope: user, subject: alice, ...}`).
    #[serde(default)]
    pub overrides: Vec<BudgetInput>,
    /// A request capped to what its budgets afford keeps at least this many
    /// output tokens, or is refused.
    #[serde(default = "default_min_output")]
    pub min_output_tokens: u64,
    /// Output reserved for a request that names no limit (and set as its
    /// limit, so the reservation holds).
    #[serde(default = "default_max_output")]
    pub default_max_output_tokens: u64,
    /// Input tokens reserved once for a request carrying input only the
    /// provider can size (a previous response, cached content, files,
    /// audio, video). Absent: the model's context window from the catalog.
    #[serde(default)]
    pub unknown_input_tokens: Option<u64>,
    /// A usage footer (a template over the tightest applicable budget)
    /// for answers whose budgets have none of their own; off by default.
    #[serde(default)]
    pub footer: Option<String>,
    /// How streams are reserved: their worst case up front (default), or
    /// a first slice topped up while output arrives.
    #[serde(default)]
    pub streaming: StreamingConfig,
    /// A proxied request whose hold the ledger cannot make durable (the
    /// reservation log cannot be written): refused with 503 (`closed`,
    /// the default), or forwarded with the hold in memory only (`open`).
    #[serde(default)]
    pub fail: tollgate_budgets::FailPolicy,
}

/// `budgets.streaming`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StreamingConfig {
    #[serde(default)]
    pub mode: StreamingMode,
    /// Output tokens (per choice) a stream reserves before it starts.
    #[serde(default = "default_slice")]
    pub first_slice_tokens: u64,
    /// Output tokens (per choice) each top-up adds, half a slice ahead of
    /// what the provider has produced.
    #[serde(default = "default_slice")]
    pub slice_tokens: u64,
}

fn default_slice() -> u64 {
    256
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            mode: StreamingMode::WorstCase,
            first_slice_tokens: default_slice(),
            slice_tokens: default_slice(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StreamingMode {
    /// A stream reserves its whole output limit up front.
    #[default]
    WorstCase,
    /// A stream reserves a first slice and is topped up; ended cleanly
    /// when a budget cannot fund the next slice.
    Topup,
}

/// `rate_limits:` — per scope, a default for every subject and overrides
/// for one.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Per scope (`global`, `tenant`, `user`, `key`).
    #[serde(default)]
    pub defaults: BTreeMap<String, RateLimitInput>,
    /// For one subject (`{scope: user, subject: alice, ...}`).
    #[serde(default)]
    pub overrides: Vec<RateLimitInput>,
}

impl RateLimitsConfig {
    /// The declared limits, validated, with stable ids (`rate:default:key`,
    /// `rate:override:N` unless given).
    pub fn limits(&self) -> Result<Vec<RateLimit>, Vec<ConfigError>> {
        let mut out = Vec::new();
        let mut errs = Vec::new();
        for (scope, input) in &self.defaults {
            let path = format!("rate_limits.defaults.{scope}");
            match scope.parse::<Scope>() {
                Ok(sc) => {
                    let id = input
                        .id
                        .clone()
                        .unwrap_or_else(|| format!("rate:default:{scope}"));
                    match RateLimit::from_input(id, input, Some(sc), sc != Scope::Global) {
                        Ok(l) => out.push(l),
                        Err(e) => {
                            errs.push(ConfigError::field(format!("{path}.{}", e.field), e.message))
                        }
                    }
                }
                Err(e) => errs.push(ConfigError::field(path, e.message)),
            }
        }
        for (i, input) in self.overrides.iter().enumerate() {
            let id = input
                .id
                .clone()
                .unwrap_or_else(|| format!("rate:override:{i}"));
            match RateLimit::from_input(id, input, None, false) {
                Ok(l) => out.push(l),
                Err(e) => errs.push(ConfigError::field(
                    format!("rate_limits.overrides[{i}].{}", e.field),
                    e.message,
                )),
            }
        }
        let mut seen = HashSet::new();
        for l in &out {
            if !seen.insert(l.id.as_str()) {
                errs.push(ConfigError::field(
                    "rate_limits",
                    format!("two rate limits with id {:?}", l.id),
                ));
            }
        }
        if errs.is_empty() { Ok(out) } else { Err(errs) }
    }
}

/// One budget, or several for the same scope or role.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(Box<BudgetInput>),
    Many(Vec<BudgetInput>),
}

impl OneOrMany {
    /// Each budget with its id and config path: `{base}` for one budget,
    /// `{base}:{i}` for the i-th of a list, unless the budget names its id.
    fn each<'a>(
        &'a self,
        base: &'a str,
        path: &'a str,
    ) -> Box<dyn Iterator<Item = (String, String, &'a BudgetInput)> + 'a> {
        match self {
            OneOrMany::One(b) => Box::new(std::iter::once((
                b.id.clone().unwrap_or_else(|| base.to_string()),
                path.to_string(),
                &**b,
            ))),
            OneOrMany::Many(v) => Box::new(v.iter().enumerate().map(move |(i, b)| {
                (
                    b.id.clone().unwrap_or_else(|| format!("{base}:{i}")),
                    format!("{path}[{i}]"),
                    b,
                )
            })),
        }
    }
}

// By hand rather than `untagged`, so a mistake inside a budget is reported
// as itself ("unknown field `limit_usdd`"), not as "did not match any variant".
impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a budget or a list of budgets")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<OneOrMany, A::Error> {
                BudgetInput::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(|b| OneOrMany::One(Box::new(b)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, s: A) -> Result<OneOrMany, A::Error> {
                Vec::<BudgetInput>::deserialize(serde::de::value::SeqAccessDeserializer::new(s))
                    .map(OneOrMany::Many)
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        BudgetsConfig {
            global: None,
            defaults: BTreeMap::new(),
            roles: BTreeMap::new(),
            overrides: Vec::new(),
            min_output_tokens: default_min_output(),
            default_max_output_tokens: default_max_output(),
            unknown_input_tokens: None,
            footer: None,
            streaming: StreamingConfig::default(),
            fail: Default::default(),
        }
    }
}

impl BudgetsConfig {
    /// How requests are sized when they reserve.
    pub fn sizing(&self) -> tollgate_budgets::SizingConfig {
        tollgate_budgets::SizingConfig {
            min_output_tokens: self.min_output_tokens,
            default_max_output_tokens: self.default_max_output_tokens,
            unknown_input_tokens: self.unknown_input_tokens,
            fail: self.fail,
        }
    }

    /// The declared budgets, validated, with stable ids (`global`,
    /// `default:user`, `role:viewer`, `override:N` unless given).
    pub fn budgets(&self) -> Result<Vec<Budget>, Vec<ConfigError>> {
        let mut results: Vec<(Result<Budget, BudgetError>, String)> = Vec::new();
        let mut errs = Vec::new();
        let mut push = |r: Result<Budget, BudgetError>, path: String| results.push((r, path));
        if let Some(g) = &self.global {
            push(
                Budget::from_input("global".into(), g, Tier::Override, Some(Scope::Global)),
                "budgets.global".into(),
            );
        }
        for (scope, inputs) in &self.defaults {
            let path = format!("budgets.defaults.{scope}");
            match scope.parse::<Scope>() {
                Ok(Scope::Global) => errs.push(ConfigError::field(
                    path,
                    "the global budget goes under budgets.global",
                )),
                Ok(sc) => {
                    let base = format!("default:{scope}");
                    for (id, path, input) in inputs.each(&base, &path) {
                        push(Budget::from_input(id, input, Tier::Default, Some(sc)), path);
                    }
                }
                Err(e) => errs.push(ConfigError::field(path, e.message)),
            }
        }
        for (role, inputs) in &self.roles {
            let base = format!("role:{role}");
            let role_path = format!("budgets.roles.{role}");
            for (id, path, input) in inputs.each(&base, &role_path) {
                let scope = match input.scope.as_deref().map(str::parse::<Scope>).transpose() {
                    Ok(s) => s.unwrap_or(Scope::User),
                    Err(e) => {
                        errs.push(ConfigError::field(format!("{path}.scope"), e.message));
                        continue;
                    }
                };
                push(
                    Budget::from_input(id, input, Tier::Role(role.clone()), Some(scope)),
                    path,
                );
            }
        }
        for (i, input) in self.overrides.iter().enumerate() {
            let id = input.id.clone().unwrap_or_else(|| format!("override:{i}"));
            push(
                Budget::from_input(id, input, Tier::Override, None),
                format!("budgets.overrides[{i}]"),
            );
        }
        let mut out = Vec::new();
        for (r, path) in results {
            match r {
                Ok(b) => out.push(b),
                Err(e) => errs.push(ConfigError::field(format!("{path}.{}", e.field), e.message)),
            }
        }
        let mut seen = std::collections::HashSet::new();
        for b in &out {
            if !seen.insert(b.id.clone()) {
                errs.push(ConfigError::field(
                    "budgets",
                    format!("duplicate budget id {:?}", b.id),
                ));
            }
        }
        if errs.is_empty() { Ok(out) } else { Err(errs) }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: String,
    pub base_url: String,
    /// Environment variable holding the provider key; never logged.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Time allowed until the upstream's response headers.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Longest silence allowed between two chunks of a stream.
    #[serde(default = "default_idle")]
    pub stream_idle_timeout_ms: u64,
    /// OpenAI-compatible chat: the field(s) the upstream reads the output
    /// limit from (`max_completion_tokens`, `max_tokens` or `both`).
    #[serde(default)]
    pub chat_limit_field: Option<String>,
    /// Headers sent on every request to this provider (`OpenAI-Organization`,
    /// `OpenAI-Project`, ...): billing headers come from here, never from callers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Caller headers forwarded besides the format's allow-list (names or
    /// globs, e.g. a test provider's `x-mock-*` knobs).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// `anthropic-beta` values allowed besides those Tollgate prices.
    #[serde(default)]
    pub allow_betas: Vec<String>,
    /// Tools billed per use (hosted web search, code execution, ...) that
    /// callers may turn on, names or globs; their fees are not budgeted.
    #[serde(default)]
    pub allow_tools: Vec<String>,
}

impl Default for ProviderConfig {
    /// Empty name, kind and URL (which validation refuses), default timeouts.
    fn default() -> Self {
        ProviderConfig {
            name: String::new(),
            kind: String::new(),
            base_url: String::new(),
            api_key_env: None,
            connect_timeout_ms: default_connect_timeout(),
            timeout_ms: default_timeout(),
            stream_idle_timeout_ms: default_idle(),
            chat_limit_field: None,
            headers: BTreeMap::new(),
            forward_headers: Vec::new(),
            allow_betas: Vec::new(),
            allow_tools: Vec::new(),
        }
    }
}

fn default_connect_timeout() -> u64 {
    10_000
}
fn default_timeout() -> u64 {
    600_000
}
fn default_idle() -> u64 {
    300_000
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    /// A model name or glob (`gpt-*`).
    #[serde(rename = "match")]
    pub pattern: String,
    pub provider: String,
    /// The name sent upstream (an alias's target); defaults to the name asked.
    #[serde(default, alias = "upstream")]
    pub upstream_model: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    /// Absent means strict.
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
    #[serde(default)]
    pub models: Vec<PriceOverride>,
}

/// `strict` or a price for models without one.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum FallbackConfig {
    Named(String),
    Price(ModelPrice),
}

impl FallbackConfig {
    pub fn to_fallback(&self) -> Result<Fallback, ConfigError> {
        match self {
            FallbackConfig::Named(s) if s == "strict" => Ok(Fallback::Strict),
            FallbackConfig::Named(s) => Err(ConfigError::field(
                "pricing.fallback",
                format!("expected \"strict\" or a price, got {s:?}"),
            )),
            FallbackConfig::Price(p) => Ok(Fallback::Price(p.clone())),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PriceOverride {
    pub model: String,
    #[serde(flatten)]
    pub price: ModelPrice,
}

/// A configuration error that names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Checks everything that can be checked without I/O; the first
    /// problems are all reported, not just the first one.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        match self.alerts.validate() {
            Err(e) => {
                let (field, message) = e.split_once(": ").unwrap_or(("alerts", e.as_str()));
                errs.push(ConfigError::field(field, message));
            }
            Ok(allow) => {
                // A budget's own alert target is on the allow-list too.
                for b in self.budgets.budgets().unwrap_or_default() {
                    if let Some(url) = &b.webhook_url
                        && let Err(m) = allow.check_url(url)
                    {
                        errs.push(ConfigError::field(
                            format!("budgets ({}).webhook_url", b.id),
                            m,
                        ));
                    }
                }
            }
        }
        if let Err((field, m)) = self.metrics.validate() {
            errs.push(ConfigError::field(field, m));
        }
        if let Err((field, m)) = self.cycles.validate() {
            errs.push(ConfigError::field(field, m));
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            errs.push(ConfigError::field(
                "listen",
                format!(
                    "expected HOST:PORT with an IP address, got {:?}",
                    self.listen
                ),
            ));
        }
        if !(self.database.starts_with("sqlite:")) {
            errs.push(ConfigError::field(
                "database",
                format!(
                    "unsupported database {:?}: this version stores to sqlite://PATH only (PostgreSQL is not supported)",
                    self.database
                ),
            ));
        }
        if self.redis.is_some() {
            errs.push(ConfigError::field(
                "redis",
                "cluster mode (PostgreSQL + Redis) is not available in this version; remove `redis:`",
            ));
        }
        if let Err(e) = self.budgets.budgets() {
            errs.extend(e);
        }
        if let Err(e) = self.rate_limits.limits() {
            errs.extend(e);
        }
        if let Some(Err(e)) = self
            .budgets
            .footer
            .as_deref()
            .map(tollgate_core::template::Template::parse)
        {
            errs.push(ConfigError::field("budgets.footer", e.to_string()));
        }
        let s = self.budgets.streaming;
        for (field, v) in [
            ("budgets.streaming.first_slice_tokens", s.first_slice_tokens),
            ("budgets.streaming.slice_tokens", s.slice_tokens),
        ] {
            if !(16..=1_000_000).contains(&v) {
                errs.push(ConfigError::field(field, "must be 16..=1000000"));
            }
        }
        if let Some(Err(e)) = self.jwt.as_ref().map(crate::jwt::JwtVerifier::from_config) {
            errs.extend(e);
        }
        for (i, k) in self.admin_keys.iter().enumerate() {
            if k.trim().is_empty() {
                errs.push(ConfigError::field(
                    format!("admin_keys[{i}]"),
                    "empty admin key (is the environment variable it names set?)",
                ));
            } else if k.len() < 16 {
                errs.push(ConfigError::field(
                    format!("admin_keys[{i}]"),
                    "admin keys must be at least 16 characters",
                ));
            }
        }
        let c = &self.connections;
        for (name, v) in [
            ("connections.max", c.max as u64),
            (
                "connections.header_read_timeout_ms",
                c.header_read_timeout_ms,
            ),
            ("connections.idle_timeout_ms", c.idle_timeout_ms),
            ("connections.body_timeout_ms", c.body_timeout_ms),
            (
                "connections.body_min_bytes_per_sec",
                c.body_min_bytes_per_sec,
            ),
        ] {
            if v == 0 {
                errs.push(ConfigError::field(name, "must be greater than 0"));
            }
        }
        if self.max_upstream_body_bytes == 0 {
            errs.push(ConfigError::field(
                "max_upstream_body_bytes",
                "must be greater than 0",
            ));
        }
        if self.max_body_bytes == 0 {
            errs.push(ConfigError::field(
                "max_body_bytes",
                "must be greater than 0",
            ));
        }
        let mut names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let f = |n: &str| format!("providers[{i}].{n}");
            if p.name.is_empty() {
                errs.push(ConfigError::field(f("name"), "must not be empty"));
            }
            if !names.insert(p.name.as_str()) {
                errs.push(ConfigError::field(
                    f("name"),
                    format!("duplicate provider {:?}", p.name),
                ));
            }
            if WireFormat::parse(&p.kind).is_none() {
                errs.push(ConfigError::field(
                    f("kind"),
                    format!(
                        "unknown kind {:?} (expected openai, anthropic or gemini)",
                        p.kind
                    ),
                ));
            }
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://"))
                || p.base_url.parse::<http::Uri>().is_err()
            {
                errs.push(ConfigError::field(
                    f("base_url"),
                    format!("expected an http(s) URL, got {:?}", p.base_url),
                ));
            }
            if let Some(c) = &p.chat_limit_field
                && tollgate_providers::ChatLimitField::parse(c).is_none()
            {
                errs.push(ConfigError::field(
                    f("chat_limit_field"),
                    format!(
                        "unknown field {c:?} (expected max_completion_tokens, max_tokens or both)"
                    ),
                ));
            }
            for (name, value) in &p.headers {
                let lower = name.to_ascii_lowercase();
                if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || http::HeaderValue::from_str(value).is_err()
                {
                    errs.push(ConfigError::field(
                        f(&format!("headers.{name}")),
                        "not a valid header name and value",
                    ));
                } else if matches!(
                    lower.as_str(),
                    "authorization" | "x-api-key" | "x-goog-api-key" | "host" | "content-length"
                ) {
                    errs.push(ConfigError::field(
                        f(&format!("headers.{name}")),
                        "set by Tollgate itself (the provider key comes from api_key_env)",
                    ));
                }
            }
            if p.timeout_ms == 0 || p.connect_timeout_ms == 0 || p.stream_idle_timeout_ms == 0 {
                errs.push(ConfigError::field(
                    f("timeout_ms"),
                    "timeouts must be greater than 0",
                ));
            }
        }
        for (i, m) in self.models.iter().enumerate() {
            if m.pattern.is_empty() {
                errs.push(ConfigError::field(
                    format!("models[{i}].match"),
                    "must not be empty",
                ));
            }
            if !names.contains(m.provider.as_str()) {
                errs.push(ConfigError::field(
                    format!("models[{i}].provider"),
                    format!("no provider named {:?} under providers:", m.provider),
                ));
            }
        }
        if let Some(Err(e)) = self
            .pricing
            .fallback
            .as_ref()
            .map(FallbackConfig::to_fallback)
        {
            errs.push(e);
        }
        for (i, p) in self.pricing.models.iter().enumerate() {
            if p.model.is_empty() {
                errs.push(ConfigError::field(
                    format!("pricing.models[{i}].model"),
                    "must not be empty",
                ));
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 4747)))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            database: default_database(),
            redis: None,
            admin_keys: Vec::new(),
            require_auth: true,
            max_body_bytes: default_max_body(),
            max_upstream_body_bytes: default_max_upstream_body(),
            shutdown_grace_seconds: default_shutdown_grace(),
            connections: Default::default(),
            providers: Vec::new(),
            models: Vec::new(),
            pricing: PricingConfig::default(),
            budgets: BudgetsConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            jwt: None,
            trust_all_identity_headers: false,
            alerts: Default::default(),
            retention: Default::default(),
            metrics: Default::default(),
            cycles: Default::default(),
        }
    }
}
