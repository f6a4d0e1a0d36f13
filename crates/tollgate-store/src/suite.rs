//! The store's behaviour, backend-agnostic: each case takes a fresh
//! store. SQLite runs them in its tests; another backend runs the same
//! cases (`features = ["suite"]`).

#![allow(clippy::unwrap_used)]

use jiff::Timestamp;
use tollgate_core::{Flags, KeyRecord, Money, Usage, UsageRecord};

use crate::journal::JournalEntry;
use crate::query::{GroupBy, RecordQuery, ReportQuery};
use crate::{Store, StoreError, StoredBudget, SubjectOf};

/// A key with id `id`, its hash every byte `hash`.
pub fn key(id: &str, hash: u8) -> KeyRecord {
    let now = Timestamp::from_second(1_700_000_000).unwrap();
    KeyRecord {
        id: id.into(),
        hash: [hash; 32],
        prefix: "tg-abcd".into(),
        name: Some("n".into()),
        user: Some("alice".into()),
        tenant: Some("acme".into()),
        role: None,
        models: vec!["gpt-*".into()],
        expires_at: None,
        revoked: false,
        trusted: true,
        created_at: now,
        updated_at: now,
    }
}

/// A record of `cost` units at `secs`.
pub fn record(id: &str, secs: i64, user: &str, model: &str, cost: i128) -> UsageRecord {
    UsageRecord {
        request_id: id.into(),
        time: Timestamp::from_second(secs).unwrap(),
        key_id: Some("k1".into()),
        user: Some(user.into()),
        tenant: Some("acme".into()),
        session: None,
        budgets: vec![],
        provider: "openai".into(),
        model_requested: model.into(),
        model_served: model.into(),
        usage: Usage {
            input_tokens: 10,
            output_tokens: 5,
            cached_input_tokens: 2,
            cache_write_5m_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 1,
        },
        cost: Money::from_units(cost),
        latency_ms: 12,
        ttft_ms: Some(3),
        status: 200,
        flags: Flags {
            usage_estimated: true,
            ..Flags::default()
        },
    }
}

/// Writes records as settlements without a reservation.
fn insert(s: &dyn Store, records: &[UsageRecord]) {
    let entries: Vec<JournalEntry> = records
        .iter()
        .map(|r| JournalEntry::Settle {
            reservation: None,
            charges: vec![],
            actual: tollgate_core::ledger::Amount::default(),
            payload: crate::Payload::record(r.clone()),
        })
        .collect();
    s.apply_journal(&entries).unwrap();
}

pub async fn keys_round_trip_and_revoke(s: &dyn Store) {
    s.insert_key(&key("k1", 1)).await.unwrap();
    assert!(matches!(
        s.insert_key(&key("k1", 2)).await,
        Err(StoreError::Duplicate(_))
    ));
    let got = s.key_by_hash([1; 32]).await.unwrap().unwrap();
    assert_eq!(got, key("k1", 1));
    assert!(s.key_by_hash([9; 32]).await.unwrap().is_none());
    assert_eq!(s.key_by_id("k1").await.unwrap(), Some(key("k1", 1)));
    assert!(s.key_by_id("k9").await.unwrap().is_none());
    let later = Timestamp::from_second(1_800_000_000).unwrap();
    assert!(s.revoke_key("k1", later).await.unwrap());
    assert!(!s.revoke_key("nope", later).await.unwrap());
    let changed = s.keys_updated_since(later).await.unwrap();
    assert_eq!(changed.len(), 1);
    assert!(changed[0].revoked);
}

pub async fn records_are_idempotent_and_paged_newest_first(s: &dyn Store) {
    let batch: Vec<_> = (0..25)
        .map(|i| record(&format!("r{i}"), 1_700_000_000 + i, "alice", "gpt-4o", 7))
        .collect();
    insert(s, &batch);
    insert(s, &batch[..5]); // replay: ignored
    let mut q = RecordQuery {
        limit: 10,
        ..RecordQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = s.records(&q).await.unwrap();
        seen.extend(page.records.iter().map(|r| r.request_id.clone()));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(seen[0], "r24");
    assert_eq!(seen[24], "r0");
    let first = s
        .records(&RecordQuery {
            limit: 1,
            ..RecordQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(first.records[0], batch[24]);
}

pub async fn reports_sum_exactly_beyond_i64(s: &dyn Store) {
    // Each record costs ~$9.2M (near i64::MAX units); their sum exceeds i64.
    let big = i128::from(i64::MAX) - 1;
    let batch = vec![
        record("a", 1_700_000_000, "alice", "gpt-4o", big),
        record("b", 1_700_000_001, "alice", "gpt-4o", big),
        record("c", 1_700_090_000, "bob", "claude-sonnet-4-5", 1),
    ];
    insert(s, &batch);
    let rows = s
        .report(&ReportQuery::new(vec![GroupBy::User]))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].keys[0].as_deref(), Some("alice"));
    assert_eq!(rows[0].cost.units(), 2 * big);
    assert_eq!(rows[0].requests, 2);
    assert_eq!(rows[0].usage.input_tokens, 20);
    let days = s
        .report(&ReportQuery::new(vec![GroupBy::Day]))
        .await
        .unwrap();
    assert_eq!(
        days.iter()
            .map(|r| r.keys[0].clone().unwrap())
            .collect::<Vec<_>>(),
        ["2023-11-14", "2023-11-15"]
    );
}

pub async fn prices_persist(s: &dyn Store) {
    let p = tollgate_core::ModelPrice::simple(
        tollgate_core::Price::parse_per_mtok("0.3").unwrap(),
        tollgate_core::Price::parse_per_mtok("1.2").unwrap(),
    );
    let p = crate::StoredPrice {
        price: p,
        provider: Some("openai".into()),
    };
    s.put_price("my-finetune", &p).await.unwrap();
    s.put_price("my-finetune", &p).await.unwrap();
    assert_eq!(
        s.prices().await.unwrap(),
        vec![("my-finetune".to_string(), p)]
    );
}

/// Budgets: stored, paged in creation order, looked up by id, deleted; the
/// version moves with every change; first-seen times are remembered.
pub async fn budgets_round_trip(s: &dyn Store) {
    let input = |subject: &str| -> tollgate_core::budget::BudgetInput {
        serde_json::from_value(
            serde_json::json!({"scope": "user", "subject": subject, "limit_usd": "1"}),
        )
        .unwrap()
    };
    let v0 = s.budgets_version().await.unwrap();
    for (i, id) in ["b1", "b2", "b3"].iter().enumerate() {
        s.put_budget(&StoredBudget {
            id: id.to_string(),
            input: input(id),
            created_at: Timestamp::from_second(1_700_000_000 + i as i64).unwrap(),
        })
        .await
        .unwrap();
    }
    assert_ne!(s.budgets_version().await.unwrap(), v0);
    let page = s.budgets_page(None, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        ["b1", "b2"]
    );
    let last = page.last().unwrap();
    let next = s
        .budgets_page(Some((last.created_at, last.id.clone())), 2)
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        ["b3"]
    );
    assert_eq!(s.budget("b2").await.unwrap().unwrap().input, input("b2"));
    assert!(s.budget("nope").await.unwrap().is_none());
    assert!(s.delete_budget("b2").await.unwrap());
    assert!(!s.delete_budget("b2").await.unwrap());
    assert_eq!(s.list_budgets().await.unwrap().len(), 2);
    let t1 = Timestamp::from_second(1_700_000_000).unwrap();
    let t2 = Timestamp::from_second(1_800_000_000).unwrap();
    assert_eq!(s.budget_first_seen("cfg", t1).await.unwrap(), (t1, true));
    assert_eq!(s.budget_first_seen("cfg", t2).await.unwrap(), (t1, false));
}

/// Rate limits: stored in creation order, replaced, deleted; the version
/// moves with every change.
pub async fn rate_limits_round_trip(s: &dyn Store) {
    let input = |rpm: u64| tollgate_core::rate::RateLimitInput {
        scope: Some("user".into()),
        subject: Some("alice".into()),
        requests_per_minute: Some(rpm),
        ..Default::default()
    };
    let v0 = s.rate_limits_version().await.unwrap();
    for (i, id) in ["r1", "r2"].iter().enumerate() {
        s.put_rate_limit(&crate::StoredRateLimit {
            id: id.to_string(),
            input: input(10 + i as u64),
            created_at: Timestamp::from_second(1_700_000_000 + i as i64).unwrap(),
        })
        .await
        .unwrap();
    }
    let v1 = s.rate_limits_version().await.unwrap();
    assert_ne!(v1, v0);
    s.put_rate_limit(&crate::StoredRateLimit {
        id: "r1".into(),
        input: input(99),
        created_at: Timestamp::from_second(1_700_000_000).unwrap(),
    })
    .await
    .unwrap();
    let all = s.list_rate_limits().await.unwrap();
    assert_eq!(
        all.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    assert_eq!(all[0].input.requests_per_minute, Some(99));
    assert!(s.delete_rate_limit("r2").await.unwrap());
    assert!(!s.delete_rate_limit("r2").await.unwrap());
    assert_eq!(s.list_rate_limits().await.unwrap().len(), 1);
}

/// What records add up to per subject and model (a new budget's starting
/// spend), and per budget they charged.
pub async fn spend_sums(s: &dyn Store) {
    let mut a = record("s1", 1_700_000_000, "alice", "gpt-4o", 100);
    a.budgets = vec!["b".into()];
    let b = record("s2", 1_700_000_100, "alice", "claude-sonnet-4-5", 50);
    let c = record("s3", 1_700_000_200, "bob", "gpt-4o", 7);
    let old = record("s0", 1_600_000_000, "alice", "gpt-4o", 1000);
    insert(s, &[a, b, c, old]);
    let since = Timestamp::from_second(1_699_999_999).unwrap();
    let mut rows = s.scope_spend(SubjectOf::User, None, since).await.unwrap();
    rows.sort_by(|x, y| (&x.subject, &x.model).cmp(&(&y.subject, &y.model)));
    let got: Vec<(&str, &str, i128)> = rows
        .iter()
        .map(|r| (r.subject.as_str(), r.model.as_str(), r.spent.money.units()))
        .collect();
    assert_eq!(
        got,
        [
            ("alice", "claude-sonnet-4-5", 50),
            ("alice", "gpt-4o", 100),
            ("bob", "gpt-4o", 7)
        ]
    );
    let only = s
        .scope_spend(SubjectOf::User, Some("bob".into()), since)
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    let all = s
        .scope_spend(SubjectOf::Fixed("*".into()), None, since)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|r| r.spent.money.units()).sum::<i128>(), 157);
    let by_budget = s.budget_spend("b", SubjectOf::User, since).await.unwrap();
    assert_eq!(by_budget.len(), 1);
    assert_eq!(by_budget[0].1.money, Money::from_units(100));
}

pub async fn budget_breakdowns(s: &dyn Store) {
    let mut rs = Vec::new();
    for (i, (user, model, cost)) in [
        ("alice", "gpt-4o", 100),
        ("alice", "gpt-4o", 50),
        ("bob", "gpt-4o-mini", 7),
        ("carol", "gpt-4o-mini", 500),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = record(
            &format!("b{i}"),
            1_700_000_000 + i as i64,
            user,
            model,
            cost,
        );
        r.budgets = vec!["team".into()];
        rs.push(r);
    }
    let mut other = record("o", 1_700_000_010, "alice", "gpt-4o", 9_999);
    other.budgets = vec!["else".into()];
    rs.push(other);
    insert(s, &rs);
    let since = Timestamp::from_second(1_699_999_999).unwrap();
    let all = s.budget_breakdown("team", None, since, 5).await.unwrap();
    assert_eq!(
        all.models,
        [
            ("gpt-4o-mini".to_string(), Money::from_units(507), 2),
            ("gpt-4o".to_string(), Money::from_units(150), 2)
        ]
    );
    assert_eq!(
        all.spenders[0],
        ("carol".to_string(), Money::from_units(500))
    );
    assert_eq!(all.spenders.len(), 3);
    // One subject of a template budget; a tenant's key names it `tenant/user`.
    for subject in ["alice", "acme/alice"] {
        let one = s
            .budget_breakdown("team", Some((SubjectOf::User, subject.into())), since, 1)
            .await
            .unwrap();
        assert_eq!(
            one.spenders,
            [("alice".to_string(), Money::from_units(150))],
            "{subject}"
        );
        assert_eq!(one.models.len(), 1);
    }
}

pub async fn alerts_dedupe_cap_claim_and_attempts(s: &dyn Store) {
    use crate::alerts::*;
    let t0 = Timestamp::from_second(1_700_000_000).unwrap();
    let target = |n: &str| Target {
        name: n.into(),
        url: format!("https://hooks.example.com/{n}"),
        format: "json".into(),
        secret_env: None,
    };
    let alert = |id: &str, dedupe: &str, at: Timestamp| NewAlert {
        id: id.into(),
        dedupe: dedupe.into(),
        kind: "budget.threshold".into(),
        severity: "warn".into(),
        budget_id: Some("b".into()),
        rule_id: None,
        subject: Some("alice".into()),
        created_at: at,
        payload: r#"{"id":"x"}"#.into(),
    };
    let q = |at: Timestamp| Enqueue {
        at,
        first_attempt_at: at,
        max_per_hour: Some(3),
    };
    let two = [
        ("d1".to_string(), target("a")),
        ("d2".to_string(), target("b")),
    ];
    assert_eq!(
        s.insert_alert(&alert("a1", "k1", t0), &two, q(t0))
            .await
            .unwrap(),
        Recorded::New { suppressed: 0 }
    );
    assert!(s.alert_exists("k1").await.unwrap());
    assert_eq!(
        s.insert_alert(&alert("a1b", "k1", t0), &two, q(t0))
            .await
            .unwrap(),
        Recorded::Duplicate,
        "same dedupe key: nothing written"
    );
    // The cap: 3 per hour; two are taken, so one of the next two is suppressed.
    let two_more = [
        ("d3".to_string(), target("a")),
        ("d4".to_string(), target("b")),
    ];
    assert_eq!(
        s.insert_alert(&alert("a2", "k2", t0), &two_more, q(t0))
            .await
            .unwrap(),
        Recorded::New { suppressed: 1 }
    );
    // No target at all: recorded.
    s.insert_alert(&alert("a3", "k3", t0), &[], q(t0))
        .await
        .unwrap();
    let page = s
        .alerts_page(&AlertQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 3);
    let status = |id: &str| page.iter().find(|a| a.id == id).unwrap().status;
    assert_eq!(
        (status("a1"), status("a2"), status("a3")),
        ("pending", "pending", "recorded")
    );
    // Claims lease what they take.
    let due = s
        .claim_due(t0, t0 + jiff::SignedDuration::from_secs(40), 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 3, "the suppressed one is not due");
    assert!(s.claim_due(t0, t0, 10).await.unwrap().is_empty(), "leased");
    // Attempts: one delivered, one retried, one failed.
    let at = |d: &str, n, st| Attempt {
        delivery_id: d.into(),
        n,
        time: t0,
        status: st,
        error: st.map_or(Some("refused".into()), |c: u16| {
            (c != 200).then(|| format!("answered {c}"))
        }),
        duration_ms: 5,
    };
    s.record_attempt(&at("d1", 1, Some(200)), Next::Delivered)
        .await
        .unwrap();
    let retry = t0 + jiff::SignedDuration::from_secs(10);
    let mut second = at("d2", 1, Some(500));
    second.time = t0 + jiff::SignedDuration::from_secs(1);
    s.record_attempt(&second, Next::RetryAt(retry))
        .await
        .unwrap();
    s.record_attempt(&at("d3", 1, None), Next::Failed)
        .await
        .unwrap();
    assert_eq!(s.next_due().await.unwrap(), Some(retry));
    let (row, deliveries, attempts) = s.alert("a1").await.unwrap().unwrap();
    assert_eq!(row.status, "pending", "d2 waits for its retry");
    assert_eq!(
        (row.attempts, row.last_status),
        (2, Some(500)),
        "{attempts:?}"
    );
    assert_eq!(deliveries.len(), 2);
    assert_eq!(attempts.len(), 2);
    let mut last = at("d2", 2, Some(200));
    last.time = retry;
    s.record_attempt(&last, Next::Delivered).await.unwrap();
    let (row, ..) = s.alert("a1").await.unwrap().unwrap();
    assert_eq!((row.status, row.attempts), ("delivered", 3));
    let (row, ..) = s.alert("a2").await.unwrap().unwrap();
    assert_eq!(row.status, "failed");
    let failed = s
        .alerts_page(&AlertQuery {
            status: Some("failed".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        failed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["a2"]
    );
    // Redelivery: every delivery pending again, due now.
    let later = t0 + jiff::SignedDuration::from_secs(3600);
    assert_eq!(s.redeliver("a2", later).await.unwrap(), Some(2));
    assert_eq!(s.redeliver("nope", later).await.unwrap(), None);
    let due = s.claim_due(later, later, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|d| d.retry_from == later));
    // Pages: newest first, after a cursor.
    let first = s
        .alerts_page(&AlertQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let rest = s
        .alerts_page(&AlertQuery {
            limit: 10,
            after: Some((first[0].created_at, first[0].id.clone())),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|a| a.id < first[0].id));
}
