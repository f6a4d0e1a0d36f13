//! `GET /admin/stats`: counters of the journal, the budgets and the key cache.

use super::*;

/// `GET /admin/stats`: the journal writer's counters (back pressure is
/// visible here: `waited_for_space` counts records that had to wait for
/// room in the queue; nothing is ever dropped), what is loaded, and how
/// often usage exceeded a reservation or looked implausible.
pub(super) async fn stats(State(s): State<AppState>) -> axum::Json<crate::api::StatsView> {
    use std::sync::atomic::Ordering::Relaxed;
    let j = &s.journal.stats;
    axum::Json(crate::api::StatsView {
        journal: crate::api::JournalCounters {
            entries_written: j.entries_written.load(Relaxed),
            batches: j.batches.load(Relaxed),
            write_errors: j.write_errors.load(Relaxed),
            waited_for_space: j.waited_for_space.load(Relaxed),
            quarantined: j.quarantined.load(Relaxed),
        },
        quarantined_records: s.store.quarantined_count().await.unwrap_or(0),
        budgets_loaded: s.budgets.entries().len(),
        models_priced: s.catalog().entries().count(),
        overspent_requests: s.budgets.overspent.load(Relaxed),
        suspicious_usage: s.budgets.suspicious.load(Relaxed),
        key_miss_refreshes: s.keys.miss_refreshes.load(Relaxed),
    })
}
