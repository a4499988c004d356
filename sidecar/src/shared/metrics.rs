//! Counters of the shared token store, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Whole-process counters (tenants are few and share one connection).
#[derive(Debug, Default)]
pub struct SharedMetrics {
    fetched: AtomicU64,
    fetched_local: AtomicU64,
    adopted: AtomicU64,
    lock_waits: AtomicU64,
    lost_locks: AtomicU64,
    redis_errors: AtomicU64,
    subscribed: AtomicBool,
}

impl SharedMetrics {
    /// This replica fetched a token under the lock and published it.
    pub fn fetched(&self) {
        self.fetched.fetch_add(1, Ordering::Relaxed);
    }
    /// This replica fetched a token without publishing it (Redis unreachable).
    pub fn fetched_local(&self) {
        self.fetched_local.fetch_add(1, Ordering::Relaxed);
    }
    /// This replica took over another replica's token.
    pub fn adopted(&self) {
        self.adopted.fetch_add(1, Ordering::Relaxed);
    }
    pub fn lock_wait(&self) {
        self.lock_waits.fetch_add(1, Ordering::Relaxed);
    }
    pub fn lost_lock(&self) {
        self.lost_locks.fetch_add(1, Ordering::Relaxed);
    }
    pub fn redis_error(&self) {
        self.redis_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn set_subscribed(&self, up: bool) {
        self.subscribed.store(up, Ordering::Relaxed);
    }

    pub fn redis_errors_seen(&self) -> u64 {
        self.redis_errors.load(Ordering::Relaxed)
    }
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// Appends the metric families to `out`.
    pub fn render(&self, out: &mut String) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP authproxy_shared_tokens_total Tokens by how this replica got them from the shared store: fetched (and published), fetched_local (store unreachable), adopted (another replica's).\n# TYPE authproxy_shared_tokens_total counter"
        );
        for (how, n) in [
            ("fetched", get(&self.fetched)),
            ("fetched_local", get(&self.fetched_local)),
            ("adopted", get(&self.adopted)),
        ] {
            let _ = writeln!(out, "authproxy_shared_tokens_total{{source=\"{how}\"}} {n}");
        }
        let simple = [
            (
                "authproxy_shared_lock_waits_total",
                "counter",
                "Times this replica waited for another replica's fetch lock.",
                get(&self.lock_waits),
            ),
            (
                "authproxy_shared_lost_locks_total",
                "counter",
                "Fetched tokens dropped because the lock expired and another replica published first.",
                get(&self.lost_locks),
            ),
            (
                "authproxy_shared_redis_errors_total",
                "counter",
                "Failed Redis commands and lost or failed subscriptions.",
                get(&self.redis_errors),
            ),
            (
                "authproxy_shared_subscribed",
                "gauge",
                "1 while the notification subscription is up.",
                u64::from(self.subscribed.load(Ordering::Relaxed)),
            ),
        ];
        for (name, kind, help, n) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {n}"
            );
        }
    }
}
