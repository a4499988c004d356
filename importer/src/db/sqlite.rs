//! SQLite, the embedded default: multi-row prepared `INSERT`s in one transaction, bound from a
//! per-chunk arena, so no row allocates. One connection behind a mutex: SQLite has one writer.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::{lite, DbError, LoadError, LoadPath, Loaded, Progress, RunEnd, RunStart};
use crate::parse::{parse_csv, RejectLog, RowSink};
use crate::registry::{Registry, TypeDef, LINE_COLUMN, TENANT_COLUMN};
use crate::source::Prepared;
use crate::value::Field;

/// The bookkeeping migrations, applied in order and tracked in `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/sqlite/0001_import_runs.sql")];

/// Rows per multi-row `INSERT`.
const ROWS_PER_INSERT: usize = 256;

/// The embedded database.
#[derive(Clone)]
pub struct Lite {
    conn: Arc<Mutex<Connection>>,
}

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

fn column_list(def: &TypeDef) -> String {
    std::iter::once(TENANT_COLUMN)
        .chain(def.columns.iter().map(|c| c.name.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_list(def: &TypeDef) -> String {
    std::iter::once(TENANT_COLUMN)
        .chain(def.key_names())
        .collect::<Vec<_>>()
        .join(", ")
}

fn table_ddl(def: &TypeDef) -> String {
    let mut cols = vec![format!("{TENANT_COLUMN} TEXT NOT NULL")];
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
    let filter = if dedupe {
        format!(
            "{LINE_COLUMN} IN (SELECT max({LINE_COLUMN}) FROM temp.importer_stage GROUP BY {})",
            key_list(def)
        )
    } else {
        "true".to_string()
    };
    let rest: Vec<&str> = def
        .non_key()
        .map(|i| def.columns[i].name.as_str())
        .collect();
    let action = if rest.is_empty() {
        "NOTHING".to_string()
    } else {
        let set: Vec<String> = rest.iter().map(|c| format!("{c} = excluded.{c}")).collect();
        let old: Vec<String> = rest.iter().map(|c| format!("{}.{c}", def.table)).collect();
        let new: Vec<String> = rest.iter().map(|c| format!("excluded.{c}")).collect();
        format!(
            "UPDATE SET {} WHERE ({}) IS NOT ({})",
            set.join(", "),
            old.join(", "),
            new.join(", ")
        )
    };
    // Applied in line order, so the last occurrence of a repeated key wins.
    format!(
        "INSERT INTO {} ({cols}) SELECT {cols} FROM temp.importer_stage WHERE {filter} \
         ORDER BY {LINE_COLUMN} ON CONFLICT ({}) DO {action}",
        def.table,
        key_list(def)
    )
}

impl Lite {
    pub async fn open(path: &Path) -> Result<Self, DbError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, DbError> {
            let conn = Connection::open(&path).map_err(lite(format!("open {}", path.display())))?;
            conn.busy_timeout(std::time::Duration::from_secs(30))
                .map_err(lite("busy_timeout"))?;
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
        })
    }

    /// Runs `f` on the connection in a blocking thread.
    async fn with<T: Send + 'static, E: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        let conn = self.conn.clone();
        match tokio::task::spawn_blocking(move || f(&mut lock(&conn))).await {
            Ok(r) => r,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    pub async fn migrate(&self, registry: Registry) -> Result<(), DbError> {
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
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
                    if !existing.contains(&c.name) {
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
        self.with(move |conn| {
            conn.query_row(
                &format!(
                    "INSERT INTO import_runs (tenant, module, source, export_date, started_at, status, content_hash) \
                     VALUES (?1, ?2, ?3, ?4, {NOW}, 'running', ?5) RETURNING id"
                ),
                params![s.tenant, s.module, s.source, s.export_date, s.content_hash],
                |r| r.get(0),
            )
            .map_err(lite("record run start"))
        })
        .await
    }

    pub async fn finish_run(&self, id: i64, e: RunEnd) -> Result<(), DbError> {
        self.with(move |conn| {
            let counts = e.loaded.map(|l| l.counts).unwrap_or_default();
            conn.execute(
                &format!(
                    "UPDATE import_runs SET finished_at = {NOW}, status = ?2, rows_read = ?3, rows_loaded = ?4, \
                     rows_rejected = ?5, rows_written = ?6, load_path = ?7, duplicate_of = ?8, error = ?9 WHERE id = ?1"
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
                    e.error,
                ],
            )
            .map_err(lite("record run end"))?;
            Ok(())
        })
        .await
    }

    pub async fn load(
        &self,
        run_id: i64,
        def: Arc<TypeDef>,
        tenant: String,
        file: String,
        source: Arc<Prepared>,
        progress: Progress,
    ) -> Result<Loaded, LoadError> {
        self.with(move |conn| load(conn, run_id, &def, &tenant, &file, &source, &progress))
            .await
    }
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock rolled its transaction back when the guard's
    // statements dropped; the connection itself is still sound.
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation
            && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE))
}

fn load(
    conn: &mut Connection,
    run_id: i64,
    def: &TypeDef,
    tenant: &str,
    file: &str,
    source: &Prepared,
    progress: &Progress,
) -> Result<Loaded, LoadError> {
    let table = &def.table;
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(lite("begin"))?;
    let occupied: bool = tx
        .query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE {TENANT_COLUMN} = ?1)"),
            [tenant],
            |r| r.get(0),
        )
        .map_err(lite(format!("probe {table}")))?;

    let mut result = None;
    if !occupied {
        let sp = tx.savepoint().map_err(lite("savepoint"))?;
        let sql = format!("INSERT INTO {table} ({}) VALUES ", column_list(def));
        match insert_file(&sp, &sql, false, def, tenant, source, progress) {
            Ok((counts, rejects, written)) => {
                sp.commit().map_err(lite("release savepoint"))?;
                result = Some((counts, rejects, written, LoadPath::Direct));
            }
            Err(LoadError::Db(DbError::Sqlite { source, .. })) if is_unique_violation(&source) => {
                tracing::info!(table = %table, tenant = %tenant, "file repeats a natural key; loading through staging");
                drop(sp); // rolls back to the savepoint
            }
            Err(e) => return Err(e),
        }
    }
    let (counts, rejects, written, path) = match result {
        Some(r) => r,
        None => {
            let sp = tx.savepoint().map_err(lite("savepoint"))?;
            let cols: Vec<String> = def
                .columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.ty.sqlite_type()))
                .collect();
            sp.execute_batch(&format!(
                "DROP TABLE IF EXISTS temp.importer_stage; \
                 CREATE TEMP TABLE importer_stage ({LINE_COLUMN} INTEGER, {TENANT_COLUMN} TEXT, {})",
                cols.join(", ")
            ))
            .map_err(lite("create staging table"))?;
            let sql = format!(
                "INSERT INTO temp.importer_stage ({LINE_COLUMN}, {}) VALUES ",
                column_list(def)
            );
            let (counts, rejects, _) = insert_file(&sp, &sql, true, def, tenant, source, progress)?;
            let written = sp
                .execute(&upsert_sql(def, !counts.keys_ascending), [])
                .map_err(lite(format!("upsert into {table}")))? as u64;
            sp.execute_batch("DROP TABLE temp.importer_stage")
                .map_err(lite("drop staging table"))?;
            sp.commit().map_err(lite("release savepoint"))?;
            (counts, rejects, written, LoadPath::Staged)
        }
    };
    insert_rejects(&tx, run_id, file, rejects)?;
    tx.commit().map_err(lite("commit"))?;
    Ok(Loaded {
        counts,
        written,
        path,
    })
}

fn insert_file(
    conn: &Connection,
    insert_prefix: &str,
    with_line: bool,
    def: &TypeDef,
    tenant: &str,
    source: &Prepared,
    progress: &Progress,
) -> Result<(crate::parse::Counts, RejectLog, u64), LoadError> {
    let mut rejects = RejectLog::new().map_err(LoadError::Spill)?;
    let width = def.columns.len() + 1 + usize::from(with_line);
    let mut sink = SqliteSink {
        conn,
        insert_prefix,
        width,
        tenant,
        with_line,
        values: Vec::with_capacity(ROWS_PER_INSERT * width),
        text: String::with_capacity(64 * 1024),
        rows: 0,
        row_start: (0, 0),
        written: 0,
        full_sql: placeholders(insert_prefix, width, ROWS_PER_INSERT),
    };
    let counts = source
        .with_csv(|r| parse_csv(r, def, &mut sink, &mut rejects, &mut |n| progress(n)))?
        .map_err(LoadError::Parse)?;
    sink.flush()?;
    Ok((counts, rejects, sink.written))
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

/// Collects rows into a chunk arena and inserts them `ROWS_PER_INSERT` at a time.
struct SqliteSink<'a> {
    conn: &'a Connection,
    insert_prefix: &'a str,
    width: usize,
    tenant: &'a str,
    with_line: bool,
    values: Vec<Val>,
    text: String,
    rows: usize,
    row_start: (usize, usize),
    written: u64,
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
        let sql = if self.rows == ROWS_PER_INSERT {
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
        self.written += stmt.raw_execute().map_err(lite("insert"))? as u64;
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
        if self.rows == ROWS_PER_INSERT {
            self.flush()?;
        }
        Ok(())
    }
}

fn insert_rejects(
    conn: &Connection,
    run_id: i64,
    file: &str,
    rejects: RejectLog,
) -> Result<(), LoadError> {
    if rejects.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO import_rejects (run_id, file, line, column_name, raw_record, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(lite("prepare rejects"))?;
    for r in rejects.read_back().map_err(LoadError::Spill)? {
        let r = r.map_err(LoadError::Spill)?;
        stmt.execute(params![
            run_id,
            file,
            r.line as i64,
            r.column,
            r.raw,
            r.reason
        ])
        .map_err(lite("insert rejects"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQLite upsert applies staged rows in line order and skips unchanged ones.
    #[test]
    fn upsert_shape() {
        let r = Registry::parse(
            Path::new("t.yaml"),
            "types:\n- module: m\n  natural_key: [id]\n  columns:\n  - {name: id, type: int, required: true}\n  - {name: v, type: decimal}\n",
        )
        .unwrap();
        let def = r.get("m").unwrap();
        assert_eq!(
            table_ddl(def),
            "CREATE TABLE IF NOT EXISTS m (tenant_id TEXT NOT NULL, id INTEGER NOT NULL, v TEXT, PRIMARY KEY (tenant_id, id)) WITHOUT ROWID"
        );
        let sql = upsert_sql(def, false);
        assert!(upsert_sql(def, true).contains(
            "IN (SELECT max(importer_line) FROM temp.importer_stage GROUP BY tenant_id, id)"
        ));
        assert!(sql.contains("ORDER BY importer_line ON CONFLICT (tenant_id, id)"));
        assert!(sql.ends_with("WHERE (m.v) IS NOT (excluded.v)"));
    }
}
