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

/// The sums an upsert adds to an existing rollup row.
const ADD_SUMS: &str = "records = records + 1, refused = refused + excluded.refused,
           input_tokens = input_tokens + excluded.input_tokens,
           output_tokens = output_tokens + excluded.output_tokens,
           cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens,
           cache_write_5m_tokens = cache_write_5m_tokens + excluded.cache_write_5m_tokens,
           cache_write_1h_tokens = cache_write_1h_tokens + excluded.cache_write_1h_tokens,
           reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
           cost_hi = cost_hi + excluded.cost_hi, cost_lo = cost_lo + excluded.cost_lo";

/// Adds a record just written to its hour's and its day's rollups (a
/// record written twice is ignored above, so it is rolled up once).
fn roll_up(tx: &rusqlite::Transaction<'_>, r: &UsageRecord, cost: i64) -> Result<()> {
    let u = &r.usage;
    let none = String::new();
    let sums = params![
        i64::from(r.flags.blocked),
        tok(u.input_tokens),
        tok(u.output_tokens),
        tok(u.cached_input_tokens),
        tok(u.cache_write_5m_tokens),
        tok(u.cache_write_1h_tokens),
        tok(u.reasoning_tokens),
        cost / 1_000_000,
        cost % 1_000_000,
    ];
    let (tenant, user) = (
        r.tenant.as_ref().unwrap_or(&none),
        r.user.as_ref().unwrap_or(&none),
    );
    let t = ms(r.time);
    let mut hourly = tx.prepare_cached(&format!(
        "INSERT INTO usage_hourly VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT DO UPDATE SET {ADD_SUMS}"
    ))?;
    let keys = params![
        t.div_euclid(HOUR_MS) * HOUR_MS,
        tenant,
        user,
        r.key_id.as_ref().unwrap_or(&none),
        r.model_served,
        r.provider,
        r.session.as_ref().unwrap_or(&none),
    ];
    hourly.execute(rusqlite::params_from_iter(keys.iter().chain(sums.iter())))?;
    let mut daily = tx.prepare_cached(&format!(
        "INSERT INTO usage_daily VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT DO UPDATE SET {ADD_SUMS}"
    ))?;
    let keys = params![
        t.div_euclid(DAY_MS) * DAY_MS,
        tenant,
        user,
        r.model_served,
        r.provider,
    ];
    daily.execute(rusqlite::params_from_iter(keys.iter().chain(sums.iter())))?;
    Ok(())
}

pub(super) const HOUR_MS: i64 = 3_600_000;
pub(super) const DAY_MS: i64 = 86_400_000;

/// SQL taking the records in `purging` (summed by `sums` per row of
/// `table`, keyed by `keys`, the first the period start of `width` ms) out
/// of a rollup table, and dropping the rows left empty.
fn subtract_purging(table: &str, sums: &str, keys: &[&str], width: i64) -> String {
    let set = [
        ("records", "n"),
        ("refused", "refused"),
        ("input_tokens", "it"),
        ("output_tokens", "ot"),
        ("cached_input_tokens", "ci"),
        ("cache_write_5m_tokens", "c5"),
        ("cache_write_1h_tokens", "c1"),
        ("reasoning_tokens", "rt"),
        ("cost_hi", "hi"),
        ("cost_lo", "lo"),
    ]
    .iter()
    .map(|(c, d)| format!("{c} = {table}.{c} - d.{d}"))
    .collect::<Vec<_>>()
    .join(", ");
    let on = keys
        .iter()
        .map(|k| format!("{table}.{k} = d.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "UPDATE {table} SET {set} FROM ({sums}) AS d WHERE {on};
         DELETE FROM {table} WHERE records <= 0 AND {first} IN
           (SELECT DISTINCT (time / {width}) * {width} FROM usage_records
            WHERE seq IN (SELECT seq FROM purging));\n",
        first = keys[0]
    )
}

/// The records in the temp table `purging`, summed per daily rollup row.
const DAILY_OF_PURGING: &str = "SELECT (time / 86400000) * 86400000 AS day, COALESCE(tenant, '') AS tenant,
       COALESCE(user, '') AS user, model_served AS model, provider, COUNT(*) AS n,
       SUM(CASE WHEN (',' || flags || ',') LIKE '%,blocked,%' THEN 1 ELSE 0 END) AS refused,
       SUM(input_tokens) AS it, SUM(output_tokens) AS ot, SUM(cached_input_tokens) AS ci,
       SUM(cache_write_5m_tokens) AS c5, SUM(cache_write_1h_tokens) AS c1, SUM(reasoning_tokens) AS rt,
       SUM(cost / 1000000) AS hi, SUM(cost % 1000000) AS lo
     FROM usage_records WHERE seq IN (SELECT seq FROM purging) GROUP BY 1, 2, 3, 4, 5";

/// The records in the temp table `purging`, summed per hourly rollup row.
const ROLLUP_OF_PURGING: &str = "SELECT (time / 3600000) * 3600000 AS hour, COALESCE(tenant, '') AS tenant,
       COALESCE(user, '') AS user, COALESCE(key_id, '') AS key_id, model_served AS model, provider,
       COALESCE(session, '') AS session, COUNT(*) AS n,
       SUM(CASE WHEN (',' || flags || ',') LIKE '%,blocked,%' THEN 1 ELSE 0 END) AS refused,
       SUM(input_tokens) AS it, SUM(output_tokens) AS ot, SUM(cached_input_tokens) AS ci,
       SUM(cache_write_5m_tokens) AS c5, SUM(cache_write_1h_tokens) AS c1, SUM(reasoning_tokens) AS rt,
       SUM(cost / 1000000) AS hi, SUM(cost % 1000000) AS lo
     FROM usage_records WHERE seq IN (SELECT seq FROM purging) GROUP BY 1, 2, 3, 4, 5, 6, 7";

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
            if let Some(b) = &q.budget {
                sql.push_str(
                    " AND EXISTS (SELECT 1 FROM json_each(usage_records.budgets) WHERE value = ?)",
                );
                args.push(V::Text(b.clone()));
            }
            if let Some(cur) = &q.cursor {
                let seq: i64 = cur
                    .parse()
                    .map_err(|_| StoreError::Invalid(format!("invalid cursor {cur:?}")))?;
                sql.push_str(" AND seq < ?");
                args.push(V::Integer(seq));
            }
            sql.push_str(" ORDER BY seq DESC LIMIT ? OFFSET ?");
            args.push(V::Integer(limit as i64 + 1));
            args.push(V::Integer(i64::try_from(q.offset).unwrap_or(i64::MAX)));
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
            let mut rows = Vec::new();
            super::reports::report_rows(c, &q, &mut |r| {
                rows.push(r);
                true
            })?;
            Ok(rows)
        })
        .await
    }

    async fn users_page(&self, q: &UsersQuery) -> Result<Vec<(String, Option<String>)>> {
        let q = q.clone();
        self.read(move |c| {
            use rusqlite::types::Value as V;
            let mut sql =
                "SELECT DISTINCT user, tenant FROM usage_hourly WHERE user != ''".to_string();
            let mut args: Vec<V> = Vec::new();
            if let Some((u, t)) = &q.after {
                sql.push_str(" AND (user, tenant) > (?, ?)");
                args.push(V::Text(u.clone()));
                args.push(V::Text(t.clone().unwrap_or_default()));
            }
            for (col, v) in [("user", &q.user), ("tenant", &q.tenant)] {
                if let Some(v) = v {
                    sql.push_str(&format!(" AND {col} = ?"));
                    args.push(V::Text(v.clone()));
                }
            }
            sql.push_str(" ORDER BY user, tenant LIMIT ?");
            args.push(V::Integer(q.limit.clamp(1, 10_000) as i64));
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        Some(r.get::<_, String>(1)?).filter(|t| !t.is_empty()),
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn purge_budget_records(&self, budget_id: &str, batch: usize) -> Result<u64> {
        let (id, batch) = (budget_id.to_string(), batch.clamp(1, 100_000) as i64);
        self.write(move |c| {
            let tx = c.transaction()?;
            tx.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS purging (seq INTEGER PRIMARY KEY); DELETE FROM purging;",
            )?;
            let n = tx.execute(
                "INSERT INTO purging SELECT seq FROM usage_records \
                 WHERE EXISTS (SELECT 1 FROM json_each(usage_records.budgets) WHERE value = ?1) LIMIT ?2",
                params![id, batch],
            )?;
            if n > 0 {
                // Out of the rollups first, exactly as `roll_up` put them in.
                tx.execute_batch(&format!(
                    "{}{}DELETE FROM usage_records WHERE seq IN (SELECT seq FROM purging);",
                    subtract_purging(
                        "usage_hourly",
                        ROLLUP_OF_PURGING,
                        &["hour", "tenant", "user", "key_id", "model", "provider", "session"],
                        HOUR_MS
                    ),
                    subtract_purging(
                        "usage_daily",
                        DAILY_OF_PURGING,
                        &["day", "tenant", "user", "model", "provider"],
                        DAY_MS
                    ),
                ))?;
            }
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_records_before(&self, before: Timestamp, batch: usize) -> Result<u64> {
        let (before, batch) = (ms(before), batch.clamp(1, 100_000) as i64);
        self.write(move |c| {
            Ok(c.execute(
                "DELETE FROM usage_records WHERE seq IN \
                 (SELECT seq FROM usage_records WHERE time < ?1 ORDER BY time LIMIT ?2)",
                params![before, batch],
            )? as u64)
        })
        .await
    }

    async fn report_each(
        &self,
        q: &ReportQuery,
        mut each: Box<dyn FnMut(ReportRow) -> bool + Send>,
    ) -> Result<()> {
        let (q, path) = (q.clone(), self.path.clone());
        // A connection of its own: a long export never holds up the
        // shared reader.
        tokio::task::spawn_blocking(move || {
            let c = Connection::open_with_flags(
                &*path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            super::reports::report_rows(&c, &q, &mut each)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}
