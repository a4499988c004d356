//! The importer against the embedded SQLite default, plus the binary's exit codes.

use crate::{scenarios, support};

backend_tests!(|s| support::sqlite(&s));

fn bin(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_importer"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap()
}

/// Bad usage and bad configuration print one line on stderr and exit 64.
#[test]
fn usage_errors_exit_64() {
    let s = support::Scratch::new();
    let reg = s.registry.to_str().unwrap();
    let broken = s.file(
        "broken.yaml",
        "types:\n- module: m\n  natural_key: [x]\n  columns: [{name: id, type: int}]\n",
    );
    let cases: Vec<Vec<&str>> = vec![
        vec!["--registry", reg, "frobnicate"],
        vec!["--registry", reg, "load", "--tenant", "acme"],
        vec!["--registry", broken.to_str().unwrap(), "types"],
        vec!["--registry", "/no/such/registry.yaml", "types"],
        vec!["--registry", reg, "--database-url", "mysql://x", "types"],
        vec!["--registry", reg, "--progress-every-ms", "50", "types"],
        vec![
            "--registry",
            reg,
            "load",
            reg,
            "--tenant",
            "acme",
            "--shard",
            "2/2",
        ],
        vec![
            "--registry",
            reg,
            "load",
            reg,
            "--tenant",
            "acme",
            "--module",
            "nosuch",
        ],
        vec![
            "--registry",
            reg,
            "run",
            "--base-url",
            "ftp://x",
            "--tenant",
            "acme",
        ],
        vec![
            "--registry",
            reg,
            "run",
            "--base-url",
            "http://x",
            "--tenant",
            "acme",
            "--date",
            "2026-02-30",
        ],
    ];
    for args in cases {
        let out = bin(&args, s.dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("importer: "), "{args:?}: {stderr}");
    }
    // The line names what is wrong, and never a database password.
    let named: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--registry",
                reg,
                "load",
                reg,
                "--tenant",
                "acme",
                "--module",
                "nosuch",
            ],
            "--module \"nosuch\": not in the registry",
        ),
        (
            vec![
                "--registry",
                reg,
                "--database-url",
                "postgress://me:s3cret@db/x",
                "types",
            ],
            "neither postgres",
        ),
        (
            vec![
                "--registry",
                reg,
                "--database-url",
                "postgres://me:s3cret@db/x",
                "types",
            ],
            "sslmode Prefer may connect in plaintext",
        ),
        (
            vec![
                "--registry",
                reg,
                "--database-url",
                "postgres://me:s3cret@db/x?sslmode=allow",
                "types",
            ],
            "postgres://me:***@db/x?sslmode=allow",
        ),
    ];
    for (args, want) in named {
        let out = bin(&args, s.dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{stderr} should contain {want}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
}

/// A database created before migration 0002 keeps its runs and rejects, and takes the new
/// statuses.
#[tokio::test]
async fn migrates_a_0001_database() {
    let s = support::Scratch::new();
    let b = support::sqlite(&s);
    let support::Backend::Sqlite(path) = &b else {
        unreachable!()
    };
    {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(include_str!("../../migrations/sqlite/0001_import_runs.sql"))
            .unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO import_runs (id, tenant, module, source, started_at, status)
                 VALUES (7, 'acme', 'orders', 'old.csv', '2026-01-01T00:00:00Z', 'succeeded');
             INSERT INTO import_rejects (run_id, file, line, raw_record, reason)
                 VALUES (7, 'old.csv', 2, 'x', 'bad');",
        )
        .unwrap();
    }
    let f = s.file("empty.csv", "");
    let r = support::importer(
        &s,
        &b,
        &[
            "load",
            f.to_str().unwrap(),
            "--tenant",
            "acme",
            "--module",
            "orders",
        ],
    )
    .await;
    assert_eq!(
        r.outcomes[0].status,
        importer::job::Status::Empty,
        "{}",
        r.text
    );
    assert_eq!(
        b.rows("SELECT CAST(id AS TEXT), status FROM import_runs ORDER BY id")
            .await,
        vec![vec!["7", "succeeded"], vec!["8", "empty"]]
    );
    assert_eq!(
        b.value("SELECT reason FROM import_rejects WHERE run_id = 7")
            .await,
        "bad"
    );
    assert_eq!(
        b.value("SELECT CAST(user_version AS TEXT) FROM pragma_user_version")
            .await,
        "2"
    );
}

/// The default database is importer.db in the working directory; a failed file exits 1.
#[test]
fn default_sqlite_file_and_exit_codes() {
    let s = support::Scratch::new();
    let reg = s.registry.to_str().unwrap();
    let good = s.file(
        "orders.csv",
        "order_id,customer_id,order_date,status,total\n1,2,2026-11-27,open,3.50\n",
    );
    let out = bin(
        &[
            "--registry",
            reg,
            "load",
            good.to_str().unwrap(),
            "--tenant",
            "acme",
        ],
        s.dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("loaded 1, duplicate 0, missing 0, empty 0, failed 0, interrupted 0"),
        "{summary}"
    );
    assert!(s.dir.path().join("importer.db").exists());
    let bad = s.file("customers.csv", "nope\n1\n");
    let out = bin(
        &[
            "--registry",
            reg,
            "load",
            bad.to_str().unwrap(),
            "--tenant",
            "acme",
        ],
        s.dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed 1"));
}

/// SIGTERM while another process holds SQLite's write lock: the importer stops waiting at once
/// (not after the 30 s busy timeout) and reports the file interrupted. No run row could be
/// written (SQLite has one writer), and none is left `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_lock_wait_stops_waiting() {
    let s = support::Scratch::new();
    let b = support::sqlite(&s);
    support::migrate(&s, &b).await;
    let support::Backend::Sqlite(path) = &b else {
        unreachable!()
    };
    let holder = rusqlite::Connection::open(path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
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
    let o = &r.outcomes[0];
    assert_eq!(o.status, importer::job::Status::Interrupted, "{}", r.text);
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .ends_with("interrupted while waiting for another process's write lock"),
        "{}",
        r.text
    );
    holder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(
        b.value("SELECT CAST(count(*) AS TEXT) FROM import_runs")
            .await,
        "0"
    );
}
