//! Storage behind one trait, one module per backend.
//!
//! [`Store`] holds what must outlive the process: virtual keys, usage
//! records, price overrides, budgets, counters and quarantined records.
//! The embedded default is [`sqlite::SqliteStore`]; PostgreSQL joins in
//! cluster mode. Callers hold an `Arc<dyn Store>` and never see SQL.

pub mod alerts;
pub mod cycles;
pub mod journal;
pub mod query;
pub mod sqlite;
#[cfg(any(test, feature = "suite"))]
pub mod suite;

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use tollgate_core::ledger::Amount;
use tollgate_core::{KeyRecord, ModelPrice, UsageRecord};

pub use journal::{JournalEntry, OpenReservation, Payload};
pub use query::{
    GroupBy, RecordPage, RecordQuery, ReportFilter, ReportQuery, ReportRow, UsersQuery,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed. `transient`: busy, locked, out of space, an
    /// I/O failure — retrying the same write can succeed.
    #[error("database error: {message}")]
    Backend { message: String, transient: bool },
    #[error("database task failed: {0}")]
    Task(String),
    #[error("unsupported database url {0:?} (expected sqlite://PATH)")]
    UnsupportedUrl(String),
    /// A value the caller gave that the store cannot take (a bad cursor, a
    /// number out of range): the caller's mistake.
    #[error("{0}")]
    Invalid(String),
    /// What is stored cannot be read back (a damaged row or log line).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// I/O outside the database (the reservation log, the data directory).
    #[error("{0}")]
    Io(String),
    #[error("key id {0:?} already exists")]
    Duplicate(String),
}

impl StoreError {
    /// Whether retrying the same write can succeed. A value the store
    /// cannot hold, a constraint, unreadable data fail again the same way.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Backend {
                transient: true,
                ..
            } | StoreError::Task(_)
                | StoreError::Io(_)
        )
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Virtual keys, held as hashes.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn insert_key(&self, key: &KeyRecord) -> Result<()>;
    async fn list_keys(&self) -> Result<Vec<KeyRecord>>;
    /// Up to `limit` keys with ids after `after`, by id: loading 100k keys a
    /// page at a time keeps the start-up peak to one page.
    async fn keys_page(&self, after: Option<String>, limit: usize) -> Result<Vec<KeyRecord>>;
    async fn key_by_hash(&self, hash: [u8; 32]) -> Result<Option<KeyRecord>>;
    async fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>>;
    /// Keys created or changed at or after `since` (cache refresh).
    async fn keys_updated_since(&self, since: Timestamp) -> Result<Vec<KeyRecord>>;
    /// Marks a key revoked; `false` if no such key.
    async fn revoke_key(&self, id: &str, at: Timestamp) -> Result<bool>;
    async fn insert_admin_key(&self, key: &StoredAdminKey) -> Result<()>;
    /// Every stored admin key (revoked ones too), by creation.
    async fn admin_keys(&self) -> Result<Vec<StoredAdminKey>>;
    async fn admin_key_by_hash(&self, hash: [u8; 32]) -> Result<Option<StoredAdminKey>>;
    /// Marks an admin key revoked; `false` if no such key.
    async fn revoke_admin_key(&self, id: &str, at: Timestamp) -> Result<bool>;
}

/// An admin key scoped to one tenant, as stored: its hash, never the key.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredAdminKey {
    pub id: String,
    pub hash: [u8; 32],
    /// The first characters of the key, to recognise it in lists.
    pub prefix: String,
    pub name: Option<String>,
    pub tenant: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// The ledger's durability: the reservation log, journal batches (records, counters, closings), quarantine, and the state at start-up.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Applies a batch of journal entries in one transaction. Blocks: it
    /// is called from the journal's own thread, never from async code.
    fn apply_journal(&self, entries: &[JournalEntry]) -> Result<()>;
    /// Keeps an entry that [`LedgerStore::apply_journal`] refuses for what it
    /// holds (not for a passing I/O failure): a settlement's counters are
    /// charged and its reservation closed as usual, and its record is kept
    /// exactly, aside, until [`LedgerStore::retry_quarantined`] writes it. One bad
    /// record never holds up the rest.
    fn quarantine(&self, entry: &JournalEntry, reason: &str) -> Result<()>;
    async fn quarantined(&self) -> Result<Vec<Quarantined>>;
    async fn quarantined_count(&self) -> Result<u64>;
    /// Writes quarantined records that the store now accepts; returns how
    /// many were written and how many still fail.
    async fn retry_quarantined(&self) -> Result<(usize, usize)>;
    /// Makes a reservation durable before its request is forwarded; it is
    /// closed by the `Settle` or `Release` entry with its id. Short: the
    /// embedded store appends one line to its reservation log. Logging an
    /// open id again supersedes what was logged for it (an extension).
    fn log_reservation(&self, r: &OpenReservation) -> Result<()>;
    /// Every budget counter's committed amount, and the reservations never
    /// settled (a crash): the ledger's state at start-up.
    async fn load_ledger(&self) -> Result<(Vec<(String, Amount)>, Vec<OpenReservation>)>;
}

/// Budgets managed at run time (admin API, CLI).
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Budgets managed at run time (admin API, CLI), as stored JSON inputs.
    async fn list_budgets(&self) -> Result<Vec<StoredBudget>>;
    /// Up to `limit` budgets after `after` in `list_budgets` order
    /// (creation time, then id).
    async fn budgets_page(
        &self,
        after: Option<(Timestamp, String)>,
        limit: usize,
    ) -> Result<Vec<StoredBudget>>;
    async fn budget(&self, id: &str) -> Result<Option<StoredBudget>>;
    async fn put_budget(&self, b: &StoredBudget) -> Result<()>;
    /// `false` if no such budget.
    async fn delete_budget(&self, id: &str) -> Result<bool>;
    /// Changes whenever a stored budget changes: (count, latest update in ms).
    async fn budgets_version(&self) -> Result<(i64, i64)>;
    /// When budget `id` was first seen, and whether that is now: `now` the
    /// first time it is asked (and remembered), the remembered time after.
    async fn budget_first_seen(&self, id: &str, now: Timestamp) -> Result<(Timestamp, bool)>;
    async fn insert_badge_token(&self, t: &BadgeToken) -> Result<()>;
    async fn badge_token_by_hash(&self, hash: [u8; 32]) -> Result<Option<BadgeToken>>;
    /// A budget's badge tokens (revoked ones too), by creation.
    async fn badge_tokens(&self, budget_id: &str) -> Result<Vec<BadgeToken>>;
    /// Revokes token `id` of budget `budget_id`; `false` if no such token.
    async fn revoke_badge_token(&self, budget_id: &str, id: &str, at: Timestamp) -> Result<bool>;
}

/// A public badge token: it shows one budget's badge (for one subject of a
/// template budget) and nothing else. Held as a hash.
#[derive(Clone, Debug, PartialEq)]
pub struct BadgeToken {
    pub id: String,
    pub hash: [u8; 32],
    pub budget_id: String,
    pub subject: Option<String>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// Usage records and what they add up to.
#[async_trait]
pub trait UsageStore: Send + Sync {
    async fn records(&self, q: &RecordQuery) -> Result<RecordPage>;
    /// What the records charged to budget `budget_id` since `since` add
    /// up to, per subject (`subject`: which record field names it).
    async fn budget_spend(
        &self,
        budget_id: &str,
        subject: SubjectOf,
        since: Timestamp,
    ) -> Result<Vec<(String, Amount)>>;
    /// What every record since `since` adds up to, per subject and model
    /// served (whatever budgets it charged): the spend a budget created now
    /// finds already made in its period. `subject` names the record field
    /// (`Fixed`: every record, under that name); `only` keeps one value of it.
    async fn scope_spend(
        &self,
        subject: SubjectOf,
        only: Option<String>,
        since: Timestamp,
    ) -> Result<Vec<ScopeSpend>>;
    async fn report(&self, q: &ReportQuery) -> Result<Vec<ReportRow>>;
    /// The users that have made requests (as long as the rollups remember
    /// them), by user then tenant, a page at a time.
    async fn users_page(&self, q: &UsersQuery) -> Result<Vec<(String, Option<String>)>>;
    /// Deletes up to `batch` of the records that charged `budget_id`, and
    /// takes them out of the rollups in the same transaction (reports
    /// still equal the records). Returns how many; 0 when none are left.
    async fn purge_budget_records(&self, budget_id: &str, batch: usize) -> Result<u64>;
    /// Deletes up to `batch` of the records older than `before`, oldest
    /// first; the rollups keep them. Returns how many.
    async fn delete_records_before(&self, before: Timestamp, batch: usize) -> Result<u64>;
    /// The rows of [`UsageStore::report`], in order, handed to `each` as
    /// they are read: an export streams them and nothing holds them all.
    /// `each` returning `false` stops the read.
    async fn report_each(
        &self,
        q: &ReportQuery,
        each: Box<dyn FnMut(ReportRow) -> bool + Send>,
    ) -> Result<()>;
    /// What charged a budget since `since` (for one subject of a template
    /// budget): the top models by cost (with request counts) and the top
    /// spenders, `limit` of each.
    async fn budget_breakdown(
        &self,
        budget_id: &str,
        subject: Option<(SubjectOf, String)>,
        since: Timestamp,
        limit: usize,
    ) -> Result<Breakdown>;
}

/// Rate limits managed at run time (admin API).
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// In creation order.
    async fn list_rate_limits(&self) -> Result<Vec<StoredRateLimit>>;
    async fn put_rate_limit(&self, l: &StoredRateLimit) -> Result<()>;
    /// `false` if no such rate limit.
    async fn delete_rate_limit(&self, id: &str) -> Result<bool>;
    /// Changes whenever a stored rate limit changes.
    async fn rate_limits_version(&self) -> Result<(i64, i64)>;
}

/// Prices set at run time.
#[async_trait]
pub trait PriceStore: Send + Sync {
    async fn put_price(&self, model: &str, price: &StoredPrice) -> Result<()>;
    async fn prices(&self) -> Result<Vec<(String, StoredPrice)>>;
    /// Changes whenever a stored price changes: (count, latest update in ms).
    async fn prices_version(&self) -> Result<(i64, i64)>;
}

/// Alerts and the outbox of their deliveries (see [`alerts`]).
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Records an alert and its deliveries in one transaction, unless an
    /// alert with its dedupe key exists; deliveries past the hourly cap
    /// are recorded as suppressed.
    async fn insert_alert(
        &self,
        alert: &alerts::NewAlert,
        deliveries: &[(String, alerts::Target)],
        queue: alerts::Enqueue,
    ) -> Result<alerts::Recorded>;
    async fn alert_exists(&self, dedupe: &str) -> Result<bool>;
    /// Up to `limit` pending deliveries due at `now`, claimed until
    /// `lease_until` (a process that dies mid-attempt leaves them to be
    /// retried when the lease ends).
    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<alerts::DueDelivery>>;
    /// When the next pending delivery is due.
    async fn next_due(&self) -> Result<Option<Timestamp>>;
    /// Records an attempt and what follows it.
    async fn record_attempt(&self, attempt: &alerts::Attempt, next: alerts::Next) -> Result<()>;
    async fn alerts_page(&self, q: &alerts::AlertQuery) -> Result<Vec<alerts::AlertRow>>;
    #[allow(clippy::type_complexity)]
    async fn alert(
        &self,
        id: &str,
    ) -> Result<
        Option<(
            alerts::AlertRow,
            Vec<alerts::Delivery>,
            Vec<alerts::Attempt>,
        )>,
    >;
    /// Sends an alert's deliveries again from `now`; `None` if no such alert.
    async fn redeliver(&self, id: &str, now: Timestamp) -> Result<Option<usize>>;
    /// When `rule_id` last fired for `subject`.
    async fn last_rule_alert(&self, rule_id: &str, subject: &str) -> Result<Option<Timestamp>>;
    /// Spend since `since` per subject and minute (ms of the minute's start).
    async fn spend_by_minute(
        &self,
        by: alerts::SpendBy,
        since: Timestamp,
    ) -> Result<Vec<(String, i64, tollgate_core::Money)>>;
    async fn list_alert_rules(&self) -> Result<Vec<alerts::StoredRule>>;
    async fn put_alert_rule(&self, rule: &alerts::StoredRule) -> Result<()>;
    async fn delete_alert_rule(&self, id: &str) -> Result<bool>;
    /// Changes when rules are added, changed or deleted.
    async fn alert_rules_version(&self) -> Result<(i64, i64)>;
}

/// Everything a backend stores, one trait per domain. A backend
/// implements them all; `Store` is what the rest of Tollgate holds.
pub trait Store:
    KeyStore
    + LedgerStore
    + cycles::CyclesStore
    + BudgetStore
    + RateLimitStore
    + UsageStore
    + PriceStore
    + AlertStore
    + 'static
{
}

impl<T> Store for T where
    T: KeyStore
        + LedgerStore
        + cycles::CyclesStore
        + BudgetStore
        + RateLimitStore
        + UsageStore
        + PriceStore
        + AlertStore
        + 'static
{
}

/// Which field of a usage record is a budget's subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectOf {
    User,
    Tenant,
    Session,
    Key,
    /// A budget with one subject: every record it charged is that subject's.
    Fixed(String),
}

/// A budget's spend by model (cost, requests) and by spender.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Breakdown {
    pub models: Vec<(String, tollgate_core::Money, u64)>,
    pub spenders: Vec<(String, tollgate_core::Money)>,
}

/// One subject's spend on one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeSpend {
    pub subject: String,
    pub model: String,
    pub spent: Amount,
}

/// A record kept aside because the store refused it.
#[derive(Clone, Debug, PartialEq)]
pub struct Quarantined {
    pub request_id: String,
    pub quarantined_at: Timestamp,
    pub reason: String,
    pub record: UsageRecord,
}

/// A price set through the admin API or CLI, or imported, and the
/// provider it is for (shown in the catalog; `None` keeps the catalog's).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPrice {
    pub price: ModelPrice,
    pub provider: Option<String>,
}

/// A budget as stored: its id and the validated input that recreates it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredBudget {
    pub id: String,
    pub input: tollgate_core::budget::BudgetInput,
    pub created_at: Timestamp,
}

/// A rate limit as stored: its id and the input that recreates it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRateLimit {
    pub id: String,
    pub input: tollgate_core::rate::RateLimitInput,
    pub created_at: Timestamp,
}

/// Opens the store a `database:` URL names, creating and migrating it.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let store = sqlite::SqliteStore::open(path).await?;
        return Ok(Arc::new(store));
    }
    Err(StoreError::UnsupportedUrl(url.to_string()))
}
