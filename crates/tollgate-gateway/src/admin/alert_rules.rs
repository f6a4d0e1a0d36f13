//! Alert rules: the shipped and config ones (read-only here) and those
//! managed through the API (stored).

use tollgate_alerts::rules::{Rule, RuleInput, RuleSource};
use tollgate_store::alerts::StoredRule;

use super::*;

fn view(r: &Rule, source: RuleSource) -> Value {
    let mut v = serde_json::to_value(r.to_input()).unwrap_or(Value::Null);
    v["source"] = json!(source.as_str());
    v
}

fn find(s: &AppState, id: &str) -> Option<(Rule, RuleSource)> {
    s.alerts.rules().iter().find(|(r, _)| r.id == id).cloned()
}

/// `GET /admin/alert-rules`.
#[utoipa::path(get, path = "/alert-rules", tag = "alerts", responses((status = 200, description = "OK", body = Object)))]
pub(super) async fn list(State(s): State<AppState>) -> axum::Json<Value> {
    let rules = s.alerts.rules();
    axum::Json(json!({
        "rules": rules.iter().map(|(r, src)| view(r, *src)).collect::<Vec<_>>(),
    }))
}

/// `GET /admin/alert-rules/{id}`.
#[utoipa::path(get, path = "/alert-rules/{id}", tag = "alerts", params(("id" = String, Path, description = "Rule id")), responses((status = 200, description = "OK", body = Object), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, AdminError> {
    let (r, src) = find(&s, &id).ok_or_else(|| {
        AdminError(
            StatusCode::NOT_FOUND,
            format!("no alert rule with id {id:?}"),
        )
    })?;
    Ok(axum::Json(view(&r, src)))
}

fn fixed(s: &AppState, id: &str, verb: &str) -> Result<(), AdminError> {
    match find(s, id) {
        Some((_, RuleSource::Stock | RuleSource::Config)) => Err(AdminError(
            StatusCode::CONFLICT,
            format!(
                "alert rule {id:?} is shipped or declared in the config file; {verb} it under alerts.rules there"
            ),
        )),
        _ => Ok(()),
    }
}

async fn store(
    s: &AppState,
    id: String,
    mut input: RuleInput,
    created: bool,
) -> Result<Response, AdminError> {
    fixed(s, &id, "change")?;
    input.id = Some(id.clone());
    let rule = Rule::from_input(&input).map_err(AdminError::bad_request)?;
    let existing = s.store.list_alert_rules().await?;
    let before = existing.iter().find(|r| r.id == id);
    if created && before.is_some() {
        return Err(AdminError(
            StatusCode::CONFLICT,
            format!(
                "an alert rule with id {id:?} exists (PUT /admin/alert-rules/{id} replaces it)"
            ),
        ));
    }
    let spec = serde_json::to_string(&rule.to_input())
        .map_err(|e| AdminError::bad_request(e.to_string()))?;
    s.store
        .put_alert_rule(&StoredRule {
            id,
            spec,
            created_at: before.map_or_else(Timestamp::now, |b| b.created_at),
        })
        .await?;
    s.alerts.reload_rules().await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(view(&rule, RuleSource::Admin))).into_response())
}

fn parse(body: &[u8]) -> Result<RuleInput, AdminError> {
    serde_json::from_slice(body)
        .map_err(|e| AdminError::bad_request(format!("invalid alert rule: {e}")))
}

/// `POST /admin/alert-rules`.
#[utoipa::path(post, path = "/alert-rules", tag = "alerts", request_body = Object, responses((status = 201, description = "Created", body = Object), (status = 400, description = "Invalid request", body = crate::api::ErrorBody), (status = 409, description = "Conflict (exists, or declared in the config file)", body = crate::api::ErrorBody)))]
pub(super) async fn create(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let input = parse(&body)?;
    let id = id_or_new(&input.id, "rule");
    store(&s, id, input, true).await
}

/// `PUT /admin/alert-rules/{id}`: creates or replaces.
#[utoipa::path(put, path = "/alert-rules/{id}", tag = "alerts", params(("id" = String, Path, description = "Rule id")), request_body = Object, responses((status = 200, description = "OK", body = Object), (status = 400, description = "Invalid request", body = crate::api::ErrorBody), (status = 409, description = "Conflict (exists, or declared in the config file)", body = crate::api::ErrorBody)))]
pub(super) async fn put(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let input = parse(&body)?;
    same_id(&input.id, &id)?;
    store(&s, id, input, false).await
}

/// `DELETE /admin/alert-rules/{id}`.
#[utoipa::path(delete, path = "/alert-rules/{id}", tag = "alerts", params(("id" = String, Path, description = "Rule id")), responses((status = 200, description = "OK", body = crate::api::Deleted), (status = 404, description = "No such object", body = crate::api::ErrorBody), (status = 409, description = "Conflict (exists, or declared in the config file)", body = crate::api::ErrorBody)))]
pub(super) async fn delete_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    fixed(&s, &id, "remove")?;
    if !s.store.delete_alert_rule(&id).await? {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no alert rule with id {id:?}"),
        ));
    }
    s.alerts.reload_rules().await?;
    Ok(axum::Json(crate::api::Deleted {
        id: &id,
        deleted: true,
        purged_records: None,
    })
    .into_response())
}
