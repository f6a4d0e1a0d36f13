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

/// Whether the models `b` may serve instead — its `downgrade_to`, its
/// `on_low.fallbacks` targets — can serve requests: each has a route and
/// a price. (Wire formats are checked per request: a model of another
/// format is no way out, and the budget acts as if it had none.)
pub fn check_models(
    b: &tollgate_core::budget::Budget,
    router: &crate::routing::ModelRouter,
    catalog: &tollgate_core::Catalog,
) -> Result<(), String> {
    let targets = b
        .downgrade_to
        .iter()
        .map(|m| ("downgrade_to".to_string(), m))
        .chain(b.on_low.iter().flat_map(|o| {
            o.fallbacks
                .iter()
                .map(|(from, to)| (format!("on_low.fallbacks.{from}"), to))
        }));
    for (field, to) in targets {
        let Some(p) = router.routes(to) else {
            return Err(format!(
                "{field}: no provider serves {to:?} (add a models: route)"
            ));
        };
        let served = router
            .route(to, p.kind)
            .map(|r| r.upstream_model)
            .unwrap_or_else(|_| to.clone());
        if catalog.price_of(&served).is_err() {
            return Err(format!(
                "{field}: {to:?} has no price (set one under pricing:)"
            ));
        }
    }
    Ok(())
}

/// The budget with the least left (by the tighter unit's fraction), of
/// `pairs`: the one headers, hints and footers speak of.
pub fn tightest<'a>(
    pairs: impl Iterator<Item = (&'a Applied, &'a State)>,
) -> Option<(&'a Applied, &'a State)> {
    pairs.min_by(|(_, x), (_, y)| {
        let fx = x.fraction_left().unwrap_or(f64::INFINITY);
        let fy = y.fraction_left().unwrap_or(f64::INFINITY);
        fx.total_cmp(&fy)
    })
}
