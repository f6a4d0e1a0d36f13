//! Streams at their worst: clients that disconnect, upstreams that break,
//! stall, send junk or never send usage — never a panic, never zero cost
//! for tokens that were streamed, one record each. And shutdown: nothing
//! queued is lost on SIGTERM.

use std::io::Read;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

fn stream_req(g: &Gateway, key: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "tell me a story"}]}));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().unwrap()
}

#[test]
fn client_disconnect_stops_upstream_and_charges_streamed_tokens() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    let mut resp = stream_req(
        &g,
        &key,
        &[
            ("x-mock-output-tokens", "400"),
            ("x-mock-chunk-delay-ms", "20"),
        ],
    );
    let id = request_id(&resp);
    // Read a few events, then hang up.
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while seen.iter().filter(|&&b| b == b'\n').count() < 20 {
        let n = resp.read(&mut buf).unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    drop(resp);
    let client_tokens = String::from_utf8_lossy(&seen)
        .matches("\"content\":\" ")
        .count() as u64;
    let rec = g.record(&id);
    let flags = rec["flags"].as_array().unwrap();
    assert!(flags.contains(&json!("client_disconnected")), "{rec}");
    assert!(flags.contains(&json!("usage_estimated")), "{rec}");
    let out = rec["output_tokens"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let bill = m.billed(&id);
    assert_eq!(bill["completed"], false, "upstream stopped: {bill}");
    let sent = bill["output_tokens_sent"].as_u64().unwrap();
    assert!(sent < 400, "upstream generation was stopped early: {bill}");
    assert!(
        out >= client_tokens && out <= sent,
        "recorded {out}, client saw {client_tokens}, mock sent {sent}"
    );
    assert!(rec["input_tokens"].as_u64().unwrap() > 0);
    assert_ne!(rec["cost_usd"], "0.000000");
}

/// Regression (LiteLLM #37923, #40100): streamed calls recorded with zero
/// spend when usage arrives in an unexpected chunk or not at all.
#[test]
fn streams_without_usage_or_with_junk_are_still_charged() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();

    // Junk lines and split chunks: exact usage still read.
    let resp = stream_req(
        &g,
        &key,
        &[("x-mock-garbage", "1"), ("x-mock-output-tokens", "15")],
    );
    let id = request_id(&resp);
    let _ = resp.text().unwrap();
    let rec = g.record(&id);
    assert_eq!(rec["output_tokens"], 15);
    assert_eq!(rec["flags"], json!([]));

    // No usage at all: counted from the streamed text, flagged.
    let resp = stream_req(
        &g,
        &key,
        &[("x-mock-omit-usage", "1"), ("x-mock-output-tokens", "15")],
    );
    let id = request_id(&resp);
    let _ = resp.text().unwrap();
    let rec = g.record(&id);
    assert_eq!(rec["output_tokens"], 15, "{rec}");
    assert_eq!(rec["flags"], json!(["usage_estimated"]));
    assert_ne!(rec["cost_usd"], "0.000000");

    // Upstream cut mid-stream: the client's stream fails, the tokens are charged.
    let resp = stream_req(
        &g,
        &key,
        &[("x-mock-drop-after", "8"), ("x-mock-output-tokens", "30")],
    );
    let id = request_id(&resp);
    assert!(resp.text().is_err(), "the client sees the stream break");
    let rec = g.record(&id);
    assert!(
        rec["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("stream_interrupted")),
        "{rec}"
    );
    assert_eq!(
        rec["output_tokens"], 7,
        "7 content chunks arrived before the cut: {rec}"
    );
}

#[test]
fn anthropic_stream_cut_after_message_start_keeps_input_usage() {
    let m = Mock::start(&[]);
    let g = Gateway::start(&m);
    let key = g.key();
    let resp = client()
        .post(format!("{}/v1/messages", g.url))
        .header("x-api-key", &key)
        .header("x-mock-drop-after", "6")
        .header("x-mock-input-tokens", "5000")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .unwrap();
    let id = request_id(&resp);
    let _ = resp.text();
    let rec = g.record(&id);
    assert_eq!(
        rec["input_tokens"], 5000,
        "input from message_start, not re-counted: {rec}"
    );
    assert_eq!(rec["output_tokens"], 3, "{rec}");
}

#[test]
fn sigterm_drains_queued_records() {
    let m = Mock::start(&[]);
    let mut g = Gateway::start(&m);
    let key = g.key();
    let n = 40;
    let ids: Vec<String> = (0..n)
        .map(|_| {
            let resp = client()
                .post(format!("{}/v1/chat/completions", g.url))
                .bearer_auth(&key)
                .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .unwrap();
            request_id(&resp)
        })
        .collect();
    g.terminate();
    g.restart();
    let records: Vec<Value> = g.records();
    for id in &ids {
        assert!(
            records.iter().any(|r| r["request_id"] == id.as_str()),
            "record {id} lost"
        );
    }
    assert_eq!(records.len(), n);
}
