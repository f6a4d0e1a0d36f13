//! `GET /usage`: a caller's own budgets.

use super::*;

/// `GET /usage`: the calling key's own budgets and their state.
pub async fn own_usage(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let format = tollgate_providers::WireFormat::OpenAi;
    // The same identification as the proxy: a virtual key or a JWT.
    let caller = match crate::proxy::identify(&s, format, &headers, None).await {
        Ok(c) => c,
        Err(e) => return e.into_response(format),
    };
    let caller = match identity::WithRequest::with_request(
        caller,
        &headers,
        None,
        s.config.trust_all_identity_headers,
    ) {
        Ok(c) => c,
        Err(e) => return e.into_response(format),
    };
    let applied = s.budgets.applicable_any_model(&caller).await;
    let states = s.budgets.states(&applied).await;
    let budgets = applied
        .iter()
        .zip(&states)
        .map(|(a, st)| budget_json(a, st, None))
        .collect();
    axum::Json(crate::api::UsageView {
        key_id: caller.key_id.as_deref(),
        user: caller.user.as_deref(),
        tenant: caller.tenant.as_deref(),
        session: caller.session.as_deref(),
        budgets,
    })
    .into_response()
}
