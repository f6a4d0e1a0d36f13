//! The official `openai`, `anthropic` and `google-genai` Python SDKs as clients (the tests
//! live in `tests/sdk/`), against the real gateway and mock provider.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::harness::*;

pub(crate) fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/python"
    ));
    assert!(
        venv.exists(),
        "the SDK tests need a Python venv with the official SDKs: run `scripts/test` (or \
         `python3 -m venv .venv && .venv/bin/pip install -r tests/sdk/requirements.txt`)"
    );
    venv
}

/// Runs the pytest files in `dir` (under the repository) against `g`,
/// with `env`; returns pytest's output, failing the test if any failed.
pub(crate) fn pytest(dir: &str, g: &Gateway, env: &[(&str, &str)]) -> String {
    let tests = format!("{}/../../{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(python());
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", &tests])
        .env("TOLLGATE_URL", &g.url)
        .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK tests failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn official_python_sdks() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let (_, key) = g.create_key(json!({"name": "sdk", "user": "sdk-user", "tenant": "acme"}));
    let stdout = pytest(
        "tests/sdk",
        &g,
        &[("TOLLGATE_KEY", &key), ("MOCK_URL", &m.url)],
    );
    assert!(stdout.contains("passed"), "{stdout}");
    assert!(
        !stdout.contains("skipped"),
        "every SDK test must run: {stdout}"
    );
    println!("{stdout}");
}

/// Streams their budget ends mid-flight (`budgets.streaming: topup`) are
/// read by each official SDK as valid streams with its own length stop
/// reason.
#[test]
fn official_sdks_read_streams_cut_by_their_budget() {
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        "budgets:\n  streaming: { mode: topup, first_slice_tokens: 32, slice_tokens: 32 }\n",
    );
    let stdout = pytest("tests/sdk_topup", &g, &[]);
    assert!(stdout.contains("3 passed"), "{stdout}");
}
