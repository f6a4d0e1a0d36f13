//! Usage records: written with their settlements, listed, summed.

use super::*;

pub(super) const RECORD_COLS: &str = "request_id, time, key_id, user, tenant, session, budgets, provider, model_requested, model_served, input_tokens, output_tokens, cached_input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens, cost, latency_ms, ttft_ms, status, flags, seq";

pub(super) fn record_from_row(r: &Row<'_>) -> rusqlite::Result<UsageRecord> {
    let budgets: String = r.get(6)?;
    let flags: String = r.get(20)?;
    let u = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    Ok(UsageRecord {
        request_id: r.get(0)?,
        time: ts(r.get(1)?),
        key_id: r.get(2)?,
        user: r.get(3)?,
        tenant: r.get(4)?,
        session: r.get(5)?,
        budgets: serde_json::from_str(&budgets).unwrap_or_default(),
        provider: r.get(7)?,
        model_requested: r.get(8)?,
        model_served: r.get(9)?,
        usage: Usage {
            input_tokens: u(10)?,
            output_tokens: u(11)?,
            cached_input_tokens: u(12)?,
            cache_write_5m_tokens: u(13)?,
            cache_write_1h_tokens: u(14)?,
            reasoning_tokens: u(15)?,
        },
        cost: Money::from_units(i128::from(r.get::<_, i64>(16)?)),
        latency_ms: u(17)?,
        ttft_ms: r.get::<_, Option<i64>>(18)?.map(|v| v.max(0) as u64),
        status: r.get::<_, i64>(19)? as u16,
        flags: Flags::from_names(flags.split(',').filter(|s| !s.is_empty())),
    })
}

/// Appends the record filters shared by records and reports.
pub(super) fn filters(
    sql: &mut String,
    args: &mut Vec<rusqlite::types::Value>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    eq: &[(&str, &Option<String>)],
) {
    use rusqlite::types::Value as V;
    if let Some(f) = from {
        sql.push_str(" AND time >= ?");
        args.push(V::Integer(ms(f)));
    }
    if let Some(t) = to {
        sql.push_str(" AND time < ?");
        args.push(V::Integer(ms(t)));
    }
    for (col, val) in eq {
        if let Some(v) = val {
            sql.push_str(&format!(" AND {col} = ?"));
            args.push(V::Text(v.clone()));
        }
    }
}

pub(super) fn insert_record(tx: &rusqlite::Transaction<'_>, r: &UsageRecord) -> Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO usage_records (request_id, time, key_id, user, tenant, session, budgets, provider, model_requested, model_served, input_tokens, output_tokens, cached_input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens, cost, latency_ms, ttft_ms, status, flags) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
    )?;
    let cost = i64::try_from(r.cost.units()).map_err(|_| {
        StoreError::Invalid(format!("cost {} of {} out of range", r.cost, r.request_id))
    })?;
    let u = &r.usage;
    let inserted = st.execute(params![
        r.request_id,
        ms(r.time),
        r.key_id,
        r.user,
        r.tenant,
        r.session,
        serde_json::to_string(&r.budgets).unwrap_or_else(|_| "[]".into()),
        r.provider,
        r.model_requested,
        r.model_served,
        tok(u.input_tokens),
        tok(u.output_tokens),
        tok(u.cached_input_tokens),
        tok(u.cache_write_5m_tokens),
        tok(u.cache_write_1h_tokens),
        tok(u.reasoning_tokens),
        cost,
        tok(r.latency_ms),
        r.ttft_ms.map(tok),
        i64::from(r.status),
        r.flags.names().join(","),
    ])?;
    if inserted > 0 {
        roll_up(tx, r, cost)?;
    }
    Ok(())
}

/// Adds a record just written to its hour's rollup (a record written
/// twice is ignored above, so it is rolled up once).
fn roll_up(tx: &rusqlite::Transaction<'_>, r: &UsageRecord, cost: i64) -> Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO usage_hourly VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT DO UPDATE SET records = records + 1, refused = refused + excluded.refused,
           input_tokens = input_tokens + excluded.input_tokens,
           output_tokens = output_tokens + excluded.output_tokens,
           cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens,
           cache_write_5m_tokens = cache_write_5m_tokens + excluded.cache_write_5m_tokens,
           cache_write_1h_tokens = cache_write_1h_tokens + excluded.cache_write_1h_tokens,
           reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
           cost_hi = cost_hi + excluded.cost_hi, cost_lo = cost_lo + excluded.cost_lo",
    )?;
    let u = &r.usage;
    let none = String::new();
    st.execute(params![
        ms(r.time).div_euclid(HOUR_MS) * HOUR_MS,
        r.tenant.as_ref().unwrap_or(&none),
        r.user.as_ref().unwrap_or(&none),
        r.key_id.as_ref().unwrap_or(&none),
        r.model_served,
        r.provider,
        r.session.as_ref().unwrap_or(&none),
        i64::from(r.flags.blocked),
        tok(u.input_tokens),
        tok(u.output_tokens),
        tok(u.cached_input_tokens),
        tok(u.cache_write_5m_tokens),
        tok(u.cache_write_1h_tokens),
        tok(u.reasoning_tokens),
        cost / 1_000_000,
        cost % 1_000_000,
    ])?;
    Ok(())
}

const HOUR_MS: i64 = 3_600_000;

/// The whole hours within `[from, to)`: reports read them from the
/// rollups and only the edges from the raw records.
fn whole_hours(from: Option<Timestamp>, to: Option<Timestamp>) -> (Option<i64>, Option<i64>) {
    let up = from.map(|f| {
        let m = ms(f);
        m.div_euclid(HOUR_MS) * HOUR_MS
            + if m.rem_euclid(HOUR_MS) == 0 {
                0
            } else {
                HOUR_MS
            }
    });
    let down = to.map(|t| ms(t).div_euclid(HOUR_MS) * HOUR_MS);
    (up, down)
}

fn report_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportRow> {
    let u = |i: usize| -> rusqlite::Result<u64> {
        Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0).max(0) as u64)
    };
    let hi = i128::from(r.get::<_, Option<i64>>(8)?.unwrap_or(0));
    let lo = i128::from(r.get::<_, Option<i64>>(9)?.unwrap_or(0));
    let refused = u(10)?;
    Ok(ReportRow {
        key: r.get::<_, Option<String>>(0)?.filter(|k| !k.is_empty()),
        requests: u(1)?.saturating_sub(refused),
        refused,
        usage: Usage {
            input_tokens: u(2)?,
            output_tokens: u(3)?,
            cached_input_tokens: u(4)?,
            cache_write_5m_tokens: u(5)?,
            cache_write_1h_tokens: u(6)?,
            reasoning_tokens: u(7)?,
        },
        cost: Money::from_units(hi * 1_000_000 + lo),
    })
}

/// Rows of `extra` added into `rows` by key.
fn merge_rows(rows: &mut Vec<ReportRow>, extra: Vec<ReportRow>) {
    for e in extra {
        match rows.iter_mut().find(|r| r.key == e.key) {
            Some(r) => {
                r.requests += e.requests;
                r.refused += e.refused;
                let (a, b) = (&mut r.usage, &e.usage);
                a.input_tokens += b.input_tokens;
                a.output_tokens += b.output_tokens;
                a.cached_input_tokens += b.cached_input_tokens;
                a.cache_write_5m_tokens += b.cache_write_5m_tokens;
                a.cache_write_1h_tokens += b.cache_write_1h_tokens;
                a.reasoning_tokens += b.reasoning_tokens;
                r.cost += e.cost;
            }
            None => rows.push(e),
        }
    }
}

/// Where a report reads: raw records, or the hourly rollups.
#[derive(Clone, Copy)]
enum Source {
    Raw,
    Rollups,
}

/// A report over `source` in `[from, to)` (ms; hour-aligned for rollups).
fn grouped(
    c: &Connection,
    q: &ReportQuery,
    source: Source,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<Vec<ReportRow>> {
    use rusqlite::types::Value as V;
    // (time column, model column, the sums in ReportRow order). Cost is
    // summed in two parts so that no SUM can overflow i64: whole
    // micro-dollars, and the sub-micro remainders.
    let (time, model, sums) = match source {
        Source::Raw => (
            "time",
            "model_served",
            "COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), \
             SUM(cache_write_5m_tokens), SUM(cache_write_1h_tokens), SUM(reasoning_tokens), \
             SUM(cost / 1000000), SUM(cost % 1000000), \
             SUM(CASE WHEN (',' || flags || ',') LIKE '%,blocked,%' THEN 1 ELSE 0 END) FROM usage_records",
        ),
        Source::Rollups => (
            "hour",
            "model",
            "SUM(records), SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), \
             SUM(cache_write_5m_tokens), SUM(cache_write_1h_tokens), SUM(reasoning_tokens), \
             SUM(cost_hi), SUM(cost_lo), SUM(refused) FROM usage_hourly",
        ),
    };
    let key = match q.group_by {
        GroupBy::User => "user".to_string(),
        GroupBy::Tenant => "tenant".into(),
        GroupBy::Session => "session".into(),
        GroupBy::Model => model.into(),
        GroupBy::Key => "key_id".into(),
        GroupBy::Provider => "provider".into(),
        GroupBy::Day => format!("strftime('%Y-%m-%d', {time} / 1000, 'unixepoch')"),
        GroupBy::Hour => format!("strftime('%Y-%m-%dT%H:00:00Z', {time} / 1000, 'unixepoch')"),
    };
    let mut sql = format!("SELECT {key} AS k, {sums} WHERE 1=1");
    let mut args: Vec<V> = Vec::new();
    for (op, bound) in [(">=", from), ("<", to)] {
        if let Some(b) = bound {
            sql.push_str(&format!(" AND {time} {op} ?"));
            args.push(V::Integer(b));
        }
    }
    for (col, val) in [("user", &q.user), ("tenant", &q.tenant)] {
        if let Some(v) = val {
            sql.push_str(&format!(" AND {col} = ?"));
            args.push(V::Text(v.clone()));
        }
    }
    sql.push_str(" GROUP BY k");
    let mut st = c.prepare(&sql)?;
    let rows = st
        .query_map(rusqlite::params_from_iter(args), report_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn records(&self, q: &RecordQuery) -> Result<RecordPage> {
        let q = q.clone();
        self.read(move |c| {
            use rusqlite::types::Value as V;
            let limit = q.limit.clamp(1, 1000);
            let mut sql = format!("SELECT {RECORD_COLS} FROM usage_records WHERE 1=1");
            let mut args: Vec<V> = Vec::new();
            filters(
                &mut sql,
                &mut args,
                q.from,
                q.to,
                &[
                    ("user", &q.user),
                    ("tenant", &q.tenant),
                    ("session", &q.session),
                    ("model_served", &q.model),
                    ("key_id", &q.key_id),
                ],
            );
            if let Some(cur) = &q.cursor {
                let seq: i64 = cur
                    .parse()
                    .map_err(|_| StoreError::Invalid(format!("invalid cursor {cur:?}")))?;
                sql.push_str(" AND seq < ?");
                args.push(V::Integer(seq));
            }
            sql.push_str(" ORDER BY seq DESC LIMIT ?");
            args.push(V::Integer(limit as i64 + 1));
            let mut st = c.prepare(&sql)?;
            let mut rows = st.query(rusqlite::params_from_iter(args))?;
            let mut records = Vec::new();
            let mut last_seq = None;
            let mut more = false;
            while let Some(row) = rows.next()? {
                if records.len() == limit {
                    more = true;
                    break;
                }
                last_seq = Some(row.get::<_, i64>(21)?);
                records.push(record_from_row(row)?);
            }
            Ok(RecordPage {
                records,
                next_cursor: if more {
                    last_seq.map(|s| s.to_string())
                } else {
                    None
                },
            })
        })
        .await
    }

    async fn budget_spend(
        &self,
        budget_id: &str,
        subject: SubjectOf,
        since: Timestamp,
    ) -> Result<Vec<(String, Amount)>> {
        let (id, since) = (budget_id.to_string(), ms(since));
        self.read(move |c| {
            let (expr, fixed) = match &subject {
                SubjectOf::User => ("user", None),
                SubjectOf::Tenant => ("tenant", None),
                SubjectOf::Session => ("session", None),
                SubjectOf::Key => ("key_id", None),
                SubjectOf::Fixed(s) => ("?3", Some(s.clone())),
            };
            // Cost in two parts, as in reports: no SUM can overflow.
            let sql = format!(
                "SELECT {expr}, SUM(cost / 1000000), SUM(cost % 1000000), SUM(input_tokens + output_tokens) \
                 FROM usage_records WHERE time >= ?1 \
                 AND EXISTS (SELECT 1 FROM json_each(usage_records.budgets) WHERE value = ?2) \
                 AND {expr} IS NOT NULL GROUP BY 1"
            );
            let mut st = c.prepare(&sql)?;
            let map = |r: &rusqlite::Row<'_>| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            };
            let rows = match &fixed {
                Some(s) => st.query_map(params![since, id, s], map)?.collect::<rusqlite::Result<Vec<_>>>()?,
                None => st.query_map(params![since, id], map)?.collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(rows
                .into_iter()
                .map(|(subject, hi, lo, tokens)| {
                    let units = i128::from(hi) * 1_000_000 + i128::from(lo);
                    (subject, Amount::new(Money::from_units(units), tokens.max(0) as u64))
                })
                .collect())
        })
        .await
    }

    async fn budget_breakdown(
        &self,
        budget_id: &str,
        subject: Option<(SubjectOf, String)>,
        since: Timestamp,
        limit: usize,
    ) -> Result<crate::Breakdown> {
        let (id, since) = (budget_id.to_string(), ms(since));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            // A subject as the ledger names it: the field, or (a tenant's
            // key) `tenant/field`.
            let (filter, value) = match subject {
                None | Some((SubjectOf::Fixed(_), _)) => ("1 = 1".to_string(), String::new()),
                Some((field, v)) => {
                    let col = match field {
                        SubjectOf::User => "user",
                        SubjectOf::Tenant => "tenant",
                        SubjectOf::Session => "session",
                        _ => "key_id",
                    };
                    (
                        format!("({col} = ?3 OR (tenant IS NOT NULL AND tenant || '/' || {col} = ?3))"),
                        v,
                    )
                }
            };
            let base = format!(
                "FROM usage_records WHERE time >= ?1 \
                 AND EXISTS (SELECT 1 FROM json_each(usage_records.budgets) WHERE value = ?2) \
                 AND (?3 = ?3) AND {filter}"
            );
            let money = |hi: i64, lo: i64| Money::from_units(i128::from(hi) * 1_000_000 + i128::from(lo));
            let mut st = c.prepare(&format!(
                "SELECT model_served, SUM(cost / 1000000), SUM(cost % 1000000), COUNT(*) {base} \
                 GROUP BY 1 ORDER BY SUM(cost) DESC, 1 LIMIT ?4"
            ))?;
            let models = st
                .query_map(params![since, id, value, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        money(r.get(1)?, r.get(2)?),
                        r.get::<_, i64>(3)?.max(0) as u64,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = c.prepare(&format!(
                "SELECT COALESCE(user, key_id, '-'), SUM(cost / 1000000), SUM(cost % 1000000) {base} \
                 GROUP BY 1 ORDER BY SUM(cost) DESC, 1 LIMIT ?4"
            ))?;
            let spenders = st
                .query_map(params![since, id, value, limit], |r| {
                    Ok((r.get::<_, String>(0)?, money(r.get(1)?, r.get(2)?)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(crate::Breakdown { models, spenders })
        })
        .await
    }

    async fn scope_spend(
        &self,
        subject: SubjectOf,
        only: Option<String>,
        since: Timestamp,
    ) -> Result<Vec<ScopeSpend>> {
        let since = ms(since);
        self.read(move |c| {
            // (the subject column or a fixed label, its filter, the bound value)
            let (label, filter, bound) = match (&subject, only) {
                (SubjectOf::Fixed(s), _) => ("?2", "1=1".to_string(), Some(s.clone())),
                (field, only) => {
                    let col = match field {
                        SubjectOf::User => "user",
                        SubjectOf::Tenant => "tenant",
                        SubjectOf::Session => "session",
                        _ => "key_id",
                    };
                    match only {
                        Some(v) => (col, format!("{col} = ?2"), Some(v)),
                        None => (col, format!("{col} IS NOT NULL"), None),
                    }
                }
            };
            let sql = format!(
                "SELECT {label}, model_served, SUM(cost / 1000000), SUM(cost % 1000000), \
                 SUM(input_tokens + output_tokens) FROM usage_records WHERE time >= ?1 \
                 AND {filter} GROUP BY 1, 2"
            );
            let mut st = c.prepare(&sql)?;
            let map = |r: &rusqlite::Row<'_>| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            };
            let rows = match &bound {
                Some(s) => st
                    .query_map(params![since, s], map)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                None => st
                    .query_map(params![since], map)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(rows
                .into_iter()
                .map(|(subject, model, hi, lo, tokens)| ScopeSpend {
                    subject,
                    model,
                    spent: Amount::new(
                        Money::from_units(i128::from(hi) * 1_000_000 + i128::from(lo)),
                        tokens.max(0) as u64,
                    ),
                })
                .collect())
        })
        .await
    }

    async fn report(&self, q: &ReportQuery) -> Result<Vec<ReportRow>> {
        let q = q.clone();
        self.read(move |c| {
            // Whole hours from the rollups; the partial hours at either
            // edge from the raw records.
            let (up, down) = whole_hours(q.from, q.to);
            let mut rows = match (up, down) {
                (Some(u), Some(d)) if u >= d => {
                    grouped(c, &q, Source::Raw, q.from.map(ms), q.to.map(ms))?
                }
                _ => {
                    let mut rows = grouped(c, &q, Source::Rollups, up, down)?;
                    if let (Some(f), Some(u)) = (q.from, up)
                        && ms(f) < u
                    {
                        merge_rows(
                            &mut rows,
                            grouped(c, &q, Source::Raw, Some(ms(f)), Some(u))?,
                        );
                    }
                    if let (Some(t), Some(d)) = (q.to, down)
                        && d < ms(t)
                    {
                        merge_rows(
                            &mut rows,
                            grouped(c, &q, Source::Raw, Some(d), Some(ms(t)))?,
                        );
                    }
                    rows
                }
            };
            // In key order, records without the dimension first (as SQL
            // orders NULL).
            rows.sort_by(|a, b| match (&a.key, &b.key) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => x.cmp(y),
            });
            Ok(rows)
        })
        .await
    }
}
