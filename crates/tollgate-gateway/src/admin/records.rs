//! Usage records, newest first, paged.

use super::*;

/// A usage record in the documented shape.
pub fn record_json(r: &UsageRecord) -> crate::api::RecordView<'_> {
    crate::api::RecordView::new(r)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordsParams {
    limit: Option<usize>,
    offset: Option<usize>,
    cursor: Option<String>,
    user: Option<String>,
    tenant: Option<String>,
    session: Option<String>,
    model: Option<String>,
    key: Option<String>,
    budget: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

impl RecordsParams {
    fn query(self, scope: &AdminScope, budget: Option<String>) -> Result<RecordQuery, AdminError> {
        Ok(RecordQuery {
            tenant: scope.tenant_filter(self.tenant)?,
            limit: self.limit.unwrap_or(100),
            offset: self.offset.unwrap_or(0),
            cursor: self.cursor,
            user: self.user,
            session: self.session,
            model: self.model,
            key_id: self.key,
            budget: budget.or(self.budget),
            from: time_arg(&self.from)?,
            to: time_arg(&self.to)?,
        })
    }
}

async fn page(s: &AppState, q: RecordQuery) -> Result<Response, AdminError> {
    let page = s.store.records(&q).await?;
    Ok(axum::Json(crate::api::RecordPage {
        records: page.records.iter().map(record_json).collect(),
        next_cursor: page.next_cursor.clone(),
    })
    .into_response())
}

/// `GET /admin/records`: records newest first, filtered, a page at a time.
#[utoipa::path(get, path = "/records", tag = "usage", params(RecordsParams), responses((status = 200, description = "OK", body = crate::api::RecordPage), (status = 400, description = "Invalid request", body = crate::api::ErrorBody)))]
pub(super) async fn records(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Query(p): Query<RecordsParams>,
) -> Result<Response, AdminError> {
    page(&s, p.query(&scope, None)?).await
}

/// `GET /admin/budgets/{id}/usage?limit=&offset=&cursor=`: the records
/// that charged budget `id`, newest first (50 a page by default).
#[utoipa::path(get, path = "/budgets/{id}/usage", tag = "budgets", params(("id" = String, Path, description = "Budget id"), RecordsParams), responses((status = 200, description = "OK", body = crate::api::RecordPage), (status = 400, description = "Invalid request", body = crate::api::ErrorBody), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn budget_usage(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(id): Path<String>,
    Query(mut p): Query<RecordsParams>,
) -> Result<Response, AdminError> {
    super::budgets::visible(&s, &scope, &id).await?;
    if p.budget.is_some() {
        return Err(AdminError::bad_request(
            "the budget is the path's; budget= is not a filter here",
        ));
    }
    if s.budgets.entries().get(&id).is_none() {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            format!("no budget with id {id:?}"),
        ));
    }
    p.limit = p.limit.or(Some(50));
    page(&s, p.query(&scope, Some(id))?).await
}
