//! The two databases behind one API: PostgreSQL through sqlx (streaming `COPY`) and the default
//! embedded SQLite through rusqlite (multi-row prepared inserts).
//!
//! Both load a file the same way, inside one transaction:
//! - the tenant's slice of the target table is empty: rows go straight into the target;
//! - otherwise, or when the file repeats a natural key: rows go to a staging table, then one
//!   upsert by `(tenant_id, natural key)` writes only the rows that differ. Within one file the
//!   last occurrence of a key wins.

pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use crate::parse::{Counts, ParseError};
use crate::registry::{Registry, TypeDef};
use crate::source::{Prepared, SourceError};

/// Where the data goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Accepts `postgres://…`, `postgresql://…`, `sqlite://PATH`, `sqlite:PATH`.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_string()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| format!("{url:?} is neither postgres://… nor sqlite://PATH"))?;
        if path.is_empty() {
            return Err("sqlite URL has no path".into());
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    /// The URL without a password, for logs.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite://{}", p.display()),
            Self::Postgres(u) => match (u.find("://"), u.rfind('@')) {
                (Some(s), Some(at)) if at > s => {
                    let creds = &u[s + 3..at];
                    let user = creds.split(':').next().unwrap_or("");
                    format!("{}{user}:***{}", &u[..s + 3], &u[at..])
                }
                _ => u.clone(),
            },
        }
    }
}

/// A database operation that failed outside a file's load.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("postgres {context}: {source}")]
    Postgres {
        context: String,
        source: sqlx::Error,
    },
    #[error("postgres migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("sqlite {context}: {source}")]
    Sqlite {
        context: String,
        source: rusqlite::Error,
    },
    #[error("database is not migrated: run `importer migrate` first")]
    NotMigrated,
}

pub(crate) fn pg(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> DbError {
    let context = context.into();
    move |source| DbError::Postgres { context, source }
}

pub(crate) fn lite(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> DbError {
    let context = context.into();
    move |source| DbError::Sqlite { context, source }
}

/// Why a file's load failed. Nothing of the file was committed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Source(#[from] SourceError),
    /// Refused while parsing (header, CSV, spill, interrupted); a database
    /// error inside the sink is [`ParseError::Sink`].
    #[error("{0}")]
    Parse(#[from] ParseError<DbError>),
    #[error("rejects spill file: {0}")]
    Spill(std::io::Error),
    #[error("{0}")]
    Db(#[from] DbError),
}

/// How a file reached its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPath {
    Direct,
    Staged,
}

impl LoadPath {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Staged => "staged",
        }
    }
}

/// The result of one committed load.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    pub counts: Counts,
    /// Rows inserted or changed in the target.
    pub written: u64,
    pub path: LoadPath,
}

/// Status of an `import_runs` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Succeeded,
    Failed,
    Duplicate,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Duplicate => "duplicate",
        }
    }
}

/// What `import_runs` records when a run starts.
#[derive(Debug, Clone)]
pub struct RunStart {
    pub tenant: String,
    pub module: String,
    pub source: String,
    pub export_date: Option<String>,
    pub content_hash: Option<String>,
}

/// What `import_runs` records when a run ends.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub status: RunStatus,
    pub loaded: Option<Loaded>,
    pub duplicate_of: Option<i64>,
    pub error: Option<String>,
}

/// Called with row counts while a file is parsed; returning `false` stops the load, which then
/// rolls back (a shutdown signal does that).
pub type Progress = Arc<dyn Fn(u64) -> bool + Send + Sync>;

/// A connected database.
#[derive(Clone)]
pub enum Db {
    Postgres(postgres::Pg),
    Sqlite(sqlite::Lite),
}

impl Db {
    /// Connects; PostgreSQL gets a pool of `jobs` connections.
    pub async fn connect(url: &DatabaseUrl, jobs: usize) -> Result<Self, DbError> {
        Ok(match url {
            DatabaseUrl::Postgres(u) => Self::Postgres(postgres::Pg::connect(u, jobs).await?),
            DatabaseUrl::Sqlite(p) => Self::Sqlite(sqlite::Lite::open(p).await?),
        })
    }

    /// Applies the bookkeeping migrations and creates or extends every registry table.
    pub async fn migrate(&self, registry: &Registry) -> Result<(), DbError> {
        match self {
            Self::Postgres(db) => db.migrate(registry).await,
            Self::Sqlite(db) => db.migrate(registry.clone()).await,
        }
    }

    /// Before `run`/`load`: PostgreSQL must have been migrated by `importer migrate`;
    /// the embedded SQLite file migrates itself.
    pub async fn prepare(&self, registry: &Registry) -> Result<(), DbError> {
        match self {
            Self::Postgres(db) => db.check_migrated().await,
            Self::Sqlite(db) => db.migrate(registry.clone()).await,
        }
    }

    /// The id and module of an earlier successful run of the same content for the tenant.
    pub async fn find_duplicate(
        &self,
        tenant: &str,
        hash: &str,
    ) -> Result<Option<(i64, String)>, DbError> {
        match self {
            Self::Postgres(db) => db.find_duplicate(tenant, hash).await,
            Self::Sqlite(db) => db.find_duplicate(tenant.into(), hash.into()).await,
        }
    }

    pub async fn start_run(&self, start: &RunStart) -> Result<i64, DbError> {
        match self {
            Self::Postgres(db) => db.start_run(start).await,
            Self::Sqlite(db) => db.start_run(start.clone()).await,
        }
    }

    pub async fn finish_run(&self, id: i64, end: &RunEnd) -> Result<(), DbError> {
        match self {
            Self::Postgres(db) => db.finish_run(id, end).await,
            Self::Sqlite(db) => db.finish_run(id, end.clone()).await,
        }
    }

    /// Loads one prepared file for a tenant, in one transaction.
    pub async fn load(
        &self,
        run_id: i64,
        def: Arc<TypeDef>,
        tenant: &str,
        file: &str,
        source: Arc<Prepared>,
        progress: Progress,
    ) -> Result<Loaded, LoadError> {
        match self {
            Self::Postgres(db) => db.load(run_id, def, tenant, file, source, progress).await,
            Self::Sqlite(db) => {
                db.load(run_id, def, tenant.into(), file.into(), source, progress)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// URLs parse by scheme, and the redacted form hides the password.
    #[test]
    fn urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://importer.db").unwrap(),
            DatabaseUrl::Sqlite("importer.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:/tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite("/tmp/x.db".into())
        );
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        let pg = DatabaseUrl::parse("postgres://me:s3cret@db:5432/app").unwrap();
        assert_eq!(pg.redacted(), "postgres://me:***@db:5432/app");
        assert!(!pg.redacted().contains("s3cret"));
    }
}
