//! PostgreSQL: one streaming `COPY … FROM STDIN` per file, fed by a parser thread over a
//! bounded channel, so parsing overlaps the server's work and memory stays flat.
//!
//! Loads use a pool of `jobs` connections; bookkeeping (run start and end, live progress,
//! `NOTIFY import_runs`) uses its own small pool, so it is never inside a load's transaction.
//! Connections use TLS as the URL's `sslmode` says (rustls; `verify-full` with `sslrootcert`).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use super::load::{LoadTx, ParseJob, Target};
use super::{owner, owner_gone, pg, DbError, LoadError, RunEnd, RunStart, RunStatus};
use crate::copy::CopyEncoder;
use crate::parse::Counts;
use crate::registry::{Ident, Registry, TypeDef, LINE_COLUMN, TENANT_COLUMN};
use crate::reject::RejectLog;

/// Chunks in flight between the parser thread and the COPY stream.
const CHANNEL_CHUNKS: usize = 4;
/// Rejects are inserted in batches of at most this many rows or bytes of raw records.
const REJECT_BATCH_ROWS: usize = 500;
const REJECT_BATCH_BYTES: usize = 4 << 20;
/// The NOTIFY channel the admin console listens on.
pub const CHANNEL: &str = "import_runs";

/// A PostgreSQL database: a pool for loads and one for bookkeeping.
#[derive(Clone)]
pub struct Pg {
    pool: PgPool,
    book: PgPool,
}

/// The parser stopped because the COPY side went away.
#[derive(Debug)]
struct Closed;

fn code(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

fn tenant() -> Ident {
    Ident::fixed(TENANT_COLUMN)
}

fn line() -> Ident {
    Ident::fixed(LINE_COLUMN)
}

fn stage() -> Ident {
    Ident::fixed("importer_stage")
}

fn join<'a>(names: impl Iterator<Item = &'a Ident>, prefix: &str) -> String {
    names
        .map(|n| format!("{prefix}{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn column_list(def: &TypeDef, prefix: &str) -> String {
    let t = tenant();
    join(
        std::iter::once(&t).chain(def.columns.iter().map(|c| &c.name)),
        prefix,
    )
}

fn key_list(def: &TypeDef) -> String {
    let t = tenant();
    join(std::iter::once(&t).chain(def.key_idents()), "")
}

/// `CREATE TABLE IF NOT EXISTS` plus `ADD COLUMN IF NOT EXISTS` for columns added later.
pub fn table_ddl(def: &TypeDef) -> Vec<String> {
    let mut cols = vec![format!("{} text NOT NULL", tenant())];
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
    let keys = key_list(def);
    let (stage, line) = (stage(), line());
    let staged = if dedupe {
        format!("(SELECT DISTINCT ON ({keys}) * FROM {stage} ORDER BY {keys}, {line} DESC)")
    } else {
        stage.to_string()
    };
    let t = tenant();
    let on: Vec<String> = std::iter::once(&t)
        .chain(def.key_idents())
        .map(|k| format!("o.{k} = s.{k}"))
        .collect();
    let rest: Vec<&Ident> = def.non_key().map(|i| &def.columns[i].name).collect();
    let (changed, action) = if rest.is_empty() {
        (String::new(), "NOTHING".to_string())
    } else {
        let set: Vec<String> = rest.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
        let list = |p: &str| join(rest.iter().copied(), p);
        (
            format!(" OR ({}) IS DISTINCT FROM ({})", list("o."), list("s.")),
            format!(
                "UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
                set.join(", "),
                list("t."),
                list("EXCLUDED.")
            ),
        )
    };
    format!(
        "INSERT INTO {table} AS t ({cols}) SELECT {scols} FROM {staged} s \
         LEFT JOIN {table} o ON {on} WHERE o.{t} IS NULL{changed} \
         ON CONFLICT ({keys}) DO {action}",
        table = def.table,
        cols = column_list(def, ""),
        scols = column_list(def, "s."),
        on = on.join(" AND "),
    )
}

impl Pg {
    pub async fn connect(url: &str, jobs: usize) -> Result<Self, DbError> {
        // Staging tables are session-local: give them room in memory instead of temp files.
        // These are server-side, per-session limits, allocated only as used.
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(pg("connection URL"))?;
        let pool = PgPoolOptions::new()
            .max_connections(u32::try_from(jobs).unwrap_or(u32::MAX).max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone().options([("temp_buffers", "256MB")]))
            .await
            .map_err(pg("connect"))?;
        let book = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.application_name("importer-bookkeeping"))
            .await
            .map_err(pg("connect"))?;
        Ok(Self { pool, book })
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
            "SELECT to_regclass('import_runs') IS NOT NULL AND to_regclass('import_rejects') IS NOT NULL \
             AND EXISTS (SELECT 1 FROM information_schema.columns \
                         WHERE table_name = 'import_runs' AND column_name = 'heartbeat_at')",
        )
        .fetch_one(&self.book)
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
        .fetch_optional(&self.book)
        .await
        .map_err(pg("find duplicate"))
    }

    async fn notify(&self, id: i64) -> Result<(), DbError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(id.to_string())
            .execute(&self.book)
            .await
            .map_err(pg("notify"))?;
        Ok(())
    }

    pub async fn start_run(&self, s: &RunStart) -> Result<i64, DbError> {
        let id = sqlx::query_scalar(
            "INSERT INTO import_runs (tenant, module, source, export_date, status, content_hash, owner, heartbeat_at) \
             VALUES ($1, $2, $3, $4::date, 'running', $5, $6, now()) RETURNING id",
        )
        .bind(&s.tenant)
        .bind(&s.module)
        .bind(&s.source)
        .bind(&s.export_date)
        .bind(&s.content_hash)
        .bind(owner())
        .fetch_one(&self.book)
        .await
        .map_err(pg("record run start"))?;
        self.notify(id).await?;
        Ok(id)
    }

    pub async fn finish_run(&self, id: i64, e: &RunEnd) -> Result<(), DbError> {
        let counts = e.loaded.map(|l| l.counts).unwrap_or_default();
        sqlx::query(
            "WITH u AS (UPDATE import_runs SET finished_at = now(), heartbeat_at = now(), status = $2, \
             rows_read = $3, rows_loaded = $4, rows_rejected = $5, rows_written = $6, load_path = $7, \
             duplicate_of = $8, error = $9 WHERE id = $1 AND status = 'running' RETURNING id) \
             SELECT pg_notify($10, id::text) FROM u",
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
        .bind(CHANNEL)
        .execute(&self.book)
        .await
        .map_err(pg("record run end"))?;
        Ok(())
    }

    /// Live counts and the heartbeat, outside the load's transaction, with a NOTIFY.
    pub async fn progress(&self, id: i64, read: u64, loaded: u64) -> Result<(), DbError> {
        sqlx::query(
            "WITH u AS (UPDATE import_runs SET rows_read = $2, rows_loaded = $3, heartbeat_at = now() \
             WHERE id = $1 AND status = 'running' RETURNING id) \
             SELECT pg_notify($4, id::text) FROM u",
        )
        .bind(id)
        .bind(read as i64)
        .bind(loaded as i64)
        .bind(CHANNEL)
        .execute(&self.book)
        .await
        .map_err(pg("record progress"))?;
        Ok(())
    }

    /// Marks `running` runs whose owner is gone as `abandoned`; returns their ids.
    pub async fn sweep_abandoned(&self) -> Result<Vec<i64>, DbError> {
        let running: Vec<(i64, Option<String>, Option<f64>)> = sqlx::query_as(
            "SELECT id, owner, EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 \
             FROM import_runs WHERE status = 'running'",
        )
        .fetch_all(&self.book)
        .await
        .map_err(pg("find running runs"))?;
        let mut abandoned = Vec::new();
        for (id, who, age) in running {
            let Some(reason) = owner_gone(who.as_deref(), Some(age.unwrap_or(f64::MAX))) else {
                continue;
            };
            let done = sqlx::query(
                "UPDATE import_runs SET status = $2, finished_at = now(), error = $3 \
                 WHERE id = $1 AND status = 'running'",
            )
            .bind(id)
            .bind(RunStatus::Abandoned.as_str())
            .bind(format!("abandoned: {reason}"))
            .execute(&self.book)
            .await
            .map_err(pg("mark run abandoned"))?;
            if done.rows_affected() == 1 {
                tracing::warn!(run = id, cause = %reason, "run abandoned by its owner");
                self.notify(id).await?;
                abandoned.push(id);
            }
        }
        Ok(abandoned)
    }

    /// Opens a load's transaction and takes the slice's lock, waiting as long as it takes but
    /// giving up at a shutdown signal (the wait polls, so it can notice one).
    pub async fn begin_load(&self, job: &ParseJob) -> Result<PgLoad, LoadError> {
        let mut tx = self.pool.begin().await.map_err(pg("begin"))?;
        // One loader per table slice at a time, across pods too.
        let key = format!("importer:{}:{}", job.def.table.as_str(), job.tenant);
        let mut waited = false;
        loop {
            let got: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(&key)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(pg("lock slice"))?;
            if got {
                break;
            }
            if !waited {
                tracing::info!(table = %job.def.table.as_str(), tenant = %job.tenant, "waiting for another load of this table slice");
                waited = true;
            }
            if !(job.progress)(0) {
                return Err(LoadError::InterruptedWaiting);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(PgLoad {
            tx,
            def: job.def.clone(),
            tenant: job.tenant.clone(),
        })
    }
}

/// A PostgreSQL load in progress.
pub struct PgLoad {
    tx: Transaction<'static, Postgres>,
    def: std::sync::Arc<TypeDef>,
    tenant: String,
}

impl PgLoad {
    async fn exec(&mut self, sql: &str) -> Result<(), DbError> {
        sqlx::query(sql)
            .execute(&mut *self.tx)
            .await
            .map_err(pg(sql.to_string()))?;
        Ok(())
    }
}

impl LoadTx for PgLoad {
    async fn occupied(&mut self) -> Result<bool, DbError> {
        sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE {} = $1)",
            self.def.table,
            tenant()
        ))
        .bind(&self.tenant)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(pg(format!("probe {}", self.def.table)))
    }

    async fn savepoint(&mut self) -> Result<(), DbError> {
        self.exec("SAVEPOINT importer_direct").await
    }

    async fn release_savepoint(&mut self) -> Result<(), DbError> {
        self.exec("RELEASE SAVEPOINT importer_direct").await
    }

    async fn rollback_to_savepoint(&mut self) -> Result<(), DbError> {
        self.exec("ROLLBACK TO SAVEPOINT importer_direct").await
    }

    async fn create_staging(&mut self) -> Result<(), DbError> {
        // The upsert probes the target once per staged row; let its sorts and hashes stay in
        // memory.
        self.exec("SET LOCAL work_mem = '256MB'").await?;
        let sql = format!(
            "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT 0::bigint AS {}, {} FROM {} WITH NO DATA",
            stage(),
            line(),
            column_list(&self.def, ""),
            self.def.table
        );
        self.exec(&sql).await
    }

    async fn bulk_write(
        &mut self,
        target: Target,
        job: &ParseJob,
    ) -> Result<(Counts, RejectLog), LoadError> {
        let with_line = target == Target::Staging;
        let sql = match target {
            Target::Direct => format!(
                "COPY {} ({}) FROM STDIN",
                self.def.table,
                column_list(&self.def, "")
            ),
            Target::Staging => format!(
                "COPY {} ({}, {}) FROM STDIN",
                stage(),
                line(),
                column_list(&self.def, "")
            ),
        };
        let table = self.def.table.as_str().to_string();
        let mut copy = self
            .tx
            .copy_in_raw(&sql)
            .await
            .map_err(pg(format!("start COPY into {table}")))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHANNEL_CHUNKS);
        let parser = {
            let job = job.clone();
            let table = table.clone();
            tokio::task::spawn_blocking(move || {
                let mut enc = CopyEncoder::new(&job.tenant, with_line, |chunk| {
                    tx.blocking_send(chunk).map_err(|_| Closed)
                });
                let done = job.parse(&mut enc, |Closed| LoadError::CopyClosed(table.clone()))?;
                enc.finish()
                    .map_err(|Closed| LoadError::CopyClosed(table.clone()))?;
                Ok::<_, LoadError>(done)
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
        // The server's own error explains a closed stream better than the parser can.
        if let Some(e) = send_error {
            return Err(pg(format!("COPY into {table}"))(e).into());
        }
        match parsed {
            Ok(done) => {
                copy.finish()
                    .await
                    .map_err(pg(format!("COPY into {table}")))?;
                Ok(done)
            }
            Err(e) => {
                copy.abort(e.to_string())
                    .await
                    .map_err(pg(format!("abort COPY into {table}")))?;
                Err(e)
            }
        }
    }

    async fn upsert(&mut self, dedupe: bool) -> Result<u64, DbError> {
        let written = sqlx::query(&upsert_sql(&self.def, dedupe))
            .execute(&mut *self.tx)
            .await
            .map_err(pg(format!("upsert into {}", self.def.table)))?
            .rows_affected();
        self.exec(&format!("DROP TABLE {}", stage())).await?;
        Ok(written)
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
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        // Read back in a blocking thread, in batches bounded by rows and bytes.
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut batch = Vec::new();
            let mut bytes = 0;
            for r in rejects.read_back()? {
                let r = r?;
                bytes += r.raw.len();
                batch.push(r);
                if batch.len() == REJECT_BATCH_ROWS || bytes >= REJECT_BATCH_BYTES {
                    if tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                        return Ok(());
                    }
                    bytes = 0;
                }
            }
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
            Ok(())
        });
        while let Some(batch) = rx.recv().await {
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
                .execute(&mut *self.tx)
                .await
                .map_err(pg("insert rejects"))?;
        }
        match reader.await {
            Ok(r) => r.map_err(LoadError::Spill),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    async fn commit(self) -> Result<(), DbError> {
        self.tx.commit().await.map_err(pg("commit"))
    }

    fn is_key_conflict(e: &DbError) -> bool {
        matches!(e, DbError::Postgres { source, .. } if code(source).as_deref() == Some("23505"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The generated SQL quotes every name, names the tenant in the key and compares only
    /// non-key columns.
    #[test]
    fn sql_shapes() {
        let r = Registry::parse(
            Path::new("t.yaml"),
            "types:\n- module: m\n  natural_key: [id]\n  columns:\n  - {name: id, type: int, required: true}\n  - {name: order, type: text}\n",
        )
        .unwrap();
        let def = r.get("m").unwrap();
        assert_eq!(
            table_ddl(def)[0],
            r#"CREATE TABLE IF NOT EXISTS "m" ("tenant_id" text NOT NULL, "id" integer NOT NULL, "order" text, PRIMARY KEY ("tenant_id", "id"))"#
        );
        assert_eq!(
            upsert_sql(def, false),
            r#"INSERT INTO "m" AS t ("tenant_id", "id", "order") SELECT s."tenant_id", s."id", s."order" FROM "importer_stage" s LEFT JOIN "m" o ON o."tenant_id" = s."tenant_id" AND o."id" = s."id" WHERE o."tenant_id" IS NULL OR (o."order") IS DISTINCT FROM (s."order") ON CONFLICT ("tenant_id", "id") DO UPDATE SET "order" = EXCLUDED."order" WHERE (t."order") IS DISTINCT FROM (EXCLUDED."order")"#
        );
        assert!(upsert_sql(def, true).contains(r#"DISTINCT ON ("tenant_id", "id")"#));
    }
}
