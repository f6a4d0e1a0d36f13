//! Budgets managed at run time, and first-seen times.

use super::*;

const BADGE_COLS: &str = "id, hash, budget_id, subject, created_at, revoked_at";

fn badge_from_row(r: &Row<'_>) -> rusqlite::Result<crate::BadgeToken> {
    let hash: Vec<u8> = r.get(1)?;
    Ok(crate::BadgeToken {
        id: r.get(0)?,
        // A damaged hash matches no token.
        hash: hash.try_into().unwrap_or([0; 32]),
        budget_id: r.get(2)?,
        subject: r.get(3)?,
        created_at: ts(r.get(4)?),
        revoked_at: r.get::<_, Option<i64>>(5)?.map(ts),
    })
}

#[async_trait]
impl BudgetStore for SqliteStore {
    async fn insert_badge_token(&self, t: &crate::BadgeToken) -> Result<()> {
        let t = t.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO badge_tokens (id, hash, budget_id, subject, created_at, revoked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    t.id,
                    t.hash.as_slice(),
                    t.budget_id,
                    t.subject,
                    ms(t.created_at),
                    t.revoked_at.map(ms)
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn badge_token_by_hash(&self, hash: [u8; 32]) -> Result<Option<crate::BadgeToken>> {
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {BADGE_COLS} FROM badge_tokens WHERE hash = ?1"),
                [hash.as_slice()],
                badge_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn badge_tokens(&self, budget_id: &str) -> Result<Vec<crate::BadgeToken>> {
        let id = budget_id.to_string();
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {BADGE_COLS} FROM badge_tokens WHERE budget_id = ?1 ORDER BY created_at, id"
            ))?;
            let rows = st
                .query_map([id], badge_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn revoke_badge_token(&self, budget_id: &str, id: &str, at: Timestamp) -> Result<bool> {
        let (b, id) = (budget_id.to_string(), id.to_string());
        self.write(move |c| {
            Ok(c.execute(
                "UPDATE badge_tokens SET revoked_at = COALESCE(revoked_at, ?3) WHERE budget_id = ?1 AND id = ?2",
                params![b, id, ms(at)],
            )? > 0)
        })
        .await
    }

    async fn list_budgets(&self) -> Result<Vec<StoredBudget>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.budgets_page(after, 10_000).await?;
            let Some(last) = page.last() else {
                return Ok(all);
            };
            after = Some((last.created_at, last.id.clone()));
            all.extend(page);
        }
    }

    async fn budgets_page(
        &self,
        after: Option<(Timestamp, String)>,
        limit: usize,
    ) -> Result<Vec<StoredBudget>> {
        let (after_ms, after_id) = after.map_or((None, None), |(t, id)| (Some(ms(t)), Some(id)));
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, spec, created_at FROM budgets \
                 WHERE ?1 IS NULL OR (created_at, id) > (?1, ?2) ORDER BY created_at, id LIMIT ?3",
            )?;
            let rows = st
                .query_map(params![after_ms, after_id, limit as i64], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, spec, created)| {
                    Ok(StoredBudget {
                        input: serde_json::from_str(&spec)
                            .map_err(|e| StoreError::Corrupt(format!("stored budget {id}: {e}")))?,
                        id,
                        created_at: ts(created),
                    })
                })
                .collect()
        })
        .await
    }

    async fn budget(&self, id: &str) -> Result<Option<StoredBudget>> {
        let id = id.to_string();
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT spec, created_at FROM budgets WHERE id = ?1",
                    [&id],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?;
            row.map(|(spec, created)| {
                Ok(StoredBudget {
                    input: serde_json::from_str(&spec)
                        .map_err(|e| StoreError::Corrupt(format!("stored budget {id}: {e}")))?,
                    id,
                    created_at: ts(created),
                })
            })
            .transpose()
        })
        .await
    }

    async fn put_budget(&self, b: &StoredBudget) -> Result<()> {
        let b = b.clone();
        let spec =
            serde_json::to_string(&b.input).map_err(|e| StoreError::Invalid(e.to_string()))?;
        specs::put(self, "budgets", b.id, spec, b.created_at).await
    }

    async fn delete_budget(&self, id: &str) -> Result<bool> {
        specs::delete(self, "budgets", id).await
    }

    async fn budgets_version(&self) -> Result<(i64, i64)> {
        specs::version(self, "budgets").await
    }

    async fn budget_first_seen(&self, id: &str, now: Timestamp) -> Result<(Timestamp, bool)> {
        let (id, now) = (id.to_string(), ms(now));
        self.write(move |c| {
            let inserted = c.execute(
                "INSERT OR IGNORE INTO budget_first_seen (id, at) VALUES (?1, ?2)",
                params![id, now],
            )? > 0;
            let at: i64 = c.query_row(
                "SELECT at FROM budget_first_seen WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            Ok((ts(at), inserted))
        })
        .await
    }
}
