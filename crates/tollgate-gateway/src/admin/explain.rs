//! `POST /admin/explain`: why a request would be allowed, capped or refused — the proxy's own plan.

use super::budgets::source_of;
use super::*;

/// `POST /admin/explain`: who the caller would be, every budget that would
/// apply, its state, and the decision — without reserving anything.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// A virtual key (`tg-...`) or its id (`key_...`), to explain as that key.
    pub key: Option<String>,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub role: Option<String>,
    pub session: Option<String>,
    pub budget_id: Option<String>,
    /// The model (with `max_tokens` and `input_tokens`: a chat request of
    /// that shape). Not needed with `request`.
    #[serde(default)]
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    /// Input tokens to assume (default: a short prompt; with `request`: the
    /// request's own estimate).
    pub input_tokens: Option<u64>,
    /// A whole provider request to explain exactly as the proxy would take
    /// it: its route path (`/v1/chat/completions`, `/v1/messages`,
    /// `/v1beta/models/{model}:generateContent`, ...) and its JSON body.
    #[serde(default)]
    pub request: Option<ExplainedRequest>,
}

#[derive(Deserialize, Default, Clone, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainedRequest {
    pub path: String,
    pub body: Value,
}

/// The explanation as JSON (shared by the API and `tollgate explain`).
pub async fn explain_json(
    s: &AppState,
    req: &ExplainRequest,
) -> Result<crate::api::ExplainView, AdminError> {
    use crate::api::DecisionView;
    let mut caller = crate::identity::Caller::default();
    if let Some(k) = &req.key {
        caller = if k.starts_with("tg-") {
            s.keys
                .resolve(k)
                .await
                .map_err(|e| AdminError::bad_request(format!("key: {e}")))?
        } else {
            let found = s.store.key_by_id(k).await?;
            crate::identity::caller_from_key(
                &found.ok_or_else(|| AdminError::bad_request(format!("no key with id {k:?}")))?,
            )
        };
    }
    for (field, value) in [
        (&mut caller.user, &req.user),
        (&mut caller.tenant, &req.tenant),
        (&mut caller.role, &req.role),
        (&mut caller.session, &req.session),
        (&mut caller.budget_id, &req.budget_id),
    ] {
        if value.is_some() {
            *field = value.clone();
        }
    }
    let caller = caller.qualified();
    let (endpoint, path_model, body, format) = match &req.request {
        Some(r) => {
            let (endpoint, model) = crate::endpoint_for_path(&r.path).ok_or_else(|| {
                AdminError::bad_request(format!(
                    "request.path {:?} is not a provider route",
                    r.path
                ))
            })?;
            let body =
                serde_json::to_vec(&r.body).map_err(|e| AdminError::bad_request(e.to_string()))?;
            (endpoint, model, body, endpoint.format())
        }
        None => {
            let Some(model) = &req.model else {
                return Err(AdminError::bad_request(
                    "explain needs a model or a request",
                ));
            };
            // A chat request of the shape asked, in the model's own format.
            let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
            if let Some(m) = req.max_tokens {
                body["max_tokens"] = json!(m);
            }
            let format = s
                .router
                .routes(model)
                .map_or(tollgate_providers::WireFormat::OpenAi, |p| p.kind);
            let body =
                serde_json::to_vec(&body).map_err(|e| AdminError::bad_request(e.to_string()))?;
            (
                tollgate_providers::Endpoint::ChatCompletions,
                None,
                body,
                format,
            )
        }
    };
    let parsed = tollgate_providers::ParsedRequest::parse(
        endpoint,
        path_model.as_deref(),
        bytes::Bytes::from(body),
    );
    let input_override = match (&req.request, req.input_tokens) {
        (None, None) => Some(100),
        (_, n) => n,
    };
    let planned = match parsed.map_err(crate::error::GatewayError::from) {
        Ok(p) => crate::proxy::plan::plan(s, &caller, &p, format, input_override)
            .await
            .map(|plan| (p, plan)),
        Err(e) => Err(e),
    };
    let model = match &planned {
        Ok((p, _)) => p.model.clone(),
        Err(_) => req.model.clone().unwrap_or_default(),
    };
    let mut downgraded_by = None;
    let mut throttled_by = None;
    let mut prompt_hint = None;
    let (served, provider, budgets, decision) = match &planned {
        Err(e) => {
            let n = e.to_native();
            let served = s
                .router
                .route(&model, format)
                .map_or_else(|_| model.clone(), |r| r.upstream_model);
            let provider = s.router.routes(&model).map(|p| p.name.clone());
            let d = DecisionView::Refuse {
                budget: None,
                status: n.status,
                code: n.code,
                reason: n.message,
            };
            (served, provider, Vec::new(), d)
        }
        Ok((parsed, plan)) => {
            let states = s.budgets.states(&plan.applied).await;
            let budgets = plan
                .applied
                .iter()
                .zip(&states)
                .map(|(a, st)| budget_json(a, st, source_of(s, &a.budget.id)))
                .collect();
            use crate::proxy::plan::Decision;
            let mut decision = crate::proxy::plan::decide(s, plan).await;
            // As the proxy does: a downgrade budget that refuses makes its
            // model the one served.
            let mut served_plan = None;
            if let Decision::Refuse(r) = &decision
                && let Some(way) = crate::proxy::plan::way_out(s, &caller, parsed, format, r).await
            {
                let p2 = match way {
                    crate::proxy::plan::WayOut::Downgrade(p2) => {
                        downgraded_by = Some(r.applied.budget.id.clone());
                        p2
                    }
                    // Whether the throttle rate has room is the proxy's
                    // call at the time; explain names the budget.
                    crate::proxy::plan::WayOut::Throttle { plan: p2, .. } => {
                        throttled_by = Some(r.applied.budget.id.clone());
                        p2
                    }
                };
                decision = crate::proxy::plan::decide(s, &p2).await;
                served_plan = Some(p2);
            }
            let served = served_plan.as_ref().unwrap_or(plan);
            if downgraded_by.is_none() {
                downgraded_by = served.fell_back_by.clone();
            }
            prompt_hint = served.hint.clone();
            let d = match decision {
                Decision::Allow { max_tokens } if plan.applied.is_empty() => DecisionView::Allow {
                    max_tokens,
                    reason: "no budget applies",
                },
                Decision::Allow { max_tokens } => DecisionView::Allow {
                    max_tokens,
                    reason: "every budget affords the worst case",
                },
                Decision::AllowCapped { max_tokens, asked } => DecisionView::AllowCapped {
                    max_tokens,
                    asked_max_tokens: asked,
                    reason: "the output limit is capped to what every budget affords",
                },
                Decision::Refuse(r) => {
                    let st = s.budgets.state(&r.applied).await;
                    let refusal = crate::error::BudgetRefusal::new(&r, &st, s.budgets.now());
                    DecisionView::Refuse {
                        budget: Some(r.applied.budget.id.clone()),
                        status: refusal.status,
                        code: Some("budget_exceeded".into()),
                        reason: refusal.message,
                    }
                }
            };
            (
                served.route.upstream_model.clone(),
                Some(served.route.provider.name.clone()),
                budgets,
                d,
            )
        }
    };
    Ok(crate::api::ExplainView {
        downgraded_by,
        throttled_by,
        prompt_hint,
        caller: (&caller).into(),
        model,
        model_served: served,
        provider,
        budgets,
        decision,
    })
}

#[utoipa::path(post, path = "/explain", tag = "budgets", request_body = ExplainRequest, responses((status = 200, description = "OK", body = crate::api::ExplainView), (status = 400, description = "Invalid request", body = crate::api::ErrorBody)))]
pub(super) async fn explain(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    body: axum::body::Bytes,
) -> Result<axum::Json<crate::api::ExplainView>, AdminError> {
    let mut req: ExplainRequest = serde_json::from_slice(&body)
        .map_err(|e| AdminError::bad_request(format!("invalid explain request: {e}")))?;
    if let Some(t) = scope.tenant() {
        // A tenant admin explains its tenant's callers only: its keys, its
        // users, sessions and named budgets.
        req.tenant = scope.tenant_filter(req.tenant.take())?;
        if let Some(k) = &req.key {
            let tenant = if k.starts_with("tg-") {
                s.keys.resolve(k).await.ok().and_then(|c| c.tenant)
            } else {
                s.store.key_by_id(k).await?.and_then(|k| k.tenant)
            };
            if tenant.as_deref() != Some(t) {
                return Err(AdminError::bad_request(format!(
                    "key: no key {k:?} in tenant {t:?}"
                )));
            }
        }
        req.session = req.session.take().map(|n| scope.own_name(n));
        req.budget_id = req.budget_id.take().map(|n| scope.own_name(n));
    }
    Ok(axum::Json(explain_json(&s, &req).await?))
}
