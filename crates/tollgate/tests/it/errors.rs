//! Bad input and failures: each answered with the right status and the
//! caller's native error body; nothing recorded twice, nothing lost.

use serde_json::{Value, json};

use crate::harness::*;

#[derive(Clone, Copy, Debug)]
enum Fmt {
    OpenAi,
    Anthropic,
    Gemini,
}

fn post(
    g: &Gateway,
    fmt: Fmt,
    key: Option<&str>,
    model: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let (path, body) = match fmt {
        Fmt::OpenAi => (
            "/v1/chat/completions".to_string(),
            body.replace("$MODEL", model),
        ),
        Fmt::Anthropic => ("/v1/messages".to_string(), body.replace("$MODEL", model)),
        Fmt::Gemini => (
            format!("/v1beta/models/{model}:generateContent"),
            body.replace("$MODEL", model),
        ),
    };
    let mut r = client()
        .post(format!("{}{path}", g.url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        r = match fmt {
            Fmt::OpenAi => r.bearer_auth(k),
            Fmt::Anthropic => r.header("x-api-key", k),
            Fmt::Gemini => r.header("x-goog-api-key", k),
        };
    }
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    let resp = r.send().unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, v, headers)
}

/// Asserts the body is `fmt`'s native error shape.
fn assert_native(fmt: Fmt, v: &Value, status: u16) {
    match fmt {
        Fmt::OpenAi => {
            assert!(v["error"]["message"].is_string(), "{v}");
            assert!(v["error"]["type"].is_string(), "{v}");
        }
        Fmt::Anthropic => {
            assert_eq!(v["type"], "error", "{v}");
            assert!(
                v["error"]["type"].is_string() && v["error"]["message"].is_string(),
                "{v}"
            );
        }
        Fmt::Gemini => {
            assert_eq!(v["error"]["code"], status, "{v}");
            assert!(v["error"]["status"].is_string(), "{v}");
        }
    }
}

const ALL: [Fmt; 3] = [Fmt::OpenAi, Fmt::Anthropic, Fmt::Gemini];

fn model_for(fmt: Fmt) -> &'static str {
    match fmt {
        Fmt::OpenAi => "gpt-4o-mini",
        Fmt::Anthropic => "claude-haiku-4-5",
        Fmt::Gemini => "gemini-2.5-flash",
    }
}

const GOOD: &str = r#"{"model":"$MODEL","max_tokens":50,"messages":[{"role":"user","content":"hi"}],"contents":[{"parts":[{"text":"hi"}]}]}"#;

#[test]
fn bad_keys_get_native_401() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let (revoked_id, revoked) = g.create_key(json!({"user": "r"}));
    let resp = client()
        .delete(format!("{}/admin/keys/{revoked_id}", g.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, expired) = g.create_key(json!({"user": "e", "expires_at": "2020-01-01T00:00:00Z"}));
    for fmt in ALL {
        for (key, why) in [
            (None, "missing"),
            (Some("tg-not-a-real-key"), "invalid"),
            (Some(revoked.as_str()), "revoked"),
            (Some(expired.as_str()), "expired"),
        ] {
            let (status, v, headers) = post(&g, fmt, key, model_for(fmt), GOOD, &[]);
            assert_eq!(status, 401, "{fmt:?} {why}: {v}");
            assert_native(fmt, &v, 401);
            assert_eq!(headers["x-should-retry"], "false");
            let msg = match fmt {
                Fmt::Gemini => v["error"]["message"].as_str().unwrap().to_string(),
                _ => v["error"]["message"].as_str().unwrap().to_string(),
            };
            assert!(
                msg.contains(why) || (why == "invalid" && msg.contains("invalid")),
                "{fmt:?} {why}: {msg}"
            );
        }
    }
    assert!(
        g.records().is_empty(),
        "refused requests write no usage record"
    );
    assert!(
        m.billing()["requests"].as_array().unwrap().is_empty(),
        "nothing reached the provider"
    );
}

#[test]
fn malformed_bodies_and_models_get_native_4xx() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    for fmt in ALL {
        let model = model_for(fmt);
        let mut cases: Vec<(&str, String, u16)> = vec![
            ("malformed JSON", "{\"model\": ".into(), 400),
            ("not an object", "[1,2]".into(), 400),
        ];
        if matches!(fmt, Fmt::Gemini) {
            cases.push((
                "bad maxOutputTokens",
                r#"{"contents":[],"generationConfig":{"maxOutputTokens":-3}}"#.into(),
                400,
            ));
        } else {
            cases.push(("bad max_tokens", GOOD.replace("50", "-3"), 400));
        }
        if !matches!(fmt, Fmt::Gemini) {
            cases.push(("missing model", r#"{"messages":[]}"#.into(), 400));
        }
        for (what, body, want) in &cases {
            let (status, v, _) = post(&g, fmt, Some(&key), model, body, &[]);
            assert_eq!(status, *want, "{fmt:?} {what}: {v}");
            assert_native(fmt, &v, status);
        }
        let unknown = match fmt {
            Fmt::Gemini => "gemma-unknown",
            _ => "llama-unknown",
        };
        let (status, v, _) = post(&g, fmt, Some(&key), unknown, GOOD, &[]);
        assert_eq!(status, 404, "{fmt:?} unknown model: {v}");
        assert_native(fmt, &v, 404);
    }
    // Routed (my-*) but without a price: refused, never free.
    let (status, v, _) = post(&g, Fmt::OpenAi, Some(&key), "my-unpriced", GOOD, &[]);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "model_not_priced");
    // A Claude model through the OpenAI route: told where to go.
    let (status, v, _) = post(&g, Fmt::OpenAi, Some(&key), "claude-haiku-4-5", GOOD, &[]);
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/messages"),
        "{v}"
    );
    assert!(g.records().is_empty());
    assert!(m.billing()["requests"].as_array().unwrap().is_empty());
}

#[test]
fn oversize_body_gets_413() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    let big = format!(
        r#"{{"model":"$MODEL","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(100_000)
    );
    for fmt in ALL {
        let (status, v, _) = post(&g, fmt, Some(&key), model_for(fmt), &big, &[]);
        assert_eq!(status, 413, "{fmt:?}: {v}");
        assert_native(fmt, &v, 413);
    }
    // Chunked, without a content-length: the limit still holds.
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(
        big.replace("$MODEL", "gpt-4o").into_bytes(),
    ));
    let resp = client()
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(&key)
        .body(body)
        .send();
    let resp = resp.unwrap_or_else(|e| panic!("chunked oversize request: {e:?}"));
    assert_eq!(resp.status(), 413);
    assert!(g.records().is_empty());
}

#[test]
fn upstream_errors_pass_through_and_are_recorded_once() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    for fmt in ALL {
        for code in ["429", "500", "529"] {
            let (status, v, headers) = post(
                &g,
                fmt,
                Some(&key),
                model_for(fmt),
                GOOD,
                &[("x-mock-error", code)],
            );
            assert_eq!(status.to_string(), code, "{fmt:?}");
            assert_native(fmt, &v, status);
            assert!(
                v.to_string().contains(&format!("mock error {code}")),
                "the upstream's own body: {v}"
            );
            let id = headers["x-tollgate-request-id"].to_str().unwrap();
            let rec = g.record(id);
            assert_eq!(rec["status"].as_u64().unwrap().to_string(), code);
            assert_eq!(rec["cost_usd"], "0.000000");
        }
    }
    let n = g.records().len();
    assert_eq!(n, 9, "one record per forwarded request");
}

#[test]
fn timeouts_and_unreachable_upstreams() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    // timeout_ms is 3000 for the openai provider in the test config.
    let (status, v, _) = post(
        &g,
        Fmt::OpenAi,
        Some(&key),
        "gpt-4o-mini",
        GOOD,
        &[("x-mock-ttfb-ms", "5000")],
    );
    assert_eq!(status, 504, "{v}");
    assert_native(Fmt::OpenAi, &v, 504);
    let (status, v, _) = post(&g, Fmt::OpenAi, Some(&key), "dead-model", GOOD, &[]);
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{v}"
    );
}

#[test]
fn admin_api_requires_admin_key() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    for bearer in [None, Some("wrong-admin-key-xxxxxxxx"), Some(key.as_str())] {
        let mut r = client().get(format!("{}/admin/records", g.url));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        let resp = r.send().unwrap();
        assert_eq!(resp.status(), 401);
    }
    let health: Value = client()
        .get(format!("{}/health", g.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    // The key list never shows a key or its hash.
    let keys = get_json(&format!("{}/admin/keys", g.url), Some(ADMIN_KEY)).to_string();
    assert!(!keys.contains(&key) && !keys.contains("hash"), "{keys}");
    // Journal counters: what was written, and that nothing waited or failed.
    let stats = get_json(&format!("{}/admin/stats", g.url), Some(ADMIN_KEY));
    assert_eq!(stats["journal"]["write_errors"], 0, "{stats}");
    assert!(stats["models_priced"].as_u64().unwrap() > 30);
    // Provider keys are never returned or forwarded from the caller.
    let pricing = get_json(&format!("{}/admin/pricing", g.url), Some(ADMIN_KEY)).to_string();
    assert!(!pricing.contains(PROVIDER_KEY));
}
