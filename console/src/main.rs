//! `console` binary: parses the command line and environment, sets up tracing (JSON when stderr
//! is not a terminal), and serves [`console::run`] until SIGTERM or Ctrl-C. Exit codes: 0 after
//! a clean shutdown, 1 on a runtime failure, 64 on bad usage or configuration.

use std::io::Read;
use std::time::Duration;

use admin_console::config::{Cli, CliCommand, Config, EX_USAGE};
use clap::Parser;

fn usage_exit(message: &str) -> ! {
    eprintln!("console: {}", message.replace('\n', " "));
    std::process::exit(EX_USAGE)
}

/// How long open pages (server-sent event streams) get to close after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(5);

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("bad usage");
            usage_exit(line.trim_start_matches("error: "))
        }
    };
    if let Some(CliCommand::HashPassword) = cli.command {
        let mut password = String::new();
        if std::io::stdin().read_to_string(&mut password).is_err() {
            usage_exit("hash-password: could not read the password on stdin");
        }
        let password = password.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            usage_exit("hash-password: empty password on stdin");
        }
        match admin_console::auth::hash_password(password) {
            Ok(h) => println!("{h}"),
            Err(e) => usage_exit(&format!("hash-password: {e}")),
        }
        return;
    }
    let config = Config::from_cli(cli).unwrap_or_else(|e| usage_exit(&e.to_string()));
    svc::init_tracing("info");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("console: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serve = admin_console::run(config, async {
            let _ = rx.await;
        });
        tokio::pin!(serve);
        tokio::select! {
            r = &mut serve => return r,
            () = svc::shutdown_signal() => {
                tracing::info!("shutdown requested");
                let _ = tx.send(());
            }
        }
        match tokio::time::timeout(DRAIN, serve).await {
            Ok(r) => r,
            Err(_) => {
                tracing::info!("closing open event streams");
                Ok(())
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = result {
        tracing::error!(cause = %e, "console stopped");
        eprintln!("console: {e}");
        std::process::exit(1);
    }
}
