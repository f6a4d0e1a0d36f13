//! The gateway: an axum app that puts identity, pricing and metering in
//! front of LLM providers, plus the admin API.
//!
//! Routes (all handlers are thin; the work is in [`proxy`]):
//! - OpenAI: `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//!   `/v1/responses`; `GET /v1/models`
//! - Anthropic: `POST /v1/messages`, `/v1/messages/count_tokens`
//! - Gemini: `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent`
//!   and `:countTokens` (also under `/v1/models/`)
//! - `GET /health`; `/admin/...` behind admin keys (see [`admin`])

pub mod admin;
pub mod api;
pub mod budgets;
pub use tollgate_budgets::{journal, ledger};
pub mod config;
pub mod cycles;
pub mod error;
pub mod graphql;
pub mod identity;
pub mod jwt;
pub mod openapi;
pub mod proxy;
pub mod retention;
pub mod routing;
pub mod server;

mod metrics;

#[cfg(test)]
mod bounds_property;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use tollgate_core::Catalog;
use tollgate_core::pricing::PriceSource;
use tollgate_providers::{Endpoint, ErrorKind, NativeError, WireFormat};
use tollgate_store::Store;

use budgets::{BudgetEngine, Clock, SystemClock};
pub use config::{Config, ConfigError};
use identity::{AdminKeys, KeyCache};
use journal::Journal;
use proxy::Inbound;
use routing::ModelRouter;

/// Shared state of every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub keys: Arc<KeyCache>,
    pub admin: Arc<AdminKeys>,
    pub router: Arc<ModelRouter>,
    catalog: Arc<RwLock<Arc<Catalog>>>,
    pub store: Arc<dyn Store>,
    pub journal: Journal,
    pub budgets: Arc<BudgetEngine>,
    /// The embedded ledger the budgets run on, for its own upkeep
    /// (forgetting counters no budget reads).
    pub memory_ledger: Arc<ledger::MemoryLedger>,
    /// Requests and tokens per minute.
    pub rates: Arc<tollgate_budgets::rates::RateLimiter>,
    /// Alerts: fired from the budgets' events, delivered from the outbox.
    pub alerts: Arc<tollgate_alerts::Alerts>,
    pub jwt: Option<Arc<jwt::JwtVerifier>>,
    /// Set when the shutdown grace is over: open streams end themselves.
    pub streams_end: Arc<tokio::sync::watch::Sender<bool>>,
    /// The Cycles runtime API, on the same budget engine.
    pub cycles: Arc<tollgate_cycles::service::Cycles>,
}

impl AppState {
    /// The price catalog as of now (a snapshot: admin changes swap it whole).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_catalog(&self, f: impl FnOnce(&mut Catalog)) {
        let mut guard = self.catalog.write().unwrap_or_else(|e| e.into_inner());
        let mut next = (**guard).clone();
        f(&mut next);
        *guard = Arc::new(next);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigError>),
    #[error(transparent)]
    Store(#[from] tollgate_store::StoreError),
    #[error("cannot start the journal writer: {0}")]
    Journal(std::io::Error),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error("cannot load the Cycles reservations: {0}")]
    Cycles(String),
}

/// Builds the catalog: built-in prices, then config overrides, then prices
/// set at run time through the admin API or CLI (stored).
pub async fn build_catalog(config: &Config, store: &dyn Store) -> Result<Catalog, StartError> {
    let mut catalog = Catalog::builtin();
    if let Some(fb) = &config.pricing.fallback {
        catalog.set_fallback(fb.to_fallback().map_err(|e| StartError::Config(vec![e]))?);
    }
    for p in &config.pricing.models {
        catalog.set(&p.model, p.price.clone(), PriceSource::Config);
    }
    for (model, p) in store.prices().await? {
        catalog.set_for(&model, p.price, PriceSource::Admin, p.provider);
    }
    Ok(catalog)
}

/// Builds the shared state over a validated `config`: catalog, keys, the
/// journal writer (returned), the ledger and budgets, JWT verification.
async fn assemble(
    config: Config,
    store: Arc<dyn Store>,
    env: &dyn Fn(&str) -> Option<String>,
    clock: Arc<dyn Clock>,
) -> Result<(AppState, journal::WriterHandle), StartError> {
    let catalog = build_catalog(&config, &*store).await?;
    let keys = KeyCache::load(store.clone()).await?;
    let (journal, writer) = Journal::spawn(store.clone()).map_err(StartError::Journal)?;
    let ledger = Arc::new(ledger::MemoryLedger::load(store.clone(), journal.clone()).await?);
    let router = ModelRouter::new(&config, env);
    let config_budgets = config.budgets.budgets().map_err(StartError::Config)?;
    let unservable: Vec<ConfigError> = config_budgets
        .iter()
        .filter_map(|b| {
            budgets::check_models(b, &router, &catalog)
                .err()
                .map(|m| ConfigError::field(format!("budgets ({})", b.id), m))
        })
        .collect();
    if !unservable.is_empty() {
        return Err(StartError::Config(unservable));
    }
    let rates = tollgate_budgets::rates::RateLimiter::new(
        config.rate_limits.limits().map_err(StartError::Config)?,
        clock.clone(),
    );
    let budgets = BudgetEngine::load(
        &*store,
        ledger.clone(),
        config_budgets,
        clock,
        &config.budgets.sizing(),
    )
    .await?;
    let budgets = Arc::new(budgets);
    let alerts =
        tollgate_alerts::Alerts::start(config.alerts.clone(), store.clone(), budgets.clone(), env)
            .map_err(|e| StartError::Config(vec![ConfigError::field("alerts", e.to_string())]))?;
    alerts.reload_rules().await?;
    let catalog = Arc::new(RwLock::new(Arc::new(catalog)));
    let prices = catalog.clone();
    let cycles = tollgate_cycles::service::Cycles::start(
        budgets.clone(),
        store.clone(),
        config.cycles.clone(),
        Arc::new(move |model: &str| {
            let table = prices.read().ok()?.clone();
            let price = &table.get(model)?.price;
            Some(price.reservation_rates(0).1.cost(1))
        }),
    )
    .await
    .map_err(|e| StartError::Cycles(e.message))?;
    let state = AppState {
        admin: Arc::new(AdminKeys::new(&config.admin_keys)),
        router: Arc::new(router),
        catalog,
        jwt: jwt_verifier(&config.jwt)?,
        config: Arc::new(config),
        keys,
        store,
        journal,
        budgets,
        memory_ledger: ledger,
        rates: Arc::new(rates),
        alerts: Arc::new(alerts),
        streams_end: Arc::new(tokio::sync::watch::Sender::new(false)),
        cycles,
    };
    Ok((state, writer))
}

fn jwt_verifier(c: &Option<jwt::JwtConfig>) -> Result<Option<Arc<jwt::JwtVerifier>>, StartError> {
    c.as_ref()
        .map(|c| {
            jwt::JwtVerifier::from_config(c)
                .map(Arc::new)
                .map_err(StartError::Config)
        })
        .transpose()
}

/// How often keys and prices changed outside this process are picked up.
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Reloads the catalog, the budgets and the rate limits when their stored versions change
/// (set or imported by the CLI, or by another instance).
/// `version` and `budgets_version` were read before the catalog and the
/// budgets were loaded, so a change racing the start-up is reloaded.
fn spawn_price_refresh(
    state: AppState,
    mut version: (i64, i64),
    budgets_version: (i64, i64),
    mut rates_version: (i64, i64),
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.tick().await;
        state.budgets.set_known_version(Some(budgets_version));
        let mut rules_version = state.store.alert_rules_version().await.ok();
        loop {
            tick.tick().await;
            state.budgets.expire_due().await;
            if state.budgets.prune_due() {
                let keep = state.budgets.retention();
                state.memory_ledger.retain_counters(&|k| keep.keeps(k));
                state.rates.prune();
            }
            let bv = state.store.budgets_version().await.ok();
            // Changes made through this process's admin API are applied in
            // place and move the known version along: only changes from
            // elsewhere (the CLI, another instance) reload.
            if bv.is_some() && bv != state.budgets.known_version() {
                match state.budgets.reload(&*state.store).await {
                    Ok(()) => state.budgets.set_known_version(bv),
                    Err(e) => tracing::warn!(error = %e, "budget reload failed"),
                }
            }
            // Rate limits changed elsewhere (or here: reloading twice is
            // harmless).
            if let Ok(v) = state.store.rate_limits_version().await
                && v != rates_version
            {
                match admin::reload_rate_limits(&state).await {
                    Ok(()) => rates_version = v,
                    Err(e) => tracing::warn!(error = %e, "rate limit reload failed"),
                }
            }
            // Alert rules changed elsewhere (this process's API reloads
            // them itself; a second reload restarts the rule windows).
            if let Ok(v) = state.store.alert_rules_version().await
                && Some(v) != rules_version
            {
                match state.alerts.reload_rules().await {
                    Ok(()) => rules_version = Some(v),
                    Err(e) => tracing::warn!(error = %e, "alert rule reload failed"),
                }
            }
            let now = match state.store.prices_version().await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "price refresh failed");
                    continue;
                }
            };
            if now == version {
                continue;
            }
            match build_catalog(&state.config, &*state.store).await {
                Ok(c) => {
                    *state.catalog.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
                    version = now;
                    tracing::info!("prices reloaded");
                }
                Err(e) => tracing::warn!(error = %e, "price reload failed"),
            }
        }
    })
}

/// A running gateway's parts.
pub struct Gateway {
    state: AppState,
    writer: journal::WriterHandle,
    refresh: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Validates `config` and prepares the gateway over `store`. `env`
    /// resolves provider key variables.
    pub async fn new(
        config: Config,
        store: Arc<dyn Store>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Gateway, StartError> {
        Self::with_clock(config, store, env, Arc::new(SystemClock)).await
    }

    /// As [`Gateway::new`], with the clock budgets use for periods.
    pub async fn with_clock(
        config: Config,
        store: Arc<dyn Store>,
        env: &dyn Fn(&str) -> Option<String>,
        clock: Arc<dyn Clock>,
    ) -> Result<Gateway, StartError> {
        config.validate().map_err(StartError::Config)?;
        if !config.require_auth {
            tracing::warn!(
                "require_auth is false: every request is accepted without a key. Use this for local setups only."
            );
        }
        for p in &config.providers {
            if let Some(var) = &p.api_key_env
                && env(var).is_none_or(|v| v.is_empty())
            {
                tracing::warn!(provider = %p.name, %var, "provider key variable is not set; requests to it will fail");
            }
        }
        let prices_version = store.prices_version().await?;
        let budgets_version = store.budgets_version().await?;
        let rates_version = store.rate_limits_version().await?;
        let (state, writer) = assemble(config, store, env, clock).await?;
        admin::reload_rate_limits(&state).await?;
        state.budgets.reconcile().await?;
        let key_refresh = state.keys.spawn_refresh(REFRESH_EVERY);
        let price_refresh = spawn_price_refresh(
            state.clone(),
            prices_version,
            budgets_version,
            rates_version,
        );
        let mut refresh = vec![
            key_refresh,
            price_refresh,
            cycles::spawn_sweeper(state.clone()),
        ];
        refresh.extend(retention::spawn(state.clone()));
        Ok(Gateway {
            state,
            writer,
            refresh,
        })
    }

    /// The gateway's state over `store` for inspection from the CLI: no
    /// reconciliation (a running gateway owns the ledger), no background
    /// refresh, nothing served.
    pub async fn inspect(config: Config, store: Arc<dyn Store>) -> Result<AppState, StartError> {
        config.validate().map_err(StartError::Config)?;
        let (state, _writer) = assemble(config, store, &|_| None, Arc::new(SystemClock)).await?;
        Ok(state)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests and
    /// streams finish and writes every queued usage record before returning.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.router();
        // SIGTERM: stop accepting and let requests and streams finish, for
        // `shutdown_grace_seconds` at most; then open streams end (cleanly,
        // charged for what passed), and a request still waiting on its
        // upstream gets a few seconds more before it is dropped (its draft
        // charges what the provider saw).
        let grace = Duration::from_secs(self.state.config.shutdown_grace_seconds);
        let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
        let limits = self.state.config.connections.clone();
        if let Ok(Some(addr)) = self.state.config.metrics.validate() {
            let metrics = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(%addr, admin_key = self.state.config.metrics.require_admin_key, "serving /metrics on its own listener");
            let mut end = self.state.streams_end.subscribe();
            let app = metrics::router(self.state.clone());
            tokio::spawn(async move {
                let stop = async move {
                    let _ = end.wait_for(|e| *e).await;
                };
                if let Err(e) = axum::serve(metrics, app).with_graceful_shutdown(stop).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        let server = server::serve(listener, app, limits, async move {
            shutdown.await;
            let _ = signalled.send(());
        });
        tokio::pin!(server);
        let result = tokio::select! {
            r = &mut server => r,
            _ = async {
                match on_signal.await {
                    Ok(()) => tokio::time::sleep(grace).await,
                    Err(_) => std::future::pending().await,
                }
            } => {
                tracing::warn!(grace_seconds = grace.as_secs(), "shutdown grace over: ending open streams");
                let _ = self.state.streams_end.send(true);
                tokio::time::timeout(Duration::from_secs(5), &mut server)
                    .await
                    .unwrap_or(Ok(()))
            }
        };
        // Whatever still runs outside the server's connections (GraphQL
        // subscriptions) ends now, letting go of the state.
        let _ = self.state.streams_end.send(true);
        for task in &self.refresh {
            task.abort();
        }
        let Gateway { state, writer, .. } = self;
        state.alerts.stop();
        state.journal.flush().await;
        drop(state);
        // The writer ends once every sender is gone; don't hang on stragglers.
        let _ = tokio::time::timeout(Duration::from_secs(10), writer.join()).await;
        result
    }
}

fn inbound(endpoint: Endpoint, path_model: Option<String>, req: Request) -> Inbound {
    let (parts, body) = req.into_parts();
    Inbound {
        endpoint,
        path_model,
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    }
}

macro_rules! proxy_route {
    ($endpoint:expr) => {
        post(|State(s): State<AppState>, req: Request| async move {
            proxy::handle(s, inbound($endpoint, None, req)).await
        })
    };
}

async fn gemini(State(s): State<AppState>, Path(call): Path<String>, req: Request) -> Response {
    let (model, endpoint) = match gemini_call(&call) {
        Some(c) => c,
        None => {
            let e = NativeError::new(
                404,
                ErrorKind::NotFound,
                format!(
                    "unknown Gemini method in {call:?} (expected MODEL:generateContent, MODEL:streamGenerateContent or MODEL:countTokens)"
                ),
            );
            return error::native_response(&e, WireFormat::Gemini);
        }
    };
    let model = model.to_string();
    proxy::handle(s, inbound(endpoint, Some(model), req)).await
}

/// The provider route a path names (for explain): its endpoint and, for
/// Gemini, the model in the path.
pub fn endpoint_for_path(path: &str) -> Option<(Endpoint, Option<String>)> {
    let path = path.split('?').next().unwrap_or(path);
    let fixed = match path {
        "/v1/chat/completions" => Some(Endpoint::ChatCompletions),
        "/v1/completions" => Some(Endpoint::Completions),
        "/v1/embeddings" => Some(Endpoint::Embeddings),
        "/v1/responses" => Some(Endpoint::Responses),
        "/v1/messages" => Some(Endpoint::Messages),
        "/v1/messages/count_tokens" => Some(Endpoint::CountTokens),
        _ => None,
    };
    if let Some(e) = fixed {
        return Some((e, None));
    }
    let call = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, endpoint) = gemini_call(call)?;
    Some((endpoint, Some(model.to_string())))
}

/// `MODEL:method` of a Gemini path.
fn gemini_call(call: &str) -> Option<(&str, Endpoint)> {
    match call.rsplit_once(':')? {
        (m, "generateContent") => Some((m, Endpoint::GenerateContent)),
        (m, "streamGenerateContent") => Some((m, Endpoint::StreamGenerateContent)),
        (m, "countTokens") => Some((m, Endpoint::GeminiCountTokens)),
        _ => None,
    }
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// The whole app.
pub fn router(state: AppState) -> Router {
    let (admin, doc) = openapi::split(state.clone());
    let doc: Arc<str> = doc.to_json().unwrap_or_default().into();
    Router::new()
        .route(
            "/v1/chat/completions",
            proxy_route!(Endpoint::ChatCompletions),
        )
        .route("/v1/completions", proxy_route!(Endpoint::Completions))
        .route("/v1/embeddings", proxy_route!(Endpoint::Embeddings))
        .route("/v1/responses", proxy_route!(Endpoint::Responses))
        .route("/v1/messages", proxy_route!(Endpoint::Messages))
        .route(
            "/v1/messages/count_tokens",
            proxy_route!(Endpoint::CountTokens),
        )
        // The google-genai SDK calls `v1beta` by default and `v1` when the
        // base URL is custom; both reach the provider's configured version.
        .route("/v1beta/models/{call}", post(gemini))
        .route("/v1/models/{call}", post(gemini))
        .route(
            "/v1/models",
            get(|State(s): State<AppState>, h: HeaderMap| proxy::list_models(s, h)),
        )
        .route("/health", get(health))
        .route(
            "/metrics",
            get(metrics::metrics).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                admin::require_admin,
            )),
        )
        .route("/usage", get(admin::own_usage))
        .route("/v1/reservations", post(cycles::create).get(cycles::list))
        .route("/v1/reservations/{reservation_id}", get(cycles::get))
        .route(
            "/v1/reservations/{reservation_id}/commit",
            post(cycles::commit),
        )
        .route(
            "/v1/reservations/{reservation_id}/release",
            post(cycles::release),
        )
        .route(
            "/v1/reservations/{reservation_id}/extend",
            post(cycles::extend),
        )
        .route("/v1/decide", post(cycles::decide))
        .route("/v1/balances", get(cycles::balances))
        .route("/v1/events", post(cycles::event))
        .route("/v1/sessions/{session_id}", get(cycles::session))
        .route("/v1/auth/introspect", get(cycles::introspect))
        .route("/badge/{file}", get(admin::public_badge))
        .route(
            "/graphql",
            get(graphql::get)
                .post(graphql::post)
                .layer(axum::Extension(graphql::service(state.clone()))),
        )
        .merge(admin)
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc.to_string(),
                    )
                }
            }),
        )
        // An empty 404 that `json_errors` words in the caller's format.
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state)
}
