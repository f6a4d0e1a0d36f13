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
use tollgate_core::budget::Action;
use tollgate_core::ledger::{Amount, Counter, Slot, Window};

use crate::engine::{Applied, BudgetEngine};
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

/// A budget's level by what it has spent against its limit.
pub(crate) fn level_of(a: &Applied, spent: Amount) -> Level {
    let limit = a.line.limit;
    let over = limit.money.is_some_and(|l| spent.money >= l)
        || limit.tokens.is_some_and(|l| spent.tokens >= l);
    let left = (
        limit.money.map(|l| l - spent.money),
        limit.tokens.map(|l| l.saturating_sub(spent.tokens)),
    );
    if over {
        Level::OverLimit
    } else if a.budget.is_low((limit.money, limit.tokens), left) {
        Level::Low
    } else {
        Level::Ok
    }
}

/// Per (group, period start) — a rolling window has one however it moves
/// (start `i64::MIN`): the level last published, the highest warning mark
/// published, and whether a `warn` budget's soft limit was announced.
#[derive(Default)]
struct Seen {
    level: Option<Level>,
    mark: u8,
    soft_limit: bool,
    /// The highest alert threshold published.
    alert: u8,
}

type Book = HashMap<(Arc<str>, i64), Seen>;

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
                    let level = level_of(a, u.spent);
                    set(&mut book, &events, a, level);
                    marks(&mut book, &events, a, u.spent);
                }
            }
            Note::Refused(a) => {
                set(&mut book, &events, &a, Level::OverLimit);
                // A refusing budget is exhausted for the request it
                // refused, whatever its spend leaves: its marks up to 100 %
                // have been reached (a `block` budget's spend may never
                // reach the limit exactly).
                alert_marks(&mut book, &events, &a, 10_000);
            }
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

fn key_of(a: &Applied) -> (i64, (Arc<str>, i64)) {
    match (a.line.window, a.line.charge.slot) {
        (Window::Rolling { since }, _) => (since, (a.line.charge.group.clone(), i64::MIN)),
        (_, Slot::Period(s) | Slot::Bucket(s)) => (s, (a.line.charge.group.clone(), s)),
    }
}

/// Publishes the warning marks `a` passed with `spent` that were not
/// published yet this period, in order, and a `warn` budget's soft limit.
fn marks(book: &mut Book, events: &Events, a: &Applied, spent: Amount) {
    let b = &a.budget;
    if b.warnings.is_empty() && b.action != Action::Warn && b.alert_thresholds.is_empty() {
        return;
    }
    let (start, key) = key_of(a);
    let seen = book.entry(key).or_default();
    let st = BudgetEngine::state_of(
        a,
        Counter {
            spent,
            reserved: Amount::default(),
        },
    );
    let bp = crate::messages::used_bp(&st).unwrap_or(0);
    let from = seen.mark;
    for w in b
        .warnings
        .iter()
        .filter(|w| w.at_pct > from && bp >= i128::from(w.at_pct) * 100)
    {
        seen.mark = w.at_pct;
        events.publish(Event::Warning {
            budget_id: b.id.clone(),
            subject: a.subject.clone(),
            period_start: start,
            at_pct: w.at_pct,
            message: crate::messages::render(&w.message, a, &st),
        });
    }
    if b.action == Action::Warn && !seen.soft_limit && st.status == "over_limit" {
        seen.soft_limit = true;
        events.publish(Event::SoftLimit {
            budget_id: b.id.clone(),
            subject: a.subject.clone(),
            period_start: start,
        });
    }
    alert_marks(book, events, a, bp);
}

/// Publishes the alert thresholds `a` reached at `bp` basis points of its
/// limit that were not published yet this period, in order. A rolling
/// window has no period to mark them in: a mark is re-armed once the
/// spend falls back below it.
fn alert_marks(book: &mut Book, events: &Events, a: &Applied, bp: i128) {
    let b = &a.budget;
    if b.alert_thresholds.is_empty() {
        return;
    }
    let (start, key) = key_of(a);
    let seen = book.entry(key).or_default();
    if matches!(a.line.window, Window::Rolling { .. }) {
        seen.alert = b
            .alert_thresholds
            .iter()
            .copied()
            .filter(|&t| bp >= i128::from(t) * 100)
            .max()
            .unwrap_or(0)
            .min(seen.alert);
    }
    let from = seen.alert;
    for &t in b
        .alert_thresholds
        .iter()
        .filter(|&&t| t > from && bp >= i128::from(t) * 100)
    {
        seen.alert = t;
        events.publish(Event::Threshold {
            budget_id: b.id.clone(),
            subject: a.subject.clone(),
            period_start: start,
            threshold_pct: t,
        });
    }
}

/// Records `level` for `a`'s period and publishes it if it changed.
fn set(book: &mut Book, events: &Events, a: &Applied, level: Level) {
    let (start, key) = key_of(a);
    let seen = book.entry(key).or_default();
    let from = seen.level.replace(level).unwrap_or(Level::Ok);
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
