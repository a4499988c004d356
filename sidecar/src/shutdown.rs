//! Pod shutdown as Kubernetes runs it, with the sidecar as coordinator.
//!
//! Envoy exits at once on SIGTERM and resets what is in flight, so Envoy's
//! container gets a long `preStop` sleep and its SIGTERM only as a backstop.
//! The sidecar gets SIGTERM after a short `preStop` (the time the endpoint
//! needs to leave the Service) and then:
//!
//! 1. fails readiness and cuts long-polls to [`STOPPING_WAIT`], so it can
//!    tell whether Envoy's fetcher is still there;
//! 2. with `shutdown.envoy_admin` set, tells Envoy to drain
//!    (`POST /drain_listeners?graceful`: `Connection: close` / GOAWAY on
//!    every connection, at once with `--drain-strategy immediate`), to stop
//!    accepting (`POST /drain_listeners`: new connections are refused), waits
//!    until no downstream request is active or `shutdown.drain_timeout`
//!    passed, then `POST /quitquitquit`;
//! 3. keeps refreshing and serving tokens all along, and returns once no
//!    client has polled for `shutdown.idle` (Envoy is gone), or after
//!    `shutdown.serve_max`.
//!
//! [`STOPPING_WAIT`]: crate::http::STOPPING_WAIT

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::{sleep, Instant};
use tracing::{info, warn};

use crate::config::Shutdown;
use crate::http::Liveness;

/// Runs steps 1–3 above (step 1 is the caller's watch flip); returns when the
/// sidecar may close its listeners.
pub async fn linger(cfg: &Shutdown, liveness: &Liveness) {
    let started = Instant::now();
    info!(
        envoy_admin = cfg.envoy_admin.map(|a| a.to_string()),
        serve_max_secs = cfg.serve_max.as_secs_f64(),
        "shutting down: serving tokens until Envoy is gone"
    );
    let wait = async {
        if let Some(admin) = cfg.envoy_admin {
            drain_envoy(admin, cfg.drain_timeout).await;
        }
        while liveness.idle_for() < cfg.idle {
            sleep(Duration::from_millis(50)).await;
        }
    };
    match tokio::time::timeout(cfg.serve_max, wait).await {
        Ok(()) => info!(
            after_secs = started.elapsed().as_secs_f64(),
            "no client polls any more; stopping"
        ),
        Err(_) => warn!(
            serve_max_secs = cfg.serve_max.as_secs_f64(),
            "a client still polls after shutdown.serve_max; stopping anyway"
        ),
    }
}

/// Drains Envoy through its admin interface; see the module docs. Failures
/// are logged and end the drain (Envoy may already be gone).
pub async fn drain_envoy(admin: SocketAddr, timeout: Duration) {
    let http = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(cause = %e, "envoy drain: no http client");
            return;
        }
    };
    let post = |path: &'static str| {
        let http = http.clone();
        async move {
            let r = http.post(format!("http://{admin}{path}")).send().await;
            match r {
                Ok(r) if r.status().is_success() => true,
                Ok(r) => {
                    warn!(path, status = r.status().as_u16(), "envoy admin refused");
                    false
                }
                Err(e) => {
                    warn!(path, cause = %e, "envoy admin unreachable");
                    false
                }
            }
        }
    };
    if !post("/drain_listeners?graceful").await || !post("/drain_listeners").await {
        return;
    }
    info!(%admin, "envoy drains: new connections refused, open ones told to close");
    let deadline = Instant::now() + timeout;
    loop {
        match active_requests(&http, admin).await {
            Some(0) => break,
            Some(n) if Instant::now() >= deadline => {
                warn!(
                    active = n,
                    "requests still in flight at shutdown.drain_timeout; stopping envoy anyway"
                );
                break;
            }
            None => break,
            Some(_) => sleep(Duration::from_millis(100)).await,
        }
    }
    if post("/quitquitquit").await {
        info!("envoy drained; told it to exit");
    }
}

/// Active downstream requests on Envoy's listeners (admin excluded).
async fn active_requests(http: &reqwest::Client, admin: SocketAddr) -> Option<u64> {
    let url = format!("http://{admin}/stats?format=json&filter=downstream_rq_active$");
    let body: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
    let stats = body.get("stats")?.as_array()?;
    Some(
        stats
            .iter()
            .filter(|s| {
                s["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("http.") && !n.starts_with("http.admin."))
            })
            .filter_map(|s| s["value"].as_u64())
            .sum(),
    )
}
