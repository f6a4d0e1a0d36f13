//! Per-user views: `GET /admin/users` and `GET /admin/usage/{user}`.
//!
//! A user is whoever records name (the rollups remember them past
//! retention). The budgets shown are those that apply to the user by
//! itself: its user, tenant, global and default budgets. Budgets of a key,
//! a role or a session apply per request and are listed under those.

use super::*;
use crate::api::{BudgetView, PeriodUsage, ReportRows, UserUsage, UserView, UsersPage};
use tollgate_core::Caller;
use tollgate_core::period::PeriodKind;
use tollgate_store::UsersQuery;

/// Users looked at per request at most: a status filter that matches
/// few users answers a short page with a cursor instead of scanning all.
const MAX_SCANNED: usize = 10_000;

async fn budgets_of(s: &AppState, user: &str, tenant: Option<&str>) -> Vec<BudgetView> {
    let caller = Caller {
        user: Some(user.to_string()),
        tenant: tenant.map(String::from),
        ..Caller::default()
    };
    let applied = s.budgets.applicable_any_model(&caller).await;
    let states = s.budgets.states(&applied).await;
    applied
        .iter()
        .zip(&states)
        .map(|(a, st)| budget_json(a, st, super::budgets::source_of(s, &a.budget.id)))
        .collect()
}

fn severity(status: &str) -> u8 {
    match status {
        "over_limit" => 2,
        "low" => 1,
        _ => 0,
    }
}

/// The tightest budget of `period` among `budgets`: the worst status, then
/// the least money (then tokens) left.
fn tightest(budgets: &[BudgetView], period: PeriodKind) -> Option<&BudgetView> {
    let name = period.to_string();
    budgets.iter().filter(|b| b.period == name).min_by(|a, b| {
        let money = |v: &BudgetView| {
            v.remaining_usd
                .as_deref()
                .and_then(|m| tollgate_core::Money::parse_usd(m).ok())
        };
        severity(b.status)
            .cmp(&severity(a.status))
            .then_with(|| match (money(a), money(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a
                    .remaining_tokens
                    .unwrap_or(u64::MAX)
                    .cmp(&b.remaining_tokens.unwrap_or(u64::MAX)),
            })
    })
}

async fn user_view(s: &AppState, user: String, tenant: Option<String>) -> UserView {
    let budgets = budgets_of(s, &user, tenant.as_deref()).await;
    let daily = tightest(&budgets, PeriodKind::Daily);
    let monthly = tightest(&budgets, PeriodKind::Monthly);
    let status = budgets
        .iter()
        .map(|b| b.status)
        .max_by_key(|st| severity(st))
        .unwrap_or("ok");
    UserView {
        user_id: user,
        tenant,
        daily_used_usd: daily.map(|b| b.used_usd.clone()),
        daily_limit_usd: daily.and_then(|b| b.limit_usd.clone()),
        daily_remaining_usd: daily.and_then(|b| b.remaining_usd.clone()),
        daily_used_tokens: daily.map(|b| b.used_tokens),
        daily_limit_tokens: daily.and_then(|b| b.limit_tokens),
        daily_remaining_tokens: daily.and_then(|b| b.remaining_tokens),
        monthly_used_usd: monthly.map(|b| b.used_usd.clone()),
        monthly_limit_usd: monthly.and_then(|b| b.limit_usd.clone()),
        monthly_remaining_usd: monthly.and_then(|b| b.remaining_usd.clone()),
        monthly_used_tokens: monthly.map(|b| b.used_tokens),
        monthly_limit_tokens: monthly.and_then(|b| b.limit_tokens),
        monthly_remaining_tokens: monthly.and_then(|b| b.remaining_tokens),
        status,
        budgets,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct UsersParams {
    limit: Option<usize>,
    cursor: Option<String>,
    tenant: Option<String>,
    status: Option<String>,
}

fn encode_cursor(user: &str, tenant: &Option<String>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&json!([user, tenant])).unwrap_or_default())
}

fn decode_cursor(c: &str) -> Result<(String, Option<String>), AdminError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| AdminError::bad_request(format!("invalid cursor {c:?}")))
}

/// `GET /admin/users?tenant=&status=&limit=&cursor=`: users by id, then
/// tenant, 100 a page by default (at most 1,000).
#[utoipa::path(get, path = "/users", tag = "usage", params(UsersParams), responses((status = 200, description = "OK", body = crate::api::UsersPage), (status = 400, description = "Invalid request", body = crate::api::ErrorBody)))]
pub(super) async fn list_users(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Query(p): Query<UsersParams>,
) -> Result<axum::Json<UsersPage>, AdminError> {
    let after = p.cursor.as_deref().map(decode_cursor).transpose()?;
    users_page(
        &s,
        scope.tenant_filter(p.tenant)?,
        p.status,
        p.limit.unwrap_or(100),
        after,
    )
    .await
    .map(axum::Json)
}

/// A page of users after `after` (the API's and the CLI's `users list`).
pub async fn users_page(
    s: &AppState,
    tenant: Option<String>,
    status: Option<String>,
    limit: usize,
    mut after: Option<(String, Option<String>)>,
) -> Result<UsersPage, AdminError> {
    if let Some(st) = status.as_deref()
        && !matches!(st, "ok" | "low" | "over_limit")
    {
        return Err(AdminError::bad_request(format!(
            "unknown status {st:?} (expected ok, low or over_limit)"
        )));
    }
    let limit = limit.clamp(1, 1000);
    let (mut users, mut scanned) = (Vec::new(), 0);
    let next = loop {
        let page = s
            .store
            .users_page(&UsersQuery {
                after: after.clone(),
                tenant: tenant.clone(),
                user: None,
                limit,
            })
            .await?;
        let exhausted = page.len() < limit;
        for (user, tenant) in page {
            scanned += 1;
            after = Some((user.clone(), tenant.clone()));
            let v = user_view(s, user, tenant).await;
            if status.as_deref().is_none_or(|st| st == v.status) {
                users.push(v);
            }
            if users.len() == limit || scanned == MAX_SCANNED {
                break;
            }
        }
        if users.len() == limit || scanned >= MAX_SCANNED {
            break after;
        }
        if exhausted {
            break None;
        }
    };
    Ok(UsersPage {
        users,
        next_cursor: next.map(|(u, t)| encode_cursor(&u, &t)),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct UserUsageParams {
    tenant: Option<String>,
}

async fn period_usage(
    s: &AppState,
    user: &str,
    tenant: &Option<String>,
    since: Timestamp,
) -> Result<PeriodUsage, AdminError> {
    let mut q = ReportQuery::new(vec![GroupBy::Model]);
    q.from = Some(since);
    q.filter.user = Some(user.to_string());
    q.filter.tenant = tenant.clone();
    let r = super::reports::run_report(&*s.store, &q).await?;
    Ok(PeriodUsage {
        since: since.to_string(),
        total: crate::api::Totals::new(
            r.total.requests,
            r.total.refused,
            &r.total.usage,
            r.total.cost,
        ),
        by_model: ReportRows {
            dimensions: r.group_by,
            rows: r.rows,
        },
    })
}

/// `GET /admin/usage/{user}[?tenant=]`: the user's budgets, and its spend
/// today and this month (UTC) by model. `user` as records name it
/// (a tenant's users are `tenant/user`), or bare with `tenant`; without
/// `tenant`, the user's own when its records name exactly one.
#[utoipa::path(get, path = "/usage/{user}", tag = "usage", params(("user" = String, Path, description = "The user as records name it (`acme/alice`)"), UserUsageParams), responses((status = 200, description = "OK", body = crate::api::UserUsage), (status = 400, description = "Invalid request", body = crate::api::ErrorBody)))]
pub(super) async fn user_usage(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(user): Path<String>,
    Query(mut p): Query<UserUsageParams>,
) -> Result<axum::Json<UserUsage>, AdminError> {
    // A tenant admin asks about its own tenant's users only.
    p.tenant = scope.tenant_filter(p.tenant)?;
    // The user as records name it (`acme/alice`), or bare with `?tenant=`.
    let user = tollgate_core::in_tenant(p.tenant.as_deref(), user);
    let tenant = match p.tenant {
        Some(t) => Some(t),
        None => {
            let seen = s
                .store
                .users_page(&UsersQuery {
                    user: Some(user.clone()),
                    limit: 3,
                    ..UsersQuery::default()
                })
                .await?;
            match seen.as_slice() {
                [] => None,
                [(_, t)] => t.clone(),
                many => {
                    let names: Vec<&str> = many
                        .iter()
                        .map(|(_, t)| t.as_deref().unwrap_or("(none)"))
                        .collect();
                    return Err(AdminError::bad_request(format!(
                        "user {user:?} has records in several tenants ({}{}): name one with ?tenant=",
                        names.join(", "),
                        if many.len() == 3 { ", ..." } else { "" }
                    )));
                }
            }
        }
    };
    let (day, month) = super::stats::utc_day_and_month(s.budgets.now());
    Ok(axum::Json(UserUsage {
        budgets: budgets_of(&s, &user, tenant.as_deref()).await,
        today: period_usage(&s, &user, &tenant, day).await?,
        this_month: period_usage(&s, &user, &tenant, month).await?,
        user_id: user,
        tenant,
    }))
}
