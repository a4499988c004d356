//! Plumbing shared by every service binary (sidecar, importer, console), so
//! they behave alike in Kubernetes: one way to log, one way to stop.
//!
//! # Layout
//! - [`init_tracing`]: JSON logs on stderr unless it is a terminal, filtered
//!   by `RUST_LOG`.
//! - [`shutdown_signal`]: resolves on SIGTERM or Ctrl-C.

use std::io::IsTerminal;

/// Installs the global subscriber: JSON lines on stderr when stderr is not a
/// terminal (a container), human-readable text when it is. `RUST_LOG`
/// filters; `default_filter` applies when it is unset or invalid.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    }
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C. If a signal
/// handler cannot be installed, that signal is simply never seen.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
