//! The auth-proxy sidecar: obtains OAuth2 tokens for many tenants, refreshes
//! them before they expire, and hands them to Envoy's Wasm filter over a
//! loopback-only listener. A second listener serves probes and metrics.
//!
//! # Layout
//! - [`config`]: the typed configuration, YAML plus `AUTHPROXY__*` overrides.
//! - [`secret`]: secrets from files or the environment, redacted when printed.
//! - [`oauth`]: one token request (client authentication, grants) and the
//!   classification of its response.
//! - [`schedule`]: one tenant's refresh rules as a pure state machine.
//! - [`refresh`]: the per-tenant task that drives a schedule, and the
//!   limiter that bounds concurrent token requests.
//! - [`store`]: the versioned token snapshot and its watch channel.
//! - [`http`]: the token API and the probe/metrics routers.
//! - [`metrics`]: per-tenant counters in the Prometheus text format, and
//!   the per-tenant health of `/status`.
//! - [`shared`]: one token per tenant shared by all replicas through Redis
//!   (opt-in).
//! - [`shutdown`]: SIGTERM as Kubernetes sends it: drain Envoy, keep serving
//!   tokens until it is gone.

pub mod config;
pub mod http;
pub mod metrics;
pub mod oauth;
pub mod refresh;
pub mod schedule;
pub mod secret;
pub mod shared;
pub mod shutdown;
pub mod store;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::info;

pub use config::Config;

/// How long in-flight requests may take to finish after shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);

/// Why the sidecar could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("bind {name} listener {addr}: {source}")]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("serve: {0}")]
    Serve(std::io::Error),
    #[error("shared token store: {0}")]
    Shared(#[from] shared::SharedError),
}

/// The sidecar with its listeners bound, ready to serve.
pub struct Sidecar {
    config: Config,
    tokens: TcpListener,
    probes: TcpListener,
}

impl Sidecar {
    /// Binds both listeners (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Sidecar, RunError> {
        let bind = |name, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Bind { name, addr, source })
        };
        let tokens = bind("tokens", config.listen.tokens).await?;
        let probes = bind("probes", config.listen.probes).await?;
        Ok(Sidecar {
            config,
            tokens,
            probes,
        })
    }

    /// The bound (tokens, probes) addresses.
    pub fn local_addrs(&self) -> (SocketAddr, SocketAddr) {
        let addr = |l: &TcpListener, fallback| l.local_addr().unwrap_or(fallback);
        (
            addr(&self.tokens, self.config.listen.tokens),
            addr(&self.probes, self.config.listen.probes),
        )
    }

    /// Serves until `shutdown` resolves, then shuts down as
    /// [`shutdown`](crate::shutdown) describes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let client = oauth::client()?;
        let policy = Arc::new(self.config.refresh.clone());
        self.serve_with(refresh::HttpFetcher { client, policy }, shutdown)
            .await
    }

    /// Serves with a given token fetcher (tests script the auth server).
    pub async fn serve_with<F: refresh::Fetcher>(
        self,
        fetcher: F,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RunError> {
        let (tokens_addr, probes_addr) = self.local_addrs();
        let ids: Vec<&str> = self.config.tenants.iter().map(|t| t.id.as_str()).collect();
        let callers = self
            .config
            .tenants
            .iter()
            .filter(|t| !t.callers.is_empty())
            .map(|t| (t.id.clone(), t.callers.clone()))
            .collect();
        for t in self.config.tenants.iter().filter(|t| t.callers.is_empty()) {
            tracing::warn!(
                tenant = %t.id,
                "tenant has no callers: only an Envoy in anonymous identity mode will serve it, to anyone who can reach it"
            );
        }
        let store = store::Store::with_callers(ids.iter().copied(), callers);
        let mut metrics = metrics::Metrics::new(ids.iter().copied());
        let shared = match &self.config.shared {
            Some(cfg) => {
                let m = Arc::new(shared::SharedMetrics::default());
                metrics = metrics.with_shared(m.clone());
                info!(mode = cfg.mode.as_str(), prefix = %cfg.key_prefix, "sharing tokens through redis");
                Some(shared::Shared::start(cfg.clone(), &self.config.tenants, m)?)
            }
            None => None,
        };
        let policy = Arc::new(self.config.refresh.clone());
        let fetcher = Arc::new(fetcher);
        let limiter = Arc::new(refresh::Limiter::new(
            policy.max_concurrent_fetches,
            metrics.fetches.clone(),
        ));
        let start = tokio::time::Instant::now();
        let spread = policy.start_spread_for(self.config.tenants.len());
        let mut loops = JoinSet::new();
        let mut rejections = HashMap::new();
        for tenant in &self.config.tenants {
            let (tx, rx) = mpsc::channel(4);
            rejections.insert(tenant.id.clone(), tx);
            loops.spawn(
                refresh::TenantLoop {
                    tenant: Arc::new(tenant.clone()),
                    policy: policy.clone(),
                    fetcher: fetcher.clone(),
                    limiter: limiter.clone(),
                    store: store.clone(),
                    metrics: metrics.tenant(&tenant.id),
                    rejections: rx,
                    shared: shared.as_ref().map(|s| s.link(tenant)),
                    first_fetch: start + spread.mul_f64(rand::random::<f64>()),
                }
                .run(),
            );
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let (stopping_tx, stopping_rx) = watch::channel(false);
        let liveness = Arc::new(http::Liveness::default());
        let state = http::AppState {
            store,
            metrics,
            required: Arc::new(
                self.config
                    .tenants
                    .iter()
                    .filter(|t| t.required)
                    .map(|t| t.id.clone())
                    .collect(),
            ),
            rejections: Arc::new(rejections),
            stopping: stopping_rx,
            shutdown: stop_rx.clone(),
            liveness: liveness.clone(),
        };
        info!(
            tokens = %tokens_addr,
            probes = %probes_addr,
            tenants = self.config.tenants.len(),
            "listening"
        );
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let token_server = axum::serve(self.tokens, http::token_api(state.clone()))
            .with_graceful_shutdown(stopped(stop_rx.clone()));
        let probe_server = axum::serve(self.probes, http::probes(state))
            .with_graceful_shutdown(stopped(stop_rx.clone()));
        let servers = async { tokio::try_join!(token_server, probe_server) };
        tokio::pin!(servers);
        tokio::select! {
            r = &mut servers => { r.map_err(RunError::Serve)?; }
            _ = shutdown => {
                let _ = stopping_tx.send(true);
                tokio::select! {
                    r = &mut servers => { r.map_err(RunError::Serve)?; return Ok(()); }
                    _ = crate::shutdown::linger(&self.config.shutdown, &liveness) => {}
                }
                info!("closing the listeners");
                let _ = stop_tx.send(true);
                loops.abort_all();
                if tokio::time::timeout(DRAIN, &mut servers).await.is_err() {
                    info!("drain timed out; closing remaining connections");
                }
            }
        }
        Ok(())
    }
}

/// Binds and serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    Sidecar::bind(config).await?.serve(shutdown).await
}
