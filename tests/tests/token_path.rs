//! The token path under stress, through the real Envoy, filter and sidecar
//! (issue 10): no 503 gaps at refresh, rejected replacements always
//! replaced, readiness that survives one tenant's trouble, and a graceful
//! stop that finishes in-flight requests.

use std::cell::RefCell;
use std::net::TcpListener;
use std::time::Duration;

use axum::routing::get;
use e2e::fakes::{Behave, FakeApi, FakeAuth};
use e2e::procs::{config_with_built_wasm, local_config, Envoy, Sidecar};
use e2e::{eventually, repo_root, Stack};
use serde_json::Value;
use tokio::time::Instant;

/// The bearer_injector configuration shipped in `envoy/envoy.yaml`.
fn production_injector() -> Value {
    let found = RefCell::new(Value::Null);
    config_with_built_wasm(
        &repo_root().join("envoy/envoy.yaml"),
        "bearer_injector",
        &|json| *found.borrow_mut() = json.clone(),
    );
    let mut json = found.into_inner();
    assert!(
        json.is_object(),
        "envoy/envoy.yaml has a bearer_injector configuration"
    );
    // Every expiry setting as shipped; only the caller identity is local's
    // (this stack has no JWT issuer: tests/tests/callers.rs covers jwt).
    json["identity"] = serde_json::json!({"mode": "anonymous"});
    json
}

/// `workers` loops send requests as `tenant` (a new connection each) for
/// `how_long`; returns the statuses seen, in order per worker.
async fn load(proxy: &str, tenant: &str, workers: usize, how_long: Duration) -> Vec<u16> {
    let until = Instant::now() + how_long;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (url, tenant) = (format!("{proxy}/ping"), tenant.to_string());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap();
                let mut seen = Vec::new();
                while Instant::now() < until {
                    let r = http.get(&url).header("x-tenant-id", &tenant).send().await;
                    seen.push(r.map(|r| r.status().as_u16()).unwrap_or(0));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Runs continuous load through Envoy with 10 s tokens (the lifetime floor)
/// for about four refresh cycles and checks every request got a token.
async fn no_503s_across_refreshes(injector: Option<Value>) {
    let auth = FakeAuth::start(e2e::Behave::issue(10)).await;
    let api = FakeApi::start().await;
    let sidecar = Sidecar::start(&auth, &["acme".to_string()], "").await;
    let config = local_config(
        sidecar.tokens_addr.port(),
        e2e::fakes::port_of(&api.url),
        &|json| {
            if let Some(prod) = &injector {
                *json = prod.clone();
            }
        },
    );
    let envoy = Envoy::start_with(&config).await;
    e2e::token_on_every_worker(&envoy.url(), "/ping", Some("acme")).await;
    let statuses = load(&envoy.url(), "acme", 2, Duration::from_secs(22)).await;
    let issued = auth.issued().len();
    assert!(
        issued >= 4,
        "only {issued} tokens: not several refresh cycles"
    );
    let bad: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests failed ({:?}...) across {issued} tokens",
        bad.len(),
        statuses.len(),
        &bad[..bad.len().min(10)]
    );
    drop(sidecar);
}

/// 10 s tokens, `envoy/local.yaml`'s filter settings: zero non-200s under
/// continuous load across about four refresh cycles.
#[tokio::test(flavor = "multi_thread")]
async fn ten_second_tokens_no_503s() {
    no_503s_across_refreshes(None).await;
}

/// The same with the filter settings of the production `envoy/envoy.yaml`.
#[tokio::test(flavor = "multi_thread")]
async fn ten_second_tokens_no_503s_production_filter_settings() {
    no_503s_across_refreshes(Some(production_injector())).await;
}

/// The upstream rejects the first token and also its replacement: the
/// second report, inside rejection_min_interval, is deferred rather than
/// dropped, so a third token is in use within the interval plus one fetch.
#[tokio::test(flavor = "multi_thread")]
async fn rejected_replacement_is_replaced() {
    let stack = Stack::builder()
        .tenants(&["acme"])
        .sidecar_yaml("refresh:\n  rejection_min_interval: 3s\n")
        .start()
        .await;
    stack.wait_for_token("acme").await;
    let api = stack.api.as_ref().unwrap();
    let t1 = stack.auth.issued()[0].clone();
    api.revoke(&format!("Bearer {}", t1.token));
    // Requests get 401 until the replacement comes; revoke it the moment it
    // is issued.
    let t2 = eventually(Duration::from_secs(5), "a second token", || async {
        let _ = stack.get("/", Some("acme")).await;
        stack.auth.issued().get(1).cloned()
    })
    .await;
    api.revoke(&format!("Bearer {}", t2.token));
    let want = |t: &str| format!("Bearer {t}");
    let (t3, seen_at) = eventually(Duration::from_secs(10), "a third token in use", || async {
        let r = stack.get("/", Some("acme")).await;
        if r.status() != 200 {
            return None;
        }
        let body: Value = r.json().await.ok()?;
        let t3 = stack.auth.issued().get(2).cloned()?;
        (body["authorization"] == want(&t3.token).as_str()).then(|| (t3, Instant::now()))
    })
    .await;
    // The window starts at the first forced refresh (t2's request).
    let within = seen_at.duration_since(t2.at);
    assert!(
        within <= Duration::from_millis(3000 + 1000),
        "third token in use {within:?} after the second was issued"
    );
    assert!(
        t3.at.duration_since(t2.at) >= Duration::from_millis(2900),
        "rate limit kept"
    );
    assert_eq!(stack.auth.issued().len(), 3);
}

/// One tenant's secret is refused by the auth server: the pod stays ready,
/// the other tenant's requests succeed, the broken tenant gets 503 JSON, and
/// `/status` says which tenant fails and why.
#[tokio::test(flavor = "multi_thread")]
async fn one_broken_tenant_keeps_the_pod_ready() {
    let auth = FakeAuth::start(e2e::Behave::issue(3600)).await;
    auth.set_tenant("acme", Behave::json(401, r#"{"error":"invalid_client"}"#));
    let api = FakeApi::start().await;
    let sidecar = Sidecar::start(&auth, &["acme".into(), "globex".into()], "").await;
    let envoy = Envoy::start(
        sidecar.tokens_addr.port(),
        e2e::fakes::port_of(&api.url),
        None,
    )
    .await;
    let get = |tenant: &'static str| {
        let url = format!("{}/", envoy.url());
        async move {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap()
                .get(url)
                .header("x-tenant-id", tenant)
                .send()
                .await
                .unwrap()
        }
    };
    eventually(Duration::from_secs(20), "globex served", || async {
        (get("globex").await.status() == 200).then_some(())
    })
    .await;
    let http = reqwest::Client::new();
    let probes = sidecar.probes_url();
    let status: Value = eventually(Duration::from_secs(10), "acme failing", || async {
        let st: Value = http
            .get(format!("{probes}/status"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (st["tenants"]["acme"]["state"] == "failing").then_some(st)
    })
    .await;
    assert_eq!(status["tenants"]["acme"]["last_error"], "invalid_client");
    assert_eq!(status["tenants"]["globex"]["state"], "valid");
    let ready = http.get(format!("{probes}/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "one tenant's trouble must not unready the pod"
    );
    tokio::time::sleep(Duration::from_millis(100)).await; // every worker's tick
    for _ in 0..10 {
        assert_eq!(get("globex").await.status(), 200);
        let r = get("acme").await;
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "no_token");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// SIGTERM to the sidecar (as the kubelet sends it after the preStop
/// delay): Envoy stops accepting new connections at once, a slow (3 s)
/// upstream request already in flight completes with 200 and its token,
/// Envoy then exits, and the sidecar serves tokens until Envoy is gone and
/// exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn graceful_stop_finishes_in_flight_requests() {
    let auth = FakeAuth::start(e2e::Behave::issue(3600)).await;
    let slow = axum::Router::new().route(
        "/slow",
        get(|headers: axum::http::HeaderMap| async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            axum::Json(serde_json::json!({ "authorization": auth }))
        }),
    );
    let api_url = e2e::fakes::serve(slow).await;
    // Envoy first, pointed at the port the sidecar will take, so that the
    // sidecar's config can name Envoy's admin address.
    let tokens_port = free_port();
    let config = local_config(tokens_port, e2e::fakes::port_of(&api_url), &|_| {});
    let envoy = Envoy::start_with(&config).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("acme.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let admin = envoy.admin.trim_start_matches("http://").to_string();
    let yaml = format!(
        "listen:\n  tokens: 127.0.0.1:{tokens_port}\n  probes: 127.0.0.1:0\n\
         shutdown:\n  envoy_admin: {admin}\n  drain_timeout: 10s\n  idle: 1s\n\
         tenants:\n  acme:\n    token_url: {}\n    client_id: acme\n\
         \x20   auth: {{method: client_secret_post, secret: {{file: {}}}}}\n",
        auth.tenant_url("acme"),
        secret.display()
    );
    let path = dir.path().join("sidecar.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut sidecar = Sidecar::spawn(&path, dir, vec!["s3cret".into()]).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let proxy = envoy.url();
    e2e::token_on_every_worker(&proxy, "/slow-not-yet", Some("acme")).await;
    let in_flight = tokio::spawn({
        let (http, url) = (http.clone(), format!("{proxy}/slow"));
        async move { http.get(url).header("x-tenant-id", "acme").send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = Instant::now();
    let checks = async {
        let refused_after = eventually(
            Duration::from_secs(2),
            "new connections refused",
            || async {
                let r = http
                    .get(format!("{proxy}/ping"))
                    .header("x-tenant-id", "acme")
                    .send()
                    .await;
                matches!(r, Err(e) if e.is_connect()).then(|| stopped_at.elapsed())
            },
        )
        .await;
        let done = in_flight
            .await
            .unwrap()
            .expect("the in-flight request completed");
        let finished_after = stopped_at.elapsed();
        (refused_after, done, finished_after)
    };
    let (exit, (refused_after, done, finished_after)) = tokio::join!(sidecar.terminate(), checks);
    assert_eq!(done.status(), 200);
    let body: Value = done.json().await.unwrap();
    assert!(body["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer tok-acme-"));
    assert!(
        refused_after < Duration::from_secs(1),
        "refused after {refused_after:?}"
    );
    assert!(
        finished_after >= Duration::from_millis(2500),
        "{finished_after:?}"
    );
    assert!(exit.success(), "sidecar exit {exit:?}");
    // Envoy was told to quit once drained; the sidecar left after it.
    assert!(
        reqwest::get(format!("{}/ready", envoy.admin))
            .await
            .is_err(),
        "envoy is gone"
    );
    let log = sidecar.output.text();
    assert!(log.contains("envoy drained; told it to exit"), "{log}");
}
