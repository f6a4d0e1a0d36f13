//! `alerts:` in the configuration.

use serde::{Deserialize, Serialize};

use crate::hosts::AllowList;

/// The kinds of alert, as `type` in the webhook body and `events` filters.
pub const KINDS: &[&str] = &[
    "budget.threshold",
    "budget.exceeded",
    "budget.soft_limit",
    "budget.warning",
    "rule.fired",
    "budget.forecast",
    "test",
];

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Hosts webhooks may be sent to: exact names, `*.example.com`, IP
    /// addresses or CIDR blocks. Private, loopback and link-local
    /// addresses are refused unless listed as addresses.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// At most this many deliveries an hour, all targets together; the
    /// rest are recorded as suppressed.
    #[serde(default)]
    pub max_per_hour: Option<u64>,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// The signing secret's environment variable for budgets' own
    /// `webhook_url` targets (unsigned without one).
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Alert rules (spend over a window, forecasts); entries naming a
    /// shipped rule change only the fields they set.
    #[serde(default)]
    pub rules: Vec<crate::rules::RuleInput>,
    /// How often forecast rules look at the budgets.
    #[serde(default = "default_forecast_every")]
    pub forecast_every_seconds: u64,
}

fn default_forecast_every() -> u64 {
    300
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub format: Format,
    /// Alert kinds this target takes; empty: all.
    #[serde(default)]
    pub events: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Json,
    Slack,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
        }
    }
}

/// How deliveries are attempted.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Each attempt's limit (connect, send, answer).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// The first retry's delay; each next one doubles, up to
    /// `retry_max_seconds`, with ±20 % jitter.
    #[serde(default = "default_first")]
    pub retry_first_seconds: u64,
    #[serde(default = "default_max")]
    pub retry_max_seconds: u64,
    /// Retries stop this long after the alert fired: the delivery failed.
    #[serde(default = "default_horizon")]
    pub horizon_hours: u64,
}

fn default_timeout() -> u64 {
    10
}
fn default_first() -> u64 {
    10
}
fn default_max() -> u64 {
    3600
}
fn default_horizon() -> u64 {
    24
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout_seconds: default_timeout(),
            retry_first_seconds: default_first(),
            retry_max_seconds: default_max(),
            horizon_hours: default_horizon(),
        }
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            allow_hosts: Vec::new(),
            max_per_hour: None,
            webhooks: Vec::new(),
            secret_env: None,
            delivery: DeliveryConfig::default(),
            rules: Vec::new(),
            forecast_every_seconds: default_forecast_every(),
        }
    }
}

impl AlertsConfig {
    /// Every problem, each naming its field (`alerts.webhooks[1].url: ...`).
    pub fn validate(&self) -> Result<AllowList, String> {
        let allow =
            AllowList::parse(&self.allow_hosts).map_err(|e| format!("alerts.allow_hosts: {e}"))?;
        crate::rules::from_config(&self.rules)?;
        if self.forecast_every_seconds == 0 {
            return Err("alerts.forecast_every_seconds: must be at least 1".into());
        }
        let d = &self.delivery;
        if d.timeout_seconds == 0 || d.retry_first_seconds == 0 || d.horizon_hours == 0 {
            return Err("alerts.delivery: timeout_seconds, retry_first_seconds and horizon_hours must be at least 1".into());
        }
        if d.retry_max_seconds < d.retry_first_seconds {
            return Err(
                "alerts.delivery.retry_max_seconds: must be at least retry_first_seconds".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let at = format!("alerts.webhooks[{i}]");
            if w.name.trim().is_empty() || w.name.starts_with("budget:") {
                return Err(format!(
                    "{at}.name: a name is required (and may not start with \"budget:\")"
                ));
            }
            if !names.insert(&w.name) {
                return Err(format!("{at}.name: {:?} is used twice", w.name));
            }
            allow
                .check_url(&w.url)
                .map_err(|e| format!("{at}.url: {e}"))?;
            for e in &w.events {
                if !KINDS.contains(&e.as_str()) {
                    return Err(format!(
                        "{at}.events: unknown alert type {e:?} (known: {})",
                        KINDS.join(", ")
                    ));
                }
            }
        }
        Ok(allow)
    }
}
