//! The Cycles runtime API's bodies, exactly as its OpenAPI document
//! says: requests refuse unknown fields, responses carry no field the
//! schema lacks and no `null` (absent fields are left out), since the
//! official clients treat either as an ambiguous answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The standard units. Tollgate budgets hold money and tokens;
/// `CREDITS` and `RISK_POINTS` are accepted on the wire and answered as
/// a unit no budget is kept in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Unit {
    UsdMicrocents,
    Tokens,
    Credits,
    RiskPoints,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::UsdMicrocents => "USD_MICROCENTS",
            Unit::Tokens => "TOKENS",
            Unit::Credits => "CREDITS",
            Unit::RiskPoints => "RISK_POINTS",
        }
    }
}

/// A non-negative amount in one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amount {
    pub unit: Unit,
    pub amount: i64,
}

impl Amount {
    pub fn new(unit: Unit, amount: i64) -> Amount {
        Amount { unit, amount }
    }
}

/// An amount that may be negative (a balance in debt).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAmount {
    pub unit: Unit,
    pub amount: i64,
}

/// The dimension bag a budget is found by: tenant → workspace → app →
/// workflow → agent → toolset, plus free `dimensions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<BTreeMap<String, String>>,
}

impl Subject {
    /// The standard levels' values, in canonical order (tenant first).
    pub fn levels(&self) -> [&Option<String>; 6] {
        [
            &self.tenant,
            &self.workspace,
            &self.app,
            &self.workflow,
            &self.agent,
            &self.toolset,
        ]
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// Soft-landing constraints of an `ALLOW_WITH_CAPS` decision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps_remaining: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_allowlist: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_denylist: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    Allow,
    AllowWithCaps,
    Deny,
}

/// What a commit (or an event) does with more than was reserved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OveragePolicy {
    Reject,
    #[default]
    AllowIfAvailable,
    AllowWithOverdraft,
}

impl OveragePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OveragePolicy::Reject => "REJECT",
            OveragePolicy::AllowIfAvailable => "ALLOW_IF_AVAILABLE",
            OveragePolicy::AllowWithOverdraft => "ALLOW_WITH_OVERDRAFT",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Active,
    Committed,
    Released,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "ACTIVE",
            Status::Committed => "COMMITTED",
            Status::Released => "RELEASED",
            Status::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "ACTIVE" => Status::Active,
            "COMMITTED" => Status::Committed,
            "RELEASED" => Status::Released,
            "EXPIRED" => Status::Expired,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub idempotency_key: String,
    pub subject: Subject,
    pub action: Action,
    pub estimate: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage_policy: Option<OveragePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateResponse {
    pub decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ttl_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_path: Option<String>,
    pub affected_scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Caps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balances: Option<Vec<Balance>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Optional usage figures on a commit or an event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_input: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_output: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    pub idempotency_key: String,
    pub actual: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitResponse {
    /// Always `COMMITTED`.
    pub status: Status,
    pub charged: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balances: Option<Vec<Balance>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub idempotency_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseResponse {
    /// Always `RELEASED`.
    pub status: Status,
    pub released: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balances: Option<Vec<Balance>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    pub idempotency_key: String,
    pub extend_by_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendResponse {
    /// Always `ACTIVE`.
    pub status: Status,
    pub expires_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ttl_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balances: Option<Vec<Balance>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub idempotency_key: String,
    pub subject: Subject,
    pub action: Action,
    pub estimate: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionResponse {
    pub decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Caps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affected_scopes: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    pub idempotency_key: String,
    pub subject: Subject,
    pub action: Action,
    pub actual: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage_policy: Option<OveragePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_time_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventResponse {
    /// Always `APPLIED`.
    pub status: String,
    pub event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balances: Option<Vec<Balance>>,
}

/// One (scope, unit) balance. `remaining = allocated − spent − reserved
/// − debt` whenever all are present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balance {
    pub scope: String,
    pub scope_path: String,
    pub remaining: SignedAmount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debt: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdraft_limit: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_over_limit: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceResponse {
    pub balances: Vec<Balance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_more: Option<bool>,
}

/// A reservation as `GET /v1/reservations/{id}` and the list show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationView {
    pub reservation_id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub subject: Subject,
    pub action: Action,
    pub reserved: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<Amount>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_at_ms: Option<i64>,
    pub scope_path: String,
    pub affected_scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_metadata: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationList {
    pub reservations: Vec<ReservationView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_more: Option<bool>,
}

/// The error codes of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    BudgetExceeded,
    BudgetFrozen,
    BudgetClosed,
    ReservationExpired,
    ReservationFinalized,
    IdempotencyMismatch,
    UnitMismatch,
    OverdraftLimitExceeded,
    DebtOutstanding,
    MaxExtensionsExceeded,
    LimitExceeded,
    TenantClosed,
    InternalError,
}

impl ErrorCode {
    /// The HTTP status the protocol pairs with the code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::UnitMismatch => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::ReservationExpired => 410,
            ErrorCode::LimitExceeded => 429,
            ErrorCode::InternalError => 500,
            ErrorCode::BudgetExceeded
            | ErrorCode::BudgetFrozen
            | ErrorCode::BudgetClosed
            | ErrorCode::ReservationFinalized
            | ErrorCode::IdempotencyMismatch
            | ErrorCode::OverdraftLimitExceeded
            | ErrorCode::DebtOutstanding
            | ErrorCode::MaxExtensionsExceeded
            | ErrorCode::TenantClosed => 409,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::BudgetExceeded => "BUDGET_EXCEEDED",
            ErrorCode::BudgetFrozen => "BUDGET_FROZEN",
            ErrorCode::BudgetClosed => "BUDGET_CLOSED",
            ErrorCode::ReservationExpired => "RESERVATION_EXPIRED",
            ErrorCode::ReservationFinalized => "RESERVATION_FINALIZED",
            ErrorCode::IdempotencyMismatch => "IDEMPOTENCY_MISMATCH",
            ErrorCode::UnitMismatch => "UNIT_MISMATCH",
            ErrorCode::OverdraftLimitExceeded => "OVERDRAFT_LIMIT_EXCEEDED",
            ErrorCode::DebtOutstanding => "DEBT_OUTSTANDING",
            ErrorCode::MaxExtensionsExceeded => "MAX_EXTENSIONS_EXCEEDED",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::TenantClosed => "TENANT_CLOSED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorCode,
    pub message: String,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
}

/// `GET /v1/auth/introspect` (from the protocol's governance document):
/// who the credential is and what its dashboard may show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Introspection {
    pub authenticated: bool,
    /// `admin` or `tenant`.
    pub auth_type: String,
    pub permissions: Vec<String>,
    pub capabilities: Capabilities,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

/// The dashboard capabilities, derived from permissions by the
/// protocol's normative table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    pub view_overview: bool,
    pub view_budgets: bool,
    pub view_events: bool,
    pub view_webhooks: bool,
    pub view_audit: bool,
    pub view_tenants: bool,
    pub view_api_keys: bool,
    pub view_policies: bool,
    pub view_reservations: bool,
    pub manage_budgets: bool,
    pub manage_policies: bool,
    pub manage_webhooks: bool,
    pub manage_tenants: bool,
    pub manage_api_keys: bool,
    pub manage_reservations: bool,
}

impl Capabilities {
    /// An admin credential: everything.
    pub fn all() -> Capabilities {
        Capabilities {
            view_overview: true,
            view_budgets: true,
            view_events: true,
            view_webhooks: true,
            view_audit: true,
            view_tenants: true,
            view_api_keys: true,
            view_policies: true,
            view_reservations: true,
            manage_budgets: true,
            manage_policies: true,
            manage_webhooks: true,
            manage_tenants: true,
            manage_api_keys: true,
            manage_reservations: true,
        }
    }

    /// A tenant credential's, from its permissions. The admin-plane flags
    /// (overview, audit, tenants, API keys) stay false whatever `admin:*`
    /// permissions it holds, as the protocol requires.
    pub fn of_tenant(permissions: &[&str]) -> Capabilities {
        let any = |names: &[&str]| names.iter().any(|n| permissions.contains(n));
        let lifecycle = [
            "reservations:create",
            "reservations:commit",
            "reservations:release",
            "reservations:extend",
        ];
        Capabilities {
            view_budgets: any(&["budgets:read", "admin:read", "admin:budgets:read"]),
            view_policies: any(&["policies:read", "admin:read", "admin:policies:read"]),
            view_webhooks: any(&["webhooks:read", "admin:read", "admin:webhooks:read"]),
            view_events: any(&["events:read", "admin:read", "admin:events:read"]),
            view_reservations: any(&lifecycle) || any(&["reservations:list", "admin:read"]),
            manage_budgets: any(&["budgets:write", "admin:write", "admin:budgets:write"]),
            manage_policies: any(&["policies:write", "admin:write", "admin:policies:write"]),
            manage_webhooks: any(&["webhooks:write", "admin:write", "admin:webhooks:write"]),
            manage_reservations: any(&lifecycle) || any(&["admin:write"]),
            ..Capabilities::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_are_left_out_not_null() {
        let r = CreateResponse {
            decision: Decision::Allow,
            reservation_id: Some("rsv_1".into()),
            reserved: Some(Amount::new(Unit::Tokens, 5)),
            expires_at_ms: Some(1),
            remaining_ttl_ms: Some(0),
            scope_path: Some("tenant:a".into()),
            affected_scopes: vec!["tenant:a".into()],
            caps: None,
            balances: None,
            reason_code: None,
            retry_after_ms: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert!(!v.to_string().contains("null"), "{v}");
        assert_eq!(v["reserved"]["unit"], "TOKENS");
        assert_eq!(v["decision"], "ALLOW");
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        let ok = r#"{"idempotency_key":"k","subject":{"tenant":"a"},"action":{"kind":"tool.search","name":"web"},"estimate":{"unit":"USD_MICROCENTS","amount":5}}"#;
        assert!(serde_json::from_str::<CreateRequest>(ok).is_ok());
        let extra = ok.replacen('{', r#"{"surprise":1,"#, 1);
        assert!(serde_json::from_str::<CreateRequest>(&extra).is_err());
        let bad_subject = ok.replace(r#"{"tenant":"a"}"#, r#"{"tenant":"a","team":"x"}"#);
        assert!(serde_json::from_str::<CreateRequest>(&bad_subject).is_err());
    }

    #[test]
    fn tenant_capabilities_follow_the_derivation_table() {
        let c = Capabilities::of_tenant(&["reservations:list"]);
        assert!(c.view_reservations && !c.manage_reservations && !c.view_budgets);
        let c = Capabilities::of_tenant(&["budgets:read", "reservations:commit"]);
        assert!(
            c.view_budgets && !c.manage_budgets && c.view_reservations && c.manage_reservations
        );
        // Legacy admin permissions on a tenant key never open the admin plane.
        let c = Capabilities::of_tenant(&["admin:read", "admin:write"]);
        assert!(c.view_budgets && c.manage_webhooks && c.view_events);
        assert!(!c.view_overview && !c.view_audit && !c.view_tenants && !c.view_api_keys);
        assert!(!c.manage_tenants && !c.manage_api_keys);
        assert_eq!(Capabilities::of_tenant(&[]), Capabilities::default());
    }
}
