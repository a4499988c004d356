//! The running sidecar against a fake token server that fails, hangs and
//! returns garbage: retries and their metrics, the token API and its
//! long-poll, expiry, upstream-401 feedback, probes and metrics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{client, fetches, metric, Running, LISTEN};
use testkit::{eventually, Behave, FakeAuth};
use tokio::time::Instant;

/// A one-tenant config for `fake`, with `refresh` settings.
fn one_tenant(fake: &FakeAuth, refresh: &str) -> String {
    format!(
        "{LISTEN}refresh:\n{refresh}\ntenants:
  acme:
    token_url: {url}
    client_id: acme
    auth: {{method: client_secret_post, secret: {{file: {secret}}}}}
",
        url = fake.token_url(),
        secret = SECRET_FILE,
    )
}

/// A client secret for tenants whose secret the test doesn't look at.
const SECRET_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/client_secret");

const FAST: &str = "  backoff_initial: 50ms\n  backoff_max: 200ms\n  request_timeout: 300ms";

/// Not JSON, an HTML page, no access_token and token_type mac each count as
/// a bad_response failure, are retried with backoff, and the sidecar gets a
/// token once the server recovers.
#[tokio::test]
async fn bad_responses_are_retried_until_success() {
    let fake = FakeAuth::start(Behave::issue(3600)).await;
    fake.push([
        Behave::text(200, "application/json", "{not json at all"),
        Behave::text(
            200,
            "text/html",
            "<html><body><h1>Gateway maintenance</h1></body></html>",
        ),
        Behave::json(200, r#"{"token_type":"Bearer","expires_in":3600}"#),
        Behave::json(
            200,
            r#"{"access_token":"mac-token","token_type":"mac","expires_in":3600}"#,
        ),
    ]);
    let sc = Running::start(&one_tenant(&fake, FAST)).await;
    let entry = sc.wait_token("acme").await;
    assert_eq!(fake.count(), 5, "four bad answers, then the token");
    assert_eq!(
        entry["header"],
        format!("Bearer {}", fake.tokens()[0]).as_str()
    );
    let m = sc.metrics().await;
    assert_eq!(fetches(&m, "acme", "failure", "bad_response"), 4.0, "{m}");
    assert_eq!(fetches(&m, "acme", "success", ""), 1.0);
    assert_eq!(
        metric(
            &m,
            "authproxy_token_consecutive_failures",
            "tenant=\"acme\""
        ),
        Some(0.0)
    );
    // Backoff: each retry waits at least half the current step.
    let seen = fake.seen();
    for (i, pair) in seen.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let min = Duration::from_millis((25u64 << i).min(100));
        assert!(gap >= min, "retry {i} after {gap:?}, expected ≥ {min:?}");
    }
    sc.assert_alive();
    sc.stop().await;
}

/// 5xx and 429 are transient: retried on the backoff, with a 429's
/// Retry-After respected, then success.
#[tokio::test]
async fn server_errors_and_rate_limits_are_transient() {
    let fake = FakeAuth::start(Behave::issue(3600)).await;
    fake.push([
        Behave::text(500, "text/plain", "boom"),
        Behave::text(503, "text/plain", "down"),
        Behave::too_many(1),
    ]);
    let sc = Running::start(&one_tenant(&fake, FAST)).await;
    sc.wait_token("acme").await;
    let m = sc.metrics().await;
    assert_eq!(fetches(&m, "acme", "failure", "http_5xx"), 2.0, "{m}");
    assert_eq!(fetches(&m, "acme", "failure", "rate_limited"), 1.0, "{m}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 4);
    let after_429 = seen[3].at - seen[2].at;
    assert!(
        after_429 >= Duration::from_millis(950),
        "retried {after_429:?} after a 429 with Retry-After: 1"
    );
    sc.stop().await;
}

/// invalid_client is permanent: retried slowly (permanent_retry), not on the
/// fast transient backoff, while the token API and probes keep working.
#[tokio::test]
async fn invalid_client_is_retried_slowly() {
    let fake = FakeAuth::start(Behave::json(
        401,
        r#"{"error":"invalid_client","error_description":"bad secret"}"#,
    ))
    .await;
    let sc = Running::start(&one_tenant(
        &fake,
        &format!("{FAST}\n  permanent_retry: 30s"),
    ))
    .await;
    eventually(Duration::from_secs(5), "first attempt", || async {
        fake.count() >= 1
    })
    .await;
    // The transient backoff would have retried ~10 times in this window.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.count(), 1, "permanent failure must not be hammered");
    let m = sc.metrics().await;
    assert_eq!(fetches(&m, "acme", "failure", "invalid_client"), 1.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "authproxy_token_consecutive_failures",
            "tenant=\"acme\""
        ),
        Some(1.0)
    );
    assert!(sc.entry("acme").await.is_null());
    // The pod stays ready: this tenant's requests get 503 JSON from the
    // filter, other tenants' go through.
    assert_eq!(sc.status("/readyz").await, 200);
    assert_eq!(sc.status("/livez").await, 200);
    let st = sc.health().await;
    assert_eq!(
        st["tenants"]["acme"],
        serde_json::json!({
            "state": "failing", "expires_at_ms": null, "last_error": "invalid_client",
            "consecutive_failures": 1, "fetches": {"success": 0, "failure": 1}
        })
    );
    sc.assert_alive();
    sc.stop().await;
}

/// A token server that never answers times out after request_timeout and
/// is retried.
#[tokio::test]
async fn hanging_server_times_out_and_is_retried() {
    let fake = FakeAuth::start(Behave::issue(3600)).await;
    fake.push([Behave::Hang]);
    let started = Instant::now();
    let sc = Running::start(&one_tenant(&fake, FAST)).await;
    sc.wait_token("acme").await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300),
        "got a token after {elapsed:?}, before the timeout"
    );
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    let m = sc.metrics().await;
    assert_eq!(fetches(&m, "acme", "failure", "timeout"), 1.0, "{m}");
    assert_eq!(fake.count(), 2);
    sc.stop().await;
}

/// `GET /v1/tokens` carries the snapshot version and, per tenant, the
/// ready-made header, its expiry and its version; a token response without
/// expires_in gets refresh.default_lifetime.
#[tokio::test]
async fn token_api_shape_and_default_lifetime() {
    let fake = FakeAuth::start(Behave::Issue { expires_in: None }).await;
    let sc = Running::start(&one_tenant(
        &fake,
        "  default_lifetime: 120s\n  expiry_margin: 10s",
    ))
    .await;
    sc.wait_token("acme").await;
    let snap = sc.snapshot().await;
    let top = snap["version"].as_u64().expect("version");
    let e = &snap["tenants"]["acme"];
    assert_eq!(e["header"], format!("Bearer {}", fake.tokens()[0]).as_str());
    assert!(e["version"].as_u64().unwrap() <= top);
    let answered = fake.seen()[0].answered_wall.unwrap();
    let answered_ms = answered.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let expires = e["expires_at_ms"].as_i64().expect("expires_at_ms");
    // 120 s lifetime less the 10 s margin, from about when it was issued.
    let expected = answered_ms + 110_000;
    assert!(
        (expires - expected).abs() < 2_000,
        "expires_at_ms {expires}, expected about {expected}"
    );
    sc.stop().await;
}

/// A long-poll with no change answers 204 after about wait_ms; one waiting
/// for a change answers within 100 ms of the token server's response.
#[tokio::test]
async fn long_poll_waits_and_wakes_promptly() {
    let fake = FakeAuth::start(Behave::issue(3600)).await;
    let sc = Running::start(&one_tenant(&fake, "  rejection_min_interval: 1ms")).await;
    let entry = sc.wait_token("acme").await;
    let v = sc.snapshot().await["version"].as_u64().unwrap();
    let http = client();
    let t0 = Instant::now();
    let r = http
        .get(sc.tokens_url(&format!("/v1/tokens?after={v}&wait_ms=300")))
        .send()
        .await
        .unwrap();
    let waited = t0.elapsed();
    assert_eq!(r.status(), 204);
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_millis(1500),
        "204 after {waited:?}"
    );
    // An `after` that is not current answers at once.
    let t0 = Instant::now();
    let r = http
        .get(sc.tokens_url(&format!("/v1/tokens?after={}&wait_ms=5000", v - 1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(t0.elapsed() < Duration::from_millis(500));

    for round in 0..5 {
        let v = sc.snapshot().await["version"].as_u64().unwrap();
        let tv = sc.entry("acme").await["version"].as_u64().unwrap();
        let poll = http
            .get(sc.tokens_url(&format!("/v1/tokens?after={v}&wait_ms=10000")))
            .send();
        let poll = tokio::spawn(poll);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = fake.count();
        assert_eq!(sc.reject("acme", tv).await, 202);
        let r = poll.await.unwrap().unwrap();
        let returned = Instant::now();
        assert_eq!(r.status(), 200, "round {round}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["version"].as_u64().unwrap() > v);
        assert_eq!(fake.count(), before + 1);
        let answered = fake.seen()[before].answered.unwrap();
        let lag = returned - answered;
        assert!(
            lag <= Duration::from_millis(100),
            "round {round}: long-poll returned {lag:?} after the token response"
        );
    }
    let _ = entry;
    sc.stop().await;
}

/// A token is never served past its expiry: with a 2 s token, a 500 ms
/// margin and a failing server, the tenant turns null before the real
/// expiry and stays null, readiness drops, and no response ever carries a
/// token past its real expiry.
#[tokio::test]
async fn expired_token_is_never_served() {
    let fake = FakeAuth::start(Behave::text(500, "text/plain", "down")).await;
    fake.push([Behave::issue(2)]);
    let sc = Running::start(&one_tenant(
        &fake,
        "  expiry_margin: 500ms\n  min_lifetime: 1s\n  backoff_initial: 100ms\n  backoff_max: 200ms",
    ))
    .await;
    sc.wait_token("acme").await;
    let issued = fake.seen()[0].answered_wall.unwrap();
    let real_expiry = issued + Duration::from_secs(2);
    let mut went_null_at = None;
    while SystemTime::now() < real_expiry + Duration::from_millis(700) {
        let asked = SystemTime::now();
        let e = sc.entry("acme").await;
        if e.is_null() {
            went_null_at.get_or_insert(asked);
        } else {
            assert!(
                went_null_at.is_none(),
                "a token came back after the tenant went null"
            );
            assert!(asked < real_expiry, "served a token past its real expiry");
            let until = UNIX_EPOCH + Duration::from_millis(e["expires_at_ms"].as_u64().unwrap());
            assert!(until < real_expiry, "expires_at_ms is past the real expiry");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let went_null_at = went_null_at.expect("the tenant went null");
    assert!(
        went_null_at < real_expiry,
        "still served at the real expiry"
    );
    assert_eq!(sc.status("/readyz").await, 200, "no token is not unready");
    assert_eq!(sc.health().await["tenants"]["acme"]["state"], "failing");
    let m = sc.metrics().await;
    assert_eq!(
        metric(&m, "authproxy_token_valid", "tenant=\"acme\""),
        Some(0.0)
    );
    assert!(fetches(&m, "acme", "failure", "http_5xx") >= 1.0);
    sc.stop().await;
}

/// Upstream 401 feedback: a burst of 20 reports for the current token
/// causes exactly one refresh; reports for the new token within
/// rejection_min_interval one more, at the window's end; a stale version
/// never. Unknown tenants get 404, bad queries 400.
#[tokio::test]
async fn rejection_feedback_is_single_flight_and_rate_limited() {
    let fake = FakeAuth::start(Behave::issue(3600)).await;
    let sc = Running::start(&one_tenant(&fake, "  rejection_min_interval: 2s")).await;
    let v1 = sc.wait_token("acme").await["version"].as_u64().unwrap();
    assert_eq!(fake.count(), 1);
    let forced_at = Instant::now();
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let url = sc.tokens_url(&format!("/v1/tenants/acme/rejected?version={v1}"));
            tokio::spawn(async move { client().post(url).send().await.unwrap().status() })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.unwrap(), 202);
    }
    let v2 = sc.wait_new_token("acme", v1).await["version"]
        .as_u64()
        .unwrap();
    // The new token, rejected too, inside the interval: deferred to the
    // window's end (2 s after the first forced refresh), not dropped; its
    // re-reports add nothing.
    for _ in 0..5 {
        assert_eq!(sc.reject("acme", v2).await, 202);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.count(), 2, "a burst of 20 must refresh once");
    let v3 = sc.wait_new_token("acme", v2).await["version"]
        .as_u64()
        .unwrap();
    let waited = forced_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "deferred refresh after {waited:?}"
    );
    assert_eq!(fake.count(), 3, "re-reports of one version refresh once");
    // A stale version does nothing.
    assert_eq!(sc.reject("acme", v1).await, 202);
    assert_eq!(sc.reject("acme", v2).await, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.count(), 3, "a stale version must not refresh");
    let _ = v3;
    let m = sc.metrics().await;
    assert_eq!(
        metric(&m, "authproxy_forced_refreshes_total", "tenant=\"acme\""),
        Some(2.0)
    );

    let http = client();
    let r = http
        .post(sc.tokens_url("/v1/tenants/nobody/rejected?version=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unknown_tenant");
    for bad in [
        "/v1/tenants/acme/rejected?version=abc",
        "/v1/tenants/acme/rejected",
    ] {
        let r = http.post(sc.tokens_url(bad)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: serde_json::Value = r.json().await.expect("JSON error body");
        assert_eq!(body["error"], "bad_request", "{bad}");
    }
    let r = http
        .get(sc.tokens_url("/v1/tokens?after=xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("JSON error body");
    assert_eq!(body["error"], "bad_request");
    sc.stop().await;
}

/// /livez is always 200; /readyz is 503 until a client has received a
/// snapshot and, for a tenant that opted in with `required: true`, until it
/// holds a token; a failing tenant without the opt-in does not block it;
/// /status shows each tenant's health and /metrics every per-tenant family
/// for every tenant.
#[tokio::test]
async fn probes_and_metrics() {
    let required = FakeAuth::start(Behave::text(503, "text/plain", "down")).await;
    let optional = FakeAuth::start(Behave::text(500, "text/plain", "down")).await;
    let sc = Running::start(&format!(
        "{LISTEN}refresh:\n{FAST}\ntenants:
  main:
    token_url: {r}
    client_id: main
    auth: {{method: client_secret_post, secret: {{file: {secret}}}}}
    required: true
  extra:
    token_url: {o}
    client_id: extra
    auth: {{method: client_secret_post, secret: {{file: {secret}}}}}
",
        r = required.token_url(),
        o = optional.token_url(),
        secret = SECRET_FILE,
    ))
    .await;
    assert_eq!(sc.status("/livez").await, 200);
    eventually(Duration::from_secs(5), "a few failed attempts", || async {
        required.count() >= 2
    })
    .await;
    assert_eq!(
        sc.status("/readyz").await,
        503,
        "no snapshot handed out yet"
    );
    sc.snapshot().await;
    assert_eq!(
        sc.status("/readyz").await,
        503,
        "required tenant has no token"
    );
    assert_eq!(sc.status("/livez").await, 200);
    let st = sc.health().await;
    assert_eq!(st["tenants"]["main"]["state"], "failing");
    assert_eq!(st["tenants"]["main"]["last_error"], "http_5xx");
    required.set_default(Behave::issue(3600));
    eventually(
        Duration::from_secs(5),
        "ready once the required tenant has a token",
        || async { sc.status("/readyz").await == 200 },
    )
    .await;
    assert!(sc.entry("extra").await.is_null());
    assert!(optional.count() >= 2);
    let st = sc.health().await;
    let main = &st["tenants"]["main"];
    assert_eq!(main["state"], "valid");
    assert_eq!(main["last_error"], serde_json::Value::Null);
    assert_eq!(main["consecutive_failures"], 0);
    assert_eq!(main["fetches"]["success"], 1);
    assert!(main["fetches"]["failure"].as_u64().unwrap() >= 2);
    let until = main["expires_at_ms"].as_u64().unwrap();
    assert_eq!(
        Some(until),
        sc.entry("main").await["expires_at_ms"].as_u64()
    );
    assert_eq!(st["tenants"]["extra"]["state"], "failing");
    assert!(
        !st.to_string().contains(&fake_token_prefix(&required)),
        "no token in /status"
    );

    let m = sc.metrics().await;
    for family in [
        "authproxy_token_seconds_to_expiry",
        "authproxy_token_valid",
        "authproxy_token_consecutive_failures",
        "authproxy_token_last_success_timestamp_seconds",
        "authproxy_upstream_rejections_total",
        "authproxy_forced_refreshes_total",
        "authproxy_token_state",
        "authproxy_token_lifetime_seconds",
    ] {
        assert!(
            m.contains(&format!("# TYPE {family} ")),
            "{family} TYPE\n{m}"
        );
        for t in ["main", "extra"] {
            assert!(
                metric(&m, family, &format!("tenant=\"{t}\"")).is_some(),
                "{family} for {t}\n{m}"
            );
        }
    }
    assert!(m.contains("# TYPE authproxy_token_fetches_total counter"));
    assert_eq!(fetches(&m, "main", "success", ""), 1.0);
    assert!(fetches(&m, "main", "failure", "http_5xx") >= 2.0);
    assert_eq!(fetches(&m, "extra", "success", ""), 0.0);
    assert!(fetches(&m, "extra", "failure", "http_5xx") >= 2.0);
    assert_eq!(
        metric(&m, "authproxy_token_valid", "tenant=\"main\""),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "authproxy_token_valid", "tenant=\"extra\""),
        Some(0.0)
    );
    let ttl = metric(&m, "authproxy_token_seconds_to_expiry", "tenant=\"main\"").unwrap();
    assert!(ttl > 3000.0 && ttl <= 3600.0, "seconds to expiry {ttl}");
    let last = metric(
        &m,
        "authproxy_token_last_success_timestamp_seconds",
        "tenant=\"main\"",
    )
    .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last).abs() < 30.0, "last success {last}, now {now}");
    assert!(
        metric(
            &m,
            "authproxy_token_consecutive_failures",
            "tenant=\"extra\""
        )
        .unwrap()
            >= 2.0
    );
    sc.stop().await;
}

/// The prefix of every token `fake` issues.
fn fake_token_prefix(fake: &FakeAuth) -> String {
    let t = fake.tokens().pop().expect("a token");
    t.rsplit_once('-').map(|(p, _)| p.to_string()).unwrap_or(t)
}

/// A token endpoint that redirects (307, which would re-send the POST with
/// the client secret) is not followed: the redirect target receives
/// nothing, and the failure is `redirect`, retried slowly like a refused
/// credential.
#[tokio::test]
async fn redirects_are_not_followed() {
    let target = FakeAuth::start(Behave::issue(3600)).await;
    let origin = FakeAuth::start(Behave::Redirect {
        status: 307,
        location: target.token_url(),
    })
    .await;
    let sc = Running::start(&one_tenant(&origin, FAST)).await;
    eventually(Duration::from_secs(5), "the redirect answered", || async {
        sc.health().await["tenants"]["acme"]["last_error"] == "redirect"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(target.count(), 0, "the redirect target received a request");
    assert_eq!(
        origin.count(),
        1,
        "a redirect is retried slowly (permanent)"
    );
    assert!(sc.entry("acme").await.is_null());
    let m = sc.metrics().await;
    assert_eq!(fetches(&m, "acme", "failure", "redirect"), 1.0, "{m}");
    sc.stop().await;
}

/// `expires_in` 0, 0.001, ten years, missing and a numeric string all give
/// a token and a bounded schedule: lifetimes are clamped to [10 s, 24 h]
/// (the metric and the lifetime gauge say so), a zero or tiny lifetime is
/// never served past itself, and nothing is refetched in a storm.
#[tokio::test]
async fn odd_expires_in_values_are_handled() {
    use serde_json::json;
    // (expires_in, clamp bound, lifetime used, served)
    let cases = [
        (json!(0), Some("floor"), 10.0, false),
        (json!(0.001), Some("floor"), 10.0, false),
        (json!(315_360_000), Some("ceiling"), 86400.0, true),
        (json!("3600"), None, 3600.0, true),
        (serde_json::Value::Null, None, 300.0, true), // default_lifetime
    ];
    for (expires_in, bound, lifetime, served) in cases {
        let fake = FakeAuth::start(Behave::ExpiresIn(expires_in.clone())).await;
        let sc = Running::start(&one_tenant(&fake, FAST)).await;
        eventually(Duration::from_secs(5), "a fetch", || async {
            fake.tokens().len() == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let m = sc.metrics().await;
        assert_eq!(
            metric(&m, "authproxy_token_lifetime_seconds", "tenant=\"acme\""),
            Some(lifetime),
            "{expires_in}"
        );
        for b in ["floor", "ceiling"] {
            let n = metric(
                &m,
                "authproxy_token_lifetime_clamped_total",
                &format!("tenant=\"acme\",bound=\"{b}\""),
            );
            assert_eq!(
                n,
                Some(f64::from(u8::from(bound == Some(b)))),
                "{expires_in} {b}"
            );
        }
        assert_eq!(!sc.entry("acme").await.is_null(), served, "{expires_in}");
        assert_eq!(fake.count(), 1, "{expires_in}: no refetch storm");
        sc.stop().await;
    }
}

/// 1000 tenants against one slow (50 ms) token server: never more than
/// `max_concurrent_fetches` (16) requests at once, the queue shows in the
/// metrics, and every tenant gets its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded_at_1000_tenants() {
    let fake = FakeAuth::start(Behave::IssueAfter {
        expires_in: 3600,
        delay_ms: 50,
    })
    .await;
    let mut yaml = format!("{LISTEN}tenants:\n");
    for i in 0..1000 {
        yaml.push_str(&format!(
            "  t{i}:\n    token_url: {url}\n    client_id: c{i}\n    auth: {{method: client_secret_post, secret: {{file: {secret}}}}}\n",
            url = fake.token_url(),
            secret = SECRET_FILE
        ));
    }
    let sc = Running::start(&yaml).await;
    let started = Instant::now();
    let mut max_queued = 0.0f64;
    while fake.tokens().len() < 1000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "tokens: {}",
            fake.tokens().len()
        );
        let m = sc.metrics().await;
        max_queued =
            max_queued.max(metric(&m, "authproxy_token_requests_queued", "").unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("1000 tokens after {:?}", started.elapsed());
    assert_eq!(fake.count(), 1000, "one request per tenant");
    let peak = fake.peak_in_flight();
    assert!(peak <= 16, "{peak} token requests at once");
    assert!(peak >= 8, "the bound is used, not serialized: peak {peak}");
    let m = sc.metrics().await;
    let reported = metric(&m, "authproxy_token_requests_in_flight_peak", "").unwrap();
    assert!((8.0..=16.0).contains(&reported), "{reported}");
    assert!(max_queued > 0.0, "the queue depth was never seen above 0");
    sc.stop().await;
}
