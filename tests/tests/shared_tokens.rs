//! One token per tenant shared by every sidecar replica through a real
//! `redis-server`: three real sidecar processes against one fake auth server
//! that revokes a client's previous token on every issue. (The adoption
//! latency test is in `shared_latency.rs`, a binary of its own.)

use std::time::Duration;

use e2e::fakes::{self, Behave, FakeAuth};
use e2e::redis::RedisServer;
use e2e::shared::{counters, replicas, yaml, Timeline, TENANTS};
use e2e::{eventually, Envoy};
use tokio::time::Instant;

/// The lock holder is SIGKILLed mid-fetch: nobody else fetches until its
/// lock runs out, then exactly one replica takes over and all serve its
/// token (exclusive mode: no double issue).
#[tokio::test(flavor = "multi_thread")]
async fn lock_holder_killed_mid_fetch() {
    let redis = RedisServer::start();
    let auth = FakeAuth::start(e2e::Behave::issue(60)).await;
    auth.set_default(Behave::Hang);
    let mut sidecars = replicas(&auth, &yaml(&redis, "exclusive"), 3).await;
    // One request per tenant: the lock holders' (hanging).
    eventually(Duration::from_secs(5), "the first fetches", || async {
        (auth.count() >= 2).then_some(())
    })
    .await;
    let locks = redis.keys("authproxy:*:lock");
    assert_eq!(locks.len(), 2, "{locks:?}");
    let owners: Vec<String> = locks.iter().filter_map(|k| redis.get(k)).collect();
    let pid_of = |owner: &str| owner.split('/').nth(1).and_then(|p| p.parse::<u32>().ok());
    let holder = sidecars
        .iter()
        .position(|s| s.pid() == pid_of(&owners[0]))
        .expect("the lock holder is one of ours");
    sidecars[holder].kill().await;
    let killed = Instant::now();
    auth.set_default(Behave::issue(60));
    eventually(Duration::from_secs(8), "a takeover", || async {
        TENANTS
            .iter()
            .all(|t| !auth.issued_for(t).is_empty())
            .then_some(())
    })
    .await;
    // Let any second fetch show itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for tenant in TENANTS {
        let issued = auth.issued_for(tenant);
        assert_eq!(issued.len(), 1, "{tenant}: double issue");
    }
    let token = auth.issued_for("acme")[0].clone();
    // The killed holder's lock had up to 2 s left; nobody fetched before.
    let lock_held = token.at.duration_since(killed);
    assert!(
        lock_held >= Duration::from_millis(500),
        "took over after {lock_held:?}: before the lock ran out"
    );
    for (_, s) in sidecars.iter().enumerate().filter(|(i, _)| *i != holder) {
        let t = Timeline::follow(s);
        eventually(Duration::from_secs(2), "the shared token", || async {
            (t.current("acme") == Some(token.token.clone())).then_some(())
        })
        .await;
    }
    // 2 hanging requests (one per tenant) + one takeover each.
    assert_eq!(auth.count(), 4);
}

/// Redis stopped: best-effort replicas go back to fetching their own tokens;
/// Redis back: they share again (one issue per cycle).
#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_best_effort() {
    let mut redis = RedisServer::start();
    let auth = FakeAuth::start(e2e::Behave::issue(4)).await;
    let sidecars = replicas(&auth, &yaml(&redis, "best_effort"), 3).await;
    let timelines: Vec<Timeline> = sidecars.iter().map(Timeline::follow).collect();
    eventually(Duration::from_secs(10), "a shared token", || async {
        let want = auth.issued_for("acme").last().map(|i| i.token.clone());
        (want.is_some() && timelines.iter().all(|t| t.current("acme") == want)).then_some(())
    })
    .await;
    redis.stop();
    let before = auth.issued_for("acme").len();
    // Each replica fetches on its own refresh: 3 issues within one cycle.
    eventually(Duration::from_secs(6), "local fetches", || async {
        (auth.issued_for("acme").len() >= before + 3).then_some(())
    })
    .await;
    redis.resume();
    // Sharing resumes: the replicas converge on one token and then see one
    // issue per cycle.
    let converged = eventually(
        Duration::from_secs(15),
        "one shared token again",
        || async {
            let want = auth.issued_for("acme").last().map(|i| i.token.clone());
            (want.is_some() && timelines.iter().all(|t| t.current("acme") == want))
                .then(|| auth.issued_for("acme").len())
        },
    )
    .await;
    eventually(Duration::from_secs(10), "two more cycles", || async {
        (auth.issued_for("acme").len() >= converged + 2).then_some(())
    })
    .await;
    let issued = auth.issued_for("acme");
    for pair in issued[converged..].windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(1200),
            "issues {gap:?} apart after Redis came back"
        );
    }
}

/// Redis stopped in exclusive mode: no replica fetches, each serves the
/// current token until it expires and then none; Redis back: one fetch, and
/// every replica serves it.
#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_exclusive() {
    let mut redis = RedisServer::start();
    let auth = FakeAuth::start(e2e::Behave::issue(4)).await;
    let sidecars = replicas(&auth, &yaml(&redis, "exclusive"), 3).await;
    let timelines: Vec<Timeline> = sidecars.iter().map(Timeline::follow).collect();
    let token = eventually(Duration::from_secs(10), "a shared token", || async {
        let want = auth.issued_for("acme").last().map(|i| i.token.clone());
        (want.is_some() && timelines.iter().all(|t| t.current("acme") == want)).then_some(want?)
    })
    .await;
    redis.stop();
    let stopped = Instant::now();
    let issued_before = auth.issued().len();
    // Served until it expires (3 s of serving from issue), then nothing.
    eventually(
        Duration::from_secs(6),
        "the token to expire everywhere",
        || async {
            timelines
                .iter()
                .all(|t| t.current("acme").is_none())
                .then_some(())
        },
    )
    .await;
    for t in &timelines {
        let gone = t
            .entries()
            .into_iter()
            .find(|(at, tenant, tok)| *at > stopped && tenant == "acme" && tok.is_none())
            .map(|(at, _, _)| at)
            .expect("expiry recorded");
        let issued_at = auth
            .issued_for("acme")
            .iter()
            .find(|i| i.token == token)
            .unwrap()
            .at;
        assert!(
            gone.duration_since(issued_at) >= Duration::from_millis(2500),
            "stopped serving {:?} after issue, before the token expired",
            gone.duration_since(issued_at)
        );
    }
    assert_eq!(
        auth.issued().len(),
        issued_before,
        "exclusive fetched without the lock"
    );
    redis.resume();
    let after = eventually(Duration::from_secs(10), "sharing again", || async {
        let want = auth.issued_for("acme").last().map(|i| i.token.clone())?;
        (want != token
            && timelines
                .iter()
                .all(|t| t.current("acme").as_ref() == Some(&want)))
        .then(|| auth.issued_for("acme").len())
    })
    .await;
    assert_eq!(after, auth.issued_for("acme").len());
    // One fetch per tenant after the outage, not one per replica.
    let new: Vec<_> = auth.issued_for("acme")[1..].iter().map(|i| i.at).collect();
    assert!(
        new.windows(2)
            .all(|w| w[1].duration_since(w[0]) >= Duration::from_millis(1200)),
        "more than one fetch per cycle after Redis came back"
    );
}

/// A 401 storm from all replicas at once causes exactly one token request.
#[tokio::test(flavor = "multi_thread")]
async fn rejection_storm_fetches_once() {
    let redis = RedisServer::start();
    let auth = FakeAuth::start(e2e::Behave::issue(3600)).await;
    let sidecars = replicas(&auth, &yaml(&redis, "best_effort"), 3).await;
    let http = reqwest::Client::new();
    let versions = eventually(Duration::from_secs(10), "one shared token", || async {
        let mut versions = Vec::new();
        let want = auth
            .issued_for("acme")
            .last()
            .map(|i| format!("Bearer {}", i.token))?;
        for s in &sidecars {
            let v: serde_json::Value = http
                .get(format!("{}/v1/tokens", s.tokens_url()))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let entry = &v["tenants"]["acme"];
            (entry["header"].as_str() == Some(want.as_str())).then_some(())?;
            versions.push(entry["version"].as_u64()?);
        }
        Some(versions)
    })
    .await;
    assert_eq!(
        auth.issued_for("acme").len(),
        1,
        "{}",
        counters(&sidecars).await
    );
    // Every replica reports its own version of the token, 5 times, at once.
    let mut storm = Vec::new();
    for (s, v) in sidecars.iter().zip(&versions) {
        for _ in 0..5 {
            let url = format!("{}/v1/tenants/acme/rejected?version={v}", s.tokens_url());
            let http = http.clone();
            storm.push(tokio::spawn(async move { http.post(url).send().await }));
        }
    }
    for r in storm {
        assert_eq!(r.await.unwrap().unwrap().status(), 202);
    }
    eventually(Duration::from_secs(5), "a new token", || async {
        (auth.issued_for("acme").len() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(auth.issued_for("acme").len(), 2, "one storm, one fetch");
    assert_eq!(auth.issued_for("globex").len(), 1);
}

/// Through real Envoys: each replica's filter injects the same shared token
/// and the revoke-previous API accepts every request, also after a rotation.
#[tokio::test(flavor = "multi_thread")]
async fn envoy_replicas_inject_the_shared_token() {
    let redis = RedisServer::start();
    let auth = FakeAuth::start(e2e::Behave::issue(4)).await;
    let api = fakes::serve(fakes::revoke_previous_api(auth.clone())).await;
    let sidecars = replicas(&auth, &yaml(&redis, "exclusive"), 3).await;
    let mut envoys = Vec::new();
    for s in &sidecars {
        envoys.push(Envoy::start(s.tokens_addr.port(), fakes::port_of(&api), None).await);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let get = |envoy: &Envoy| {
        let http = http.clone();
        let url = format!("{}/ping", envoy.url());
        async move {
            let r = http
                .get(url)
                .header("x-tenant-id", "acme")
                .send()
                .await
                .ok()?;
            let ok = r.status() == 200;
            let body: serde_json::Value = r.json().await.ok()?;
            ok.then(|| body["token"].as_str().map(str::to_string))
                .flatten()
        }
    };
    // The API answers 200 only to the tenant's latest token, so a 200 is the
    // filter injecting the current shared token. Twice: at start and after
    // a rotation.
    for round in 0..2 {
        let want = auth.issued_for("acme").len().max(1) + round;
        eventually(Duration::from_secs(10), "a token issued", || async {
            (auth.issued_for("acme").len() >= want).then_some(())
        })
        .await;
        for e in &envoys {
            // 10 in a row: every worker of this Envoy injects the token.
            let streak = std::cell::Cell::new(0);
            eventually(
                Duration::from_secs(5),
                "the shared token through Envoy",
                || async {
                    let ok = get(e).await.is_some_and(|t| auth.is_latest(&t));
                    streak.set(if ok { streak.get() + 1 } else { 0 });
                    (streak.get() >= 10).then_some(())
                },
            )
            .await;
        }
    }
    // One issue per cycle although three replicas serve.
    let issued = auth.issued_for("acme");
    for pair in issued.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(1200),
            "issues {gap:?} apart; {}",
            counters(&sidecars).await
        );
    }
}

/// Readiness does not depend on Redis: with Redis down from the start a
/// best-effort sidecar fetches locally and becomes ready, counting Redis
/// errors; the token API serves the token.
#[tokio::test(flavor = "multi_thread")]
async fn ready_without_redis_in_best_effort() {
    let mut redis = RedisServer::start();
    redis.stop();
    let auth = FakeAuth::start(e2e::Behave::issue(60)).await;
    let sidecar = &replicas(&auth, &yaml(&redis, "best_effort"), 1).await[0];
    let http = reqwest::Client::new();
    // The token API serves both tokens (this also counts as Envoy's poll).
    let t = Timeline::follow(sidecar);
    eventually(Duration::from_secs(10), "both tokens served", || async {
        TENANTS
            .iter()
            .all(|tenant| t.current(tenant).is_some())
            .then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "/readyz 200", || async {
        let r = http
            .get(format!("{}/readyz", sidecar.probes_url()))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert_eq!(auth.issued().len(), TENANTS.len());
    let m = http
        .get(format!("{}/metrics", sidecar.probes_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("authproxy_shared_tokens_total{source=\"fetched_local\"} 2"),
        "{m}"
    );
    assert!(m.contains("authproxy_shared_subscribed 0"), "{m}");
}

/// A bad `shared` setting, in the file or from the environment, stops the
/// sidecar with one line naming the key and exit code 64.
#[tokio::test]
async fn bad_shared_config_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s\n").unwrap();
    let base = format!(
        "tenants:\n  acme:\n    token_url: http://127.0.0.1:9/token\n    client_id: c\n    auth: {{method: client_secret_post, secret: {{file: {}}}}}\n",
        secret.display()
    );
    // (YAML block, environment, the key the error must name)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        (
            "shared:\n  url: redis://x\n  mode: sometimes\n",
            &[],
            "shared.mode",
        ),
        ("shared:\n  url: redis://:hunter2@x\n", &[], "shared.url"),
        (
            "shared:\n  url: redis://x\n",
            &[("AUTHPROXY__SHARED__LOCK_TTL", "1ms")],
            "shared.lock_ttl",
        ),
    ];
    for (block, env, key) in cases {
        let path = dir.path().join("sidecar.yaml");
        std::fs::write(&path, format!("{block}{base}")).unwrap();
        let out = std::process::Command::new(e2e::procs::sidecar_bin())
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{block}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}
