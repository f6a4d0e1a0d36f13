//! Budget levels (ok / low / over_limit) per budget period, and their
//! changes on the event stream.
//!
//! A level is judged from the ledger after each settlement — an async
//! read (a shared ledger answers over the network), while settlements
//! happen in drop guards. So settlements and refusals are noted on a
//! queue and one task judges them in order: two readers racing could
//! otherwise publish a stale level after a fresh one.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tollgate_core::ledger::{Amount, Limit, Slot, Window};

use crate::engine::Applied;
use crate::events::{Event, Events, Level};
use crate::ledger::Ledger;

enum Note {
    /// Settling charged these budgets: judge them by what they spent.
    Settled(Vec<Applied>),
    /// This budget refused: it is at its limit, whatever the few units its
    /// spend leaves.
    Refused(Box<Applied>),
    /// Forget levels of periods before these starts (ms, per budget id).
    Prune(HashMap<String, i64>),
    /// Answers once every note before it is judged.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The queue to the level judge. Unbounded: a note is a few pointers,
/// noting never waits (drop guards), and none may be lost.
pub(crate) struct Levels {
    tx: Option<mpsc::UnboundedSender<Note>>,
}

impl Levels {
    /// Starts the judge (when a runtime is there to run it; without one,
    /// levels are not judged and nothing is published for them).
    pub(crate) fn spawn(ledger: Arc<dyn Ledger>, events: Arc<Events>) -> Levels {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Levels { tx: None };
        };
        let (tx, rx) = mpsc::unbounded_channel();
        rt.spawn(judge(rx, ledger, events));
        Levels { tx: Some(tx) }
    }

    fn note(&self, n: Note) {
        if let Some(tx) = &self.tx {
            // Closed only when the runtime shuts down.
            let _ = tx.send(n);
        }
    }

    pub(crate) fn settled(&self, applied: &[Applied]) {
        if !applied.is_empty() {
            self.note(Note::Settled(applied.to_vec()));
        }
    }

    pub(crate) fn refused(&self, a: &Applied) {
        self.note(Note::Refused(Box::new(a.clone())));
    }

    pub(crate) fn prune(&self, oldest: HashMap<String, i64>) {
        self.note(Note::Prune(oldest));
    }

    /// Waits until every settlement and refusal noted so far is judged.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.note(Note::Flush(tx));
        let _ = rx.await;
    }
}

/// A budget's level by what it has spent against `limit`.
pub(crate) fn level_of(limit: &Limit, low_pct: u8, spent: Amount) -> Level {
    let pct = i128::from(low_pct);
    let money = limit.money.map(|l| (l.units(), spent.money.units()));
    let tokens = limit
        .tokens
        .map(|l| (i128::from(l), i128::from(spent.tokens)));
    let over = money.into_iter().chain(tokens).any(|(l, s)| s >= l);
    let low = money
        .into_iter()
        .chain(tokens)
        .any(|(l, s)| (l - s) * 100 < l * pct);
    if over {
        Level::OverLimit
    } else if low {
        Level::Low
    } else {
        Level::Ok
    }
}

/// One level per (group, period start); a rolling window has one level
/// however it moves (start `i64::MIN`).
type Book = HashMap<(Arc<str>, i64), Level>;

async fn judge(
    mut rx: mpsc::UnboundedReceiver<Note>,
    ledger: Arc<dyn Ledger>,
    events: Arc<Events>,
) {
    let mut book = Book::new();
    while let Some(n) = rx.recv().await {
        match n {
            Note::Settled(applied) => {
                let lines: Vec<_> = applied.iter().map(|a| a.line.clone()).collect();
                let used = ledger.used(&lines).await;
                for (a, u) in applied.iter().zip(used) {
                    // By what each budget has spent, reservations aside: a
                    // level does not flap with requests in flight.
                    let level = level_of(&a.line.limit, a.budget.low_threshold_pct, u.spent);
                    set(&mut book, &events, a, level);
                }
            }
            Note::Refused(a) => set(&mut book, &events, &a, Level::OverLimit),
            Note::Prune(oldest) => book.retain(|(group, start), _| {
                let budget = group.split_once('|').map_or(&**group, |(b, _)| b);
                *start == i64::MIN || oldest.get(budget).is_none_or(|cut| start >= cut)
            }),
            Note::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Records `level` for `a`'s period and publishes it if it changed.
fn set(book: &mut Book, events: &Events, a: &Applied, level: Level) {
    let (start, key) = match (a.line.window, a.line.charge.slot) {
        (Window::Rolling { since }, _) => (since, (a.line.charge.group.clone(), i64::MIN)),
        (_, Slot::Period(s) | Slot::Bucket(s)) => (s, (a.line.charge.group.clone(), s)),
    };
    let from = std::mem::replace(book.entry(key).or_insert(Level::Ok), level);
    if from != level {
        events.publish(Event::Level {
            budget_id: a.budget.id.clone(),
            subject: a.subject.clone(),
            period_start: start,
            from,
            to: level,
        });
    }
}
