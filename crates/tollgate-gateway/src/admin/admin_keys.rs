//! Tenant admin keys: created, listed and revoked by full admins only.

use super::*;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateAdminKey {
    tenant: String,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /admin/admin-keys {"tenant","name"}` → the key, shown only here.
#[utoipa::path(post, path = "/admin-keys", tag = "admin keys", request_body = CreateAdminKey, responses((status = 201, description = "The tenant admin key; `key` appears only here", body = crate::api::AdminKeyView), (status = 400, description = "Invalid request", body = crate::api::ErrorBody)))]
pub(super) async fn create(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let req: CreateAdminKey = serde_json::from_slice(&body)
        .map_err(|e| AdminError::bad_request(format!("invalid admin key request: {e}")))?;
    if req.tenant.trim().is_empty() || req.tenant.contains('/') {
        return Err(AdminError::bad_request(
            "tenant must be a tenant's name (not empty, no '/')",
        ));
    }
    let (rec, key) = identity::create_admin_key(&*s.store, req.tenant, req.name).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(crate::api::AdminKeyView::new(&rec, Some(&key))),
    )
        .into_response())
}

#[utoipa::path(get, path = "/admin-keys", tag = "admin keys", responses((status = 200, description = "OK", body = crate::api::AdminKeyList)))]
pub(super) async fn list(State(s): State<AppState>) -> Result<Response, AdminError> {
    let keys = s.store.admin_keys().await?;
    Ok(axum::Json(crate::api::AdminKeyList {
        admin_keys: keys
            .iter()
            .map(|k| crate::api::AdminKeyView::new(k, None))
            .collect(),
    })
    .into_response())
}

/// Revoking takes effect at once: every admin request reads its key.
#[utoipa::path(delete, path = "/admin-keys/{id}", tag = "admin keys", params(("id" = String, Path, description = "Admin key id")), responses((status = 200, description = "OK", body = crate::api::Revoked), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn revoke(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    if !s.store.revoke_admin_key(&id, Timestamp::now()).await? {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            format!("no admin key with id {id:?}"),
        ));
    }
    Ok(axum::Json(crate::api::Revoked {
        id: &id,
        revoked: true,
    })
    .into_response())
}
