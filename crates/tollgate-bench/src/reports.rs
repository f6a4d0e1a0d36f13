//! `tollgate-bench reports`: how long reports take over millions of
//! records, read from the hourly rollups (as the gateway does) and from
//! the raw records alone, on the same SQLite file. Reported, not asserted.

use std::path::Path;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use tollgate_core::ledger::Amount;
use tollgate_core::{Money, Usage, UsageRecord};
use tollgate_store::query::{GroupBy, ReportFilter, ReportQuery};
use tollgate_store::{JournalEntry, Payload, Store};

const MODELS: [(&str, &str); 12] = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4.1"),
    ("openai", "o4-mini"),
    ("anthropic", "claude-opus-4-5"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("gemini", "gemini-2.5-pro"),
    ("gemini", "gemini-2.5-flash"),
    ("gemini", "gemini-2.5-flash-lite"),
    ("mistral", "mistral-large-latest"),
    ("mistral", "mistral-small-latest"),
];

/// Spread over this many days, oldest first.
const DAYS: i64 = 30;

/// Record `i` of `n`: deterministic, spread evenly over the days before
/// `end`, over 2,000 users in 20 tenants; each user keeps to its own
/// model three times in four (any of 12 otherwise) and to a session a
/// day, on one of 500 keys.
fn record(i: usize, n: usize, end: Timestamp) -> UsageRecord {
    let span_ms = DAYS * 86_400_000;
    let offset = (i as i128 * span_ms as i128 / n as i128) as i64;
    let time = end - SignedDuration::from_millis(span_ms - offset);
    // A cheap scramble so that neighbours differ in every dimension.
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17;
    let user = h % 2_000;
    let own = if (h / 2_000).is_multiple_of(4) {
        h / 8_000
    } else {
        user
    };
    let (provider, model) = MODELS[(own % 12) as usize];
    let day = offset / 86_400_000;
    let input = 100 + h % 4_000;
    let output = 20 + h % 800;
    UsageRecord {
        request_id: format!("req_{i:09}"),
        time,
        key_id: Some(format!("key_{}", user % 500)),
        user: Some(format!("t{}/u{user}", user % 20)),
        tenant: Some(format!("t{}", user % 20)),
        session: h.is_multiple_of(3).then(|| format!("s{user}-{day}")),
        budgets: vec![format!("tenant-t{}", user % 20)],
        provider: provider.into(),
        model_requested: model.into(),
        model_served: model.into(),
        usage: Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        },
        cost: Money::from_units(i128::from(input * 2_500_000 + output * 10_000_000)),
        latency_ms: 200 + h % 2_000,
        ttft_ms: Some(100 + h % 500),
        status: 200,
        flags: Default::default(),
    }
}

/// Writes `n` records through the store's journal path (records and
/// rollups in the same transactions); answers records per second.
fn generate(store: &dyn Store, n: usize, end: Timestamp) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut last_print = Instant::now();
    let batch = 5_000;
    for from in (0..n).step_by(batch) {
        let entries: Vec<JournalEntry> = (from..(from + batch).min(n))
            .map(|i| {
                let r = record(i, n, end);
                JournalEntry::Settle {
                    reservation: None,
                    charges: Vec::new(),
                    actual: Amount::new(r.cost, r.usage.total_tokens()),
                    payload: Payload::record(r),
                }
            })
            .collect();
        store.apply_journal(&entries)?;
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!("  {} of {n} records written", from + batch);
            last_print = Instant::now();
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// The fastest of `runs` runs of `q`, and its row count.
async fn time(
    store: &dyn Store,
    q: &ReportQuery,
    runs: usize,
) -> anyhow::Result<(Duration, usize)> {
    let mut best = Duration::MAX;
    let mut rows = 0;
    for _ in 0..runs {
        let t = Instant::now();
        rows = store.report(q).await?.len();
        best = best.min(t.elapsed());
    }
    Ok((best, rows))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Generates `n` records in a fresh database under `dir` and times a few
/// reports both ways; answers the Markdown section.
pub async fn run(dir: &Path, n: usize) -> anyhow::Result<String> {
    let path = dir.join("reports.db");
    let store = tollgate_store::open(&format!("sqlite://{}", path.display())).await?;
    // Whole hours end here, so every report below reads rollups alone
    // (the gateway's reports add raw edges for partial hours).
    let end = Timestamp::now().round(
        jiff::TimestampRound::new()
            .smallest(jiff::Unit::Hour)
            .mode(jiff::RoundMode::Floor),
    )?;
    eprintln!("writing {n} records over {DAYS} days to {}", path.display());
    let rate = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || generate(&*store, n, end)).await??
    };
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    let from = end - SignedDuration::from_hours(DAYS * 24);
    let week = end - SignedDuration::from_hours(7 * 24);
    let query = |group_by: Vec<GroupBy>, from: Timestamp, filter: ReportFilter| ReportQuery {
        group_by,
        from: Some(from),
        to: Some(end),
        filter,
        raw_only: false,
    };
    let cases = [
        (
            "totals, 30 days",
            query(vec![], from, ReportFilter::default()),
        ),
        (
            "by model, 30 days",
            query(vec![GroupBy::Model], from, ReportFilter::default()),
        ),
        (
            "by day, 30 days",
            query(vec![GroupBy::Day], from, ReportFilter::default()),
        ),
        (
            "by user and model, 30 days",
            query(
                vec![GroupBy::User, GroupBy::Model],
                from,
                ReportFilter::default(),
            ),
        ),
        (
            "by key, 30 days (hourly rollups)",
            query(vec![GroupBy::Key], from, ReportFilter::default()),
        ),
        (
            "one tenant by user, 7 days",
            query(
                vec![GroupBy::User],
                week,
                ReportFilter {
                    tenant: Some("t3".into()),
                    ..ReportFilter::default()
                },
            ),
        ),
    ];
    let mut md = format!(
        "## Reports over {n} records: rollups vs raw\n\n\
         `tollgate-bench reports --records {n}`: {n} records over {DAYS} days (2,000 users in 20 \
         tenants, each mostly on its own one of 12 models, a session a day, 500 keys), written \
         through the journal path at {rate:.0} records/s ({:.1} GB of SQLite). Reports read daily \
         rollups for whole days unless they need a key, a session or an hour (then hourly ones), \
         and raw records for partial hours. Each report is the fastest of three runs; `raw` reads \
         the same report from the raw records alone (`ReportQuery::raw_only`). The two answers are \
         checked equal.\n\n\
         | report | rows | rollups | raw | raw / rollups |\n|---|---|---|---|---|\n",
        size as f64 / 1e9
    );
    for (name, q) in cases {
        eprintln!("  {name}");
        let (rolled, rows) = time(&*store, &q, 3).await?;
        let raw_q = ReportQuery {
            raw_only: true,
            ..q.clone()
        };
        let (raw, raw_rows) = time(&*store, &raw_q, 3).await?;
        anyhow::ensure!(
            store.report(&q).await? == store.report(&raw_q).await?,
            "{name}: rollups and raw records disagree"
        );
        anyhow::ensure!(rows == raw_rows);
        md.push_str(&format!(
            "| {name} | {rows} | {} | {} | {:.0}× |\n",
            ms(rolled),
            ms(raw),
            raw.as_secs_f64() / rolled.as_secs_f64().max(1e-9)
        ));
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread")]
    async fn a_small_run_reads_the_same_reports_both_ways() {
        let dir = std::env::temp_dir().join(format!("tollgate-reports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let md = super::run(&dir, 3_000).await;
        let _ = std::fs::remove_dir_all(&dir);
        let md = md.unwrap();
        let rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains(" ms |"))
            .collect();
        assert_eq!(rows.len(), 6, "{md}");
        assert!(md.contains("| totals, 30 days | 1 |"), "{md}");
    }
}
