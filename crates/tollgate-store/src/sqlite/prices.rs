//! Prices set at run time.

use super::*;

#[async_trait]
impl PriceStore for SqliteStore {
    async fn put_price(&self, model: &str, price: &StoredPrice) -> Result<()> {
        let model = model.to_string();
        let json =
            serde_json::to_string(&price.price).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let provider = price.provider.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO prices (model, price, updated_at, provider) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(model) DO UPDATE SET price = excluded.price, \
                 updated_at = excluded.updated_at, provider = excluded.provider",
                params![model, json, ms(Timestamp::now()), provider],
            )?;
            Ok(())
        })
        .await
    }

    async fn prices(&self) -> Result<Vec<(String, StoredPrice)>> {
        self.read(|c| {
            let mut st = c.prepare("SELECT model, price, provider FROM prices ORDER BY model")?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(m, p, provider)| {
                    serde_json::from_str(&p)
                        .map(|price| (m.clone(), StoredPrice { price, provider }))
                        .map_err(|e| StoreError::Corrupt(format!("stored price of {m:?}: {e}")))
                })
                .collect()
        })
        .await
    }

    async fn prices_version(&self) -> Result<(i64, i64)> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM prices",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
    }
}
