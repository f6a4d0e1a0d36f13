//! Tenant admins: a key scoped to tenant acme walks every admin route and
//! sees or changes nothing of tenant globex.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::harness::*;

fn call(g: &Gateway, bearer: &str, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let url = format!("{}{path}", g.url);
    let req = match method {
        "GET" => client().get(url),
        "POST" => client().post(url),
        "PUT" => client().put(url),
        "PATCH" => client().patch(url),
        "DELETE" => client().delete(url),
        m => panic!("method {m}"),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req.bearer_auth(bearer).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn chat(g: &Gateway, key: &str) -> u16 {
    client()
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn a_tenant_admin_sees_and_changes_only_its_tenant_on_every_admin_route() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        "budgets:\n  defaults:\n    user: { limit_usd: \"5\", period: daily }\n",
    );
    let full = |method: &str, path: &str, body: Option<Value>| {
        let (status, text) = call(&g, ADMIN_KEY, method, path, body);
        assert!(status < 300, "{method} {path}: {status} {text}");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    // Tenant admins: acme's through the API, globex's through the CLI.
    let acme_admin = full(
        "POST",
        "/admin/admin-keys",
        Some(json!({"tenant": "acme", "name": "acme-ops"})),
    );
    assert_eq!(acme_admin["tenant"], "acme");
    let acme_admin_key = acme_admin["key"].as_str().unwrap().to_string();
    assert!(acme_admin_key.starts_with("tga-"));
    let cli: Value = serde_json::from_str(&ok(g.cli(&[
        "admin-keys",
        "create",
        "--tenant",
        "globex",
        "--format",
        "json",
    ])))
    .unwrap();
    let globex_admin_id = cli["id"].as_str().unwrap().to_string();

    let (_, alice) = g.create_key(json!({"user": "alice", "tenant": "acme"}));
    let (bob_key_id, bob) = g.create_key(json!({"user": "bob", "tenant": "globex"}));
    for (id, tenant) in [("acme-cap", "acme"), ("globex-cap", "globex")] {
        full(
            "POST",
            "/admin/budgets",
            Some(
                json!({"id": id, "scope": "tenant", "subject": tenant, "limit_usd": "0.0003", "period": "monthly"}),
            ),
        );
    }
    full(
        "POST",
        "/admin/budgets",
        Some(
            json!({"id": "globex-bob", "scope": "user", "subject": "globex/bob", "limit_usd": "1", "period": "daily"}),
        ),
    );
    full(
        "POST",
        "/admin/budgets",
        Some(json!({"id": "all", "scope": "global", "limit_usd": "100", "period": "monthly"})),
    );
    for key in [&alice, &bob] {
        assert_eq!(chat(&g, key), 200);
    }
    let records = g.records();
    let bob_requests: Vec<String> = records
        .iter()
        .filter(|r| r["tenant"] == "globex")
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bob_requests.len(), 1);
    // Alerts exist for both tenants' budgets (thresholds crossed).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let globex_alert = loop {
        let alerts = full("GET", "/admin/alerts?budget=globex-cap", None);
        if let Some(a) = alerts["alerts"].as_array().unwrap().first() {
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no globex alert");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };

    // What no answer to acme's admin may contain.
    let mut secrets = vec![
        bob_key_id.clone(),
        "globex-cap".to_string(),
        "globex-bob".to_string(),
        globex_admin_id.clone(),
        globex_alert.clone(),
        "\"globex/bob\"".to_string(),
        "\"globex\"".to_string(),
    ];
    secrets.extend(bob_requests.iter().cloned());

    let routes: Vec<(&str, String, Option<Value>, &[u16])> = vec![
        ("GET", "/admin/keys".into(), None, &[200]),
        (
            "POST",
            "/admin/keys".into(),
            Some(json!({"user": "zed", "tenant": "globex"})),
            &[403],
        ),
        (
            "POST",
            "/admin/keys".into(),
            Some(json!({"user": "carol"})),
            &[201],
        ),
        ("DELETE", format!("/admin/keys/{bob_key_id}"), None, &[404]),
        ("GET", "/admin/admin-keys".into(), None, &[403]),
        (
            "POST",
            "/admin/admin-keys".into(),
            Some(json!({"tenant": "acme"})),
            &[403],
        ),
        (
            "DELETE",
            format!("/admin/admin-keys/{globex_admin_id}"),
            None,
            &[403],
        ),
        ("GET", "/admin/records".into(), None, &[200]),
        ("GET", "/admin/records?tenant=globex".into(), None, &[403]),
        ("GET", "/admin/records?user=globex/bob".into(), None, &[200]),
        (
            "GET",
            "/admin/reports?group_by=tenant,user,budget".into(),
            None,
            &[200],
        ),
        (
            "GET",
            "/admin/reports?group_by=user&format=csv".into(),
            None,
            &[200],
        ),
        ("GET", "/admin/reports?tenant=globex".into(), None, &[403]),
        ("GET", "/admin/users".into(), None, &[200]),
        ("GET", "/admin/users?tenant=globex".into(), None, &[403]),
        ("GET", "/admin/usage/bob?tenant=globex".into(), None, &[403]),
        ("GET", "/admin/usage/bob".into(), None, &[200]),
        ("GET", "/admin/pricing".into(), None, &[200]),
        ("GET", "/admin/pricing/gpt-4o".into(), None, &[200]),
        (
            "PUT",
            "/admin/pricing/gpt-4o".into(),
            Some(json!({"input_per_mtok": "0"})),
            &[403],
        ),
        ("GET", "/admin/budgets".into(), None, &[200]),
        (
            "POST",
            "/admin/budgets".into(),
            Some(json!({"scope": "tenant", "subject": "globex", "limit_usd": "9"})),
            &[403],
        ),
        (
            "POST",
            "/admin/budgets".into(),
            Some(json!({"scope": "global", "limit_usd": "9"})),
            &[403],
        ),
        (
            "POST",
            "/admin/budgets".into(),
            Some(json!({"scope": "user", "limit_usd": "9"})),
            &[403],
        ),
        (
            "POST",
            "/admin/budgets".into(),
            Some(json!({"scope": "key", "subject": bob_key_id, "limit_usd": "9"})),
            &[403],
        ),
        (
            "POST",
            "/admin/budgets".into(),
            Some(
                json!({"id": "acme-carol", "scope": "user", "subject": "carol", "limit_usd": "9"}),
            ),
            &[201],
        ),
        ("GET", "/admin/budgets/acme-carol".into(), None, &[200]),
        (
            "PATCH",
            "/admin/budgets/acme-carol".into(),
            Some(json!({"scope": "tenant", "subject": "globex"})),
            &[403],
        ),
        ("GET", "/admin/budgets/default:user".into(), None, &[200]),
        ("GET", "/admin/budgets/globex-cap".into(), None, &[404]),
        ("GET", "/admin/budgets/all".into(), None, &[404]),
        (
            "PATCH",
            "/admin/budgets/globex-cap".into(),
            Some(json!({"limit_usd": "1000"})),
            &[404],
        ),
        (
            "PATCH",
            "/admin/budgets/default:user".into(),
            Some(json!({"limit_usd": "1000"})),
            &[403, 409],
        ),
        (
            "DELETE",
            "/admin/budgets/globex-bob?purge_usage=true".into(),
            None,
            &[404],
        ),
        (
            "GET",
            "/admin/budgets/globex-cap/usage".into(),
            None,
            &[404],
        ),
        (
            "GET",
            "/admin/budgets/default:user/usage".into(),
            None,
            &[200],
        ),
        (
            "POST",
            "/admin/budgets/globex-cap/test-webhook".into(),
            None,
            &[404],
        ),
        ("GET", "/admin/budgets/acme-cap/badge".into(), None, &[200]),
        (
            "POST",
            "/admin/budgets/globex-cap/fund".into(),
            Some(json!({"operation": "CREDIT", "amount": {"unit": "USD_MICROCENTS", "amount": 1}})),
            &[404],
        ),
        (
            "POST",
            "/admin/budgets/acme-cap/fund".into(),
            Some(json!({"operation": "CREDIT", "amount": {"unit": "USD_MICROCENTS", "amount": 1}})),
            &[200],
        ),
        (
            "GET",
            "/admin/budgets/globex-cap/badge".into(),
            None,
            &[404],
        ),
        (
            "GET",
            "/admin/budgets/default:user/badge?subject=globex/bob".into(),
            None,
            &[404],
        ),
        (
            "POST",
            "/admin/budgets/acme-cap/badge-tokens".into(),
            Some(json!({})),
            &[201],
        ),
        (
            "GET",
            "/admin/budgets/acme-cap/badge-tokens".into(),
            None,
            &[200],
        ),
        (
            "POST",
            "/admin/budgets/globex-cap/badge-tokens".into(),
            Some(json!({})),
            &[404],
        ),
        (
            "POST",
            "/admin/budgets/default:user/badge-tokens".into(),
            Some(json!({"subject": "globex/bob"})),
            &[404],
        ),
        (
            "GET",
            "/admin/budgets/globex-cap/badge-tokens".into(),
            None,
            &[404],
        ),
        (
            "DELETE",
            "/admin/budgets/globex-cap/badge-tokens/bdg_x".into(),
            None,
            &[404],
        ),
        (
            "DELETE",
            "/admin/budgets/acme-cap/badge-tokens/bdg_x".into(),
            None,
            &[404],
        ),
        ("GET", "/admin/rate-limits".into(), None, &[403]),
        (
            "POST",
            "/admin/rate-limits".into(),
            Some(json!({"scope": "tenant", "subject": "globex", "requests_per_minute": 1})),
            &[403],
        ),
        ("GET", "/admin/rate-limits/x".into(), None, &[403]),
        (
            "PUT",
            "/admin/rate-limits/x".into(),
            Some(json!({})),
            &[403],
        ),
        ("DELETE", "/admin/rate-limits/x".into(), None, &[403]),
        ("GET", "/admin/alert-rules".into(), None, &[403]),
        ("POST", "/admin/alert-rules".into(), Some(json!({})), &[403]),
        (
            "GET",
            "/admin/alert-rules/cost-hourly-spike".into(),
            None,
            &[403],
        ),
        (
            "PUT",
            "/admin/alert-rules/x".into(),
            Some(json!({})),
            &[403],
        ),
        ("DELETE", "/admin/alert-rules/x".into(), None, &[403]),
        ("GET", "/admin/alerts".into(), None, &[200]),
        ("GET", format!("/admin/alerts/{globex_alert}"), None, &[404]),
        (
            "POST",
            format!("/admin/alerts/{globex_alert}/redeliver"),
            None,
            &[404],
        ),
        (
            "POST",
            "/admin/explain".into(),
            Some(json!({"key": bob_key_id, "model": "gpt-4o"})),
            &[400],
        ),
        (
            "POST",
            "/admin/explain".into(),
            Some(json!({"tenant": "globex", "user": "bob", "model": "gpt-4o"})),
            &[403],
        ),
        (
            "POST",
            "/admin/explain".into(),
            Some(json!({"user": "bob", "budget_id": "campaign", "model": "gpt-4o"})),
            &[200],
        ),
        ("GET", "/admin/stats".into(), None, &[403]),
        ("DELETE", "/admin/budgets/acme-carol".into(), None, &[200]),
        ("GET", "/metrics".into(), None, &[403]),
    ];
    let mut walked = BTreeSet::new();
    for (method, path, body, want) in &routes {
        let (status, text) = call(&g, &acme_admin_key, method, path, body.clone());
        assert!(want.contains(&status), "{method} {path}: {status} {text}");
        // What the request itself named may be echoed back ("no key with
        // id ..."); anything else of globex's is a leak.
        let asked = format!(
            "{path} {}",
            body.as_ref().map(Value::to_string).unwrap_or_default()
        );
        for s in &secrets {
            let bare = s.trim_matches('"');
            if asked.contains(bare) {
                continue;
            }
            assert!(
                !text.contains(s.as_str()),
                "{method} {path} leaks {s}: {text}"
            );
        }
        let route = path.split('?').next().unwrap().to_string();
        walked.insert((method.to_string(), route));
    }
    // Every route a tenant admin may call was walked (ids stand in for
    // their placeholders).
    for (method, route) in tollgate_gateway::admin::TENANT_ROUTES {
        assert!(
            walked
                .iter()
                .any(|(m, p)| m == method && route_matches(route, p)),
            "{method} {route} not walked"
        );
    }

    // What acme's admin does see is acme's.
    let (_, keys) = call(&g, &acme_admin_key, "GET", "/admin/keys", None);
    let keys: Value = serde_json::from_str(&keys).unwrap();
    assert!(
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["tenant"] == "acme")
    );
    assert_eq!(
        keys["keys"].as_array().unwrap().len(),
        2,
        "alice's and carol's"
    );
    let (_, rep) = call(
        &g,
        &acme_admin_key,
        "GET",
        "/admin/reports?group_by=user",
        None,
    );
    let rep: Value = serde_json::from_str(&rep).unwrap();
    assert_eq!(rep["total"]["requests"], 1, "{rep}");
    assert_eq!(rep["rows"][0]["user"], "acme/alice");
    let (_, budgets) = call(&g, &acme_admin_key, "GET", "/admin/budgets", None);
    let budgets: Value = serde_json::from_str(&budgets).unwrap();
    let ids: BTreeSet<&str> = budgets["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["acme-cap", "default:user"]),
        "{budgets}"
    );
    let (_, alerts) = call(&g, &acme_admin_key, "GET", "/admin/alerts", None);
    let alerts: Value = serde_json::from_str(&alerts).unwrap();
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["budget_id"] == "acme-cap"),
        "{alerts}"
    );
    assert!(
        !alerts["alerts"].as_array().unwrap().is_empty(),
        "acme's own alerts"
    );

    // A revoked tenant admin key is refused at once.
    let acme_admin_id = acme_admin["id"].as_str().unwrap();
    full(
        "DELETE",
        &format!("/admin/admin-keys/{acme_admin_id}"),
        None,
    );
    let (status, _) = call(&g, &acme_admin_key, "GET", "/admin/keys", None);
    assert_eq!(status, 401);
    let listed = full("GET", "/admin/admin-keys", None);
    assert_eq!(listed["admin_keys"].as_array().unwrap().len(), 2);
    assert!(
        !listed.to_string().contains(&acme_admin_key),
        "never the secret"
    );
}

/// Whether a concrete path fits a route template (`{x}` matches a segment).
fn route_matches(route: &str, path: &str) -> bool {
    let (r, p): (Vec<&str>, Vec<&str>) = (route.split('/').collect(), path.split('/').collect());
    r.len() == p.len() && r.iter().zip(&p).all(|(a, b)| a.starts_with('{') || a == b)
}
