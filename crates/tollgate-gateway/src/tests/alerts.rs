//! Alerts with an injected clock: a threshold fires once per period, and
//! again in the next one.

use super::*;

/// The threshold alerts on record once there are `n` (5 s at most), and a
/// moment after for any that should not be there.
async fn thresholds(r: &Rig, n: usize) -> Vec<Value> {
    r.budgets.flush_levels().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let list = async || {
        let v = r.admin_get("/admin/alerts?type=budget.threshold").await;
        v["alerts"].as_array().unwrap().clone()
    };
    while list().await.len() < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    list().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_fires_once_per_period_and_again_in_the_next() {
    let r = rig(
        r#"{"overrides": [{"scope": "user", "subject": "pat", "limit_tokens": 100,
              "period": "daily", "alert_thresholds": [50]}]}"#,
        "2026-11-24T10:00:00Z",
    )
    .await;
    let key = r.key("pat").await;
    for _ in 0..3 {
        assert_eq!(r.ask(&key, 20).await.status, 200);
    }
    let a = thresholds(&r, 1).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["status"], "recorded", "no target: recorded only");
    assert_eq!(a[0]["payload"]["period_start"], "2026-11-24T00:00:00Z");
    r.at("2026-11-25T09:00:00Z");
    for _ in 0..3 {
        assert_eq!(r.ask(&key, 20).await.status, 200);
    }
    let a = thresholds(&r, 2).await;
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(
        a[0]["payload"]["period_start"], "2026-11-25T00:00:00Z",
        "newest first"
    );
    assert_eq!(a[0]["payload"]["threshold_pct"], 50);
}
