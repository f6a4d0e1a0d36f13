//! Alerts, deliveries and attempts.

use super::*;
use crate::alerts::*;

/// An alert's status from its deliveries (see [`AlertRow::status`]).
const STATUS_SQL: &str = "(SELECT CASE
        WHEN COUNT(*) = 0 THEN 'recorded'
        WHEN SUM(d.status = 'pending') > 0 THEN 'pending'
        WHEN SUM(d.status = 'failed') > 0 THEN 'failed'
        WHEN SUM(d.status = 'suppressed') > 0 THEN 'suppressed'
        ELSE 'delivered' END
    FROM alert_deliveries d WHERE d.alert_id = a.id)";

fn status_str(s: &str) -> &'static str {
    match s {
        "pending" => "pending",
        "failed" => "failed",
        "suppressed" => "suppressed",
        "delivered" => "delivered",
        _ => "recorded",
    }
}

fn alert_row(r: &Row<'_>) -> rusqlite::Result<AlertRow> {
    Ok(AlertRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        severity: r.get(2)?,
        budget_id: r.get(3)?,
        rule_id: r.get(4)?,
        subject: r.get(5)?,
        created_at: ts(r.get(6)?),
        payload: r.get(7)?,
        status: status_str(&r.get::<_, String>(8)?),
        attempts: r
            .get::<_, Option<i64>>(9)?
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32,
        last_status: r
            .get::<_, Option<i64>>(10)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.get(11)?,
        delivered_at: r.get::<_, Option<i64>>(12)?.map(ts),
    })
}

const ALERT_COLUMNS: &str =
    "a.id, a.kind, a.severity, a.budget_id, a.rule_id, a.subject, a.created_at, a.payload";

fn summary_sql() -> String {
    format!(
        "{ALERT_COLUMNS}, {STATUS_SQL} AS status,
         (SELECT SUM(attempts) FROM alert_deliveries d WHERE d.alert_id = a.id),
         (SELECT t.status FROM alert_attempts t JOIN alert_deliveries d ON d.id = t.delivery_id
            WHERE d.alert_id = a.id ORDER BY t.time DESC, t.n DESC LIMIT 1),
         (SELECT t.error FROM alert_attempts t JOIN alert_deliveries d ON d.id = t.delivery_id
            WHERE d.alert_id = a.id ORDER BY t.time DESC, t.n DESC LIMIT 1),
         (SELECT MAX(delivered_at) FROM alert_deliveries d WHERE d.alert_id = a.id)"
    )
}

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        alert_id: r.get(1)?,
        target: Target {
            name: r.get(2)?,
            url: r.get(3)?,
            format: r.get(4)?,
            secret_env: r.get(5)?,
        },
        status: DeliveryStatus::parse(&r.get::<_, String>(6)?).unwrap_or(DeliveryStatus::Failed),
        attempts: r.get::<_, i64>(7)?.clamp(0, i64::from(u32::MAX)) as u32,
        next_at: r.get::<_, Option<i64>>(8)?.map(ts),
        last_status: r
            .get::<_, Option<i64>>(9)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.get(10)?,
        delivered_at: r.get::<_, Option<i64>>(11)?.map(ts),
        created_at: ts(r.get(12)?),
    })
}

const DELIVERY_COLUMNS: &str = "d.id, d.alert_id, d.target, d.url, d.format, d.secret_env, d.status, \
     d.attempts, d.next_at, d.last_status, d.last_error, d.delivered_at, d.created_at";

#[async_trait]
impl AlertStore for SqliteStore {
    async fn insert_alert(
        &self,
        alert: &NewAlert,
        deliveries: &[(String, Target)],
        queue: Enqueue,
    ) -> Result<Recorded> {
        let (alert, deliveries) = (alert.clone(), deliveries.to_vec());
        self.write(move |c| {
            let tx = c.transaction()?;
            let inserted = tx.execute(
                "INSERT INTO alerts (id, dedupe, kind, severity, budget_id, rule_id, subject, created_at, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(dedupe) DO NOTHING",
                params![
                    alert.id,
                    alert.dedupe,
                    alert.kind,
                    alert.severity,
                    alert.budget_id,
                    alert.rule_id,
                    alert.subject,
                    ms(alert.created_at),
                    alert.payload
                ],
            )?;
            if inserted == 0 {
                return Ok(Recorded::Duplicate);
            }
            let mut room = match queue.max_per_hour {
                Some(max) => {
                    let since = queue.at - jiff::SignedDuration::from_hours(1);
                    let sent: i64 = tx.query_row(
                        "SELECT COUNT(*) FROM alert_deliveries WHERE created_at >= ?1 AND status != 'suppressed'",
                        [ms(since)],
                        |r| r.get(0),
                    )?;
                    max.saturating_sub(u64::try_from(sent).unwrap_or(0))
                }
                None => u64::MAX,
            };
            let mut suppressed = 0;
            for (id, t) in &deliveries {
                let status = if room > 0 {
                    room -= 1;
                    DeliveryStatus::Pending
                } else {
                    suppressed += 1;
                    DeliveryStatus::Suppressed
                };
                let now = ms(queue.at);
                let first = ms(queue.first_attempt_at);
                tx.execute(
                    "INSERT INTO alert_deliveries (id, alert_id, target, url, format, secret_env, status, next_at, retry_from, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
                    params![
                        id,
                        alert.id,
                        t.name,
                        t.url,
                        t.format,
                        t.secret_env,
                        status.as_str(),
                        (status == DeliveryStatus::Pending).then_some(first),
                        now
                    ],
                )?;
            }
            tx.commit()?;
            Ok(Recorded::New { suppressed })
        })
        .await
    }

    async fn alert_exists(&self, dedupe: &str) -> Result<bool> {
        let dedupe = dedupe.to_string();
        self.read(move |c| {
            Ok(
                c.query_row("SELECT 1 FROM alerts WHERE dedupe = ?1", [dedupe], |_| {
                    Ok(())
                })
                .optional()?
                .is_some(),
            )
        })
        .await
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueDelivery>> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let due = {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS}, a.kind, a.payload, d.retry_from
                     FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id
                     WHERE d.status = 'pending' AND d.next_at <= ?1
                     ORDER BY d.next_at LIMIT ?2"
                ))?;
                st.query_map(
                    params![ms(now), i64::try_from(limit).unwrap_or(i64::MAX)],
                    |r| {
                        Ok(DueDelivery {
                            delivery: delivery_row(r)?,
                            kind: r.get(13)?,
                            payload: r.get(14)?,
                            retry_from: ts(r.get(15)?),
                        })
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?
            };
            for d in &due {
                tx.execute(
                    "UPDATE alert_deliveries SET next_at = ?2 WHERE id = ?1",
                    params![d.delivery.id, ms(lease_until)],
                )?;
            }
            tx.commit()?;
            Ok(due)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<Timestamp>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT MIN(next_at) FROM alert_deliveries WHERE status = 'pending'",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .map(ts))
        })
        .await
    }

    async fn record_attempt(&self, attempt: &Attempt, next: Next) -> Result<()> {
        let a = attempt.clone();
        self.write(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO alert_attempts (delivery_id, n, time, status, error, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    a.delivery_id,
                    a.n,
                    ms(a.time),
                    a.status,
                    a.error,
                    tok(a.duration_ms)
                ],
            )?;
            let (status, next_at, delivered) = match next {
                Next::Delivered => ("delivered", None, Some(ms(a.time))),
                Next::RetryAt(t) => ("pending", Some(ms(t)), None),
                Next::Failed => ("failed", None, None),
            };
            tx.execute(
                "UPDATE alert_deliveries SET status = ?2, attempts = ?3, next_at = ?4, last_status = ?5,
                   last_error = ?6, delivered_at = COALESCE(?7, delivered_at) WHERE id = ?1",
                params![a.delivery_id, status, a.n, next_at, a.status, a.error, delivered],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn alerts_page(&self, q: &AlertQuery) -> Result<Vec<AlertRow>> {
        let q = q.clone();
        self.read(move |c| {
            let mut sql = format!(
                "SELECT * FROM (SELECT {} FROM alerts a WHERE 1 = 1",
                summary_sql()
            );
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            fn arg(
                sql: &mut String,
                args: &mut Vec<rusqlite::types::Value>,
                clause: &str,
                v: rusqlite::types::Value,
            ) {
                args.push(v);
                sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
            }
            if let Some(k) = q.kind {
                arg(&mut sql, &mut args, " AND a.kind = ?", k.into());
            }
            if let Some(b) = q.budget_id {
                arg(&mut sql, &mut args, " AND a.budget_id = ?", b.into());
            }
            if let Some(r) = q.rule_id {
                arg(&mut sql, &mut args, " AND a.rule_id = ?", r.into());
            }
            if let Some(f) = q.from {
                arg(&mut sql, &mut args, " AND a.created_at >= ?", ms(f).into());
            }
            if let Some(t) = q.to {
                arg(&mut sql, &mut args, " AND a.created_at < ?", ms(t).into());
            }
            if let Some((t, id)) = q.after {
                args.push(ms(t).into());
                args.push(id.into());
                let (a, b) = (args.len() - 1, args.len());
                sql.push_str(&format!(
                    " AND (a.created_at < ?{a} OR (a.created_at = ?{a} AND a.id < ?{b}))"
                ));
            }
            sql.push_str(") WHERE 1 = 1");
            if let Some(s) = q.status {
                arg(&mut sql, &mut args, " AND status = ?", s.into());
            }
            args.push(i64::try_from(q.limit).unwrap_or(i64::MAX).into());
            sql.push_str(&format!(
                " ORDER BY created_at DESC, id DESC LIMIT ?{}",
                args.len()
            ));
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args), alert_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn alert(&self, id: &str) -> Result<Option<(AlertRow, Vec<Delivery>, Vec<Attempt>)>> {
        let id = id.to_string();
        self.read(move |c| {
            let Some(row) = c
                .query_row(
                    &format!("SELECT {} FROM alerts a WHERE a.id = ?1", summary_sql()),
                    [&id],
                    alert_row,
                )
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = c.prepare(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries d WHERE d.alert_id = ?1 ORDER BY d.target, d.id"
            ))?;
            let deliveries = st
                .query_map([&id], delivery_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = c.prepare(
                "SELECT t.delivery_id, t.n, t.time, t.status, t.error, t.duration_ms
                 FROM alert_attempts t JOIN alert_deliveries d ON d.id = t.delivery_id
                 WHERE d.alert_id = ?1 ORDER BY t.time, t.delivery_id, t.n",
            )?;
            let attempts = st
                .query_map([&id], |r| {
                    Ok(Attempt {
                        delivery_id: r.get(0)?,
                        n: r.get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
                        time: ts(r.get(2)?),
                        status: r.get::<_, Option<i64>>(3)?.and_then(|s| u16::try_from(s).ok()),
                        error: r.get(4)?,
                        duration_ms: r.get::<_, i64>(5)?.max(0) as u64,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((row, deliveries, attempts)))
        })
        .await
    }

    async fn redeliver(&self, id: &str, now: Timestamp) -> Result<Option<usize>> {
        let id = id.to_string();
        self.write(move |c| {
            let tx = c.transaction()?;
            let exists = tx
                .query_row("SELECT 1 FROM alerts WHERE id = ?1", [&id], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Ok(None);
            }
            let n = tx.execute(
                "UPDATE alert_deliveries SET status = 'pending', next_at = ?2, retry_from = ?2 WHERE alert_id = ?1",
                params![id, ms(now)],
            )?;
            tx.commit()?;
            Ok(Some(n))
        })
        .await
    }

    async fn last_rule_alert(&self, rule_id: &str, subject: &str) -> Result<Option<Timestamp>> {
        let (rule_id, subject) = (rule_id.to_string(), subject.to_string());
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT MAX(created_at) FROM alerts WHERE rule_id = ?1 AND subject = ?2",
                params![rule_id, subject],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .map(ts))
        })
        .await
    }

    async fn spend_by_minute(
        &self,
        by: SpendBy,
        since: Timestamp,
    ) -> Result<Vec<(String, i64, Money)>> {
        let since = ms(since);
        self.read(move |c| {
            let col = match by {
                SpendBy::All => "'*'",
                SpendBy::Tenant => "tenant",
                SpendBy::User => "user",
                SpendBy::Key => "key_id",
                SpendBy::Model => "model_served",
            };
            let mut st = c.prepare(&format!(
                "SELECT {col}, (time / 60000) * 60000, SUM(cost / 1000000), SUM(cost % 1000000)
                 FROM usage_records WHERE time >= ?1 AND {col} IS NOT NULL AND cost > 0
                 GROUP BY 1, 2"
            ))?;
            let rows = st
                .query_map([since], |r| {
                    let (hi, lo): (i64, i64) = (r.get(2)?, r.get(3)?);
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        Money::from_units(i128::from(hi) * 1_000_000 + i128::from(lo)),
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn list_alert_rules(&self) -> Result<Vec<StoredRule>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, spec, created_at FROM alert_rules ORDER BY created_at, id",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok(StoredRule {
                        id: r.get(0)?,
                        spec: r.get(1)?,
                        created_at: ts(r.get(2)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn put_alert_rule(&self, rule: &StoredRule) -> Result<()> {
        let r = rule.clone();
        specs::put(self, "alert_rules", r.id, r.spec, r.created_at).await
    }

    async fn delete_alert_rule(&self, id: &str) -> Result<bool> {
        specs::delete(self, "alert_rules", id).await
    }

    async fn alert_rules_version(&self) -> Result<(i64, i64)> {
        specs::version(self, "alert_rules").await
    }
}
