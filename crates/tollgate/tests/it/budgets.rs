//! Budgets that hold, end to end: native refusals, capping, hierarchy,
//! identity rules, no overspend under concurrency, and kill -9.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

fn admin_post(g: &Gateway, path: &str, body: Value) -> Value {
    post_json(&format!("{}{path}", g.url), Some(ADMIN_KEY), &body)
}

fn budget(g: &Gateway, body: Value) -> Value {
    admin_post(g, "/admin/budgets", body)
}

fn chat(
    g: &Gateway,
    key: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::blocking::Response {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(key)
        .json(&body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().unwrap()
}

/// One budget instance from `GET /admin/budgets`.
fn budget_state(g: &Gateway, id: &str) -> Value {
    get_json(&format!("{}/admin/budgets", g.url), Some(ADMIN_KEY))["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no budget {id}"))
}

/// What the mock billed, priced by hand at gpt-4o's $2.50 in / $10 out per Mtok.
fn billed_gpt4o(m: &Mock) -> i128 {
    m.billing()["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            i128::from(r["usage"]["input_tokens"].as_u64().unwrap() as i64) * usd("2.50")
                / 1_000_000
                + i128::from(r["usage"]["output_tokens"].as_u64().unwrap() as i64) * usd("10")
                    / 1_000_000
        })
        .sum()
}

fn msgs() -> Value {
    json!([{"role": "user", "content": "hello"}])
}

#[test]
fn refusals_are_native_final_and_recorded() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    // Each format gets its own user and a budget that affords one request.
    let cases = [
        ("openai", "u-openai"),
        ("anthropic", "u-anthropic"),
        ("gemini", "u-gemini"),
    ];
    for (fmt, user) in cases {
        let (_, key) = g.create_key(json!({"user": user}));
        let status = if fmt == "gemini" { 402 } else { 429 };
        budget(
            &g,
            json!({"id": format!("b-{fmt}"), "name": "tiny", "scope": "user", "subject": user, "limit_usd": "0.0004", "period": "daily", "refusal_status": status}),
        );
        let send = || {
            let r = match fmt {
                "openai" => client().post(format!("{}/v1/chat/completions", g.url)).bearer_auth(&key)
                    .json(&json!({"model": "gpt-4o", "max_tokens": 30, "messages": msgs()})),
                "anthropic" => client().post(format!("{}/v1/messages", g.url)).header("x-api-key", &key)
                    .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 20, "messages": msgs()})),
                _ => client().post(format!("{}/v1beta/models/gemini-2.5-pro:generateContent", g.url)).header("x-goog-api-key", &key)
                    .json(&json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 30}})),
            };
            r.send().unwrap()
        };
        let mut refused = None;
        for _ in 0..10 {
            let resp = send();
            if resp.status() != 200 {
                refused = Some(resp);
                break;
            }
        }
        let resp = refused.unwrap_or_else(|| panic!("{fmt}: budget never refused"));
        assert_eq!(resp.status().as_u16(), status, "{fmt}");
        let h = resp.headers().clone();
        assert_eq!(h["x-should-retry"], "false", "{fmt}");
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(
            retry > 0 && retry <= 86_400,
            "{fmt}: Retry-After at the daily reset, got {retry}"
        );
        assert_eq!(h["x-budget-id"], format!("b-{fmt}"));
        assert!(h.contains_key("x-budget-remaining") && h.contains_key("x-budget-reset"));
        let id = h["x-tollgate-request-id"].to_str().unwrap().to_string();
        let v: Value = resp.json().unwrap();
        let err = &v["error"];
        match fmt {
            "openai" => {
                assert_eq!(err["code"], "budget_exceeded", "{v}");
                assert_eq!(err["type"], "insufficient_quota");
            }
            "anthropic" => {
                assert_eq!(v["type"], "error");
                assert_eq!(err["type"], "budget_exceeded", "{v}");
            }
            _ => {
                assert_eq!(err["code"], 402, "{v}");
                assert_eq!(err["status"], "RESOURCE_EXHAUSTED");
                assert_eq!(err["details"][0]["reason"], "budget_exceeded");
            }
        }
        assert_eq!(err["budget"]["id"], format!("b-{fmt}"));
        assert_eq!(err["budget"]["scope"], "user");
        assert_eq!(err["budget"]["subject"], user);
        assert!(
            err["remaining_usd"].is_string() && err["reset_at"].is_string(),
            "{v}"
        );
        assert!(err["message"].as_str().unwrap().contains("tiny"), "{v}");
        // The refusal is recorded, blocked, at no cost; the provider never saw it.
        let rec = g.record(&id);
        assert_eq!(rec["flags"], json!(["blocked"]));
        assert_eq!(rec["cost_usd"], "0.000000");
        assert!(
            m.billing()["requests"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["request_id"] != id.as_str())
        );
    }
}

#[test]
fn output_is_capped_to_what_the_budget_affords() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let (_, key) = g.create_key(json!({"user": "capped"}));
    // gpt-4o: $2.50 in, $10 out per Mtok. $0.0006 affords ~50 output tokens.
    budget(
        &g,
        json!({"scope": "user", "subject": "capped", "limit_usd": "0.0006", "period": "monthly"}),
    );
    let resp = chat(
        &g,
        &key,
        json!({"model": "gpt-4o", "max_tokens": 1000, "messages": msgs()}),
        &[("x-mock-output-tokens", "1000")],
    );
    assert_eq!(resp.status(), 200);
    let cap: u64 = resp.headers()["x-tollgate-capped-max-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((16..1000).contains(&cap), "cap {cap}");
    assert!(resp.headers().contains_key("x-budget-remaining"));
    assert!(resp.headers().contains_key("x-budget-limit"));
    let id = request_id(&resp);
    let v: Value = resp.json().unwrap();
    assert_eq!(
        v["usage"]["completion_tokens"], cap,
        "the upstream saw the capped max_tokens"
    );
    let rec = g.record(&id);
    assert_eq!(rec["flags"], json!(["capped"]));
    // Committed spend never passes the limit.
    let budgets = get_json(&format!("{}/admin/budgets", g.url), Some(ADMIN_KEY));
    let b = budgets["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["subject"] == "capped")
        .unwrap()
        .clone();
    assert!(usd(b["used_usd"].as_str().unwrap()) <= usd("0.0006"), "{b}");
    assert_eq!(usd(b["used_usd"].as_str().unwrap()), cost_units(&rec));

    // A request that names no limit reserves the default, not the whole budget (LiteLLM PR #27539).
    let (_, big) = g.create_key(json!({"user": "big"}));
    budget(
        &g,
        json!({"scope": "user", "subject": "big", "limit_usd": "2000", "period": "monthly"}),
    );
    let resp = chat(
        &g,
        &big,
        json!({"model": "gpt-4o", "messages": msgs()}),
        &[("x-mock-chunk-delay-ms", "0")],
    );
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("x-tollgate-capped-max-tokens"));
    let usage = get_json(&format!("{}/usage", g.url), Some(&big));
    assert_eq!(usage["budgets"][0]["status"], "ok", "{usage}");
    assert_eq!(
        usage["budgets"][0]["reserved_usd"], "0.000000",
        "settled: nothing stays reserved"
    );
}

#[test]
fn tenant_user_and_session_limits_each_hold() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        r#"budgets:
  defaults:
    session: { limit_tokens: 150, period: lifetime }
  overrides:
    - { id: acme-tenant, scope: tenant, subject: acme, limit_usd: "0.0005", period: daily }
    - { id: dan-user, scope: user, subject: globex/dan, limit_usd: "0.0005", period: daily }
"#,
    );
    // A tenant limit stops a user who still has budget.
    let (_, ann) = g.create_key(json!({"user": "ann", "tenant": "acme"}));
    let mut last = None;
    for _ in 0..10 {
        let r = chat(
            &g,
            &ann,
            json!({"model": "gpt-4o", "max_tokens": 20, "messages": msgs()}),
            &[],
        );
        if r.status() != 200 {
            last = Some(r.json::<Value>().unwrap());
            break;
        }
    }
    let e = last.expect("tenant budget refused");
    assert_eq!(e["error"]["budget"]["id"], "acme-tenant", "{e}");
    // ... and a user limit stops a user whose tenant still has budget.
    let (_, dan) = g.create_key(json!({"user": "dan", "tenant": "globex"}));
    let mut last = None;
    for _ in 0..10 {
        let r = chat(
            &g,
            &dan,
            json!({"model": "gpt-4o", "max_tokens": 20, "messages": msgs()}),
            &[],
        );
        if r.status() != 200 {
            last = Some(r.json::<Value>().unwrap());
            break;
        }
    }
    assert_eq!(
        last.expect("user budget refused")["error"]["budget"]["id"],
        "dan-user"
    );

    // A session cap stops one session while another of the same user goes on.
    let (_, eve) = g.create_key(json!({"user": "eve", "tenant": "initech"}));
    let s1 = |n: usize| {
        (0..n)
            .map(|_| {
                chat(
                    &g,
                    &eve,
                    json!({"model": "gpt-4o-mini", "max_tokens": 20, "messages": msgs()}),
                    &[("x-session-id", "s1")],
                )
                .status()
                .as_u16()
            })
            .collect::<Vec<_>>()
    };
    let statuses = s1(8);
    assert!(
        statuses.contains(&429),
        "session s1 was stopped: {statuses:?}"
    );
    let r = chat(
        &g,
        &eve,
        json!({"model": "gpt-4o-mini", "max_tokens": 20, "messages": msgs()}),
        &[("x-session-id", "s2")],
    );
    assert_eq!(r.status(), 200, "session s2 goes on");
    let r = chat(
        &g,
        &eve,
        json!({"model": "gpt-4o-mini", "max_tokens": 20, "messages": msgs()}),
        &[],
    );
    assert_eq!(r.status(), 200, "no session: no session budget");
}

#[test]
fn only_trusted_keys_name_who_they_act_for() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let (_, plain) = g.create_key(json!({"user": "alice", "tenant": "acme"}));
    // A platform key (no tenant of its own) may name any tenant.
    let (_, trusted) = g.create_key(json!({"user": "backend", "trusted": true}));
    let hdrs = [
        ("x-tollgate-user", "mallory"),
        ("x-tollgate-tenant", "victim"),
        ("x-budget-id", "someone-elses"),
    ];
    let r = chat(
        &g,
        &plain,
        json!({"model": "gpt-4o-mini", "user": "mallory", "messages": msgs()}),
        &hdrs,
    );
    let rec = g.record(&request_id(&r));
    assert_eq!(
        (rec["user"].as_str(), rec["tenant"].as_str()),
        (Some("acme/alice"), Some("acme")),
        "untrusted key cannot change who it is (its user is its tenant's)"
    );
    let r = chat(
        &g,
        &trusted,
        json!({"model": "gpt-4o-mini", "messages": msgs()}),
        &[
            ("x-tollgate-user", "carol"),
            ("x-tollgate-tenant", "customer-1"),
            ("x-session-id", "conv-9"),
        ],
    );
    let rec = g.record(&request_id(&r));
    assert_eq!(
        (
            rec["user"].as_str(),
            rec["tenant"].as_str(),
            rec["session"].as_str()
        ),
        (Some("customer-1/carol"), Some("customer-1"), Some("conv-9")),
        "a platform key acting for a tenant names that tenant's user"
    );
    let r = chat(
        &g,
        &trusted,
        json!({"model": "gpt-4o-mini", "user": "dave", "messages": msgs()}),
        &[],
    );
    let rec = g.record(&request_id(&r));
    assert_eq!(
        rec["user"], "dave",
        "OpenAI's user field names the end user for trusted keys"
    );
    // A named budget, chosen per request by a trusted key, holds too.
    budget(
        &g,
        json!({"id": "campaign", "scope": "budget", "subject": "campaign", "limit_tokens": 40, "period": "lifetime"}),
    );
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            chat(
                &g,
                &trusted,
                json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": msgs()}),
                &[("x-budget-id", "campaign")],
            )
            .status()
            .as_u16()
        })
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[test]
fn regression_a_tenants_trusted_key_acts_only_within_its_tenant() {
    // A trusted key of tenant acme could charge tenant globex, and name
    // users and sessions that other tenants' keys name too.
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let (_, acme) =
        g.create_key(json!({"user": "acme-backend", "tenant": "acme", "trusted": true}));
    budget(
        &g,
        json!({"scope": "tenant", "subject": "globex", "limit_tokens": 1000000, "period": "daily"}),
    );
    let r = chat(
        &g,
        &acme,
        json!({"model": "gpt-4o-mini", "messages": msgs()}),
        &[("x-tollgate-tenant", "globex")],
    );
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "identity_not_allowed", "{body}");
    let r = chat(
        &g,
        &acme,
        json!({"model": "gpt-4o-mini", "messages": msgs()}),
        &[
            ("x-tollgate-tenant", "acme"),
            ("x-tollgate-user", "carol"),
            ("x-session-id", "conv-1"),
        ],
    );
    assert_eq!(r.status(), 200);
    let rec = g.record(&request_id(&r));
    assert_eq!(
        (
            rec["tenant"].as_str(),
            rec["user"].as_str(),
            rec["session"].as_str()
        ),
        (Some("acme"), Some("acme/carol"), Some("acme/conv-1")),
        "the users and sessions a tenant's key names are that tenant's"
    );
}

#[test]
fn explain_says_why() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let (id, _) = g.create_key(json!({"user": "frank", "tenant": "acme"}));
    budget(
        &g,
        json!({"id": "frank-tiny", "scope": "user", "subject": "acme/frank", "limit_usd": "0.000001", "period": "weekly", "timezone": "Europe/Berlin"}),
    );
    let v = admin_post(
        &g,
        "/admin/explain",
        json!({"key": id, "model": "gpt-4o", "max_tokens": 100}),
    );
    assert_eq!(v["caller"]["user"], "acme/frank");
    assert_eq!(v["budgets"][0]["id"], "frank-tiny");
    assert_eq!(v["budgets"][0]["timezone"], "Europe/Berlin");
    assert_eq!(v["decision"]["decision"], "refuse", "{v}");
    assert_eq!(v["decision"]["budget"], "frank-tiny");
    let v = admin_post(
        &g,
        "/admin/explain",
        json!({"user": "nobody", "model": "gpt-4o"}),
    );
    assert_eq!(v["decision"]["decision"], "allow");
    let out = g.cli(&[
        "explain",
        "--key",
        &id,
        "--model",
        "gpt-4o",
        "--max-tokens",
        "100",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refuse") && text.contains("frank-tiny"),
        "{text}"
    );
}

#[test]
fn budgets_cli_and_admin_crud() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let out = g.cli(&[
        "budgets",
        "set",
        "--id",
        "cli-b",
        "--scope",
        "user",
        "--subject",
        "gina",
        "--limit-usd",
        "1.50",
        "--period",
        "rolling:1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = g.cli(&["budgets", "list", "--format", "json"]);
    let v: Value = serde_json::from_slice(&list.stdout).unwrap();
    let b = v["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == "cli-b")
        .unwrap()
        .clone();
    assert_eq!(b["limit_usd"], "1.500000");
    assert_eq!(b["period"], "rolling:1h");
    // The running gateway picks it up.
    loaded_budget(&g, "cli-b");
    let patched: Value = client()
        .patch(format!("{}/admin/budgets/cli-b", g.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"limit_usd": "2.00"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(patched["limit_usd"], "2.000000");
    let bad = client()
        .post(format!("{}/admin/budgets", g.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"scope": "user", "limit_usd": "1"}))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("subject"));
    let bad = client()
        .post(format!("{}/admin/budgets", g.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"scope": "user", "subject": "x", "limit_usd": 1.5}))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400, "money is never a float");
    let out = g.cli(&["budgets", "delete", "cli-b"]);
    assert!(out.status.success());
    let r = client()
        .get(format!("{}/admin/budgets/cli-b", g.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    assert!(
        r.status() == 404 || r.status() == 200,
        "deleted in the store; the gateway reloads within seconds"
    );
}

/// Regression (LiteLLM #34732, #40095): check-then-increment budgets let
/// concurrent requests all pass. 200 at once, streaming and not, against a
/// budget that affords a fraction: committed spend stays under the limit,
/// the provider's own bill too, and `used` equals the records' sum.
#[test]
fn concurrent_requests_never_overspend() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let (_, key) = g.create_key(json!({"user": "hammer", "tenant": "load"}));
    let limit = "0.004";
    budget(
        &g,
        json!({"id": "hammer", "scope": "user", "subject": "load/hammer", "limit_usd": limit, "period": "daily"}),
    );
    let url = g.url.clone();
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let (url, key) = (url.clone(), key.clone());
            std::thread::spawn(move || {
                let stream = i % 2 == 0;
                let resp = client()
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .header("x-mock-chunk-delay-ms", "2")
                    .json(&json!({"model": "gpt-4o", "max_tokens": 40, "stream": stream, "messages": [{"role": "user", "content": "go"}]}))
                    .send()
                    .unwrap();
                let status = resp.status().as_u16();
                let body = resp.text().unwrap_or_default();
                (status, body)
            })
        })
        .collect();
    let results: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<&String> = results
        .iter()
        .filter(|(s, _)| *s != 200)
        .map(|(_, b)| b)
        .collect();
    assert!(
        ok > 0 && !refused.is_empty(),
        "{ok} allowed, {} refused",
        refused.len()
    );
    for b in &refused {
        assert!(b.contains("budget_exceeded"), "{b}");
    }
    let records: Vec<Value> = g
        .records()
        .into_iter()
        .filter(|r| r["user"] == "load/hammer")
        .collect();
    let committed: i128 = records.iter().map(cost_units).sum();
    assert!(committed <= usd(limit), "committed {committed} > limit");
    // The provider's own bill, priced by hand: $2.50 in, $10 out per Mtok.
    let billed: i128 = billed_gpt4o(&m);
    assert!(billed <= usd(limit), "provider billed {billed} > limit");
    assert_eq!(billed, committed, "every billed token was charged");
    let b = budget_state(&g, "hammer");
    assert_eq!(
        usd(b["used_usd"].as_str().unwrap()),
        committed,
        "used equals the sum of the records"
    );
    assert_eq!(b["reserved_usd"], "0.000000");
}

/// kill -9 under load, restart on the same database: spend never escapes
/// (spent + reserved ≥ what the provider billed), and after reconciliation
/// the budget's `used` equals the records' sum.
#[test]
fn kill_9_under_load_loses_no_spend() {
    let m = Mock::start(&[]);
    let mut g = Gateway::start(&m);
    let (_, key) = g.create_key(json!({"user": "crash", "tenant": "crash"}));
    budget(
        &g,
        json!({"id": "crash", "scope": "user", "subject": "crash/crash", "limit_usd": "1.00", "period": "monthly"}),
    );
    let url = g.url.clone();
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let (url, key) = (url.clone(), key.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(i * 5));
                let _ = client()
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .header("x-mock-chunk-delay-ms", "20")
                    .header("x-mock-output-tokens", "60")
                    .json(&json!({"model": "gpt-4o", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "go"}]}))
                    .send()
                    .and_then(|r| r.text());
            })
        })
        .collect();
    // Killed once the provider has started billing (on a busy machine the
    // first requests take a while to get there), with streams in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while billed_gpt4o(&m) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing reached the provider"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut child = g.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for h in handles {
        let _ = h.join();
    }
    g.restart();
    let billed: i128 = billed_gpt4o(&m);
    assert!(billed > 0);
    let b = budget_state(&g, "crash");
    let used = usd(b["used_usd"].as_str().unwrap()) + usd(b["reserved_usd"].as_str().unwrap());
    assert!(
        used >= billed,
        "spend escaped: budget {used} < provider billed {billed}"
    );
    let records: Vec<Value> = g
        .records()
        .into_iter()
        .filter(|r| r["user"] == "crash/crash")
        .collect();
    let sum: i128 = records.iter().map(cost_units).sum();
    assert_eq!(
        usd(b["used_usd"].as_str().unwrap()),
        sum,
        "after reconciliation, used equals the records"
    );
    assert!(
        records.iter().any(|r| r["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("reconciled"))),
        "in-flight requests were reconciled"
    );
}

/// Regression (LiteLLM PR #36592): reservations leaked on error paths until
/// the budget refused at 0.4 % used. Every way a request can end gives its
/// reservation back or charges it — nothing stays reserved.
#[test]
fn regression_no_reservation_leaks_on_any_path() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let (_, key) = g.create_key(json!({"user": "leaky"}));
    budget(
        &g,
        json!({"id": "leaky", "scope": "user", "subject": "leaky", "limit_usd": "5", "period": "daily"}),
    );
    let body = |stream: bool| json!({"model": "gpt-4o-mini", "max_tokens": 50, "stream": stream, "messages": msgs()});
    // Upstream errors, a timeout (3 s for this provider), a cut stream, junk.
    for h in [
        ("x-mock-error", "500"),
        ("x-mock-error", "429"),
        ("x-mock-ttfb-ms", "4000"),
        ("x-mock-garbage", "1"),
    ] {
        let _ = chat(&g, &key, body(false), &[h]).text();
        let _ = chat(&g, &key, body(true), &[h]).text();
    }
    let _ = chat(&g, &key, body(true), &[("x-mock-drop-after", "5")]).text();
    // A streaming client that hangs up, and a non-streaming one that gives up.
    let mut r = chat(
        &g,
        &key,
        body(true),
        &[
            ("x-mock-chunk-delay-ms", "50"),
            ("x-mock-output-tokens", "200"),
        ],
    );
    let mut buf = [0u8; 64];
    let _ = std::io::Read::read(&mut r, &mut buf);
    drop(r);
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let _ = impatient
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(&key)
        .header("x-mock-ttfb-ms", "2000")
        .json(&body(false))
        .send();
    // Bad requests after identification.
    let _ = chat(
        &g,
        &key,
        json!({"model": "gpt-4o-mini", "max_tokens": -1, "messages": []}),
        &[],
    )
    .text();
    std::thread::sleep(Duration::from_millis(2500));
    let b = budget_state(&g, "leaky");
    assert_eq!(b["reserved_usd"], "0.000000", "{b}");
    assert_eq!(b["reserved_tokens"], 0, "{b}");
    let records: Vec<Value> = g
        .records()
        .into_iter()
        .filter(|r| r["user"] == "leaky")
        .collect();
    let sum: i128 = records.iter().map(cost_units).sum();
    assert_eq!(
        usd(b["used_usd"].as_str().unwrap()),
        sum,
        "used equals the records: {b}"
    );
}

/// Regression (Bifrost #2873): enforcement skipped on some route. Every
/// route that reaches a provider refuses once the budget is spent.
#[test]
fn regression_every_route_is_enforced() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let (_, key) = g.create_key(json!({"user": "broke"}));
    budget(
        &g,
        json!({"scope": "user", "subject": "broke", "limit_usd": "0", "period": "lifetime"}),
    );
    let routes: [(&str, Value); 8] = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": msgs()}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": true, "messages": msgs()}),
        ),
        (
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "x"}),
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "x"}),
        ),
        ("/v1/responses", json!({"model": "gpt-4.1", "input": "x"})),
        (
            "/v1/messages",
            json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": msgs()}),
        ),
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            json!({"contents": [{"parts": [{"text": "x"}]}]}),
        ),
        (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            json!({"contents": [{"parts": [{"text": "x"}]}]}),
        ),
    ];
    for (path, body) in routes {
        let r = client()
            .post(format!("{}{path}", g.url))
            .bearer_auth(&key)
            .header("x-api-key", &key)
            .header("x-goog-api-key", &key)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 429, "{path}");
        assert!(r.text().unwrap().contains("budget_exceeded"), "{path}");
    }
    assert!(
        m.billing()["requests"].as_array().unwrap().is_empty(),
        "nothing reached the provider"
    );
}

#[test]
fn regression_budget_admin_is_incremental_and_paginated() {
    // Each POST /admin/budgets reloaded every budget, and GET /admin/budgets
    // returned one unpaginated 45 MB answer.
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    for i in 0..250 {
        budget(
            &g,
            json!({"id": format!("page-{i:03}"), "scope": "user", "subject": format!("u{i}"), "limit_tokens": 1000, "period": "daily"}),
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{}/admin/budgets?limit=100&scope=user&cursor={c}", g.url),
            None => format!("{}/admin/budgets?limit=100&scope=user", g.url),
        };
        let page = get_json(&url, Some(ADMIN_KEY));
        pages += 1;
        let rows = page["budgets"].as_array().unwrap();
        assert!(rows.len() <= 100);
        seen.extend(rows.iter().map(|b| b["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 250, "every budget once");
    assert_eq!(seen, sorted, "in id order");
    let one = get_json(
        &format!("{}/admin/budgets?subject=u7", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(one["budgets"].as_array().unwrap().len(), 1);
    assert_eq!(one["budgets"][0]["id"], "page-007");
    let over = get_json(
        &format!("{}/admin/budgets?status=over_limit", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(over["budgets"].as_array().unwrap().len(), 0);
    // Deleting one takes effect at once, without a reload.
    let r = client()
        .delete(format!("{}/admin/budgets/page-007", g.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let gone = get_json(
        &format!("{}/admin/budgets?subject=u7", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(gone["budgets"].as_array().unwrap().len(), 0);
    let bad = client()
        .get(format!("{}/admin/budgets?status=sleepy", g.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[test]
fn regression_a_user_default_can_be_daily_and_monthly() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        r#"budgets:
  defaults:
    user:
      - { limit_tokens: 100000, period: daily }
      - { id: user-monthly, limit_usd: "0.0005", period: monthly }
"#,
    );
    let (_, key) = g.create_key(json!({"user": "mia"}));
    let usage = get_json(&format!("{}/usage", g.url), Some(&key));
    let mut ids: Vec<&str> = usage["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["default:user:0", "user-monthly"], "{usage}");
    let mut refused = None;
    for _ in 0..10 {
        let r = chat(
            &g,
            &key,
            json!({"model": "gpt-4o", "max_tokens": 20, "messages": msgs()}),
            &[],
        );
        if r.status() != 200 {
            refused = Some(r.json::<Value>().unwrap());
            break;
        }
    }
    let e = refused.expect("the monthly default refuses");
    assert_eq!(e["error"]["budget"]["id"], "user-monthly", "{e}");
    let rec = &g.records()[1];
    assert_eq!(
        rec["budgets"],
        json!(["default:user:0", "user-monthly"]),
        "{rec}"
    );

    // A mistake inside a list names itself.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "budgets:\n  defaults:\n    user:\n      - { limit_tokens: 1, period: daily }\n      - { limit_usdd: \"1\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("limit_usdd"), "{err}");
}

#[test]
fn regression_a_session_override_reaches_an_untrusted_keys_session() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        "budgets:\n  defaults:\n    session: { limit_tokens: 100000, period: lifetime }\n",
    );
    let (key_id, key) = g.create_key(json!({"user": "uma"}));
    // An untrusted key's sessions are its own: `<key id>/<session>`, as
    // `/usage` shows; an override names that subject.
    let usage: Value = client()
        .get(format!("{}/usage", g.url))
        .bearer_auth(&key)
        .header("x-session-id", "s-tiny")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let subject = format!("{key_id}/s-tiny");
    assert_eq!(usage["session"], subject.as_str(), "{usage}");
    post_json(
        &format!("{}/admin/budgets", g.url),
        Some(ADMIN_KEY),
        &json!({"id": "tiny-session", "scope": "session", "subject": subject, "limit_tokens": 30, "period": "lifetime"}),
    );
    let r = chat(
        &g,
        &key,
        json!({"model": "gpt-4o", "max_tokens": 200, "messages": msgs()}),
        &[("x-session-id", "s-tiny")],
    );
    assert_eq!(r.status(), 429);
    let e: Value = r.json().unwrap();
    assert_eq!(e["error"]["budget"]["id"], "tiny-session", "{e}");
    // Another key naming the same session is not affected.
    let (_, other) = g.create_key(json!({"user": "ulf"}));
    let r = chat(
        &g,
        &other,
        json!({"model": "gpt-4o", "max_tokens": 200, "messages": msgs()}),
        &[("x-session-id", "s-tiny")],
    );
    assert_eq!(r.status(), 200);
}

#[test]
fn regression_reports_count_refusals_apart_from_requests_served() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        "budgets:\n  defaults:\n    user: { limit_usd: \"0.0005\", period: daily }\n",
    );
    let (_, key) = g.create_key(json!({"user": "rex"}));
    let (mut served, mut refused) = (0, 0);
    while refused < 3 {
        let r = chat(
            &g,
            &key,
            json!({"model": "gpt-4o", "max_tokens": 20, "messages": msgs()}),
            &[],
        );
        match r.status().as_u16() {
            200 => served += 1,
            429 => refused += 1,
            s => panic!("unexpected {s}"),
        }
        assert!(served < 50);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let rep = get_json(
        &format!("{}/admin/reports?group_by=user", g.url),
        Some(ADMIN_KEY),
    );
    let row = &rep["rows"][0];
    assert_eq!(row["user"], "rex");
    assert_eq!(
        (row["requests"].as_u64(), row["refused"].as_u64()),
        (Some(served), Some(3)),
        "{rep}"
    );
    assert_eq!(rep["total"]["refused"], 3);
    let csv = ok(g.cli(&["usage", "report", "--by", "user", "--format", "csv"]));
    assert!(csv.starts_with("user,requests,refused,"), "{csv}");
    assert!(csv.contains(&format!("rex,{served},3,")), "{csv}");
}

#[test]
fn regression_streamed_responses_carry_the_budget_state_with_their_reservation() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        r#"budgets:
  overrides:
    - { id: tiny-user, scope: user, subject: acme/sam, limit_usd: "0.0001", period: daily }
    - { id: roomy-tenant, scope: tenant, subject: acme, limit_usd: "1", period: daily }
"#,
    );
    let (_, key) = g.create_key(json!({"user": "sam", "tenant": "acme"}));
    let r = chat(
        &g,
        &key,
        json!({"model": "gpt-4o-mini", "max_tokens": 1000, "stream": true, "messages": msgs()}),
        &[],
    );
    assert_eq!(r.status(), 200);
    let h = |n: &str| r.headers()[n].to_str().unwrap().to_string();
    assert_eq!(
        h("x-budget-id"),
        "tiny-user",
        "the tightest budget is the one that capped"
    );
    assert_ne!(h("x-budget-status"), "ok");
    let remaining = usd(&h("x-budget-remaining"));
    assert!(
        remaining < usd("0.00002"),
        "the capped reservation is counted: {remaining}"
    );
    let _ = r.text();
}

#[test]
fn regression_a_budget_added_to_the_config_mid_period_counts_the_periods_spend() {
    let m = Mock::start(&[]);
    let mut g = Gateway::start(&m);
    let (_, key) = g.create_key(json!({"user": "cleo"}));
    for _ in 0..2 {
        let r = chat(
            &g,
            &key,
            json!({"model": "gpt-4o", "max_tokens": 20, "messages": msgs()}),
            &[],
        );
        assert_eq!(r.status(), 200);
    }
    g.terminate();
    let yaml = std::fs::read_to_string(&g.config).unwrap()
        + "budgets:\n  defaults:\n    user: { limit_tokens: 100000, period: monthly }\n";
    std::fs::write(&g.config, yaml).unwrap();
    g.restart();
    let usage = get_json(&format!("{}/usage", g.url), Some(&key));
    let used = usage["budgets"][0]["used_tokens"].as_u64().unwrap();
    assert!(used > 40, "the month's two requests count: {usage}");
    // Counted once: a restart does not count them again.
    g.terminate();
    g.restart();
    let usage = get_json(&format!("{}/usage", g.url), Some(&key));
    assert_eq!(
        usage["budgets"][0]["used_tokens"].as_u64(),
        Some(used),
        "{usage}"
    );
}

/// `tollgate budgets set` takes the soft settings (action, downgrade
/// model, throttle rate, warnings, messages, footer, low thresholds), and
/// refuses a downgrade model the gateway cannot serve.
#[test]
fn budgets_cli_sets_soft_limits() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let out = g.cli(&[
        "budgets",
        "set",
        "--id",
        "cli-soft",
        "--scope",
        "user",
        "--subject",
        "hal",
        "--limit-usd",
        "2",
        "--period",
        "daily",
        "--action",
        "downgrade",
        "--downgrade-to",
        "gpt-4o-mini",
        "--warning",
        "75:You've used {percent_used}%",
        "--refusal-message",
        "Done for the {period}.",
        "--footer",
        "Used {usd_used}",
        "--low-threshold-usd",
        "0.50",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = loaded_budget(&g, "cli-soft");
    let b = &v["budget"];
    assert_eq!(b["action"], "downgrade", "{v}");
    assert_eq!(b["downgrade_to"], "gpt-4o-mini");
    assert_eq!(b["warnings"][0]["at_pct"], 75);
    assert_eq!(b["messages"]["refusal"], "Done for the {period}.");
    assert_eq!(b["footer"], "Used {usd_used}");
    assert_eq!(b["low_threshold_usd"], "0.500000");
    let bad = g.cli(&[
        "budgets",
        "set",
        "--scope",
        "user",
        "--subject",
        "hal",
        "--limit-usd",
        "2",
        "--action",
        "downgrade",
        "--downgrade-to",
        "llama-9000",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("downgrade_to"));
    let bad = g.cli(&[
        "budgets",
        "set",
        "--scope",
        "user",
        "--subject",
        "hal",
        "--limit-usd",
        "2",
        "--warning",
        "seventy:oops",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a percentage"));
}

/// `GET /admin/budgets/{id}` once the running gateway has loaded a budget
/// the CLI stored (its refresh reads the store every few seconds).
fn loaded_budget(g: &Gateway, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client()
            .get(format!("{}/admin/budgets/{id}", g.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .unwrap();
        if resp.status() == 200 {
            return resp.json::<Value>().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "{id} never loaded");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn regression_two_tenants_users_of_the_same_name_never_share_a_budget() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        "budgets:\n  defaults:\n    user: { limit_usd: \"0.0005\", period: daily }\n",
    );
    let (_, acme) = g.create_key(json!({"user": "alice", "tenant": "acme"}));
    let (_, globex) = g.create_key(json!({"user": "alice", "tenant": "globex"}));
    let mut refused = false;
    for _ in 0..50 {
        let r = chat(
            &g,
            &acme,
            json!({"model": "gpt-4o", "max_tokens": 20, "messages": msgs()}),
            &[],
        );
        if r.status() == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "acme's alice reached her budget");
    let usage = |key: &str| -> Value {
        client()
            .get(format!("{}/usage", g.url))
            .bearer_auth(key)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let theirs = usage(&globex);
    assert_eq!(theirs["user"], "globex/alice", "{theirs}");
    assert_eq!(theirs["budgets"][0]["used_usd"], "0.000000", "{theirs}");
    let r = chat(
        &g,
        &globex,
        json!({"model": "gpt-4o", "max_tokens": 20, "messages": msgs()}),
        &[],
    );
    assert_eq!(r.status(), 200, "globex's alice has her own budget");
    assert_eq!(usage(&acme)["budgets"][0]["subject"], "acme/alice");
}
