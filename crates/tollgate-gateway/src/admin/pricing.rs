//! The price catalog and run-time prices.

use super::*;

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

pub(super) async fn pricing(State(s): State<AppState>) -> axum::Json<Value> {
    axum::Json(catalog_json(&s.catalog()))
}

/// `GET /admin/pricing/{model}`: one catalog entry (the price in force).
pub(super) async fn get_price(
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
pub(super) async fn set_price(
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
