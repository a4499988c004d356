//! `sidecar --config FILE`: thin binary over the `sidecar` library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Exit code for bad usage or configuration (BSD `EX_USAGE`).
const EX_USAGE: u8 = 64;

/// OAuth2 token sidecar for the Envoy auth proxy.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (YAML). `AUTHPROXY__<KEY>__<KEY>` variables override keys.
    #[arg(long, env = "AUTHPROXY_CONFIG")]
    config: PathBuf,
    /// Validate the configuration (and read every secret and key), then exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let first = e.to_string();
            let line = first.lines().next().unwrap_or("bad arguments");
            eprintln!("sidecar: {line}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let config = match sidecar::Config::load(&args.config, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sidecar: {}", e.to_string().replace('\n', " "));
            return ExitCode::from(EX_USAGE);
        }
    };
    if args.check_config {
        println!(
            "sidecar: configuration OK ({} tenants)",
            config.tenants.len()
        );
        return ExitCode::SUCCESS;
    }
    svc::init_tracing("info");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sidecar: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sidecar::run(config, svc::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(cause = %e, "sidecar stopped");
            ExitCode::FAILURE
        }
    }
}
