//! Usage records, newest first, paged.

use super::*;

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
pub(super) struct RecordsParams {
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

pub(super) async fn records(
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
