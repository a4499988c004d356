//! The importer: fetches CSV exports through the auth proxy (or reads local files) and streams
//! them into PostgreSQL with `COPY`, or into an embedded SQLite file by default.
//!
//! Each file is validated row by row against a declarative type registry. Bad rows land in
//! `import_rejects`; bad files are refused whole; every file is recorded in `import_runs`, whose
//! content hash lets an identical re-delivery finish as a duplicate without touching the data.
//!
//! # Layout
//! - [`config`]: clap command line and environment, validated into one [`config::Config`].
//! - [`registry`]: the type registry file (tables, columns, types, aliases, natural keys).
//! - [`source`]: payload JSON, zip and CSV inputs: hashing and streaming base64/zip decoding
//!   (a hand-written streaming JSON reader, tested against serde_json in `source/differential.rs`).
//! - [`record`]: the CSV tokenizer: quoted-ness per field, per-record size limit, unterminated
//!   quotes found.
//! - [`value`]: per-type field validation, a strict subset of what PostgreSQL accepts.
//! - [`parse`]: the hot loop over one reused [`record::Record`]: header mapping, validation,
//!   rows to a [`parse::RowSink`], bad rows to the [`reject`] log.
//! - [`reject`]: the reject format (escaped raw record) and its spill file.
//! - [`copy`]: PostgreSQL `COPY` text encoding, a [`parse::RowSink`].
//! - [`db`]: the one load algorithm ([`db::load`]) over the per-database parts of
//!   [`db::postgres`] (streaming COPY, staged upsert, TLS) and [`db::sqlite`] (multi-row prepared
//!   inserts), migrations, and the `import_runs`/`import_rejects` bookkeeping: heartbeat,
//!   live progress with `NOTIFY import_runs`, abandoned runs.
//! - [`fetch`]: the HTTP client for the export API behind the auth proxy.
//! - [`job`]: one file end to end; [`report`]: progress and the summary table.

pub mod config;
pub mod copy;
pub mod db;
pub mod fetch;
pub mod job;
pub mod parse;
pub mod record;
pub mod registry;
pub mod reject;
pub mod report;
pub mod source;
pub mod value;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::config::{Command, Config, LoadOptions};
use crate::db::{Db, DbError, RunEnd, RunStatus};
use crate::fetch::Fetcher;
use crate::job::{Context, Job, Origin, Outcome, Status};

/// A failure that stops the whole command (a single file's failure doesn't).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] DbError),
    #[error("{path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("http client: {0}")]
    Client(reqwest::Error),
    #[error("interrupted")]
    Interrupted,
}

/// What a command did.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// Printed on stdout by the binary.
    pub text: String,
    /// A shutdown signal stopped the run early; the binary exits non-zero.
    pub interrupted: bool,
}

impl Report {
    /// Files that failed; the binary exits non-zero when there are any.
    pub fn failed(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.status == Status::Failed)
            .count()
    }
}

/// How long loads in flight get to stop and roll back after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs a command until it finishes or `shutdown` resolves. On shutdown, files not started are
/// skipped and loads in flight stop, roll back and are recorded `interrupted` (also when they
/// can't stop within the drain time and are cut off).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<Report, Error> {
    match &config.command {
        Command::Types => Ok(Report {
            text: types_table(&config),
            ..Report::default()
        }),
        Command::Migrate => {
            let migrate = async {
                let db = Db::connect(&config.database, 1).await?;
                db.migrate(&config.registry).await?;
                Ok::<_, Error>(Report {
                    text: format!(
                        "migrated {} ({} registry tables)\n",
                        config.database.redacted(),
                        config.registry.len()
                    ),
                    ..Report::default()
                })
            };
            tokio::select! {
                r = migrate => r,
                () = shutdown => Err(Error::Interrupted),
            }
        }
        Command::Run {
            base_url,
            tenants,
            date,
            types,
            tenant_header,
            caller_token_file,
            opts,
        } => {
            let fetcher = Fetcher::new(
                base_url.clone(),
                tenant_header.clone(),
                caller_token_file.clone(),
            )
            .map_err(Error::Client)?;
            let modules: Vec<String> = if types.is_empty() {
                config.registry.types().map(|t| t.module.clone()).collect()
            } else {
                types.clone()
            };
            let mut jobs = Vec::new();
            for tenant in tenants {
                for module in &modules {
                    jobs.push(Job {
                        tenant: tenant.clone(),
                        origin: Origin::Remote {
                            fetcher: fetcher.clone(),
                            module: module.clone(),
                            date: date.clone(),
                        },
                    });
                }
            }
            run_jobs(&config, jobs, opts, shutdown).await
        }
        Command::Load {
            paths,
            tenant,
            module,
            opts,
        } => {
            let mut files = Vec::new();
            for p in paths {
                if p.is_dir() {
                    let entries = std::fs::read_dir(p).map_err(|source| Error::ReadDir {
                        path: p.clone(),
                        source,
                    })?;
                    let mut inside: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.is_file())
                        .collect();
                    inside.sort();
                    files.extend(inside);
                } else {
                    files.push(p.clone());
                }
            }
            let jobs = files
                .into_iter()
                .map(|path| Job {
                    tenant: tenant.clone(),
                    origin: Origin::Local {
                        path,
                        module: module.clone(),
                    },
                })
                .collect();
            run_jobs(&config, jobs, opts, shutdown).await
        }
    }
}

async fn run_jobs(
    config: &Config,
    jobs: Vec<Job>,
    opts: &LoadOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Report, Error> {
    let jobs: Vec<Job> = jobs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| opts.shard.takes(*i))
        .map(|(_, j)| j)
        .collect();
    let db = Db::connect(&config.database, opts.jobs).await?;
    let abandoned = db.prepare(&config.registry).await?;
    if !abandoned.is_empty() {
        tracing::warn!(runs = ?abandoned, "marked runs of owners that are gone as abandoned");
    }
    let total = jobs.len();
    let reporter = report::Reporter::new(total);
    let cancel = Arc::new(AtomicBool::new(false));
    db.watch_cancel(cancel.clone());
    let ctx = Context {
        db,
        registry: config.registry.clone(),
        temp_dir: config.temp_dir.clone(),
        force: opts.force,
        max_record_bytes: config.max_record_bytes,
        progress_every: config.progress_every,
        fail_on_empty: opts.fail_on_empty,
        progress: reporter.rows(cancel.clone()),
        cancel: cancel.clone(),
        active: Default::default(),
    };
    let mut outcomes = Vec::with_capacity(total);
    let mut stream = futures_util::stream::iter(jobs)
        .map(|job| job::run_job(&ctx, job))
        .buffer_unordered(opts.jobs);
    tokio::pin!(shutdown);
    let mut deadline = None;
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(outcome) => {
                    outcomes.push(outcome);
                    reporter.file_done(outcomes.len(), total);
                }
                None => break,
            },
            () = &mut shutdown, if deadline.is_none() => {
                tracing::warn!("shutdown requested: stopping loads in flight");
                cancel.store(true, Ordering::Relaxed);
                deadline = Some(tokio::time::Instant::now() + DRAIN);
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                tracing::error!("loads did not stop within {DRAIN:?}; abandoning them");
                break;
            }
        }
    }
    drop(stream);
    // Loads that had to be cut off: their transactions roll back as their connections go;
    // record them, unless the database can't be reached in time either.
    let cut_off = ctx.active_runs();
    if !cut_off.is_empty() {
        let end = RunEnd {
            status: RunStatus::Interrupted,
            loaded: None,
            duplicate_of: None,
            error: Some(format!(
                "interrupted: the load did not stop within {DRAIN:?} and was cut off"
            )),
        };
        for id in cut_off {
            let record = ctx.db.finish_run(id, &end);
            match tokio::time::timeout(Duration::from_secs(5), record).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(run = id, cause = %e, "could not record the interrupted run"),
                Err(_) => tracing::error!(run = id, "could not record the interrupted run in time; a later start marks it abandoned"),
            }
        }
    }
    reporter.finish();
    outcomes
        .sort_by(|a, b| (&a.tenant, &a.module, &a.source).cmp(&(&b.tenant, &b.module, &b.source)));
    let text = report::summary(&outcomes);
    Ok(Report {
        outcomes,
        text,
        interrupted: deadline.is_some(),
    })
}

fn types_table(config: &Config) -> String {
    let mut out = format!(
        "{:<28} {:<28} {:<24} columns\n",
        "module", "table", "natural key"
    );
    for t in config.registry.types() {
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|c| {
                format!(
                    "{}:{}{}",
                    c.name,
                    c.ty.name(),
                    if c.required { "!" } else { "" }
                )
            })
            .collect();
        out.push_str(&format!(
            "{:<28} {:<28} {:<24} {}\n",
            t.module,
            t.table,
            t.key_names().collect::<Vec<_>>().join(","),
            cols.join(" ")
        ));
    }
    out.push_str(&format!(
        "{} types; '!' marks required columns\n",
        config.registry.len()
    ));
    out
}
