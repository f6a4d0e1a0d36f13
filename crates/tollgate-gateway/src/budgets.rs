//! The budget engine (`tollgate-budgets`) as the gateway uses it, and how
//! a budget's state is written into response headers.

pub use tollgate_budgets::engine::*;

/// The `X-Budget-*` header values for one budget's state: limit and
/// remaining in USD when it has a money limit, else in tokens.
pub fn header_values(a: &Applied, st: &State) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match (
        st.limit.money,
        st.headroom.money,
        st.limit.tokens,
        st.headroom.tokens,
    ) {
        (Some(l), Some(h), _, _) => {
            out.push(("x-budget-limit", l.to_string()));
            out.push(("x-budget-remaining", h.to_string()));
        }
        (_, _, Some(l), Some(h)) => {
            out.push(("x-budget-limit", format!("{l} tokens")));
            out.push(("x-budget-remaining", format!("{h} tokens")));
        }
        _ => {}
    }
    if let Some(r) = a.resets_at {
        out.push(("x-budget-reset", r.to_string()));
    }
    out.push(("x-budget-status", st.status.to_string()));
    out.push(("x-budget-id", a.budget.id.clone()));
    out
}

/// Whether `b`'s `downgrade_to` model can serve requests: it has a route
/// and a price. (Its wire format is checked per request: a request of
/// another format is refused as `block` would.)
pub fn check_downgrade(
    b: &tollgate_core::budget::Budget,
    router: &crate::routing::ModelRouter,
    catalog: &tollgate_core::Catalog,
) -> Result<(), String> {
    let Some(to) = &b.downgrade_to else {
        return Ok(());
    };
    let Some(p) = router.routes(to) else {
        return Err(format!(
            "downgrade_to: no provider serves {to:?} (add a models: route)"
        ));
    };
    let served = router
        .route(to, p.kind)
        .map(|r| r.upstream_model)
        .unwrap_or_else(|_| to.clone());
    if catalog.price_of(&served).is_err() {
        return Err(format!(
            "downgrade_to: {to:?} has no price (set one under pricing:)"
        ));
    }
    Ok(())
}
