//! The real `sidecar` binary: configuration errors and exit codes, graceful
//! SIGTERM, and logs that never contain a token, secret, assertion, key or
//! token-server response body.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jwt_simple::prelude::*;
use testkit::{eventually, write, Behave, FakeAuth, Proc};
use tokio::time::Instant;

use crate::common::{client, LISTEN};

const BIN: &str = env!("CARGO_BIN_EXE_sidecar");

fn good_tenant(secret_file: &str) -> String {
    format!(
        "tenants:
  acme:
    token_url: http://127.0.0.1:9/token
    client_id: acme
    auth: {{method: client_secret_basic, secret: {{file: {secret_file}}}}}
"
    )
}

/// Runs `sidecar --config path` (plus `args`) with `env`; returns (exit
/// code, stdout, stderr).
fn run(path: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(path).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sidecar");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each bad configuration exits 64 with exactly one stderr line that names
/// the key or problem; `--check-config` on a good one exits 0.
#[test]
fn bad_configs_exit_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", "s3cret");
    let bad_pem = write(
        dir.path(),
        "bad.pem",
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
    );
    let good = write(dir.path(), "good.yaml", &good_tenant(&secret));

    let (code, stdout, stderr) = run(&good, &["--check-config"], &[]);
    assert_eq!(code, 0, "good config: {stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");

    // (what, config path, environment, what stderr must name)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "missing file",
            dir.path().join("nope.yaml").display().to_string(),
            vec![],
            "nope.yaml",
        ),
        (
            "YAML syntax error",
            write(dir.path(), "syntax.yaml", "tenants: [unclosed\n  - {\n"),
            vec![],
            "syntax.yaml",
        ),
        (
            "unknown key",
            write(
                dir.path(),
                "unknown.yaml",
                &format!("refresh:\n  fractoin: 0.5\n{}", good_tenant(&secret)),
            ),
            vec![],
            "fractoin",
        ),
        (
            "non-loopback tokens listener",
            write(
                dir.path(),
                "listen.yaml",
                &format!("listen:\n  tokens: 0.0.0.0:15001\n{}", good_tenant(&secret)),
            ),
            vec![],
            "listen.tokens",
        ),
        (
            "plain http token URL to a remote host",
            write(
                dir.path(),
                "http.yaml",
                &good_tenant(&secret)
                    .replace("http://127.0.0.1:9/token", "http://auth.example.com/token"),
            ),
            vec![],
            "tenants.acme.token_url",
        ),
        (
            "bad duration",
            write(
                dir.path(),
                "duration.yaml",
                &format!("refresh:\n  backoff_max: soonish\n{}", good_tenant(&secret)),
            ),
            vec![],
            "refresh.backoff_max",
        ),
        (
            "missing secret file",
            write(
                dir.path(),
                "nosecret.yaml",
                &good_tenant(&dir.path().join("absent-secret").display().to_string()),
            ),
            vec![],
            "tenants.acme.auth.secret",
        ),
        (
            "bad PEM for private_key_jwt",
            write(
                dir.path(),
                "pem.yaml",
                &format!(
                    "tenants:
  acme:
    token_url: http://127.0.0.1:9/token
    client_id: acme
    auth:
      method: private_key_jwt
      key: {{alg: RS256, file: {bad_pem}}}
"
                ),
            ),
            vec![],
            "tenants.acme.auth.key",
        ),
        (
            "environment override out of range",
            good.clone(),
            vec![("AUTHPROXY__REFRESH__FRACTION", "2")],
            "refresh.fraction",
        ),
    ];
    for (what, path, env, needle) in cases {
        for args in [&[][..], &["--check-config"][..]] {
            let (code, _, stderr) = run(&path, args, &env);
            assert_eq!(code, 64, "{what} {args:?}: exit {code}, stderr {stderr:?}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{what}: stderr is not one line: {stderr:?}");
            assert!(
                lines[0].contains(needle),
                "{what}: {:?} does not name {needle:?}",
                lines[0]
            );
        }
    }
}

/// The sidecar binary on `config`, with `env`.
fn spawn(config: &str, env: &[(&str, &str)]) -> Proc {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config").arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn("the sidecar", &mut cmd)
}

/// The (tokens, probes) addresses from the "listening" log line.
async fn addrs(p: &Proc) -> (SocketAddr, SocketAddr) {
    let v = p.json_line(Duration::from_secs(10), "listening", 0).await;
    let addr = |k: &str| v[k].as_str().and_then(|a| a.parse().ok()).expect("addr");
    (addr("tokens"), addr("probes"))
}

/// SIGTERM with a long-poll in flight: the poll is answered at once, the
/// pod turns unready, tokens are still served (polls are cut to 500 ms) for
/// as long as a client keeps polling, and once polls stop the binary exits
/// 0 within `shutdown.idle`.
#[tokio::test]
async fn sigterm_serves_while_polled_then_exits() {
    let fake = FakeAuth::start(Behave::issue(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", "s");
    let config = write(
        dir.path(),
        "c.yaml",
        &format!(
            "{LISTEN}shutdown: {{idle: 500ms}}\ntenants:
  acme:
    token_url: {url}
    client_id: acme
    auth: {{method: client_secret_post, secret: {{file: {secret}}}}}
",
            url = fake.token_url()
        ),
    );
    let mut p = spawn(&config, &[]);
    let (tokens, probes) = addrs(&p).await;
    let http = client();
    let version = Arc::new(Mutex::new(0u64));
    eventually(Duration::from_secs(10), "a token", || {
        let http = http.clone();
        let version = version.clone();
        async move {
            let snap: serde_json::Value = http
                .get(format!("http://{tokens}/v1/tokens"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            *version.lock().unwrap() = snap["version"].as_u64().unwrap();
            !snap["tenants"]["acme"].is_null()
        }
    })
    .await;
    let version = *version.lock().unwrap();
    let poll = tokio::spawn(
        http.get(format!(
            "http://{tokens}/v1/tokens?after={version}&wait_ms=60000"
        ))
        .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished(), "the long-poll is in flight");
    let ready = |http: reqwest::Client| async move {
        http.get(format!("http://{probes}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(ready(http.clone()).await, 200, "ready once polled");
    p.sigterm();
    let r = tokio::time::timeout(Duration::from_secs(1), poll)
        .await
        .expect("the long-poll is answered at once")
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(ready(http.clone()).await, 503, "unready once stopping");
    // A client that keeps polling keeps the sidecar serving.
    let polling_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < polling_until {
        let t = Instant::now();
        let r = http
            .get(format!(
                "http://{tokens}/v1/tokens?after={version}&wait_ms=60000"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert!(t.elapsed() < Duration::from_secs(1), "polls are cut short");
        let snap: serde_json::Value = http
            .get(format!("http://{tokens}/v1/tokens"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(!snap["tenants"]["acme"].is_null(), "tokens still served");
    }
    assert!(p.exited().is_none(), "still running while polled");
    let t0 = Instant::now();
    let code = p.wait(Duration::from_secs(3)).await.code();
    assert_eq!(code, Some(0), "{}", p.log());
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

/// With RUST_LOG=debug through successes, failures whose bodies carry
/// markers, private_key_jwt and the token API, the logs record the failures
/// (by reason) but contain no access token, client secret, assertion, PEM
/// content or response body.
#[tokio::test]
async fn logs_never_leak_secrets_tokens_or_bodies() {
    let basic = FakeAuth::start(Behave::issue(3600)).await;
    basic.push([
        Behave::text(500, "text/plain", "internal error BODY-MARKER-123"),
        Behave::text(
            200,
            "text/html",
            "<html><body>maintenance HTML-MARKER-456</body></html>",
        ),
        Behave::json(
            400,
            r#"{"error":"invalid_request","error_description":"DESC-MARKER-789"}"#,
        ),
        Behave::json(
            200,
            r#"{"access_token":"MAC-TOKEN-MARKER-321","token_type":"mac"}"#,
        ),
    ]);
    let post = FakeAuth::start(Behave::issue(3600)).await;
    post.push([Behave::json(
        401,
        r#"{"error":"invalid_client","error_description":"CLIENT-DESC-MARKER-654"}"#,
    )]);
    let jwt = FakeAuth::start(Behave::issue(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let basic_secret = "BASIC-SECRET-MARKER-aa11";
    let post_secret = "POST-SECRET-MARKER-bb22";
    let env_secret = "ENV-SECRET-MARKER-cc33";
    let basic_file = write(dir.path(), "basic", basic_secret);
    let post_file = write(dir.path(), "post", post_secret);
    let pem = RS256KeyPair::generate(2048).unwrap().to_pem().unwrap();
    let pem_file = write(dir.path(), "key.pem", &pem);
    let config = write(
        dir.path(),
        "c.yaml",
        &format!(
            "{LISTEN}refresh:
  backoff_initial: 20ms
  backoff_max: 100ms
  permanent_retry: 300ms
tenants:
  basic:
    token_url: {b}
    client_id: basic-client
    auth: {{method: client_secret_basic, secret: {{file: {basic_file}}}}}
  post:
    token_url: {p}
    client_id: post-client
    auth: {{method: client_secret_post, secret: {{file: {post_file}}}}}
  env:
    token_url: {p}
    client_id: env-client
    auth: {{method: client_secret_post, secret: {{env: LOGTEST_SECRET}}}}
  jwt:
    token_url: {j}
    client_id: jwt-client
    auth:
      method: private_key_jwt
      key: {{alg: RS256, kid: k1, file: {pem_file}}}
",
            b = basic.token_url(),
            p = post.token_url(),
            j = jwt.token_url()
        ),
    );
    let mut p = spawn(
        &config,
        &[("RUST_LOG", "debug"), ("LOGTEST_SECRET", env_secret)],
    );
    let (tokens, probes) = addrs(&p).await;
    let http = client();
    eventually(Duration::from_secs(15), "every tenant valid", || {
        let http = http.clone();
        async move {
            let Ok(r) = http.get(format!("http://{probes}/status")).send().await else {
                return false;
            };
            let status: serde_json::Value = r.json().await.unwrap_or_default();
            status["tenants"]
                .as_object()
                .is_some_and(|t| t.values().all(|t| t["state"] == "valid"))
        }
    })
    .await;
    assert_eq!(basic.queued(), 0);
    // Exercise the token API: a read, a 401 report, a bad query.
    let snap: serde_json::Value = http
        .get(format!("http://{tokens}/v1/tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jv = snap["tenants"]["jwt"]["version"].as_u64().unwrap();
    http.post(format!(
        "http://{tokens}/v1/tenants/jwt/rejected?version={jv}"
    ))
    .send()
    .await
    .unwrap();
    http.post(format!(
        "http://{tokens}/v1/tenants/jwt/rejected?version=zz"
    ))
    .send()
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "forced jwt refresh", || async {
        jwt.tokens().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.sigterm();
    assert_eq!(p.wait(Duration::from_secs(5)).await.code(), Some(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = p.log();

    // The failures were logged, by reason, so the log is not trivially clean.
    for reason in ["http_5xx", "bad_response", "oauth_error", "invalid_client"] {
        assert!(log.contains(reason), "no {reason} in the log:\n{log}");
    }
    assert!(log.contains("token obtained"));
    let mut forbidden: Vec<String> = vec![
        basic_secret.into(),
        post_secret.into(),
        env_secret.into(),
        "BODY-MARKER-123".into(),
        "HTML-MARKER-456".into(),
        "DESC-MARKER-789".into(),
        "MAC-TOKEN-MARKER-321".into(),
        "CLIENT-DESC-MARKER-654".into(),
    ];
    for fake in [&basic, &post, &jwt] {
        forbidden.extend(fake.tokens());
        for seen in fake.seen() {
            forbidden.extend(seen.param("client_assertion").map(str::to_owned));
            if let Some(a) = seen.header("authorization") {
                forbidden.push(a.trim_start_matches("Basic ").to_owned());
            }
        }
    }
    // Every assertion's signature, and each line of the PEM body.
    for seen in jwt.seen() {
        let a = seen.param("client_assertion").expect("assertion");
        forbidden.push(a.rsplit('.').next().unwrap().to_owned());
    }
    forbidden.extend(
        pem.lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
            .map(str::to_owned),
    );
    assert!(forbidden.len() > 20);
    for f in &forbidden {
        assert!(!log.contains(f.as_str()), "the log contains {f:?}:\n{log}");
    }
    // Probe requests are not logged.
    assert!(!log.contains("/readyz"), "probe requests were logged");
}
