//! The embedded default: one SQLite file in WAL mode.
//!
//! Two connections: one writer (SQLite allows one writer at a time anyway)
//! and one reader, so reports never wait behind a batch of inserts. Calls
//! run on tokio's blocking pool. `synchronous=NORMAL` with WAL: a committed
//! transaction survives a process crash; the last transactions before a
//! power loss may not (documented in ARCHITECTURE.md).
//!
//! Checkpoints (copying WAL pages back into the database file) run on a
//! thread of their own, so the writer's commits — which requests wait on —
//! never stall behind one. The writer keeps a high auto-checkpoint as a
//! backstop: it bounds the WAL when the background pass cannot finish.

mod reslog;
mod schema;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tollgate_core::{Flags, KeyRecord, Money, Usage, UsageRecord};

use tollgate_core::ledger::Amount;

use crate::journal::{JournalEntry, OpenReservation};
use crate::query::{GroupBy, RecordPage, RecordQuery, ReportQuery, ReportRow};
use crate::{
    Quarantined, Result, ScopeSpend, Store, StoreError, StoredBudget, StoredPrice, SubjectOf,
};

#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    reslog: Arc<reslog::ReservationLog>,
    /// Reservations a previous process left open in the log (reported by
    /// `load_ledger` until their settlements commit).
    recovered: Arc<Vec<OpenReservation>>,
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        let transient = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _) if matches!(
                f.code,
                DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | OutOfMemory | CannotOpen
            )
        );
        StoreError::Backend {
            message: e.to_string(),
            transient,
        }
    }
}

impl SqliteStore {
    /// Writes usage records outside a journal batch (tests); a record whose
    /// `request_id` is already stored is skipped.
    #[cfg(test)]
    pub(crate) async fn insert_records(&self, records: &[UsageRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = records.to_vec();
        self.write(move |c| {
            let tx = c.transaction()?;
            for r in &batch {
                insert_record(&tx, r)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Opens (creating if needed) and migrates the database at `path`.
    pub async fn open(path: &str) -> Result<SqliteStore> {
        let path = path.to_string();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = Path::new(&path).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Io(format!("cannot create {dir:?}: {e}")))?;
            }
            let mut writer = Connection::open(&path)?;
            configure(&writer)?;
            schema::migrate(&writer)?;
            writer.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)?;
            writer.busy_handler(Some(writer_busy))?;
            writer.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
            let reader = Connection::open(&path)?;
            configure(&reader)?;
            let checkpointer = Connection::open(&path)?;
            configure(&checkpointer)?;
            let (reslog, recovered) = reslog::ReservationLog::open(Path::new(&path), |id| {
                Ok(writer
                    .prepare_cached(
                        "SELECT 1 FROM usage_records WHERE request_id = ?1 \
                         UNION ALL SELECT 1 FROM quarantined_records WHERE request_id = ?1",
                    )?
                    .query_row([id], |_| Ok(()))
                    .optional()?
                    .is_some())
            })?;
            let writer = Arc::new(Mutex::new(writer));
            spawn_checkpointer(checkpointer, Arc::downgrade(&writer));
            Ok(SqliteStore {
                writer,
                reader: Arc::new(Mutex::new(reader)),
                reslog: Arc::new(reslog),
                recovered: Arc::new(recovered),
            })
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    async fn with<T: Send + 'static>(
        conn: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable.
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        Self::with(&self.writer, f).await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        Self::with(&self.reader, f).await
    }
}

/// The writer checkpoints itself only past this many WAL pages (64 MiB).
const BACKSTOP_PAGES: i64 = 16_384;
/// A WAL file is truncated back to this size after a reset.
const WAL_SIZE_LIMIT: i64 = 64 << 20;
/// Past this many WAL pages (32 MiB) the background pass restarts the WAL.
const RESTART_AT_PAGES: i64 = 8_192;
/// How often the background pass copies committed pages to the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Checkpoints in the background until the store is dropped. A PASSIVE
/// pass never blocks the writer, but under steady writes it never catches
/// up either, and the WAL only starts over once a checkpoint has caught up
/// before the next write. So once the WAL is long, a pass that got
/// everything it saw is followed by a RESTART, which holds the writer back
/// only for the few frames committed meanwhile.
fn spawn_checkpointer(conn: Connection, alive: std::sync::Weak<Mutex<Connection>>) {
    let spawned = std::thread::Builder::new()
        .name("tollgate-checkpoint".into())
        .spawn(move || {
            background_priority();
            while alive.strong_count() > 0 {
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Err(e) = checkpoint(&conn) {
                    tracing::warn!(error = %e, "background checkpoint failed");
                }
            }
        });
    if let Err(e) = spawned {
        // The writer's own auto-checkpoint still bounds the WAL.
        tracing::warn!(error = %e, "cannot start the checkpoint thread");
    }
}

/// The writer waits out a RESTART checkpoint in 50 µs steps (SQLite's
/// default handler sleeps 1, 2, 5 ms ... — too coarse for commits that
/// requests wait on), giving up after 5 s like the other connections.
fn writer_busy(attempt: i32) -> bool {
    const STEP: std::time::Duration = std::time::Duration::from_micros(50);
    if attempt >= 100_000 {
        return false;
    }
    std::thread::sleep(STEP);
    true
}

fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    let pass = |mode: &str| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
    };
    let (log, copied) = pass("PASSIVE")?;
    if log >= RESTART_AT_PAGES && copied == log {
        pass("RESTART")?;
    }
    Ok(())
}

/// Nice 19: a checkpoint mostly runs while the core is otherwise idle and
/// yields quickly to request work (at normal priority, on one core, each
/// pass stalled requests by 3-15 ms). Not SCHED_IDLE: under saturation an
/// idle-class thread starved in the middle of a pass, holding its WAL read
/// lock, so neither it nor the writer's backstop could restart the WAL,
/// which grew past 150 MB in seconds.
fn background_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            policy,
        ) {
            tracing::debug!(error = ?e, "cannot lower the checkpoint thread's priority");
        }
    }
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A key's model globs. An unreadable list fails closed: an empty list
/// means every model, so a damaged one must mean none — the glob `""`,
/// which no model name (never empty) matches.
fn key_models(id: &str, stored: &str) -> Vec<String> {
    match serde_json::from_str(stored) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(key = %id, error = %e, "a key's model list is unreadable; the key may use no model");
            vec![String::new()]
        }
    }
}

const KEY_COLS: &str = "id, hash, prefix, name, user, tenant, role, models, expires_at, revoked, trusted, created_at, updated_at";

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let hash: Vec<u8> = r.get(1)?;
    let models: String = r.get(7)?;
    let id: String = r.get(0)?;
    Ok(KeyRecord {
        models: key_models(&id, &models),
        id,
        hash: hash.try_into().unwrap_or([0; 32]),
        prefix: r.get(2)?,
        name: r.get(3)?,
        user: r.get(4)?,
        tenant: r.get(5)?,
        role: r.get(6)?,
        expires_at: r.get::<_, Option<i64>>(8)?.map(ts),
        revoked: r.get(9)?,
        trusted: r.get(10)?,
        created_at: ts(r.get(11)?),
        updated_at: ts(r.get(12)?),
    })
}

const RECORD_COLS: &str = "request_id, time, key_id, user, tenant, session, budgets, provider, model_requested, model_served, input_tokens, output_tokens, cached_input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens, cost, latency_ms, ttft_ms, status, flags, seq";

fn record_from_row(r: &Row<'_>) -> rusqlite::Result<UsageRecord> {
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

fn tok(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Appends the record filters shared by records and reports.
fn filters(
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

fn parse_units(s: &str) -> Result<Money> {
    s.parse::<i128>()
        .map(Money::from_units)
        .map_err(|_| StoreError::Corrupt(format!("stored amount {s:?} is not an integer")))
}

fn insert_record(tx: &rusqlite::Transaction<'_>, r: &UsageRecord) -> Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO usage_records (request_id, time, key_id, user, tenant, session, budgets, provider, model_requested, model_served, input_tokens, output_tokens, cached_input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens, cost, latency_ms, ttft_ms, status, flags) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
    )?;
    let cost = i64::try_from(r.cost.units()).map_err(|_| {
        StoreError::Invalid(format!("cost {} of {} out of range", r.cost, r.request_id))
    })?;
    let u = &r.usage;
    st.execute(params![
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
    Ok(())
}

/// Adds `amount` to a counter (read, add, write: exact i128 money in TEXT,
/// and this connection is the only writer).
fn add_to_counter(tx: &rusqlite::Transaction<'_>, key: &str, amount: Amount) -> Result<()> {
    let cur: Option<(String, i64)> = tx
        .prepare_cached("SELECT spent_money, spent_tokens FROM ledger_counters WHERE key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (money, tokens) = match cur {
        Some((m, t)) => (parse_units(&m)?, t.max(0) as u64),
        None => (Money::ZERO, 0),
    };
    let money = money
        .checked_add(amount.money)
        .ok_or_else(|| StoreError::Invalid(format!("counter {key} overflow")))?;
    let tokens = tokens.saturating_add(amount.tokens);
    tx.prepare_cached(
        "INSERT INTO ledger_counters (key, spent_money, spent_tokens) VALUES (?1, ?2, ?3) \
         ON CONFLICT(key) DO UPDATE SET spent_money = excluded.spent_money, spent_tokens = excluded.spent_tokens",
    )?
    .execute(params![key, money.units().to_string(), tok(tokens)])?;
    Ok(())
}

fn apply_entry<'a>(
    tx: &rusqlite::Transaction<'_>,
    e: &'a JournalEntry,
    deltas: &mut std::collections::HashMap<&'a str, Amount>,
) -> Result<()> {
    match e {
        JournalEntry::Settle {
            reservation,
            charges,
            actual,
            record,
        } => {
            if let Some(id) = reservation {
                tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                    .execute([id])?;
            }
            for key in charges {
                let d = deltas.entry(key.as_str()).or_default();
                *d = d.plus(*actual);
            }
            insert_record(tx, record)?;
        }
        JournalEntry::Release { id } => {
            tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                .execute([id])?;
        }
        JournalEntry::SetCounter { key, spent } => {
            // Increments summed earlier in this batch belong to records not
            // yet stored when the spend was counted: they still apply.
            tx.prepare_cached(
                "INSERT INTO ledger_counters (key, spent_money, spent_tokens) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(key) DO UPDATE SET spent_money = excluded.spent_money, spent_tokens = excluded.spent_tokens",
            )?
            .execute(params![key, spent.money.units().to_string(), tok(spent.tokens)])?;
        }
    }
    Ok(())
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid(e.to_string()))
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_key(&self, key: &KeyRecord) -> Result<()> {
        let k = key.clone();
        self.write(move |c| {
            let models = serde_json::to_string(&k.models).unwrap_or_else(|_| "[]".into());
            let n = c.execute(
                &format!("INSERT OR IGNORE INTO keys ({KEY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
                params![
                    k.id, k.hash.as_slice(), k.prefix, k.name, k.user, k.tenant, k.role, models,
                    k.expires_at.map(ms), k.revoked, k.trusted, ms(k.created_at), ms(k.updated_at)
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Duplicate(k.id));
            }
            Ok(())
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {KEY_COLS} FROM keys ORDER BY created_at, id"
            ))?;
            let rows = st
                .query_map([], key_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn keys_page(&self, after: Option<String>, limit: usize) -> Result<Vec<KeyRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {KEY_COLS} FROM keys WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = st
                .query_map(params![after, limit as i64], key_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn key_by_hash(&self, hash: [u8; 32]) -> Result<Option<KeyRecord>> {
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {KEY_COLS} FROM keys WHERE hash = ?1"),
                [hash.as_slice()],
                key_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn keys_updated_since(&self, since: Timestamp) -> Result<Vec<KeyRecord>> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {KEY_COLS} FROM keys WHERE updated_at >= ?1"
            ))?;
            let rows = st
                .query_map([ms(since)], key_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn revoke_key(&self, id: &str, at: Timestamp) -> Result<bool> {
        let id = id.to_string();
        self.write(move |c| {
            let n = c.execute(
                "UPDATE keys SET revoked = 1, updated_at = ?2 WHERE id = ?1",
                params![id, ms(at)],
            )?;
            Ok(n > 0)
        })
        .await
    }

    fn apply_journal(&self, entries: &[JournalEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut c = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = c.transaction()?;
        // Counter increments are summed per key and written once per
        // batch: under load every request touches the same few budgets.
        let mut deltas: std::collections::HashMap<&str, Amount> = std::collections::HashMap::new();
        for e in entries {
            apply_entry(&tx, e, &mut deltas)?;
        }
        for (key, amount) in deltas {
            add_to_counter(&tx, key, amount)?;
        }
        tx.commit()?;
        // Durable now: the log's copies of these reservations are closed.
        self.reslog.settled(entries.iter().filter_map(|e| match e {
            JournalEntry::Settle {
                reservation: Some(id),
                ..
            } => Some(id.as_str()),
            _ => None,
        }));
        for e in entries {
            if let JournalEntry::Release { id } = e {
                self.reslog.release(id)?;
            }
        }
        Ok(())
    }

    fn quarantine(&self, entry: &JournalEntry, reason: &str) -> Result<()> {
        let mut c = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = c.transaction()?;
        let mut closed = None;
        let mut released = None;
        match entry {
            JournalEntry::Settle {
                reservation,
                charges,
                actual,
                record,
            } => {
                if let Some(id) = reservation {
                    tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                        .execute([id])?;
                    closed = Some(id.as_str());
                }
                for key in charges {
                    add_to_counter(&tx, key, *actual)?;
                }
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO quarantined_records (request_id, time, reason, record) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    record.request_id,
                    ms(Timestamp::now()),
                    reason,
                    to_json(record.as_ref())?
                ])?;
            }
            JournalEntry::Release { id } => {
                tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                    .execute([id])?;
                released = Some(id.as_str());
            }
            JournalEntry::SetCounter { .. } => {}
        }
        tx.commit()?;
        self.reslog.settled(closed);
        if let Some(id) = released {
            self.reslog.release(id)?;
        }
        Ok(())
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

    async fn quarantined(&self) -> Result<Vec<Quarantined>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT request_id, time, reason, record FROM quarantined_records ORDER BY time",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(request_id, t, reason, record)| {
                    Ok(Quarantined {
                        request_id,
                        quarantined_at: ts(t),
                        reason,
                        record: serde_json::from_str(&record)
                            .map_err(|e| StoreError::Corrupt(format!("quarantined record: {e}")))?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn retry_quarantined(&self) -> Result<(usize, usize)> {
        let all = self.quarantined().await?;
        self.write(move |c| {
            let (mut applied, mut failing) = (0, 0);
            for q in all {
                // Each in its own transaction: one that still fails keeps its place.
                let tx = c.transaction()?;
                match insert_record(&tx, &q.record) {
                    Ok(()) => {
                        tx.prepare_cached("DELETE FROM quarantined_records WHERE request_id = ?1")?
                            .execute([&q.request_id])?;
                        tx.commit()?;
                        applied += 1;
                    }
                    Err(e) => {
                        drop(tx);
                        c.prepare_cached(
                            "UPDATE quarantined_records SET reason = ?2 WHERE request_id = ?1",
                        )?
                        .execute(params![q.request_id, e.to_string()])?;
                        failing += 1;
                    }
                }
            }
            Ok((applied, failing))
        })
        .await
    }

    async fn quarantined_count(&self) -> Result<u64> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT COUNT(*) FROM quarantined_records", [], |r| {
                    r.get::<_, i64>(0)
                })?
                .max(0) as u64,
            )
        })
        .await
    }

    fn log_reservation(&self, r: &OpenReservation) -> Result<()> {
        self.reslog.reserve(r)
    }

    async fn load_ledger(&self) -> Result<(Vec<(String, Amount)>, Vec<OpenReservation>)> {
        let table = self.read(|c| {
            let mut st = c.prepare("SELECT key, spent_money, spent_tokens FROM ledger_counters")?;
            let counters = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .map(|(k, m, t)| Ok((k, Amount::new(parse_units(&m)?, t.max(0) as u64))))
                .collect::<Result<Vec<_>>>()?;
            let mut st = c.prepare(
                "SELECT id, charges, amount_money, amount_tokens, expires_at, template FROM reservations ORDER BY created_at",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let open = rows
                .into_iter()
                .map(|(id, charges, money, tokens, exp, template)| {
                    Ok(OpenReservation {
                        charges: serde_json::from_str::<Vec<String>>(&charges).map_err(|e| StoreError::Corrupt(format!("reservation {id}: {e}")))?,
                        amount: Amount::new(parse_units(&money)?, tokens.max(0) as u64),
                        expires_at: ts(exp),
                        template: serde_json::from_str(&template).map_err(|e| StoreError::Corrupt(format!("reservation {id}: {e}")))?,
                        id,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((counters, open))
        })
        .await?;
        let (counters, mut open) = table;
        open.extend(
            self.recovered
                .iter()
                .filter(|r| self.reslog.is_open(&r.id))
                .cloned(),
        );
        Ok((counters, open))
    }

    async fn list_budgets(&self) -> Result<Vec<StoredBudget>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.budgets_page(after, 10_000).await?;
            let Some(last) = page.last() else {
                return Ok(all);
            };
            after = Some((last.created_at, last.id.clone()));
            all.extend(page);
        }
    }

    async fn budgets_page(
        &self,
        after: Option<(Timestamp, String)>,
        limit: usize,
    ) -> Result<Vec<StoredBudget>> {
        let (after_ms, after_id) = after.map_or((None, None), |(t, id)| (Some(ms(t)), Some(id)));
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, spec, created_at FROM budgets \
                 WHERE ?1 IS NULL OR (created_at, id) > (?1, ?2) ORDER BY created_at, id LIMIT ?3",
            )?;
            let rows = st
                .query_map(params![after_ms, after_id, limit as i64], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, spec, created)| {
                    Ok(StoredBudget {
                        input: serde_json::from_str(&spec)
                            .map_err(|e| StoreError::Corrupt(format!("stored budget {id}: {e}")))?,
                        id,
                        created_at: ts(created),
                    })
                })
                .collect()
        })
        .await
    }

    async fn budget(&self, id: &str) -> Result<Option<StoredBudget>> {
        let id = id.to_string();
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT spec, created_at FROM budgets WHERE id = ?1",
                    [&id],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?;
            row.map(|(spec, created)| {
                Ok(StoredBudget {
                    input: serde_json::from_str(&spec)
                        .map_err(|e| StoreError::Corrupt(format!("stored budget {id}: {e}")))?,
                    id,
                    created_at: ts(created),
                })
            })
            .transpose()
        })
        .await
    }

    async fn put_budget(&self, b: &StoredBudget) -> Result<()> {
        let b = b.clone();
        let spec =
            serde_json::to_string(&b.input).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.write(move |c| {
            c.execute(
                "INSERT INTO budgets (id, spec, created_at, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(id) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
                params![b.id, spec, ms(b.created_at), ms(Timestamp::now())],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_budget(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |c| Ok(c.execute("DELETE FROM budgets WHERE id = ?1", [id])? > 0))
            .await
    }

    async fn budgets_version(&self) -> Result<(i64, i64)> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM budgets",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
    }

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

    async fn budget_first_seen(&self, id: &str, now: Timestamp) -> Result<(Timestamp, bool)> {
        let (id, now) = (id.to_string(), ms(now));
        self.write(move |c| {
            let inserted = c.execute(
                "INSERT OR IGNORE INTO budget_first_seen (id, at) VALUES (?1, ?2)",
                params![id, now],
            )? > 0;
            let at: i64 = c.query_row(
                "SELECT at FROM budget_first_seen WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            Ok((ts(at), inserted))
        })
        .await
    }

    async fn report(&self, q: &ReportQuery) -> Result<Vec<ReportRow>> {
        let q = q.clone();
        self.read(move |c| {
            use rusqlite::types::Value as V;
            let key = match q.group_by {
                GroupBy::User => "user",
                GroupBy::Tenant => "tenant",
                GroupBy::Session => "session",
                GroupBy::Model => "model_served",
                GroupBy::Key => "key_id",
                GroupBy::Provider => "provider",
                GroupBy::Day => "strftime('%Y-%m-%d', time / 1000, 'unixepoch')",
                GroupBy::Hour => "strftime('%Y-%m-%dT%H:00:00Z', time / 1000, 'unixepoch')",
            };
            // Cost is summed in two parts so that no SUM can overflow i64:
            // whole micro-dollars, and the sub-micro remainders.
            let mut sql = format!(
                "SELECT {key} AS k, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), \
                 SUM(cache_write_5m_tokens), SUM(cache_write_1h_tokens), SUM(reasoning_tokens), \
                 SUM(cost / 1000000), SUM(cost % 1000000), \
                 SUM(CASE WHEN (',' || flags || ',') LIKE '%,blocked,%' THEN 1 ELSE 0 END) \
                 FROM usage_records WHERE 1=1"
            );
            let mut args: Vec<V> = Vec::new();
            filters(&mut sql, &mut args, q.from, q.to, &[("user", &q.user), ("tenant", &q.tenant)]);
            sql.push_str(" GROUP BY k ORDER BY k");
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args), |r| {
                    let u = |i: usize| -> rusqlite::Result<u64> {
                        Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0).max(0) as u64)
                    };
                    let hi = i128::from(r.get::<_, Option<i64>>(8)?.unwrap_or(0));
                    let lo = i128::from(r.get::<_, Option<i64>>(9)?.unwrap_or(0));
                    let refused = u(10)?;
                    Ok(ReportRow {
                        key: r.get(0)?,
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
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn put_price(&self, model: &str, price: &StoredPrice) -> Result<()> {
        let model = model.to_string();
        let json =
            serde_json::to_string(&price.price).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let provider = price.provider.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO prices (model, price, updated_at, provider) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(model) DO UPDATE SET price = excluded.price, \
                 updated_at = excluded.updated_at, provider = excluded.provider",
                params![model, json, ms(Timestamp::now()), provider],
            )?;
            Ok(())
        })
        .await
    }

    async fn prices_version(&self) -> Result<(i64, i64)> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM prices",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
    }

    async fn prices(&self) -> Result<Vec<(String, StoredPrice)>> {
        self.read(|c| {
            let mut st = c.prepare("SELECT model, price, provider FROM prices ORDER BY model")?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(m, p, provider)| {
                    serde_json::from_str(&p)
                        .map(|price| (m.clone(), StoredPrice { price, provider }))
                        .map_err(|e| StoreError::Corrupt(format!("stored price of {m:?}: {e}")))
                })
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests;
