//! `GET /metrics`: Prometheus text exposition, behind an admin key.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::AppState;

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
