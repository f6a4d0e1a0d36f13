//! Alerts and their deliveries: the durable outbox.
//!
//! An alert is one fired event (a budget threshold, a rule); a delivery is
//! that alert on its way to one target, with every attempt on record.
//! An alert's `dedupe` key makes firing idempotent: the same threshold in
//! the same period is one alert, however many times it is noticed — by
//! concurrent requests, or again after a restart.

use jiff::Timestamp;

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    Delivered,
    /// Given up: out of time (the retry horizon) or refused outright.
    Failed,
    /// Capped by `alerts.max_per_hour`: recorded, never sent unless
    /// redelivered.
    Suppressed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Suppressed => "suppressed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            "suppressed" => DeliveryStatus::Suppressed,
            _ => return None,
        })
    }
}

/// An alert to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAlert {
    pub id: String,
    /// One alert per key: `budget.threshold|<budget>|<subject>|<period>|80`.
    pub dedupe: String,
    pub kind: String,
    pub severity: String,
    pub budget_id: Option<String>,
    pub rule_id: Option<String>,
    pub subject: Option<String>,
    pub created_at: Timestamp,
    /// The webhook body (JSON).
    pub payload: String,
}

/// A target an alert goes to, as it was when the alert fired.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub name: String,
    pub url: String,
    /// `json` or `slack`.
    pub format: String,
    /// The environment variable holding the signing secret, if any.
    pub secret_env: Option<String>,
}

/// How an alert's deliveries join the outbox (times by the system clock,
/// which the outbox runs on).
#[derive(Clone, Copy, Debug)]
pub struct Enqueue {
    pub at: Timestamp,
    /// When the first attempt is due (`at`, or later when the caller
    /// attempts them itself first).
    pub first_attempt_at: Timestamp,
    /// At most this many deliveries in the hour before `at`, checked in
    /// the transaction that records the alert: the rest are suppressed.
    pub max_per_hour: Option<u64>,
}

/// What recording an alert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// New; this many of its deliveries were suppressed by the cap.
    New { suppressed: usize },
    /// An alert with the same dedupe key exists: nothing was written.
    Duplicate,
}

/// One delivery of one alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub alert_id: String,
    pub target: Target,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_at: Option<Timestamp>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// A delivery claimed for an attempt, with what it sends.
#[derive(Clone, Debug, PartialEq)]
pub struct DueDelivery {
    pub delivery: Delivery,
    pub kind: String,
    pub payload: String,
    /// When the alert fired or was last redelivered: the retry horizon
    /// counts from it.
    pub retry_from: Timestamp,
}

/// One attempt's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub delivery_id: String,
    pub n: u32,
    pub time: Timestamp,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// What follows an attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Next {
    Delivered,
    RetryAt(Timestamp),
    Failed,
}

/// An alert as listed: its facts and its deliveries summed up.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRow {
    pub id: String,
    pub kind: String,
    pub severity: String,
    pub budget_id: Option<String>,
    pub rule_id: Option<String>,
    pub subject: Option<String>,
    pub created_at: Timestamp,
    /// `pending` while any delivery is, else `failed` if any failed, else
    /// `suppressed` if any was, else `delivered`; `recorded` when the
    /// alert had no target.
    pub status: &'static str,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
    pub payload: String,
}

/// `GET /admin/alerts` filters; newest first, `after` is the last row of
/// the previous page.
#[derive(Clone, Debug, Default)]
pub struct AlertQuery {
    pub kind: Option<String>,
    pub budget_id: Option<String>,
    pub rule_id: Option<String>,
    pub status: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub after: Option<(Timestamp, String)>,
    pub limit: usize,
}

/// What a rule's spend is summed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpendBy {
    /// All records as one subject, `*`.
    All,
    Tenant,
    User,
    Key,
    Model,
}

/// A rule as stored: its id and the input that recreates it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRule {
    pub id: String,
    /// The rule's JSON input.
    pub spec: String,
    pub created_at: Timestamp,
}
