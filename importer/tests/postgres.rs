//! The importer against a real PostgreSQL named by `TEST_POSTGRES_URL`. Without it these tests
//! fail, on purpose: they never skip.

#[path = "common/support.rs"]
mod support;

#[path = "common/scenarios.rs"]
#[macro_use]
mod scenarios;

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
