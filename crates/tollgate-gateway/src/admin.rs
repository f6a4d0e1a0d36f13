//! The admin REST API, behind admin keys (`Authorization: Bearer <admin
//! key>`): virtual keys, usage records, reports and prices. JSON shapes are
//! the documented API contract; money is a decimal USD string, never a float.
//!
//! The record and report renderers are public so the CLI prints exactly
//! what the API returns.

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_core::pricing::{CATALOG_EFFECTIVE_DATE, Fallback, PriceSource};
use tollgate_core::{ModelPrice, Usage, UsageRecord};
use tollgate_store::{GroupBy, RecordQuery, ReportQuery, ReportRow, StoreError};

use crate::AppState;
use crate::identity::{self, NewKey};

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

async fn require_admin(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if s.admin.is_empty() {
        return AdminError(
            StatusCode::UNAUTHORIZED,
            "no admin keys are configured (set admin_keys: in the config)".into(),
        )
        .into_response();
    }
    let presented =
        identity::presented_key(tollgate_providers::WireFormat::OpenAi, req.headers(), None);
    match presented {
        Some(k) if s.admin.verify(k) => next.run(req).await,
        Some(_) => AdminError(StatusCode::UNAUTHORIZED, "invalid admin key".into()).into_response(),
        None => AdminError(
            StatusCode::UNAUTHORIZED,
            "missing admin key (send Authorization: Bearer <admin key>)".into(),
        )
        .into_response(),
    }
}

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/keys", get(list_keys).post(create_key))
        .route("/keys/{id}", delete(revoke_key))
        .route("/records", get(records))
        .route("/reports", get(reports))
        .route("/pricing", get(pricing))
        .route("/pricing/{model}", get(get_price).put(set_price))
        .route("/budgets", get(list_budgets).post(create_budget))
        .route(
            "/budgets/{id}",
            get(get_budget).patch(patch_budget).delete(delete_budget),
        )
        .route("/explain", post(explain))
        .route("/stats", get(stats))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    trusted: bool,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// A key as the API shows it: never the key, never its hash.
pub fn key_json(k: &tollgate_core::KeyRecord) -> Value {
    json!({
        "id": k.id,
        "prefix": k.prefix,
        "name": k.name,
        "user": k.user,
        "tenant": k.tenant,
        "role": k.role,
        "trusted": k.trusted,
        "models": k.models,
        "expires_at": k.expires_at.map(|t| t.to_string()),
        "revoked": k.revoked,
        "created_at": k.created_at.to_string(),
    })
}

async fn create_key(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let req: CreateKey = serde_json::from_slice(&body)
        .map_err(|e| AdminError::bad_request(format!("invalid key request: {e}")))?;
    let expires_at = match &req.expires_at {
        Some(t) => Some(
            t.parse::<Timestamp>()
                .map_err(|e| AdminError::bad_request(format!("expires_at {t:?}: {e}")))?,
        ),
        None => None,
    };
    let (rec, key) = identity::create_key(
        &*s.store,
        NewKey {
            name: req.name,
            user: req.user,
            tenant: req.tenant,
            role: req.role,
            trusted: req.trusted,
            models: req.models,
            expires_at,
        },
    )
    .await?;
    let mut v = key_json(&rec);
    v["key"] = json!(key);
    s.keys.upsert(rec);
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

async fn list_keys(State(s): State<AppState>) -> Result<axum::Json<Value>, AdminError> {
    let keys = s.store.list_keys().await?;
    Ok(axum::Json(
        json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()}),
    ))
}

async fn revoke_key(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, AdminError> {
    if !s.store.revoke_key(&id, Timestamp::now()).await? {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no key with id {id:?}"),
        ));
    }
    // Update the cache now rather than at the next refresh.
    if let Some(k) = s.store.list_keys().await?.into_iter().find(|k| k.id == id) {
        s.keys.upsert(k);
    }
    Ok(axum::Json(json!({"id": id, "revoked": true})))
}

/// A usage record in the documented shape.
pub fn record_json(r: &UsageRecord) -> Value {
    let u = &r.usage;
    json!({
        "request_id": r.request_id,
        "time": r.time.to_string(),
        "key_id": r.key_id,
        "user": r.user,
        "tenant": r.tenant,
        "session": r.session,
        "budgets": r.budgets,
        "provider": r.provider,
        "model_requested": r.model_requested,
        "model_served": r.model_served,
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cached_input_tokens": u.cached_input_tokens,
        "cache_write_5m_tokens": u.cache_write_5m_tokens,
        "cache_write_1h_tokens": u.cache_write_1h_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "cost_usd": r.cost.to_string(),
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "status": r.status,
        "flags": r.flags.names(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsParams {
    limit: Option<usize>,
    cursor: Option<String>,
    user: Option<String>,
    tenant: Option<String>,
    session: Option<String>,
    model: Option<String>,
    key: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

async fn records(
    State(s): State<AppState>,
    Query(p): Query<RecordsParams>,
) -> Result<axum::Json<Value>, AdminError> {
    let q = RecordQuery {
        limit: p.limit.unwrap_or(100),
        cursor: p.cursor,
        user: p.user,
        tenant: p.tenant,
        session: p.session,
        model: p.model,
        key_id: p.key,
        from: time_arg(&p.from)?,
        to: time_arg(&p.to)?,
    };
    let page = s.store.records(&q).await?;
    Ok(axum::Json(json!({
        "records": page.records.iter().map(record_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

fn totals_json(
    requests: u64,
    refused: u64,
    u: &Usage,
    cost: tollgate_core::Money,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("requests".into(), json!(requests));
    m.insert("refused".into(), json!(refused));
    m.insert("input_tokens".into(), json!(u.input_tokens));
    m.insert("output_tokens".into(), json!(u.output_tokens));
    m.insert("cached_input_tokens".into(), json!(u.cached_input_tokens));
    m.insert(
        "cache_write_tokens".into(),
        json!(u.cache_write_5m_tokens + u.cache_write_1h_tokens),
    );
    m.insert("reasoning_tokens".into(), json!(u.reasoning_tokens));
    m.insert("cost_usd".into(), json!(cost.to_string()));
    m
}

/// A report in the documented shape: `{"rows":[{<dimension>, ...totals}], "total": {...}}`.
pub fn report_json(group_by: GroupBy, rows: &[ReportRow]) -> Value {
    let mut total_u = Usage::default();
    let mut total_cost = tollgate_core::Money::ZERO;
    let (mut total_req, mut total_refused) = (0, 0);
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            total_u = total_u.add(&r.usage);
            total_cost += r.cost;
            total_req += r.requests;
            total_refused += r.refused;
            let mut m = serde_json::Map::new();
            m.insert(group_by.name().into(), json!(r.key));
            m.extend(totals_json(r.requests, r.refused, &r.usage, r.cost));
            Value::Object(m)
        })
        .collect();
    json!({"rows": rows, "total": Value::Object(totals_json(total_req, total_refused, &total_u, total_cost))})
}

const REPORT_COLUMNS: [&str; 8] = [
    "requests",
    "refused",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
];

/// The report as CSV, one header line, the grouping dimension first.
pub fn report_csv(group_by: GroupBy, rows: &[ReportRow]) -> String {
    let v = report_json(group_by, rows);
    let mut out = format!("{},{}\n", group_by.name(), REPORT_COLUMNS.join(","));
    for row in v["rows"].as_array().into_iter().flatten() {
        let key = row[group_by.name()].as_str().unwrap_or("");
        out.push_str(&csv_field(key));
        for c in REPORT_COLUMNS {
            out.push(',');
            match &row[c] {
                Value::String(s) => out.push_str(s),
                other => out.push_str(&other.to_string()),
            }
        }
        out.push('\n');
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Rows of a report as a fixed-width text table (the CLI's default).
pub fn report_table(group_by: GroupBy, rows: &[ReportRow]) -> String {
    let v = report_json(group_by, rows);
    let mut lines: Vec<Vec<String>> = vec![
        std::iter::once(group_by.name().to_string())
            .chain(REPORT_COLUMNS.iter().map(|c| c.to_string()))
            .collect(),
    ];
    let cell = |x: &Value| match x {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    for row in v["rows"].as_array().into_iter().flatten() {
        lines.push(
            std::iter::once(cell(&row[group_by.name()]))
                .chain(REPORT_COLUMNS.iter().map(|c| cell(&row[*c])))
                .collect(),
        );
    }
    let t = &v["total"];
    lines.push(
        std::iter::once("TOTAL".to_string())
            .chain(REPORT_COLUMNS.iter().map(|c| cell(&t[*c])))
            .collect(),
    );
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    group_by: Option<String>,
    from: Option<String>,
    to: Option<String>,
    user: Option<String>,
    tenant: Option<String>,
    format: Option<String>,
}

async fn reports(
    State(s): State<AppState>,
    Query(p): Query<ReportParams>,
) -> Result<Response, AdminError> {
    let g = p.group_by.as_deref().unwrap_or("model");
    let group_by = GroupBy::parse(g).ok_or_else(|| {
        AdminError::bad_request(format!("group_by {g:?} is not one of {}", GroupBy::ALL))
    })?;
    let q = ReportQuery {
        group_by,
        from: time_arg(&p.from)?,
        to: time_arg(&p.to)?,
        user: p.user,
        tenant: p.tenant,
    };
    let rows = s.store.report(&q).await?;
    match p.format.as_deref().unwrap_or("json") {
        "json" => Ok(axum::Json(report_json(group_by, &rows)).into_response()),
        "csv" => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            report_csv(group_by, &rows),
        )
            .into_response()),
        f => Err(AdminError::bad_request(format!(
            "format {f:?} is not json or csv"
        ))),
    }
}

/// The catalog as JSON: effective date, fallback, every model's prices.
pub fn catalog_json(c: &tollgate_core::Catalog) -> Value {
    json!({
        "effective_date": CATALOG_EFFECTIVE_DATE,
        "fallback": match c.fallback() {
            Fallback::Strict => json!("strict"),
            Fallback::Price(p) => json!(p),
        },
        "models": c.entries().collect::<Vec<_>>(),
    })
}

async fn pricing(State(s): State<AppState>) -> axum::Json<Value> {
    axum::Json(catalog_json(&s.catalog()))
}

/// `GET /admin/pricing/{model}`: one catalog entry (the price in force).
async fn get_price(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<axum::Json<Value>, AdminError> {
    let c = s.catalog();
    match c.get(&model) {
        Some(e) => Ok(axum::Json(json!(e))),
        None => Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("model {model:?} has no price in the catalog"),
        )),
    }
}

/// A price change applied to the entry in force: fields present replace
/// theirs, `null` clears an optional one, absent fields keep their value
/// (setting the input price keeps the cached-input price). `provider`
/// names the provider the price is for. A model without a price needs at
/// least `input_per_mtok`.
pub fn merge_price(
    current: Option<&tollgate_core::pricing::catalog::CatalogEntry>,
    mut patch: serde_json::Map<String, Value>,
) -> Result<tollgate_store::StoredPrice, String> {
    let provider = match patch.remove("provider") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if !p.is_empty() => Some(p),
        Some(_) => return Err("provider: expected a provider name".into()),
    };
    let mut fields = match current.map(|e| serde_json::to_value(&e.price)) {
        Some(Ok(Value::Object(m))) => m,
        _ => serde_json::Map::new(),
    };
    for (k, v) in patch {
        if v.is_null() {
            fields.remove(&k);
        } else {
            fields.insert(k, v);
        }
    }
    let price: ModelPrice =
        serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())?;
    Ok(tollgate_store::StoredPrice { price, provider })
}

/// `PUT /admin/pricing/{model}`: changes the fields sent (see [`merge_price`]).
async fn set_price(
    State(s): State<AppState>,
    Path(model): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, AdminError> {
    let bad = |e: String| AdminError::bad_request(format!("invalid price for {model:?}: {e}"));
    let patch: serde_json::Map<String, Value> =
        serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    let stored = merge_price(s.catalog().get(&model), patch).map_err(bad)?;
    s.store.put_price(&model, &stored).await?;
    s.update_catalog(|c| {
        c.set_for(
            &model,
            stored.price.clone(),
            PriceSource::Admin,
            stored.provider.clone(),
        )
    });
    let c = s.catalog();
    Ok(axum::Json(json!(c.get(&model))))
}

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
        let rows = vec![ReportRow {
            key: Some("a,b".into()),
            requests: 1,
            refused: 2,
            usage: Usage {
                input_tokens: 3,
                ..Usage::default()
            },
            cost: tollgate_core::Money::from_units(150_000),
        }];
        let csv = report_csv(GroupBy::User, &rows);
        assert_eq!(
            csv.lines().nth(1).unwrap(),
            "\"a,b\",1,2,3,0,0,0,0,0.00000015"
        );
    }
}

/// A budget instance as the API shows it limits, used (committed),
/// reserved (in flight), remaining, status and period.
pub fn budget_json(
    a: &crate::budgets::Applied,
    st: &crate::budgets::State,
    source: Option<crate::budgets::Source>,
) -> Value {
    let b = &a.budget;
    let tier = match &b.tier {
        tollgate_core::budget::Tier::Override => "override".to_string(),
        tollgate_core::budget::Tier::Role(r) => format!("role:{r}"),
        tollgate_core::budget::Tier::Default => "default".to_string(),
    };
    json!({
        "id": b.id,
        "name": b.name,
        "scope": b.scope.as_str(),
        "subject": if b.scope == tollgate_core::budget::Scope::Global { Value::Null } else { json!(a.subject) },
        "tier": tier,
        "source": source.map(|s| match s { crate::budgets::Source::Config => "config", crate::budgets::Source::Admin => "admin" }),
        "period": b.period.to_string(),
        "timezone": b.calendar.tz_name,
        "action": b.action.as_str(),
        "models": b.models,
        "limit_usd": st.limit.money.map(|m| m.to_string()),
        "limit_tokens": st.limit.tokens,
        "used_usd": st.spent.money.to_string(),
        "used_tokens": st.spent.tokens,
        "reserved_usd": st.reserved.money.to_string(),
        "reserved_tokens": st.reserved.tokens,
        "remaining_usd": st.headroom.money.map(|m| m.to_string()),
        "remaining_tokens": st.headroom.tokens,
        "status": st.status,
        "period_start": if b.period == tollgate_core::period::PeriodKind::Lifetime { Value::Null } else { json!(a.period.start.to_string()) },
        "resets_at": a.resets_at.map(|t| t.to_string()),
    })
}

fn source_of(s: &AppState, id: &str) -> Option<crate::budgets::Source> {
    s.budgets.entries().get(id).map(|e| e.source)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BudgetListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    scope: Option<String>,
    subject: Option<String>,
    status: Option<String>,
}

/// Budget pages hold at most this many instances.
const MAX_BUDGET_PAGE: usize = 1000;

/// `GET /admin/budgets?limit=&cursor=&scope=&subject=&status=`: budget
/// instances in (id, subject) order, a page at a time (100 by default,
/// at most 1,000), with `next_cursor` while there are more.
async fn list_budgets(
    State(s): State<AppState>,
    Query(q): Query<BudgetListQuery>,
) -> Result<axum::Json<Value>, AdminError> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_BUDGET_PAGE);
    let scope = q
        .scope
        .as_deref()
        .map(|v| {
            v.parse::<tollgate_core::budget::Scope>()
                .map_err(|e| AdminError::bad_request(e.to_string()))
        })
        .transpose()?;
    if let Some(st) = q.status.as_deref()
        && !matches!(st, "ok" | "low" | "over_limit")
    {
        return Err(AdminError::bad_request(format!(
            "unknown status {st:?} (expected ok, low or over_limit)"
        )));
    }
    let cursor = q.cursor.as_deref().map(decode_budget_cursor).transpose()?;
    let filter = crate::budgets::InstanceFilter {
        scope,
        subject: q.subject,
        status: q.status,
    };
    let (page, next) = s.budgets.instances_page(
        cursor.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
        limit,
        &filter,
    );
    let v: Vec<Value> = page
        .iter()
        .map(|(a, st)| budget_json(a, st, source_of(&s, &a.budget.id)))
        .collect();
    Ok(axum::Json(json!({
        "budgets": v,
        "next_cursor": next.map(|(id, subject)| encode_budget_cursor(&id, &subject)),
    })))
}

/// A budget page cursor: the last (id, subject) shown, URL-safe base64.
fn encode_budget_cursor(id: &str, subject: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&json!([id, subject])).unwrap_or_default())
}

fn decode_budget_cursor(c: &str) -> Result<(String, String), AdminError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice::<(String, String)>(&b).ok())
        .ok_or_else(|| AdminError::bad_request(format!("invalid cursor {c:?}")))
}

async fn get_budget(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, AdminError> {
    let instances: Vec<Value> = s
        .budgets
        .instances()
        .iter()
        .filter(|a| a.budget.id == id)
        .map(|a| budget_json(a, &s.budgets.state(a), source_of(&s, &id)))
        .collect();
    let entry = s
        .budgets
        .entries()
        .iter()
        .find(|e| e.budget.id == id)
        .cloned();
    match entry {
        Some(e) => Ok(axum::Json(
            json!({"budget": e.budget.to_input(), "instances": instances}),
        )),
        None => Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no budget with id {id:?}"),
        )),
    }
}

fn budget_id() -> String {
    format!("bud_{}", &identity::generate_key_id()[4..])
}

async fn store_budget(
    s: &AppState,
    id: String,
    input: tollgate_core::budget::BudgetInput,
    created_at: Timestamp,
) -> Result<Value, AdminError> {
    let stored = tollgate_store::StoredBudget {
        id: id.clone(),
        input,
        created_at,
    };
    let b = s
        .budgets
        .put(&*s.store, stored)
        .await
        .map_err(|e| match e {
            crate::budgets::PutError::Invalid(e) => AdminError::bad_request(e.to_string()),
            crate::budgets::PutError::ConfigOwned(_) => {
                AdminError(StatusCode::CONFLICT, e.to_string())
            }
            crate::budgets::PutError::Store(e) => e.into(),
        })?;
    let subject = b.subject.clone().unwrap_or_else(|| "*".into());
    let a = s
        .budgets
        .applied(std::sync::Arc::new(b), subject, s.budgets.now());
    Ok(budget_json(
        &a,
        &s.budgets.state(&a),
        Some(crate::budgets::Source::Admin),
    ))
}

async fn create_budget(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let mut input: tollgate_core::budget::BudgetInput = serde_json::from_slice(&body)
        .map_err(|e| AdminError::bad_request(format!("invalid budget: {e}")))?;
    let id = input
        .id
        .clone()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(budget_id);
    if s.budgets.entries().iter().any(|e| e.budget.id == id) {
        return Err(AdminError(
            StatusCode::CONFLICT,
            format!("budget {id:?} already exists (PATCH it)"),
        ));
    }
    input.id = Some(id.clone());
    let v = store_budget(&s, id, input, s.budgets.now()).await?;
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

async fn patch_budget(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, AdminError> {
    if s.budgets.is_config_budget(&id) {
        return Err(AdminError(
            StatusCode::CONFLICT,
            format!("budget {id:?} is declared in the config file; change it there"),
        ));
    }
    let Some(stored) = s.store.budget(&id).await? else {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no budget with id {id:?}"),
        ));
    };
    let patch: Value = serde_json::from_slice(&body)
        .map_err(|e| AdminError::bad_request(format!("invalid patch: {e}")))?;
    let Value::Object(patch) = patch else {
        return Err(AdminError::bad_request(
            "a patch is a JSON object of the fields to change",
        ));
    };
    let mut current =
        serde_json::to_value(&stored.input).map_err(|e| AdminError::bad_request(e.to_string()))?;
    if let Value::Object(cur) = &mut current {
        for (k, v) in patch {
            if k == "id" {
                return Err(AdminError::bad_request("a budget's id cannot change"));
            }
            cur.insert(k, v);
        }
    }
    let input = serde_json::from_value(current)
        .map_err(|e| AdminError::bad_request(format!("invalid budget: {e}")))?;
    Ok(axum::Json(
        store_budget(&s, id, input, stored.created_at).await?,
    ))
}

async fn delete_budget(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, AdminError> {
    if s.budgets.is_config_budget(&id) {
        return Err(AdminError(
            StatusCode::CONFLICT,
            format!("budget {id:?} is declared in the config file; remove it there"),
        ));
    }
    if !s.budgets.delete(&*s.store, &id).await? {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no budget with id {id:?}"),
        ));
    }
    Ok(axum::Json(json!({"id": id, "deleted": true})))
}

/// `POST /admin/explain`: who the caller would be, every budget that would
/// apply, its state, and the decision — without reserving anything.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// A virtual key (`tg-...`) or its id (`key_...`), to explain as that key.
    pub key: Option<String>,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub role: Option<String>,
    pub session: Option<String>,
    pub budget_id: Option<String>,
    /// The model (with `max_tokens` and `input_tokens`: a chat request of
    /// that shape). Not needed with `request`.
    #[serde(default)]
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    /// Input tokens to assume (default: a short prompt; with `request`: the
    /// request's own estimate).
    pub input_tokens: Option<u64>,
    /// A whole provider request to explain exactly as the proxy would take
    /// it: its route path (`/v1/chat/completions`, `/v1/messages`,
    /// `/v1beta/models/{model}:generateContent`, ...) and its JSON body.
    #[serde(default)]
    pub request: Option<ExplainedRequest>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ExplainedRequest {
    pub path: String,
    pub body: Value,
}

/// The explanation as JSON (shared by the API and `tollgate explain`).
pub async fn explain_json(s: &AppState, req: &ExplainRequest) -> Result<Value, AdminError> {
    let mut caller = crate::identity::Caller::default();
    if let Some(k) = &req.key {
        caller = if k.starts_with("tg-") {
            s.keys
                .resolve(k)
                .await
                .map_err(|e| AdminError::bad_request(format!("key: {e}")))?
        } else {
            let found = s.store.list_keys().await?.into_iter().find(|r| &r.id == k);
            crate::identity::caller_from_key(
                &found.ok_or_else(|| AdminError::bad_request(format!("no key with id {k:?}")))?,
            )
        };
    }
    for (field, value) in [
        (&mut caller.user, &req.user),
        (&mut caller.tenant, &req.tenant),
        (&mut caller.role, &req.role),
        (&mut caller.session, &req.session),
        (&mut caller.budget_id, &req.budget_id),
    ] {
        if value.is_some() {
            *field = value.clone();
        }
    }
    let (endpoint, path_model, body, format) = match &req.request {
        Some(r) => {
            let (endpoint, model) = crate::endpoint_for_path(&r.path).ok_or_else(|| {
                AdminError::bad_request(format!(
                    "request.path {:?} is not a provider route",
                    r.path
                ))
            })?;
            let body =
                serde_json::to_vec(&r.body).map_err(|e| AdminError::bad_request(e.to_string()))?;
            (endpoint, model, body, endpoint.format())
        }
        None => {
            let Some(model) = &req.model else {
                return Err(AdminError::bad_request(
                    "explain needs a model or a request",
                ));
            };
            // A chat request of the shape asked, in the model's own format.
            let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
            if let Some(m) = req.max_tokens {
                body["max_tokens"] = json!(m);
            }
            let format = s
                .router
                .routes(model)
                .map_or(tollgate_providers::WireFormat::OpenAi, |p| p.kind);
            let body =
                serde_json::to_vec(&body).map_err(|e| AdminError::bad_request(e.to_string()))?;
            (
                tollgate_providers::Endpoint::ChatCompletions,
                None,
                body,
                format,
            )
        }
    };
    let parsed = tollgate_providers::ParsedRequest::parse(
        endpoint,
        path_model.as_deref(),
        bytes::Bytes::from(body),
    );
    let input_override = match (&req.request, req.input_tokens) {
        (None, None) => Some(100),
        (_, n) => n,
    };
    let planned = parsed
        .map_err(crate::error::GatewayError::from)
        .and_then(|p| {
            crate::proxy::plan::plan(s, &caller, &p, format, input_override).map(|plan| (p, plan))
        });
    let model = match &planned {
        Ok((p, _)) => p.model.clone(),
        Err(_) => req.model.clone().unwrap_or_default(),
    };
    let (served, provider, budgets, decision) = match &planned {
        Err(e) => {
            let n = e.to_native();
            let served = s
                .router
                .route(&model, format)
                .map_or_else(|_| model.clone(), |r| r.upstream_model);
            let provider = s.router.routes(&model).map(|p| p.name.clone());
            let d = json!({"decision": "refuse", "status": n.status, "code": n.code, "reason": n.message});
            (served, provider, Vec::new(), d)
        }
        Ok((_, plan)) => {
            let budgets: Vec<Value> = plan
                .applied
                .iter()
                .map(|a| budget_json(a, &s.budgets.state(a), source_of(s, &a.budget.id)))
                .collect();
            use crate::proxy::plan::Decision;
            let d = match crate::proxy::plan::decide(s, plan) {
                Decision::Allow { max_tokens } if plan.applied.is_empty() => {
                    json!({"decision": "allow", "max_tokens": max_tokens, "reason": "no budget applies"})
                }
                Decision::Allow { max_tokens } => {
                    json!({"decision": "allow", "max_tokens": max_tokens, "reason": "every budget affords the worst case"})
                }
                Decision::AllowCapped { max_tokens, asked } => {
                    json!({"decision": "allow_capped", "max_tokens": max_tokens, "asked_max_tokens": asked,
                    "reason": "the output limit is capped to what every budget affords"})
                }
                Decision::Refuse(r) => {
                    let st = s.budgets.state(&r.applied);
                    let refusal = crate::error::BudgetRefusal::new(&r, &st, s.budgets.now());
                    json!({"decision": "refuse", "budget": r.applied.budget.id, "status": refusal.status,
                    "code": "budget_exceeded", "reason": refusal.message})
                }
            };
            (
                plan.route.upstream_model.clone(),
                Some(plan.route.provider.name.clone()),
                budgets,
                d,
            )
        }
    };
    Ok(json!({
        "caller": {"key_id": caller.key_id, "user": caller.user, "tenant": caller.tenant, "role": caller.role, "session": caller.session, "budget_id": caller.budget_id},
        "model": model,
        "model_served": served,
        "provider": provider,
        "budgets": budgets,
        "decision": decision,
    }))
}

async fn explain(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, AdminError> {
    let req: ExplainRequest = serde_json::from_slice(&body)
        .map_err(|e| AdminError::bad_request(format!("invalid explain request: {e}")))?;
    Ok(axum::Json(explain_json(&s, &req).await?))
}

/// `GET /usage`: the calling key's own budgets and their state.
pub async fn own_usage(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let format = tollgate_providers::WireFormat::OpenAi;
    // The same identification as the proxy: a virtual key or a JWT.
    let caller = match crate::proxy::identify(&s, format, &headers, None).await {
        Ok(c) => c,
        Err(e) => return e.into_response(format),
    };
    let caller = match identity::WithRequest::with_request(
        caller,
        &headers,
        None,
        s.config.trust_all_identity_headers,
    ) {
        Ok(c) => c,
        Err(e) => return e.into_response(format),
    };
    let budgets: Vec<Value> = s
        .budgets
        .applicable_any_model(&caller)
        .iter()
        .map(|a| budget_json(a, &s.budgets.state(a), None))
        .collect();
    axum::Json(json!({
        "key_id": caller.key_id, "user": caller.user, "tenant": caller.tenant, "session": caller.session,
        "budgets": budgets,
    }))
    .into_response()
}

/// `GET /admin/stats`: the journal writer's counters (back pressure is
/// visible here: `waited_for_space` counts records that had to wait for
/// room in the queue; nothing is ever dropped), what is loaded, and how
/// often usage exceeded a reservation or looked implausible.
async fn stats(State(s): State<AppState>) -> axum::Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let j = &s.journal.stats;
    axum::Json(json!({
        "journal": {
            "entries_written": j.entries_written.load(Relaxed),
            "batches": j.batches.load(Relaxed),
            "write_errors": j.write_errors.load(Relaxed),
            "waited_for_space": j.waited_for_space.load(Relaxed),
            "quarantined": j.quarantined.load(Relaxed),
        },
        // Records kept aside because the store refused them (all time).
        "quarantined_records": s.store.quarantined_count().await.unwrap_or(0),
        "budgets_loaded": s.budgets.entries().len(),
        "models_priced": s.catalog().entries().count(),
        // Requests whose usage exceeded their reservation (an estimate miss:
        // charged in full and recorded as overspend).
        "overspent_requests": s.budgets.overspent.load(Relaxed),
        // Usage fields beyond any plausible bound, charged up to the ceiling.
        "suspicious_usage": s.budgets.suspicious.load(Relaxed),
        // Unknown keys cost no database read; misses refresh the key map at
        // most once a second.
        "key_miss_refreshes": s.keys.miss_refreshes.load(Relaxed),
    }))
}
