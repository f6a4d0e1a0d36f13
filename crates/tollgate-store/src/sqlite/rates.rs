//! Rate limits managed at run time.

use super::*;

#[async_trait]
impl RateLimitStore for SqliteStore {
    async fn list_rate_limits(&self) -> Result<Vec<StoredRateLimit>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, spec, created_at FROM rate_limits ORDER BY created_at, id",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, spec, created)| {
                    Ok(StoredRateLimit {
                        input: serde_json::from_str(&spec).map_err(|e| {
                            StoreError::Corrupt(format!("stored rate limit {id}: {e}"))
                        })?,
                        id,
                        created_at: ts(created),
                    })
                })
                .collect()
        })
        .await
    }

    async fn put_rate_limit(&self, l: &StoredRateLimit) -> Result<()> {
        let l = l.clone();
        let spec =
            serde_json::to_string(&l.input).map_err(|e| StoreError::Invalid(e.to_string()))?;
        specs::put(self, "rate_limits", l.id, spec, l.created_at).await
    }

    async fn delete_rate_limit(&self, id: &str) -> Result<bool> {
        specs::delete(self, "rate_limits", id).await
    }

    async fn rate_limits_version(&self) -> Result<(i64, i64)> {
        specs::version(self, "rate_limits").await
    }
}
