//! The two HTTP listeners: the loopback token API for the filter, and the
//! probes and metrics for the kubelet and Prometheus.
//!
//! Token API (loopback only), as the `protocol` crate defines it:
//! - `GET /v1/tokens?after=V&wait_ms=M`: the snapshot as JSON. When the
//!   current version equals `after`, waits up to `M` ms (at most 60 s) for a
//!   change, and answers `204` if none came.
//! - `POST /v1/tenants/{tenant}/rejected?version=V`: the upstream answered
//!   401 to the token with version `V`; `202`.
//!
//! Errors are JSON: `{"error": "<stable code>", "message": "..."}`.
//!
//! Probes (`/livez`, `/readyz`, `/status`, `/metrics`): see ARCHITECTURE.md
//! for the one readiness definition and the `/status` shape.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::{PollQuery, RejectQuery};
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use crate::store::{Entry, Snapshot, Store};

/// Longest long-poll the API accepts ([`protocol::MAX_WAIT_MS`]).
pub const MAX_WAIT: Duration = Duration::from_millis(protocol::MAX_WAIT_MS);
/// Longest long-poll while shutting down, so that a client that is still
/// there keeps coming back and one that is gone is noticed.
pub const STOPPING_WAIT: Duration = Duration::from_millis(500);

/// Readiness inputs and token-API activity, shared by the handlers and the
/// shutdown sequence.
#[derive(Debug)]
pub struct Liveness {
    /// A snapshot was handed to a client (Envoy's fetcher) since start.
    pub polled: AtomicBool,
    /// Token API requests in progress.
    active: AtomicUsize,
    /// When the last token API request started or ended.
    last: Mutex<tokio::time::Instant>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            polled: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            last: Mutex::new(tokio::time::Instant::now()),
        }
    }
}

impl Liveness {
    fn touch(&self) {
        if let Ok(mut l) = self.last.lock() {
            *l = tokio::time::Instant::now();
        }
    }

    /// Counts a request until the guard drops.
    fn enter(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.touch();
        ActiveGuard(self.clone())
    }

    /// How long no token API request has been in progress (zero while one is).
    pub fn idle_for(&self) -> Duration {
        if self.active.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.last
            .lock()
            .map(|l| l.elapsed())
            .unwrap_or(Duration::ZERO)
    }
}

struct ActiveGuard(Arc<Liveness>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Metrics,
    pub required: Arc<Vec<String>>,
    pub rejections: Arc<HashMap<String, mpsc::Sender<u64>>>,
    /// Flips to `true` on SIGTERM: readiness fails, long-polls are cut short.
    pub stopping: watch::Receiver<bool>,
    /// Flips to `true` when the listeners close, so long-polls end at once.
    pub shutdown: watch::Receiver<bool>,
    pub liveness: Arc<Liveness>,
}

/// Every error the API returns.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    #[error("bad query: {0}")]
    BadQuery(String),
}

impl AppError {
    fn code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::UnknownTenant(_) => (StatusCode::NOT_FOUND, "unknown_tenant"),
            AppError::BadQuery(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.code();
        tracing::debug!(error = code, message = %self, "token api error");
        let body = protocol::ErrorBody {
            error: code.into(),
            message: self.to_string().into(),
        };
        (status, Json(body)).into_response()
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::BadQuery(r.body_text())
    }
}

/// Routes of the loopback token API.
pub fn token_api(state: AppState) -> Router {
    Router::new()
        .route(protocol::TOKENS_PATH, get(tokens))
        .route(protocol::REJECTED_ROUTE, post(rejected))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(protocol::ErrorBody {
                    error: "not_found".into(),
                    message: "no such endpoint".into(),
                }),
            )
        })
        .with_state(state)
}

/// Routes of the probe and metrics listener. Nothing here is logged.
pub fn probes(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The snapshot with every token that is past its time removed, so a late
/// expiry timer can never hand out an expired token.
fn servable(snap: &Snapshot, now: SystemTime) -> Snapshot {
    if snap
        .tenants
        .values()
        .flatten()
        .all(|e: &Arc<Entry>| e.serve_until > now)
    {
        return snap.clone();
    }
    let tenants = snap
        .tenants
        .iter()
        .map(|(id, e)| (id.clone(), e.clone().filter(|e| e.serve_until > now)))
        .collect();
    Snapshot {
        version: snap.version,
        tenants: Arc::new(tenants),
        callers: snap.callers.clone(),
    }
}

async fn tokens(
    State(state): State<AppState>,
    query: Result<Query<PollQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let _active = state.liveness.enter();
    let Query(q) = query?;
    let mut rx = state.store.subscribe();
    let unchanged = q.after == Some(rx.borrow_and_update().version);
    if unchanged {
        let mut wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_WAIT);
        let mut stopping = state.stopping.clone();
        let already_stopping = *stopping.borrow_and_update();
        if already_stopping {
            wait = wait.min(STOPPING_WAIT);
        }
        let mut shutdown = state.shutdown.clone();
        let changed = tokio::select! {
            r = tokio::time::timeout(wait, rx.changed()) => matches!(r, Ok(Ok(()))),
            _ = shutdown.wait_for(|s| *s) => false,
            _ = stopping.wait_for(|s| *s), if !already_stopping => false,
        };
        if !changed {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    let snap = servable(&rx.borrow().clone(), SystemTime::now());
    state.liveness.polled.store(true, Ordering::SeqCst);
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(snap)).into_response())
}

async fn rejected(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    query: Result<Query<RejectQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(q) = query?;
    let tx = state
        .rejections
        .get(&tenant)
        .ok_or_else(|| AppError::UnknownTenant(tenant.clone()))?;
    // A full queue means a refresh is already pending: coalesce.
    let _ = tx.try_send(q.version);
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"status": "accepted"})),
    )
        .into_response())
}

/// Ready = this pod can answer: the sidecar serves, a client (Envoy's
/// fetcher) has received a snapshot since start, and no shutdown has begun.
/// Tenants without a token do not count, unless they opted in with
/// `required: true`.
async fn readyz(State(state): State<AppState>) -> Response {
    let snap = state.store.snapshot();
    let now = SystemTime::now();
    let serving = state.liveness.polled.load(Ordering::SeqCst) && !*state.stopping.borrow();
    if serving
        && state
            .required
            .iter()
            .all(|id| snap.valid(id, now).is_some())
    {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Per-tenant health as JSON; never a token.
async fn status(State(state): State<AppState>) -> Response {
    let snap = state.store.snapshot();
    let tenants = state.metrics.status(&snap, SystemTime::now());
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "tenants": tenants })),
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state
        .metrics
        .render(&state.store.snapshot(), SystemTime::now());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
