//! Schema migrations, tracked by `PRAGMA user_version`. Append only: a
//! released migration is never edited.

use rusqlite::Connection;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: keys, usage records, price overrides.
    "CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT, user TEXT, tenant TEXT, role TEXT,
        models TEXT NOT NULL DEFAULT '[]',
        expires_at INTEGER,
        revoked INTEGER NOT NULL DEFAULT 0,
        trusted INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX keys_updated ON keys(updated_at);
    CREATE TABLE usage_records (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL UNIQUE,
        time INTEGER NOT NULL,
        key_id TEXT, user TEXT, tenant TEXT, session TEXT,
        budgets TEXT NOT NULL DEFAULT '[]',
        provider TEXT NOT NULL,
        model_requested TEXT NOT NULL,
        model_served TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cached_input_tokens INTEGER NOT NULL,
        cache_write_5m_tokens INTEGER NOT NULL,
        cache_write_1h_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cost INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        ttft_ms INTEGER,
        status INTEGER NOT NULL,
        flags TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX usage_time ON usage_records(time);
    CREATE INDEX usage_user ON usage_records(user, time);
    CREATE INDEX usage_tenant ON usage_records(tenant, time);
    CREATE INDEX usage_model ON usage_records(model_served, time);
    CREATE TABLE prices (
        model TEXT PRIMARY KEY,
        price TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );",
    // 2: budgets, the ledger's counters and reservations.
    "CREATE TABLE budgets (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE ledger_counters (
        key TEXT PRIMARY KEY,
        spent_money TEXT NOT NULL,
        spent_tokens INTEGER NOT NULL
    );
    CREATE TABLE reservations (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        lines TEXT NOT NULL,
        amount_money TEXT NOT NULL,
        amount_tokens INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        template TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX reservations_open ON reservations(state) WHERE state = 'open';",
    // 3: leaner hot tables. Every request inserts and deletes a reservation
    // and bumps counters: keyed b-trees without a rowid (one tree, not
    // two), no index on a state every stored reservation shares, and only
    // the charged counter keys instead of whole budget lines.
    "CREATE TABLE reservations_v3 (
        id TEXT PRIMARY KEY,
        charges TEXT NOT NULL,
        amount_money TEXT NOT NULL,
        amount_tokens INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        template TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO reservations_v3
        SELECT id,
               (SELECT json_group_array(json_extract(l.value, '$.charge')) FROM json_each(r.lines) AS l),
               amount_money, amount_tokens, expires_at, template, created_at
        FROM reservations AS r WHERE state = 'open';
    DROP TABLE reservations;
    ALTER TABLE reservations_v3 RENAME TO reservations;
    CREATE TABLE ledger_counters_v3 (
        key TEXT PRIMARY KEY,
        spent_money TEXT NOT NULL,
        spent_tokens INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO ledger_counters_v3 SELECT key, spent_money, spent_tokens FROM ledger_counters;
    DROP TABLE ledger_counters;
    ALTER TABLE ledger_counters_v3 RENAME TO ledger_counters;",
    // 4: budgets are loaded a page at a time in (created_at, id) order.
    "CREATE INDEX budgets_order ON budgets(created_at, id);",
    // 5: records the store could not write as rows, kept exactly (JSON)
    // until re-applied; their counters and reservations were applied.
    "CREATE TABLE quarantined_records (
        request_id TEXT PRIMARY KEY,
        time INTEGER NOT NULL,
        reason TEXT NOT NULL,
        record TEXT NOT NULL
    );",
    // 6: a stored price keeps the provider it was set or imported for.
    "ALTER TABLE prices ADD COLUMN provider TEXT;",
    // 7: when each budget (config ones included) was first seen, so that a
    // period it did not exist for carries no rollover.
    "CREATE TABLE budget_first_seen (
        id TEXT PRIMARY KEY,
        at INTEGER NOT NULL
    );",
    // 8: rate limits managed through the admin API (JSON inputs).
    "CREATE TABLE rate_limits (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );",
    // 9: alerts, their deliveries (the outbox) and every attempt.
    "CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        dedupe TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        budget_id TEXT,
        rule_id TEXT,
        subject TEXT,
        created_at INTEGER NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE INDEX alerts_created ON alerts(created_at, id);
    CREATE TABLE alert_deliveries (
        id TEXT PRIMARY KEY,
        alert_id TEXT NOT NULL,
        target TEXT NOT NULL,
        url TEXT NOT NULL,
        format TEXT NOT NULL,
        secret_env TEXT,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER,
        retry_from INTEGER NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        delivered_at INTEGER,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX alert_deliveries_alert ON alert_deliveries(alert_id);
    CREATE INDEX alert_deliveries_due ON alert_deliveries(status, next_at);
    CREATE INDEX alert_deliveries_created ON alert_deliveries(created_at);
    CREATE TABLE alert_attempts (
        delivery_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        time INTEGER NOT NULL,
        status INTEGER,
        error TEXT,
        duration_ms INTEGER NOT NULL,
        PRIMARY KEY (delivery_id, n)
    ) WITHOUT ROWID;",
    // 10: alert rules managed through the admin API (JSON inputs); a
    // rule's last fire per subject is read from its alerts.
    "CREATE TABLE alert_rules (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX alerts_rule ON alerts(rule_id, subject, created_at);",
    // 11: hourly rollups of the usage records, per (hour, tenant, user,
    // key, model served, provider, session), kept in the transaction that
    // writes each record; '' stands for a record without that dimension
    // (NULLs would break the key). Filled from the records already there.
    "CREATE TABLE usage_hourly (
        hour INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        user TEXT NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        session TEXT NOT NULL,
        records INTEGER NOT NULL,
        refused INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cached_input_tokens INTEGER NOT NULL,
        cache_write_5m_tokens INTEGER NOT NULL,
        cache_write_1h_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cost_hi INTEGER NOT NULL,
        cost_lo INTEGER NOT NULL,
        PRIMARY KEY (hour, tenant, user, key_id, model, provider, session)
    ) WITHOUT ROWID;
    INSERT INTO usage_hourly
    SELECT (time / 3600000) * 3600000, COALESCE(tenant, ''), COALESCE(user, ''), COALESCE(key_id, ''),
           model_served, provider, COALESCE(session, ''), COUNT(*),
           SUM(CASE WHEN (',' || flags || ',') LIKE '%,blocked,%' THEN 1 ELSE 0 END),
           SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), SUM(cache_write_5m_tokens),
           SUM(cache_write_1h_tokens), SUM(reasoning_tokens), SUM(cost / 1000000), SUM(cost % 1000000)
    FROM usage_records GROUP BY 1, 2, 3, 4, 5, 6, 7;",
    // 12: the users who made requests, from the rollups (which outlive
    // the records); the index changes only when a rollup row is new.
    "CREATE INDEX usage_hourly_user ON usage_hourly(user, tenant);",
    // 13: admin keys scoped to one tenant, held as hashes (full admin keys
    // live in the config).
    "CREATE TABLE admin_keys (
        id TEXT PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT,
        tenant TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );",
    // 14: public badge tokens, one budget (and subject) each, as hashes.
    "CREATE TABLE badge_tokens (
        id TEXT PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        budget_id TEXT NOT NULL,
        subject TEXT,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE INDEX badge_tokens_budget ON badge_tokens(budget_id);",
    // 15: Cycles reservations (the protocol's view in `doc`, the columns
    // lists filter on) and the answers their idempotency keys replay.
    "CREATE TABLE cycles_reservations (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        status TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        scope_path TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        finalized_at INTEGER,
        doc TEXT NOT NULL
    );
    CREATE INDEX cycles_reservations_tenant ON cycles_reservations(tenant, created_at, id);
    CREATE INDEX cycles_reservations_active ON cycles_reservations(status) WHERE status = 'ACTIVE';
    CREATE TABLE cycles_replies (
        tenant TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        key TEXT NOT NULL,
        hash BLOB NOT NULL,
        status INTEGER NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, endpoint, key)
    ) WITHOUT ROWID;
    CREATE INDEX cycles_replies_age ON cycles_replies(created_at);",
    // 16: daily rollups without key and session (the dimensions that
    // multiply rows): reports over months read a row per day, tenant,
    // user, model and provider. Filled from the hourly rollups, which
    // outlive the records.
    "CREATE TABLE usage_daily (
        day INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        user TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        records INTEGER NOT NULL,
        refused INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cached_input_tokens INTEGER NOT NULL,
        cache_write_5m_tokens INTEGER NOT NULL,
        cache_write_1h_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cost_hi INTEGER NOT NULL,
        cost_lo INTEGER NOT NULL,
        PRIMARY KEY (day, tenant, user, model, provider)
    ) WITHOUT ROWID;
    INSERT INTO usage_daily
    SELECT (hour / 86400000) * 86400000, tenant, user, model, provider, SUM(records), SUM(refused),
           SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), SUM(cache_write_5m_tokens),
           SUM(cache_write_1h_tokens), SUM(reasoning_tokens), SUM(cost_hi), SUM(cost_lo)
    FROM usage_hourly GROUP BY 1, 2, 3, 4, 5;",
    // 17: budget lines an ALLOW_IF_AVAILABLE commit could not cover whole
    // (the protocol's `is_over_limit`), by counter — a new period is a new
    // counter, so unmarked — until an operator funds or changes the budget.
    "CREATE TABLE cycles_over_limit (
        counter TEXT PRIMARY KEY,
        budget_id TEXT NOT NULL,
        marked_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX cycles_over_limit_budget ON cycles_over_limit(budget_id);",
];

pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
