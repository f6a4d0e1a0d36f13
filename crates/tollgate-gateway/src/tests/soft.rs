//! Soft budget actions, warnings and messages, end to end in process.

use serde_json::{Value, json};

use super::*;

impl Rig {
    async fn records_of(&self, user: &str) -> Vec<Value> {
        let v = self
            .admin_get(&format!("/admin/records?user={user}&limit=1000"))
            .await;
        let mut recs = v["records"].as_array().unwrap().clone();
        recs.reverse(); // oldest first
        recs
    }

    async fn settle_down(&self) {
        self.budgets.flush_levels().await;
        // Records reach the store through the journal.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn flagged(r: &Value, flag: &str) -> bool {
    r["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}

/// `shadow` decides as `block` would and never refuses: on the same
/// traffic, the requests it flags `would_block` are exactly those a
/// `block` budget refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_flags_exactly_what_block_refuses() {
    let r = rig(
        r#"{"overrides": [
            {"scope": "user", "subject": "blocked", "limit_tokens": 150, "period": "daily"},
            {"scope": "user", "subject": "shadowed", "limit_tokens": 150, "period": "daily", "action": "shadow"}
        ]}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let (kb, ks) = (r.key("blocked").await, r.key("shadowed").await);
    let mut refused = Vec::new();
    for i in 0..10 {
        let b = r.ask(&kb, 20).await;
        let s = r.ask(&ks, 20).await;
        assert_eq!(s.status, 200, "shadow never refuses");
        if b.status == 429 {
            refused.push(i);
        }
    }
    assert!(!refused.is_empty() && refused.len() < 10, "{refused:?}");
    r.settle_down().await;
    let would: Vec<usize> = r
        .records_of("shadowed")
        .await
        .iter()
        .enumerate()
        .filter(|(_, rec)| flagged(rec, "would_block"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(would, refused);
}

/// Warning marks: each mark's message is shown once the budget has passed
/// it (the highest passed), and published once per period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_show_past_each_mark_and_publish_once_per_period() {
    use tollgate_budgets::Event;
    let r = rig(
        r#"{"overrides": [{"scope": "user", "subject": "wendy", "limit_tokens": 400, "period": "daily",
            "warnings": [{"at_pct": 90, "message": "90% used; the limit is enforced at 100%. Resets {reset_time}"},
                         {"at_pct": 50, "message": "You've used {percent_used}% of your {period} token budget ({tokens_remaining} left)"}]}]}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let mut events = r.budgets.events.subscribe_lossless();
    let key = r.key("wendy").await;
    let mut seen = Vec::new();
    loop {
        let a = r.ask(&key, 20).await;
        if a.status != 200 {
            assert_eq!(a.status, 429);
            break;
        }
        seen.push(a.warning);
    }
    let first_50 = seen.iter().position(Option::is_some).unwrap();
    assert!(first_50 > 0, "no warning before the first mark");
    let m50 = seen[first_50].clone().unwrap();
    assert!(
        m50.starts_with("You've used ") && m50.contains("% of your daily token budget"),
        "{m50}"
    );
    let last = seen.last().unwrap().clone().unwrap();
    assert!(
        last.starts_with("90% used; the limit is enforced at 100%. Resets 2026-11-25T00:00:00Z"),
        "{last}"
    );
    // A new day: no warning until the mark is passed again, then again
    // one event per mark.
    r.at("2026-11-25T10:00:00Z");
    assert_eq!(r.ask(&key, 20).await.warning, None);
    while r.ask(&key, 20).await.status == 200 {}
    r.settle_down().await;
    let mut marks = Vec::new();
    while let Ok(Some(p)) =
        tokio::time::timeout(std::time::Duration::from_millis(200), events.recv()).await
    {
        if let Event::Warning {
            at_pct,
            period_start,
            ..
        } = p.event
        {
            marks.push((period_start, at_pct));
        }
    }
    let day1 = jiff::Timestamp::from_second(1_795_478_400)
        .unwrap()
        .as_millisecond();
    let day2 = day1 + 86_400_000;
    assert_eq!(marks, vec![(day1, 50), (day1, 90), (day2, 50), (day2, 90)]);
}

/// `warn` lets requests pass its limit, flagged `warned`, says so in
/// `x-tollgate-warning`, and announces the soft limit once per period; a
/// monthly `block` budget above it still stops the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_warn_under_a_monthly_block_stops_at_the_monthly_limit() {
    use tollgate_budgets::Event;
    let r = rig(
        r#"{"defaults": {"user": [
            {"limit_tokens": 100, "period": "daily", "action": "warn"},
            {"limit_tokens": 400, "period": "monthly"}
        ]}}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let mut events = r.budgets.events.subscribe_lossless();
    let key = r.key("walt").await;
    let mut answers = Vec::new();
    for _ in 0..30 {
        let a = r.ask(&key, 20).await;
        let done = a.status == 429;
        answers.push(a);
        if done {
            break;
        }
    }
    let last = answers.last().unwrap();
    assert_eq!(last.status, 429, "the monthly block budget still holds");
    assert_eq!(last.body["error"]["code"], "budget_exceeded");
    let warned: Vec<&Answer> = answers.iter().filter(|a| a.warning.is_some()).collect();
    assert!(
        warned.len() >= 3,
        "past the daily limit, several requests passed"
    );
    let w = warned[0].warning.as_deref().unwrap();
    assert!(w.contains("past its daily limit"), "{w}");
    assert!(answers[0].warning.is_none());
    r.settle_down().await;
    let recs = r.records_of("walt").await;
    let served = recs.iter().filter(|r| !flagged(r, "blocked")).count();
    assert_eq!(served, answers.len() - 1);
    assert!(recs.iter().any(|r| flagged(r, "warned")));
    let mut soft = 0;
    while let Ok(Some(p)) =
        tokio::time::timeout(std::time::Duration::from_millis(200), events.recv()).await
    {
        if matches!(p.event, Event::SoftLimit { .. }) {
            soft += 1;
        }
    }
    assert_eq!(soft, 1, "one soft-limit event per period");
}

/// `messages.refusal` replaces the refusal's text, rendered; a template
/// with an unknown placeholder is refused naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_message_is_the_budgets_own() {
    let r = rig("{}", "2026-11-24T10:00:00Z").await;
    r.create_budget(json!({"id": "polite", "scope": "user", "subject": "rita", "limit_tokens": 60, "period": "daily",
        "messages": {"refusal": "You've reached your {period} limit. Your budget resets at {reset_time}."}}))
        .await;
    let key = r.key("rita").await;
    let mut last = r.ask(&key, 20).await;
    while last.status == 200 {
        last = r.ask(&key, 20).await;
    }
    assert_eq!(last.status, 429);
    assert_eq!(
        last.body["error"]["message"],
        "You've reached your daily limit. Your budget resets at 2026-11-25T00:00:00Z."
    );
    let bad = r
        .admin_post("/admin/budgets", &json!({"scope": "user", "subject": "x", "limit_tokens": 5, "messages": {"refusal": "left: {usd_left}"}}))
        .await;
    assert_eq!(bad.status(), 400);
    let msg = bad.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("messages.refusal") && msg.contains("{usd_left}"),
        "{msg}"
    );
}

/// An absolute low threshold makes a budget low before the percentage
/// would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_low_threshold_marks_a_budget_low() {
    let r = rig(
        r#"{"overrides": [{"scope": "user", "subject": "lou", "limit_tokens": 1000, "period": "daily", "low_threshold_tokens": 990}]}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let key = r.key("lou").await;
    let a = r.ask(&key, 20).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.budget_status.as_deref(), Some("low"));
    assert_eq!(r.budget("lou").await["status"], "low");
}

/// `downgrade`: once the budget cannot afford a request at its model, the
/// request is served by `downgrade_to`, priced as that model, flagged and
/// announced; a monthly `block` budget above still stops it. Explain says
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_serves_the_cheaper_model_until_a_block_budget_stops_it() {
    let r = rig(
        r#"{"overrides": [
            {"scope": "user", "subject": "bob", "limit_usd": "0.001", "period": "daily", "action": "downgrade", "downgrade_to": "gpt-4o-mini"},
            {"scope": "user", "subject": "bob", "limit_usd": "0.0012", "period": "monthly"}
        ]}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let key = r.key("bob").await;
    let mut answers = Vec::new();
    for _ in 0..60 {
        let a = r.ask_model(&key, "gpt-4o", 20).await;
        let done = a.status != 200;
        answers.push(a);
        if done {
            break;
        }
    }
    let first_down = answers
        .iter()
        .position(|a| a.downgraded_from.is_some())
        .expect("some request was downgraded");
    assert!(first_down > 0, "the first requests are served as asked");
    assert!(
        answers[first_down..answers.len() - 1]
            .iter()
            .all(|a| a.status == 200 && a.downgraded_from.as_deref() == Some("gpt-4o"))
    );
    assert_eq!(answers[first_down].body["model"], "gpt-4o-mini");
    let last = answers.last().unwrap();
    assert_eq!(last.status, 429, "the monthly block budget holds");
    assert_eq!(last.body["error"]["code"], "budget_exceeded");
    r.settle_down().await;
    let recs = r.records_of("bob").await;
    let full = &recs[0];
    let down = &recs[first_down];
    assert_eq!(full["model_served"], "gpt-4o");
    assert_eq!(down["model_requested"], "gpt-4o");
    assert_eq!(down["model_served"], "gpt-4o-mini");
    assert!(flagged(down, "downgraded") && !flagged(full, "downgraded"));
    let cost = |rec: &Value| {
        tollgate_core::Money::parse_usd(rec["cost_usd"].as_str().unwrap())
            .unwrap()
            .units()
    };
    assert_eq!(full["input_tokens"], down["input_tokens"]);
    assert_eq!(full["output_tokens"], down["output_tokens"]);
    assert!(cost(down) * 10 < cost(full), "priced as the model served");
    let explain_bob = async || -> Value {
        let body = json!({"user": "bob", "model": "gpt-4o", "max_tokens": 20});
        let resp = r.admin_post("/admin/explain", &body).await;
        resp.json().await.unwrap()
    };
    // Explain agrees: today the month's block budget refuses even the
    // cheaper model; in a new month, once the day's budget is spent, it
    // names the downgrade and the model served.
    let e = explain_bob().await;
    assert_eq!(e["decision"]["decision"], "refuse", "{e}");
    r.at("2026-12-01T10:00:00Z");
    let key2 = key.clone();
    while r
        .ask_model(&key2, "gpt-4o", 20)
        .await
        .downgraded_from
        .is_none()
    {}
    let e = explain_bob().await;
    assert_eq!(e["downgraded_by"], "override:0", "{e}");
    assert_eq!(e["model_served"], "gpt-4o-mini");
    assert_eq!(e["decision"]["decision"], "allow");
}

/// A `downgrade_to` model the gateway cannot serve is refused when the
/// budget is created, not when it runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_to_an_unservable_model_is_refused() {
    let r = rig("{}", "2026-11-24T10:00:00Z").await;
    let resp = r
        .admin_post("/admin/budgets", &json!({"scope": "user", "subject": "x", "limit_usd": "1", "action": "downgrade", "downgrade_to": "llama-9000"}))
        .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("downgrade_to"),
        "{v}"
    );
    let resp = r
        .admin_post(
            "/admin/budgets",
            &json!({"scope": "user", "subject": "x", "limit_usd": "1",
                    "on_low": {"fallbacks": {"gpt-4o": "llama-9000"}}}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("on_low.fallbacks.gpt-4o"), "{v}");
}

/// While a budget is low its fallbacks serve the models they map and its
/// hint opens the system prompt — in each wire format — and both stop
/// after the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_budgets_fall_back_and_hint_until_their_reset() {
    let r = rig(
        r#"{"overrides": [{"scope": "user", "subject": "dave", "limit_tokens": 1000, "period": "daily",
            "low_threshold_pct": 60,
            "on_low": {"fallbacks": {"gpt-4o": "gpt-4o-mini"}, "prompt_hint": true, "max_hint_chars": 200}}]}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let key = r.key("dave").await;
    let last_bill = async || -> Value {
        let v = r.mock_billing().await;
        v["requests"].as_array().unwrap().last().unwrap().clone()
    };
    let a = r.ask_model(&key, "gpt-4o", 500).await;
    assert_eq!((a.status, a.downgraded_from.as_deref()), (200, None));
    assert_eq!(
        last_bill().await["system"],
        Value::Null,
        "not low yet: no hint"
    );
    // About half is left now: low (below 60 %).
    assert_eq!(a.budget_status.as_deref(), Some("low"));
    let a = r.ask_model(&key, "gpt-4o", 20).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.downgraded_from.as_deref(), Some("gpt-4o"));
    assert_eq!(a.body["model"], "gpt-4o-mini");
    let bill = last_bill().await;
    assert_eq!(bill["model"], "gpt-4o-mini");
    let hint = bill["system"].as_str().unwrap().to_string();
    assert!(
        hint.starts_with("Budget: ") && hint.contains(" tokens left ("),
        "{hint}"
    );
    assert!(
        hint.contains("this day; resets 2026-11-25T00:00Z. Budget is low"),
        "{hint}"
    );
    assert!(hint.chars().count() <= 200);
    // Anthropic: prepended to the caller's own system prompt.
    let resp = r
        .anthropic(
            &key,
            &json!({"model": "claude-haiku-4-5", "max_tokens": 10, "system": "Be brief.",
                      "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let sys = last_bill().await["system"].as_str().unwrap().to_string();
    assert!(
        sys.starts_with("Budget: ") && sys.ends_with("\n\nBe brief."),
        "{sys}"
    );
    // Gemini: a systemInstruction of its own.
    let resp = r
        .gemini(
            &key,
            &json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                      "generationConfig": {"maxOutputTokens": 10}}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        last_bill().await["system"]
            .as_str()
            .unwrap()
            .starts_with("Budget: ")
    );
    // Explain shows both.
    let e: Value = r
        .admin_post(
            "/admin/explain",
            &json!({"user": "dave", "model": "gpt-4o", "max_tokens": 20}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(e["model_served"], "gpt-4o-mini", "{e}");
    assert!(e["prompt_hint"].as_str().unwrap().starts_with("Budget: "));
    // A new day: the model asked for, no hint.
    r.at("2026-11-25T10:00:00Z");
    let a = r.ask_model(&key, "gpt-4o", 20).await;
    assert_eq!((a.status, a.downgraded_from.as_deref()), (200, None));
    assert_eq!(last_bill().await["model"], "gpt-4o");
    assert_eq!(last_bill().await["system"], Value::Null);
}

/// A budget's footer ends whole text answers in every format, rendered
/// after the request is paid for; JSON-mode answers are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn footers_end_text_answers_in_every_format() {
    let r = rig(
        r#"{"overrides": [{"scope": "user", "subject": "fay", "limit_tokens": 100000, "period": "daily",
            "footer": "---\nYour usage: {tokens_used}/{tokens_limit} tokens. Resets {reset_time}"}]}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let key = r.key("fay").await;
    let a = r.ask(&key, 20).await;
    let text = a.body["choices"][0]["message"]["content"].as_str().unwrap();
    let used = r.budget("fay").await["used_tokens"].as_u64().unwrap();
    assert!(
        text.ends_with(&format!(
            "\n\n---\nYour usage: {used}/100000 tokens. Resets 2026-11-25T00:00:00Z"
        )),
        "{text}"
    );
    let ant: Value = r
        .anthropic(
            &key,
            &json!({"model": "claude-haiku-4-5", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        ant["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("\n\n---\nYour usage: ")
    );
    let gem: Value = r
        .gemini(
            &key,
            &json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let parts = gem["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert!(
        parts.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("Your usage: ")
    );
    let json_mode: Value = r
        .http
        .post(format!("{}/v1/chat/completions", r.url))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 10, "response_format": {"type": "json_object"},
                      "messages": [{"role": "user", "content": "json please"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !json_mode["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Your usage"),
        "{json_mode}"
    );
}

/// Streams take the footer as one last piece of text before their finish
/// event, in each format's own shape; Gemini's JSON-array streams pass as
/// they come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn footers_end_streamed_answers_before_their_finish() {
    let r = rig(
        r#"{"footer": "--\nUsed {tokens_used} of {tokens_limit}",
            "defaults": {"user": {"limit_tokens": 100000, "period": "daily"}}}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let key = r.key("sue").await;
    let post = async |path: &str, body: Value| -> String {
        let req = r
            .http
            .post(format!("{}{path}", r.url))
            .bearer_auth(&key)
            .header("x-api-key", &key)
            .header("x-goog-api-key", &key)
            .header("anthropic-version", "2023-06-01");
        req.json(&body).send().await.unwrap().text().await.unwrap()
    };
    let datas = |s: &str| -> Vec<Value> {
        s.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    };
    // OpenAI chat: the footer's delta, then the finish chunk, then [DONE].
    let chat = post(
        "/v1/chat/completions",
        json!({"model": "gpt-4o-mini", "max_tokens": 10, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let chunks = datas(&chat);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.ends_with("\n\n--\nUsed 0 of 100000"), "{text}");
    let finish_at = chunks
        .iter()
        .position(|c| c["choices"][0]["finish_reason"].is_string())
        .unwrap();
    let footer_at = chunks
        .iter()
        .position(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| t.contains("Used "))
        })
        .unwrap();
    assert!(footer_at < finish_at);
    assert!(chat.trim_end().ends_with("data: [DONE]"));
    // Anthropic: a text block of its own before message_delta.
    let ant = post(
        "/v1/messages",
        json!({"model": "claude-haiku-4-5", "max_tokens": 10, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let events = datas(&ant);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let delta_at = kinds.iter().position(|k| *k == "message_delta").unwrap();
    assert_eq!(
        &kinds[delta_at - 3..delta_at],
        [
            "content_block_start",
            "content_block_delta",
            "content_block_stop"
        ]
    );
    assert!(
        events[delta_at - 2]["delta"]["text"]
            .as_str()
            .unwrap()
            .starts_with("\n\n--\nUsed ")
    );
    // Gemini SSE: the last chunk's text ends with it.
    let gem = post(
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    )
    .await;
    let last = datas(&gem).pop().unwrap();
    let parts = last["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap();
    assert!(
        parts.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("\n\n--\nUsed "),
        "{last}"
    );
    // A JSON-array stream passes as it came.
    let arr = post(
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    )
    .await;
    let v: Vec<Value> = serde_json::from_str(&arr).unwrap();
    assert!(!arr.contains("Used "), "{v:?}");
}
