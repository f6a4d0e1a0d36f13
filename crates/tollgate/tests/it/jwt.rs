//! JWT callers end to end: identity from claims, role budgets, refusals.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::harness::*;

const SECRET: &str = "jwt-test-secret-0123456789abcdef0123";

fn token(sub: &str, tenant: &str, role: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims =
        json!({"sub": sub, "tenant": tenant, "role": role, "iss": "idp", "exp": now + exp_offset});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// HS256 tokens from issuer `idp`; role `viewer` has a 120-token daily budget.
fn viewer_gateway(m: &Mock) -> Gateway {
    Gateway::start_with(
        m,
        &format!(
            r#"jwt:
  algorithms: [HS256]
  secret: "{SECRET}"
  issuer: idp
budgets:
  roles:
    viewer: {{ limit_tokens: 120, period: daily }}
"#
        ),
    )
}

#[test]
fn jwt_callers_are_identified_and_budgeted_by_role() {
    let m = Mock::start(&[]);
    let g = viewer_gateway(&m);
    let chat = |bearer: &str| {
        client()
            .post(format!("{}/v1/chat/completions", g.url))
            .bearer_auth(bearer)
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .unwrap()
    };
    let viewer = token("vera", "acme", "viewer", 600);
    let r = chat(&viewer);
    assert_eq!(r.status(), 200);
    let rec = g.record(&request_id(&r));
    assert_eq!(
        (
            rec["user"].as_str(),
            rec["tenant"].as_str(),
            rec["key_id"].as_str()
        ),
        (Some("acme/vera"), Some("acme"), None)
    );
    assert_eq!(rec["budgets"], json!(["role:viewer"]));
    let statuses: Vec<u16> = (0..6).map(|_| chat(&viewer).status().as_u16()).collect();
    assert!(
        statuses.contains(&429),
        "the role budget holds: {statuses:?}"
    );
    // Another role: no budget applies.
    let admin = token("adam", "acme", "admin", 600);
    assert_eq!(chat(&admin).status(), 200);
    // Expired, forged and garbage tokens: native 401.
    for bad in [
        token("vera", "acme", "viewer", -600),
        format!("{}x", &viewer[..viewer.len() - 1]),
        "eyJ.not.valid".to_string(),
    ] {
        let r = chat(&bad);
        assert_eq!(r.status(), 401, "{bad}");
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["type"], "authentication_error");
    }
}

#[test]
fn regression_jwt_sessions_are_their_users_own() {
    // JWT callers' X-Session-Id was not namespaced: one user could drain
    // another's session budget by naming the same session.
    let m = Mock::start(&[]);
    let g = Gateway::start_with(
        &m,
        &format!(
            r#"jwt:
  algorithms: [HS256]
  secret: "{SECRET}"
  issuer: idp
budgets:
  defaults:
    session: {{ limit_tokens: 60, period: lifetime }}
"#
        ),
    );
    let chat = |bearer: &str| {
        client()
            .post(format!("{}/v1/chat/completions", g.url))
            .bearer_auth(bearer)
            .header("x-session-id", "shared-conv")
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .unwrap()
    };
    let mallory = token("mallory", "acme", "member", 600);
    let statuses: Vec<u16> = (0..5).map(|_| chat(&mallory).status().as_u16()).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let victim = token("victor", "acme", "member", 600);
    let r = chat(&victim);
    assert_eq!(
        r.status(),
        200,
        "another user's session of the same name is untouched"
    );
    let rec = g.record(&request_id(&r));
    assert_eq!(rec["session"], "acme/victor/shared-conv");
}

#[test]
fn regression_usage_accepts_a_jwt_caller_the_proxy_accepts() {
    let m = Mock::start(&[]);
    let g = viewer_gateway(&m);
    let viewer = token("vera", "acme", "viewer", 600);
    let r = client()
        .get(format!("{}/usage", g.url))
        .bearer_auth(&viewer)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(
        (v["user"].as_str(), v["tenant"].as_str()),
        (Some("acme/vera"), Some("acme"))
    );
    assert_eq!(v["budgets"][0]["id"], "role:viewer", "{v}");
    let r = client()
        .get(format!("{}/usage", g.url))
        .bearer_auth(token("vera", "acme", "viewer", -600))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}
