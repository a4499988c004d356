//! The importer against the embedded SQLite default, plus the binary's exit codes.

#[path = "common/support.rs"]
mod support;

#[path = "common/scenarios.rs"]
#[macro_use]
mod scenarios;

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
