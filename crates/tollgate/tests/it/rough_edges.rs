//! Regression tests for rough edges a new user hit: each test is named
//! after the behaviour it pins.

use serde_json::{Value, json};

use crate::harness::*;

fn content_type(r: &reqwest::blocking::Response) -> String {
    r.headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn regression_unknown_routes_and_bad_queries_answer_json() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let c = client();
    // Provider paths answer in the caller's wire format.
    let r = c.post(format!("{}/v1/nope", g.url)).send().unwrap();
    assert_eq!(r.status(), 404);
    assert!(content_type(&r).starts_with("application/json"));
    let v: Value = r.json().unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("/v1/nope"),
        "{v}"
    );
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let r = c
        .post(format!("{}/v1/messages/batches", g.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().unwrap();
    assert_eq!(v["type"], "error", "Anthropic's error shape: {v}");

    let r = c
        .get(format!("{}/v1beta/models/x:generateContent", g.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().unwrap();
    assert_eq!(
        v["error"]["status"], "NOT_FOUND",
        "Gemini's error shape: {v}"
    );

    // Elsewhere: the admin error shape.
    for (path, status) in [
        ("/nothing-here", 404),
        ("/admin/records?limit=abc", 400),
        ("/admin/nothing", 404),
    ] {
        let r = c
            .get(format!("{}{path}", g.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert!(content_type(&r).starts_with("application/json"), "{path}");
        let v: Value = r.json().unwrap();
        assert!(
            !v["error"]["message"].as_str().unwrap().is_empty(),
            "{path}: {v}"
        );
        assert!(v["error"]["type"].is_string(), "{path}: {v}");
    }
}

#[test]
fn regression_gemini_v1_paths_and_count_tokens_are_served() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    let c = client();
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]});
    let r = c
        .post(format!(
            "{}/v1/models/gemini-2.5-flash:generateContent",
            g.url
        ))
        .header("x-goog-api-key", &key)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let v: Value = r.json().unwrap();
    assert!(v["usageMetadata"]["promptTokenCount"].as_u64().unwrap() > 0);
    assert!(cost_units(&g.record(&id)) > 0, "the v1 call is metered");

    for prefix in ["v1", "v1beta"] {
        let r = c
            .post(format!(
                "{}/{prefix}/models/gemini-2.5-flash:countTokens",
                g.url
            ))
            .header("x-goog-api-key", &key)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{prefix}");
        let v: Value = r.json().unwrap();
        assert!(v["totalTokens"].as_u64().unwrap() > 0, "{v}");
    }
}

#[test]
fn regression_alert_settings_are_acted_on_or_refused_never_silently_stored() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    // Without an allow-list no webhook may be set; a zero threshold is no
    // percentage.
    for (field, value, says) in [
        ("alert_thresholds", json!([0, 80]), "1..=255"),
        (
            "webhook_url",
            json!("https://hooks.example.com/x"),
            "allow_hosts",
        ),
    ] {
        let mut body =
            json!({"scope": "user", "subject": "alice", "limit_usd": "1", "period": "daily"});
        body[field] = value;
        let r = client()
            .post(format!("{}/admin/budgets", g.url))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{field}");
        let v: Value = r.json().unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field) && msg.contains(says), "{msg}");
    }
    let listed = get_json(&format!("{}/admin/budgets", g.url), Some(ADMIN_KEY));
    assert_eq!(listed["budgets"].as_array().unwrap().len(), 0, "{listed}");
    // The same in the config file: the gateway does not start.
    let yaml = std::fs::read_to_string(&g.config).unwrap()
        + "budgets:\n  defaults:\n    user: { limit_usd: \"1\", period: daily, webhook_url: \"https://hooks.example.com/x\" }\n";
    std::fs::write(&g.config, yaml).unwrap();
    let (ok, text) = g.check_config();
    assert!(!ok, "{text}");
    assert!(
        text.contains("webhook_url") && text.contains("hooks.example.com"),
        "{text}"
    );
}

#[test]
fn regression_pricing_put_changes_only_the_fields_sent_and_get_answers() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let c = client();
    let url = format!("{}/admin/pricing/gpt-4o", g.url);
    let before = get_json(&url, Some(ADMIN_KEY));
    assert_eq!(before["model"], "gpt-4o");
    assert_eq!(before["cached_input_per_mtok"], "1.25", "{before}");
    let r = c
        .put(&url)
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"input_per_mtok": "3"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let after: Value = r.json().unwrap();
    assert_eq!(after["input_per_mtok"], "3");
    assert_eq!(after["output_per_mtok"], before["output_per_mtok"]);
    assert_eq!(after["cached_input_per_mtok"], "1.25", "kept: {after}");
    assert_eq!(after["provider"], "openai");
    assert_eq!(after["source"], "admin");
    // `null` clears an optional field; unknown fields are refused.
    let after: Value = c
        .put(&url)
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"cached_input_per_mtok": null}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(after.get("cached_input_per_mtok").is_none(), "{after}");
    let r = c
        .put(&url)
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"input_per_mtokk": "1"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    // A model without a price needs its input price.
    let r = c
        .put(format!("{}/admin/pricing/my-new", g.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"output_per_mtok": "1"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .get(format!("{}/admin/pricing/my-new", g.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    // The stored change survives a restart, provider included.
    let r = c
        .put(format!("{}/admin/pricing/my-new", g.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"input_per_mtok": "1", "output_per_mtok": "2", "provider": "openai"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut g = g;
    g.terminate();
    g.restart();
    let e = get_json(&format!("{}/admin/pricing/my-new", g.url), Some(ADMIN_KEY));
    assert_eq!(
        (e["input_per_mtok"].as_str(), e["provider"].as_str()),
        (Some("1"), Some("openai")),
        "{e}"
    );
    let e = get_json(&format!("{}/admin/pricing/gpt-4o", g.url), Some(ADMIN_KEY));
    assert_eq!(e["input_per_mtok"], "3");
}
