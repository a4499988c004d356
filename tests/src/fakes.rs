//! The fake third party's API, which echoes what it received. Its auth
//! server is [`testkit::FakeAuth`], shared with every crate's tests.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use tokio::time::Instant;

pub use testkit::export::payload as export_payload;
pub use testkit::oauth::Issue;
pub use testkit::{port_of, serve, serve_on, serve_tls, Behave, FakeAuth};

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

/// `GET /exports/{module}`: the payload of `{dir}/{module}.csv`.
fn export(dir: &std::path::Path, module: &str) -> Response {
    match testkit::export::read(dir, module) {
        Some(csv) => Json(testkit::export::payload(module, &csv)).into_response(),
        None => {
            let body = serde_json::json!({"error": "unknown_module", "module": module});
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
    }
}
