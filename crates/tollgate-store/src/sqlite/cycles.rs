//! Cycles reservations and idempotent replies.

use super::*;
use crate::cycles::{CyclesStore, ReservationQuery, StoredReply, StoredReservation};

const RES_COLS: &str =
    "id, tenant, status, idempotency_key, scope_path, created_at, expires_at, finalized_at, doc";

fn reservation_from_row(r: &Row<'_>) -> rusqlite::Result<StoredReservation> {
    Ok(StoredReservation {
        id: r.get(0)?,
        tenant: r.get(1)?,
        status: r.get(2)?,
        idempotency_key: r.get(3)?,
        scope_path: r.get(4)?,
        created_at: ts(r.get(5)?),
        expires_at: ts(r.get(6)?),
        finalized_at: r.get::<_, Option<i64>>(7)?.map(ts),
        doc: r.get(8)?,
    })
}

fn put_reply(c: &Connection, reply: &StoredReply) -> rusqlite::Result<()> {
    c.execute(
        "INSERT OR REPLACE INTO cycles_replies (tenant, endpoint, key, hash, status, body, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            reply.tenant,
            reply.endpoint,
            reply.key,
            reply.hash.as_slice(),
            reply.status,
            reply.body,
            ms(reply.created_at)
        ],
    )?;
    Ok(())
}

fn put_row(c: &Connection, r: &StoredReservation) -> rusqlite::Result<()> {
    c.prepare_cached(&format!(
        "INSERT OR REPLACE INTO cycles_reservations ({RES_COLS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        r.id,
        r.tenant,
        r.status,
        r.idempotency_key,
        r.scope_path,
        ms(r.created_at),
        ms(r.expires_at),
        r.finalized_at.map(ms),
        r.doc
    ])?;
    Ok(())
}

/// One Cycles answer to keep: a reservation row and/or its reply, and who
/// waits for it.
struct Job {
    row: Option<StoredReservation>,
    reply: Option<StoredReply>,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

impl Job {
    fn write(&self, c: &Connection) -> rusqlite::Result<()> {
        if let Some(r) = &self.row {
            put_row(c, r)?;
        }
        if let Some(reply) = &self.reply {
            put_reply(c, reply)?;
        }
        Ok(())
    }
}

/// Group commit for Cycles answers: one thread takes every answer waiting
/// and writes them in one transaction, then tells each caller. A single
/// caller is written at once (no lingering); under load, answers that
/// arrive while a batch commits go in the next — one commit for many
/// requests instead of one each. Should a batch fail, each answer is
/// written alone, so one bad answer fails only its own caller.
pub(super) struct CyclesWriter {
    tx: std::sync::mpsc::Sender<Job>,
}

/// Most answers in one transaction.
const BATCH: usize = 256;

impl CyclesWriter {
    pub(super) fn spawn(
        writer: std::sync::Weak<Mutex<Connection>>,
    ) -> std::io::Result<CyclesWriter> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tollgate-cycles-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < BATCH {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    let Some(conn) = writer.upgrade() else {
                        for j in jobs {
                            let _ = j
                                .done
                                .send(Err(StoreError::Task("the store is closed".into())));
                        }
                        break;
                    };
                    let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
                    let batch = (|| {
                        let tx = c.transaction()?;
                        for j in &jobs {
                            j.write(&tx)?;
                        }
                        tx.commit()
                    })();
                    match batch {
                        Ok(()) => {
                            for j in jobs {
                                let _ = j.done.send(Ok(()));
                            }
                        }
                        Err(_) => {
                            for j in jobs {
                                let alone = (|| {
                                    let tx = c.transaction()?;
                                    j.write(&tx)?;
                                    tx.commit()
                                })();
                                let _ = j.done.send(alone.map_err(StoreError::from));
                            }
                        }
                    }
                }
            })?;
        Ok(CyclesWriter { tx })
    }

    async fn write(
        &self,
        row: Option<StoredReservation>,
        reply: Option<StoredReply>,
    ) -> Result<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = Job { row, reply, done };
        self.tx
            .send(job)
            .map_err(|_| StoreError::Task("the Cycles writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Task("the Cycles writer has stopped".into()))?
    }
}

/// `value` for a LIKE pattern, `%` and `_` taken literally.
fn like_literal(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[async_trait]
impl CyclesStore for SqliteStore {
    async fn put_reservation(
        &self,
        r: &StoredReservation,
        reply: Option<&StoredReply>,
    ) -> Result<()> {
        self.cycles_writer
            .write(Some(r.clone()), reply.cloned())
            .await
    }

    async fn reservation(&self, id: &str) -> Result<Option<StoredReservation>> {
        let id = id.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {RES_COLS} FROM cycles_reservations WHERE id = ?1"),
                [id],
                reservation_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn reservations_page(&self, q: &ReservationQuery) -> Result<Vec<StoredReservation>> {
        let q = q.clone();
        self.read(move |c| {
            let mut sql = format!("SELECT {RES_COLS} FROM cycles_reservations WHERE tenant = ?");
            let mut args: Vec<rusqlite::types::Value> = vec![q.tenant.clone().into()];
            if let Some(s) = &q.status {
                sql.push_str(" AND status = ?");
                args.push(s.clone().into());
            }
            if let Some(k) = &q.idempotency_key {
                sql.push_str(" AND idempotency_key = ?");
                args.push(k.clone().into());
            }
            for seg in &q.segments {
                sql.push_str(" AND ('/' || scope_path || '/') LIKE ? ESCAPE '\\'");
                args.push(format!("%/{}/%", like_literal(seg)).into());
            }
            for (col, op, bound) in [
                ("created_at", ">=", q.created_from),
                ("created_at", "<=", q.created_to),
                ("expires_at", ">=", q.expires_from),
                ("expires_at", "<=", q.expires_to),
                ("finalized_at", ">=", q.finalized_from),
                ("finalized_at", "<=", q.finalized_to),
            ] {
                if let Some(b) = bound {
                    sql.push_str(&format!(" AND {col} {op} ?"));
                    args.push(ms(b).into());
                }
            }
            if let Some((at, id)) = &q.before {
                sql.push_str(" AND (created_at < ? OR (created_at = ? AND id < ?))");
                args.push((*at).into());
                args.push((*at).into());
                args.push(id.clone().into());
            }
            sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
            args.push((q.limit.min(10_000) as i64).into());
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args), reservation_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn active_reservations(&self) -> Result<Vec<StoredReservation>> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {RES_COLS} FROM cycles_reservations WHERE status = 'ACTIVE'"
            ))?;
            let rows = st
                .query_map([], reservation_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn reply(&self, tenant: &str, endpoint: &str, key: &str) -> Result<Option<StoredReply>> {
        let (tenant, endpoint, key) = (tenant.to_string(), endpoint.to_string(), key.to_string());
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT tenant, endpoint, key, hash, status, body, created_at FROM cycles_replies \
                 WHERE tenant = ?1 AND endpoint = ?2 AND key = ?3",
                params![tenant, endpoint, key],
                |r| {
                    let hash: Vec<u8> = r.get(3)?;
                    Ok(StoredReply {
                        tenant: r.get(0)?,
                        endpoint: r.get(1)?,
                        key: r.get(2)?,
                        hash: hash.try_into().unwrap_or([0; 32]),
                        status: r.get(4)?,
                        body: r.get(5)?,
                        created_at: ts(r.get(6)?),
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn put_reply(&self, reply: &StoredReply) -> Result<()> {
        self.cycles_writer.write(None, Some(reply.clone())).await
    }

    async fn mark_over_limit(&self, marks: &[(String, String)], at: Timestamp) -> Result<()> {
        let marks = marks.to_vec();
        self.write(move |c| {
            let tx = c.unchecked_transaction()?;
            for (budget, counter) in &marks {
                tx.execute(
                    "INSERT INTO cycles_over_limit (counter, budget_id, marked_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(counter) DO NOTHING",
                    params![counter, budget, ms(at)],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn over_limit_marks(&self) -> Result<Vec<(String, String)>> {
        self.read(move |c| {
            let mut st = c.prepare("SELECT budget_id, counter FROM cycles_over_limit")?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn clear_over_limit(&self, budget_id: &str) -> Result<u64> {
        let budget_id = budget_id.to_string();
        self.write(move |c| {
            Ok(c.execute(
                "DELETE FROM cycles_over_limit WHERE budget_id = ?1",
                [budget_id],
            )? as u64)
        })
        .await
    }

    async fn delete_replies_before(&self, before: Timestamp) -> Result<u64> {
        self.write(move |c| {
            Ok(c.execute(
                "DELETE FROM cycles_replies WHERE created_at < ?1",
                [ms(before)],
            )? as u64)
        })
        .await
    }
}
