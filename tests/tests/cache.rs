//! End-to-end: the opt-in response cache (`envoy/cache-local.yaml`, run as
//! shipped but for ports, the `.wasm` path and the cache directory) with the
//! real Envoy, the real filter's `tenant_gate` and `cache_fill`, the real
//! sidecar, and a fake API that counts calls per path and token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use e2e::procs::{envoy_config, rewrite_plugin};
use e2e::{eventually, Stack};
use serde_json::Value as Json;
use serde_json::Value;
use sha2::{Digest, Sha256};

const CONFIG: &str = "envoy/cache-local.yaml";
const HOST: &str = "api.example.com";
const BIG: usize = 3 * 1024 * 1024;

/// One call the fake API received.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    authorization: Option<String>,
    host: Option<String>,
    /// Headers that must never reach the third party.
    internal: Vec<String>,
}

/// The fake third-party API. `/v1/reference/…` answers 200 with a body
/// naming the call (`n`) and the token it saw, and no `cache-control`;
/// `…/private/…` adds `cache-control: private`; `…/status/N` answers N;
/// `…/slow/…` waits 300 ms; `…/big` is a 3 MiB body. A call without a
/// bearer token gets 401.
#[derive(Clone, Default)]
struct Api {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Api {
    fn router(&self) -> Router {
        Router::new()
            .fallback(axum::routing::any(answer))
            .with_state(self.clone())
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    /// Calls for `path` (any method, any token).
    fn count(&self, path: &str) -> usize {
        self.calls().iter().filter(|c| c.path == path).count()
    }
    /// Calls for `path` with `tenant`'s token.
    fn count_as(&self, path: &str, tenant: &str) -> usize {
        let prefix = format!("Bearer tok-{tenant}-");
        self.calls()
            .iter()
            .filter(|c| c.path == path)
            .filter(|c| {
                c.authorization
                    .as_deref()
                    .unwrap_or("")
                    .starts_with(&prefix)
            })
            .count()
    }
}

fn big_body() -> Vec<u8> {
    // Deterministic, not compressible into a pattern a bug could fake.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..BIG)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn answer(State(api): State<Api>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let path = uri.path().to_string();
    let call = Call {
        method: method.to_string(),
        path: path.clone(),
        authorization: get("authorization"),
        host: get("host"),
        internal: ["x-authproxy-cache-ttl", "x-tenant-id"]
            .iter()
            .filter(|h| headers.contains_key(**h))
            .map(|h| h.to_string())
            .collect(),
    };
    let n = {
        let mut calls = api.calls.lock().unwrap();
        calls.push(call.clone());
        calls.len()
    };
    if !call
        .authorization
        .as_deref()
        .unwrap_or("")
        .starts_with("Bearer tok-")
    {
        return (StatusCode::UNAUTHORIZED, "no token").into_response();
    }
    let body = serde_json::json!({"path": path, "authorization": call.authorization, "n": n});
    if path == "/v1/reference/big" {
        return ([("content-type", "application/octet-stream")], big_body()).into_response();
    }
    if let Some(code) = path.strip_prefix("/v1/reference/status/") {
        let code = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        // Freshness the upstream claims must not make an error cacheable.
        return (code, [("cache-control", "max-age=600")], body.to_string()).into_response();
    }
    if path.starts_with("/v1/reference/slow/") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if path.starts_with("/v1/reference/private/") {
        return ([("cache-control", "private")], axum::Json(body)).into_response();
    }
    axum::Json(body).into_response()
}

/// Sets every `key` in the document to `value` (the cache directory).
fn set_all(v: &mut Value, key: &str, value: &str) {
    match v {
        Value::Object(m) => {
            if let Some(slot) = m.get_mut(key) {
                *slot = Value::from(value);
            }
            for (_, c) in m.iter_mut() {
                set_all(c, key, value);
            }
        }
        Value::Array(s) => s.iter_mut().for_each(|c| set_all(c, key, value)),
        _ => {}
    }
}

struct Cache {
    stack: Stack,
    api: Api,
    dir: tempfile::TempDir,
}

type Rewrite = Box<dyn Fn(&mut Value) + Send + Sync>;

/// The stack on `envoy/cache-local.yaml`; `rewrite` changes the config
/// further (only the tests that must: a short TTL, the negative control).
async fn start_with(builder: e2e::StackBuilder, rewrite: Option<Rewrite>) -> Cache {
    let api = Api::default();
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().display().to_string();
    let stack = builder
        .api(api.router())
        .envoy_config(move |sidecar, upstream| {
            envoy_config(CONFIG, sidecar, upstream, &|doc| {
                set_all(doc, "cache_path", &cache_dir);
                if let Some(f) = &rewrite {
                    f(doc);
                }
            })
        })
        .start()
        .await;
    stack.wait_for_token("acme").await;
    stack.wait_for_token("globex").await;
    Cache { stack, api, dir }
}

async fn start() -> Cache {
    start_with(Stack::builder(), None).await
}

impl Cache {
    async fn get(&self, path: &str, tenant: &str) -> reqwest::Response {
        self.stack.get(path, Some(tenant)).await
    }
    async fn stat(&self, tenant: &str, what: &str) -> u64 {
        let name = format!("wasmcustom.authproxy.tenant.{tenant}.cache.{what}");
        self.stack.envoy.stat(&name).await.unwrap_or(0)
    }
    /// Waits until the tick flushed `tenant`'s `what` counter to `want`.
    async fn stat_reaches(&self, tenant: &str, what: &str, want: u64) {
        eventually(Duration::from_secs(5), what, || async {
            (self.stat(tenant, what).await == want).then_some(())
        })
        .await;
    }
    /// The ingress access-log lines (JSON) for `path`.
    fn log_lines(&self, path: &str) -> Vec<Json> {
        self.stack
            .envoy
            .output
            .lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Json>(l).ok())
            .filter(|j| j["path"] == path)
            .collect()
    }
}

async fn json(r: reqwest::Response) -> Json {
    r.json().await.expect("json body")
}

/// A repeat request is served from the cache (the upstream is not called
/// again, `age` is present, the access log says so); the same path for
/// another tenant is fetched with that tenant's token; an unknown tenant
/// gets 403, not the cached body.
#[tokio::test(flavor = "multi_thread")]
async fn repeat_is_served_from_cache_per_tenant() {
    let c = start().await;
    let path = "/v1/reference/countries";
    let first = c.get(path, "acme").await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("age").is_none(), "a miss has no age");
    let first = json(first).await;
    assert_eq!(c.api.count(path), 1);

    let again = c.get(path, "acme").await;
    assert_eq!(again.status(), 200);
    assert!(again.headers().get("age").is_some(), "a hit carries age");
    assert_eq!(json(again).await, first, "the cached body");
    assert_eq!(c.api.count(path), 1, "no second upstream call");

    let other = json(c.get(path, "globex").await).await;
    assert_ne!(other, first);
    assert!(other["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer tok-globex-"));
    assert_eq!(c.api.count_as(path, "globex"), 1);
    assert_eq!(c.api.count(path), 2);

    let unknown = c.get(path, "umbrella").await;
    assert_eq!(unknown.status(), 403);
    assert_eq!(json(unknown).await["error"], "unknown_tenant");
    let none = c.stack.get(path, None).await;
    assert_eq!(none.status(), 400);
    assert_eq!(c.api.count(path), 2);

    c.stat_reaches("acme", "hit", 1).await;
    c.stat_reaches("acme", "miss", 1).await;
    c.stat_reaches("globex", "miss", 1).await;
    // Envoy flushes access logs every 10 s (--file-flush-interval-msec).
    let details: Vec<String> = eventually(Duration::from_secs(15), "access log", || async {
        let l = c.log_lines(path);
        (l.len() >= 5).then(|| l.iter().map(|j| j["details"].to_string()).collect())
    })
    .await;
    let count = |d: &str| details.iter().filter(|s| s.contains(d)).count();
    assert_eq!(count("cache.response_from_cache_filter"), 1, "{details:?}");
    assert_eq!(count("cache.insert_via_upstream"), 2, "{details:?}");
}

/// The imposed TTL overrides the upstream's `private` and its missing
/// `cache-control`: both are cached and carry `max-age=300`.
#[tokio::test(flavor = "multi_thread")]
async fn imposed_ttl_overrides_upstream() {
    let c = start().await;
    for path in ["/v1/reference/private/a", "/v1/reference/plain"] {
        let r = c.get(path, "acme").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "max-age=300", "{path}");
        let r = c.get(path, "acme").await;
        assert!(r.headers().get("age").is_some(), "{path} served from cache");
        assert_eq!(c.api.count(path), 1, "{path}");
    }
}

/// After the TTL the entry is fetched again. (This test alone shortens the
/// route's TTL to 1 s in the gate's configuration.)
#[tokio::test(flavor = "multi_thread")]
async fn entry_expires_after_ttl() {
    let rewrite: Rewrite = Box::new(|doc| {
        rewrite_plugin(doc, "tenant_gate", &|json| {
            json["cache"]["routes"][0]["ttl"] = Json::from(1);
        })
    });
    let c = start_with(Stack::builder(), Some(rewrite)).await;
    let path = "/v1/reference/short";
    let r = c.get(path, "acme").await;
    assert_eq!(r.headers()["cache-control"], "max-age=1");
    c.get(path, "acme").await;
    assert_eq!(c.api.count(path), 1, "fresh: from cache");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = c.get(path, "acme").await;
    assert_eq!(r.status(), 200);
    assert_eq!(c.api.count(path), 2, "expired: fetched again");
}

/// 404 and 5xx are never cached, even when the upstream calls them fresh:
/// each gets `no-store` and every repeat reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn errors_are_not_cached() {
    let c = start().await;
    for code in [404u16, 500, 502, 503] {
        let path = format!("/v1/reference/status/{code}");
        for _ in 0..3 {
            let r = c.get(&path, "acme").await;
            assert_eq!(r.status().as_u16(), code);
            assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
            assert!(r.headers().get("age").is_none());
        }
        assert_eq!(c.api.count(&path), 3, "{path}");
    }
    // Plus the readiness pings: GETs on a path no route caches.
    let pings = c.api.count_as("/ping", "acme") as u64;
    c.stat_reaches("acme", "uncacheable", pings + 4 * 3).await;
}

/// POST on a cacheable path is not cached, does not fill the cache for a
/// later GET, and goes out with the token and the configured Host.
#[tokio::test(flavor = "multi_thread")]
async fn post_is_not_cached() {
    let c = start().await;
    let path = "/v1/reference/items";
    for _ in 0..2 {
        let r = c
            .stack
            .http
            .post(format!("{}{path}", c.stack.proxy_url()))
            .header("x-tenant-id", "acme")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(c.api.count(path), 2);
    let r = c.get(path, "acme").await;
    assert!(r.headers().get("age").is_none());
    assert_eq!(c.api.count(path), 3, "the GET was a miss");
    let calls = c.api.calls();
    assert!(calls.iter().all(|c| c.host.as_deref() == Some(HOST)));
    assert_eq!(calls.iter().filter(|c| c.method == "POST").count(), 2);
}

/// A caller's own Authorization neither poisons another tenant's entry nor
/// bypasses isolation: it never reaches the upstream, and the entry is
/// keyed by the tenant the gate validated, whatever Host the caller sent.
#[tokio::test(flavor = "multi_thread")]
async fn caller_authorization_and_host_cannot_cross_tenants() {
    let c = start().await;
    let path = "/v1/reference/shared";
    let send = |tenant: &'static str, host: &'static str| {
        c.stack
            .http
            .get(format!("{}{path}", c.stack.proxy_url()))
            .header("x-tenant-id", tenant)
            .header("host", host)
            .header("authorization", "Bearer tok-globex-forged")
            .header("x-authproxy-cache-ttl", "999999")
            .send()
    };
    // acme fills the entry, with a forged token and globex's cache authority.
    let a = json(
        send("acme", "globex.tenant.authproxy.invalid")
            .await
            .unwrap(),
    )
    .await;
    assert!(a["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer tok-acme-"));
    // globex, with acme's authority: its own fetch, not acme's entry.
    let g = send("globex", "acme.tenant.authproxy.invalid")
        .await
        .unwrap();
    assert!(g.headers().get("age").is_none(), "not acme's entry");
    assert_eq!(
        g.headers()["cache-control"],
        "max-age=300",
        "TTL header not forged"
    );
    let g = json(g).await;
    assert!(g["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer tok-globex-"));
    assert!(!g["authorization"].as_str().unwrap().contains("forged"));
    // acme again, with a caller Authorization: still served from its entry.
    let again = send("acme", "localhost").await.unwrap();
    assert!(again.headers().get("age").is_some());
    assert_eq!(json(again).await, a);
    assert_eq!(c.api.count_as(path, "acme"), 1);
    assert_eq!(c.api.count_as(path, "globex"), 1);

    // A non-cacheable request with a forged tenant authority goes direct
    // with the validated tenant's token.
    let r = c
        .stack
        .http
        .post(format!("{}{path}", c.stack.proxy_url()))
        .header("x-tenant-id", "globex")
        .header("host", "acme.tenant.authproxy.invalid")
        .send()
        .await
        .unwrap();
    assert!(json(r).await["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer tok-globex-"));
    let calls = c.api.calls();
    assert!(calls
        .iter()
        .all(|c| !c.authorization.as_deref().unwrap_or("").contains("forged")));
    assert!(calls.iter().all(|c| c.internal.is_empty()), "{calls:?}");
}

/// 20 concurrent misses per tenant make one upstream call per tenant.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_misses_coalesce_per_tenant() {
    let c = Arc::new(start().await);
    let path = "/v1/reference/slow/catalogue";
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = c.clone();
        let tenant = if i % 2 == 0 { "acme" } else { "globex" };
        tasks.push(tokio::spawn(async move {
            let r = c.get(path, tenant).await;
            assert_eq!(r.status(), 200);
            let body = json(r).await;
            assert!(body["authorization"]
                .as_str()
                .unwrap()
                .starts_with(&format!("Bearer tok-{tenant}-")));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.api.count_as(path, "acme"), 1);
    assert_eq!(c.api.count_as(path, "globex"), 1);
}

/// A 3 MiB body is stored on disk and served intact from the cache.
#[tokio::test(flavor = "multi_thread")]
async fn large_body_cached_on_disk_intact() {
    let c = start().await;
    let path = "/v1/reference/big";
    let want = hex(&Sha256::digest(big_body()));
    let r = c.get(path, "acme").await;
    assert_eq!(r.status(), 200);
    assert_eq!(hex(&Sha256::digest(r.bytes().await.unwrap())), want);
    let on_disk: u64 = eventually(Duration::from_secs(5), "the entry on disk", || async {
        let total: u64 = std::fs::read_dir(c.dir.path())
            .ok()?
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        (total >= BIG as u64).then_some(total)
    })
    .await;
    assert!(on_disk < 2 * BIG as u64, "{on_disk}");
    let stats = reqwest::get(format!("{}/stats?filter=cache", c.stack.envoy.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The store reports its size (README: cache size).
    let size: u64 = stats
        .lines()
        .find_map(|l| {
            l.strip_prefix("cache.size_bytes.")?
                .rsplit(": ")
                .next()?
                .parse()
                .ok()
        })
        .expect("cache.size_bytes stat");
    assert!(size >= BIG as u64, "{size}");
    for _ in 0..2 {
        let r = c.get(path, "acme").await;
        assert!(r.headers().get("age").is_some());
        let bytes = r.bytes().await.unwrap();
        assert_eq!(bytes.len(), BIG);
        assert_eq!(hex(&Sha256::digest(&bytes)), want);
    }
    assert_eq!(c.api.count(path), 1);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A token rotation leaves the cache as it was: the key holds no token.
/// The next miss goes out with the new token.
#[tokio::test(flavor = "multi_thread")]
async fn token_rotation_keeps_the_cache() {
    let builder = Stack::builder()
        .token_lifetime_secs(4)
        .sidecar_yaml("refresh:\n  expiry_margin: 500ms\n  fraction: 0.5\n  jitter: 0.1\n");
    let c = start_with(builder, None).await;
    let path = "/v1/reference/rates";
    let first = json(c.get(path, "acme").await).await;
    let before = c
        .stack
        .auth
        .issued()
        .iter()
        .filter(|i| i.tenant == "acme")
        .count();
    eventually(
        Duration::from_secs(10),
        "acme's token to rotate",
        || async {
            let n = c
                .stack
                .auth
                .issued()
                .iter()
                .filter(|i| i.tenant == "acme")
                .count();
            (n > before).then_some(())
        },
    )
    .await;
    let newest = c
        .stack
        .auth
        .issued()
        .into_iter()
        .rfind(|i| i.tenant == "acme")
        .unwrap();
    // Wait until the new token is in use on the direct path.
    eventually(Duration::from_secs(5), "the new token in use", || async {
        let body = json(c.get("/v1/other", "acme").await).await;
        (body["authorization"] == format!("Bearer {}", newest.token)).then_some(())
    })
    .await;
    let again = c.get(path, "acme").await;
    assert!(again.headers().get("age").is_some(), "still cached");
    assert_eq!(json(again).await, first);
    assert_eq!(c.api.count(path), 1);
    let miss = json(c.get("/v1/reference/other", "acme").await).await;
    assert_eq!(miss["authorization"], format!("Bearer {}", newest.token));
}

/// The upstream sees the configured Host on both the cache's fill and the
/// direct path, and never the gate's internal headers or authority.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_host_is_pinned_on_both_paths() {
    let c = start().await;
    c.get("/v1/reference/h", "acme").await;
    c.get("/v1/reference/h", "acme").await;
    c.get("/v1/other", "acme").await;
    let calls = c.api.calls();
    assert!(calls.iter().any(|c| c.path == "/v1/reference/h"));
    assert!(calls.iter().any(|c| c.path == "/v1/other"));
    for call in &calls {
        assert_eq!(call.host.as_deref(), Some(HOST), "{call:?}");
        assert!(call.internal.is_empty(), "{call:?}");
    }
}

/// A tenant removed from the sidecar's configuration can no longer reach
/// its cached entries: 403 before the cache is asked.
#[tokio::test(flavor = "multi_thread")]
async fn removed_tenant_cannot_reach_its_entries() {
    let mut c = start().await;
    let path = "/v1/reference/mine";
    assert_eq!(c.get(path, "globex").await.status(), 200);
    assert!(c.get(path, "globex").await.headers().get("age").is_some());
    // Restart the sidecar without globex, as a config change would.
    let config = c.stack.sidecar.dir.path().join("sidecar.yaml");
    let yaml = std::fs::read_to_string(&config).unwrap();
    let cut = yaml.find("  globex:").unwrap();
    std::fs::write(&config, &yaml[..cut]).unwrap();
    c.stack.sidecar.restart().await;
    // Each Envoy worker loads the new snapshot on its own tick: wait until a
    // run of requests (spread over the workers' connections) is refused.
    eventually(
        Duration::from_secs(10),
        "globex refused by every worker",
        || async {
            for _ in 0..10 {
                if c.get(path, "globex").await.status() != 403 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    for _ in 0..20 {
        let r = c.get(path, "globex").await;
        assert_eq!(r.status(), 403);
        assert_eq!(json(r).await["error"], "unknown_tenant");
    }
    assert_eq!(c.api.count(path), 1);
}

/// Negative control: with tenant keying disabled (a test-only switch, the
/// fill replaced by a plain injector reading the tenant header), another
/// tenant receives acme's cached body: the isolation the tests above see
/// comes from the tenant in the key.
#[tokio::test(flavor = "multi_thread")]
async fn negative_control_without_tenant_key_leaks() {
    let rewrite: Rewrite = Box::new(|doc| {
        rewrite_plugin(doc, "tenant_gate", &|json| {
            json["cache"]["unsafe_shared_key_for_tests"] = Json::from(true);
        });
        rewrite_plugin(doc, "cache_fill", &|json| {
            json.as_object_mut().unwrap().remove("authority_suffix");
            json["identity"] = serde_json::json!({"mode": "anonymous"});
        });
        let text = serde_saphyr::to_string(doc)
            .unwrap()
            .replace("root_id: cache_fill", "root_id: bearer_injector");
        *doc = serde_saphyr::from_str(&text).unwrap();
    });
    let c = start_with(Stack::builder(), Some(rewrite)).await;
    // The plain injector imposes no TTL: a path the upstream itself marks
    // fresh (`max-age=600`).
    let path = "/v1/reference/status/200";
    let acme = json(c.get(path, "acme").await).await;
    let globex = c.get(path, "globex").await;
    assert!(globex.headers().get("age").is_some());
    assert_eq!(json(globex).await, acme, "globex got acme's body: the leak");
    assert_eq!(c.api.count(path), 1);
}

/// Sends a GET through Envoy with a caller's ServiceAccount token.
async fn get_as(url: &str, path: &str, tenant: &str, sa_token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .get(format!("{url}{path}"))
        .header("x-tenant-id", tenant);
    if let Some(t) = sa_token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.send().await.expect("request through envoy")
}

/// The production cache config itself (`envoy/cache.yaml`: jwt caller
/// identity, allow-lists, verified TLS to the upstream), rewriting only
/// addresses, files and the cache directory: the caller is checked before
/// the cache, so no identity gets 401 and a caller not on globex's
/// allow-list gets 403 even where an entry exists; an allowed caller gets
/// a fill then a hit; the upstream sees the pinned Host on the fill and the
/// direct path, and never the caller's own token.
#[tokio::test(flavor = "multi_thread")]
async fn production_cache_config_checks_the_caller_first() {
    use e2e::jwt::Flaw;
    use e2e::prod::{production_config_file, Files};
    let files = Files::new();
    let auth = e2e::FakeAuth::start(e2e::Behave::issue(3600)).await;
    let api = Api::default();
    let api_url =
        e2e::fakes::serve_tls(api.router(), &files.api_cert.cert, &files.api_cert.key).await;
    let callers = std::collections::BTreeMap::from([
        (
            "acme".to_string(),
            "    callers:\n      - id: system:serviceaccount:billing:invoicer\n".to_string(),
        ),
        (
            "globex".to_string(),
            "    callers:\n      - id: system:serviceaccount:globex:globex-app\n".to_string(),
        ),
    ]);
    let tenants = ["acme".to_string(), "globex".to_string()];
    let sidecar = e2e::Sidecar::start_with(&auth, &tenants, "", &callers).await;
    let dir = tempfile::tempdir().unwrap();
    let text = production_config_file(
        "envoy/cache.yaml",
        &files,
        sidecar.tokens_addr.port(),
        e2e::fakes::port_of(&api_url),
    );
    let mut doc: Value = serde_saphyr::from_str(&text).unwrap();
    set_all(&mut doc, "cache_path", &dir.path().display().to_string());
    let envoy = e2e::Envoy::start_with(&serde_saphyr::to_string(&doc).unwrap()).await;
    let url = envoy.url();
    let invoicer = files.issuer.token("billing", "invoicer", Flaw::None);
    let globex_app = files.issuer.token("globex", "globex-app", Flaw::None);
    for (tenant, token) in [("acme", &invoicer), ("globex", &globex_app)] {
        let streak = std::cell::Cell::new(0);
        eventually(
            Duration::from_secs(20),
            "a token on every worker",
            || async {
                let ok = get_as(&url, "/ping", tenant, Some(token)).await.status() == 200;
                streak.set(if ok { streak.get() + 1 } else { 0 });
                (streak.get() >= 20).then_some(())
            },
        )
        .await;
    }

    let path = "/v1/reference/countries";
    let fill = get_as(&url, path, "acme", Some(&invoicer)).await;
    assert_eq!(fill.status(), 200);
    assert!(fill.headers().get("age").is_none());
    let fill = json(fill).await;
    let hit = get_as(&url, path, "acme", Some(&invoicer)).await;
    assert!(hit.headers().get("age").is_some(), "served from the cache");
    assert_eq!(json(hit).await, fill);
    let g = json(get_as(&url, path, "globex", Some(&globex_app)).await).await;
    assert!(g["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer tok-globex-"));
    assert_eq!(api.count(path), 2, "one fill per tenant");

    // Refused before the cache, though both tenants have an entry.
    let r = get_as(&url, path, "acme", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(json(r).await["error"], "unauthenticated");
    let r = get_as(&url, path, "globex", Some(&invoicer)).await;
    assert_eq!(r.status(), 403);
    assert_eq!(json(r).await["error"], "caller_not_allowed");
    let r = get_as(&url, path, "acme", Some(&globex_app)).await;
    assert_eq!(r.status(), 403);
    assert_eq!(api.count(path), 2);

    assert_eq!(
        get_as(&url, "/v1/other", "acme", Some(&invoicer))
            .await
            .status(),
        200
    );
    let calls = api.calls();
    assert!(calls.iter().any(|c| c.path == "/v1/other"));
    for call in &calls {
        assert_eq!(call.host.as_deref(), Some(HOST), "{call:?}");
        assert!(call.internal.is_empty(), "{call:?}");
        let auth = call.authorization.as_deref().unwrap_or("");
        assert!(auth.starts_with("Bearer tok-"), "only our token: {call:?}");
    }
}
