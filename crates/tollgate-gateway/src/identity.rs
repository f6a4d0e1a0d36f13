//! Who is calling: virtual keys (hashed, in memory, compared in constant
//! time), admin keys, and the [`Caller`] every later phase reads.
//!
//! Keys live in the store; the gateway keeps a hash → key map in memory so
//! a request costs no database round trip. A key unknown to the map is
//! looked up once in the store (it may have been created by the CLI), and a
//! background refresh picks up revocations made outside this process.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::HeaderMap;
use jiff::Timestamp;
use rand::RngExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_core::KeyRecord;
use tollgate_store::Store;

use crate::error::GatewayError;

pub use tollgate_core::Caller;

pub use tollgate_providers::headers::{native_key_header, presented_key};

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub(crate) fn random_string(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A new virtual key: `tg-` and 40 base-62 characters (~238 bits).
pub fn generate_key() -> String {
    format!("tg-{}", random_string(40))
}

pub fn generate_key_id() -> String {
    format!("key_{}", random_string(16))
}

/// Creates an admin key scoped to `tenant`; returns what is stored and the
/// only copy of the key (`tga-` and 40 base-62 characters).
pub async fn create_admin_key(
    store: &dyn Store,
    tenant: String,
    name: Option<String>,
) -> Result<(tollgate_store::StoredAdminKey, String), tollgate_store::StoreError> {
    let key = format!(
        "{}{}",
        crate::admin::TENANT_ADMIN_KEY_PREFIX,
        random_string(40)
    );
    let rec = tollgate_store::StoredAdminKey {
        id: format!("adm_{}", random_string(16)),
        hash: hash_key(&key),
        prefix: key[..8].to_string(),
        name,
        tenant,
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    store.insert_admin_key(&rec).await?;
    Ok((rec, key))
}

/// What a new key should carry.
#[derive(Clone, Debug, Default)]
pub struct NewKey {
    pub name: Option<String>,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub role: Option<String>,
    pub trusted: bool,
    pub models: Vec<String>,
    pub expires_at: Option<Timestamp>,
}

/// Creates a key in the store; returns the record and the only copy of the key.
pub async fn create_key(
    store: &dyn Store,
    new: NewKey,
) -> Result<(KeyRecord, String), tollgate_store::StoreError> {
    let key = generate_key();
    let now = Timestamp::now();
    let rec = KeyRecord {
        id: generate_key_id(),
        hash: hash_key(&key),
        prefix: key[..7].to_string(),
        name: new.name,
        user: new.user,
        tenant: new.tenant,
        role: new.role,
        models: new.models,
        expires_at: new.expires_at,
        revoked: false,
        trusted: new.trusted,
        created_at: now,
        updated_at: now,
    };
    store.insert_key(&rec).await?;
    Ok((rec, key))
}

/// What a request needs of a key, compact: the map holds every key, so
/// each byte here is multiplied by the number of keys (100k keys ≈ 25 MB).
struct CachedKey {
    id: Box<str>,
    user: Option<Box<str>>,
    tenant: Option<Box<str>>,
    role: Option<Box<str>>,
    models: Box<[Box<str>]>,
    expires_at: Option<Timestamp>,
    revoked: bool,
    trusted: bool,
}

impl CachedKey {
    fn new(k: KeyRecord) -> CachedKey {
        let small = |s: Option<String>| s.map(String::into_boxed_str);
        CachedKey {
            id: k.id.into_boxed_str(),
            user: small(k.user),
            tenant: small(k.tenant),
            role: small(k.role),
            models: k.models.into_iter().map(String::into_boxed_str).collect(),
            expires_at: k.expires_at,
            revoked: k.revoked,
            trusted: k.trusted,
        }
    }

    fn unusable_reason(&self, now: Timestamp) -> Option<&'static str> {
        if self.revoked {
            return Some("api key has been revoked");
        }
        match self.expires_at {
            Some(t) if t <= now => Some("api key has expired"),
            _ => None,
        }
    }

    fn caller(&self) -> Caller {
        let owned = |s: &Option<Box<str>>| s.as_deref().map(str::to_string);
        Caller {
            key_id: Some(self.id.to_string()),
            user: owned(&self.user),
            tenant: owned(&self.tenant),
            role: owned(&self.role),
            session: None,
            budget_id: None,
            trusted: self.trusted,
            models: self.models.iter().map(|m| m.to_string()).collect(),
            paths: Vec::new(),
        }
        .qualified()
    }
}

/// The in-memory key map. Every key is in it: a presented key it does not
/// know costs no database read, only — at most once a second, whoever
/// asks — the same bounded refresh (keys changed since the last one) that
/// runs every two seconds anyway, so a key the CLI just created works at
/// once and a flood of random keys costs nothing.
pub struct KeyCache {
    by_hash: RwLock<HashMap<[u8; 32], CachedKey>>,
    store: Arc<dyn Store>,
    /// Keys changed at or after this were not read yet.
    watermark: std::sync::Mutex<Timestamp>,
    /// When a miss last triggered a refresh (single flight).
    last_miss_refresh: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// Refreshes triggered by misses (tests and stats).
    pub miss_refreshes: std::sync::atomic::AtomicU64,
}

/// Misses refresh the map at most this often.
const MISS_REFRESH_EVERY: Duration = Duration::from_secs(1);

impl KeyCache {
    pub async fn load(store: Arc<dyn Store>) -> Result<Arc<KeyCache>, tollgate_store::StoreError> {
        let started = Timestamp::now();
        let mut map = HashMap::new();
        let mut after = None;
        loop {
            let page = store.keys_page(after, 2_000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            map.extend(page.into_iter().map(|k| (k.hash, CachedKey::new(k))));
        }
        map.shrink_to_fit();
        Ok(Arc::new(KeyCache {
            by_hash: RwLock::new(map),
            store,
            watermark: std::sync::Mutex::new(started),
            last_miss_refresh: tokio::sync::Mutex::new(None),
            miss_refreshes: Default::default(),
        }))
    }

    pub fn upsert(&self, key: KeyRecord) {
        let mut m = self.by_hash.write().unwrap_or_else(|e| e.into_inner());
        m.insert(key.hash, CachedKey::new(key));
    }

    /// The caller a key stands for, or why it cannot be used; `None` if the
    /// map does not know it.
    fn lookup(&self, hash: &[u8; 32]) -> Option<Result<Caller, GatewayError>> {
        let m = self.by_hash.read().unwrap_or_else(|e| e.into_inner());
        let (stored, key) = m.get_key_value(hash)?;
        // The map is keyed by the hash, so equality is already decided; the
        // constant-time comparison keeps the final check free of early exits.
        if !bool::from(stored.ct_eq(hash)) {
            return Some(Err(GatewayError::InvalidKey));
        }
        Some(match key.unusable_reason(Timestamp::now()) {
            Some(why) => Err(GatewayError::KeyUnusable(why)),
            None => Ok(key.caller()),
        })
    }

    /// Resolves a presented key to the caller it stands for, or why not.
    pub async fn resolve(&self, presented: &str) -> Result<Caller, GatewayError> {
        let hash = hash_key(presented);
        if let Some(r) = self.lookup(&hash) {
            return r;
        }
        {
            // Concurrent misses wait for one refresh, and only one a second runs.
            let mut last = self.last_miss_refresh.lock().await;
            if last.is_none_or(|t| t.elapsed() >= MISS_REFRESH_EVERY) {
                *last = Some(std::time::Instant::now());
                self.miss_refreshes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "key refresh failed");
                }
            }
        }
        self.lookup(&hash).unwrap_or(Err(GatewayError::InvalidKey))
    }

    /// Reads the keys changed since the last refresh (overlapping by a
    /// second so a write racing the query is not missed).
    async fn refresh(&self) -> Result<(), tollgate_store::StoreError> {
        let from = *self.watermark.lock().unwrap_or_else(|e| e.into_inner())
            - jiff::SignedDuration::from_secs(1);
        let now = Timestamp::now();
        for k in self.store.keys_updated_since(from).await? {
            self.upsert(k);
        }
        let mut w = self.watermark.lock().unwrap_or_else(|e| e.into_inner());
        *w = (*w).max(now);
        Ok(())
    }

    /// Keeps the map in step with the store (keys created or revoked by the
    /// CLI or another instance) until the task is aborted.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = cache.refresh().await {
                    tracing::warn!(error = %e, "key refresh failed");
                }
            }
        })
    }
}

/// Builds the caller from a resolved key.
pub fn caller_from_key(key: &KeyRecord) -> Caller {
    Caller {
        key_id: Some(key.id.clone()),
        user: key.user.clone(),
        tenant: key.tenant.clone(),
        role: key.role.clone(),
        session: None,
        budget_id: None,
        trusted: key.trusted,
        models: key.models.clone(),
        paths: Vec::new(),
    }
    .qualified()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// What a request says about who it is for, applied to its caller.
pub trait WithRequest: Sized {
    fn with_request(
        self,
        headers: &HeaderMap,
        end_user: Option<&str>,
        trust_all: bool,
    ) -> Result<Caller, GatewayError>;
}

impl WithRequest for Caller {
    /// Applies what the request says about who it is for.
    ///
    /// Trusted keys (or every key, with `trust_all`) may name the end user
    /// (`X-Tollgate-User`, else OpenAI's `user` / Anthropic's
    /// `metadata.user_id`), the tenant, the session and a named budget.
    /// Untrusted keys cannot change who they are; they may still name a
    /// session, which only ever adds a limit, and which is counted under
    /// their key (JWT callers: their user) so it cannot share another
    /// caller's session budget.
    fn with_request(
        mut self,
        headers: &HeaderMap,
        end_user: Option<&str>,
        trust_all: bool,
    ) -> Result<Caller, GatewayError> {
        let session = header(headers, "x-session-id");
        if self.trusted || trust_all {
            // A key that belongs to a tenant acts only within it: it cannot
            // name another tenant, and the users, sessions and named budgets
            // it names are that tenant's (counted as `tenant/name`), so two
            // tenants' "alice" never share a budget. A key without a tenant
            // (a platform key) may name any.
            let home = self.tenant.clone();
            if let Some(t) = header(headers, "x-tollgate-tenant") {
                match &home {
                    Some(h) if *h != t => {
                        return Err(GatewayError::IdentityNotAllowed(format!(
                            "this key belongs to tenant {h:?} and cannot act for tenant {t:?}"
                        )));
                    }
                    _ => self.tenant = Some(t),
                }
            }
            let own = |s: String| match &home {
                Some(h) => format!("{h}/{s}"),
                None => s,
            };
            if let Some(u) =
                header(headers, "x-tollgate-user").or_else(|| end_user.map(str::to_string))
            {
                // The user of the tenant acted for (a platform key may
                // name any tenant, and its users are that tenant's).
                self.user = Some(tollgate_core::in_tenant(self.tenant.as_deref(), u));
            }
            self.session = session.map(own);
            self.budget_id = header(headers, "x-budget-id").map(own);
        } else {
            // Sessions of untrusted callers are their own: under their key,
            // or for JWT callers under their user.
            self.session = session.map(|s| match (&self.key_id, &self.user) {
                (Some(k), _) => format!("{k}/{s}"),
                (None, Some(u)) => format!("{u}/{s}"),
                (None, None) => s,
            });
        }
        Ok(self)
    }
}

/// Admin keys, held only as hashes and compared in constant time.
pub struct AdminKeys {
    hashes: Vec<[u8; 32]>,
}

impl AdminKeys {
    pub fn new(keys: &[String]) -> AdminKeys {
        AdminKeys {
            hashes: keys.iter().map(|k| hash_key(k)).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn verify(&self, presented: &str) -> bool {
        let h = hash_key(presented);
        // Check every key without early exit.
        self.hashes
            .iter()
            .fold(subtle::Choice::from(0), |acc, k| acc | k.ct_eq(&h))
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_prefix_and_entropy() {
        let k = generate_key();
        assert!(k.starts_with("tg-"));
        assert_eq!(k.len(), 43);
        assert_ne!(k, generate_key());
    }

    #[test]
    fn admin_keys_verify() {
        let a = AdminKeys::new(&["admin-key-0123456789".into(), "second-admin-key-xyz".into()]);
        assert!(a.verify("second-admin-key-xyz"));
        assert!(!a.verify("admin-key-012345678"));
    }

    #[test]
    fn model_allow_list_uses_globs() {
        let c = Caller {
            models: vec!["gpt-4o*".into()],
            paths: Vec::new(),
            ..Caller::default()
        };
        assert!(c.may_use("gpt-4o-mini"));
        assert!(!c.may_use("claude-sonnet-4-5"));
        assert!(Caller::default().may_use("anything"));
    }
}
