//! `tollgate demo`: the main job on a fresh machine, no provider account.
//! Starts the mock provider and the gateway on free ports with a temporary
//! SQLite file, creates a key through the admin API, sends a scripted mix
//! of requests in all three wire formats (streaming and not), budgets that
//! cap, refuse, warn, downgrade and end a stream mid-flight, and prints the
//! usage report.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tollgate_gateway::config::{ModelRoute, ProviderConfig};
use tollgate_gateway::{Config, Gateway};
use tollgate_store::{GroupBy, ReportQuery};

const PROVIDER_KEY: &str = "sk-demo-provider-key";

fn provider(name: &str, kind: &str, base_url: String) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        kind: kind.into(),
        base_url,
        api_key_env: Some("TOLLGATE_DEMO_PROVIDER_KEY".into()),
        connect_timeout_ms: 5_000,
        timeout_ms: 30_000,
        stream_idle_timeout_ms: 30_000,
        // The demo steers the mock with its knobs.
        forward_headers: vec!["x-mock-*".into()],
        ..ProviderConfig::default()
    }
}

fn route(pattern: &str, provider: &str) -> ModelRoute {
    ModelRoute {
        pattern: pattern.into(),
        provider: provider.into(),
        upstream_model: None,
    }
}

struct Step {
    label: &'static str,
    path: String,
    body: Value,
    headers: Vec<(&'static str, &'static str)>,
    stream: bool,
}

pub async fn run(keep_running: bool) -> Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let db = dir.path().join("tollgate-demo.db");

    // The mock provider, checking that the gateway sends the provider key.
    let mock_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mock_addr = mock_listener.local_addr()?;
    let mock = tollgate_mock::MockConfig {
        chunk_delay: Duration::from_millis(2),
        expect_key: Some(PROVIDER_KEY.into()),
        ..Default::default()
    };
    tokio::spawn(tollgate_mock::serve(mock_listener, mock));

    let admin_key = format!("admin-{}", identity_suffix());
    let mut config = Config {
        database: format!("sqlite://{}", db.display()),
        admin_keys: vec![admin_key.clone()],
        ..Config::default()
    };
    config.providers = vec![
        provider("openai", "openai", format!("http://{mock_addr}/v1")),
        provider("anthropic", "anthropic", format!("http://{mock_addr}")),
        provider("gemini", "gemini", format!("http://{mock_addr}/v1beta")),
    ];
    config.models = vec![
        route("gpt-*", "openai"),
        route("o3*", "openai"),
        route("o4*", "openai"),
        route("text-embedding-*", "openai"),
        route("claude-*", "anthropic"),
        route("gemini-*", "gemini"),
    ];
    // Streams reserve a first slice and are topped up as they go, so a
    // budget can end one mid-flight (shown below).
    config.budgets.streaming.mode = tollgate_gateway::config::StreamingMode::Topup;
    let store = tollgate_store::open(&config.database).await?;
    let env = |name: &str| (name == "TOLLGATE_DEMO_PROVIDER_KEY").then(|| PROVIDER_KEY.to_string());
    let gateway = Gateway::new(config, store.clone(), &env).await?;
    let state = gateway.state().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(listener, async {
        let _ = stop_rx.await;
    }));

    println!("Tollgate demo");
    println!("  mock provider  http://{mock_addr}  (OpenAI, Anthropic and Gemini wire formats)");
    println!("  gateway        {base}");
    println!("  database       {}", db.display());
    println!();

    let http = reqwest::Client::new();
    let (key_id, key) = create_key(
        &http,
        &base,
        &admin_key,
        json!({"name": "demo", "user": "alice", "tenant": "acme"}),
    )
    .await?;
    println!("created virtual key {key_id} for user alice, tenant acme (POST /admin/keys)");
    println!();

    let msgs = json!([{"role": "user", "content": "Say something about foxes."}]);
    let steps = vec![
        Step {
            label: "OpenAI chat",
            path: "/v1/chat/completions".into(),
            body: json!({"model": "gpt-4o-mini", "messages": msgs}),
            headers: vec![],
            stream: false,
        },
        Step {
            label: "OpenAI chat, streamed",
            path: "/v1/chat/completions".into(),
            body: json!({"model": "gpt-4o-mini", "messages": msgs, "stream": true}),
            headers: vec![],
            stream: true,
        },
        Step {
            label: "OpenAI reasoning + cached prompt",
            path: "/v1/chat/completions".into(),
            body: json!({"model": "o4-mini", "messages": msgs, "max_completion_tokens": 500}),
            headers: vec![
                ("x-mock-reasoning-tokens", "120"),
                ("x-mock-cached-tokens", "1024"),
            ],
            stream: false,
        },
        Step {
            label: "OpenAI Responses API, streamed",
            path: "/v1/responses".into(),
            body: json!({"model": "gpt-4.1", "input": "Tell me about foxes.", "stream": true}),
            headers: vec![],
            stream: true,
        },
        Step {
            label: "OpenAI embeddings",
            path: "/v1/embeddings".into(),
            body: json!({"model": "text-embedding-3-small", "input": ["quick brown fox", "lazy dog"]}),
            headers: vec![],
            stream: false,
        },
        Step {
            label: "Anthropic messages with cache writes",
            path: "/v1/messages".into(),
            body: json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": msgs}),
            headers: vec![
                ("x-mock-cache-write-5m-tokens", "2048"),
                ("x-mock-cache-write-1h-tokens", "1024"),
            ],
            stream: false,
        },
        Step {
            label: "Anthropic messages, streamed, cache read",
            path: "/v1/messages".into(),
            body: json!({"model": "claude-haiku-4-5", "max_tokens": 256, "messages": msgs, "stream": true}),
            headers: vec![("x-mock-cached-tokens", "3072")],
            stream: true,
        },
        Step {
            label: "Gemini generateContent",
            path: "/v1beta/models/gemini-2.5-flash:generateContent".into(),
            body: json!({"contents": [{"parts": [{"text": "Foxes?"}]}]}),
            headers: vec![("x-mock-reasoning-tokens", "64")],
            stream: false,
        },
        Step {
            label: "Gemini 300k-token prompt (long-context tier)",
            path: "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse".into(),
            body: json!({"contents": [{"parts": [{"text": "A very long document..."}]}]}),
            headers: vec![("x-mock-input-tokens", "300000")],
            stream: true,
        },
    ];

    for s in &steps {
        let mut req = http.post(format!("{base}{}", s.path)).json(&s.body);
        req = match s.path.as_str() {
            p if p.starts_with("/v1/messages") => req
                .header("x-api-key", &key)
                .header("anthropic-version", "2023-06-01"),
            p if p.starts_with("/v1beta") => req.header("x-goog-api-key", &key),
            _ => req.bearer_auth(&key),
        };
        for (k, v) in &s.headers {
            req = req.header(*k, *v);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{}: sending", s.label))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            bail!(
                "{}: gateway answered {status}: {}",
                s.label,
                String::from_utf8_lossy(&bytes)
            );
        }
        let shape = if s.stream {
            let events = bytes
                .split(|b| *b == b'\n')
                .filter(|l| l.starts_with(b"data:"))
                .count();
            format!("{events} SSE events")
        } else {
            format!("{} bytes of JSON", bytes.len())
        };
        println!("  {:<48} {status}  {shape}", s.label);
    }

    // A refused request, to show errors arrive in the SDK's own format.
    let bad = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "my-unpriced-finetune", "messages": msgs}))
        .send()
        .await?;
    let status = bad.status();
    let body: Value = bad.json().await?;
    println!(
        "  {:<48} {status}  {}",
        "unknown model (refused, nothing recorded)",
        body["error"]["message"].as_str().unwrap_or("")
    );
    println!();

    // A budget: bob may spend $0.0005 a day. The first request asks for
    // 1000 output tokens; the budget affords fewer, so Tollgate caps
    // max_tokens instead of refusing. Then the budget is spent: refused,
    // before anything reaches the provider.
    println!("Budgets (POST /admin/budgets): user bob may spend $0.0005 per day");
    http.post(format!("{base}/admin/budgets"))
        .bearer_auth(&admin_key)
        .json(&json!({"id": "bob-daily", "scope": "user", "subject": "acme/bob", "limit_usd": "0.0005", "period": "daily"}))
        .send()
        .await?
        .error_for_status()?;
    let bob_key = create_key(
        &http,
        &base,
        &admin_key,
        json!({"name": "bob", "user": "bob", "tenant": "acme"}),
    )
    .await?
    .1;
    for attempt in 1..=3 {
        let resp = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&bob_key)
            .header("x-mock-output-tokens", "1000")
            .json(&json!({"model": "gpt-4o", "max_tokens": 1000, "messages": msgs}))
            .send()
            .await?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let (remaining, capped) = (
            header("x-budget-remaining"),
            header("x-tollgate-capped-max-tokens"),
        );
        let body: Value = resp.json().await?;
        if status.is_success() {
            println!(
                "  bob request {attempt}: {status}, asked for 1000 output tokens; max_tokens capped to {capped}, got {}; ${remaining} left",
                body["usage"]["completion_tokens"]
            );
        } else {
            println!(
                "  bob request {attempt}: {status} {}",
                body["error"]["code"].as_str().unwrap_or("")
            );
            println!("    {}", body["error"]["message"].as_str().unwrap_or(""));
        }
    }
    println!();

    // Soft limits: carol's daily budget warns instead of refusing (her
    // monthly one still blocks), dave's downgrades to a cheaper model.
    println!("Soft limits: carol's daily budget warns, dave's downgrades gpt-4o to gpt-4o-mini");
    for spec in [
        json!({"id": "carol-daily", "scope": "user", "subject": "acme/carol", "limit_usd": "0.00007",
               "period": "daily", "action": "warn"}),
        json!({"id": "carol-monthly", "scope": "user", "subject": "acme/carol", "limit_usd": "0.00015",
               "period": "monthly"}),
        json!({"id": "dave-daily", "scope": "user", "subject": "acme/dave", "limit_usd": "0.0008",
               "period": "daily", "models": ["gpt-4o"], "action": "downgrade", "downgrade_to": "gpt-4o-mini"}),
    ] {
        http.post(format!("{base}/admin/budgets"))
            .bearer_auth(&admin_key)
            .json(&spec)
            .send()
            .await?
            .error_for_status()?;
    }
    for user in ["carol", "dave"] {
        let k = create_key(
            &http,
            &base,
            &admin_key,
            json!({"name": user, "user": user, "tenant": "acme"}),
        )
        .await?
        .1;
        let model = if user == "carol" {
            "gpt-4o-mini"
        } else {
            "gpt-4o"
        };
        for attempt in 1..=5 {
            let resp = http
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&k)
                .header("x-mock-output-tokens", "60")
                .json(&json!({"model": model, "max_tokens": 60, "messages": msgs}))
                .send()
                .await?;
            let status = resp.status();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            };
            let (warning, from) = (
                header("x-tollgate-warning"),
                header("x-tollgate-downgraded-from"),
            );
            let body: Value = resp.json().await?;
            let what = match (status.is_success(), warning, from) {
                (false, _, _) => format!(
                    "{} {}",
                    body["error"]["code"].as_str().unwrap_or(""),
                    body["error"]["message"].as_str().unwrap_or("")
                ),
                (true, Some(w), _) => format!("served; x-tollgate-warning: {w}"),
                (true, None, Some(f)) => format!(
                    "served by {} (x-tollgate-downgraded-from: {f})",
                    body["model"].as_str().unwrap_or("?")
                ),
                (true, None, None) => {
                    format!("served by {}", body["model"].as_str().unwrap_or("?"))
                }
            };
            println!("  {user} request {attempt}: {status} {what}");
        }
    }
    println!();

    cut_stream(&http, &base, &admin_key).await?;

    state.journal.flush().await;
    for (title, by) in [
        (
            "Usage by model (tollgate usage report --by model):",
            GroupBy::Model,
        ),
        ("Usage by user:", GroupBy::User),
    ] {
        println!("{title}");
        let q = ReportQuery::new(vec![by]);
        let report = tollgate_gateway::admin::run_report(&*store, &q).await?;
        print!("{}", tollgate_gateway::admin::report_table(&report));
        println!();
    }
    println!("Every request above was priced exactly from the built-in catalog: cached reads,");
    println!(
        "cache writes (5 min / 1 h), reasoning tokens and Gemini's long-context tier included."
    );

    if keep_running {
        println!();
        println!("Still serving. Try it:");
        println!("  curl {base}/v1/chat/completions -H 'Authorization: Bearer {key}' \\");
        println!(
            "       -H 'content-type: application/json' -d '{{\"model\":\"gpt-4o\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
        );
        println!("  curl {base}/admin/records -H 'Authorization: Bearer {admin_key}'");
        println!("Ctrl-C to stop.");
        crate::commands::shutdown_signal().await;
    }
    let _ = stop_tx.send(());
    server.await.context("gateway task")??;
    Ok(())
}

/// Creates a virtual key through the admin API: (its id, the key).
async fn create_key(
    http: &reqwest::Client,
    base: &str,
    admin_key: &str,
    spec: Value,
) -> Result<(String, String)> {
    let created: Value = http
        .post(format!("{base}/admin/keys"))
        .bearer_auth(admin_key)
        .json(&spec)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let key = created["key"]
        .as_str()
        .context("admin API returned no key")?
        .to_string();
    Ok((created["id"].as_str().unwrap_or("?").to_string(), key))
}

fn identity_suffix() -> String {
    tollgate_gateway::identity::generate_key()
        .trim_start_matches("tg-")
        .to_string()
}

/// Erin streams a 2,000-token answer on a 600-token daily budget: the
/// stream is topped up as it goes and ends cleanly, as a length stop, when
/// the budget cannot fund the next slice.
async fn cut_stream(http: &reqwest::Client, base: &str, admin_key: &str) -> Result<()> {
    println!("Streams: erin may use 600 tokens per day and streams a 2,000-token answer");
    http.post(format!("{base}/admin/budgets"))
        .bearer_auth(admin_key)
        .json(
            &json!({"id": "erin-daily", "scope": "user", "subject": "acme/erin",
                      "limit_tokens": 600, "period": "daily"}),
        )
        .send()
        .await?
        .error_for_status()?;
    let k = create_key(
        http,
        base,
        admin_key,
        json!({"name": "erin", "user": "erin", "tenant": "acme"}),
    )
    .await?
    .1;
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&k)
        .header("x-mock-output-tokens", "2000")
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 2000, "stream": true,
                      "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "Tell me everything about foxes."}]}))
        .send()
        .await?;
    let status = resp.status();
    let body = resp.text().await?;
    let (mut chars, mut finish, mut usage, mut done) = (0, None, None, false);
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(c) = chunk["choices"][0]["delta"]["content"].as_str() {
            chars += c.len();
        }
        if let Some(f) = chunk["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        if chunk["usage"].is_object() {
            usage = chunk["usage"]["completion_tokens"].as_u64();
        }
    }
    println!(
        "  stream: {status}, {chars} characters, finish_reason {}, {} output tokens{}",
        finish.as_deref().unwrap_or("none"),
        usage.map_or("?".into(), |u| u.to_string()),
        if done { ", then [DONE]" } else { "" }
    );
    let budget: Value = http
        .get(format!("{base}/admin/budgets/erin-daily"))
        .bearer_auth(admin_key)
        .send()
        .await?
        .json()
        .await?;
    println!(
        "  erin-daily: {} of 600 tokens used: the stream was topped up as it went and ended",
        budget["instances"][0]["used_tokens"]
    );
    println!("  cleanly, in its own format, when the budget could not fund more");
    println!();
    Ok(())
}
