use super::*;
use crate::Payload;
use crate::suite::{key, record};

/// The backend-agnostic cases, each on a fresh SQLite store.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $case() {
            let (_d, s) = store().await;
            crate::suite::$case(&s).await;
        }
    )*};
}

suite!(
    keys_round_trip_and_revoke,
    records_are_idempotent_and_paged_newest_first,
    reports_sum_exactly_beyond_i64,
    prices_persist,
    budgets_round_trip,
    rate_limits_round_trip,
    spend_sums,
    budget_breakdowns,
    alerts_dedupe_cap_claim_and_attempts,
);

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path().join("t.db").to_str().unwrap())
        .await
        .unwrap();
    (dir, s)
}

#[tokio::test]
async fn journal_settles_atomically_and_open_reservations_survive() {
    use crate::journal::JournalEntry;
    use tollgate_core::ledger::Amount;
    let (d, s) = store().await;
    let amount = Amount::new(Money::from_units(500), 50);
    for id in ["r1", "r2"] {
        s.log_reservation(&logged(id)).unwrap();
    }
    s.apply_journal(&[JournalEntry::Settle {
        reservation: Some("r1".into()),
        charges: vec!["u|alice|0".into(), "t|acme|0".into()],
        actual: Amount::new(Money::from_units(7), 15),
        payload: Payload::record(record("r1", 1_700_000_000, "alice", "gpt-4o", 7)),
    }])
    .unwrap();
    // The process stops; the next one finds r2 open.
    drop(s);
    let s = SqliteStore::open(d.path().join("t.db").to_str().unwrap())
        .await
        .unwrap();
    let (counters, open) = s.load_ledger().await.unwrap();
    let mut counters = counters;
    counters.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        counters,
        vec![
            (
                "t|acme|0".to_string(),
                Amount::new(Money::from_units(7), 15)
            ),
            (
                "u|alice|0".to_string(),
                Amount::new(Money::from_units(7), 15)
            ),
        ]
    );
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, "r2");
    assert_eq!(open[0].amount, amount);
    assert_eq!(open[0].charges, vec!["u|alice|0", "t|acme|0"]);
    assert_eq!(
        open[0].payload.as_record().and_then(|r| r.user.as_deref()),
        Some("alice")
    );
    s.apply_journal(&[JournalEntry::Release { id: "r2".into() }])
        .unwrap();
    assert!(s.load_ledger().await.unwrap().1.is_empty());
    let page = s
        .records(&RecordQuery {
            limit: 10,
            ..RecordQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records.len(), 1, "the settle wrote its record");
}

/// A database from before migration 3 (rowid tables, whole budget lines
/// stored with each reservation) keeps its open reservations and counters.
#[tokio::test]
async fn migration_3_keeps_open_reservations_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let c = Connection::open(&path).unwrap();
        for sql in &schema::MIGRATIONS[..2] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 2).unwrap();
        c.execute_batch(
            r#"INSERT INTO ledger_counters VALUES ('b|alice|0', '1500', 12);
               INSERT INTO reservations VALUES ('req_1', 'open',
                 '[{"charge":"b|alice|0","window":["b|alice|0"],"limit":{"money":null,"tokens":null},"enforce":true},
                   {"charge":"t|acme|0","window":["t|acme|0"],"limit":{"money":null,"tokens":null},"enforce":false}]',
                 '700', 30, 1800000000000, '{}', 1700000000000);
               INSERT INTO reservations VALUES ('req_2', 'settled', '[]', '1', 1, 1800000000000, '{}', 1700000000001);"#,
        )
        .unwrap();
    }
    let template =
        serde_json::to_string(&record("req_1", 1_700_000_000, "alice", "gpt-4o", 700)).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE reservations SET template = ?1", [template])
        .unwrap();
    let s = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    let (counters, open) = s.load_ledger().await.unwrap();
    assert_eq!(
        counters,
        vec![(
            "b|alice|0".to_string(),
            Amount::new(Money::from_units(1500), 12)
        )]
    );
    assert_eq!(open.len(), 1, "only the open reservation is carried over");
    assert_eq!(open[0].id, "req_1");
    assert_eq!(open[0].charges, vec!["b|alice|0", "t|acme|0"]);
    assert_eq!(open[0].amount, Amount::new(Money::from_units(700), 30));
}

fn logged(id: &str) -> OpenReservation {
    OpenReservation {
        id: id.into(),
        charges: vec!["u|alice|0".into(), "t|acme|0".into()],
        amount: Amount::new(Money::from_units(500), 50),
        expires_at: Timestamp::from_second(1_800_000_000).unwrap(),
        payload: Payload::record(record(id, 1_700_000_000, "alice", "gpt-4o", 500)),
    }
}

fn log_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("t.db-reservations.")
        })
        .count()
}

/// A reservation in the log survives the process; its settlement closes it,
/// a release line closes it, and one whose record was stored before a crash
/// (the log not yet cleaned) is not charged twice.
#[tokio::test]
async fn reservation_log_survives_restarts_and_closes() {
    use crate::journal::JournalEntry;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let open = || SqliteStore::open(path.to_str().unwrap());
    let s = open().await.unwrap();
    for id in ["req_a", "req_b", "req_c", "req_d"] {
        s.log_reservation(&logged(id)).unwrap();
    }
    // req_b settles, req_c is released; the process then "crashes".
    s.apply_journal(&[
        JournalEntry::Settle {
            reservation: Some("req_b".into()),
            charges: vec!["u|alice|0".into()],
            actual: Amount::new(Money::from_units(7), 1),
            payload: Payload::record(record("req_b", 1_700_000_000, "alice", "gpt-4o", 7)),
        },
        JournalEntry::Release { id: "req_c".into() },
    ])
    .unwrap();
    // req_d's record reached the database, but not its closing (as if the
    // process died between the commit and the log's bookkeeping).
    s.insert_records(&[record("req_d", 1_700_000_000, "alice", "gpt-4o", 9)])
        .await
        .unwrap();
    drop(s);

    let s = open().await.unwrap();
    let (_, open_now) = s.load_ledger().await.unwrap();
    let ids: Vec<&str> = open_now.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["req_a"],
        "only the unsettled, unreleased reservation"
    );
    assert_eq!(open_now[0].charges, vec!["u|alice|0", "t|acme|0"]);
    assert_eq!(
        open_now[0]
            .payload
            .as_record()
            .and_then(|r| r.user.as_deref()),
        Some("alice")
    );
    // Reading did not touch the files (a CLI next to a running gateway).
    assert_eq!(log_files(dir.path()), 1);

    // Reconciliation settles it; a writer then clears the old generation.
    s.apply_journal(&[JournalEntry::Settle {
        reservation: Some("req_a".into()),
        charges: vec!["u|alice|0".into()],
        actual: Amount::new(Money::from_units(500), 50),
        payload: Payload::record(record("req_a", 1_700_000_000, "alice", "gpt-4o", 500)),
    }])
    .unwrap();
    assert!(s.load_ledger().await.unwrap().1.is_empty());
    s.log_reservation(&logged("req_e")).unwrap();
    assert_eq!(log_files(dir.path()), 1, "the old generation is deleted");
    assert_eq!(s.reslog.sizes(), (1, 1));
}

/// Under steady traffic the log rotates and closed generations go away:
/// the files stay a few megabytes whatever the number of requests.
#[tokio::test]
async fn reservation_log_rotates_and_stays_small() {
    use crate::journal::JournalEntry;
    let (dir, s) = store().await;
    for round in 0..3 {
        let ids: Vec<String> = (0..6_000).map(|i| format!("req_{round}_{i}")).collect();
        for id in &ids {
            s.log_reservation(&logged(id)).unwrap();
        }
        let settles: Vec<JournalEntry> = ids
            .iter()
            .map(|id| JournalEntry::Settle {
                reservation: Some(id.clone()),
                charges: vec![],
                actual: Amount::default(),
                payload: Payload::record(record(id, 1_700_000_000, "alice", "gpt-4o", 1)),
            })
            .collect();
        s.apply_journal(&settles).unwrap();
    }
    let (open, generations) = s.reslog.sizes();
    assert_eq!(open, 0);
    assert!(generations <= 2, "{generations} generations kept");
    assert!(log_files(dir.path()) <= 2);
}

/// A writer that died mid-line leaves a torn last line: it is ignored (its
/// request was never forwarded), and a release appended to that file later
/// still reads as a line of its own.
#[tokio::test]
async fn torn_last_line_is_ignored_and_fenced() {
    use crate::journal::JournalEntry;
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let open = || SqliteStore::open(path.to_str().unwrap());
    let s = open().await.unwrap();
    s.log_reservation(&logged("req_a")).unwrap();
    drop(s);
    let file = dir.path().join("t.db-reservations.0");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(br#"{"t":"r","id":"req_torn","charges":["#)
        .unwrap();

    let s = open().await.unwrap();
    let ids: Vec<String> = s
        .load_ledger()
        .await
        .unwrap()
        .1
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec!["req_a"]);
    s.apply_journal(&[JournalEntry::Release { id: "req_a".into() }])
        .unwrap();
    drop(s);

    let s = open().await.unwrap();
    assert!(
        s.load_ledger().await.unwrap().1.is_empty(),
        "the release line was read"
    );
}

/// Regression: a record whose cost no column holds failed its batch, which
/// was retried forever: every later record was lost. Now the store refuses
/// it (not a transient error), and quarantine keeps it exactly, charges its
/// counters and closes its reservation, so a restart neither reconciles it
/// again nor loses it.
#[tokio::test]
async fn regression_a_record_the_store_refuses_is_quarantined_not_retried_forever() {
    use crate::journal::JournalEntry;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let open = || SqliteStore::open(path.to_str().unwrap());
    let s = open().await.unwrap();
    s.log_reservation(&logged("req_poison")).unwrap();
    let huge = i128::from(i64::MAX) * 1000;
    let poison = JournalEntry::Settle {
        reservation: Some("req_poison".into()),
        charges: vec!["u|alice|0".into()],
        actual: Amount::new(Money::from_units(huge), 10),
        payload: Payload::record(record("req_poison", 1_700_000_000, "alice", "gpt-4o", huge)),
    };
    let err = s.apply_journal(std::slice::from_ref(&poison)).unwrap_err();
    assert!(!err.is_transient(), "{err}");
    s.quarantine(&poison, &err.to_string()).unwrap();
    let q = s.quarantined().await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].record.cost, Money::from_units(huge), "kept exactly");
    assert!(q[0].reason.contains("out of range"), "{}", q[0].reason);
    assert_eq!(s.quarantined_count().await.unwrap(), 1);
    // Still refused: it stays, with its reason.
    assert_eq!(s.retry_quarantined().await.unwrap(), (0, 1));
    drop(s);
    let s = open().await.unwrap();
    let (counters, open_now) = s.load_ledger().await.unwrap();
    assert!(open_now.is_empty(), "the reservation is closed");
    let c = counters.iter().find(|(k, _)| k == "u|alice|0").unwrap();
    assert_eq!(
        c.1.money,
        Money::from_units(huge),
        "its spend is charged exactly"
    );
}

/// A reservation logged again (an extension) is its latest line: one open
/// reservation at start-up, at the grown amount, and its release closes it.
#[tokio::test]
async fn a_reservation_logged_again_supersedes_its_earlier_line() {
    use crate::journal::JournalEntry;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let open = || SqliteStore::open(path.to_str().unwrap());
    let s = open().await.unwrap();
    s.log_reservation(&logged("req_x")).unwrap();
    let mut grown = logged("req_x");
    grown.amount = Amount::new(Money::from_units(900), 90);
    s.log_reservation(&grown).unwrap();
    assert_eq!(s.reslog.sizes().0, 1);
    drop(s);
    let s = open().await.unwrap();
    let open_now = s.load_ledger().await.unwrap().1;
    assert_eq!(open_now.len(), 1, "one reservation, not two");
    assert_eq!(open_now[0].amount, grown.amount);
    s.apply_journal(&[JournalEntry::Release { id: "req_x".into() }])
        .unwrap();
    drop(s);
    let s = open().await.unwrap();
    assert!(s.load_ledger().await.unwrap().1.is_empty());
}

/// Regression: a damaged `models` column read as "every model allowed".
#[tokio::test]
async fn regression_a_corrupt_model_list_fails_closed() {
    let (_d, s) = store().await;
    s.insert_key(&key("k_bad", 7)).await.unwrap();
    s.writer
        .lock()
        .unwrap()
        .execute("UPDATE keys SET models = 'not json' WHERE id = 'k_bad'", [])
        .unwrap();
    let k = s.key_by_hash([7; 32]).await.unwrap().unwrap();
    let caller = tollgate_core::Caller {
        models: k.models.clone(),
        ..Default::default()
    };
    for m in ["gpt-4o", "claude-sonnet-4-5", "x"] {
        assert!(!caller.may_use(m), "{m} allowed by a damaged list");
    }
}

/// A store error says whether retrying can help, and I/O is never the
/// caller's mistake.
#[tokio::test]
async fn io_failures_are_transient_not_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    // A database under a path whose parent is a file cannot be created.
    let e = SqliteStore::open(file.join("t.db").to_str().unwrap())
        .await
        .err()
        .unwrap();
    assert!(!matches!(e, StoreError::Invalid(_)), "{e:?}");
}

/// A reservation's payload comes back as it was logged: a record, nothing
/// (a reservation that owes nothing until committed), or — in a log
/// written before payloads had kinds — the bare record template.
#[tokio::test]
async fn reservation_payloads_round_trip_and_old_logs_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    s.log_reservation(&logged("req_rec")).unwrap();
    s.log_reservation(&OpenReservation {
        payload: Payload::Empty,
        ..logged("res_empty")
    })
    .unwrap();
    drop(s);
    // A line as an older version wrote it: `template` is the record.
    let old = serde_json::json!({
        "t": "r", "id": "req_old", "charges": ["u|alice|0"],
        "amount": Amount::new(Money::from_units(3), 1), "expires_at": 1_800_000_000_000i64,
        "template": record("req_old", 1_700_000_000, "bob", "gpt-4o", 3),
    });
    let log = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("reservations."))
        .unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    use std::io::Write;
    writeln!(f, "{old}").unwrap();
    drop(f);

    let s = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    let (_, open) = s.load_ledger().await.unwrap();
    let by_id = |id: &str| open.iter().find(|r| r.id == id).unwrap();
    assert_eq!(
        by_id("req_rec")
            .payload
            .as_record()
            .map(|r| r.request_id.as_str()),
        Some("req_rec")
    );
    assert!(matches!(by_id("res_empty").payload, Payload::Empty));
    assert_eq!(
        by_id("req_old")
            .payload
            .as_record()
            .and_then(|r| r.user.as_deref()),
        Some("bob")
    );
}

mod rollups {
    use super::*;
    use crate::query::{GroupBy, ReportFilter, ReportQuery, ReportRow};
    use proptest::prelude::*;

    const BASE: i64 = 1_700_000_000_000;
    const SPAN: i64 = 3 * 86_400_000;

    fn gen_record() -> impl Strategy<Value = UsageRecord> {
        (
            // A few hours (across a day boundary) so that records share
            // rollup rows; any millisecond within them.
            (
                prop::sample::select(vec![0i64, 1, 23, 24, 47]),
                0..3_600_000i64,
            )
                .prop_map(|(h, ms)| h * 3_600_000 + ms),
            proptest::option::of(prop::sample::select(vec!["a", "b", "c"])),
            proptest::option::of(prop::sample::select(vec!["t1", "t2"])),
            proptest::option::of(prop::sample::select(vec!["s1", "s2"])),
            prop::sample::select(vec!["gpt-4o", "claude-haiku-4-5", "gemini-2.5-flash"]),
            0u64..5_000,
            0u64..5_000,
            0i64..1_000_000_000_000,
            any::<bool>(),
            prop::sample::subsequence(vec!["b1", "b2", "b3"], 0..=3),
        )
            .prop_map(
                |(t, user, tenant, session, model, inp, out, cost, blocked, budgets)| {
                    let mut r = record("x", 0, "u", model, i128::from(cost));
                    r.time = jiff::Timestamp::from_millisecond(BASE + t).unwrap();
                    r.user = user.map(String::from);
                    r.tenant = tenant.map(String::from);
                    r.session = session.map(String::from);
                    r.key_id = Some(if t % 2 == 0 { "k1" } else { "k2" }.into());
                    r.budgets = budgets.into_iter().map(String::from).collect();
                    r.provider = if model.starts_with("gpt") {
                        "openai"
                    } else {
                        "other"
                    }
                    .into();
                    r.usage.input_tokens = inp;
                    r.usage.output_tokens = out;
                    r.flags.blocked = blocked;
                    if blocked {
                        r.cost = Money::ZERO;
                        r.usage = Default::default();
                    }
                    r
                },
            )
    }

    /// A record's values of a dimension: budgets may be several (or none).
    fn keys_of(g: GroupBy, r: &UsageRecord) -> Vec<Option<String>> {
        let z = r.time.in_tz("UTC").unwrap();
        vec![match g {
            GroupBy::User => r.user.clone(),
            GroupBy::Tenant => r.tenant.clone(),
            GroupBy::Session => r.session.clone(),
            GroupBy::Model => Some(r.model_served.clone()),
            GroupBy::Key => r.key_id.clone(),
            GroupBy::Provider => Some(r.provider.clone()),
            GroupBy::Budget if r.budgets.is_empty() => None,
            GroupBy::Budget => return r.budgets.iter().cloned().map(Some).collect(),
            GroupBy::Day => Some(z.strftime("%Y-%m-%d").to_string()),
            GroupBy::Hour => Some(z.strftime("%Y-%m-%dT%H:00:00Z").to_string()),
        }]
    }

    fn matches(f: &ReportFilter, r: &UsageRecord) -> bool {
        let eq = |want: &Option<String>, have: Option<&String>| {
            want.as_ref().is_none_or(|w| have == Some(w))
        };
        eq(&f.user, r.user.as_ref())
            && eq(&f.tenant, r.tenant.as_ref())
            && eq(&f.session, r.session.as_ref())
            && eq(&f.key_id, r.key_id.as_ref())
            && eq(&f.model, Some(&r.model_served))
            && eq(&f.provider, Some(&r.provider))
            && f.budget.as_ref().is_none_or(|b| r.budgets.contains(b))
    }

    /// The report computed from the records themselves.
    fn expected(q: &ReportQuery, records: &[UsageRecord]) -> Vec<ReportRow> {
        let mut rows: Vec<ReportRow> = Vec::new();
        for r in records {
            if q.from.is_some_and(|f| r.time < f)
                || q.to.is_some_and(|t| r.time >= t)
                || !matches(&q.filter, r)
            {
                continue;
            }
            // Every combination of the record's values (a record counts
            // under each budget it charged, or the one the filter names).
            let mut combos: Vec<Vec<Option<String>>> = vec![vec![]];
            for g in &q.group_by {
                let mut values = keys_of(*g, r);
                if *g == GroupBy::Budget
                    && let Some(b) = &q.filter.budget
                {
                    values = vec![Some(b.clone())];
                }
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        values.iter().map(move |v| {
                            let mut c = c.clone();
                            c.push(v.clone());
                            c
                        })
                    })
                    .collect();
            }
            for keys in combos {
                let i = match rows.iter().position(|x| x.keys == keys) {
                    Some(i) => i,
                    None => {
                        rows.push(ReportRow {
                            keys,
                            requests: 0,
                            refused: 0,
                            usage: Default::default(),
                            cost: Money::ZERO,
                        });
                        rows.len() - 1
                    }
                };
                let row = &mut rows[i];
                if r.flags.blocked {
                    row.refused += 1;
                } else {
                    row.requests += 1;
                }
                row.usage.input_tokens += r.usage.input_tokens;
                row.usage.output_tokens += r.usage.output_tokens;
                row.usage.cached_input_tokens += r.usage.cached_input_tokens;
                row.usage.reasoning_tokens += r.usage.reasoning_tokens;
                row.cost += r.cost;
            }
        }
        if q.group_by.is_empty() && rows.is_empty() {
            rows.push(ReportRow {
                keys: vec![],
                requests: 0,
                refused: 0,
                usage: Default::default(),
                cost: Money::ZERO,
            });
        }
        rows.sort_by(|a, b| a.keys.cmp(&b.keys));
        rows
    }

    fn gen_filter() -> impl Strategy<Value = ReportFilter> {
        let pick = |v: Vec<&'static str>| {
            proptest::option::of(prop::sample::select(v).prop_map(String::from))
        };
        (
            pick(vec!["a", "b"]),
            pick(vec!["t1"]),
            pick(vec!["s2"]),
            pick(vec!["k1"]),
            pick(vec!["gpt-4o"]),
            pick(vec!["other"]),
            pick(vec!["b1", "b3"]),
        )
            .prop_map(|(user, tenant, session, key_id, model, provider, budget)| {
                ReportFilter {
                    user,
                    tenant,
                    session,
                    key_id,
                    model,
                    provider,
                    budget,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Reports read whole hours from the rollups and the edges from the
        /// raw records: no grouping, every grouping and every pair of
        /// groupings, with any bounds and filters, equals the sum of the
        /// raw records.
        #[test]
        fn reports_from_rollups_equal_the_records(
            mut records in prop::collection::vec(gen_record(), 1..120),
            from in proptest::option::of(prop_oneof![0..SPAN, (0..3i64).prop_map(|h| h * 3_600_000)]),
            len in proptest::option::of(prop_oneof![0..SPAN, (1..30i64).prop_map(|h| h * 3_600_000)]),
            filters in prop::collection::vec(gen_filter(), 3),
        ) {
            for (i, r) in records.iter_mut().enumerate() {
                r.request_id = format!("r{i}");
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (_d, s) = store().await;
                // In two batches, one written twice: rolled up once.
                let half = records.len() / 2;
                s.insert_records(&records[..half]).await.unwrap();
                s.insert_records(&records).await.unwrap();
                let at = |o: i64| jiff::Timestamp::from_millisecond(BASE + o).unwrap();
                let mut groupings = vec![vec![]];
                for a in GroupBy::EVERY {
                    groupings.push(vec![a]);
                    for b in GroupBy::EVERY {
                        if a != b {
                            groupings.push(vec![a, b]);
                        }
                    }
                }
                for (i, group_by) in groupings.into_iter().enumerate() {
                    let q = ReportQuery {
                        group_by,
                        from: from.map(at),
                        to: from.zip(len).map(|(f, l)| at(f + l)).or(len.map(at)),
                        // Each filter set over a third of the groupings; the
                        // first set sometimes filters nothing.
                        filter: if i % 5 == 0 { ReportFilter::default() } else { filters[i % 3].clone() },
                        raw_only: false,
                    };
                    let got = s.report(&q).await.unwrap();
                    assert_eq!(got, expected(&q, &records), "{q:?}");
                    let raw = s.report(&ReportQuery { raw_only: true, ..q.clone() }).await.unwrap();
                    assert_eq!(raw, got, "raw records alone: {q:?}");
                }
                // Purging a budget's records takes them out of the rollups
                // too: every report still equals the records left.
                while s.purge_budget_records("b2", 7).await.unwrap() > 0 {}
                let left: Vec<UsageRecord> =
                    records.iter().filter(|r| !r.budgets.iter().any(|b| b == "b2")).cloned().collect();
                for group_by in [vec![], vec![GroupBy::Hour, GroupBy::User], vec![GroupBy::Budget], vec![GroupBy::Model, GroupBy::Session]] {
                    let mut q = ReportQuery::new(group_by);
                    q.from = from.map(at);
                    assert_eq!(s.report(&q).await.unwrap(), expected(&q, &left), "{q:?}");
                }
                let page = s.records(&crate::query::RecordQuery { limit: 1000, ..Default::default() }).await.unwrap();
                assert_eq!(page.records.len(), left.len());
            });
        }
    }

    #[tokio::test]
    async fn retention_deletes_exactly_the_old_records_and_keeps_the_rollups() {
        let (_d, s) = store().await;
        let records: Vec<UsageRecord> = (0..40)
            .map(|i| {
                record(
                    &format!("r{i}"),
                    1_700_000_000 + i * 3_000,
                    "alice",
                    "gpt-4o",
                    1_000 + i as i128,
                )
            })
            .collect();
        s.insert_records(&records).await.unwrap();
        let all = ReportQuery::new(vec![GroupBy::Hour]);
        let before = s.report(&all).await.unwrap();
        let cut = jiff::Timestamp::from_second(1_700_000_000 + 20 * 3_000).unwrap();
        let mut deleted = 0;
        loop {
            let n = s.delete_records_before(cut, 6).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= 6);
            deleted += n;
        }
        assert_eq!(deleted, 20);
        let page = s
            .records(&crate::query::RecordQuery {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut kept: Vec<_> = page.records.iter().map(|r| r.request_id.clone()).collect();
        kept.sort();
        let mut want: Vec<_> = (20..40).map(|i| format!("r{i}")).collect();
        want.sort();
        assert_eq!(kept, want);
        // Whole hours come from the rollups, which keep the deleted records.
        assert_eq!(s.report(&all).await.unwrap(), before);
        assert_eq!(
            s.users_page(&crate::query::UsersQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap(),
            vec![("alice".to_string(), Some("acme".to_string()))]
        );
    }

    #[tokio::test]
    async fn an_export_streams_the_rows_of_the_report() {
        let (_d, s) = store().await;
        let mut records = Vec::new();
        for i in 0..50 {
            let mut r = record(
                &format!("r{i}"),
                1_700_000_000 + i * 600,
                &format!("u{}", i % 7),
                "gpt-4o",
                10,
            );
            r.budgets = vec!["b1".into()];
            records.push(r);
        }
        s.insert_records(&records).await.unwrap();
        let q = ReportQuery::new(vec![GroupBy::User, GroupBy::Hour]);
        let all = s.report(&q).await.unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = got.clone();
        s.report_each(
            &q,
            Box::new(move |r| {
                sink.lock().unwrap().push(r);
                true
            }),
        )
        .await
        .unwrap();
        assert_eq!(*got.lock().unwrap(), all);
        // Stopping early reads no further.
        let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = n.clone();
        s.report_each(
            &q,
            Box::new(move |_| c.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 2),
        )
        .await
        .unwrap();
        assert_eq!(n.load(std::sync::atomic::Ordering::Relaxed), 3);
        // An empty filter value is refused (the rollups' "none" is '').
        let mut bad = ReportQuery::new(vec![GroupBy::User]);
        bad.filter.user = Some(String::new());
        assert!(matches!(s.report(&bad).await, Err(StoreError::Invalid(_))));
    }
}

/// Over-limit marks survive a restart, are one per counter however often
/// marked, and clear per budget.
#[tokio::test]
async fn over_limit_marks_persist_and_clear_per_budget() {
    use crate::cycles::CyclesStore;
    let (dir, s) = store().await;
    let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let marks = [
        ("b1".to_string(), "b1|acme|p0".to_string()),
        ("b2".to_string(), "b2|acme|p0".to_string()),
    ];
    s.mark_over_limit(&marks, at).await.unwrap();
    s.mark_over_limit(&marks[..1], at).await.unwrap();
    drop(s);
    let s = SqliteStore::open(dir.path().join("t.db").to_str().unwrap())
        .await
        .unwrap();
    let mut got = s.over_limit_marks().await.unwrap();
    got.sort();
    assert_eq!(got, marks.to_vec());
    assert_eq!(s.clear_over_limit("b1").await.unwrap(), 1);
    assert_eq!(s.over_limit_marks().await.unwrap(), marks[1..].to_vec());
}
