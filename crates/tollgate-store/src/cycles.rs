//! What the Cycles protocol keeps: reservations (their lifecycle and the
//! budget lines they hold) and the answers idempotency keys replay.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::Result;

/// A reservation as stored. `doc` holds the protocol's view of it (subject,
/// action, amounts, metadata, the budgets it holds) as JSON; the columns
/// are what lists filter and sort by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReservation {
    pub id: String,
    pub tenant: String,
    /// `ACTIVE`, `COMMITTED`, `RELEASED` or `EXPIRED`.
    pub status: String,
    pub idempotency_key: String,
    pub scope_path: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub finalized_at: Option<Timestamp>,
    pub doc: String,
}

/// A successful answer to replay for the same idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReply {
    pub tenant: String,
    /// The operation (`reserve`, `commit`, `release`, `extend`, `decide`,
    /// `event`).
    pub endpoint: String,
    pub key: String,
    /// SHA-256 of the request as canonical JSON (and the reservation id
    /// it was made on): a different request with the same key is refused.
    pub hash: [u8; 32],
    pub status: u16,
    pub body: String,
    pub created_at: Timestamp,
}

/// Which reservations a list shows, newest first.
#[derive(Clone, Debug, Default)]
pub struct ReservationQuery {
    pub tenant: String,
    pub status: Option<String>,
    pub idempotency_key: Option<String>,
    /// Scope paths the reservation's path must contain, in order (the
    /// subject filters as `level:value` segments).
    pub segments: Vec<String>,
    pub created_from: Option<Timestamp>,
    pub created_to: Option<Timestamp>,
    pub expires_from: Option<Timestamp>,
    pub expires_to: Option<Timestamp>,
    pub finalized_from: Option<Timestamp>,
    pub finalized_to: Option<Timestamp>,
    /// Resume after this (created_at ms, id), going back in time.
    pub before: Option<(i64, String)>,
    pub limit: usize,
}

#[async_trait]
pub trait CyclesStore: Send + Sync {
    /// Writes a reservation (new or changed) and, in the same
    /// transaction, the reply to replay for its idempotency key.
    async fn put_reservation(
        &self,
        r: &StoredReservation,
        reply: Option<&StoredReply>,
    ) -> Result<()>;
    async fn reservation(&self, id: &str) -> Result<Option<StoredReservation>>;
    async fn reservations_page(&self, q: &ReservationQuery) -> Result<Vec<StoredReservation>>;
    /// Reservations still `ACTIVE` (loaded at start).
    async fn active_reservations(&self) -> Result<Vec<StoredReservation>>;
    async fn reply(&self, tenant: &str, endpoint: &str, key: &str) -> Result<Option<StoredReply>>;
    /// Writes a reply alone (operations without a reservation row).
    async fn put_reply(&self, reply: &StoredReply) -> Result<()>;
    /// Forgets replies older than `before`; returns how many.
    async fn delete_replies_before(&self, before: Timestamp) -> Result<u64>;
    /// Marks budget lines over their limit: (budget id, counter key).
    async fn mark_over_limit(&self, marks: &[(String, String)], at: Timestamp) -> Result<()>;
    /// Every mark: (budget id, counter key).
    async fn over_limit_marks(&self) -> Result<Vec<(String, String)>>;
    /// Clears a budget's marks; returns how many there were.
    async fn clear_over_limit(&self, budget_id: &str) -> Result<u64>;
}
