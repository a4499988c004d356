//! The adoption latency of shared tokens, in its own test binary so that no
//! other shared-token test's replicas compete for this 2-core machine while
//! it measures.

use std::time::Duration;

use e2e::eventually;
use e2e::fakes::FakeAuth;
use e2e::redis::RedisServer;
use e2e::shared::{counters, percentile, replicas, yaml, Timeline, TENANTS};
use tokio::time::Instant;

/// Over several refresh cycles the auth server issues one token per cycle
/// per tenant (not one per replica), every issued token is served by all
/// three replicas in issue order, and a replica serves a revoked token only
/// for the adoption latency (reported; goal p99 ≤ 50 ms).
#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_one_issue_per_cycle() {
    let redis = RedisServer::start();
    let auth = FakeAuth::start(e2e::Behave::issue(4)).await;
    let sidecars = replicas(&auth, &yaml(&redis, "best_effort"), 3).await;
    let timelines: Vec<Timeline> = sidecars.iter().map(Timeline::follow).collect();
    let start = Instant::now();
    eventually(Duration::from_secs(30), "6 tokens per tenant", || async {
        TENANTS
            .iter()
            .all(|t| auth.issued_for(t).len() >= 6)
            .then_some(())
    })
    .await;
    let elapsed = start.elapsed();
    // Let the last adoption land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = Vec::new();
    for tenant in TENANTS {
        let issued = auth.issued_for(tenant);
        // A cycle is at least 40% of the 4 s life (refresh at 50% ± 10%).
        let cycles = elapsed.as_secs_f64() / 1.6 + 1.0;
        assert!(
            (issued.len() as f64) <= cycles + 1.0,
            "{tenant}: {} issues in {elapsed:?} is more than one per cycle",
            issued.len()
        );
        for pair in issued.windows(2) {
            let gap = pair[1].at.duration_since(pair[0].at);
            assert!(
                gap >= Duration::from_millis(1500),
                "{tenant}: two issues {gap:?} apart: replicas fetched separately; {}",
                counters(&sidecars).await
            );
        }
        for (i, timeline) in timelines.iter().enumerate() {
            let served: Vec<String> = timeline
                .entries()
                .into_iter()
                .filter(|(_, t, _)| t == tenant)
                .filter_map(|(_, _, token)| token)
                .collect();
            let issued_tokens: Vec<String> = issued.iter().map(|i| i.token.clone()).collect();
            assert!(
                issued_tokens.ends_with(&served)
                    || served.ends_with(&issued_tokens)
                    || served == issued_tokens,
                "replica {i} {tenant}: served {served:?}, issued {issued_tokens:?}"
            );
            for issue in issued.iter().skip(1) {
                let at = timeline
                    .first_served(&issue.token)
                    .unwrap_or_else(|| panic!("replica {i} never served {tenant}'s token"));
                latencies.push(at.saturating_duration_since(issue.at));
            }
        }
    }
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    eprintln!(
        "adoption latency over {} samples: p50 {p50:?} p99 {p99:?} max {max:?}",
        latencies.len()
    );
    // The goal is p99 ≤ 50 ms (bench/sidecar/shared.sh measures it); the
    // bounds here leave room for a loaded CI machine, while a replica that
    // waited for its own refresh instead of the notification shows up in the
    // median.
    assert!(p50 <= Duration::from_millis(25), "adoption p50 {p50:?}");
    assert!(p99 <= Duration::from_millis(500), "adoption p99 {p99:?}");
    let tokens: Vec<String> = auth.issued().into_iter().map(|i| i.token).collect();
    for (i, s) in sidecars.iter().enumerate() {
        let logs = s.output.text();
        assert!(logs.contains("\"adopted\""), "replica {i} logs no adoption");
        for t in &tokens {
            assert!(!logs.contains(t.as_str()), "replica {i} logged a token");
        }
    }
    for s in &sidecars {
        let m = reqwest::get(format!("{}/metrics", s.probes_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(m.contains("authproxy_shared_tokens_total{source=\"adopted\"}"));
        assert!(m.contains("authproxy_shared_subscribed 1"), "{m}");
    }
}
