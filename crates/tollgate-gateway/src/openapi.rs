//! The OpenAPI 3.1 document served at `/openapi.json`. The admin API comes
//! from its handlers: every admin route is registered together with its
//! `#[utoipa::path]` operation, so none can be missing. The proxy and
//! public routes are added from [`PROXY_ROUTES`] and [`PUBLIC_ROUTES`],
//! with the headers Tollgate reads and adds and the errors it answers; a
//! test holds those tables to the routes `router` registers.

use axum::Router;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::ObjectBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, InfoBuilder, OpenApi, Ref, RefOr, Required,
    security::SecurityRequirement,
};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

/// The provider routes the proxy serves (method, path, what it is).
pub const PROXY_ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/v1/chat/completions", "OpenAI Chat Completions"),
    ("POST", "/v1/completions", "OpenAI Completions"),
    ("POST", "/v1/embeddings", "OpenAI Embeddings"),
    ("POST", "/v1/responses", "OpenAI Responses"),
    ("POST", "/v1/messages", "Anthropic Messages"),
    (
        "POST",
        "/v1/messages/count_tokens",
        "Anthropic token counting",
    ),
    (
        "POST",
        "/v1beta/models/{call}",
        "Gemini generateContent / streamGenerateContent / countTokens / embedContent (`{model}:{method}`)",
    ),
    (
        "POST",
        "/v1/models/{call}",
        "Gemini, as the google-genai SDK calls it with a custom base URL",
    ),
    (
        "GET",
        "/v1/models",
        "The models this key may use (OpenAI's shape)",
    ),
];

/// Routes outside the admin API and the proxy (method, path, what it is,
/// the security scheme or `None`).
/// The Cycles runtime API (method, path, summary): its bodies are the
/// Cycles protocol's own (its OpenAPI document, v0.1.25); here each route
/// is listed with its key and a pointer to that document.
pub const CYCLES_ROUTES: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/v1/reservations",
        "Cycles: reserve an estimate on every budget the subject reaches (`dry_run` evaluates only)",
    ),
    (
        "GET",
        "/v1/reservations",
        "Cycles: the tenant's reservations, newest first",
    ),
    (
        "GET",
        "/v1/reservations/{reservation_id}",
        "Cycles: one reservation",
    ),
    (
        "POST",
        "/v1/reservations/{reservation_id}/commit",
        "Cycles: charge what the action cost; the rest is released",
    ),
    (
        "POST",
        "/v1/reservations/{reservation_id}/release",
        "Cycles: give the reservation back",
    ),
    (
        "POST",
        "/v1/reservations/{reservation_id}/extend",
        "Cycles: move the reservation's deadline",
    ),
    (
        "POST",
        "/v1/decide",
        "Cycles: what a reservation would be answered now, holding nothing",
    ),
    (
        "GET",
        "/v1/balances",
        "Cycles: balances of the scopes a subject derives",
    ),
    (
        "POST",
        "/v1/events",
        "Cycles: record spend after the fact, on every budget at once",
    ),
    (
        "GET",
        "/v1/sessions/{session_id}",
        "A session's spend across model calls and tool reservations, its budgets' room, the models and tools it used (Tollgate's own, beside the protocol)",
    ),
    (
        "GET",
        "/v1/auth/introspect",
        "Cycles: the credential (admin key or Tollgate key) and the dashboard capabilities it has",
    ),
];

pub const PUBLIC_ROUTES: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "GET",
        "/health",
        "Liveness: `ok` once the gateway serves",
        None,
    ),
    (
        "GET",
        "/metrics",
        "Prometheus text exposition (full admin key)",
        Some("admin_key"),
    ),
    (
        "GET",
        "/usage",
        "The calling key's (or JWT's) own budgets and their state",
        Some("virtual_key"),
    ),
    (
        "GET",
        "/badge/{file}",
        "A public budget badge, `{token}.svg` (no key: the token is the credential)",
        None,
    ),
    ("GET", "/openapi.json", "This document", None),
    (
        "GET",
        "/graphql",
        "GraphiQL in a browser; with a WebSocket upgrade (graphql-transport-ws), subscriptions: `usage`, `budgetLevels` (admin key on the upgrade or in connection_init)",
        None,
    ),
    (
        "POST",
        "/graphql",
        "GraphQL queries: report, records, budgets, users, alerts (the REST filters and authorization)",
        Some("admin_key"),
    ),
];

/// The admin router and the whole document.
pub fn split(state: AppState) -> (Router<AppState>, OpenApi) {
    let (router, mut doc) = OpenApiRouter::new()
        .nest("/admin", crate::admin::api(state))
        .split_for_parts();
    finish(&mut doc);
    (router, doc)
}

fn method(m: &str) -> HttpMethod {
    match m {
        "GET" => HttpMethod::Get,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        _ => HttpMethod::Post,
    }
}

fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    )
}

fn header_param(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(String::schema()))
        .build()
}

fn string_header(description: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(Some(String::schema()))
        .description(Some(description))
        .build()
}

/// A provider route as Tollgate serves it: the provider's own request and
/// answer, plus what Tollgate reads and adds.
fn proxy_operation(path: &str, summary: &str, m: &str) -> utoipa::openapi::path::Operation {
    let any = || {
        ObjectBuilder::new().description(Some(
            "The provider's own JSON, passed through (output bounds may be capped to what the budget affords)",
        ))
    };
    let ok = ResponseBuilder::new()
        .description("The provider's answer (JSON, or SSE when streaming), with Tollgate's headers")
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(any())).build(),
        )
        .header(
            "x-tollgate-request-id",
            string_header("The usage record's id"),
        )
        .header(
            "x-budget-id",
            string_header("The tightest budget that applied"),
        )
        .header(
            "x-budget-limit",
            string_header("Its limit (USD, or `N tokens`)"),
        )
        .header("x-budget-remaining", string_header("What is left of it"))
        .header(
            "x-budget-reset",
            string_header("When its period resets (RFC 3339)"),
        )
        .header(
            "x-budget-status",
            string_header("`ok`, `low` or `over_limit`"),
        )
        .header(
            "x-tollgate-warning",
            string_header("A soft limit's warning message"),
        )
        .header(
            "x-tollgate-downgraded-from",
            string_header("The model asked for, when a budget served a cheaper one"),
        )
        .header(
            "x-tollgate-capped-max-tokens",
            string_header("The output bound sent, when a budget capped it"),
        );
    let native = |d: &str| {
        ResponseBuilder::new().description(d).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().description(Some(
                    "An error in the caller's own wire format (OpenAI's, Anthropic's or Gemini's), with `code` naming the reason",
                ))))
                .build(),
        )
    };
    let mut op = OperationBuilder::new()
        .summary(Some(summary))
        .tag("proxy")
        .parameter(header_param("x-tollgate-user", "Trusted keys: the end user a request is for"))
        .parameter(header_param("x-tollgate-tenant", "Trusted platform keys: the tenant a request is for"))
        .parameter(header_param("x-session-id", "A session; its budget only ever adds a limit"))
        .parameter(header_param("x-budget-id", "Trusted keys: a named budget to charge"))
        .responses(
            ResponsesBuilder::new()
                .response("200", ok)
                .response("400", native("Invalid request (`invalid_request_error`), or an output bound out of range"))
                .response("401", native("Missing, invalid, revoked or expired key"))
                .response("403", native("Model not allowed for this key, or identity the key may not name (`identity_not_allowed`)"))
                .response("413", native("Request body over `max_body_bytes`"))
                .response("429", native("Refused before spending: `budget_exceeded` (status per budget, default 429), `rate_limit_exceeded`, `throttled`; `Retry-After` and `x-ratelimit-*` headers"))
                .response("502", native("The provider failed or answered something unreadable")),
        )
        .security(SecurityRequirement::new("virtual_key", Vec::<String>::new()));
    if path.contains("{call}") {
        op = op.parameter(
            ParameterBuilder::new()
                .name("call")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(String::schema()))
                .description(Some(
                    "`{model}:{method}`, e.g. `gemini-2.5-flash:generateContent`",
                )),
        );
    }
    if m == "POST" {
        op = op.request_body(Some(
            utoipa::openapi::request_body::RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(any())).build(),
                )
                .required(Some(Required::True))
                .build(),
        ));
    }
    op.build()
}

fn finish(doc: &mut OpenApi) {
    doc.info = InfoBuilder::new()
        .title("Tollgate")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "An LLM spend firewall: a proxy for OpenAI-compatible, Anthropic and Gemini APIs that \
             prices every request and enforces budgets before the money is spent, and the admin \
             API that manages keys, budgets, reports and alerts. Money is a decimal USD string.",
        ))
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "admin_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A full admin key (config `admin_keys:`) or a tenant admin key (`tga-...`)",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "virtual_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A virtual key (`tg-...`) or a JWT; Anthropic's `x-api-key` and Gemini's `x-goog-api-key` work too"))
                .build(),
        ),
    );
    components.add_security_scheme(
        "cycles_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-cycles-api-key",
            "A virtual key (`tg-...`) of the tenant, or a JWT",
        ))),
    );
    components.add_security_scheme(
        "anthropic_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
    );
    let mut schemas = Vec::new();
    <crate::api::ErrorBody as ToSchema>::schemas(&mut schemas);
    schemas.push(("ErrorBody".into(), crate::api::ErrorBody::schema()));
    schemas.push(("ErrorDetail".into(), crate::api::ErrorDetail::schema()));
    for (name, schema) in schemas {
        components.schemas.entry(name).or_insert(schema);
    }
    // Every admin operation: the admin key, and what it answers without
    // one or with a tenant admin key off its routes.
    for item in doc.paths.paths.values_mut() {
        for (_, op) in operations(item) {
            op.security = Some(vec![SecurityRequirement::new(
                "admin_key",
                Vec::<String>::new(),
            )]);
            let r = &mut op.responses.responses;
            r.entry("401".into()).or_insert(RefOr::T(
                error_response("Missing, invalid or revoked admin key").build(),
            ));
            r.entry("403".into()).or_insert(RefOr::T(
                error_response("A tenant admin key outside what its tenant may reach").build(),
            ));
        }
    }
    for (m, path, summary) in PROXY_ROUTES {
        doc.paths
            .add_path_operation(*path, vec![method(m)], proxy_operation(path, summary, m));
    }
    for (m, path, summary) in CYCLES_ROUTES {
        let mut op = OperationBuilder::new()
            .summary(Some(*summary))
            .description(Some(
                "Bodies and error codes as the Cycles protocol's OpenAPI document (v0.1.25) says; \
                 errors are its `ErrorResponse` (`error`, `message`, `request_id`, `trace_id`).",
            ))
            .tag("cycles")
            .security(SecurityRequirement::new("cycles_key", Vec::<String>::new()));
        for name in ["reservation_id", "session_id"] {
            if !path.contains(&format!("{{{name}}}")) {
                continue;
            }
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(String::schema())),
            );
        }
        let status = if *path == "/v1/events" { "201" } else { "200" };
        let responses = ResponsesBuilder::new()
            .response(status, ResponseBuilder::new().description("OK"))
            .response(
                "401",
                ResponseBuilder::new().description("Missing or invalid key"),
            );
        doc.paths
            .add_path_operation(*path, vec![method(m)], op.responses(responses).build());
    }
    for (m, path, summary, security) in PUBLIC_ROUTES {
        let mut op = OperationBuilder::new()
            .summary(Some(*summary))
            .tag("gateway");
        if let Some(s) = security {
            op = op.security(SecurityRequirement::new(*s, Vec::<String>::new()));
        }
        if path.contains("{file}") {
            op = op.parameter(
                ParameterBuilder::new()
                    .name("file")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(String::schema()))
                    .description(Some("`{token}.svg`")),
            );
        }
        let ok = match *path {
            "/usage" => ResponseBuilder::new().description("OK").content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("UsageView")))
                    .build(),
            ),
            "/badge/{file}" => ResponseBuilder::new().description("The badge").content(
                "image/svg+xml",
                ContentBuilder::new().schema(Some(String::schema())).build(),
            ),
            _ => ResponseBuilder::new().description("OK"),
        };
        let mut responses = ResponsesBuilder::new().response("200", ok);
        if security.is_some() {
            responses = responses.response("401", error_response("Missing or invalid key"));
        }
        if *path == "/badge/{file}" {
            responses = responses.response(
                "404",
                ResponseBuilder::new().description("Unknown or revoked token"),
            );
        }
        doc.paths
            .add_path_operation(*path, vec![method(m)], op.responses(responses).build());
    }
    // Operation ids from method and path: unique, and stable for clients.
    for (path, item) in doc.paths.paths.iter_mut() {
        let slug: String = path
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
            .split('_')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("_");
        for (m, op) in operations(item) {
            op.operation_id = Some(format!("{m}_{slug}"));
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    let mut usage = Vec::new();
    <crate::api::UsageView<'_> as ToSchema>::schemas(&mut usage);
    usage.push(("UsageView".into(), crate::api::UsageView::schema()));
    for (name, schema) in usage {
        components.schemas.entry(name).or_insert(schema);
    }
}

/// A path's operations with their methods.
fn operations(
    item: &mut PathItem,
) -> impl Iterator<Item = (&'static str, &mut utoipa::openapi::path::Operation)> {
    [
        ("get", item.get.as_mut()),
        ("post", item.post.as_mut()),
        ("put", item.put.as_mut()),
        ("patch", item.patch.as_mut()),
        ("delete", item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths registered with `.route("...")` in `source`.
    fn routes_in(source: &str) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut rest = source;
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            let trimmed = rest.trim_start();
            if let Some(body) = trimmed.strip_prefix('"') {
                out.insert(body[..body.find('"').unwrap_or(0)].to_string());
            }
        }
        out
    }

    /// A route added to the router without its place in the document
    /// fails here.
    #[test]
    fn every_route_the_router_registers_is_in_the_document() {
        let served = routes_in(include_str!("lib.rs"));
        let documented: std::collections::BTreeSet<String> = PROXY_ROUTES
            .iter()
            .map(|(_, p, _)| p.to_string())
            .chain(PUBLIC_ROUTES.iter().map(|(_, p, _, _)| p.to_string()))
            .chain(CYCLES_ROUTES.iter().map(|(_, p, _)| p.to_string()))
            .collect();
        assert_eq!(served, documented);
        // The admin API registers nothing outside `routes!`.
        assert!(routes_in(include_str!("admin/mod.rs")).is_empty());
    }
}
