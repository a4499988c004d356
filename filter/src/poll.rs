//! The fetcher's long-poll and report state machine, free of host calls so it
//! can be tested natively.
//!
//! One poll is in flight at a time. A `200` carries a new snapshot to publish,
//! a `204` means nothing changed within the wait, anything else (including a
//! snapshot that doesn't parse) backs off exponentially.

use std::collections::HashMap;

use crate::config::FetcherConfig;
use crate::table::snapshot_version;

/// What to do with a poll's response.
#[derive(Debug, PartialEq, Eq)]
pub enum PollResult {
    /// Publish the body; it carries this version.
    Publish(u64),
    /// Nothing changed; poll again now.
    Unchanged,
    /// Failed; retry after this many milliseconds.
    Failed { retry_in_ms: u64, why: String },
}

#[derive(Debug)]
pub struct Poller {
    cfg: FetcherConfig,
    after: Option<u64>,
    in_flight: Option<u32>,
    failures: u32,
    retry_at_ms: u64,
    /// Last version reported as rejected, per tenant.
    reported: HashMap<String, u64>,
}

impl Poller {
    pub fn new(cfg: FetcherConfig) -> Poller {
        Poller {
            cfg,
            after: None,
            in_flight: None,
            failures: 0,
            retry_at_ms: 0,
            reported: HashMap::new(),
        }
    }

    pub fn config(&self) -> &FetcherConfig {
        &self.cfg
    }

    /// Whether a poll should start now.
    pub fn due(&self, now_ms: u64) -> bool {
        self.in_flight.is_none() && now_ms >= self.retry_at_ms
    }

    /// The path of the next poll: immediate on start-up, long-poll after.
    pub fn path(&self) -> String {
        protocol::poll_path(self.after, self.cfg.poll_wait_ms)
    }

    /// Timeout of one poll: the long-poll wait plus slack.
    pub fn timeout_ms(&self) -> u64 {
        self.cfg.poll_wait_ms + 5_000
    }

    pub fn started(&mut self, token: u32) {
        self.in_flight = Some(token);
    }

    pub fn is_poll(&self, token: u32) -> bool {
        self.in_flight == Some(token)
    }

    /// Handles a finished poll: `status` is `None` when the call itself failed
    /// (reset, timeout, no healthy host).
    pub fn finished(
        &mut self,
        now_ms: u64,
        status: Option<u32>,
        body: Option<&[u8]>,
    ) -> PollResult {
        self.in_flight = None;
        let failed = |s: &mut Poller, why: String| {
            s.failures = s.failures.saturating_add(1);
            let exp = s.failures.saturating_sub(1).min(16);
            let retry_in_ms = s
                .cfg
                .retry_initial_ms
                .saturating_mul(1 << exp)
                .min(s.cfg.retry_max_ms);
            s.retry_at_ms = now_ms.saturating_add(retry_in_ms);
            PollResult::Failed { retry_in_ms, why }
        };
        match status {
            Some(200) => match body.map(snapshot_version) {
                Some(Ok(version)) => {
                    self.failures = 0;
                    self.after = Some(version);
                    self.retry_at_ms = 0;
                    PollResult::Publish(version)
                }
                Some(Err(e)) => failed(self, e),
                None => failed(self, "sidecar answered 200 with no body".into()),
            },
            Some(204) if self.after.is_some() => {
                self.failures = 0;
                self.retry_at_ms = 0;
                PollResult::Unchanged
            }
            Some(s) => failed(self, format!("sidecar answered HTTP {s}")),
            None => failed(self, "sidecar unreachable".into()),
        }
    }

    /// Turns a queued report (`tenant:version`) into the path to POST, once
    /// per tenant and version across all workers.
    pub fn report(&mut self, message: &[u8]) -> Option<String> {
        let text = std::str::from_utf8(message).ok()?;
        let (tenant, version) = text.rsplit_once(':')?;
        let version: u64 = version.parse().ok()?;
        if !protocol::valid_tenant_id(tenant) || self.reported.get(tenant) == Some(&version) {
            return None;
        }
        self.reported.insert(tenant.to_string(), version);
        Some(protocol::rejected_path(tenant, version))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn poller() -> Poller {
        Poller::new(
            FetcherConfig::parse(br#"{"retry_initial_ms": 100, "retry_max_ms": 400}"#).unwrap(),
        )
    }

    /// The first poll is immediate; after a snapshot it long-polls on its
    /// version.
    #[test]
    fn long_polls_after_first_snapshot() {
        let mut p = poller();
        assert_eq!(p.path(), "/v1/tokens");
        assert!(p.due(0));
        p.started(1);
        assert!(!p.due(0));
        assert_eq!(
            p.finished(0, Some(200), Some(br#"{"version":42,"tenants":{}}"#)),
            PollResult::Publish(42)
        );
        assert_eq!(p.path(), "/v1/tokens?after=42&wait_ms=25000");
        p.started(2);
        assert_eq!(p.finished(0, Some(204), None), PollResult::Unchanged);
        assert!(p.due(0));
    }

    /// Failures back off exponentially to the ceiling, garbage included, and
    /// a success resets the backoff.
    #[test]
    fn backs_off() {
        let mut p = poller();
        let mut delays = Vec::new();
        for status in [None, Some(500), Some(200), Some(204)] {
            p.started(1);
            match p.finished(1000, status, Some(b"<html>")) {
                PollResult::Failed { retry_in_ms, .. } => delays.push(retry_in_ms),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delays, [100, 200, 400, 400]);
        assert!(!p.due(1399));
        assert!(p.due(1400));
        p.started(1);
        p.finished(1400, Some(200), Some(br#"{"version":1,"tenants":{}}"#));
        p.started(1);
        match p.finished(1400, None, None) {
            PollResult::Failed { retry_in_ms, .. } => assert_eq!(retry_in_ms, 100),
            other => panic!("{other:?}"),
        }
    }

    /// Reports are deduplicated per tenant and version; bad ones are dropped.
    #[test]
    fn reports_once() {
        let mut p = poller();
        assert_eq!(
            p.report(b"acme:7").as_deref(),
            Some("/v1/tenants/acme/rejected?version=7")
        );
        assert_eq!(p.report(b"acme:7"), None);
        assert!(p.report(b"acme:8").is_some());
        assert_eq!(p.report(b"ac/me:8"), None);
        assert_eq!(p.report(b"acme"), None);
    }
}
