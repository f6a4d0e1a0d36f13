//! The ledger journal: what must reach the database, in order, batched.
//!
//! A batch of entries is applied in one transaction. A settlement writes the
//! usage record, adds the actual amount to the budget counters and closes
//! the reservation together, so the stored counters always equal the sum of
//! the stored records that touched them, whatever crashes when.

use jiff::Timestamp;
use tollgate_core::UsageRecord;
use tollgate_core::ledger::Amount;

/// What a caller leaves with a reservation or a charge. The ledger keeps
/// it without reading it; the store writes a record payload with its
/// charge, and hands a reservation's payload back when a dead process left
/// the reservation open, for the caller to decide what it owes.
///
/// Stored as the record itself, or `null`: the form reservation templates
/// had before payloads, so logs and tables written then still load.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Payload {
    /// A usage record: written with its charge; a reservation's is what
    /// its request charges if the process dies before it settles.
    Record(Box<UsageRecord>),
    /// Nothing to write: a charge alone, or a reservation that owes
    /// nothing until its holder commits it (it expires otherwise).
    #[default]
    Empty,
}

impl Payload {
    pub fn record(r: UsageRecord) -> Payload {
        Payload::Record(Box::new(r))
    }

    pub fn as_record(&self) -> Option<&UsageRecord> {
        match self {
            Payload::Record(r) => Some(r),
            Payload::Empty => None,
        }
    }
}

#[derive(Clone, Debug)]
pub enum JournalEntry {
    /// A finished charge: the counters it charges with `actual` (if it
    /// reserved), and its payload (a request's record).
    Settle {
        reservation: Option<String>,
        charges: Vec<String>,
        actual: Amount,
        payload: Payload,
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
    pub payload: Payload,
}
