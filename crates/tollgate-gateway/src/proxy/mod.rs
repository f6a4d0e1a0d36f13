//! The proxy pipeline, one phase after another:
//!
//! 1. **accept** — read the body once, with a size limit (413);
//! 2. **identify** — the Tollgate key from the SDK's native header (401);
//! 3. **parse** — model, stream flag, output limit (400);
//! 4. **route** — model → provider and upstream name (404, 400 wrong API);
//! 5. **price** — the served model's price, or a refusal when unpriced;
//! 6. **reserve** — on every budget that applies, after the final model is known;
//! 7. **forward** — rewrite only what must change, send with provider auth;
//! 8. **settle** — read usage from the body or the stream, exactly once;
//! 9. **record** — the usage record goes to the batch writer.
//!
//! Errors before forwarding write no record (nothing reached a provider);
//! from forwarding on, every request writes exactly one.

pub mod plan;
mod settle;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Limited};
use tollgate_core::budget::Action;
use tollgate_core::ledger::Amount;
use tollgate_core::{Flags, Usage};
use tollgate_providers::{Endpoint, ParsedRequest, StreamFilter, WireFormat, usage_from_body};

use crate::AppState;
use crate::budgets::{Applied, ReserveError, State};
use crate::error::{BudgetRefusal, GatewayError};
use crate::identity::{self, Caller};
use settle::Draft;

/// A request as it arrived on one of the provider routes.
pub struct Inbound {
    pub endpoint: Endpoint,
    /// Gemini's model, from the path.
    pub path_model: Option<String>,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Body,
}

/// Runs the pipeline; every error comes back in the caller's format.
pub async fn handle(state: AppState, inbound: Inbound) -> Response {
    let format = inbound.endpoint.format();
    let request_id = new_request_id();
    let mut resp = match pipeline(&state, inbound, &request_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%request_id, error = %e, "request refused");
            e.into_response(format)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-tollgate-request-id", v);
    }
    resp
}

/// `req_` and 32 hex digits: 48 bits of milliseconds since the epoch, then
/// 80 random bits (the layout of a UUIDv7). Ids sort by time, so the
/// stores' unique indexes on them grow at one edge instead of dirtying a
/// random page per request.
fn new_request_id() -> String {
    let ms = jiff::Timestamp::now().as_millisecond().max(0) as u128 & ((1 << 48) - 1);
    let random: u128 = rand::random::<u128>() >> 48;
    format!("req_{:032x}", (ms << 80) | random)
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    let mut body = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| GatewayError::BodyRead(e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            // Read (and drop) a bounded rest of the body before answering, so
            // the client is still listening when the 413 arrives instead of
            // meeting a reset mid-upload.
            let drain = async {
                let mut seen = 0usize;
                while let Some(Ok(c)) = body.next().await {
                    seen += c.len();
                    if seen > limit.saturating_mul(4) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
            return Err(GatewayError::BodyTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Who is calling: a virtual key (`tg-...`), or a JWT when configured.
pub(crate) async fn identify(
    state: &AppState,
    format: WireFormat,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Caller, GatewayError> {
    match identity::presented_key(format, headers, query) {
        Some(k) if !k.starts_with("tg-") && crate::jwt::JwtVerifier::looks_like_jwt(k) => {
            match &state.jwt {
                Some(v) => v.verify(k),
                None => Err(GatewayError::InvalidKey),
            }
        }
        Some(k) => state.keys.resolve(k).await,
        None if !state.config.require_auth => Ok(Caller::default()),
        None => Err(GatewayError::MissingKey(identity::native_key_header(
            format,
        ))),
    }
}

async fn pipeline(
    state: &AppState,
    inbound: Inbound,
    request_id: &str,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    // The budgets' clock: a record is dated in the period it is charged to.
    let time = state.budgets.now();
    let Inbound {
        endpoint,
        path_model,
        query,
        headers,
        body,
    } = inbound;
    let format = endpoint.format();

    // 1. accept — a declared length over the limit is refused before reading.
    let limit = state.config.max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    // 2. identify (before reading the body: unauthenticated callers cost nothing).
    let caller = identify(state, format, &headers, query.as_deref()).await?;
    let body = read_body(body, limit).await?;

    // 3. parse
    let req = ParsedRequest::parse(endpoint, path_model.as_deref(), body)?;
    let caller = identity::WithRequest::with_request(
        caller,
        &headers,
        req.end_user.as_deref(),
        state.config.trust_all_identity_headers,
    )?;

    // 4–5. plan: route, price, the budgets that apply, sizing.
    let mut plan = plan::plan(state, &caller, &req, format, None).await?;
    let req = Arc::new(req);

    // 6. reserve — on the final model and provider, on every budget that
    // applies. A `downgrade` or `throttle` budget that cannot afford the
    // request opens its way out once: another model, or admission at its
    // throttle rate; the request is then planned and reserved again.
    let mut escaped: Option<Action> = None;
    let mut throttle_hold = None;
    let mut caller = caller;
    let mut hint;
    let mut fell_back = false;
    let (route, mut draft, max_output) = loop {
        hint = plan.hint.take();
        fell_back |= plan.fell_back_by.is_some();
        upstream::check_request_headers(&plan.route.provider, &headers, plan.price.as_ref())?;
        let route = plan.route.clone();
        let mut draft = Draft::new(
            request_id.to_string(),
            time,
            started,
            caller,
            route.provider.name.clone(),
            req.model.clone(),
            route.upstream_model.clone(),
            plan.price.clone(),
            req.clone(),
            state.budgets.clone(),
        );
        if let Some(a) = throttle_hold.take() {
            draft.rate.push((state.rates.clone(), a));
        }
        // Rate limits first: a request over them costs no reservation.
        if !plan.rates.is_empty() {
            let lines = std::mem::take(&mut plan.rates);
            let admitted = state
                .rates
                .admit(lines, reserved_tokens(&plan))
                .map_err(|e| {
                    state.budgets.metrics.refused("rate_limit_exceeded");
                    GatewayError::RateLimited(e)
                })?;
            draft.rate.push((state.rates.clone(), admitted));
        }
        match reserve(state, &mut draft, plan).await {
            Ok(max_output) => break (route, draft, max_output),
            Err(Reserve::Refused(refusal)) => {
                let way = match escaped {
                    None => plan::way_out(state, &draft.caller, &req, format, &refusal).await,
                    Some(_) => None,
                };
                let Some(way) = way else {
                    return Err(refuse(state, &mut draft, &refusal).await);
                };
                // Nothing was reserved or recorded for this draft; dropped
                // unforwarded, it gives its rate admissions back.
                plan =
                    match way {
                        plan::WayOut::Downgrade(p) => {
                            escaped = Some(Action::Downgrade);
                            p
                        }
                        plan::WayOut::Throttle { plan: p, line } => {
                            let a = state.rates.admit(vec![line], reserved_tokens(&p)).map_err(
                                |e| {
                                    state.budgets.metrics.refused("throttled");
                                    GatewayError::RateLimited(e)
                                },
                            )?;
                            throttle_hold = Some(a);
                            escaped = Some(Action::Throttle);
                            p
                        }
                    };
                caller = std::mem::take(&mut draft.caller);
                draft.applied.clear();
            }
            Err(Reserve::Failed(e)) => return Err(e),
        }
    };
    // A low budget's fallback model serves as a downgrade does.
    draft.flags.downgraded = escaped == Some(Action::Downgrade) || fell_back;
    draft.flags.throttled = escaped == Some(Action::Throttle);
    let downgraded = draft.flags.downgraded;
    draft.output_limit = max_output.or(req.max_output_tokens);

    // 7. forward
    let up = req.upstream_body_with(
        &route.upstream_model,
        max_output,
        route.provider.chat_limit_field,
        hint.as_deref(),
    );
    // The meter reads the stream in the framing the upstream is asked for.
    let query = tollgate_providers::headers::forwarded_query(format, query.as_deref());
    let sse = tollgate_providers::headers::streams_sse(format, query.as_deref());
    let upstream_req = upstream::build(upstream::UpstreamRequest {
        provider: &route.provider,
        path: endpoint.upstream_path(&route.upstream_model),
        query,
        headers: &headers,
        body: up.body,
        request_id,
    })?;
    draft.sending();
    let resp = match upstream::send(&route.provider, upstream_req).await {
        Ok(r) => r,
        Err(e) => {
            draft.upstream_ended();
            // Nothing reached the model: recorded, at zero cost.
            let status = e.to_native().status;
            draft.finish(Usage::default(), status, None, Flags::default());
            return Err(e);
        }
    };

    // 8. settle and 9. record
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let streaming = req.stream && status.is_success();
    let mut out = Response::builder().status(status);
    if let Some(h) = out.headers_mut() {
        for (name, value) in &parts.headers {
            if !upstream::is_stripped_response_header(name, streaming) {
                h.append(name.clone(), value.clone());
            }
        }
        if let Some(n) = max_output.filter(|_| draft.flags.capped) {
            h.insert("x-tollgate-capped-max-tokens", HeaderValue::from(n));
        }
        if downgraded && let Ok(v) = HeaderValue::from_str(&req.model) {
            h.insert("x-tollgate-downgraded-from", v);
        }
        if streaming {
            // Before this stream's spend is known: what is left once its
            // reservation (its worst case, as capped) is paid for.
            h.extend(budget_headers(state, &draft.applied).await);
        }
    }

    let encoding = upstream::content_encoding(&parts.headers);
    if streaming && let Some(enc) = encoding {
        // A compressed stream cannot be metered event by event: refused,
        // and charged the worst case it was reserved for (the upstream may
        // bill what it generated before the stream is dropped).
        let u = draft.worst_case_usage();
        let flags = Flags {
            usage_estimated: true,
            stream_interrupted: true,
            ..Flags::default()
        };
        draft.finish(u, 502, Some(started.elapsed()), flags);
        return Err(GatewayError::UpstreamUnreachable {
            provider: route.provider.name.clone(),
            reason: format!(
                "answered with a compressed stream ({enc}); Tollgate meters only uncompressed streams"
            ),
        });
    }

    if streaming {
        let mut filter = StreamFilter::new(endpoint, up.drop_usage_chunk, sse);
        let global_footer = global_footer(state);
        let footer = (draft.applied.iter().any(|a| a.budget.footer.is_some())
            || global_footer.is_some())
            && !tollgate_providers::footer::wants_json(endpoint, req.body());
        if footer {
            filter.arm_footer();
        }
        let stream = settle::metered_stream(
            body,
            filter,
            draft,
            status.as_u16(),
            route.provider.stream_idle_timeout,
            state.streams_end.subscribe(),
            footer.then_some(settle::StreamFooter {
                global: global_footer,
            }),
        );
        return out
            .body(Body::from_stream(stream))
            .map_err(|e| GatewayError::Internal(e.to_string()));
    }

    // Whole bodies: errors and non-streaming responses.
    let first_byte = started.elapsed();
    let limit = state.config.max_upstream_body_bytes;
    let read = tokio::time::timeout(
        route.provider.timeout.saturating_sub(first_byte),
        Limited::new(body, limit).collect(),
    )
    .await;
    draft.upstream_ended();
    let raw = match read {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(format!("reading response body: {e}")),
        Err(_) => Err(format!(
            "response body not complete within {} ms",
            route.provider.timeout.as_millis()
        )),
    };
    let bytes = raw.and_then(|b| match encoding {
        None => Ok(b),
        Some(enc) => upstream::decompress(enc, &b, limit),
    });
    let bytes = match bytes {
        Ok(b) => b,
        Err(reason) => {
            // The upstream answered and may have billed the whole generation:
            // charged the worst case it was reserved for, flagged.
            let u = draft.worst_case_usage();
            let flags = Flags {
                usage_estimated: true,
                stream_interrupted: true,
                ..Flags::default()
            };
            draft.finish(u, 502, Some(first_byte), flags);
            return Err(GatewayError::UpstreamUnreachable {
                provider: route.provider.name.clone(),
                reason,
            });
        }
    };
    if encoding.is_some()
        && let Some(h) = out.headers_mut()
    {
        // The client gets the body decompressed.
        h.remove(header::CONTENT_ENCODING);
        h.remove(header::CONTENT_LENGTH);
    }
    settle_body(&mut draft, endpoint, status, &bytes, first_byte, request_id);
    // After settlement: what is left once this response is paid for.
    let (headers, states) = budget_view(state, &draft.applied).await;
    let mut bytes = bytes;
    if status.is_success()
        && let Some(footer) = footer_for(global_footer(state).as_ref(), &draft.applied, &states)
        && let Some(b) = with_footer(endpoint, &req, &bytes, &footer)
    {
        bytes = b;
        if let Some(h) = out.headers_mut() {
            h.remove(header::CONTENT_LENGTH);
        }
    }
    if let Some(h) = out.headers_mut() {
        h.extend(headers);
    }
    out.body(Body::from(bytes))
        .map_err(|e| GatewayError::Internal(e.to_string()))
}

/// `budgets.footer`, parsed (validated at start-up).
fn global_footer(state: &AppState) -> Option<tollgate_core::template::Template> {
    state
        .config
        .budgets
        .footer
        .as_deref()
        .and_then(|t| tollgate_core::template::Template::parse(t).ok())
}

/// The footer for an answer: the tightest applicable budget's own, else
/// `budgets.footer` with the tightest budget's facts.
pub(crate) fn footer_for(
    global: Option<&tollgate_core::template::Template>,
    applied: &[Applied],
    states: &[State],
) -> Option<String> {
    use crate::budgets::tightest;
    let own = tightest(
        applied
            .iter()
            .zip(states)
            .filter(|(a, _)| a.budget.footer.is_some()),
    );
    if let Some((a, st)) = own {
        return a
            .budget
            .footer
            .as_ref()
            .map(|t| tollgate_budgets::messages::render(t, a, st));
    }
    let t = global?;
    let (a, st) = tightest(applied.iter().zip(states))?;
    Some(tollgate_budgets::messages::render(t, a, st))
}

/// `bytes` (a whole answer) with `footer` appended where the format puts
/// text; `None` when it has no place for one (see
/// `tollgate_providers::footer`).
fn with_footer(
    endpoint: Endpoint,
    req: &ParsedRequest,
    bytes: &Bytes,
    footer: &str,
) -> Option<Bytes> {
    let mut answer: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    tollgate_providers::footer::append_footer(endpoint, req.body(), &mut answer, footer)
        .then(|| serde_json::to_vec(&answer).ok().map(Bytes::from))
        .flatten()
}

/// Phase 8 for a whole body: usage from the body, or — a success without
/// usage — counted from the body's text, bounded by the output limit the
/// request was allowed. Failed requests are not billed by providers.
fn settle_body(
    draft: &mut Draft,
    endpoint: Endpoint,
    status: StatusCode,
    bytes: &Bytes,
    first_byte: std::time::Duration,
    request_id: &str,
) {
    if !status.is_success() {
        draft.finish(
            Usage::default(),
            status.as_u16(),
            Some(first_byte),
            Flags::default(),
        );
        return;
    }
    match usage_from_body(endpoint, bytes).usage {
        Some(u) => {
            draft.finish(u, status.as_u16(), Some(first_byte), Flags::default());
        }
        None => {
            // A success without usage is still charged: counted, flagged.
            tracing::warn!(%request_id, "upstream response without usage; counting tokens");
            let u = draft.estimate_from_body(bytes);
            let flags = Flags {
                usage_estimated: true,
                ..Flags::default()
            };
            draft.finish(u, status.as_u16(), Some(first_byte), flags);
        }
    }
}

/// Phase 6: reserves the request's worst case on every applicable budget,
/// capping the output limit to what they afford. Returns the output limit
/// to send upstream, if Tollgate must set one. A request no budget applies
/// to is still reserved (on no line): its reservation is in the log before
/// it is forwarded, so a crash leaves a record of it (`reconciled`).
async fn reserve(
    state: &AppState,
    draft: &mut Draft,
    plan: plan::Plan,
) -> Result<Option<u64>, Reserve> {
    let Some(sizing) = plan.sizing else {
        return Ok(None);
    };
    let applied = plan.applied;
    let unbudgeted = applied.is_empty();
    let input_tokens = plan.input_tokens;
    draft.input_estimate = Some(input_tokens);
    let makes_output = plan.makes_output;
    let want = sizing.want;
    let stream_total = plan.stream_total;
    let template = draft.record(
        Usage {
            input_tokens,
            ..Usage::default()
        },
        0,
        None,
        Flags::default(),
    );
    draft.applied = applied.clone();
    match state
        .budgets
        .reserve(&draft.request_id, &applied, sizing, template)
        .await
    {
        Ok(r) if unbudgeted => {
            // Logged all the same, so that a crash loses no record; the
            // request goes upstream as the caller sent it.
            draft.reserved = Some(r);
            Ok(None)
        }
        Ok(r) if stream_total.is_some() => {
            // A first slice: the stream goes with its whole limit and is
            // topped up (or ended) as it runs.
            draft.flags.warned = r.warned;
            draft.flags.would_block = r.would_block;
            draft.topup = Some(state.config.budgets.streaming.slice_tokens);
            draft.reserved = Some(r);
            Ok(stream_total)
        }
        Ok(r) => {
            draft.flags.capped = makes_output && r.granted < want;
            draft.flags.warned = r.warned;
            draft.flags.would_block = r.would_block;
            // The granted limit is always sent: every field the upstream
            // reads then says what was reserved (`upstream_body` leaves the
            // body untouched when it already does).
            let set = makes_output.then_some(r.granted);
            draft.reserved = Some(r);
            Ok(set)
        }
        Err(ReserveError::Refused(refusal)) => {
            draft.forwarded = false;
            Err(Reserve::Refused(refusal))
        }
        Err(ReserveError::Unavailable(e)) => Err(Reserve::Failed(GatewayError::LedgerUnavailable(
            e.to_string(),
        ))),
    }
}

/// The tokens a request's rate limits count up front: its reserved worst
/// case (input and output limit), as budgets size it.
fn reserved_tokens(plan: &plan::Plan) -> u64 {
    plan.sizing.map_or(0, |s| s.amount(s.want).tokens)
}

/// Why [`reserve`] reserved nothing.
enum Reserve {
    /// A budget refused (nothing is recorded yet: a downgrade may follow).
    Refused(Box<crate::budgets::Refusal>),
    Failed(GatewayError),
}

/// A refusal that stands: recorded (flag `blocked`, at no cost) and
/// answered.
async fn refuse(
    state: &AppState,
    draft: &mut Draft,
    refusal: &crate::budgets::Refusal,
) -> GatewayError {
    let flags = Flags {
        blocked: true,
        ..Flags::default()
    };
    let status = refusal.applied.budget.refusal_status;
    let rec = draft.record(Usage::default(), status, None, flags);
    state.budgets.settle(None, &[], Amount::default(), rec);
    draft.applied.clear();
    let st = state.budgets.state(&refusal.applied).await;
    GatewayError::BudgetExceeded(Box::new(BudgetRefusal::new(
        refusal,
        &st,
        state.budgets.now(),
    )))
}

/// `X-Budget-*` headers for the tightest applicable budget, in-flight
/// reservations counted as spent.
async fn budget_headers(state: &AppState, applied: &[Applied]) -> HeaderMap {
    budget_view(state, applied).await.0
}

/// The budget headers, and the states they were made from.
async fn budget_view(state: &AppState, applied: &[Applied]) -> (HeaderMap, Vec<State>) {
    let mut h = HeaderMap::new();
    if applied.is_empty() {
        return (h, Vec::new());
    }
    let states = state.budgets.states(applied).await;
    if let Some(w) = tollgate_budgets::messages::most_urgent(applied, &states)
        && let Some(v) = warning_value(&w)
    {
        h.insert("x-tollgate-warning", v);
    }
    if let Some((a, st)) = crate::budgets::tightest(applied.iter().zip(&states)) {
        for (name, value) in crate::budgets::header_values(a, st) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
    (h, states)
}

/// A rendered warning as a header value: one line (control characters
/// become spaces), UTF-8 carried as the bytes HTTP allows beyond ASCII.
fn warning_value(message: &str) -> Option<HeaderValue> {
    let line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    HeaderValue::from_bytes(line.trim().as_bytes()).ok()
}

/// `GET /v1/models`: the models this caller may use, in OpenAI's list
/// shape, or Anthropic's when the caller sends `anthropic-version`.
pub async fn list_models(state: AppState, headers: HeaderMap) -> Response {
    let anthropic = headers.contains_key("anthropic-version");
    let format = if anthropic {
        WireFormat::Anthropic
    } else {
        WireFormat::OpenAi
    };
    let caller = match identify(&state, format, &headers, None).await {
        Ok(c) => c,
        Err(e) => return e.into_response(format),
    };
    let catalog = state.catalog();
    let mut names: Vec<(String, String)> = catalog
        .entries()
        .filter_map(|e| {
            let p = state.router.routes(&e.model)?;
            Some((e.model.clone(), p.name.clone()))
        })
        .chain(
            state
                .router
                .exact_names()
                .map(|(n, p)| (n.to_string(), p.name.clone())),
        )
        .filter(|(m, _)| caller.may_use(m))
        .filter(|(m, _)| {
            !anthropic
                || state
                    .router
                    .routes(m)
                    .is_some_and(|p| p.kind == WireFormat::Anthropic)
        })
        .collect();
    names.sort();
    names.dedup_by(|a, b| a.0 == b.0);
    let body = tollgate_providers::headers::model_list(format, &names);
    (StatusCode::OK, axum::Json(body)).into_response()
}
