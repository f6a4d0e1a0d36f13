//! The ledger behind a trait: one call reserves on N budgets atomically (or
//! none), settlement is idempotent per request id, and the state of any
//! budget line can be read. [`MemoryLedger`] is the embedded implementation:
//! a [`ShardedLedger`] in memory (no global lock), made durable through the
//! [`Journal`] (a reservation is acknowledged once its batch committed). A
//! Redis implementation for cluster mode would run the same state
//! machine as a Lua script; reservation is async for that reason.
//!
//! Settlement and release never wait: they are called from drop guards.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use tollgate_core::UsageRecord;
pub use tollgate_core::ledger::Sizing;
use tollgate_core::ledger::{
    Amount, Counter, CounterKey, Denied, ExtendError, Headroom, Line, Settled, ShardedLedger,
};
use tollgate_store::{JournalEntry, OpenReservation, Store, StoreError};

use crate::journal::Journal;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("refused by line {}", .0.line)]
    Denied(Denied),
    /// Settled, expired, or never reserved.
    #[error("the reservation is not open")]
    NotOpen,
    /// The reservation could not be made durable (e.g. the disk is full).
    #[error("{0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Reserves on every line at once, durably; returns the granted `n`.
    /// `template` is the record to write if the reservation is never settled.
    async fn reserve(
        &self,
        id: &str,
        lines: Vec<Line>,
        sizing: Sizing,
        expires_at: Timestamp,
        template: UsageRecord,
    ) -> Result<u64, LedgerError>;
    /// Grows an open reservation by `more` on every line, or on none,
    /// durably; `template` is what a crash leaves behind from now on.
    async fn extend(
        &self,
        id: &str,
        more: Amount,
        template: UsageRecord,
    ) -> Result<(), LedgerError>;
    /// What `reserve` would grant now, reserving nothing.
    fn plan(&self, lines: &[Line], sizing: &Sizing) -> Result<u64, Denied>;
    /// Charges `actual` to `charges` (normally the reservation's own lines;
    /// others when a budget changed in flight), closes the reservation (if
    /// any) and persists `record` with it. Idempotent per reservation id.
    fn settle(
        &self,
        reservation: Option<&str>,
        charges: &[CounterKey],
        actual: Amount,
        record: UsageRecord,
    ) -> Settled;
    /// Gives a reservation back (nothing reached a provider).
    fn release(&self, id: &str);
    /// Sets what a counter has spent, durably (a budget's new period).
    fn set_spent(&self, key: &CounterKey, spent: Amount);
    /// Waits until every settlement so far is in the store.
    async fn flush(&self);
    fn used(&self, line: &Line) -> Counter;
    fn headroom(&self, line: &Line) -> Headroom;
    fn counter(&self, key: &CounterKey) -> Counter;
    /// A rolling group's buckets, oldest first: (start ms, spent).
    fn buckets(&self, group: &str) -> Vec<(i64, Amount)>;
    /// Every counter key (for listing the subjects of template budgets).
    fn keys(&self) -> Vec<CounterKey>;
    /// Releases reservations past their deadline; returns how many.
    fn expire_due(&self, now: Timestamp) -> usize;
    /// Forgets in-memory counters `keep` rejects (old periods and buckets;
    /// the store keeps them). Counters with open reservations stay.
    fn retain_counters(&self, keep: &dyn Fn(&CounterKey) -> bool);
    /// Charges reservations a dead process left open at their reserved amount.
    async fn reconcile(&self, now: Timestamp) -> Result<usize, StoreError>;
}

pub struct MemoryLedger {
    state: ShardedLedger,
    journal: Journal,
    store: std::sync::Arc<dyn Store>,
}

impl MemoryLedger {
    /// Rebuilds the ledger from the store: committed counters, and open
    /// reservations as reserved (until [`Ledger::reconcile`]).
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
        for r in &open {
            let charges: Vec<CounterKey> = r.charges.iter().filter_map(|k| parse(k)).collect();
            state.restore_open(&r.id, &charges, r.amount, r.expires_at);
        }
        Ok(MemoryLedger {
            state,
            journal,
            store,
        })
    }

    fn state(&self) -> &ShardedLedger {
        &self.state
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn reserve(
        &self,
        id: &str,
        lines: Vec<Line>,
        sizing: Sizing,
        expires_at: Timestamp,
        mut template: UsageRecord,
    ) -> Result<u64, LedgerError> {
        let n = self
            .state()
            .reserve_capped(id, &lines, &sizing, expires_at)
            .map_err(LedgerError::Denied)?;
        // Should this process die before settling, this is what is charged:
        // exactly the reserved amount, so counters still equal records.
        let amount = sizing.amount(n);
        template.cost = amount.money;
        template.usage.output_tokens = n;
        template.flags.usage_estimated = true;
        let open = OpenReservation {
            id: id.to_string(),
            charges: lines.iter().map(|l| l.charge.to_string()).collect(),
            amount,
            expires_at,
            template,
        };
        if let Err(e) = self.store.log_reservation(&open) {
            // Not durable, so not forwarded: give the headroom back.
            tracing::error!(error = %e, "cannot make a reservation durable; refusing");
            self.state().release(id, Timestamp::now());
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
        mut template: UsageRecord,
    ) -> Result<(), LedgerError> {
        let grown = self.state().extend(id, more).map_err(|e| match e {
            ExtendError::Denied(d) => LedgerError::Denied(d),
            ExtendError::NotOpen => LedgerError::NotOpen,
        })?;
        // Logged again whole: a crash charges what it holds now.
        template.cost = grown.amount.money;
        template.flags.usage_estimated = true;
        let open = OpenReservation {
            id: id.to_string(),
            charges: grown.charges.iter().map(ToString::to_string).collect(),
            amount: grown.amount,
            expires_at: grown.expires_at,
            template,
        };
        if let Err(e) = self.store.log_reservation(&open) {
            // Not durable: the extension is given back, the rest stays.
            tracing::error!(error = %e, "cannot make an extension durable; refusing it");
            self.state().shrink(id, more);
            return Err(LedgerError::Unavailable(format!(
                "cannot make the extension durable: {e}"
            )));
        }
        Ok(())
    }

    fn plan(&self, lines: &[Line], s: &Sizing) -> Result<u64, Denied> {
        self.state().plan_capped(lines, s)
    }

    fn settle(
        &self,
        reservation: Option<&str>,
        charges: &[CounterKey],
        actual: Amount,
        record: UsageRecord,
    ) -> Settled {
        let settled = match reservation {
            Some(id) => self
                .state()
                .commit_to(id, charges, actual, Timestamp::now()),
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
            record: Box::new(record),
        });
        settled
    }

    fn release(&self, id: &str) {
        if self.state().release(id, Timestamp::now()) == Settled::Released {
            self.journal
                .write(JournalEntry::Release { id: id.to_string() });
        }
    }

    fn set_spent(&self, key: &CounterKey, spent: Amount) {
        self.state().set_spent(key, spent);
        self.journal.write(JournalEntry::SetCounter {
            key: key.to_string(),
            spent,
        });
    }

    async fn flush(&self) {
        self.journal.flush().await;
    }

    fn used(&self, line: &Line) -> Counter {
        self.state().used(line)
    }

    fn headroom(&self, line: &Line) -> Headroom {
        self.state().headroom(line)
    }

    fn counter(&self, key: &CounterKey) -> Counter {
        self.state().counter(key)
    }

    fn buckets(&self, group: &str) -> Vec<(i64, Amount)> {
        self.state().buckets(group)
    }

    fn keys(&self) -> Vec<CounterKey> {
        self.state().keys()
    }

    fn expire_due(&self, now: Timestamp) -> usize {
        // Expired reservations stay known a minute, so a late commit (a
        // stream past its deadline) still charges them.
        let ids = self.state().expire(now, SignedDuration::from_mins(1));
        // Settled ids guard against a replayed settlement; drafts settle
        // once, so seconds suffice — and at 10k req/s each second of
        // retention is 10k ids in memory.
        self.state()
            .forget_settled(now - SignedDuration::from_secs(10));
        for id in &ids {
            tracing::warn!(reservation = %id, "reservation expired unsettled; released");
            self.journal.write(JournalEntry::Release { id: id.clone() });
        }
        ids.len()
    }

    fn retain_counters(&self, keep: &dyn Fn(&CounterKey) -> bool) {
        self.state().retain_counters(keep);
    }

    async fn reconcile(&self, now: Timestamp) -> Result<usize, StoreError> {
        let (_, open) = self.store.load_ledger().await?;
        let n = open.len();
        if n > 0 {
            tracing::warn!(
                count = n,
                "charging reservations left open by an unclean stop at their reserved amount"
            );
        }
        for r in open {
            self.state().commit(&r.id, r.amount, now);
            let mut record = r.template.clone();
            record.flags.reconciled = true;
            let entry = JournalEntry::Settle {
                reservation: Some(r.id.clone()),
                charges: r.charges.clone(),
                actual: r.amount,
                record: Box::new(record),
            };
            self.journal
                .write_durable(entry)
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?;
        }
        Ok(n)
    }
}
