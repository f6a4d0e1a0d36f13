//! Virtual keys: what a Tollgate key says about its caller.
//!
//! The key itself is never stored; only its SHA-256 hash (the key carries
//! 192 random bits, so a fast hash is as strong as a slow one here).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A virtual key as stored. `hash` is the SHA-256 of the full key string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    #[serde(skip)]
    pub hash: [u8; 32],
    /// The first characters of the key, to recognise it in lists (`tg-AbC1…`).
    pub prefix: String,
    pub name: Option<String>,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub role: Option<String>,
    /// Models this key may use (globs); empty means all.
    pub models: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
    /// May name the end user, tenant, session and budget per request.
    pub trusted: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl KeyRecord {
    /// Why this key cannot be used at `now`, if it cannot.
    pub fn unusable_reason(&self, now: Timestamp) -> Option<&'static str> {
        if self.revoked {
            return Some("api key has been revoked");
        }
        match self.expires_at {
            Some(t) if t <= now => Some("api key has expired"),
            _ => None,
        }
    }
}
