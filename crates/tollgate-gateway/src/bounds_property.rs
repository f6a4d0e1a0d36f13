//! The property that a budget holds whatever a request says: generated
//! requests in all three wire formats — every output bound and multiplier
//! present or absent, consistent or contradictory, with images (by URL and
//! inline, of random sizes), tools, token arrays, thinking budgets and both
//! Gemini spellings — go through the whole gateway to the mock provider,
//! which honours every field the way the providers document them (the most
//! generous reading where several apply). For every request:
//! - the mock's bill never exceeds what Tollgate reserved (the ledger
//!   counts a settlement beyond its reservation as overspend: it stays 0);
//! - what the mock billed costs no more than the budget's limit;
//! - a refused request never reaches the mock.

use base64::Engine;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use tollgate_core::{Catalog, Usage};

use crate::tests::rig;

const LIMIT_USD: &str = "0.002";

#[derive(Clone, Debug)]
enum Route {
    Chat,
    Completions,
    Responses,
    Messages,
    Gemini,
}

#[derive(Clone, Debug)]
enum Image {
    Url,
    Png(u32, u32),
}

#[derive(Clone, Debug)]
struct Case {
    route: Route,
    stream: bool,
    /// Values for the route's limit fields: none, one, or two (equal or not).
    limits: Vec<u64>,
    /// A multiplier (`n`, `best_of`, `candidateCount`), possibly out of range.
    choices: Option<u64>,
    second_choices: Option<u64>,
    images: Vec<Image>,
    tools: bool,
    token_ids: bool,
    thinking: Option<i64>,
    snake_case: bool,
    prompt_words: usize,
    output_knob: u64,
    reasoning_knob: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let route = prop_oneof![
        Just(Route::Chat),
        Just(Route::Completions),
        Just(Route::Responses),
        Just(Route::Messages),
        Just(Route::Gemini),
    ];
    let image = prop_oneof![
        Just(Image::Url),
        (1u32..5000, 1u32..5000).prop_map(|(w, h)| Image::Png(w, h)),
    ];
    (
        (
            route,
            any::<bool>(),
            prop_oneof![
                2 => (1u64..200_000).prop_map(|v| vec![v]),
                1 => Just(vec![]),
                1 => (1u64..200_000).prop_map(|v| vec![v, v]),
                1 => prop::collection::vec(1u64..200_000, 2),
            ],
            prop_oneof![
                3 => prop::option::of(1u64..=8),
                1 => prop::option::of(0u64..=130),
            ],
            prop_oneof![
                3 => prop::option::of(1u64..=8),
                1 => prop::option::of(0u64..=25),
            ],
            prop::collection::vec(image, 0..4),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            prop::option::of(-1i64..10_000),
            any::<bool>(),
            0usize..400,
            1u64..20_000,
            0u64..3_000,
        ),
    )
        .prop_map(
            |(
                (route, stream, limits, choices, second_choices, images),
                (tools, token_ids, thinking, snake_case, prompt_words, output_knob, reasoning_knob),
            )| Case {
                route,
                stream,
                limits,
                choices,
                second_choices,
                images,
                tools,
                token_ids,
                thinking,
                snake_case,
                prompt_words,
                output_knob,
                reasoning_knob,
            },
        )
}

fn png(w: u32, h: u32) -> String {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The request: (path, model, body, headers).
fn build(c: &Case) -> (String, &'static str, Value) {
    let text = "the quick brown fox 🎉 jumps, over 42 lazy dogs! ".repeat(c.prompt_words / 8 + 1);
    let tools = json!([{"type": "function", "function": {"name": "lookup", "description": "find a thing",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]);
    let mut body = Map::new();
    let put = |body: &mut Map<String, Value>, k: &str, v: Value| {
        body.insert(k.into(), v);
    };
    match c.route {
        Route::Chat | Route::Responses => {
            let mut parts = vec![
                json!({"type": if matches!(c.route, Route::Chat) { "text" } else { "input_text" }, "text": text}),
            ];
            for img in &c.images {
                let url = match img {
                    Image::Url => "https://img.example/a.png".to_string(),
                    Image::Png(w, h) => format!("data:image/png;base64,{}", png(*w, *h)),
                };
                parts.push(if matches!(c.route, Route::Chat) {
                    json!({"type": "image_url", "image_url": {"url": url}})
                } else {
                    json!({"type": "input_image", "image_url": url})
                });
            }
            let model = if c.images.is_empty() {
                "gpt-4o-mini"
            } else {
                "gpt-4o"
            };
            if matches!(c.route, Route::Chat) {
                put(
                    &mut body,
                    "messages",
                    json!([{"role": "user", "content": parts}]),
                );
                let fields = ["max_tokens", "max_completion_tokens"];
                for (f, v) in fields.iter().zip(&c.limits) {
                    put(&mut body, f, json!(v));
                }
                if let Some(n) = c.choices {
                    put(&mut body, "n", json!(n));
                }
                if c.tools {
                    put(&mut body, "tools", tools);
                }
                if c.stream {
                    put(&mut body, "stream", json!(true));
                }
                put(&mut body, "model", json!(model));
                return ("/v1/chat/completions".into(), model, Value::Object(body));
            }
            put(
                &mut body,
                "input",
                json!([{"role": "user", "content": parts}]),
            );
            if let Some(v) = c.limits.first() {
                put(&mut body, "max_output_tokens", json!(v));
            }
            if c.tools {
                put(
                    &mut body,
                    "tools",
                    json!([{"type": "function", "name": "lookup", "parameters": tools[0]["function"]["parameters"]}]),
                );
            }
            if c.stream {
                put(&mut body, "stream", json!(true));
            }
            let model = if c.images.is_empty() {
                "gpt-4.1"
            } else {
                model
            };
            put(&mut body, "model", json!(model));
            ("/v1/responses".into(), model, Value::Object(body))
        }
        Route::Completions => {
            let prompt = if c.token_ids {
                json!((0..c.prompt_words as u64 * 3).collect::<Vec<_>>())
            } else {
                json!(text)
            };
            put(&mut body, "prompt", prompt);
            if let Some(v) = c.limits.first() {
                put(&mut body, "max_tokens", json!(v));
            }
            if let Some(n) = c.choices {
                put(&mut body, "n", json!(n));
            }
            if let Some(b) = c.second_choices {
                put(&mut body, "best_of", json!(b));
            }
            if c.stream {
                put(&mut body, "stream", json!(true));
            }
            put(&mut body, "model", json!("gpt-3.5-turbo-instruct"));
            (
                "/v1/completions".into(),
                "gpt-3.5-turbo-instruct",
                Value::Object(body),
            )
        }
        Route::Messages => {
            let mut content = vec![json!({"type": "text", "text": text})];
            for img in &c.images {
                content.push(match img {
                    Image::Url => json!({"type": "image", "source": {"type": "url", "url": "https://img.example/a.png"}}),
                    Image::Png(w, h) => json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(*w, *h)}}),
                });
            }
            put(
                &mut body,
                "messages",
                json!([{"role": "user", "content": content}]),
            );
            if let Some(v) = c.limits.first() {
                put(&mut body, "max_tokens", json!(v));
            }
            if let Some(t) = c.thinking {
                put(
                    &mut body,
                    "thinking",
                    json!({"type": "enabled", "budget_tokens": t}),
                );
            }
            if c.tools {
                put(
                    &mut body,
                    "tools",
                    json!([{"name": "lookup", "description": "find", "input_schema": tools[0]["function"]["parameters"]}]),
                );
            }
            if c.stream {
                put(&mut body, "stream", json!(true));
            }
            put(&mut body, "model", json!("claude-haiku-4-5"));
            (
                "/v1/messages".into(),
                "claude-haiku-4-5",
                Value::Object(body),
            )
        }
        Route::Gemini => {
            let mut parts = vec![json!({"text": text})];
            for img in &c.images {
                parts.push(match img {
                    Image::Url => {
                        json!({"fileData": {"fileUri": "files/abc", "mimeType": "image/png"}})
                    }
                    Image::Png(w, h) => {
                        json!({"inlineData": {"mimeType": "image/png", "data": png(*w, *h)}})
                    }
                });
            }
            put(
                &mut body,
                "contents",
                json!([{"role": "user", "parts": parts}]),
            );
            let (cfg, max, count, think, budget) = if c.snake_case {
                (
                    "generation_config",
                    "max_output_tokens",
                    "candidate_count",
                    "thinking_config",
                    "thinking_budget",
                )
            } else {
                (
                    "generationConfig",
                    "maxOutputTokens",
                    "candidateCount",
                    "thinkingConfig",
                    "thinkingBudget",
                )
            };
            let mut g = Map::new();
            if let Some(v) = c.limits.first() {
                g.insert(max.into(), json!(v));
            }
            // A second limit in the other spelling: a contradiction.
            if let Some(v) = c.limits.get(1) {
                let other = if c.snake_case {
                    "maxOutputTokens"
                } else {
                    "max_output_tokens"
                };
                g.insert(other.into(), json!(v));
            }
            if let Some(n) = c.choices {
                g.insert(count.into(), json!(n % 10));
            }
            if let Some(t) = c.thinking {
                g.insert(think.into(), json!({budget: t}));
            }
            put(&mut body, cfg, Value::Object(g));
            if c.tools {
                put(
                    &mut body,
                    "tools",
                    json!([{"functionDeclarations": [{"name": "lookup", "parameters": tools[0]["function"]["parameters"]}]}]),
                );
            }
            let method = if c.stream {
                "streamGenerateContent?alt=sse"
            } else {
                "generateContent"
            };
            (
                format!("/v1beta/models/gemini-2.5-flash:{method}"),
                "gemini-2.5-flash",
                Value::Object(body),
            )
        }
    }
}

#[test]
fn a_budget_holds_whatever_the_request_says() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(rig(
        &format!(
            r#"{{"defaults": {{"user": {{"limit_usd": "{LIMIT_USD}", "period": "daily"}}}}}}"#
        ),
        "2026-11-24T10:00:00Z",
    ));
    let catalog = Catalog::builtin();
    let limit = tollgate_core::Money::parse_usd(LIMIT_USD).unwrap();
    let cases = std::env::var("TOLLGATE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let mut runner = TestRunner::new(PropConfig {
        cases,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let n = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&case(), |c| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (path, model, body) = build(&c);
            rt.block_on(async {
                let key = r.key(&format!("prop-{i}")).await;
                let overspent_before = r
                    .budgets
                    .overspent
                    .load(std::sync::atomic::Ordering::Relaxed);
                let mut req = r
                    .http
                    .post(format!("{}{path}", r.url))
                    .header("x-mock-output-tokens", c.output_knob.to_string())
                    .header("x-mock-reasoning-tokens", c.reasoning_knob.to_string())
                    .json(&body);
                req = match c.route {
                    Route::Messages => req
                        .header("x-api-key", &key)
                        .header("anthropic-version", "2023-06-01"),
                    Route::Gemini => req.header("x-goog-api-key", &key),
                    _ => req.bearer_auth(&key),
                };
                let resp = req
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let status = resp.status().as_u16();
                let id = resp
                    .headers()
                    .get("x-tollgate-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                // Read it all: a stream's bill is final once it ended.
                let _ = resp.bytes().await;
                let billing: Value = r
                    .http
                    .get(format!("{}/mock/billing", r.mock_url))
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .json()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let bill = billing["requests"]
                    .as_array()
                    .and_then(|a| a.iter().find(|b| b["request_id"] == id.as_str()))
                    .cloned();
                let overspent = r
                    .budgets
                    .overspent
                    .load(std::sync::atomic::Ordering::Relaxed);
                prop_assert_eq!(
                    overspent,
                    overspent_before,
                    "usage beyond its reservation: {:?} {}",
                    c,
                    body
                );
                if status != 200 {
                    prop_assert!(
                        bill.is_none(),
                        "refused ({}) but billed: {:?} {}",
                        status,
                        c,
                        body
                    );
                    return Ok(());
                }
                let bill = bill.ok_or_else(|| TestCaseError::fail("served but not billed"))?;
                let usage: Usage = serde_json::from_value(bill["usage"].clone())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let cost = catalog
                    .price_of(model)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .cost(&usage)
                    .total();
                prop_assert!(
                    cost <= limit,
                    "billed {} on a {} budget: {:?} {}",
                    cost,
                    limit,
                    c,
                    body
                );
                Ok(())
            })
        })
        .unwrap();
    // The requests that the property exercised did go through, not only fail.
    let billed: Value = rt.block_on(async {
        r.http
            .get(format!("{}/mock/billing", r.mock_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert!(
        billed["requests"].as_array().unwrap().len() as u64
            > n.load(std::sync::atomic::Ordering::Relaxed) / 4,
        "too few requests served: {}",
        billed["requests"].as_array().unwrap().len()
    );
}
