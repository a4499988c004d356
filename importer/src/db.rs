//! The two databases behind one API: PostgreSQL through sqlx (streaming `COPY`) and the default
//! embedded SQLite through rusqlite (multi-row prepared inserts).
//!
//! The load algorithm is written once, in [`load`], over the [`load::LoadTx`] trait; each
//! database supplies only its parts (bulk write, staging, upsert, rejects):
//! - the tenant's slice of the target table is empty: rows go straight into the target;
//! - otherwise, or when the file repeats a natural key: rows go to a staging table, then one
//!   upsert by `(tenant_id, natural key…)` writes only the rows that differ. Within one file the
//!   last occurrence of a key wins, on both databases.
//!
//! Bookkeeping (`import_runs`) lives here too: run start and end, live progress and the
//! heartbeat that doubles as the run's lease, and the sweep that marks runs of dead owners
//! `abandoned`.

pub mod load;
pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::parse::{Counts, ParseError};
use crate::record::RecordError;
use crate::registry::Registry;
use crate::source::SourceError;

pub use load::ParseJob;

/// Where the data goes. `Debug` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `url` with any password replaced by `***`, for every message that shows a URL.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        // No scheme separator: anything before an '@' may be a secret.
        (None, Some(at)) => format!("***{}", &url[at..]),
        _ => url.to_string(),
    }
}

impl DatabaseUrl {
    /// Accepts `postgres://…`, `postgresql://…`, `sqlite://PATH`, `sqlite:PATH`. A PostgreSQL
    /// URL must ask for TLS (`sslmode=require`, `verify-ca` or `verify-full`) or say
    /// `sslmode=disable` to allow plaintext explicitly; `prefer`/`allow` (and no `sslmode`,
    /// which means `prefer`) could silently fall back to plaintext and are refused.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options: sqlx::postgres::PgConnectOptions =
                url.parse().map_err(|e| format!("{}: {e}", redact(url)))?;
            use sqlx::postgres::PgSslMode::*;
            let socket = options.get_socket().is_some() || options.get_host().starts_with('/');
            let explicit_disable = url.contains("sslmode=disable");
            match options.get_ssl_mode() {
                Require | VerifyCa | VerifyFull => {}
                Disable if explicit_disable || socket => {}
                mode => {
                    return Err(format!(
                        "{}: sslmode {mode:?} may connect in plaintext; use sslmode=verify-full \
                         (with sslrootcert=CA file), or sslmode=disable to allow plaintext explicitly",
                        redact(url)
                    ))
                }
            }
            return Ok(Self::Postgres(url.to_string()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                format!(
                    "{:?} is neither postgres://… nor sqlite://PATH",
                    redact(url)
                )
            })?;
        if path.is_empty() {
            return Err("sqlite URL has no path".into());
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    /// The URL without a password, for logs.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite://{}", p.display()),
            Self::Postgres(u) => redact(u),
        }
    }
}

/// A database operation that failed.
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
    #[error("sqlite: interrupted while waiting for another process's write lock")]
    LockWaitInterrupted,
}

pub(crate) fn pg(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> DbError {
    let context = context.into();
    move |source| DbError::Postgres { context, source }
}

pub(crate) fn lite(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> DbError {
    let context = context.into();
    move |source| DbError::Sqlite { context, source }
}

/// Why a file's load failed. Nothing of the file was committed. Each message names the layer.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Source(#[from] SourceError),
    /// An unterminated quote (CSV), or the layer under the CSV (a zip entry, the file).
    #[error("{0}")]
    Csv(#[from] RecordError),
    #[error("CSV header, column {column}: {problem}")]
    Header { column: usize, problem: String },
    #[error("rejects spill file: {0}")]
    Spill(std::io::Error),
    #[error("interrupted")]
    Interrupted,
    #[error("interrupted while waiting for the table lock")]
    InterruptedWaiting,
    #[error("{0}")]
    Db(#[from] DbError),
    /// The PostgreSQL side of a COPY went away without an error of its own.
    #[error("postgres COPY into {0}: the stream closed before the file was sent")]
    CopyClosed(String),
}

impl LoadError {
    /// A parse failure, with the sink's own error turned into a load error by `sink`.
    pub fn from_parse<E>(e: ParseError<E>, sink: impl FnOnce(E) -> LoadError) -> Self {
        match e {
            ParseError::Header { column, problem } => Self::Header { column, problem },
            ParseError::Csv(e) => Self::Csv(e),
            ParseError::Spill(e) => Self::Spill(e),
            ParseError::Cancelled => Self::Interrupted,
            ParseError::Sink(e) => sink(e),
        }
    }

    /// The load stopped because of a shutdown signal.
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            Self::Interrupted | Self::InterruptedWaiting | Self::Db(DbError::LockWaitInterrupted)
        )
    }
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

/// Status of an `import_runs` row. See `/work/notes/importer-schema.md` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Duplicate,
    /// The export held no data rows (a warning, unless `--on-empty fail`).
    Empty,
    /// Stopped by a shutdown signal; rolled back.
    Interrupted,
    /// Found running by a later start whose owner process was gone.
    Abandoned,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Duplicate => "duplicate",
            Self::Empty => "empty",
            Self::Interrupted => "interrupted",
            Self::Abandoned => "abandoned",
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

/// Live row counts of one load, written by the parser and read by the progress recorder.
#[derive(Debug, Default)]
pub struct LiveCounts {
    pub read: AtomicU64,
    pub loaded: AtomicU64,
}

impl LiveCounts {
    pub fn get(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.loaded.load(Ordering::Relaxed),
        )
    }
}

/// This process as the owner of its runs: `host/pid/start`, where `start` is the process start
/// time in clock ticks since boot, so a reused pid is not mistaken for the owner.
pub fn owner() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        let pid = std::process::id();
        format!("{}/{pid}/{}", hostname(), start_ticks(pid).unwrap_or(0))
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Field 22 of `/proc/PID/stat`: the process start time in clock ticks after boot.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// How long a run on another host may go without a heartbeat before it is abandoned.
pub const LEASE_SECS: f64 = 60.0;

/// Why a running run's owner is considered gone, or `None` while it may be alive.
/// `heartbeat_age` is seconds since the last heartbeat; `None` means the database doesn't
/// keep heartbeats during loads (SQLite), so only the same-host process check applies.
pub fn owner_gone(owner: Option<&str>, heartbeat_age: Option<f64>) -> Option<String> {
    let Some(owner) = owner else {
        return Some("running without an owner (recorded before heartbeats existed)".into());
    };
    let mut parts = owner.rsplitn(3, '/');
    let (start, pid, host) = (parts.next(), parts.next(), parts.next());
    if let (Some(host), Some(pid), Some(start)) = (host, pid.and_then(|p| p.parse().ok()), start) {
        if host == hostname() {
            return match start_ticks(pid) {
                None => Some(format!("owner {owner}: process {pid} is not running")),
                Some(t) if t.to_string() != start => Some(format!(
                    "owner {owner}: process {pid} is not running (pid reused)"
                )),
                Some(_) => None,
            };
        }
    }
    match heartbeat_age {
        Some(age) if age > LEASE_SECS => Some(format!(
            "owner {owner}: no heartbeat for {age:.0} s (lease {LEASE_SECS:.0} s)"
        )),
        _ => None,
    }
}

/// A connected database.
#[derive(Clone)]
pub enum Db {
    Postgres(postgres::Pg),
    Sqlite(sqlite::Lite),
}

impl Db {
    /// Connects; PostgreSQL gets a pool of `jobs` load connections plus two for bookkeeping.
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
    /// the embedded SQLite file migrates itself. Then runs left `running` by owners that are
    /// gone are marked `abandoned`.
    pub async fn prepare(&self, registry: &Registry) -> Result<Vec<i64>, DbError> {
        match self {
            Self::Postgres(db) => {
                db.check_migrated().await?;
                db.sweep_abandoned().await
            }
            Self::Sqlite(db) => {
                db.migrate(registry.clone()).await?;
                db.sweep_abandoned().await
            }
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

    /// Records a run's end; a run ends once (a run already final, e.g. marked `abandoned` by
    /// another process, keeps its first ending).
    pub async fn finish_run(&self, id: i64, end: &RunEnd) -> Result<(), DbError> {
        match self {
            Self::Postgres(db) => db.finish_run(id, end).await,
            Self::Sqlite(db) => db.finish_run(id, end.clone()).await,
        }
    }

    /// Records live counts and the heartbeat of a running run (PostgreSQL: outside the load's
    /// transaction, with a NOTIFY). SQLite has one writer, busy with the load: nothing to do.
    pub async fn progress(&self, id: i64, read: u64, loaded: u64) -> Result<(), DbError> {
        match self {
            Self::Postgres(db) => db.progress(id, read, loaded).await,
            Self::Sqlite(_) => Ok(()),
        }
    }

    /// Once `cancel` is set, waits for another process's lock give up (SQLite).
    pub fn watch_cancel(&self, cancel: Arc<std::sync::atomic::AtomicBool>) {
        if let Self::Sqlite(db) = self {
            db.watch_cancel(cancel);
        }
    }

    /// Whether live progress is recorded during loads.
    pub fn live_progress(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Loads one prepared file for a tenant, in one transaction.
    pub async fn load(&self, run_id: i64, file: &str, job: &ParseJob) -> Result<Loaded, LoadError> {
        match self {
            Self::Postgres(db) => load::load(db.begin_load(job).await?, run_id, file, job).await,
            Self::Sqlite(db) => load::load(db.begin_load(job).await?, run_id, file, job).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// URLs parse by scheme, plaintext PostgreSQL needs an explicit sslmode=disable, and no
    /// message or Debug output shows the password.
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
        let pg =
            DatabaseUrl::parse("postgres://me:s3cret@db:5432/app?sslmode=verify-full").unwrap();
        assert_eq!(
            pg.redacted(),
            "postgres://me:***@db:5432/app?sslmode=verify-full"
        );
        assert!(!format!("{pg:?}").contains("s3cret"));
        DatabaseUrl::parse("postgres://me:s3cret@db/app?sslmode=disable").unwrap();
        for bad in [
            "postgres://me:s3cret@db/app",
            "postgres://me:s3cret@db/app?sslmode=prefer",
            "postgres://me:s3cret@db/app?sslmode=allow",
            "postgress://me:s3cret@db/app",
            "me:s3cret@db/app",
        ] {
            let err = DatabaseUrl::parse(bad).unwrap_err();
            assert!(!err.contains("s3cret"), "{err}");
        }
        assert!(DatabaseUrl::parse("postgres://db/app")
            .unwrap_err()
            .contains("sslmode=verify-full"));
    }

    /// A run whose owner process is gone is abandoned; a live one on this host is not; other
    /// hosts go by the heartbeat lease.
    #[test]
    fn owners() {
        assert_eq!(owner_gone(Some(owner()), Some(1e9)), None);
        let dead = format!("{}/999999999/1", hostname());
        assert!(owner_gone(Some(&dead), None)
            .unwrap()
            .contains("not running"));
        assert_eq!(owner_gone(Some("elsewhere/1/1"), Some(5.0)), None);
        assert_eq!(owner_gone(Some("elsewhere/1/1"), None), None);
        assert!(owner_gone(Some("elsewhere/1/1"), Some(61.0))
            .unwrap()
            .contains("no heartbeat for 61 s"));
    }
}
