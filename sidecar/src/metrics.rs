//! Per-tenant counters and gauges, rendered in the Prometheus text format,
//! and the per-tenant health that `GET /status` reports.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::schedule::Clamp;
use crate::store::{unix_ms, Snapshot};

/// The token-request scheduler's gauges (all tenants together).
#[derive(Debug, Default)]
pub struct FetchGauges {
    /// Tenants waiting for a free request slot.
    pub queued: AtomicU64,
    /// Token requests in flight.
    pub in_flight: AtomicU64,
    /// The most requests ever in flight at once.
    pub in_flight_peak: AtomicU64,
}

/// Counters for one tenant. Cheap to update from its refresh task.
#[derive(Debug, Default)]
pub struct TenantMetrics {
    fetch_success: AtomicU64,
    fetch_failure: Mutex<BTreeMap<&'static str, u64>>,
    consecutive_failures: AtomicU64,
    last_success_unix: AtomicU64,
    rejections: AtomicU64,
    forced_refreshes: AtomicU64,
    /// Reason of the last failure since the last success.
    last_error: Mutex<Option<&'static str>>,
    /// The lifetime in use (after clamping), in seconds.
    lifetime_secs: AtomicU64,
    clamped_floor: AtomicU64,
    clamped_ceiling: AtomicU64,
}

impl TenantMetrics {
    pub fn success(&self, now: SystemTime, lifetime: Duration) {
        self.fetch_success.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.lifetime_secs
            .store(lifetime.as_secs(), Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
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
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(reason);
        }
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn rejection(&self) {
        self.rejections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn forced_refresh(&self) {
        self.forced_refreshes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn clamped(&self, clamp: Clamp) {
        match clamp {
            Clamp::Floor => &self.clamped_floor,
            Clamp::Ceiling => &self.clamped_ceiling,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    fn failures_total(&self) -> u64 {
        self.fetch_failure
            .lock()
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }
}

/// One tenant's health as `GET /status` shows it. Never a token.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TenantStatus {
    /// `valid`: a token is served and the last fetch succeeded;
    /// `expiring`: a token is served but refreshing it fails, so it will be
    /// withdrawn at `expires_at_ms` unless a fetch succeeds; `failing`: no
    /// token, and fetching fails; `none`: no token yet, no failure yet (the
    /// first fetch is queued or under way).
    pub state: &'static str,
    /// When the served token stops being served (Unix ms), or null.
    pub expires_at_ms: Option<u64>,
    /// The reason of the last failure since the last success, or null.
    pub last_error: Option<&'static str>,
    pub consecutive_failures: u64,
    pub fetches: FetchCounts,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FetchCounts {
    pub success: u64,
    pub failure: u64,
}

/// All tenants' metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    tenants: Arc<BTreeMap<String, Arc<TenantMetrics>>>,
    /// The shared token store's counters, when one is configured.
    shared: Option<Arc<crate::shared::SharedMetrics>>,
    pub fetches: Arc<FetchGauges>,
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
            fetches: Arc::default(),
        }
    }

    /// Also renders the shared token store's counters.
    pub fn with_shared(mut self, shared: Arc<crate::shared::SharedMetrics>) -> Metrics {
        self.shared = Some(shared);
        self
    }

    /// Every tenant's health, for `GET /status`.
    pub fn status(&self, snap: &Snapshot, now: SystemTime) -> BTreeMap<&str, TenantStatus> {
        self.tenants
            .iter()
            .map(|(id, m)| {
                let token = snap.valid(id, now);
                let failures = m.consecutive_failures.load(Ordering::Relaxed);
                let state = match (token.is_some(), failures > 0) {
                    (true, false) => "valid",
                    (true, true) => "expiring",
                    (false, true) => "failing",
                    (false, false) => "none",
                };
                let status = TenantStatus {
                    state,
                    expires_at_ms: token.map(|e| unix_ms(e.serve_until)),
                    last_error: m.last_error.lock().ok().and_then(|e| *e),
                    consecutive_failures: failures,
                    fetches: FetchCounts {
                        success: m.fetch_success.load(Ordering::Relaxed),
                        failure: m.failures_total(),
                    },
                };
                (id.as_str(), status)
            })
            .collect()
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
        let simple: [Gauge; 6] = [
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
            (
                "authproxy_token_lifetime_seconds",
                "gauge",
                "Lifetime of the last token, after clamping to [min_lifetime, max_lifetime].",
                |m| m.lifetime_secs.load(Ordering::Relaxed),
            ),
            (
                "authproxy_token_state",
                "gauge",
                "0 none, 1 valid, 2 expiring (served, refresh failing), 3 failing (no token, fetches failing).",
                |_| 0,
            ),
        ];
        let states = self.status(snap, now);
        for (name, kind, help, get) in simple {
            family(&mut out, name, kind, help);
            for (id, m) in self.tenants.iter() {
                let value = if name == "authproxy_token_state" {
                    match states.get(id.as_str()).map(|s| s.state) {
                        Some("valid") => 1,
                        Some("expiring") => 2,
                        Some("failing") => 3,
                        _ => 0,
                    }
                } else {
                    get(m)
                };
                let _ = writeln!(out, "{name}{{tenant=\"{id}\"}} {value}");
            }
        }
        family(
            &mut out,
            "authproxy_token_lifetime_clamped_total",
            "counter",
            "Tokens whose expires_in was outside [min_lifetime, max_lifetime], by bound.",
        );
        for (id, m) in self.tenants.iter() {
            for (bound, n) in [("floor", &m.clamped_floor), ("ceiling", &m.clamped_ceiling)] {
                let n = n.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "authproxy_token_lifetime_clamped_total{{tenant=\"{id}\",bound=\"{bound}\"}} {n}"
                );
            }
        }
        let f = &self.fetches;
        for (name, help, v) in [
            (
                "authproxy_token_requests_queued",
                "Token requests waiting for a free slot (refresh.max_concurrent_fetches).",
                &f.queued,
            ),
            (
                "authproxy_token_requests_in_flight",
                "Token requests in flight.",
                &f.in_flight,
            ),
            (
                "authproxy_token_requests_in_flight_peak",
                "The most token requests ever in flight at once.",
                &f.in_flight_peak,
            ),
        ] {
            family(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        if let Some(shared) = &self.shared {
            shared.render(&mut out);
        }
        out
    }
}
