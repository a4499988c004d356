//! The `token_fetcher` role: a singleton Wasm service on Envoy's main
//! thread, the only code that talks to the sidecar. It drives the pure
//! [`Poller`] state machine with host calls ([`Calls`]): long-poll the
//! sidecar, publish each snapshot into shared data, forward the workers'
//! upstream-401 reports.

use log::{error, warn};

use crate::config::{FetcherConfig, REJECTION_QUEUE, SNAPSHOT_KEY, VERSION_KEY};
use crate::host::Calls;
use crate::metrics::{Counter, Stat};
use crate::poll::{PollResult, Poller};

/// Tick period of the fetcher's root context.
pub const TICK_MS: u64 = 50;

/// The fetcher's state.
pub struct Fetcher {
    poller: Poller,
    queue: Option<u32>,
    poll_failures: Counter,
    snapshots: Counter,
    poll_failures_stat: Stat,
    snapshots_stat: Stat,
}

impl Fetcher {
    pub fn new(cfg: FetcherConfig, host: &impl Calls) -> Fetcher {
        Fetcher {
            poller: Poller::new(cfg),
            queue: None,
            poll_failures: Counter::default(),
            snapshots: Counter::default(),
            poll_failures_stat: Stat::define(host, "authproxy.fetcher.poll_failures"),
            snapshots_stat: Stat::define(host, "authproxy.fetcher.snapshots"),
        }
    }

    /// Registers the report queue and starts the first poll.
    pub fn start(&mut self, host: &impl Calls) {
        match host.register_queue(REJECTION_QUEUE) {
            Ok(q) => self.queue = Some(q),
            Err(e) => warn!("authproxy: cannot register the rejection queue: {e:?}"),
        }
        self.tick(host);
    }

    /// Starts a poll when one is due; flushes the counters.
    pub fn tick(&mut self, host: &impl Calls) {
        self.poll_failures_stat.flush(host, &self.poll_failures);
        self.snapshots_stat.flush(host, &self.snapshots);
        let now = host.now_ms();
        if !self.poller.due(now) {
            return;
        }
        let cfg = self.poller.config();
        let path = self.poller.path();
        let headers = [
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", cfg.sidecar_authority.as_str()),
        ];
        match host.dispatch(&cfg.sidecar_cluster, &headers, self.poller.timeout_ms()) {
            Ok(token) => self.poller.started(token),
            Err(e) => {
                let result = self.poller.finished(now, None, None);
                self.failed(&result, &format!("dispatch: {e:?}"));
            }
        }
    }

    fn failed(&self, result: &PollResult, extra: &str) {
        if let PollResult::Failed { retry_in_ms, why } = result {
            self.poll_failures.bump();
            warn!("authproxy: token poll failed: {why} {extra}; retrying in {retry_in_ms} ms");
        }
    }

    /// Whether `token` is the poll in flight (else it is a report's answer).
    pub fn is_poll(&self, token: u32) -> bool {
        self.poller.is_poll(token)
    }

    /// Handles the answer to the poll in flight: `status` is `None` when the
    /// call itself failed (reset, timeout, no healthy host).
    pub fn on_poll_response(
        &mut self,
        host: &impl Calls,
        status: Option<u32>,
        body: Option<&[u8]>,
    ) {
        let result = self.poller.finished(host.now_ms(), status, body);
        match &result {
            PollResult::Publish(version) => {
                let published = body
                    .ok_or(crate::host::HostError("no body"))
                    .and_then(|b| host.set_shared_data(SNAPSHOT_KEY, b))
                    .and_then(|()| {
                        host.set_shared_data(VERSION_KEY, version.to_string().as_bytes())
                    });
                match published {
                    Ok(()) => self.snapshots.bump(),
                    Err(e) => error!("authproxy: cannot publish snapshot {version}: {e:?}"),
                }
                self.tick(host);
            }
            PollResult::Unchanged => self.tick(host),
            PollResult::Failed { .. } => self.failed(&result, ""),
        }
    }

    /// Sends each queued 401 report to the sidecar, once per tenant and
    /// version.
    pub fn drain_reports(&mut self, host: &impl Calls, queue: u32) {
        while let Some(message) = host.dequeue(queue) {
            let Some(path) = self.poller.report(&message) else {
                continue;
            };
            let cfg = self.poller.config();
            let headers = [
                (":method", "POST"),
                (":path", path.as_str()),
                (":authority", cfg.sidecar_authority.as_str()),
                ("content-length", "0"),
            ];
            if let Err(e) = host.dispatch(&cfg.sidecar_cluster, &headers, 5_000) {
                warn!("authproxy: cannot report a rejected token: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
