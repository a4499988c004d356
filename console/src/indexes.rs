//! PostgreSQL trigram indexes for the data browser's *contains* filter (`CONSOLE_TRIGRAM_INDEXES`).
//!
//! `col ILIKE '%text%'` can't use a btree; without help it reads the whole table (about 0.4 s
//! at 1M rows when nothing matches). `pg_trgm`'s GIN index finds the rows holding the pattern's
//! trigrams instead, so the planner reads only those (a bitmap scan, combined with the tenant's
//! index when that is cheaper). The console creates them at start, in the background:
//! - one session at a time (`pg_try_advisory_lock`: a second console replica leaves it to the
//!   first), without the console's 15 s statement timeout;
//! - `CREATE EXTENSION IF NOT EXISTS pg_trgm` (a trusted extension since PostgreSQL 13: the
//!   database owner, or a role with CREATE on the database, may create it); when that fails, one
//!   warning and no trigram indexes: the filter still works, by scanning;
//! - `CREATE INDEX CONCURRENTLY IF NOT EXISTS`, so the importer keeps loading meanwhile (it only
//!   waits for transactions already running). A build cut short (the console stopped, the
//!   server restarted) leaves an invalid index; the next start drops and rebuilds it.

use std::time::Instant;

use importer::registry::{ColumnType, Registry};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::store::{ident, index_name};

/// Advisory lock key held while building (any constant, the same in every console).
pub const LOCK_KEY: i64 = 0x636f_6e73_6f6c_6501;

/// One GIN trigram index on a registry text column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrigramIndex {
    pub name: String,
    pub table: String,
    pub column: String,
}

impl TrigramIndex {
    /// `CREATE INDEX CONCURRENTLY IF NOT EXISTS … USING gin (col <schema>.gin_trgm_ops)`.
    pub fn create_sql(&self, trgm_schema: &str) -> String {
        format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING gin ({} {trgm_schema}.gin_trgm_ops)",
            ident(&self.name),
            ident(&self.table),
            ident(&self.column)
        )
    }
}

/// A trigram index for every `text` column of every registry type (the columns the browser
/// offers *contains* on).
pub fn trigram_indexes(registry: &Registry) -> Vec<TrigramIndex> {
    registry
        .types()
        .flat_map(|t| {
            t.columns
                .iter()
                .filter(|c| c.ty == ColumnType::Text)
                .map(move |c| TrigramIndex {
                    name: index_name("console_trgm", t.table.as_str(), c.name.as_str()),
                    table: t.table.as_str().to_string(),
                    column: c.name.as_str().to_string(),
                })
        })
        .collect()
}

/// Why no trigram index was built.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("connect: {0}")]
    Connect(sqlx::Error),
    #[error("create extension pg_trgm: {0}")]
    Extension(sqlx::Error),
    #[error("{0}")]
    Query(#[from] sqlx::Error),
}

/// What [`ensure_trigram`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Another session held the lock: it builds them.
    pub busy: bool,
    /// Already there and valid.
    pub present: Vec<String>,
    /// Built now (an invalid leftover is dropped first).
    pub built: Vec<String>,
    /// Index name and the database's error.
    pub failed: Vec<(String, String)>,
}

/// Creates the extension and every missing index, one at a time, on its own connection from
/// `pool` (closed at the end, which also releases the lock on every path).
pub async fn ensure_trigram(pool: &PgPool, defs: &[TrigramIndex]) -> Result<Report, IndexError> {
    let mut conn = pool.acquire().await.map_err(IndexError::Connect)?.detach();
    let report = build(&mut conn, defs).await;
    let _ = conn.close().await;
    report
}

async fn build(conn: &mut PgConnection, defs: &[TrigramIndex]) -> Result<Report, IndexError> {
    let mut report = Report::default();
    // A 1M-row build takes seconds to minutes; a cancelled one only leaves an invalid index.
    conn.execute("SET statement_timeout = 0").await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        report.busy = true;
        return Ok(report);
    }
    // IF NOT EXISTS checks for the extension before the privilege: a role that can't create
    // it still uses one an operator created.
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        .await
        .map_err(IndexError::Extension)?;
    // The operator class lives in the extension's schema, which may not be on the search path.
    let schema: String = sqlx::query_scalar(
        "SELECT quote_ident(n.nspname) FROM pg_extension e \
         JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'",
    )
    .fetch_one(&mut *conn)
    .await?;
    for def in defs {
        match build_one(conn, def, &schema).await {
            Ok(true) => report.built.push(def.name.clone()),
            Ok(false) => report.present.push(def.name.clone()),
            Err(e) => report.failed.push((def.name.clone(), e.to_string())),
        }
    }
    Ok(report)
}

/// Builds one index unless a valid one exists; `true` when built.
async fn build_one(
    conn: &mut PgConnection,
    def: &TrigramIndex,
    schema: &str,
) -> Result<bool, sqlx::Error> {
    let valid: Option<bool> = sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace",
    )
    .bind(&def.name)
    .fetch_optional(&mut *conn)
    .await?;
    match valid {
        Some(true) => return Ok(false),
        Some(false) => {
            tracing::info!(index = %def.name, "dropping an invalid trigram index left by a cut-short build");
            let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {}", ident(&def.name));
            conn.execute(drop.as_str()).await?;
        }
        None => {}
    }
    let started = Instant::now();
    let create = def.create_sql(schema);
    conn.execute(create.as_str()).await?;
    tracing::info!(
        index = %def.name,
        table = %def.table,
        column = %def.column,
        ms = started.elapsed().as_millis() as u64,
        "trigram index ready"
    );
    Ok(true)
}

/// Runs [`ensure_trigram`] in the background and logs the outcome; the console serves
/// meanwhile (a *contains* filter scans until its index is ready).
pub fn spawn(pool: PgPool, defs: Vec<TrigramIndex>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if defs.is_empty() {
            return;
        }
        let started = Instant::now();
        match ensure_trigram(&pool, &defs).await {
            Ok(r) if r.busy => tracing::info!(
                "another console session is creating the trigram indexes; leaving them to it"
            ),
            Ok(r) => {
                for (index, cause) in &r.failed {
                    tracing::warn!(%index, %cause, "could not create a trigram index; contains filters on its column read the whole table");
                }
                tracing::info!(
                    built = r.built.len(),
                    present = r.present.len(),
                    failed = r.failed.len(),
                    secs = started.elapsed().as_secs_f64(),
                    "trigram indexes checked"
                );
            }
            Err(IndexError::Extension(e)) => tracing::warn!(
                cause = %e,
                "could not create extension pg_trgm (needs PostgreSQL 13+ and CREATE on the database, \
                 or an owner runs `CREATE EXTENSION pg_trgm`; CONSOLE_TRIGRAM_INDEXES=false stops trying); \
                 contains filters read the whole table"
            ),
            Err(e) => {
                tracing::warn!(cause = %e, "could not create the trigram indexes; contains filters read the whole table")
            }
        }
    })
}

#[cfg(test)]
mod tests;
