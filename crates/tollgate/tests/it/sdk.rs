//! The official `openai`, `anthropic` and `google-genai` Python SDKs as clients (the tests
//! live in `tests/sdk/`), against the real gateway and mock provider.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::harness::*;

fn python() -> PathBuf {
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

#[test]
fn official_python_sdks() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let (_, key) = g.create_key(json!({"name": "sdk", "user": "sdk-user", "tenant": "acme"}));
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/sdk");
    let out = Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", tests])
        .env("TOLLGATE_URL", &g.url)
        .env("TOLLGATE_KEY", &key)
        .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY)
        .env("MOCK_URL", &m.url)
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK tests failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed"), "{stdout}");
    assert!(
        !stdout.contains("skipped"),
        "every SDK test must run: {stdout}"
    );
    println!("{stdout}");
}
