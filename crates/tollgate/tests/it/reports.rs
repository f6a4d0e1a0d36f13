//! Reports and per-user views against the real binary: every grouping's
//! totals equal the records it lists, CSV streams what JSON shows, and
//! the CLI prints what the API answers.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::harness::*;

fn send(g: &Gateway, key: &str, model: &str, path: &str) {
    let (url, body) = match path {
        "anthropic" => (
            format!("{}/v1/messages", g.url),
            json!({"model": model, "max_tokens": 30, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        _ => (
            format!("{}/v1/chat/completions", g.url),
            json!({"model": model, "max_tokens": 30, "messages": [{"role": "user", "content": "hi"}]}),
        ),
    };
    let r = client()
        .post(url)
        .bearer_auth(key)
        .header("x-api-key", key)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
}

fn get_text(url: &str) -> (u16, String) {
    let r = client().get(url).bearer_auth(ADMIN_KEY).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// The sum of `records` per key, as a report row's numbers.
fn sums<'a>(
    records: impl Iterator<Item = &'a Value>,
    key: impl Fn(&Value) -> Vec<Value>,
) -> BTreeMap<Vec<String>, (u64, u64, i128)> {
    let mut out = BTreeMap::new();
    for r in records {
        let k = key(r).iter().map(|v| v.to_string()).collect();
        let e = out.entry(k).or_insert((0, 0, 0));
        e.0 += 1;
        e.1 += r["input_tokens"].as_u64().unwrap();
        e.2 += cost_units(r);
    }
    out
}

fn report_sums(rep: &Value, dims: &[&str]) -> BTreeMap<Vec<String>, (u64, u64, i128)> {
    rep["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                dims.iter().map(|d| row[*d].to_string()).collect(),
                (
                    row["requests"].as_u64().unwrap() + row["refused"].as_u64().unwrap(),
                    row["input_tokens"].as_u64().unwrap(),
                    usd(row["cost_usd"].as_str().unwrap()),
                ),
            )
        })
        .collect()
}

/// The records once `n` are written.
fn wait_records(g: &Gateway, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = get_json(
            &format!("{}/admin/records?limit=1000", g.url),
            Some(ADMIN_KEY),
        );
        let records = page["records"].as_array().unwrap().clone();
        if records.len() >= n {
            assert_eq!(records.len(), n);
            return records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} records",
            records.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn reports_users_and_budget_views_agree_with_the_records() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        "budgets:\n  defaults:\n    user: { limit_usd: \"5\", period: daily }\n    tenant: { id: tenant-monthly, limit_usd: \"50\", period: monthly }\n",
    );
    let global = post_json(
        &format!("{}/admin/budgets", g.url),
        Some(ADMIN_KEY),
        &json!({"id": "all", "scope": "global", "limit_usd": "100", "period": "monthly"}),
    );
    assert_eq!(global["id"], "all", "{global}");
    let (_, alice) = g.create_key(json!({"user": "alice", "tenant": "acme"}));
    let (_, bob) = g.create_key(json!({"user": "bob", "tenant": "acme"}));
    let (_, carol) = g.create_key(json!({"user": "carol"}));
    for (key, model, path) in [
        (&alice, "gpt-4o", "chat"),
        (&alice, "gpt-4o", "chat"),
        (&alice, "claude-haiku-4-5", "anthropic"),
        (&bob, "gpt-4o-mini", "chat"),
        (&bob, "claude-haiku-4-5", "anthropic"),
        (&carol, "gpt-4o", "chat"),
    ] {
        send(&g, key, model, path);
    }
    let records = wait_records(&g, 6);

    // Two dimensions: each (user, model) row is the sum of its records.
    let rep = get_json(
        &format!("{}/admin/reports?group_by=user,model", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(
        report_sums(&rep, &["user", "model"]),
        sums(records.iter(), |r| vec![
            r["user"].clone(),
            r["model_served"].clone()
        ]),
        "{rep}"
    );
    assert_eq!(rep["total"]["requests"], 6);

    // CSV streams the same rows, the dimensions first.
    let (status, csv) = get_text(&format!(
        "{}/admin/reports?group_by=user,model&format=csv",
        g.url
    ));
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("user,model,requests,refused,"),
        "{csv}"
    );
    assert_eq!(lines.len(), rep["rows"].as_array().unwrap().len() + 1);
    let first = &rep["rows"][0];
    assert!(
        lines[1].starts_with(&format!(
            "{},{},{},",
            first["user"].as_str().unwrap(),
            first["model"].as_str().unwrap(),
            first["requests"]
        )),
        "{csv}"
    );
    // The CLI prints the same CSV.
    let cli = ok(g.cli(&["usage", "report", "--by", "user,model", "--format", "csv"]));
    assert_eq!(cli, csv);

    // By budget: a record counts under each budget it charged, once in
    // the total.
    let rep = get_json(
        &format!("{}/admin/reports?group_by=budget", g.url),
        Some(ADMIN_KEY),
    );
    let by_budget: BTreeMap<String, u64> = rep["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["budget"].as_str().unwrap_or("-").to_string(),
                r["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_budget["all"], 6, "{rep}");
    assert_eq!(by_budget["tenant-monthly"], 5, "{rep}");
    assert_eq!(rep["total"]["requests"], 6, "{rep}");

    // Every dimension filters; day and hour are time bounds.
    let rep = get_json(
        &format!(
            "{}/admin/reports?group_by=model&user=acme/alice&model=gpt-4o&budget=all",
            g.url
        ),
        Some(ADMIN_KEY),
    );
    assert_eq!(rep["rows"].as_array().unwrap().len(), 1, "{rep}");
    assert_eq!(rep["total"]["requests"], 2);
    let today = &records[0]["time"].as_str().unwrap()[..10];
    let hour = &records[0]["time"].as_str().unwrap()[..13];
    for filter in [format!("day={today}"), format!("hour={hour}")] {
        let rep = get_json(
            &format!("{}/admin/reports?group_by=provider&{filter}", g.url),
            Some(ADMIN_KEY),
        );
        assert!(rep["total"]["requests"].as_u64().unwrap() >= 1, "{rep}");
    }
    let rep = get_json(
        &format!("{}/admin/reports?group_by=day&day=2000-01-01", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(rep["rows"], json!([]));
    for bad in [
        "group_by=user,user",
        "group_by=colour",
        "user=",
        "day=yesterday",
        "hour=2026-01-01T24",
        "format=xml",
    ] {
        let (status, body) = get_text(&format!("{}/admin/reports?{bad}", g.url));
        assert_eq!(status, 400, "{bad}: {body}");
        let e: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error", "{bad}");
    }

    // Users: every budget that applies, the tightest daily and monthly.
    let users = get_json(&format!("{}/admin/users", g.url), Some(ADMIN_KEY));
    let list = users["users"].as_array().unwrap();
    let names: Vec<(&str, &Value)> = list
        .iter()
        .map(|u| (u["user_id"].as_str().unwrap(), &u["tenant"]))
        .collect();
    assert_eq!(
        names,
        [
            ("acme/alice", &json!("acme")),
            ("acme/bob", &json!("acme")),
            ("carol", &Value::Null)
        ]
    );
    let alice_row = &list[0];
    let money = |v: &Value| usd(v.as_str().unwrap());
    assert_eq!(
        money(&alice_row["daily_limit_usd"]),
        usd("5"),
        "{alice_row}"
    );
    // The tenant's $50 is tighter than the global $100.
    assert_eq!(
        money(&alice_row["monthly_limit_usd"]),
        usd("50"),
        "{alice_row}"
    );
    assert_eq!(alice_row["status"], "ok");
    let alice_spent: i128 = records
        .iter()
        .filter(|r| r["user"] == "acme/alice")
        .map(cost_units)
        .sum();
    assert_eq!(
        usd(alice_row["daily_used_usd"].as_str().unwrap()),
        alice_spent
    );
    assert_eq!(
        money(&list[2]["monthly_limit_usd"]),
        usd("100"),
        "{}",
        list[2]
    );
    assert_eq!(list[2]["budgets"].as_array().unwrap().len(), 2);
    let acme = get_json(
        &format!("{}/admin/users?tenant=acme&limit=1", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(acme["users"].as_array().unwrap().len(), 1);
    let cursor = acme["next_cursor"].as_str().unwrap();
    let next = get_json(
        &format!("{}/admin/users?tenant=acme&limit=1&cursor={cursor}", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(next["users"][0]["user_id"], "acme/bob", "{next}");
    let none = get_json(
        &format!("{}/admin/users?status=over_limit", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(none["users"], json!([]));
    let cli: Value =
        serde_json::from_str(&ok(g.cli(&["users", "list", "--format", "json"]))).unwrap();
    assert_eq!(cli["users"], users["users"]);

    // One user's usage: its budgets, today and this month by model (the
    // user as records name it, or bare with its tenant).
    let u = get_json(
        &format!("{}/admin/usage/acme%2Falice", g.url),
        Some(ADMIN_KEY),
    );
    let bare = get_json(
        &format!("{}/admin/usage/alice?tenant=acme", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(bare, u);
    assert_eq!(u["tenant"], "acme", "{u}");
    assert_eq!(u["today"]["total"]["requests"], 3, "{u}");
    assert_eq!(
        usd(u["this_month"]["total"]["cost_usd"].as_str().unwrap()),
        alice_spent
    );
    assert_eq!(u["today"]["by_model"].as_array().unwrap().len(), 2, "{u}");
    assert_eq!(u["budgets"].as_array().unwrap().len(), 3, "{u}");

    // A budget's breakdown and the records that charged it.
    let b = get_json(&format!("{}/admin/budgets/all", g.url), Some(ADMIN_KEY));
    let by_user = b["breakdown"]["by_user"].as_array().unwrap();
    assert_eq!(by_user.len(), 3, "{b}");
    let spent: Vec<i128> = by_user
        .iter()
        .map(|r| usd(r["cost_usd"].as_str().unwrap()))
        .collect();
    assert!(spent.windows(2).all(|w| w[0] >= w[1]), "{b}");
    let models: u64 = b["breakdown"]["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(models, 6, "{b}");
    let page = get_json(
        &format!("{}/admin/budgets/tenant-monthly/usage?limit=2", g.url),
        Some(ADMIN_KEY),
    );
    let got = page["records"].as_array().unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r["tenant"] == "acme"));
    // Newest first, as /admin/records lists them.
    let acme_ids: Vec<&Value> = records
        .iter()
        .filter(|r| r["tenant"] == "acme")
        .map(|r| &r["request_id"])
        .collect();
    assert_eq!(
        got.iter().map(|r| &r["request_id"]).collect::<Vec<_>>(),
        acme_ids[..2]
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = get_json(
        &format!(
            "{}/admin/budgets/tenant-monthly/usage?limit=10&cursor={cursor}",
            g.url
        ),
        Some(ADMIN_KEY),
    );
    assert_eq!(rest["records"].as_array().unwrap().len(), 3, "{rest}");
    let skipped = get_json(
        &format!(
            "{}/admin/budgets/tenant-monthly/usage?limit=1&offset=1",
            g.url
        ),
        Some(ADMIN_KEY),
    );
    assert_eq!(skipped["records"][0]["request_id"], got[1]["request_id"]);
    let (status, _) = get_text(&format!("{}/admin/budgets/nope/usage", g.url));
    assert_eq!(status, 404);

    // Stats: totals for today, this month and all time, top lists.
    let st = get_json(&format!("{}/admin/stats", g.url), Some(ADMIN_KEY));
    for period in ["today", "this_month", "all_time"] {
        assert_eq!(st[period]["requests"], 6, "{st}");
    }
    let total: i128 = records.iter().map(cost_units).sum();
    assert_eq!(usd(st["all_time"]["cost_usd"].as_str().unwrap()), total);
    assert_eq!(st["top_spenders"].as_array().unwrap().len(), 3, "{st}");
    assert!(st["top_models"][0]["model"].is_string(), "{st}");
    let cli: Value = serde_json::from_str(&ok(g.cli(&["stats", "--format", "json"]))).unwrap();
    assert_eq!(cli["all_time"], st["all_time"]);

    // Deleting with purge_usage takes the records out of every report.
    let del: Value = client()
        .delete(format!("{}/admin/budgets/all?purge_usage=true", g.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        del,
        json!({"id": "all", "deleted": true, "purged_records": 6})
    );
    assert!(g.records().is_empty());
    let rep = get_json(
        &format!("{}/admin/reports?group_by=user", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(rep["total"]["requests"], 0, "{rep}");
}

#[test]
fn deleting_a_budget_keeps_its_records_unless_asked() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    post_json(
        &format!("{}/admin/budgets", g.url),
        Some(ADMIN_KEY),
        &json!({"id": "keep", "scope": "global", "limit_usd": "100", "period": "monthly"}),
    );
    let key = g.key();
    send(&g, &key, "gpt-4o", "chat");
    wait_records(&g, 1);
    let r = client()
        .delete(format!("{}/admin/budgets/keep", g.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"id": "keep", "deleted": true})
    );
    assert_eq!(g.records().len(), 1);
    let (status, _) = get_text(&format!("{}/admin/budgets/keep", g.url));
    assert_eq!(status, 404);
}

/// Runs `script` with the test venv's Python, `input` on its stdin.
fn python_with_stdin(script: &str, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(crate::sdk::python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Parses `svg` with Python's XML parser; returns its text.
fn svg_text(svg: &str) -> String {
    let out = python_with_stdin(
        "import sys, xml.etree.ElementTree as E; r = E.fromstring(sys.stdin.read()); \
         assert r.tag == '{http://www.w3.org/2000/svg}svg', r.tag; \
         print('|'.join(t.text or '' for t in r.iter('{http://www.w3.org/2000/svg}text')))",
        svg,
    );
    assert!(
        out.status.success(),
        "invalid SVG: {}\n{svg}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn badges_show_one_budget_and_public_tokens_reveal_nothing_else() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        "budgets:\n  defaults:\n    user: { limit_tokens: 50000, period: daily }\n",
    );
    post_json(
        &format!("{}/admin/budgets", g.url),
        Some(ADMIN_KEY),
        &json!({"id": "team", "name": "team <eng>", "scope": "global", "limit_usd": "25", "period": "monthly"}),
    );
    let key = g.key();
    send(&g, &key, "gpt-4o", "chat");
    wait_records(&g, 1);
    let get = |path: &str, bearer: Option<&str>| {
        let mut r = client().get(format!("{}{path}", g.url));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        let r = r.send().unwrap();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), ct, r.text().unwrap())
    };
    let (status, ct, svg) = get("/admin/budgets/team/badge", Some(ADMIN_KEY));
    assert_eq!(status, 200, "{svg}");
    assert_eq!(ct.as_deref(), Some("image/svg+xml; charset=utf-8"));
    assert_eq!(svg_text(&svg), "team <eng>|<$0.01 / $25.00");
    // A template budget's badge names its subject.
    let (status, _, _) = get("/admin/budgets/default:user/badge", Some(ADMIN_KEY));
    assert_eq!(status, 400);
    let (status, _, svg) = get(
        "/admin/budgets/default:user/badge?subject=acme/alice",
        Some(ADMIN_KEY),
    );
    assert_eq!(status, 200);
    let text = svg_text(&svg);
    assert!(
        text.starts_with("budget|") && text.ends_with(" / 50,000 tokens"),
        "{text}"
    );
    let (status, _, _) = get("/admin/budgets/team/badge", None);
    assert_eq!(status, 401);

    // A public token shows that badge, without a key, and nothing else.
    let t = post_json(
        &format!("{}/admin/budgets/team/badge-tokens", g.url),
        Some(ADMIN_KEY),
        &json!({}),
    );
    let url = t["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("/badge/tgb-") && url.ends_with(".svg"),
        "{t}"
    );
    let (status, ct, public) = get(&url, None);
    assert_eq!(status, 200);
    assert_eq!(ct.as_deref(), Some("image/svg+xml; charset=utf-8"));
    assert_eq!(svg_text(&public), "team <eng>|<$0.01 / $25.00");
    let token = t["token"].as_str().unwrap();
    for probe in [
        format!("/badge/{token}"),
        format!("/badge/{}x.svg", &token[..token.len() - 1]),
        "/badge/tgb-nope.svg".to_string(),
    ] {
        assert_eq!(get(&probe, None).0, 404, "{probe}");
    }
    let listed = get_json(
        &format!("{}/admin/budgets/team/badge-tokens", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(listed["badge_tokens"].as_array().unwrap().len(), 1);
    assert!(
        !listed.to_string().contains(token),
        "never the token: {listed}"
    );
    let id = t["id"].as_str().unwrap();
    let r = client()
        .delete(format!("{}/admin/budgets/team/badge-tokens/{id}", g.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&url, None).0, 404, "revoked");
}

/// `/openapi.json` validates as OpenAPI 3.1 (openapi-spec-validator), lists
/// every route, and every operation it lists is served.
#[test]
fn the_openapi_document_validates_and_lists_every_route() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let (status, text) = {
        let r = client()
            .get(format!("{}/openapi.json", g.url))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let out = python_with_stdin(
        "import sys, json; from openapi_spec_validator import validate; \
         from openapi_spec_validator.validation import OpenAPIV31SpecValidator; \
         validate(json.load(sys.stdin), cls=OpenAPIV31SpecValidator); print('valid')",
        &text,
    );
    assert!(
        out.status.success(),
        "not valid OpenAPI 3.1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths = doc["paths"].as_object().unwrap();
    let has = |method: &str, path: &str| {
        paths
            .get(path)
            .and_then(|p| p.get(method.to_lowercase()))
            .is_some()
    };
    // Every route a tenant admin reaches, the full-admin-only ones, the
    // proxy and the public routes.
    let mut expected: Vec<(String, String)> = tollgate_gateway::admin::TENANT_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    for (m, p) in [
        ("GET", "/admin/admin-keys"),
        ("POST", "/admin/admin-keys"),
        ("DELETE", "/admin/admin-keys/{id}"),
        ("PUT", "/admin/pricing/{model}"),
        ("GET", "/admin/rate-limits"),
        ("POST", "/admin/rate-limits"),
        ("GET", "/admin/rate-limits/{id}"),
        ("PUT", "/admin/rate-limits/{id}"),
        ("DELETE", "/admin/rate-limits/{id}"),
        ("GET", "/admin/alert-rules"),
        ("POST", "/admin/alert-rules"),
        ("GET", "/admin/alert-rules/{id}"),
        ("PUT", "/admin/alert-rules/{id}"),
        ("DELETE", "/admin/alert-rules/{id}"),
        ("GET", "/admin/stats"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/messages"),
        ("POST", "/v1beta/models/{call}"),
        ("GET", "/metrics"),
        ("GET", "/usage"),
        ("GET", "/badge/{file}"),
        ("GET", "/health"),
    ] {
        expected.push((m.into(), p.into()));
    }
    for (m, p) in &expected {
        assert!(has(m, p), "{m} {p} missing from /openapi.json");
    }
    // Every listed operation is served: none answers the router's bare 404
    // (a missing route) or 405 (a missing method).
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path
                .replace("{call}", "gemini-2.5-flash:generateContent")
                .replace("{file}", "x.svg")
                .replace(['{', '}'], "");
            let url = format!("{}{concrete}", g.url);
            let req = match method {
                "get" => client().get(url),
                "post" => client().post(url),
                "put" => client().put(url),
                "patch" => client().patch(url),
                _ => client().delete(url),
            };
            let r = req.send().unwrap();
            let status = r.status().as_u16();
            // Unauthenticated: 401 from every guarded route; a route that
            // did not exist would be 404 with the router's empty body or 405.
            let body = r.text().unwrap();
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                status != 404 || !body.is_empty(),
                "{method} {path}: not served"
            );
            assert!(
                doc["paths"][path][method]["responses"]
                    .as_object()
                    .is_some(),
                "{method} {path} lists no responses"
            );
        }
    }
    // Admin operations carry the admin key scheme.
    assert_eq!(
        doc["paths"]["/admin/reports"]["get"]["security"][0]["admin_key"],
        json!([])
    );
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}
