//! The fake OAuth2 token server: the third party's auth server, the one part
//! of the token path the tests fake. Each tenant may have its own token URL
//! (`{url}/token/{tenant}`); `{url}/token` serves tenant `""`.
//!
//! What it answers is scripted: a queue of [`Behave`]s used once each, then
//! a per-tenant default, then the server's default. Every request is kept
//! ([`Seen`]): headers, form, when it came, when and how it was answered.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::time::Instant;

/// What the token endpoint does with one request.
#[derive(Debug, Clone)]
pub enum Behave {
    /// 200 with a fresh bearer token; `expires_in` omitted when `None`.
    Issue { expires_in: Option<u64> },
    /// Any status, body and content type, with an optional `Retry-After`.
    Reply {
        status: u16,
        content_type: &'static str,
        body: String,
        retry_after: Option<u64>,
    },
    /// Never answer.
    Hang,
    /// A token, after a delay (to measure concurrency).
    IssueAfter { expires_in: u64, delay_ms: u64 },
    /// A redirect to `location`.
    Redirect { status: u16, location: String },
    /// 200 with this raw JSON value as `expires_in`.
    ExpiresIn(serde_json::Value),
}

impl Behave {
    /// Tokens that live `expires_in` seconds.
    pub fn issue(expires_in: u64) -> Behave {
        Behave::Issue {
            expires_in: Some(expires_in),
        }
    }
    /// An answer with a JSON body (an OAuth2 error, say).
    pub fn json(status: u16, body: &str) -> Behave {
        Behave::Reply {
            status,
            content_type: "application/json",
            body: body.to_owned(),
            retry_after: None,
        }
    }
    pub fn text(status: u16, content_type: &'static str, body: &str) -> Behave {
        Behave::Reply {
            status,
            content_type,
            body: body.to_owned(),
            retry_after: None,
        }
    }
    /// 429 with `Retry-After`.
    pub fn too_many(retry_after: u64) -> Behave {
        Behave::Reply {
            status: 429,
            content_type: "application/json",
            body: r#"{"error":"slow_down"}"#.into(),
            retry_after: Some(retry_after),
        }
    }
}

/// One request the fake received, and what it answered.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The tenant in the path (`""` for `/token`).
    pub tenant: String,
    pub headers: HeaderMap,
    pub form: Vec<(String, String)>,
    /// When the request arrived.
    pub at: Instant,
    /// When the response left the handler (None while hanging).
    pub answered: Option<Instant>,
    pub answered_wall: Option<SystemTime>,
    /// The token issued, if any, and its `expires_in` when a number.
    pub token: Option<String>,
    pub lifetime: Option<Duration>,
    pub status: u16,
}

impl Seen {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
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
struct FakeState {
    queue: VecDeque<Behave>,
    default: Option<Behave>,
    tenants: HashMap<String, Behave>,
    seen: Vec<Seen>,
    issued: u64,
    salt: u32,
    in_flight: u64,
    peak: u64,
}

/// A scriptable fake OAuth2 token server on loopback.
#[derive(Clone)]
pub struct FakeAuth {
    /// The base URL (`http://127.0.0.1:port`).
    pub url: String,
    state: Arc<Mutex<FakeState>>,
}

impl FakeAuth {
    /// Starts on an ephemeral loopback port; `default` answers every request
    /// nothing more specific was scripted for.
    pub async fn start(default: Behave) -> FakeAuth {
        FakeAuth::start_on("127.0.0.1:0", default).await
    }

    /// Starts on `addr` (a fixed port, for a demo).
    pub async fn start_on(addr: &str, default: Behave) -> FakeAuth {
        let state = Arc::new(Mutex::new(FakeState {
            default: Some(default),
            salt: salt(),
            ..Default::default()
        }));
        let router = Router::new()
            .route("/token", post(plain))
            .route("/token/{tenant}", post(per_tenant))
            .with_state(state.clone());
        FakeAuth {
            url: crate::serve_on(addr, router).await,
            state,
        }
    }

    /// The token URL shared by every tenant (`{url}/token`).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.url)
    }

    /// `tenant`'s own token URL (`{url}/token/{tenant}`).
    pub fn tenant_url(&self, tenant: &str) -> String {
        format!("{}/token/{tenant}", self.url)
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues behaviours to use, once each and in order, before any default.
    pub fn push(&self, b: impl IntoIterator<Item = Behave>) {
        self.state().queue.extend(b);
    }

    /// What every request gets once the queue is empty.
    pub fn set_default(&self, b: Behave) {
        self.state().default = Some(b);
    }

    /// What `tenant`'s requests get once the queue is empty (for example a
    /// refusal of its secret), whatever the default.
    pub fn set_tenant(&self, tenant: &str, b: Behave) {
        self.state().tenants.insert(tenant.to_string(), b);
    }

    /// Behaviours still queued.
    pub fn queued(&self) -> usize {
        self.state().queue.len()
    }

    /// Every request so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    /// Number of token requests received (answered or not).
    pub fn count(&self) -> usize {
        self.state().seen.len()
    }

    /// The form bodies received, oldest first.
    pub fn forms(&self) -> Vec<Vec<(String, String)>> {
        self.seen().into_iter().map(|s| s.form).collect()
    }

    /// Every token issued so far, oldest first.
    pub fn tokens(&self) -> Vec<String> {
        self.seen().into_iter().filter_map(|s| s.token).collect()
    }

    /// Every issued token with its tenant, time and lifetime, oldest first.
    pub fn issued(&self) -> Vec<Issue> {
        self.seen()
            .into_iter()
            .filter_map(|s| {
                Some(Issue {
                    token: s.token?,
                    tenant: s.tenant,
                    at: s.at,
                    lifetime: s.lifetime.unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Tokens issued for `tenant`, oldest first.
    pub fn issued_for(&self, tenant: &str) -> Vec<Issue> {
        self.issued()
            .into_iter()
            .filter(|i| i.tenant == tenant)
            .collect()
    }

    /// Whether `token` is still valid at an auth server that revokes a
    /// client's previous token on every issue (Doorkeeper's
    /// `revoke_previous_client_credentials_token`): only each tenant's latest
    /// token is.
    pub fn is_latest(&self, token: &str) -> bool {
        let issued = self.issued();
        let Some(issue) = issued.iter().find(|i| i.token == token) else {
            return false;
        };
        issued
            .iter()
            .rev()
            .find(|i| i.tenant == issue.tenant)
            .map(|i| &i.token)
            == Some(&issue.token)
    }

    /// The most requests this server ever had in progress at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.state().peak
    }

    /// The last request that got a token.
    pub fn last_issue(&self) -> Option<Seen> {
        self.seen().into_iter().rev().find(|s| s.token.is_some())
    }
}

async fn plain(state: State<Arc<Mutex<FakeState>>>, headers: HeaderMap, body: Bytes) -> Response {
    token(state, String::new(), headers, body).await
}

async fn per_tenant(
    state: State<Arc<Mutex<FakeState>>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token(state, tenant, headers, body).await
}

async fn token(
    State(state): State<Arc<Mutex<FakeState>>>,
    tenant: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let (behave, index) = {
        let mut s = lock();
        let behave = s
            .queue
            .pop_front()
            .or_else(|| s.tenants.get(&tenant).cloned())
            .or_else(|| s.default.clone())
            .unwrap_or(Behave::Hang);
        s.in_flight += 1;
        s.peak = s.peak.max(s.in_flight);
        s.seen.push(Seen {
            tenant: tenant.clone(),
            headers,
            form,
            at: Instant::now(),
            answered: None,
            answered_wall: None,
            token: None,
            lifetime: None,
            status: 0,
        });
        (behave, s.seen.len() - 1)
    };
    let issue = |expires_in: Option<serde_json::Value>| {
        let token = {
            let mut s = lock();
            s.issued += 1;
            format!("tok-{tenant}-{}-{:08x}", s.issued, s.salt)
        };
        let mut body = serde_json::json!({"access_token": token, "token_type": "Bearer"});
        let lifetime = expires_in
            .as_ref()
            .and_then(serde_json::Value::as_u64)
            .map(Duration::from_secs);
        if let Some(e) = expires_in {
            body["expires_in"] = e;
        }
        let response = (StatusCode::OK, axum::Json(body)).into_response();
        (200, Some(token), lifetime, response)
    };
    let (status, token, lifetime, response) = match behave {
        Behave::Hang => std::future::pending().await,
        Behave::IssueAfter {
            expires_in,
            delay_ms,
        } => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            issue(Some(expires_in.into()))
        }
        Behave::ExpiresIn(v) => issue(Some(v)),
        Behave::Issue { expires_in } => issue(expires_in.map(Into::into)),
        Behave::Redirect { status, location } => (
            status,
            None,
            None,
            (code(status), [("location", location)], "").into_response(),
        ),
        Behave::Reply {
            status,
            content_type,
            body,
            retry_after,
        } => {
            let mut r = (code(status), [("content-type", content_type)], body).into_response();
            if let Some(after) = retry_after {
                r.headers_mut().insert("retry-after", after.into());
            }
            (status, None, None, r)
        }
    };
    let mut s = lock();
    s.in_flight -= 1;
    let seen = &mut s.seen[index];
    seen.status = status;
    seen.token = token;
    seen.lifetime = lifetime;
    seen.answered = Some(Instant::now());
    seen.answered_wall = Some(SystemTime::now());
    response
}

fn code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A per-server salt, so two servers' tokens never collide.
fn salt() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}
