//! Per-tenant counters and gauges, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::store::Snapshot;

/// Counters for one tenant. Cheap to update from its refresh task.
#[derive(Debug, Default)]
pub struct TenantMetrics {
    fetch_success: AtomicU64,
    fetch_failure: Mutex<BTreeMap<&'static str, u64>>,
    consecutive_failures: AtomicU64,
    last_success_unix: AtomicU64,
    rejections: AtomicU64,
    forced_refreshes: AtomicU64,
}

impl TenantMetrics {
    pub fn success(&self, now: SystemTime) {
        self.fetch_success.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.last_success_unix.store(secs, Ordering::Relaxed);
    }

    /// Records a failure; returns the number of consecutive failures.
    pub fn failure(&self, reason: &'static str) -> u64 {
        if let Ok(mut map) = self.fetch_failure.lock() {
            *map.entry(reason).or_default() += 1;
        }
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn rejection(&self) {
        self.rejections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn forced_refresh(&self) {
        self.forced_refreshes.fetch_add(1, Ordering::Relaxed);
    }
}

/// All tenants' metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    tenants: Arc<BTreeMap<String, Arc<TenantMetrics>>>,
    /// The shared token store's counters, when one is configured.
    shared: Option<Arc<crate::shared::SharedMetrics>>,
}

impl Metrics {
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a str>) -> Metrics {
        Metrics {
            tenants: Arc::new(
                ids.into_iter()
                    .map(|id| (id.to_owned(), Arc::default()))
                    .collect(),
            ),
            shared: None,
        }
    }

    /// Also renders the shared token store's counters.
    pub fn with_shared(mut self, shared: Arc<crate::shared::SharedMetrics>) -> Metrics {
        self.shared = Some(shared);
        self
    }

    pub fn tenant(&self, id: &str) -> Arc<TenantMetrics> {
        self.tenants.get(id).cloned().unwrap_or_default()
    }

    /// Renders every metric; token expiry comes from the store snapshot.
    pub fn render(&self, snap: &Snapshot, now: SystemTime) -> String {
        let mut out = String::with_capacity(256 + self.tenants.len() * 512);
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "authproxy_token_seconds_to_expiry",
            "gauge",
            "Seconds until the served token stops being served (0 when there is none).",
        );
        for id in self.tenants.keys() {
            let secs = snap
                .valid(id, now)
                .and_then(|e| e.serve_until.duration_since(now).ok())
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let _ = writeln!(
                out,
                "authproxy_token_seconds_to_expiry{{tenant=\"{id}\"}} {secs:.3}"
            );
        }
        family(
            &mut out,
            "authproxy_token_valid",
            "gauge",
            "1 while the tenant holds a servable token.",
        );
        for id in self.tenants.keys() {
            let valid = u8::from(snap.valid(id, now).is_some());
            let _ = writeln!(out, "authproxy_token_valid{{tenant=\"{id}\"}} {valid}");
        }
        family(
            &mut out,
            "authproxy_token_fetches_total",
            "counter",
            "Token requests by outcome and failure reason.",
        );
        for (id, m) in self.tenants.iter() {
            let ok = m.fetch_success.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "authproxy_token_fetches_total{{tenant=\"{id}\",result=\"success\",reason=\"\"}} {ok}"
            );
            if let Ok(map) = m.fetch_failure.lock() {
                for (reason, n) in map.iter() {
                    let _ = writeln!(
                        out,
                        "authproxy_token_fetches_total{{tenant=\"{id}\",result=\"failure\",reason=\"{reason}\"}} {n}"
                    );
                }
            }
        }
        type Gauge = (
            &'static str,
            &'static str,
            &'static str,
            fn(&TenantMetrics) -> u64,
        );
        let simple: [Gauge; 4] = [
            (
                "authproxy_token_consecutive_failures",
                "gauge",
                "Failed fetches since the last success.",
                |m| m.consecutive_failures.load(Ordering::Relaxed),
            ),
            (
                "authproxy_token_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the last successful fetch (0 if none).",
                |m| m.last_success_unix.load(Ordering::Relaxed),
            ),
            (
                "authproxy_upstream_rejections_total",
                "counter",
                "Upstream 401s reported by the filter.",
                |m| m.rejections.load(Ordering::Relaxed),
            ),
            (
                "authproxy_forced_refreshes_total",
                "counter",
                "Refreshes started early because the upstream rejected the token.",
                |m| m.forced_refreshes.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, get) in simple {
            family(&mut out, name, kind, help);
            for (id, m) in self.tenants.iter() {
                let _ = writeln!(out, "{name}{{tenant=\"{id}\"}} {}", get(m));
            }
        }
        if let Some(shared) = &self.shared {
            shared.render(&mut out);
        }
        out
    }
}
