//! Connections cannot starve the gateway: thousands of half-open, idle and
//! trickling connections from this test (loopback only, bounded in count
//! and time) while ordinary requests and `/health` are still served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

/// Half-open connections held (more than `connections.max`: the oldest
/// idle ones are closed to make room); `TOLLGATE_SLOW_CONNECTIONS` raises it
/// for a manual run (20,000 needs an open-file limit above that).
fn half_open_count() -> usize {
    std::env::var("TOLLGATE_SLOW_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}
const TRICKLING: usize = 200;

#[test]
fn regression_slow_and_half_open_connections_cannot_starve_the_gateway() {
    // 1,100 half-open connections made /health and every proxied request
    // time out (`accept error: Too many open files`).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        "connections: { max: 2000, header_read_timeout_ms: 2000, idle_timeout_ms: 2000, body_timeout_ms: 2000, body_min_bytes_per_sec: 1000 }\n",
    );
    let key = g.key();
    let addr = g.url.trim_start_matches("http://").to_string();
    let mut held: Vec<TcpStream> = (0..half_open_count())
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(held.len() > 2_000, "opened {}", held.len());
    // Tricklers: a request head one byte at a time, and a body a few bytes at a time.
    let mut heads: Vec<TcpStream> = (0..TRICKLING)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    let mut bodies: Vec<TcpStream> = (0..TRICKLING)
        .filter_map(|_| {
            let mut s = TcpStream::connect(&addr).ok()?;
            let head = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n"
            );
            s.write_all(head.as_bytes()).ok()?;
            Some(s)
        })
        .collect();
    let head = b"GET /health HTTP/1.1\r\nhost: x\r\n";
    let served = |label: &str| {
        let r = client().get(format!("{}/health", g.url)).send();
        assert!(
            r.as_ref().is_ok_and(|r| r.status() == 200),
            "{label}: /health not served: {r:?}"
        );
        let r = client()
            .post(format!("{}/v1/chat/completions", g.url))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
            .send();
        assert!(
            r.as_ref().is_ok_and(|r| r.status() == 200),
            "{label}: a request was not served: {r:?}"
        );
    };
    served("with thousands of half-open connections");
    let started = Instant::now();
    let mut round = 0usize;
    while started.elapsed() < Duration::from_secs(4) {
        for s in &mut heads {
            let _ = s.write_all(&head[round % head.len()..round % head.len() + 1]);
        }
        for s in &mut bodies {
            let _ = s.write_all(b"{\"a\":1");
        }
        round += 1;
        if round.is_multiple_of(4) {
            served("while connections trickle");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // By now the server has closed what held on past its timeouts: reads
    // end instead of blocking.
    let closed = |socks: &mut Vec<TcpStream>| {
        socks
            .iter()
            .filter(|s| {
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = [0u8; 512];
                let mut r: &TcpStream = s;
                // Closed: EOF, or a response (408, 413...) before the close.
                r.read(&mut buf).is_ok()
            })
            .count()
    };
    let trickled = closed(&mut heads);
    assert!(
        trickled > TRICKLING * 9 / 10,
        "head tricklers still open: {}",
        TRICKLING - trickled
    );
    let slow_bodies = closed(&mut bodies);
    assert!(
        slow_bodies > TRICKLING * 9 / 10,
        "body tricklers still open: {}",
        TRICKLING - slow_bodies
    );
    let sample: Vec<TcpStream> = held.drain(..500).collect();
    let mut sample = sample;
    let half_open = closed(&mut sample);
    assert!(
        half_open > 450,
        "half-open connections still open: {}",
        500 - half_open
    );
    served("after the attack");
    if let Some(pid) = g.child.as_ref().map(|c| c.id())
        && let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
    {
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap_or("");
        eprintln!(
            "gateway peak memory with {} half-open connections: {rss}",
            half_open_count()
        );
    }
}
