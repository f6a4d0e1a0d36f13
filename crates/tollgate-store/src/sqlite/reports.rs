//! Reports: totals grouped by any dimensions, read from the daily rollups
//! where whole days allow (and the report needs no key, session or hour),
//! from the hourly rollups where whole hours allow, and from the raw
//! records elsewhere, summed by SQLite in one statement (so rows stream
//! out in key order).

use rusqlite::types::Value as V;

use super::usage::{DAY_MS, HOUR_MS};
use super::*;

/// Where one part of a report reads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    Raw,
    Rollups,
    /// Per day, tenant, user, model and provider: no key or session.
    Daily,
}

impl Source {
    fn time(self) -> &'static str {
        match self {
            Source::Raw => "time",
            Source::Rollups => "hour",
            Source::Daily => "day",
        }
    }

    /// A dimension's value as text; '' for a record without it (the
    /// rollups' own convention, so that both sources group together).
    fn column(self, g: GroupBy) -> String {
        let time = self.time();
        let raw = self == Source::Raw;
        match g {
            GroupBy::User if raw => "COALESCE(user, '')".into(),
            GroupBy::Tenant if raw => "COALESCE(tenant, '')".into(),
            GroupBy::Session if raw => "COALESCE(session, '')".into(),
            GroupBy::Key if raw => "COALESCE(key_id, '')".into(),
            GroupBy::Model if raw => "model_served".into(),
            GroupBy::User => "user".into(),
            GroupBy::Tenant => "tenant".into(),
            GroupBy::Session => "session".into(),
            GroupBy::Key => "key_id".into(),
            GroupBy::Model => "model".into(),
            GroupBy::Provider => "provider".into(),
            // Only raw records know their budgets (see `needs_raw`).
            GroupBy::Budget => "COALESCE(b.value, '')".into(),
            GroupBy::Day => format!("strftime('%Y-%m-%d', {time} / 1000, 'unixepoch')"),
            GroupBy::Hour => format!("strftime('%Y-%m-%dT%H:00:00Z', {time} / 1000, 'unixepoch')"),
        }
    }

    /// The summed columns, named for the outer query. Cost in two parts
    /// so that no SUM can overflow i64: whole micro-dollars and the
    /// sub-micro remainders.
    fn sums(self) -> &'static str {
        match self {
            Source::Raw => {
                "1 AS n, CASE WHEN (',' || flags || ',') LIKE '%,blocked,%' THEN 1 ELSE 0 END AS refused, \
                 input_tokens AS it, output_tokens AS ot, cached_input_tokens AS ci, \
                 cache_write_5m_tokens AS c5, cache_write_1h_tokens AS c1, reasoning_tokens AS rt, \
                 cost / 1000000 AS hi, cost % 1000000 AS lo"
            }
            Source::Rollups | Source::Daily => {
                "records AS n, refused, input_tokens AS it, output_tokens AS ot, \
                 cached_input_tokens AS ci, cache_write_5m_tokens AS c5, \
                 cache_write_1h_tokens AS c1, reasoning_tokens AS rt, cost_hi AS hi, cost_lo AS lo"
            }
        }
    }

    fn table(self) -> &'static str {
        match self {
            Source::Raw => "usage_records",
            Source::Rollups => "usage_hourly",
            Source::Daily => "usage_daily",
        }
    }
}

/// The daily rollups hold no key, session or hour: a report that groups or
/// filters by one reads hours instead.
fn daily_serves(q: &ReportQuery) -> bool {
    !q.group_by
        .iter()
        .any(|g| matches!(g, GroupBy::Key | GroupBy::Session | GroupBy::Hour))
        && q.filter.key_id.is_none()
        && q.filter.session.is_none()
}

/// Budgets are not in the rollups: a report that groups or filters by
/// one reads raw records.
fn needs_raw(q: &ReportQuery) -> bool {
    q.raw_only || q.filter.budget.is_some() || q.group_by.contains(&GroupBy::Budget)
}

/// The whole `unit`s (hours, days) within `[from, to)`, in ms.
fn whole(from: Option<i64>, to: Option<i64>, unit: i64) -> (Option<i64>, Option<i64>) {
    let up =
        from.map(|m| m.div_euclid(unit) * unit + if m.rem_euclid(unit) == 0 { 0 } else { unit });
    let down = to.map(|t| t.div_euclid(unit) * unit);
    (up, down)
}

/// A part of a report: where it reads, over `[from, to)` in ms.
type Part = (Source, Option<i64>, Option<i64>);

/// `[from, to)` split into whole `unit`s read from `source` and the
/// edges before and after, planned by `edges`.
fn split(
    from: Option<i64>,
    to: Option<i64>,
    unit: i64,
    source: Source,
    edges: &dyn Fn(Option<i64>, Option<i64>) -> Vec<Part>,
) -> Vec<Part> {
    match whole(from, to, unit) {
        (Some(up), Some(down)) if up >= down => edges(from, to),
        (up, down) => {
            let mut parts = vec![(source, up, down)];
            if let (Some(f), Some(u)) = (from, up)
                && f < u
            {
                parts.extend(edges(Some(f), Some(u)));
            }
            if let (Some(t), Some(d)) = (to, down)
                && d < t
            {
                parts.extend(edges(Some(d), Some(t)));
            }
            parts
        }
    }
}

/// The parts a report reads, `[from, to)` in ms each: whole days from the
/// daily rollups (when they serve the report), whole hours from the
/// hourly ones, the partial hours at either edge from the raw records.
fn plan(q: &ReportQuery) -> Vec<Part> {
    let (from, to) = (q.from.map(ms), q.to.map(ms));
    if needs_raw(q) {
        return vec![(Source::Raw, from, to)];
    }
    let hours = |f, t| {
        split(f, t, HOUR_MS, Source::Rollups, &|f, t| {
            vec![(Source::Raw, f, t)]
        })
    };
    if daily_serves(q) {
        split(from, to, DAY_MS, Source::Daily, &hours)
    } else {
        hours(from, to)
    }
}

/// One part's SELECT: the dimensions as `d0, d1, ...`, then the sums.
fn part(q: &ReportQuery, (source, from, to): Part, args: &mut Vec<V>) -> Result<String> {
    let mut cols: Vec<String> = q
        .group_by
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{} AS d{i}", source.column(*g)))
        .collect();
    cols.push(source.sums().into());
    let by_budget = q.group_by.contains(&GroupBy::Budget);
    let mut sql = match source {
        Source::Raw if by_budget => format!(
            "SELECT {} FROM usage_records LEFT JOIN json_each(usage_records.budgets) AS b WHERE 1=1",
            cols.join(", ")
        ),
        _ => format!(
            "SELECT {} FROM {} WHERE 1=1",
            cols.join(", "),
            source.table()
        ),
    };
    let time = source.time();
    for (op, bound) in [(">=", from), ("<", to)] {
        if let Some(b) = bound {
            sql.push_str(&format!(" AND {time} {op} ?"));
            args.push(V::Integer(b));
        }
    }
    let f = &q.filter;
    let model = if source == Source::Raw {
        "model_served"
    } else {
        "model"
    };
    for (col, val) in [
        ("user", &f.user),
        ("tenant", &f.tenant),
        ("session", &f.session),
        ("key_id", &f.key_id),
        (model, &f.model),
        ("provider", &f.provider),
    ] {
        if let Some(v) = val {
            // '' is the rollups' "none": a filter must name a value.
            if v.is_empty() {
                return Err(StoreError::Invalid(format!("the {col} filter is empty")));
            }
            sql.push_str(&format!(" AND {col} = ?"));
            args.push(V::Text(v.clone()));
        }
    }
    if let Some(b) = &f.budget {
        if b.is_empty() {
            return Err(StoreError::Invalid("the budget filter is empty".into()));
        }
        sql.push_str(if by_budget {
            " AND b.value = ?"
        } else {
            " AND EXISTS (SELECT 1 FROM json_each(usage_records.budgets) WHERE value = ?)"
        });
        args.push(V::Text(b.clone()));
    }
    Ok(sql)
}

/// Hands each row of the report to `each`, in key order (records without
/// a dimension first); stops early when `each` returns `false`. With no
/// dimensions, one row of totals (zeros when nothing matched).
pub(super) fn report_rows(
    c: &Connection,
    q: &ReportQuery,
    each: &mut dyn FnMut(ReportRow) -> bool,
) -> Result<()> {
    let mut args = Vec::new();
    let parts = plan(q)
        .into_iter()
        .map(|p| part(q, p, &mut args))
        .collect::<Result<Vec<_>>>()?;
    let dims: Vec<String> = (0..q.group_by.len()).map(|i| format!("d{i}")).collect();
    let mut sql = format!(
        "SELECT {}SUM(n), SUM(it), SUM(ot), SUM(ci), SUM(c5), SUM(c1), SUM(rt), SUM(hi), SUM(lo), SUM(refused) \
         FROM ({})",
        dims.iter().map(|d| format!("{d}, ")).collect::<String>(),
        parts.join(" UNION ALL ")
    );
    if !dims.is_empty() {
        sql.push_str(&format!(" GROUP BY {0} ORDER BY {0}", dims.join(", ")));
    }
    let mut st = c.prepare(&sql)?;
    let mut rows = st.query(rusqlite::params_from_iter(args))?;
    let k = dims.len();
    while let Some(r) = rows.next()? {
        let u = |i: usize| -> rusqlite::Result<u64> {
            Ok(r.get::<_, Option<i64>>(k + i)?.unwrap_or(0).max(0) as u64)
        };
        let hi = i128::from(r.get::<_, Option<i64>>(k + 7)?.unwrap_or(0));
        let lo = i128::from(r.get::<_, Option<i64>>(k + 8)?.unwrap_or(0));
        let refused = u(9)?;
        let row = ReportRow {
            keys: (0..k)
                .map(|i| {
                    r.get::<_, Option<String>>(i)
                        .map(|v| v.filter(|v| !v.is_empty()))
                })
                .collect::<rusqlite::Result<_>>()?,
            requests: u(0)?.saturating_sub(refused),
            refused,
            usage: Usage {
                input_tokens: u(1)?,
                output_tokens: u(2)?,
                cached_input_tokens: u(3)?,
                cache_write_5m_tokens: u(4)?,
                cache_write_1h_tokens: u(5)?,
                reasoning_tokens: u(6)?,
            },
            cost: Money::from_units(hi * 1_000_000 + lo),
        };
        if !each(row) {
            break;
        }
    }
    Ok(())
}
