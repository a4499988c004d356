//! End-to-end: the real `importer run` binary fetches exports through the real Envoy (with the
//! real filter) and sidecar, from a fake third-party API that answers 401 without a bearer
//! token, into the default SQLite file. Needs `cargo build -p importer` (scripts/test does it)
//! and the `sqlite3` CLI to read the result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use e2e::fakes::export_payload;
use e2e::{repo_root, Stack};

const DATE: &str = "2026-11-27";

/// The importer binary: `$IMPORTER_BIN`, or the debug build beside this test binary.
fn importer_bin() -> PathBuf {
    let path = std::env::var_os("IMPORTER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("test exe path");
            // target/debug/deps/importer_e2e-xxxx -> target/debug/importer
            exe.ancestors()
                .nth(2)
                .expect("target profile dir")
                .join("importer")
        });
    assert!(
        path.exists(),
        "{} is missing; build it first (cargo build -p importer), or run scripts/test",
        path.display()
    );
    path
}

/// Each tenant's `orders` export: tenant-specific rows, so a mix-up shows.
fn orders_csv(tenant: &str) -> String {
    let rows = if tenant == "acme" { 3 } else { 5 };
    let mut csv = String::from("Order ID,Customer ID,Order Date,status,Order Total\r\n");
    for i in 1..=rows {
        csv.push_str(&format!("{i},{i}0,{DATE},\"{tenant}, #{i}\",{i}.50\r\n"));
    }
    csv
}

/// The bearer tokens the fake API accepted, and the tenant each one was for.
type Accepted = Arc<Mutex<Vec<(String, String)>>>;

/// `GET /exports/{module}?date=`: 401 without a bearer token; the tenant is read from the token
/// the fake auth server issued (`tok-{tenant}-…`), since the proxy strips `x-tenant-id`.
async fn export(
    State(accepted): State<Accepted>,
    UrlPath(module): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let Some(token) = token else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "invalid_token"})),
        )
            .into_response();
    };
    let Some(tenant) = token
        .strip_prefix("tok-")
        .and_then(|t| t.split('-').next())
        .map(str::to_string)
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if q.get("date").map(String::as_str) != Some(DATE) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    accepted
        .lock()
        .unwrap()
        .push((token.clone(), tenant.clone()));
    match module.as_str() {
        "orders" => Json(export_payload("orders", orders_csv(&tenant).as_bytes())).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Anything else (the harness's readiness `/ping` included): 200 with a bearer token, else 401.
async fn other(headers: HeaderMap) -> StatusCode {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    if bearer {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

fn run_importer(dir: &Path, base_url: &str) -> Output {
    let registry = repo_root().join("importer/registry/example.yaml");
    std::process::Command::new(importer_bin())
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .args(["--registry", registry.to_str().unwrap()])
        .args(["run", "--base-url", base_url])
        .args(["--tenant", "acme,globex", "--date", DATE])
        .args(["--type", "orders,customers"])
        .output()
        .expect("run importer")
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 CLI (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `importer run` through the proxy loads each tenant's export into the default SQLite file
/// with that tenant's token; the same run straight at the API is refused with 401; a second
/// run through the proxy is recognised as a duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn importer_run_through_the_proxy() {
    let accepted: Accepted = Arc::default();
    let api = Router::new()
        .route("/exports/{module}", get(export))
        .fallback(other)
        .with_state(accepted.clone());
    let stack = Stack::builder()
        .tenants(&["acme", "globex"])
        .api(api)
        .start()
        .await;
    stack.wait_for_token("acme").await;
    stack.wait_for_token("globex").await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("importer.db");

    // Straight at the API, without the proxy: no token, so 401 and nothing loaded.
    let out = run_importer(dir.path(), &stack.api_url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("HTTP: GET"), "{stdout}");
    assert!(stdout.contains("status 401 Unauthorized"), "{stdout}");
    assert!(
        stdout.contains("loaded 0, duplicate 0, missing 0, empty 0, failed 4, interrupted 0"),
        "{stdout}"
    );
    assert!(accepted.lock().unwrap().is_empty());

    // Through the proxy: each tenant's rows, fetched with that tenant's token.
    let out = run_importer(dir.path(), &stack.proxy_url());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("loaded 2, duplicate 0, missing 2, empty 0, failed 0, interrupted 0"),
        "{stdout}"
    );
    assert_eq!(
        sqlite(
            &db,
            "SELECT tenant_id, order_id, status, total FROM orders ORDER BY tenant_id, order_id"
        ),
        "acme|1|acme, #1|1.50\nacme|2|acme, #2|2.50\nacme|3|acme, #3|3.50\n\
         globex|1|globex, #1|1.50\nglobex|2|globex, #2|2.50\nglobex|3|globex, #3|3.50\n\
         globex|4|globex, #4|4.50\nglobex|5|globex, #5|5.50\n"
    );
    let issued: Vec<(String, String)> = stack
        .auth
        .issued()
        .into_iter()
        .map(|i| (i.token, i.tenant))
        .collect();
    let used = accepted.lock().unwrap().clone();
    assert_eq!(used.len(), 4, "orders and customers for two tenants");
    for pair in &used {
        assert!(
            issued.contains(pair),
            "{pair:?} was not issued by the auth server"
        );
    }

    // Again: identical content, recorded as duplicates; the rows are unchanged.
    let out = run_importer(dir.path(), &stack.proxy_url());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("loaded 0, duplicate 2, missing 2, empty 0, failed 0, interrupted 0"),
        "{stdout}"
    );
    assert_eq!(
        sqlite(
            &db,
            "SELECT status, count(*) FROM import_runs GROUP BY status ORDER BY status"
        ),
        "duplicate|2\nfailed|4\nsucceeded|2\n"
    );
    assert_eq!(sqlite(&db, "SELECT count(*) FROM orders"), "8\n");
}
