//! One OAuth2 token request: client authentication, grant, and the parsing
//! and classification of the response.
//!
//! Nothing here logs. Errors carry a stable `reason` (a metrics label) and a
//! detail that never contains the response body, a secret or an assertion.

use std::time::Duration;

use base64::Engine;
use jwt_simple::prelude::*;
use rand::RngCore;
use serde::Deserialize;

use crate::config::{ClientAuth, Grant, JwtAlg, SigningKey, Tenant};
use crate::secret::Secret;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Token responses larger than this are refused unread.
pub const MAX_BODY: usize = 64 * 1024;
/// `expires_in` above this (100 years) is read as this, before clamping.
const MAX_EXPIRES_IN: f64 = 100.0 * 365.0 * 86400.0;

/// A token as issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: Secret,
    /// `expires_in` as sent (0, 0.001 and 10 years included: the refresh
    /// schedule clamps it), or the configured default.
    pub lifetime: Duration,
    /// Whether `expires_in` was missing and the default applied.
    pub defaulted_lifetime: bool,
}

/// How a failure should be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Network, timeout, 5xx, 429, malformed response: back off and retry.
    Transient,
    /// The auth server refused our credentials: retry slowly, loudly.
    Permanent,
}

/// Why a token request failed. `Display` is safe to log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("token endpoint {url}: {detail}")]
pub struct FetchError {
    pub url: String,
    /// Stable label for metrics: `network`, `timeout`, `http_5xx`, ...
    pub reason: &'static str,
    pub retry: Retry,
    /// Server-requested delay (429/503 `Retry-After`).
    pub retry_after: Option<Duration>,
    pub detail: String,
}

impl FetchError {
    fn new(tenant: &Tenant, reason: &'static str, retry: Retry, detail: impl Into<String>) -> Self {
        FetchError {
            url: tenant.token_url.to_string(),
            reason,
            retry,
            retry_after: None,
            detail: detail.into(),
        }
    }
}

/// Checks at start-up that a signing key parses (the file is re-read later).
pub fn check_signing_key(key: &SigningKey) -> Result<(), String> {
    let pem = key.key.read().map_err(|e| e.to_string())?;
    match key.alg {
        JwtAlg::RS256 => RS256KeyPair::from_pem(pem.expose())
            .map(drop)
            .map_err(|_| "not a PEM RSA private key (PKCS#1 or PKCS#8)".to_string()),
        JwtAlg::ES256 => ES256KeyPair::from_pem(pem.expose())
            .map(drop)
            .map_err(|_| "not a PEM P-256 EC private key (PKCS#8)".to_string()),
    }
}

/// Signs a short-lived RFC 7523 assertion: `aud` is the token endpoint, a
/// fresh random `jti`, `iat` = `nbf` = now − `skew` (an auth server whose
/// clock is behind by up to `skew` still accepts it), `exp` = now + the key's
/// lifetime (config ensures the lifetime exceeds `skew`, so a server whose
/// clock is ahead by `skew` does too).
pub fn sign_assertion(
    key: &SigningKey,
    issuer: &str,
    subject: &str,
    audience: &str,
    skew: Duration,
) -> Result<Secret, String> {
    let pem = key.key.read().map_err(|e| e.to_string())?;
    let mut jti = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut jti);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let stamp = |d: Duration| jwt_simple::prelude::Duration::from_secs(d.as_secs());
    let mut claims = Claims::create(jwt_simple::prelude::Duration::from_millis(
        key.lifetime.as_millis() as u64,
    ));
    claims.issued_at = Some(stamp(now.saturating_sub(skew)));
    claims.invalid_before = Some(stamp(now.saturating_sub(skew)));
    claims.expires_at = Some(stamp(now + key.lifetime));
    let claims = claims
        .with_issuer(issuer)
        .with_subject(subject)
        .with_audience(audience)
        .with_jwt_id(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti));
    let signed = match key.alg {
        JwtAlg::RS256 => {
            let mut pair = RS256KeyPair::from_pem(pem.expose())
                .map_err(|_| "signing key is not a PEM RSA private key".to_string())?;
            if let Some(kid) = &key.kid {
                pair = pair.with_key_id(kid);
            }
            pair.sign(claims)
        }
        JwtAlg::ES256 => {
            let mut pair = ES256KeyPair::from_pem(pem.expose())
                .map_err(|_| "signing key is not a PEM P-256 private key".to_string())?;
            if let Some(kid) = &key.kid {
                pair = pair.with_key_id(kid);
            }
            pair.sign(claims)
        }
    };
    signed
        .map(Secret::new)
        .map_err(|_| "signing the assertion failed".to_string())
}

/// The form body and headers of one token request.
#[derive(Debug)]
pub struct TokenRequest {
    pub form: Vec<(&'static str, String)>,
    pub extra: Vec<(String, String)>,
    /// HTTP Basic credentials (client_secret_basic).
    pub basic: Option<(String, Secret)>,
}

impl TokenRequest {
    /// Builds the request for `tenant`, reading secrets and signing as needed
    /// (assertions backdated by `skew`).
    pub fn build(tenant: &Tenant, skew: Duration) -> Result<TokenRequest, FetchError> {
        let secret_err =
            |e: String| FetchError::new(tenant, "credentials_unavailable", Retry::Transient, e);
        let aud = tenant.token_url.as_str();
        let mut form: Vec<(&'static str, String)> = Vec::new();
        let mut basic = None;
        match &tenant.grant {
            Grant::ClientCredentials => form.push(("grant_type", "client_credentials".into())),
            Grant::JwtBearer {
                key,
                issuer,
                subject,
            } => {
                let assertion =
                    sign_assertion(key, issuer, subject, aud, skew).map_err(secret_err)?;
                form.push(("grant_type", JWT_BEARER_GRANT.into()));
                form.push(("assertion", assertion.expose().to_owned()));
            }
        }
        match &tenant.auth {
            ClientAuth::SecretBasic(src) => {
                let secret = src.read().map_err(|e| secret_err(e.to_string()))?;
                basic = Some((tenant.client_id.clone(), secret));
            }
            ClientAuth::SecretPost(src) => {
                let secret = src.read().map_err(|e| secret_err(e.to_string()))?;
                form.push(("client_id", tenant.client_id.clone()));
                form.push(("client_secret", secret.expose().to_owned()));
            }
            ClientAuth::PrivateKeyJwt(key) => {
                let assertion =
                    sign_assertion(key, &tenant.client_id, &tenant.client_id, aud, skew)
                        .map_err(secret_err)?;
                form.push(("client_id", tenant.client_id.clone()));
                form.push(("client_assertion_type", ASSERTION_TYPE.into()));
                form.push(("client_assertion", assertion.expose().to_owned()));
            }
        }
        if let Some(scope) = &tenant.scope {
            form.push(("scope", scope.clone()));
        }
        if let Some(audience) = &tenant.audience {
            form.push(("audience", audience.clone()));
        }
        if let Some(resource) = &tenant.resource {
            form.push(("resource", resource.clone()));
        }
        let extra = tenant
            .extra_params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(TokenRequest { form, extra, basic })
    }
}

/// The HTTP client for token requests: redirects are never followed (a 3xx
/// would re-send the credentials to another URL), no proxy from the
/// environment is used for loopback, TLS via rustls.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("authproxy-sidecar/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Fetches one token for `tenant` with a client from [`client`].
pub async fn fetch(
    http: &reqwest::Client,
    tenant: &Tenant,
    policy: &crate::config::RefreshPolicy,
) -> Result<IssuedToken, FetchError> {
    let (default_lifetime, timeout) = (policy.default_lifetime, policy.request_timeout);
    let req = TokenRequest::build(tenant, policy.clock_skew)?;
    let mut body = form_urlencoded(&req);
    let mut builder = http
        .post(tenant.token_url.clone())
        .timeout(timeout)
        .header(reqwest::header::ACCEPT, "application/json")
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    for (name, value) in &tenant.extra_headers {
        builder = builder.header(name, value);
    }
    if let Some((id, secret)) = &req.basic {
        // RFC 6749 §2.3.1: form-urlencode both parts before Basic encoding.
        let user = url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
        let pass =
            url::form_urlencoded::byte_serialize(secret.expose().as_bytes()).collect::<String>();
        builder = builder.basic_auth(user, Some(pass));
    }
    let sent = builder.body(std::mem::take(&mut body)).send().await;
    let response = sent.map_err(|e| {
        let reason = if e.is_timeout() { "timeout" } else { "network" };
        FetchError::new(tenant, reason, Retry::Transient, describe_reqwest(&e))
    })?;
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(FetchError::new(
            tenant,
            "bad_response",
            Retry::Transient,
            format!("HTTP {status}: body larger than {MAX_BODY} bytes"),
        ));
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let bytes = read_limited(response).await.map_err(|e| {
        let reason = if e.is_timeout() { "timeout" } else { "network" };
        FetchError::new(tenant, reason, Retry::Transient, describe_reqwest(&e))
    })?;
    let bytes = bytes.ok_or_else(|| {
        FetchError::new(
            tenant,
            "bad_response",
            Retry::Transient,
            format!("HTTP {status}: body larger than {MAX_BODY} bytes"),
        )
    })?;
    classify(
        tenant,
        status,
        &content_type,
        &bytes,
        retry_after,
        default_lifetime,
    )
}

async fn read_limited(mut response: reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > MAX_BODY {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

fn form_urlencoded(req: &TokenRequest) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &req.form {
        ser.append_pair(k, v);
    }
    for (k, v) in &req.extra {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// A reqwest error without the URL's query or anything from the body.
fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "request timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
}

/// Turns a status and body into a token or a classified error. Never echoes
/// the body: only the OAuth2 `error` code, which is a fixed vocabulary.
pub fn classify(
    tenant: &Tenant,
    status: reqwest::StatusCode,
    content_type: &str,
    body: &[u8],
    retry_after: Option<Duration>,
    default_lifetime: Duration,
) -> Result<IssuedToken, FetchError> {
    if status.is_success() {
        return parse_success(tenant, content_type, body, default_lifetime);
    }
    let oauth_error = serde_json::from_slice::<ErrorResponse>(body)
        .ok()
        .and_then(|e| e.error)
        .filter(|code| code.len() <= 64 && code.bytes().all(|b| b.is_ascii_graphic()));
    let mut err = match (status.as_u16(), oauth_error.as_deref()) {
        (_, Some("invalid_client")) => FetchError::new(
            tenant,
            "invalid_client",
            Retry::Permanent,
            format!("HTTP {status}: invalid_client (check client id, secret or key)"),
        ),
        (_, Some("invalid_grant")) => FetchError::new(
            tenant,
            "invalid_grant",
            Retry::Permanent,
            format!("HTTP {status}: invalid_grant"),
        ),
        (_, Some("unauthorized_client")) => FetchError::new(
            tenant,
            "unauthorized_client",
            Retry::Permanent,
            format!("HTTP {status}: unauthorized_client"),
        ),
        (300..=399, _) => FetchError::new(
            tenant,
            "redirect",
            Retry::Permanent,
            format!("HTTP {status}: redirects are not followed; configure the final token URL"),
        ),
        (429, _) => FetchError::new(tenant, "rate_limited", Retry::Transient, "HTTP 429"),
        (500..=599, _) => FetchError::new(
            tenant,
            "http_5xx",
            Retry::Transient,
            format!("HTTP {status}"),
        ),
        (401 | 403, _) => FetchError::new(
            tenant,
            "unauthorized",
            Retry::Permanent,
            format!("HTTP {status} without an OAuth2 error code"),
        ),
        (_, Some(code)) => FetchError::new(
            tenant,
            "oauth_error",
            Retry::Transient,
            format!("HTTP {status}: {code}"),
        ),
        _ => FetchError::new(
            tenant,
            "http_4xx",
            Retry::Transient,
            format!("HTTP {status}"),
        ),
    };
    err.retry_after = retry_after;
    Err(err)
}

fn parse_success(
    tenant: &Tenant,
    content_type: &str,
    body: &[u8],
    default_lifetime: Duration,
) -> Result<IssuedToken, FetchError> {
    let bad = |detail: String| FetchError::new(tenant, "bad_response", Retry::Transient, detail);
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|_| {
        let kind = if content_type.contains("html") || body.trim_ascii_start().starts_with(b"<") {
            "an HTML page"
        } else {
            "not JSON"
        };
        bad(format!(
            "HTTP 200 but the body is {kind} (content-type {content_type:?}, {} bytes)",
            body.len()
        ))
    })?;
    let token = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("HTTP 200 but no access_token in the response".into()))?;
    // A header value must be visible ASCII; anything else would be refused or
    // mangled by Envoy.
    if !token.bytes().all(|b| b.is_ascii_graphic()) || token.len() > 8192 {
        return Err(bad("access_token is not a valid bearer token".into()));
    }
    match parsed.token_type.as_deref() {
        None => {}
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(other) => {
            let shown: String = other.chars().take(32).collect();
            return Err(bad(format!("token_type {shown:?} is not bearer")));
        }
    }
    let expires_in = match parsed.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => return Err(bad("expires_in is not a number".into())),
    };
    // Any non-negative number is taken as sent, even 0 or ten years: the
    // refresh schedule clamps it to [min_lifetime, max_lifetime].
    let (lifetime, defaulted_lifetime) = match expires_in {
        None => (default_lifetime, true),
        Some(secs) if secs.is_finite() && secs >= 0.0 => {
            (Duration::from_secs_f64(secs.min(MAX_EXPIRES_IN)), false)
        }
        Some(_) => {
            return Err(bad(
                "expires_in is not a non-negative number of seconds".into()
            ))
        }
    };
    Ok(IssuedToken {
        access_token: Secret::new(token),
        lifetime,
        defaulted_lifetime,
    })
}

#[cfg(test)]
mod tests;
