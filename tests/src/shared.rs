//! Helpers for the shared-token tests (`tests/tests/shared_*.rs`): sidecar
//! replicas sharing tokens through a throwaway Redis, and a follower that
//! records what each replica's token API serves, change by change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::fakes::FakeAuth;
use crate::procs::Sidecar;
use crate::redis::RedisServer;

pub const TENANTS: [&str; 2] = ["acme", "globex"];

/// Sidecar YAML: 4 s tokens (refreshed every 1.6-2.4 s, served 3 s), 1 s
/// token requests, a 2 s lock, quick backoff.
pub fn yaml(redis: &RedisServer, mode: &str) -> String {
    format!(
        "refresh:\n  expiry_margin: 1s\n  min_lifetime: 1s\n  max_fetches_per_minute: 600\n  request_timeout: 1s\n  backoff_initial: 100ms\n  backoff_max: 400ms\n  rejection_min_interval: 100ms\nshared:\n  url: {}\n  mode: {mode}\n  lock_ttl: 2s\n  timeout: 1s\n",
        redis.url()
    )
}

pub async fn replicas(auth: &FakeAuth, yaml: &str, n: usize) -> Vec<Sidecar> {
    let tenants: Vec<String> = TENANTS.iter().map(|t| t.to_string()).collect();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Sidecar::start(auth, &tenants, yaml).await);
    }
    out
}

/// One change a sidecar's long-poll answered: (when, tenant, token).
pub type Served = (Instant, String, Option<String>);

/// What one sidecar served, change by change.
#[derive(Clone, Default)]
pub struct Timeline(Arc<Mutex<Vec<Served>>>);

impl Timeline {
    /// Follows the sidecar's token API with long-polls, recording each change.
    pub fn follow(sidecar: &Sidecar) -> Timeline {
        let timeline = Timeline::default();
        let url = sidecar.tokens_url();
        let t = timeline.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut after = 0u64;
            let mut last: HashMap<String, Option<String>> = HashMap::new();
            loop {
                let r = http
                    .get(format!("{url}/v1/tokens?after={after}&wait_ms=20000"))
                    .send()
                    .await;
                let Ok(r) = r else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                if r.status() != 200 {
                    continue;
                }
                let at = Instant::now();
                let Ok(v) = r.json::<serde_json::Value>().await else {
                    continue;
                };
                after = v["version"].as_u64().unwrap_or(0);
                for tenant in TENANTS {
                    let token = v["tenants"][tenant]["header"]
                        .as_str()
                        .and_then(|h| h.strip_prefix("Bearer "))
                        .map(str::to_string);
                    if last.get(tenant) != Some(&token) {
                        last.insert(tenant.to_string(), token.clone());
                        t.0.lock().unwrap().push((at, tenant.to_string(), token));
                    }
                }
            }
        });
        timeline
    }

    pub fn entries(&self) -> Vec<Served> {
        self.0.lock().unwrap().clone()
    }

    /// When this sidecar first served `token`.
    pub fn first_served(&self, token: &str) -> Option<Instant> {
        self.entries()
            .into_iter()
            .find(|(_, _, t)| t.as_deref() == Some(token))
            .map(|(at, _, _)| at)
    }

    /// The token it served last for `tenant`.
    pub fn current(&self, tenant: &str) -> Option<String> {
        self.entries()
            .into_iter()
            .rev()
            .find(|(_, t, _)| t == tenant)
            .and_then(|(_, _, token)| token)
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The `authproxy_shared_*` metric lines of every replica, for messages.
pub async fn counters(sidecars: &[Sidecar]) -> String {
    let mut out = String::new();
    for (i, s) in sidecars.iter().enumerate() {
        let Ok(r) = reqwest::get(format!("{}/metrics", s.probes_url())).await else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("authproxy_shared_"))
            .collect();
        out += &format!("replica {i}: {}\n", lines.join(" "));
    }
    out
}
