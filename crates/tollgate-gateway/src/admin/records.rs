//! Usage records, newest first, paged.

use super::*;

/// A usage record in the documented shape.
pub fn record_json(r: &UsageRecord) -> crate::api::RecordView<'_> {
    crate::api::RecordView::new(r)
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
) -> Result<Response, AdminError> {
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
    Ok(axum::Json(crate::api::RecordPage {
        records: page.records.iter().map(record_json).collect(),
        next_cursor: page.next_cursor.clone(),
    })
    .into_response())
}
