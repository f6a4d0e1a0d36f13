//! Queries over usage records: paged raw records and grouped reports.

use jiff::Timestamp;
use tollgate_core::{Money, Usage, UsageRecord};

/// Filters for `GET /admin/records`, newest first.
#[derive(Clone, Debug, Default)]
pub struct RecordQuery {
    pub limit: usize,
    /// Opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub session: Option<String>,
    pub model: Option<String>,
    pub key_id: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

#[derive(Clone, Debug, Default)]
pub struct RecordPage {
    pub records: Vec<UsageRecord>,
    pub next_cursor: Option<String>,
}

/// The dimension a report groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    User,
    Tenant,
    Session,
    Model,
    Key,
    Provider,
    Day,
    Hour,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "user" => GroupBy::User,
            "tenant" => GroupBy::Tenant,
            "session" => GroupBy::Session,
            "model" => GroupBy::Model,
            "key" => GroupBy::Key,
            "provider" => GroupBy::Provider,
            "day" => GroupBy::Day,
            "hour" => GroupBy::Hour,
            _ => return None,
        })
    }

    /// The JSON key of the grouping dimension (`"model"`, `"day"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::User => "user",
            GroupBy::Tenant => "tenant",
            GroupBy::Session => "session",
            GroupBy::Model => "model",
            GroupBy::Key => "key",
            GroupBy::Provider => "provider",
            GroupBy::Day => "day",
            GroupBy::Hour => "hour",
        }
    }

    pub const ALL: &'static str = "user|tenant|session|model|key|provider|day|hour";
}

#[derive(Clone, Debug)]
pub struct ReportQuery {
    pub group_by: GroupBy,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub user: Option<String>,
    pub tenant: Option<String>,
}

/// One group's totals. `key` is `None` for records without that dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRow {
    pub key: Option<String>,
    /// Requests served (refusals not included).
    pub requests: u64,
    /// Requests a budget refused.
    pub refused: u64,
    pub usage: Usage,
    pub cost: Money,
}
