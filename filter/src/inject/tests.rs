#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::cell::RefCell;
use std::collections::HashMap;

use super::*;

/// A local reply: status, headers, body.
type Reply = (u32, Vec<(String, String)>, Vec<u8>);

/// A fake Envoy: request headers in a map, a recorded local reply.
#[derive(Default)]
struct FakeHost {
    headers: RefCell<HashMap<String, Vec<u8>>>,
    status: Option<Vec<u8>>,
    reply: RefCell<Option<Reply>>,
}

impl FakeHost {
    fn with(headers: &[(&str, &str)]) -> Self {
        let h = FakeHost::default();
        for (k, v) in headers {
            h.headers
                .borrow_mut()
                .insert(k.to_string(), v.as_bytes().to_vec());
        }
        h
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .borrow()
            .get(name)
            .map(|v| String::from_utf8(v.clone()).unwrap())
    }
}

impl Host for FakeHost {
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers.borrow().get(name).cloned()
    }
    fn remove_request_header(&self, name: &str) {
        self.headers.borrow_mut().remove(name);
    }
    fn set_request_header(&self, name: &str, value: &[u8]) {
        self.headers
            .borrow_mut()
            .insert(name.to_string(), value.to_vec());
    }
    fn response_status(&self) -> Option<Vec<u8>> {
        self.status.clone()
    }
    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        *self.reply.borrow_mut() = Some((status, headers, body.to_vec()));
    }
}

fn cfg(default_tenant: Option<&str>) -> InjectorConfig {
    let mut c = InjectorConfig::parse(b"{}").unwrap();
    c.default_tenant = default_tenant.map(str::to_string);
    c
}

fn table() -> Table {
    let mut t = Table::default();
    t.load(
        br#"{"version":3,"tenants":{
            "acme":{"header":"Bearer acme-token","expires_at_ms":99999999999999,"version":2},
            "globex":{"header":"Bearer globex-token","expires_at_ms":99999999999999,"version":3},
            "initech":null}}"#,
        0,
        0,
    )
    .unwrap();
    t
}

/// The tenant header picks the token; the tenant header is removed and the
/// caller's own authorization is replaced.
#[test]
fn injects_by_tenant_and_replaces_authorization() {
    let host = FakeHost::with(&[
        ("x-tenant-id", "globex"),
        ("authorization", "Bearer caller"),
    ]);
    let t = table();
    let out = on_request(&host, &cfg(None), &t, &GlobalCounters::default());
    assert!(matches!(out, Outcome::Injected { version: 3, .. }));
    assert_eq!(host.header("authorization").unwrap(), "Bearer globex-token");
    assert_eq!(host.header("x-tenant-id"), None);
    assert!(host.reply.borrow().is_none());
    let slot = t.slot(t.lookup(b"globex").unwrap()).unwrap();
    assert_eq!(slot.counters.injected.get(), 1);
}

/// Without a header the default tenant is used.
#[test]
fn default_tenant() {
    let host = FakeHost::with(&[]);
    let out = on_request(
        &host,
        &cfg(Some("acme")),
        &table(),
        &GlobalCounters::default(),
    );
    assert!(matches!(out, Outcome::Injected { version: 2, .. }));
    assert_eq!(host.header("authorization").unwrap(), "Bearer acme-token");
}

fn refused(host: &FakeHost, status: u32, code: &str) {
    let reply = host.reply.borrow();
    let (s, headers, body) = reply.as_ref().expect("a local reply");
    assert_eq!(*s, status);
    assert!(headers.contains(&("content-type".into(), "application/json".into())));
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["error"], code);
}

/// Each refusal has its status and stable code; none passes a caller's
/// authorization through.
#[test]
fn refusals() {
    let g = GlobalCounters::default();
    let t = table();

    let host = FakeHost::with(&[("authorization", "Bearer caller")]);
    assert_eq!(
        on_request(&host, &cfg(None), &t, &g),
        Outcome::Refused(Refusal::MissingTenant)
    );
    refused(&host, 400, "missing_tenant");

    let host = FakeHost::with(&[("x-tenant-id", "umbrella")]);
    assert_eq!(
        on_request(&host, &cfg(None), &t, &g),
        Outcome::Refused(Refusal::UnknownTenant)
    );
    refused(&host, 403, "unknown_tenant");

    let host = FakeHost::with(&[("x-tenant-id", "initech")]);
    assert_eq!(
        on_request(&host, &cfg(None), &t, &g),
        Outcome::Refused(Refusal::NoToken)
    );
    refused(&host, 503, "no_token");
    let reply = host.reply.borrow();
    assert!(reply
        .as_ref()
        .unwrap()
        .1
        .contains(&("retry-after".into(), "1".into())));
    assert_eq!(g.missing_tenant.get(), 1);
    assert_eq!(g.unknown_tenant.get(), 1);
}

/// Before the first snapshot every tenant gets 503, never a pass-through.
#[test]
fn no_snapshot_is_503() {
    let host = FakeHost::with(&[("x-tenant-id", "acme"), ("authorization", "Bearer caller")]);
    let out = on_request(
        &host,
        &cfg(None),
        &Table::default(),
        &GlobalCounters::default(),
    );
    assert_eq!(out, Outcome::Refused(Refusal::NoToken));
    refused(&host, 503, "no_token");
}

/// An upstream 401 is reported once per token version.
#[test]
fn upstream_401_reported_once_per_version() {
    let t = table();
    let injected = Outcome::Injected {
        tenant: t.lookup(b"acme").unwrap(),
        version: 2,
    };
    let mut host = FakeHost::with(&[]);
    host.status = Some(b"200".to_vec());
    assert_eq!(on_response(&host, &t, injected), None);
    host.status = Some(b"401".to_vec());
    assert_eq!(
        on_response(&host, &t, injected),
        Some((t.lookup(b"acme").unwrap(), 2))
    );
    assert_eq!(on_response(&host, &t, injected), None);
    let next = Outcome::Injected {
        tenant: t.lookup(b"acme").unwrap(),
        version: 9,
    };
    assert!(on_response(&host, &t, next).is_some());
    assert_eq!(
        on_response(&host, &t, Outcome::Refused(Refusal::NoToken)),
        None
    );
}
