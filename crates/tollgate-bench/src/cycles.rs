//! `tollgate-bench cycles`: the Cycles runtime API under load — reserve
//! latency and reserve + commit pairs per second at 1 and 32 clients,
//! beside the reference server's published figures. Reported, not
//! asserted.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};

use crate::load::{Target, connect};

/// The reference server (Java + Redis Lua), as its project publishes it.
const REFERENCE_P50: &str = "3.5–9.6 ms";
const REFERENCE_OPS: &str = "540–2,600";

/// One POST; answers its status and body.
async fn post(
    sender: &mut crate::load::Sender,
    t: &Target,
    path: &str,
    body: String,
) -> anyhow::Result<(u16, Bytes)> {
    let b = crate::load::post_to(t, path);
    sender.ready().await?;
    let resp = sender
        .send_request(b.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

struct Run {
    pairs: u64,
    errors: u64,
    elapsed: Duration,
    reserve: Histogram<u64>,
}

/// `clients` connections, each reserving then committing in a loop for
/// `dur`.
async fn drive(t: &Target, clients: usize, dur: Duration) -> anyhow::Result<Run> {
    let deadline = Instant::now() + dur;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(&t).await?;
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut pairs, mut errors, mut i) = (0u64, 0u64, 0u64);
            let started = Instant::now();
            while Instant::now() < deadline {
                i += 1;
                let body = format!(
                    r#"{{"idempotency_key":"b-{c}-{i}","subject":{{"agent":"bot"}},"action":{{"kind":"tool.search","name":"web.search"}},"estimate":{{"unit":"USD_MICROCENTS","amount":1000}},"ttl_ms":30000}}"#
                );
                let t0 = Instant::now();
                let (status, resp) = post(&mut sender, &t, "/v1/reservations", body).await?;
                let _ = h.record((t0.elapsed().as_micros() as u64).max(1));
                let id = (status == 200)
                    .then(|| serde_json::from_slice::<serde_json::Value>(&resp).ok())
                    .flatten()
                    .and_then(|v| v["reservation_id"].as_str().map(str::to_string));
                let Some(id) = id else {
                    errors += 1;
                    continue;
                };
                let commit = format!(
                    r#"{{"idempotency_key":"c-{c}-{i}","actual":{{"unit":"USD_MICROCENTS","amount":800}}}}"#
                );
                let (status, _) =
                    post(&mut sender, &t, &format!("/v1/reservations/{id}/commit"), commit).await?;
                if status == 200 {
                    pairs += 1;
                } else {
                    errors += 1;
                }
            }
            anyhow::Ok(Run {
                pairs,
                errors,
                elapsed: started.elapsed(),
                reserve: h,
            })
        }));
    }
    let mut total = Run {
        pairs: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        reserve: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for task in tasks {
        let r = task.await??;
        total.pairs += r.pairs;
        total.errors += r.errors;
        total.elapsed = total.elapsed.max(r.elapsed);
        total.reserve.add(&r.reserve)?;
    }
    Ok(total)
}

/// Starts `tollgate` on a fresh database with a key of tenant `acme` and
/// budgets on the tenant and on its agent `bot`, and measures.
pub async fn run(tollgate: &Path, dir: &Path, dur: Duration) -> anyhow::Result<String> {
    let db_url = format!("sqlite://{}", dir.join("cycles.db").display());
    let store = tollgate_store::open(&db_url).await?;
    let (_, key) = tollgate_gateway::identity::create_key(
        &*store,
        tollgate_gateway::identity::NewKey {
            user: Some("agent".into()),
            tenant: Some("acme".into()),
            ..Default::default()
        },
    )
    .await?;
    drop(store);
    let config = dir.join("cycles.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndatabase: {db_url}\nbudgets:\n  overrides:\n    - {{ scope: tenant, subject: acme, limit_usd: \"100000000\", period: monthly }}\n    - {{ scope: agent, subject: \"tenant:acme/agent:bot\", limit_usd: \"100000000\", period: lifetime }}\n"
        ),
    )?;
    let mut cmd = std::process::Command::new(tollgate);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error");
    let (_proc, url) = crate::setup::spawn_until(cmd, "tollgate listening on ")?;
    let t = Target {
        name: "cycles".into(),
        host: crate::setup::host_of(&url),
        headers: vec![("x-cycles-api-key".into(), key)],
    };
    // Warm up: connections, caches, the first database pages.
    drive(&t, 4, Duration::from_millis(500)).await?;
    let mut md = String::from(
        "## The Cycles API (reserve, then commit)\n\n\
         `tollgate-bench cycles`: each client reserves an estimate on a tenant and an agent budget \
         (`POST /v1/reservations`) and commits it (`POST /v1/reservations/{id}/commit`), in a loop, \
         over one keep-alive connection; each reservation is made durable and answered with its \
         balances, each commit writes a usage record. Tollgate and the load generator share this \
         machine (not pinned). The reference server's figures are its project's own, on its \
         hardware.\n\n\
         | clients | reserve p50 ms | reserve p99 ms | reserve + commit per s | errors | reference p50 | reference per s |\n\
         |---:|---:|---:|---:|---:|---|---|\n",
    );
    for clients in [1usize, 32] {
        let r = drive(&t, clients, dur).await?;
        // Reporting only: rates and latencies are not money.
        let per_s = r.pairs as f64 / r.elapsed.as_secs_f64().max(1e-9);
        md.push_str(&format!(
            "| {clients} | {:.2} | {:.2} | {per_s:.0} | {} | {REFERENCE_P50} | {REFERENCE_OPS} |\n",
            r.reserve.value_at_quantile(0.5) as f64 / 1000.0,
            r.reserve.value_at_quantile(0.99) as f64 / 1000.0,
            r.errors
        ));
    }
    Ok(md)
}
