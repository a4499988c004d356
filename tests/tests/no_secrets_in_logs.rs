//! Across the whole stack — sidecar logs, Envoy's logs and access log — no
//! token, client secret or token-server response body is ever written.

use std::time::Duration;

use e2e::Behave;
use e2e::{eventually, Stack};

/// Tokens, secrets and token-server bodies never reach any log, through
/// success, rotation, 401 feedback and auth-server errors.
#[tokio::test(flavor = "multi_thread")]
async fn nothing_sensitive_is_logged() {
    let stack = Stack::builder()
        .tenants(&["acme", "globex"])
        .token_lifetime_secs(2)
        .sidecar_yaml("refresh:\n  min_lifetime: 1s\n  expiry_margin: 200ms\n  rejection_min_interval: 100ms\n  backoff_initial: 50ms\n  backoff_max: 200ms\n")
        .start()
        .await;
    stack.wait_for_token("acme").await;
    stack.wait_for_token("globex").await;
    // Rotation, and an upstream 401 for the current token.
    let api = stack.api.as_ref().unwrap();
    let first = stack.auth.issued()[0].clone();
    api.revoke(&format!("Bearer {}", first.token));
    for _ in 0..5 {
        stack.get("/", Some(&first.tenant)).await;
    }
    eventually(Duration::from_secs(5), "a few rotations", || async {
        (stack.auth.issued().len() >= 5).then_some(())
    })
    .await;
    // The auth server fails with bodies that must never be echoed; wait for
    // each failure to be logged before the next.
    let marker = "TOKEN-SERVER-BODY-MARKER-5c1e";
    for (status, body, reason) in [
        (
            500,
            format!(r#"{{"error":"server_error","error_description":"{marker}"}}"#),
            "http_5xx",
        ),
        (200, format!("<html>{marker}</html>"), "bad_response"),
        (
            400,
            format!(r#"{{"error":"invalid_client","error_description":"{marker}"}}"#),
            "invalid_client",
        ),
    ] {
        stack.auth.set_default(Behave::json(status, &body));
        eventually(Duration::from_secs(10), reason, || async {
            stack
                .sidecar
                .output
                .text()
                .contains(&format!("\"reason\":\"{reason}\""))
                .then_some(())
        })
        .await;
    }

    let sidecar_log = stack.sidecar.output.text();
    let envoy_log = stack.envoy.output.text();
    assert!(sidecar_log.contains("token obtained"));
    let mut secrets: Vec<String> = stack.auth.issued().into_iter().map(|i| i.token).collect();
    secrets.extend(stack.sidecar.secrets.iter().cloned());
    secrets.push(marker.to_string());
    for (name, log) in [("sidecar", &sidecar_log), ("envoy", &envoy_log)] {
        for s in &secrets {
            assert!(!log.contains(s.as_str()), "{name} log contains {s:?}");
        }
        assert!(
            !log.to_lowercase().contains("bearer "),
            "{name} log mentions a bearer value"
        );
    }
}
