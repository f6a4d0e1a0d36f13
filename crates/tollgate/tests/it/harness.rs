//! Starts the real binaries — `tollgate mock-provider` and `tollgate serve`
//! — on free loopback ports, with a temporary SQLite file, and gives tests
//! HTTP helpers. Everything is torn down on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
pub const PROVIDER_KEY: &str = "sk-test-provider";
/// The webhook signing secret, in `TEST_WEBHOOK_SECRET`.
pub const WEBHOOK_SECRET: &str = "whsec-test-0123456789";

/// Spawns `cmd`, waits for a line on stdout or stderr that contains
/// `marker`, and returns the URL that follows it.
fn spawn_and_wait(mut cmd: Command, marker: &str) -> (Child, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tollgate");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for pipe in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        let marker = marker.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(i) = line.find(&marker) {
                    let _ = tx.send(line[i + marker.len()..].trim().to_string());
                }
                if std::env::var_os("TOLLGATE_TEST_LOG").is_some() {
                    eprintln!("[child] {line}");
                }
            }
        });
    }
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(url) => (child, url),
        Err(_) => {
            let _ = child.kill();
            panic!("process did not print {marker:?} within 30 s");
        }
    }
}

pub struct Mock {
    child: Child,
    pub url: String,
}

impl Mock {
    pub fn start(extra: &[&str]) -> Mock {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "mock-provider",
            "--listen",
            "127.0.0.1:0",
            "--expect-key",
            PROVIDER_KEY,
        ]);
        cmd.args(extra);
        let (child, url) = spawn_and_wait(cmd, "mock provider listening on ");
        Mock { child, url }
    }

    /// What the mock billed for one request id.
    pub fn billed(&self, request_id: &str) -> Value {
        let all = get_json(&format!("{}/mock/billing", self.url), None);
        all["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["request_id"] == request_id)
            .cloned()
            .unwrap_or_else(|| panic!("mock has no request {request_id}"))
    }

    pub fn billing(&self) -> Value {
        get_json(&format!("{}/mock/billing", self.url), None)
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Gateway {
    pub child: Option<Child>,
    pub url: String,
    /// Holds the database and config until the test ends.
    pub _dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Gateway {
    /// Default config: the three providers on `mock`, common model routes,
    /// one custom-priced and one deliberately unpriced model.
    pub fn start(mock: &Mock) -> Gateway {
        Self::start_with(mock, "")
    }

    pub fn start_with(mock: &Mock, extra_yaml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tollgate.yaml");
        let yaml = format!(
            r#"
listen: 127.0.0.1:0
database: sqlite://{db}
admin_keys: ["${{TEST_ADMIN_KEY}}"]
max_body_bytes: 65536
providers:
  - name: openai
    kind: openai
    base_url: {m}/v1
    api_key_env: TEST_PROVIDER_KEY
    timeout_ms: 3000
    stream_idle_timeout_ms: 3000
    forward_headers: ["x-mock-*"]
  - name: anthropic
    kind: anthropic
    base_url: {m}
    api_key_env: TEST_PROVIDER_KEY
    forward_headers: ["x-mock-*"]
  - name: gemini
    kind: gemini
    base_url: {m}/v1beta
    api_key_env: TEST_PROVIDER_KEY
    forward_headers: ["x-mock-*"]
  - name: dead
    kind: openai
    base_url: http://127.0.0.1:9
models:
  - match: "fast"
    provider: openai
    upstream_model: gpt-4o-mini
  - match: "dead-*"
    provider: dead
  - match: "gpt-*"
    provider: openai
  - match: "o4*"
    provider: openai
  - match: "text-embedding-*"
    provider: openai
  - match: "my-*"
    provider: openai
  - match: "claude-*"
    provider: anthropic
  - match: "gemini-*"
    provider: gemini
pricing:
  models:
    - model: my-finetune
      input_per_mtok: "0.30"
      output_per_mtok: "1.20"
    - model: dead-model
      input_per_mtok: "1"
      output_per_mtok: "1"
{extra_yaml}
"#,
            db = dir.path().join("tollgate.db").display(),
            m = mock.url,
        );
        std::fs::write(&config, yaml).unwrap();
        let mut g = Gateway {
            child: None,
            url: String::new(),
            _dir: dir,
            config,
        };
        g.restart();
        g
    }

    /// (Re)starts the process on the same config and database.
    pub fn restart(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"]).arg(&self.config);
        cmd.env("TEST_ADMIN_KEY", ADMIN_KEY)
            .env("TEST_PROVIDER_KEY", PROVIDER_KEY)
            .env("TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("RUST_LOG", "warn");
        let (child, url) = spawn_and_wait(cmd, "tollgate listening on ");
        self.child = Some(child);
        self.url = url;
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(status.success(), "gateway exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `tollgate check-config` on this gateway's config: success and the
    /// output (stderr then stdout).
    pub fn check_config(&self) -> (bool, String) {
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&self.config)
            .env("TEST_ADMIN_KEY", ADMIN_KEY)
            .env("TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        (out.status.success(), text)
    }

    pub fn create_key(&self, body: Value) -> (String, String) {
        let v = post_json(&format!("{}/admin/keys", self.url), Some(ADMIN_KEY), &body);
        (
            v["id"].as_str().unwrap().to_string(),
            v["key"].as_str().unwrap().to_string(),
        )
    }

    pub fn key(&self) -> String {
        self.create_key(json!({"name": "t", "user": "alice", "tenant": "acme"}))
            .1
    }

    /// The usage record of a request, waiting for the batch writer.
    pub fn record(&self, request_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let page = get_json(
                &format!("{}/admin/records?limit=1000", self.url),
                Some(ADMIN_KEY),
            );
            if let Some(r) = page["records"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["request_id"] == request_id)
            {
                return r.clone();
            }
            assert!(Instant::now() < deadline, "no record for {request_id}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// All records, newest first (waits a moment for the writer first).
    pub fn records(&self) -> Vec<Value> {
        std::thread::sleep(Duration::from_millis(300));
        let page = get_json(
            &format!("{}/admin/records?limit=1000", self.url),
            Some(ADMIN_KEY),
        );
        page["records"].as_array().unwrap().clone()
    }

    /// `/metrics` as the admin reads it.
    pub fn metrics(&self) -> String {
        client()
            .get(format!("{}/metrics", self.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .args(["--config"])
            .arg(&self.config)
            .env("TEST_ADMIN_KEY", ADMIN_KEY)
            .env("TEST_PROVIDER_KEY", PROVIDER_KEY)
            .output()
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The `x-tollgate-request-id` of a response: the id of its usage record.
pub fn request_id(resp: &reqwest::blocking::Response) -> String {
    resp.headers()["x-tollgate-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

pub fn get_json(url: &str, bearer: Option<&str>) -> Value {
    let mut r = client().get(url);
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    let resp = r.send().unwrap();
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json().unwrap()
}

pub fn post_json(url: &str, bearer: Option<&str>, body: &Value) -> Value {
    let mut r = client().post(url).json(body);
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    let resp = r.send().unwrap();
    assert!(resp.status().is_success(), "POST {url}: {}", resp.status());
    resp.json().unwrap()
}

/// Exact USD decimal → units of 10⁻¹² USD, for hand-computed expectations.
pub fn usd(s: &str) -> i128 {
    tollgate_core::Money::parse_usd(s).unwrap().units()
}

/// Whether a usage record carries `flag`.
pub fn has_flag(record: &Value, flag: &str) -> bool {
    record["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}

pub fn cost_units(record: &Value) -> i128 {
    usd(record["cost_usd"].as_str().unwrap())
}

/// The stdout of a CLI run that must succeed.
pub fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
