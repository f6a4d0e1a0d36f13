//! Budgets: list (paged, filtered), get, create, change, delete.

use super::*;

/// A budget instance as the API shows it (see [`crate::api::BudgetView`]).
pub fn budget_json(
    a: &crate::budgets::Applied,
    st: &crate::budgets::State,
    source: Option<crate::budgets::Source>,
) -> crate::api::BudgetView {
    crate::api::BudgetView::new(a, st, source)
}

pub(super) fn source_of(s: &AppState, id: &str) -> Option<crate::budgets::Source> {
    s.budgets.entries().get(id).map(|e| e.source)
}

/// Budget `id` if this admin may see it: to a tenant admin, a budget whose
/// subject is its tenant's, or a template (its instances are filtered);
/// anything else does not exist.
pub(super) async fn visible(
    s: &AppState,
    scope: &AdminScope,
    id: &str,
) -> Result<tollgate_budgets::Entry, AdminError> {
    let missing = || AdminError(StatusCode::NOT_FOUND, format!("no budget with id {id:?}"));
    let e = s.budgets.entries().get(id).cloned().ok_or_else(missing)?;
    let shown = match (&e.budget.subject, e.budget.scope) {
        (_, tollgate_core::budget::Scope::Global) => scope.tenant().is_none(),
        (Some(subject), sc) => scope.owns(s, sc, subject).await,
        (None, _) => true,
    };
    if shown { Ok(e) } else { Err(missing()) }
}

/// A tenant admin writes only budgets with a subject of its tenant; the
/// user, session and named-budget subjects it writes are its tenant's.
async fn check_writable(
    s: &AppState,
    scope: &AdminScope,
    input: &mut tollgate_core::budget::BudgetInput,
) -> Result<(), AdminError> {
    use tollgate_core::budget::Scope;
    if scope.tenant().is_none() {
        return Ok(());
    }
    let sc: Scope =
        input.scope.as_deref().unwrap_or("user").parse().map_err(
            |e: tollgate_core::budget::BudgetError| AdminError::bad_request(e.to_string()),
        )?;
    let Some(subject) = input.subject.take() else {
        return Err(AdminError::new(
            StatusCode::FORBIDDEN,
            "a tenant admin key sets budgets for one subject of its tenant (subject is required)",
        ));
    };
    let subject = match sc {
        Scope::User | Scope::Session | Scope::Budget => scope.own_name(subject),
        _ => subject,
    };
    if !scope.owns(s, sc, &subject).await {
        return Err(AdminError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this admin key is scoped to tenant {:?}: {} budget {subject:?} is not its tenant's",
                scope.tenant().unwrap_or_default(),
                sc.as_str()
            ),
        ));
    }
    input.subject = Some(subject);
    Ok(())
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct BudgetListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    scope: Option<String>,
    subject: Option<String>,
    status: Option<String>,
}

/// `GET /admin/budgets?limit=&cursor=&scope=&subject=&status=`: budget
/// instances in (id, subject) order, a page at a time (100 by default,
/// at most 1,000), with `next_cursor` while there are more.
#[utoipa::path(get, path = "/budgets", tag = "budgets", params(BudgetListQuery), responses((status = 200, description = "OK", body = crate::api::BudgetPage), (status = 400, description = "Invalid request", body = crate::api::ErrorBody)))]
pub(super) async fn list_budgets(
    State(s): State<AppState>,
    Extension(admin): Extension<AdminScope>,
    Query(q): Query<BudgetListQuery>,
) -> Result<axum::Json<crate::api::BudgetPage>, AdminError> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_BUDGET_PAGE);
    let scope = q
        .scope
        .as_deref()
        .map(|v| {
            v.parse::<tollgate_core::budget::Scope>()
                .map_err(|e| AdminError::bad_request(e.to_string()))
        })
        .transpose()?;
    if let Some(st) = q.status.as_deref()
        && !matches!(st, "ok" | "low" | "over_limit")
    {
        return Err(AdminError::bad_request(format!(
            "unknown status {st:?} (expected ok, low or over_limit)"
        )));
    }
    let cursor = q.cursor.as_deref().map(decode_budget_cursor).transpose()?;
    let filter = crate::budgets::InstanceFilter {
        budget: None,
        scope,
        subject: q.subject,
        status: q.status,
    };
    let (page, next) = s
        .budgets
        .instances_page(
            cursor.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
            limit,
            &filter,
        )
        .await;
    // A tenant admin's page holds its tenant's instances (it may be short;
    // `next_cursor` goes on).
    Ok(axum::Json(crate::api::BudgetPage {
        budgets: shown(&s, &admin, &page).await,
        next_cursor: next.map(|(id, subject)| encode_budget_cursor(&id, &subject)),
    }))
}

/// The instances of `page` this admin may see, as the API shows them.
pub(crate) async fn shown(
    s: &AppState,
    admin: &AdminScope,
    page: &[(crate::budgets::Applied, crate::budgets::State)],
) -> Vec<crate::api::BudgetView> {
    let mut out = Vec::with_capacity(page.len());
    for (a, st) in page {
        if admin.owns_instance(s, a).await {
            out.push(budget_json(a, st, source_of(s, &a.budget.id)));
        }
    }
    out
}

/// A budget page cursor: the last (id, subject) shown, URL-safe base64.
pub(super) fn encode_budget_cursor(id: &str, subject: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&json!([id, subject])).unwrap_or_default())
}

pub(super) fn decode_budget_cursor(c: &str) -> Result<(String, String), AdminError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice::<(String, String)>(&b).ok())
        .ok_or_else(|| AdminError::bad_request(format!("invalid cursor {c:?}")))
}

#[utoipa::path(get, path = "/budgets/{id}", tag = "budgets", params(("id" = String, Path, description = "Budget id")), responses((status = 200, description = "OK", body = crate::api::BudgetDetail), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn get_budget(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(id): Path<String>,
) -> Result<axum::Json<crate::api::BudgetDetail>, AdminError> {
    let e = visible(&s, &scope, &id).await?;
    let filter = crate::budgets::InstanceFilter {
        budget: Some(id.clone()),
        ..Default::default()
    };
    let (page, _) = s.budgets.instances_page(None, usize::MAX, &filter).await;
    let instances = shown(&s, &scope, &page).await;
    Ok(axum::Json(crate::api::BudgetDetail {
        budget: e.budget.to_input(),
        instances,
        breakdown: breakdown(&s, &e.budget, scope.tenant()).await?,
    }))
}

/// Spenders shown in a budget's breakdown.
const TOP_SPENDERS: usize = 50;

/// What charged `b` in its current period, from the records.
async fn breakdown(
    s: &AppState,
    b: &tollgate_core::budget::Budget,
    tenant: Option<&str>,
) -> Result<crate::api::BudgetBreakdown, AdminError> {
    use tollgate_core::budget::Scope;
    let since = tollgate_budgets::BudgetEngine::count_since(b, s.budgets.now());
    let since = (since > Timestamp::MIN).then_some(since);
    let query = |g| {
        let mut q = ReportQuery::new(vec![g]);
        q.from = since;
        q.filter.budget = Some(b.id.clone());
        q.filter.tenant = tenant.map(String::from);
        q
    };
    let by_model = s.store.report(&query(GroupBy::Model)).await?;
    let by_user = if matches!(b.scope, Scope::User) {
        None
    } else {
        let mut rows = s.store.report(&query(GroupBy::User)).await?;
        rows.sort_by(|x, y| y.cost.cmp(&x.cost).then_with(|| x.keys.cmp(&y.keys)));
        rows.truncate(TOP_SPENDERS);
        Some(crate::api::ReportRows {
            dimensions: vec![GroupBy::User],
            rows,
        })
    };
    Ok(crate::api::BudgetBreakdown {
        since: since.map(|t| t.to_string()),
        by_model: crate::api::ReportRows {
            dimensions: vec![GroupBy::Model],
            rows: by_model,
        },
        by_user,
    })
}

/// To a tenant admin, an existing budget it may change: one with a
/// subject of its tenant (a template or another's is not there).
pub(super) async fn writable_existing(
    s: &AppState,
    scope: &AdminScope,
    id: &str,
) -> Result<(), AdminError> {
    let e = visible(s, scope, id).await?;
    if e.budget.subject.is_none() {
        return Err(AdminError::new(
            StatusCode::FORBIDDEN,
            format!("budget {id:?} applies beyond this admin key's tenant"),
        ));
    }
    Ok(())
}

pub(super) fn budget_id() -> String {
    format!("bud_{}", &identity::generate_key_id()[4..])
}

pub(super) async fn store_budget(
    s: &AppState,
    id: String,
    input: tollgate_core::budget::BudgetInput,
    created_at: Timestamp,
) -> Result<Response, AdminError> {
    // A model the gateway cannot serve is no downgrade: refused now, not
    // discovered when the budget runs out.
    if let Ok(b) = tollgate_core::budget::Budget::from_input(
        id.clone(),
        &input,
        tollgate_core::budget::Tier::Override,
        None,
    ) {
        crate::budgets::check_models(&b, &s.router, &s.catalog())
            .map_err(AdminError::bad_request)?;
        if let Some(url) = &b.webhook_url {
            s.alerts
                .check_webhook_url(url)
                .map_err(|m| AdminError::bad_request(format!("webhook_url: {m}")))?;
        }
    }
    let stored = tollgate_store::StoredBudget {
        id: id.clone(),
        input,
        created_at,
    };
    let b = s
        .budgets
        .put(&*s.store, stored)
        .await
        .map_err(|e| match e {
            crate::budgets::PutError::Invalid(e) => AdminError::bad_request(e.to_string()),
            crate::budgets::PutError::ConfigOwned(_) => {
                AdminError(StatusCode::CONFLICT, e.to_string())
            }
            crate::budgets::PutError::Store(e) => e.into(),
        })?;
    // A budget written anew (changed, funded) is reconciled: lines a
    // capped Cycles commit left over their limit take reservations again.
    s.cycles
        .clear_over_limit(&b.id)
        .await
        .map_err(|e| AdminError(StatusCode::SERVICE_UNAVAILABLE, e.message))?;
    let subject = b.subject.clone().unwrap_or_else(|| "*".into());
    let a = s
        .budgets
        .applied(std::sync::Arc::new(b), subject, s.budgets.now())
        .await;
    let view = budget_json(
        &a,
        &s.budgets.state(&a).await,
        Some(crate::budgets::Source::Admin),
    );
    Ok(axum::Json(view).into_response())
}

#[utoipa::path(post, path = "/budgets", tag = "budgets", request_body = Object, responses((status = 201, description = "The budget as applied now", body = crate::api::BudgetView), (status = 400, description = "Invalid request", body = crate::api::ErrorBody), (status = 409, description = "Conflict (exists, or declared in the config file)", body = crate::api::ErrorBody)))]
pub(super) async fn create_budget(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let mut input: tollgate_core::budget::BudgetInput = serde_json::from_slice(&body)
        .map_err(|e| AdminError::bad_request(format!("invalid budget: {e}")))?;
    check_writable(&s, &scope, &mut input).await?;
    let id = input
        .id
        .clone()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(budget_id);
    if s.budgets.entries().get(&id).is_some() {
        return Err(AdminError(
            StatusCode::CONFLICT,
            format!("budget {id:?} already exists (PATCH it)"),
        ));
    }
    input.id = Some(id.clone());
    let v = store_budget(&s, id, input, s.budgets.now()).await?;
    Ok((StatusCode::CREATED, v).into_response())
}

#[utoipa::path(patch, path = "/budgets/{id}", tag = "budgets", params(("id" = String, Path, description = "Budget id")), request_body = Object, responses((status = 200, description = "OK", body = crate::api::BudgetView), (status = 400, description = "Invalid request", body = crate::api::ErrorBody), (status = 404, description = "No such object", body = crate::api::ErrorBody), (status = 409, description = "Conflict (exists, or declared in the config file)", body = crate::api::ErrorBody)))]
pub(super) async fn patch_budget(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let stored = editable(&s, &scope, &id).await?;
    let patch: Value = serde_json::from_slice(&body)
        .map_err(|e| AdminError::bad_request(format!("invalid patch: {e}")))?;
    let Value::Object(patch) = patch else {
        return Err(AdminError::bad_request(
            "a patch is a JSON object of the fields to change",
        ));
    };
    let mut current =
        serde_json::to_value(&stored.input).map_err(|e| AdminError::bad_request(e.to_string()))?;
    if let Value::Object(cur) = &mut current {
        for (k, v) in patch {
            if k == "id" {
                return Err(AdminError::bad_request("a budget's id cannot change"));
            }
            cur.insert(k, v);
        }
    }
    let mut input = serde_json::from_value(current)
        .map_err(|e| AdminError::bad_request(format!("invalid budget: {e}")))?;
    // What the patch makes of it must be the tenant's too.
    check_writable(&s, &scope, &mut input).await?;
    store_budget(&s, id, input, stored.created_at).await
}

/// A budget created through the API that this admin may change, as
/// stored; config budgets change in the config file.
pub(super) async fn editable(
    s: &AppState,
    scope: &AdminScope,
    id: &str,
) -> Result<tollgate_store::StoredBudget, AdminError> {
    if scope.tenant().is_some() {
        writable_existing(s, scope, id).await?;
    }
    if s.budgets.is_config_budget(id) {
        return Err(AdminError(
            StatusCode::CONFLICT,
            format!("budget {id:?} is declared in the config file; change it there"),
        ));
    }
    s.store
        .budget(id)
        .await?
        .ok_or_else(|| AdminError(StatusCode::NOT_FOUND, format!("no budget with id {id:?}")))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteParams {
    #[serde(default)]
    purge_usage: bool,
}

/// Records purged per transaction: a big budget's purge never holds the
/// writer for long.
const PURGE_BATCH: usize = 5_000;

/// `DELETE /admin/budgets/{id}[?purge_usage=true]`: deletes the budget;
/// with `purge_usage` also the records that charged it (out of reports
/// and rollups too). Its counters go with the budget either way.
#[utoipa::path(delete, path = "/budgets/{id}", tag = "budgets", params(("id" = String, Path, description = "Budget id"), DeleteParams), responses((status = 200, description = "OK", body = crate::api::Deleted), (status = 404, description = "No such object", body = crate::api::ErrorBody), (status = 409, description = "Conflict (exists, or declared in the config file)", body = crate::api::ErrorBody)))]
pub(super) async fn delete_budget(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(id): Path<String>,
    Query(p): Query<DeleteParams>,
) -> Result<Response, AdminError> {
    if scope.tenant().is_some() {
        writable_existing(&s, &scope, &id).await?;
    }
    if s.budgets.is_config_budget(&id) {
        return Err(AdminError(
            StatusCode::CONFLICT,
            format!("budget {id:?} is declared in the config file; remove it there"),
        ));
    }
    let deleted = s.budgets.delete(&*s.store, &id).await?;
    let mut purged = None;
    if p.purge_usage {
        // Records still in the journal's queue would land after the purge.
        s.journal.flush().await;
        let mut n = 0;
        loop {
            // A purge cut short by an error is finished by repeating the
            // DELETE: the budget is gone, its records are purged still.
            let batch = s.store.purge_budget_records(&id, PURGE_BATCH).await?;
            if batch == 0 {
                break;
            }
            n += batch;
            tokio::task::yield_now().await;
        }
        purged = Some(n);
    }
    if !deleted && purged.unwrap_or(0) == 0 {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no budget with id {id:?}"),
        ));
    }
    Ok(axum::Json(crate::api::Deleted {
        id: &id,
        deleted,
        purged_records: purged,
    })
    .into_response())
}
