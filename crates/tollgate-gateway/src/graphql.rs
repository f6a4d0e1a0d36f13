//! GraphQL at `/graphql`: reports, records, budgets, users and alerts as
//! queries — the same filters and the same authorization as REST (they
//! call the same functions, with the caller's admin scope) — and
//! subscriptions over WebSocket (`graphql-transport-ws`) for settled usage
//! and budget level changes, fed by the engine's event stream and
//! filtered to what the subscriber may see. `GET /graphql` in a browser
//! is GraphiQL.
//!
//! Authentication: `Authorization: Bearer <admin key>` on the request (or
//! on the WebSocket upgrade), or — browsers cannot set headers on a
//! WebSocket — `{"Authorization": "Bearer <admin key>"}` as the
//! `connection_init` payload.

use async_graphql::futures_util::Stream;
use async_graphql::{Context, EmptyMutation, Object, Schema, SimpleObject, Subscription};
use axum::extract::{FromRequestParts, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};
use tollgate_core::UsageRecord;
use tollgate_store::{GroupBy, RecordQuery, ReportFilter, ReportQuery};

use crate::AppState;
use crate::admin::{AdminError, AdminScope};

pub type TollgateSchema = Schema<Query, EmptyMutation, Subscription>;

/// Subscription WebSockets open at once, at most (they live outside the
/// connection limit once upgraded).
const MAX_SUBSCRIBERS: usize = 256;

/// The schema and what bounds its WebSockets.
#[derive(Clone)]
pub struct Graphql {
    schema: TollgateSchema,
    sockets: std::sync::Arc<tokio::sync::Semaphore>,
}

pub fn service(state: AppState) -> Graphql {
    Graphql {
        schema: Schema::build(Query, EmptyMutation, Subscription)
            .data(state)
            .limit_depth(12)
            .limit_complexity(2_000)
            .finish(),
        sockets: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_SUBSCRIBERS)),
    }
}

fn gql(e: AdminError) -> async_graphql::Error {
    async_graphql::Error::new(e.message().to_string())
}

fn parts<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<(&'a AppState, &'a AdminScope)> {
    Ok((ctx.data::<AppState>()?, ctx.data::<AdminScope>()?))
}

fn time(v: Option<String>) -> async_graphql::Result<Option<jiff::Timestamp>> {
    v.map(|s| crate::admin::parse_time(&s, jiff::Timestamp::now()))
        .transpose()
        .map_err(async_graphql::Error::new)
}

/// One grouping dimension's value in a report row.
#[derive(SimpleObject)]
pub struct Dimension {
    pub name: String,
    /// `null` for records without this dimension.
    pub value: Option<String>,
}

#[derive(SimpleObject)]
pub struct ReportRow {
    pub dimensions: Vec<Dimension>,
    #[graphql(flatten)]
    pub totals: crate::api::Totals,
}

#[derive(SimpleObject)]
pub struct Report {
    pub rows: Vec<ReportRow>,
    pub total: crate::api::Totals,
}

/// A usage record.
#[derive(SimpleObject, Clone)]
pub struct Record {
    pub request_id: String,
    pub time: String,
    pub key_id: Option<String>,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub session: Option<String>,
    pub budgets: Vec<String>,
    pub provider: String,
    pub model_requested: String,
    pub model_served: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: String,
    pub latency_ms: u64,
    pub status: u16,
    pub flags: Vec<String>,
}

impl From<&UsageRecord> for Record {
    fn from(r: &UsageRecord) -> Record {
        let u = &r.usage;
        Record {
            request_id: r.request_id.clone(),
            time: r.time.to_string(),
            key_id: r.key_id.clone(),
            user: r.user.clone(),
            tenant: r.tenant.clone(),
            session: r.session.clone(),
            budgets: r.budgets.clone(),
            provider: r.provider.clone(),
            model_requested: r.model_requested.clone(),
            model_served: r.model_served.clone(),
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_input_tokens: u.cached_input_tokens,
            cache_write_5m_tokens: u.cache_write_5m_tokens,
            cache_write_1h_tokens: u.cache_write_1h_tokens,
            reasoning_tokens: u.reasoning_tokens,
            cost_usd: r.cost.to_string(),
            latency_ms: r.latency_ms,
            status: r.status,
            flags: r.flags.names().iter().map(|f| f.to_string()).collect(),
        }
    }
}

#[derive(SimpleObject)]
pub struct RecordPage {
    pub records: Vec<Record>,
    pub next_cursor: Option<String>,
}

#[derive(SimpleObject)]
pub struct BudgetPage {
    pub budgets: Vec<crate::api::BudgetView>,
}

#[derive(SimpleObject)]
pub struct Alert {
    pub id: String,
    #[graphql(name = "type")]
    pub kind: String,
    pub severity: String,
    pub budget_id: Option<String>,
    pub rule_id: Option<String>,
    pub subject: Option<String>,
    pub created_at: String,
    pub status: String,
    /// The webhook body, as JSON text.
    pub payload: String,
}

/// A budget's level changed for one subject.
#[derive(SimpleObject, Clone)]
pub struct LevelChange {
    pub budget_id: String,
    pub subject: String,
    /// `ok`, `low` or `over_limit`.
    pub from: String,
    pub to: String,
    pub period_start: String,
}

/// Equality filters; each a dimension of the records.
#[derive(async_graphql::InputObject, Default)]
pub struct Filter {
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub session: Option<String>,
    pub key: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub budget: Option<String>,
}

pub struct Query;

#[Object]
impl Query {
    /// Totals grouped by dimensions (`["user", "model"]`), as
    /// `GET /admin/reports`.
    async fn report(
        &self,
        ctx: &Context<'_>,
        group_by: Vec<String>,
        from: Option<String>,
        to: Option<String>,
        filter: Option<Filter>,
    ) -> async_graphql::Result<Report> {
        let (s, scope) = parts(ctx)?;
        let f = filter.unwrap_or_default();
        let group_by =
            GroupBy::parse_list(&group_by.join(",")).map_err(async_graphql::Error::new)?;
        let q = ReportQuery {
            group_by,
            from: time(from)?,
            to: time(to)?,
            filter: ReportFilter {
                user: f.user,
                tenant: scope.tenant_filter(f.tenant).map_err(gql)?,
                session: f.session,
                key_id: f.key,
                model: f.model,
                provider: f.provider,
                budget: f.budget,
            },
            raw_only: false,
        };
        let r = crate::admin::run_report(&*s.store, &q)
            .await
            .map_err(|e| gql(e.into()))?;
        let totals = |r: &tollgate_store::ReportRow| {
            crate::api::Totals::new(r.requests, r.refused, &r.usage, r.cost)
        };
        Ok(Report {
            rows: r
                .rows
                .iter()
                .map(|row| ReportRow {
                    dimensions: r
                        .group_by
                        .iter()
                        .zip(&row.keys)
                        .map(|(g, k)| Dimension {
                            name: g.name().into(),
                            value: k.clone(),
                        })
                        .collect(),
                    totals: totals(row),
                })
                .collect(),
            total: totals(&r.total),
        })
    }

    /// Usage records, newest first, as `GET /admin/records`.
    async fn records(
        &self,
        ctx: &Context<'_>,
        limit: Option<usize>,
        cursor: Option<String>,
        from: Option<String>,
        to: Option<String>,
        filter: Option<Filter>,
    ) -> async_graphql::Result<RecordPage> {
        let (s, scope) = parts(ctx)?;
        let f = filter.unwrap_or_default();
        let page = s
            .store
            .records(&RecordQuery {
                limit: limit.unwrap_or(100),
                offset: 0,
                cursor,
                user: f.user,
                tenant: scope.tenant_filter(f.tenant).map_err(gql)?,
                session: f.session,
                model: f.model,
                key_id: f.key,
                budget: f.budget,
                from: time(from)?,
                to: time(to)?,
            })
            .await
            .map_err(|e| gql(e.into()))?;
        Ok(RecordPage {
            records: page.records.iter().map(Record::from).collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// Budget instances the caller may see, with their state.
    async fn budgets(
        &self,
        ctx: &Context<'_>,
        budget: Option<String>,
        status: Option<String>,
    ) -> async_graphql::Result<BudgetPage> {
        let (s, scope) = parts(ctx)?;
        let filter = crate::budgets::InstanceFilter {
            budget,
            status,
            ..Default::default()
        };
        let (page, _) = s.budgets.instances_page(None, 1000, &filter).await;
        Ok(BudgetPage {
            budgets: crate::admin::budgets::shown(s, scope, &page).await,
        })
    }

    /// Users and their budgets, as `GET /admin/users`.
    async fn users(
        &self,
        ctx: &Context<'_>,
        tenant: Option<String>,
        status: Option<String>,
        limit: Option<usize>,
    ) -> async_graphql::Result<crate::api::UsersPage> {
        let (s, scope) = parts(ctx)?;
        let tenant = scope.tenant_filter(tenant).map_err(gql)?;
        crate::admin::users_page(s, tenant, status, limit.unwrap_or(100), None)
            .await
            .map_err(gql)
    }

    /// Alerts, newest first, as `GET /admin/alerts`.
    async fn alerts(
        &self,
        ctx: &Context<'_>,
        budget: Option<String>,
        limit: Option<usize>,
    ) -> async_graphql::Result<Vec<Alert>> {
        let (s, scope) = parts(ctx)?;
        let rows = s
            .store
            .alerts_page(&tollgate_store::alerts::AlertQuery {
                budget_id: budget,
                limit: limit.unwrap_or(100).clamp(1, 1000),
                ..Default::default()
            })
            .await
            .map_err(|e| gql(e.into()))?;
        let mut out = Vec::new();
        for a in rows {
            if crate::admin::alerts::sees(s, scope, &a).await {
                out.push(Alert {
                    id: a.id,
                    kind: a.kind,
                    severity: a.severity,
                    budget_id: a.budget_id,
                    rule_id: a.rule_id,
                    subject: a.subject,
                    created_at: a.created_at.to_string(),
                    status: a.status.to_string(),
                    payload: a.payload,
                });
            }
        }
        Ok(out)
    }
}

pub struct Subscription;

#[Subscription]
impl Subscription {
    /// Every request settled from now on (its usage record), within the
    /// subscriber's tenant for a tenant admin. A subscriber that falls far
    /// behind skips what it missed.
    async fn usage(&self, ctx: &Context<'_>) -> async_graphql::Result<impl Stream<Item = Record>> {
        let (s, scope) = parts(ctx)?;
        let tenant = scope.tenant().map(String::from);
        let rx = s.budgets.events.subscribe();
        Ok(async_graphql::futures_util::stream::unfold(
            rx,
            move |mut rx| {
                let tenant = tenant.clone();
                async move {
                    loop {
                        match rx.recv().await {
                            Ok(p) => {
                                if let tollgate_budgets::events::Event::Settled { record } =
                                    &p.event
                                    && tenant
                                        .as_deref()
                                        .is_none_or(|t| record.tenant.as_deref() == Some(t))
                                {
                                    return Some((Record::from(&**record), rx));
                                }
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }
            },
        ))
    }

    /// Every change of a budget's level (ok, low, over_limit) from now on,
    /// for the budget instances the subscriber may see.
    async fn budget_levels(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = LevelChange>> {
        let (s, scope) = parts(ctx)?;
        let (s, scope) = (s.clone(), scope.clone());
        let rx = s.budgets.events.subscribe();
        Ok(async_graphql::futures_util::stream::unfold(
            rx,
            move |mut rx| {
                let (s, scope) = (s.clone(), scope.clone());
                async move {
                    loop {
                        let p = match rx.recv().await {
                            Ok(p) => p,
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                        };
                        let tollgate_budgets::events::Event::Level {
                            budget_id,
                            subject,
                            period_start,
                            from,
                            to,
                        } = p.event
                        else {
                            continue;
                        };
                        let Some(e) = s.budgets.entries().get(&budget_id).cloned() else {
                            continue;
                        };
                        if !scope.owns(&s, e.budget.scope, &subject).await {
                            continue;
                        }
                        let name = |l| match l {
                            tollgate_budgets::events::Level::Ok => "ok",
                            tollgate_budgets::events::Level::Low => "low",
                            tollgate_budgets::events::Level::OverLimit => "over_limit",
                        };
                        return Some((
                            LevelChange {
                                budget_id,
                                subject,
                                from: name(from).into(),
                                to: name(to).into(),
                                period_start: jiff::Timestamp::from_millisecond(period_start)
                                    .map(|t| t.to_string())
                                    .unwrap_or_default(),
                            },
                            rx,
                        ));
                    }
                }
            },
        ))
    }
}

/// An optional WebSocket upgrade and its GraphQL protocol: `GET /graphql`
/// is GraphiQL without an upgrade.
pub struct MaybeUpgrade(
    Option<WebSocketUpgrade>,
    Option<async_graphql_axum::GraphQLProtocol>,
);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUpgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ws = WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .ok();
        let protocol = async_graphql_axum::GraphQLProtocol::from_request_parts(parts, state)
            .await
            .ok();
        Ok(MaybeUpgrade(ws, protocol))
    }
}

/// `GET /graphql`: a subscription WebSocket, or GraphiQL for a browser.
pub async fn get(
    State(s): State<AppState>,
    axum::Extension(gql_service): axum::Extension<Graphql>,
    MaybeUpgrade(ws, protocol): MaybeUpgrade,
    headers: HeaderMap,
) -> Response {
    let Some(ws) = ws else {
        return Html(
            async_graphql::http::GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql")
                .finish(),
        )
        .into_response();
    };
    let Some(protocol) = protocol else {
        return AdminError::bad_request(
            "a GraphQL WebSocket names its protocol (Sec-WebSocket-Protocol: graphql-transport-ws)",
        )
        .into_response();
    };
    // A key on the upgrade is checked now; without one, the
    // connection_init payload must carry it.
    let on_upgrade = match presented(&headers) {
        Some(k) => match crate::admin::resolve_admin(&s, Some(&k)).await {
            Ok(scope) => Some(scope),
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let Ok(permit) = gql_service.sockets.clone().try_acquire_owned() else {
        return AdminError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_SUBSCRIBERS} subscriptions are open; try again later"),
        )
        .into_response();
    };
    let schema = gql_service.schema;
    let mut ending = s.streams_end.subscribe();
    ws.protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let _permit = permit;
            let session = async_graphql_axum::GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let scope = match on_upgrade {
                        Some(scope) => scope,
                        None => {
                            let key = payload
                                .as_object()
                                .and_then(|o| {
                                    o.iter()
                                        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                                })
                                .and_then(|(_, v)| v.as_str())
                                .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_string());
                            crate::admin::resolve_admin(&s, key.as_deref())
                                .await
                                .map_err(gql)?
                        }
                    };
                    let mut data = async_graphql::Data::default();
                    data.insert(scope);
                    Ok(data)
                })
                .serve();
            // At shutdown the socket closes, and the state it holds goes.
            tokio::select! {
                () = session => {}
                _ = ending.wait_for(|end| *end) => {}
            }
        })
}

fn presented(headers: &HeaderMap) -> Option<String> {
    crate::identity::presented_key(tollgate_providers::WireFormat::OpenAi, headers, None)
        .map(str::to_string)
}

/// `POST /graphql`: a query, with the admin key on the request.
pub async fn post(
    State(s): State<AppState>,
    axum::Extension(gql_service): axum::Extension<Graphql>,
    headers: HeaderMap,
    req: async_graphql_axum::GraphQLRequest,
) -> Response {
    let scope = match crate::admin::resolve_admin(&s, presented(&headers).as_deref()).await {
        Ok(scope) => scope,
        Err(e) => return e.into_response(),
    };
    let resp = gql_service
        .schema
        .execute(req.into_inner().data(scope))
        .await;
    async_graphql_axum::GraphQLResponse::from(resp).into_response()
}
