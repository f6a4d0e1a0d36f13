//! The ledger journal: what must reach the database, in order, batched.
//!
//! A batch of entries is applied in one transaction. A settlement writes the
//! usage record, adds the actual amount to the budget counters and closes
//! the reservation together, so the stored counters always equal the sum of
//! the stored records that touched them, whatever crashes when.

use jiff::Timestamp;
use tollgate_core::UsageRecord;
use tollgate_core::ledger::Amount;

#[derive(Clone, Debug)]
pub enum JournalEntry {
    /// A finished request: its record, and (if it reserved) the counters it
    /// charges with `actual`.
    Settle {
        reservation: Option<String>,
        charges: Vec<String>,
        actual: Amount,
        record: Box<UsageRecord>,
    },
    /// A reservation given back without a record (nothing was forwarded).
    Release { id: String },
    /// Sets what a counter has spent: a budget whose period changed starts
    /// its new period at the spend its records show. Applied in order, so
    /// settlements written before it are counted in that spend and the
    /// ones after it add to it.
    SetCounter { key: String, spent: Amount },
}

/// An unsettled reservation found at start-up.
#[derive(Clone, Debug)]
pub struct OpenReservation {
    pub id: String,
    pub charges: Vec<String>,
    pub amount: Amount,
    pub expires_at: Timestamp,
    pub template: UsageRecord,
}
