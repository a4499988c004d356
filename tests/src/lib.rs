//! End-to-end harness: the real Envoy with the freshly built `.wasm`, the
//! real sidecar binary, and fake third-party servers (an OAuth2 token server
//! and an API), all on ephemeral loopback ports so tests run in parallel.
//!
//! # Layout
//! - [`fakes`]: the fake API, a small axum app; the fake auth server and
//!   [`eventually`] come from the shared [`testkit`].
//! - [`procs`]: the sidecar and Envoy processes (launched with
//!   [`testkit::Proc`]), their logs, readiness.
//! - [`shared`]: replicas sharing a throwaway `redis-server`
//!   ([`testkit::redis`]), and what each one serves.
//! - [`Stack`] (here): all of it wired together for one test.
//! - [`prod`]: the production Envoy config run for real ([`prod::ProdStack`]),
//!   with [`tls`] (a test CA via `openssl`) and [`jwt`] (a test issuer).
//!
//! Build inputs first (`scripts/test` does): `cargo build -p sidecar` and
//! `cargo build -p filter --target wasm32-wasip1 --profile wasm`.

pub mod fakes;
pub mod jwt;
pub mod procs;
pub mod prod;
pub mod shared;
pub mod tls;

use std::time::Duration;

pub use fakes::{Behave, FakeApi, FakeAuth, Issue};
pub use procs::{Envoy, Sidecar};
pub use testkit::redis;
pub use testkit::{eventually, repo_root};

/// How to set up one test's stack.
pub struct StackBuilder {
    tenants: Vec<String>,
    lifetime: u64,
    sidecar_yaml_extra: String,
    default_tenant: Option<String>,
    api: Option<axum::Router>,
    auth_mode: Option<Behave>,
    /// Builds the Envoy config from the sidecar's and the API's ports;
    /// default `envoy/local.yaml`.
    envoy_config: Option<EnvoyConfigFn>,
}

/// Builds an Envoy config text from the sidecar's and the API's ports.
pub type EnvoyConfigFn = Box<dyn Fn(u16, u16) -> String + Send>;

/// Fake auth server, fake API, sidecar and Envoy, wired together.
pub struct Stack {
    pub auth: FakeAuth,
    /// The default fake API (absent when the test supplied its own router).
    pub api: Option<FakeApi>,
    pub api_url: String,
    pub sidecar: Sidecar,
    pub envoy: Envoy,
    pub http: reqwest::Client,
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder {
            tenants: vec!["acme".into(), "globex".into()],
            lifetime: 3600,
            sidecar_yaml_extra: String::new(),
            default_tenant: None,
            api: None,
            auth_mode: None,
            envoy_config: None,
        }
    }

    /// The proxy's base URL (`http://127.0.0.1:port`).
    pub fn proxy_url(&self) -> String {
        self.envoy.url()
    }

    /// GET through Envoy as `tenant` (no tenant header when `None`).
    pub async fn get(&self, path: &str, tenant: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.proxy_url()));
        if let Some(t) = tenant {
            req = req.header("x-tenant-id", t);
        }
        req.send().await.expect("request through envoy")
    }

    /// Waits until requests as `tenant` get through with a token on every
    /// Envoy worker ([`token_on_every_worker`]).
    pub async fn wait_for_token(&self, tenant: &str) {
        self.wait_for_token_as(Some(tenant)).await
    }

    /// Like [`Stack::wait_for_token`], sending `tenant` (none: the default).
    pub async fn wait_for_token_as(&self, tenant: Option<&str>) {
        token_on_every_worker(&self.proxy_url(), "/ping", tenant).await
    }
}

/// Waits until `GET {proxy}{path}` as `tenant` gets through with a token
/// (anything but 503) on every Envoy worker ([`on_every_worker`]).
pub async fn token_on_every_worker(proxy: &str, path: &str, tenant: Option<&str>) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    on_every_worker(|| async {
        let mut req = http.get(format!("{proxy}{path}"));
        if let Some(t) = tenant {
            req = req.header("x-tenant-id", t);
        }
        req.send().await.is_ok_and(|r| r.status() != 503)
    })
    .await
}

/// Waits until `ok` (one request on a new connection) holds 20 times in a
/// row. Each Envoy worker's VM loads the token snapshot on its own tick, so
/// one success proves only one worker ready; the kernel spreads new
/// connections over the workers, so 20 in a row leave a chance of about
/// 2^-19 that a worker was never asked.
pub async fn on_every_worker<F, Fut>(mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let streak = std::cell::Cell::new(0);
    eventually(Duration::from_secs(20), "a token on every worker", || {
        let once = ok();
        let streak = &streak;
        async move {
            streak.set(if once.await { streak.get() + 1 } else { 0 });
            streak.get() >= 20
        }
    })
    .await;
}

impl StackBuilder {
    pub fn tenants(mut self, tenants: &[&str]) -> Self {
        self.tenants = tenants.iter().map(|t| t.to_string()).collect();
        self
    }

    /// `expires_in` of tokens issued by the fake auth server.
    pub fn token_lifetime_secs(mut self, secs: u64) -> Self {
        self.lifetime = secs;
        self
    }

    /// Extra top-level YAML for the sidecar (for example a `refresh:` block).
    pub fn sidecar_yaml(mut self, yaml: &str) -> Self {
        self.sidecar_yaml_extra = yaml.to_string();
        self
    }

    pub fn default_tenant(mut self, tenant: &str) -> Self {
        self.default_tenant = Some(tenant.to_string());
        self
    }

    /// What the fake auth server does from the start.
    pub fn auth_mode(mut self, mode: Behave) -> Self {
        self.auth_mode = Some(mode);
        self
    }

    /// Use this router as the third-party API instead of the echoing one.
    pub fn api(mut self, router: axum::Router) -> Self {
        self.api = Some(router);
        self
    }

    /// Run Envoy with the config `f(sidecar_port, api_port)` instead of
    /// `envoy/local.yaml` (see [`procs::envoy_config`]).
    pub fn envoy_config(mut self, f: impl Fn(u16, u16) -> String + Send + 'static) -> Self {
        self.envoy_config = Some(Box::new(f));
        self
    }

    pub async fn start(self) -> Stack {
        let auth = FakeAuth::start(Behave::issue(self.lifetime)).await;
        if let Some(mode) = self.auth_mode {
            auth.set_default(mode);
        }
        let (api, api_url) = match self.api {
            Some(router) => (None, fakes::serve(router).await),
            None => {
                let api = FakeApi::start().await;
                let url = api.url.clone();
                (Some(api), url)
            }
        };
        let sidecar = Sidecar::start(&auth, &self.tenants, &self.sidecar_yaml_extra).await;
        let envoy = match &self.envoy_config {
            Some(f) => {
                Envoy::start_with(&f(sidecar.tokens_addr.port(), fakes::port_of(&api_url))).await
            }
            None => {
                Envoy::start(
                    sidecar.tokens_addr.port(),
                    fakes::port_of(&api_url),
                    self.default_tenant.as_deref(),
                )
                .await
            }
        };
        Stack {
            auth,
            api,
            api_url,
            sidecar,
            envoy,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
        }
    }
}
