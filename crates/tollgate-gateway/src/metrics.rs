//! `GET /metrics`: Prometheus text exposition, behind an admin key.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// `metrics:` — where `/metrics` is served besides the main listener.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A listener of its own serving only `/metrics` (say
    /// `127.0.0.1:9464`, reachable by the scraper alone).
    #[serde(default)]
    pub listen: Option<String>,
    /// `false`: that listener serves `/metrics` without an admin key (the
    /// main listener always asks for one). Only with `listen`.
    #[serde(default = "yes")]
    pub require_admin_key: bool,
}

fn yes() -> bool {
    true
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            require_admin_key: true,
        }
    }
}

impl MetricsConfig {
    /// The metrics listener's address, if any; or the field at fault and
    /// why.
    pub fn validate(&self) -> Result<Option<std::net::SocketAddr>, (&'static str, String)> {
        match &self.listen {
            None if !self.require_admin_key => Err((
                "metrics.require_admin_key",
                "false needs metrics.listen (the main listener always asks for an admin key)"
                    .into(),
            )),
            None => Ok(None),
            Some(l) => l.parse().map(Some).map_err(|_| {
                (
                    "metrics.listen",
                    format!("expected HOST:PORT with an IP address, got {l:?}"),
                )
            }),
        }
    }
}

/// The router of the metrics listener: `/metrics` alone.
pub(crate) fn router(state: AppState) -> axum::Router {
    let route = axum::routing::get(metrics);
    let route = if state.config.metrics.require_admin_key {
        route.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::admin::require_admin,
        ))
    } else {
        route
    };
    axum::Router::new()
        .route("/metrics", route)
        .layer(axum::middleware::from_fn(crate::error::json_errors))
        .with_state(state)
}

pub(crate) async fn metrics(State(s): State<AppState>) -> Response {
    let mut out = String::with_capacity(4096);
    s.budgets.metrics.render(&mut out);
    let j = &s.journal.stats;
    for (name, help, v) in [
        (
            "tollgate_journal_entries_written_total",
            "Journal entries (settlements, releases, counter changes) written to the store.",
            j.entries_written.load(Ordering::Relaxed),
        ),
        (
            "tollgate_journal_batches_total",
            "Journal batches committed.",
            j.batches.load(Ordering::Relaxed),
        ),
        (
            "tollgate_journal_write_errors_total",
            "Journal batches the store failed to write (retried).",
            j.write_errors.load(Ordering::Relaxed),
        ),
        (
            "tollgate_journal_waits_total",
            "Entries that waited for room in the journal's queue.",
            j.waited_for_space.load(Ordering::Relaxed),
        ),
        (
            "tollgate_ledger_holds_not_durable_total",
            "Holds the reservation log could not write, kept in memory only (fail: open).",
            j.not_durable.load(Ordering::Relaxed),
        ),
        (
            "tollgate_journal_quarantined_total",
            "Entries the store refused, kept aside.",
            j.quarantined.load(Ordering::Relaxed),
        ),
        (
            "tollgate_overspent_requests_total",
            "Requests whose usage exceeded their reservation.",
            s.budgets.overspent.load(Ordering::Relaxed),
        ),
        (
            "tollgate_suspicious_usage_total",
            "Provider answers with implausible usage (clamped, flagged).",
            s.budgets.suspicious.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    out.push_str("# HELP tollgate_webhook_deliveries_total Webhook delivery attempts, by outcome (delivered, retry: failed and to be retried, failed: for good).\n");
    out.push_str("# TYPE tollgate_webhook_deliveries_total counter\n");
    for (outcome, n) in s.alerts.delivery_attempts() {
        let _ = writeln!(
            out,
            "tollgate_webhook_deliveries_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    budget_ratios(&s, &mut out).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// `tollgate_budget_used_ratio{budget}` for the budgets marked
/// `metrics: true` (each has one subject, so one series per budget): spent
/// over the limit, in money when the budget has a money limit, else in
/// tokens. A gauge for dashboards; the exact amounts are in the API.
async fn budget_ratios(s: &AppState, out: &mut String) {
    let marked: Vec<_> = s
        .budgets
        .entries()
        .all
        .iter()
        .filter(|e| e.budget.metrics)
        .map(|e| e.budget.clone())
        .collect();
    if marked.is_empty() {
        return;
    }
    out.push_str(
        "# HELP tollgate_budget_used_ratio Spent over limit, for budgets marked metrics: true.\n",
    );
    out.push_str("# TYPE tollgate_budget_used_ratio gauge\n");
    let now = s.budgets.now();
    for b in marked {
        let subject = b.subject.clone().unwrap_or_else(|| "*".into());
        let id = b.id.clone();
        let a = s.budgets.applied(b, subject, now).await;
        let st = s.budgets.state(&a).await;
        // Display only: a float ratio, never used for money.
        let ratio = match (st.limit.money, st.limit.tokens) {
            (Some(l), _) if l.units() > 0 => st.spent.money.units() as f64 / l.units() as f64,
            (None, Some(l)) if l > 0 => st.spent.tokens as f64 / l as f64,
            _ => 1.0,
        };
        let label = id
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = writeln!(
            out,
            "tollgate_budget_used_ratio{{budget=\"{label}\"}} {ratio}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::MetricsConfig;

    #[test]
    fn an_open_metrics_listener_needs_an_address_of_its_own() {
        let c = |yaml: &str| {
            serde_json::from_str::<MetricsConfig>(yaml)
                .unwrap()
                .validate()
        };
        assert_eq!(c("{}"), Ok(None));
        assert_eq!(
            c(r#"{"listen": "127.0.0.1:9464", "require_admin_key": false}"#),
            Ok(Some("127.0.0.1:9464".parse().unwrap()))
        );
        assert_eq!(
            c(r#"{"require_admin_key": false}"#).unwrap_err().0,
            "metrics.require_admin_key"
        );
        assert_eq!(
            c(r#"{"listen": "localhost"}"#).unwrap_err().0,
            "metrics.listen"
        );
    }
}
