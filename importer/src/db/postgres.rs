//! PostgreSQL: one streaming `COPY … FROM STDIN` per file, fed by a parser thread over a
//! bounded channel, so parsing overlaps the server's work and memory stays flat.

use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use super::{pg, DbError, LoadError, LoadPath, Loaded, Progress, RunEnd, RunStart};
use crate::parse::{parse_csv, CopyEncoder, Counts, RejectLog};
use crate::registry::{Registry, TypeDef, LINE_COLUMN, TENANT_COLUMN};
use crate::source::Prepared;

/// Chunks in flight between the parser thread and the COPY stream.
const CHANNEL_CHUNKS: usize = 4;

/// A PostgreSQL pool.
#[derive(Clone)]
pub struct Pg {
    pool: PgPool,
}

/// The parser stopped because the COPY side went away.
#[derive(Debug)]
struct Closed;

fn code(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

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

/// `CREATE TABLE IF NOT EXISTS` plus `ADD COLUMN IF NOT EXISTS` for columns added later.
pub fn table_ddl(def: &TypeDef) -> Vec<String> {
    let mut cols = vec![format!("{TENANT_COLUMN} text NOT NULL")];
    for c in &def.columns {
        let null = if c.required { " NOT NULL" } else { "" };
        cols.push(format!("{} {}{null}", c.name, c.ty.postgres_type()));
    }
    let mut ddl = vec![format!(
        "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))",
        def.table,
        cols.join(", "),
        key_list(def)
    )];
    for c in &def.columns {
        ddl.push(format!(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
            def.table,
            c.name,
            c.ty.postgres_type()
        ));
    }
    ddl
}

/// The upsert from the staging table: a join against the target finds the new and changed
/// rows, and only those reach `ON CONFLICT`, so unchanged rows are neither written nor locked.
/// `dedupe` first keeps the last line of each key; it is needed unless the file's keys were
/// strictly ascending (no key repeats).
fn upsert_sql(def: &TypeDef, dedupe: bool) -> String {
    let cols = column_list(def);
    let keys = key_list(def);
    let staged = if dedupe {
        format!(
            "(SELECT DISTINCT ON ({keys}) * FROM importer_stage ORDER BY {keys}, {LINE_COLUMN} DESC)"
        )
    } else {
        "importer_stage".to_string()
    };
    let scols: Vec<String> = column_list(def)
        .split(", ")
        .map(|c| format!("s.{c}"))
        .collect();
    let join: Vec<String> = std::iter::once(TENANT_COLUMN)
        .chain(def.key_names())
        .map(|k| format!("o.{k} = s.{k}"))
        .collect();
    let rest: Vec<&str> = def
        .non_key()
        .map(|i| def.columns[i].name.as_str())
        .collect();
    let list = |prefix: &str| -> String {
        rest.iter()
            .map(|c| format!("{prefix}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (changed, action) = if rest.is_empty() {
        (String::new(), "NOTHING".to_string())
    } else {
        let set: Vec<String> = rest.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
        (
            format!(" OR ({}) IS DISTINCT FROM ({})", list("o"), list("s")),
            format!(
                "UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
                set.join(", "),
                list("t"),
                list("EXCLUDED")
            ),
        )
    };
    format!(
        "INSERT INTO {table} AS t ({cols}) SELECT {scols} FROM {staged} s \
         LEFT JOIN {table} o ON {join} WHERE o.{TENANT_COLUMN} IS NULL{changed} \
         ON CONFLICT ({keys}) DO {action}",
        table = def.table,
        scols = scols.join(", "),
        join = join.join(" AND "),
    )
}

impl Pg {
    pub async fn connect(url: &str, jobs: usize) -> Result<Self, DbError> {
        // Staging tables are session-local: give them room in memory instead of temp files.
        // These are server-side, per-session limits, allocated only as used.
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(pg("connection URL"))?
            .options([("temp_buffers", "256MB")]);
        let pool = PgPoolOptions::new()
            .max_connections(u32::try_from(jobs).unwrap_or(u32::MAX).max(1) + 1)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(pg("connect"))?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self, registry: &Registry) -> Result<(), DbError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        let mut tx = self.pool.begin().await.map_err(pg("begin"))?;
        // `ADD COLUMN IF NOT EXISTS` notices for every existing column are noise.
        sqlx::query("SET LOCAL client_min_messages = warning")
            .execute(&mut *tx)
            .await
            .map_err(pg("set client_min_messages"))?;
        for def in registry.types() {
            for stmt in table_ddl(def) {
                sqlx::query(&stmt)
                    .execute(&mut *tx)
                    .await
                    .map_err(pg(format!("table {}", def.table)))?;
            }
        }
        tx.commit().await.map_err(pg("commit"))
    }

    pub async fn check_migrated(&self) -> Result<(), DbError> {
        let ready: bool = sqlx::query_scalar(
            "SELECT to_regclass('import_runs') IS NOT NULL AND to_regclass('import_rejects') IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(pg("check schema"))?;
        if ready {
            Ok(())
        } else {
            Err(DbError::NotMigrated)
        }
    }

    pub async fn find_duplicate(
        &self,
        tenant: &str,
        hash: &str,
    ) -> Result<Option<(i64, String)>, DbError> {
        sqlx::query_as(
            "SELECT id, module FROM import_runs WHERE tenant = $1 AND content_hash = $2 \
             AND status = 'succeeded' ORDER BY id LIMIT 1",
        )
        .bind(tenant)
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg("find duplicate"))
    }

    pub async fn start_run(&self, s: &RunStart) -> Result<i64, DbError> {
        sqlx::query_scalar(
            "INSERT INTO import_runs (tenant, module, source, export_date, status, content_hash) \
             VALUES ($1, $2, $3, $4::date, 'running', $5) RETURNING id",
        )
        .bind(&s.tenant)
        .bind(&s.module)
        .bind(&s.source)
        .bind(&s.export_date)
        .bind(&s.content_hash)
        .fetch_one(&self.pool)
        .await
        .map_err(pg("record run start"))
    }

    pub async fn finish_run(&self, id: i64, e: &RunEnd) -> Result<(), DbError> {
        let counts = e.loaded.map(|l| l.counts).unwrap_or_default();
        sqlx::query(
            "UPDATE import_runs SET finished_at = now(), status = $2, rows_read = $3, rows_loaded = $4, \
             rows_rejected = $5, rows_written = $6, load_path = $7, duplicate_of = $8, error = $9 WHERE id = $1",
        )
        .bind(id)
        .bind(e.status.as_str())
        .bind(counts.read as i64)
        .bind(counts.loaded as i64)
        .bind(counts.rejected as i64)
        .bind(e.loaded.map_or(0, |l| l.written as i64))
        .bind(e.loaded.map(|l| l.path.as_str()))
        .bind(e.duplicate_of)
        .bind(&e.error)
        .execute(&self.pool)
        .await
        .map_err(pg("record run end"))?;
        Ok(())
    }

    pub async fn load(
        &self,
        run_id: i64,
        def: Arc<TypeDef>,
        tenant: &str,
        file: &str,
        source: Arc<Prepared>,
        progress: Progress,
    ) -> Result<Loaded, LoadError> {
        let table = &def.table;
        let mut conn = self.pool.acquire().await.map_err(pg("acquire"))?;
        let mut tx = conn.begin().await.map_err(pg("begin"))?;
        // One loader per table slice at a time, across pods too.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("importer:{table}:{tenant}"))
            .execute(&mut *tx)
            .await
            .map_err(pg("lock slice"))?;
        let occupied: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {table} WHERE {TENANT_COLUMN} = $1)"
        ))
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg(format!("probe {table}")))?;

        let mut direct = None;
        if !occupied {
            exec(&mut tx, "SAVEPOINT importer_direct").await?;
            let sql = format!("COPY {table} ({}) FROM STDIN", column_list(&def));
            match copy_file(&mut tx, &sql, false, &def, tenant, &source, &progress).await {
                Ok((counts, rejects, written)) => direct = Some((counts, rejects, written)),
                // The file repeats a natural key: fall back to staging, which takes the last.
                Err(LoadError::Db(DbError::Postgres { source, .. }))
                    if code(&source).as_deref() == Some("23505") =>
                {
                    tracing::info!(table = %table, tenant = %tenant, "file repeats a natural key; loading through staging");
                    exec(&mut tx, "ROLLBACK TO SAVEPOINT importer_direct").await?;
                }
                Err(e) => return Err(e),
            }
        }
        let (counts, rejects, written, path) = match direct {
            Some((c, r, w)) => (c, r, w, LoadPath::Direct),
            None => {
                let (c, r, w) = staged(&mut tx, &def, tenant, &source, &progress).await?;
                (c, r, w, LoadPath::Staged)
            }
        };
        insert_rejects(&mut tx, run_id, file, rejects).await?;
        tx.commit().await.map_err(pg("commit"))?;
        Ok(Loaded {
            counts,
            written,
            path,
        })
    }
}

async fn exec(conn: &mut PgConnection, sql: &str) -> Result<(), LoadError> {
    sqlx::query(sql)
        .execute(conn)
        .await
        .map_err(pg(sql.to_string()))?;
    Ok(())
}

async fn staged(
    conn: &mut PgConnection,
    def: &Arc<TypeDef>,
    tenant: &str,
    source: &Arc<Prepared>,
    progress: &Progress,
) -> Result<(Counts, RejectLog, u64), LoadError> {
    let cols = column_list(def);
    // The upsert probes the target once per staged row; let its sorts and hashes stay in memory.
    exec(conn, "SET LOCAL work_mem = '256MB'").await?;
    exec(
        conn,
        &format!(
            "CREATE TEMP TABLE importer_stage ON COMMIT DROP AS \
             SELECT 0::bigint AS {LINE_COLUMN}, {cols} FROM {} WITH NO DATA",
            def.table
        ),
    )
    .await?;
    let sql = format!("COPY importer_stage ({LINE_COLUMN}, {cols}) FROM STDIN");
    let (counts, rejects, _) = copy_file(conn, &sql, true, def, tenant, source, progress).await?;
    let written = sqlx::query(&upsert_sql(def, !counts.keys_ascending))
        .execute(&mut *conn)
        .await
        .map_err(pg(format!("upsert into {}", def.table)))?
        .rows_affected();
    exec(conn, "DROP TABLE importer_stage").await?;
    Ok((counts, rejects, written))
}

/// Streams one file through `COPY`: a blocking parser thread encodes chunks, this task sends them.
async fn copy_file(
    conn: &mut PgConnection,
    sql: &str,
    with_line: bool,
    def: &Arc<TypeDef>,
    tenant: &str,
    source: &Arc<Prepared>,
    progress: &Progress,
) -> Result<(Counts, RejectLog, u64), LoadError> {
    let mut copy = conn
        .copy_in_raw(sql)
        .await
        .map_err(pg(format!("start COPY into {}", def.table)))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHANNEL_CHUNKS);
    let parser = {
        let (def, source, progress, tenant) = (
            def.clone(),
            source.clone(),
            progress.clone(),
            tenant.to_string(),
        );
        tokio::task::spawn_blocking(move || -> Result<(Counts, RejectLog), LoadError> {
            let mut rejects = RejectLog::new().map_err(LoadError::Spill)?;
            let mut enc = CopyEncoder::new(&tenant, with_line, |chunk| {
                tx.blocking_send(chunk).map_err(|_| Closed)
            });
            let counts = source
                .with_csv(|r| parse_csv(r, &def, &mut enc, &mut rejects, &mut |n| progress(n)))?
                .map_err(|e| LoadError::Parse(e.map_sink(|Closed| closed_stream())))?;
            enc.finish().map_err(|_| closed_error())?;
            Ok((counts, rejects))
        })
    };
    let mut send_error = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = copy.send(chunk).await {
            send_error = Some(e);
            break;
        }
    }
    drop(rx);
    let parsed = match parser.await {
        Ok(r) => r,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    };
    if let Some(e) = send_error {
        return Err(pg(format!("COPY into {}", def.table))(e).into());
    }
    match parsed {
        Ok((counts, rejects)) => {
            let rows = copy
                .finish()
                .await
                .map_err(pg(format!("COPY into {}", def.table)))?;
            Ok((counts, rejects, rows))
        }
        Err(e) => {
            copy.abort(e.to_string())
                .await
                .map_err(pg(format!("abort COPY into {}", def.table)))?;
            Err(e)
        }
    }
}

fn closed_stream() -> DbError {
    DbError::Postgres {
        context: "COPY stream".into(),
        source: sqlx::Error::WorkerCrashed,
    }
}

fn closed_error() -> LoadError {
    LoadError::Db(closed_stream())
}

async fn insert_rejects(
    conn: &mut PgConnection,
    run_id: i64,
    file: &str,
    rejects: RejectLog,
) -> Result<(), LoadError> {
    if rejects.is_empty() {
        return Ok(());
    }
    let rows = tokio::task::spawn_blocking(move || rejects.read_back())
        .await
        .map_err(|e| LoadError::Spill(std::io::Error::other(e)))?
        .map_err(LoadError::Spill)?;
    // Rejects are rare and small next to the data; batches of binds keep it simple.
    let mut batch = Vec::with_capacity(500);
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        batch.clear();
        for r in rows.by_ref().take(500) {
            batch.push(r.map_err(LoadError::Spill)?);
        }
        let mut qb = sqlx::QueryBuilder::new(
            "INSERT INTO import_rejects (run_id, file, line, column_name, raw_record, reason) ",
        );
        qb.push_values(&batch, |mut b, r| {
            b.push_bind(run_id)
                .push_bind(file)
                .push_bind(r.line as i64)
                .push_bind(&r.column)
                .push_bind(&r.raw)
                .push_bind(&r.reason);
        });
        qb.build()
            .execute(&mut *conn)
            .await
            .map_err(pg("insert rejects"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The generated SQL names the tenant in the key and compares only non-key columns.
    #[test]
    fn sql_shapes() {
        let r = Registry::parse(
            Path::new("t.yaml"),
            "types:\n- module: m\n  natural_key: [id]\n  columns:\n  - {name: id, type: int, required: true}\n  - {name: v, type: text}\n",
        )
        .unwrap();
        let def = r.get("m").unwrap();
        assert_eq!(
            table_ddl(def)[0],
            "CREATE TABLE IF NOT EXISTS m (tenant_id text NOT NULL, id integer NOT NULL, v text, PRIMARY KEY (tenant_id, id))"
        );
        assert_eq!(
            upsert_sql(def, false),
            "INSERT INTO m AS t (tenant_id, id, v) SELECT s.tenant_id, s.id, s.v FROM importer_stage s \
             LEFT JOIN m o ON o.tenant_id = s.tenant_id AND o.id = s.id WHERE o.tenant_id IS NULL OR (o.v) IS DISTINCT FROM (s.v) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET v = EXCLUDED.v WHERE (t.v) IS DISTINCT FROM (EXCLUDED.v)"
        );
        assert!(upsert_sql(def, true).contains("DISTINCT ON (tenant_id, id)"));
    }
}
