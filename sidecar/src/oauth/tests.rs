use std::path::Path;

use reqwest::StatusCode;

use super::*;
use crate::config::Config;

fn tenant(auth: &str) -> Tenant {
    std::env::set_var("AUTHPROXY_OAUTH_TEST_SECRET", "p@ss word");
    let yaml = format!(
        r#"
tenants:
  acme:
    token_url: https://auth.example.com/token
    client_id: "acme client"
    auth: {auth}
    scope: read write
    audience: https://api.example.com
    extra_params: {{ tenant_hint: acme }}
"#
    );
    let c = Config::from_yaml(&yaml, Path::new("t.yaml"), Vec::new()).unwrap();
    c.tenants.into_iter().next().unwrap()
}

fn basic() -> Tenant {
    tenant("{ method: client_secret_basic, secret: { env: AUTHPROXY_OAUTH_TEST_SECRET } }")
}

fn classify_body(status: u16, ct: &str, body: &str) -> Result<IssuedToken, FetchError> {
    classify(
        &basic(),
        StatusCode::from_u16(status).unwrap(),
        ct,
        body.as_bytes(),
        None,
        Duration::from_secs(300),
    )
}

/// A good response yields the token and its lifetime.
#[test]
fn good_response() {
    let t = classify_body(
        200,
        "application/json",
        r#"{"access_token":"abc","token_type":"bearer","expires_in":3600}"#,
    )
    .unwrap();
    assert_eq!(t.access_token.expose(), "abc");
    assert_eq!(t.lifetime, Duration::from_secs(3600));
    assert!(!t.defaulted_lifetime);
}

/// No `expires_in`: the configured default lifetime applies.
#[test]
fn default_lifetime() {
    let t = classify_body(200, "application/json", r#"{"access_token":"abc"}"#).unwrap();
    assert_eq!(t.lifetime, Duration::from_secs(300));
    assert!(t.defaulted_lifetime);
    let t = classify_body(200, "", r#"{"access_token":"abc","expires_in":"120"}"#).unwrap();
    assert_eq!(t.lifetime, Duration::from_secs(120));
}

/// Malformed 200s are `bad_response`, transient, and never echo the body.
#[test]
fn bad_responses() {
    let marker = "SECRET-BODY-MARKER";
    for (ct, body, expect) in [
        ("text/html", format!("<html>{marker}</html>"), "HTML"),
        ("text/plain", marker.to_string(), "not JSON"),
        (
            "application/json",
            format!(r#"{{"token":"{marker}"}}"#),
            "no access_token",
        ),
        (
            "application/json",
            format!(r#"{{"access_token":"{marker}","token_type":"mac"}}"#),
            "not bearer",
        ),
        (
            "application/json",
            format!(r#"{{"access_token":"{marker}","expires_in":-5}}"#),
            "expires_in",
        ),
        (
            "application/json",
            r#"{"access_token":"has space"}"#.to_string(),
            "not a valid bearer",
        ),
    ] {
        let e = classify_body(200, ct, &body).unwrap_err();
        assert_eq!(e.reason, "bad_response", "{body}");
        assert_eq!(e.retry, Retry::Transient);
        let text = e.to_string();
        assert!(text.contains(expect), "{text}");
        assert!(!text.contains(marker), "body leaked: {text}");
    }
}

/// Errors are classified by kind; only the OAuth2 error code is kept.
#[test]
fn error_kinds() {
    let cases = [
        (
            400,
            r#"{"error":"invalid_client","error_description":"SECRET-DESC"}"#,
            "invalid_client",
            Retry::Permanent,
        ),
        (
            400,
            r#"{"error":"invalid_grant"}"#,
            "invalid_grant",
            Retry::Permanent,
        ),
        (
            401,
            r#"{"error":"unauthorized_client"}"#,
            "unauthorized_client",
            Retry::Permanent,
        ),
        (401, "<html>login</html>", "unauthorized", Retry::Permanent),
        (429, "slow down", "rate_limited", Retry::Transient),
        (
            503,
            "<html>maintenance</html>",
            "http_5xx",
            Retry::Transient,
        ),
        (
            400,
            r#"{"error":"invalid_scope"}"#,
            "oauth_error",
            Retry::Transient,
        ),
        (404, "", "http_4xx", Retry::Transient),
    ];
    for (status, body, reason, retry) in cases {
        let e = classify_body(status, "application/json", body).unwrap_err();
        assert_eq!((e.reason, e.retry), (reason, retry), "{status} {body}");
        assert!(!e.to_string().contains("SECRET-DESC"));
    }
}

/// `Retry-After` is carried on the error.
#[test]
fn retry_after_is_kept() {
    let e = classify(
        &basic(),
        StatusCode::TOO_MANY_REQUESTS,
        "",
        b"",
        Some(Duration::from_secs(7)),
        Duration::from_secs(300),
    )
    .unwrap_err();
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
}

/// client_secret_basic puts the credentials in Basic auth, not the form;
/// client_secret_post puts them in the form. Scope, audience and extra
/// parameters are always sent.
#[test]
fn client_authentication() {
    let req = TokenRequest::build(&basic(), Duration::from_secs(30)).unwrap();
    let (id, secret) = req.basic.as_ref().unwrap();
    assert_eq!(id, "acme client");
    assert_eq!(secret.expose(), "p@ss word");
    assert!(req.form.iter().all(|(k, _)| *k != "client_secret"));
    assert!(req
        .form
        .contains(&("grant_type", "client_credentials".into())));
    assert!(req.form.contains(&("scope", "read write".into())));
    assert!(req
        .form
        .contains(&("audience", "https://api.example.com".into())));
    assert!(req.extra.contains(&("tenant_hint".into(), "acme".into())));

    let post =
        tenant("{ method: client_secret_post, secret: { env: AUTHPROXY_OAUTH_TEST_SECRET } }");
    let req = TokenRequest::build(&post, Duration::from_secs(30)).unwrap();
    assert!(req.basic.is_none());
    assert!(req.form.contains(&("client_id", "acme client".into())));
    assert!(req.form.contains(&("client_secret", "p@ss word".into())));
}

/// The request's Debug output never shows the secret.
#[test]
fn request_debug_redacts_basic_secret() {
    let req = TokenRequest::build(&basic(), Duration::from_secs(30)).unwrap();
    assert!(!format!("{:?}", req.basic).contains("p@ss"));
}
