//! Retention: raw usage records older than `retention.records_days` are
//! deleted every hour, a bounded batch per transaction so that writers
//! never wait long behind it. The hourly rollups keep what the records
//! added up to (reports over old periods stay exact), and budget counters
//! live apart from the records, so no budget changes.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tollgate_store::{Store, StoreError};

use crate::AppState;

/// `retention:` in the config.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days raw records are kept; 0 keeps them forever.
    #[serde(default = "default_records_days")]
    pub records_days: u32,
}

fn default_records_days() -> u32 {
    90
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            records_days: default_records_days(),
        }
    }
}

impl RetentionConfig {
    /// Records before this are deleted at `now`; `None` keeps all.
    pub fn cutoff(&self, now: Timestamp) -> Option<Timestamp> {
        (self.records_days > 0)
            .then(|| {
                now.checked_sub(SignedDuration::from_hours(
                    24 * i64::from(self.records_days),
                ))
            })
            .and_then(Result::ok)
    }
}

/// Records deleted per transaction.
const BATCH: usize = 5_000;
/// The pause between batches: the writer's other work goes first.
const PAUSE: Duration = Duration::from_millis(20);
/// How often the job runs.
const EVERY: Duration = Duration::from_secs(3_600);

/// Deletes every record before `cutoff`, a batch at a time; returns how
/// many.
pub async fn sweep(store: &dyn Store, cutoff: Timestamp) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = store.delete_records_before(cutoff, BATCH).await?;
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// One pass at the gateway's clock.
pub async fn run_once(state: &AppState) -> Result<u64, StoreError> {
    match state.config.retention.cutoff(state.budgets.now()) {
        Some(cutoff) => sweep(&*state.store, cutoff).await,
        None => Ok(0),
    }
}

/// The hourly job (none when records are kept forever); its first pass
/// runs at start.
pub fn spawn(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    if state.config.retention.records_days == 0 {
        tracing::info!("retention: usage records are kept forever");
        return None;
    }
    tracing::info!(
        days = state.config.retention.records_days,
        "retention: usage records older than this are deleted hourly (rollups are kept)"
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            match run_once(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "retention: old usage records deleted"),
                Err(e) => tracing::warn!(error = %e, "retention pass failed; retried next hour"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_keeps_everything_and_days_count_back_from_now() {
        let now: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        assert_eq!(RetentionConfig { records_days: 0 }.cutoff(now), None);
        assert_eq!(
            RetentionConfig::default().cutoff(now).unwrap().to_string(),
            "2026-09-03T10:00:00Z"
        );
        let c: RetentionConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.records_days, 90);
        assert!(serde_json::from_str::<RetentionConfig>(r#"{"rollup_days": 3}"#).is_err());
    }
}
