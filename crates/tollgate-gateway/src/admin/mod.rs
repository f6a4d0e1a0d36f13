//! The admin REST API, behind admin keys (`Authorization: Bearer <admin
//! key>`): virtual keys, usage records, reports and prices. JSON shapes are
//! the documented API contract; money is a decimal USD string, never a float.
//!
//! The record and report renderers are public so the CLI prints exactly
//! what the API returns.

use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_core::pricing::{CATALOG_EFFECTIVE_DATE, Fallback, PriceSource};
use tollgate_core::{ModelPrice, Usage, UsageRecord};
use tollgate_store::{GroupBy, RecordQuery, ReportQuery, ReportRow, StoreError};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::identity::{self, NewKey};

mod admin_keys;
mod alert_rules;
pub(crate) mod alerts;
mod badges;
pub(crate) mod budgets;
mod explain;
mod fund;
mod keys;
mod pricing;
mod rates;
mod records;
pub(crate) mod reports;
mod scope;
mod stats;
mod usage;
mod users;

pub use badges::{badge_svg, public_badge};
pub use budgets::budget_json;
pub use explain::{ExplainRequest, ExplainedRequest, explain_json};
pub use keys::key_json;
pub use pricing::{catalog_json, merge_price};
pub use rates::reload_rate_limits;
pub use records::record_json;
pub use reports::{
    Report, csv_header, csv_line, report_csv, report_json, report_table, run_report,
};
pub use scope::{AdminScope, TENANT_ROUTES};
pub use stats::stats_view;
pub use usage::own_usage;
pub use users::users_page;

/// An admin API error: `{"error":{"message","type"}}` with a status.
pub struct AdminError(StatusCode, String);

impl AdminError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        AdminError(status, msg.into())
    }

    pub fn message(&self) -> &str {
        &self.1
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        AdminError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => AdminError(StatusCode::BAD_REQUEST, m),
            StoreError::Duplicate(m) => AdminError(StatusCode::CONFLICT, format!("duplicate {m}")),
            // The store is busy or out of space: the caller may retry.
            e if e.is_transient() => AdminError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            other => AdminError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let kind = match self.0 {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "api_error",
        };
        (
            self.0,
            axum::Json(json!({"error": {"message": self.1, "type": kind}})),
        )
            .into_response()
    }
}

/// Tenant admin keys start with this (full admin keys are whatever the
/// config says).
pub const TENANT_ADMIN_KEY_PREFIX: &str = "tga-";

/// Who a presented admin key speaks for: a full admin (the config's keys,
/// compared in constant time) or a tenant's (a stored `tga-` key, not
/// revoked).
pub(crate) async fn resolve_admin(
    s: &AppState,
    presented: Option<&str>,
) -> Result<AdminScope, AdminError> {
    match presented {
        None if s.admin.is_empty() => Err(AdminError(
            StatusCode::UNAUTHORIZED,
            "no admin keys are configured (set admin_keys: in the config)".into(),
        )),
        None => Err(AdminError(
            StatusCode::UNAUTHORIZED,
            "missing admin key (send Authorization: Bearer <admin key>)".into(),
        )),
        Some(k) if s.admin.verify(k) => Ok(AdminScope::Full),
        Some(k) if k.starts_with(TENANT_ADMIN_KEY_PREFIX) => {
            match s.store.admin_key_by_hash(identity::hash_key(k)).await {
                Ok(Some(a)) if a.revoked_at.is_none() => Ok(AdminScope::Tenant(a.tenant)),
                Ok(Some(_)) => Err(AdminError(
                    StatusCode::UNAUTHORIZED,
                    "admin key has been revoked".into(),
                )),
                Ok(None) => Err(AdminError(
                    StatusCode::UNAUTHORIZED,
                    "invalid admin key".into(),
                )),
                Err(e) => Err(e.into()),
            }
        }
        Some(_) => Err(AdminError(
            StatusCode::UNAUTHORIZED,
            "invalid admin key".into(),
        )),
    }
}

/// Resolves the admin key to its scope, refuses a tenant admin the routes
/// not meant for it (deny by default: see [`scope`]), and hands the scope
/// to the handler.
pub(crate) async fn require_admin(
    State(s): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let presented =
        identity::presented_key(tollgate_providers::WireFormat::OpenAi, req.headers(), None);
    let scope = match resolve_admin(&s, presented).await {
        Ok(scope) => scope,
        Err(e) => return e.into_response(),
    };
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    if !scope.may_call(req.method().as_str(), &route) {
        return scope.refused().into_response();
    }
    req.extensions_mut().insert(scope);
    next.run(req).await
}

/// The admin API: every route is registered with its OpenAPI operation
/// (`routes!` takes handlers annotated with `#[utoipa::path]`), so the
/// document at `/openapi.json` cannot miss one.
pub fn api(state: AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(keys::list_keys, keys::create_key))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(admin_keys::list, admin_keys::create))
        .routes(routes!(admin_keys::revoke))
        .routes(routes!(records::records))
        .routes(routes!(reports::reports))
        .routes(routes!(pricing::pricing))
        .routes(routes!(pricing::get_price, pricing::set_price))
        .routes(routes!(budgets::list_budgets, budgets::create_budget))
        .routes(routes!(
            budgets::get_budget,
            budgets::patch_budget,
            budgets::delete_budget
        ))
        .routes(routes!(records::budget_usage))
        .routes(routes!(fund::fund_budget))
        .routes(routes!(badges::badge))
        .routes(routes!(badges::list_tokens, badges::create_token))
        .routes(routes!(badges::revoke_token))
        .routes(routes!(rates::list, rates::create))
        .routes(routes!(rates::get_one, rates::put, rates::delete_one))
        .routes(routes!(alerts::test_webhook))
        .routes(routes!(alert_rules::list, alert_rules::create))
        .routes(routes!(
            alert_rules::get_one,
            alert_rules::put,
            alert_rules::delete_one
        ))
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::get_one))
        .routes(routes!(alerts::redeliver))
        .routes(routes!(explain::explain))
        .routes(routes!(stats::stats))
        .routes(routes!(users::list_users))
        .routes(routes!(users::user_usage))
        .layer(middleware::from_fn_with_state(state, require_admin))
}

/// Parses a time bound: RFC 3339 (`2026-11-01T00:00:00Z`), a UTC date
/// (`2026-11-01`), or a span back from now (`7d`, `24h`, `30m`).
pub fn parse_time(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return d
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|e| e.to_string());
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = num.parse().map_err(|_| {
        format!("invalid time {s:?} (expected RFC 3339, YYYY-MM-DD, or a span like 7d, 24h, 30m)")
    })?;
    let secs = match unit {
        "d" => n * 86_400,
        "h" => n * 3_600,
        "m" => n * 60,
        "s" => n,
        _ => return Err(format!("invalid time {s:?} (span units are d, h, m, s)")),
    };
    now.checked_sub(SignedDuration::from_secs(secs))
        .map_err(|e| e.to_string())
}

fn time_arg(v: &Option<String>) -> Result<Option<Timestamp>, AdminError> {
    v.as_deref()
        .map(|s| parse_time(s, Timestamp::now()))
        .transpose()
        .map_err(AdminError::bad_request)
}

/// The id a `POST` creates: the body's, else a new one with `prefix`.
fn id_or_new(given: &Option<String>, prefix: &str) -> String {
    given
        .clone()
        .unwrap_or_else(|| format!("{prefix}_{}", &identity::generate_key_id()[4..]))
}

/// A `PUT` body may name its id only if it is the path's.
fn same_id(given: &Option<String>, path: &str) -> Result<(), AdminError> {
    match given.as_deref() {
        Some(i) if i != path => Err(AdminError::bad_request(format!(
            "the body names id {i:?}, the path {path:?}"
        ))),
        _ => Ok(()),
    }
}

/// Budget pages hold at most this many instances.
const MAX_BUDGET_PAGE: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_parse() {
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        assert_eq!(
            parse_time("7d", now).unwrap().to_string(),
            "2026-11-17T12:00:00Z"
        );
        assert_eq!(
            parse_time("2026-11-01", now).unwrap().to_string(),
            "2026-11-01T00:00:00Z"
        );
        assert_eq!(
            parse_time("2026-11-01T05:00:00Z", now).unwrap().to_string(),
            "2026-11-01T05:00:00Z"
        );
        assert!(parse_time("7w", now).is_err());
        assert!(parse_time("soon", now).is_err());
    }

    #[test]
    fn csv_quotes_awkward_keys() {
        let row = ReportRow {
            keys: vec![Some("a,b".into()), None],
            requests: 1,
            refused: 2,
            usage: Usage {
                input_tokens: 3,
                ..Usage::default()
            },
            cost: tollgate_core::Money::from_units(150_000),
        };
        let r = Report {
            group_by: vec![GroupBy::User, GroupBy::Model],
            total: row.clone(),
            rows: vec![row],
        };
        let csv = report_csv(&r);
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            "user,model,requests,refused,input_tokens,output_tokens,cached_input_tokens,cache_write_tokens,reasoning_tokens,cost_usd"
        );
        assert_eq!(lines.next().unwrap(), "\"a,b\",,1,2,3,0,0,0,0,0.00000015");
        let json = serde_json::to_value(report_json(&r)).unwrap();
        assert_eq!(json["rows"][0]["user"], "a,b");
        assert_eq!(json["rows"][0]["model"], Value::Null);
        assert_eq!(json["total"]["refused"], 2);
    }
}
