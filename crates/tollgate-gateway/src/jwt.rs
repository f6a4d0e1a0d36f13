//! JWT callers: tokens signed with HS256 (a shared secret), RS256 or
//! ES256 (a PEM public key, or a JWKS file with keys picked by `kid`).
//! Which claims name the user, tenant and role is configurable; `exp` is
//! required, `iss` and `aud` are checked when configured.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::ConfigError;
use crate::error::GatewayError;
use crate::identity::Caller;

fn default_user_claim() -> String {
    "sub".into()
}
fn default_tenant_claim() -> String {
    "tenant".into()
}
fn default_role_claim() -> String {
    "role".into()
}
fn default_leeway() -> u64 {
    30
}

/// `jwt:` in the config.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `HS256`, `RS256` and/or `ES256`.
    pub algorithms: Vec<String>,
    /// The HS256 shared secret (from the environment: `"${JWT_SECRET}"`).
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    /// A PEM public key for RS256 or ES256.
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// A JWKS document (RS256/ES256 keys chosen by the token's `kid`).
    #[serde(default)]
    pub jwks_file: Option<String>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    /// Claim naming the user; dots walk into objects (`ext.user`).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Token holders may use the identity headers (`X-Tollgate-User`, ...).
    #[serde(default)]
    pub trusted: bool,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

pub struct JwtVerifier {
    keys: Vec<Key>,
    validation: Validation,
    config: JwtConfig,
}

fn err(field: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::field(format!("jwt.{field}"), msg)
}

fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

fn claim_string(claims: &Map<String, Value>, path: &str) -> Option<String> {
    match claim(claims, path)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl JwtVerifier {
    /// Builds the verifier, reading key files; errors name the field.
    pub fn from_config(c: &JwtConfig) -> Result<JwtVerifier, Vec<ConfigError>> {
        let mut errs = Vec::new();
        let mut algorithms = Vec::new();
        for (i, a) in c.algorithms.iter().enumerate() {
            match a.as_str() {
                "HS256" => algorithms.push(Algorithm::HS256),
                "RS256" => algorithms.push(Algorithm::RS256),
                "ES256" => algorithms.push(Algorithm::ES256),
                other => errs.push(err(
                    &format!("algorithms[{i}]"),
                    format!("unsupported algorithm {other:?} (HS256, RS256 or ES256)"),
                )),
            }
        }
        if algorithms.is_empty() && errs.is_empty() {
            errs.push(err(
                "algorithms",
                "name at least one of HS256, RS256, ES256",
            ));
        }
        let mut keys = Vec::new();
        let asym: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|a| *a != Algorithm::HS256)
            .collect();
        if algorithms.contains(&Algorithm::HS256) {
            match c.secret.as_deref() {
                Some(s) if s.len() >= 32 => keys.push(Key {
                    kid: None,
                    key: DecodingKey::from_secret(s.as_bytes()),
                    algorithms: vec![Algorithm::HS256],
                }),
                Some(_) => errs.push(err("secret", "an HS256 secret must be at least 32 bytes")),
                None => errs.push(err("secret", "HS256 needs a secret")),
            }
        }
        if let Some(path) = &c.public_key_file {
            match std::fs::read(path) {
                Ok(pem) => {
                    for alg in &asym {
                        let k = match alg {
                            Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                            _ => DecodingKey::from_ec_pem(&pem),
                        };
                        if let Ok(key) = k {
                            keys.push(Key {
                                kid: None,
                                key,
                                algorithms: vec![*alg],
                            });
                        }
                    }
                    if !keys
                        .iter()
                        .any(|k| k.algorithms.iter().any(|a| asym.contains(a)))
                    {
                        errs.push(err(
                            "public_key_file",
                            format!("{path:?} is not a PEM public key for {:?}", c.algorithms),
                        ));
                    }
                }
                Err(e) => errs.push(err("public_key_file", format!("cannot read {path:?}: {e}"))),
            }
        }
        if let Some(path) = &c.jwks_file {
            match std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<JwkSet>(&t).map_err(|e| e.to_string()))
            {
                Ok(set) => {
                    for jwk in &set.keys {
                        if let Ok(key) = DecodingKey::from_jwk(jwk) {
                            keys.push(Key {
                                kid: jwk.common.key_id.clone(),
                                key,
                                algorithms: asym.clone(),
                            });
                        }
                    }
                }
                Err(e) => errs.push(err("jwks_file", format!("cannot read {path:?}: {e}"))),
            }
        }
        if !asym.is_empty() && c.public_key_file.is_none() && c.jwks_file.is_none() {
            errs.push(err(
                "public_key_file",
                "RS256/ES256 need public_key_file or jwks_file",
            ));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = c.leeway_secs;
        validation.validate_nbf = true;
        validation.validate_aud = c.audience.is_some();
        if let Some(aud) = &c.audience {
            validation.set_audience(&[aud]);
        }
        if let Some(iss) = &c.issuer {
            validation.set_issuer(&[iss]);
        }
        // A configured `iss` or `aud` must be present, not only right when
        // present: a token minted for another audience without the claim
        // would pass otherwise.
        let mut required = vec!["exp"];
        required.extend(c.issuer.as_ref().map(|_| "iss"));
        required.extend(c.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier {
            keys,
            validation,
            config: c.clone(),
        })
    }

    /// Whether `s` looks like a JWT (three base64url parts).
    pub fn looks_like_jwt(s: &str) -> bool {
        s.split('.').count() == 3 && s.starts_with("ey")
    }

    /// Verifies `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Caller, GatewayError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| GatewayError::InvalidToken(e.to_string()))?;
        let candidates = self.keys.iter().filter(|k| {
            k.algorithms.contains(&header.alg)
                && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
        });
        let mut last = String::from("no key matches the token's algorithm and kid");
        for k in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &self.validation) {
                Ok(data) => {
                    let c = &data.claims;
                    let user = claim_string(c, &self.config.user_claim);
                    if user.is_none() {
                        return Err(GatewayError::InvalidToken(format!(
                            "token has no {:?} claim",
                            self.config.user_claim
                        )));
                    }
                    return Ok(Caller {
                        key_id: None,
                        user,
                        tenant: claim_string(c, &self.config.tenant_claim),
                        role: claim_string(c, &self.config.role_claim),
                        session: None,
                        budget_id: None,
                        trusted: self.config.trusted,
                        models: Vec::new(),
                        paths: Vec::new(),
                    }
                    .qualified());
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(GatewayError::InvalidToken(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests-fixtures");

    fn config(algs: &[&str]) -> JwtConfig {
        JwtConfig {
            algorithms: algs.iter().map(|s| s.to_string()).collect(),
            secret: Some("0123456789abcdef0123456789abcdef".into()),
            public_key_file: None,
            jwks_file: None,
            issuer: Some("https://idp.example".into()),
            audience: Some("tollgate".into()),
            user_claim: "sub".into(),
            tenant_claim: "org.id".into(),
            role_claim: "role".into(),
            trusted: false,
            leeway_secs: 0,
        }
    }

    fn claims(exp_offset: i64) -> Value {
        let now = jiff::Timestamp::now().as_second();
        json!({"sub": "alice", "org": {"id": "acme"}, "role": "viewer", "iss": "https://idp.example", "aud": "tollgate", "exp": now + exp_offset})
    }

    #[test]
    fn hs256_tokens_name_user_tenant_and_role() {
        let v = JwtVerifier::from_config(&config(&["HS256"])).unwrap();
        let t = encode(
            &Header::new(Algorithm::HS256),
            &claims(60),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(JwtVerifier::looks_like_jwt(&t));
        let c = v.verify(&t).unwrap();
        assert_eq!(
            (c.user.as_deref(), c.tenant.as_deref(), c.role.as_deref()),
            (Some("acme/alice"), Some("acme"), Some("viewer"))
        );
        let expired = encode(
            &Header::new(Algorithm::HS256),
            &claims(-60),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(v.verify(&expired).is_err());
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &claims(60),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .unwrap();
        assert!(v.verify(&forged).is_err());
        let mut wrong_aud = claims(60);
        wrong_aud["aud"] = json!("someone-else");
        let t = encode(
            &Header::new(Algorithm::HS256),
            &wrong_aud,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(v.verify(&t).is_err());
    }

    #[test]
    fn regression_configured_iss_and_aud_are_required() {
        let v = JwtVerifier::from_config(&config(&["HS256"])).unwrap();
        for missing in ["iss", "aud"] {
            let mut c = claims(60);
            c.as_object_mut().unwrap().remove(missing);
            let t = encode(
                &Header::new(Algorithm::HS256),
                &c,
                &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
            )
            .unwrap();
            assert!(v.verify(&t).is_err(), "a token without {missing} passed");
        }
    }

    #[test]
    fn rs256_and_es256_from_pem_and_jwks() {
        let rsa_priv = std::fs::read(format!("{FIX}/rsa-private.pem")).unwrap();
        let ec_priv = std::fs::read(format!("{FIX}/ec-private.pem")).unwrap();
        let mut c = config(&["RS256"]);
        c.public_key_file = Some(format!("{FIX}/rsa-public.pem"));
        let v = JwtVerifier::from_config(&c).unwrap();
        let t = encode(
            &Header::new(Algorithm::RS256),
            &claims(60),
            &EncodingKey::from_rsa_pem(&rsa_priv).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&t).unwrap().user.as_deref(), Some("acme/alice"));
        // An HS256 token signed with the public key as secret: refused (alg confusion).
        let pem = std::fs::read(format!("{FIX}/rsa-public.pem")).unwrap();
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims(60),
            &EncodingKey::from_secret(&pem),
        )
        .unwrap();
        assert!(v.verify(&confused).is_err());

        let mut c = config(&["ES256"]);
        c.public_key_file = Some(format!("{FIX}/ec-public.pem"));
        let v = JwtVerifier::from_config(&c).unwrap();
        let t = encode(
            &Header::new(Algorithm::ES256),
            &claims(60),
            &EncodingKey::from_ec_pem(&ec_priv).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&t).unwrap().tenant.as_deref(), Some("acme"));

        let mut c = config(&["RS256"]);
        c.jwks_file = Some(format!("{FIX}/jwks.json"));
        let v = JwtVerifier::from_config(&c).unwrap();
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("test-rsa".into());
        let t = encode(
            &h,
            &claims(60),
            &EncodingKey::from_rsa_pem(&rsa_priv).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&t).unwrap().user.as_deref(), Some("acme/alice"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let mut c = config(&["HS256"]);
        c.secret = Some("short".into());
        let e = JwtVerifier::from_config(&c).err().unwrap();
        assert_eq!(e[0].field, "jwt.secret");
        let e = JwtVerifier::from_config(&config(&["PS512"])).err().unwrap();
        assert_eq!(e[0].field, "jwt.algorithms[0]");
        let e = JwtVerifier::from_config(&config(&["RS256"])).err().unwrap();
        assert_eq!(e[0].field, "jwt.public_key_file");
    }
}
