//! Budget badges: an SVG in the shields style ("budget | $3.20 / $25.00",
//! coloured by level) for admins, and public badge tokens that show one
//! budget's badge — and nothing else — to whoever holds the link.

use super::*;
use crate::api::{BadgeTokenList, BadgeTokenView};

/// Public badge tokens start with this.
const TOKEN_PREFIX: &str = "tgb-";

/// Dollars to the cent, half up; a spend below a cent is `<$0.01`.
fn cents(m: tollgate_core::Money) -> String {
    let per_cent = tollgate_core::money::UNITS_PER_USD / 100;
    let units = m.units().max(0);
    let c = (units + per_cent / 2) / per_cent;
    if c == 0 && units > 0 {
        return "<$0.01".into();
    }
    format!("${}.{:02}", c / 100, c % 100)
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The badge of a budget instance.
pub fn badge_svg(a: &crate::budgets::Applied, st: &crate::budgets::State) -> String {
    let label = a.budget.name.as_deref().unwrap_or("budget");
    let value = match (st.limit.money, st.limit.tokens) {
        (Some(limit), _) => format!("{} / {}", cents(st.spent.money), cents(limit)),
        (None, Some(limit)) => format!(
            "{} / {} tokens",
            thousands(st.spent.tokens),
            thousands(limit)
        ),
        (None, None) => cents(st.spent.money),
    };
    let colour = match st.status {
        "over_limit" => "#e05d44",
        "low" => "#dfb317",
        _ => "#4c1",
    };
    render(label, &value, colour)
}

/// A flat two-part badge. Widths approximate Verdana 11px (about 7 px a
/// character), as shields does without measuring.
fn render(label: &str, value: &str, colour: &str) -> String {
    let w = |s: &str| 10 + 7 * s.chars().count();
    let (lw, vw) = (w(label), w(value));
    let total = lw + vw;
    let (label, value) = (xml_escape(label), xml_escape(value));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label="{label}: {value}"><title>{label}: {value}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{vw}" height="20" fill="{colour}"/><rect width="{total}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11"><text x="{lx}" y="14">{label}</text><text x="{vx}" y="14">{value}</text></g></svg>"##,
        lx = lw / 2,
        vx = lw + vw / 2,
    )
}

fn svg(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
            // Embedded in READMEs and wikis: fresh within a minute.
            (header::CACHE_CONTROL, "max-age=60"),
        ],
        body,
    )
        .into_response()
}

/// The instance of budget `id` a badge shows: its own subject, or for a
/// template the `subject` asked.
async fn instance(
    s: &AppState,
    id: &str,
    subject: Option<String>,
) -> Result<(crate::budgets::Applied, crate::budgets::State), AdminError> {
    let e = s.budgets.entries().get(id).cloned().ok_or_else(|| {
        AdminError::new(StatusCode::NOT_FOUND, format!("no budget with id {id:?}"))
    })?;
    let subject = match (&e.budget.subject, e.budget.scope, subject) {
        (_, tollgate_core::budget::Scope::Global, _) => "*".to_string(),
        (Some(fixed), _, None) => fixed.clone(),
        (Some(fixed), _, Some(asked)) if asked == *fixed => asked,
        (Some(fixed), _, Some(_)) => {
            return Err(AdminError::bad_request(format!(
                "budget {id:?} is for {fixed:?} only"
            )));
        }
        (None, _, Some(asked)) => asked,
        (None, scope, None) => {
            return Err(AdminError::bad_request(format!(
                "budget {id:?} applies per {}: name one with subject=",
                scope.as_str()
            )));
        }
    };
    let a = s.budgets.applied(e.budget, subject, s.budgets.now()).await;
    let st = s.budgets.state(&a).await;
    Ok((a, st))
}

/// To a tenant admin, the instance must be its tenant's.
async fn check_owned(
    s: &AppState,
    scope: &AdminScope,
    id: &str,
    subject: &Option<String>,
) -> Result<(), AdminError> {
    let e = super::budgets::visible(s, scope, id).await?;
    if let (Some(asked), None) = (subject, &e.budget.subject)
        && !scope.owns(s, e.budget.scope, asked).await
    {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            format!("no instance {asked:?} of budget {id:?}"),
        ));
    }
    Ok(())
}

#[derive(Deserialize, Default, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct SubjectParam {
    subject: Option<String>,
}

/// `GET /admin/budgets/{id}/badge[?subject=]`.
#[utoipa::path(get, path = "/budgets/{id}/badge", tag = "badges", params(("id" = String, Path, description = "Budget id"), SubjectParam), responses((status = 200, description = "The badge", content_type = "image/svg+xml", body = String), (status = 400, description = "Invalid request", body = crate::api::ErrorBody), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn badge(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(id): Path<String>,
    Query(p): Query<SubjectParam>,
) -> Result<Response, AdminError> {
    check_owned(&s, &scope, &id, &p.subject).await?;
    let (a, st) = instance(&s, &id, p.subject).await?;
    Ok(svg(badge_svg(&a, &st)))
}

/// `POST /admin/budgets/{id}/badge-tokens {"subject"?}` → the token (shown
/// only here) and its public URL.
#[utoipa::path(post, path = "/budgets/{id}/badge-tokens", tag = "badges", params(("id" = String, Path, description = "Budget id")), request_body = SubjectParam, responses((status = 201, description = "The token (only here) and its public URL", body = crate::api::BadgeTokenView), (status = 400, description = "Invalid request", body = crate::api::ErrorBody), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn create_token(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let p: SubjectParam = if body.is_empty() {
        SubjectParam::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AdminError::bad_request(format!("invalid badge token request: {e}")))?
    };
    check_owned(&s, &scope, &id, &p.subject).await?;
    // The instance must exist now (a template needs its subject).
    let (a, _) = instance(&s, &id, p.subject).await?;
    let subject = a.budget.subject.is_none().then(|| a.subject.clone());
    let token = format!("{TOKEN_PREFIX}{}", identity::random_string(40));
    let rec = tollgate_store::BadgeToken {
        id: format!("bdg_{}", identity::random_string(16)),
        hash: identity::hash_key(&token),
        budget_id: id,
        subject,
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    s.store.insert_badge_token(&rec).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(BadgeTokenView::new(&rec, Some(&token))),
    )
        .into_response())
}

/// Whether a token of a visible budget is this admin's: a template
/// budget's token is for one subject, which must be the admin's too.
async fn token_owned(s: &AppState, scope: &AdminScope, t: &tollgate_store::BadgeToken) -> bool {
    match (&t.subject, s.budgets.entries().get(&t.budget_id)) {
        (Some(sub), Some(e)) => scope.owns(s, e.budget.scope, sub).await,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

#[utoipa::path(get, path = "/budgets/{id}/badge-tokens", tag = "badges", params(("id" = String, Path, description = "Budget id")), responses((status = 200, description = "OK", body = crate::api::BadgeTokenList), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn list_tokens(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    super::budgets::visible(&s, &scope, &id).await?;
    let mut tokens = Vec::new();
    for t in s.store.badge_tokens(&id).await? {
        if token_owned(&s, &scope, &t).await {
            tokens.push(t);
        }
    }
    Ok(axum::Json(BadgeTokenList {
        badge_tokens: tokens
            .iter()
            .map(|t| BadgeTokenView::new(t, None))
            .collect(),
    })
    .into_response())
}

#[utoipa::path(delete, path = "/budgets/{id}/badge-tokens/{token_id}", tag = "badges", params(("id" = String, Path, description = "Budget id"), ("token_id" = String, Path, description = "Badge token id")), responses((status = 200, description = "OK", body = crate::api::Revoked), (status = 404, description = "No such object", body = crate::api::ErrorBody)))]
pub(super) async fn revoke_token(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path((id, token_id)): Path<(String, String)>,
) -> Result<Response, AdminError> {
    super::budgets::visible(&s, &scope, &id).await?;
    let token = s
        .store
        .badge_tokens(&id)
        .await?
        .into_iter()
        .find(|t| t.id == token_id);
    let owned = match &token {
        Some(t) => token_owned(&s, &scope, t).await,
        None => false,
    };
    if !owned
        || !s
            .store
            .revoke_badge_token(&id, &token_id, Timestamp::now())
            .await?
    {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            format!("no badge token {token_id:?} of budget {id:?}"),
        ));
    }
    Ok(axum::Json(crate::api::Revoked {
        id: &token_id,
        revoked: true,
    })
    .into_response())
}

/// `GET /badge/{token}.svg`: public. An unknown or revoked token, or one
/// whose budget is gone, is a plain 404 — the same for each, so a token
/// cannot be probed.
pub async fn public_badge(State(s): State<AppState>, Path(file): Path<String>) -> Response {
    let not_found = || StatusCode::NOT_FOUND.into_response();
    let Some(token) = file.strip_suffix(".svg") else {
        return not_found();
    };
    // Not a token's shape: no database read.
    if !token.starts_with(TOKEN_PREFIX) || token.len() != TOKEN_PREFIX.len() + 40 {
        return not_found();
    }
    let t = match s.store.badge_token_by_hash(identity::hash_key(token)).await {
        Ok(Some(t)) if t.revoked_at.is_none() => t,
        _ => return not_found(),
    };
    match instance(&s, &t.budget_id, t.subject).await {
        Ok((a, st)) => svg(badge_svg(&a, &st)),
        Err(_) => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_shows_to_the_cent_and_text_is_escaped() {
        let m = |s: &str| tollgate_core::Money::parse_usd(s).unwrap();
        assert_eq!(cents(m("3.2")), "$3.20");
        assert_eq!(cents(m("25")), "$25.00");
        assert_eq!(cents(m("0.005")), "$0.01");
        assert_eq!(cents(m("0.0001")), "<$0.01");
        assert_eq!(cents(m("0")), "$0.00");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        let svg = render("<team & co>", "$1.00 / $2.00", "#4c1");
        assert!(svg.contains("&lt;team &amp; co&gt;"), "{svg}");
        assert!(!svg.contains("<team"), "{svg}");
    }
}
