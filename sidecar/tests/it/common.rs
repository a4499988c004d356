//! What the sidecar's test modules share: an in-process sidecar and small
//! HTTP and metrics helpers. The fake token server, the process launcher and
//! `eventually` are the workspace's one [`testkit`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use testkit::eventually;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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
        let what = format!("a token for {tenant}");
        eventually(Duration::from_secs(10), &what, || async {
            Some(self.entry(tenant).await).filter(|e| !e.is_null())
        })
        .await
    }

    /// Waits for the tenant's token to be a different one than `version`.
    pub async fn wait_new_token(&self, tenant: &str, version: u64) -> serde_json::Value {
        let what = format!("a token for {tenant} newer than version {version}");
        eventually(Duration::from_secs(10), &what, || async {
            Some(self.entry(tenant).await)
                .filter(|e| e["version"].as_u64().is_some_and(|v| v != version))
        })
        .await
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
