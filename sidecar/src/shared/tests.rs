//! The protocol against a real `redis-server` (started here, never skipped).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::Config;

use testkit::redis::RedisServer;

fn config(url: &str, extra: &str) -> Config {
    let yaml = format!(
        "refresh: {{request_timeout: 1s}}\nshared:\n  url: {url}\n  lock_ttl: 1500ms\n  timeout: 300ms\n{extra}\ntenants:\n  acme:\n    token_url: http://127.0.0.1:9/token\n    client_id: acme-client\n    auth: {{method: client_secret_post, secret: {{env: PATH}}}}\n"
    );
    Config::from_yaml(&yaml, Path::new("test.yaml"), std::iter::empty()).expect("config")
}

/// A replica: its own `Shared` (own owner id, own connection).
fn replica(cfg: &Config) -> SharedTenant {
    let shared = Shared::start(
        cfg.shared.clone().expect("shared block"),
        &cfg.tenants,
        Arc::default(),
    )
    .expect("start shared");
    shared.tenant(&cfg.tenants[0])
}

fn token(value: &str, secs: u64) -> IssuedToken {
    IssuedToken {
        access_token: Secret::new(value.into()),
        lifetime: Duration::from_secs(secs),
        defaulted_lifetime: false,
    }
}

/// The lock winner fetches and publishes; a second replica waits while the
/// lock is held, then adopts the published record.
#[tokio::test]
async fn winner_publishes_and_others_adopt() {
    let redis = RedisServer::start();
    let cfg = config(&redis.url(), "");
    let (a, b) = (replica(&cfg), replica(&cfg));
    assert!(matches!(a.acquire(None).await.unwrap(), Acquired::Won));
    match b.acquire(None).await.unwrap() {
        Acquired::Wait(d) => assert!(d > Duration::ZERO && d <= Duration::from_millis(1500)),
        other => panic!("expected wait, got {other:?}"),
    }
    let v = a
        .publish(None, &token("t1", 60), SystemTime::now())
        .await
        .unwrap()
        .expect("published");
    match b.acquire(None).await.unwrap() {
        Acquired::Adopt(r) => {
            assert_eq!(r.version, v);
            assert_eq!(r.token.expose(), "t1");
            let (life, age) = r.lifetime_and_age(SystemTime::now());
            assert_eq!(life, Duration::from_secs(60));
            assert!(age < Duration::from_secs(1));
        }
        other => panic!("expected adopt, got {other:?}"),
    }
    // The record's TTL is the token's life; the lock is released.
    let ttl = redis.command(&["PTTL", &a.keys()[0]]).unwrap();
    let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!((59_000..=60_000).contains(&ttl), "record ttl {ttl}");
    assert_eq!(redis.get(&a.keys()[1]), None, "lock released");
}

/// A replica whose lock expired mid-fetch does not overwrite the token of
/// the replica that took over (compare and set on lock and version).
#[tokio::test]
async fn expired_lock_holder_cannot_publish() {
    let redis = RedisServer::start();
    let cfg = config(&redis.url(), "");
    let (a, b) = (replica(&cfg), replica(&cfg));
    assert!(matches!(a.acquire(None).await.unwrap(), Acquired::Won));
    redis.command(&["DEL", &a.keys()[1]]); // a's lock runs out
    assert!(matches!(b.acquire(None).await.unwrap(), Acquired::Won));
    let vb = b
        .publish(None, &token("from-b", 60), SystemTime::now())
        .await
        .unwrap()
        .expect("b published");
    assert_eq!(
        a.publish(None, &token("from-a", 60), SystemTime::now())
            .await
            .unwrap(),
        None
    );
    let r = a.read().await.unwrap().expect("record");
    assert_eq!((r.version, r.token.expose()), (vb, "from-b"));
}

/// A rejection of the current version takes the lock once; a rejection of a
/// version already replaced adopts the newer token instead.
#[tokio::test]
async fn rejection_of_current_version_refreshes_once() {
    let redis = RedisServer::start();
    let cfg = config(&redis.url(), "");
    let (a, b) = (replica(&cfg), replica(&cfg));
    assert!(matches!(a.acquire(None).await.unwrap(), Acquired::Won));
    let v1 = a
        .publish(None, &token("t1", 60), SystemTime::now())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(a.acquire(Some(v1)).await.unwrap(), Acquired::Won));
    assert!(matches!(
        b.acquire(Some(v1)).await.unwrap(),
        Acquired::Wait(_)
    ));
    let v2 = a
        .publish(Some(v1), &token("t2", 60), SystemTime::now())
        .await
        .unwrap()
        .unwrap();
    assert!(v2 > v1);
    match b.acquire(Some(v1)).await.unwrap() {
        Acquired::Adopt(r) => assert_eq!(r.version, v2),
        other => panic!("expected adopt, got {other:?}"),
    }
}

/// Many replicas obtaining at once (a 401 storm, or a cold start) cause one
/// token request; all of them end up with the same token.
#[tokio::test]
async fn concurrent_obtain_fetches_once() {
    let redis = RedisServer::start();
    let cfg = config(&redis.url(), "");
    let fetches = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let r = replica(&cfg);
        let fetches = fetches.clone();
        tasks.push(tokio::spawn(async move {
            let out = r
                .obtain(None, || {
                    let fetches = fetches.clone();
                    async move {
                        let n = fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(token(&format!("t{n}"), 60))
                    }
                })
                .await
                .expect("obtain");
            match out {
                Outcome::Fetched { token, version } => {
                    assert!(version.is_some());
                    token.access_token.expose().to_owned()
                }
                Outcome::Adopted(r) => r.token.expose().to_owned(),
            }
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert!(got.iter().all(|t| t == "t0"), "{got:?}");
}

/// A failed fetch gives the lock up, so another replica may try at once.
#[tokio::test]
async fn failed_fetch_releases_the_lock() {
    let redis = RedisServer::start();
    let cfg = config(&redis.url(), "");
    let a = replica(&cfg);
    let err = a
        .obtain(None, || async {
            Err(FetchError {
                url: "x".into(),
                reason: "http_5xx",
                retry: Retry::Transient,
                retry_after: None,
                detail: "503".into(),
            })
        })
        .await
        .unwrap_err();
    assert_eq!(err.reason, "http_5xx");
    assert_eq!(redis.get(&a.keys()[1]), None);
}

/// Redis unreachable: best-effort fetches locally, exclusive refuses to.
#[tokio::test]
async fn unreachable_modes() {
    let mut redis = RedisServer::start();
    redis.stop();
    for (mode, local) in [("best_effort", true), ("exclusive", false)] {
        let cfg = config(&redis.url(), &format!("  mode: {mode}"));
        let a = replica(&cfg);
        let fetches = AtomicUsize::new(0);
        let out = a
            .obtain(None, || {
                fetches.fetch_add(1, Ordering::SeqCst);
                async { Ok(token("local", 60)) }
            })
            .await;
        if local {
            assert!(matches!(out, Ok(Outcome::Fetched { version: None, .. })));
            assert_eq!(fetches.load(Ordering::SeqCst), 1);
        } else {
            assert_eq!(out.unwrap_err().reason, "shared_store_unavailable");
            assert_eq!(fetches.load(Ordering::SeqCst), 0);
        }
        assert!(a.shared.metrics().redis_errors_seen() > 0);
    }
}

/// Versions keep rising after Redis lost its data (restart without
/// persistence): an adopter never sees a version go backwards.
#[tokio::test]
async fn versions_survive_data_loss() {
    let mut redis = RedisServer::start();
    let cfg = config(&redis.url(), "");
    let a = replica(&cfg);
    let Outcome::Fetched {
        version: Some(v1), ..
    } = a
        .obtain(None, || async { Ok(token("t1", 60)) })
        .await
        .unwrap()
    else {
        panic!("expected a published fetch")
    };
    redis.resume();
    // The first command after the restart may fail on the old connection
    // (best-effort then fetches locally); the next ones publish.
    let mut published = None;
    for _ in 0..50 {
        if let Ok(Outcome::Fetched {
            version: Some(v), ..
        }) = a.obtain(Some(v1), || async { Ok(token("t2", 60)) }).await
        {
            published = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v2 = published.expect("published after the restart");
    assert!(v2 > v1, "{v2} > {v1}");
}

/// The watcher hands a published record to replicas that did not fetch.
#[tokio::test]
async fn watcher_delivers_published_records() {
    let redis = RedisServer::start();
    let cfg = config(&redis.url(), "");
    let (a, b) = (replica(&cfg), replica(&cfg));
    let (tx, mut rx) = mpsc::channel(4);
    tokio::spawn(
        Watcher {
            shared: b.clone(),
            adopted: tx,
        }
        .run(),
    );
    // Wait for b's subscription before publishing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !b.shared.metrics().is_subscribed() {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Outcome::Fetched {
        version: Some(v), ..
    } = a
        .obtain(None, || async { Ok(token("t1", 60)) })
        .await
        .unwrap()
    else {
        panic!("expected a published fetch")
    };
    let r = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("adopted in time")
        .expect("a record");
    assert_eq!((r.version, r.token.expose()), (v, "t1"));
}

/// All of a tenant's keys carry one hash tag (one Redis Cluster slot), and
/// the tag changes with the credentials, not with unrelated settings.
#[test]
fn keys_share_a_hash_tag() {
    let cfg = config("redis://127.0.0.1:1/0", "");
    let shared_cfg = cfg.shared.clone().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let s = Shared::start(shared_cfg, &cfg.tenants, Arc::default()).unwrap();
    let t = s.tenant(&cfg.tenants[0]);
    let tag = format!("{{{}}}", super::tag(&cfg.tenants[0]));
    assert!(tag.starts_with("{acme:"));
    for k in t.keys() {
        assert!(k.starts_with("authproxy:"), "{k}");
        assert_eq!(k.matches(&tag).count(), 1, "{k}");
        assert_eq!(k.matches('{').count(), 1, "{k}");
    }
    let mut other = cfg.tenants[0].clone();
    other.client_id = "acme-client-2".into();
    assert_ne!(super::tag(&other), super::tag(&cfg.tenants[0]));
    let mut same = cfg.tenants[0].clone();
    same.required = !same.required;
    assert_eq!(super::tag(&same), super::tag(&cfg.tenants[0]));
}

/// Bad `shared` settings name the key.
#[test]
fn config_errors_name_the_key() {
    let cases = [
        ("url: http://x", "shared.url"),
        ("url: redis://:pw@x", "shared.url"),
        ("url: redis://x\n  mode: sometimes", "shared.mode"),
        ("url: redis://x\n  lock_ttl: 500ms", "shared.lock_ttl"),
        ("url: redis://x\n  key_prefix: 'a{b}'", "shared.key_prefix"),
        ("url: redis://x\n  ca_file: /nonexistent", "shared.ca_file"),
        ("url: rediss://x\n  ca_file: /nonexistent", "shared.ca_file"),
        (
            "url: redis://x\n  password: {file: /nonexistent}",
            "shared.password",
        ),
        ("url: redis://x\n  colour: blue", "shared"),
    ];
    for (block, key) in cases {
        let yaml = format!(
            "refresh: {{request_timeout: 1s}}\nshared:\n  {block}\ntenants:\n  acme:\n    token_url: http://127.0.0.1:9/token\n    client_id: c\n    auth: {{method: client_secret_post, secret: {{env: PATH}}}}\n"
        );
        let err = Config::from_yaml(&yaml, Path::new("t.yaml"), std::iter::empty())
            .expect_err(block)
            .to_string();
        assert!(err.contains(key), "{block}: {err}");
        assert!(!err.contains("pw"), "{err}");
    }
    // Off unless configured.
    let yaml = "tenants:\n  acme:\n    token_url: http://127.0.0.1:9/token\n    client_id: c\n    auth: {method: client_secret_post, secret: {env: PATH}}\n";
    let cfg = Config::from_yaml(yaml, Path::new("t.yaml"), std::iter::empty()).unwrap();
    assert!(cfg.shared.is_none());
}

/// Replicas derive the same refresh jitter from a shared version, and
/// versions spread over the whole range.
#[test]
fn jitter_from_version_is_shared_and_spread() {
    assert_eq!(unit_from(42), unit_from(42));
    let draws: Vec<f64> = (1_700_000_000_000_000u64..)
        .take(1000)
        .map(unit_from)
        .collect();
    assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
    let low = draws.iter().filter(|u| **u < 0.5).count();
    assert!((400..=600).contains(&low), "{low} of 1000 below 0.5");
}

/// The ACL the README documents is enough: an `authproxy` user limited to
/// the prefix, its password from a file, fetches, publishes and is notified;
/// a wrong password is a Redis error (so `exclusive` refuses to fetch).
#[tokio::test]
async fn acl_user_with_password_file() {
    let redis = RedisServer::start();
    let reply = redis
        .command(&[
            "ACL",
            "SETUSER",
            "authproxy",
            "on",
            ">s3cret-pw",
            "~authproxy:*",
            "&authproxy:*",
            "+@read",
            "+@write",
            "+@scripting",
            "+@pubsub",
            "+@connection",
            "-@dangerous",
        ])
        .unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::write(&good, "s3cret-pw\n").unwrap();
    std::fs::write(&bad, "wrong\n").unwrap();
    let with = |file: &std::path::Path| {
        config(
            &redis.url(),
            &format!(
                "  username: authproxy\n  password: {{file: {}}}\n  mode: exclusive",
                file.display()
            ),
        )
    };
    let cfg = with(&good);
    let (a, b) = (replica(&cfg), replica(&cfg));
    let (tx, mut rx) = mpsc::channel(4);
    tokio::spawn(
        Watcher {
            shared: b.clone(),
            adopted: tx,
        }
        .run(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !b.shared.metrics().is_subscribed() {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = a
        .obtain(None, || async { Ok(token("t1", 60)) })
        .await
        .unwrap();
    assert!(matches!(
        out,
        Outcome::Fetched {
            version: Some(_),
            ..
        }
    ));
    let r = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("notified in time")
        .unwrap();
    assert_eq!(r.token.expose(), "t1");
    let wrong = replica(&with(&bad));
    let err = wrong
        .obtain(None, || async { Ok(token("never", 60)) })
        .await
        .unwrap_err();
    assert_eq!(err.reason, "shared_store_unavailable");
    assert!(!err.to_string().contains("wrong"), "{err}");
}

/// A rotated password (the Secret's file rewritten, the ACL user's password
/// changed, old connections gone) is picked up without a restart: the first
/// refused reconnect reads the file again, and commands and the notification
/// subscription work with the new password.
#[tokio::test]
async fn rotated_password_is_read_again() {
    let redis = RedisServer::start();
    let acl = |pw: &str| {
        let reply = redis
            .command(&[
                "ACL",
                "SETUSER",
                "authproxy",
                "on",
                "resetpass",
                &format!(">{pw}"),
                "~authproxy:*",
                "&authproxy:*",
                "+@all",
            ])
            .unwrap();
        assert!(reply.starts_with("+OK"), "{reply}");
    };
    acl("first-pw");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "first-pw\n").unwrap();
    let cfg = config(
        &redis.url(),
        &format!(
            "  username: authproxy\n  password: {{file: {}}}\n  mode: exclusive",
            file.display()
        ),
    );
    let a = replica(&cfg);
    a.obtain(None, || async { Ok(token("t1", 60)) })
        .await
        .unwrap();
    let subscribed = || a.shared.metrics().is_subscribed();
    testkit::eventually(Duration::from_secs(5), "subscribed", || async {
        subscribed()
    })
    .await;

    acl("second-pw");
    std::fs::write(&file, "second-pw\n").unwrap();
    let killed = redis
        .command(&["CLIENT", "KILL", "USER", "authproxy"])
        .unwrap();
    assert!(killed.starts_with(':'), "{killed}");
    let read = testkit::eventually(
        Duration::from_secs(10),
        "a read with the new password",
        || async { a.read().await },
    )
    .await;
    assert_eq!(read.unwrap().token.expose(), "t1");
    testkit::eventually(Duration::from_secs(10), "subscribed again", || async {
        subscribed()
    })
    .await;
}

/// `rediss://` with `ca_file`: the protocol works over TLS, including the
/// notification subscription; without the CA the server is not trusted.
#[tokio::test]
async fn tls_with_ca_file() {
    let redis = RedisServer::start_tls();
    let ca = redis.ca_file();
    let cfg = config(
        &redis.url(),
        &format!("  ca_file: {}\n  mode: exclusive", ca.display()),
    );
    let (a, b) = (replica(&cfg), replica(&cfg));
    let (tx, mut rx) = mpsc::channel(4);
    tokio::spawn(
        Watcher {
            shared: b.clone(),
            adopted: tx,
        }
        .run(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !b.shared.metrics().is_subscribed() {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = a
        .obtain(None, || async { Ok(token("t1", 60)) })
        .await
        .unwrap();
    assert!(matches!(
        out,
        Outcome::Fetched {
            version: Some(_),
            ..
        }
    ));
    let r = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("notified in time")
        .unwrap();
    assert_eq!(r.token.expose(), "t1");
    // The system roots don't know the test CA.
    let untrusted = replica(&config(&redis.url(), "  mode: exclusive"));
    let err = untrusted
        .obtain(None, || async { Ok(token("never", 60)) })
        .await
        .unwrap_err();
    assert_eq!(err.reason, "shared_store_unavailable");
}
