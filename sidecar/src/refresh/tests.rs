use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;

use super::*;
use crate::config::Config;
use crate::schedule::tests::{permanent, policy, transient};
use crate::secret::Secret;

fn token(secs: u64) -> IssuedToken {
    IssuedToken {
        access_token: Secret::new(format!("tok-{secs}")),
        lifetime: Duration::from_secs(secs),
        defaulted_lifetime: false,
    }
}

/// Plays back scripted results and records when each fetch started.
#[derive(Default)]
struct Script {
    results: Mutex<VecDeque<Result<IssuedToken, FetchError>>>,
    calls: Mutex<Vec<Instant>>,
}

impl Fetcher for Script {
    fn fetch(
        &self,
        _tenant: &Tenant,
    ) -> impl Future<Output = Result<IssuedToken, FetchError>> + Send {
        self.calls.lock().unwrap().push(Instant::now());
        let next = self
            .results
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(transient("network")));
        async move { next }
    }
}

struct Harness {
    script: Arc<Script>,
    store: Store,
    reports: mpsc::Sender<u64>,
    start: Instant,
}

impl Harness {
    fn start(policy: RefreshPolicy, results: Vec<Result<IssuedToken, FetchError>>) -> Harness {
        std::env::set_var("AUTHPROXY_REFRESH_TEST_SECRET", "x");
        let yaml = "tenants:\n  acme:\n    token_url: http://127.0.0.1:1/token\n    client_id: acme\n    auth: {method: client_secret_post, secret: {env: AUTHPROXY_REFRESH_TEST_SECRET}}\n";
        let config = Config::from_yaml(yaml, Path::new("t.yaml"), Vec::new()).unwrap();
        let script = Arc::new(Script {
            results: Mutex::new(results.into()),
            ..Default::default()
        });
        let store = Store::new(["acme"]);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(
            TenantLoop {
                tenant: Arc::new(config.tenants[0].clone()),
                policy: Arc::new(policy),
                fetcher: script.clone(),
                limiter: Arc::new(Limiter::new(16, Arc::default())),
                store: store.clone(),
                metrics: Arc::default(),
                rejections: rx,
                first_fetch: Instant::now(),
                shared: None,
            }
            .run(),
        );
        Harness {
            script,
            store,
            reports: tx,
            start: Instant::now(),
        }
    }

    /// Seconds since start of each fetch.
    fn calls(&self) -> Vec<f64> {
        self.script
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.duration_since(self.start).as_secs_f64())
            .collect()
    }

    fn token(&self) -> Option<(String, u64)> {
        let snap = self.store.snapshot();
        snap.tenants["acme"]
            .as_ref()
            .map(|e| (e.header.expose().to_string(), e.version))
    }
}

async fn at(h: &Harness, secs: f64) {
    tokio::time::sleep_until(h.start + Duration::from_secs_f64(secs)).await;
}

/// A token is fetched at once and refreshed proactively at 50% ± 10% of its
/// lifetime.
#[tokio::test(start_paused = true)]
async fn refreshes_proactively() {
    let h = Harness::start(
        policy(),
        vec![Ok(token(100)), Ok(token(100)), Ok(token(100))],
    );
    at(&h, 1.0).await;
    assert_eq!(h.token().unwrap().0, "Bearer tok-100");
    at(&h, 130.0).await;
    let calls = h.calls();
    assert_eq!(calls[0], 0.0);
    let gap = calls[1] - calls[0];
    assert!((40.0..=60.0).contains(&gap), "refresh after {gap}s");
    assert_eq!(calls.len(), 3, "one fetch per refresh, no more: {calls:?}");
}

/// Failures back off 1 s, 2 s, 4 s (each jittered to 50–100%), then a
/// success resets the streak.
#[tokio::test(start_paused = true)]
async fn backs_off_then_recovers() {
    let h = Harness::start(
        policy(),
        vec![
            Err(transient("http_5xx")),
            Err(transient("timeout")),
            Err(transient("bad_response")),
            Ok(token(3600)),
        ],
    );
    at(&h, 10.0).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    for (i, step) in [1.0, 2.0, 4.0].iter().enumerate() {
        let gap = calls[i + 1] - calls[i];
        assert!(gap >= step * 0.5 && gap <= *step, "gap {i} = {gap}");
    }
    assert!(h.token().is_some());
}

/// A permanent error retries slowly, not on the fast backoff.
#[tokio::test(start_paused = true)]
async fn permanent_errors_retry_slowly() {
    let h = Harness::start(policy(), vec![Err(permanent()), Err(permanent())]);
    at(&h, 250.0).await;
    assert_eq!(h.calls().len(), 1);
    at(&h, 340.0).await;
    assert_eq!(h.calls().len(), 2);
}

/// During an outage the last token is served until its expiry less the
/// margin (capped at a quarter of the lifetime), and never after.
#[tokio::test(start_paused = true)]
async fn serves_last_token_until_expiry() {
    // 100 s token: margin 30 s capped at 25 s, so served for 75 s.
    let h = Harness::start(policy(), vec![Ok(token(100))]);
    at(&h, 74.9).await;
    assert!(h.token().is_some(), "still served during the outage");
    at(&h, 75.1).await;
    assert!(h.token().is_none(), "expired tokens are withdrawn");
    assert!(h.calls().len() > 3, "kept retrying: {:?}", h.calls());
}

/// An upstream 401 for the current token refreshes at once; a report for the
/// replacement within the rate limit is deferred to the window's end (not
/// dropped), its re-reports and stale versions add nothing.
#[tokio::test(start_paused = true)]
async fn rejection_refreshes_once() {
    let h = Harness::start(
        policy(),
        vec![Ok(token(3600)), Ok(token(3600)), Ok(token(3600))],
    );
    at(&h, 1.0).await;
    let (_, v1) = h.token().unwrap();
    h.reports.send(v1).await.unwrap();
    at(&h, 1.5).await;
    assert_eq!(h.calls().len(), 2, "refreshed at once");
    let (_, v2) = h.token().unwrap();
    assert_ne!(v1, v2);
    h.reports.send(v1).await.unwrap(); // stale
    h.reports.send(v2).await.unwrap(); // inside the 10 s window: deferred
    h.reports.send(v2).await.unwrap(); // the same version again: nothing more
    at(&h, 10.9).await;
    assert_eq!(h.calls().len(), 2, "not before the window's end");
    at(&h, 11.1).await;
    assert_eq!(
        h.calls().len(),
        3,
        "the deferred refresh ran at the window's end"
    );
    let (_, v3) = h.token().unwrap();
    assert_ne!(v3, v2);
    at(&h, 30.0).await;
    assert_eq!(h.calls().len(), 3, "one refresh per report, no more");
}

/// expires_in 0.001 is clamped to the 10 s floor: the tenant is refreshed
/// every 4–6 s, not in a storm; the token itself is never served past its
/// real (1 ms) lifetime.
#[tokio::test(start_paused = true)]
async fn tiny_lifetimes_cause_no_storm() {
    let tiny = IssuedToken {
        access_token: Secret::new("tiny".into()),
        lifetime: Duration::from_millis(1),
        defaulted_lifetime: false,
    };
    let h = Harness::start(policy(), vec![Ok(tiny.clone()); 100]);
    at(&h, 60.0).await;
    let n = h.calls().len();
    assert!(
        (10..=16).contains(&n),
        "{n} fetches in 60 s: {:?}",
        h.calls()
    );
    at(&h, 60.5).await;
    assert!(h.token().is_none(), "never served past its real lifetime");
}
