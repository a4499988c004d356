#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::fake::FakeHost;

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
    assert_eq!(host.dispatched.borrow()[0].0, "sidecar");
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
    assert!(host.dispatched.borrow().is_empty());
    host.fail_dispatch.set(false);
    host.now.set(99);
    f.tick(&host);
    assert!(host.dispatched.borrow().is_empty(), "still backing off");
    host.now.set(100);
    f.tick(&host);
    assert_eq!(host.dispatched.borrow().len(), 1);
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
        host.inbox.borrow_mut().push_back(m.as_bytes().to_vec());
    }
    f.drain_reports(&host, 1);
    let calls = host.dispatched.borrow();
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
