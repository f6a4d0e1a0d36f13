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
