//! In-process tests of the whole gateway with an injected clock: periods
//! reset by the calendar (time zones and DST included) and roll over,
//! without sleeping.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::budgets::ManualClock;
use crate::config::{ModelRoute, ProviderConfig};
use crate::{Config, Gateway};

mod alerts;
mod rates;
mod retention;
mod soft;
mod topup;

const ADMIN: &str = "admin-key-for-clock-tests";

pub(crate) struct Rig {
    pub(crate) url: String,
    pub(crate) mock_url: String,
    pub(crate) budgets: Arc<crate::budgets::BudgetEngine>,
    pub(crate) alerts: Arc<tollgate_alerts::Alerts>,
    pub(crate) memory_ledger: Arc<crate::ledger::MemoryLedger>,
    pub(crate) state: crate::AppState,
    clock: Arc<ManualClock>,
    pub(crate) http: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub(crate) async fn rig(budgets_yaml: &str, start: &str) -> Rig {
    rig_with(budgets_yaml, "{}", start).await
}

/// A rig with rate limits too (`rate_limits:` as JSON text).
pub(crate) async fn rig_with(budgets_yaml: &str, rate_limits: &str, start: &str) -> Rig {
    rig_full(budgets_yaml, rate_limits, "{}", start).await
}

/// A rig with rate limits and alerts (`alerts:` as JSON text).
pub(crate) async fn rig_full(
    budgets_yaml: &str,
    rate_limits: &str,
    alerts: &str,
    start: &str,
) -> Rig {
    let mock = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock_addr = mock.local_addr().unwrap();
    tokio::spawn(tollgate_mock::serve(
        mock,
        tollgate_mock::MockConfig::default(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        database: format!("sqlite://{}", dir.path().join("t.db").display()),
        admin_keys: vec![ADMIN.into()],
        providers: [
            ("openai", format!("http://{mock_addr}/v1")),
            ("anthropic", format!("http://{mock_addr}")),
            ("gemini", format!("http://{mock_addr}/v1beta")),
        ]
        .into_iter()
        .map(|(kind, base_url)| ProviderConfig {
            name: kind.into(),
            kind: kind.into(),
            base_url,
            connect_timeout_ms: 2_000,
            timeout_ms: 10_000,
            stream_idle_timeout_ms: 10_000,
            forward_headers: vec!["x-mock-*".into()],
            ..ProviderConfig::default()
        })
        .collect(),
        models: [
            ("gpt-*", "openai"),
            ("claude-*", "anthropic"),
            ("gemini-*", "gemini"),
        ]
        .into_iter()
        .map(|(pattern, provider)| ModelRoute {
            pattern: pattern.into(),
            provider: provider.into(),
            upstream_model: None,
        })
        .collect(),
        ..Config::default()
    };
    config.budgets =
        serde_json::from_value(serde_json::to_value(json_value(budgets_yaml)).unwrap()).unwrap();
    config.rate_limits = serde_json::from_value(json_value(rate_limits)).unwrap();
    config.alerts = serde_json::from_value(json_value(alerts)).unwrap();
    let store = tollgate_store::open(&config.database).await.unwrap();
    let clock = Arc::new(ManualClock::new(start.parse().unwrap()));
    let gw = Gateway::with_clock(config, store, &|_| None, clock.clone())
        .await
        .unwrap();
    let budgets = gw.state().budgets.clone();
    let alerts = gw.state().alerts.clone();
    let memory_ledger = gw.state().memory_ledger.clone();
    let state = gw.state().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gw.serve(listener, async {
        let _ = rx.await;
    }));
    Rig {
        url,
        mock_url: format!("http://{mock_addr}"),
        budgets,
        alerts,
        memory_ledger,
        state,
        clock,
        http: reqwest::Client::new(),
        _dir: dir,
        stop: Some(tx),
    }
}

/// The budgets section as JSON (tests write it as JSON text).
fn json_value(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

/// One chat request's status, warning header, budget status header and body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) warning: Option<String>,
    pub(crate) budget_status: Option<String>,
    pub(crate) downgraded_from: Option<String>,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Rig {
    pub(crate) async fn key(&self, user: &str) -> String {
        let v: Value = self
            .admin_post("/admin/keys", &json!({"user": user}))
            .await
            .json()
            .await
            .unwrap();
        v["key"].as_str().unwrap().to_string()
    }

    pub(crate) async fn ask(&self, key: &str, max_tokens: u64) -> Answer {
        self.ask_model(key, "gpt-4o-mini", max_tokens).await
    }

    pub(crate) async fn ask_model(&self, key: &str, model: &str, max_tokens: u64) -> Answer {
        let resp = self
            .http
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(key)
            .header("x-mock-output-tokens", "1000")
            .json(&json!({"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let (warning, budget_status) = (header("x-tollgate-warning"), header("x-budget-status"));
        let downgraded_from = header("x-tollgate-downgraded-from");
        let headers = resp.headers().clone();
        Answer {
            headers,
            status: resp.status().as_u16(),
            warning,
            budget_status,
            downgraded_from,
            body: resp.json().await.unwrap_or(Value::Null),
        }
    }

    async fn chat(&self, key: &str, max_tokens: u64) -> u16 {
        self.ask(key, max_tokens).await.status
    }

    async fn exhaust(&self, key: &str) {
        for _ in 0..20 {
            if self.chat(key, 20).await == 429 {
                return;
            }
        }
        panic!("budget never refused");
    }

    fn at(&self, t: &str) {
        self.clock.set(t.parse::<Timestamp>().unwrap());
    }

    /// `POST path` with the admin key and a JSON body.
    async fn admin_post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// An Anthropic messages request with `key`.
    async fn anthropic(&self, key: &str, body: &Value) -> reqwest::Response {
        let req = self.http.post(format!("{}/v1/messages", self.url));
        req.header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A Gemini generateContent request for gemini-2.5-flash with `key`.
    async fn gemini(&self, key: &str, body: &Value) -> reqwest::Response {
        let url = format!(
            "{}/v1beta/models/gemini-2.5-flash:generateContent",
            self.url
        );
        let req = self.http.post(url).header("x-goog-api-key", key);
        req.json(body).send().await.unwrap()
    }

    /// What the mock provider billed, as JSON.
    async fn mock_billing(&self) -> Value {
        let req = self.http.get(format!("{}/mock/billing", self.mock_url));
        req.send().await.unwrap().json().await.unwrap()
    }

    /// `GET path` with the admin key, as JSON.
    async fn admin_get(&self, path: &str) -> Value {
        let req = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN);
        req.send().await.unwrap().json().await.unwrap()
    }

    async fn budget(&self, subject: &str) -> Value {
        let v = self.admin_get("/admin/budgets").await;
        v["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["subject"] == subject)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// Regression (LiteLLM #5651, #8364, #36940): budgets that never reset.
/// A daily budget exhausted today allows again right at the local reset,
/// across a DST change, and not a second before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_budget_resets_at_local_midnight_across_dst() {
    let r = rig(
        r#"{"defaults": {"user": {"limit_tokens": 100, "period": "daily", "timezone": "America/New_York"}}}"#,
        "2026-03-07T12:00:00Z",
    )
    .await;
    let key = r.key("alice").await;
    r.exhaust(&key).await;
    r.at("2026-03-08T04:59:59Z"); // 23:59:59 EST, still the 7th
    assert_eq!(r.chat(&key, 20).await, 429);
    r.at("2026-03-08T05:00:00Z"); // midnight EST: a new day
    assert_eq!(r.chat(&key, 20).await, 200);
    r.exhaust(&key).await;
    // Clocks spring forward on the 8th: the next midnight is 04:00 UTC.
    r.at("2026-03-09T03:59:59Z");
    assert_eq!(r.chat(&key, 20).await, 429);
    r.at("2026-03-09T04:00:00Z");
    assert_eq!(r.chat(&key, 20).await, 200);
    let b = r.budget("alice").await;
    assert_eq!(b["period_start"], "2026-03-09T04:00:00Z");
    assert_eq!(b["resets_at"], "2026-03-10T04:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_allowance_rolls_over_up_to_the_cap() {
    let r = rig(
        r#"{"overrides": [{"scope": "user", "subject": "saver", "limit_tokens": 100, "period": "daily", "rollover": {"cap_tokens": 50}}]}"#,
        // First seen at the first instant of the 24th: a full period.
        "2026-11-24T00:00:00Z",
    )
    .await;
    let key = r.key("saver").await;
    assert_eq!(r.chat(&key, 16).await, 200);
    let day1 = r.budget("saver").await;
    let spent = day1["used_tokens"].as_u64().unwrap();
    assert!(spent > 0 && spent < 50, "{day1}");
    r.at("2026-11-25T10:00:00Z");
    // Unused: 100 - spent > 50, so the cap applies.
    assert_eq!(r.chat(&key, 16).await, 200);
    let day2 = r.budget("saver").await;
    assert_eq!(day2["limit_tokens"], 150, "{day2}");
    r.at("2026-11-27T10:00:00Z");
    // The 26th saw no spend, but rollover does not compound: 100 + 50.
    assert_eq!(r.chat(&key, 16).await, 200);
    assert_eq!(r.budget("saver").await["limit_tokens"], 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_window_frees_spend_as_it_ages() {
    let r = rig(
        r#"{"defaults": {"user": {"limit_tokens": 120, "period": "rolling:1h"}}}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let key = r.key("roller").await;
    r.exhaust(&key).await;
    r.at("2026-11-24T10:30:00Z");
    assert_eq!(r.chat(&key, 20).await, 429, "still inside the hour");
    r.at("2026-11-24T11:02:00Z");
    assert_eq!(r.chat(&key, 20).await, 200, "the spend has left the window");
    // Buckets that left the window are forgotten in memory; the budget's
    // state is unchanged by it.
    let before = r.budget("roller").await;
    let keep = r.budgets.retention();
    r.memory_ledger.retain_counters(&|k| keep.keeps(k));
    assert_eq!(
        r.budget("roller").await["used_tokens"],
        before["used_tokens"]
    );
}

/// Regression: a rolling window's refusal named the next bucket boundary as
/// its reset (`reset_at`, `Retry-After`, `X-Budget-Reset`) while the request
/// stayed refused past it. The reset is when enough spend leaves the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_rolling_window_reset_is_when_the_request_fits_again() {
    let r = rig(
        r#"{"defaults": {"user": {"limit_tokens": 120, "period": "rolling:1h"}}}"#,
        "2026-11-24T10:00:20Z",
    )
    .await;
    let key = r.key("roller").await;
    assert_eq!(r.chat(&key, 40).await, 200);
    r.at("2026-11-24T10:30:00Z");
    r.exhaust(&key).await;
    r.at("2026-11-24T10:40:00Z");
    let resp = r
        .http
        .post(format!("{}/v1/chat/completions", r.url))
        .bearer_auth(&key)
        .header("x-mock-output-tokens", "1000")
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: i64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let header_reset = resp.headers()["x-budget-reset"]
        .to_str()
        .unwrap()
        .to_string();
    let v: Value = resp.json().await.unwrap();
    let reset: Timestamp = v["error"]["reset_at"].as_str().unwrap().parse().unwrap();
    // The 10:00 bucket's spend leaves at 11:01; that frees enough.
    assert_eq!(reset.to_string(), "2026-11-24T11:01:00Z", "{v}");
    assert_eq!(header_reset, reset.to_string());
    assert_eq!(retry, 21 * 60);
    r.at("2026-11-24T11:00:59Z");
    assert_eq!(r.chat(&key, 20).await, 429, "not a second early");
    r.at("2026-11-24T11:01:00Z");
    assert_eq!(r.chat(&key, 20).await, 200, "the reset told the truth");
}

impl Rig {
    async fn create_budget(&self, spec: Value) -> Value {
        let resp = self.admin_post("/admin/budgets", &spec).await;
        assert_eq!(resp.status(), 201);
        resp.json().await.unwrap()
    }
}

/// Regression: a budget created mid-period started at zero although its
/// subject had already spent in that period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_budget_created_mid_period_counts_the_periods_spend() {
    let r = rig(r#"{}"#, "2026-11-24T10:00:00Z").await;
    let key = r.key("early").await;
    assert_eq!(r.chat(&key, 40).await, 200);
    assert_eq!(r.chat(&key, 40).await, 200);
    r.at("2026-11-24T15:00:00Z");
    let b = r
        .create_budget(
            json!({"scope": "user", "subject": "early", "limit_tokens": 1000, "period": "daily"}),
        )
        .await;
    let used = b["used_tokens"].as_u64().unwrap();
    assert!(used > 80, "today's two requests count: {b}");
    // Only the models a budget covers count, and only this period.
    let b = r
        .create_budget(json!({"scope": "user", "subject": "early", "limit_tokens": 1000, "period": "daily", "models": ["claude-*"]}))
        .await;
    assert_eq!(b["used_tokens"], 0, "{b}");
    r.at("2026-11-25T15:00:00Z");
    let b = r
        .create_budget(json!({"scope": "user", "subject": "early", "limit_tokens": 1000, "period": "daily", "id": "later"}))
        .await;
    assert_eq!(b["used_tokens"], 0, "yesterday's spend is not today's: {b}");
    // A template budget counts each subject's spend.
    let b = r
        .create_budget(json!({"scope": "global", "limit_tokens": 100000, "period": "monthly"}))
        .await;
    assert_eq!(b["used_tokens"].as_u64(), Some(used), "{b}");
}

/// Regression: a brand-new budget with rollover started at limit + cap,
/// crediting a period in which it did not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_rollover_begins_after_the_first_full_period() {
    let r = rig(r#"{}"#, "2026-11-24T10:00:00Z").await;
    let key = r.key("newbie").await;
    r.create_budget(json!({"id": "nb", "scope": "user", "subject": "newbie", "limit_tokens": 100, "period": "daily", "rollover": {"cap_tokens": 50}}))
        .await;
    r.at("2026-11-25T10:00:00Z");
    assert_eq!(r.chat(&key, 16).await, 200);
    assert_eq!(
        r.budget("newbie").await["limit_tokens"],
        100,
        "the 24th was not a full period"
    );
    r.at("2026-11-26T10:00:00Z");
    assert_eq!(r.chat(&key, 16).await, 200);
    assert_eq!(
        r.budget("newbie").await["limit_tokens"],
        150,
        "the 25th was"
    );
}

/// Regression: a model-scoped override (`models: ["claude-*"]`) silently
/// removed the user's default budget for every other model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_model_scoped_override_keeps_the_default_for_other_models() {
    let r = rig(
        r#"{"defaults": {"user": {"limit_tokens": 100, "period": "daily"}},
            "overrides": [{"scope": "user", "subject": "alice", "limit_tokens": 5000, "period": "daily", "models": ["claude-*"]}]}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let alice = crate::identity::Caller {
        user: Some("alice".into()),
        ..Default::default()
    };
    let ids = async |model: &str| -> Vec<String> {
        r.budgets
            .applicable(&alice, model)
            .await
            .iter()
            .map(|a| a.budget.id.clone())
            .collect()
    };
    assert_eq!(ids("gpt-4o-mini").await, vec!["default:user".to_string()]);
    assert_eq!(
        ids("claude-sonnet-4-5").await,
        vec!["override:0".to_string()]
    );
    // And the default is enforced end to end for the other model.
    let key = r.key("alice").await;
    r.exhaust(&key).await;
}

/// Regression: PATCHing a budget's period mid-flight dropped the in-flight
/// spend (it settled into the old period's counter) and started the new
/// period at zero. Now in-flight requests are charged to the budget as it
/// is now, and the new period starts at what its records show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_changing_a_budgets_period_in_flight_keeps_its_spend() {
    let r = rig("{}", "2026-11-24T10:00:00Z").await;
    let post = |path: &str, body: Value| {
        r.http
            .post(format!("{}{path}", r.url))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    post(
        "/admin/budgets",
        json!({"id": "pat-b", "scope": "user", "subject": "pat", "limit_tokens": 1000000, "period": "daily"}),
    )
    .await
    .unwrap();
    let key = r.key("pat").await;
    for _ in 0..3 {
        assert_eq!(r.chat(&key, 20).await, 200);
    }
    // A stream in flight while the period changes.
    let url = r.url.clone();
    let http = r.http.clone();
    let k = key.clone();
    let stream = tokio::spawn(async move {
        http.post(format!("{url}/v1/chat/completions"))
            .bearer_auth(&k)
            .header("x-mock-output-tokens", "30")
            .header("x-mock-chunk-delay-ms", "20")
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let patched = r
        .http
        .patch(format!("{}/admin/budgets/pat-b", r.url))
        .bearer_auth(ADMIN)
        .json(&json!({"period": "monthly"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    stream.await.unwrap();
    // Let the journal write the stream's record.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let records: Value = r
        .http
        .get(format!("{}/admin/records?limit=100&user=pat", r.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total: u64 = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["input_tokens"].as_u64().unwrap() + x["output_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(records["records"].as_array().unwrap().len(), 4);
    let b = r.budget("pat").await;
    assert_eq!(b["period_start"], "2026-11-01T00:00:00Z", "{b}");
    assert_eq!(
        b["used_tokens"], total,
        "the month's spend is what its records show: {b}"
    );
}

/// Explain and the proxy agree: the same requests, sent to `POST
/// /admin/explain` and then to the proxy, get the same decision — allowed,
/// capped to the same output limit, refused by the same budget with the
/// same status, or refused as unknown, unpriced or not allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_the_proxy_agree() {
    let r = rig(
        r#"{"overrides": [
            {"id": "tiny", "scope": "user", "subject": "u-tiny", "limit_usd": "0.000001", "period": "daily"},
            {"id": "mid", "scope": "user", "subject": "u-mid", "limit_usd": "0.002", "period": "daily"},
            {"id": "multi-tenant", "scope": "tenant", "subject": "t-multi", "limit_tokens": 6000, "period": "daily"},
            {"id": "multi-roll", "scope": "user", "subject": "u-multi", "limit_usd": "0.004", "period": "rolling:1h"}
        ]}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let mut keys = Vec::new();
    for (user, tenant) in [
        ("u-tiny", None),
        ("u-mid", None),
        ("u-multi", Some("t-multi")),
        ("u-free", None),
    ] {
        let v: Value = r
            .http
            .post(format!("{}/admin/keys", r.url))
            .bearer_auth(ADMIN)
            .json(&json!({"user": user, "tenant": tenant, "models": if user == "u-free" { json!(["gpt-*"]) } else { json!([]) }}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        keys.push(v["key"].as_str().unwrap().to_string());
    }
    let models = [
        "gpt-4o-mini",
        "gpt-4o",
        "claude-sonnet-4-5",
        "gemini-2.5-flash",
        "gpt-unpriced-test",
        "llama-unknown",
    ];
    let limits = [None, Some(40), Some(700), Some(5000)];
    let mut seen = std::collections::BTreeSet::new();
    let mut n = 0;
    for i in 0..48usize {
        let key = &keys[i % keys.len()];
        let model = models[(i / 2) % models.len()];
        let max = limits[(i / 3) % limits.len()];
        let (path, mut body) = match model {
            m if m.starts_with("claude") => (
                "/v1/messages".to_string(),
                json!({"model": m, "max_tokens": max.unwrap_or(300), "messages": [{"role": "user", "content": "hello there"}]}),
            ),
            m if m.starts_with("gemini") => (
                format!("/v1beta/models/{m}:generateContent"),
                json!({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}),
            ),
            m => (
                "/v1/chat/completions".to_string(),
                json!({"model": m, "messages": [{"role": "user", "content": "hello there"}]}),
            ),
        };
        if let Some(mx) = max {
            match model {
                m if m.starts_with("gemini") => {
                    body["generationConfig"] = json!({"maxOutputTokens": mx})
                }
                m if m.starts_with("claude") => {}
                _ => body["max_tokens"] = json!(mx),
            }
        }
        let explained: Value = r
            .http
            .post(format!("{}/admin/explain", r.url))
            .bearer_auth(ADMIN)
            .json(&json!({"key": key, "request": {"path": path, "body": body}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let d = &explained["decision"];
        let mut req = r
            .http
            .post(format!("{}{path}", r.url))
            .header("x-mock-output-tokens", "100000")
            .json(&body);
        req = if model.starts_with("gemini") {
            req.header("x-goog-api-key", key)
        } else {
            req.bearer_auth(key)
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let rid = resp
            .headers()
            .get("x-tollgate-request-id")
            .map(|v| v.to_str().unwrap().to_string());
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        let kind = d["decision"].as_str().unwrap();
        seen.insert(match (kind, d["code"].as_str()) {
            ("refuse", Some(c)) => format!("refuse:{c}"),
            (k, _) => k.to_string(),
        });
        match kind {
            "refuse" => {
                assert_eq!(
                    Some(status),
                    d["status"].as_u64().map(|s| s as u16),
                    "{i}: {explained} vs {answer}"
                );
                if d["code"] == "budget_exceeded" {
                    let proxy_budget = answer["error"]["budget"]["id"]
                        .as_str()
                        .or_else(|| answer["error"]["details"][0]["budget"]["id"].as_str());
                    assert_eq!(
                        proxy_budget,
                        d["budget"].as_str(),
                        "{i}: {explained} vs {answer}"
                    );
                }
            }
            "allow" | "allow_capped" => {
                assert_eq!(status, 200, "{i}: {explained} vs {answer}");
                if let Some(limit) = d["max_tokens"].as_u64() {
                    let billing = r.mock_billing().await;
                    let billed = billing["requests"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|b| b["request_id"].as_str() == rid.as_deref())
                        .cloned()
                        .unwrap();
                    assert_eq!(
                        billed["usage"]["output_tokens"].as_u64(),
                        Some(limit),
                        "{i}: the upstream got the limit explain named: {explained}"
                    );
                }
            }
            other => panic!("{other}"),
        }
        n += 1;
    }
    assert!(n >= 20);
    // `refuse` alone: an unknown model (a 404 with no code).
    for k in [
        "refuse",
        "allow",
        "allow_capped",
        "refuse:budget_exceeded",
        "refuse:model_not_priced",
        "refuse:model_not_allowed",
    ] {
        assert!(seen.contains(k), "no {k} case among {seen:?}");
    }
    eprintln!("explain and proxy agreed on {n} requests: {seen:?}");
}

/// The event stream: each settled request, each refusal, and each level
/// change (ok → low → over_limit, and back when the limit is raised) is
/// published once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_events_are_published_once_each() {
    use tollgate_budgets::{Event, Level};
    let r = rig(r#"{}"#, "2026-11-24T10:00:00Z").await;
    r.create_budget(json!({"id": "ev", "scope": "user", "subject": "eve", "limit_tokens": 200, "period": "daily", "low_threshold_pct": 50}))
        .await;
    let mut events = r.budgets.events.subscribe_lossless();
    let key = r.key("eve").await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let s = r.chat(&key, 20).await;
        statuses.push(s);
        if s == 429 {
            break;
        }
    }
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let resp = r
        .http
        .patch(format!("{}/admin/budgets/ev", r.url))
        .bearer_auth(ADMIN)
        .json(&json!({"limit_tokens": 100000}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(r.chat(&key, 20).await, 200);
    let mut got = Vec::new();
    while let Ok(Some(p)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), events.recv()).await
    {
        got.push(p);
    }
    let seqs: Vec<u64> = got.iter().map(|p| p.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let settled = got
        .iter()
        .filter(|p| matches!(p.event, Event::Settled { .. }))
        .count();
    assert_eq!(settled, served + 1, "one per request served");
    let refused: Vec<&str> = got
        .iter()
        .filter_map(|p| match &p.event {
            Event::Refused { budget_id, .. } => Some(budget_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, ["ev"]);
    let levels: Vec<(Level, Level)> = got
        .iter()
        .filter_map(|p| match &p.event {
            Event::Level {
                from,
                to,
                budget_id,
                subject,
                ..
            } => {
                assert_eq!((budget_id.as_str(), subject.as_str()), ("ev", "eve"));
                Some((*from, *to))
            }
            _ => None,
        })
        .collect();
    let path: Vec<Level> = std::iter::once(Level::Ok)
        .chain(levels.iter().map(|(_, to)| *to))
        .collect();
    assert!(
        levels.windows(2).all(|w| w[0].1 == w[1].0),
        "each change starts where the last ended: {levels:?}"
    );
    assert!(
        path.contains(&Level::Low) && path.contains(&Level::OverLimit),
        "{path:?}"
    );
    assert_eq!(
        path.last(),
        Some(&Level::Ok),
        "back to ok once the limit is raised: {path:?}"
    );
}
