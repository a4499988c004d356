//! Handler tests: the router driven with `oneshot`, pages checked as HTML, over the SQLite
//! default file filled by the real importer binary. `postgres` repeats the core pages on
//! PostgreSQL.

use std::time::Duration;

use axum::http::StatusCode;
use testkit::eventually;

use crate::common::*;
use crate::scenarios;

#[tokio::test]
async fn runs_run_and_rejects_sqlite() {
    scenarios::runs_run_and_rejects(World::sqlite().await).await;
}

#[tokio::test]
async fn data_browser_sqlite() {
    scenarios::data_browser(World::sqlite().await).await;
}

#[tokio::test]
async fn crafted_filters_sqlite() {
    scenarios::crafted_filters(World::sqlite().await).await;
}

#[tokio::test]
async fn rerun_sqlite() {
    scenarios::rerun(World::sqlite().await).await;
}

/// Without a session every page redirects to the login page (htmx gets HX-Redirect); probes,
/// the login page and static files need none.
#[tokio::test]
async fn no_session_means_login() {
    let w = World::sqlite().await;
    w.import("acme", "orders").await.success();
    let app = w.app(&[]).await;
    for path in [
        "/runs",
        "/runs/1",
        "/runs/1/rejects.csv",
        "/runs/1/events",
        "/data/orders",
        "/data/orders/csv",
        "/tenants",
        "/charts",
    ] {
        let r = get(&app, path, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            r.header("location").unwrap().starts_with("/login?next="),
            "{path}"
        );
        assert!(!r.body.contains("acme"), "{path} leaked data");
    }
    let r = send(
        &app,
        axum::http::Request::get("/runs")
            .header("hx-request", "true")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("hx-redirect"), Some("/login?next=%2Fruns"));
    // A forged or foreign cookie is no session either.
    let r = get(&app, "/runs", Some("console_session=eyJ1Ijoi.00ff")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    for open in ["/login", "/livez", "/readyz", "/static/htmx.min.js"] {
        assert_eq!(get(&app, open, None).await.status, StatusCode::OK, "{open}");
    }
    let login = get(&app, "/login", None).await;
    assert_eq!(login.texts("button#login"), ["Sign in"]);
}

#[tokio::test]
async fn rejects_pages_in_line_order_sqlite() {
    scenarios::rejects_pages_in_line_order(World::sqlite().await).await;
}

/// Repeated wrong passwords for one user name make that name wait (429 with
/// Retry-After, even with the right password), without touching other users;
/// after the wait the right password signs in.
#[tokio::test]
async fn repeated_wrong_passwords_back_off() {
    let w = World::sqlite().await;
    let app = w.app(&[]).await;
    let try_login = |user: &'static str, pw: &'static str| {
        let app = app.clone();
        async move {
            post_form(
                &app,
                "/login",
                None,
                &format!("username={user}&password={}", urlenc(pw)),
            )
            .await
        }
    };
    for _ in 0..admin_console::throttle::FREE_FAILURES {
        assert_eq!(
            try_login("admin", "wrong").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = try_login("admin", PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.header("set-cookie").is_none());
    assert!(
        r.texts("p.error")[0].starts_with("Too many wrong passwords"),
        "{}",
        r.body
    );
    login(&app, "viewer").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = try_login("admin", PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(r.header("set-cookie").is_some());
}

/// A wrong password is refused with a message and no cookie; a right one signs in.
#[tokio::test]
async fn login_checks_the_password() {
    let w = World::sqlite().await;
    let app = w.app(&[]).await;
    // Before the importer's first run there are no tables yet: the page says so.
    let cookie = login(&app, "viewer").await;
    let r = get(&app, "/runs", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.texts("#error")[0].contains("importer migrate"),
        "{}",
        r.body
    );
    w.import("acme", "orders").await.success();
    for (user, pw) in [("admin", "wrong"), ("nobody", PASSWORD)] {
        let r = post_form(
            &app,
            "/login",
            None,
            &format!("username={user}&password={}", urlenc(pw)),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.header("set-cookie").is_none());
        assert_eq!(r.texts("p.error"), ["Wrong user name or password."]);
    }
    let cookie = login(&app, "viewer").await;
    let r = get(&app, "/runs", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.texts(".who .role"), ["viewer"]);
    // After login the browser goes back where it was, never to another site.
    let r = post_form(
        &app,
        "/login",
        None,
        &format!(
            "username=viewer&password={}&next=//evil.example/",
            urlenc(PASSWORD)
        ),
    )
    .await;
    assert_eq!(r.header("location"), Some("/runs"));
}

/// A viewer sees no re-run button and is refused when asking anyway (with a valid CSRF token).
#[tokio::test]
async fn viewer_cannot_rerun() {
    let w = World::sqlite().await;
    w.import("acme", "orders").await.success();
    let app = w
        .app(&["--rerun", "local", "--importer-base-url", &w.api])
        .await;
    let cookie = login(&app, "viewer").await;
    let page = get(&app, "/runs/1", Some(&cookie)).await;
    assert!(page.texts("#rerun").is_empty());
    assert!(page.body.contains("Re-runs need the admin role."));
    assert_eq!(
        get(&app, "/runs/1/rerun", Some(&cookie)).await.status,
        StatusCode::FORBIDDEN
    );
    let csrf = csrf_of(&app, &cookie).await;
    let r = post_form(
        &app,
        "/runs/1/rerun",
        Some(&cookie),
        &format!("csrf={csrf}&confirm=yes"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.texts("#error"), ["re-runs are for admins"]);
    // Nothing was started.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let runs = get(&app, "/runs", Some(&cookie)).await;
    assert_eq!(runs.table("#runs").len(), 1);
}

/// State-changing requests need the session's CSRF token: missing, wrong, or another
/// session's token is refused; the right one in the form or the htmx header passes.
#[tokio::test]
async fn csrf_is_required() {
    let w = World::sqlite().await;
    w.import("acme", "orders").await.success();
    let app = w
        .app(&["--rerun", "local", "--importer-base-url", &w.api])
        .await;
    let cookie = login(&app, "admin").await;
    let other = login(&app, "admin").await;
    let other_csrf = csrf_of(&app, &other).await;
    for form in [
        "confirm=yes".to_string(),
        "csrf=0000&confirm=yes".to_string(),
        format!("csrf={other_csrf}&confirm=yes"),
    ] {
        let r = post_form(&app, "/runs/1/rerun", Some(&cookie), &form).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{form}");
        assert!(r.body.contains("CSRF"), "{form}");
    }
    let r = post_form(&app, "/logout", Some(&cookie), "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "logout without a token");
    // The token in the header htmx sends.
    let csrf = csrf_of(&app, &cookie).await;
    let r = send(
        &app,
        axum::http::Request::post("/logout")
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/login"));
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
}

/// SSO mode: the user header counts only with the proxy's shared secret; admins by name.
#[tokio::test]
async fn sso_header_with_shared_secret() {
    let w = World::sqlite().await;
    w.import("acme", "orders").await.success();
    let secret = w.dir.path().join("sso-secret");
    std::fs::write(&secret, "a-long-shared-secret-0123456789\n").unwrap();
    let mut args: Vec<String> = w.args().into_iter().filter(|a| a != "password").collect();
    let pos = args.iter().position(|a| a == "--auth").unwrap();
    args.insert(pos + 1, "sso".into());
    args.extend(
        [
            "--sso-secret-file",
            secret.to_str().unwrap(),
            "--admins",
            "boss@example.com",
        ]
        .map(String::from),
    );
    let app = app_from(&args).await;
    let req = |user: &str, secret: Option<&str>| {
        let mut b = axum::http::Request::get("/runs").header("x-forwarded-email", user);
        if let Some(s) = secret {
            b = b.header("x-console-proxy-secret", s);
        }
        b.body(axum::body::Body::empty()).unwrap()
    };
    let r = send(&app, req("boss@example.com", None)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&app, req("boss@example.com", Some("guess"))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let good = "a-long-shared-secret-0123456789";
    let r = send(&app, req("boss@example.com", Some(good))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.texts(".who .role"), ["admin"]);
    let r = send(&app, req("intern@example.com", Some(good))).await;
    assert_eq!(r.texts(".who .role"), ["viewer"]);
}

/// The tenants page shows each tenant's state from a sidecar's `/status` (a test fake serving
/// the sidecar's documented shape), and names a sidecar that doesn't answer.
#[tokio::test]
async fn tenants_page() {
    let w = World::sqlite().await;
    let status = serde_json::json!({"tenants": {
        "acme": {"state": "valid", "expires_at_ms": 4_102_444_800_000u64, "last_error": null,
                 "consecutive_failures": 0, "fetches": {"success": 12, "failure": 1}},
        "globex": {"state": "failing", "expires_at_ms": null, "last_error": "invalid_client",
                   "consecutive_failures": 3, "fetches": {"success": 0, "failure": 3}}
    }});
    let fake = testkit::serve(axum::Router::new().route(
        "/status",
        axum::routing::get(move || {
            let s = status.clone();
            async move { axum::Json(s) }
        }),
    ))
    .await;
    let urls = format!("{fake}/status,http://127.0.0.1:9/status");
    let app = w.app(&["--sidecar-status-url", &urls]).await;
    let cookie = login(&app, "viewer").await;
    let r = get(&app, "/tenants", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    let rows = r.table("#tenants");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0..3], ["acme", "valid", "2100-01-01 00:00:00"]);
    assert_eq!(rows[0][6..8], ["12", "1"]);
    assert_eq!(rows[1][..2], ["globex", "failing"]);
    assert_eq!(rows[1][4..6], ["invalid_client", "3"]);
    assert!(r.texts("p.error")[0].starts_with("http://127.0.0.1:9/status"));
}

/// The tenants page against the real sidecar binary (and the shared fake auth server): each
/// tenant's state, expiry and fetch counts from its `GET /status`, and no token anywhere.
#[tokio::test]
async fn tenants_page_real_sidecar() {
    let auth = testkit::FakeAuth::start(testkit::Behave::issue(3600)).await;
    let sidecar = e2e::Sidecar::start(&auth, &["acme".into(), "globex".into()], "").await;
    let w = World::sqlite().await;
    let url = format!("{}/status", sidecar.probes_url());
    let app = w.app(&["--sidecar-status-url", &url]).await;
    let cookie = login(&app, "viewer").await;
    let rows = eventually(Duration::from_secs(20), "both tenants valid", || {
        let app = app.clone();
        let cookie = cookie.clone();
        async move {
            let r = get(&app, "/tenants", Some(&cookie)).await;
            let rows = r.table("#tenants");
            (rows.len() == 2 && rows.iter().all(|row| row[1] == "valid")).then_some((rows, r.body))
        }
    })
    .await;
    let (rows, body) = rows;
    assert_eq!(rows[0][0], "acme");
    assert_eq!(rows[1][0], "globex");
    for row in &rows {
        assert!(row[2].starts_with("20"), "an expiry time: {row:?}");
        assert_eq!(row[4], "—", "no last error: {row:?}");
        assert!(
            row[6].parse::<u64>().unwrap() >= 1,
            "a successful fetch: {row:?}"
        );
    }
    for issued in auth.issued() {
        assert!(!body.contains(&issued.token), "the page shows a token");
    }
}

/// The charts page draws the last 30 days as SVG: one bar per day, one legend entry per type.
#[tokio::test]
async fn charts_page() {
    let w = World::sqlite().await;
    w.import("acme", "orders").await.success();
    let app = w.app(&[]).await;
    let cookie = login(&app, "viewer").await;
    let r = get(&app, "/charts", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.attrs("#rows-chart svg rect", "fill").len(), 30);
    assert!(
        r.body.contains(": 4 rows</title>"),
        "today's bar counts 4 rows"
    );
    assert_eq!(
        r.texts("#duration-chart svg > text:last-of-type"),
        ["orders"]
    );
}

/// The run page's event stream sends the progress block first (SQLite: polled).
#[tokio::test]
async fn run_events_stream() {
    let w = World::sqlite().await;
    w.import("acme", "orders").await.success();
    let app = w.app(&[]).await;
    let cookie = login(&app, "viewer").await;
    scenarios::first_events(&app, &cookie, 1).await;
}

/// Bad configuration: one line naming the key, exit 64; never open by default.
#[test]
fn bad_config_exits_64() {
    let bin = env!("CARGO_BIN_EXE_console");
    let reg = registry_path();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users").display().to_string();
    std::fs::write(&users, users_text()).unwrap();
    let bad_users = dir.path().join("bad").display().to_string();
    std::fs::write(
        &bad_users,
        format!("{}\nroot:root:x\n", users_text().lines().nth(1).unwrap()),
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "CONSOLE_AUTH"),
        (vec!["--auth", "password"], "CONSOLE_USERS_FILE"),
        (
            vec!["--auth", "password", "--users-file", "/nonexistent"],
            "CONSOLE_USERS_FILE",
        ),
        (vec!["--auth", "sso"], "CONSOLE_SSO_SECRET_FILE"),
        (
            vec!["--auth", "password", "--listen", "nowhere"],
            "CONSOLE_LISTEN",
        ),
        (vec!["--auth", "bogus"], "--auth"),
        (
            vec![
                "--auth",
                "password",
                "--users-file",
                &users,
                "--rerun",
                "local",
            ],
            "IMPORTER_API_BASE_URL",
        ),
        (
            vec!["--auth", "password", "--users-file", &bad_users],
            "line 2",
        ),
    ];
    for (args, key) in cases {
        let out = std::process::Command::new(bin)
            .args(&args)
            .arg("--registry")
            .arg(&reg)
            .env_clear()
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(key), "{args:?}: {err} should name {key}");
    }
}

/// Secrets never show in the configuration's debug output.
#[test]
fn config_debug_redacts() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, users_text()).unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "k".repeat(40)).unwrap();
    let cli = <admin_console::config::Cli as clap::Parser>::try_parse_from([
        "console",
        "--auth",
        "password",
        "--users-file",
        users.to_str().unwrap(),
        "--session-key-file",
        key.to_str().unwrap(),
        "--registry",
        registry_path().to_str().unwrap(),
    ])
    .unwrap();
    let c = admin_console::config::Config::from_cli(cli).unwrap();
    let text = format!("{c:?}");
    assert!(text.contains("SessionKey(***)"));
    assert!(!text.contains("argon2"), "{text}");
    assert!(!text.contains("kkkk"));
}
