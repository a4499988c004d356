//! The console against a real PostgreSQL named by `TEST_POSTGRES_URL` (`scripts/pg start`).
//! Without it these tests fail, on purpose: they never skip.

use crate::common::*;
use crate::scenarios;

#[tokio::test]
async fn runs_run_and_rejects_postgres() {
    scenarios::runs_run_and_rejects(World::postgres().await).await;
}

#[tokio::test]
async fn data_browser_postgres() {
    scenarios::data_browser(World::postgres().await).await;
}

#[tokio::test]
async fn crafted_filters_postgres() {
    scenarios::crafted_filters(World::postgres().await).await;
}

#[tokio::test]
async fn rejects_pages_in_line_order_postgres() {
    scenarios::rejects_pages_in_line_order(World::postgres().await).await;
}

#[tokio::test]
async fn rerun_postgres() {
    scenarios::rerun(World::postgres().await).await;
}

/// A `NOTIFY import_runs, '<id>'` pushes the run's new progress to an open page at once,
/// well before the 5 s fallback poll.
#[tokio::test]
async fn notify_pushes_progress() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let w = World::postgres().await;
    w.import("acme", "orders").await.success();
    let app = w.app(&[]).await;
    let cookie = login(&app, "viewer").await;
    let resp = app
        .clone()
        .oneshot(
            axum::http::Request::get("/runs/1/events")
                .header("cookie", &cookie)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut text = String::new();
    while !text.contains("event: later") {
        let f = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&f.into_data().unwrap()));
    }
    // What the importer does on a progress update, outside its load transaction.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&w.database_url)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    sqlx::Executor::execute(
        &mut conn,
        "UPDATE import_runs SET rows_read = 1234567 WHERE id = 1; NOTIFY import_runs, '1'",
    )
    .await
    .unwrap();
    let mut text = String::new();
    while !text.contains("1,234,567") {
        let f = tokio::time::timeout(std::time::Duration::from_secs(3), body.frame())
            .await
            .expect("an update within 3 s of the NOTIFY (the fallback poll is 5 s)")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&f.into_data().unwrap()));
    }
    assert!(text.starts_with("event: run"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}
