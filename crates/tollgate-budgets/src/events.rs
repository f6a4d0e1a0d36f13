//! The engine's event stream: every settled request, every refused
//! reservation, and every change of a budget's level (ok → low →
//! over_limit and back, per period), each published once.
//!
//! Two kinds of subscriber:
//! - [`Events::subscribe_lossless`] (alerts, anything that must not miss
//!   an event): a bounded queue per subscriber; when it is full the event
//!   waits for room in a task, as journal entries do, so publishing never
//!   blocks a request and nothing is dropped. Events carry a sequence
//!   number: the order they were published in.
//! - [`Events::subscribe`] (live views): a broadcast ring; a subscriber
//!   that falls behind is told how many events it missed and goes on.
//!
//! Publishing costs nothing when no one subscribes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tollgate_core::UsageRecord;

/// How far a budget is from its limit, by what it has spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    /// Below its low threshold (`low_threshold_pct`, `low_threshold_usd`
    /// or `low_threshold_tokens`).
    Low,
    /// At its limit: its spend reached it, or it refused a request. A
    /// settlement it affords after all (a smaller request, a raised limit)
    /// moves it back by what it has spent.
    OverLimit,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A request settled: its usage record (what it was charged).
    Settled { record: Arc<UsageRecord> },
    /// A reservation a budget refused.
    Refused {
        request_id: String,
        budget_id: String,
        subject: String,
        status: u16,
    },
    /// A budget's level for one subject changed within a period (or, for
    /// a rolling window, within the window).
    Level {
        budget_id: String,
        subject: String,
        /// The period's start (ms); the window's oldest bucket for rolling ones.
        period_start: i64,
        from: Level,
        to: Level,
    },
    /// A budget passed one of its warning marks (once per period and mark).
    Warning {
        budget_id: String,
        subject: String,
        period_start: i64,
        at_pct: u8,
        /// The mark's message, rendered.
        message: String,
    },
    /// A `warn` budget reached its limit: requests pass it from now on,
    /// flagged (once per period).
    SoftLimit {
        budget_id: String,
        subject: String,
        period_start: i64,
    },
    /// A budget's spend passed one of its alert thresholds (once per
    /// period and mark in this process; alerts deduplicate durably).
    Threshold {
        budget_id: String,
        subject: String,
        period_start: i64,
        threshold_pct: u8,
    },
}

/// An event and its place in the stream.
#[derive(Clone, Debug, Serialize)]
pub struct Published {
    pub seq: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// Room in a lossless subscriber's queue before events wait in tasks.
const LOSSLESS_QUEUE: usize = 4096;
/// A live view further behind than this misses events.
const RING: usize = 4096;

pub struct Events {
    seq: AtomicU64,
    ring: broadcast::Sender<Published>,
    lossless: Mutex<Vec<Lossless>>,
    /// Lossless subscribers still alive, roughly: with no live view,
    /// zero means events are not even built.
    lossless_count: AtomicU64,
    /// Of those, the ones that take `Settled` events (a record per
    /// request: built only when someone takes them).
    settled_count: AtomicU64,
}

struct Lossless {
    tx: mpsc::Sender<Published>,
    settled: bool,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            seq: AtomicU64::new(0),
            ring: broadcast::channel(RING).0,
            lossless: Mutex::new(Vec::new()),
            lossless_count: AtomicU64::new(0),
            settled_count: AtomicU64::new(0),
        }
    }
}

impl Events {
    /// Whether anyone listens (callers skip building events otherwise).
    pub fn wanted(&self) -> bool {
        self.ring.receiver_count() > 0 || self.lossless_count.load(Ordering::Relaxed) > 0
    }

    /// A live view's subscription: lags rather than holding anything up.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.ring.subscribe()
    }

    /// Whether anyone takes `Settled` events.
    pub fn settled_wanted(&self) -> bool {
        self.ring.receiver_count() > 0 || self.settled_count.load(Ordering::Relaxed) > 0
    }

    /// A subscription that receives every event published from now on.
    pub fn subscribe_lossless(&self) -> mpsc::Receiver<Published> {
        self.subscribe_lossless_to(true)
    }

    /// As [`Events::subscribe_lossless`]; without `settled`, every event
    /// but the per-request `Settled` ones.
    pub fn subscribe_lossless_to(&self, settled: bool) -> mpsc::Receiver<Published> {
        let (tx, rx) = mpsc::channel(LOSSLESS_QUEUE);
        let mut subs = self.lossless.lock().unwrap_or_else(|e| e.into_inner());
        subs.push(Lossless { tx, settled });
        self.count(&subs);
        rx
    }

    fn count(&self, subs: &[Lossless]) {
        self.lossless_count
            .store(subs.len() as u64, Ordering::Relaxed);
        self.settled_count.store(
            subs.iter().filter(|s| s.settled).count() as u64,
            Ordering::Relaxed,
        );
    }

    /// Publishes `event` to every subscriber; never blocks.
    pub fn publish(&self, event: Event) {
        let settled = matches!(event, Event::Settled { .. });
        let p = Published {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            event,
        };
        if self.lossless_count.load(Ordering::Relaxed) > 0 {
            let mut subs = self.lossless.lock().unwrap_or_else(|e| e.into_inner());
            subs.retain(|s| {
                if settled && !s.settled {
                    return !s.tx.is_closed();
                }
                match s.tx.try_send(p.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(p)) => {
                        let tx = s.tx.clone();
                        tokio::spawn(async move {
                            let _ = tx.send(p).await;
                        });
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            self.count(&subs);
        }
        // No live view listening is not an error.
        let _ = self.ring.send(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(i: u64) -> Event {
        Event::Refused {
            request_id: format!("r{i}"),
            budget_id: "b".into(),
            subject: "s".into(),
            status: 429,
        }
    }

    #[tokio::test]
    async fn lossless_subscribers_miss_nothing_and_live_views_lag() {
        let events = Events::default();
        assert!(!events.wanted());
        let mut all = events.subscribe_lossless();
        let mut live = events.subscribe();
        assert!(events.wanted());
        let n = (LOSSLESS_QUEUE + RING + 100) as u64;
        for i in 0..n {
            events.publish(refused(i));
        }
        let mut seqs = Vec::new();
        for _ in 0..n {
            seqs.push(all.recv().await.unwrap().seq);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (0..n).collect::<Vec<_>>(), "every event, once");
        match live.recv().await {
            Err(broadcast::error::RecvError::Lagged(missed)) => assert!(missed > 0),
            other => panic!("a slow live view lags: {other:?}"),
        }
        assert!(live.recv().await.is_ok(), "and goes on");
        drop(all);
        events.publish(refused(0));
        events.publish(refused(1));
        assert_eq!(events.lossless_count.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn settled_events_are_built_only_for_those_who_take_them() {
        let events = Events::default();
        let mut some = events.subscribe_lossless_to(false);
        assert!(events.wanted() && !events.settled_wanted());
        events.publish(Event::Settled {
            record: Arc::new(UsageRecord {
                request_id: "r".into(),
                time: jiff::Timestamp::UNIX_EPOCH,
                key_id: None,
                user: None,
                tenant: None,
                session: None,
                budgets: vec![],
                provider: "openai".into(),
                model_requested: "m".into(),
                model_served: "m".into(),
                usage: Default::default(),
                cost: tollgate_core::Money::ZERO,
                latency_ms: 0,
                ttft_ms: None,
                status: 200,
                flags: Default::default(),
            }),
        });
        events.publish(refused(7));
        let got = some.recv().await.unwrap();
        assert!(matches!(got.event, Event::Refused { .. }), "{got:?}");
        let _all = events.subscribe_lossless();
        assert!(events.settled_wanted());
    }
}
