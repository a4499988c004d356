//! SQLite, the embedded default: multi-row prepared `INSERT`s in one transaction, bound from a
//! per-chunk arena, so no row allocates. One connection behind a mutex: SQLite has one writer,
//! so a load holds it from `BEGIN` to `COMMIT`, and bookkeeping waits its turn (no live
//! progress on SQLite: a run shows `running`, then its final row).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::load::{LoadTx, ParseJob, Target};
use super::{lite, owner, owner_gone, DbError, LoadError, RunEnd, RunStart, RunStatus};
use crate::parse::{Counts, RowSink};
use crate::registry::{Ident, Registry, TypeDef, LINE_COLUMN, TENANT_COLUMN};
use crate::reject::RejectLog;
use crate::value::Field;

/// The bookkeeping migrations, applied in order and tracked in `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_import_runs.sql"),
    include_str!("../../migrations/sqlite/0002_run_progress.sql"),
];

/// Rows per multi-row `INSERT`, at most.
const ROWS_PER_INSERT: usize = 256;
/// SQLite's limit on parameters per statement (`SQLITE_MAX_VARIABLE_NUMBER`, 32766 since 3.32).
const MAX_PARAMS: usize = 32766;
/// A chunk's text arena is flushed past this size, so long records never pile up.
const ARENA_BYTES: usize = 4 << 20;
/// How long a write waits for another process's write lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// While waiting for it, how often a shutdown signal is looked for.
const LOCK_POLL: Duration = Duration::from_millis(100);

/// The embedded database.
#[derive(Clone)]
pub struct Lite {
    conn: Arc<Mutex<Connection>>,
    /// Set on shutdown: bookkeeping writes stop waiting for another process's lock.
    cancel: Arc<OnceLock<Arc<AtomicBool>>>,
}

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

fn tenant() -> Ident {
    Ident::fixed(TENANT_COLUMN)
}

fn line() -> Ident {
    Ident::fixed(LINE_COLUMN)
}

fn join<'a>(names: impl Iterator<Item = &'a Ident>, prefix: &str) -> String {
    names
        .map(|n| format!("{prefix}{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn column_list(def: &TypeDef) -> String {
    let t = tenant();
    join(
        std::iter::once(&t).chain(def.columns.iter().map(|c| &c.name)),
        "",
    )
}

fn key_list(def: &TypeDef) -> String {
    let t = tenant();
    join(std::iter::once(&t).chain(def.key_idents()), "")
}

fn table_ddl(def: &TypeDef) -> String {
    let mut cols = vec![format!("{} TEXT NOT NULL", tenant())];
    for c in &def.columns {
        let null = if c.required { " NOT NULL" } else { "" };
        cols.push(format!("{} {}{null}", c.name, c.ty.sqlite_type()));
    }
    // WITHOUT ROWID: rows live in the primary-key B-tree, one tree to write instead of two.
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({})) WITHOUT ROWID",
        def.table,
        cols.join(", "),
        key_list(def)
    )
}

/// The upsert from the staging table. `dedupe` keeps only the last line of each key, so a key
/// repeated in the file is written once, with its last value.
fn upsert_sql(def: &TypeDef, dedupe: bool) -> String {
    let cols = column_list(def);
    let line = line();
    let filter = if dedupe {
        format!(
            "{line} IN (SELECT max({line}) FROM temp.importer_stage GROUP BY {})",
            key_list(def)
        )
    } else {
        "true".to_string()
    };
    let rest: Vec<&Ident> = def.non_key().map(|i| &def.columns[i].name).collect();
    let action = if rest.is_empty() {
        "NOTHING".to_string()
    } else {
        let set: Vec<String> = rest.iter().map(|c| format!("{c} = excluded.{c}")).collect();
        format!(
            "UPDATE SET {} WHERE ({}) IS NOT ({})",
            set.join(", "),
            join(rest.iter().copied(), &format!("{}.", def.table)),
            join(rest.iter().copied(), "excluded.")
        )
    };
    // Applied in line order, so the last occurrence of a repeated key wins.
    format!(
        "INSERT INTO {} ({cols}) SELECT {cols} FROM temp.importer_stage WHERE {filter} \
         ORDER BY {line} ON CONFLICT ({}) DO {action}",
        def.table,
        key_list(def)
    )
}

/// Rows per multi-row `INSERT` for rows of `width` parameters.
fn rows_per_insert(width: usize) -> usize {
    (MAX_PARAMS / width.max(1)).clamp(1, ROWS_PER_INSERT)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DatabaseBusy)
}

impl Lite {
    pub async fn open(path: &Path) -> Result<Self, DbError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, DbError> {
            let conn = Connection::open(&path).map_err(lite(format!("open {}", path.display())))?;
            conn.busy_timeout(LOCK_WAIT).map_err(lite("busy_timeout"))?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(lite("synchronous"))?;
            conn.pragma_update(None, "foreign_keys", "ON")
                .map_err(lite("foreign_keys"))?;
            Ok(conn)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            cancel: Arc::default(),
        })
    }

    /// Bookkeeping writes give up waiting for another process's write lock once `cancel` is set.
    pub fn watch_cancel(&self, cancel: Arc<AtomicBool>) {
        let _ = self.cancel.set(cancel);
    }

    /// Runs a bookkeeping write (idempotent when retried), waiting for another process's write
    /// lock at most [`LOCK_WAIT`] and not past a shutdown signal.
    async fn write<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Connection) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let cancel = self.cancel.get().cloned();
        self.with(move |conn| {
            conn.busy_timeout(LOCK_POLL).map_err(lite("busy_timeout"))?;
            let started = Instant::now();
            let result = loop {
                match f(conn) {
                    Err(DbError::Sqlite { source, .. })
                        if is_busy(&source) && started.elapsed() < LOCK_WAIT =>
                    {
                        if cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                            break Err(DbError::LockWaitInterrupted);
                        }
                    }
                    other => break other,
                }
            };
            conn.busy_timeout(LOCK_WAIT).map_err(lite("busy_timeout"))?;
            result
        })
        .await
    }

    /// Runs `f` on the connection in a blocking thread.
    async fn with<T: Send + 'static, E: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        let mut conn = self.conn.clone().lock_owned().await;
        match tokio::task::spawn_blocking(move || f(&mut conn)).await {
            Ok(r) => r,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    pub async fn migrate(&self, registry: Registry) -> Result<(), DbError> {
        self.with(move |conn| {
            // A migration that rebuilds a table must not cascade into the rows that refer to
            // it; foreign keys can only be switched outside a transaction.
            conn.pragma_update(None, "foreign_keys", "OFF")
                .map_err(lite("foreign_keys"))?;
            let result = migrate(conn, &registry);
            conn.pragma_update(None, "foreign_keys", "ON")
                .map_err(lite("foreign_keys"))?;
            result
        })
        .await
    }

    pub async fn find_duplicate(
        &self,
        tenant: String,
        hash: String,
    ) -> Result<Option<(i64, String)>, DbError> {
        self.with(move |conn| {
            conn.query_row(
                "SELECT id, module FROM import_runs WHERE tenant = ?1 AND content_hash = ?2 \
                 AND status = 'succeeded' ORDER BY id LIMIT 1",
                params![tenant, hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(lite("find duplicate"))
        })
        .await
    }

    pub async fn start_run(&self, s: RunStart) -> Result<i64, DbError> {
        self.write(move |conn| {
            conn.query_row(
                &format!(
                    "INSERT INTO import_runs (tenant, module, source, export_date, started_at, status, content_hash, owner, heartbeat_at) \
                     VALUES (?1, ?2, ?3, ?4, {NOW}, 'running', ?5, ?6, {NOW}) RETURNING id"
                ),
                params![s.tenant, s.module, s.source, s.export_date, s.content_hash, owner()],
                |r| r.get(0),
            )
            .map_err(lite("record run start"))
        })
        .await
    }

    pub async fn finish_run(&self, id: i64, e: RunEnd) -> Result<(), DbError> {
        self.write(move |conn| {
            let counts = e.loaded.map(|l| l.counts).unwrap_or_default();
            conn.execute(
                &format!(
                    "UPDATE import_runs SET finished_at = {NOW}, heartbeat_at = {NOW}, status = ?2, rows_read = ?3, \
                     rows_loaded = ?4, rows_rejected = ?5, rows_written = ?6, load_path = ?7, duplicate_of = ?8, \
                     error = ?9 WHERE id = ?1 AND status = 'running'"
                ),
                params![
                    id,
                    e.status.as_str(),
                    counts.read as i64,
                    counts.loaded as i64,
                    counts.rejected as i64,
                    e.loaded.map_or(0, |l| l.written as i64),
                    e.loaded.map(|l| l.path.as_str()),
                    e.duplicate_of,
                    e.error.as_deref(),
                ],
            )
            .map_err(lite("record run end"))?;
            Ok(())
        })
        .await
    }

    /// Marks `running` runs whose owner process is gone as `abandoned`; returns their ids.
    /// SQLite keeps no heartbeat during a load, so only owners on this host can be judged.
    pub async fn sweep_abandoned(&self) -> Result<Vec<i64>, DbError> {
        self.write(|conn| {
            let running: Vec<(i64, Option<String>)> = {
                let mut stmt = conn
                    .prepare("SELECT id, owner FROM import_runs WHERE status = 'running'")
                    .map_err(lite("find running runs"))?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(lite("find running runs"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(lite("find running runs"))?
            };
            let mut abandoned = Vec::new();
            for (id, who) in running {
                let Some(reason) = owner_gone(who.as_deref(), None) else {
                    continue;
                };
                let n = conn
                    .execute(
                        &format!(
                            "UPDATE import_runs SET status = ?2, finished_at = {NOW}, error = ?3 \
                             WHERE id = ?1 AND status = 'running'"
                        ),
                        params![
                            id,
                            RunStatus::Abandoned.as_str(),
                            format!("abandoned: {reason}")
                        ],
                    )
                    .map_err(lite("mark run abandoned"))?;
                if n == 1 {
                    tracing::warn!(run = id, cause = %reason, "run abandoned by its owner");
                    abandoned.push(id);
                }
            }
            Ok(abandoned)
        })
        .await
    }

    /// Takes the connection and opens the load's write transaction, waiting for another
    /// process's lock at most [`LOCK_WAIT`] and giving up at a shutdown signal.
    pub async fn begin_load(&self, job: &ParseJob) -> Result<LiteLoad, LoadError> {
        let conn = self.conn.clone().lock_owned().await;
        let mut load = LiteLoad {
            held: Some(Held { conn, open: false }),
            def: job.def.clone(),
            tenant: job.tenant.clone(),
        };
        let progress = job.progress.clone();
        load.step(move |held| {
            let conn = &mut held.conn;
            conn.busy_timeout(Duration::from_millis(100))
                .map_err(lite("busy_timeout"))?;
            let started = Instant::now();
            let result = loop {
                match conn.execute_batch("BEGIN IMMEDIATE") {
                    Ok(()) => break Ok(()),
                    Err(e) if is_busy(&e) && started.elapsed() < LOCK_WAIT => {
                        if !progress(0) {
                            break Err(LoadError::InterruptedWaiting);
                        }
                    }
                    Err(e) => break Err(lite("begin")(e).into()),
                }
            };
            conn.busy_timeout(LOCK_WAIT).map_err(lite("busy_timeout"))?;
            result?;
            held.open = true;
            Ok::<_, LoadError>(())
        })
        .await?;
        Ok(load)
    }
}

/// Whether the schema is current: then `migrate` needs no write lock (another process may be
/// holding it).
fn is_current(conn: &Connection, registry: &Registry) -> Result<bool, DbError> {
    let version: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(lite("user_version"))?;
    if version != MIGRATIONS.len() {
        return Ok(false);
    }
    for def in registry.types() {
        let mut stmt = conn
            .prepare(&format!("PRAGMA table_info({})", def.table))
            .map_err(lite("table_info"))?;
        let names: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(1))
            .map_err(lite("table_info"))?
            .collect::<Result<_, _>>()
            .map_err(lite("table_info"))?;
        if !def
            .columns
            .iter()
            .all(|c| names.iter().any(|n| c.name == *n.as_str()))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn migrate(conn: &mut Connection, registry: &Registry) -> Result<(), DbError> {
    if is_current(conn, registry)? {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(lite("begin"))?;
    let version: usize = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(lite("user_version"))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)
            .map_err(lite(format!("migration {}", i + 1)))?;
        tx.pragma_update(None, "user_version", i + 1)
            .map_err(lite("user_version"))?;
    }
    for def in registry.types() {
        tx.execute_batch(&table_ddl(def))
            .map_err(lite(format!("table {}", def.table)))?;
        let existing: Vec<String> = {
            let mut stmt = tx
                .prepare(&format!("PRAGMA table_info({})", def.table))
                .map_err(lite("table_info"))?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(1))
                .map_err(lite("table_info"))?;
            names
                .collect::<Result<_, _>>()
                .map_err(lite("table_info"))?
        };
        for c in &def.columns {
            if !existing.iter().any(|e| c.name == *e.as_str()) {
                tx.execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    def.table,
                    c.name,
                    c.ty.sqlite_type()
                ))
                .map_err(lite(format!("add column {}.{}", def.table, c.name)))?;
            }
        }
    }
    tx.commit().map_err(lite("commit"))
}

/// The connection while a load holds it; dropped with its transaction open (an error, a
/// panic, a cancelled task), it rolls back, wherever that happens.
struct Held {
    conn: OwnedMutexGuard<Connection>,
    open: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A SQLite load in progress.
pub struct LiteLoad {
    held: Option<Held>,
    def: Arc<TypeDef>,
    tenant: String,
}

impl LiteLoad {
    /// Runs `f` on the held connection in a blocking thread.
    async fn step<T: Send + 'static, E: From<DbError> + Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Held) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        let Some(mut held) = self.held.take() else {
            return Err(DbError::Sqlite {
                context: "load".into(),
                source: rusqlite::Error::InvalidQuery,
            }
            .into());
        };
        let (held, r) = match tokio::task::spawn_blocking(move || {
            let r = f(&mut held);
            (held, r)
        })
        .await
        {
            Ok(done) => done,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        self.held = Some(held);
        r
    }

    async fn exec(&mut self, sql: String) -> Result<(), DbError> {
        self.step(move |h| h.conn.execute_batch(&sql).map_err(lite(sql)))
            .await
    }
}

impl LoadTx for LiteLoad {
    async fn occupied(&mut self) -> Result<bool, DbError> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE {} = ?1)",
            self.def.table,
            tenant()
        );
        let tenant = self.tenant.clone();
        let table = self.def.table.clone();
        self.step(move |h| {
            h.conn
                .query_row(&sql, [tenant], |r| r.get(0))
                .map_err(lite(format!("probe {table}")))
        })
        .await
    }

    async fn savepoint(&mut self) -> Result<(), DbError> {
        self.exec("SAVEPOINT importer_direct".into()).await
    }

    async fn release_savepoint(&mut self) -> Result<(), DbError> {
        self.exec("RELEASE importer_direct".into()).await
    }

    async fn rollback_to_savepoint(&mut self) -> Result<(), DbError> {
        self.exec("ROLLBACK TO importer_direct; RELEASE importer_direct".into())
            .await
    }

    async fn create_staging(&mut self) -> Result<(), DbError> {
        let cols: Vec<String> = self
            .def
            .columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.ty.sqlite_type()))
            .collect();
        self.exec(format!(
            "DROP TABLE IF EXISTS temp.importer_stage; \
             CREATE TEMP TABLE importer_stage ({} INTEGER, {} TEXT, {})",
            line(),
            tenant(),
            cols.join(", ")
        ))
        .await
    }

    async fn bulk_write(
        &mut self,
        target: Target,
        job: &ParseJob,
    ) -> Result<(Counts, RejectLog), LoadError> {
        let with_line = target == Target::Staging;
        let prefix = match target {
            Target::Direct => format!(
                "INSERT INTO {} ({}) VALUES ",
                self.def.table,
                column_list(&self.def)
            ),
            Target::Staging => format!(
                "INSERT INTO temp.importer_stage ({}, {}) VALUES ",
                line(),
                column_list(&self.def)
            ),
        };
        let job = job.clone();
        self.step(move |h| {
            let width = job.def.columns.len() + 1 + usize::from(with_line);
            let rows = rows_per_insert(width);
            let mut sink = SqliteSink {
                conn: &h.conn,
                insert_prefix: &prefix,
                width,
                rows_per_insert: rows,
                tenant: &job.tenant,
                with_line,
                values: Vec::with_capacity(rows * width),
                text: String::with_capacity(64 * 1024),
                rows: 0,
                row_start: (0, 0),
                full_sql: placeholders(&prefix, width, rows),
            };
            let done = job.parse(&mut sink, LoadError::Db)?;
            sink.flush()?;
            Ok(done)
        })
        .await
    }

    async fn upsert(&mut self, dedupe: bool) -> Result<u64, DbError> {
        let sql = upsert_sql(&self.def, dedupe);
        let table = self.def.table.clone();
        self.step(move |h| {
            let written = h
                .conn
                .execute(&sql, [])
                .map_err(lite(format!("upsert into {table}")))?;
            h.conn
                .execute_batch("DROP TABLE temp.importer_stage")
                .map_err(lite("drop staging table"))?;
            Ok(written as u64)
        })
        .await
    }

    async fn insert_rejects(
        &mut self,
        run_id: i64,
        file: &str,
        rejects: RejectLog,
    ) -> Result<(), LoadError> {
        if rejects.is_empty() {
            return Ok(());
        }
        let file = file.to_string();
        self.step(move |h| {
            let mut stmt = h
                .conn
                .prepare_cached(
                    "INSERT INTO import_rejects (run_id, file, line, column_name, raw_record, reason) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(lite("prepare rejects"))?;
            for r in rejects.read_back().map_err(LoadError::Spill)? {
                let r = r.map_err(LoadError::Spill)?;
                stmt.execute(params![run_id, file, r.line as i64, r.column, r.raw, r.reason])
                    .map_err(lite("insert rejects"))?;
            }
            Ok(())
        })
        .await
    }

    async fn commit(mut self) -> Result<(), DbError> {
        self.step(|h| {
            h.conn.execute_batch("COMMIT").map_err(lite("commit"))?;
            h.open = false;
            Ok(())
        })
        .await
    }

    fn is_key_conflict(e: &DbError) -> bool {
        matches!(e, DbError::Sqlite { source: rusqlite::Error::SqliteFailure(f, _), .. }
            if f.code == ErrorCode::ConstraintViolation
                && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE))
    }
}

fn placeholders(prefix: &str, width: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(","));
    format!("{prefix}{}", vec![row.as_str(); rows].join(","))
}

#[derive(Clone, Copy)]
enum Val {
    Null,
    Int(i64),
    Real(f64),
    Tenant,
    /// A range of the chunk's text arena.
    Text(u32, u32),
}

/// Collects rows into a chunk arena and inserts them `rows_per_insert` at a time (sooner when
/// the arena is large).
struct SqliteSink<'a> {
    conn: &'a Connection,
    insert_prefix: &'a str,
    width: usize,
    rows_per_insert: usize,
    tenant: &'a str,
    with_line: bool,
    values: Vec<Val>,
    text: String,
    rows: usize,
    row_start: (usize, usize),
    full_sql: String,
}

impl SqliteSink<'_> {
    fn push_text(&mut self, s: &str) {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        self.values.push(Val::Text(start, self.text.len() as u32));
    }

    fn flush(&mut self) -> Result<(), DbError> {
        if self.rows == 0 {
            return Ok(());
        }
        let partial;
        let sql = if self.rows == self.rows_per_insert {
            &self.full_sql
        } else {
            partial = placeholders(self.insert_prefix, self.width, self.rows);
            &partial
        };
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(lite("prepare insert"))?;
        for (i, v) in self.values.iter().enumerate() {
            let idx = i + 1;
            let r = match *v {
                Val::Null => stmt.raw_bind_parameter(idx, rusqlite::types::Null),
                Val::Int(n) => stmt.raw_bind_parameter(idx, n),
                Val::Real(f) => stmt.raw_bind_parameter(idx, f),
                Val::Tenant => stmt.raw_bind_parameter(idx, self.tenant),
                Val::Text(s, e) => stmt.raw_bind_parameter(idx, &self.text[s as usize..e as usize]),
            };
            r.map_err(lite("bind"))?;
        }
        stmt.raw_execute().map_err(lite("insert"))?;
        self.values.clear();
        self.text.clear();
        self.rows = 0;
        Ok(())
    }
}

impl RowSink for SqliteSink<'_> {
    type Error = DbError;

    fn begin(&mut self, line: u64) {
        self.row_start = (self.values.len(), self.text.len());
        if self.with_line {
            self.values.push(Val::Int(line as i64));
        }
        self.values.push(Val::Tenant);
    }

    fn field(&mut self, field: Field<'_>) {
        match field {
            Field::Null => self.values.push(Val::Null),
            Field::Int(v) => self.values.push(Val::Int(v)),
            Field::Float(v) => self.values.push(Val::Real(v)),
            Field::Bool(v) => self.values.push(Val::Int(i64::from(v))),
            Field::Text(s) | Field::Plain(s) => self.push_text(s),
            Field::Stamp(s) => self.push_text(s.as_str()),
        }
    }

    fn rollback(&mut self) {
        self.values.truncate(self.row_start.0);
        self.text.truncate(self.row_start.1);
    }

    fn end(&mut self) -> Result<(), DbError> {
        self.rows += 1;
        if self.rows == self.rows_per_insert || self.text.len() >= ARENA_BYTES {
            self.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQLite upsert quotes names, applies staged rows in line order and skips unchanged
    /// ones; wide rows get fewer rows per insert.
    #[test]
    fn upsert_shape() {
        let r = Registry::parse(
            Path::new("t.yaml"),
            "types:\n- module: m\n  natural_key: [id]\n  columns:\n  - {name: id, type: int, required: true}\n  - {name: user, type: decimal}\n",
        )
        .unwrap();
        let def = r.get("m").unwrap();
        assert_eq!(
            table_ddl(def),
            r#"CREATE TABLE IF NOT EXISTS "m" ("tenant_id" TEXT NOT NULL, "id" INTEGER NOT NULL, "user" TEXT, PRIMARY KEY ("tenant_id", "id")) WITHOUT ROWID"#
        );
        let sql = upsert_sql(def, false);
        assert!(upsert_sql(def, true).contains(
            r#"IN (SELECT max("importer_line") FROM temp.importer_stage GROUP BY "tenant_id", "id")"#
        ));
        assert!(sql.contains(r#"ORDER BY "importer_line" ON CONFLICT ("tenant_id", "id")"#));
        assert!(sql.ends_with(r#"WHERE ("m"."user") IS NOT (excluded."user")"#));
        assert_eq!(rows_per_insert(8), 256);
        assert_eq!(rows_per_insert(202), 162);
        assert!(rows_per_insert(202) * 202 <= MAX_PARAMS);
    }
}
