//! The Cycles runtime API against the real binary, driven by the official
//! `runcycles` Python client (the tests live in `tests/cycles/`); every
//! response body is checked against the protocol's own schemas there.

use serde_json::json;

use crate::harness::*;

#[test]
fn official_runcycles_client() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(&m, "cycles:\n  tool_costs: { \"web.search\": \"0.003\" }\n");
    let (_, key) = g.create_key(json!({"name": "agents", "user": "runner", "tenant": "acme"}));
    let (_, other) = g.create_key(json!({"name": "globex", "user": "g", "tenant": "globex"}));
    post_json(
        &format!("{}/admin/budgets", g.url),
        Some(ADMIN_KEY),
        &json!({"scope": "tenant", "subject": "acme", "limit_usd": "100", "period": "lifetime"}),
    );
    let stdout = crate::sdk::pytest(
        "tests/cycles",
        &g,
        &[("CYCLES_KEY", &key), ("CYCLES_OTHER_KEY", &other)],
    );
    assert!(stdout.contains("passed"), "{stdout}");
    assert!(!stdout.contains("skipped"), "every test must run: {stdout}");
    println!("{stdout}");
    // A committed reservation is a usage record like a proxied call.
    let records = g.records();
    assert!(
        records
            .iter()
            .any(|r| r["provider"] == "cycles" && r["model_served"] == "web.search"),
        "{records:?}"
    );
}

/// Tool reservations and proxied model calls of one tenant, at once from
/// several threads, on one tenant budget: together they never pass it.
#[test]
fn tool_reservations_and_proxied_calls_share_one_budget_under_concurrency() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let (_, key) = g.create_key(json!({"name": "mixed", "user": "runner", "tenant": "mixed"}));
    post_json(
        &format!("{}/admin/budgets", g.url),
        Some(ADMIN_KEY),
        &json!({"id": "mixed-tenant", "scope": "tenant", "subject": "mixed", "limit_usd": "0.05", "period": "lifetime"}),
    );
    let tools_ok = std::sync::atomic::AtomicU64::new(0);
    let calls_ok = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..6 {
            let (g, key, tools_ok, calls_ok) = (&g, &key, &tools_ok, &calls_ok);
            s.spawn(move || {
                let c = client();
                for i in 0..12 {
                    if (t + i) % 2 == 0 {
                        // A tool call of half a cent, committed in full.
                        let r = c
                            .post(format!("{}/v1/reservations", g.url))
                            .header("x-cycles-api-key", key)
                            .json(&json!({"idempotency_key": format!("r-{t}-{i}"),
                                          "subject": {"agent": "bot"},
                                          "action": {"kind": "tool.search", "name": "web.search"},
                                          "estimate": {"unit": "USD_MICROCENTS", "amount": 500_000}}))
                            .send()
                            .unwrap();
                        if r.status() == 200 {
                            let id = r.json::<serde_json::Value>().unwrap()["reservation_id"]
                                .as_str()
                                .unwrap()
                                .to_string();
                            let c2 = c
                                .post(format!("{}/v1/reservations/{id}/commit", g.url))
                                .header("x-cycles-api-key", key)
                                .json(&json!({"idempotency_key": format!("c-{t}-{i}"),
                                              "actual": {"unit": "USD_MICROCENTS", "amount": 500_000}}))
                                .send()
                                .unwrap();
                            assert_eq!(c2.status(), 200);
                            tools_ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        } else {
                            assert_eq!(r.status(), 409);
                        }
                    } else {
                        // A model call of about half a cent.
                        let r = c
                            .post(format!("{}/v1/chat/completions", g.url))
                            .bearer_auth(key)
                            .header("x-mock-output-tokens", "400")
                            .json(&json!({"model": "gpt-4o", "max_tokens": 400,
                                          "messages": [{"role": "user", "content": "hi"}]}))
                            .send()
                            .unwrap();
                        match r.status().as_u16() {
                            200 => {
                                calls_ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            429 => {}
                            s => panic!("unexpected {s}"),
                        }
                    }
                }
            });
        }
    });
    let (tools, calls) = (tools_ok.into_inner(), calls_ok.into_inner());
    assert!(
        tools > 0 && calls > 0,
        "both kinds got through: {tools} tools, {calls} calls"
    );
    let records: Vec<_> = g
        .records()
        .into_iter()
        .filter(|r| r["tenant"] == "mixed")
        .collect();
    let spent: i128 = records.iter().map(cost_units).sum();
    assert!(
        spent <= usd("0.05"),
        "tools and calls together spent {spent} of a 0.05 budget"
    );
    assert!(
        spent > usd("0.04"),
        "the budget was used nearly to its limit: {spent}"
    );
    let b = get_json(
        &format!("{}/admin/budgets/mixed-tenant", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(
        usd(b["instances"][0]["used_usd"].as_str().unwrap()),
        spent,
        "{b}"
    );
    let tool_records = records.iter().filter(|r| r["provider"] == "cycles").count() as u64;
    assert_eq!(tool_records, tools);
}

/// A tenant holds at most `cycles.max_open_reservations` open at once:
/// beyond, 429 `LIMIT_EXCEEDED` with `Retry-After`; a release makes room.
#[test]
fn open_reservations_per_tenant_are_bounded() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(&m, "cycles:\n  max_open_reservations: 3\n");
    let (_, key) = g.create_key(json!({"name": "cap", "user": "u", "tenant": "capped"}));
    post_json(
        &format!("{}/admin/budgets", g.url),
        Some(ADMIN_KEY),
        &json!({"scope": "tenant", "subject": "capped", "limit_usd": "1", "period": "lifetime"}),
    );
    let c = client();
    let reserve = |i: u32| {
        c.post(format!("{}/v1/reservations", g.url))
            .header("x-cycles-api-key", &key)
            .json(
                &json!({"idempotency_key": format!("cap-{i}"), "subject": {"agent": "a"},
                          "action": {"kind": "tool.x", "name": "x"},
                          "estimate": {"unit": "USD_MICROCENTS", "amount": 0}}),
            )
            .send()
            .unwrap()
    };
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let r = reserve(i);
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().unwrap()["reservation_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let over = reserve(3);
    assert_eq!(over.status(), 429);
    assert_eq!(over.headers()["retry-after"], "1");
    let body: serde_json::Value = over.json().unwrap();
    assert_eq!(body["error"], "LIMIT_EXCEEDED", "{body}");
    let r = c
        .post(format!("{}/v1/reservations/{}/release", g.url, ids[0]))
        .header("x-cycles-api-key", &key)
        .json(&json!({"idempotency_key": "rel-0"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(reserve(4).status(), 200, "a release makes room");
}

/// The reservation log cannot be written (its file is `/dev/full`, where
/// every write fails as on a full disk). `fail: closed` refuses proxied
/// calls (503, the caller's format) and Cycles reservations (500
/// `INTERNAL_ERROR`) with nothing held; `fail: open` serves both with the
/// holds in memory — charged to the budget all the same, and counted.
#[test]
fn a_ledger_that_cannot_make_holds_durable_fails_closed_or_open_as_configured() {
    let m = Mock::start(&[]);
    for policy in ["closed", "open"] {
        let g = Gateway::start_with(
            &m,
            &format!("budgets:\n  fail: {policy}\ncycles:\n  fail: {policy}\n"),
        );
        std::os::unix::fs::symlink(
            "/dev/full",
            g._dir.path().join("tollgate.db-reservations.0"),
        )
        .expect("no reservation was logged yet");
        let (_, key) = g.create_key(json!({"name": "k", "user": "u", "tenant": "full"}));
        let budget = post_json(
            &format!("{}/admin/budgets", g.url),
            Some(ADMIN_KEY),
            &json!({"scope": "tenant", "subject": "full", "limit_usd": "1", "period": "lifetime"}),
        );
        let c = client();
        let chat = c
            .post(format!("{}/v1/chat/completions", g.url))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 20,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .unwrap();
        let status = chat.status().as_u16();
        let body: serde_json::Value = chat.json().unwrap();
        let reserve = c
            .post(format!("{}/v1/reservations", g.url))
            .header("x-cycles-api-key", &key)
            .json(
                &json!({"idempotency_key": "disk-full-1", "subject": {"agent": "bot"},
                          "action": {"kind": "tool.search", "name": "web.search"},
                          "estimate": {"unit": "USD_MICROCENTS", "amount": 1_000_000}}),
            )
            .send()
            .unwrap();
        let cycles_status = reserve.status().as_u16();
        let cycles_body: serde_json::Value = reserve.json().unwrap();
        let view = get_json(
            &format!("{}/admin/budgets/{}", g.url, budget["id"].as_str().unwrap()),
            Some(ADMIN_KEY),
        );
        if policy == "closed" {
            assert_eq!(status, 503, "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("durable"),
                "{body}"
            );
            assert_eq!(cycles_status, 500, "{cycles_body}");
            assert_eq!(cycles_body["error"], "INTERNAL_ERROR", "{cycles_body}");
            let state = &view["instances"][0];
            assert_eq!(state["reserved_usd"], "0.000000", "nothing held: {view}");
            assert_eq!(state["used_usd"], "0.000000", "nothing charged: {view}");
            assert!(
                g.metrics()
                    .contains("tollgate_ledger_holds_not_durable_total 0")
            );
        } else {
            assert_eq!(status, 200, "{body}");
            assert_eq!(cycles_status, 200, "{cycles_body}");
            let id = cycles_body["reservation_id"].as_str().unwrap();
            let commit = c
                .post(format!("{}/v1/reservations/{id}/commit", g.url))
                .header("x-cycles-api-key", &key)
                .json(&json!({"idempotency_key": "disk-full-2",
                              "actual": {"unit": "USD_MICROCENTS", "amount": 500_000}}))
                .send()
                .unwrap();
            assert_eq!(commit.status(), 200);
            let records = g.records();
            assert_eq!(records.len(), 2, "both charged: {records:?}");
            let view = get_json(
                &format!("{}/admin/budgets/{}", g.url, budget["id"].as_str().unwrap()),
                Some(ADMIN_KEY),
            );
            let used = view["instances"][0]["used_usd"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(
                used.as_str() > "0.005000",
                "the tool's half cent and the call: {view}"
            );
            assert!(
                g.metrics()
                    .contains("tollgate_ledger_holds_not_durable_total 2")
            );
        }
    }
}
