//! Virtual keys: create, list, revoke.

use super::*;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateKey {
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
pub fn key_json(k: &tollgate_core::KeyRecord) -> crate::api::KeyView<'_> {
    crate::api::KeyView::new(k)
}

#[utoipa::path(post, path = "/keys", tag = "keys", request_body = CreateKey, responses((status = 201, description = "The key; `key` appears only here", body = crate::api::KeyView), (status = 400, description = "Invalid request", body = crate::api::ErrorBody)))]
pub(super) async fn create_key(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let mut req: CreateKey = serde_json::from_slice(&body)
        .map_err(|e| AdminError::bad_request(format!("invalid key request: {e}")))?;
    // A tenant admin's keys are its tenant's.
    req.tenant = scope.tenant_filter(req.tenant)?;
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
    let body = axum::Json(crate::api::KeyView::created(&rec, &key)).into_response();
    s.keys.upsert(rec);
    Ok((StatusCode::CREATED, body).into_response())
}

#[utoipa::path(get, path = "/keys", tag = "keys", responses((status = 200, description = "OK", body = crate::api::KeyList)))]
pub(super) async fn list_keys(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
) -> Result<Response, AdminError> {
    let mut keys = s.store.list_keys().await?;
    if let Some(t) = scope.tenant() {
        keys.retain(|k| k.tenant.as_deref() == Some(t));
    }
    Ok(axum::Json(crate::api::KeyList {
        keys: keys.iter().map(key_json).collect(),
    })
    .into_response())
}

#[utoipa::path(delete, path = "/keys/{id}", tag = "keys", params(("id" = String, Path, description = "Key id")), responses((status = 200, description = "OK", body = crate::api::Revoked), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn revoke_key(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    // Another tenant's key is, to a tenant admin, no key at all.
    if let Some(t) = scope.tenant()
        && !matches!(s.store.key_by_id(&id).await?, Some(k) if k.tenant.as_deref() == Some(t))
    {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no key with id {id:?}"),
        ));
    }
    if !s.store.revoke_key(&id, Timestamp::now()).await? {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no key with id {id:?}"),
        ));
    }
    // Update the cache now rather than at the next refresh.
    if let Some(k) = s.store.key_by_id(&id).await? {
        s.keys.upsert(k);
    }
    Ok(axum::Json(crate::api::Revoked {
        id: &id,
        revoked: true,
    })
    .into_response())
}
