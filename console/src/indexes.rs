//! The console's PostgreSQL indexes, created in the background at start so the console is
//! ready at once and the importer keeps loading:
//! - [`base_indexes`]: runs by key and status, rejects in file order (`CONSOLE_ENSURE_INDEXES`);
//! - [`column_indexes`]: one per registry column, for sorts and ranges (`CONSOLE_COLUMN_INDEXES`);
//! - [`trigram_indexes`]: one GIN `pg_trgm` index per registry text column, for the data
//!   browser's *contains* filter (`CONSOLE_TRIGRAM_INDEXES`). `col ILIKE '%text%'` can't use a
//!   btree; without help it reads the whole table (about 0.4 s at 1M rows when nothing
//!   matches). The trigram index finds the rows holding the pattern's trigrams instead (a bitmap
//!   scan, combined with the tenant's index when that is cheaper).
//!
//! How, for all of them:
//! - one session at a time (`pg_try_advisory_lock`: a second console replica leaves it to the
//!   first), without the console's 15 s statement timeout (a build on a big table takes longer);
//! - `CREATE EXTENSION IF NOT EXISTS pg_trgm` (a trusted extension since PostgreSQL 13: the
//!   database owner, or a role with CREATE on the database, may create it) when a trigram index
//!   is asked for; when that fails, one warning and no trigram indexes (the filter still works,
//!   by scanning), the others still built;
//! - `CREATE INDEX CONCURRENTLY IF NOT EXISTS`, so the importer keeps writing meanwhile (it only
//!   waits for transactions already running). A build cut short (the console stopped, the
//!   server restarted) leaves an invalid index; the next start drops and rebuilds it.

use std::time::Instant;

use importer::registry::{ColumnType, Registry};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::store::ident;

/// `{prefix}_{table}_{column}`, or `console_{hash}` when that is longer than PostgreSQL's 63
/// bytes for a name.
pub fn index_name(prefix: &str, table: &str, column: &str) -> String {
    let name = format!("{prefix}_{table}_{column}");
    if name.len() <= 63 {
        return name;
    }
    let h = blake3::hash(name.as_bytes()).to_hex();
    format!("console_{}", &h[..24])
}

/// Advisory lock key held while building (any constant, the same in every console).
pub const LOCK_KEY: i64 = 0x636f_6e73_6f6c_6501;

/// How an index is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A B-tree on these columns, in order.
    Btree(Vec<String>),
    /// A GIN trigram index on [`Index::column`] (needs `pg_trgm`).
    Trigram,
}

/// One index the console creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub name: String,
    pub table: String,
    /// The (first) column.
    pub column: String,
    pub kind: Kind,
}

impl Index {
    fn btree(name: String, table: &str, columns: &[&str]) -> Index {
        Index {
            name,
            table: table.to_string(),
            column: columns.first().map(|c| c.to_string()).unwrap_or_default(),
            kind: Kind::Btree(columns.iter().map(|c| c.to_string()).collect()),
        }
    }

    /// `CREATE INDEX CONCURRENTLY IF NOT EXISTS …`; a trigram index names the operator class
    /// in `trgm_schema`, the extension's schema.
    pub fn create_sql(&self, trgm_schema: &str) -> String {
        let on = match &self.kind {
            Kind::Btree(columns) => {
                let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
                format!("({})", cols.join(", "))
            }
            Kind::Trigram => format!(
                "USING gin ({} {trgm_schema}.gin_trgm_ops)",
                ident(&self.column)
            ),
        };
        format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} {on}",
            ident(&self.name),
            ident(&self.table),
        )
    }
}

/// Indexes the console's pages rely on, beyond the importer's own (whose migration 0002
/// already indexes `import_runs (started_at, id)` for the charts): runs by key and by status,
/// and rejects in file order (the planner otherwise walks the primary key and filters).
pub fn base_indexes() -> Vec<Index> {
    vec![
        Index::btree(
            "console_import_runs_key".into(),
            "import_runs",
            &["tenant", "module", "export_date", "id"],
        ),
        Index::btree(
            "console_import_runs_status".into(),
            "import_runs",
            &["status", "id"],
        ),
        Index::btree(
            "console_import_rejects_run_line".into(),
            "import_rejects",
            &["run_id", "line", "id"],
        ),
    ]
}

/// `(column, tenant_id, natural key…)` for every column of every registry type
/// (`CONSOLE_COLUMN_INDEXES`): the data browser's sort order for that column, so sorting,
/// ranges and equality on it read only the page's rows.
pub fn column_indexes(registry: &Registry) -> Vec<Index> {
    let mut out = Vec::new();
    for t in registry.types() {
        let rest: Vec<&str> = std::iter::once(importer::registry::TENANT_COLUMN)
            .chain(t.key_names())
            .collect();
        for c in &t.columns {
            let mut cols = vec![c.name.as_str()];
            cols.extend(rest.iter().filter(|r| **r != c.name.as_str()));
            out.push(Index::btree(
                index_name("console", t.table.as_str(), c.name.as_str()),
                t.table.as_str(),
                &cols,
            ));
        }
    }
    out
}

/// A trigram index for every `text` column of every registry type (the columns the browser
/// offers *contains* on).
pub fn trigram_indexes(registry: &Registry) -> Vec<Index> {
    registry
        .types()
        .flat_map(|t| {
            t.columns
                .iter()
                .filter(|c| c.ty == ColumnType::Text)
                .map(move |c| Index {
                    name: index_name("console_trgm", t.table.as_str(), c.name.as_str()),
                    table: t.table.as_str().to_string(),
                    column: c.name.as_str().to_string(),
                    kind: Kind::Trigram,
                })
        })
        .collect()
}

/// Why no index was built.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("connect: {0}")]
    Connect(sqlx::Error),
    #[error("{0}")]
    Query(#[from] sqlx::Error),
}

/// What [`ensure`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `CREATE EXTENSION pg_trgm` failed (the database's error): the trigram indexes were
    /// skipped, the others built.
    pub extension: Option<String>,
    /// Another session held the lock: it builds them.
    pub busy: bool,
    /// Already there and valid.
    pub present: Vec<String>,
    /// Built now (an invalid leftover is dropped first).
    pub built: Vec<String>,
    /// Index name and the database's error.
    pub failed: Vec<(String, String)>,
}

/// Creates every missing index in `defs`, one at a time, on its own connection from `pool`
/// (closed at the end, which also releases the lock on every path); `pg_trgm` first when a
/// trigram index is among them.
pub async fn ensure(pool: &PgPool, defs: &[Index]) -> Result<Report, IndexError> {
    let mut conn = pool.acquire().await.map_err(IndexError::Connect)?.detach();
    let report = build(&mut conn, defs).await;
    let _ = conn.close().await;
    report
}

async fn build(conn: &mut PgConnection, defs: &[Index]) -> Result<Report, IndexError> {
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
    let schema = if defs.iter().any(|d| d.kind == Kind::Trigram) {
        match trgm_schema(conn).await {
            Ok(schema) => Some(schema),
            Err(e) => {
                report.extension = Some(e.to_string());
                None
            }
        }
    } else {
        None
    };
    for def in defs {
        let schema = match (&def.kind, &schema) {
            (Kind::Trigram, None) => continue,
            (_, Some(s)) => s.as_str(),
            (Kind::Btree(_), None) => "",
        };
        match build_one(conn, def, schema).await {
            Ok(true) => report.built.push(def.name.clone()),
            Ok(false) => report.present.push(def.name.clone()),
            Err(e) => report.failed.push((def.name.clone(), e.to_string())),
        }
    }
    Ok(report)
}

/// Creates `pg_trgm` if it is missing; the schema it lives in.
async fn trgm_schema(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    // IF NOT EXISTS checks for the extension before the privilege: a role that can't create
    // it still uses one an operator created.
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        .await?;
    // The operator class lives in the extension's schema, which may not be on the search path.
    sqlx::query_scalar(
        "SELECT quote_ident(n.nspname) FROM pg_extension e \
         JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'",
    )
    .fetch_one(&mut *conn)
    .await
}

/// Builds one index unless a valid one exists; `true` when built.
async fn build_one(
    conn: &mut PgConnection,
    def: &Index,
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
            tracing::info!(index = %def.name, "dropping an invalid index left by a cut-short build");
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
        "index ready"
    );
    Ok(true)
}

/// Runs [`ensure_trigram`] in the background and logs the outcome; the console serves
/// meanwhile (a *contains* filter scans until its index is ready).
pub fn spawn(pool: PgPool, defs: Vec<Index>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if defs.is_empty() {
            return;
        }
        let started = Instant::now();
        match ensure(&pool, &defs).await {
            Ok(r) if r.busy => tracing::info!(
                "another console session is creating the console's indexes; leaving them to it"
            ),
            Ok(r) => {
                if let Some(cause) = &r.extension {
                    tracing::warn!(
                        %cause,
                        "could not create extension pg_trgm (needs PostgreSQL 13+ and CREATE on the database, \
                         or an owner runs `CREATE EXTENSION pg_trgm`; CONSOLE_TRIGRAM_INDEXES=false stops trying); \
                         contains filters read the whole table"
                    );
                }
                for (index, cause) in &r.failed {
                    tracing::warn!(%index, %cause, "could not create an index; the pages that use it read more rows");
                }
                tracing::info!(
                    built = r.built.len(),
                    present = r.present.len(),
                    failed = r.failed.len(),
                    secs = started.elapsed().as_secs_f64(),
                    "console indexes checked"
                );
            }
            Err(e) => {
                tracing::warn!(cause = %e, "could not create the console's indexes; pages read more rows")
            }
        }
    })
}

#[cfg(test)]
mod tests;
