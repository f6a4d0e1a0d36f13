//! The JSON shapes of the API, typed, in one place: what REST answers, what
//! the CLI prints (`--format json`), and what GraphQL and the dashboard will
//! read. Money is a decimal USD string, never a float; times are RFC 3339.

use serde::Serialize;
use tollgate_core::budget::{Scope, Tier};
use tollgate_core::period::PeriodKind;
use tollgate_core::{KeyRecord, UsageRecord};

use crate::budgets::{Applied, Source, State};

/// A budget instance: its limits, used (committed), reserved (in flight),
/// remaining, status and period.
#[derive(Debug, Serialize)]
pub struct BudgetView<'a> {
    pub id: &'a str,
    pub name: Option<&'a str>,
    pub scope: &'static str,
    /// `None` for the global budget.
    pub subject: Option<&'a str>,
    /// `override`, `role:<name>` or `default`.
    pub tier: String,
    /// `config` or `admin`; `None` where not asked.
    pub source: Option<&'static str>,
    pub period: String,
    pub timezone: &'a str,
    pub action: &'static str,
    pub models: &'a [String],
    pub limit_usd: Option<String>,
    pub limit_tokens: Option<u64>,
    pub used_usd: String,
    pub used_tokens: u64,
    pub reserved_usd: String,
    pub reserved_tokens: u64,
    pub remaining_usd: Option<String>,
    pub remaining_tokens: Option<u64>,
    /// `ok`, `low` or `over_limit`.
    pub status: &'static str,
    /// `None` for a lifetime budget.
    pub period_start: Option<String>,
    pub resets_at: Option<String>,
}

impl<'a> BudgetView<'a> {
    pub fn new(a: &'a Applied, st: &State, source: Option<Source>) -> BudgetView<'a> {
        let b = &a.budget;
        BudgetView {
            id: &b.id,
            name: b.name.as_deref(),
            scope: b.scope.as_str(),
            subject: (b.scope != Scope::Global).then_some(a.subject.as_str()),
            tier: match &b.tier {
                Tier::Override => "override".to_string(),
                Tier::Role(r) => format!("role:{r}"),
                Tier::Default => "default".to_string(),
            },
            source: source.map(|s| match s {
                Source::Config => "config",
                Source::Admin => "admin",
            }),
            period: b.period.to_string(),
            timezone: &b.calendar.tz_name,
            action: b.action.as_str(),
            models: &b.models,
            limit_usd: st.limit.money.map(|m| m.to_string()),
            limit_tokens: st.limit.tokens,
            used_usd: st.spent.money.to_string(),
            used_tokens: st.spent.tokens,
            reserved_usd: st.reserved.money.to_string(),
            reserved_tokens: st.reserved.tokens,
            remaining_usd: st.headroom.money.map(|m| m.to_string()),
            remaining_tokens: st.headroom.tokens,
            status: st.status,
            period_start: (b.period != PeriodKind::Lifetime).then(|| a.period.start.to_string()),
            resets_at: a.resets_at.map(|t| t.to_string()),
        }
    }
}

/// A virtual key as listed (never its secret; `key` only once, at creation).
#[derive(Debug, Serialize)]
pub struct KeyView<'a> {
    pub id: &'a str,
    pub prefix: &'a str,
    pub name: Option<&'a str>,
    pub user: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub role: Option<&'a str>,
    pub trusted: bool,
    pub models: &'a [String],
    pub expires_at: Option<String>,
    pub revoked: bool,
    pub created_at: String,
    /// The key itself: present only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
}

impl<'a> KeyView<'a> {
    pub fn new(k: &'a KeyRecord) -> KeyView<'a> {
        KeyView {
            id: &k.id,
            prefix: &k.prefix,
            name: k.name.as_deref(),
            user: k.user.as_deref(),
            tenant: k.tenant.as_deref(),
            role: k.role.as_deref(),
            trusted: k.trusted,
            models: &k.models,
            expires_at: k.expires_at.map(|t| t.to_string()),
            revoked: k.revoked,
            created_at: k.created_at.to_string(),
            key: None,
        }
    }

    /// The view of a key just created, with its secret (shown once).
    pub fn created(k: &'a KeyRecord, secret: &'a str) -> KeyView<'a> {
        KeyView {
            key: Some(secret),
            ..KeyView::new(k)
        }
    }
}

/// A usage record.
#[derive(Debug, Serialize)]
pub struct RecordView<'a> {
    pub request_id: &'a str,
    pub time: String,
    pub key_id: Option<&'a str>,
    pub user: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub session: Option<&'a str>,
    pub budgets: &'a [String],
    pub provider: &'a str,
    pub model_requested: &'a str,
    pub model_served: &'a str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: String,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub status: u16,
    pub flags: Vec<&'static str>,
}

impl<'a> RecordView<'a> {
    pub fn new(r: &'a UsageRecord) -> RecordView<'a> {
        let u = &r.usage;
        RecordView {
            request_id: &r.request_id,
            time: r.time.to_string(),
            key_id: r.key_id.as_deref(),
            user: r.user.as_deref(),
            tenant: r.tenant.as_deref(),
            session: r.session.as_deref(),
            budgets: &r.budgets,
            provider: &r.provider,
            model_requested: &r.model_requested,
            model_served: &r.model_served,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_input_tokens: u.cached_input_tokens,
            cache_write_5m_tokens: u.cache_write_5m_tokens,
            cache_write_1h_tokens: u.cache_write_1h_tokens,
            reasoning_tokens: u.reasoning_tokens,
            cost_usd: r.cost.to_string(),
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            status: r.status,
            flags: r.flags.names(),
        }
    }
}
