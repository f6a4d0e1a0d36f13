//! The CLI against a real database, alongside a running gateway.

use serde_json::{Value, json};

use crate::harness::*;

#[test]
fn keys_usage_and_pricing_commands() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);

    // keys create → usable at once by the running gateway; revoke → refused.
    let created: Value = serde_json::from_str(&ok(g.cli(&[
        "keys",
        "create",
        "--user",
        "carol",
        "--tenant",
        "acme",
        "--trusted",
        "--format",
        "json",
    ])))
    .unwrap();
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("tg-"));
    assert_eq!(created["trusted"], true);
    let chat = |k: &str, model: &str| {
        client()
            .post(format!("{}/v1/chat/completions", g.url))
            .bearer_auth(k)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .unwrap()
    };
    assert_eq!(chat(key, "gpt-4o-mini").status(), 200);
    assert_eq!(chat(key, "claude-haiku-4-5").status(), 400);
    let list = ok(g.cli(&["keys", "list"]));
    assert!(list.contains("carol") && !list.contains(key), "{list}");
    ok(g.cli(&["keys", "revoke", created["id"].as_str().unwrap()]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while chat(key, "gpt-4o-mini").status() != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "revocation by the CLI never reached the gateway"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // usage report, in the documented JSON shape, equal to the admin API's.
    let resp = chat(&g.key(), "gpt-4o");
    let _ = g.record(&request_id(&resp));
    let report: Value = serde_json::from_str(&ok(g.cli(&[
        "usage", "report", "--by", "model", "--since", "7d", "--format", "json",
    ])))
    .unwrap();
    let api = get_json(
        &format!("{}/admin/reports?group_by=model&from=7d&format=json", g.url),
        Some(ADMIN_KEY),
    );
    assert_eq!(report, api);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for field in [
        "model",
        "requests",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "cost_usd",
    ] {
        assert!(rows[0].get(field).is_some(), "missing {field}: {report}");
    }
    let total: i128 = rows
        .iter()
        .map(|r| usd(r["cost_usd"].as_str().unwrap()))
        .sum();
    assert_eq!(usd(report["total"]["cost_usd"].as_str().unwrap()), total);
    let csv = ok(g.cli(&["usage", "report", "--by", "user", "--format", "csv"]));
    assert!(
        csv.starts_with("user,requests,refused,input_tokens"),
        "{csv}"
    );
    let table = ok(g.cli(&["usage", "report", "--by", "day"]));
    assert!(table.contains("TOTAL"), "{table}");

    // pricing set → the running gateway charges the new price.
    ok(g.cli(&[
        "pricing",
        "set",
        "my-new-model",
        "--input",
        "2",
        "--output",
        "8",
    ]));
    let list = ok(g.cli(&["pricing", "list", "--filter", "my-new-model"]));
    assert!(
        list.contains("my-new-model") && list.contains("set"),
        "{list}"
    );
    let bad = g.cli(&[
        "pricing",
        "set",
        "x",
        "--input",
        "0.0000001",
        "--output",
        "1",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--input"));
    // A new model needs an input price; a known one changes only what is given.
    let bad = g.cli(&["pricing", "set", "brand-new", "--output", "1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("input_per_mtok"));
    ok(g.cli(&["pricing", "set", "gpt-4o", "--input", "3"]));
    let list: Value =
        serde_json::from_str(&ok(g.cli(&["pricing", "list", "--format", "json"]))).unwrap();
    let e = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "gpt-4o")
        .cloned()
        .unwrap();
    assert_eq!(
        (
            e["input_per_mtok"].as_str(),
            e["output_per_mtok"].as_str(),
            e["cached_input_per_mtok"].as_str()
        ),
        (Some("3"), Some("10"), Some("1.25")),
        "{e}"
    );
}

#[test]
fn pricing_import_reads_the_litellm_file() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/ref/litellm-model-prices-1.109.1.json"
    );
    let out = ok(g.cli(&["pricing", "import", file, "--provider", "mistral"]));
    assert!(out.contains("imported"), "{out}");
    let list: Value =
        serde_json::from_str(&ok(g.cli(&["pricing", "list", "--format", "json"]))).unwrap();
    let m = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "mistral/mistral-large-latest")
        .cloned()
        .unwrap();
    assert_eq!(m["input_per_mtok"], "0.5");
    assert_eq!(m["source"], "admin");
    assert_eq!(
        m["provider"], "mistral",
        "regression: import kept the provider"
    );
}

#[test]
fn check_config_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listen: nowhere\nproviders:\n  - name: p\n    kind: openai\n    base_url: ftp://x\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen") && err.contains("nowhere"), "{err}");
    assert!(
        err.contains("providers[0].base_url") && err.contains("ftp://x"),
        "{err}"
    );
    let missing = std::process::Command::new(BIN)
        .args(["check-config", "--config", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
}

#[test]
fn demo_runs_end_to_end() {
    let out = std::process::Command::new(BIN)
        .arg("demo")
        .output()
        .unwrap();
    let text = ok(out);
    assert!(text.contains("Usage by model"), "{text}");
    assert!(
        text.contains("gemini-2.5-pro") && text.contains("0.750300"),
        "long-context priced: {text}"
    );
    assert!(text.contains("TOTAL"));
    assert!(
        text.contains("x-tollgate-warning: Budget carol-daily")
            && text.contains("x-tollgate-downgraded-from: gpt-4o"),
        "soft limits shown: {text}"
    );
    assert!(
        text.contains("finish_reason length") && text.contains("then [DONE]"),
        "a stream ended by its budget, cleanly: {text}"
    );
}
