//! The usage-record writer: records go on a bounded channel and a single
//! task writes them to the store in batches (flushed by size or time), off
//! the request path.
//!
//! Nothing charged is dropped: a full channel makes the sender wait (back
//! pressure), a failed write is retried, and shutdown drains the channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tollgate_core::UsageRecord;
use tollgate_store::Store;

const CHANNEL: usize = 16_384;
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_millis(50);

enum Msg {
    Record(Box<UsageRecord>),
    Flush(oneshot::Sender<()>),
}

#[derive(Default, Debug)]
pub struct RecorderStats {
    pub written: AtomicU64,
    pub write_errors: AtomicU64,
    pub waited_for_space: AtomicU64,
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Msg>,
    pub stats: Arc<RecorderStats>,
}

impl Recorder {
    /// Starts the writer task.
    pub fn spawn(store: Arc<dyn Store>) -> (Recorder, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let stats = Arc::new(RecorderStats::default());
        let task = tokio::spawn(writer(store, rx, stats.clone()));
        (Recorder { tx, stats }, task)
    }

    /// Queues a record. Never drops it: when the queue is full the record
    /// is handed to a task that waits for room.
    pub fn record(&self, r: UsageRecord) {
        match self.tx.try_send(Msg::Record(Box::new(r))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                self.stats.waited_for_space.fetch_add(1, Ordering::Relaxed);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    if tx.send(msg).await.is_err() {
                        tracing::error!("usage record lost: writer stopped");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("usage record lost: writer stopped");
            }
        }
    }

    /// Waits until every record queued before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>, stats: Arc<RecorderStats>) {
    let mut batch: Vec<UsageRecord> = Vec::with_capacity(BATCH);
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        // Wait for the first message, then gather more for a short while.
        let Some(first) = rx.recv().await else { break };
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Msg::Record(r)) => batch.push(*r),
                Some(Msg::Flush(w)) => {
                    waiters.push(w);
                    break;
                }
                None => {}
            }
            if batch.len() >= BATCH {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => next = Some(m),
                Ok(None) | Err(_) => break,
            }
        }
        write_batch(&*store, &mut batch, &stats).await;
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
    write_batch(&*store, &mut batch, &stats).await;
}

async fn write_batch(store: &dyn Store, batch: &mut Vec<UsageRecord>, stats: &RecorderStats) {
    if batch.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        match store.insert_records(batch).await {
            Ok(()) => {
                stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                return;
            }
            Err(e) => {
                // Inserts are idempotent per request id, so retrying is safe.
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, records = batch.len(), "writing usage records failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
