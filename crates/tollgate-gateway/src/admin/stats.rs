//! `GET /admin/stats`: spend totals and top spenders, the journal's
//! counters, what is loaded.

use super::*;
use crate::api::{ReportRows, Totals};

/// Top models and spenders listed.
const TOP: usize = 10;

/// The start of the UTC day and month of `now`.
pub(super) fn utc_day_and_month(now: Timestamp) -> (Timestamp, Timestamp) {
    let d = now.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let start = |d: jiff::civil::Date| {
        d.to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .unwrap_or(now)
    };
    (start(d), start(d.first_of_month()))
}

fn totals_of(rows: &[ReportRow]) -> Totals {
    rows.first().map_or_else(Totals::default, |r| {
        Totals::new(r.requests, r.refused, &r.usage, r.cost)
    })
}

/// The `TOP` rows of `g` since `since`, highest cost first.
async fn top(s: &AppState, g: GroupBy, since: Timestamp) -> Result<ReportRows, AdminError> {
    let mut q = ReportQuery::new(vec![g]);
    q.from = Some(since);
    let mut rows = s.store.report(&q).await?;
    rows.retain(|r| r.keys.first().is_some_and(Option::is_some));
    rows.sort_by(|x, y| y.cost.cmp(&x.cost).then_with(|| x.keys.cmp(&y.keys)));
    rows.truncate(TOP);
    Ok(ReportRows {
        dimensions: vec![g],
        rows,
    })
}

/// `GET /admin/stats`: spend today, this month and all time (from the
/// rollups), this month's top models and spenders, refusals by reason
/// since start, and the journal writer's counters (back pressure is
/// visible here: `waited_for_space` counts records that had to wait for
/// room in the queue; nothing is ever dropped).
#[utoipa::path(get, path = "/stats", tag = "usage", responses((status = 200, description = "OK", body = crate::api::StatsView)))]
pub(super) async fn stats(
    State(s): State<AppState>,
) -> Result<axum::Json<crate::api::StatsView>, AdminError> {
    stats_view(&s).await.map(axum::Json)
}

/// The stats (the API's and the CLI's `stats`).
pub async fn stats_view(s: &AppState) -> Result<crate::api::StatsView, AdminError> {
    use std::sync::atomic::Ordering::Relaxed;
    let (day, month) = utc_day_and_month(s.budgets.now());
    let total_since = |from| {
        let mut q = ReportQuery::new(vec![]);
        q.from = from;
        q
    };
    let today = totals_of(&s.store.report(&total_since(Some(day))).await?);
    let this_month = totals_of(&s.store.report(&total_since(Some(month))).await?);
    let all_time = totals_of(&s.store.report(&total_since(None)).await?);
    let j = &s.journal.stats;
    Ok(crate::api::StatsView {
        today,
        this_month,
        all_time,
        top_models: top(s, GroupBy::Model, month).await?,
        top_spenders: top(s, GroupBy::User, month).await?,
        refusals_since_start: s.budgets.metrics.refusals().into_iter().collect(),
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
