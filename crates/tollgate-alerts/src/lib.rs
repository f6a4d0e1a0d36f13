//! Alerts: budget thresholds (and the budget events the engine publishes)
//! turned into durable alerts, delivered to webhooks from an outbox.
//!
//! - [`fire`]: a task reading the engine's event stream (lossless) makes
//!   each event an alert with a dedupe key — one per budget, subject,
//!   period and mark — and records it with its deliveries in one
//!   transaction; an alert already on record (noticed again after a
//!   restart, or by a second judge) writes nothing.
//! - [`outbox`]: a task claims due deliveries, POSTs them signed, and
//!   records every attempt; failures retry with exponential backoff and
//!   jitter until the horizon. Pending deliveries survive restarts.
//! - [`hosts`]: which hosts may be reached, checked on the URL and again
//!   on every address connected to.
//!
//! Nothing here runs on the request path: the engine publishes events
//! without waiting, and alerts read and write the store on their own
//! tasks.

pub mod config;
pub mod fire;
pub mod hosts;
pub mod outbox;
pub mod payload;
pub mod sign;

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_budgets::BudgetEngine;
use tollgate_store::Store;

pub use config::{AlertsConfig, DeliveryConfig, Format, WebhookConfig};
pub use hosts::AllowList;

#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("{0}")]
    Config(String),
    #[error("alerts.webhooks: environment variable {0} (a signing secret) is not set")]
    MissingSecret(String),
    #[error("webhook client: {0}")]
    Client(String),
}

/// The alert machinery of one gateway.
pub struct Alerts {
    shared: Arc<Shared>,
    /// The firing and delivery tasks: they hold the engine (and through it
    /// the journal), so they end with the gateway, not with the runtime.
    tasks: Vec<tokio::task::AbortHandle>,
}

pub(crate) struct Shared {
    pub config: AlertsConfig,
    pub allow: Arc<AllowList>,
    pub store: Arc<dyn Store>,
    pub engine: Arc<BudgetEngine>,
    /// Signing secrets by environment variable name, read at start.
    pub secrets: HashMap<String, Vec<u8>>,
    pub client: reqwest::Client,
    /// Wakes the outbox when deliveries are added.
    pub wake: tokio::sync::Notify,
}

impl Alerts {
    /// Validates `config`, reads the signing secrets through `env`, and
    /// starts the firing and delivery tasks.
    pub fn start(
        config: AlertsConfig,
        store: Arc<dyn Store>,
        engine: Arc<BudgetEngine>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Alerts, AlertsError> {
        let allow = Arc::new(config.validate().map_err(AlertsError::Config)?);
        let mut secrets = HashMap::new();
        let names = config
            .webhooks
            .iter()
            .filter_map(|w| w.secret_env.as_ref())
            .chain(config.secret_env.as_ref());
        for name in names {
            let v = env(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| AlertsError::MissingSecret(name.clone()))?;
            secrets.insert(name.clone(), v.into_bytes());
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(hosts::GuardedResolver {
                allow: allow.clone(),
            }))
            .timeout(std::time::Duration::from_secs(
                config.delivery.timeout_seconds,
            ))
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AlertsError::Client(e.to_string()))?;
        let shared = Arc::new(Shared {
            config,
            allow,
            store,
            engine: engine.clone(),
            secrets,
            client,
            wake: tokio::sync::Notify::new(),
        });
        let events = engine.events.subscribe_lossless_to(false);
        let tasks = vec![
            tokio::spawn(fire::run(shared.clone(), events)).abort_handle(),
            tokio::spawn(outbox::run(shared.clone())).abort_handle(),
        ];
        Ok(Alerts { shared, tasks })
    }

    /// Stops firing and delivering (at shutdown). What was not recorded is
    /// noticed again after a restart; an attempt cut short is retried when
    /// its claim ends.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Checks a budget's own `webhook_url` against the allow-list.
    pub fn check_webhook_url(&self, url: &str) -> Result<(), String> {
        self.shared.allow.check_url(url).map(|_| ())
    }

    /// Makes the outbox look for due deliveries now (after a redelivery).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Sends a `test` event for a budget to its targets now and answers
    /// with each outcome (recorded like any alert).
    pub async fn test_webhook(
        &self,
        budget_id: &str,
    ) -> Result<Option<Vec<outbox::Outcome>>, tollgate_store::StoreError> {
        fire::test(&self.shared, budget_id).await
    }
}

impl Drop for Alerts {
    fn drop(&mut self) {
        self.stop();
    }
}
