//! The journal writer: reservations, settlements (with their usage
//! records) and releases go on one bounded channel, and one thread writes
//! them to the store in batches — one transaction for many requests. The
//! thread is its own (not tokio's blocking pool): the store call blocks,
//! and a batch moves to it without a copy or a hop between threads.
//!
//! Reservations do not come here: the store's reservation log makes each
//! durable before its request is forwarded. Nothing on the request path
//! waits for a batch (reconciliation at start-up waits, through
//! `write_durable`; `flush` waits for everything so far). Nothing is dropped: a
//! full channel makes senders wait; a failed batch is written again entry
//! by entry (every entry is idempotent), each retried while the failure is
//! transient and quarantined — kept exactly, aside — when the store refuses
//! what it holds; shutdown drains the channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tollgate_store::{JournalEntry, Store};

const CHANNEL: usize = 16_384;
const BATCH: usize = 512;
/// How long a busy writer waits for more entries before committing.
const LINGER: Duration = Duration::from_micros(200);
/// How long settlements wait for a reservation's commit to carry them.
const SETTLE_LINGER: Duration = Duration::from_millis(2);

enum Msg {
    Entry(Box<JournalEntry>, Option<oneshot::Sender<()>>),
    Flush(oneshot::Sender<()>),
}

#[derive(Default, Debug)]
pub struct JournalStats {
    pub entries_written: AtomicU64,
    pub batches: AtomicU64,
    pub write_errors: AtomicU64,
    pub waited_for_space: AtomicU64,
    /// Entries the store refused, kept aside (see [`Store::quarantine`]).
    pub quarantined: AtomicU64,
    /// Holds kept in memory only, the reservation log refusing them
    /// (`fail: open`).
    pub not_durable: AtomicU64,
    /// When that was last logged (Unix seconds).
    pub not_durable_logged_at: std::sync::atomic::AtomicI64,
}

#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Msg>,
    pub stats: Arc<JournalStats>,
}

#[derive(Debug, thiserror::Error)]
#[error("the journal writer has stopped")]
pub struct JournalClosed;

impl Journal {
    /// Starts the writer thread. Failing to start it fails start-up: without
    /// it nothing would be recorded.
    pub fn spawn(store: Arc<dyn Store>) -> std::io::Result<(Journal, WriterHandle)> {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let stats = Arc::new(JournalStats::default());
        let (done_tx, done) = oneshot::channel();
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("tollgate-journal".into())
            .spawn(move || {
                writer(&*store, rx, &thread_stats);
                let _ = done_tx.send(());
            })?;
        Ok((Journal { tx, stats }, WriterHandle { done }))
    }

    /// Writes `entry` and waits until it is durable.
    pub async fn write_durable(&self, entry: JournalEntry) -> Result<(), JournalClosed> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Entry(Box::new(entry), Some(ack)))
            .await
            .map_err(|_| JournalClosed)?;
        done.await.map_err(|_| JournalClosed)
    }

    /// Queues `entry` without waiting. Callable from `Drop`: when the queue
    /// is full the entry is handed to a task that waits for room.
    pub fn write(&self, entry: JournalEntry) {
        match self.tx.try_send(Msg::Entry(Box::new(entry), None)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                self.stats.waited_for_space.fetch_add(1, Ordering::Relaxed);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    if tx.send(msg).await.is_err() {
                        tracing::error!("journal entry lost: writer stopped");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("journal entry lost: writer stopped");
            }
        }
    }

    /// Waits until everything queued before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Resolves once the writer has drained the channel and stopped (every
/// [`Journal`] clone dropped).
pub struct WriterHandle {
    done: oneshot::Receiver<()>,
}

impl WriterHandle {
    pub async fn join(self) {
        let _ = self.done.await;
    }
}

fn writer(store: &dyn Store, mut rx: mpsc::Receiver<Msg>, stats: &JournalStats) {
    let mut batch: Vec<JournalEntry> = Vec::with_capacity(BATCH);
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    let mut busy = false;
    // Group commit: a batch is whatever queued up while the previous one
    // was being written. Settlements wait for nobody, so the writer sleeps
    // SETTLE_LINGER before committing them: one commit carries many
    // requests (each commit rewrites the same hot pages to the WAL), and a
    // sleeping writer is not woken by every send. Someone waiting (a flush,
    // reconciliation) is committed at once, after LINGER when busy.
    while let Some(first) = rx.blocking_recv() {
        let mut flush = drain(&mut rx, Some(first), &mut batch, &mut acks);
        // A writer behind (a full batch waiting) commits at once.
        if !flush && batch.len() < BATCH / 8 {
            let pause = if acks.is_empty() {
                Some(SETTLE_LINGER)
            } else {
                busy.then_some(LINGER)
            };
            if let Some(pause) = pause {
                std::thread::sleep(pause);
                flush = drain(&mut rx, None, &mut batch, &mut acks);
            }
        }
        let _ = flush;
        busy = batch.len() > 2;
        write_batch(store, &mut batch, stats);
        for a in acks.drain(..) {
            let _ = a.send(());
        }
    }
    write_batch(store, &mut batch, stats);
}

/// Moves queued messages into the batch, up to [`BATCH`]; `true` when a
/// flush asks for the batch to be written now.
fn drain(
    rx: &mut mpsc::Receiver<Msg>,
    mut next: Option<Msg>,
    batch: &mut Vec<JournalEntry>,
    acks: &mut Vec<oneshot::Sender<()>>,
) -> bool {
    loop {
        match next.take() {
            Some(Msg::Entry(e, ack)) => {
                batch.push(*e);
                acks.extend(ack);
            }
            Some(Msg::Flush(w)) => {
                acks.push(w);
                return true;
            }
            None => {}
        }
        if batch.len() >= BATCH {
            return false;
        }
        match rx.try_recv() {
            Ok(m) => next = Some(m),
            Err(_) => return false,
        }
    }
}

fn write_batch(store: &dyn Store, batch: &mut Vec<JournalEntry>, stats: &JournalStats) {
    if batch.is_empty() {
        return;
    }
    match store.apply_journal(batch) {
        Ok(()) => {
            stats
                .entries_written
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            stats.batches.fetch_add(1, Ordering::Relaxed);
            batch.clear();
        }
        Err(e) => {
            // The transaction rolled back whole. Write the entries one by
            // one, so that one the store refuses cannot hold up the others.
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, entries = batch.len(), "writing a journal batch failed; writing its entries one by one");
            for entry in batch.drain(..) {
                write_one(store, entry, stats);
            }
            stats.batches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes one entry: retried while the failure is transient (busy, disk
/// full), quarantined when the store refuses what it holds.
fn write_one(store: &dyn Store, entry: JournalEntry, stats: &JournalStats) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let err = match store.apply_journal(std::slice::from_ref(&entry)) {
            Ok(()) => {
                stats.entries_written.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) if !e.is_transient() => match store.quarantine(&entry, &e.to_string()) {
                Ok(()) => {
                    stats.quarantined.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "journal entry refused by the store; quarantined (kept, see `tollgate quarantine list`)");
                    return;
                }
                Err(q) => q,
            },
            Err(e) => e,
        };
        stats.write_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %err, "writing a journal entry failed; retrying");
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
