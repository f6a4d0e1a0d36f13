//! `/metrics` against the real binary: behind an admin key, parsed by the
//! official Prometheus client's text-format parser, counters equal to the
//! records.

use serde_json::{Value, json};

use crate::harness::*;

/// Sums from the exposition, parsed by `prometheus_client.parser`.
const SUMMARY: &str = r#"
import json, sys
from decimal import Decimal
from prometheus_client.parser import text_string_to_metric_families
out = {"requests": 0, "cost": Decimal(0), "input": 0, "output": 0, "refusals": {}, "durations": 0, "overheads": 0, "names": [], "ratios": {}}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out["names"].append(fam.name)
    for s in fam.samples:
        if s.name == "tollgate_requests_total":
            out["requests"] += int(s.value)
        elif s.name == "tollgate_cost_usd_total":
            out["cost"] += Decimal(repr(s.value))
        elif s.name == "tollgate_tokens_total" and s.labels["kind"] in ("input", "output"):
            out[s.labels["kind"]] += int(s.value)
        elif s.name == "tollgate_refusals_total":
            out["refusals"][s.labels["reason"]] = int(s.value)
        elif s.name == "tollgate_budget_used_ratio":
            out["ratios"][s.labels["budget"]] = s.value
        elif s.name == "tollgate_request_duration_seconds_count":
            out["durations"] = int(s.value)
        elif s.name == "tollgate_overhead_seconds_count":
            out["overheads"] = int(s.value)
out["cost"] = str(out["cost"])
print(json.dumps(out))
"#;

#[test]
fn metrics_parse_and_equal_the_records() {
    let m = Mock::start(&[]);
    // `/metrics` also on a listener of its own, open to the scraper.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let g = Gateway::start_with(
        &m,
        &format!("metrics: {{ listen: \"127.0.0.1:{port}\", require_admin_key: false }}\n"),
    );
    let (_, key) = g.create_key(json!({"name": "p", "user": "prom"}));
    post_json(
        &format!("{}/admin/budgets", g.url),
        Some(ADMIN_KEY),
        &json!({"id": "prom-budget", "scope": "user", "subject": "prom", "limit_tokens": 200, "period": "daily", "metrics": true}),
    );
    let c = client();
    let mut refused = 0;
    for i in 0..12 {
        let (path, body) = match i % 3 {
            0 => (
                "/v1/chat/completions",
                json!({"model": "gpt-4o-mini", "max_tokens": 30, "messages": [{"role": "user", "content": "hi"}]}),
            ),
            1 => (
                "/v1/messages",
                json!({"model": "claude-haiku-4-5", "max_tokens": 30, "messages": [{"role": "user", "content": "hi"}]}),
            ),
            _ => (
                "/v1beta/models/gemini-2.5-flash:generateContent",
                json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 30}}),
            ),
        };
        let r = c
            .post(format!("{}{path}", g.url))
            .bearer_auth(&key)
            .header("x-api-key", &key)
            .header("x-goog-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .header("x-mock-output-tokens", "30")
            .json(&body)
            .send()
            .unwrap();
        if r.status() == 429 {
            refused += 1;
        }
    }
    assert!(refused > 0, "the budget refused some");
    let records = g.records();
    let anonymous = c.get(format!("{}/metrics", g.url)).send().unwrap();
    assert_eq!(anonymous.status(), 401, "metrics need an admin key");
    let text = g.metrics();
    let own = c
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .unwrap();
    assert_eq!(own.status(), 200, "the metrics listener needs no key");
    let own = own.text().unwrap();
    let counters = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("tollgate_requests_total"))
            .map(String::from)
            .collect()
    };
    assert_eq!(counters(&own), counters(&text), "the same counters on both");
    let only = c
        .get(format!("http://127.0.0.1:{port}/admin/keys"))
        .send()
        .unwrap();
    assert_eq!(
        only.status(),
        404,
        "the metrics listener serves /metrics only"
    );
    let mut py = std::process::Command::new(crate::sdk::python())
        .arg("-c")
        .arg(SUMMARY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success(), "the exposition parses: {text}");
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got["requests"].as_u64().unwrap() as usize,
        records.len(),
        "{got}"
    );
    let cost: i128 = records.iter().map(cost_units).sum();
    assert_eq!(usd(got["cost"].as_str().unwrap()), cost, "{got}");
    let sum = |f: &str| records.iter().map(|r| r[f].as_u64().unwrap()).sum::<u64>();
    assert_eq!(got["input"].as_u64().unwrap(), sum("input_tokens"));
    assert_eq!(got["output"].as_u64().unwrap(), sum("output_tokens"));
    let blocked = records.iter().filter(|r| has_flag(r, "blocked")).count() as u64;
    assert_eq!(blocked, refused);
    assert_eq!(got["refusals"]["budget_exceeded"], blocked);
    assert_eq!(
        got["durations"].as_u64().unwrap(),
        records.len() as u64 - blocked
    );
    // Every forwarded request has its overhead observed; refusals none.
    assert_eq!(
        got["overheads"].as_u64().unwrap(),
        records.len() as u64 - blocked
    );
    // The budget marked `metrics: true` is a gauge of spent over limit.
    let b = get_json(
        &format!("{}/admin/budgets/prom-budget", g.url),
        Some(ADMIN_KEY),
    );
    let used = b["instances"][0]["used_tokens"].as_u64().unwrap() as f64;
    let ratio = got["ratios"]["prom-budget"].as_f64().unwrap();
    assert!(
        (ratio - used / 200.0).abs() < 1e-9,
        "{ratio} vs {used}/200: {got}"
    );
    assert_eq!(
        got["ratios"].as_object().unwrap().len(),
        1,
        "only marked budgets: {got}"
    );
    for name in [
        "tollgate_requests",
        "tollgate_tokens",
        "tollgate_cost_usd",
        "tollgate_journal_entries_written",
        "tollgate_overhead_seconds",
        "tollgate_webhook_deliveries",
    ] {
        assert!(
            got["names"].as_array().unwrap().iter().any(|n| n == name),
            "{name}: {got}"
        );
    }
}
