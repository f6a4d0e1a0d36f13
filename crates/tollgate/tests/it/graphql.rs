//! GraphQL: queries with the REST filters and authorization, and
//! subscriptions over a real WebSocket (graphql-transport-ws).

use std::io::{BufRead, BufReader};

use serde_json::{Value, json};

use crate::harness::*;

fn query(g: &Gateway, key: Option<&str>, q: &str) -> (u16, Value) {
    let mut r = client()
        .post(format!("{}/graphql", g.url))
        .json(&json!({"query": q}));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

/// Starts the WebSocket client (`tests/graphql/subscribe.py`) on one
/// subscription, to print one event.
fn subscribe(ws: &str, key: &str, subscription: &str) -> std::process::Child {
    std::process::Command::new(crate::sdk::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/graphql/subscribe.py"
        ))
        .args([ws, key, "1", subscription])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn chat(g: &Gateway, key: &str) {
    let r = client()
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn graphql_queries_and_subscriptions_see_what_the_caller_may() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        "budgets:\n  defaults:\n    user: { limit_usd: \"5\", period: daily }\n",
    );
    let (_, alice) = g.create_key(json!({"user": "alice", "tenant": "acme"}));
    let (_, bob) = g.create_key(json!({"user": "bob", "tenant": "globex"}));
    let acme_admin = post_json(
        &format!("{}/admin/admin-keys", g.url),
        Some(ADMIN_KEY),
        &json!({"tenant": "acme"}),
    )["key"]
        .as_str()
        .unwrap()
        .to_string();
    chat(&g, &alice);
    chat(&g, &bob);
    g.records();

    // GraphiQL for a browser; queries need an admin key.
    let page = client().get(format!("{}/graphql", g.url)).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().to_lowercase().contains("graphiql"));
    let (status, _) = query(
        &g,
        None,
        "{ report(groupBy: [\"user\"]) { total { requests } } }",
    );
    assert_eq!(status, 401);

    let q = "{ report(groupBy: [\"tenant\", \"user\"]) { rows { dimensions { name value } requests costUsd } total { requests } } \
             records { records { requestId tenant user } } \
             users { users { userId tenant status } } \
             budgets { budgets { id subject status } } }";
    let (status, full) = query(&g, Some(ADMIN_KEY), q);
    assert_eq!(status, 200, "{full}");
    assert!(full.get("errors").is_none(), "{full}");
    assert_eq!(full["data"]["report"]["total"]["requests"], 2, "{full}");
    assert_eq!(full["data"]["users"]["users"].as_array().unwrap().len(), 2);
    // A tenant admin sees its tenant only, in every query.
    let (_, acme) = query(&g, Some(&acme_admin), q);
    assert!(acme.get("errors").is_none(), "{acme}");
    assert_eq!(acme["data"]["report"]["total"]["requests"], 1, "{acme}");
    assert_eq!(
        acme["data"]["report"]["rows"][0]["dimensions"],
        json!([{"name": "tenant", "value": "acme"}, {"name": "user", "value": "acme/alice"}])
    );
    assert!(!acme.to_string().contains("globex"), "{acme}");
    let (_, refused) = query(
        &g,
        Some(&acme_admin),
        "{ records(filter: {tenant: \"globex\"}) { records { requestId } } }",
    );
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cannot read tenant")
    );

    // Subscriptions: acme's admin subscribes to usage; globex's request
    // comes first and must not reach it, acme's must.
    let ws = g.url.replace("http://", "ws://") + "/graphql";
    let mut sub = subscribe(
        &ws,
        acme_admin.as_str(),
        "subscription { usage { requestId tenant user costUsd } }",
    );
    let mut out = BufReader::new(sub.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    chat(&g, &bob);
    chat(&g, &alice);
    line.clear();
    out.read_line(&mut line).unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    let usage = &event["data"]["usage"];
    assert_eq!(usage["tenant"], "acme", "{event}");
    assert_eq!(usage["user"], "acme/alice");
    assert!(usage["costUsd"].as_str().unwrap().starts_with("0."));
    assert!(sub.wait().unwrap().success());

    // A full admin's subscription to budget levels: a tiny budget goes
    // over its limit.
    post_json(
        &format!("{}/admin/budgets", g.url),
        Some(ADMIN_KEY),
        &json!({"id": "tiny", "scope": "tenant", "subject": "globex", "limit_usd": "0.0002", "period": "daily"}),
    );
    let mut sub = subscribe(
        &ws,
        ADMIN_KEY,
        "subscription { budgetLevels { budgetId subject from to } }",
    );
    let mut out = BufReader::new(sub.stdout.take().unwrap());
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    for _ in 0..5 {
        let _ = client()
            .post(format!("{}/v1/chat/completions", g.url))
            .bearer_auth(&bob)
            .json(&json!({"model": "gpt-4o", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .unwrap();
    }
    line.clear();
    out.read_line(&mut line).unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    let level = &event["data"]["budgetLevels"];
    assert_eq!(level["budgetId"], "tiny", "{event}");
    assert_eq!(level["subject"], "globex");
    assert!(sub.wait().unwrap().success());
}
