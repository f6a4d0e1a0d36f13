//! Rate limits: those of the config (read-only here) and those managed
//! through the API (stored; every instance picks changes up).

use super::*;
use tollgate_core::rate::{RateLimit, RateLimitInput};
use tollgate_store::StoredRateLimit;

/// Loads the rate limits in force — the config's, then the stored ones —
/// into the limiter. A stored limit that no longer validates is skipped
/// with an error in the log (it cannot be enforced as written).
pub async fn reload_rate_limits(s: &AppState) -> Result<(), StoreError> {
    let mut all = s.config.rate_limits.limits().unwrap_or_default();
    for l in s.store.list_rate_limits().await? {
        let default = l.input.subject.is_none();
        match RateLimit::from_input(l.id.clone(), &l.input, None, default) {
            Ok(r) => all.push(r),
            Err(e) => {
                tracing::error!(id = %l.id, error = %e, "stored rate limit is invalid; not enforced")
            }
        }
    }
    s.rates.replace(all);
    Ok(())
}

fn is_config(s: &AppState, id: &str) -> bool {
    s.config
        .rate_limits
        .limits()
        .is_ok_and(|v| v.iter().any(|l| l.id == id))
}

fn view(s: &AppState, l: &RateLimit) -> crate::api::RateLimitView {
    crate::api::RateLimitView::new(
        l,
        if is_config(s, &l.id) {
            "config"
        } else {
            "admin"
        },
    )
}

/// `GET /admin/rate-limits`.
#[utoipa::path(get, path = "/rate-limits", tag = "rate limits", responses((status = 200, description = "OK", body = crate::api::RateLimitList)))]
pub(super) async fn list(State(s): State<AppState>) -> axum::Json<crate::api::RateLimitList> {
    let limits = s.rates.limits();
    axum::Json(crate::api::RateLimitList {
        rate_limits: limits.iter().map(|l| view(&s, l)).collect(),
    })
}

/// `GET /admin/rate-limits/{id}`.
#[utoipa::path(get, path = "/rate-limits/{id}", tag = "rate limits", params(("id" = String, Path, description = "Rate limit id")), responses((status = 200, description = "OK", body = crate::api::RateLimitView), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<crate::api::RateLimitView>, AdminError> {
    let limits = s.rates.limits();
    let l = limits.iter().find(|l| l.id == id).ok_or_else(|| {
        AdminError(
            StatusCode::NOT_FOUND,
            format!("no rate limit with id {id:?}"),
        )
    })?;
    Ok(axum::Json(view(&s, l)))
}

async fn store(
    s: &AppState,
    id: String,
    input: RateLimitInput,
    created: bool,
) -> Result<Response, AdminError> {
    if is_config(s, &id) {
        return Err(AdminError(
            StatusCode::CONFLICT,
            format!("rate limit {id:?} is declared in the config file; change it there"),
        ));
    }
    let limit = RateLimit::from_input(id.clone(), &input, None, input.subject.is_none())
        .map_err(|e| AdminError::bad_request(e.to_string()))?;
    let existing = s.store.list_rate_limits().await?;
    let before = existing.iter().find(|l| l.id == id);
    if created && before.is_some() {
        return Err(AdminError(
            StatusCode::CONFLICT,
            format!("a rate limit with id {id:?} exists (PUT /admin/rate-limits/{id} replaces it)"),
        ));
    }
    s.store
        .put_rate_limit(&StoredRateLimit {
            id,
            input: limit.to_input(),
            created_at: before.map_or_else(Timestamp::now, |b| b.created_at),
        })
        .await?;
    reload_rate_limits(s).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(view(s, &limit))).into_response())
}

fn parse(body: &[u8]) -> Result<RateLimitInput, AdminError> {
    serde_json::from_slice(body)
        .map_err(|e| AdminError::bad_request(format!("invalid rate limit: {e}")))
}

/// `POST /admin/rate-limits`.
#[utoipa::path(post, path = "/rate-limits", tag = "rate limits", request_body = Object, responses((status = 201, description = "Created", body = crate::api::RateLimitView), (status = 400, description = "Invalid request", body = crate::api::ErrorBody), (status = 409, description = "Conflict (exists, or declared in the config file)", body = crate::api::ErrorBody)))]
pub(super) async fn create(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let input = parse(&body)?;
    let id = id_or_new(&input.id, "rl");
    store(&s, id, input, true).await
}

/// `PUT /admin/rate-limits/{id}`: creates or replaces.
#[utoipa::path(put, path = "/rate-limits/{id}", tag = "rate limits", params(("id" = String, Path, description = "Rate limit id")), request_body = Object, responses((status = 200, description = "OK", body = crate::api::RateLimitView), (status = 400, description = "Invalid request", body = crate::api::ErrorBody), (status = 409, description = "Conflict (exists, or declared in the config file)", body = crate::api::ErrorBody)))]
pub(super) async fn put(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let input = parse(&body)?;
    same_id(&input.id, &id)?;
    store(&s, id, input, false).await
}

/// `DELETE /admin/rate-limits/{id}`.
#[utoipa::path(delete, path = "/rate-limits/{id}", tag = "rate limits", params(("id" = String, Path, description = "Rate limit id")), responses((status = 200, description = "OK", body = crate::api::Deleted), (status = 404, description = "No such object", body = crate::api::ErrorBody), (status = 409, description = "Conflict (exists, or declared in the config file)", body = crate::api::ErrorBody)))]
pub(super) async fn delete_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    if is_config(&s, &id) {
        return Err(AdminError(
            StatusCode::CONFLICT,
            format!("rate limit {id:?} is declared in the config file; remove it there"),
        ));
    }
    if !s.store.delete_rate_limit(&id).await? {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no rate limit with id {id:?}"),
        ));
    }
    reload_rate_limits(&s).await?;
    Ok(axum::Json(crate::api::Deleted {
        id: &id,
        deleted: true,
        purged_records: None,
    })
    .into_response())
}
