#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use super::*;
use crate::fake::FakeHost;

const FAR: &str = "99999999999999";

/// A worker host whose snapshot holds acme, globex, `Acme_2` and initech
/// (no token).
fn worker() -> FakeHost {
    let host = FakeHost::default();
    host.publish(
        7,
        &format!(
            r#""acme":{{"header":"Bearer acme-token","expires_at_ms":{FAR},"version":2}},
            "globex":{{"header":"Bearer globex-token","expires_at_ms":{FAR},"version":3}},
            "Acme_2":{{"header":"Bearer Acme_2-token","expires_at_ms":{FAR},"version":4}},
            "initech":null"#
        ),
    );
    host
}

const GATE: &str = r#"{"identity": {"mode": "anonymous"}, "cache": {"routes": [
    {"path_prefix": "/v1/reference/", "ttl": "5m"},
    {"path_prefix": "/v1/reference/head-only/", "ttl": 10, "methods": ["HEAD"]},
    {"path_prefix": "/exports/", "ttl": "1h", "methods": ["GET"]}
]}}"#;

fn gate(json: &str) -> (Gate, FakeHost) {
    let w = worker();
    let g = Gate::new(GateConfig::parse(json.as_bytes()).unwrap(), &w);
    g.tick(&w);
    (g, w)
}

fn fill() -> (Fill, FakeHost) {
    let w = worker();
    let f = Fill::new(FillConfig::parse(b"{}").unwrap(), &w);
    f.tick(&w);
    (f, w)
}

fn get(path: &str, tenant: &str) -> FakeHost {
    FakeHost::with(&[
        (":method", "GET"),
        (":path", path),
        (":authority", "proxy.local:8080"),
        ("x-tenant-id", tenant),
    ])
}

/// A cacheable GET leaves the gate with no authorization (ours or the
/// caller's), the tenant's own authority, the route's TTL, and no tenant
/// header.
#[test]
fn gate_turns_cacheable_request_to_tenant_authority() {
    let (g, _) = gate(GATE);
    let host = get("/v1/reference/countries?x=1", "acme");
    host.req
        .borrow_mut()
        .push(("authorization".into(), b"Bearer caller".to_vec()));
    host.req
        .borrow_mut()
        .push(("authorization".into(), b"Basic second".to_vec()));
    host.req
        .borrow_mut()
        .push((TTL_HEADER.into(), b"999999".to_vec()));
    let out = g.on_request(&host);
    assert!(matches!(out, GateOutcome::Cached { .. }), "{out:?}");
    assert_eq!(host.header("authorization"), None);
    assert_eq!(
        host.header(":authority").unwrap(),
        "acme.tenant.authproxy.invalid"
    );
    assert_eq!(host.header(TTL_HEADER).unwrap(), "300");
    assert_eq!(host.reply_status(), None);
}

/// Two tenants asking for the same path get different authorities, so
/// different cache keys; upper case and `_` are escaped, never folded.
#[test]
fn tenants_get_distinct_authorities() {
    let (g, _) = gate(GATE);
    let mut seen = Vec::new();
    for t in ["acme", "globex", "Acme_2"] {
        let host = get("/v1/reference/a", t);
        assert!(matches!(g.on_request(&host), GateOutcome::Cached { .. }));
        seen.push(host.header(":authority").unwrap());
    }
    assert_eq!(
        seen,
        [
            "acme.tenant.authproxy.invalid",
            "globex.tenant.authproxy.invalid",
            "_41cme_5f2.tenant.authproxy.invalid"
        ]
    );
    for a in &seen {
        assert_eq!(
            a.to_ascii_lowercase(),
            *a,
            "authorities compare without case"
        );
    }
}

/// Refusals happen before the cache: unknown tenant 403, no tenant 400, no
/// token 503, and nothing is rewritten.
#[test]
fn gate_refuses_as_the_injector_does() {
    let (g, _) = gate(GATE);
    for (tenant, status) in [(Some("umbrella"), 403), (None, 400), (Some("initech"), 503)] {
        let mut headers = vec![(":method", "GET"), (":path", "/v1/reference/a")];
        if let Some(t) = tenant {
            headers.push(("x-tenant-id", t));
        }
        let host = FakeHost::with(&headers);
        let out = g.on_request(&host);
        assert!(
            matches!(out, GateOutcome::Direct(Outcome::Refused(_))),
            "{tenant:?}: {out:?}"
        );
        assert_eq!(host.reply_status(), Some(status));
        assert_eq!(host.header(":authority"), None);
        assert_eq!(host.header(TTL_HEADER), None);
    }
}

/// In jwt mode a request without a verified identity is refused (401)
/// before anything is rewritten for the cache.
#[test]
fn gate_refuses_unauthenticated_before_the_cache() {
    let (g, _) = gate(&GATE.replace(r#""mode": "anonymous""#, r#""mode": "jwt""#));
    let host = get("/v1/reference/a", "acme");
    let out = g.on_request(&host);
    assert_eq!(
        out,
        GateOutcome::Direct(Outcome::Refused(Refusal::Unauthenticated))
    );
    assert_eq!(host.reply_status(), Some(401));
    assert_eq!(host.header(":authority").unwrap(), "proxy.local:8080");
}

/// POST, unconfigured paths and methods a route leaves out keep the token
/// and the caller's authority (direct route), and count as uncacheable.
#[test]
fn uncacheable_requests_go_direct_with_token() {
    let (g, w) = gate(GATE);
    for (method, path) in [
        ("POST", "/v1/reference/a"),
        ("GET", "/v1/other"),
        ("DELETE", "/exports/x"),
        ("HEAD", "/exports/x"),
        ("GET", "/v1/reference/head-only/x"),
    ] {
        let host = FakeHost::with(&[
            (":method", method),
            (":path", path),
            (":authority", "acme.tenant.authproxy.invalid"),
            ("x-tenant-id", "globex"),
        ]);
        let out = g.on_request(&host);
        assert!(
            matches!(out, GateOutcome::Direct(Outcome::Injected { .. })),
            "{method} {path}: {out:?}"
        );
        assert_eq!(host.header("authorization").unwrap(), "Bearer globex-token");
        // A forged tenant authority is left for the route to ignore: the
        // request carries authorization, so it never takes the cache route.
        assert_eq!(
            host.header(":authority").unwrap(),
            "acme.tenant.authproxy.invalid"
        );
    }
    assert_eq!(g.counts("globex"), (0, 0, 5));
    g.tick(&w);
    assert_eq!(w.counter("authproxy.tenant.globex.cache.uncacheable"), 5);
}

/// HEAD is cacheable where the route allows it.
#[test]
fn head_only_route() {
    let (g, _) = gate(GATE);
    let host = FakeHost::with(&[
        (":method", "HEAD"),
        (":path", "/v1/reference/head-only/x"),
        ("x-tenant-id", "acme"),
    ]);
    assert!(matches!(g.on_request(&host), GateOutcome::Cached { .. }));
    assert_eq!(host.header(TTL_HEADER).unwrap(), "10");
}

/// With `only_configured: false`, other GETs go through the cache too,
/// without an imposed TTL (a forged one is removed).
#[test]
fn not_only_configured() {
    let (g, _) = gate(
        r#"{"identity": {"mode": "anonymous"}, "cache": {"only_configured": false,
            "routes": [{"path_prefix": "/v1/reference/", "ttl": 60}]}}"#,
    );
    let host = get("/v1/other", "acme");
    host.req
        .borrow_mut()
        .push((TTL_HEADER.into(), b"999".to_vec()));
    assert!(matches!(g.on_request(&host), GateOutcome::Cached { .. }));
    assert_eq!(host.header(TTL_HEADER), None);
    assert_eq!(
        host.header(":authority").unwrap(),
        "acme.tenant.authproxy.invalid"
    );
}

/// A failed header write on the cache path refuses with 500: the request
/// must not go on half rewritten.
#[test]
fn gate_fails_closed_on_write_failure() {
    let (g, _) = gate(GATE);
    for name in ["authorization", ":authority", TTL_HEADER] {
        let mut host = get("/v1/reference/a", "acme");
        host.fail_on = Some(name);
        let out = g.on_request(&host);
        assert_eq!(
            out,
            GateOutcome::Direct(Outcome::Refused(Refusal::HostCall)),
            "{name}"
        );
        assert_eq!(host.reply_status(), Some(500));
    }
}

/// The gate counts a response with `age` (served by the cache) as a hit,
/// one without as a miss; the counters reach Envoy's stats on the tick.
#[test]
fn gate_counts_hits_and_misses() {
    let (g, w) = gate(GATE);
    for age in [None, Some("3"), Some("0")] {
        let host = get("/v1/reference/a", "acme");
        let out = g.on_request(&host);
        host.respond(&[(":status", "200")]);
        if let Some(a) = age {
            host.respond(&[("age", a)]);
        }
        assert_eq!(g.on_response(&host, out), None);
    }
    assert_eq!(g.counts("acme"), (2, 1, 0));
    g.tick(&w);
    assert_eq!(w.counter("authproxy.tenant.acme.cache.hit"), 2);
    assert_eq!(w.counter("authproxy.tenant.acme.cache.miss"), 1);
}

/// The unsafe shared key (negative control only) gives every tenant the
/// same authority and passes the tenant on in the tenant header.
#[test]
fn unsafe_shared_key_shares_the_authority() {
    let (g, _) = gate(
        r#"{"identity": {"mode": "anonymous"}, "cache": {"unsafe_shared_key_for_tests": true,
            "routes": [{"path_prefix": "/", "ttl": 60}]}}"#,
    );
    for t in ["acme", "globex"] {
        let host = get("/v1/x", t);
        assert!(matches!(g.on_request(&host), GateOutcome::Cached { .. }));
        assert_eq!(
            host.header(":authority").unwrap(),
            "shared.tenant.authproxy.invalid"
        );
        assert_eq!(host.header("x-tenant-id").unwrap(), t);
    }
}

fn fill_request(authority: &str, ttl: Option<&str>) -> FakeHost {
    let mut headers = vec![
        (":method", "GET"),
        (":path", "/v1/reference/a"),
        (":authority", authority),
        ("x-tenant-id", "globex"),
    ];
    if let Some(t) = ttl {
        headers.push((TTL_HEADER, t));
    }
    FakeHost::with(&headers)
}

/// The fill takes the tenant from the authority, never from a tenant
/// header, and injects that tenant's token.
#[test]
fn fill_injects_the_authority_tenant() {
    let (f, _) = fill();
    for (authority, token) in [
        ("acme.tenant.authproxy.invalid", "Bearer acme-token"),
        ("_41cme_5f2.tenant.authproxy.invalid", "Bearer Acme_2-token"),
        ("acme.tenant.authproxy.invalid:443", "Bearer acme-token"),
    ] {
        let host = fill_request(authority, Some("300"));
        let out = f.on_request(&host);
        assert!(
            matches!(out.outcome, Outcome::Injected { .. }),
            "{authority}"
        );
        assert_eq!(out.ttl, Some(300));
        assert_eq!(host.header("authorization").unwrap(), token);
        // The caller's globex was overwritten with the authority's tenant.
        assert_eq!(
            host.header("x-tenant-id").unwrap(),
            token
                .trim_start_matches("Bearer ")
                .trim_end_matches("-token")
        );
    }
}

/// An authority that does not name a tenant under the suffix is refused,
/// whatever tenant header came along.
#[test]
fn fill_refuses_without_tenant_authority() {
    let (f, _) = fill();
    for authority in [
        "api.example.com",
        "tenant.authproxy.invalid",
        ".tenant.authproxy.invalid",
        "Acme.tenant.authproxy.invalid",
        "a_4.tenant.authproxy.invalid",
        "a_zz.tenant.authproxy.invalid",
        "acme.tenant.authproxy.invalid.evil",
        "acmetenant.authproxy.invalid",
    ] {
        let host = fill_request(authority, Some("300"));
        let out = f.on_request(&host);
        assert_eq!(
            out.outcome,
            Outcome::Refused(Refusal::MissingTenant),
            "{authority}"
        );
        assert_eq!(host.reply_status(), Some(400));
        assert_eq!(host.header("authorization"), None, "nothing injected");
    }
    let host = fill_request("umbrella.tenant.authproxy.invalid", None);
    assert_eq!(
        f.on_request(&host).outcome,
        Outcome::Refused(Refusal::UnknownTenant)
    );
}

/// A request that reaches the fill with authorization (so not from the
/// gate's cache path: a route lost its guard) is refused, not injected.
#[test]
fn fill_refuses_a_request_with_authorization() {
    let (f, _) = fill();
    let host = fill_request("acme.tenant.authproxy.invalid", Some("300"));
    host.req
        .borrow_mut()
        .push(("authorization".into(), b"Bearer tok-globex".to_vec()));
    let out = f.on_request(&host);
    assert!(matches!(out.outcome, Outcome::Refused(_)));
    assert_eq!(host.reply_status(), Some(500));
    assert_eq!(host.header("authorization").unwrap(), "Bearer tok-globex");
}

/// On a 200 the fill imposes `max-age=TTL` over the upstream's own
/// `private`, `age` and `expires`; anything else gets `no-store`.
#[test]
fn fill_imposes_ttl_or_no_store() {
    let (f, w) = fill();
    let host = fill_request("acme.tenant.authproxy.invalid", Some("300"));
    let out = f.on_request(&host);
    host.respond(&[
        (":status", "200"),
        ("cache-control", "private, max-age=5"),
        ("cache-control", "no-cache"),
        ("age", "100"),
        ("expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
    ]);
    assert_eq!(f.on_response(&host, out), None);
    assert_eq!(host.resp_header("cache-control").unwrap(), "max-age=300");
    assert_eq!(
        host.resp
            .borrow()
            .iter()
            .filter(|(k, _)| k == "cache-control")
            .count(),
        1
    );
    assert_eq!(host.resp_header("age"), None);
    assert_eq!(host.resp_header("expires"), None);

    for status in ["404", "500", "503", "401", "204", "206"] {
        let host = fill_request("acme.tenant.authproxy.invalid", Some("300"));
        let out = f.on_request(&host);
        host.respond(&[(":status", status), ("cache-control", "max-age=600")]);
        f.on_response(&host, out);
        assert_eq!(
            host.resp_header("cache-control").unwrap(),
            "no-store",
            "{status}"
        );
    }
    assert_eq!(f.uncacheable("acme"), 6);
    f.tick(&w);
    assert_eq!(w.counter("authproxy.tenant.acme.cache.uncacheable"), 6);
}

/// Without a TTL from the gate (`only_configured: false`), a 200 keeps the
/// upstream's own headers; other statuses still get `no-store`. A TTL out
/// of range is ignored.
#[test]
fn fill_without_ttl_follows_upstream() {
    let (f, _) = fill();
    for ttl in [None, Some("0"), Some("abc"), Some("99999999999")] {
        let host = fill_request("acme.tenant.authproxy.invalid", ttl);
        let out = f.on_request(&host);
        assert_eq!(out.ttl, None, "{ttl:?}");
        host.respond(&[(":status", "200"), ("cache-control", "private")]);
        f.on_response(&host, out);
        assert_eq!(host.resp_header("cache-control").unwrap(), "private");
    }
    let host = fill_request("acme.tenant.authproxy.invalid", None);
    let out = f.on_request(&host);
    host.respond(&[(":status", "404"), ("cache-control", "max-age=60")]);
    f.on_response(&host, out);
    assert_eq!(host.resp_header("cache-control").unwrap(), "no-store");
}

/// The authority encoding is injective and inverted exactly, for every
/// byte a tenant id may hold.
#[test]
fn authority_round_trip() {
    let all: Vec<u8> = (0u8..=255)
        .filter(|b| protocol::valid_tenant_id_bytes(&[*b]))
        .collect();
    for t in [
        b"acme".to_vec(),
        b"A".to_vec(),
        b"a.b-c_D".to_vec(),
        b"_41".to_vec(),
        all[..64].to_vec(),
        all[64..].to_vec(),
    ] {
        let a = tenant_authority(&t, DEFAULT_SUFFIX);
        assert!(a.iter().all(|b| !b.is_ascii_uppercase()));
        assert_eq!(tenant_from_authority(&a, DEFAULT_SUFFIX), Some(t.clone()));
    }
    assert_ne!(
        tenant_authority(b"_41", DEFAULT_SUFFIX),
        tenant_authority(b"A", DEFAULT_SUFFIX)
    );
}

/// Durations: seconds, or a number with s, m, h or d.
#[test]
fn ttl_durations() {
    use serde_json::json;
    for (v, want) in [
        (json!(30), Some(30)),
        (json!("30"), Some(30)),
        (json!("30s"), Some(30)),
        (json!("5m"), Some(300)),
        (json!("2h"), Some(7200)),
        (json!("1d"), Some(86400)),
        (json!("5 m"), None),
        (json!("m"), None),
        (json!("-1"), None),
        (json!(1.5), None),
    ] {
        assert_eq!(parse_ttl(&v), want, "{v}");
    }
}

/// Each bad value is refused with a message naming the key.
#[test]
fn bad_configs_name_their_key() {
    for (json, key) in [
        (r#"{"identity": {"mode": "anonymous"}}"#, "cache: missing"),
        (
            r#"{"cache": {"routes": [{"path_prefix": "/", "ttl": 5}]}}"#,
            "identity",
        ),
        (
            r#"{"identity": {"mode": "anonymous"}, "cache": {}}"#,
            "cache.routes",
        ),
        (
            r#"{"cache": {"routes": [{"ttl": 5}]}}"#,
            "cache.routes[0].path_prefix",
        ),
        (
            r#"{"cache": {"routes": [{"path_prefix": "v1", "ttl": 5}]}}"#,
            "cache.routes[0].path_prefix",
        ),
        (
            r#"{"cache": {"routes": [{"path_prefix": "/", "ttl": 0}]}}"#,
            "cache.routes[0].ttl",
        ),
        (
            r#"{"cache": {"routes": [{"path_prefix": "/", "ttl": "8d"}]}}"#,
            "cache.routes[0].ttl",
        ),
        (
            r#"{"cache": {"routes": [{"path_prefix": "/", "ttl": "5x"}]}}"#,
            "cache.routes[0].ttl",
        ),
        (
            r#"{"cache": {"routes": [{"path_prefix": "/", "ttl": 5, "methods": ["POST"]}]}}"#,
            "cache.routes[0].methods",
        ),
        (
            r#"{"cache": {"routes": [{"path_prefix": "/", "ttl": 5, "methods": []}]}}"#,
            "cache.routes[0].methods",
        ),
        (
            r#"{"cache": {"authority_suffix": "example.com", "routes": [{"path_prefix": "/", "ttl": 5}]}}"#,
            "cache.authority_suffix",
        ),
        (r#"{"cache": {"typo": 1}}"#, "typo"),
        (
            r#"{"tick_ms": 0, "cache": {"routes": [{"path_prefix": "/", "ttl": 5}]}}"#,
            "tick_ms",
        ),
    ] {
        let json = if key == "identity" || json.contains("identity") {
            json.to_string()
        } else {
            json.replacen('{', r#"{"identity": {"mode": "anonymous"}, "#, 1)
        };
        let err = GateConfig::parse(json.as_bytes()).unwrap_err();
        assert!(err.contains(key), "{json}: {err}");
    }
    let err = FillConfig::parse(br#"{"authority_suffix": "Tenant.invalid"}"#).unwrap_err();
    assert!(err.contains("authority_suffix"), "{err}");
    let err = FillConfig::parse(br#"{"authority_suffix": 1}"#).unwrap_err();
    assert!(err.contains("authority_suffix"), "{err}");
    let err = FillConfig::parse(br#"{"typo": 1}"#).unwrap_err();
    assert!(err.contains("typo"), "{err}");
    let err = FillConfig::parse(br#"{"identity": {"mode": "jwt"}}"#).unwrap_err();
    assert!(err.contains("identity"), "{err}");
    assert_eq!(
        FillConfig::parse(b"{}").unwrap().injector.identity,
        crate::config::Identity::Anonymous
    );
}
