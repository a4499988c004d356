//! One expiry rule (issue 10, the filter's side): with the production
//! `envoy/envoy.yaml` filter settings, the filter uses a token until the
//! sidecar's `expires_at_ms` less a small clock allowance, so short-lived
//! tokens leave no 503 window at refresh.

use std::time::{Duration, Instant};

use e2e::jwt::Flaw;
use e2e::prod::{Identity, ProdStack};

/// Continuous requests (a new connection each, so every worker is asked)
/// over more than two refresh cycles of 10 s tokens: every one succeeds,
/// and more than one token was used.
#[tokio::test(flavor = "multi_thread")]
async fn no_503_window_at_refresh_with_10s_tokens() {
    let stack = ProdStack::start_with_lifetime(
        Identity::Jwt,
        &[(
            "acme",
            "      - id: system:serviceaccount:billing:invoicer\n",
        )],
        10,
    )
    .await;
    let token = stack.files.issuer.token("billing", "invoicer", Flaw::None);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let send = || {
        http.get(format!("{}/v1/x", stack.envoy.url()))
            .header("x-tenant-id", "acme")
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    e2e::on_every_worker(|| async { send().await.is_ok_and(|r| r.status() == 200) }).await;
    let start = Instant::now();
    let (mut ok, mut refused) = (0u32, Vec::new());
    while start.elapsed() < Duration::from_secs(22) {
        let r = send().await.expect("request");
        match r.status().as_u16() {
            200 => ok += 1,
            s => refused.push((start.elapsed(), s)),
        }
    }
    let tenant_tokens = stack.auth.issued().len();
    assert!(refused.is_empty(), "{} refused: {refused:?}", refused.len());
    assert!(ok > 100, "{ok} requests");
    assert!(
        tenant_tokens >= 3,
        "{tenant_tokens} tokens issued: the run spans refreshes"
    );
}
