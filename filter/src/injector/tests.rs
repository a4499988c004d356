#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::fake::FakeHost;

const FAR: &str = "99999999999999";

fn cfg(default_tenant: Option<&str>) -> InjectorConfig {
    let mut c = InjectorConfig::parse(br#"{"identity": {"mode": "anonymous"}}"#).unwrap();
    c.default_tenant = default_tenant.map(str::to_string);
    c
}

/// An injector whose tick loaded acme (v2), globex (v3) and initech (none).
fn injector(default_tenant: Option<&str>) -> (Injector, FakeHost) {
    let host = FakeHost::default();
    host.publish(
        3,
        &format!(
            r#""acme":{{"header":"Bearer acme-token","expires_at_ms":{FAR},"version":2}},
            "globex":{{"header":"Bearer globex-token","expires_at_ms":{FAR},"version":3}},
            "initech":null"#
        ),
    );
    let inj = Injector::new(cfg(default_tenant), &host);
    inj.tick(&host);
    (inj, host)
}

/// The tenant header picks the token; the tenant header is removed and the
/// caller's own authorization is replaced.
#[test]
fn injects_by_tenant_and_replaces_authorization() {
    let (inj, _) = injector(None);
    let host = FakeHost::with(&[
        ("x-tenant-id", "globex"),
        ("authorization", "Bearer caller"),
    ]);
    let out = inj.on_request(&host);
    assert!(matches!(out, Outcome::Injected { version: 3, .. }));
    assert_eq!(host.header("authorization").unwrap(), "Bearer globex-token");
    assert!(host.reply.borrow().is_none());
    // Audit: tenant and token version, never the token.
    assert_eq!(host.state.borrow()[AUDIT_TENANT], b"globex");
    assert_eq!(host.state.borrow()[AUDIT_TOKEN_VERSION], b"3");
    // The hot path's host calls, and no more.
    assert_eq!(
        *host.calls.borrow(),
        [
            "request_header_all",
            "set_property",
            "set_request_header",
            "set_property"
        ]
    );
    let t = inj.table();
    let slot = t.slot(t.lookup(b"globex").unwrap()).unwrap();
    assert_eq!(slot.counters.injected.get(), 1);
}

/// Without a header the default tenant is used.
#[test]
fn default_tenant() {
    let (inj, _) = injector(Some("acme"));
    let host = FakeHost::with(&[]);
    let out = inj.on_request(&host);
    assert!(matches!(out, Outcome::Injected { version: 2, .. }));
    assert_eq!(host.header("authorization").unwrap(), "Bearer acme-token");
}

fn refused(host: &FakeHost, status: u32, code: &str) {
    let reply = host.reply.borrow();
    let (s, headers, body) = reply.as_ref().expect("a local reply");
    assert_eq!(*s, status);
    assert!(headers.contains(&("content-type".into(), "application/json".into())));
    assert!(headers.contains(&("x-authproxy-error".into(), code.into())));
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["error"], code);
}

/// Each refusal has its status and stable code; none passes a caller's
/// authorization through.
#[test]
fn refusals() {
    let (inj, _) = injector(None);

    let host = FakeHost::with(&[("authorization", "Bearer caller")]);
    assert_eq!(
        inj.on_request(&host),
        Outcome::Refused(Refusal::MissingTenant)
    );
    refused(&host, 400, "missing_tenant");

    let host = FakeHost::with(&[("x-tenant-id", "umbrella")]);
    assert_eq!(
        inj.on_request(&host),
        Outcome::Refused(Refusal::UnknownTenant)
    );
    refused(&host, 403, "unknown_tenant");

    let host = FakeHost::with(&[("x-tenant-id", "initech")]);
    assert_eq!(inj.on_request(&host), Outcome::Refused(Refusal::NoToken));
    refused(&host, 503, "no_token");
    let reply = host.reply.borrow();
    assert!(reply
        .as_ref()
        .unwrap()
        .1
        .contains(&("retry-after".into(), "1".into())));
    assert_eq!(inj.global.missing_tenant.get(), 1);
    assert_eq!(inj.global.unknown_tenant.get(), 1);
}

/// A header write Envoy refuses refuses the request (500): it must not go
/// upstream with the caller's authorization or without ours.
#[test]
fn failed_header_write_refuses() {
    let (inj, _) = injector(None);
    let mut host = FakeHost::with(&[("x-tenant-id", "acme"), ("authorization", "Bearer caller")]);
    host.fail_writes = true;
    assert_eq!(inj.on_request(&host), Outcome::Refused(Refusal::HostCall));
    refused(&host, 500, "internal_error");
    assert_eq!(inj.global.internal_error.get(), 1);
}

/// Before the first snapshot every tenant gets 503, never a pass-through.
#[test]
fn no_snapshot_is_503() {
    let host = FakeHost::with(&[("x-tenant-id", "acme"), ("authorization", "Bearer caller")]);
    let inj = Injector::new(cfg(None), &host);
    inj.tick(&host);
    assert_eq!(inj.on_request(&host), Outcome::Refused(Refusal::NoToken));
    refused(&host, 503, "no_token");
}

/// An upstream 401 is reported once per token version.
#[test]
fn upstream_401_reported_once_per_version() {
    let (inj, _) = injector(None);
    let acme = inj.table().lookup(b"acme").unwrap();
    let injected = Outcome::Injected {
        tenant: acme,
        version: 2,
    };
    let host = FakeHost::with(&[]);
    host.respond(&[(":status", "200")]);
    assert_eq!(inj.on_response(&host, injected), None);
    host.respond(&[(":status", "401")]);
    assert_eq!(inj.on_response(&host, injected).as_deref(), Some("acme:2"));
    assert_eq!(inj.on_response(&host, injected), None);
    let next = Outcome::Injected {
        tenant: acme,
        version: 9,
    };
    assert!(inj.on_response(&host, next).is_some());
    assert_eq!(
        inj.on_response(&host, Outcome::Refused(Refusal::NoToken)),
        None
    );
}

/// The tick loads a snapshot only when its version changed, and uses a token
/// until the sidecar's `expires_at_ms` less the clock allowance (100 ms by
/// default): not a second, larger margin of its own.
#[test]
fn tick_follows_the_sidecars_expiry() {
    let host = FakeHost::default();
    host.now.set(1_000);
    host.publish(
        1,
        r#""acme":{"header":"Bearer a1","expires_at_ms":21000,"version":1}"#,
    );
    let inj = Injector::new(cfg(None), &host);
    inj.tick(&host);
    let req = || FakeHost::with(&[("x-tenant-id", "acme")]);
    assert!(matches!(inj.on_request(&req()), Outcome::Injected { .. }));
    // Still in use 101 ms before the sidecar's instant...
    host.now.set(20_899);
    inj.tick(&host);
    assert!(matches!(inj.on_request(&req()), Outcome::Injected { .. }));
    // ...and gone at the allowance.
    host.now.set(20_900);
    inj.tick(&host);
    assert_eq!(inj.on_request(&req()), Outcome::Refused(Refusal::NoToken));
    // The same version is not reloaded; a new one is.
    host.shared.borrow_mut().insert(
        SNAPSHOT_KEY.into(),
        br#"{"version":1,"tenants":{"acme":{"header":"Bearer stale","expires_at_ms":99999,"version":1}}}"#.to_vec(),
    );
    inj.tick(&host);
    assert_eq!(inj.on_request(&req()), Outcome::Refused(Refusal::NoToken));
    host.publish(
        2,
        r#""acme":{"header":"Bearer a2","expires_at_ms":41000,"version":2}"#,
    );
    inj.tick(&host);
    let r = req();
    assert!(matches!(
        inj.on_request(&r),
        Outcome::Injected { version: 2, .. }
    ));
    assert_eq!(r.header("authorization").unwrap(), "Bearer a2");
}

/// Counters reach Envoy's stats by name, as deltas, on the tick; the report
/// queue is resolved on the tick.
#[test]
fn tick_flushes_named_counters() {
    let (inj, mut host) = injector(None);
    assert_eq!(inj.queue(), None);
    host.queue = Some(7);
    for tenant in ["acme", "acme", "initech", "umbrella"] {
        inj.on_request(&FakeHost::with(&[("x-tenant-id", tenant)]));
    }
    inj.on_request(&FakeHost::with(&[]));
    inj.tick(&host);
    assert_eq!(host.counter("authproxy.tenant.acme.injected"), 2);
    assert_eq!(host.counter("authproxy.tenant.globex.injected"), 0);
    assert_eq!(
        host.counter("authproxy.tenant.initech.rejected.no_token"),
        1
    );
    assert_eq!(host.counter("authproxy.rejected.unknown_tenant"), 1);
    assert_eq!(host.counter("authproxy.rejected.missing_tenant"), 1);
    inj.on_request(&FakeHost::with(&[("x-tenant-id", "acme")]));
    inj.tick(&host);
    inj.tick(&host);
    assert_eq!(host.counter("authproxy.tenant.acme.injected"), 3);
    assert_eq!(inj.queue(), Some(7));
}

/// Two tenant headers (HTTP/1 repeated, or two HTTP/2 fields: Envoy keeps
/// both, its single-header read returns the first) are ambiguous, whatever
/// their order; a list in one header too; an empty one is malformed, not the
/// default tenant.
#[test]
fn tenant_header_strictness() {
    let (inj, _) = injector(Some("acme"));
    for headers in [
        vec![("x-tenant-id", "acme"), ("x-tenant-id", "globex")],
        vec![("x-tenant-id", "globex"), ("x-tenant-id", "acme")],
        vec![("x-tenant-id", "acme"), ("x-tenant-id", "acme")],
        vec![("x-tenant-id", "acme,globex")],
        vec![("x-tenant-id", "acme"), ("x-tenant-id", "")],
    ] {
        let host = FakeHost::with(&headers);
        assert_eq!(
            inj.on_request(&host),
            Outcome::Refused(Refusal::AmbiguousTenant),
            "{headers:?}"
        );
        refused(&host, 400, "ambiguous_tenant");
        assert_eq!(host.header("authorization"), None);
    }
    let host = FakeHost::with(&[("x-tenant-id", "")]);
    assert_eq!(
        inj.on_request(&host),
        Outcome::Refused(Refusal::EmptyTenant)
    );
    refused(&host, 400, "empty_tenant");
    assert_eq!(inj.global.ambiguous_tenant.get(), 5);
    assert_eq!(inj.global.empty_tenant.get(), 1);
}

const JWT_SUB: &str = "metadata/filter_metadata/envoy.filters.http.jwt_authn/jwt_payload/sub";

/// An injector in jwt mode whose snapshot lets `team-a` callers use acme
/// (GET under /v1/ only for the reporter) and nobody use globex.
fn jwt_injector() -> Injector {
    let host = FakeHost::default();
    let snap = format!(
        r#"{{"version":5,"tenants":{{
            "acme":{{"header":"Bearer acme-token","expires_at_ms":{FAR},"version":2}},
            "globex":{{"header":"Bearer globex-token","expires_at_ms":{FAR},"version":3}}}},
          "callers":{{"acme":[
            {{"id":"system:serviceaccount:team-a:billing"}},
            {{"id":"system:serviceaccount:team-a:reporter","methods":["GET"],"paths":["/v1/"]}}]}}}}"#
    );
    host.shared
        .borrow_mut()
        .insert(SNAPSHOT_KEY.into(), snap.into_bytes());
    host.shared
        .borrow_mut()
        .insert(VERSION_KEY.into(), b"5".to_vec());
    let mut c = cfg(None);
    c.identity = InjectorConfig::parse(br#"{"identity": {"mode": "jwt"}}"#)
        .unwrap()
        .identity;
    let inj = Injector::new(c, &host);
    inj.tick(&host);
    inj
}

fn as_caller(caller: Option<&str>, headers: &[(&str, &str)]) -> FakeHost {
    let mut host = FakeHost::with(headers);
    if let Some(c) = caller {
        host.props.insert(JWT_SUB.into(), c.as_bytes().to_vec());
    }
    host
}

/// The allow-list from the snapshot decides: an allowed caller gets the
/// token; another caller, or an allowed caller asking for another tenant,
/// gets 403; no identity gets 401; a caller-sent header never counts as an
/// identity.
#[test]
fn allow_list_decides() {
    let inj = jwt_injector();
    let billing = Some("system:serviceaccount:team-a:billing");
    let host = as_caller(billing, &[("x-tenant-id", "acme")]);
    assert!(matches!(inj.on_request(&host), Outcome::Injected { .. }));
    assert_eq!(host.header("authorization").unwrap(), "Bearer acme-token");
    assert_eq!(
        host.calls.borrow()[..2],
        ["property", "request_header_all"],
        "identity first, then the tenant; no :method/:path read"
    );

    let host = as_caller(billing, &[("x-tenant-id", "globex")]);
    assert_eq!(
        inj.on_request(&host),
        Outcome::Refused(Refusal::CallerNotAllowed)
    );
    refused(&host, 403, "caller_not_allowed");
    assert_eq!(host.state.borrow()[AUDIT_TENANT], b"globex");
    assert!(!host.state.borrow().contains_key(AUDIT_TOKEN_VERSION));

    let host = as_caller(
        Some("system:serviceaccount:team-b:billing"),
        &[("x-tenant-id", "acme")],
    );
    assert_eq!(
        inj.on_request(&host),
        Outcome::Refused(Refusal::CallerNotAllowed)
    );

    let host = as_caller(
        None,
        &[
            ("x-tenant-id", "acme"),
            ("x-authproxy-caller", "system:serviceaccount:team-a:billing"),
        ],
    );
    assert_eq!(
        inj.on_request(&host),
        Outcome::Refused(Refusal::Unauthenticated)
    );
    refused(&host, 401, "unauthenticated");
    assert_eq!(host.header("authorization"), None);

    let reporter = Some("system:serviceaccount:team-a:reporter");
    let ok = as_caller(
        reporter,
        &[
            ("x-tenant-id", "acme"),
            (":method", "GET"),
            (":path", "/v1/x?y"),
        ],
    );
    assert!(matches!(inj.on_request(&ok), Outcome::Injected { .. }));
    let post = as_caller(
        reporter,
        &[
            ("x-tenant-id", "acme"),
            (":method", "POST"),
            (":path", "/v1/x"),
        ],
    );
    assert_eq!(
        inj.on_request(&post),
        Outcome::Refused(Refusal::CallerNotAllowed)
    );
    let t = inj.table();
    let acme = t.slot(t.lookup(b"acme").unwrap()).unwrap();
    assert_eq!(acme.counters.caller_not_allowed.get(), 2);
    assert_eq!(inj.global.unauthenticated.get(), 1);
}

/// The audit token version is the decimal version, for any value.
#[test]
fn decimal_versions() {
    let mut buf = [0u8; 20];
    for n in [0u64, 7, 10, 1_764_000_000_123_456, u64::MAX] {
        assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
    }
}

/// mTLS with `san: ["uri", "dns"]`: the URI SAN when the certificate has
/// one, else the DNS SAN; neither is 401.
#[test]
fn mtls_identity_falls_back_in_order() {
    let host = FakeHost::default();
    let snap = format!(
        r#"{{"version":1,"tenants":{{"acme":{{"header":"Bearer a","expires_at_ms":{FAR},"version":1}}}},
          "callers":{{"acme":[{{"id":"spiffe://td/ns/a/sa/b"}},{{"id":"legacy.example.com"}}]}}}}"#
    );
    host.shared
        .borrow_mut()
        .insert(SNAPSHOT_KEY.into(), snap.into_bytes());
    host.shared
        .borrow_mut()
        .insert(VERSION_KEY.into(), b"1".to_vec());
    let mut c = cfg(None);
    c.identity = InjectorConfig::parse(br#"{"identity": {"mode": "mtls", "san": ["uri", "dns"]}}"#)
        .unwrap()
        .identity;
    let inj = Injector::new(c, &host);
    inj.tick(&host);
    let with = |uri: Option<&str>, dns: Option<&str>| {
        let mut h = FakeHost::with(&[("x-tenant-id", "acme")]);
        if let Some(u) = uri {
            h.props.insert(
                "connection/uri_san_peer_certificate".into(),
                u.as_bytes().to_vec(),
            );
        }
        if let Some(d) = dns {
            h.props.insert(
                "connection/dns_san_peer_certificate".into(),
                d.as_bytes().to_vec(),
            );
        }
        inj.on_request(&h)
    };
    assert!(matches!(
        with(Some("spiffe://td/ns/a/sa/b"), Some("x")),
        Outcome::Injected { .. }
    ));
    assert!(matches!(
        with(None, Some("legacy.example.com")),
        Outcome::Injected { .. }
    ));
    assert_eq!(
        with(
            Some("spiffe://td/ns/other/sa/b"),
            Some("legacy.example.com")
        ),
        Outcome::Refused(Refusal::CallerNotAllowed),
        "the URI SAN, when present, is the identity"
    );
    assert_eq!(with(None, None), Outcome::Refused(Refusal::Unauthenticated));
}
