//! Webhook signatures: `X-Tollgate-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "<t>.<body>">` — the receiver recomputes it with the
//! shared secret and checks `t` is recent (replays of old bodies fail).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The signature header's value for `body` sent at `t` (unix seconds).
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex(&mac(secret, t, body)))
}

/// The MAC over `"<t>.<body>"`, keyed with `secret`.
fn keyed(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut m =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Vec<u8> {
    keyed(secret, t, body).finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Checks a signature header against `body` (constant-time comparison),
/// with `t` no further than `tolerance_s` from `now`.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance_s: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now - t).abs() > tolerance_s {
        return false;
    }
    let Some(given) = unhex(&v1) else {
        return false;
    };
    keyed(secret, t, body).verify_slice(&given).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let sig = signature(b"whsec_test", 1_700_000_000, br#"{"id":"alt_1"}"#);
        assert!(sig.starts_with("t=1700000000,v1="));
        assert_eq!(sig.len(), "t=1700000000,v1=".len() + 64);
        assert!(verify(
            b"whsec_test",
            &sig,
            br#"{"id":"alt_1"}"#,
            1_700_000_100,
            300
        ));
        assert!(
            !verify(
                b"whsec_test",
                &sig,
                br#"{"id":"alt_2"}"#,
                1_700_000_100,
                300
            ),
            "body"
        );
        assert!(
            !verify(b"other", &sig, br#"{"id":"alt_1"}"#, 1_700_000_100, 300),
            "secret"
        );
        assert!(
            !verify(
                b"whsec_test",
                &sig,
                br#"{"id":"alt_1"}"#,
                1_700_000_400,
                300
            ),
            "stale"
        );
        assert!(!verify(b"whsec_test", "t=1,v1=zz", b"", 1, 300));
    }

    #[test]
    fn matches_an_independent_hmac() {
        // The well-known HMAC-SHA256("key", "The quick brown fox ...").
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(b"key").unwrap();
        m.update(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex(&m.finalize().into_bytes()),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        // And the signed string is exactly "<t>.<body>".
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(b"s").unwrap();
        m.update(b"42.{}");
        assert_eq!(
            signature(b"s", 42, b"{}"),
            format!("t=42,v1={}", hex(&m.finalize().into_bytes()))
        );
    }
}
