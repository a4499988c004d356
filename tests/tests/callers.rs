//! Caller identity, allow-lists, the closed request surface and the audit
//! log, against the production `envoy/envoy.yaml` itself (JWT identity
//! mode) with the real filter and sidecar: only addresses, file paths and
//! CA bundles are rewritten (see `e2e::prod`).

use std::time::Duration;

use e2e::eventually;
use e2e::jwt::Flaw;
use e2e::prod::{Identity, ProdStack, API_HOST};
use serde_json::Value;

const BILLING: &str = "system:serviceaccount:billing:invoicer";

/// acme: the billing invoicer, and GETs under /v1/reports/ for any
/// ServiceAccount of namespace `reports`. globex: only `globex-app`.
async fn stack() -> ProdStack {
    let stack = ProdStack::start(
        Identity::Jwt,
        &[
            (
                "acme",
                "      - id: system:serviceaccount:billing:invoicer\n      - id: system:serviceaccount:reports:*\n        methods: [GET]\n        paths: [/v1/reports/]\n",
            ),
            ("globex", "      - id: system:serviceaccount:globex:globex-app\n"),
        ],
    )
    .await;
    let token = stack.files.issuer.token("billing", "invoicer", Flaw::None);
    // Every worker must hold the snapshot.
    e2e::on_every_worker(|| async {
        send(
            &stack,
            "GET",
            "/ping",
            Some(&token),
            &[("x-tenant-id", "acme")],
        )
        .await
        .0 == 200
    })
    .await;
    stack
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Sends a request through Envoy (HTTP/1.1); returns status and JSON body.
async fn send(
    stack: &ProdStack,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(method, format!("{}{path}", stack.envoy.url()));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request through envoy");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Sends a request over HTTP/2 (cleartext, prior knowledge) with curl, so
/// repeated header fields are sent as separate HTTP/2 fields.
fn send_h2(stack: &ProdStack, token: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-s",
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version} %{http_code}",
    ])
    .arg("-H")
    .arg(format!("authorization: Bearer {token}"));
    for (k, v) in headers {
        // `name;` is curl's syntax for a header with an empty value.
        let h = if v.is_empty() {
            format!("{k};")
        } else {
            format!("{k}: {v}")
        };
        cmd.arg("-H").arg(h);
    }
    let out = cmd
        .arg(format!("{}/h2", stack.envoy.url()))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').expect("curl output");
    let (version, code) = tail.split_once(' ').expect("version and code");
    assert_eq!(version, "2", "curl spoke HTTP/2");
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// The audit lines Envoy wrote so far, parsed.
fn audit_lines(stack: &ProdStack) -> Vec<Value> {
    stack
        .envoy
        .output
        .lines()
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// An allowed caller's request arrives upstream over verified TLS with the
/// tenant's token and the pinned Host, without the caller's own token or
/// the tenant header.
#[tokio::test(flavor = "multi_thread")]
async fn jwt_caller_on_the_allow_list_gets_the_token() {
    let stack = stack().await;
    let sa_token = stack.files.issuer.token("billing", "invoicer", Flaw::None);
    let (status, body) = send(
        &stack,
        "GET",
        "/v1/things?q=1",
        Some(&sa_token),
        &[("x-tenant-id", "acme")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let acme = stack
        .auth
        .issued()
        .into_iter()
        .find(|i| i.tenant == "acme")
        .unwrap();
    assert_eq!(body["authorization"], format!("Bearer {}", acme.token));
    assert_eq!(body["headers"]["host"], API_HOST);
    assert_eq!(body["x-tenant-id"], Value::Null);
    assert!(
        !body.to_string().contains(&sa_token),
        "caller's token not forwarded"
    );
    // A prefix rule with method and path restrictions.
    let reporter = stack.files.issuer.token("reports", "weekly", Flaw::None);
    let ok = send(
        &stack,
        "GET",
        "/v1/reports/7",
        Some(&reporter),
        &[("x-tenant-id", "acme")],
    )
    .await;
    assert_eq!(ok.0, 200);
    for (method, path) in [("POST", "/v1/reports/7"), ("GET", "/v1/things")] {
        let (status, body) = send(
            &stack,
            method,
            path,
            Some(&reporter),
            &[("x-tenant-id", "acme")],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("caller_not_allowed"))
        );
    }
}

/// Missing, expired, wrong-audience, wrong-issuer, badly signed and
/// `alg: none` tokens get 401 `unauthenticated` JSON; a caller-sent
/// identity header counts for nothing; nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn jwt_refusals_are_401() {
    let stack = stack().await;
    let before = stack.api.seen().len();
    let issuer = &stack.files.issuer;
    let forged = [
        ("x-tenant-id", "acme"),
        ("x-authproxy-caller", BILLING),
        (
            "x-jwt-payload",
            "eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YmlsbGluZzppbnZvaWNlciJ9",
        ),
        (
            "x-forwarded-client-cert",
            "URI=spiffe://cluster.local/ns/billing/sa/invoicer",
        ),
    ];
    let mut tokens = vec![("missing", None)];
    for flaw in [
        Flaw::Expired,
        Flaw::WrongAudience,
        Flaw::WrongIssuer,
        Flaw::BadSignature,
        Flaw::AlgNone,
    ] {
        tokens.push(("flawed", Some(issuer.token("billing", "invoicer", flaw))));
    }
    for (what, token) in &tokens {
        let (status, body) = send(&stack, "GET", "/x", token.as_deref(), &forged).await;
        assert_eq!(status, 401, "{what} {token:?}: {body}");
        assert_eq!(body["error"], "unauthenticated", "{what}");
    }
    assert_eq!(
        stack.api.seen().len(),
        before,
        "nothing reached the upstream"
    );
    // A valid token of a caller not on the list, with forged identity
    // headers: still only its own identity counts.
    let other = issuer.token("billing", "intruder", Flaw::None);
    let (status, body) = send(&stack, "GET", "/x", Some(&other), &forged).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("caller_not_allowed"))
    );
}

/// A caller allowed for acme asking for globex gets 403 and nothing
/// reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn caller_allowed_for_one_tenant_not_another() {
    let stack = stack().await;
    let before = stack.api.seen().len();
    let token = stack.files.issuer.token("billing", "invoicer", Flaw::None);
    let (status, body) = send(
        &stack,
        "GET",
        "/x",
        Some(&token),
        &[("x-tenant-id", "globex")],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "caller_not_allowed");
    assert_eq!(stack.api.seen().len(), before);
}

/// Two tenant headers (any case) on HTTP/1 or two fields on HTTP/2 are 400
/// `ambiguous_tenant`, whichever comes first; an empty one is 400
/// `empty_tenant`; none reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn duplicate_and_empty_tenant_headers() {
    let stack = stack().await;
    let token = stack.files.issuer.token("billing", "invoicer", Flaw::None);
    let before = stack.api.seen().len();
    for headers in [
        [("x-tenant-id", "acme"), ("x-tenant-id", "globex")],
        [("x-tenant-id", "globex"), ("x-tenant-id", "acme")],
        [("X-Tenant-Id", "acme"), ("x-tenant-id", "acme")],
    ] {
        let (status, body) = send(&stack, "GET", "/x", Some(&token), &headers).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("ambiguous_tenant")),
            "http/1 {headers:?}"
        );
        let (status, body) = send_h2(&stack, &token, &headers);
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("ambiguous_tenant")),
            "h2 {headers:?}"
        );
    }
    let (status, body) = send(&stack, "GET", "/x", Some(&token), &[("x-tenant-id", "")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("empty_tenant"))
    );
    let (status, body) = send_h2(&stack, &token, &[("x-tenant-id", "")]);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("empty_tenant"))
    );
    assert_eq!(stack.api.seen().len(), before);
    // A single header over HTTP/2 works.
    let (status, _) = send_h2(&stack, &token, &[("x-tenant-id", "acme")]);
    assert_eq!(status, 200);
}

/// TRACE and CONNECT get 405 JSON; the upstream receives none of the
/// headers the caller or Envoy would add about the caller or the proxy.
#[tokio::test(flavor = "multi_thread")]
async fn closed_request_surface() {
    let stack = stack().await;
    let token = stack.files.issuer.token("billing", "invoicer", Flaw::None);
    let before = stack.api.seen().len();
    for method in ["TRACE", "CONNECT"] {
        let (status, body) = send(
            &stack,
            method,
            "/x",
            Some(&token),
            &[("x-tenant-id", "acme")],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (405, Some("method_not_allowed")),
            "{method}"
        );
    }
    assert_eq!(stack.api.seen().len(), before);
    let stripped = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example.com"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-whatever", "1"),
        ("forwarded", "for=203.0.113.9"),
        ("x-envoy-external-address", "203.0.113.9"),
        ("x-envoy-expected-rq-timeout-ms", "1"),
        ("x-envoy-anything", "1"),
        ("x-request-id", "caller-chosen"),
        ("proxy-authorization", "Basic Y2FsbGVyOnB3"),
        ("cookie", "session=caller"),
    ];
    let mut headers = vec![("x-tenant-id", "acme"), ("x-kept", "yes")];
    headers.extend(stripped);
    let (status, body) = send(&stack, "GET", "/x", Some(&token), &headers).await;
    assert_eq!(status, 200, "{body}");
    let seen = &body["headers"];
    for (name, _) in stripped {
        assert_eq!(
            seen[name],
            Value::Null,
            "{name} reached the upstream: {seen}"
        );
    }
    for (name, _) in seen.as_object().unwrap() {
        assert!(
            !name.starts_with("x-envoy-") && !name.starts_with("x-forwarded-"),
            "{name} reached the upstream"
        );
    }
    assert_eq!(seen["x-kept"], "yes", "ordinary caller headers pass");
    assert_eq!(seen["x-tenant-id"], Value::Null);
}

/// One JSON audit line per request with caller, tenant, method, path
/// without query, status, refusal code and token version; health checks
/// are not logged; no token (the tenant's or the caller's) in any log.
#[tokio::test(flavor = "multi_thread")]
async fn audit_log() {
    let stack = stack().await;
    let issuer = &stack.files.issuer;
    let token = issuer.token("billing", "invoicer", Flaw::None);
    let health = client()
        .get(format!("{}/health_check", stack.envoy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    send(
        &stack,
        "POST",
        "/v1/orders?secret=q",
        Some(&token),
        &[("x-tenant-id", "acme")],
    )
    .await;
    send(
        &stack,
        "GET",
        "/v1/other",
        Some(&token),
        &[("x-tenant-id", "globex")],
    )
    .await;
    send(&stack, "GET", "/v1/anon", None, &[("x-tenant-id", "acme")]).await;
    let lines = eventually(Duration::from_secs(5), "three audit lines", || async {
        let lines: Vec<Value> = audit_lines(&stack)
            .into_iter()
            .filter(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/v1/")))
            .collect();
        (lines.len() >= 3).then_some(lines)
    })
    .await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        audit_lines(&stack)
            .iter()
            .all(|l| l["path"] != "/health_check"),
        "health checks are not logged"
    );
    let allowed = &lines[0];
    assert_eq!(allowed["caller"], BILLING);
    assert_eq!(allowed["tenant"], "acme");
    assert_eq!(allowed["method"], "POST");
    assert_eq!(allowed["path"], "/v1/orders", "no query string");
    assert_eq!(allowed["status"], 200);
    assert_eq!(allowed["refusal"], Value::Null);
    assert!(
        allowed["token_version"]
            .as_str()
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "{allowed}"
    );
    assert!(allowed["upstream_ms"].is_number(), "{allowed}");
    let refused = &lines[1];
    assert_eq!(refused["caller"], BILLING);
    assert_eq!(refused["tenant"], "globex");
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["refusal"], "caller_not_allowed");
    assert_eq!(refused["token_version"], Value::Null);
    let anonymous = &lines[2];
    assert_eq!(anonymous["caller"], Value::Null);
    assert_eq!(anonymous["status"], 401);
    assert_eq!(anonymous["refusal"], "unauthenticated");
    // No token anywhere: the tenants' access tokens, the caller's JWT.
    let logs = format!(
        "{}\n{}",
        stack.envoy.output.text(),
        stack.sidecar.output.text()
    );
    for issued in stack.auth.issued() {
        assert!(!logs.contains(&issued.token), "a tenant token was logged");
    }
    assert!(!logs.contains(&token), "the caller's token was logged");
    assert!(
        !logs.contains(token.split('.').nth(2).unwrap()),
        "its signature"
    );
}
