//! The importer against a real PostgreSQL named by `TEST_POSTGRES_URL`. Without it these tests
//! fail, on purpose: they never skip.

use crate::{scenarios, support};

backend_tests!(|s| support::postgres().await);

/// `run`/`load` refuse an unmigrated PostgreSQL database instead of creating tables themselves.
#[tokio::test]
async fn unmigrated_database_is_refused() {
    let s = support::Scratch::new();
    let b = support::postgres().await;
    let f = s.file("orders.csv", "order_id\n1\n");
    let mut argv = vec![
        "importer".to_string(),
        "--database-url".into(),
        b.url(),
        "--registry".into(),
        s.registry.display().to_string(),
    ];
    argv.extend(["load", f.to_str().unwrap(), "--tenant", "acme"].map(String::from));
    let cli = <importer::config::Cli as clap::Parser>::try_parse_from(&argv).unwrap();
    let config = importer::config::Config::from_cli(cli).unwrap();
    let err = importer::run(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("run `importer migrate` first"),
        "{err}"
    );
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the test server with `eval \"$(scripts/pg start)\"`")
    })
}

/// TLS with `sslmode=verify-full` and the test CA loads into a database that refuses
/// plaintext; a wrong CA is refused; plaintext to that database is refused by the server, and
/// a URL that could fall back to plaintext is refused by the importer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full() {
    use sqlx::{Connection, Executor};
    let admin = env("TEST_POSTGRES_URL");
    let (ca, wrong) = (env("TEST_POSTGRES_CA"), env("TEST_POSTGRES_WRONG_CA"));
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    conn.execute("DROP DATABASE IF EXISTS tls_only WITH (FORCE)")
        .await
        .unwrap();
    conn.execute("CREATE DATABASE tls_only").await.unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    let at = |query: &str| support::Backend::Postgres(format!("{base}/tls_only?{query}"));
    let s = support::Scratch::new();

    let tls = at(&format!("sslmode=verify-full&sslrootcert={ca}"));
    support::migrate(&s, &tls).await;
    let f = s.file("orders.csv", scenarios::orders(1, 3, "open"));
    let r = support::importer(&s, &tls, &["load", f.to_str().unwrap(), "--tenant", "acme"]).await;
    assert_eq!(
        r.outcomes[0].status,
        importer::job::Status::Loaded,
        "{}",
        r.text
    );
    assert_eq!(
        tls.value("SELECT CAST(count(*) AS TEXT) FROM orders").await,
        "3"
    );

    let err = support::try_importer(
        &s,
        &at(&format!("sslmode=verify-full&sslrootcert={wrong}")),
        &["migrate"],
    )
    .await
    .unwrap_err();
    assert!(err.contains("connect"), "{err}");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );

    let err = support::try_importer(&s, &at("sslmode=disable"), &["migrate"])
        .await
        .unwrap_err();
    assert!(err.contains("no encryption"), "{err}");

    let err = support::try_importer(
        &s,
        &support::Backend::Postgres(format!("{base}/tls_only")),
        &["migrate"],
    )
    .await
    .unwrap_err();
    assert!(err.contains("may connect in plaintext"), "{err}");
}

/// SIGTERM while the load waits for another loader's lock on the slice: the run is recorded
/// `interrupted` promptly, and nothing is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_lock_wait_is_interrupted() {
    use sqlx::Connection;
    let s = support::Scratch::new();
    let b = support::postgres().await;
    support::migrate(&s, &b).await;
    let mut holder = sqlx::PgConnection::connect(&b.url()).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('importer:orders:acme', 0))")
        .execute(&mut holder)
        .await
        .unwrap();
    let f = s.file("orders.csv", scenarios::orders(1, 3, "open"));
    let started = std::time::Instant::now();
    let r = support::importer_until(
        &s,
        &b,
        &["load", f.to_str().unwrap(), "--tenant", "acme"],
        tokio::time::sleep(std::time::Duration::from_secs(1)),
    )
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(r.interrupted);
    assert_eq!(
        r.outcomes[0].status,
        importer::job::Status::Interrupted,
        "{}",
        r.text
    );
    assert_eq!(
        b.rows("SELECT status, error FROM import_runs").await,
        vec![vec![
            "interrupted".to_string(),
            format!(
                "{}: interrupted while waiting for the table lock",
                f.display()
            )
        ]]
    );
    assert_eq!(
        b.value("SELECT CAST(count(*) AS TEXT) FROM orders").await,
        "0"
    );
}

/// During a load, rows read and loaded and the heartbeat are visible outside its transaction
/// and each update is announced with `NOTIFY import_runs, '<id>'`, through to the final status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_progress_is_recorded_and_notified() {
    let s = support::Scratch::new();
    let b = support::postgres().await;
    support::migrate(&s, &b).await;
    let big = s.file("big.csv", scenarios::orders(1, 400_000, "open"));
    let mut listener = sqlx::postgres::PgListener::connect(&b.url()).await.unwrap();
    listener.listen("import_runs").await.unwrap();
    // Progress every 100 ms, so the load (about a second here) is seen running with counts
    // however fast the machine is.
    let args = [
        "--progress-every-ms",
        "100",
        "load",
        big.to_str().unwrap(),
        "--tenant",
        "acme",
        "--module",
        "orders",
    ];
    let load = support::importer(&s, &b, &args);
    let watch = async {
        let (mut notes, mut live) = (0, None);
        loop {
            let n = tokio::time::timeout(std::time::Duration::from_secs(120), listener.recv())
                .await
                .expect("a notification")
                .unwrap();
            notes += 1;
            let row = b
                .rows(&format!(
                    "SELECT status, CAST(rows_read AS TEXT), CAST(rows_loaded AS TEXT),                      CASE WHEN heartbeat_at IS NULL THEN 'no' ELSE 'yes' END FROM import_runs WHERE id = {}",
                    n.payload()
                ))
                .await
                .remove(0);
            if row[0] == "running" && row[1] != "0" {
                live = Some(row.clone());
            }
            if row[0] != "running" {
                return (notes, live, row);
            }
        }
    };
    let (report, (notes, live, last)) = tokio::join!(load, watch);
    assert_eq!(
        report.outcomes[0].status,
        importer::job::Status::Loaded,
        "{}",
        report.text
    );
    let live = live.expect("a progress update while running");
    assert!(
        live[1].parse::<u64>().unwrap() < 400_000 && live[3] == "yes",
        "{live:?}"
    );
    assert!(notes >= 3, "start, progress and end: {notes}");
    assert_eq!(last, vec!["succeeded", "400000", "400000", "yes"]);
}

/// A load that can't stop within the 10 s drain (its upsert waits for a row another session
/// has locked) is cut off, and its run is still recorded `interrupted`; nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_load_is_recorded_interrupted() {
    use sqlx::Connection;
    let s = support::Scratch::new();
    let b = support::postgres().await;
    support::migrate(&s, &b).await;
    let v1 = s.file("orders.v1.csv", scenarios::orders(1, 10, "open"));
    support::importer(&s, &b, &["load", v1.to_str().unwrap(), "--tenant", "acme"]).await;
    let mut holder = sqlx::PgConnection::connect(&b.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT * FROM orders WHERE tenant_id = 'acme' AND order_id = 1 FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let v2 = s.file("orders.v2.csv", scenarios::orders(1, 10, "shipped"));
    let r = support::importer_until(
        &s,
        &b,
        &["load", v2.to_str().unwrap(), "--tenant", "acme"],
        tokio::time::sleep(std::time::Duration::from_secs(1)),
    )
    .await;
    assert!(r.interrupted, "{}", r.text);
    let runs = b
        .rows("SELECT status, COALESCE(error, '') FROM import_runs ORDER BY id")
        .await;
    assert_eq!(runs[1][0], "interrupted", "{runs:?}");
    assert!(
        runs[1][1].contains("did not stop within 10s and was cut off"),
        "{runs:?}"
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(
        b.value("SELECT CAST(count(*) AS TEXT) FROM orders WHERE status = 'open'")
            .await,
        "10"
    );
}
