//! Client authentication and grants as the token server sees them, with
//! private_key_jwt assertions verified by an independent JWT implementation
//! (`jsonwebtoken`), and key and secret rotation without a restart.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::{Running, LISTEN};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use jwt_simple::prelude::*;
use serde_json::Value;
use testkit::{write, Behave, FakeAuth};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A key pair in PEM: (private, public).
fn rsa_key() -> (String, String) {
    let pair = RS256KeyPair::generate(2048).expect("rsa keygen");
    (
        pair.to_pem().expect("private pem"),
        pair.public_key().to_pem().expect("public pem"),
    )
}

fn ec_key() -> (String, String) {
    let pair = ES256KeyPair::generate();
    (
        pair.to_pem().expect("private pem"),
        pair.public_key().to_pem().expect("public pem"),
    )
}

/// The default `refresh.clock_skew`, in seconds.
const SKEW: u64 = 30;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Verifies `jwt` with `jsonwebtoken` against the public key and the claims
/// RFC 7523 requires; returns (kid, claims).
fn verify(
    jwt: &str,
    alg: Algorithm,
    public_pem: &str,
    iss: &str,
    sub: &str,
    aud: &str,
    max_lifetime: u64,
) -> (Option<String>, Value) {
    let header = jsonwebtoken::decode_header(jwt).expect("jwt header");
    assert_eq!(header.alg, alg, "alg header");
    let key = match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(public_pem.as_bytes()),
        Algorithm::ES256 => DecodingKey::from_ec_pem(public_pem.as_bytes()),
        other => panic!("unexpected alg {other:?}"),
    }
    .expect("public key");
    let mut v = Validation::new(alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[iss]);
    v.sub = Some(sub.to_owned());
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    v.leeway = 0;
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &v).expect("assertion verifies");
    let claims = data.claims;
    let exp = claims["exp"].as_u64().expect("exp");
    let now = now_secs();
    assert!(exp > now, "exp {exp} is in the past (now {now})");
    assert!(
        exp <= now + max_lifetime + 1,
        "exp {exp} is more than {max_lifetime}s ahead of now {now}"
    );
    // Clock skew (refresh.clock_skew, 30 s by default): an auth server whose
    // clock is up to 30 s behind ours accepts the assertion (iat and nbf
    // are not in its future), and one up to 30 s ahead too (exp is not in
    // its past).
    let iat = claims["iat"].as_u64().expect("iat");
    let nbf = claims["nbf"].as_u64().expect("nbf");
    let behind = now - SKEW;
    assert!(
        iat <= behind && nbf <= behind,
        "iat {iat} / nbf {nbf} after {behind}"
    );
    assert!(
        iat + SKEW + 2 >= now,
        "iat {iat} backdated by more than the skew"
    );
    assert!(
        exp > now + SKEW,
        "exp {exp} is not past a clock {SKEW}s ahead"
    );
    assert!(
        exp - iat <= max_lifetime + SKEW,
        "exp - iat > {max_lifetime} + {SKEW}"
    );
    assert!(
        claims["jti"].as_str().is_some_and(|j| j.len() >= 16),
        "jti missing or short: {claims}"
    );
    (header.kid, claims)
}

/// client_secret_basic sends form-urlencoded id and secret in HTTP Basic (RFC
/// 6749 §2.3.1), not in the form; scope, audience, resource, extra_params and
/// extra_headers arrive as configured.
#[tokio::test]
async fn client_secret_basic_sends_basic_auth_and_extras() {
    let fake = FakeAuth::start(Behave::issue(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cr:et/+&é";
    let secret_file = write(dir.path(), "secret", &format!("{secret}\n"));
    let sc = Running::start(&format!(
        "{LISTEN}tenants:
  acme:
    token_url: {url}
    client_id: 'my client:1'
    auth: {{method: client_secret_basic, secret: {{file: {secret_file}}}}}
    scope: 'read write'
    audience: https://api.example
    resource: https://api.example/v2
    extra_params: {{tenant_hint: acme-eu}}
    extra_headers: {{X-Api-Key: k-123}}
",
        url = fake.token_url()
    ))
    .await;
    let entry = sc.wait_token("acme").await;
    let req = &fake.seen()[0];
    let auth = req.header("authorization").expect("authorization header");
    let b64 = auth.strip_prefix("Basic ").expect("Basic scheme");
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap();
    let (user, pass) = decoded.split_once(':').expect("user:pass");
    // Both parts are form-urlencoded before Basic encoding.
    assert_eq!(user, "my+client%3A1");
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned()
    };
    assert_eq!(unescape(user), "my client:1");
    assert_eq!(unescape(pass), secret);
    assert_eq!(req.param("grant_type"), Some("client_credentials"));
    assert_eq!(
        req.param("client_secret"),
        None,
        "secret must not be in the form"
    );
    assert_eq!(req.param("scope"), Some("read write"));
    assert_eq!(req.param("audience"), Some("https://api.example"));
    assert_eq!(req.param("resource"), Some("https://api.example/v2"));
    assert_eq!(req.param("tenant_hint"), Some("acme-eu"));
    assert_eq!(req.header("x-api-key"), Some("k-123"));
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        entry["header"],
        format!("Bearer {}", fake.tokens()[0]).as_str()
    );
    sc.stop().await;
}

/// client_secret_post sends client_id and client_secret in the form and no
/// Authorization header.
#[tokio::test]
async fn client_secret_post_sends_form_credentials() {
    let fake = FakeAuth::start(Behave::issue(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(dir.path(), "secret", "post-secret-1");
    let sc = Running::start(&format!(
        "{LISTEN}tenants:
  beta:
    token_url: {url}
    client_id: beta-client
    auth: {{method: client_secret_post, secret: {{file: {secret_file}}}}}
    scope: api
",
        url = fake.token_url()
    ))
    .await;
    sc.wait_token("beta").await;
    let req = &fake.seen()[0];
    assert_eq!(req.header("authorization"), None);
    assert_eq!(req.param("grant_type"), Some("client_credentials"));
    assert_eq!(req.param("client_id"), Some("beta-client"));
    assert_eq!(req.param("client_secret"), Some("post-secret-1"));
    assert_eq!(req.param("scope"), Some("api"));
    sc.stop().await;
}

/// Runs private_key_jwt with one key and checks two fetches' assertions.
async fn private_key_jwt(alg_name: &str, alg: Algorithm, (private, public): (String, String)) {
    let fake = FakeAuth::start(Behave::issue(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = write(dir.path(), "key.pem", &private);
    let sc = Running::start(&format!(
        "{LISTEN}tenants:
  gamma:
    token_url: {url}
    client_id: gamma-client
    auth:
      method: private_key_jwt
      key: {{alg: {alg_name}, kid: key-2026, file: {key_file}, lifetime: 60s}}
",
        url = fake.token_url()
    ))
    .await;
    let first = sc.wait_token("gamma").await;
    assert_eq!(
        sc.reject("gamma", first["version"].as_u64().unwrap()).await,
        202
    );
    sc.wait_new_token("gamma", first["version"].as_u64().unwrap())
        .await;
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    let mut jtis = HashSet::new();
    for req in &seen {
        assert_eq!(req.header("authorization"), None);
        assert_eq!(req.param("grant_type"), Some("client_credentials"));
        assert_eq!(req.param("client_id"), Some("gamma-client"));
        assert_eq!(req.param("client_assertion_type"), Some(ASSERTION_TYPE));
        let jwt = req.param("client_assertion").expect("client_assertion");
        let (kid, claims) = verify(
            jwt,
            alg,
            &public,
            "gamma-client",
            "gamma-client",
            &fake.token_url(),
            60,
        );
        assert_eq!(kid.as_deref(), Some("key-2026"));
        jtis.insert(claims["jti"].as_str().unwrap().to_owned());
    }
    assert_eq!(jtis.len(), 2, "each assertion has a fresh jti");
    sc.stop().await;
}

/// private_key_jwt with RS256: alg, kid, iss = sub = client_id, aud = token
/// URL, a fresh jti per fetch, exp within the 60 s lifetime and iat/nbf
/// backdated by the 30 s clock skew (so an auth server whose clock is 30 s
/// off either way accepts it), verified against the public key by
/// `jsonwebtoken`.
#[tokio::test]
async fn private_key_jwt_rs256_verifies_independently() {
    private_key_jwt("RS256", Algorithm::RS256, rsa_key()).await;
}

/// The same for ES256.
#[tokio::test]
async fn private_key_jwt_es256_verifies_independently() {
    private_key_jwt("ES256", Algorithm::ES256, ec_key()).await;
}

/// The jwt_bearer grant sends grant_type jwt-bearer and the signed assertion
/// (issuer and subject as configured, aud = token URL) as `assertion`.
#[tokio::test]
async fn jwt_bearer_grant_sends_signed_assertion() {
    let fake = FakeAuth::start(Behave::issue(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = ec_key();
    let key_file = write(dir.path(), "grant.pem", &private);
    let secret_file = write(dir.path(), "secret", "delta-secret");
    let sc = Running::start(&format!(
        "{LISTEN}tenants:
  delta:
    token_url: {url}
    client_id: delta-client
    auth: {{method: client_secret_post, secret: {{file: {secret_file}}}}}
    grant:
      type: jwt_bearer
      issuer: delta-issuer
      subject: service-account-7
      key: {{alg: ES256, kid: grant-key, file: {key_file}, lifetime: 45s}}
",
        url = fake.token_url()
    ))
    .await;
    sc.wait_token("delta").await;
    let req = &fake.seen()[0];
    assert_eq!(
        req.param("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    assert_eq!(req.param("client_secret"), Some("delta-secret"));
    let jwt = req.param("assertion").expect("assertion");
    let (kid, _) = verify(
        jwt,
        Algorithm::ES256,
        &public,
        "delta-issuer",
        "service-account-7",
        &fake.token_url(),
        45,
    );
    assert_eq!(kid.as_deref(), Some("grant-key"));
    sc.stop().await;
}

/// Rewriting the secret file takes effect on the next fetch (forced here by
/// an upstream-401 report), without a restart.
#[tokio::test]
async fn secret_file_rotation_needs_no_restart() {
    let fake = FakeAuth::start(Behave::issue(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(dir.path(), "secret", "old-secret");
    let sc = Running::start(&format!(
        "{LISTEN}tenants:
  acme:
    token_url: {url}
    client_id: acme
    auth: {{method: client_secret_post, secret: {{file: {secret_file}}}}}
",
        url = fake.token_url()
    ))
    .await;
    let first = sc.wait_token("acme").await;
    // Kubernetes swaps the file atomically; write-then-rename does the same.
    write(dir.path(), "secret.new", "new-secret\n");
    std::fs::rename(dir.path().join("secret.new"), &secret_file).unwrap();
    let v = first["version"].as_u64().unwrap();
    assert_eq!(sc.reject("acme", v).await, 202);
    let second = sc.wait_new_token("acme", v).await;
    let seen = fake.seen();
    assert_eq!(seen[0].param("client_secret"), Some("old-secret"));
    assert_eq!(seen[1].param("client_secret"), Some("new-secret"));
    assert_eq!(
        second["header"],
        format!("Bearer {}", fake.tokens()[1]).as_str()
    );
    sc.stop().await;
}

/// Rewriting the private key file makes the next assertion verify with the
/// new public key and not with the old one.
#[tokio::test]
async fn private_key_rotation_needs_no_restart() {
    let fake = FakeAuth::start(Behave::issue(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let (old_private, old_public) = ec_key();
    let (new_private, new_public) = ec_key();
    let key_file = write(dir.path(), "key.pem", &old_private);
    let sc = Running::start(&format!(
        "{LISTEN}tenants:
  gamma:
    token_url: {url}
    client_id: gamma
    auth:
      method: private_key_jwt
      key: {{alg: ES256, kid: k1, file: {key_file}}}
",
        url = fake.token_url()
    ))
    .await;
    let first = sc.wait_token("gamma").await;
    std::fs::write(&key_file, &new_private).unwrap();
    let v = first["version"].as_u64().unwrap();
    assert_eq!(sc.reject("gamma", v).await, 202);
    sc.wait_new_token("gamma", v).await;
    let seen = fake.seen();
    let a1 = seen[0].param("client_assertion").unwrap();
    let a2 = seen[1].param("client_assertion").unwrap();
    let check = |jwt: &str, public: &str| {
        let key = DecodingKey::from_ec_pem(public.as_bytes()).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[&fake.token_url()]);
        jsonwebtoken::decode::<Value>(jwt, &key, &v).is_ok()
    };
    assert!(check(a1, &old_public) && !check(a1, &new_public));
    assert!(check(a2, &new_public) && !check(a2, &old_public));
    sc.stop().await;
}
