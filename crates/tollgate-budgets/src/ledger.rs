//! The ledger behind a trait: one call reserves on N budget lines
//! atomically (or none), a reservation grows all-or-nothing, a charge is
//! idempotent per reservation id, and any line can be read. The trait
//! speaks reservations (id, lines, sizing, deadline) and charges (typed
//! counter keys, amounts); what a reservation or a charge must leave in
//! the store is the caller's [`Payload`], kept without being read. So a
//! Redis ledger can run the same state machine as one Lua script per call
//! (a reserve on N lines is one round trip), and tool reservations that
//! never see a provider use the same ledger as proxied requests.
//!
//! [`MemoryLedger`] is the embedded implementation: a [`ShardedLedger`] in
//! memory (no global lock), made durable by the store's reservation log
//! and the [`Journal`]. What only a memory ledger needs (forgetting old
//! counters) is its own, not the trait's.
//!
//! Charging and releasing never wait: they are called from drop guards.
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
pub use tollgate_core::ledger::Sizing;
use tollgate_core::ledger::{
    Amount, Counter, CounterKey, Denied, ExtendError, Line, Settled, ShardedLedger,
};
pub use tollgate_store::Payload;
use tollgate_store::{JournalEntry, OpenReservation, Store, StoreError};

use crate::journal::Journal;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("refused by line {}", .0.line)]
    Denied(Denied),
    /// Settled, expired, or never reserved.
    #[error("the reservation is not open")]
    NotOpen,
    /// The ledger could not answer or make a change durable (the disk is
    /// full, the store is down).
    #[error("{0}")]
    Unavailable(String),
}

/// What a reservation holds, on which lines, until when. The ledger grants
/// the largest `sizing.amount(n)` every enforced line affords.
#[derive(Clone, Debug)]
pub struct Reservation {
    pub id: String,
    pub lines: Vec<Line>,
    pub sizing: Sizing,
    pub expires_at: Timestamp,
    pub fail: FailPolicy,
}

/// What a hold does when the ledger cannot make it durable (the
/// reservation log cannot be written: the disk is full, the store is
/// down). The ledger itself always decides — budgets are enforced either
/// way; the policy chooses between refusing and going on with a hold that
/// a crash before the store recovers would forget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailPolicy {
    /// Refuse: the hold is given back and the caller told the ledger is
    /// unavailable.
    #[default]
    Closed,
    /// Go on: the hold stays, in memory only (counted, logged).
    Open,
}

impl FailPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailPolicy::Closed => "closed",
            FailPolicy::Open => "open",
        }
    }
}

/// A reservation a previous process left open, as the store kept it.
#[derive(Clone, Debug)]
pub struct Orphan {
    pub id: String,
    pub charges: Vec<CounterKey>,
    pub amount: Amount,
    pub expires_at: Timestamp,
    pub payload: Payload,
}

#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Reserves on every line at once, durably with `payload`; returns the
    /// granted `n`.
    async fn reserve(&self, r: &Reservation, payload: Payload) -> Result<u64, LedgerError>;
    /// Grows an open reservation by `more` on every line, or on none,
    /// durably (as `fail` says when it cannot be); `payload` replaces the
    /// reservation's. Returns what it holds now.
    async fn extend(
        &self,
        id: &str,
        more: Amount,
        payload: Payload,
        fail: FailPolicy,
    ) -> Result<Amount, LedgerError>;
    /// Moves an open reservation's deadline to `until`, durably (as `fail`
    /// says when it cannot be).
    async fn prolong(
        &self,
        id: &str,
        until: Timestamp,
        payload: Payload,
        fail: FailPolicy,
    ) -> Result<(), LedgerError>;
    /// What `reserve` would grant now, reserving nothing.
    async fn plan(&self, lines: &[Line], sizing: &Sizing) -> Result<u64, Denied>;
    /// Charges `actual` to `charges` (normally the reservation's own lines;
    /// others when a budget changed in flight), closes the reservation (if
    /// any) and stores `payload` with it. Idempotent per reservation id.
    fn commit(
        &self,
        reservation: Option<&str>,
        charges: &[CounterKey],
        actual: Amount,
        payload: Payload,
    ) -> Settled;
    /// Gives a reservation back whole.
    fn release(&self, id: &str);
    /// Sets what a counter has spent, durably (a budget's new period).
    async fn set_spent(&self, key: &CounterKey, spent: Amount);
    /// Waits until every change so far is durable.
    async fn flush(&self);
    /// Spent and reserved over each line's window, in order.
    async fn used(&self, lines: &[Line]) -> Vec<Counter>;
    async fn counter(&self, key: &CounterKey) -> Counter;
    /// A rolling group's buckets, oldest first: (start ms, spent).
    async fn buckets(&self, group: &str) -> Vec<(i64, Amount)>;
    /// Up to `limit` subjects with counters of budget `budget`, after
    /// `after`, in order (the subjects of a template budget).
    async fn subjects(&self, budget: &str, after: Option<&str>, limit: usize) -> Vec<String>;
    /// Releases reservations past their deadline; returns their ids.
    async fn expire_due(&self, now: Timestamp) -> Vec<String>;
    /// Reservations a previous process left open (held again until their
    /// holder commits, releases, or they expire).
    async fn orphans(&self) -> Result<Vec<Orphan>, LedgerError>;
}

pub struct MemoryLedger {
    state: ShardedLedger,
    journal: Journal,
    store: std::sync::Arc<dyn Store>,
    /// Open reservations found at load, until [`Ledger::orphans`] takes them.
    orphans: std::sync::Mutex<Vec<Orphan>>,
}

impl MemoryLedger {
    /// Rebuilds the ledger from the store: committed counters, and open
    /// reservations as reserved (their holders settle them; see
    /// [`Ledger::orphans`]).
    pub async fn load(
        store: std::sync::Arc<dyn Store>,
        journal: Journal,
    ) -> Result<MemoryLedger, StoreError> {
        let (counters, open) = store.load_ledger().await?;
        let state = ShardedLedger::default();
        let parse = |k: &str| match k.parse::<CounterKey>() {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(error = %e, "stored counter with an unreadable key skipped");
                None
            }
        };
        for (k, a) in counters {
            if let Some(k) = parse(&k) {
                state.restore_spent(&k, a);
            }
        }
        let mut orphans = Vec::with_capacity(open.len());
        for r in open {
            let charges: Vec<CounterKey> = r.charges.iter().filter_map(|k| parse(k)).collect();
            state.restore_open(&r.id, &charges, r.amount, r.expires_at);
            orphans.push(Orphan {
                id: r.id,
                charges,
                amount: r.amount,
                expires_at: r.expires_at,
                payload: r.payload,
            });
        }
        Ok(MemoryLedger {
            state,
            journal,
            store,
            orphans: std::sync::Mutex::new(orphans),
        })
    }

    /// Forgets in-memory counters `keep` rejects (old periods and buckets;
    /// the store keeps them). Counters with open reservations stay.
    pub fn retain_counters(&self, keep: &dyn Fn(&CounterKey) -> bool) {
        self.state.retain_counters(keep);
    }

    /// Whether a change the log refused stands, in memory only, under
    /// `fail` (counted; logged at most once a second).
    fn going_on(&self, fail: FailPolicy, what: &str, e: &StoreError) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if fail == FailPolicy::Closed {
            return false;
        }
        let stats = &self.journal.stats;
        let n = stats.not_durable.fetch_add(1, Relaxed) + 1;
        let now = Timestamp::now().as_second();
        let last = stats.not_durable_logged_at.load(Relaxed);
        if now > last
            && stats
                .not_durable_logged_at
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %e, total = n, "cannot make a {what} durable; going on in memory (fail: open)");
        }
        true
    }

    fn log(
        &self,
        id: &str,
        charges: Vec<String>,
        grown: (Amount, Timestamp),
        payload: Payload,
    ) -> Result<(), StoreError> {
        self.store.log_reservation(&OpenReservation {
            id: id.to_string(),
            charges,
            amount: grown.0,
            expires_at: grown.1,
            payload,
        })
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn reserve(&self, r: &Reservation, payload: Payload) -> Result<u64, LedgerError> {
        let n = self
            .state
            .reserve_capped(&r.id, &r.lines, &r.sizing, r.expires_at)
            .map_err(LedgerError::Denied)?;
        let charges = r.lines.iter().map(|l| l.charge.to_string()).collect();
        if let Err(e) = self.log(&r.id, charges, (r.sizing.amount(n), r.expires_at), payload) {
            if self.going_on(r.fail, "reservation", &e) {
                return Ok(n);
            }
            // Not durable, so not forwarded: give the headroom back.
            tracing::error!(error = %e, "cannot make a reservation durable; refusing");
            self.state.release(&r.id, Timestamp::now());
            return Err(LedgerError::Unavailable(format!(
                "cannot make the reservation durable: {e}"
            )));
        }
        Ok(n)
    }

    async fn extend(
        &self,
        id: &str,
        more: Amount,
        payload: Payload,
        fail: FailPolicy,
    ) -> Result<Amount, LedgerError> {
        let grown = self.state.extend(id, more).map_err(|e| match e {
            ExtendError::Denied(d) => LedgerError::Denied(d),
            ExtendError::NotOpen => LedgerError::NotOpen,
        })?;
        // Logged again whole: a crash leaves what it holds now.
        let charges = grown.charges.iter().map(ToString::to_string).collect();
        if let Err(e) = self.log(id, charges, (grown.amount, grown.expires_at), payload) {
            if self.going_on(fail, "extension", &e) {
                return Ok(grown.amount);
            }
            // Not durable: the extension is given back, the rest stays.
            tracing::error!(error = %e, "cannot make an extension durable; refusing it");
            self.state.shrink(id, more);
            return Err(LedgerError::Unavailable(format!(
                "cannot make the extension durable: {e}"
            )));
        }
        Ok(grown.amount)
    }

    async fn prolong(
        &self,
        id: &str,
        until: Timestamp,
        payload: Payload,
        fail: FailPolicy,
    ) -> Result<(), LedgerError> {
        let Some(held) = self.state.prolong(id, until) else {
            return Err(LedgerError::NotOpen);
        };
        // Logged again whole, with its new deadline. Should that fail, the
        // deadline in memory stays moved: the hold ends later than a
        // restart would end it, never earlier than its holder expects.
        let charges = held.charges.iter().map(ToString::to_string).collect();
        match self.log(id, charges, (held.amount, until), payload) {
            Err(e) if !self.going_on(fail, "new deadline", &e) => Err(LedgerError::Unavailable(
                format!("cannot make the new deadline durable: {e}"),
            )),
            _ => Ok(()),
        }
    }

    async fn plan(&self, lines: &[Line], s: &Sizing) -> Result<u64, Denied> {
        self.state.plan_capped(lines, s)
    }

    fn commit(
        &self,
        reservation: Option<&str>,
        charges: &[CounterKey],
        actual: Amount,
        payload: Payload,
    ) -> Settled {
        let settled = match reservation {
            Some(id) => self.state.commit_to(id, charges, actual, Timestamp::now()),
            None => Settled::Unknown,
        };
        if settled == Settled::AlreadySettled {
            return settled;
        }
        self.journal.write(JournalEntry::Settle {
            reservation: reservation.map(str::to_string),
            charges: if reservation.is_some() {
                charges.iter().map(ToString::to_string).collect()
            } else {
                Vec::new()
            },
            actual,
            payload,
        });
        settled
    }

    fn release(&self, id: &str) {
        if self.state.release(id, Timestamp::now()) == Settled::Released {
            self.journal
                .write(JournalEntry::Release { id: id.to_string() });
        }
    }

    async fn set_spent(&self, key: &CounterKey, spent: Amount) {
        self.state.set_spent(key, spent);
        self.journal.write(JournalEntry::SetCounter {
            key: key.to_string(),
            spent,
        });
    }

    async fn flush(&self) {
        self.journal.flush().await;
    }

    async fn used(&self, lines: &[Line]) -> Vec<Counter> {
        lines.iter().map(|l| self.state.used(l)).collect()
    }

    async fn counter(&self, key: &CounterKey) -> Counter {
        self.state.counter(key)
    }

    async fn buckets(&self, group: &str) -> Vec<(i64, Amount)> {
        self.state.buckets(group)
    }

    async fn subjects(&self, budget: &str, after: Option<&str>, limit: usize) -> Vec<String> {
        self.state.subjects(budget, after, limit)
    }

    async fn expire_due(&self, now: Timestamp) -> Vec<String> {
        // Expired reservations stay known a minute, so a late commit (a
        // stream past its deadline) still charges them.
        let ids = self.state.expire(now, SignedDuration::from_mins(1));
        // Settled ids guard against a replayed settlement; drafts settle
        // once, so seconds suffice — and at 10k req/s each second of
        // retention is 10k ids in memory.
        self.state
            .forget_settled(now - SignedDuration::from_secs(10));
        for id in &ids {
            self.journal.write(JournalEntry::Release { id: id.clone() });
        }
        ids
    }

    async fn orphans(&self) -> Result<Vec<Orphan>, LedgerError> {
        Ok(std::mem::take(
            &mut *self.orphans.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{BudgetEngine, ManualClock, SizingConfig};
    use tollgate_core::Money;

    fn record(id: &str, input: u64) -> tollgate_core::UsageRecord {
        tollgate_core::UsageRecord {
            request_id: id.into(),
            time: Timestamp::from_second(1_700_000_000).unwrap_or(Timestamp::UNIX_EPOCH),
            key_id: None,
            user: Some("alice".into()),
            tenant: None,
            session: None,
            budgets: vec!["b".into()],
            provider: "openai".into(),
            model_requested: "gpt-4o".into(),
            model_served: "gpt-4o".into(),
            usage: tollgate_core::Usage {
                input_tokens: input,
                ..Default::default()
            },
            cost: Money::ZERO,
            latency_ms: 0,
            ttft_ms: None,
            status: 0,
            flags: Default::default(),
        }
    }

    /// After a crash, a request's reservation is charged at its reserved
    /// amount from its payload (the record, flagged and priced as
    /// reserved); a reservation whose payload owes nothing stays held for
    /// its holder, neither charged nor lost.
    #[tokio::test]
    async fn orphans_are_settled_by_their_payload() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = tollgate_store::open(&url).await.unwrap();
        let key = CounterKey::period(CounterKey::group("b", "alice"), 0);
        let amount = Amount::new(Money::from_units(900), 130);
        for (id, payload) in [
            ("req_1", Payload::record(record("req_1", 100))),
            ("tool_1", Payload::Empty),
        ] {
            store
                .log_reservation(&OpenReservation {
                    id: id.into(),
                    charges: vec![key.to_string()],
                    amount,
                    expires_at: Timestamp::from_second(1_900_000_000).unwrap(),
                    payload,
                })
                .unwrap();
        }
        // The process that logged them is gone.
        drop(store);
        let store = tollgate_store::open(&url).await.unwrap();
        let (journal, writer) = Journal::spawn(store.clone()).unwrap();
        let ledger = std::sync::Arc::new(MemoryLedger::load(store.clone(), journal).await.unwrap());
        let engine = BudgetEngine::load(
            &*store,
            ledger.clone(),
            Vec::new(),
            std::sync::Arc::new(ManualClock::new(Timestamp::UNIX_EPOCH)),
            &SizingConfig {
                min_output_tokens: 1,
                default_max_output_tokens: 100,
                unknown_input_tokens: None,
                fail: FailPolicy::Closed,
            },
        )
        .await
        .unwrap();
        assert_eq!(engine.reconcile().await.unwrap(), 1);
        let c = ledger.counter(&key).await;
        assert_eq!(c.spent, amount, "the request is charged what it reserved");
        assert_eq!(c.reserved, amount, "the tool reservation is still held");
        let page = store
            .records(&tollgate_store::RecordQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.records.len(), 1);
        let r = &page.records[0];
        assert_eq!(r.request_id, "req_1");
        assert!(r.flags.reconciled && r.flags.usage_estimated);
        assert_eq!(r.cost, amount.money);
        assert_eq!(r.usage.input_tokens + r.usage.output_tokens, amount.tokens);
        // The holder settles it later, once.
        assert_eq!(
            ledger.commit(
                Some("tool_1"),
                std::slice::from_ref(&key),
                Amount::new(Money::from_units(5), 1),
                Payload::Empty
            ),
            Settled::Committed { overage: false }
        );
        assert_eq!(ledger.counter(&key).await.reserved, Amount::default());
        drop(engine);
        drop(ledger);
        writer.join().await;
    }

    /// A reservation log that cannot be written (its file is `/dev/full`:
    /// every write fails, as on a full disk): `closed` refuses and gives the
    /// hold back, `open` keeps it in memory — still counted against the
    /// limit, so the budget holds either way.
    #[tokio::test]
    async fn a_hold_the_log_refuses_is_given_back_or_kept_as_the_policy_says() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let store = tollgate_store::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join("t.db-reservations.0")).unwrap();
        let (journal, writer) = Journal::spawn(store.clone()).unwrap();
        let stats = journal.stats.clone();
        let ledger = MemoryLedger::load(store, journal).await.unwrap();
        let key = CounterKey::period(CounterKey::group("b", "alice"), 0);
        let line = Line {
            charge: key.clone(),
            window: tollgate_core::ledger::Window::Period,
            limit: tollgate_core::ledger::Limit {
                money: None,
                tokens: Some(100),
            },
            enforce: true,
        };
        let hold = |id: &str, fail| Reservation {
            id: id.into(),
            lines: vec![line.clone()],
            sizing: Sizing::fixed(Amount::new(Money::ZERO, 60)),
            expires_at: Timestamp::from_second(1_900_000_000).unwrap(),
            fail,
        };
        let closed = ledger
            .reserve(&hold("r1", FailPolicy::Closed), Payload::Empty)
            .await;
        assert!(
            matches!(closed, Err(LedgerError::Unavailable(_))),
            "{closed:?}"
        );
        assert_eq!(ledger.counter(&key).await.reserved.tokens, 0);
        let open = ledger
            .reserve(&hold("r2", FailPolicy::Open), Payload::Empty)
            .await;
        assert!(open.is_ok(), "{open:?}");
        assert_eq!(ledger.counter(&key).await.reserved.tokens, 60);
        assert_eq!(
            stats.not_durable.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // Held in memory, it still counts: a second one does not fit.
        let over = ledger
            .reserve(&hold("r3", FailPolicy::Open), Payload::Empty)
            .await;
        assert!(matches!(over, Err(LedgerError::Denied(_))), "{over:?}");
        // An extension: given back under `closed`, kept under `open`.
        for (fail, held) in [(FailPolicy::Closed, 60), (FailPolicy::Open, 70)] {
            let more = Amount::new(Money::ZERO, 10);
            let r = ledger.extend("r2", more, Payload::Empty, fail).await;
            assert_eq!(r.is_ok(), fail == FailPolicy::Open, "{r:?}");
            assert_eq!(ledger.counter(&key).await.reserved.tokens, held);
        }
        ledger.release("r2");
        drop(ledger);
        writer.join().await;
    }
}
