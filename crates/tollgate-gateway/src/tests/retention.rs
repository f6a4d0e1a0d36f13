//! Retention, in process: the clock moves past `records_days`.

use super::*;

/// Three requests, 91 days, two more: a pass deletes exactly the three old
/// records; reports over all time (the rollups) and the lifetime budget's
/// counter still count all five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_exactly_the_old_records_and_keeps_rollups_and_counters() {
    let r = rig(
        r#"{"defaults": {"user": {"limit_usd": "100", "period": "lifetime"}}}"#,
        "2026-08-01T10:00:00Z",
    )
    .await;
    let key = r.key("alice").await;
    for _ in 0..3 {
        assert_eq!(r.chat(&key, 20).await, 200);
    }
    r.at("2026-10-31T10:00:00Z");
    for _ in 0..2 {
        assert_eq!(r.chat(&key, 20).await, 200);
    }
    r.state.journal.flush().await;
    let used_before = r.budget("alice").await["used_usd"].clone();
    let report_before = r.admin_get("/admin/reports?group_by=user").await;
    assert_eq!(report_before["total"]["requests"], 5, "{report_before}");

    let deleted = crate::retention::run_once(&r.state).await.unwrap();
    assert_eq!(deleted, 3);
    let records = r.admin_get("/admin/records").await;
    let times: Vec<&str> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["time"].as_str().unwrap())
        .collect();
    assert_eq!(times.len(), 2, "{records}");
    assert!(
        times.iter().all(|t| t.starts_with("2026-10-31")),
        "{times:?}"
    );
    assert_eq!(
        r.admin_get("/admin/reports?group_by=user").await,
        report_before
    );
    assert_eq!(r.budget("alice").await["used_usd"], used_before);
    // A second pass finds nothing more.
    assert_eq!(crate::retention::run_once(&r.state).await.unwrap(), 0);
}
