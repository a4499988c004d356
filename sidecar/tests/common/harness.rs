//! Shared helpers for the sidecar's integration tests: a scriptable fake
//! OAuth2 token server, an in-process sidecar, and small HTTP and metrics
//! helpers. Each test file includes this with
//! `#[path = "common/harness.rs"] mod common;`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the fake token endpoint does with one request.
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
    pub fn issue(expires_in: u64) -> Behave {
        Behave::Issue {
            expires_in: Some(expires_in),
        }
    }
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
    pub headers: HeaderMap,
    pub form: Vec<(String, String)>,
    /// When the request arrived.
    pub at: Instant,
    /// When the response left the handler (None while hanging).
    pub answered: Option<Instant>,
    pub answered_wall: Option<SystemTime>,
    /// The token issued, if any.
    pub token: Option<String>,
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

#[derive(Default)]
struct FakeState {
    queue: VecDeque<Behave>,
    default: Option<Behave>,
    seen: Vec<Seen>,
    issued: u64,
    prefix: String,
    in_flight: u64,
    peak: u64,
}

/// A scriptable fake token endpoint at `{url}`.
#[derive(Clone)]
pub struct FakeAuth {
    pub url: String,
    state: Arc<Mutex<FakeState>>,
}

impl FakeAuth {
    /// Starts on 127.0.0.1:0. Once the queue is empty, `default` applies.
    pub async fn start(default: Behave) -> FakeAuth {
        let state = Arc::new(Mutex::new(FakeState {
            default: Some(default),
            prefix: format!("tok-{:08x}", rand::random::<u32>()),
            ..Default::default()
        }));
        let app = Router::new()
            .route("/token", post(token))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let addr = listener.local_addr().expect("fake addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAuth {
            url: format!("http://{addr}/token"),
            state,
        }
    }

    /// Queues behaviours to use, in order, before the default.
    pub fn push(&self, b: impl IntoIterator<Item = Behave>) {
        self.state.lock().unwrap().queue.extend(b);
    }

    pub fn set_default(&self, b: Behave) {
        self.state.lock().unwrap().default = Some(b);
    }

    pub fn queued(&self) -> usize {
        self.state.lock().unwrap().queue.len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    /// Every token issued so far, oldest first.
    pub fn tokens(&self) -> Vec<String> {
        self.seen().into_iter().filter_map(|s| s.token).collect()
    }

    /// The most requests this server ever had in progress at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.state.lock().unwrap().peak
    }

    /// The last request that got a token.
    pub fn last_issue(&self) -> Option<Seen> {
        self.seen().into_iter().rev().find(|s| s.token.is_some())
    }
}

async fn token(
    State(state): State<Arc<Mutex<FakeState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let (behave, index) = {
        let mut s = state.lock().unwrap();
        let behave = s
            .queue
            .pop_front()
            .or_else(|| s.default.clone())
            .expect("a behaviour");
        s.in_flight += 1;
        s.peak = s.peak.max(s.in_flight);
        s.seen.push(Seen {
            headers,
            form,
            at: Instant::now(),
            answered: None,
            answered_wall: None,
            token: None,
            status: 0,
        });
        (behave, s.seen.len() - 1)
    };
    let issue = |expires_in: Option<serde_json::Value>| {
        let token = {
            let mut s = state.lock().unwrap();
            s.issued += 1;
            format!("{}-{}", s.prefix, s.issued)
        };
        let mut body = serde_json::json!({"access_token": token, "token_type": "Bearer"});
        if let Some(e) = expires_in {
            body["expires_in"] = e;
        }
        (
            200,
            Some(token),
            (StatusCode::OK, axum::Json(body)).into_response(),
        )
    };
    let (status, token, response) = match behave {
        Behave::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behave::IssueAfter {
            expires_in,
            delay_ms,
        } => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            issue(Some(expires_in.into()))
        }
        Behave::ExpiresIn(v) => issue(Some(v)),
        Behave::Redirect { status, location } => (
            status,
            None,
            (
                StatusCode::from_u16(status).unwrap(),
                [("location", location)],
                "",
            )
                .into_response(),
        ),
        Behave::Issue { expires_in } => {
            let token = {
                let mut s = state.lock().unwrap();
                s.issued += 1;
                format!("{}-{}", s.prefix, s.issued)
            };
            let mut body = serde_json::json!({"access_token": token, "token_type": "Bearer"});
            if let Some(e) = expires_in {
                body["expires_in"] = e.into();
            }
            (
                200,
                Some(token),
                (StatusCode::OK, axum::Json(body)).into_response(),
            )
        }
        Behave::Reply {
            status,
            content_type,
            body,
            retry_after,
        } => {
            let mut r = (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", content_type)],
                body,
            )
                .into_response();
            if let Some(after) = retry_after {
                r.headers_mut()
                    .insert("retry-after", after.to_string().parse().unwrap());
            }
            (status, None, r)
        }
    };
    let mut s = state.lock().unwrap();
    s.in_flight -= 1;
    let seen = &mut s.seen[index];
    seen.status = status;
    seen.token = token;
    seen.answered = Some(Instant::now());
    seen.answered_wall = Some(SystemTime::now());
    response
}

/// A sidecar running in this process on ephemeral loopback ports.
pub struct Running {
    pub tokens: SocketAddr,
    pub probes: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), sidecar::RunError>>,
}

/// The configuration header every test uses: ephemeral loopback listeners.
pub const LISTEN: &str = "listen:\n  tokens: 127.0.0.1:0\n  probes: 127.0.0.1:0\n";

pub fn config(yaml: &str) -> sidecar::Config {
    sidecar::Config::from_yaml(yaml, Path::new("test.yaml"), Vec::new())
        .unwrap_or_else(|e| panic!("config: {e}\n{yaml}"))
}

impl Running {
    /// Binds and serves `yaml` (which should start with [`LISTEN`]).
    pub async fn start(yaml: &str) -> Running {
        let sidecar = sidecar::Sidecar::bind(config(yaml)).await.expect("bind");
        let (tokens, probes) = sidecar.local_addrs();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sidecar.serve(async {
            let _ = rx.await;
        }));
        Running {
            tokens,
            probes,
            stop: Some(tx),
            task,
        }
    }

    pub fn tokens_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.tokens)
    }

    pub fn probes_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.probes)
    }

    /// `GET /v1/tokens` as JSON.
    pub async fn snapshot(&self) -> serde_json::Value {
        let r = client()
            .get(self.tokens_url("/v1/tokens"))
            .send()
            .await
            .expect("GET /v1/tokens");
        assert_eq!(r.status(), 200);
        r.json().await.expect("tokens json")
    }

    /// The tenant's current entry (`null` when it has no servable token).
    pub async fn entry(&self, tenant: &str) -> serde_json::Value {
        self.snapshot().await["tenants"][tenant].clone()
    }

    /// Waits for the tenant to hold a token; returns its entry.
    pub async fn wait_token(&self, tenant: &str) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        for _ in 0..1000 {
            last = self.entry(tenant).await;
            if !last.is_null() {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("tenant {tenant} got no token in 10 s: {last}");
    }

    /// Waits for the tenant's token to be a different one than `version`.
    pub async fn wait_new_token(&self, tenant: &str, version: u64) -> serde_json::Value {
        for _ in 0..1000 {
            let e = self.entry(tenant).await;
            if e["version"].as_u64().is_some_and(|v| v != version) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("tenant {tenant} got no token newer than version {version} in 10 s");
    }

    /// `POST /v1/tenants/{tenant}/rejected?version=V`; returns the status.
    pub async fn reject(&self, tenant: &str, version: u64) -> u16 {
        client()
            .post(self.tokens_url(&format!("/v1/tenants/{tenant}/rejected?version={version}")))
            .send()
            .await
            .expect("POST rejected")
            .status()
            .as_u16()
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(self.probes_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// `GET /status` as JSON.
    pub async fn health(&self) -> serde_json::Value {
        client()
            .get(self.probes_url("/status"))
            .send()
            .await
            .expect("GET /status")
            .json()
            .await
            .expect("status json")
    }

    pub async fn status(&self, path: &str) -> u16 {
        client()
            .get(self.probes_url(path))
            .send()
            .await
            .expect("probe")
            .status()
            .as_u16()
    }

    /// Asserts the sidecar is still running (it never crashed).
    pub fn assert_alive(&self) {
        assert!(!self.task.is_finished(), "the sidecar task ended");
    }

    /// Stops the sidecar and waits for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("sidecar stops within 10 s")
            .expect("sidecar task")
            .expect("serve returns Ok");
    }
}

/// A plain HTTP client that never uses a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// The value of the sample `name{labels}` in a Prometheus text body.
/// (An empty `labels` matches the sample without labels.)
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim().parse().expect("metric value"))
}

/// A tenant's fetch counter for one outcome and reason (0 when absent).
pub fn fetches(text: &str, tenant: &str, result: &str, reason: &str) -> f64 {
    metric(
        text,
        "authproxy_token_fetches_total",
        &format!("tenant=\"{tenant}\",result=\"{result}\",reason=\"{reason}\""),
    )
    .unwrap_or(0.0)
}

/// Polls `check` every 10 ms until it holds, or panics naming `what`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("not within {within:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `text` to `name` inside `dir`; returns the path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}
