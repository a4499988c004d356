//! Rotation latency, in its own test binary so that no other Envoy starts
//! on this 2-core machine while it measures.

use std::time::Duration;

use e2e::{eventually, Stack};
use serde_json::Value;

async fn json(r: reqwest::Response) -> Value {
    r.json().await.expect("json body")
}

/// A rotated token is in use within 100 ms of the auth server issuing it.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_within_100ms() {
    // 2 s tokens (below the 10 s default floor, so the floor is lowered):
    // the sidecar refreshes at 50% ± 10% of the lifetime.
    let stack = Stack::builder()
        .tenants(&["acme"])
        .token_lifetime_secs(2)
        .sidecar_yaml("refresh:\n  min_lifetime: 1s\n  expiry_margin: 200ms\n")
        .start()
        .await;
    stack.wait_for_token("acme").await;
    let first = stack.auth.issued().len();
    let second = eventually(Duration::from_secs(5), "a second token", || async {
        stack.auth.issued().get(first).cloned()
    })
    .await;
    let want = format!("Bearer {}", second.token);
    let seen_at = eventually(
        Duration::from_secs(2),
        "the rotated token in use",
        || async {
            let body = json(stack.get("/", Some("acme")).await).await;
            (body["authorization"] == want.as_str()).then(tokio::time::Instant::now)
        },
    )
    .await;
    let lag = seen_at.duration_since(second.at);
    assert!(lag < Duration::from_millis(100), "rotation took {lag:?}");
}
