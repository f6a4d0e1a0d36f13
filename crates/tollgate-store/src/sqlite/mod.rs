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

mod alerts;
mod budgets;
mod cycles;
mod keys;
mod ledger;
mod prices;
mod rates;
mod reports;
mod reslog;
mod usage;

mod schema;

#[cfg(test)]
use usage::insert_record;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tollgate_core::{Flags, KeyRecord, Money, Usage, UsageRecord};

use tollgate_core::ledger::Amount;

use crate::journal::{JournalEntry, OpenReservation};
use crate::query::{GroupBy, RecordPage, RecordQuery, ReportQuery, ReportRow, UsersQuery};
use crate::{
    AlertStore, BudgetStore, KeyStore, LedgerStore, PriceStore, Quarantined, RateLimitStore,
    Result, ScopeSpend, StoreError, StoredBudget, StoredPrice, StoredRateLimit, SubjectOf,
    UsageStore,
};

/// Tables of JSON specs by id (budgets, rate limits): one way to write,
/// delete and version them. `table` is a constant of this crate.
mod specs {
    use super::*;

    pub(super) async fn put(
        s: &SqliteStore,
        table: &'static str,
        id: String,
        spec: String,
        created_at: Timestamp,
    ) -> Result<()> {
        s.write(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO {table} (id, spec, created_at, updated_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(id) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at"
                ),
                params![id, spec, ms(created_at), ms(Timestamp::now())],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn delete(s: &SqliteStore, table: &'static str, id: &str) -> Result<bool> {
        let id = id.to_string();
        s.write(move |c| Ok(c.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [id])? > 0))
            .await
    }

    pub(super) async fn version(s: &SqliteStore, table: &'static str) -> Result<(i64, i64)> {
        s.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM {table}"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    reslog: Arc<reslog::ReservationLog>,
    /// Cycles answers, group-committed on the writer connection.
    cycles_writer: Arc<cycles::CyclesWriter>,
    /// The database file (exports open connections of their own).
    path: Arc<str>,
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
            let cycles_writer = cycles::CyclesWriter::spawn(Arc::downgrade(&writer))
                .map_err(|e| StoreError::Io(format!("cannot start the Cycles writer: {e}")))?;
            Ok(SqliteStore {
                cycles_writer: Arc::new(cycles_writer),
                writer,
                reader: Arc::new(Mutex::new(reader)),
                reslog: Arc::new(reslog),
                path: path.as_str().into(),
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

fn tok(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn parse_units(s: &str) -> Result<Money> {
    s.parse::<i128>()
        .map(Money::from_units)
        .map_err(|_| StoreError::Corrupt(format!("stored amount {s:?} is not an integer")))
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests;
