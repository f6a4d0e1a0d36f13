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
pub mod rules;
pub mod sign;
mod watch;

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
    /// The rules now: stock and config ones, then those from the API.
    pub rules: std::sync::RwLock<Arc<Vec<(rules::Rule, rules::RuleSource)>>>,
    /// Rules from the config and stock (the API's are added to these).
    pub fixed_rules: Vec<(rules::Rule, rules::RuleSource)>,
    pub rules_changed: tokio::sync::Notify,
    /// Delivery attempts since start, by outcome.
    pub attempts: DeliveryCounts,
}

/// Webhook delivery attempts since start: delivered, failed and to be
/// retried, failed for good.
#[derive(Default)]
pub struct DeliveryCounts {
    pub delivered: std::sync::atomic::AtomicU64,
    pub retrying: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub(crate) fn rules(&self) -> Vec<rules::Rule> {
        self.rules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }
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
        let fixed_rules = rules::from_config(&config.rules).map_err(AlertsError::Config)?;
        let shared = Arc::new(Shared {
            rules: std::sync::RwLock::new(Arc::new(fixed_rules.clone())),
            fixed_rules,
            rules_changed: tokio::sync::Notify::new(),
            config,
            allow,
            store,
            engine: engine.clone(),
            secrets,
            client,
            wake: tokio::sync::Notify::new(),
            attempts: DeliveryCounts::default(),
        });
        let events = engine.events.subscribe_lossless_to(false);
        let tasks = vec![
            tokio::spawn(fire::run(shared.clone(), events)).abort_handle(),
            tokio::spawn(outbox::run(shared.clone())).abort_handle(),
            tokio::spawn(watch::spend(shared.clone())).abort_handle(),
            tokio::spawn(watch::forecasts(shared.clone())).abort_handle(),
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

    /// Every rule with where it comes from: stock, config, then the
    /// API's.
    pub fn rules(&self) -> Arc<Vec<(rules::Rule, rules::RuleSource)>> {
        self.shared
            .rules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads the rules created through the API again (after a change);
    /// a stored rule that no longer validates is skipped, logged.
    pub async fn reload_rules(&self) -> Result<(), tollgate_store::StoreError> {
        let mut all = self.shared.fixed_rules.clone();
        for s in self.shared.store.list_alert_rules().await? {
            if all.iter().any(|(r, _)| r.id == s.id) {
                continue;
            }
            let parsed = serde_json::from_str::<rules::RuleInput>(&s.spec)
                .map_err(|e| e.to_string())
                .and_then(|i| rules::Rule::from_input(&i));
            match parsed {
                Ok(r) => all.push((r, rules::RuleSource::Admin)),
                Err(e) => {
                    tracing::error!(rule = %s.id, error = %e, "stored alert rule is invalid; skipped")
                }
            }
        }
        *self.shared.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(all);
        self.shared.rules_changed.notify_waiters();
        Ok(())
    }

    /// Runs the forecast rules now (they also run on their timer);
    /// answers how many alerts fired.
    pub async fn forecast_now(&self) -> Result<usize, tollgate_store::StoreError> {
        watch::forecast_now(&self.shared).await
    }

    /// Checks a budget's own `webhook_url` against the allow-list.
    pub fn check_webhook_url(&self, url: &str) -> Result<(), String> {
        self.shared.allow.check_url(url).map(|_| ())
    }

    /// Delivery attempts since start by outcome (`delivered`, `retry`,
    /// `failed`), for `/metrics`.
    pub fn delivery_attempts(&self) -> [(&'static str, u64); 3] {
        use std::sync::atomic::Ordering::Relaxed;
        let a = &self.shared.attempts;
        [
            ("delivered", a.delivered.load(Relaxed)),
            ("retry", a.retrying.load(Relaxed)),
            ("failed", a.failed.load(Relaxed)),
        ]
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
