//! Streams enforced mid-flight (`budgets.streaming: topup`).

use serde_json::{Value, json};

use super::*;

/// What one streamed chat request ended as: status, the data lines, and
/// whether it ended cleanly (a `length` or `stop` finish, then `[DONE]`).
struct Streamed {
    status: u16,
    data: Vec<String>,
}

impl Streamed {
    fn ended_cleanly(&self) -> bool {
        self.data.last().map(String::as_str) == Some("[DONE]")
            && self.data.iter().any(|d| {
                serde_json::from_str::<Value>(d)
                    .is_ok_and(|v| v["choices"][0]["finish_reason"].is_string())
            })
    }

    fn finish_reason(&self) -> Option<String> {
        self.data.iter().rev().find_map(|d| {
            serde_json::from_str::<Value>(d).ok()?["choices"][0]["finish_reason"]
                .as_str()
                .map(str::to_string)
        })
    }
}

impl Rig {
    async fn stream_chat(&self, key: &str, max_tokens: u64) -> Streamed {
        let resp = self
            .http
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(key)
            .header("x-mock-output-tokens", max_tokens.to_string())
            .header("x-mock-chunk-delay-ms", "1")
            .json(
                &json!({"model": "gpt-4o-mini", "max_tokens": max_tokens, "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Streamed {
            status,
            data: text
                .lines()
                .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
                .collect(),
        }
    }
}

async fn run(mode: &str) -> (usize, u64, Vec<Streamed>, Rig) {
    let r = rig(
        &format!(
            r#"{{"streaming": {{"mode": "{mode}", "first_slice_tokens": 32, "slice_tokens": 32}},
                "overrides": [{{"scope": "user", "subject": "sam", "limit_tokens": 2400, "period": "daily"}}]}}"#
        ),
        "2026-11-24T10:00:00Z",
    )
    .await;
    let key = r.key("sam").await;
    let all = futures_util::future::join_all((0..40).map(|_| r.stream_chat(&key, 400))).await;
    let served = all.iter().filter(|s| s.status == 200).count();
    r.budgets.flush_levels().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let billed = billed_tokens(&r).await;
    (served, billed, all, r)
}

/// 40 concurrent streams asking 400 tokens each on a budget worth about
/// six of them: with top-ups every stream starts and ends cleanly, those
/// the budget cannot fund cut with `finish_reason: "length"`, and the
/// provider's bill stays within the limit; more are served than when
/// each stream reserves its worst case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topped_up_streams_end_cleanly_within_the_budget() {
    let (served_topup, billed_topup, streams, r) = run("topup").await;
    let (served_worst, billed_worst, _, _) = run("worst_case").await;
    println!(
        "served: topup {served_topup}, worst_case {served_worst}; billed tokens: topup {billed_topup}, worst_case {billed_worst} (limit 2400)"
    );
    assert!(
        billed_topup <= 2400,
        "the provider's bill stays within the limit"
    );
    assert!(billed_worst <= 2400);
    assert!(
        served_topup > served_worst,
        "{served_topup} vs {served_worst}"
    );
    for s in streams.iter().filter(|s| s.status == 200) {
        assert!(
            s.ended_cleanly(),
            "{:?}",
            s.data.iter().rev().take(3).collect::<Vec<_>>()
        );
    }
    let cut = streams
        .iter()
        .filter(|s| s.status == 200 && s.finish_reason().as_deref() == Some("length"))
        .count();
    assert!(cut > 0, "some streams were ended for their budget");
    let b = r.budget("sam").await;
    assert!(b["used_tokens"].as_u64().unwrap() <= 2400, "{b}");
    assert_eq!(b["reserved_tokens"], 0, "{b}");
    let recs = r.admin_get("/admin/records?user=sam&limit=1000").await;
    let cut_records = recs["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| {
            x["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "cut_by_budget")
        })
        .count();
    assert!(cut_records >= cut.min(1), "cut streams are flagged");
}

/// A stream its budget cannot fund to the end is ended the way its own
/// format ends one at the output limit: Anthropic with `max_tokens` and
/// `message_stop`, Gemini with `MAX_TOKENS` (SSE and JSON array).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_streams_end_in_their_own_format() {
    let r = rig(
        r#"{"streaming": {"mode": "topup", "first_slice_tokens": 32, "slice_tokens": 32},
            "defaults": {"user": {"limit_tokens": 150, "period": "daily"}}}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let send = async |user: &str, path: &str, body: Value| -> String {
        let key = r.key(user).await;
        let req = r
            .http
            .post(format!("{}{path}", r.url))
            .header("x-api-key", &key)
            .header("x-goog-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .header("x-mock-output-tokens", "400")
            .header("x-mock-chunk-delay-ms", "1");
        let resp = req.json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    };
    let ant = send(
        "ann",
        "/v1/messages",
        json!({"model": "claude-haiku-4-5", "max_tokens": 400, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let events: Vec<&str> = ant
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        &events[events.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(ant.contains("\"stop_reason\":\"max_tokens\""));
    let gem = send(
        "gus",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
               "generationConfig": {"maxOutputTokens": 400}}),
    )
    .await;
    let last = gem
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let last: Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "MAX_TOKENS");
    let arr = send(
        "gia",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
               "generationConfig": {"maxOutputTokens": 400}}),
    )
    .await;
    let v: Vec<Value> = serde_json::from_str(&arr).unwrap_or_else(|e| panic!("{e}: {arr}"));
    assert_eq!(
        v.last().unwrap()["candidates"][0]["finishReason"],
        "MAX_TOKENS"
    );
    for user in ["ann", "gus", "gia"] {
        let b = r.budget(user).await;
        assert!(b["used_tokens"].as_u64().unwrap() <= 150, "{b}");
    }
}

/// One format's request and its clean ending, for the swarm test.
#[derive(Clone, Copy)]
enum Format {
    Chat,
    Anthropic,
    Gemini,
}

impl Format {
    fn request(self) -> (&'static str, Value) {
        let msgs = json!([{"role": "user", "content": "write at length"}]);
        match self {
            Format::Chat => (
                "/v1/chat/completions",
                json!({"model": "gpt-4o-mini", "max_tokens": 4096, "stream": true, "messages": msgs}),
            ),
            Format::Anthropic => (
                "/v1/messages",
                json!({"model": "claude-haiku-4-5", "max_tokens": 4096, "stream": true, "messages": msgs}),
            ),
            Format::Gemini => (
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                json!({"contents": [{"role": "user", "parts": [{"text": "write at length"}]}],
                       "generationConfig": {"maxOutputTokens": 4096}}),
            ),
        }
    }

    /// Whether `body` is a stream that ended the way the format ends one.
    fn ended_cleanly(self, body: &str) -> bool {
        let datas: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        let last_json = || {
            datas
                .iter()
                .rev()
                .find_map(|d| serde_json::from_str::<Value>(d).ok())
        };
        match self {
            Format::Chat => {
                datas.last() == Some(&"[DONE]")
                    && datas.iter().any(|d| {
                        serde_json::from_str::<Value>(d)
                            .is_ok_and(|v| v["choices"][0]["finish_reason"].is_string())
                    })
            }
            Format::Anthropic => last_json().is_some_and(|v| v["type"] == "message_stop"),
            Format::Gemini => {
                last_json().is_some_and(|v| v["candidates"][0]["finishReason"].is_string())
            }
        }
    }
}

/// 100 concurrent streams asking 4096 tokens each, on a budget worth
/// about 30 full answers, per wire format: with top-ups every stream is
/// served and ends cleanly, the provider's bill stays within the limit,
/// and more are served than with worst-case reservations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_streams_on_thirty_answers_of_budget_in_every_format() {
    const LIMIT: u64 = 30 * 4120;
    for format in [Format::Chat, Format::Anthropic, Format::Gemini] {
        let mut served = Vec::new();
        for mode in ["topup", "worst_case"] {
            let r = rig(
                &format!(
                    r#"{{"streaming": {{"mode": "{mode}"}},
                        "overrides": [{{"scope": "user", "subject": "swarm", "limit_tokens": {LIMIT}, "period": "daily"}}]}}"#
                ),
                "2026-11-24T10:00:00Z",
            )
            .await;
            let key = r.key("swarm").await;
            let (path, body) = format.request();
            let one = async || -> (u16, String) {
                let resp = r
                    .http
                    .post(format!("{}{path}", r.url))
                    .bearer_auth(&key)
                    .header("x-api-key", &key)
                    .header("x-goog-api-key", &key)
                    .header("anthropic-version", "2023-06-01")
                    .header("x-mock-output-tokens", "4096")
                    .header("x-mock-chunk-delay-ms", "1")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                (status, resp.text().await.unwrap_or_default())
            };
            let all = futures_util::future::join_all((0..100).map(|_| one())).await;
            let ok: Vec<&String> = all
                .iter()
                .filter(|(s, _)| *s == 200)
                .map(|(_, b)| b)
                .collect();
            assert!(
                ok.iter().all(|b| format.ended_cleanly(b)),
                "{mode}: a stream did not end cleanly"
            );
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let billed = billed_tokens(&r).await;
            assert!(billed <= LIMIT, "{mode}: billed {billed} > {LIMIT}");
            let b = r.budget("swarm").await;
            assert!(b["used_tokens"].as_u64().unwrap() <= LIMIT, "{b}");
            println!(
                "{mode}: {} of 100 served, {billed} tokens billed (limit {LIMIT})",
                ok.len()
            );
            served.push(ok.len());
        }
        assert_eq!(served[0], 100, "with top-ups every stream is served");
        assert!(served[0] > served[1], "{served:?}");
    }
}

/// Tokens the mock provider billed, input and output, over every request.
async fn billed_tokens(r: &Rig) -> u64 {
    let billing = r.mock_billing().await;
    billing["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["usage"]["input_tokens"].as_u64().unwrap()
                + b["usage"]["output_tokens"].as_u64().unwrap()
        })
        .sum()
}
