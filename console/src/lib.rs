//! The admin console: a small axum app beside the importer that shows import runs (with live
//! progress), their rejects, the imported data (driven by the type registry) and the proxy's
//! tenants, and lets admins re-run an import.
//!
//! Pages are server-rendered HTML (minijinja templates compiled into the binary), enhanced by
//! htmx and its SSE extension (vendored under `static/`, no CDN). No page is open: every route
//! but the probes, the login page and static files needs a signed-in user.
//!
//! # Layout
//! - [`config`]: command line and environment, validated into one [`config::Config`] (exit 64).
//! - [`auth`]: users file (argon2), SSO header, signed session cookies, CSRF tokens, roles;
//!   [`throttle`]: backoff after repeated wrong passwords.
//! - [`store`]: one query API over PostgreSQL (sqlx) and SQLite (rusqlite, read-only).
//! - [`runs`]: `import_runs`/`import_rejects` queries; [`browse`]: registry-driven data queries.
//! - [`indexes`]: PostgreSQL trigram indexes for *contains* filters, built in the background.
//! - [`live`]: PostgreSQL `LISTEN import_runs` fanned out to server-sent event streams.
//! - [`rerun`]: local `importer run` processes or Kubernetes Jobs from the CronJob template.
//! - [`tenants`]: the sidecars' `/status`; [`charts`]: 30-day SVG charts.
//! - [`web`]: routes, handlers, templates, errors, logging and security headers.

pub mod auth;
pub mod browse;
pub mod charts;
pub mod config;
pub mod indexes;
pub mod live;
pub mod rerun;
pub mod runs;
pub mod store;
pub mod tenants;
pub mod throttle;
pub mod web;

use std::future::Future;
use std::sync::Arc;

use crate::config::Config;
use crate::store::Store;

/// Failures that stop the console.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listen {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Store(#[from] store::StoreError),
    #[error("re-run setup: {0}")]
    Rerun(#[from] rerun::RerunError),
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("serve: {0}")]
    Serve(std::io::Error),
}

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub hub: live::Hub,
    pub rerun: rerun::Runner,
    pub http: reqwest::Client,
    pub templates: Arc<minijinja::Environment<'static>>,
    /// One password check at a time: argon2 is slow and uses 12 MiB per check.
    pub login_gate: Arc<tokio::sync::Semaphore>,
    /// Backoff for user names with repeated wrong passwords.
    pub login_throttle: Arc<throttle::Throttle>,
}

impl AppState {
    /// Connects the store, starts the notification listener, and (PostgreSQL) creates the
    /// console's indexes when asked, in the background (`indexes`).
    pub async fn new(config: Config) -> Result<Self, Error> {
        let store = Store::connect(&config.database).await?;
        if let Some(pool) = store.pg_pool() {
            let mut defs = Vec::new();
            if config.ensure_indexes {
                defs.extend(indexes::base_indexes());
            }
            if config.column_indexes {
                defs.extend(indexes::column_indexes(&config.registry));
            }
            if config.ensure_indexes && config.trigram_indexes {
                defs.extend(indexes::trigram_indexes(&config.registry));
            }
            indexes::spawn(pool.clone(), defs);
        }
        let hub = live::Hub::start(&store);
        let rerun = rerun::Runner::new(
            config.rerun.clone(),
            &config.database,
            config.registry_path.clone(),
        )?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?;
        Ok(Self {
            config: Arc::new(config),
            store,
            hub,
            rerun,
            http,
            templates: Arc::new(web::templates()),
            login_gate: Arc::new(tokio::sync::Semaphore::new(1)),
            login_throttle: Arc::default(),
        })
    }
}

/// Serves the console until `shutdown` resolves, then drains open requests (SSE streams end).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = config.listen;
    let state = AppState::new(config).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "console listening");
    serve(listener, state, shutdown).await
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    axum::serve(listener, web::app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Serve)
}
