//! Alerts: their history, deliveries and attempts; redelivery; a test
//! event for a budget's targets.

use tollgate_store::alerts::{AlertQuery, AlertRow, Attempt, Delivery};

use super::*;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertsParams {
    #[serde(rename = "type")]
    kind: Option<String>,
    budget: Option<String>,
    rule: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

const STATUSES: &[&str] = &["pending", "delivered", "failed", "suppressed", "recorded"];

fn alert_view(a: &AlertRow) -> Value {
    json!({
        "id": a.id,
        "type": a.kind,
        "severity": a.severity,
        "rule_id": a.rule_id,
        "budget_id": a.budget_id,
        "subject": a.subject,
        "created_at": a.created_at.to_string(),
        "status": a.status,
        "attempts": a.attempts,
        "last_status": a.last_status,
        "last_error": a.last_error,
        "delivered_at": a.delivered_at.map(|t| t.to_string()),
        "payload": serde_json::from_str::<Value>(&a.payload).unwrap_or(Value::Null),
    })
}

fn delivery_view(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "target": d.target.name,
        "url": d.target.url,
        "format": d.target.format,
        "signed": d.target.secret_env.is_some(),
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "next_attempt_at": d.next_at.filter(|_| d.status == tollgate_store::alerts::DeliveryStatus::Pending).map(|t| t.to_string()),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "delivered_at": d.delivered_at.map(|t| t.to_string()),
    })
}

fn attempt_view(a: &Attempt) -> Value {
    json!({
        "delivery_id": a.delivery_id,
        "attempt": a.n,
        "time": a.time.to_string(),
        "status": a.status,
        "error": a.error,
        "duration_ms": a.duration_ms,
    })
}

/// Whether an alert is this admin's to see: to a tenant admin, an alert
/// about a budget instance of its tenant (rule alerts span tenants).
pub(crate) async fn sees(s: &AppState, scope: &AdminScope, a: &AlertRow) -> bool {
    if scope.tenant().is_none() {
        return true;
    }
    let (Some(b), Some(subject)) = (&a.budget_id, &a.subject) else {
        return false;
    };
    let Some(e) = s.budgets.entries().get(b).cloned() else {
        return false;
    };
    scope.owns(s, e.budget.scope, subject).await
}

fn cursor_of(a: &AlertRow) -> String {
    format!("{}.{}", a.created_at.as_millisecond(), a.id)
}

fn parse_cursor(c: &str) -> Result<(Timestamp, String), AdminError> {
    let bad = || AdminError::bad_request(format!("invalid cursor {c:?}"));
    let (t, id) = c.split_once('.').ok_or_else(bad)?;
    let t = t
        .parse::<i64>()
        .ok()
        .and_then(|t| Timestamp::from_millisecond(t).ok())
        .ok_or_else(bad)?;
    Ok((t, id.to_string()))
}

#[utoipa::path(get, path = "/alerts", tag = "alerts", params(AlertsParams), responses((status = 200, description = "Alerts, newest first, and next_cursor", body = Object), (status = 400, description = "Invalid request", body = crate::api::ErrorBody)))]
pub(super) async fn list(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Query(p): Query<AlertsParams>,
) -> Result<Response, AdminError> {
    if let Some(st) = &p.status
        && !STATUSES.contains(&st.as_str())
    {
        return Err(AdminError::bad_request(format!(
            "unknown status {st:?} (expected one of {})",
            STATUSES.join(", ")
        )));
    }
    if let Some(k) = &p.kind
        && !tollgate_alerts::config::KINDS.contains(&k.as_str())
    {
        return Err(AdminError::bad_request(format!(
            "unknown alert type {k:?} (expected one of {})",
            tollgate_alerts::config::KINDS.join(", ")
        )));
    }
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let q = AlertQuery {
        kind: p.kind,
        budget_id: p.budget,
        rule_id: p.rule,
        status: p.status,
        from: time_arg(&p.from)?,
        to: time_arg(&p.to)?,
        after: p.cursor.as_deref().map(parse_cursor).transpose()?,
        limit: limit + 1,
    };
    let mut rows = s.store.alerts_page(&q).await?;
    let next = (rows.len() > limit).then(|| {
        rows.truncate(limit);
        rows.last().map(cursor_of)
    });
    // A tenant admin's page holds its tenant's alerts (it may be short;
    // `next_cursor` goes on).
    let mut shown = Vec::with_capacity(rows.len());
    for r in &rows {
        if sees(&s, &scope, r).await {
            shown.push(alert_view(r));
        }
    }
    Ok(axum::Json(json!({
        "alerts": shown,
        "next_cursor": next.flatten(),
    }))
    .into_response())
}

#[utoipa::path(get, path = "/alerts/{id}", tag = "alerts", params(("id" = String, Path, description = "Alert id")), responses((status = 200, description = "The alert, its deliveries and attempt log", body = Object), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn get_one(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let found = s.store.alert(&id).await?;
    let Some((row, deliveries, attempts)) = found else {
        return Err(not_found(&id));
    };
    if !sees(&s, &scope, &row).await {
        return Err(not_found(&id));
    }
    let mut v = alert_view(&row);
    v["deliveries"] = deliveries
        .iter()
        .map(|d| {
            let mut v = delivery_view(d);
            // Target URLs can hold secrets (Slack's do): the gateway's own.
            if scope.tenant().is_some()
                && let Some(o) = v.as_object_mut()
            {
                o.remove("url");
            }
            v
        })
        .collect();
    v["attempt_log"] = attempts.iter().map(attempt_view).collect();
    Ok(axum::Json(v).into_response())
}

fn not_found(id: &str) -> AdminError {
    AdminError(StatusCode::NOT_FOUND, format!("no alert with id {id:?}"))
}

#[utoipa::path(post, path = "/alerts/{id}/redeliver", tag = "alerts", params(("id" = String, Path, description = "Alert id")), responses((status = 200, description = "OK", body = Object), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn redeliver(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    if scope.tenant().is_some() {
        let found = s.store.alert(&id).await?;
        match found {
            Some((row, _, _)) if sees(&s, &scope, &row).await => {}
            _ => return Err(not_found(&id)),
        }
    }
    match s.store.redeliver(&id, Timestamp::now()).await? {
        Some(n) => {
            s.alerts.wake();
            Ok(axum::Json(json!({"id": id, "redelivering": n})).into_response())
        }
        None => Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no alert with id {id:?}"),
        )),
    }
}

#[utoipa::path(post, path = "/budgets/{id}/test-webhook", tag = "alerts", params(("id" = String, Path, description = "Budget id")), responses((status = 200, description = "Each target's outcome", body = Object), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn test_webhook(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    if scope.tenant().is_some() {
        super::budgets::writable_existing(&s, &scope, &id).await?;
    }
    match s.alerts.test_webhook(&id).await? {
        Some(outcomes) => Ok(axum::Json(json!({
            "budget_id": id,
            "delivered": !outcomes.is_empty() && outcomes.iter().all(|o| o.delivered),
            "deliveries": outcomes,
        }))
        .into_response()),
        None => Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no budget with id {id:?}"),
        )),
    }
}
