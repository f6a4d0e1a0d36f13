//! Alerts with an injected clock: thresholds once per period and again in
//! the next, spend rules with cooldowns and the hourly cap, forecasts, and
//! rule management.

use super::*;

/// The threshold alerts on record once there are `n` (5 s at most), and a
/// moment after for any that should not be there.
async fn thresholds(r: &Rig, n: usize) -> Vec<Value> {
    r.budgets.flush_levels().await;
    alerts_of(r, "budget.threshold", n).await
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

/// Alerts of `kind` on record once there are `n` (5 s at most).
async fn alerts_of(r: &Rig, kind: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let list = async || {
        let v = r.admin_get(&format!("/admin/alerts?type={kind}")).await;
        v["alerts"].as_array().unwrap().clone()
    };
    while list().await.len() < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    list().await
}

/// A port nothing listens on: deliveries there fail (and wait an hour to
/// retry), but are created, which is what the hourly cap counts.
fn dead_target() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/hook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spike_rule_fires_respects_its_cooldown_and_the_hourly_cap_suppresses() {
    let alerts = json!({
        "allow_hosts": ["127.0.0.1"],
        "max_per_hour": 2,
        "delivery": {"retry_first_seconds": 3600},
        "webhooks": [{"name": "ops", "url": dead_target()}],
        "rules": [{"id": "spike", "kind": "spend_over", "window": "1h", "threshold_usd": "0.00002",
                   "cooldown_minutes": 30, "scope": "user", "severity": "warn"}]
    });
    let r = rig_full("{}", "{}", &alerts.to_string(), "2026-11-24T10:00:00Z").await;
    let (u1, u2) = (r.key("u1").await, r.key("u2").await);
    for _ in 0..3 {
        assert_eq!(r.ask(&u1, 20).await.status, 200);
    }
    let a = alerts_of(&r, "rule.fired", 1).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["rule_id"], "spike");
    assert_eq!(a[0]["subject"], "u1");
    let p = &a[0]["payload"];
    assert_eq!(p["rule"]["window"], "1h");
    assert_eq!(p["rule"]["subject"], "u1");
    assert!(
        tollgate_core::Money::parse_usd(p["value_usd"].as_str().unwrap()).unwrap()
            > tollgate_core::Money::parse_usd("0.00002").unwrap()
    );
    // Within the cooldown: spend goes on, nothing fires.
    r.at("2026-11-24T10:20:00Z");
    for _ in 0..3 {
        assert_eq!(r.ask(&u1, 20).await.status, 200);
    }
    assert_eq!(alerts_of(&r, "rule.fired", 2).await.len(), 1, "cooldown");
    // Past it, with the hour's spend still over the line: fires again.
    r.at("2026-11-24T10:31:00Z");
    assert_eq!(r.ask(&u1, 20).await.status, 200);
    assert_eq!(alerts_of(&r, "rule.fired", 2).await.len(), 2);
    // Another subject is its own instance — and the third delivery this
    // hour is over the cap: recorded, suppressed.
    r.at("2026-11-24T10:32:00Z");
    for _ in 0..3 {
        assert_eq!(r.ask(&u2, 20).await.status, 200);
    }
    let a = alerts_of(&r, "rule.fired", 3).await;
    assert_eq!(a.len(), 3, "{a:?}");
    assert_eq!(a[0]["subject"], "u2");
    assert_eq!(a[0]["status"], "suppressed", "{}", a[0]);
    let s = r.admin_get("/admin/alerts?status=suppressed").await;
    assert_eq!(s["alerts"].as_array().unwrap().len(), 1, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forecast_rule_fires_on_a_steep_day_and_not_on_a_flat_one() {
    let alerts = json!({
        "rules": [{"id": "runs-out", "kind": "budget_forecast", "lookback": "6h", "lead": "24h",
                   "cooldown_minutes": 1440}]
    });
    let budgets = r#"{"overrides": [
        {"id": "steep-monthly", "scope": "user", "subject": "steep", "limit_usd": "0.001", "period": "monthly"},
        {"id": "flat-monthly", "scope": "user", "subject": "flat", "limit_usd": "1.00", "period": "monthly"}]}"#;
    let r = rig_full(budgets, "{}", &alerts.to_string(), "2026-11-02T12:00:00Z").await;
    let (steep, flat) = (r.key("steep").await, r.key("flat").await);
    for _ in 0..20 {
        assert_eq!(r.ask(&steep, 20).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(r.ask(&flat, 20).await.status, 200);
    }
    r.budgets.flush_levels().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(r.alerts.forecast_now().await.unwrap(), 1);
    let a = alerts_of(&r, "budget.forecast", 1).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["budget_id"], "steep-monthly");
    let at: Timestamp = a[0]["payload"]["projected_exhaustion_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        at < "2026-11-03T12:00:00Z".parse::<Timestamp>().unwrap(),
        "{at}"
    );
    assert_eq!(a[0]["payload"]["rule"]["id"], "runs-out");
    // Its cooldown holds the next round back.
    assert_eq!(r.alerts.forecast_now().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_are_managed_through_the_api_and_stock_ones_are_read_only() {
    let r = rig("{}", "2026-11-24T10:00:00Z").await;
    let v = r.admin_get("/admin/alert-rules").await;
    let ids: Vec<&str> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cost-hourly-spike", "cost-daily-budget"], "{v}");
    assert!(
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["enabled"] == false && r["source"] == "stock")
    );
    let resp = r
        .admin_post(
            "/admin/alert-rules",
            &json!({"id": "tenant-day", "kind": "spend_over", "window": "24h", "threshold_usd": "20",
                    "scope": "tenant", "cooldown_minutes": 360, "severity": "error"}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let got = r.admin_get("/admin/alert-rules/tenant-day").await;
    assert_eq!(
        (got["source"].as_str(), got["enabled"].as_bool()),
        (Some("admin"), Some(true)),
        "{got}"
    );
    let bad = r
        .admin_post(
            "/admin/alert-rules",
            &json!({"kind": "spend_over", "window": "1h"}),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let msg: Value = bad.json().await.unwrap();
    assert!(
        msg["error"]["message"]
            .as_str()
            .unwrap()
            .contains("threshold_usd"),
        "{msg}"
    );
    let stock = r
        .http
        .put(format!("{}/admin/alert-rules/cost-hourly-spike", r.url))
        .bearer_auth(ADMIN)
        .json(&json!({"kind": "spend_over", "window": "1h", "threshold_usd": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stock.status(), 409);
    let del = r
        .http
        .delete(format!("{}/admin/alert-rules/tenant-day", r.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let v = r.admin_get("/admin/alert-rules").await;
    assert_eq!(v["rules"].as_array().unwrap().len(), 2);
}
