//! The delivery worker: claims due deliveries, sends them, records every
//! attempt and schedules the next.
//!
//! Deliveries are claimed with a lease (the attempt timeout and a margin)
//! so that one is never attempted twice at once; a process that dies
//! mid-attempt leaves it to be retried when the lease ends. Delivery is
//! therefore at least once: receivers deduplicate by
//! `X-Tollgate-Delivery`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tokio::task::JoinSet;
use tollgate_store::StoreError;
use tollgate_store::alerts::{Attempt, DeliveryStatus, DueDelivery, Next};

use crate::Shared;
use crate::config::DeliveryConfig;

/// Attempts in flight at most.
const IN_FLIGHT: usize = 16;
/// The longest the worker sleeps without looking at the outbox.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// The most of a receiver's answer that is read (and kept in errors).
const ANSWER_BYTES: usize = 512;

/// One delivery attempt's outcome (the test-webhook answer).
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub delivery_id: String,
    pub target: String,
    pub url: String,
    pub delivered: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// `pending` (to be retried), `delivered` or `failed`.
    pub next: &'static str,
}

/// How long a claimed delivery is held from other claims.
pub(crate) fn lease(d: &DeliveryConfig) -> SignedDuration {
    SignedDuration::from_secs(i64::try_from(d.timeout_seconds).unwrap_or(i64::MAX / 4) + 30)
}

/// The delay before attempt `n + 1` after `n` failed: the first delay
/// doubled each time, capped, ±20 % jitter.
pub(crate) fn backoff(d: &DeliveryConfig, n: u32) -> Duration {
    let base = d
        .retry_first_seconds
        .saturating_mul(1u64 << n.saturating_sub(1).min(32))
        .min(d.retry_max_seconds)
        .saturating_mul(1000);
    let jitter = 800 + rand::random::<u64>() % 401;
    Duration::from_millis(base.saturating_mul(jitter) / 1000)
}

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut flying: JoinSet<()> = JoinSet::new();
    loop {
        let room = IN_FLIGHT - flying.len();
        if room > 0 {
            let now = Timestamp::now();
            match shared
                .store
                .claim_due(now, now + lease(&shared.config.delivery), room)
                .await
            {
                Ok(due) => {
                    let claimed = due.len();
                    for d in due {
                        let s = shared.clone();
                        flying.spawn(async move {
                            attempt(&s, d).await;
                        });
                    }
                    if claimed == room {
                        // More may be due: claim again once one lands.
                        let _ = flying.join_next().await;
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the alert outbox");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let wait = match shared.store.next_due().await {
            Ok(Some(t)) => {
                let ms = (t - Timestamp::now())
                    .as_millis()
                    .clamp(0, IDLE_POLL.as_millis() as i128);
                Duration::from_millis(u64::try_from(ms).unwrap_or(0))
            }
            _ => IDLE_POLL,
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(_) = flying.join_next(), if !flying.is_empty() => {}
        }
    }
}

/// Attempts every delivery of alert `id` now (they were held from the
/// worker for this), recording each attempt.
pub(crate) async fn attempt_alert(shared: &Shared, id: &str) -> Result<Vec<Outcome>, StoreError> {
    let Some((row, deliveries, _)) = shared.store.alert(id).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for d in deliveries
        .into_iter()
        .filter(|d| d.status == DeliveryStatus::Pending)
    {
        out.push(
            attempt(
                shared,
                DueDelivery {
                    kind: row.kind.clone(),
                    payload: row.payload.clone(),
                    retry_from: d.created_at,
                    delivery: d,
                },
            )
            .await,
        );
    }
    Ok(out)
}

/// Why a send did not deliver.
enum Failure {
    /// The receiver answered, not with 2xx.
    Answered(u16, String),
    /// No answer: connect, TLS, timeout.
    Transport(String),
    /// Not allowed to be sent at all: not retried.
    Refused(String),
}

async fn attempt(shared: &Shared, d: DueDelivery) -> Outcome {
    let n = d.delivery.attempts + 1;
    let time = Timestamp::now();
    let started = Instant::now();
    let result = send(shared, &d).await;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (status, error) = match &result {
        Ok(s) => (Some(*s), None),
        Err(Failure::Answered(s, body)) => (Some(*s), Some(format!("answered {s}: {body}"))),
        Err(Failure::Transport(e)) => (None, Some(e.clone())),
        Err(Failure::Refused(e)) => (None, Some(e.clone())),
    };
    let cfg = &shared.config.delivery;
    let next = match &result {
        Ok(_) => Next::Delivered,
        Err(Failure::Refused(_)) => Next::Failed,
        Err(_) => {
            let at = time + backoff(cfg, n);
            let horizon = d.retry_from
                + SignedDuration::from_hours(
                    i64::try_from(cfg.horizon_hours).unwrap_or(i64::MAX / 3600),
                );
            if at > horizon {
                Next::Failed
            } else {
                Next::RetryAt(at)
            }
        }
    };
    let record = Attempt {
        delivery_id: d.delivery.id.clone(),
        n,
        time,
        status,
        error: error.clone(),
        duration_ms,
    };
    for i in 0..5u32 {
        match shared.store.record_attempt(&record, next).await {
            Ok(()) => break,
            Err(e) if e.is_transient() && i < 4 => {
                tokio::time::sleep(Duration::from_millis(100 << i)).await;
            }
            Err(e) => {
                // The lease ends and the delivery is attempted again.
                tracing::error!(error = %e, delivery = %d.delivery.id, "cannot record a delivery attempt");
                break;
            }
        }
    }
    let counter = match &next {
        Next::Delivered => &shared.attempts.delivered,
        Next::RetryAt(_) => &shared.attempts.retrying,
        Next::Failed => &shared.attempts.failed,
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match &next {
        Next::Delivered => {
            tracing::info!(delivery = %d.delivery.id, target = %d.delivery.target.name, attempt = n, "alert delivered")
        }
        Next::RetryAt(at) => {
            tracing::warn!(delivery = %d.delivery.id, target = %d.delivery.target.name, attempt = n, error = ?error, retry_at = %at, "alert delivery failed; will retry")
        }
        Next::Failed => {
            tracing::error!(delivery = %d.delivery.id, target = %d.delivery.target.name, attempt = n, error = ?error, "alert delivery failed for good")
        }
    }
    Outcome {
        delivery_id: d.delivery.id.clone(),
        target: d.delivery.target.name.clone(),
        url: d.delivery.target.url.clone(),
        delivered: matches!(next, Next::Delivered),
        status,
        error,
        next: match next {
            Next::Delivered => "delivered",
            Next::RetryAt(_) => "pending",
            Next::Failed => "failed",
        },
    }
}

/// The error and what caused it, in one line (the resolver's refusal is
/// a cause several levels down).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

async fn send(shared: &Shared, d: &DueDelivery) -> Result<u16, Failure> {
    let t = &d.delivery.target;
    let url = shared.allow.check_url(&t.url).map_err(Failure::Refused)?;
    let body = match t.format.as_str() {
        "slack" => {
            let v: serde_json::Value = serde_json::from_str(&d.payload).unwrap_or_default();
            crate::payload::slack_body(&v).to_string()
        }
        _ => d.payload.clone(),
    };
    let mut req = shared
        .client
        .post(url)
        .header("content-type", "application/json")
        .header("x-tollgate-event", &d.kind)
        .header("x-tollgate-delivery", &d.delivery.id);
    if let Some(name) = &t.secret_env {
        let Some(secret) = shared.secrets.get(name) else {
            return Err(Failure::Refused(format!(
                "signing secret {name} is not configured any more; not sent unsigned"
            )));
        };
        let sig = crate::sign::signature(secret, Timestamp::now().as_second(), body.as_bytes());
        req = req.header("x-tollgate-signature", sig);
    }
    let resp = req.body(body).send().await.map_err(|e| {
        let m = chain(&e);
        if m.contains("alerts.allow_hosts") {
            Failure::Refused(m)
        } else {
            Failure::Transport(m)
        }
    })?;
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        return Ok(status);
    }
    let mut answer = Vec::new();
    let mut resp = resp;
    while answer.len() < ANSWER_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => answer.extend_from_slice(&c),
            _ => break,
        }
    }
    answer.truncate(ANSWER_BYTES);
    Err(Failure::Answered(
        status,
        String::from_utf8_lossy(&answer).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let d = DeliveryConfig {
            retry_first_seconds: 10,
            retry_max_seconds: 60,
            ..DeliveryConfig::default()
        };
        for _ in 0..50 {
            let ms = |n| backoff(&d, n).as_millis();
            assert!((8_000..=12_000).contains(&ms(1)), "{}", ms(1));
            assert!((16_000..=24_000).contains(&ms(2)));
            assert!((32_000..=48_000).contains(&ms(3)));
            assert!((48_000..=72_000).contains(&ms(4)), "capped");
            assert!((48_000..=72_000).contains(&ms(40)), "no overflow");
        }
    }
}
