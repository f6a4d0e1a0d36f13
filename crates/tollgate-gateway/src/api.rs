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
#[derive(Debug, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct BudgetView {
    pub id: String,
    pub name: Option<String>,
    pub scope: &'static str,
    /// `None` for the global budget.
    pub subject: Option<String>,
    /// `override`, `role:<name>` or `default`.
    pub tier: String,
    /// `config` or `admin`; `None` where not asked.
    pub source: Option<&'static str>,
    pub period: String,
    pub timezone: String,
    pub action: &'static str,
    pub models: Vec<String>,
    pub limit_usd: Option<String>,
    pub limit_tokens: Option<u64>,
    /// Debt Cycles commits with `ALLOW_WITH_OVERDRAFT` may run up past the
    /// limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overdraft_usd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overdraft_tokens: Option<u64>,
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

impl BudgetView {
    pub fn new(a: &Applied, st: &State, source: Option<Source>) -> BudgetView {
        let b = &a.budget;
        BudgetView {
            id: b.id.clone(),
            name: b.name.clone(),
            scope: b.scope.as_str(),
            subject: (b.scope != Scope::Global).then(|| a.subject.clone()),
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
            timezone: b.calendar.tz_name.to_string(),
            action: b.action.as_str(),
            models: b.models.clone(),
            limit_usd: st.limit.money.map(|m| m.to_string()),
            limit_tokens: st.limit.tokens,
            overdraft_usd: a.budget.overdraft_money.map(|m| m.to_usd_string()),
            overdraft_tokens: a.budget.overdraft_tokens,
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
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

/// `GET /admin/budgets`: a page of budget instances.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetPage {
    pub budgets: Vec<BudgetView>,
    pub next_cursor: Option<String>,
}

/// `GET /admin/budgets/{id}`: the definition and its instances.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetDetail {
    /// The budget's definition, as `POST /admin/budgets` takes it.
    #[schema(value_type = Object)]
    pub budget: tollgate_core::budget::BudgetInput,
    pub instances: Vec<BudgetView>,
    pub breakdown: BudgetBreakdown,
}

/// What charged a budget in its current period (or window), over all its
/// subjects: by model, and by user for budgets that users share.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetBreakdown {
    /// The period's start; `None` for a lifetime budget.
    pub since: Option<String>,
    pub by_model: ReportRows,
    /// Highest spend first, at most 50; `None` for per-user budgets.
    pub by_user: Option<ReportRows>,
}

/// What a `DELETE` did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted<'a> {
    pub id: &'a str,
    pub deleted: bool,
    /// Records deleted with it (`?purge_usage=true` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purged_records: Option<u64>,
}

/// What revoking a key did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked<'a> {
    pub id: &'a str,
    pub revoked: bool,
}

/// `GET /admin/keys`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList<'a> {
    pub keys: Vec<KeyView<'a>>,
}

/// `GET /admin/records`: a page of records, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordPage<'a> {
    pub records: Vec<RecordView<'a>>,
    pub next_cursor: Option<String>,
}

/// The totals of a report row (and of the whole report).
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct Totals {
    /// Requests served (refusals not included).
    pub requests: u64,
    /// Requests a budget refused.
    pub refused: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: String,
}

impl Totals {
    /// The columns of [`Totals::cells`], in order (CSV and table headers).
    pub const COLUMNS: [&'static str; 8] = [
        "requests",
        "refused",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "cost_usd",
    ];

    pub fn new(
        requests: u64,
        refused: u64,
        u: &tollgate_core::Usage,
        cost: tollgate_core::Money,
    ) -> Totals {
        Totals {
            requests,
            refused,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_input_tokens: u.cached_input_tokens,
            cache_write_tokens: u.cache_write_5m_tokens + u.cache_write_1h_tokens,
            reasoning_tokens: u.reasoning_tokens,
            cost_usd: cost.to_string(),
        }
    }

    /// The values as text, in [`Totals::COLUMNS`] order.
    pub fn cells(&self) -> [String; 8] {
        [
            self.requests.to_string(),
            self.refused.to_string(),
            self.input_tokens.to_string(),
            self.output_tokens.to_string(),
            self.cached_input_tokens.to_string(),
            self.cache_write_tokens.to_string(),
            self.reasoning_tokens.to_string(),
            self.cost_usd.clone(),
        ]
    }
}

/// One report row: each grouping dimension's value under its name
/// (`{"user": "alice", "model": "gpt-4o", ...totals}`), then the totals.
#[derive(Debug)]
pub struct ReportRowView<'a> {
    pub dimensions: &'a [tollgate_store::GroupBy],
    pub keys: &'a [Option<String>],
    pub totals: Totals,
}

impl Serialize for ReportRowView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.dimensions.len() + Totals::COLUMNS.len()))?;
        for (d, k) in self.dimensions.iter().zip(self.keys) {
            m.serialize_entry(d.name(), k)?;
        }
        let t = &self.totals;
        m.serialize_entry("requests", &t.requests)?;
        m.serialize_entry("refused", &t.refused)?;
        m.serialize_entry("input_tokens", &t.input_tokens)?;
        m.serialize_entry("output_tokens", &t.output_tokens)?;
        m.serialize_entry("cached_input_tokens", &t.cached_input_tokens)?;
        m.serialize_entry("cache_write_tokens", &t.cache_write_tokens)?;
        m.serialize_entry("reasoning_tokens", &t.reasoning_tokens)?;
        m.serialize_entry("cost_usd", &t.cost_usd)?;
        m.end()
    }
}

/// A report row's schema: the totals, and each grouping dimension's value
/// under its name (`"user"`, `"model"`, `"day"`, ...; `null` for records
/// without that dimension).
fn report_row_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
    use utoipa::openapi::{Ref, RefOr, Schema};
    let dims = ObjectBuilder::new()
        .description(Some(
            "One key per grouping dimension (user, tenant, session, key, model, provider, \
             budget, day, hour): its value, null for records without it",
        ))
        .additional_properties(Some(ObjectBuilder::new().schema_type(
            utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]),
        )));
    RefOr::T(Schema::AllOf(
        AllOfBuilder::new()
            .item(Ref::from_schema_name("Totals"))
            .item(dims)
            .build(),
    ))
}

impl utoipa::PartialSchema for ReportRowView<'_> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        report_row_schema()
    }
}

impl utoipa::ToSchema for ReportRowView<'_> {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push(("Totals".into(), <Totals as utoipa::PartialSchema>::schema()));
    }
}

impl utoipa::PartialSchema for ReportRows {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(report_row_schema())
            .into()
    }
}

impl utoipa::ToSchema for ReportRows {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <ReportRowView<'_> as utoipa::ToSchema>::schemas(schemas);
    }
}

/// Report rows that own their data, serialized as [`ReportRowView`]s.
#[derive(Debug, Clone)]
pub struct ReportRows {
    pub dimensions: Vec<tollgate_store::GroupBy>,
    pub rows: Vec<tollgate_store::ReportRow>,
}

impl Serialize for ReportRows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.rows.iter().map(|r| ReportRowView {
            dimensions: &self.dimensions,
            keys: &r.keys,
            totals: Totals::new(r.requests, r.refused, &r.usage, r.cost),
        }))
    }
}

/// `GET /admin/reports`: `{"rows": [...], "total": {...}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportView<'a> {
    pub rows: Vec<ReportRowView<'a>>,
    pub total: Totals,
}

/// `GET /usage`: the caller as Tollgate sees it, and every budget that
/// applies to it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageView<'a> {
    pub key_id: Option<&'a str>,
    pub user: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub session: Option<&'a str>,
    pub budgets: Vec<BudgetView>,
}

/// The journal writer's counters.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JournalCounters {
    pub entries_written: u64,
    pub batches: u64,
    pub write_errors: u64,
    /// Entries that waited for room in the queue (none is ever dropped).
    pub waited_for_space: u64,
    pub quarantined: u64,
}

/// `GET /admin/stats`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsView {
    /// UTC calendar day and month.
    pub today: Totals,
    pub this_month: Totals,
    pub all_time: Totals,
    /// This month's, highest cost first (at most 10).
    pub top_models: ReportRows,
    pub top_spenders: ReportRows,
    /// Requests refused since this process started, by reason (error
    /// code): budget refusals, rate limits, throttling.
    pub refusals_since_start: std::collections::BTreeMap<&'static str, u64>,
    pub journal: JournalCounters,
    /// Records kept aside because the store refused them (all time).
    pub quarantined_records: u64,
    pub budgets_loaded: usize,
    pub models_priced: usize,
    /// Requests whose usage exceeded their reservation (an estimate miss:
    /// charged in full and recorded as overspend).
    pub overspent_requests: u64,
    /// Usage fields beyond any plausible bound, charged up to the ceiling.
    pub suspicious_usage: u64,
    /// Unknown keys cost no database read; misses refresh the key map at
    /// most once a second.
    pub key_miss_refreshes: u64,
}

/// What the catalog falls back to for a model it does not price.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum FallbackView<'a> {
    /// `"strict"`: unpriced models are refused.
    Strict(&'static str),
    Price(&'a tollgate_core::ModelPrice),
}

/// `GET /admin/pricing`: the effective date, the fallback, every model's prices.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogView<'a> {
    pub effective_date: &'static str,
    /// `"strict"` (unpriced models are refused), or the price used for
    /// unpriced models.
    #[schema(value_type = Object)]
    pub fallback: FallbackView<'a>,
    /// Each model: its provider, prices per Mtok (decimal strings), context
    /// window and where the price comes from.
    #[schema(value_type = Vec<Object>)]
    pub models: Vec<&'a tollgate_core::pricing::catalog::CatalogEntry>,
}

/// Who an explained request is for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallerView {
    pub key_id: Option<String>,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub role: Option<String>,
    pub session: Option<String>,
    pub budget_id: Option<String>,
}

impl From<&tollgate_core::Caller> for CallerView {
    fn from(c: &tollgate_core::Caller) -> CallerView {
        CallerView {
            key_id: c.key_id.clone(),
            user: c.user.clone(),
            tenant: c.tenant.clone(),
            role: c.role.clone(),
            session: c.session.clone(),
            budget_id: c.budget_id.clone(),
        }
    }
}

/// What the proxy would do with an explained request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum DecisionView {
    Allow {
        max_tokens: Option<u64>,
        reason: &'static str,
    },
    AllowCapped {
        max_tokens: u64,
        asked_max_tokens: u64,
        reason: &'static str,
    },
    Refuse {
        /// The budget that refuses (absent when no budget is the reason).
        #[serde(skip_serializing_if = "Option::is_none")]
        budget: Option<String>,
        status: u16,
        code: Option<String>,
        reason: String,
    },
}

/// `POST /admin/explain` (and `tollgate explain`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExplainView {
    /// The budget (`downgrade`, or a low one's fallbacks) that makes
    /// `model_served` another model than the one asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downgraded_by: Option<String>,
    /// The `throttle` budget past its limit: the request would be admitted
    /// at its throttle rate, if that has room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_by: Option<String>,
    /// The budget hint the request's system prompt would start with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_hint: Option<String>,
    pub caller: CallerView,
    pub model: String,
    pub model_served: String,
    pub provider: Option<String>,
    pub budgets: Vec<BudgetView>,
    pub decision: DecisionView,
}

/// A record the store refused, kept aside (`tollgate quarantine list`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuarantinedView<'a> {
    pub request_id: &'a str,
    pub quarantined_at: String,
    pub reason: &'a str,
    pub record: RecordView<'a>,
}

/// A rate limit, and where it is managed (`config` or `admin`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RateLimitView {
    pub id: String,
    pub scope: &'static str,
    /// `None`: every subject of the scope (a default), or global.
    pub subject: Option<String>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub models: Vec<String>,
    pub source: &'static str,
}

impl RateLimitView {
    pub fn new(l: &tollgate_core::rate::RateLimit, source: &'static str) -> RateLimitView {
        RateLimitView {
            id: l.id.clone(),
            scope: l.scope.as_str(),
            subject: l.subject.clone(),
            requests_per_minute: l.requests_per_minute,
            tokens_per_minute: l.tokens_per_minute,
            models: l.models.clone(),
            source,
        }
    }
}

/// `GET /admin/rate-limits`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RateLimitList {
    pub rate_limits: Vec<RateLimitView>,
}

/// `GET /admin/users`: a page of users.
#[derive(Debug, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct UsersPage {
    pub users: Vec<UserView>,
    pub next_cursor: Option<String>,
}

/// A user and every budget that applies to it, with the tightest daily
/// and monthly budget flattened into `daily_*` / `monthly_*` (`null`
/// where no such budget applies).
#[derive(Debug, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct UserView {
    pub user_id: String,
    pub tenant: Option<String>,
    pub daily_used_usd: Option<String>,
    pub daily_limit_usd: Option<String>,
    pub daily_remaining_usd: Option<String>,
    pub daily_used_tokens: Option<u64>,
    pub daily_limit_tokens: Option<u64>,
    pub daily_remaining_tokens: Option<u64>,
    pub monthly_used_usd: Option<String>,
    pub monthly_limit_usd: Option<String>,
    pub monthly_remaining_usd: Option<String>,
    pub monthly_used_tokens: Option<u64>,
    pub monthly_limit_tokens: Option<u64>,
    pub monthly_remaining_tokens: Option<u64>,
    /// The worst of its budgets: `ok`, `low` or `over_limit`.
    pub status: &'static str,
    pub budgets: Vec<BudgetView>,
}

/// Spend in a UTC calendar period, in total and by model.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PeriodUsage {
    pub since: String,
    pub total: Totals,
    pub by_model: ReportRows,
}

/// `GET /admin/usage/{user}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserUsage {
    pub user_id: String,
    pub tenant: Option<String>,
    pub budgets: Vec<BudgetView>,
    pub today: PeriodUsage,
    pub this_month: PeriodUsage,
}

/// A tenant admin key as listed (never its secret; `key` only at creation).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminKeyView<'a> {
    pub id: &'a str,
    pub prefix: &'a str,
    pub tenant: &'a str,
    pub name: Option<&'a str>,
    pub created_at: String,
    pub revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
}

impl<'a> AdminKeyView<'a> {
    pub fn new(k: &'a tollgate_store::StoredAdminKey, key: Option<&'a str>) -> Self {
        AdminKeyView {
            id: &k.id,
            prefix: &k.prefix,
            tenant: &k.tenant,
            name: k.name.as_deref(),
            created_at: k.created_at.to_string(),
            revoked: k.revoked_at.is_some(),
            key,
        }
    }
}

/// `GET /admin/admin-keys`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminKeyList<'a> {
    pub admin_keys: Vec<AdminKeyView<'a>>,
}

/// A public badge token as listed (the token itself only at creation).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BadgeTokenView<'a> {
    pub id: &'a str,
    pub budget_id: &'a str,
    pub subject: Option<&'a str>,
    pub created_at: String,
    pub revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
    /// The public badge's path (only at creation, with the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl<'a> BadgeTokenView<'a> {
    pub fn new(t: &'a tollgate_store::BadgeToken, token: Option<&'a str>) -> Self {
        BadgeTokenView {
            id: &t.id,
            budget_id: &t.budget_id,
            subject: t.subject.as_deref(),
            created_at: t.created_at.to_string(),
            revoked: t.revoked_at.is_some(),
            token,
            url: token.map(|t| format!("/badge/{t}.svg")),
        }
    }
}

/// `GET /admin/budgets/{id}/badge-tokens`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BadgeTokenList<'a> {
    pub badge_tokens: Vec<BadgeTokenView<'a>>,
}

/// Every admin error: `{"error": {"message", "type"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `not_found_error`,
    /// `api_error`.
    #[serde(rename = "type")]
    pub kind: String,
}
