//! End-to-end: requests through the real Envoy with the real filter and
//! sidecar, against the fake auth server and API.

use std::time::Duration;

use e2e::Behave;
use e2e::{eventually, Stack};
use serde_json::Value;

async fn json(r: reqwest::Response) -> Value {
    r.json().await.expect("json body")
}

/// A proxied request arrives upstream with the tenant's bearer token, and
/// without the tenant header.
#[tokio::test(flavor = "multi_thread")]
async fn injects_token() {
    let stack = Stack::builder().start().await;
    stack.wait_for_token("acme").await;
    let r = stack.get("/v1/things", Some("acme")).await;
    assert_eq!(r.status(), 200);
    let body = json(r).await;
    let issued = stack.auth.issued();
    let acme = issued
        .iter()
        .find(|i| i.tenant == "acme")
        .expect("acme token");
    assert_eq!(body["authorization"], format!("Bearer {}", acme.token));
    assert_eq!(body["x-tenant-id"], Value::Null, "tenant header is removed");
    assert_eq!(body["path"], "/v1/things");
}

/// A caller's own Authorization header never reaches the upstream: it is
/// replaced, even when sent twice.
#[tokio::test(flavor = "multi_thread")]
async fn replaces_caller_authorization() {
    let stack = Stack::builder().start().await;
    stack.wait_for_token("acme").await;
    let r = stack
        .http
        .get(format!("{}/x", stack.proxy_url()))
        .header("x-tenant-id", "acme")
        .header("authorization", "Bearer caller-forged")
        .header("authorization", "Basic Y2FsbGVyOnB3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = json(r).await;
    let auth = body["authorization"].as_str().unwrap();
    assert!(auth.starts_with("Bearer tok-acme-"), "{auth}");
    assert_eq!(body["authorization_count"], 1);
    assert!(stack.api.as_ref().unwrap().seen().iter().all(|s| !s
        .authorization
        .as_deref()
        .unwrap_or("")
        .contains("caller")));
}

/// Before any token exists, requests fail closed: 503, a JSON error with a
/// stable code, `Retry-After`, and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn fails_closed_without_token() {
    let stack = Stack::builder().auth_mode(Behave::Hang).start().await;
    // Give the filter time to hear from the sidecar (a snapshot with no
    // tokens); the answer must be the same before and after.
    for _ in 0..2 {
        let r = stack
            .http
            .get(format!("{}/x", stack.proxy_url()))
            .header("x-tenant-id", "acme")
            .header("authorization", "Bearer caller")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(json(r).await["error"], "no_token");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Each tenant asks once and keeps waiting on the hanging server (on a
    // busy machine the second request may still be on its way).
    eventually(
        Duration::from_secs(10),
        "both tenants' token requests",
        || async { (stack.auth.count() >= 2).then_some(()) },
    )
    .await;
    assert_eq!(
        stack.auth.count(),
        2,
        "both tenants asked once, still hanging"
    );
    assert!(stack.api.as_ref().unwrap().seen().is_empty());
}

/// Each tenant gets its own token.
#[tokio::test(flavor = "multi_thread")]
async fn routes_by_tenant() {
    let stack = Stack::builder().start().await;
    stack.wait_for_token("acme").await;
    stack.wait_for_token("globex").await;
    let a = json(stack.get("/", Some("acme")).await).await;
    let g = json(stack.get("/", Some("globex")).await).await;
    assert!(a["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer tok-acme-"));
    assert!(g["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer tok-globex-"));
}

/// Unknown tenant: 403 `unknown_tenant`; no tenant and no default: 400
/// `missing_tenant`; neither reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn refuses_bad_tenants() {
    let stack = Stack::builder().start().await;
    stack.wait_for_token("acme").await;
    let before = stack.api.as_ref().unwrap().seen().len();
    let r = stack.get("/", Some("umbrella")).await;
    assert_eq!(r.status(), 403);
    assert_eq!(json(r).await["error"], "unknown_tenant");
    let r = stack.get("/", None).await;
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["error"], "missing_tenant");
    assert_eq!(stack.api.as_ref().unwrap().seen().len(), before);
}

/// With a default tenant configured, requests without the header use it.
#[tokio::test(flavor = "multi_thread")]
async fn default_tenant() {
    let stack = Stack::builder().default_tenant("globex").start().await;
    stack.wait_for_token_as(None).await;
    let body = json(stack.get("/", None).await).await;
    assert!(body["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer tok-globex-"));
}

/// With the sidecar killed, the cached token keeps working until it expires
/// (less the filter's margin), then requests get 503; the upstream never
/// receives an expired token.
#[tokio::test(flavor = "multi_thread")]
async fn sidecar_outage_uses_cache_until_expiry() {
    let mut stack = Stack::builder()
        .tenants(&["acme"])
        .token_lifetime_secs(4)
        .sidecar_yaml("refresh:\n  expiry_margin: 500ms\n  fraction: 0.8\n  jitter: 0.1\n")
        .start()
        .await;
    stack.wait_for_token("acme").await;
    stack.sidecar.kill().await;
    let r = stack.get("/", Some("acme")).await;
    assert_eq!(
        r.status(),
        200,
        "cached token still served after the sidecar died"
    );
    let refused = eventually(Duration::from_secs(8), "503 after expiry", || async {
        let r = stack.get("/", Some("acme")).await;
        (r.status() == 503).then_some(r)
    })
    .await;
    assert_eq!(json(refused).await["error"], "no_token");
    let issued = stack.auth.issued();
    for seen in stack.api.as_ref().unwrap().seen() {
        let auth = seen.authorization.unwrap_or_default();
        let issue = issued
            .iter()
            .find(|i| auth == format!("Bearer {}", i.token))
            .expect("upstream saw only issued tokens");
        assert!(
            seen.at < issue.at + issue.lifetime,
            "token used {:?} after issue, lifetime {:?}",
            seen.at - issue.at,
            issue.lifetime
        );
    }
    // Still closed a while later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.get("/", Some("acme")).await.status(), 503);
}

/// A sidecar that restarts while the auth server is down comes back with no
/// tokens; the filter keeps using the tokens it holds, which are still valid,
/// instead of failing every request.
#[tokio::test(flavor = "multi_thread")]
async fn sidecar_restart_during_auth_outage_keeps_tokens() {
    let mut stack = Stack::builder().tenants(&["acme"]).start().await;
    stack.wait_for_token("acme").await;
    let token = stack.auth.issued()[0].token.clone();
    let snapshots = stack
        .envoy
        .stat("wasmcustom.authproxy.fetcher.snapshots")
        .await
        .unwrap_or(0);
    stack.auth.set_default(Behave::Hang);
    stack.sidecar.restart().await;
    // The new sidecar's first snapshot (no tokens) reaches the filter...
    eventually(
        Duration::from_secs(10),
        "the restarted sidecar's snapshot",
        || async {
            stack
                .envoy
                .stat("wasmcustom.authproxy.fetcher.snapshots")
                .await
                .filter(|n| *n > snapshots)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...and every worker still injects the token it had.
    for _ in 0..20 {
        let r = stack.get("/", Some("acme")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(json(r).await["authorization"], format!("Bearer {token}"));
    }
}

/// An upstream 401 makes the sidecar refresh at once; later requests carry
/// the fresh token. A burst of 401s causes one refresh, not one each.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_401_triggers_refresh() {
    let stack = Stack::builder()
        .tenants(&["acme"])
        .sidecar_yaml("refresh:\n  rejection_min_interval: 30s\n")
        .start()
        .await;
    stack.wait_for_token("acme").await;
    let old = stack.auth.issued()[0].token.clone();
    let api = stack.api.as_ref().unwrap();
    api.revoke(&format!("Bearer {old}"));
    let requests_before = stack.auth.count();
    for _ in 0..20 {
        let r = stack.get("/", Some("acme")).await;
        assert!(r.status() == 401 || r.status() == 200);
    }
    let body = eventually(
        Duration::from_secs(5),
        "a fresh token after 401",
        || async {
            let r = stack.get("/", Some("acme")).await;
            if r.status() == 200 {
                Some(json(r).await)
            } else {
                None
            }
        },
    )
    .await;
    assert_ne!(body["authorization"], format!("Bearer {old}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stack.auth.count() - requests_before,
        1,
        "one refresh for a burst of 401s"
    );
    let stat = eventually(Duration::from_secs(2), "upstream_401 stat", || async {
        stack
            .envoy
            .stat("wasmcustom.authproxy.tenant.acme.upstream_401")
            .await
            .filter(|n| *n >= 1)
    })
    .await;
    assert!(stat >= 1);
}

/// The filter's counters show on Envoy's admin `/stats`.
#[tokio::test(flavor = "multi_thread")]
async fn stats_on_admin() {
    let stack = Stack::builder().start().await;
    stack.wait_for_token("acme").await;
    for _ in 0..5 {
        assert_eq!(stack.get("/", Some("acme")).await.status(), 200);
    }
    stack.get("/", Some("umbrella")).await;
    stack.get("/", None).await;
    let injected = eventually(Duration::from_secs(2), "injected stat", || async {
        stack
            .envoy
            .stat("wasmcustom.authproxy.tenant.acme.injected")
            .await
            .filter(|n| *n >= 6)
    })
    .await;
    assert!(injected >= 6);
    for name in [
        "wasmcustom.authproxy.rejected.unknown_tenant",
        "wasmcustom.authproxy.rejected.missing_tenant",
    ] {
        eventually(Duration::from_secs(2), name, || async {
            stack.envoy.stat(name).await.filter(|n| *n == 1)
        })
        .await;
    }
    assert!(stack
        .envoy
        .stat("wasmcustom.authproxy.fetcher.snapshots")
        .await
        .is_some_and(|n| n >= 1));
}

/// `/health_check` is answered by Envoy itself, without the filter and
/// without an access-log line.
#[tokio::test(flavor = "multi_thread")]
async fn health_check_is_envoys_own() {
    let stack = Stack::builder().start().await;
    let r = stack.get("/health_check", None).await;
    assert_eq!(r.status(), 200);
    stack.wait_for_token("acme").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = stack.envoy.output.text();
    assert!(
        log.lines()
            .any(|l| l.starts_with('{') && l.contains(r#""path":"/ping""#)),
        "access log is on: {log}"
    );
    assert!(
        !log.contains("/health_check"),
        "health checks are not logged"
    );
}
