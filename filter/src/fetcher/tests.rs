#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};

use super::*;
use crate::host::{HostError, Worker};

/// One dispatched call: cluster and headers.
type Call = (String, Vec<(String, String)>);

/// A fake Envoy main thread: records calls and shared-data writes.
#[derive(Default)]
struct FakeHost {
    now: Cell<u64>,
    calls: RefCell<Vec<Call>>,
    fail_dispatch: Cell<bool>,
    shared: RefCell<HashMap<String, Vec<u8>>>,
    queue: RefCell<VecDeque<Vec<u8>>>,
    counters: RefCell<Vec<(String, u64)>>,
}

impl FakeHost {
    fn last_path(&self) -> String {
        let calls = self.calls.borrow();
        let (_, headers) = calls.last().unwrap();
        headers
            .iter()
            .find(|(k, _)| k == ":path")
            .unwrap()
            .1
            .clone()
    }
}

impl Worker for FakeHost {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
    fn shared_data(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.shared.borrow().get(key).cloned())
    }
    fn define_counter(&self, name: &str) -> Option<u32> {
        let mut c = self.counters.borrow_mut();
        c.push((name.to_string(), 0));
        Some(c.len() as u32 - 1)
    }
    fn increment_counter(&self, id: u32, delta: u64) -> Result<(), HostError> {
        self.counters.borrow_mut()[id as usize].1 += delta;
        Ok(())
    }
    fn resolve_queue(&self, _: &str, _: &str) -> Option<u32> {
        None
    }
}

impl Calls for FakeHost {
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        _timeout_ms: u64,
    ) -> Result<u32, HostError> {
        if self.fail_dispatch.get() {
            return Err(HostError("InternalFailure"));
        }
        let mut calls = self.calls.borrow_mut();
        calls.push((
            cluster.to_string(),
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        Ok(calls.len() as u32)
    }
    fn set_shared_data(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.shared
            .borrow_mut()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }
    fn register_queue(&self, _: &str) -> Result<u32, HostError> {
        Ok(1)
    }
    fn dequeue(&self, _: u32) -> Option<Vec<u8>> {
        self.queue.borrow_mut().pop_front()
    }
}

fn fetcher(host: &FakeHost) -> Fetcher {
    let cfg = FetcherConfig::parse(br#"{"retry_initial_ms": 100}"#).unwrap();
    let mut f = Fetcher::new(cfg, host);
    f.start(host);
    f
}

/// A snapshot is published into shared data (body verbatim, then its
/// version), and the next poll waits on that version.
#[test]
fn publishes_and_long_polls() {
    let host = FakeHost::default();
    let mut f = fetcher(&host);
    assert_eq!(host.last_path(), "/v1/tokens");
    assert_eq!(host.calls.borrow()[0].0, "sidecar");
    assert!(f.is_poll(1));
    let body = br#"{"version":42,"tenants":{"acme":null}}"#;
    f.on_poll_response(&host, Some(200), Some(body));
    assert_eq!(host.shared.borrow()[SNAPSHOT_KEY], body.to_vec());
    assert_eq!(host.shared.borrow()[VERSION_KEY], b"42".to_vec());
    assert_eq!(host.last_path(), "/v1/tokens?after=42&wait_ms=25000");
    f.tick(&host);
    assert_eq!(
        host.counters.borrow()[1],
        ("authproxy.fetcher.snapshots".into(), 1)
    );
}

/// A failed dispatch or a garbage answer publishes nothing, is counted, and
/// retries after the backoff.
#[test]
fn failures_back_off() {
    let host = FakeHost::default();
    host.fail_dispatch.set(true);
    let mut f = fetcher(&host);
    assert!(host.calls.borrow().is_empty());
    host.fail_dispatch.set(false);
    host.now.set(99);
    f.tick(&host);
    assert!(host.calls.borrow().is_empty(), "still backing off");
    host.now.set(100);
    f.tick(&host);
    assert_eq!(host.calls.borrow().len(), 1);
    f.on_poll_response(&host, Some(200), Some(b"<html>"));
    assert!(host.shared.borrow().is_empty());
    f.tick(&host);
    assert_eq!(
        host.counters.borrow()[0],
        ("authproxy.fetcher.poll_failures".into(), 2)
    );
}

/// Queued 401 reports are POSTed once per tenant and version.
#[test]
fn forwards_reports_once() {
    let host = FakeHost::default();
    let mut f = fetcher(&host);
    for m in ["acme:7", "acme:7", "bad/tenant:1", "globex:3"] {
        host.queue.borrow_mut().push_back(m.as_bytes().to_vec());
    }
    f.drain_reports(&host, 1);
    let calls = host.calls.borrow();
    let posts: Vec<_> = calls
        .iter()
        .skip(1)
        .map(|(_, h)| h.iter().find(|(k, _)| k == ":path").unwrap().1.clone())
        .collect();
    assert_eq!(
        posts,
        [
            "/v1/tenants/acme/rejected?version=7",
            "/v1/tenants/globex/rejected?version=3"
        ]
    );
}
