//! Rate limits, end to end in process (the clock stands still unless moved).

use super::*;

/// 200 requests at once against 60 a minute: 60 pass (a minute's burst),
/// the rest get retryable 429s with OpenAI's header set; a second later
/// one more fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_a_minute_admits_sixty_and_answers_the_rest_retryably() {
    let r = rig_with(
        "{}",
        r#"{"overrides": [{"scope": "user", "subject": "alice", "requests_per_minute": 60}]}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let key = r.key("alice").await;
    let answers = futures_util::future::join_all((0..200).map(|_| r.ask(&key, 20))).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(ok, 60);
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(refused.len(), 140);
    let a = refused[0];
    assert_eq!(a.body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(a.body["error"]["type"], "rate_limit_error");
    let h = |n: &str| a.headers.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(h("retry-after").as_deref(), Some("1"));
    assert_eq!(h("x-should-retry"), None, "retryable: the SDKs retry it");
    assert_eq!(h("x-ratelimit-limit-requests").as_deref(), Some("60"));
    assert_eq!(h("x-ratelimit-remaining-requests").as_deref(), Some("0"));
    assert_eq!(h("x-ratelimit-reset-requests").as_deref(), Some("1m0s"));
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("60 requests per minute")
    );
    // Another user is not limited by alice's override; a second later
    // alice has room for one more.
    let bob = r.key("bob").await;
    assert_eq!(r.chat(&bob, 20).await, 200);
    r.at("2026-11-24T10:00:01Z");
    assert_eq!(r.chat(&key, 20).await, 200);
    assert_eq!(r.chat(&key, 20).await, 429);
}

/// Tokens per minute count each request's reserved worst case (input and
/// its output limit), not only what it used; a request no minute can hold
/// is told so, not to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_count_reserved_output() {
    let r = rig_with(
        "{}",
        r#"{"defaults": {"key": {"tokens_per_minute": 1000}}}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let key = r.key("tom").await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(r.ask(&key, 300).await.status);
        }
        v
    };
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    assert_eq!(
        r.ask(&key, 20).await.status,
        200,
        "a smaller request still fits"
    );
    let huge = r.ask(&key, 5000).await;
    assert_eq!(huge.status, 429);
    assert_eq!(
        huge.headers
            .get("x-should-retry")
            .map(|v| v.to_str().unwrap()),
        Some("false")
    );
    assert!(huge.headers.get("retry-after").is_none());
}

/// `throttle`: past its limit a budget admits requests at its throttle
/// rate, flagged `throttled`; beyond that rate, a plain retryable 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_admits_at_its_rate_past_the_limit() {
    let r = rig(
        r#"{"overrides": [{"scope": "user", "subject": "carol", "limit_tokens": 100, "period": "daily",
            "action": "throttle", "throttle": {"requests_per_minute": 2}}]}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let key = r.key("carol").await;
    // Within the limit: as many as it affords, none throttled.
    let mut within = 0;
    loop {
        let a = r.ask(&key, 20).await;
        assert_eq!(a.status, 200);
        within += 1;
        if r.budget("carol").await["remaining_tokens"]
            .as_u64()
            .unwrap()
            < 40
        {
            break;
        }
    }
    assert!(within >= 2);
    // Past it: two a minute.
    assert_eq!(r.ask(&key, 20).await.status, 200);
    assert_eq!(r.ask(&key, 20).await.status, 200);
    let third = r.ask(&key, 20).await;
    assert_eq!(third.status, 429);
    assert_eq!(third.body["error"]["code"], "rate_limit_exceeded");
    assert!(third.headers.get("retry-after").is_some());
    assert!(third.headers.get("x-should-retry").is_none());
    r.at("2026-11-24T10:00:30Z");
    assert_eq!(
        r.ask(&key, 20).await.status,
        200,
        "the rate paces, it does not stop"
    );
    r.budgets.flush_levels().await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let v = r.admin_get("/admin/records?user=carol&limit=100").await;
    let throttled = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rec| {
            rec["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "throttled")
        })
        .count();
    assert_eq!(throttled, 3);
}

/// Rate limits through the admin API: created, listed with their source,
/// enforced at once, replaced, deleted; the config's are read-only here;
/// an invalid one is refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_managed_through_the_admin_api() {
    let r = rig_with(
        "{}",
        r#"{"defaults": {"key": {"requests_per_minute": 1000}}}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let created = r
        .admin_post(
            "/admin/rate-limits",
            &serde_json::json!({"id": "dana-rpm", "scope": "user", "subject": "dana", "requests_per_minute": 2}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let list = r.admin_get("/admin/rate-limits").await;
    let sources: Vec<(String, String)> = list["rate_limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().into(),
                l["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        vec![
            ("rate:default:key".to_string(), "config".to_string()),
            ("dana-rpm".to_string(), "admin".to_string())
        ]
    );
    let key = r.key("dana").await;
    assert_eq!(r.chat(&key, 20).await, 200);
    assert_eq!(r.chat(&key, 20).await, 200);
    assert_eq!(r.chat(&key, 20).await, 429);
    let put = r
        .http
        .put(format!("{}/admin/rate-limits/dana-rpm", r.url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"scope": "user", "subject": "dana", "requests_per_minute": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        r.chat(&key, 20).await,
        200,
        "the raised limit applies at once"
    );
    let del = |id: &str| {
        r.http
            .delete(format!("{}/admin/rate-limits/{id}", r.url))
            .bearer_auth(ADMIN)
            .send()
    };
    assert_eq!(del("rate:default:key").await.unwrap().status(), 409);
    assert_eq!(del("dana-rpm").await.unwrap().status(), 200);
    assert_eq!(del("dana-rpm").await.unwrap().status(), 404);
    let bad = r
        .admin_post(
            "/admin/rate-limits",
            &serde_json::json!({"scope": "session", "subject": "s", "requests_per_minute": 2}),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let v: serde_json::Value = bad.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("scope:"),
        "{v}"
    );
}
