//! The journal writer: reservations, settlements (with their usage
//! records) and releases go on one bounded channel, and one task writes
//! them to the store in batches — one transaction for many requests.
//!
//! A reservation's sender waits for the batch that holds it to commit
//! (group commit: the request is forwarded only once its reservation is
//! durable); settlements and releases do not wait. Nothing is dropped: a
//! full channel makes senders wait, a failed batch is retried (every entry
//! is idempotent), and shutdown drains the channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tollgate_store::{JournalEntry, Store};

const CHANNEL: usize = 16_384;
const BATCH: usize = 512;

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
    pub fn spawn(store: Arc<dyn Store>) -> (Journal, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let stats = Arc::new(JournalStats::default());
        let task = tokio::spawn(writer(store, rx, stats.clone()));
        (Journal { tx, stats }, task)
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

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>, stats: Arc<JournalStats>) {
    let mut batch: Vec<JournalEntry> = Vec::with_capacity(BATCH);
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    // Group commit without waiting: a batch is whatever queued up while the
    // previous one was being written. One request alone pays one
    // transaction; a thousand concurrent ones share a few.
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Msg::Entry(e, ack)) => {
                    batch.push(*e);
                    acks.extend(ack);
                }
                Some(Msg::Flush(w)) => {
                    acks.push(w);
                    break;
                }
                None => {}
            }
            if batch.len() >= BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(m) => next = Some(m),
                Err(_) => break,
            }
        }
        write_batch(&*store, &mut batch, &stats).await;
        for a in acks.drain(..) {
            let _ = a.send(());
        }
    }
    write_batch(&*store, &mut batch, &stats).await;
}

async fn write_batch(store: &dyn Store, batch: &mut Vec<JournalEntry>, stats: &JournalStats) {
    if batch.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        match store.apply_journal(batch).await {
            Ok(()) => {
                stats
                    .entries_written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                batch.clear();
                return;
            }
            Err(e) => {
                // The transaction rolled back whole; retrying it is safe.
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, entries = batch.len(), "writing the journal failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
