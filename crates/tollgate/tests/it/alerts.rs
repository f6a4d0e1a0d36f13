//! Alerts against the real binary: a real local HTTP receiver takes the
//! webhooks; thresholds fire once each, survive restarts, retry, and
//! refuse hosts they may not reach.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// One request the receiver took.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// What the receiver answered.
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A webhook receiver on loopback: answers 500 to the first `fail_first`
/// requests, then 200; keeps every request.
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start(fail_first: usize) -> Receiver {
        Self::start_on(0, fail_first)
    }

    /// On a given port (0: any free one).
    pub fn start_on(port: u16, fail_first: usize) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicUsize::new(fail_first));
        let g = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let (g, failing) = (g.clone(), failing.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let n = s.read(&mut chunk).unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let headers: Vec<(String, String)> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let n = s.read(&mut chunk).unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                    let fail = failing
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let answered = if fail { 500 } else { 200 };
                    g.lock().unwrap().push(Received {
                        headers,
                        body,
                        answered,
                    });
                    let reply = if fail { "try later" } else { "ok" };
                    let _ = write!(
                        s,
                        "HTTP/1.1 {answered} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                        reply.len()
                    );
                });
            }
        });
        Receiver { url, got }
    }

    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was received (10 s at most),
    /// then a little longer for anything that should not come.
    pub fn wait_until(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !done(&self.all()) {
            assert!(Instant::now() < deadline, "receiver got {:#?}", self.all());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(700));
        self.all()
    }
}

fn alerts_yaml(receiver_url: &str, extra: &str) -> String {
    format!(
        r#"
alerts:
  allow_hosts: ["127.0.0.1"]
  delivery: {{ retry_first_seconds: 1 }}
  webhooks:
    - {{ name: ops, url: "{receiver_url}", secret_env: TEST_WEBHOOK_SECRET }}
{extra}"#
    )
}

fn thresholds(got: &[Received]) -> Vec<u64> {
    let mut t: Vec<u64> = got
        .iter()
        .filter(|r| r.answered == 200 && r.header("x-tollgate-event") == Some("budget.threshold"))
        .map(|r| r.json()["threshold_pct"].as_u64().unwrap())
        .collect();
    t.sort_unstable();
    t
}

fn chat(g: &Gateway, key: &str, output: u32) -> u16 {
    client()
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(key)
        .header("x-mock-output-tokens", output.to_string())
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": output,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn budget(g: &Gateway, body: Value) -> String {
    let v = post_json(&format!("{}/admin/budgets", g.url), Some(ADMIN_KEY), &body);
    v["id"].as_str().unwrap().to_string()
}

fn used_tokens(g: &Gateway, id: &str) -> u64 {
    let v = get_json(&format!("{}/admin/budgets/{id}", g.url), Some(ADMIN_KEY));
    v["instances"][0]["used_tokens"].as_u64().unwrap_or(0)
}

#[test]
fn a_hundred_requests_crossing_thresholds_deliver_each_once_signed() {
    let m = Mock::start(&[]);
    let rx = Receiver::start(0);
    let g = Gateway::start_with(&m, &alerts_yaml(&rx.url, ""));
    let (_, key) = g.create_key(json!({"name": "h", "user": "hundred"}));
    let id = budget(
        &g,
        json!({"scope": "user", "subject": "hundred", "limit_tokens": 2000, "period": "daily"}),
    );
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..100).map(|_| s.spawn(|| chat(&g, &key, 20))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );
    let got = rx.wait_until(|g| thresholds(g).len() >= 3);
    assert_eq!(thresholds(&got), [50, 80, 100], "each threshold once");
    let now = jiff::Timestamp::now().as_second();
    for r in &got {
        let sig = r.header("x-tollgate-signature").expect("signed");
        assert!(
            tollgate_alerts::sign::verify(
                WEBHOOK_SECRET.as_bytes(),
                sig,
                r.body.as_bytes(),
                now,
                300
            ),
            "signature verifies: {sig}"
        );
        let body = r.json();
        assert_eq!(r.header("x-tollgate-event"), body["type"].as_str());
        assert!(
            r.header("x-tollgate-delivery")
                .is_some_and(|d| d.starts_with("dlv_"))
        );
        assert_eq!(body["budget"]["id"], id.as_str());
        assert_eq!(body["limit_tokens"], 2000);
        if body["type"] == "budget.threshold" {
            assert_eq!(body["top_models"][0]["model"], "gpt-4o-mini", "{body}");
            assert_eq!(body["top_spenders"][0]["user"], "hundred", "{body}");
            assert!(body["resets_at"].is_string() && body["period_start"].is_string());
        }
    }
    assert_eq!(
        got.iter()
            .filter(|r| r.header("x-tollgate-event") == Some("budget.exceeded"))
            .count(),
        1,
        "the budget is exceeded once this period"
    );
    let listed = get_json(
        &format!("{}/admin/alerts?budget={id}&type=budget.threshold", g.url),
        Some(ADMIN_KEY),
    );
    let alerts = listed["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 3, "{listed}");
    for a in alerts {
        assert_eq!(a["status"], "delivered", "{a}");
        assert_eq!(a["attempts"], 1);
        assert_eq!(a["last_status"], 200);
    }
}

#[test]
fn a_restart_between_two_thresholds_neither_repeats_nor_loses_one() {
    let m = Mock::start(&[]);
    let rx = Receiver::start(0);
    let mut g = Gateway::start_with(&m, &alerts_yaml(&rx.url, ""));
    let (_, key) = g.create_key(json!({"name": "r", "user": "restarted"}));
    let id = budget(
        &g,
        json!({"scope": "user", "subject": "restarted", "limit_tokens": 1000,
               "period": "daily", "alert_thresholds": [50, 80]}),
    );
    while used_tokens(&g, &id) < 550 {
        assert_eq!(chat(&g, &key, 40), 200);
    }
    rx.wait_until(|g| thresholds(g) == [50]);
    g.terminate();
    g.restart();
    while used_tokens(&g, &id) < 850 {
        assert_eq!(chat(&g, &key, 40), 200);
    }
    let got = rx.wait_until(|g| thresholds(g).len() >= 2);
    assert_eq!(thresholds(&got), [50, 80]);
}

#[test]
fn a_receiver_failing_twice_gets_three_attempts_and_one_delivery() {
    let m = Mock::start(&[]);
    let rx = Receiver::start(2);
    let g = Gateway::start_with(&m, &alerts_yaml(&rx.url, ""));
    let (_, key) = g.create_key(json!({"name": "f", "user": "flaky"}));
    budget(
        &g,
        json!({"scope": "user", "subject": "flaky", "limit_tokens": 100,
               "period": "daily", "alert_thresholds": [50]}),
    );
    assert_eq!(chat(&g, &key, 60), 200);
    let got = rx.wait_until(|g| g.iter().any(|r| r.answered == 200));
    assert_eq!(got.len(), 3, "{got:#?}");
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("x-tollgate-delivery").unwrap())
        .collect();
    assert!(
        ids.iter().all(|d| *d == ids[0]),
        "one delivery, three attempts"
    );
    assert_eq!(
        got.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    let listed = get_json(
        &format!("{}/admin/alerts?type=budget.threshold", g.url),
        Some(ADMIN_KEY),
    );
    let a = &listed["alerts"][0];
    assert_eq!(a["status"], "delivered", "{listed}");
    assert_eq!(a["attempts"], 3);
    let one = get_json(
        &format!("{}/admin/alerts/{}", g.url, a["id"].as_str().unwrap()),
        Some(ADMIN_KEY),
    );
    let log: Vec<u64> = one["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_u64().unwrap())
        .collect();
    assert_eq!(log, [500, 500, 200], "{one}");
    assert_eq!(one["deliveries"][0]["status"], "delivered");
    // `/metrics` counts the attempts by outcome.
    let metrics = g.metrics();
    for line in [
        "tollgate_webhook_deliveries_total{outcome=\"delivered\"} 1",
        "tollgate_webhook_deliveries_total{outcome=\"retry\"} 2",
        "tollgate_webhook_deliveries_total{outcome=\"failed\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}: {metrics}");
    }
    // Redelivery sends it again.
    let r = post_json(
        &format!(
            "{}/admin/alerts/{}/redeliver",
            g.url,
            a["id"].as_str().unwrap()
        ),
        Some(ADMIN_KEY),
        &json!({}),
    );
    assert_eq!(r["redelivering"], 1);
    rx.wait_until(|g| g.len() == 4);
}

#[test]
fn targets_off_the_allow_list_are_refused_by_name_and_by_address() {
    let m = Mock::start(&[]);
    let rx = Receiver::start(0);
    let port = rx
        .url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/hook");
    // `localhost` is listed by name, but it resolves to loopback, which is
    // not listed as an address: refused when connecting.
    let g = Gateway::start_with(
        &m,
        "alerts:\n  allow_hosts: [\"localhost\"]\n  delivery: { retry_first_seconds: 1 }\n",
    );
    for (url, names) in [
        ("http://evil.test/x", "evil.test"),
        ("http://127.0.0.1/x", "127.0.0.1"),
        ("http://10.1.2.3/x", "10.1.2.3"),
    ] {
        let r = client()
            .post(format!("{}/admin/budgets", g.url))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"scope": "user", "subject": "x", "limit_usd": "1", "webhook_url": url}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{url}");
        let v: Value = r.json().unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(names) && msg.contains("allow_hosts"), "{msg}");
    }
    let (_, key) = g.create_key(json!({"name": "l", "user": "local"}));
    let id = budget(
        &g,
        json!({"scope": "user", "subject": "local", "limit_tokens": 100, "period": "daily",
               "alert_thresholds": [50], "webhook_url": format!("http://localhost:{port}/hook")}),
    );
    assert_eq!(chat(&g, &key, 60), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let alert = loop {
        let listed = get_json(
            &format!("{}/admin/alerts?budget={id}", g.url),
            Some(ADMIN_KEY),
        );
        if let Some(a) = listed["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["status"] == "failed")
        {
            break a.clone();
        }
        assert!(Instant::now() < deadline, "{listed}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = alert["last_error"].as_str().unwrap();
    assert!(
        err.contains("resolves to") && err.contains("allow_hosts"),
        "{err}"
    );
    assert!(rx.all().is_empty(), "nothing reached the receiver");
    // In the config file: the gateway does not start, naming the host.
    let yaml = std::fs::read_to_string(&g.config).unwrap().replace(
        "alerts:\n  allow_hosts: [\"localhost\"]\n",
        "alerts:\n  allow_hosts: [\"localhost\"]\n  webhooks: [{ name: ops, url: \"https://hooks.example.com/t\" }]\n",
    );
    std::fs::write(&g.config, yaml).unwrap();
    let (ok, text) = g.check_config();
    assert!(!ok, "{text}");
    assert!(
        text.contains("hooks.example.com") && text.contains("alerts.webhooks[0].url"),
        "{text}"
    );
}

#[test]
fn a_receiver_down_across_a_restart_gets_its_pending_delivery_afterwards() {
    let m = Mock::start(&[]);
    // A port nothing listens on yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut g = Gateway::start_with(&m, &alerts_yaml(&url, ""));
    let (_, key) = g.create_key(json!({"name": "d", "user": "down"}));
    budget(
        &g,
        json!({"scope": "user", "subject": "down", "limit_tokens": 100,
               "period": "daily", "alert_thresholds": [50]}),
    );
    assert_eq!(chat(&g, &key, 60), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = get_json(
            &format!("{}/admin/alerts?type=budget.threshold", g.url),
            Some(ADMIN_KEY),
        );
        let a = &listed["alerts"][0];
        if a["attempts"].as_u64().unwrap_or(0) >= 1 {
            assert_eq!(a["status"], "pending", "{a}");
            assert!(a["last_error"].as_str().is_some(), "{a}");
            break;
        }
        assert!(Instant::now() < deadline, "{listed}");
        std::thread::sleep(Duration::from_millis(100));
    }
    g.terminate();
    let rx = Receiver::start_on(port, 0);
    g.restart();
    let got = rx.wait_until(|g| !g.is_empty());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["threshold_pct"], 50);
    let listed = get_json(
        &format!("{}/admin/alerts?type=budget.threshold", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(listed["alerts"][0]["status"], "delivered", "{listed}");
}

#[test]
fn test_webhooks_answer_with_each_outcome_and_slack_targets_get_text() {
    let m = Mock::start(&[]);
    let rx = Receiver::start(0);
    let slack = Receiver::start(0);
    let g = Gateway::start_with(
        &m,
        &alerts_yaml(
            &rx.url,
            &format!(
                "    - {{ name: chat, url: \"{}\", format: slack, events: [test] }}\n",
                slack.url
            ),
        ),
    );
    let id = budget(
        &g,
        json!({"scope": "user", "subject": "tess", "limit_usd": "2.00", "period": "monthly"}),
    );
    let r = post_json(
        &format!("{}/admin/budgets/{id}/test-webhook", g.url),
        Some(ADMIN_KEY),
        &json!({}),
    );
    assert_eq!(r["delivered"], true, "{r}");
    let targets: Vec<&str> = r["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets.len(), 2, "{r}");
    let got = rx.wait_until(|g| !g.is_empty());
    let body = got[0].json();
    assert_eq!(body["type"], "test");
    assert_eq!(body["budget"]["id"], id.as_str());
    assert_eq!(body["limit_usd"], "2.000000");
    let text = slack.wait_until(|g| !g.is_empty())[0].json();
    let text = text["text"].as_str().unwrap();
    assert!(
        text.contains("Tollgate test") && text.contains(&id) && text.contains("of $2.000000"),
        "{text}"
    );
    let r = client()
        .post(format!("{}/admin/budgets/nope/test-webhook", g.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// The first fenced block of `lang` after `from` in `text`.
fn code_block<'a>(text: &'a str, from: &str, lang: &str) -> &'a str {
    let at = text.find(from).expect("README section");
    let open = format!("```{lang}\n");
    let start = at + text[at..].find(&open).expect("code block") + open.len();
    let end = start + text[start..].find("```").unwrap();
    &text[start..end]
}

#[test]
fn the_readme_signature_recipes_verify_a_delivered_webhook() {
    let m = Mock::start(&[]);
    let rx = Receiver::start(0);
    let g = Gateway::start_with(&m, &alerts_yaml(&rx.url, ""));
    let id = budget(
        &g,
        json!({"scope": "global", "limit_usd": "10", "period": "monthly"}),
    );
    post_json(
        &format!("{}/admin/budgets/{id}/test-webhook", g.url),
        Some(ADMIN_KEY),
        &json!({}),
    );
    let got = rx.wait_until(|g| !g.is_empty());
    let sig = got[0].header("x-tollgate-signature").unwrap().to_string();
    let readme = include_str!("../../../../README.md");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body.json"), &got[0].body).unwrap();

    let py = code_block(readme, "**Checking the signature.**", "python");
    let run_py = |secret: &str| {
        let script = format!(
            "{py}\nimport sys\nbody = open('body.json', 'rb').read()\nsys.exit(0 if verify({secret:?}.encode(), {sig:?}, body) else 1)\n"
        );
        std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .status()
            .unwrap()
            .success()
    };
    assert!(run_py(WEBHOOK_SECRET), "the Python recipe verifies");
    assert!(!run_py("not-the-secret"), "and fails with another secret");

    let sh = code_block(readme, "**Checking the signature.**", "sh");
    let run_sh = |secret: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(sh)
            .env("SIG", &sig)
            .env("SECRET", secret)
            .current_dir(dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "valid"
    };
    assert!(run_sh(WEBHOOK_SECRET), "the shell recipe verifies");
    assert!(!run_sh("not-the-secret"), "and fails with another secret");
}
