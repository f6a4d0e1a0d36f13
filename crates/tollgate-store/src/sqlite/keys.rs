//! Virtual keys.

use super::*;

/// A key's model globs. An unreadable list fails closed: an empty list
/// means every model, so a damaged one must mean none — the glob `""`,
/// which no model name (never empty) matches.
pub(super) fn key_models(id: &str, stored: &str) -> Vec<String> {
    match serde_json::from_str(stored) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(key = %id, error = %e, "a key's model list is unreadable; the key may use no model");
            vec![String::new()]
        }
    }
}

pub(super) const KEY_COLS: &str = "id, hash, prefix, name, user, tenant, role, models, expires_at, revoked, trusted, created_at, updated_at";

pub(super) fn key_from_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let hash: Vec<u8> = r.get(1)?;
    let models: String = r.get(7)?;
    let id: String = r.get(0)?;
    Ok(KeyRecord {
        models: key_models(&id, &models),
        id,
        hash: hash.try_into().unwrap_or([0; 32]),
        prefix: r.get(2)?,
        name: r.get(3)?,
        user: r.get(4)?,
        tenant: r.get(5)?,
        role: r.get(6)?,
        expires_at: r.get::<_, Option<i64>>(8)?.map(ts),
        revoked: r.get(9)?,
        trusted: r.get(10)?,
        created_at: ts(r.get(11)?),
        updated_at: ts(r.get(12)?),
    })
}

const ADMIN_COLS: &str = "id, hash, prefix, name, tenant, created_at, revoked_at";

fn admin_key_from_row(r: &Row<'_>) -> rusqlite::Result<crate::StoredAdminKey> {
    let hash: Vec<u8> = r.get(1)?;
    Ok(crate::StoredAdminKey {
        id: r.get(0)?,
        // A damaged hash matches no key.
        hash: hash.try_into().unwrap_or([0; 32]),
        prefix: r.get(2)?,
        name: r.get(3)?,
        tenant: r.get(4)?,
        created_at: ts(r.get(5)?),
        revoked_at: r.get::<_, Option<i64>>(6)?.map(ts),
    })
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_admin_key(&self, key: &crate::StoredAdminKey) -> Result<()> {
        let k = key.clone();
        self.write(move |c| {
            let n = c.execute(
                &format!("INSERT OR IGNORE INTO admin_keys ({ADMIN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![k.id, k.hash.as_slice(), k.prefix, k.name, k.tenant, ms(k.created_at), k.revoked_at.map(ms)],
            )?;
            if n == 0 {
                return Err(StoreError::Duplicate(k.id));
            }
            Ok(())
        })
        .await
    }

    async fn admin_keys(&self) -> Result<Vec<crate::StoredAdminKey>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {ADMIN_COLS} FROM admin_keys ORDER BY created_at, id"
            ))?;
            let rows = st
                .query_map([], admin_key_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn admin_key_by_hash(&self, hash: [u8; 32]) -> Result<Option<crate::StoredAdminKey>> {
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {ADMIN_COLS} FROM admin_keys WHERE hash = ?1"),
                [hash.as_slice()],
                admin_key_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn revoke_admin_key(&self, id: &str, at: Timestamp) -> Result<bool> {
        let id = id.to_string();
        self.write(move |c| {
            Ok(c.execute(
                "UPDATE admin_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, ms(at)],
            )? > 0)
        })
        .await
    }

    async fn insert_key(&self, key: &KeyRecord) -> Result<()> {
        let k = key.clone();
        self.write(move |c| {
            let models = serde_json::to_string(&k.models).unwrap_or_else(|_| "[]".into());
            let n = c.execute(
                &format!("INSERT OR IGNORE INTO keys ({KEY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
                params![
                    k.id, k.hash.as_slice(), k.prefix, k.name, k.user, k.tenant, k.role, models,
                    k.expires_at.map(ms), k.revoked, k.trusted, ms(k.created_at), ms(k.updated_at)
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Duplicate(k.id));
            }
            Ok(())
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {KEY_COLS} FROM keys ORDER BY created_at, id"
            ))?;
            let rows = st
                .query_map([], key_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn keys_page(&self, after: Option<String>, limit: usize) -> Result<Vec<KeyRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {KEY_COLS} FROM keys WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = st
                .query_map(params![after, limit as i64], key_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn key_by_hash(&self, hash: [u8; 32]) -> Result<Option<KeyRecord>> {
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {KEY_COLS} FROM keys WHERE hash = ?1"),
                [hash.as_slice()],
                key_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>> {
        let id = id.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {KEY_COLS} FROM keys WHERE id = ?1"),
                [id],
                key_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn keys_updated_since(&self, since: Timestamp) -> Result<Vec<KeyRecord>> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {KEY_COLS} FROM keys WHERE updated_at >= ?1"
            ))?;
            let rows = st
                .query_map([ms(since)], key_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn revoke_key(&self, id: &str, at: Timestamp) -> Result<bool> {
        let id = id.to_string();
        self.write(move |c| {
            let n = c.execute(
                "UPDATE keys SET revoked = 1, updated_at = ?2 WHERE id = ?1",
                params![id, ms(at)],
            )?;
            Ok(n > 0)
        })
        .await
    }
}
