//! `import_runs` and `import_rejects`: the runs list (filters, keyset paging by id), one run,
//! the later runs of the same tenant/type/date, rejects, and the 30-day aggregates for charts.

use serde::Serialize;

use crate::store::{Dialect, Param, Sql, Store, StoreError, TextRow};

/// Statuses the importer records (the last three from the importer with live progress).
pub const STATUSES: &[&str] = &[
    "running",
    "succeeded",
    "failed",
    "duplicate",
    "empty",
    "interrupted",
    "abandoned",
];

/// Runs per page.
pub const PAGE: usize = 50;
/// Rejects per page.
pub const REJECTS_PAGE: usize = 100;

/// One `import_runs` row as pages show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Run {
    pub id: i64,
    pub tenant: String,
    pub module: String,
    pub source: String,
    pub export_date: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub rows_read: i64,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
    pub rows_written: i64,
    pub load_path: Option<String>,
    pub content_hash: Option<String>,
    pub duplicate_of: Option<i64>,
    pub error: Option<String>,
    /// Seconds from start to finish (to now while running).
    pub duration_s: f64,
    pub heartbeat_at: Option<String>,
    /// Rows read per second.
    pub rate: f64,
}

impl Run {
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

fn columns(d: Dialect, heartbeat: bool) -> String {
    match d {
        Dialect::Postgres => format!(
            "id::text, tenant, module, source, export_date::text, \
             to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), \
             to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), status, \
             rows_read::text, rows_loaded::text, rows_rejected::text, rows_written::text, load_path, \
             content_hash, duplicate_of::text, error, \
             (EXTRACT(EPOCH FROM (coalesce(finished_at, now()) - started_at)))::float8::text, {}",
            if heartbeat {
                "to_char(heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
            } else {
                "NULL::text"
            }
        ),
        Dialect::Sqlite => format!(
            "id, tenant, module, source, export_date, strftime('%Y-%m-%d %H:%M:%S', started_at), \
             strftime('%Y-%m-%d %H:%M:%S', finished_at), status, rows_read, rows_loaded, \
             rows_rejected, rows_written, load_path, content_hash, duplicate_of, error, \
             (julianday(coalesce(finished_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))) - julianday(started_at)) * 86400.0, {}",
            if heartbeat {
                "strftime('%Y-%m-%d %H:%M:%S', heartbeat_at)"
            } else {
                "NULL"
            }
        ),
    }
}

fn int(v: &Option<String>) -> i64 {
    v.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn parse_run(r: TextRow) -> Option<Run> {
    let mut it = r.into_iter();
    let mut next = || it.next().flatten();
    let id = next()?.parse().ok()?;
    let tenant = next()?;
    let module = next()?;
    let source = next().unwrap_or_default();
    let export_date = next();
    let started_at = next().unwrap_or_default();
    let finished_at = next();
    let status = next().unwrap_or_default();
    let rows_read = int(&next());
    let rows_loaded = int(&next());
    let rows_rejected = int(&next());
    let rows_written = int(&next());
    let load_path = next();
    let content_hash = next();
    let duplicate_of = next().and_then(|s| s.parse().ok());
    let error = next();
    let duration_s: f64 = next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0_f64)
        .max(0.0);
    let heartbeat_at = next();
    let rate = if duration_s > 0.0 {
        rows_read as f64 / duration_s
    } else {
        0.0
    };
    Some(Run {
        id,
        tenant,
        module,
        source,
        export_date,
        started_at,
        finished_at,
        status,
        rows_read,
        rows_loaded,
        rows_rejected,
        rows_written,
        load_path,
        content_hash,
        duplicate_of,
        error,
        duration_s,
        heartbeat_at,
        rate,
    })
}

/// Filters of the runs list, already validated.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunFilter {
    pub tenant: Option<String>,
    pub module: Option<String>,
    pub status: Option<String>,
    /// Export dates from/to, `YYYY-MM-DD`, inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Keyset: only runs with a smaller id.
    pub before: Option<i64>,
}

/// One page of runs, newest first, plus whether there are more.
pub async fn list(store: &Store, f: &RunFilter) -> Result<(Vec<Run>, bool), StoreError> {
    let schema = store.schema().await?;
    let d = store.dialect();
    let mut sql = store.sql();
    // Filter, order and limit first, then format the page's rows only: formatting every row
    // before a top-N sort costs more than the query (and steers the planner off the index).
    sql.push("SELECT ")
        .push(&columns(d, schema.heartbeat))
        .push(" FROM (SELECT * FROM import_runs WHERE 1 = 1");
    let date_cast = Some("date");
    for (col, v) in [
        ("tenant", &f.tenant),
        ("module", &f.module),
        ("status", &f.status),
    ] {
        if let Some(v) = v {
            sql.push(&format!(" AND {col} = "))
                .bind(Param::Text(v.clone()), None);
        }
    }
    if let Some(v) = &f.from {
        sql.push(" AND export_date >= ")
            .bind(Param::Text(v.clone()), date_cast);
    }
    if let Some(v) = &f.to {
        sql.push(" AND export_date <= ")
            .bind(Param::Text(v.clone()), date_cast);
    }
    if let Some(b) = f.before {
        sql.push(" AND id < ").bind(Param::Int(b), None);
    }
    sql.push(&format!(
        // Qualified: a bare `id` here would be the text output column on PostgreSQL.
        " ORDER BY import_runs.id DESC LIMIT {}) AS page ORDER BY page.id DESC",
        PAGE + 1
    ));
    let mut runs: Vec<Run> = store
        .rows(sql, PAGE + 1)
        .await?
        .into_iter()
        .filter_map(parse_run)
        .collect();
    let more = runs.len() > PAGE;
    runs.truncate(PAGE);
    Ok((runs, more))
}

/// One run by id.
pub async fn get(store: &Store, id: i64) -> Result<Option<Run>, StoreError> {
    let schema = store.schema().await?;
    let mut sql = store.sql();
    sql.push("SELECT ")
        .push(&columns(store.dialect(), schema.heartbeat))
        .push(" FROM import_runs WHERE id = ")
        .bind(Param::Int(id), None);
    Ok(store
        .rows(sql, 1)
        .await?
        .into_iter()
        .next()
        .and_then(parse_run))
}

/// Runs of the same tenant, type and export date that started after `run` (re-runs), oldest
/// first.
pub async fn later(store: &Store, run: &Run) -> Result<Vec<Run>, StoreError> {
    let schema = store.schema().await?;
    let mut sql = store.sql();
    sql.push("SELECT ")
        .push(&columns(store.dialect(), schema.heartbeat))
        .push(" FROM import_runs WHERE tenant = ")
        .bind(Param::Text(run.tenant.clone()), None)
        .push(" AND module = ")
        .bind(Param::Text(run.module.clone()), None);
    match &run.export_date {
        Some(d) => sql
            .push(" AND export_date = ")
            .bind(Param::Text(d.clone()), Some("date")),
        None => sql.push(" AND export_date IS NULL"),
    };
    sql.push(" AND id > ")
        .bind(Param::Int(run.id), None)
        .push(" ORDER BY import_runs.id LIMIT 20");
    Ok(store
        .rows(sql, 20)
        .await?
        .into_iter()
        .filter_map(parse_run)
        .collect())
}

/// The newest run id (0 when there is none).
pub async fn max_id(store: &Store) -> Result<i64, StoreError> {
    let mut sql = store.sql();
    sql.push(match store.dialect() {
        Dialect::Postgres => "SELECT coalesce(max(id), 0)::text FROM import_runs",
        Dialect::Sqlite => "SELECT coalesce(max(id), 0) FROM import_runs",
    });
    let rows = store.rows(sql, 1).await?;
    Ok(rows.first().map(|r| int(&r[0])).unwrap_or(0))
}

/// Tenants and types that have runs, for the filter menus.
pub async fn distinct(store: &Store, column: &'static str) -> Result<Vec<String>, StoreError> {
    let mut sql = store.sql();
    // `column` is one of two constants.
    debug_assert!(column == "tenant" || column == "module");
    sql.push(&format!(
        "SELECT DISTINCT {column} FROM import_runs ORDER BY 1 LIMIT 1000"
    ));
    Ok(store
        .rows(sql, 1000)
        .await?
        .into_iter()
        .filter_map(|mut r| r.pop().flatten())
        .collect())
}

/// One rejected row.
#[derive(Debug, Clone, Serialize)]
pub struct Reject {
    pub id: i64,
    pub file: String,
    pub line: i64,
    pub column: Option<String>,
    pub reason: String,
    pub raw_record: String,
}

/// Keyset position in a run's rejects: the last shown `(line, id)`.
pub type RejectCursor = (i64, i64);

/// `line-id`, as the `after` parameter carries it.
pub fn parse_cursor(s: &str) -> Option<RejectCursor> {
    let (l, i) = s.split_once('-')?;
    Some((l.parse().ok()?, i.parse().ok()?))
}

fn rejects_sql(store: &Store, run_id: i64, after: Option<RejectCursor>) -> Sql {
    let mut sql = store.sql();
    sql.push(match store.dialect() {
        Dialect::Postgres => {
            "SELECT id::text, file, line::text, column_name, reason, raw_record FROM import_rejects WHERE run_id = "
        }
        Dialect::Sqlite => {
            "SELECT id, file, line, column_name, reason, raw_record FROM import_rejects WHERE run_id = "
        }
    })
    .bind(Param::Int(run_id), None);
    if let Some((line, id)) = after {
        sql.push(" AND (line, id) > (")
            .bind(Param::Int(line), None)
            .push(", ")
            .bind(Param::Int(id), None)
            .push(")");
    }
    // Served by the console's (run_id, line, id) index. Qualified: a bare name in ORDER BY
    // means the (text) output column on PostgreSQL.
    sql.push(" ORDER BY import_rejects.line, import_rejects.id");
    sql
}

fn parse_reject(r: TextRow) -> Option<Reject> {
    let mut it = r.into_iter();
    Some(Reject {
        id: it.next()??.parse().ok()?,
        file: it.next()?.unwrap_or_default(),
        line: int(&it.next()?),
        column: it.next()?,
        reason: it.next()?.unwrap_or_default(),
        raw_record: it.next()?.unwrap_or_default(),
    })
}

/// One page of a run's rejects in file (line) order, plus whether there are more.
pub async fn rejects(
    store: &Store,
    run_id: i64,
    after: Option<RejectCursor>,
) -> Result<(Vec<Reject>, bool), StoreError> {
    let mut sql = rejects_sql(store, run_id, after);
    sql.push(&format!(" LIMIT {}", REJECTS_PAGE + 1));
    let mut out: Vec<Reject> = store
        .rows(sql, REJECTS_PAGE + 1)
        .await?
        .into_iter()
        .filter_map(parse_reject)
        .collect();
    let more = out.len() > REJECTS_PAGE;
    out.truncate(REJECTS_PAGE);
    Ok((out, more))
}

/// Every reject of a run, streamed: `file, line, column, reason, raw_record`.
pub fn rejects_stream(
    store: &Store,
    run_id: i64,
) -> tokio::sync::mpsc::Receiver<Result<TextRow, StoreError>> {
    store.stream(rejects_sql(store, run_id, None))
}

/// Per day and type over the last 30 days: rows loaded and mean duration of finished runs.
#[derive(Debug, Clone, Serialize)]
pub struct DayStat {
    pub day: String,
    pub module: String,
    pub rows: i64,
    pub duration_s: f64,
}

pub async fn last_30_days(store: &Store) -> Result<Vec<DayStat>, StoreError> {
    let mut sql = store.sql();
    sql.push(match store.dialect() {
        Dialect::Postgres => {
            "SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, module, \
             sum(rows_loaded)::text, avg(EXTRACT(EPOCH FROM (finished_at - started_at)))::float8::text \
             FROM import_runs WHERE started_at >= now() - interval '30 days' AND finished_at IS NOT NULL \
             GROUP BY 1, 2 ORDER BY 1, 2"
        }
        Dialect::Sqlite => {
            "SELECT substr(started_at, 1, 10) AS day, module, sum(rows_loaded), \
             avg((julianday(finished_at) - julianday(started_at)) * 86400.0) \
             FROM import_runs WHERE started_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-30 days') \
             AND finished_at IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
        }
    });
    Ok(store
        .rows(sql, 100_000)
        .await?
        .into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            Some(DayStat {
                day: it.next()??,
                module: it.next()??,
                rows: int(&it.next()?),
                duration_s: it.next()?.and_then(|s| s.parse().ok()).unwrap_or(0.0),
            })
        })
        .collect())
}
