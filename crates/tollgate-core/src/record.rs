//! The usage record: one per request that reached (or tried to reach) a
//! provider. It is what reports, budgets' `used`, alerts and live views read.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::money::Money;
use crate::usage::Usage;

/// What happened to a request besides its status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Flags {
    /// `max_tokens` was lowered to what a budget affords.
    pub capped: bool,
    /// A cheaper model was forced.
    pub downgraded: bool,
    /// A budget at its limit allowed the request with a warning.
    pub warned: bool,
    /// A budget refused the request.
    pub blocked: bool,
    /// Usage was counted by Tollgate from the streamed text, because the
    /// provider's usage never arrived (disconnect, broken stream).
    pub usage_estimated: bool,
    /// The client went away before the response was complete.
    pub client_disconnected: bool,
    /// The upstream stream broke or stalled before it completed.
    pub stream_interrupted: bool,
    /// Settled at start-up from a reservation a crashed process left open:
    /// charged at the reserved (worst-case) amount.
    pub reconciled: bool,
    /// The provider's usage was implausible (far beyond the request's
    /// bounds, or past the ceiling a usage field may carry): charged as
    /// reported up to the ceiling.
    pub usage_suspicious: bool,
    /// Tollgate ended the stream: its output passed what it was allowed.
    pub cut_by_budget: bool,
    /// A `shadow` budget would have refused the request (it was served).
    pub would_block: bool,
    /// Past a `throttle` budget's limit, admitted at its throttle rate.
    pub throttled: bool,
}

impl Flags {
    const NAMES: [&'static str; 12] = [
        "capped",
        "downgraded",
        "warned",
        "blocked",
        "usage_estimated",
        "client_disconnected",
        "stream_interrupted",
        "reconciled",
        "usage_suspicious",
        "cut_by_budget",
        "would_block",
        "throttled",
    ];

    fn bits(&self) -> [bool; 12] {
        [
            self.capped,
            self.downgraded,
            self.warned,
            self.blocked,
            self.usage_estimated,
            self.client_disconnected,
            self.stream_interrupted,
            self.reconciled,
            self.usage_suspicious,
            self.cut_by_budget,
            self.would_block,
            self.throttled,
        ]
    }

    /// The set flags' names, for JSON and storage.
    pub fn names(&self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .zip(self.bits())
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect()
    }

    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Flags {
        let mut f = Flags::default();
        for n in names {
            match n {
                "capped" => f.capped = true,
                "downgraded" => f.downgraded = true,
                "warned" => f.warned = true,
                "blocked" => f.blocked = true,
                "usage_estimated" => f.usage_estimated = true,
                "client_disconnected" => f.client_disconnected = true,
                "stream_interrupted" => f.stream_interrupted = true,
                "reconciled" => f.reconciled = true,
                "usage_suspicious" => f.usage_suspicious = true,
                "cut_by_budget" => f.cut_by_budget = true,
                "would_block" => f.would_block = true,
                "throttled" => f.throttled = true,
                _ => {}
            }
        }
        f
    }
}

/// One request's usage and cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub request_id: String,
    pub time: Timestamp,
    pub key_id: Option<String>,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub session: Option<String>,
    /// Ids of the budgets this request was charged to.
    pub budgets: Vec<String>,
    pub provider: String,
    pub model_requested: String,
    pub model_served: String,
    pub usage: Usage,
    pub cost: Money,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    /// The HTTP status the client got.
    pub status: u16,
    pub flags: Flags,
}
