//! The ledger's durability: journal batches, quarantine, the reservation log, the state at start-up.

use super::usage::insert_record;
use super::*;

/// Adds `amount` to a counter (read, add, write: exact i128 money in TEXT,
/// and this connection is the only writer).
pub(super) fn add_to_counter(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    amount: Amount,
) -> Result<()> {
    let cur: Option<(String, i64)> = tx
        .prepare_cached("SELECT spent_money, spent_tokens FROM ledger_counters WHERE key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (money, tokens) = match cur {
        Some((m, t)) => (parse_units(&m)?, t.max(0) as u64),
        None => (Money::ZERO, 0),
    };
    let money = money
        .checked_add(amount.money)
        .ok_or_else(|| StoreError::Invalid(format!("counter {key} overflow")))?;
    let tokens = tokens.saturating_add(amount.tokens);
    tx.prepare_cached(
        "INSERT INTO ledger_counters (key, spent_money, spent_tokens) VALUES (?1, ?2, ?3) \
         ON CONFLICT(key) DO UPDATE SET spent_money = excluded.spent_money, spent_tokens = excluded.spent_tokens",
    )?
    .execute(params![key, money.units().to_string(), tok(tokens)])?;
    Ok(())
}

pub(super) fn apply_entry<'a>(
    tx: &rusqlite::Transaction<'_>,
    e: &'a JournalEntry,
    deltas: &mut std::collections::HashMap<&'a str, Amount>,
) -> Result<()> {
    match e {
        JournalEntry::Settle {
            reservation,
            charges,
            actual,
            payload,
        } => {
            if let Some(id) = reservation {
                tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                    .execute([id])?;
            }
            for key in charges {
                let d = deltas.entry(key.as_str()).or_default();
                *d = d.plus(*actual);
            }
            if let Some(record) = payload.as_record() {
                insert_record(tx, record)?;
            }
        }
        JournalEntry::Release { id } => {
            tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                .execute([id])?;
        }
        JournalEntry::SetCounter { key, spent } => {
            // Increments summed earlier in this batch belong to records not
            // yet stored when the spend was counted: they still apply.
            tx.prepare_cached(
                "INSERT INTO ledger_counters (key, spent_money, spent_tokens) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(key) DO UPDATE SET spent_money = excluded.spent_money, spent_tokens = excluded.spent_tokens",
            )?
            .execute(params![key, spent.money.units().to_string(), tok(spent.tokens)])?;
        }
    }
    Ok(())
}

#[async_trait]
impl LedgerStore for SqliteStore {
    fn apply_journal(&self, entries: &[JournalEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut c = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = c.transaction()?;
        // Counter increments are summed per key and written once per
        // batch: under load every request touches the same few budgets.
        let mut deltas: std::collections::HashMap<&str, Amount> = std::collections::HashMap::new();
        for e in entries {
            apply_entry(&tx, e, &mut deltas)?;
        }
        for (key, amount) in deltas {
            add_to_counter(&tx, key, amount)?;
        }
        tx.commit()?;
        // Durable now: the log's copies of these reservations are closed.
        self.reslog.settled(entries.iter().filter_map(|e| match e {
            JournalEntry::Settle {
                reservation: Some(id),
                ..
            } => Some(id.as_str()),
            _ => None,
        }));
        for e in entries {
            if let JournalEntry::Release { id } = e {
                self.reslog.release(id)?;
            }
        }
        Ok(())
    }

    fn quarantine(&self, entry: &JournalEntry, reason: &str) -> Result<()> {
        let mut c = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = c.transaction()?;
        let mut closed = None;
        let mut released = None;
        match entry {
            JournalEntry::Settle {
                reservation,
                charges,
                actual,
                payload,
            } => {
                if let Some(id) = reservation {
                    tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                        .execute([id])?;
                    closed = Some(id.as_str());
                }
                for key in charges {
                    add_to_counter(&tx, key, *actual)?;
                }
                if let Some(record) = payload.as_record() {
                    tx.prepare_cached(
                    "INSERT OR IGNORE INTO quarantined_records (request_id, time, reason, record) VALUES (?1, ?2, ?3, ?4)",
                )?
                    .execute(params![
                        record.request_id,
                        ms(Timestamp::now()),
                        reason,
                        to_json(record)?
                    ])?;
                }
            }
            JournalEntry::Release { id } => {
                tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                    .execute([id])?;
                released = Some(id.as_str());
            }
            JournalEntry::SetCounter { .. } => {}
        }
        tx.commit()?;
        self.reslog.settled(closed);
        if let Some(id) = released {
            self.reslog.release(id)?;
        }
        Ok(())
    }

    async fn quarantined(&self) -> Result<Vec<Quarantined>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT request_id, time, reason, record FROM quarantined_records ORDER BY time",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(request_id, t, reason, record)| {
                    Ok(Quarantined {
                        request_id,
                        quarantined_at: ts(t),
                        reason,
                        record: serde_json::from_str(&record)
                            .map_err(|e| StoreError::Corrupt(format!("quarantined record: {e}")))?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn quarantined_count(&self) -> Result<u64> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT COUNT(*) FROM quarantined_records", [], |r| {
                    r.get::<_, i64>(0)
                })?
                .max(0) as u64,
            )
        })
        .await
    }

    async fn retry_quarantined(&self) -> Result<(usize, usize)> {
        let all = self.quarantined().await?;
        self.write(move |c| {
            let (mut applied, mut failing) = (0, 0);
            for q in all {
                // Each in its own transaction: one that still fails keeps its place.
                let tx = c.transaction()?;
                match insert_record(&tx, &q.record) {
                    Ok(()) => {
                        tx.prepare_cached("DELETE FROM quarantined_records WHERE request_id = ?1")?
                            .execute([&q.request_id])?;
                        tx.commit()?;
                        applied += 1;
                    }
                    Err(e) => {
                        drop(tx);
                        c.prepare_cached(
                            "UPDATE quarantined_records SET reason = ?2 WHERE request_id = ?1",
                        )?
                        .execute(params![q.request_id, e.to_string()])?;
                        failing += 1;
                    }
                }
            }
            Ok((applied, failing))
        })
        .await
    }

    fn log_reservation(&self, r: &OpenReservation) -> Result<()> {
        self.reslog.reserve(r)
    }

    async fn load_ledger(&self) -> Result<(Vec<(String, Amount)>, Vec<OpenReservation>)> {
        let table = self.read(|c| {
            let mut st = c.prepare("SELECT key, spent_money, spent_tokens FROM ledger_counters")?;
            let counters = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .map(|(k, m, t)| Ok((k, Amount::new(parse_units(&m)?, t.max(0) as u64))))
                .collect::<Result<Vec<_>>>()?;
            let mut st = c.prepare(
                "SELECT id, charges, amount_money, amount_tokens, expires_at, template FROM reservations ORDER BY created_at",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let open = rows
                .into_iter()
                .map(|(id, charges, money, tokens, exp, template)| {
                    Ok(OpenReservation {
                        charges: serde_json::from_str::<Vec<String>>(&charges).map_err(|e| StoreError::Corrupt(format!("reservation {id}: {e}")))?,
                        amount: Amount::new(parse_units(&money)?, tokens.max(0) as u64),
                        expires_at: ts(exp),
                        payload: serde_json::from_str(&template).map_err(|e| StoreError::Corrupt(format!("reservation {id}: {e}")))?,
                        id,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((counters, open))
        })
        .await?;
        let (counters, mut open) = table;
        open.extend(
            self.recovered
                .iter()
                .filter(|r| self.reslog.is_open(&r.id))
                .cloned(),
        );
        Ok((counters, open))
    }
}
