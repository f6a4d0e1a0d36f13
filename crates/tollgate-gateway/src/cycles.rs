//! The Cycles runtime API (`/v1/reservations`, `/v1/decide`,
//! `/v1/balances`, `/v1/events`): thin handlers over
//! [`tollgate_cycles::service::Cycles`], authenticated by a Tollgate key
//! in `X-Cycles-API-Key`, answering in the protocol's own error shape
//! with `X-Request-Id` and `X-Cycles-Trace-Id` on every response.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tollgate_cycles::CyclesError;
use tollgate_cycles::protocol::{ErrorBody, ErrorCode};
use tollgate_cycles::service::{Principal, Reply};

use crate::AppState;

/// The trace id of a request: a valid `traceparent`'s, else a valid
/// `X-Cycles-Trace-Id`, else a new one (malformed headers are ignored).
fn trace_id(headers: &HeaderMap) -> String {
    let hex32 = |s: &str| {
        s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && s.bytes().any(|b| b != b'0')
    };
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        let parts: Vec<&str> = tp.split('-').collect();
        if parts.len() == 4
            && parts[0] == "00"
            && hex32(parts[1])
            && parts[2].len() == 16
            && parts[2]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            && parts[2].bytes().any(|b| b != b'0')
            && parts[3].len() == 2
        {
            return parts[1].to_string();
        }
    }
    if let Some(t) = headers
        .get("x-cycles-trace-id")
        .and_then(|v| v.to_str().ok())
        .filter(|t| hex32(t))
    {
        return t.to_string();
    }
    loop {
        let t = format!("{:032x}", rand::random::<u128>());
        if hex32(&t) {
            return t;
        }
    }
}

/// What every Cycles response carries.
struct Call {
    request_id: String,
    trace_id: String,
    tenant: Option<String>,
}

impl Call {
    fn new(headers: &HeaderMap) -> Call {
        Call {
            request_id: format!("req_{:032x}", rand::random::<u128>()),
            trace_id: trace_id(headers),
            tenant: None,
        }
    }

    fn headers(&self, resp: &mut Response) {
        let h = resp.headers_mut();
        for (name, v) in [
            ("x-request-id", Some(&self.request_id)),
            ("x-cycles-trace-id", Some(&self.trace_id)),
            ("x-cycles-tenant", self.tenant.as_ref()),
        ] {
            if let Some(v) = v.and_then(|v| HeaderValue::from_str(v).ok()) {
                h.insert(name, v);
            }
        }
    }

    fn answer(&self, r: Result<Reply, CyclesError>) -> Response {
        let mut resp = match r {
            Ok(reply) => (
                StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
                axum::Json(reply.body),
            )
                .into_response(),
            Err(e) => {
                let limited = e.code == ErrorCode::LimitExceeded;
                if e.code == ErrorCode::InternalError {
                    tracing::error!(request_id = %self.request_id, error = %e.message, "cycles request failed");
                }
                let body = ErrorBody {
                    error: e.code,
                    message: e.message,
                    request_id: self.request_id.clone(),
                    trace_id: Some(self.trace_id.clone()),
                    details: e.details,
                };
                let mut resp = (
                    StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST),
                    axum::Json(body),
                )
                    .into_response();
                if limited {
                    // Room comes back as reservations settle: try again in a second.
                    let reset = jiff::Timestamp::now().as_second() + 1;
                    let h = resp.headers_mut();
                    h.insert("retry-after", HeaderValue::from_static("1"));
                    if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
                        h.insert("x-ratelimit-reset", v);
                    }
                }
                resp
            }
        };
        self.headers(&mut resp);
        resp
    }
}

/// The caller of `X-Cycles-API-Key`: a Tollgate virtual key (or a JWT).
async fn principal(s: &AppState, headers: &HeaderMap) -> Result<Principal, CyclesError> {
    let Some(k) = headers
        .get("x-cycles-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
    else {
        return Err(CyclesError::new(
            ErrorCode::Unauthorized,
            "missing X-Cycles-API-Key (a Tollgate key)",
        ));
    };
    let caller = if !k.starts_with("tg-") && crate::jwt::JwtVerifier::looks_like_jwt(k) {
        match &s.jwt {
            Some(v) => v.verify(k),
            None => Err(crate::error::GatewayError::InvalidKey),
        }
    } else {
        s.keys.resolve(k).await
    };
    caller
        .map(|caller| Principal {
            caller,
            admin: false,
        })
        .map_err(|e| CyclesError::new(ErrorCode::Unauthorized, e.to_string()))
}

/// The caller of a route an operator may also reach with an admin key
/// (`X-Admin-API-Key`: listing, reading and releasing reservations): a
/// full admin acts for any tenant (a list names it), a tenant admin for
/// its own.
async fn principal_or_admin(s: &AppState, headers: &HeaderMap) -> Result<Principal, CyclesError> {
    let Some(k) = headers.get("x-admin-api-key").and_then(|v| v.to_str().ok()) else {
        return principal(s, headers).await;
    };
    let tenant = match crate::admin::resolve_admin(s, Some(k)).await {
        Ok(crate::admin::AdminScope::Full) => None,
        Ok(crate::admin::AdminScope::Tenant(t)) => Some(t),
        Err(e) => return Err(CyclesError::new(ErrorCode::Unauthorized, e.message())),
    };
    Ok(Principal {
        caller: tollgate_core::Caller {
            tenant,
            trusted: true,
            ..Default::default()
        },
        admin: true,
    })
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, CyclesError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        CyclesError::invalid(if path == "." {
            format!("invalid request body: {}", e.inner())
        } else {
            format!("{path}: {}", e.inner())
        })
    })
}

fn idem_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// One POST operation: authenticate, parse, run, answer.
macro_rules! post_op {
    ($name:ident, $auth:ident, $req:ty, |$s:ident, $p:ident, $r:ident, $k:ident $(, $id:ident)?| $run:expr) => {
        pub(crate) async fn $name(
            State($s): State<AppState>,
            $(Path($id): Path<String>,)?
            headers: HeaderMap,
            bytes: Bytes,
        ) -> Response {
            let mut call = Call::new(&headers);
            let mut tenant = None;
            let result = async {
                let $p = $auth(&$s, &headers).await?;
                tenant = $p.caller.tenant.clone();
                let $r: $req = body(&bytes)?;
                let $k = idem_header(&headers);
                $run.await
            }
            .await;
            call.tenant = tenant;
            call.answer(result)
        }
    };
}

post_op!(
    create,
    principal,
    tollgate_cycles::protocol::CreateRequest,
    |s, p, r, k| s.cycles.create(&p, r, k.as_deref())
);
post_op!(
    commit,
    principal,
    tollgate_cycles::protocol::CommitRequest,
    |s, p, r, k, id| s.cycles.commit(&p, &id, r, k.as_deref())
);
post_op!(
    release,
    principal_or_admin,
    tollgate_cycles::protocol::ReleaseRequest,
    |s, p, r, k, id| s.cycles.release(&p, &id, r, k.as_deref())
);
post_op!(
    extend,
    principal,
    tollgate_cycles::protocol::ExtendRequest,
    |s, p, r, k, id| s.cycles.extend(&p, &id, r, k.as_deref())
);

/// `GET /v1/reservations/{id}`.
pub(crate) async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    read_by_id(&s, &id, &headers, Read::Reservation).await
}

enum Read {
    Reservation,
    Session,
}

/// A GET of one thing by id: authenticate, look up, answer.
async fn read_by_id(s: &AppState, id: &str, headers: &HeaderMap, what: Read) -> Response {
    let call = Call::new(headers);
    let result = async {
        let p = match what {
            Read::Reservation => principal_or_admin(s, headers).await?,
            Read::Session => principal(s, headers).await?,
        };
        match what {
            Read::Reservation => s.cycles.get(&p, id).await,
            Read::Session => s.cycles.session(&p, id).await,
        }
    }
    .await;
    call.answer(result)
}

/// `GET /v1/auth/introspect`: the credential (`X-Admin-API-Key` or
/// `X-Cycles-API-Key`) and what a dashboard may show it.
pub(crate) async fn introspect(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let mut call = Call::new(&headers);
    let p = principal_or_admin(&s, &headers).await;
    call.tenant = p.as_ref().ok().and_then(|p| p.caller.tenant.clone());
    call.answer(p.and_then(|p| s.cycles.introspect(&p)))
}

/// `GET /v1/sessions/{id}`: a session's summary across model calls and
/// tool reservations.
pub(crate) async fn session(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    read_by_id(&s, &id, &headers, Read::Session).await
}

post_op!(
    decide,
    principal,
    tollgate_cycles::protocol::DecisionRequest,
    |s, p, r, k| s.cycles.decide(&p, r, k.as_deref())
);
post_op!(
    event,
    principal,
    tollgate_cycles::protocol::EventRequest,
    |s, p, r, k| s.cycles.event(&p, r, k.as_deref())
);

/// The subject filter of a query (`tenant`, `workspace`, ... as query
/// parameters).
fn subject_of(q: &std::collections::HashMap<String, String>) -> tollgate_cycles::protocol::Subject {
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    tollgate_cycles::protocol::Subject {
        tenant: get("tenant"),
        workspace: get("workspace"),
        app: get("app"),
        workflow: get("workflow"),
        agent: get("agent"),
        toolset: get("toolset"),
        dimensions: None,
    }
}

/// `GET /v1/balances?tenant=&workspace=&...`.
pub(crate) async fn balances(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let call = Call::new(&headers);
    let result = async {
        let p = principal(&s, &headers).await?;
        let subject = subject_of(&q);
        if subject.levels().iter().all(|v| v.is_none()) {
            return Err(CyclesError::invalid(
                "at least one of tenant, workspace, app, workflow, agent or toolset is required",
            ));
        }
        s.cycles.balances_of(&p, subject).await
    }
    .await;
    call.answer(result)
}

/// An ISO 8601 time bound of a list; blank is unset.
fn bound(
    q: &std::collections::HashMap<String, String>,
    name: &str,
) -> Result<Option<jiff::Timestamp>, CyclesError> {
    match q.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse::<jiff::Timestamp>().map(Some).map_err(|_| {
            CyclesError::invalid(format!("{name}: {v:?} is not an ISO 8601 date-time"))
        }),
    }
}

/// `GET /v1/reservations` with the protocol's filters, `limit` (1 to
/// 200, default 50) and `cursor`.
pub(crate) async fn list(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let call = Call::new(&headers);
    let result = async {
        let p = principal_or_admin(&s, &headers).await?;
        let limit = match q.get("limit").map(|v| v.parse::<usize>()) {
            None => 50,
            Some(Ok(n)) if (1..=200).contains(&n) => n,
            Some(_) => return Err(CyclesError::invalid("limit: 1 to 200")),
        };
        let status = match q.get("status").filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(
                tollgate_cycles::protocol::Status::parse(v)
                    .ok_or_else(|| CyclesError::invalid(format!("status: unknown {v:?}")))?
                    .as_str()
                    .to_string(),
            ),
        };
        let before = match q.get("cursor").filter(|v| !v.is_empty()) {
            None => None,
            Some(c) => Some(
                c.split_once('_')
                    .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_string())))
                    .ok_or_else(|| CyclesError::invalid("cursor: not one this server gave"))?,
            ),
        };
        let mut query = tollgate_store::cycles::ReservationQuery {
            status,
            idempotency_key: q.get("idempotency_key").filter(|v| !v.is_empty()).cloned(),
            before,
            limit,
            ..Default::default()
        };
        for (from, to, lo, hi) in [
            ("from", "to", &mut query.created_from, &mut query.created_to),
            (
                "expires_from",
                "expires_to",
                &mut query.expires_from,
                &mut query.expires_to,
            ),
            (
                "finalized_from",
                "finalized_to",
                &mut query.finalized_from,
                &mut query.finalized_to,
            ),
        ] {
            *lo = bound(&q, from)?;
            *hi = bound(&q, to)?;
            if let (Some(a), Some(b)) = (*lo, *hi)
                && a > b
            {
                return Err(CyclesError::invalid(format!("{from} is after {to}")));
            }
        }
        let include: Vec<&str> = q
            .get("include")
            .map(|v| v.split(',').map(str::trim).collect())
            .unwrap_or_default();
        s.cycles
            .list(&p, query, subject_of(&q), include.contains(&"metadata"))
            .await
    }
    .await;
    call.answer(result)
}

/// Expires Cycles reservations at the end of their grace (looked at ten
/// times a second; only the due ones are visited); forgets idempotent
/// replies past their replay window, hourly.
pub(crate) fn spawn_sweeper(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            state.cycles.sweep().await;
            n += 1;
            if n % 36_000 == 1 {
                let before = state.budgets.now()
                    - jiff::SignedDuration::from_hours(tollgate_cycles::service::REPLAY_HOURS);
                if let Err(e) = state.store.delete_replies_before(before).await {
                    tracing::warn!(error = %e, "cannot forget old Cycles replies; will retry");
                }
            }
        }
    })
}
