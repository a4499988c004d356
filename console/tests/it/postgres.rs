//! The console against a real PostgreSQL named by `TEST_POSTGRES_URL` (`scripts/pg start`).
//! Without it these tests fail, on purpose: they never skip.

use axum::http::StatusCode;

use crate::common::*;
use crate::scenarios;
use crate::scenarios::ids;

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

/// One statement on the test's database as its owner.
async fn exec(url: &str, sql: &str) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
}

/// `(valid, total)` console trigram indexes in the test's database.
async fn trigram_state(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE i.indisvalid), count(*) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE 'console\\_trgm\\_%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Query pairs of a browser URL (`/data/orders?a=b&…`).
fn query_pairs(url: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://console{url}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Every index the console asks for (base, per column, trigram) is built in the background,
/// concurrently, while another session holds a write transaction open on the table (a plain
/// `CREATE INDEX` would wait for it and block the importer's writes behind it; concurrently, the
/// build only waits for that transaction to end).
#[tokio::test]
async fn console_indexes_are_built_in_the_background() {
    use admin_console::indexes::{base_indexes, column_indexes, trigram_indexes};
    let w = World::postgres().await;
    w.import("acme", "orders").await.success();
    let registry = importer::registry::Registry::load(&registry_path()).unwrap();
    let mut names: Vec<String> = base_indexes().into_iter().map(|d| d.name).collect();
    names.extend(column_indexes(&registry).into_iter().map(|d| d.name));
    names.extend(trigram_indexes(&registry).into_iter().map(|d| d.name));
    let pool = sqlx::PgPool::connect(&w.database_url).await.unwrap();
    let valid = || {
        let (pool, names) = (pool.clone(), names.clone());
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 WHERE i.indisvalid AND c.relname = ANY($1)",
            )
            .bind(&names)
            .fetch_one(&pool)
            .await
            .unwrap();
            n
        }
    };
    assert_eq!(valid().await, 0);
    // An importer-like writer in the middle of a transaction on orders.
    let mut writer = pool.begin().await.unwrap();
    sqlx::query("UPDATE orders SET status = status WHERE order_id = 1")
        .execute(&mut *writer)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let app = w.app(&["--column-indexes", "true"]).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the console waited for its indexes"
    );
    let cookie = login(&app, "viewer").await;
    assert_eq!(
        get(&app, "/runs", Some(&cookie)).await.status,
        StatusCode::OK
    );
    // Other writers to orders aren't blocked by the build meanwhile.
    let mut other = pool.acquire().await.unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sqlx::query("UPDATE orders SET status = status WHERE order_id = 2").execute(&mut *other),
    )
    .await
    .expect("a writer is not blocked by the index build")
    .unwrap();
    writer.commit().await.unwrap();
    let want = names.len() as i64;
    testkit::eventually(
        std::time::Duration::from_secs(60),
        "every console index valid",
        || async { valid().await == want },
    )
    .await;
}

/// The console builds a GIN trigram index per registry text column in the background, and the
/// browser's own contains query uses it for patterns that match nothing or few rows (with and
/// without a tenant, by key, by another column, on a next page), while a pattern that matches
/// many rows still walks the primary key and stops at the page. A leftover invalid index is
/// rebuilt; a second run finds everything in place; a held lock leaves the work to its holder.
#[tokio::test]
async fn contains_uses_the_trigram_index() {
    use admin_console::browse;
    use admin_console::indexes::{ensure, trigram_indexes};
    use admin_console::store::{Dialect, Store};

    let w = World::postgres().await;
    w.import("acme", "orders").await.success();
    // Enough rows that reading them all is the costly plan: 100 'CHF', the rest common codes.
    exec(
        &w.database_url,
        "INSERT INTO orders (tenant_id, order_id, customer_id, order_date, status, currency, total)
         SELECT 'tenant-' || (i % 10), i, i % 500, date '2025-01-01' + (i % 365), 'open',
                CASE WHEN i % 500 = 0 THEN 'CHF' WHEN i % 7 = 0 THEN NULL
                     ELSE (ARRAY['EUR','USD','GBP'])[1 + i % 3] END, (i % 1000) / 10.0
         FROM generate_series(1, 50000) i",
    )
    .await;
    let app = w.app(&[]).await;
    let pool = sqlx::PgPool::connect(&w.database_url).await.unwrap();
    let registry = importer::registry::Registry::load(&registry_path()).unwrap();
    let defs = trigram_indexes(&registry);
    let want = defs.len() as i64;
    testkit::eventually(
        std::time::Duration::from_secs(60),
        "every trigram index valid",
        || {
            let pool = pool.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                (trigram_state(&pool).await == (want, want)).then_some(())
            }
        },
    )
    .await;
    exec(&w.database_url, "ANALYZE orders").await;

    let cookie = login(&app, "viewer").await;
    let first = get(&app, "/data/orders?currency.has=chf", Some(&cookie)).await;
    assert_eq!(first.table("#rows").len(), 50);
    let next = first
        .attrs("#next-page", "href")
        .pop()
        .expect("a next page");
    let r = get(&app, &next, Some(&cookie)).await;
    assert_eq!(r.table("#rows").len(), 50);
    assert!(r.table("#rows").iter().all(|row| row[5] == "CHF"));

    let store = Store::connect(&importer::db::DatabaseUrl::parse(&w.database_url).unwrap())
        .await
        .unwrap();
    let def = registry.get("orders").unwrap();
    let trgm = "Bitmap Index Scan on console_trgm_orders_currency";
    for (url, plan) in [
        ("/data/orders?currency.has=zzz", trgm),
        ("/data/orders?tenant=tenant-3&currency.has=zzz", trgm),
        ("/data/orders?currency.has=chf", trgm),
        ("/data/orders?tenant=tenant-0&currency.has=chf", trgm),
        ("/data/orders?currency.has=chf&sort=total&dir=desc", trgm),
        (next.as_str(), trgm),
        (
            "/data/orders?currency.has=eur",
            "Index Scan using orders_pkey",
        ),
        (
            "/data/orders?tenant=tenant-3&currency.has=eur",
            "Index Scan using orders_pkey",
        ),
    ] {
        let b = browse::parse(def, Dialect::Postgres, &query_pairs(url)).unwrap();
        let mut sql = browse::select(def, Dialect::Postgres, &b, Some(browse::PAGE + 1));
        sql.text = format!("EXPLAIN {}", sql.text);
        let explain: Vec<String> = store
            .rows(sql, 1000)
            .await
            .unwrap()
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        let explain = explain.join("\n");
        assert!(explain.contains(plan), "{url}: want {plan}\n{explain}");
        if !plan.contains("trgm") {
            assert!(!explain.contains("trgm"), "{url}\n{explain}");
        }
    }

    // An index left invalid by a cut-short build is dropped and rebuilt; the rest stay.
    exec(
        &w.database_url,
        "UPDATE pg_index SET indisvalid = false \
         WHERE indexrelid = 'console_trgm_orders_currency'::regclass",
    )
    .await;
    assert_eq!(trigram_state(&pool).await, (want - 1, want));
    let report = ensure(&pool, &defs).await.unwrap();
    assert_eq!(report.built, ["console_trgm_orders_currency"]);
    assert_eq!(report.present.len(), defs.len() - 1);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(trigram_state(&pool).await, (want, want));
    let again = ensure(&pool, &defs).await.unwrap();
    assert!(again.built.is_empty() && again.present.len() == defs.len());

    // Another session holding the lock builds them; this one leaves it alone.
    let mut holder = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(admin_console::indexes::LOCK_KEY)
        .execute(&mut *holder)
        .await
        .unwrap();
    let busy = ensure(&pool, &defs).await.unwrap();
    assert!(busy.busy && busy.built.is_empty() && busy.present.is_empty());
}

/// A role that may not create `pg_trgm` gets an error naming the extension (the console logs
/// one warning), and the console still starts and answers contains filters, by scanning.
#[tokio::test]
async fn trigram_without_privilege_is_a_warning_not_a_crash() {
    use admin_console::indexes::{base_indexes, ensure, trigram_indexes};

    let w = World::postgres().await;
    w.import("acme", "orders").await.success();
    let role = format!("console_ro_{}", rand::random::<u32>());
    exec(
        &w.database_url,
        &format!("CREATE ROLE {role} LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
    )
    .await;
    let mut url = reqwest::Url::parse(&w.database_url).unwrap();
    url.set_username(&role).unwrap();
    let url = url.to_string();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let registry = importer::registry::Registry::load(&registry_path()).unwrap();
    let mut defs = base_indexes();
    defs.extend(trigram_indexes(&registry));
    let report = ensure(&pool, &defs).await.unwrap();
    let err = report.extension.clone().expect("the extension refused");
    assert!(err.contains("permission denied"), "{err}");
    // The trigram indexes are skipped; the others are still attempted (and refused here: the
    // role doesn't own the tables), each with its own error.
    assert!(report.built.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), base_indexes().len(), "{report:?}");

    let mut args = w.args();
    let i = args.iter().position(|a| a == "--database-url").unwrap();
    args[i + 1] = url;
    let app = app_from(&args).await;
    let cookie = login(&app, "viewer").await;
    let r = get(
        &app,
        "/data/orders?tenant=acme&currency.has=eur",
        Some(&cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(ids(&r), ["1", "3"]);
}
