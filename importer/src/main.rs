//! `importer` binary: parses the command line, sets up tracing, runs [`importer::run`], prints
//! the summary. Exit codes: 0 done, 1 some file or the database failed, 64 bad usage or config.

use clap::Parser;
use importer::config::{Cli, Config, EX_USAGE};
use tracing_subscriber::EnvFilter;

fn usage_exit(message: &str) -> ! {
    eprintln!("importer: {message}");
    std::process::exit(EX_USAGE)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// JSON logs unless stderr is a terminal (as the sidecar); `RUST_LOG` filters (default info).
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("bad usage");
            usage_exit(line.trim_start_matches("error: "))
        }
    };
    let config = Config::from_cli(cli).unwrap_or_else(|e| usage_exit(&e.to_string()));
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(importer::run(config, shutdown_signal()));
    // On a signal, loads in flight were dropped (their transactions roll back); give blocking
    // parser threads a bounded time to notice instead of waiting for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    match result {
        Ok(report) => {
            print!("{}", report.text);
            if report.interrupted {
                eprintln!("importer: interrupted");
                std::process::exit(1);
            }
            if report.failed() > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(cause = %e, "importer failed");
            eprintln!("importer: {e}");
            std::process::exit(1)
        }
    }
}
