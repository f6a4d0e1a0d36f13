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
