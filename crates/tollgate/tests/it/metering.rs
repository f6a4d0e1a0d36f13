//! Every wire format, streaming and not: the client gets an intact
//! response, the record's tokens equal what the mock billed, and the cost
//! equals the hand-computed price to the last unit.

use serde_json::{Value, json};

use crate::harness::*;

struct Call {
    path: &'static str,
    body: Value,
    headers: Vec<(&'static str, &'static str)>,
}

fn send(g: &Gateway, key: &str, c: &Call) -> (String, reqwest::blocking::Response) {
    let mut r = client().post(format!("{}{}", g.url, c.path)).json(&c.body);
    r = if c.path.starts_with("/v1/messages") {
        r.header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
    } else if c.path.starts_with("/v1beta") {
        r.header("x-goog-api-key", key)
    } else {
        r.bearer_auth(key)
    };
    for (k, v) in &c.headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().unwrap();
    assert_eq!(resp.status(), 200, "{}", c.path);
    let id = request_id(&resp);
    (id, resp)
}

/// Checks the record against the mock's bill and returns it.
fn check_record(g: &Gateway, m: &Mock, id: &str) -> Value {
    let rec = g.record(id);
    let bill = m.billed(id);
    assert_eq!(bill["completed"], true);
    for (rec_field, bill_field) in [
        ("input_tokens", "input_tokens"),
        ("output_tokens", "output_tokens"),
        ("cached_input_tokens", "cached_input_tokens"),
        ("cache_write_5m_tokens", "cache_write_5m_tokens"),
        ("cache_write_1h_tokens", "cache_write_1h_tokens"),
        ("reasoning_tokens", "reasoning_tokens"),
    ] {
        assert_eq!(
            rec[rec_field], bill["usage"][bill_field],
            "{rec_field} of {id}: {rec} vs {bill}"
        );
    }
    assert_eq!(rec["flags"], json!([]), "{rec}");
    rec
}

fn tokens(rec: &Value, f: &str) -> i128 {
    i128::from(rec[f].as_u64().unwrap() as i64)
}

/// Units per token of a price in USD per million tokens.
fn per_mtok(s: &str) -> i128 {
    usd(s) / 1_000_000
}

#[test]
fn openai_chat_plain_and_streamed_with_cache_and_reasoning() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    let msgs = json!([{"role": "user", "content": "hello there"}]);
    let knobs = vec![
        ("x-mock-cached-tokens", "1000"),
        ("x-mock-reasoning-tokens", "30"),
        ("x-mock-output-tokens", "12"),
    ];
    for stream in [false, true] {
        let c = Call {
            path: "/v1/chat/completions",
            body: json!({"model": "o4-mini", "messages": msgs, "stream": stream}),
            headers: knobs.clone(),
        };
        let (id, resp) = send(&g, &key, &c);
        let text = resp.text().unwrap();
        if stream {
            // The usage chunk Tollgate asked for is not shown to a client that did not.
            assert!(!text.contains("\"usage\":{"), "{text}");
            assert!(text.trim_end().ends_with("data: [DONE]"));
            assert_eq!(text.matches("\"content\":\" ").count(), 12);
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                v["usage"]["completion_tokens_details"]["reasoning_tokens"],
                30
            );
        }
        let rec = check_record(&g, &m, &id);
        assert_eq!(rec["model_served"], "o4-mini");
        assert_eq!(rec["user"], "acme/alice");
        assert_eq!(rec["tenant"], "acme");
        // o4-mini: $1.10 in, $0.275 cached, $4.40 out; reasoning billed as output.
        let uncached = tokens(&rec, "input_tokens") - 1000;
        let expected =
            uncached * per_mtok("1.10") + 1000 * per_mtok("0.275") + (12 + 30) * per_mtok("4.40");
        assert_eq!(cost_units(&rec), expected, "{rec}");
        assert!(rec["ttft_ms"].is_u64());
    }
}

#[test]
fn openai_stream_keeps_usage_chunk_the_client_asked_for() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    let c = Call {
        path: "/v1/chat/completions",
        body: json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}}),
        headers: vec![],
    };
    let (id, resp) = send(&g, &key, &c);
    let text = resp.text().unwrap();
    assert!(text.contains("\"usage\":{"), "{text}");
    check_record(&g, &m, &id);
}

#[test]
fn completions_embeddings_and_responses() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    let calls = [
        Call {
            path: "/v1/completions",
            body: json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon", "max_tokens": 7}),
            headers: vec![],
        },
        Call {
            path: "/v1/completions",
            body: json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon", "stream": true}),
            headers: vec![],
        },
        Call {
            path: "/v1/embeddings",
            body: json!({"model": "text-embedding-3-small", "input": ["a b c", "d e"]}),
            headers: vec![],
        },
        Call {
            path: "/v1/responses",
            body: json!({"model": "gpt-4.1", "input": "hello", "max_output_tokens": 9}),
            headers: vec![("x-mock-cached-tokens", "64")],
        },
        Call {
            path: "/v1/responses",
            body: json!({"model": "gpt-4.1", "input": "hello", "stream": true}),
            headers: vec![("x-mock-reasoning-tokens", "5")],
        },
    ];
    for c in &calls {
        let (id, resp) = send(&g, &key, c);
        let _ = resp.bytes().unwrap();
        let rec = check_record(&g, &m, &id);
        assert!(cost_units(&rec) > 0, "{rec}");
    }
    let capped = g
        .records()
        .into_iter()
        .find(|r| r["model_served"] == "gpt-3.5-turbo-instruct" && r["output_tokens"] == 7);
    assert!(
        capped.is_some(),
        "max_tokens honoured by the mock and metered"
    );
}

/// Regression (LiteLLM #9812, #6575): Anthropic cache writes charged twice
/// or at the wrong rate, 5-minute and 1-hour writes confused.
#[test]
fn anthropic_cache_writes_metered_and_priced_once_each() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    for stream in [false, true] {
        let c = Call {
            path: "/v1/messages",
            body: json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
            headers: vec![
                ("x-mock-cache-write-5m-tokens", "2000"),
                ("x-mock-cache-write-1h-tokens", "1000"),
                ("x-mock-cached-tokens", "500"),
                ("x-mock-output-tokens", "10"),
            ],
        };
        let (id, resp) = send(&g, &key, &c);
        let body = resp.text().unwrap();
        if stream {
            assert!(body.contains("event: message_stop"));
        }
        let rec = check_record(&g, &m, &id);
        let plain = tokens(&rec, "input_tokens") - 3500;
        let expected = plain * per_mtok("3")
            + 2000 * per_mtok("3.75")
            + 1000 * per_mtok("6")
            + 500 * per_mtok("0.30")
            + 10 * per_mtok("15");
        assert_eq!(cost_units(&rec), expected, "{rec}");
    }
}

/// Regression: long-context tiers ignored (a 300k-token Gemini prompt
/// priced at the short-prompt rate). Also: thoughts billed as output.
#[test]
fn gemini_native_long_context_and_thoughts() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    let paths = [
        "/v1beta/models/gemini-2.5-pro:generateContent",
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
    ];
    for path in paths {
        let c = Call {
            path,
            body: json!({"contents": [{"parts": [{"text": "long"}]}]}),
            headers: vec![
                ("x-mock-input-tokens", "300000"),
                ("x-mock-reasoning-tokens", "100"),
                ("x-mock-output-tokens", "20"),
            ],
        };
        let (id, resp) = send(&g, &key, &c);
        let _ = resp.bytes().unwrap();
        let rec = check_record(&g, &m, &id);
        assert_eq!(rec["input_tokens"], 300_000);
        // Above 200k: $2.50 in, $15 out (thoughts at the output rate).
        assert_eq!(
            cost_units(&rec),
            300_000 * per_mtok("2.50") + 120 * per_mtok("15"),
            "{path}: {rec}"
        );
    }
    // Gemini's ?key= works too and never reaches the provider.
    let resp = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash:generateContent?key={key}",
            g.url
        ))
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn aliases_custom_prices_and_model_listing() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    let c = Call {
        path: "/v1/chat/completions",
        body: json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}),
        headers: vec![],
    };
    let (id, resp) = send(&g, &key, &c);
    let v: Value = resp.json().unwrap();
    assert_eq!(
        v["model"], "gpt-4o-mini",
        "the upstream saw the alias's target"
    );
    let rec = check_record(&g, &m, &id);
    assert_eq!(
        (
            rec["model_requested"].as_str(),
            rec["model_served"].as_str()
        ),
        (Some("fast"), Some("gpt-4o-mini"))
    );

    let c = Call {
        path: "/v1/chat/completions",
        body: json!({"model": "my-finetune", "messages": [{"role": "user", "content": "hi"}]}),
        headers: vec![("x-mock-output-tokens", "10")],
    };
    let (id, _) = send(&g, &key, &c);
    let rec = check_record(&g, &m, &id);
    assert_eq!(
        cost_units(&rec),
        tokens(&rec, "input_tokens") * per_mtok("0.30") + 10 * per_mtok("1.20")
    );

    // A key limited to some models sees only those, and is refused others.
    let (_, limited) = g.create_key(json!({"user": "bob", "models": ["gpt-4o*"]}));
    let list: Value = client()
        .get(format!("{}/v1/models", g.url))
        .bearer_auth(&limited)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"gpt-4o") && ids.contains(&"gpt-4o-mini"),
        "{ids:?}"
    );
    assert!(ids.iter().all(|i| i.starts_with("gpt-4o")), "{ids:?}");
    let resp = client()
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(&limited)
        .json(&json!({"model": "gpt-4.1", "messages": []}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403);
}
