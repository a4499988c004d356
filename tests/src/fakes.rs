//! The fake third party: an OAuth2 token server that can fail, hang, return
//! garbage and rotate tokens, and an API that echoes what it received.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Serves `router` on an ephemeral loopback port; returns its base URL.
pub async fn serve(router: Router) -> String {
    serve_on("127.0.0.1:0", router).await
}

/// Serves `router` on `addr`; returns its base URL.
pub async fn serve_on(addr: &str, router: Router) -> String {
    let listener = TcpListener::bind(addr).await.expect("bind fake");
    let addr = listener.local_addr().expect("fake addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// Serves `router` over TLS (HTTP/1.1) on an ephemeral loopback port with
/// the PEM certificate chain and key; returns its base URL.
pub async fn serve_tls(router: Router, cert: &std::path::Path, key: &std::path::Path) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .expect("read cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("parse cert");
    let key = PrivateKeyDer::from_pem_file(key).expect("read key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("tls config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
    let addr = listener.local_addr().expect("fake addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    format!("https://{addr}")
}

pub fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("port in url")
}

/// What the token endpoint does next.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Issue tokens with this `expires_in`.
    Issue { lifetime: u64 },
    /// Answer with this status and body.
    Fail { status: u16, body: String },
    /// Never answer.
    Hang,
}

/// One issued token.
#[derive(Debug, Clone)]
pub struct Issue {
    pub tenant: String,
    pub token: String,
    pub at: Instant,
    pub lifetime: Duration,
}

#[derive(Default)]
struct AuthState {
    mode: Option<Mode>,
    /// Per-tenant modes that take precedence over `mode`.
    tenant_modes: std::collections::HashMap<String, Mode>,
    issued: Vec<Issue>,
    requests: usize,
    forms: Vec<Vec<(String, String)>>,
}

/// The fake OAuth2 token server. Each tenant's token URL is
/// `{url}/token/{tenant}`.
#[derive(Clone)]
pub struct FakeAuth {
    pub url: String,
    state: Arc<Mutex<AuthState>>,
}

impl FakeAuth {
    pub async fn start(lifetime: u64) -> FakeAuth {
        FakeAuth::start_on("127.0.0.1:0", lifetime).await
    }

    pub async fn start_on(addr: &str, lifetime: u64) -> FakeAuth {
        let state = Arc::new(Mutex::new(AuthState {
            mode: Some(Mode::Issue { lifetime }),
            ..Default::default()
        }));
        let router = Router::new()
            .route("/token/{tenant}", post(token))
            .with_state(state.clone());
        FakeAuth {
            url: serve_on(addr, router).await,
            state,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    /// What the token endpoint does for `tenant` only (e.g. refuse its
    /// secret), whatever the global mode.
    pub fn set_tenant_mode(&self, tenant: &str, mode: Mode) {
        self.state
            .lock()
            .unwrap()
            .tenant_modes
            .insert(tenant.to_string(), mode);
    }

    /// Every token issued so far, in order.
    pub fn issued(&self) -> Vec<Issue> {
        self.state.lock().unwrap().issued.clone()
    }

    /// Whether `token` is still valid at an auth server that revokes a
    /// client's previous token on every issue (Doorkeeper's
    /// `revoke_previous_client_credentials_token`): only each tenant's latest
    /// token is.
    pub fn is_latest(&self, token: &str) -> bool {
        let s = self.state.lock().unwrap();
        let Some(issue) = s.issued.iter().find(|i| i.token == token) else {
            return false;
        };
        s.issued
            .iter()
            .rev()
            .find(|i| i.tenant == issue.tenant)
            .map(|i| &i.token)
            == Some(&issue.token)
    }

    /// Tokens issued for `tenant`, in order.
    pub fn issued_for(&self, tenant: &str) -> Vec<Issue> {
        self.issued()
            .into_iter()
            .filter(|i| i.tenant == tenant)
            .collect()
    }

    /// Number of token requests received (issued or not).
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// The form bodies received.
    pub fn forms(&self) -> Vec<Vec<(String, String)>> {
        self.state.lock().unwrap().forms.clone()
    }
}

async fn token(
    State(state): State<Arc<Mutex<AuthState>>>,
    Path(tenant): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let mode = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        s.forms.push(form);
        s.tenant_modes
            .get(&tenant)
            .cloned()
            .or_else(|| s.mode.clone())
            .unwrap_or(Mode::Hang)
    };
    match mode {
        Mode::Issue { lifetime } => {
            let mut s = state.lock().unwrap();
            let n = s.issued.len() + 1;
            let token = format!("tok-{tenant}-{n}-{:08x}", rand_u32());
            s.issued.push(Issue {
                tenant,
                token: token.clone(),
                at: Instant::now(),
                lifetime: Duration::from_secs(lifetime),
            });
            Json(serde_json::json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": lifetime,
            }))
            .into_response()
        }
        Mode::Fail { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [("content-type", "application/json")],
            body,
        )
            .into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u32
}

/// An API in front of a revoke-previous auth server: answers 401 to any
/// bearer token but its tenant's latest, else 200 with the token it saw.
pub fn revoke_previous_api(auth: FakeAuth) -> Router {
    Router::new().fallback(any(move |headers: HeaderMap| {
        let auth = auth.clone();
        async move {
            let bearer = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string);
            match bearer {
                Some(t) if auth.is_latest(&t) => {
                    Json(serde_json::json!({ "token": t })).into_response()
                }
                t => (
                    StatusCode::UNAUTHORIZED,
                    Json(serde_json::json!({"error": "invalid_token", "token": t})),
                )
                    .into_response(),
            }
        }
    }))
}

/// One request as the fake API received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub tenant_header: Option<String>,
    /// Every header received (see `all_headers`).
    pub headers: serde_json::Value,
    pub at: Instant,
}

#[derive(Default)]
struct ApiState {
    seen: Vec<Seen>,
    revoked: HashSet<String>,
    /// Serve `GET /exports/{module}` from `{dir}/{module}.csv`.
    exports: Option<std::path::PathBuf>,
}

/// The fake third-party API: echoes what it received as JSON, and answers
/// 401 to a missing or revoked bearer token.
#[derive(Clone)]
pub struct FakeApi {
    pub url: String,
    state: Arc<Mutex<ApiState>>,
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        FakeApi::start_on("127.0.0.1:0", None).await
    }

    /// Starts on `addr`; with `exports`, also serves the export API the
    /// importer expects: `GET /exports/{module}?date=...` answers
    /// `{"module_name", "data"}` where `data` is the base64 of a zip holding
    /// `{exports}/{module}.csv`.
    pub async fn start_on(addr: &str, exports: Option<std::path::PathBuf>) -> FakeApi {
        let state = Arc::new(Mutex::new(ApiState {
            exports,
            ..Default::default()
        }));
        let router = Router::new().fallback(any(echo)).with_state(state.clone());
        FakeApi {
            url: serve_on(addr, router).await,
            state,
        }
    }

    /// The echoing API over TLS with this certificate (e.g. one a test CA
    /// issued for the host the production config pins).
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> FakeApi {
        let state = Arc::new(Mutex::new(ApiState::default()));
        let router = Router::new().fallback(any(echo)).with_state(state.clone());
        FakeApi {
            url: serve_tls(router, cert, key).await,
            state,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// From now on, answer 401 to `authorization`.
    pub fn revoke(&self, authorization: &str) {
        self.state
            .lock()
            .unwrap()
            .revoked
            .insert(authorization.to_string());
    }
}

async fn echo(
    State(state): State<Arc<Mutex<ApiState>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let seen = Seen {
        path: uri.path().to_string(),
        authorization: get("authorization"),
        tenant_header: get("x-tenant-id"),
        headers: all_headers(&headers),
        at: Instant::now(),
    };
    let body = serde_json::json!({
        "path": seen.path,
        "authorization": seen.authorization,
        "x-tenant-id": seen.tenant_header,
        "authorization_count": headers.get_all("authorization").iter().count(),
        // Every header received, values joined with ", " when repeated.
        "headers": seen.headers,
        "query": uri.query(),
    });
    let mut s = state.lock().unwrap();
    let revoked = seen
        .authorization
        .as_ref()
        .is_none_or(|a| s.revoked.contains(a) || !a.starts_with("Bearer "));
    s.seen.push(seen);
    if revoked {
        let body = serde_json::json!({"error": "invalid_token"});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let exports = s.exports.clone();
    drop(s);
    if let (Some(dir), Some(module)) = (exports, uri.path().strip_prefix("/exports/")) {
        return export(&dir, module);
    }
    Json(body).into_response()
}

/// Every header as a JSON object, repeated values joined with ", ".
fn all_headers(headers: &HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        map.insert(name.to_string(), values.join(", ").into());
    }
    serde_json::Value::Object(map)
}

/// One export payload as the importer expects it: `{"module_name", "data"}`
/// where `data` is the base64 of a zip holding `{module}.csv`.
pub fn export_payload(module: &str, csv: &[u8]) -> serde_json::Value {
    use base64::Engine;
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file(format!("{module}.csv"), options)
        .expect("zip entry");
    zip.write_all(csv).expect("zip write");
    let bytes = zip.finish().expect("zip finish").into_inner();
    serde_json::json!({
        "module_name": module,
        "data": base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

/// `GET /exports/{module}`: the payload of `{dir}/{module}.csv`.
fn export(dir: &std::path::Path, module: &str) -> Response {
    let valid = !module.is_empty()
        && module
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let Some(csv) = valid
        .then(|| std::fs::read(dir.join(format!("{module}.csv"))).ok())
        .flatten()
    else {
        let body = serde_json::json!({"error": "unknown_module", "module": module});
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    };
    Json(export_payload(module, &csv)).into_response()
}
