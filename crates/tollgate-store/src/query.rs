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
    /// Records that charged this budget.
    pub budget: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// Records to skip (after the cursor, if any).
    pub offset: usize,
}

/// Who has made requests: (user, tenant) pairs in that order.
#[derive(Clone, Debug, Default)]
pub struct UsersQuery {
    /// The last pair of the previous page.
    pub after: Option<(String, Option<String>)>,
    pub tenant: Option<String>,
    pub user: Option<String>,
    pub limit: usize,
}

#[derive(Clone, Debug, Default)]
pub struct RecordPage {
    pub records: Vec<UsageRecord>,
    pub next_cursor: Option<String>,
}

/// A dimension a report groups or filters by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupBy {
    User,
    Tenant,
    Session,
    Model,
    Key,
    Provider,
    /// The budgets a record charged: a record that charged several is
    /// counted under each (the report's total counts it once).
    Budget,
    Day,
    Hour,
}

impl GroupBy {
    pub const EVERY: [GroupBy; 9] = [
        GroupBy::User,
        GroupBy::Tenant,
        GroupBy::Session,
        GroupBy::Model,
        GroupBy::Key,
        GroupBy::Provider,
        GroupBy::Budget,
        GroupBy::Day,
        GroupBy::Hour,
    ];

    pub fn parse(s: &str) -> Option<GroupBy> {
        GroupBy::EVERY.into_iter().find(|g| g.name() == s)
    }

    /// A comma-separated list of distinct dimensions (`user,model`).
    pub fn parse_list(s: &str) -> Result<Vec<GroupBy>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim) {
            let g = GroupBy::parse(part)
                .ok_or_else(|| format!("group_by {part:?} is not one of {}", GroupBy::ALL))?;
            if out.contains(&g) {
                return Err(format!("group_by names {part:?} twice"));
            }
            out.push(g);
        }
        Ok(out)
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
            GroupBy::Budget => "budget",
            GroupBy::Day => "day",
            GroupBy::Hour => "hour",
        }
    }

    pub const ALL: &'static str = "user|tenant|session|model|key|provider|budget|day|hour";
}

/// Equality filters of a report: only records with these values count.
/// (Day and hour filters are time bounds: see [`ReportQuery::from`].)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportFilter {
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub session: Option<String>,
    pub key_id: Option<String>,
    /// The model served.
    pub model: Option<String>,
    pub provider: Option<String>,
    /// Records that charged this budget.
    pub budget: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ReportQuery {
    /// Distinct dimensions, in the order of the row's keys; empty: one row
    /// with the totals.
    pub group_by: Vec<GroupBy>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub filter: ReportFilter,
    /// Read the raw records alone, never the rollups: the same answer,
    /// slower (benchmarks and tests compare the two).
    pub raw_only: bool,
}

impl ReportQuery {
    /// Every record in `[from, to)`, grouped by `group_by`.
    pub fn new(group_by: Vec<GroupBy>) -> ReportQuery {
        ReportQuery {
            group_by,
            from: None,
            to: None,
            filter: ReportFilter::default(),
            raw_only: false,
        }
    }
}

/// One group's totals. `keys` holds the group's value of each dimension
/// of the query, in order; `None` for records without that dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRow {
    pub keys: Vec<Option<String>>,
    /// Requests served (refusals not included).
    pub requests: u64,
    /// Requests a budget refused.
    pub refused: u64,
    pub usage: Usage,
    pub cost: Money,
}
