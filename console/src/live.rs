//! Live progress: which runs changed, as a broadcast of run ids.
//!
//! On PostgreSQL one task `LISTEN`s on the `import_runs` channel (the importer sends
//! `NOTIFY import_runs, '<run id>'` on each throttled progress update and when a run ends) and
//! fans the ids out to every open page. SQLite has no notifications: pages poll instead (see
//! [`Hub::poll_every`]). Either way a page also re-reads on a slow timer, so a missed
//! notification (or an importer that doesn't send them yet) only delays an update.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::store::Store;

/// The notification channel the importer uses.
pub const CHANNEL: &str = "import_runs";

/// Fan-out of changed run ids.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<i64>,
    notifies: bool,
}

impl Hub {
    /// Starts listening (PostgreSQL) or makes a hub that never fires (SQLite).
    pub fn start(store: &Store) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let notifies = store.pg_pool().is_some();
        if let Some(pool) = store.pg_pool().cloned() {
            let tx = tx.clone();
            tokio::spawn(async move { listen(pool, tx).await });
        }
        Self { tx, notifies }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<i64> {
        self.tx.subscribe()
    }

    /// How often an open page re-reads without a notification.
    pub fn poll_every(&self) -> Duration {
        if self.notifies {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(1)
        }
    }
}

async fn listen(pool: sqlx::PgPool, tx: broadcast::Sender<i64>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(cause = %e, "LISTEN connection failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(cause = %e, "LISTEN {CHANNEL} failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            continue;
        }
        tracing::info!(channel = CHANNEL, "listening for import progress");
        backoff = Duration::from_millis(500);
        loop {
            match listener.recv().await {
                Ok(n) => {
                    // Any payload wakes pages; a run id lets them ignore other runs.
                    let id = n.payload().trim().parse().unwrap_or(-1);
                    let _ = tx.send(id);
                }
                Err(e) => {
                    tracing::warn!(cause = %e, "LISTEN connection lost; reconnecting");
                    let _ = tx.send(-1);
                    break;
                }
            }
        }
    }
}
