//! The plan of a request: route → price → the budgets that apply → sizing,
//! and the decision they lead to. The proxy pipeline and `POST
//! /admin/explain` both call [`plan`], so "why was I blocked?" can never
//! drift from what the proxy does; the proxy then reserves what the plan
//! sized (the ledger decides again, atomically, against concurrent
//! requests), explain asks the ledger what it would grant ([`decide`]).

use tollgate_core::budget::Action;
use tollgate_core::ledger::Sizing;
use tollgate_core::tokens::estimate_tokens;
use tollgate_core::{Caller, ModelPrice};
use tollgate_providers::{Endpoint, ParsedRequest, WireFormat};

use crate::AppState;
use crate::budgets::{Applied, Refusal};
use crate::error::GatewayError;
use crate::routing::Route;

/// Everything decided about a request before anything is reserved.
#[derive(Debug)]
pub struct Plan {
    pub route: Route,
    /// `None`: the endpoint is free (counting tokens), nothing is priced.
    pub price: Option<ModelPrice>,
    pub applied: Vec<Applied>,
    /// The rate limits that apply.
    pub rates: Vec<tollgate_budgets::rates::Line>,
    /// Input tokens reserved: the estimate when a budget or a token rate
    /// limit applies, a cheap bound (the body's bytes) when none does.
    pub input_tokens: u64,
    /// What the request asks of its budgets (`None` when not priced).
    pub sizing: Option<Sizing>,
    pub makes_output: bool,
    /// The low budget whose `on_low.fallbacks` chose the model served.
    pub fell_back_by: Option<String>,
    /// The budget hint to prepend to the system prompt (counted in
    /// `input_tokens`).
    pub hint: Option<String>,
    /// A stream reserved a first slice (`budgets.streaming: topup`): the
    /// output limit (per choice) it is sent with and topped up towards.
    pub stream_total: Option<u64>,
}

/// What the budgets would do with a request now.
#[derive(Debug)]
pub enum Decision {
    /// Allowed as asked (`max_tokens`: the per-choice output limit granted).
    Allow {
        max_tokens: Option<u64>,
    },
    /// Allowed with its output limit lowered to what every budget affords.
    AllowCapped {
        max_tokens: u64,
        asked: u64,
    },
    Refuse(Box<Refusal>),
}

/// Routes, prices, finds the budgets and sizes `req` for `caller`, who
/// calls in wire format `format`. `input_tokens`, when given, replaces the
/// estimate (explain's "assume this many input tokens").
pub async fn plan(
    state: &AppState,
    caller: &Caller,
    req: &ParsedRequest,
    format: WireFormat,
    input_tokens: Option<u64>,
) -> Result<Plan, GatewayError> {
    let p = plan_model(state, caller, req, &req.model, format, input_tokens).await?;
    let mut p = on_low(state, caller, req, format, input_tokens, p).await?;
    first_slice(state, req, &mut p);
    Ok(p)
}

/// With `budgets.streaming: topup`, a budgeted stream reserves a first
/// slice of its output (it is topped up while it runs, and ended cleanly
/// when a budget cannot fund the next slice) instead of its whole limit.
fn first_slice(state: &AppState, req: &ParsedRequest, p: &mut Plan) {
    let cfg = state.config.budgets.streaming;
    if cfg.mode != crate::config::StreamingMode::Topup
        || !req.stream
        || !p.makes_output
        || p.applied.is_empty()
    {
        return;
    }
    if let Some(s) = p.sizing.as_mut()
        && s.want > cfg.first_slice_tokens
    {
        p.stream_total = Some(s.want);
        s.want = cfg.first_slice_tokens;
        s.min = s.min.min(s.want);
    }
}

/// While a budget that applies is low: its `on_low.fallbacks` model serves
/// the request (planned again, once; a fallback the caller may not use, or
/// without a route or price, leaves the model as it is), and its prompt
/// hint joins the system prompt — of the tightest low budget that asks
/// for one. Both before anything is reserved: enforcement happens once,
/// on the final model.
async fn on_low(
    state: &AppState,
    caller: &Caller,
    req: &ParsedRequest,
    format: WireFormat,
    input_tokens: Option<u64>,
    mut p: Plan,
) -> Result<Plan, GatewayError> {
    if !p.applied.iter().any(|a| a.budget.on_low.is_some()) {
        return Ok(p);
    }
    let states = state.budgets.states(&p.applied).await;
    let fallback = p.applied.iter().zip(&states).find_map(|(a, st)| {
        let o = a.budget.on_low.as_ref().filter(|_| st.status != "ok")?;
        let to = o
            .fallback_for(&req.model)
            .or_else(|| o.fallback_for(&p.route.upstream_model))?;
        Some((a.budget.id.clone(), to.to_string()))
    });
    let mut states = Some(states);
    if let Some((by, to)) = fallback
        && let Ok(q) = plan_model(state, caller, req, &to, format, input_tokens).await
        && q.price.is_some() == p.price.is_some()
    {
        p = q;
        p.fell_back_by = Some(by);
        states = None;
    }
    if !tollgate_providers::hint::takes_hint(req.endpoint) {
        return Ok(p);
    }
    let states = match states {
        Some(s) => s,
        None => state.budgets.states(&p.applied).await,
    };
    let hinted = crate::budgets::tightest(p.applied.iter().zip(&states).filter(|(a, st)| {
        st.status != "ok" && a.budget.on_low.as_ref().is_some_and(|o| o.prompt_hint)
    }));
    if let Some((a, st)) = hinted {
        let max = a.budget.on_low.as_ref().map_or(0, |o| o.max_hint_chars);
        let h = tollgate_budgets::messages::hint(a, st, max);
        // Each of its bytes may be a token: reserved as such.
        p.input_tokens += h.len() as u64;
        p.sizing = size(state, req, p.price.as_ref(), p.input_tokens, p.makes_output);
        p.hint = Some(h);
    }
    Ok(p)
}

fn size(
    state: &AppState,
    req: &ParsedRequest,
    price: Option<&ModelPrice>,
    input_tokens: u64,
    makes_output: bool,
) -> Option<Sizing> {
    price.map(|p| {
        state.budgets.sizing(
            p,
            input_tokens,
            req.max_output_tokens,
            makes_output,
            req.choices,
        )
    })
}

/// The plan of `req` served by `model` (a downgrade's, or its own).
async fn plan_model(
    state: &AppState,
    caller: &Caller,
    req: &ParsedRequest,
    model: &str,
    format: WireFormat,
    input_tokens: Option<u64>,
) -> Result<Plan, GatewayError> {
    let route = route(state, caller, model, format)?;
    let price = price(state, req.endpoint, &route)?;
    if let Some(tool) = req
        .per_use_tools()
        .into_iter()
        .find(|t| !route.provider.allow_tools.iter().any(|g| g.matches(t)))
    {
        return Err(GatewayError::ToolNotPriced(tool));
    }
    let applied = match &price {
        Some(_) => {
            state
                .budgets
                .applicable(caller, &route.upstream_model)
                .await
        }
        None => Vec::new(),
    };
    let rates = state.rates.applicable(caller, &route.upstream_model);
    let counted = !applied.is_empty() || rates.iter().any(|l| l.limit.tokens_per_minute.is_some());
    let input_tokens = input_tokens.unwrap_or_else(|| {
        if !counted {
            // Only a crash ever charges this (no budget to hold): a cheap
            // bound, the body's bytes, not a count.
            let bound = req.body_len() as u64;
            state
                .catalog()
                .context_window(&route.upstream_model)
                .map_or(bound, |w| bound.min(w))
        } else {
            estimate_input_tokens(state, req, &route.upstream_model)
        }
    });
    let makes_output = req.endpoint != Endpoint::Embeddings;
    let sizing = size(state, req, price.as_ref(), input_tokens, makes_output);
    Ok(Plan {
        route,
        price,
        applied,
        rates,
        input_tokens,
        sizing,
        makes_output,
        fell_back_by: None,
        hint: None,
        stream_total: None,
    })
}

/// The model's route, checked against what the caller may use.
fn route(
    state: &AppState,
    caller: &Caller,
    model: &str,
    format: WireFormat,
) -> Result<Route, GatewayError> {
    if !caller.may_use(model) {
        return Err(GatewayError::ModelNotAllowed(model.to_string()));
    }
    let route = state.router.route(model, format)?;
    if !caller.may_use(&route.upstream_model) && route.upstream_model != model {
        return Err(GatewayError::ModelNotAllowed(route.upstream_model));
    }
    Ok(route)
}

/// The way past a budget that refused, for budgets whose action has one.
pub enum WayOut {
    /// Served by the budget's `downgrade_to` model: its plan.
    Downgrade(Plan),
    /// Admitted at the budget's throttle rate (`line`), then served as
    /// planned.
    Throttle {
        plan: Plan,
        line: tollgate_budgets::rates::Line,
    },
}

/// When `refusal` came from a `downgrade` or `throttle` budget: the plan
/// of the same request served by that budget's `downgrade_to` model, or
/// admitted at its throttle rate — planned again with budgets of that
/// action no longer refusing (they chose this way out; every other
/// `block` budget still holds). `None` when there is no way out: a `block`
/// budget refused, or the caller may not use the downgrade model, or it
/// has no route in the request's wire format, or no price.
pub async fn way_out(
    state: &AppState,
    caller: &Caller,
    req: &ParsedRequest,
    format: WireFormat,
    refusal: &Refusal,
) -> Option<WayOut> {
    let b = &refusal.applied.budget;
    let model = match b.action {
        Action::Downgrade => b.downgrade_to.as_deref()?,
        Action::Throttle => req.model.as_str(),
        _ => return None,
    };
    let mut p = plan_model(state, caller, req, model, format, None)
        .await
        .ok()?;
    p.price.as_ref()?;
    for a in &mut p.applied {
        if a.budget.action == b.action {
            a.line.enforce = false;
        }
    }
    match (b.action, b.throttle) {
        (Action::Throttle, Some(t)) => {
            let limit = tollgate_core::rate::RateLimit {
                id: format!("throttle:{}", b.id),
                scope: b.scope,
                subject: Some(refusal.applied.subject.clone()),
                requests_per_minute: t.requests_per_minute,
                tokens_per_minute: t.tokens_per_minute,
                models: Vec::new(),
            };
            Some(WayOut::Throttle {
                plan: p,
                line: tollgate_budgets::rates::Line {
                    limit: std::sync::Arc::new(limit),
                    subject: refusal.applied.subject.clone(),
                },
            })
        }
        _ => Some(WayOut::Downgrade(p)),
    }
}

/// The served model's price; counting tokens is free at every provider.
fn price(
    state: &AppState,
    endpoint: Endpoint,
    route: &Route,
) -> Result<Option<ModelPrice>, GatewayError> {
    if !endpoint.is_billable() {
        return Ok(None);
    }
    Ok(Some(
        state.catalog().price_of(&route.upstream_model)?.clone(),
    ))
}

/// What the budgets would grant the plan now, reserving nothing.
pub async fn decide(state: &AppState, plan: &Plan) -> Decision {
    let Some(sizing) = plan.sizing.filter(|_| !plan.applied.is_empty()) else {
        return Decision::Allow { max_tokens: None };
    };
    match state.budgets.plan(&plan.applied, &sizing).await {
        Ok(n) if plan.makes_output && n < sizing.want => Decision::AllowCapped {
            max_tokens: n,
            asked: sizing.want,
        },
        Ok(n) => Decision::Allow {
            max_tokens: plan.makes_output.then_some(n),
        },
        Err(r) => Decision::Refuse(r),
    }
}

/// Input tokens to reserve for a request, never fewer than the provider
/// can bill: the text (messages, system, tools as JSON) counted exactly up
/// to 64 KB, bounded by its bytes beyond, framed as the format bills it
/// ([`tollgate_providers::input::InputSize::billable_tokens`]); parts only
/// the provider can size at `budgets.unknown_input_tokens` (or the context
/// window); at most the model's context window in all.
pub fn estimate_input_tokens(state: &AppState, req: &ParsedRequest, model: &str) -> u64 {
    let size = req.input_size(model);
    let catalog = state.catalog();
    let mut tokens = size.billable_tokens(req.endpoint.format(), estimate_tokens(&size.text));
    if size.unknown_parts > 0 {
        tokens = tokens.saturating_add(state.budgets.unknown_input_tokens(model, &catalog));
    }
    // No provider accepts more than the model's context window.
    match catalog.context_window(model) {
        Some(window) => tokens.min(window),
        None => tokens,
    }
}
