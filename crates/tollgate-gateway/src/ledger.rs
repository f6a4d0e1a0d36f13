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
use tollgate_core::ledger::{Amount, Counter, Denied, Headroom, Line, Settled, ShardedLedger};
use tollgate_store::{JournalEntry, OpenReservation, Store, StoreError};

use crate::journal::Journal;

/// What a request asks of its budgets: `base + n × per_unit` for the
/// largest `n ≤ want` every line affords, and at least `min`.
#[derive(Clone, Copy, Debug)]
pub struct Sizing {
    pub base: Amount,
    pub per_unit: Amount,
    pub want: u64,
    pub min: u64,
}

impl Sizing {
    pub fn amount(&self, n: u64) -> Amount {
        tollgate_core::ledger::sized(self.base, self.per_unit, n)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("refused by line {}", .0.line)]
    Denied(Denied),
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
    /// What `reserve` would grant now, reserving nothing.
    fn plan(&self, lines: &[Line], sizing: &Sizing) -> Result<u64, Denied>;
    /// Charges `actual` to `charges` (normally the reservation's own lines;
    /// others when a budget changed in flight), closes the reservation (if
    /// any) and persists `record` with it. Idempotent per reservation id.
    fn settle(
        &self,
        reservation: Option<&str>,
        charges: &[String],
        actual: Amount,
        record: UsageRecord,
    ) -> Settled;
    /// Gives a reservation back (nothing reached a provider).
    fn release(&self, id: &str);
    /// Sets what a counter has spent, durably (a budget's new period).
    fn set_spent(&self, key: &str, spent: Amount);
    /// Waits until every settlement so far is in the store.
    async fn flush(&self);
    fn used(&self, window: &[String]) -> Counter;
    fn headroom(&self, line: &Line) -> Headroom;
    fn counter(&self, key: &str) -> Counter;
    /// Every counter key (for listing the subjects of template budgets).
    fn keys(&self) -> Vec<String>;
    /// Releases reservations past their deadline; returns how many.
    fn expire_due(&self, now: Timestamp) -> usize;
    /// Forgets in-memory counters `keep` rejects (old periods and buckets;
    /// the store keeps them). Counters with open reservations stay.
    fn retain_counters(&self, keep: &dyn Fn(&str) -> bool);
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
        for (k, a) in counters {
            state.restore_spent(&k, a);
        }
        for r in &open {
            state.restore_open(&r.id, &r.charges, r.amount, r.expires_at);
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
            .reserve_capped(
                id,
                &lines,
                sizing.base,
                sizing.per_unit,
                sizing.want,
                sizing.min,
                expires_at,
            )
            .map_err(LedgerError::Denied)?;
        // Should this process die before settling, this is what is charged:
        // exactly the reserved amount, so counters still equal records.
        let amount = sizing.amount(n);
        template.cost = amount.money;
        template.usage.output_tokens = n;
        template.flags.usage_estimated = true;
        let open = OpenReservation {
            id: id.to_string(),
            charges: lines.into_iter().map(|l| l.charge).collect(),
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

    fn plan(&self, lines: &[Line], s: &Sizing) -> Result<u64, Denied> {
        self.state()
            .plan_capped(lines, s.base, s.per_unit, s.want, s.min)
    }

    fn settle(
        &self,
        reservation: Option<&str>,
        charges: &[String],
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
                charges.to_vec()
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

    fn set_spent(&self, key: &str, spent: Amount) {
        self.state().set_spent(key, spent);
        self.journal.write(JournalEntry::SetCounter {
            key: key.to_string(),
            spent,
        });
    }

    async fn flush(&self) {
        self.journal.flush().await;
    }

    fn used(&self, window: &[String]) -> Counter {
        self.state().used(window)
    }

    fn headroom(&self, line: &Line) -> Headroom {
        self.state().headroom(line)
    }

    fn counter(&self, key: &str) -> Counter {
        self.state().counter(key)
    }

    fn keys(&self) -> Vec<String> {
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

    fn retain_counters(&self, keep: &dyn Fn(&str) -> bool) {
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
