//! Reading the importer's database: one small query API over PostgreSQL (sqlx) and the SQLite
//! default file (rusqlite, read-only, off the async threads).
//!
//! SQL text comes only from this crate and from registry identifiers; every value from a
//! request is a bound parameter ([`Sql::bind`]). Every query returns its columns as text
//! (`Option<String>`), which is what pages and CSV files show anyway.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use importer::db::DatabaseUrl;
use rusqlite::types::ValueRef;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;

/// A query that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("sqlite {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("sqlite worker: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the importer's tables are missing: run `importer migrate`")]
    NotMigrated,
}

/// Which SQL dialect a query is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Int(i64),
    Float(f64),
}

/// SQL text plus its parameters, built by appending.
#[derive(Debug, Clone)]
pub struct Sql {
    pub dialect: Dialect,
    pub text: String,
    pub params: Vec<Param>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            text: String::new(),
            params: Vec::new(),
        }
    }

    /// Appends trusted SQL text (never request input).
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends a placeholder for `value`; on PostgreSQL cast to `pg_cast` when given.
    pub fn bind(&mut self, value: Param, pg_cast: Option<&str>) -> &mut Self {
        self.params.push(value);
        let n = self.params.len();
        match (self.dialect, pg_cast) {
            (Dialect::Postgres, Some(cast)) => self.text.push_str(&format!("${n}::{cast}")),
            (Dialect::Postgres, None) => self.text.push_str(&format!("${n}")),
            (Dialect::Sqlite, _) => self.text.push_str(&format!("?{n}")),
        }
        self
    }
}

/// A double-quoted identifier. Identifiers come from the registry or this crate only; quoting
/// is a second fence.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One result row, every column as text.
pub type TextRow = Vec<Option<String>>;

/// What the console learned about the importer's schema.
#[derive(Debug, Clone, Copy, Default)]
pub struct Schema {
    /// `import_runs.heartbeat_at` exists (importer with live progress).
    pub heartbeat: bool,
}

/// The importer's database.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    schema: Arc<RwLock<Option<Schema>>>,
}

#[derive(Clone)]
enum Backend {
    Postgres(PgPool),
    Sqlite(Arc<Lite>),
}

struct Lite {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl Lite {
    fn open(&self) -> Result<rusqlite::Connection, rusqlite::Error> {
        if let Some(c) = self.idle.lock().map_or(None, |mut v| v.pop()) {
            return Ok(c);
        }
        let c = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(Duration::from_secs(5))?;
        Ok(c)
    }

    fn put(&self, c: rusqlite::Connection) {
        if let Ok(mut v) = self.idle.lock() {
            if v.len() < 4 {
                v.push(c);
            }
        }
    }
}

fn lite_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

fn text_of(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

fn lite_rows(
    conn: &rusqlite::Connection,
    sql: &Sql,
    mut each: impl FnMut(TextRow) -> bool,
) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare_cached(&sql.text)?;
    for (i, p) in sql.params.iter().enumerate() {
        match p {
            Param::Text(s) => stmt.raw_bind_parameter(i + 1, s)?,
            Param::Int(n) => stmt.raw_bind_parameter(i + 1, n)?,
            Param::Float(f) => stmt.raw_bind_parameter(i + 1, f)?,
        }
    }
    let cols = stmt.column_count();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        let mut out = Vec::with_capacity(cols);
        for c in 0..cols {
            out.push(text_of(row.get_ref(c)?));
        }
        if !each(out) {
            break;
        }
    }
    Ok(())
}

fn pg_query(sql: &Sql) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut q = sqlx::query(&sql.text);
    for p in &sql.params {
        q = match p {
            Param::Text(s) => q.bind(s.as_str()),
            Param::Int(n) => q.bind(*n),
            Param::Float(f) => q.bind(*f),
        };
    }
    q
}

fn pg_row(row: &sqlx::postgres::PgRow) -> Result<TextRow, sqlx::Error> {
    (0..row.len())
        .map(|i| row.try_get::<Option<String>, _>(i))
        .collect()
}

impl Store {
    /// Connects (PostgreSQL: a pool of up to 4 connections, UTC, 15 s statement timeout, custom
    /// plans) or
    /// remembers the SQLite file (opened read-only per query).
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let backend = match url {
            DatabaseUrl::Postgres(u) => {
                let opts: PgConnectOptions = u.parse()?;
                let opts = opts
                    .application_name("console")
                    // Custom plans always: a generic plan for `run_id = $1` assumes an average
                    // run and reads all 100k rejects of a big one to sort them.
                    .options([
                        ("timezone", "UTC"),
                        ("statement_timeout", "15s"),
                        ("plan_cache_mode", "force_custom_plan"),
                    ]);
                let pool = PgPoolOptions::new()
                    .max_connections(4)
                    .min_connections(0)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_lazy_with(opts);
                Backend::Postgres(pool)
            }
            DatabaseUrl::Sqlite(p) => Backend::Sqlite(Arc::new(Lite {
                path: p.clone(),
                idle: Mutex::new(Vec::new()),
            })),
        };
        Ok(Self {
            backend,
            schema: Arc::new(RwLock::new(None)),
        })
    }

    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Postgres(_) => Dialect::Postgres,
            Backend::Sqlite(_) => Dialect::Sqlite,
        }
    }

    pub fn sql(&self) -> Sql {
        Sql::new(self.dialect())
    }

    /// The PostgreSQL pool, for LISTEN.
    pub fn pg_pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Postgres(p) => Some(p),
            Backend::Sqlite(_) => None,
        }
    }

    /// Runs a query, collecting at most `limit` rows.
    pub async fn rows(&self, sql: Sql, limit: usize) -> Result<Vec<TextRow>, StoreError> {
        match &self.backend {
            Backend::Postgres(pool) => {
                let mut out = Vec::new();
                let mut stream = pg_query(&sql).fetch(pool);
                while let Some(row) = stream.next().await {
                    out.push(pg_row(&row?)?);
                    if out.len() >= limit {
                        break;
                    }
                }
                Ok(out)
            }
            Backend::Sqlite(lite) => {
                let lite = lite.clone();
                tokio::task::spawn_blocking(move || {
                    if !lite.path.exists() {
                        return Err(StoreError::NotMigrated);
                    }
                    let conn = lite.open().map_err(lite_err(&lite.path))?;
                    let mut out = Vec::new();
                    let r = lite_rows(&conn, &sql, |row| {
                        out.push(row);
                        out.len() < limit
                    });
                    lite.put(conn);
                    r.map_err(lite_err(&lite.path))?;
                    Ok(out)
                })
                .await?
            }
        }
    }

    /// Streams every row of a query through a bounded channel (CSV downloads).
    pub fn stream(&self, sql: Sql) -> mpsc::Receiver<Result<TextRow, StoreError>> {
        let (tx, rx) = mpsc::channel(256);
        match &self.backend {
            Backend::Postgres(pool) => {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut stream = pg_query(&sql).fetch(&pool);
                    while let Some(row) = stream.next().await {
                        let item = row.and_then(|r| pg_row(&r)).map_err(StoreError::from);
                        let stop = item.is_err();
                        if tx.send(item).await.is_err() || stop {
                            break;
                        }
                    }
                });
            }
            Backend::Sqlite(lite) => {
                let lite = lite.clone();
                tokio::task::spawn_blocking(move || {
                    let conn = match lite.open() {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(lite_err(&lite.path)(e)));
                            return;
                        }
                    };
                    let r = lite_rows(&conn, &sql, |row| tx.blocking_send(Ok(row)).is_ok());
                    if let Err(e) = r {
                        let _ = tx.blocking_send(Err(lite_err(&lite.path)(e)));
                    }
                    lite.put(conn);
                });
            }
        }
        rx
    }

    /// Runs statements that return nothing (index creation).
    pub async fn execute(&self, text: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(pool) => {
                sqlx::raw_sql(text).execute(pool).await?;
                Ok(())
            }
            Backend::Sqlite(_) => Ok(()),
        }
    }

    /// The importer's schema as found; `NotMigrated` until `import_runs` exists.
    pub async fn schema(&self) -> Result<Schema, StoreError> {
        if let Some(s) = self.schema.read().ok().and_then(|s| *s) {
            return Ok(s);
        }
        let mut sql = self.sql();
        match self.dialect() {
            Dialect::Postgres => sql.push(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = 'import_runs'",
            ),
            Dialect::Sqlite => sql.push("SELECT name FROM pragma_table_info('import_runs')"),
        };
        let cols: Vec<String> = self
            .rows(sql, 1000)
            .await?
            .into_iter()
            .filter_map(|mut r| r.pop().flatten())
            .collect();
        if cols.is_empty() {
            return Err(StoreError::NotMigrated);
        }
        let schema = Schema {
            heartbeat: cols.iter().any(|c| c == "heartbeat_at"),
        };
        if let Ok(mut s) = self.schema.write() {
            *s = Some(schema);
        }
        Ok(schema)
    }

    /// One cheap query, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut sql = self.sql();
        sql.push("SELECT '1'");
        self.rows(sql, 1).await.map(|_| ())
    }
}
