//! The price catalog and run-time prices.

use super::*;

/// The catalog as shown: effective date, fallback, every model's prices.
pub fn catalog_json(c: &tollgate_core::Catalog) -> crate::api::CatalogView<'_> {
    crate::api::CatalogView {
        effective_date: CATALOG_EFFECTIVE_DATE,
        fallback: match c.fallback() {
            Fallback::Strict => crate::api::FallbackView::Strict("strict"),
            Fallback::Price(p) => crate::api::FallbackView::Price(p),
        },
        models: c.entries().collect(),
    }
}

#[utoipa::path(get, path = "/pricing", tag = "pricing", responses((status = 200, description = "OK", body = crate::api::CatalogView)))]
pub(super) async fn pricing(State(s): State<AppState>) -> Response {
    axum::Json(catalog_json(&s.catalog())).into_response()
}

/// `GET /admin/pricing/{model}`: one catalog entry (the price in force).
#[utoipa::path(get, path = "/pricing/{model}", tag = "pricing", params(("model" = String, Path, description = "Model name")), responses((status = 200, description = "OK", body = Object), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn get_price(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, AdminError> {
    let c = s.catalog();
    match c.get(&model) {
        Some(e) => Ok(axum::Json(e).into_response()),
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
#[utoipa::path(put, path = "/pricing/{model}", tag = "pricing", params(("model" = String, Path, description = "Model name")), request_body = Object, responses((status = 200, description = "OK", body = Object), (status = 400, description = "Invalid request", body = crate::api::ErrorBody)))]
pub(super) async fn set_price(
    State(s): State<AppState>,
    Path(model): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
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
    Ok(axum::Json(c.get(&model)).into_response())
}
