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
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
